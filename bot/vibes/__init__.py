"""Channel vibes: which channel's chat feels like what a viewer asks for.

Owns: collecting chat from Twitch's most-watched live channels (``collect``: ``chatmood collect``; the Twitch
side is :mod:`bot.twitch.collector`), the per-channel profile built from stored chat and its statistics
(``profile``, pure), the ``channel_profiles`` collection and its incremental refresh (``documents``,
``store``), the lazily loaded sentence embedder (``embedder``), reading the moods a query asks for
(``query``) and the ranking blend (``rank``), ``chatmood vibes`` with its table, JSON and plot
(``recommend``), and the sample chat cut into channels (``samples``, for the README and the benchmark).

May import: the kernel, ``bot.storage`` (stored messages), ``bot.llm`` (the embedding model),
``bot.classify`` (the glossary: chat slang in queries), ``bot.replay`` (the sample chat) and, in
``collect`` only, ``bot.twitch`` and ``bot.pipeline``. Imported by: ``bot.app`` (the ``/vibes`` page's
ranking and the profile refresh service) and ``bot.cli``.
"""
