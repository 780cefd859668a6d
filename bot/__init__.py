"""chatmood: shows the mood of a Twitch chat as a colour."""

__version__ = "0.1.0"
