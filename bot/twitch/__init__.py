"""Twitch: EventSub for live state and chat, Helix for sending, and the bot accounts' tokens.

Owns: the twitchAPI library (only :mod:`bot.twitch.eventsub` knows its private threads and loops; everything
else here runs on our loop), each bot's connection and its tasks (:class:`~bot.twitch.bot.TwitchBot`), the
set of running bots (:mod:`~bot.twitch.botset`), the send limiter, token files and the OAuth flows.
Modules: ``events`` (payload -> ChatLine, pure), ``eventsub`` (the library's thread), ``bot``, ``botset``,
``sending``, ``tokens``, ``account`` (a signed-in account: its token kept valid, its Helix client), ``auth``,
``collector`` (the chat of many live channels at once, for ``chatmood collect``).

May import: the kernel (``bot.config``, ``bot.domain``, ``bot.errors``) and ``bot.storage`` (stream sessions).
Imported by: ``bot.app``, ``bot.cli`` and ``bot.vibes.collect`` only.
"""
