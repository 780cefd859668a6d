"""A real overlay server on loopback for the overlay and browser tests.

``OverlayEnv`` bundles what ``create_overlay_app`` needs: a real :class:`MoodPublisher` (tracker on a
settable clock, and hub), a reset that records which channels it was asked for, a health callable,
and optionally a real ``Storage``. ``serve(env, port=0)`` runs it
with ``AppRunner`` + ``TCPSite`` on 127.0.0.1 and yields the base URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from bot.config import DEFAULT_CATEGORIES, OverlayConfig
from bot.domain import MoodState
from bot.mood.hub import MoodHub
from bot.mood.publisher import MoodPublisher
from bot.mood.tracker import MoodTracker
from bot.web.server import HEADER_TIMEOUT_S, STATIC_DIR, OverlayStorage, create_overlay_app, overlay_runner
from bot.web.vibes import Search
from tests.fakes.chat import verdict
from tests.fakes.clock import FakeClock

TOKEN = "s3cret-overlay-token"
COLOURS = {c.name: c.colour for c in DEFAULT_CATEGORIES}


@dataclass
class OverlayEnv:
    token: str = TOKEN
    overlay_requires_token: bool = False
    storage: OverlayStorage | None = None
    static_dir: Path = STATIC_DIR
    clock: FakeClock = field(default_factory=FakeClock)
    hub: MoodHub = field(default_factory=MoodHub)
    health_report: dict[str, Any] = field(
        default_factory=lambda: {
            "database": {"ok": True},
            "model": {"ok": True, "name": "test"},
            "twitch": {"bot1": {"ok": True, "connected": True}},
        }
    )
    health_error: Exception | None = None
    vibes: Search | None = None  # what answers /vibes (bot.vibes.recommend.Vibes.answer), or no /vibes
    resets: list[str] = field(default_factory=list)
    tracker: MoodTracker = field(init=False)
    mood: MoodPublisher = field(init=False)

    def __post_init__(self) -> None:
        self.tracker = MoodTracker(DEFAULT_CATEGORIES, half_life_s=60.0, neutral_prior=3.0, clock=self.clock)
        self.mood = MoodPublisher(self.tracker, self.hub)

    def feed(self, channel: str, label: str, n: int) -> MoodState:
        """Observe ``n`` verdicts of ``label`` and publish the new state, as the pipeline does."""
        for _ in range(n):
            self.tracker.observe(channel, verdict(label))
        return self.mood.publish(channel)

    def reset(self, channel: str) -> MoodState:
        self.resets.append(channel)
        return self.mood.reset(channel)

    async def health(self) -> Mapping[str, Any]:
        if self.health_error is not None:
            raise self.health_error
        return self.health_report

    def app(self) -> web.Application:
        cfg = OverlayConfig(
            access_token=SecretStr(self.token) if self.token else None,
            overlay_requires_token=self.overlay_requires_token,
        )
        return create_overlay_app(
            cfg=cfg,
            categories=DEFAULT_CATEGORIES,
            hub=self.hub,
            mood_state=self.tracker.state,
            storage=self.storage,
            reset=self.reset,
            health=self.health,
            access_token=self.token,
            static_dir=self.static_dir,
            vibes=self.vibes,
        )


@asynccontextmanager
async def serve(env: OverlayEnv, port: int = 0, header_timeout_s: float = HEADER_TIMEOUT_S) -> AsyncIterator[str]:
    """Run ``env``'s app on 127.0.0.1:``port`` (0: a free one) with the runner the programs use; yields
    ``http://127.0.0.1:PORT``."""
    runner = overlay_runner(env.app(), header_timeout_s=header_timeout_s, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        host, bound = runner.addresses[0][:2]
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()
