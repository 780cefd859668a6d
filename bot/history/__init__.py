"""History: recent chat and mood kept in memory, so no hot path scans the ``messages`` collection.

Owns: the bounded in-memory windows the pipeline keeps (``windows``: the recent messages of each channel and of
each user in it, with their verdicts, and each channel's recent mood snapshots) and the reads over them
(``reads``: ``History``, used by ``!label``, the dashboard and the API), which go to the database only for
older data, bounded in time, and say so when it is too old to find quickly.

May import: the kernel (``bot.config``, ``bot.domain``, ``bot.errors``) and ``bot.storage``. Imported by:
``bot.pipeline`` and ``bot.app``.
"""
