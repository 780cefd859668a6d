"""bots.toml: parsed with tomli into frozen pydantic models, validated at the edge.

``load_config(path, environ)`` is the only way in. Unknown keys are errors (with the known key they were
probably meant to be); every error names the key path and the bad value, except where the value is or looks
like a secret: the value of an unknown key, a secret field, URL credentials and token-like strings are never
echoed. Types are strict (``batch_size = "500"`` or ``enabled = "yes"`` are errors, not coerced), numbers are
finite. Secrets (the Twitch client secret, the overlay token, the database URL, which may carry a password)
are ``SecretStr`` and may be written as ``"env:NAME"`` to be read from the environment. The environment
variable ``CHATMOOD_MONGODB_URL`` overrides ``storage.mongodb_url``.

Mistakes that would break the bot later are errors; risky choices (a secret written inline, an overlay
listening beyond this machine without a token, two plain mood bots in one channel) are ``Config.warnings``,
printed by ``check-config`` and logged when a program starts (:func:`log_warnings`).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO
from urllib.parse import unquote

import structlog
import tomli
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.errors import ConfigError
from bot.logs import redact_url

log = structlog.get_logger(__name__)

MONGODB_URL_ENV = "CHATMOOD_MONGODB_URL"
_NAME = re.compile(r"^[a-z0-9_]{1,25}$")  # Twitch logins
_CATEGORY = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


class _Model(BaseModel):
    # strict: TOML has real types, so "500" for a number or "yes" for a boolean is a mistake to name, not to
    # coerce. Paths and lists (TOML strings and arrays) opt out field by field with Field(strict=False).
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)


def mongodb_url_problem(url: str) -> str | None:
    """Why ``url`` is not a MongoDB URL PyMongo would take, or None. Never contacts anything (no DNS for
    ``mongodb+srv://``); the answer never contains the URL or its credentials."""
    from pymongo.errors import ConfigurationError, InvalidURI
    from pymongo.uri_parser import parse_uri

    srv = url.startswith("mongodb+srv://")
    if not (url.startswith("mongodb://") or srv):
        return "must start with mongodb:// or mongodb+srv://"
    hosts = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    if srv and ("," in hosts or ":" in hosts):
        return "a mongodb+srv:// URL names one host and no port"
    try:
        # An SRV URL names a DNS record PyMongo would look up: check its shape as a plain URL instead.
        parse_uri("mongodb://" + url.removeprefix("mongodb+srv://") if srv else url, validate=not srv)
    except (InvalidURI, ConfigurationError, ValueError) as e:
        return f"not a valid MongoDB URL: {redact_url(str(e))}"
    return None


class StorageConfig(_Model):
    mongodb_url: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    database: str = Field("chatmood", min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_-]+$")
    # Durable append-only spool used while the database is unreachable.
    spool_dir: Path = Field(Path("spool"), strict=False)
    batch_size: int = Field(1_000, ge=1, le=10_000)
    flush_interval_ms: int = Field(200, ge=1, le=60_000)
    # Messages held in memory before new ones go straight to the disk spool.
    max_buffered: int = Field(20_000, ge=100)
    server_timeout_ms: int = Field(2_000, ge=100)

    @field_validator("mongodb_url")
    @classmethod
    def _mongodb_url(cls, v: SecretStr) -> SecretStr:
        problem = mongodb_url_problem(v.get_secret_value())
        if problem:
            raise ValueError(problem)
        return v

    @property
    def database_name(self) -> str:
        """The database chatmood uses: the one the URL names (``mongodb://host/mydb``), else ``database``."""
        m = re.match(r"^mongodb(?:\+srv)?://[^/?#]*/([^?#]+)", self.mongodb_url.get_secret_value())
        return unquote(m[1]) if m else self.database


class HistoryConfig(_Model):
    """Recent chat and mood kept in memory (bot.history), so !label and the dashboard never scan the database."""

    messages_per_channel: int = Field(1_000, ge=50, le=1_000_000)
    messages_per_user: int = Field(5, ge=1, le=1_000)
    users_per_channel: int = Field(10_000, ge=10, le=10_000_000)
    snapshots_per_channel: int = Field(8_640, ge=10, le=1_000_000)  # a day at the default 10 s
    # How long a lookup of something older may take on the database before the answer is "too old".
    lookup_timeout_ms: int = Field(1_000, ge=50, le=60_000)


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"


class TwitchConfig(_Model):
    client_id: str = ""
    client_secret: SecretStr | None = None
    # Endpoints: Twitch's by default; tests point them at the Twitch CLI or the in-repo fake.
    api_url: str = "https://api.twitch.tv/helix/"
    auth_url: str = "https://id.twitch.tv/"
    eventsub_url: str = "wss://eventsub.wss.twitch.tv/ws"
    eventsub_subscription_url: str | None = None  # defaults to api_url
    auth_flow: Literal["device", "code"] = "device"
    callback_port: int = Field(17563, ge=1, le=65535)

    @field_validator("api_url", "auth_url", "eventsub_subscription_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("eventsub_url")
    @classmethod
    def _ws_url(cls, v: str) -> str:
        if not re.match(r"^wss?://[^\s/]+", v):
            raise ValueError("must be a ws:// or wss:// URL")
        return v


class PersonaConfig(_Model):
    """``[bots.persona]``: the bot answers @mentions (and may join in) with a local LLM; see bot/persona/."""

    # Who the bot is: inline text, or a file under prompts/ (read when the config is loaded or reloaded).
    system_prompt: str = Field("", max_length=2_000)
    system_prompt_file: Path | None = Field(None, strict=False)
    # A known model name or a GGUF path, and the ones tried in order when it fails to load or errors.
    model: str = Field("smollm2", min_length=1)
    fallback_models: tuple[str, ...] = Field((), strict=False)
    threads: int = Field(1, ge=1, le=256)
    temperature: float = Field(0.5, ge=0, le=2)
    max_tokens: int = Field(48, ge=1, le=256)
    reply_to_mentions: bool = True
    # Seconds before the same viewer's next mention is answered.
    user_cooldown_s: float = Field(30.0, ge=0)
    # Chance of joining in unprompted on a message, and the least time between unprompted lines per channel.
    join_chance: float = Field(0.0, ge=0, le=1)
    min_gap_s: float = Field(120.0, ge=0)
    intro_message: str = Field("", max_length=500)
    context_messages: int = Field(10, ge=0, le=50)
    # The time budget of a reply, from the message's arrival: a later reply is dropped (and logged).
    reply_timeout_s: float = Field(10.0, gt=0, le=300)
    # Words or phrases (case-insensitive, whole words) that drop a reply containing them.
    blocklist: tuple[str, ...] = Field((), strict=False)
    role: Literal["chatter", "moderator"] = "chatter"
    # moderator: one calming line when the angry share stays above the threshold for angry_for_s,
    # at most once per calm_interval_s per channel. A persona never times anyone out.
    angry_threshold: float = Field(0.4, gt=0, lt=1)
    angry_for_s: float = Field(30.0, ge=0)
    calm_interval_s: float = Field(600.0, gt=0)

    @field_validator("system_prompt_file")
    @classmethod
    def _under_prompts(cls, v: Path | None) -> Path | None:
        if v is not None and (v.is_absolute() or ".." in v.parts):
            raise ValueError("must be a file name under prompts/ (no absolute path, no '..')")
        return v

    @field_validator("blocklist")
    @classmethod
    def _words(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not w.strip() for w in v):
            raise ValueError("blocklist entries must not be empty")
        return tuple(w.strip() for w in v)

    @model_validator(mode="after")
    def _one_prompt(self) -> PersonaConfig:
        if self.system_prompt and self.system_prompt_file is not None:
            raise ValueError("set system_prompt or system_prompt_file, not both")
        return self

    @property
    def models(self) -> tuple[str, ...]:
        """The model first, then its fallbacks, each once."""
        return tuple(dict.fromkeys((self.model, *self.fallback_models)))


class BotConfig(_Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    account: str  # the bot's Twitch login
    token_file: Path | None = Field(None, strict=False)  # defaults to tokens/<name>.json
    channels: tuple[str, ...] = Field(min_length=1, strict=False)
    persona: PersonaConfig | None = None  # None: a mood bot only, as before

    @field_validator("account")
    @classmethod
    def _login(cls, v: str) -> str:
        v = v.lower()
        if not _NAME.match(v):
            raise ValueError("must be a Twitch login: 1-25 of a-z, 0-9, _")
        return v

    @field_validator("channels")
    @classmethod
    def _logins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for ch in v:
            ch = ch.lower().removeprefix("#")
            if not _NAME.match(ch):
                raise ValueError(f"channel {ch!r} is not a Twitch login: 1-25 of a-z, 0-9, _")
            if ch in out:
                raise ValueError(f"channel {ch!r} is listed twice")
            out.append(ch)
        return tuple(out)

    @property
    def token_path(self) -> Path:
        return self.token_file or Path("tokens") / f"{self.name}.json"


class Category(_Model):
    name: str
    colour: str
    valence: Literal[-1, 0, 1]
    description: str = Field(min_length=1, max_length=200)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _CATEGORY.match(v):
            raise ValueError("must be lower case letters, digits, '_' or '-', starting with a letter")
        return v

    @field_validator("colour")
    @classmethod
    def _colour(cls, v: str) -> str:
        if not _COLOUR.match(v):
            raise ValueError("must be a colour written #rrggbb")
        return v.lower()


DEFAULT_CATEGORIES: tuple[Category, ...] = (
    Category(name="hype", colour="#ff8c00", valence=1, description="excitement, cheering, hype, big plays"),
    Category(name="funny", colour="#ffd400", valence=1, description="laughter, jokes, memes, things that are funny"),
    Category(name="love", colour="#ff4fa3", valence=1, description="affection, support, gratitude, wholesome"),
    Category(
        name="neutral", colour="#8a8f98", valence=0, description="plain talk, questions, commands, no clear feeling"
    ),
    Category(name="sad", colour="#3b6fd8", valence=-1, description="sadness, disappointment, sympathy, loss"),
    Category(name="angry", colour="#d62828", valence=-1, description="anger, insults, frustration, toxicity"),
)


class ClassifierConfig(_Model):
    # A path to a GGUF, or a known default name (see models/README.md). "" disables that model.
    # Off by default: on Kobs (5-fold CV) MiniLM embeddings added to the head cost 6 points and ran < 400 msg/s.
    embedding_model: str = ""
    llm_model: str = ""
    # "auto": LLM label scores only when the configured LLM is known to be capable.
    use_llm: Literal["auto", "always", "never"] = "auto"
    models_dir: Path = Field(Path("models"), strict=False)
    prompt_template: Path = Field(Path("prompts/classify.txt"), strict=False)
    batch_size: int = Field(32, ge=1, le=1024)
    threads: int = Field(2, ge=1, le=256)
    queue_size: int = Field(5_000, ge=1)
    cache_size: int = Field(50_000, ge=0)


class MoodConfig(_Model):
    half_life_s: float = Field(60.0, gt=0, le=86_400)
    snapshot_interval_s: float = Field(10.0, gt=0, le=3_600)
    # Weight of the neutral prior that idle chat drifts back to (in messages).
    neutral_prior: float = Field(3.0, ge=0, le=10_000)


Role = Literal["everyone", "subscriber", "vip", "moderator", "broadcaster"]


def command_word(word: str, prefix: str) -> str:
    """A command name or alias as the router matches it: trimmed, lower case, the prefix (if written) dropped."""
    return word.strip().lower().removeprefix(prefix.lower())


class CommandConfig(_Model):
    enabled: bool = True
    aliases: tuple[str, ...] = Field((), strict=False)
    allowed: Role = "everyone"
    cooldown_channel_s: float = Field(0.0, ge=0, le=86_400)
    cooldown_user_s: float = Field(0.0, ge=0, le=86_400)


class CommandsConfig(_Model):
    prefix: str = Field("!", min_length=1, max_length=3, pattern=r"^\S+$")
    reply_to_unauthorized: bool = False
    mood: CommandConfig = CommandConfig(allowed="everyone", cooldown_channel_s=15, cooldown_user_s=60)
    label: CommandConfig = CommandConfig(allowed="moderator")
    reset: CommandConfig = CommandConfig(allowed="moderator")

    @model_validator(mode="after")
    def _unique_names(self) -> CommandsConfig:
        """Compared as the router reads them (case and a written prefix ignored), so no alias hides a command."""
        seen: dict[str, tuple[str, str]] = {}

        def as_written(cmd: str, written: str, word: str) -> str:
            return cmd if written == word else f"{cmd} (as {written!r})"

        for cmd in ("mood", "label", "reset"):
            for written in (cmd, *getattr(self, cmd).aliases):
                word = command_word(written, self.prefix)
                if not word or any(ch.isspace() for ch in word):
                    raise ValueError(f"{cmd}.aliases: {written!r} is not a command word (one word after the prefix)")
                if word in seen:
                    first, second = as_written(*seen[word], word), as_written(cmd, written, word)
                    raise ValueError(f"command word {word!r} is used by both {first} and {second}")
                seen[word] = (cmd, written)
        return self


class OverlayConfig(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    access_token: SecretStr | None = None
    # When true the read-only overlay URL needs ?token= too.
    overlay_requires_token: bool = False


class VibesConfig(_Model):
    """``chatmood vibes``, ``/vibes`` and the stored channel profiles (see bot/vibes/)."""

    # Sentence embeddings of chat and queries: a known model name or a GGUF path (in classifier.models_dir).
    embedding_model: str = "minilm"
    # Distinct messages per channel whose embeddings are averaged into its chat embedding.
    sample_size: int = Field(256, ge=8, le=4096)
    # How much a query's mood may weigh against its text (0..1); see bot/vibes/rank.py for the blend.
    mood_weight: float = Field(0.6, ge=0, le=1)
    # `chatmood run`/`demo` bring the stored profiles up to date this often.
    refresh_interval_s: float = Field(300.0, gt=0, le=86_400)
    # A refresh reads again what was written this long before its cursors (skipping what it already folded in),
    # so messages and verdicts that reach the database up to this late are still counted, exactly once.
    lookback_s: float = Field(120.0, ge=0, le=86_400)
    # The longest one refresh's pass over stored messages, or loading every profile, may take on the database
    # (the development database scans every stored message whatever the filter: ~5 s per 100,000).
    refresh_timeout_s: float = Field(300.0, gt=0, le=86_400)


class Config(_Model):
    storage: StorageConfig = StorageConfig()
    logging: LoggingConfig = LoggingConfig()
    twitch: TwitchConfig = TwitchConfig()
    bots: tuple[BotConfig, ...] = Field((), strict=False)
    categories: tuple[Category, ...] = Field(DEFAULT_CATEGORIES, strict=False)
    classifier: ClassifierConfig = ClassifierConfig()
    mood: MoodConfig = MoodConfig()
    commands: CommandsConfig = CommandsConfig()
    overlay: OverlayConfig = OverlayConfig()
    history: HistoryConfig = HistoryConfig()
    vibes: VibesConfig = VibesConfig()
    # Where the file was read from; relative paths in it are resolved against its folder.
    source: Annotated[Path | None, Field(exclude=True)] = None
    # Risky but working choices found by parse_config (see the module docstring); never part of the file.
    warnings: Annotated[tuple[str, ...], Field(exclude=True)] = ()

    @model_validator(mode="after")
    def _check(self) -> Config:
        names = [c.name for c in self.categories]
        if len(set(names)) != len(names):
            raise ValueError(f"category names must be unique, got {names}")
        if len(names) < 2:
            raise ValueError("at least two categories are needed")
        if "neutral" not in names:
            raise ValueError("a category named 'neutral' is required (idle chat drifts to it)")
        bot_names = [b.name for b in self.bots]
        if len(set(bot_names)) != len(bot_names):
            raise ValueError(f"bot names must be unique, got {bot_names}")
        for b in self.bots:
            if b.persona is not None and b.persona.role == "moderator" and "angry" not in names:
                raise ValueError(f"bots.{b.name}.persona: role 'moderator' watches the 'angry' category; add it")
        return self

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories)

    def category(self, name: str) -> Category:
        for c in self.categories:
            if c.name == name:
                return c
        raise KeyError(name)

    def resolve(self, path: Path) -> Path:
        """A path from the config, relative to the config file's folder."""
        if path.is_absolute() or self.source is None:
            return path
        return self.source.parent / path

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(ch for b in self.bots for ch in b.channels)

    @property
    def bot_accounts(self) -> frozenset[str]:
        """The Twitch logins of every configured bot (their messages are never answered by a bot)."""
        return frozenset(b.account for b in self.bots)


_SECRET_KEYS = {("storage", "mongodb_url"), ("twitch", "client_secret"), ("overlay", "access_token")}
#: Where an inline secret should come from instead (``"env:NAME"``).
_SECRET_ENV = {
    ("storage", "mongodb_url"): MONGODB_URL_ENV,
    ("twitch", "client_secret"): "TWITCH_CLIENT_SECRET",
    ("overlay", "access_token"): "CHATMOOD_OVERLAY_TOKEN",
}
#: Key names whose values are never shown in an error (besides the secret fields themselves).
_SECRET_NAME = re.compile(r"token|secret|passw|pwd|credential|authoriz|cookie", re.IGNORECASE)
#: Values that look like a credential wherever they appear: OAuth tokens and long random-looking words.
_TOKEN_LIKE = re.compile(r"(?:oauth:)?(?=[A-Za-z0-9_\-]*\d)(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{20,}")
#: Keys a program sets on the model itself; a file must not.
_NOT_IN_FILE = ("source", "warnings")


def _resolve_env_refs(data: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> list[str]:
    """Replace ``"env:NAME"`` in secret fields by the variable's value; returns the secrets written inline."""
    inline: list[str] = []
    for section, key in sorted(_SECRET_KEYS):
        sec = data.get(section)
        if not isinstance(sec, dict):
            continue
        value = sec.get(key)
        if isinstance(value, str) and value.startswith("env:"):
            var = value[4:]
            if var not in environ:
                problems.append(f"{section}.{key}: environment variable {var!r} is not set")
            else:
                sec[key] = environ[var]
        elif isinstance(value, str) and value:
            inline.append(f"{section}.{key}")
    return inline


def hide_secrets(text: str) -> str:
    """``text`` with URL credentials and token-like words masked: what config errors may show."""
    return _TOKEN_LIKE.sub("<hidden>", redact_url(text))


def _known_keys(parts: list[str]) -> list[str]:
    """The keys the model at ``parts`` (a path into the file) accepts, or [] when the path leads nowhere known."""
    model: Any = Config
    for part in parts:
        if part.isdigit():
            continue  # an index into a list of tables ([[bots]], [[categories]])
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return [k for k in model.model_fields if k not in _NOT_IN_FILE]


def _did_you_mean(parts: list[str]) -> str:
    known = _known_keys(parts[:-1])
    close = difflib.get_close_matches(parts[-1].lower(), known, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else (f" (known: {', '.join(known)})" if known else "")


def _describe(err: Any) -> str:
    """One problem for people. Never shows a secret: not the value of an unknown key (a mistyped secret key
    still holds the secret), not a secret field, not URL credentials or token-like words anywhere."""
    parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    loc = ".".join(parts)
    if err["type"] == "extra_forbidden":
        return hide_secrets(f"{loc}: unknown key{_did_you_mean(parts)}")
    value = err.get("input")
    secret = any(loc.startswith(f"{s}.{k}") for s, k in _SECRET_KEYS) or any(_SECRET_NAME.search(p) for p in parts)
    if secret:
        shown = "<secret>"
    elif isinstance(value, str):
        shown = repr(value if len(value) <= 80 else value[:80] + "...")
    else:
        shown = repr(value) if isinstance(value, int | float | bool | None) else type(value).__name__
    msg = err["msg"].removeprefix("Value error, ")
    if isinstance(value, dict):
        return hide_secrets(f"{loc}: {msg}" if loc else msg)
    return hide_secrets(f"{loc}: {msg} (got {shown})" if loc else f"{msg} (got {shown})")


def _warnings(cfg: Config, inline: list[str]) -> list[str]:
    """Risky choices that still work: said by check-config and logged at start, never fatal."""
    out: list[str] = []
    for name in inline:
        section, key = name.split(".")
        if name == "storage.mongodb_url" and "@" not in cfg.storage.mongodb_url.get_secret_value():
            continue  # no credentials in it
        var = _SECRET_ENV[(section, key)]
        out.append(f"{name} is written in the file: keep secrets out of it, e.g. {key} = \"env:{var}\""
                   f" and set {var} in the environment")
    # Persona bots share channels by design; two plain mood bots in one channel only double the work.
    reader: dict[str, str] = {}
    for b in cfg.bots:
        for ch in b.channels if b.persona is None else ():
            if ch in reader:
                out.append(f"channel {ch!r} is read by both bot {reader[ch]!r} and bot {b.name!r}, neither with a"
                           " persona: its chat arrives twice and each opens a stream session; one mood bot per"
                           " channel is enough")
            reader.setdefault(ch, b.name)
    host = cfg.overlay.host
    if cfg.overlay.enabled and not _loopback(host) and cfg.overlay.access_token is None:
        out.append(f"overlay.host {host!r} serves beyond this machine but overlay.access_token is not set: set one"
                   " (e.g. access_token = \"env:CHATMOOD_OVERLAY_TOKEN\"), and consider overlay_requires_token")
    return out


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def parse_config(data: Mapping[str, Any], environ: Mapping[str, str], source: Path | None = None) -> Config:
    """Validate an already-parsed TOML document."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    problems: list[str] = [f"{k}: unknown key" for k in _NOT_IN_FILE if k in data]
    inline = _resolve_env_refs(data, environ, problems)
    if environ.get(MONGODB_URL_ENV):
        data.setdefault("storage", {})
        if isinstance(data["storage"], dict):
            data["storage"]["mongodb_url"] = environ[MONGODB_URL_ENV]
            inline = [n for n in inline if n != "storage.mongodb_url"]
    if problems:
        raise ConfigError(source, problems)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, [_describe(err) for err in e.errors()]) from None
    cfg = cfg.model_copy(update={"source": source, "warnings": tuple(_warnings(cfg, inline))})
    return _read_persona_prompts(cfg)


def log_warnings(cfg: Config) -> None:
    """Log the config's warnings (each program does at start, after configuring logging)."""
    for warning in cfg.warnings:
        log.warning("config_warning", path=str(cfg.source) if cfg.source else None, problem=warning)


def persona_prompt_path(cfg: Config, file: Path) -> Path:
    """Where ``system_prompt_file`` lives: ``prompts/`` next to the config file (or in the working folder)."""
    return cfg.resolve(Path("prompts") / file)


def _read_persona_prompts(cfg: Config) -> Config:
    """Each ``system_prompt_file`` read into ``system_prompt``, so a reload sees an edited file as a change."""
    problems: list[str] = []
    bots = []
    for i, b in enumerate(cfg.bots):
        p = b.persona
        if p is not None and p.system_prompt_file is not None:
            path = persona_prompt_path(cfg, p.system_prompt_file)
            try:
                text = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                problems.append(f"bots.{i}.persona.system_prompt_file: cannot read {path} ({e})")
                text = ""
            if len(text) > 2_000:
                problems.append(f"bots.{i}.persona.system_prompt_file: {path} is over 2000 characters")
            b = b.model_copy(update={"persona": p.model_copy(update={"system_prompt": text})})
        bots.append(b)
    if problems:
        raise ConfigError(cfg.source, problems)
    return cfg.model_copy(update={"bots": tuple(bots)}) if cfg.bots else cfg


def load_config(path: Path | str, environ: Mapping[str, str]) -> Config:
    """Read and validate bots.toml. Raises :class:`ConfigError` naming each bad key and value."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(path, [f"cannot read: {e.strerror or e}"]) from None
    try:
        data = tomli.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(path, [f"not UTF-8: {e}"]) from None
    except tomli.TOMLDecodeError as e:
        raise ConfigError(path, [f"not valid TOML: {e}"]) from None
    return parse_config(data, environ, source=path.resolve())


def summary(cfg: Config) -> str:
    """A few lines for ``chatmood check-config``; never shows secrets."""
    lines = [
        f"storage: database {cfg.storage.database_name!r} at {redact_url(cfg.storage.mongodb_url.get_secret_value())}",
        f"bots: {len(cfg.bots)}" + "".join(
            f"\n  {b.name} ({b.account}): {', '.join(b.channels)}"
            + (f"; persona ({b.persona.role}, {b.persona.model})" if b.persona else "")
            for b in cfg.bots
        ),
        "categories: " + ", ".join(f"{c.name} {c.colour} {c.valence:+d}" for c in cfg.categories),
        f"classifier: embedding {cfg.classifier.embedding_model or 'off'}, llm {cfg.classifier.llm_model or 'off'}"
        f", batch {cfg.classifier.batch_size}, threads {cfg.classifier.threads}",
        f"mood: half-life {cfg.mood.half_life_s:g}s, snapshot every {cfg.mood.snapshot_interval_s:g}s",
        f"commands: prefix {cfg.commands.prefix!r}",
        f"overlay: http://{cfg.overlay.host}:{cfg.overlay.port}/ (token "
        + ("set)" if cfg.overlay.access_token else "not set: `chatmood run` keeps one in tokens/overlay-token)"),
    ]
    return "\n".join(lines)


def cmd_check_config(path: Path, environ: Mapping[str, str], *, out: TextIO) -> int:
    """``chatmood check-config [PATH]``: ``PATH: ok`` and a summary, or a :class:`ConfigError` naming each problem."""
    cfg = load_config(path, environ)
    print(f"{path}: ok" + (f" ({len(cfg.warnings)} warning(s))" if cfg.warnings else ""), file=out)
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=out)
    print(summary(cfg), file=out)
    return 0
