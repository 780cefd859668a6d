"""Storage: MongoDB (FerretDB in development) through Beanie, and the one writer of chat messages.

Owns: the documents and their indexes (``documents``), the database handle and the queries (``store``),
the batched message writer with its disk spool and its flusher task (``writer``), and the local
development database process (``devdb``).

May import: the kernel (``bot.config``, ``bot.domain``, ``bot.errors``). Imported by: ``bot.pipeline``,
``bot.app``, ``bot.cli`` and the features that read stored chat.
"""
