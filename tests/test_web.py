"""The web channel over real HTTP (aiohttp's test client): contract and bad bodies."""

from __future__ import annotations

import json

import pytest

from bot.app import create_app


@pytest.fixture
async def client(aiohttp_client, config, knowledge_index):
    return await aiohttp_client(create_app(config, knowledge_index))


async def test_page_is_served_without_external_resources(client):
    response = await client.get("/")
    assert response.status == 200
    html = await response.text()
    assert "http://" not in html and "https://" not in html
    script = await (await client.get("/static/chat.js")).text()
    assert "/api/chat" in script


async def test_chat_answers_a_greeting_and_a_question(client):
    response = await client.post("/api/chat", json={"user": "w1", "text": "你好"})
    assert response.status == 200
    body = await response.json()
    assert body["replies"][0]["buttons"]
    assert set(body["replies"][0]["buttons"][0]) == {"label", "action"}
    response = await client.post("/api/chat", json={"user": "w1", "text": "银行卡被盗刷了怎么办"})
    body = await response.json()
    assert response.status == 200 and "【" in body["replies"][0]["text"]


async def test_chat_accepts_a_button_action(client):
    response = await client.post("/api/chat", json={"user": "w1", "action": "help"})
    assert response.status == 200
    assert "使用方法" in (await response.json())["replies"][0]["text"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b"\xff\xfe",
        json.dumps({"text": "你好"}).encode(),
        json.dumps({"user": "", "text": "你好"}).encode(),
        json.dumps({"user": "x" * 65, "text": "你好"}).encode(),
        json.dumps({"user": 5, "text": "你好"}).encode(),
        json.dumps({"user": "u", "text": ""}).encode(),
        json.dumps({"user": "u", "text": "   "}).encode(),
        json.dumps({"user": "u", "text": "长" * 5001}).encode(),
        json.dumps({"user": "u", "text": 12}).encode(),
        json.dumps({"user": "u"}).encode(),
        json.dumps({"user": "u", "text": "a", "action": "menu"}).encode(),
        json.dumps({"user": "u", "action": ""}).encode(),
        json.dumps({"user": "u", "text": "a\u0000b"}).encode(),
    ],
)
async def test_bad_bodies_get_400_with_a_json_error(client, body):
    response = await client.post(
        "/api/chat", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert "error" in await response.json()


async def test_oversized_body_is_refused_without_a_traceback(client):
    response = await client.post("/api/chat", data=b"{" + b" " * 70000 + b"}")
    assert response.status == 413
    assert "error" in await response.json()


async def test_healthz_reports_the_database(client):
    response = await client.get("/healthz")
    assert response.status == 200


async def test_healthz_is_503_when_the_database_is_gone(aiohttp_client, config, knowledge_index):
    from bot import db
    from bot.services import SERVICES

    app = create_app(config, knowledge_index)
    client = await aiohttp_client(app)
    services = app[SERVICES]
    working, unreachable = services.engine, db.create_engine("postgresql://nobody@127.0.0.1:1/x")
    services.engine = unreachable
    try:
        response = await client.get("/healthz")
        assert response.status == 503
    finally:
        services.engine = working
        await unreachable.dispose()
    assert (await client.get("/healthz")).status == 200


async def test_chat_is_503_with_retry_after_while_the_database_is_gone(
        aiohttp_client, config, knowledge_index, caplog):
    """An outage is not a bug: a 503 the client can retry, and one log line, no traceback."""
    from bot import db
    from bot.services import SERVICES
    from bot.transactions import Transactions

    app = create_app(config, knowledge_index)
    client = await aiohttp_client(app)
    engine = app[SERVICES].chat
    working, unreachable = engine._transactions, db.create_engine("postgresql://nobody@127.0.0.1:1/x")
    engine._transactions = Transactions(unreachable)
    try:
        response = await client.post("/api/chat", json={"user": "u1", "text": "你好"})
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert "try again" in (await response.json())["error"]
    finally:
        engine._transactions = working
        await unreachable.dispose()
    assert not [record for record in caplog.records if record.exc_info]
    assert (await client.post("/api/chat", json={"user": "u1", "text": "你好"})).status == 200
