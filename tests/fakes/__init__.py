"""Shared test doubles: a hand-moved clock, ChatLine and Verdict builders, tiny GGUF files and the fake Twitch.

They stand in for time and for Twitch, never for our own code or the database (those tests use a real
FerretDB). Import each from its module (``tests.fakes.clock``, ``.chat``, ``.gguf``, ``.twitch``).
"""
