"""Real-browser tests: Debian's chromium driven by Playwright (never a downloaded browser).

The overlay follows the mood, recovers after the server restarts, and hostile chat stays text
on the dashboard. Screenshots go to tests/screenshots/ (git-ignored); the README's copies in
docs/screenshots/ are taken from there.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Dialog, Page, async_playwright

from bot.app import serve_overlay
from bot.commands.format import emoji_square, format_mood
from bot.config import StorageConfig, parse_config
from bot.domain import ChatLine, Verdict
from bot.mood.colour import colour_distance, hex_to_rgb
from bot.pipeline import open_pipeline
from bot.replay.pacing import replay
from bot.storage.store import Storage
from bot.tasks import supervise
from bot.web.server import STATIC_DIR, VENDOR_JS
from tests.fakes.chat import verdict
from tests.web.overlay_env import COLOURS, TOKEN, OverlayEnv, serve

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("CHATMOOD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SHOTS = Path(__file__).resolve().parents[1] / "screenshots"
WAIT_MS = 15_000
HOSTILE = "<img src=x onerror=alert(1)> <script>alert(2)</script> nice play"


def css_rgb(colour: str) -> str:
    """``#rrggbb`` as Chromium's computed style writes it."""
    r, g, b = (round(c * 255) for c in hex_to_rgb(colour))
    return f"rgb({r}, {g}, {b})"


@dataclass
class Watch:
    """What a page did that it must not: dialogs (alert), script errors, CSP violations."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> Page:
        async def on_dialog(dialog: Dialog) -> None:
            self.dialogs.append(dialog.message)
            await dialog.dismiss()

        def on_console(msg: ConsoleMessage) -> None:
            if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text:
                self.csp.append(msg.text)

        page.on("dialog", on_dialog)
        page.on("console", on_console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        return page

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"a dialog opened: {self.dialogs}"
        assert self.errors == [], f"script errors: {self.errors}"
        assert self.csp == [], f"CSP violations: {self.csp}"


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Debian's chromium is not installed at {CHROMIUM}: `make setup` installs it "
            "(apt-get install chromium); the browser tests never download a browser.",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture
def chart_installed() -> bool:
    return (STATIC_DIR / VENDOR_JS).is_file()


@pytest_asyncio.fixture(loop_scope="function")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def computed(page: Page, prop: str) -> str:
    value = await page.eval_on_selector("#mood", f"el => getComputedStyle(el).{prop}")
    assert isinstance(value, str)
    return value


async def wait_computed(page: Page, prop: str, needle: str) -> None:
    """Wait until the mood element's computed ``prop`` contains ``needle`` (the CSS transition finished)."""
    await page.wait_for_function(
        f"n => getComputedStyle(document.getElementById('mood')).{prop}.includes(n)", arg=needle, timeout=WAIT_MS
    )


async def shot(page: Page, name: str, **kwargs: object) -> None:
    SHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SHOTS / name), **kwargs)  # type: ignore[arg-type]


class TestOverlayInChromium:
    """The overlay page in a real browser, as an OBS browser source shows it."""

    async def test_colour_follows_a_strong_mood(self, browser: Browser) -> None:
        """Bar, glow and orb start at the neutral colour; after a burst of angry verdicts goes through the
        tracker and the hub, each moves to the new, angrier colour (after its CSS transition), and the
        label reads 'angry'. Nothing on the page trips the CSP."""
        env = OverlayEnv()
        watch = Watch()
        async with serve(env) as url:
            pages: dict[str, Page] = {}
            for style, query in (
                ("orb", "style=orb&size=160"),
                ("bar", "style=bar&thickness=24"),
                ("glow", "style=glow&size=60"),
            ):
                page = watch.attach(await browser.new_page(viewport={"width": 640, "height": 360}))
                await page.goto(f"{url}/overlay/demo?{query}")
                await page.wait_for_selector('#overlay[data-connected="1"]', timeout=WAIT_MS)
                pages[style] = page
            neutral = env.tracker.state("demo").colour
            assert await computed(pages["orb"], "backgroundColor") == css_rgb(neutral)
            assert await computed(pages["bar"], "backgroundColor") == css_rgb(neutral)
            assert css_rgb(neutral) in await computed(pages["glow"], "boxShadow")

            angry = env.feed("demo", "angry", 60)
            assert angry.label == "angry"
            assert colour_distance(angry.colour, COLOURS["angry"]) < colour_distance(neutral, COLOURS["angry"])
            for style, page in pages.items():
                await page.wait_for_selector('#overlay[data-mood="angry"]', timeout=WAIT_MS)
                prop = "boxShadow" if style == "glow" else "backgroundColor"
                await wait_computed(page, prop, css_rgb(angry.colour))
                assert await page.text_content("#label") == "angry"
                await shot(page, f"overlay-{style}.png", omit_background=True)
        watch.assert_clean()

    async def test_three_moods_read_at_a_glance(self, browser: Browser) -> None:
        """Idle chat shows the neutral colour; chat that is 55% neutral, 25% hype and 20% other shows a clear
        orange (it was a mauve grey when every share was blended); two equally strong moods show a visible mix
        of both. !mood's square agrees with the named mood. The screenshots are the README's."""
        env = OverlayEnv()
        watch = Watch()
        async with serve(env) as url:
            page = watch.attach(await browser.new_page(viewport={"width": 300, "height": 260}))
            await page.goto(f"{url}/overlay/demo?style=orb&size=160&label=1")
            await page.wait_for_selector('#overlay[data-connected="1"]', timeout=WAIT_MS)

            idle = env.mood.publish("demo")
            assert idle.colour == COLOURS["neutral"]
            await wait_computed(page, "backgroundColor", css_rgb(idle.colour))
            await shot(page, "mood-idle.png", omit_background=True)

            mostly_neutral = {"neutral": 0.55, "hype": 0.25, "love": 0.1, "funny": 0.1}
            for _ in range(60):
                env.tracker.observe("demo", Verdict("neutral", 1.0, mostly_neutral, "test"))
            leaning = env.mood.publish("demo")
            assert leaning.label == "neutral" and leaning.lean == "hype" and leaning.strength > 0.5
            assert emoji_square(leaning.colour) == "🟧"  # the colour itself reads as orange
            to_hype, to_neutral = (colour_distance(leaning.colour, COLOURS[m]) for m in ("hype", "neutral"))
            assert to_hype < to_neutral
            assert "⬜, leaning hype 24%" in format_mood(leaning, datetime.now(UTC))
            await wait_computed(page, "backgroundColor", css_rgb(leaning.colour))
            await page.wait_for_selector('#overlay[data-lean="hype"]', timeout=WAIT_MS)
            assert await page.text_content("#label") == "leaning hype"
            await shot(page, "mood-leaning-hype.png", omit_background=True)

            env.reset("demo")
            for _ in range(40):
                env.tracker.observe("demo", verdict("hype"))
                env.tracker.observe("demo", verdict("love"))
            both = env.mood.publish("demo")
            assert both.strength == 1.0
            gap = colour_distance(COLOURS["hype"], COLOURS["love"])
            assert colour_distance(both.colour, COLOURS["hype"]) > 0.3 * gap
            assert colour_distance(both.colour, COLOURS["love"]) > 0.3 * gap
            vivid = min(colour_distance(COLOURS[m], COLOURS["neutral"]) for m in ("hype", "love"))
            assert colour_distance(both.colour, COLOURS["neutral"]) > 0.8 * vivid  # a mix, not a fade to grey
            await wait_computed(page, "backgroundColor", css_rgb(both.colour))
            await shot(page, "mood-two-moods.png", omit_background=True)
        watch.assert_clean()

    async def test_page_recovers_after_server_restart(self, browser: Browser) -> None:
        """The server stops (its sockets closed) and a new one starts on the same port: the page notices,
        reconnects by itself with backoff, and follows moods published afterwards."""
        env = OverlayEnv()
        watch = Watch()
        async with serve(env) as url:
            port = int(url.rsplit(":", 1)[1])
            page = watch.attach(await browser.new_page(viewport={"width": 640, "height": 360}))
            await page.goto(f"{url}/overlay/demo?style=orb")
            await page.wait_for_selector('#overlay[data-connected="1"]', timeout=WAIT_MS)
        await page.wait_for_selector('#overlay[data-connected="0"]', timeout=WAIT_MS)
        assert env.hub.subscriber_count() == 0

        async with serve(env, port=port):
            await page.wait_for_selector('#overlay[data-connected="1"]', timeout=WAIT_MS)
            love = env.feed("demo", "love", 60)
            assert love.label == "love"
            await page.wait_for_selector('#overlay[data-mood="love"]', timeout=WAIT_MS)
            await wait_computed(page, "backgroundColor", css_rgb(love.colour))
        watch.assert_clean()


SAMPLE = [
    ("hype", "LETS GOOOO"),
    ("hype", "what a clutch"),
    ("funny", "LUL that jump"),
    ("neutral", "what rank is this?"),
    ("love", "love this community <3"),
    ("sad", "nooo so close"),
    ("angry", "this ref is trash"),
]


async def fill_history(env: OverlayEnv, storage: Storage) -> None:
    """An hour of snapshots with mood swings and a few classified messages, for the chart and the table."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = env.clock.t
    phases = ["neutral", "hype", "hype", "funny", "sad", "angry", "love", "hype"]
    for i in range(48):
        at = now - timedelta(minutes=60 - i * 1.25)
        env.clock.t = at.timestamp()
        label = phases[i * len(phases) // 48]
        for _ in range(3):
            env.tracker.observe("demo", verdict(label))
        await storage.save_snapshot(env.tracker.state("demo"), bucket=at)
    env.clock.t = start
    for n, (_, text) in enumerate([*SAMPLE, ("angry", HOSTILE)]):
        line = ChatLine(
            message_id=f"b-{n}",
            channel="demo",
            user_id=str(n),
            user_login=f"viewer{n}",
            user_name=f"Viewer{n}",
            text=text,
            sent_at=now - timedelta(seconds=len(SAMPLE) + 1 - n),
        )
        storage.writer.submit(line)
    await storage.writer.flush()
    for n, (label, _) in enumerate([*SAMPLE, ("angry", HOSTILE)]):
        storage.writer.submit_verdict(f"b-{n}", verdict(label, 0.8))
    await storage.writer.flush()
    for i in range(3):
        await storage.add_labeled_example(prompt=f"example {i}", completion="hype", labelled_by="mod")


class TestDashboardInChromium:
    """The dashboard in a real browser, with a real database behind it."""

    async def test_hostile_chat_shows_as_text(self, browser: Browser, storage: Storage, chart_installed: bool) -> None:
        """A chat line carrying <img onerror> and <script> is shown as its literal text, both as the server
        rendered it and after the page's own refresh; no element is created from it, no dialog opens, no CSP
        violation happens. The chart draws (when the vendor library is installed) and reset works."""
        env = OverlayEnv(storage=storage)
        await fill_history(env, storage)
        env.feed("demo", "hype", 5)
        watch = Watch()
        async with serve(env) as url:
            page = watch.attach(await browser.new_page(viewport={"width": 1100, "height": 1400}))
            response = await page.goto(f"{url}/dashboard/demo?token={TOKEN}")
            assert response is not None and response.status == 200
            assert "token" not in page.url  # traded for the cookie

            async def check_rows() -> None:
                texts = await page.locator("#message-rows td.text").all_text_contents()
                assert texts[0] == HOSTILE and "LETS GOOOO" in texts
                assert await page.locator("#message-rows img").count() == 0
                assert await page.locator("#message-rows script").count() == 0

            await check_rows()  # as the server rendered it
            await page.wait_for_selector("#dashboard[data-message-refreshes]", timeout=WAIT_MS)
            await check_rows()  # as dashboard.js re-rendered it from /api/messages

            if chart_installed:
                await page.wait_for_selector("#dashboard[data-points]", timeout=WAIT_MS)
                assert int(await page.get_attribute("#dashboard", "data-points") or 0) >= 40
                assert await page.locator("#chart canvas").count() >= 1
            else:
                assert "not installed" in (await page.text_content("#chart-notice") or "")
            assert await page.text_content("#mood-label") == "hype"
            await shot(page, "dashboard.png", full_page=True)

            await page.click("#reset")
            await page.wait_for_function(
                "() => document.getElementById('reset-status').textContent === 'mood reset'", timeout=WAIT_MS
            )
            assert env.resets == ["demo"]
            assert await page.text_content("#mood-label") == "neutral"
            assert re.fullmatch(r"\d+", await page.text_content("#mood-messages") or "")
        watch.assert_clean()


HYPE_CHAT = ["LETS GOOOO PogChamp", "POGGERS what a play", "HOLY CLUTCH PogU", "W W W LETSGO", "insane play PogChamp"]


class TestPipelineInChromium:
    """The whole path a streamer sees: replayed chat -> ingest -> classifier -> mood -> hub -> overlay."""

    async def test_replayed_hype_chat_turns_the_overlay(
        self, browser: Browser, storage_config: StorageConfig, spool_dir: Path, tmp_path: Path
    ) -> None:
        """A burst of hype chat replayed through ingest (stored, classified by the real cold-start head)
        moves the overlay in Chromium from neutral to hype, its colour towards the hype colour."""
        cfg = parse_config({"classifier": {"embedding_model": "", "models_dir": str(tmp_path / "models")}}, {})
        cfg = cfg.model_copy(update={"storage": storage_config.model_copy(update={"spool_dir": spool_dir})})
        lines = [
            ChatLine(
                message_id=f"hype-{i}",
                channel="replaychan",
                user_id=str(100 + i),
                user_login=f"fan{i}",
                user_name=f"Fan{i}",
                text=HYPE_CHAT[i % len(HYPE_CHAT)],
                sent_at=datetime.now(UTC) + timedelta(milliseconds=50 * i),
            )
            for i in range(40)
        ]
        watch = Watch()

        async def health() -> dict[str, object]:
            return {"database": {"ok": True}}

        async with (
            open_pipeline(cfg) as p,
            serve_overlay(p, "127.0.0.1", 0, TOKEN, health) as base,
            supervise(p.services()),
        ):
            page = watch.attach(await browser.new_page(viewport={"width": 400, "height": 400}))
            await page.goto(f"{base}/overlay/replaychan?style=orb&label=1")
            await page.wait_for_selector('#overlay[data-connected="1"]', timeout=WAIT_MS)
            neutral = p.mood.state("replaychan").colour
            assert await computed(page, "backgroundColor") == css_rgb(neutral)

            stats = await replay(lines, p.ingest.submit, speed=None, max_rate=400)
            await p.classifier.drain()
            assert stats.submitted == 40
            state = p.mood.state("replaychan")
            assert state.label == "hype" and state.messages == 40

            await page.wait_for_selector('#overlay[data-mood="hype"]', timeout=WAIT_MS)
            await page.wait_for_function(
                "n => getComputedStyle(document.getElementById('mood')).backgroundColor !== n",
                arg=css_rgb(neutral),
                timeout=WAIT_MS,
            )
            await page.wait_for_timeout(1_500)  # let the CSS transition finish
            shown = await computed(page, "backgroundColor")
            r, g, b = (int(x) for x in re.findall(r"\d+", shown)[:3])
            now_hex = f"#{r:02x}{g:02x}{b:02x}"
            hype = COLOURS["hype"]
            assert colour_distance(now_hex, hype) < colour_distance(neutral, hype) / 2
            assert await page.text_content("#label") == "hype"
            await p.storage.writer.flush()
            assert await p.storage.count_messages("replaychan") == 40
        watch.assert_clean()
