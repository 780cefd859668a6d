"""Recorded chat logs: reading them (four formats) and feeding them through the pipeline on a schedule.

Owns: format detection (``logfile``), one parser per format (``rechat``, ``textlog``, ``jsonl``) over a
shared :class:`~bot.replay.parsed.ParsedLog`, pacing and progress (``pacing``), and ``chatmood replay``
(``run``).

May import: the kernel (``run`` builds a :mod:`bot.pipeline`). Imported by: ``bot.app`` (the demo) and ``bot.cli``.
"""
