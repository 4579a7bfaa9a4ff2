"""Shared fixtures: a real database per test (SQLite, and PostgreSQL when available),
the real knowledge index built once, and the service's own application factory.

On a laptop the PostgreSQL and browser halves skip with a visible reason; CI sets
XIAOBAO_TEST_STRICT=1, which turns those skips into failures.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bot import db
from bot.config import Config, build_config
from bot.fitted import knowledge_source
from knowledge.index import KnowledgeIndex

pytest_plugins = ["tests.log_guard"]  # fails the run if a log shows a phone/ID number
POSTGRES_ENV = "XIAOBAO_TEST_POSTGRES_URL"
STRICT = os.environ.get("XIAOBAO_TEST_STRICT") == "1"


def unavailable(reason: str) -> None:
    """Skip a test whose server or browser is missing; fail instead in strict CI."""
    if STRICT:
        pytest.fail(f"required in CI but unavailable: {reason}")
    pytest.skip(reason)


def postgres_url() -> str:
    """The test PostgreSQL URL, or skip/fail when none is configured."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        unavailable(f"{POSTGRES_ENV} is not set (no PostgreSQL server to test against)")
    return url  # type: ignore[return-value]


async def reset_postgres(url: str) -> None:
    """Drop everything in the public schema so each test starts from an empty database."""
    engine = db.create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each supported kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'xiaobao.db'}"
        return
    url = postgres_url()
    asyncio.run(reset_postgres(url))
    yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite database file (for tests about behaviour, not the backend)."""
    return f"sqlite:///{tmp_path / 'xiaobao.db'}"


@pytest.fixture(scope="session")
def knowledge_index() -> KnowledgeIndex:
    """The real knowledge base, indexed once for the whole run."""
    return KnowledgeIndex.build(knowledge_source(Config()))


@pytest.fixture
def config(sqlite_url: str) -> Config:
    """A test configuration on a fresh SQLite database."""
    return build_config({"database": {"url": sqlite_url}}, environ={})


@pytest.fixture
async def services(config: Config, knowledge_index: KnowledgeIndex) -> AsyncIterator[object]:
    """The service's shared objects on a migrated database."""
    from bot.services import open_services

    opened = await open_services(config, knowledge_index)
    yield opened
    await opened.close()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium binary for Playwright (never a downloaded browser)."""
    path = os.environ.get("XIAOBAO_TEST_CHROMIUM") or shutil.which("chromium")
    if not path:
        unavailable("Debian's chromium is not installed (apt-get install chromium)")
    return path  # type: ignore[return-value]
