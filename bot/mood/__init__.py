"""The mood of a channel: verdicts smoothed into shares, a valence and a colour, and fanned out to watchers.

Owns: the smoothing (``tracker``, pure, clock injected), the colour maths (``colour``, pure) and the hub that
hands the latest state to every subscriber (``hub``; plain calls on the loop thread, no tasks).

May import: ``bot.config`` and ``bot.domain``. Imported by: ``bot.pipeline``, ``bot.commands``, ``bot.web``.
"""
