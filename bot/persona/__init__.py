"""AI personas: bot accounts that answer @mentions, now and then join in, and (as moderators) calm an angry
chat, in their own voice, with a local LLM and the channel's mood.

Owns: which persona answers a message (``decide``: mentions, replies to a persona, per-viewer cooldowns,
unprompted joins with their chance and gap; never a bot account), the prompt (``prompt``: the persona's
system prompt, the mood in words, the recent chat), cleaning a generated reply (``clean``: one line, no role
markers or echo, no chat command, the blocklist), the service on the message path that queues and writes
replies off the event loop within a time budget, loads the models with their fallbacks and watches the mood
for moderators (``service``), and ``chatmood persona`` (``offline``).

May import: the kernel (``bot.config``, ``bot.domain``, ``bot.errors``, ``bot.outbox``) and ``bot.llm`` (model
files and the chat model owner). Imported by: ``bot.pipeline``, ``bot.app`` and ``bot.cli`` (through COMMANDS).
"""
