"""Configuration: `config.toml` plus `XIAOBAO_SECTION_KEY` environment overrides.

Operators deploy xiaobao by editing one documented file and setting a few environment
variables; a typo there must stop the service at once with one line naming the key, not
surface later as odd behaviour.  The schema is the set of dataclasses below: every field is
a key, its annotation is the type that is checked, and fields listed in a section's
`SECRETS` may only come from the environment.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, get_type_hints

ENV_PREFIX = "XIAOBAO_"


class ConfigError(ValueError):
    """A configuration problem, phrased as one line that names the offending key."""


@dataclass(frozen=True)
class HttpConfig:
    """Where `xiaobao serve` listens."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 65536

    SECRETS: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class DatabaseConfig:
    """Which database holds conversations and complaints."""

    url: str = "sqlite:///var/xiaobao.db"
    auto_migrate: bool = True
    pool_size: int = 10
    echo: bool = False

    SECRETS: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class ChatConfig:
    """Limits and wording shared by every consumer channel."""

    max_text_chars: int = 5000
    max_user_chars: int = 64
    hotline: str = "12378"
    service_name: str = "蚌埠银行保险消保小助手"

    SECRETS: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class KnowledgeConfig:
    """Where the knowledge base lives and how sure the matcher must be to answer."""

    data_dir: str = ""
    lexicon_dir: str = ""
    cache_dir: str = "var/cache"
    answer_threshold: float = 0.5
    suggestion_count: int = 3

    SECRETS: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class ComplaintsConfig:
    """How complaints are numbered and how long drafts are kept."""

    tracking_prefix: str = "BB"
    draft_resume_minutes: int = 30
    draft_expiry_days: int = 7
    dashboard_url: str = "http://127.0.0.1:8080/staff"

    SECRETS: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class LogConfig:
    """How much the service says about itself (never personal data, at any level)."""

    level: str = "INFO"

    SECRETS: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class DeadlinesConfig:
    """The deadline scheduler: due-soon and overdue notices, escalation to the association."""

    enabled: bool = True
    interval_seconds: float = 300.0
    due_soon_days: int = 3

    SECRETS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0:
            raise ConfigError("deadlines.interval_seconds: must be above 0")
        if self.due_soon_days < 1:
            raise ConfigError("deadlines.due_soon_days: must be at least 1")


@dataclass(frozen=True)
class LimitsConfig:
    """Per-process rate limits on /api/chat, staff sign-in and WeChat users (docs/limits.md)."""

    enabled: bool = True
    trust_forwarded_for: bool = False
    chat_per_user_per_minute: float = 60.0
    chat_user_burst: int = 40
    chat_per_address_per_minute: float = 1200.0
    chat_address_burst: int = 400
    login_per_address_per_minute: float = 30.0
    login_address_burst: int = 20
    login_per_username_per_minute: float = 10.0
    login_username_burst: int = 10
    wechat_per_user_per_minute: float = 60.0
    wechat_user_burst: int = 40
    max_tracked_keys: int = 100000

    SECRETS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for name in ("chat_per_user", "chat_per_address", "login_per_address",
                     "login_per_username", "wechat_per_user"):
            if getattr(self, f"{name}_per_minute") <= 0:
                raise ConfigError(f"limits.{name}_per_minute: must be above 0")
        for name in ("chat_user", "chat_address", "login_address", "login_username",
                     "wechat_user"):
            if getattr(self, f"{name}_burst") < 1:
                raise ConfigError(f"limits.{name}_burst: must be at least 1")
        if self.max_tracked_keys < 1:
            raise ConfigError("limits.max_tracked_keys: must be at least 1")


SECURE_COOKIE_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class StaffConfig:
    """The staff dashboard: sign-in sessions, lock-out and the one-time links it prints."""

    session_hours: int = 8
    max_failed_logins: int = 5
    lockout_minutes: int = 15
    secure_cookies: str = "auto"
    public_url: str = ""
    invite_hours: int = 72

    SECRETS: ClassVar[tuple[str, ...]] = ()

    def base_url(self, http: HttpConfig) -> str:
        """Where staff reach the service: public_url, else the address `serve` listens on."""
        return (self.public_url or f"http://{http.host}:{http.port}").rstrip("/")


WECHAT_MODES = ("plain", "compatible", "safe")
WECHAT_AES_KEY_CHARS = 43


@dataclass(frozen=True)
class WechatConfig:
    """The WeChat Official Account channel; on when XIAOBAO_WECHAT_TOKEN is set."""

    path: str = "/wechat"
    mode: str = "compatible"
    reply_budget_seconds: float = 4.0
    max_body_bytes: int = 16384
    api_base_url: str = "https://api.weixin.qq.com"
    menu: tuple[str, ...] = (
        "问一问=topics", "防诈骗=check", "投诉与帮助/我要投诉=complaint",
        "投诉与帮助/查进度=status", "投诉与帮助/使用帮助=help",
    )
    token: str = field(default="", repr=False)
    app_id: str = ""
    aes_key: str = field(default="", repr=False)
    app_secret: str = field(default="", repr=False)

    SECRETS: ClassVar[tuple[str, ...]] = ("token", "app_id", "aes_key", "app_secret")

    @property
    def enabled(self) -> bool:
        """The channel is mounted only when the server token is configured."""
        return bool(self.token)

    @property
    def can_decrypt(self) -> bool:
        """Safe-mode requests can be answered only with both the app id and the AES key."""
        return self.mode != "plain" and bool(self.app_id and self.aes_key)


TELEGRAM_SECRET_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
)


@dataclass(frozen=True)
class TelegramConfig:
    """The Telegram bot; on when XIAOBAO_TELEGRAM_TOKEN is set, polling unless webhook_url is."""

    base_url: str = "https://api.telegram.org/bot"
    webhook_url: str = ""
    webhook_path: str = "/telegram"
    poll_timeout: int = 30
    max_retries: int = 3
    token: str = field(default="", repr=False)
    webhook_secret: str = field(default="", repr=False)

    SECRETS: ClassVar[tuple[str, ...]] = ("token", "webhook_secret")

    @property
    def enabled(self) -> bool:
        """The channel starts only when a bot token is configured."""
        return bool(self.token)


NOTIFICATION_KINDS = ("wecom", "telegram", "email")
_EMAIL_TARGET = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+")
_TELEGRAM_TARGET = re.compile(r"-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31}")
_WECOM_TARGET = re.compile(r"https?://[^\s]+[?&]key=[\w-]+[^\s]*|[\w-]{8,}")


@dataclass(frozen=True)
class NotificationsConfig:
    """Staff notifications: the outbox dispatcher, its channels' limits and static targets."""

    enabled: bool = True
    poll_seconds: float = 2.0
    max_attempts: int = 10
    backoff_base_seconds: float = 10.0
    backoff_max_seconds: float = 1800.0
    lease_seconds: float = 300.0
    send_timeout_seconds: float = 15.0
    wecom_base_url: str = "https://qyapi.weixin.qq.com"
    wecom_per_minute: int = 20
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str = ""
    smtp_from: str = ""
    channels: tuple[str, ...] = ()
    smtp_password: str = field(default="", repr=False)

    SECRETS: ClassVar[tuple[str, ...]] = ("smtp_password",)

    def queue_channels(self) -> tuple[tuple[str, str, str], ...]:
        """The static channels as (queue_id, kind, target); ConfigError names a bad item."""
        parsed = []
        for item in self.channels:
            queue_id, _, rest = item.partition("=")
            kind, _, target = rest.partition(":")
            queue_id, kind, target = queue_id.strip(), kind.strip(), target.strip()
            shapes = {"wecom": _WECOM_TARGET, "telegram": _TELEGRAM_TARGET,
                      "email": _EMAIL_TARGET}
            if not queue_id or kind not in shapes or not shapes[kind].fullmatch(target):
                raise ConfigError(
                    f"notifications.channels: {item!r} is not \"queue=kind:target\" with kind "
                    f"{', '.join(NOTIFICATION_KINDS)} (a robot address with key=, a chat id "
                    "or an e-mail address)"
                )
            parsed.append((queue_id, kind, target))
        return tuple(parsed)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration, passed explicitly to whatever needs it."""

    http: HttpConfig = field(default_factory=HttpConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    complaints: ComplaintsConfig = field(default_factory=ComplaintsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    staff: StaffConfig = field(default_factory=StaffConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    deadlines: DeadlinesConfig = field(default_factory=DeadlinesConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # Channel sections (telegram, wechat) are added below this line by their adapters.
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    wechat: WechatConfig = field(default_factory=WechatConfig)

    def replace(self, **sections: Any) -> Config:
        """Return a copy with some sections' keys changed (tests and tools use this)."""
        changed = {
            name: dataclasses.replace(getattr(self, name), **values)
            for name, values in sections.items()
        }
        return dataclasses.replace(self, **changed)


def _sections(schema: type) -> dict[str, type]:
    hints = get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def _keys(section_type: type) -> dict[str, type]:
    hints = get_type_hints(section_type)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_type)}


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides `section.key`."""
    return f"{ENV_PREFIX}{section}_{key}".upper()


def _coerce(raw: Any, wanted: type, where: str, from_env: bool) -> Any:
    """Check (and, for environment strings, parse) one value against its declared type."""
    if wanted == tuple[str, ...]:
        return _string_list(raw, where, from_env)
    if from_env:
        text = raw.strip()
        if wanted is bool:
            lowered = text.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ConfigError(f"{where}: expected true or false, got {raw!r}")
        if wanted is int:
            try:
                return int(text)
            except ValueError:
                raise ConfigError(f"{where}: expected a whole number, got {raw!r}") from None
        if wanted is float:
            try:
                return float(text)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {raw!r}") from None
        return raw
    if wanted is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false, got {raw!r}")
        return raw
    if wanted is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{where}: expected a whole number, got {raw!r}")
        return raw
    if wanted is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{where}: expected a number, got {raw!r}")
        return float(raw)
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a string, got {raw!r}")
    return raw


def _string_list(raw: Any, where: str, from_env: bool) -> tuple[str, ...]:
    """A TOML array of strings, or a comma-separated environment value, as a tuple."""
    if from_env:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ConfigError(f"{where}: expected a list of strings, got {raw!r}")
    return tuple(raw)


def build_config(
    document: Mapping[str, Any],
    environ: Mapping[str, str],
    source: str = "config.toml",
    schema: type[Any] = Config,
) -> Any:
    """Validate a parsed TOML document and apply environment overrides."""
    sections = _sections(schema)
    for name, body in document.items():
        if name not in sections:
            raise ConfigError(f"{source}: unknown section [{name}]")
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table")
    built: dict[str, Any] = {}
    for name, section_type in sections.items():
        keys = _keys(section_type)
        body = document.get(name, {})
        values: dict[str, Any] = {}
        for key, raw in body.items():
            if key not in keys:
                raise ConfigError(f"{source}: unknown key {name}.{key}")
            if key in section_type.SECRETS:
                raise ConfigError(
                    f"{source}: {name}.{key} is a secret; set {env_name(name, key)} instead"
                )
            values[key] = _coerce(raw, keys[key], f"{source}: {name}.{key}", from_env=False)
        for key, wanted in keys.items():
            variable = env_name(name, key)
            if variable in environ:
                values[key] = _coerce(environ[variable], wanted, variable, from_env=True)
        built[name] = section_type(**values)
    config = schema(**built)
    if isinstance(config, Config):
        _check_values(config)
    return config


def _check_values(config: Config) -> None:
    """Reject values that have the right type but cannot work."""
    if not 0 < config.http.port < 65536:
        raise ConfigError(f"http.port: {config.http.port} is not a TCP port")
    if not (config.database.url.startswith(("sqlite", "postgresql", "postgres://"))):
        raise ConfigError("database.url: only sqlite:/// and postgresql:// URLs are supported")
    if config.database.pool_size < 3:
        # The message turns hold all of a PostgreSQL pool but two (bot.transactions); the
        # dashboard, schedulers and outbox need the rest.
        raise ConfigError("database.pool_size: must be at least 3")
    if config.chat.max_text_chars < 1 or config.chat.max_user_chars < 1:
        raise ConfigError("chat.max_text_chars and chat.max_user_chars must be positive")
    if not 0.0 < config.knowledge.answer_threshold < 1.0:
        raise ConfigError("knowledge.answer_threshold: must be between 0 and 1")
    if config.log.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"log.level: unknown level {config.log.level!r}")
    _check_wechat(config.wechat)
    _check_telegram(config.telegram)
    _check_staff(config.staff)
    _check_notifications(config.notifications)


def _check_notifications(notifications: NotificationsConfig) -> None:
    """Stop start-up on a notification setting that would only fail when staff need it."""
    for key in ("poll_seconds", "backoff_base_seconds", "lease_seconds",
                "send_timeout_seconds"):
        if getattr(notifications, key) <= 0:
            raise ConfigError(f"notifications.{key}: must be above 0")
    if notifications.max_attempts < 1 or notifications.wecom_per_minute < 1:
        raise ConfigError("notifications.max_attempts and notifications.wecom_per_minute "
                          "must be at least 1")
    if notifications.backoff_max_seconds < notifications.backoff_base_seconds:
        raise ConfigError("notifications.backoff_max_seconds: must not be below "
                          "notifications.backoff_base_seconds")
    if notifications.lease_seconds <= notifications.send_timeout_seconds * 2:
        raise ConfigError("notifications.lease_seconds: must be more than twice "
                          "notifications.send_timeout_seconds")
    if not 0 < notifications.smtp_port < 65536:
        raise ConfigError(f"notifications.smtp_port: {notifications.smtp_port} is not a TCP port")
    if not notifications.wecom_base_url.startswith(("https://", "http://")):
        raise ConfigError("notifications.wecom_base_url: must be an http:// or https:// address")
    kinds = {kind for _, kind, _ in notifications.queue_channels()}
    if "email" in kinds and not (notifications.smtp_host and notifications.smtp_from):
        raise ConfigError("notifications.smtp_host: e-mail channels need smtp_host and smtp_from")
    if notifications.smtp_from and not _EMAIL_TARGET.fullmatch(notifications.smtp_from):
        raise ConfigError("notifications.smtp_from: must be a plain e-mail address")


def _check_staff(staff: StaffConfig) -> None:
    """Stop start-up on a dashboard setting that would lock everyone out or leak cookies."""
    for key in ("session_hours", "max_failed_logins", "lockout_minutes", "invite_hours"):
        if getattr(staff, key) < 1:
            raise ConfigError(f"staff.{key}: must be at least 1")
    if staff.secure_cookies not in SECURE_COOKIE_MODES:
        raise ConfigError(f"staff.secure_cookies: expected one of "
                          f"{', '.join(SECURE_COOKIE_MODES)}, got {staff.secure_cookies!r}")
    if staff.public_url and not staff.public_url.startswith(("https://", "http://")):
        raise ConfigError("staff.public_url: must be an http:// or https:// address")


def _check_telegram(telegram: TelegramConfig) -> None:
    """Stop start-up on a Telegram setting that would only fail once updates arrive."""
    secret = env_name("telegram", "webhook_secret")
    for key in ("base_url", "webhook_url"):
        value = getattr(telegram, key)
        if (value or key == "base_url") and not value.startswith(("https://", "http://")):
            raise ConfigError(f"telegram.{key}: must be an http:// or https:// address")
    if not telegram.webhook_path.startswith("/"):
        raise ConfigError(f"telegram.webhook_path: must start with /, "
                          f"got {telegram.webhook_path!r}")
    if telegram.poll_timeout < 0 or telegram.max_retries < 0:
        raise ConfigError("telegram.poll_timeout and telegram.max_retries must not be negative")
    if telegram.webhook_url and not telegram.webhook_secret:
        raise ConfigError(f"{secret}: telegram.webhook_url is set, so the webhook secret "
                          "(telegram.webhook_secret) is required")
    webhook_secret = telegram.webhook_secret
    if webhook_secret and not (
        len(webhook_secret) <= 256 and set(webhook_secret) <= TELEGRAM_SECRET_CHARS
    ):
        raise ConfigError(f"{secret}: 1-256 characters of A-Z, a-z, 0-9, _ and - only")


def _check_wechat(wechat: WechatConfig) -> None:
    """Stop start-up on a WeChat setting that would only fail once messages arrive."""
    if wechat.mode not in WECHAT_MODES:
        raise ConfigError(f"wechat.mode: expected one of {', '.join(WECHAT_MODES)}, "
                          f"got {wechat.mode!r}")
    if not wechat.path.startswith("/"):
        raise ConfigError(f"wechat.path: must start with /, got {wechat.path!r}")
    if not 0.0 < wechat.reply_budget_seconds < 5.0:
        raise ConfigError("wechat.reply_budget_seconds: must be above 0 and below WeChat's 5")
    if wechat.max_body_bytes < 1024:
        raise ConfigError("wechat.max_body_bytes: must be at least 1024")
    if not wechat.api_base_url.startswith(("https://", "http://")):
        raise ConfigError("wechat.api_base_url: must be an http:// or https:// address")
    for item in wechat.menu:
        label, equals, action = item.partition("=")
        if not equals or not label.strip("/ ") or not action.strip():
            raise ConfigError(f"wechat.menu: {item!r} is not \"label=action\" "
                              "(or \"group/label=action\")")
    app_id, aes_key = env_name("wechat", "app_id"), env_name("wechat", "aes_key")
    if wechat.aes_key and len(wechat.aes_key) != WECHAT_AES_KEY_CHARS:
        raise ConfigError(f"{aes_key}: the EncodingAESKey has {WECHAT_AES_KEY_CHARS} "
                          f"characters, got {len(wechat.aes_key)}")
    if wechat.aes_key and not _is_aes_key(wechat.aes_key):
        raise ConfigError(f"{aes_key}: not a valid EncodingAESKey (letters and digits only)")
    if wechat.mode != "plain" and bool(wechat.app_id) != bool(wechat.aes_key):
        missing = aes_key if wechat.app_id else app_id
        raise ConfigError(f"{missing}: wechat.mode {wechat.mode!r} needs both {app_id} and "
                          f"{aes_key} (or set wechat.mode = \"plain\")")
    if wechat.mode == "safe" and wechat.token and not wechat.aes_key:
        raise ConfigError(f"{aes_key}: wechat.mode \"safe\" needs {app_id} and {aes_key}")
    if wechat.app_secret and not wechat.app_id:
        raise ConfigError(f"{app_id}: {env_name('wechat', 'app_secret')} needs the app id")


def _is_aes_key(aes_key: str) -> bool:
    """True when the key decodes (with WeChat's one "=" of padding) to 32 bytes."""
    try:
        return len(base64.b64decode(aes_key + "=", validate=True)) == 32
    except ValueError:
        return False


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read `config.toml` (if present) and the environment into a validated `Config`."""
    environ = os.environ if environ is None else environ
    path = Path("config.toml") if path is None else path
    document: dict[str, Any] = {}
    if path.exists():
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML ({error})") from None
    return build_config(document, environ, source=str(path))
