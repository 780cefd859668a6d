"""Chat commands: ``!mood``, ``!label``, ``!reset``.

Owns: parsing, permissions and cooldowns (``router``, pure), the reply texts (``format``), and running a
command against storage and the mood (``executor``).

May import: the kernel and ``bot.mood``. Imported by: ``bot.pipeline``.
"""
