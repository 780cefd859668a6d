"""User tokens for the bot accounts: getting them, refreshing and validating them.

- :class:`~bot.twitch.tokens.TokenStore` (tokens.py) keeps them, one 0600 file per bot.
- :class:`AuthClient`: Twitch's OAuth endpoints (``{auth_url}oauth2/...``): device code flow,
  authorization-code flow with a local callback on ``127.0.0.1:callback_port``, refresh, validate.
- :func:`cmd_auth`: ``chatmood auth [--bot NAME]``.

Tokens and the client secret are :class:`pydantic.SecretStr` everywhere; no log event, repr or
error message carries them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import structlog
from aiohttp import web
from pydantic import SecretStr

from bot.config import BotConfig, Config, TwitchConfig
from bot.errors import AuthError, AuthRejected, TwitchError
from bot.twitch.tokens import TokenSet, TokenStore

log = structlog.get_logger(__name__)

#: Read chat through EventSub, send through Helix, and appear as a bot. The broadcaster grants
#: ``channel:bot`` to the application, unless the bot account is a moderator in that channel.
SCOPES: tuple[str, ...] = ("user:read:chat", "user:write:chat", "user:bot")
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``/oauth2/validate`` says about a token."""

    login: str
    user_id: str
    client_id: str
    scopes: tuple[str, ...]
    expires_in: int


@dataclass(frozen=True, slots=True)
class DeviceCode:
    device_code: SecretStr
    user_code: str
    verification_uri: str
    expires_in: int
    interval: int


def oauth_base(auth_url: str) -> str:
    """``https://id.twitch.tv/`` -> ``https://id.twitch.tv/oauth2/``."""
    base = auth_url.rstrip("/")
    if not base.endswith("/oauth2"):
        base += "/oauth2"
    return base + "/"


class AuthClient:
    """Twitch's OAuth endpoints. Opens one HTTP session per call; safe from any task."""

    def __init__(self, cfg: TwitchConfig, *, timeout_s: float = 15.0) -> None:
        self._client_id = cfg.client_id
        self._secret = cfg.client_secret
        self._base = oauth_base(cfg.auth_url)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def __repr__(self) -> str:
        return f"AuthClient(client_id={self._client_id!r}, base={self._base!r})"

    async def _request(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as s,
                s.request(method, self._base + path, **kw) as r,
            ):
                try:
                    body = await r.json(content_type=None)
                except ValueError:
                    body = {}
                return r.status, body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TwitchError(f"cannot reach Twitch auth at {self._base}{path}: {type(e).__name__}") from None

    async def validate(self, access_token: SecretStr) -> TokenInfo:
        """``GET /oauth2/validate``; raises :class:`AuthRejected` when the token is invalid, expired or revoked."""
        status, body = await self._request(
            "GET", "validate", headers={"Authorization": f"OAuth {access_token.get_secret_value()}"}
        )
        if status == 401:
            raise AuthRejected(str(body.get("message") or "invalid access token"))
        if status != 200:
            raise TwitchError(f"token validation failed with HTTP {status}")
        if not body.get("login") or not body.get("user_id"):
            raise AuthRejected("not a user access token")
        return TokenInfo(
            login=str(body["login"]),
            user_id=str(body["user_id"]),
            client_id=str(body.get("client_id", "")),
            scopes=tuple(body.get("scopes") or ()),
            expires_in=int(body.get("expires_in") or 0),
        )

    def _token_set(self, body: dict[str, Any], now: float) -> TokenSet:
        if "access_token" not in body:
            raise AuthRejected(str(body.get("message") or "no access token in the answer"))
        scope = body.get("scope") or ()
        expires_in = body.get("expires_in")
        return TokenSet(
            access_token=SecretStr(str(body["access_token"])),
            refresh_token=SecretStr(str(body["refresh_token"])) if body.get("refresh_token") else None,
            scopes=tuple(scope.split() if isinstance(scope, str) else scope),
            expires_at=now + float(expires_in) if expires_in else None,
        )

    def _client_form(self) -> dict[str, str]:
        form = {"client_id": self._client_id}
        if self._secret is not None:
            form["client_secret"] = self._secret.get_secret_value()
        return form

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        """New tokens from the refresh token; raises :class:`AuthRejected` if Twitch refuses it."""
        if tokens.refresh_token is None:
            raise AuthRejected("no refresh token stored")
        form = self._client_form() | {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token.get_secret_value(),
        }
        status, body = await self._request("POST", "token", data=form)
        if status in (400, 401, 403):
            raise AuthRejected(str(body.get("message") or "refresh token refused"))
        if status != 200:
            raise TwitchError(f"token refresh failed with HTTP {status}")
        new = self._token_set(body, time.time())
        return TokenSet(new.access_token, new.refresh_token or tokens.refresh_token, new.scopes or tokens.scopes,
                        new.expires_at, tokens.login, tokens.user_id)

    async def device_start(self, scopes: tuple[str, ...] = SCOPES) -> DeviceCode:
        form = {"client_id": self._client_id, "scopes": " ".join(scopes)}
        status, body = await self._request("POST", "device", data=form)
        if status != 200 or "device_code" not in body:
            raise AuthRejected(str(body.get("message") or f"device authorization failed with HTTP {status}"))
        return DeviceCode(
            device_code=SecretStr(str(body["device_code"])),
            user_code=str(body["user_code"]),
            verification_uri=str(body["verification_uri"]),
            expires_in=int(body.get("expires_in", 1800)),
            interval=int(body.get("interval", 5)),
        )

    async def device_wait(
        self,
        code: DeviceCode,
        scopes: tuple[str, ...] = SCOPES,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> TokenSet:
        """Poll ``/oauth2/token`` until the user has entered the code (or it expires)."""
        deadline = clock() + code.expires_in
        interval = float(max(code.interval, 0))
        form = {
            "client_id": self._client_id,
            "scopes": " ".join(scopes),
            "device_code": code.device_code.get_secret_value(),
            "grant_type": DEVICE_GRANT,
        }
        while True:
            status, body = await self._request("POST", "token", data=form)
            if status == 200:
                return self._token_set(body, time.time())
            reason = str(body.get("message") or f"HTTP {status}")
            if reason == "slow_down":
                interval += 5
            elif reason != "authorization_pending":
                raise AuthRejected(reason)
            if clock() + interval > deadline:
                raise AuthRejected("the device code expired before it was entered")
            await sleep(interval)

    def authorize_url(self, redirect_uri: str, state: str, scopes: tuple[str, ...] = SCOPES) -> str:
        query = urlencode({
            "client_id": self._client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": " ".join(scopes),
            "state": state,
            "force_verify": "true",
        })
        return f"{self._base}authorize?{query}"

    async def exchange_code(self, code: str, redirect_uri: str) -> TokenSet:
        if self._secret is None:
            raise AuthRejected("the authorization-code flow needs twitch.client_secret")
        form = self._client_form() | {"code": code, "grant_type": "authorization_code", "redirect_uri": redirect_uri}
        status, body = await self._request("POST", "token", data=form)
        if status != 200:
            raise AuthRejected(str(body.get("message") or f"code exchange failed with HTTP {status}"))
        return self._token_set(body, time.time())

    async def code_flow(
        self,
        port: int,
        show: Callable[[str], None],
        scopes: tuple[str, ...] = SCOPES,
        *,
        timeout_s: float = 600.0,
    ) -> TokenSet:
        """Authorization-code flow: a one-shot callback server on ``127.0.0.1:port``; ``show`` gets the URL to open."""
        state = secrets.token_urlsafe(16)
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def callback(request: web.Request) -> web.Response:
            q = request.query
            if q.get("state") != state:
                return web.Response(status=400, text="state mismatch: start `chatmood auth` again")
            if "code" not in q:
                if not got.done():
                    got.set_exception(AuthRejected(q.get("error_description") or q.get("error") or "no code"))
                return web.Response(status=400, text="authorization was refused")
            if not got.done():
                got.set_result(q["code"])
            return web.Response(text="chatmood: authorized, you can close this tab.")

        app = web.Application()
        app.router.add_get("/", callback)
        runner = web.AppRunner(app, access_log=None)  # the access log would show the code
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            bound = runner.addresses[0][1] if runner.addresses else port
            redirect = f"http://localhost:{bound}"
            show(self.authorize_url(redirect, state, scopes))
            async with asyncio.timeout(timeout_s):
                code = await got
        finally:
            await runner.cleanup()
        return await self.exchange_code(code, redirect)


async def checked_tokens(client: AuthClient, tokens: TokenSet, bot: str, account: str) -> TokenSet:
    """Validate ``tokens`` for ``account``, refreshing once if Twitch says they expired; else ``AuthError``."""
    try:
        info = await client.validate(tokens.access_token)
    except AuthRejected:
        try:
            tokens = await client.refresh(tokens)
            info = await client.validate(tokens.access_token)
        except AuthRejected as e:
            log.error("token_rejected", bot=bot, reason=e.reason)
            raise AuthError(bot, f"the stored token was refused by Twitch ({e.reason})") from None
    if info.login != account:
        raise AuthError(bot, f"the stored token belongs to {info.login!r}, but bots.toml says {account!r}")
    missing = [s for s in SCOPES if s not in info.scopes]
    if missing:
        raise AuthError(bot, f"the stored token lacks the scopes {', '.join(missing)}")
    return TokenSet(tokens.access_token, tokens.refresh_token, info.scopes, time.time() + info.expires_in
                    if info.expires_in else None, info.login, info.user_id)


async def authorize_bot(cfg: Config, bot: BotConfig, show: Callable[[str], None]) -> TokenSet:
    """Run the configured flow for one bot and store the validated tokens."""
    client = AuthClient(cfg.twitch)
    if cfg.twitch.auth_flow == "device":
        code = await client.device_start()
        show(f"Log in to Twitch as {bot.account!r}, open {code.verification_uri} and enter the code {code.user_code}")
        tokens = await client.device_wait(code)
    else:
        show(f"Log in to Twitch as {bot.account!r} and open this URL:")
        tokens = await client.code_flow(cfg.twitch.callback_port, show)
    info = await client.validate(tokens.access_token)
    if info.login != bot.account:
        raise AuthError(bot.name, f"you logged in as {info.login!r}, but bots.toml says {bot.account!r}")
    tokens = TokenSet(tokens.access_token, tokens.refresh_token, info.scopes, tokens.expires_at,
                      info.login, info.user_id)
    TokenStore(cfg.resolve(bot.token_path)).save(tokens)
    return tokens


async def cmd_auth(cfg: Config, bot_name: str | None, *, show: Callable[[str], None] = print) -> int:
    """``chatmood auth [--bot NAME]``: authorize each configured bot (or the named one). Exit code."""
    if not cfg.twitch.client_id:
        show("twitch.client_id is not set in the config: create an application at https://dev.twitch.tv/console")
        return 2
    bots = [b for b in cfg.bots if bot_name is None or b.name == bot_name]
    if not bots:
        known = ", ".join(b.name for b in cfg.bots) or "none"
        show(f"no bot named {bot_name!r} in the config (configured: {known})")
        return 2
    for bot in bots:
        try:
            tokens = await authorize_bot(cfg, bot, show)
        except (TwitchError, TimeoutError) as e:
            show(f"bot {bot.name!r}: authorization failed: {e}")
            return 1
        show(f"bot {bot.name!r}: authorized as {tokens.login} ({', '.join(tokens.scopes)}); "
             f"token stored in {cfg.resolve(bot.token_path)}")
        others = [c for c in bot.channels if c != bot.account]
        if others:
            show("  Each broadcaster of " + ", ".join(others) + " must either make the bot a moderator "
                 "(/mod " + bot.account + ") or authorize this application with the channel:bot scope.")
    return 0
