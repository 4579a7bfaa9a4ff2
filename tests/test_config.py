"""config.toml and XIAOBAO_* overrides: documented keys, strict validation."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from bot.config import Config, ConfigError, build_config, env_name, load_config

REPO = Path(__file__).resolve().parents[1]


def test_shipped_config_toml_is_valid_and_matches_defaults():
    document = tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))
    assert build_config(document, environ={}) == Config()


def test_every_key_in_config_toml_has_a_comment_above_it():
    lines = (REPO / "config.toml").read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[number - 1].startswith("#"), f"undocumented key: {line}"


def test_environment_overrides_any_key_with_its_type():
    config = build_config(
        {},
        environ={
            "XIAOBAO_HTTP_PORT": "9090",
            "XIAOBAO_DATABASE_URL": "postgresql://xiaobao@db/xiaobao",
            "XIAOBAO_DATABASE_AUTO_MIGRATE": "false",
            "XIAOBAO_KNOWLEDGE_ANSWER_THRESHOLD": "0.7",
        },
    )
    assert config.http.port == 9090
    assert config.database.url == "postgresql://xiaobao@db/xiaobao"
    assert config.database.auto_migrate is False
    assert config.knowledge.answer_threshold == 0.7


def test_environment_wins_over_the_file():
    config = build_config({"http": {"port": 8001}}, environ={"XIAOBAO_HTTP_PORT": "8002"})
    assert config.http.port == 8002


def test_env_name_is_the_documented_pattern():
    assert env_name("database", "auto_migrate") == "XIAOBAO_DATABASE_AUTO_MIGRATE"


@pytest.mark.parametrize(
    ("document", "environ", "names"),
    [
        ({"http": {"prot": 80}}, {}, "http.prot"),
        ({"htp": {}}, {}, "[htp]"),
        ({"http": {"port": "eighty"}}, {}, "http.port"),
        ({"database": {"auto_migrate": "yes"}}, {}, "database.auto_migrate"),
        ({}, {"XIAOBAO_HTTP_PORT": "eighty"}, "XIAOBAO_HTTP_PORT"),
        ({}, {"XIAOBAO_DATABASE_AUTO_MIGRATE": "maybe"}, "XIAOBAO_DATABASE_AUTO_MIGRATE"),
        ({"http": {"port": 70000}}, {}, "http.port"),
        ({"database": {"url": "mysql://x"}}, {}, "database.url"),
        ({"database": {"pool_size": 2}}, {}, "database.pool_size"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_key(document, environ, names):
    with pytest.raises(ConfigError) as raised:
        build_config(document, environ)
    message = str(raised.value)
    assert names in message
    assert "\n" not in message


@dataclass(frozen=True)
class _ChannelSection:
    base_url: str = "https://example.invalid"
    token: str = ""
    SECRETS: ClassVar[tuple[str, ...]] = ("token",)


@dataclass(frozen=True)
class _SchemaWithSecret:
    channel: _ChannelSection = field(default_factory=_ChannelSection)


def test_secrets_are_refused_in_the_file_and_read_from_the_environment():
    with pytest.raises(ConfigError, match="XIAOBAO_CHANNEL_TOKEN"):
        build_config({"channel": {"token": "abc"}}, environ={}, schema=_SchemaWithSecret)
    built = build_config({}, {"XIAOBAO_CHANNEL_TOKEN": "abc"}, schema=_SchemaWithSecret)
    assert built.channel.token == "abc"


def test_load_config_reads_file_and_reports_bad_toml(tmp_path):
    good = tmp_path / "config.toml"
    good.write_text('[http]\nport = 8123\n', encoding="utf-8")
    assert load_config(good, environ={}).http.port == 8123
    bad = tmp_path / "bad.toml"
    bad.write_text("[http\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})


def test_missing_file_means_defaults(tmp_path):
    assert load_config(tmp_path / "absent.toml", environ={}) == Config()
