"""Tokens: file storage, device and authorization-code flows, refresh and validation against the fake Twitch."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest
import pytest_asyncio
import structlog
from pydantic import SecretStr

from bot.config import BotConfig, Config, TwitchConfig
from bot.errors import AuthError, AuthRejected, TwitchError
from bot.twitch.auth import SCOPES, AuthClient, checked_tokens, cmd_auth
from bot.twitch.tokens import TokenSet, TokenStore, write_secret_file
from tests.fakes.twitch import FakeTwitch


@pytest_asyncio.fixture(loop_scope="function")
async def fake() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch() as f:
        f.add_user("moodbot", "500")
        f.add_user("streamer", "600")
        yield f


def twitch_cfg(fake: FakeTwitch, **kw: object) -> TwitchConfig:
    return TwitchConfig(client_id=FakeTwitch.CLIENT_ID, client_secret=SecretStr("topsecretclient"),
                        api_url=fake.api_url, auth_url=fake.auth_url, eventsub_url=fake.eventsub_url, **kw)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestTokenStore:
    """One file per bot, mode 0600, atomic, never shown."""

    def test_save_creates_a_0600_file_and_loads_back(self, tmp_path: Path) -> None:
        store = TokenStore(tmp_path / "tokens" / "bot.json")
        tokens = TokenSet(SecretStr("acc-1"), SecretStr("ref-1"), SCOPES, 123.0, "moodbot", "500")
        store.save(tokens)
        assert mode(store.path) == 0o600
        assert store.load() == tokens
        assert [p.name for p in store.path.parent.iterdir()] == ["bot.json"]  # no temp file left

    def test_loose_permissions_are_tightened_on_load(self, tmp_path: Path) -> None:
        store = TokenStore(tmp_path / "bot.json")
        store.save(TokenSet(SecretStr("acc"), SecretStr("ref")))
        os.chmod(store.path, 0o644)
        with structlog.testing.capture_logs() as logs:
            assert store.load() is not None
        assert mode(store.path) == 0o600
        assert any(e["event"] == "token_file_permissions_fixed" for e in logs)

    def test_secret_files_replace_a_looser_file_with_a_0600_one(self, tmp_path: Path) -> None:
        path = tmp_path / "secret"
        path.write_text("old")
        os.chmod(path, 0o644)
        write_secret_file(path, "new")
        assert path.read_text() == "new" and mode(path) == 0o600
        assert [p.name for p in tmp_path.iterdir()] == ["secret"]

    def test_missing_file_is_none_and_garbage_is_a_clear_error(self, tmp_path: Path) -> None:
        store = TokenStore(tmp_path / "bot.json")
        assert store.load() is None
        store.path.write_text("{not json")
        with pytest.raises(TwitchError, match="unreadable"):
            store.load()

    def test_repr_and_str_hide_tokens(self) -> None:
        tokens = TokenSet(SecretStr("acc-secret-value"), SecretStr("ref-secret-value"))
        assert "secret-value" not in repr(tokens) and "secret-value" not in str(tokens)


class TestValidateAndRefresh:
    """Validation reports who the token is for; refresh swaps tokens; refused credentials raise."""

    async def test_validate_returns_login_id_scopes_expiry(self, fake: FakeTwitch) -> None:
        access, _ = fake.issue_token("moodbot")
        info = await AuthClient(twitch_cfg(fake)).validate(SecretStr(access))
        assert (info.login, info.user_id, set(info.scopes), info.expires_in) == (
            "moodbot", "500", set(SCOPES), 14_000)

    async def test_invalid_token_is_rejected(self, fake: FakeTwitch) -> None:
        with pytest.raises(AuthRejected, match="invalid access token"):
            await AuthClient(twitch_cfg(fake)).validate(SecretStr("nope"))

    async def test_expired_access_token_is_refreshed_by_checked_tokens(self, fake: FakeTwitch) -> None:
        access, refresh = fake.issue_token("moodbot")
        fake.expire_access_tokens()
        tokens = await checked_tokens(AuthClient(twitch_cfg(fake)), TokenSet(SecretStr(access), SecretStr(refresh)),
                                      "main", "moodbot")
        assert tokens.access_token.get_secret_value() != access
        assert tokens.refresh_token is not None and tokens.refresh_token.get_secret_value() != refresh
        assert (tokens.login, tokens.user_id) == ("moodbot", "500")
        assert fake.requests["token"] == 1

    async def test_revoked_token_raises_auth_error_naming_chatmood_auth(self, fake: FakeTwitch) -> None:
        access, refresh = fake.issue_token("moodbot")
        fake.revoke_all()
        with pytest.raises(AuthError) as err:
            await checked_tokens(AuthClient(twitch_cfg(fake)), TokenSet(SecretStr(access), SecretStr(refresh)),
                                 "main", "moodbot")
        assert "chatmood auth --bot main" in str(err.value)

    async def test_token_of_another_account_is_refused(self, fake: FakeTwitch) -> None:
        access, refresh = fake.issue_token("streamer")
        with pytest.raises(AuthError, match="belongs to 'streamer'"):
            await checked_tokens(AuthClient(twitch_cfg(fake)), TokenSet(SecretStr(access), SecretStr(refresh)),
                                 "main", "moodbot")

    async def test_missing_scopes_are_named(self, fake: FakeTwitch) -> None:
        access, refresh = fake.issue_token("moodbot", ["user:read:chat"])
        with pytest.raises(AuthError, match="user:write:chat"):
            await checked_tokens(AuthClient(twitch_cfg(fake)), TokenSet(SecretStr(access), SecretStr(refresh)),
                                 "main", "moodbot")

    async def test_secrets_never_reach_logs_or_errors(self, fake: FakeTwitch) -> None:
        access, refresh = fake.issue_token("moodbot")
        fake.revoke_all()
        with structlog.testing.capture_logs() as logs, pytest.raises(AuthError) as err:
            await checked_tokens(AuthClient(twitch_cfg(fake)), TokenSet(SecretStr(access), SecretStr(refresh)),
                                 "main", "moodbot")
        text = repr(logs) + str(err.value) + repr(err.value) + repr(AuthClient(twitch_cfg(fake)))
        assert logs, "the failure is logged"
        for secret in (access, refresh, "topsecretclient"):
            assert secret not in text


class TestDeviceFlow:
    """``chatmood auth`` with the device code flow prints the URL and code, waits, and stores a 0600 token."""

    async def test_cmd_auth_device_flow_end_to_end(self, fake: FakeTwitch, tmp_path: Path) -> None:
        cfg = Config(twitch=twitch_cfg(fake), bots=(BotConfig(name="main", account="moodbot", channels=("streamer",),
                                                              token_file=tmp_path / "main.json"),))
        shown: list[str] = []

        async def user_enters_code() -> None:
            while not fake.user_codes:  # noqa: ASYNC110 - the code appears when the bot asks the fake
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # at least one "authorization_pending" poll
            fake.approve_device(next(iter(fake.user_codes)), "moodbot")

        approver = asyncio.create_task(user_enters_code(), name="approver")
        rc = await cmd_auth(cfg, "main", show=shown.append)
        await approver
        assert rc == 0
        code = next(iter(fake.user_codes))
        assert any("https://www.twitch.tv/activate" in s and code in s for s in shown)
        assert any("channel:bot" in s for s in shown)  # the broadcaster's part is explained
        stored = TokenStore(tmp_path / "main.json").load()
        assert stored is not None and stored.login == "moodbot" and stored.user_id == "500"
        assert mode(tmp_path / "main.json") == 0o600
        assert fake.requests["token"] >= 2  # polled while pending

    async def test_unknown_bot_name_is_an_error(self, fake: FakeTwitch, tmp_path: Path) -> None:
        cfg = Config(twitch=twitch_cfg(fake), bots=(BotConfig(name="main", account="moodbot", channels=("x",)),))
        shown: list[str] = []
        assert await cmd_auth(cfg, "other", show=shown.append) == 2
        assert "main" in shown[0]

    async def test_logging_in_as_the_wrong_account_stores_nothing(self, fake: FakeTwitch, tmp_path: Path) -> None:
        cfg = Config(twitch=twitch_cfg(fake), bots=(BotConfig(name="main", account="moodbot", channels=("streamer",),
                                                              token_file=tmp_path / "main.json"),))

        async def wrong_user() -> None:
            while not fake.user_codes:  # noqa: ASYNC110 - see above
                await asyncio.sleep(0.01)
            fake.approve_device(next(iter(fake.user_codes)), "streamer")

        approver = asyncio.create_task(wrong_user(), name="approver")
        shown: list[str] = []
        assert await cmd_auth(cfg, None, show=shown.append) == 1
        await approver
        assert not (tmp_path / "main.json").exists()
        assert "streamer" in shown[-1]


class TestCodeFlow:
    """The authorization-code flow serves a one-shot callback on 127.0.0.1 and checks ``state``."""

    async def test_callback_with_wrong_state_is_refused_then_right_state_is_exchanged(
            self, fake: FakeTwitch, unused_tcp_port: int) -> None:
        client = AuthClient(twitch_cfg(fake, auth_flow="code"))
        urls: list[str] = []
        exchanged: list[str] = []

        async def fake_exchange(code: str, redirect_uri: str) -> TokenSet:  # the fake has no /authorize page
            exchanged.append(code)
            access, refresh = fake.issue_token("moodbot")
            return TokenSet(SecretStr(access), SecretStr(refresh))

        client.exchange_code = fake_exchange  # type: ignore[method-assign]
        flow = asyncio.create_task(client.code_flow(unused_tcp_port, urls.append), name="code-flow")
        while not urls:  # noqa: ASYNC110 - waits for the server to be up
            await asyncio.sleep(0.01)
        q = parse_qs(urlparse(urls[0]).query)
        assert q["scope"] == [" ".join(SCOPES)] and q["response_type"] == ["code"]
        redirect = q["redirect_uri"][0]
        async with aiohttp.ClientSession() as s:
            async with s.get(redirect, params={"code": "c1", "state": "forged"}) as r:
                assert r.status == 400
            async with s.get(redirect, params={"code": "c2", "state": q["state"][0]}) as r:
                assert r.status == 200
        tokens = await flow
        assert exchanged == ["c2"]
        assert tokens.access_token.get_secret_value() in fake.tokens
