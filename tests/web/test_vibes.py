"""``/vibes`` and ``/api/vibes`` over real HTTP, ranking real profiles in a real FerretDB (a tiny llama.cpp BERT
embeds): the dashboard's token rules, parameter checks, and hostile channel names and chat lines kept as text,
in the HTML and in Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from markupsafe import escape
from playwright.async_api import Browser, async_playwright

from bot.config import DEFAULT_CATEGORIES, Config, StorageConfig, parse_config
from bot.domain import ChatLine
from bot.storage.store import Storage
from bot.vibes.recommend import Vibes, open_vibes
from bot.web.vibes import TEMPLATES, mood_bars
from tests.fakes.chat import verdict
from tests.fakes.gguf import write_tiny_bert
from tests.web.overlay_env import TOKEN, OverlayEnv, serve
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS, Watch, shot

HOSTILE_CHANNEL = '<script>alert("chan")</script>'
HOSTILE_LINE = '<img src=x onerror=alert(1)> lol {{ 7*7 }} "quoted" & funny'


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert.gguf")


@pytest_asyncio.fixture(loop_scope="function")
async def vibes(storage: Storage, storage_config: StorageConfig, bert_path: Path) -> AsyncIterator[Vibes]:
    cfg: Config = parse_config({"vibes": {"embedding_model": str(bert_path)},
                                "classifier": {"models_dir": str(bert_path.parent)}}, {})
    now = datetime.now(UTC)
    chats = {
        HOSTILE_CHANNEL: [(HOSTILE_LINE, "funny"), ("lol lol", "funny"), ("that was so funny lol", "funny")],
        "calm_corner": [("good evening chat", "neutral"), ("love this stream", "love"), ("thanks all", "love")],
    }
    for channel, lines in chats.items():
        for i, (text, label) in enumerate(lines):
            mid = f"{len(channel)}-{i}"
            storage.writer.submit(ChatLine(mid, channel, "u", "u", "U", text, now))
            storage.writer.submit_verdict(mid, verdict(label))
    await storage.writer.flush()
    async with open_vibes(cfg, storage) as v:
        await v.store.refresh()
        yield v


@pytest_asyncio.fixture(loop_scope="function")
async def base(vibes: Vibes) -> AsyncIterator[str]:
    async with serve(OverlayEnv(vibes=vibes.answer)) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="function")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


BEARER = {"Authorization": f"Bearer {TOKEN}"}


class TestVibesHttp:
    async def test_token_rules_are_the_dashboards(self, base: str, http: aiohttp.ClientSession) -> None:
        async with http.get(f"{base}/vibes?q=funny") as r:
            assert r.status == 401
        async with http.get(f"{base}/api/vibes?q=funny") as r:
            assert r.status == 401
        async with http.get(f"{base}/api/vibes?q=funny", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 403
        async with http.get(f"{base}/vibes?q=funny&token={TOKEN}", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/vibes?q=funny"
        async with http.get(f"{base}/vibes?q=funny") as r:  # the cookie now
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        async with http.get(f"{base}/api/vibes?q=funny") as r:  # the cookie works for the API too
            assert r.status == 200

    async def test_api_answers_ranked_channels(self, base: str, http: aiohttp.ClientSession) -> None:
        async with http.get(f"{base}/api/vibes", params={"q": "laughing at memes", "top": "2"}, headers=BEARER) as r:
            assert r.status == 200
            body = await r.json()
        assert body["query"] == "laughing at memes" and next(iter(body["moods_asked"])) == "funny"
        assert body["weights"]["text"] + body["weights"]["mood"] == pytest.approx(1.0)
        assert [c["channel"] for c in body["channels"]] == [HOSTILE_CHANNEL, "calm_corner"]
        first = body["channels"][0]
        assert {"channel", "score", "text_score", "mood_score", "shares", "samples"} <= set(first)

    async def test_bad_parameters(self, base: str, http: aiohttp.ClientSession) -> None:
        for params, status in (({}, 400), ({"q": "x", "top": "0"}, 400), ({"q": "x", "top": "many"}, 400),
                               ({"q": "x" * 201}, 400), ({"q": "x", "colour": "red"}, 400)):
            async with http.get(f"{base}/api/vibes", params=params, headers=BEARER) as r:
                assert r.status == status, params
                assert "error" in await r.json()

    async def test_page_escapes_channel_names_and_sample_lines(self, base: str, http: aiohttp.ClientSession) -> None:
        async with http.get(f"{base}/vibes", params={"q": "funny lol <b>bold</b>"}, headers=BEARER) as r:
            assert r.status == 200
            page = await r.text()
        assert "<script>" not in page and "<img" not in page and "<b>bold" not in page
        assert f"#{escape(HOSTILE_CHANNEL)}</h2>" in page
        assert "&lt;img src=x onerror=alert(1)&gt; lol {{ 7*7 }}" in page and "49" not in page
        assert 'aria-label="mood shares: funny 100%"' in page

    async def test_the_empty_page_offers_the_templates(self, base: str, http: aiohttp.ClientSession) -> None:
        async with http.get(f"{base}/vibes", headers=BEARER) as r:
            page = await r.text()
        assert 'id="results"' not in page
        for t in TEMPLATES:
            assert t in page

    def test_mood_bars_tile_the_bar(self) -> None:
        bars = mood_bars({"hype": 0.5, "funny": 0.25, "sad": 0.25}, DEFAULT_CATEGORIES)
        assert [(b["name"], b["x"], b["width"]) for b in bars] == [("hype", 0, 50), ("funny", 50, 25),
                                                                   ("sad", 75, 25)]


@pytest.mark.browser
class TestVibesInChromium:
    async def test_hostile_text_stays_text_and_nothing_trips_the_csp(self, base: str) -> None:
        if not CHROMIUM.is_file():
            pytest.fail(f"Debian's chromium is not installed at {CHROMIUM}: `make setup` installs it", pytrace=False)
        watch = Watch()
        async with async_playwright() as pw:
            browser: Browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = watch.attach(await browser.new_page(viewport={"width": 900, "height": 700}))
                await page.goto(f"{base}/vibes?token={TOKEN}")
                await page.fill("#q", "funny quoted memes")
                await page.click("button[type=submit]")
                await page.wait_for_selector("#results li.result")
                names = await page.locator(".result .name").all_text_contents()
                assert names[0] == f"#{HOSTILE_CHANNEL}"
                assert HOSTILE_LINE in (await page.locator(".samples li").first.text_content() or "")
                assert await page.locator(".moodbar rect").count() >= 3
                await shot(page, "vibes.png", full_page=True)
            finally:
                await browser.close()
        watch.assert_clean()
