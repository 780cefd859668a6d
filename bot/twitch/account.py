"""A bot account signed in: its user token kept valid, and the Helix client that uses it.

:class:`Account` loads the token from its file, validates it (refreshing when it is close to expiry), builds
twitchAPI's ``Twitch`` client with it, and from then on keeps it valid: :meth:`Account.revalidate` under one
``asyncio.Lock``, every ``validate_interval_s`` as Twitch requires (:meth:`Account.validate_forever`), and on a
401 from Helix (:meth:`Account.helix` refreshes once and retries). Refresh is ours, never twitchAPI's
(``auto_refresh_auth = False``): a refresh that raises inside twitchAPI leaves its internal lock set forever, so
every hand-over of a token also clears that lock. A refused refresh or a revoked token raises
:class:`~bot.errors.AuthError` naming the bot and the fix (``chatmood auth``).

Used by :class:`~bot.twitch.bot.TwitchBot` and :class:`~bot.twitch.collector.ChatCollector`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from twitchAPI.twitch import Twitch
from twitchAPI.type import AuthScope, UnauthorizedException

from bot.config import BotConfig, TwitchConfig
from bot.errors import AuthError, AuthRejected, TwitchError
from bot.twitch.auth import AuthClient, checked_tokens, oauth_base
from bot.twitch.tokens import TokenSet, TokenStore

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Account:
    def __init__(self, twitch_cfg: TwitchConfig, bot_cfg: BotConfig, store: TokenStore, *,
                 validate_interval_s: float = 3600.0) -> None:
        self._cfg = twitch_cfg
        self._bot = bot_cfg
        self.name = bot_cfg.name
        self._store = store
        self._validate_interval = validate_interval_s
        self._auth = AuthClient(twitch_cfg)
        self._lock = asyncio.Lock()
        self._tokens: TokenSet | None = None
        self._twitch: Twitch | None = None

    @property
    def user_id(self) -> str:
        return self._tokens.user_id if self._tokens else ""

    @property
    def twitch(self) -> Twitch:
        """The Helix client (after :meth:`open`)."""
        if self._twitch is None:
            raise TwitchError(f"bot {self.name!r}: not signed in yet")
        return self._twitch

    async def open(self) -> Twitch:
        """Load and validate the stored token; the Helix client that uses it. Raises ``AuthError``."""
        try:
            stored = self._store.load()
        except TwitchError as e:  # unreadable file: a new `chatmood auth` rewrites it
            raise AuthError(self.name, str(e)) from None
        if stored is None:
            raise AuthError(self.name, f"no token stored in {self._store.path}")
        tokens = await checked_tokens(self._auth, stored, self.name, self._bot.account)
        self._keep(tokens, stored)
        self._twitch = Twitch(self._cfg.client_id,
                              self._cfg.client_secret.get_secret_value() if self._cfg.client_secret else None,
                              authenticate_app=False, base_url=self._cfg.api_url,
                              auth_base_url=oauth_base(self._cfg.auth_url))
        self._twitch.auto_refresh_auth = False  # refresh is ours (see the module docstring)
        await self._hand_over(tokens)
        return self._twitch

    def _keep(self, new: TokenSet, old: TokenSet | None) -> None:
        if old is None or new.access_token != old.access_token or new.user_id != old.user_id:
            self._store.save(new)
        self._tokens = new

    async def _hand_over(self, tokens: TokenSet) -> None:
        twitch = self.twitch
        scopes = [AuthScope(s) for s in tokens.scopes if s in AuthScope._value2member_map_]
        twitch._user_token_refresh_lock = False  # never let a stuck library refresh spin us
        await twitch.set_user_authentication(
            tokens.access_token.get_secret_value(), scopes,
            tokens.refresh_token.get_secret_value() if tokens.refresh_token else None, validate=False)

    async def revalidate(self, *, force_refresh: bool = False) -> None:
        """Validate (refreshing when needed or asked) under one lock. ``AuthError`` when Twitch refuses for good;
        ``TwitchError`` when it can't be asked right now."""
        async with self._lock:
            assert self._tokens is not None, "open() first"
            old = self._tokens
            try:
                if force_refresh:
                    new = await self._auth.refresh(old)
                    new = await checked_tokens(self._auth, new, self.name, self._bot.account)
                else:
                    new = await checked_tokens(self._auth, old, self.name, self._bot.account)
                    if new.expires_at is not None and new.expires_at - time.time() < self._validate_interval + 300:
                        new = await checked_tokens(self._auth, await self._auth.refresh(new), self.name,
                                                   self._bot.account)
            except AuthRejected as e:
                raise AuthError(self.name, f"Twitch refused the token refresh ({e.reason})") from None
            self._keep(new, old)
            if new.access_token != old.access_token:
                await self._hand_over(new)
                log.info("token_refreshed", bot=self.name)
            else:
                log.info("token_validated", bot=self.name)

    async def validate_forever(self, on_revoked: Callable[[AuthError], None]) -> None:
        """Validate every ``validate_interval_s``, as Twitch requires. A revoked token is handed to
        ``on_revoked`` and ends the loop; an unreachable Twitch is logged and tried again next round."""
        while True:
            await asyncio.sleep(self._validate_interval)
            try:
                await self.revalidate()
            except AuthError as e:
                on_revoked(e)
                return
            except TwitchError as e:
                log.warning("token_validation_failed", bot=self.name, error=str(e))

    async def helix(self, call: Callable[[], Awaitable[T]]) -> T:
        """A Helix call; on 401 refresh once (under the lock) and retry."""
        try:
            return await call()
        except UnauthorizedException:
            await self.revalidate(force_refresh=True)
            return await call()
