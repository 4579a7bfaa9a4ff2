"""Web channel: the chat page, `POST /api/chat` and `GET /healthz`.

Only HTTP lives here: the body is validated (bad input gets 400 with a JSON error, never a
500 or a traceback), turned into an `Incoming`, passed to the engine, and the replies are
rendered as JSON.  The contract is in `shared/spec/interfaces.md`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from bot import db
from bot.limits import limits_of, retry_after
from bot.messages import Incoming
from bot.services import SERVICES

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
CHANNEL = "web"
UNAVAILABLE_RETRY_AFTER_S = 5  # a database restart usually takes a few seconds


class BadRequest(ValueError):
    """A request body that breaks the `/api/chat` contract."""


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _too_many(wait: float) -> web.Response:
    """429 with the seconds to wait, so well-behaved clients back off by themselves."""
    response = _error("too many messages, please slow down", status=429)
    response.headers["Retry-After"] = retry_after(wait)
    return response


def parse_chat_body(raw: bytes, max_user: int, max_text: int) -> Incoming:
    """Validate an `/api/chat` body into an `Incoming` (raises BadRequest)."""
    try:
        body: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    user = body.get("user")
    if not isinstance(user, str) or not user.strip():
        raise BadRequest("'user' must be a non-empty string")
    if len(user) > max_user:
        raise BadRequest(f"'user' must be at most {max_user} characters")
    text, action = body.get("text"), body.get("action")
    if (text is None) == (action is None):
        raise BadRequest("give exactly one of 'text' or 'action'")
    if action is not None:
        if not isinstance(action, str) or not action.strip() or len(action) > 200:
            raise BadRequest("'action' must be a non-empty string of at most 200 characters")
        return Incoming(channel=CHANNEL, user_id=user, action=action)
    if not isinstance(text, str):
        raise BadRequest("'text' must be a string")
    if not text.strip():
        raise BadRequest("'text' is empty")
    if len(text) > max_text:
        raise BadRequest(f"'text' must be at most {max_text} characters")
    if "\x00" in text:
        raise BadRequest("'text' contains a NUL character")
    return Incoming(channel=CHANNEL, user_id=user, text=text)


async def chat(request: web.Request) -> web.Response:
    """POST /api/chat: one message or button press in, the engine's replies out."""
    services = request.app[SERVICES]
    limits = limits_of(request)
    wait = limits.check((limits.chat_address, limits.address(request)))
    if wait:
        return _too_many(wait)
    if request.content_length is not None and (
        request.content_length > services.config.http.max_body_bytes
    ):
        return _error("body too large", status=413)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error("body too large", status=413)
    try:
        incoming = parse_chat_body(
            raw, services.config.chat.max_user_chars, services.config.chat.max_text_chars
        )
    except BadRequest as error:
        return _error(str(error))
    wait = limits.check((limits.chat_user, incoming.user_id))
    if wait:
        return _too_many(wait)
    replies = await services.chat.handle(incoming)
    return web.json_response(
        {"replies": [reply.to_dict() for reply in replies]},
        dumps=lambda obj: json.dumps(obj, ensure_ascii=False),
    )


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 when the database answers, 503 otherwise."""
    if await db.ping(request.app[SERVICES].engine):
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "database unavailable"}, status=503)


async def index(request: web.Request) -> web.FileResponse:
    """GET /: the consumer chat page."""
    return web.FileResponse(STATIC_DIR / "index.html")


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Answer failures of API routes with JSON, never a traceback: 503 and Retry-After
    while the database cannot be reached, 500 for anything else."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if request.path.startswith("/api/"):
            return _error(error.reason or "request failed", status=error.status)
        raise
    except Exception as error:
        if db.is_unreachable(error):
            log.warning("database unavailable on %s %s (%s)", request.method, request.path,
                        type(error).__name__)
            response = _error("service temporarily unavailable, please try again shortly",
                              status=503)
            response.headers["Retry-After"] = retry_after(UNAVAILABLE_RETRY_AFTER_S)
            return response
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error("internal error, please try again later", status=500)


def setup(app: web.Application) -> None:
    """Mount the web channel's routes on the service's application."""
    app.middlewares.append(json_errors)
    app.router.add_get("/", index)
    app.router.add_post("/api/chat", chat)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", STATIC_DIR, show_index=False)
