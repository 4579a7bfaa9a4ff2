"""Configuration: `config.toml` plus `XIAOBAO_SECTION_KEY` environment overrides.

Operators deploy xiaobao by editing one documented file and setting a few environment
variables; a typo there must stop the service at once with one line naming the key, not
surface later as odd behaviour.  The schema is the set of dataclasses below: every field is
a key, its annotation is the type that is checked, and fields listed in a section's
`SECRETS` may only come from the environment.
"""

from __future__ import annotations

import dataclasses
import os
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
    pool_size: int = 5
    echo: bool = False

    SECRETS: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class ChatConfig:
    """Limits and wording shared by every consumer channel."""

    max_text_chars: int = 2000
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
class Config:
    """The whole validated configuration, passed explicitly to whatever needs it."""

    http: HttpConfig = field(default_factory=HttpConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    complaints: ComplaintsConfig = field(default_factory=ComplaintsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # Channel sections (telegram, wechat) are added below this line by their adapters.

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
    if config.chat.max_text_chars < 1 or config.chat.max_user_chars < 1:
        raise ConfigError("chat.max_text_chars and chat.max_user_chars must be positive")
    if not 0.0 < config.knowledge.answer_threshold < 1.0:
        raise ConfigError("knowledge.answer_threshold: must be between 0 and 1")
    if config.log.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"log.level: unknown level {config.log.level!r}")


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
