"""``/vibes`` and ``/api/vibes``: channels ranked by how well their chat fits what a viewer types.

The page is a plain form (``GET /vibes?q=...``) answered on the server: results, mood bars (SVG rectangles
sized by attributes, so the strict CSP needs no inline style) and sample lines, all through Jinja2
autoescaping; no script at all. ``/api/vibes?q=...&top=N`` answers the same as JSON. Both follow the
dashboard's token rules (:mod:`bot.web.guard`): the page takes ``?token=`` once (traded for the cookie), the
API a bearer token or that cookie. The ranking itself is whatever the app hands to
:func:`add_vibes_routes` (``bot.vibes.recommend.Vibes.answer`` in ``chatmood run`` and ``demo``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp_jinja2
import structlog
from aiohttp import web

from bot.config import Category
from bot.web import guard
from bot.web.guard import ParamError

log = structlog.get_logger(__name__)

Search = Callable[[str, int], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class VibesRoutes:
    search: Search
    auth: guard.TokenAuth
    categories: tuple[Category, ...]


VIBES_KEY = web.AppKey("vibes", VibesRoutes)
TEMPLATES = ("a calm and cozy community", "chaotic and spammy but hilarious", "hype esports energy")
PAGE_TOP = 10


def mood_bars(shares: Mapping[str, float], categories: Sequence[Category]) -> list[dict[str, Any]]:
    """One SVG rectangle per category: its x offset and width in percent of the bar, and its colour."""
    bars, x = [], 0.0
    for c in categories:
        width = max(0.0, float(shares.get(c.name, 0.0))) * 100
        if width > 0:
            bars.append({"name": c.name, "colour": c.colour, "x": round(x, 3), "width": round(width, 3),
                         "percent": round(width)})
        x += width
    return bars


async def _answer(request: web.Request, query: str, top: int) -> Mapping[str, Any] | str:
    """The search's answer, or why there is none (the database is down, the model is missing)."""
    try:
        return await request.app[VIBES_KEY].search(query, top)
    except Exception as e:  # noqa: BLE001 - the page says what failed instead of a 500
        log.warning("vibes_search_failed", error=repr(e)[:300])
        return f"the search failed: {str(e)[:200] or type(e).__name__}"


@aiohttp_jinja2.template("vibes.html")
async def vibes_page(request: web.Request) -> dict[str, Any] | web.StreamResponse:
    routes = request.app[VIBES_KEY]
    redirect = routes.auth.require_dashboard(request)
    if redirect is not None:
        return redirect
    try:
        query, top = guard.parse_vibes_params(request.query, default_top=PAGE_TOP)
    except ParamError as e:
        raise web.HTTPBadRequest(text=f"{e}\n") from None
    categories = routes.categories
    answer: Mapping[str, Any] | None = None
    problem = ""
    if query:
        got = await _answer(request, query, top)
        if isinstance(got, str):
            problem = got
        else:
            answer = got
    channels = [{**row, "bars": mood_bars(row.get("shares", {}), categories)}
                for row in (answer or {}).get("channels", [])]
    return {"query": query, "answer": answer, "channels": channels, "problem": problem,
            "templates": TEMPLATES, "categories": categories}


async def api_vibes(request: web.Request) -> web.Response:
    request.app[VIBES_KEY].auth.require_token(request)
    try:
        query, top = guard.parse_vibes_params(request.query)
    except ParamError as e:
        return web.json_response({"error": str(e)}, status=400)
    if not query:
        return web.json_response({"error": "q is required: describe the chat you look for"}, status=400)
    got = await _answer(request, query, top)
    if isinstance(got, str):
        return web.json_response({"error": got}, status=503)
    return web.json_response(dict(got))


def add_vibes_routes(app: web.Application, search: Search, *, auth: guard.TokenAuth,
                     categories: Sequence[Category]) -> None:
    app[VIBES_KEY] = VibesRoutes(search, auth, tuple(categories))
    app.router.add_get("/vibes", vibes_page)
    app.router.add_get("/api/vibes", api_vibes)
