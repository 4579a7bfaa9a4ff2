"""WeChat's server API, as far as xiaobao needs it: access token, messages, custom menu.

An answer that misses the 5-second window goes out later as a customer-service message,
and `xiaobao wechat push-menu` publishes the menu; both need an access token.  WeChat
allows few token fetches a day and a new token retires the old one, so the token is
fetched by one worker at a time (a lease row), cached in the database for all of them and
refreshed a few minutes before it expires.  The HTTP session belongs to the caller (the
application's cleanup context, or the command line); nothing here is global.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import WechatConfig
from bot.models import utcnow
from handlers import wechat_store as store

log = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(minutes=5)
LEASE = timedelta(seconds=15)
LEASE_WAIT_SECONDS = 0.2
TOKEN_ATTEMPTS = 50
TOKEN_REFUSED = frozenset({40001, 40014, 42001})
HTTP_TIMEOUT_SECONDS = 10.0


class WechatApiError(RuntimeError):
    """WeChat's API refused a call or could not be reached (never carries the token)."""

    def __init__(self, message: str, errcode: int | None = None) -> None:
        super().__init__(message)
        self.errcode = errcode


def http_session() -> aiohttp.ClientSession:
    """An HTTP client for WeChat's API with a bounded wait on every call."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS))


def token_cache_name(app_id: str) -> str:
    """The shared-cache row of one account's access token (short even for long app ids)."""
    return "wechat-token:" + hashlib.sha256(app_id.encode("utf-8")).hexdigest()[:32]


class WechatApi:
    """One official account's server API, with its access token shared through the database."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        sessions: async_sessionmaker[AsyncSession],
        config: WechatConfig,
    ) -> None:
        self._http = http
        self._sessions = sessions
        self._config = config
        self._base = config.api_base_url.rstrip("/")
        self._token_name = token_cache_name(config.app_id)

    async def send_text(self, user_id: str, content: str) -> None:
        """Send a customer-service text message (the late answer to a user's message)."""
        await self._call("/cgi-bin/message/custom/send",
                         {"touser": user_id, "msgtype": "text", "text": {"content": content}})

    async def create_menu(self, definition: dict[str, Any]) -> None:
        """Replace the account's custom menu."""
        await self._call("/cgi-bin/menu/create", definition)

    async def access_token(self) -> str:
        """A valid access token: the shared cached one, or a fresh one fetched by one worker."""
        for _ in range(TOKEN_ATTEMPTS):
            cached = await self._cached_token()
            if cached is not None:
                return cached
            if await self._take_lease():
                try:
                    # Another worker may have stored a token between our look and the lease.
                    cached = await self._cached_token()
                    if cached is not None:
                        return cached
                    token, expires_in = await self._fetch_token()
                    async with self._sessions() as session, session.begin():
                        await store.write_secret(session, self._token_name, token,
                                                 utcnow() + timedelta(seconds=expires_in))
                finally:
                    await self._release_lease()
                return token
            await asyncio.sleep(LEASE_WAIT_SECONDS)
        raise WechatApiError("timed out waiting for another worker to fetch the access token")

    async def _cached_token(self) -> str | None:
        """The shared token, unless it is missing or due for refresh."""
        async with self._sessions() as session:
            cached = await store.read_secret(session, self._token_name)
        if cached is not None and cached[1] - REFRESH_MARGIN > utcnow():
            return cached[0]
        return None

    async def _take_lease(self) -> bool:
        try:
            async with self._sessions() as session, session.begin():
                return await store.take_lease(session, self._token_name + ":lease",
                                              utcnow() + LEASE)
        except IntegrityError:
            return False

    async def _release_lease(self) -> None:
        async with self._sessions() as session, session.begin():
            await store.expire_secret(session, self._token_name + ":lease", "lease")

    async def _fetch_token(self) -> tuple[str, int]:
        """Ask WeChat for a new access token (the only call that sends the app secret)."""
        body = await self._request("GET", "/cgi-bin/token", params={
            "grant_type": "client_credential",
            "appid": self._config.app_id,
            "secret": self._config.app_secret,
        })
        token, expires_in = body.get("access_token"), body.get("expires_in", 7200)
        if not isinstance(token, str) or not token or not isinstance(expires_in, int):
            raise WechatApiError("the token answer has no access_token")
        log.info("wechat: fetched a new access token (valid %d s)", expires_in)
        return token, expires_in

    async def _call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with the access token; a token WeChat calls invalid is dropped and retried once."""
        token = await self.access_token()
        try:
            return await self._request("POST", path, {"access_token": token}, payload)
        except WechatApiError as error:
            if error.errcode not in TOKEN_REFUSED:
                raise
            log.warning("wechat: the cached access token was refused (errcode %s); "
                        "fetching a new one", error.errcode)
        async with self._sessions() as session, session.begin():
            await store.expire_secret(session, self._token_name, token)
        token = await self.access_token()
        return await self._request("POST", path, {"access_token": token}, payload)

    async def _request(
        self, method: str, path: str, params: dict[str, str],
        payload: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        headers = {} if data is None else {"Content-Type": "application/json; charset=utf-8"}
        try:
            async with self._http.request(method, self._base + path, params=params, data=data,
                                          headers=headers) as response:
                status = response.status
                text = await response.text(encoding="utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise WechatApiError(f"{path}: WeChat's API unreachable "
                                 f"({type(error).__name__})") from None
        if status != 200:
            raise WechatApiError(f"{path}: HTTP {status}")
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            raise WechatApiError(f"{path}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise WechatApiError(f"{path}: the answer is not a JSON object")
        errcode = body.get("errcode", 0)
        if errcode:
            raise WechatApiError(f"{path}: errcode {errcode} ({body.get('errmsg', '')})",
                                 errcode=errcode if isinstance(errcode, int) else None)
        return body


async def publish_menu(config: WechatConfig, sessions: async_sessionmaker[AsyncSession],
                       definition: dict[str, Any]) -> None:
    """Publish a custom menu with a short-lived HTTP session (the command line's path)."""
    async with http_session() as http:
        await WechatApi(http, sessions, config).create_menu(definition)
