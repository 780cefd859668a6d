"""Storage: MongoDB (FerretDB in development) through Beanie, and the one writer of chat messages.

Owns: the documents, their indexes and the raw ``messages`` document (``documents``), the database handle
and the queries (``store``), the message writer's queue and its flusher task (``writer``), one batch's
round trip and its refusals (``batch``), the disk spool (``spool``), and the local development database
process (``devdb``).

May import: the kernel (``bot.config``, ``bot.domain``, ``bot.errors``). Imported by: ``bot.pipeline``,
``bot.app``, ``bot.cli`` and the features that read stored chat.
"""
