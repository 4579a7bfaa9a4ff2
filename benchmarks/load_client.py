"""The load generator of `benchmarks load`: a separate process that drives a running service.

    python -m benchmarks.load_client PLAN_JSON     # prints one JSON line of results

A fixed number of client coroutines each play one visitor after another, as fast as the
service answers (a closed loop), spreading requests round-robin over the target addresses.
The mixes:

- `mixed`: web visitors on /api/chat asking two questions, checking a suspicious text
  (the "check" button, then the text) or filing a whole complaint through the dialogue's
  buttons; and WeChat followers asking two questions through signed plain-mode requests.
  Each visitor has its own user id and its own X-Forwarded-For address (the service runs
  with `limits.trust_forwarded_for`, as behind the documented proxy), so the default rate
  limits apply as they would to real visitors;
- `wechat`: WeChat followers only, two questions each (the peer comparison with WeRoBot);
- `question`, `scam`, `complaint`: web visitors of that one kind only (the instruction
  counts of `benchmarks instructions`).

Only requests that finish inside the measuring window count; everything before it is
warm-up.  A request is an error when it fails or gets no whole answer within 30 s, answers
anything but 200, answers /api/chat with something that is not a JSON object (checked as
aiohttp's `ClientResponse.json()` did: a JSON content type, then `json.loads`), answers
WeChat with something that does not start with `<xml>`, or (in a dialogue) lacks the
button the next step presses.

The generator runs on the same cores as the service, and every cycle it burns is taken
from the service, so it is built to spend little CPU per request (a quarter to a third of
what the aiohttp client it replaces spent), on the standard library alone (it needs a
selector event loop, asyncio's default on Linux and macOS):

- each coroutine keeps its own persistent HTTP/1.1 connection per target: a non-blocking
  socket watched with `loop.add_reader` (cheaper per request than an asyncio transport
  and protocol), requests formatted as bytes from per-target templates, and a parser that
  reads only the status line, the headers that frame the body (Content-Length, chunked
  Transfer-Encoding, Connection) and Content-Type.  When the server ends the connection
  after an answer (HTTP/1.0 without keep-alive, `Connection: close`, a body delimited by
  the end of the connection: WeRoBot's wsgiref server), the next request opens a new one;
- the visitor coroutines are not asyncio tasks: a `Player` drives each one, resuming it
  straight from the socket's read callback with the parsed response and writing the
  request it asks for next in the same callback.  That saves a future, a task step and an
  event-loop iteration (one more `epoll_wait`) per request; one watchdog task enforces
  the timeout for all of them;
- JSON request bodies are put together from members encoded once (the very bytes
  `json.dumps` wrote), and the WeChat signature uses CPython's own SHA-1.
"""

from __future__ import annotations

import asyncio
import bisect
import collections.abc
import errno
import functools
import itertools
import json
import math
import os
import random
import re
import socket
import sys
import time
import types
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

try:  # CPython's own SHA-1: same digest, fewer instructions than OpenSSL's per signature
    from _sha1 import sha1
except ImportError:  # pragma: no cover - other interpreters
    from hashlib import sha1

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "gh_0123456789ab"
STORY = "上个月在工行办信用卡，说好免年费，结果被扣了300块年费，打客服也没人给个说法"
# The steps of a whole complaint after the story: press a button whose label contains the
# text, or send the text itself ("text:" prefix).
COMPLAINT_STEPS = ("对，是这家", "最近一个月内", "退款", "同意", "text:张桂兰", "text:PHONE",
                   "跳过", "为我自己", "确认提交")
MIX = (("question", 0.50), ("scam", 0.20), ("complaint", 0.05), ("wechat", 0.25))
REQUEST_TIMEOUT_SECONDS = 30.0  # connect + send + whole answer (aiohttp's `total` before)
RECEIVE_BYTES = 65536  # per recv(); answers are a few KiB
WATCHDOG_SECONDS = 0.5  # how often answers overdue by the timeout are looked for
USER_AGENT = b"xiaobao-benchmarks-load"
# aiohttp's test for a JSON content type (`ClientResponse.json`), applied the same way.
JSON_CONTENT_TYPE = re.compile(r"^application/(?:[\w.+-]+?\+)?json")
CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\s;\"]+)")


def complaint_step(step: str, replies: Sequence[dict[str, Any]],
                   number: int) -> tuple[str, str] | None:
    """What a complainant sends for one of COMPLAINT_STEPS, given the last replies (as
    /api/chat gives them): ("text", ...) or ("action", ...) of the button whose label holds
    the step; None when no such button was offered.  `number` makes the phone unique."""
    if step.startswith("text:"):
        return "text", step[5:].replace("PHONE", f"138{number % 10**8:08d}")
    action = next((button["action"] for reply in replies
                   for button in reply.get("buttons", []) if step in button["label"]), None)
    return None if action is None else ("action", action)


@dataclass(frozen=True)
class Plan:
    """What to run: where, which mix, how many coroutines, for how long."""

    targets: tuple[str, ...]
    mix: str = "mixed"
    concurrency: int = 32
    warmup_seconds: float = 5.0
    duration_seconds: float = 30.0
    wechat_path: str = "/wechat"
    token: str = "bench-token"
    seed: int = 1

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan the orchestrator passed on the command line."""
        raw = json.loads(text)
        raw["targets"] = tuple(raw["targets"])
        return cls(**raw)


@dataclass
class Tally:
    """Latencies and errors of one kind of message inside the measuring window."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


# -- HTTP/1.x responses --------------------------------------------------------------------
class BadResponseError(Exception):
    """The server answered something that is not an HTTP/1.x response."""


class ServerDisconnectedError(ConnectionError):
    """The server closed the connection before the whole answer arrived."""


class ContentTypeError(BadResponseError):
    """A /api/chat answer whose content type is not JSON (aiohttp's name for it)."""


# (status, Content-Type value, body)
Response = tuple[int, bytes, bytes]


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of header `name` (lower case, with the CRLF before it and the colon) in
    the lower-cased head, or None.  Finding four known names this way costs less than
    splitting every header line."""
    start = head.find(name)
    if start < 0:
        return None
    start += len(name)
    end = head.find(b"\r\n", start)
    return head[start:end if end >= 0 else len(head)].strip()


def parse_response(buffer: bytes, eof: bool) -> tuple[Response, bool] | None:
    """The response at the start of `buffer` and whether the connection stays open; None
    while incomplete.  `eof`: the server has closed, so a body without length ends here."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if eof:
            raise ServerDisconnectedError("closed inside the response head")
        return None
    if buffer[:7] != b"HTTP/1." or buffer[8:9] != b" ":
        raise BadResponseError(f"not an HTTP/1.x status line: {buffer[:40]!r}")
    try:
        status = int(buffer[9:12])
    except ValueError:
        raise BadResponseError(f"bad status line: {buffer[:40]!r}") from None
    head = buffer[:end].lower()
    keep_alive = buffer[7:8] != b"0"  # HTTP/1.1 keeps the connection by default
    connection = _header(head, b"\r\nconnection:")
    if connection is not None:
        if b"close" in connection:
            keep_alive = False
        elif b"keep-alive" in connection:
            keep_alive = True
    content_type = _header(head, b"\r\ncontent-type:") or b""
    start = end + 4
    if 100 <= status < 200:  # an interim answer: the real one follows
        return parse_response(buffer[start:], eof)
    length = _header(head, b"\r\ncontent-length:")
    transfer = _header(head, b"\r\ntransfer-encoding:")
    if status in (204, 304):
        body = b""
    elif transfer is not None and b"chunked" in transfer:
        chunks = _dechunk(buffer, start)
        if chunks is None:
            if eof:
                raise ServerDisconnectedError("closed inside a chunked body")
            return None
        body = chunks
    elif length is not None:
        try:
            size = int(length)
        except ValueError:
            raise BadResponseError(f"bad Content-Length: {length[:40]!r}") from None
        if len(buffer) - start < size:
            if eof:
                raise ServerDisconnectedError("closed before Content-Length bytes came")
            return None
        body = buffer[start:start + size]
    else:  # delimited by the end of the connection
        if not eof:
            return None
        body = buffer[start:]
        keep_alive = False
    return (status, content_type, body), keep_alive


def _dechunk(buffer: bytes, position: int) -> bytes | None:
    """The body of a chunked transfer starting at `position`; None while incomplete."""
    parts: list[bytes] = []
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        try:
            size = int(buffer[position:line_end].split(b";", 1)[0], 16)
        except ValueError:
            raise BadResponseError("bad chunk size") from None
        position = line_end + 2
        if size == 0:  # optional trailers, then an empty line
            if buffer.find(b"\r\n\r\n", position - 2) < 0:
                return None
            return b"".join(parts)
        if len(buffer) < position + size + 2:
            return None
        parts.append(buffer[position:position + size])
        position += size + 2


@functools.lru_cache(maxsize=64)
def _json_charset(content_type: bytes) -> str | None:
    """The charset to decode a JSON body with, None when the type is not JSON (the server
    sends the same few types over and over, hence the cache)."""
    ctype = content_type.decode("latin-1").lower()
    if JSON_CONTENT_TYPE.match(ctype) is None:
        return None
    charset = CHARSET.search(ctype)
    return charset.group(1) if charset else "utf-8"


def json_object(content_type: bytes, body: bytes) -> Any:
    """The decoded /api/chat answer, checked as aiohttp's `ClientResponse.json()` did: a
    JSON content type or ContentTypeError, None for an empty body, else `json.loads`."""
    charset = _json_charset(content_type)
    if charset is None:
        raise ContentTypeError(f"unexpected mimetype: {content_type[:60]!r}")
    stripped = body.strip()
    if not stripped:
        return None
    try:
        return json.loads(stripped.decode(charset))
    except LookupError:
        raise ContentTypeError(f"unknown charset: {charset}") from None


def member(key: str, value: str) -> bytes:
    """One `"key": "value"` member of a JSON object, exactly as `json.dumps` writes it."""
    return f'"{key}": {encode_basestring_ascii(value)}'.encode("ascii")


# -- requests and the coroutines that wait for them ----------------------------------------
@dataclass(frozen=True, eq=False)
class Target:
    """One service address with the constant parts of the requests sent to it."""

    index: int
    family: int
    address: Any  # what socket.connect takes: (host, port) for IPv4
    chat_head: bytes  # up to the X-Forwarded-For value
    wechat_path: bytes  # the request line up to the query string's parameters
    wechat_headers: bytes  # from " HTTP/1.1" up to the Content-Length value

    @classmethod
    def parse(cls, index: int, url: str, wechat_path: str) -> Target:
        """The address of `url` (http://host:port[/prefix]) and its request templates."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http:// targets are supported, not {url!r}")
        base = parts.path.rstrip("/")
        common = (b"Host: %b\r\nUser-Agent: %b\r\nAccept: */*\r\n"
                  % (parts.netloc.encode("ascii"), USER_AGENT))
        path = f"{base}{wechat_path or '/'}"
        family, _, _, _, address = socket.getaddrinfo(parts.hostname, parts.port or 80,
                                                      type=socket.SOCK_STREAM)[0]
        return cls(index=index, family=family, address=address,
                   chat_head=(b"POST %b/api/chat HTTP/1.1\r\n%bContent-Type: application/json"
                              b"\r\nX-Forwarded-For: " % (base.encode(), common)),
                   wechat_path=f"POST {path}{'&' if '?' in path else '?'}".encode(),
                   wechat_headers=(b" HTTP/1.1\r\n%bContent-Type: text/xml\r\n"
                                   b"Content-Length: " % common))


class Visitor:
    """One visitor's identity, the same on every request of its visit."""

    __slots__ = ("chat_user", "forwarded_for", "number", "openid")

    def __init__(self, number: int, seed: int) -> None:
        self.number = number
        # What every /api/chat body starts with: json.dumps({"user": ..., ...}).
        self.chat_user = b"{%b, " % member("user", f"bench-{seed}-{number}")
        self.forwarded_for = b"198.18.%d.%d" % (number // 250 % 250, number % 250 + 1)
        self.openid = b"oBench%04d%018d" % (seed, number)


class Text:
    """A text visitors send, encoded once: as a /api/chat member and as UTF-8 for XML."""

    __slots__ = ("chat", "utf8")

    def __init__(self, text: str) -> None:
        self.chat = member("text", text)
        self.utf8 = text.encode()


@types.coroutine
def exchange(target: Target, request: bytes) -> collections.abc.Generator[
        tuple[Target, bytes], Response, Response]:
    """Send `request` to `target` and wait for the response (or the error it raises).

    This suspends the visitor coroutine up to its `Player`, which writes the request and
    resumes the coroutine from the connection's callback; visitor coroutines may await
    nothing else.
    """
    return (yield target, request)


class Connection:
    """One keep-alive HTTP/1.1 connection of one player, one request at a time (no
    pipelining): a non-blocking socket watched with `loop.add_reader`.

    Plain sockets rather than an asyncio transport and protocol: the transport's extra
    calls per read and its 256 KiB receive buffer cost measurably more per request here.
    A complete response, or the reason there is none, goes straight to the player.
    """

    __slots__ = ("buffer", "busy", "closed", "fd", "loop", "open", "player", "sock",
                 "unsent")

    def __init__(self, player: Player, family: int) -> None:
        self.player = player
        self.loop = player.loop
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.fd = self.sock.fileno()
        self.open = False  # connected, idle or busy
        self.closed = False
        self.busy = False  # a request is out and its answer not yet handed over
        self.buffer = b""  # the answer so far
        self.unsent = b""  # request bytes the socket has not taken yet

    def connect(self, address: Any, request: bytes) -> None:
        """Start connecting to `address`; `request` goes out once connected."""
        self.busy = True
        self.unsent = request
        try:
            self.sock.setblocking(False)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            error = self.sock.connect_ex(address)
        except OSError as failure:
            self._fail_soon(failure)
            return
        if error in (errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
            self.loop.add_writer(self.fd, self._connected)
        elif error:
            self._fail_soon(OSError(error, os.strerror(error)))
        else:
            self._established()

    def _connected(self) -> None:
        self.loop.remove_writer(self.fd)
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._fail(OSError(error, os.strerror(error)))  # ConnectionRefusedError, ...
        else:
            self._established()

    def _established(self) -> None:
        self.open = True
        self.loop.add_reader(self.fd, self._read_ready)
        request, self.unsent = self.unsent, b""
        self._write(request)

    def send(self, request: bytes) -> None:
        """Write one request; its answer or failure goes to the player."""
        self.busy = True
        self._write(request)

    def _write(self, data: bytes) -> None:
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            self._fail_soon(error)
            return
        if sent < len(data):  # rare with requests this small: finish when writable
            self.unsent = data[sent:]
            self.loop.add_writer(self.fd, self._write_ready)

    def _write_ready(self) -> None:
        try:
            sent = self.sock.send(self.unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._fail(error)
            return
        self.unsent = self.unsent[sent:]
        if not self.unsent:
            self.loop.remove_writer(self.fd)

    def _read_ready(self) -> None:
        try:
            data = self.sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._fail(error)
            return
        if not data:
            self._end()
            return
        if not self.busy:  # nothing asked: a broken server, drop the connection
            self.close()
            return
        buffer = self.buffer + data if self.buffer else data
        try:
            parsed = parse_response(buffer, eof=False)
        except (BadResponseError, ConnectionError) as error:
            self._fail(error)
            return
        if parsed is None:
            self.buffer = buffer
            return
        self.buffer = b""
        self.busy = False
        response, keep_alive = parsed
        if not keep_alive:
            self.close()
        self.player.answered(response, None)

    def _end(self) -> None:
        """The server closed: the end of a body without length, or a failure."""
        busy, buffer = self.busy, self.buffer
        self.close()
        if not busy:
            return
        try:
            parsed = parse_response(buffer, eof=True)
            if parsed is None:
                raise ServerDisconnectedError("closed before any answer")
        except (BadResponseError, ConnectionError) as error:
            self.player.answered(None, error)
            return
        self.player.answered(parsed[0], None)

    def _fail(self, error: Exception) -> None:
        busy = self.busy
        self.close()
        if busy:
            self.player.answered(None, error)

    def _fail_soon(self, error: Exception) -> None:
        # From inside Player.answered: report on the next loop iteration, not recursively.
        self.loop.call_soon(self._fail, error)

    def close(self) -> None:
        """Drop the connection and whatever answer is still to come on it."""
        self.open = False
        self.busy = False
        self.buffer = self.unsent = b""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock.close()


class Player:
    """Drives one visitor coroutine (one closed-loop user) without an asyncio task: the
    coroutine yields (target, request) from `exchange`, the player writes the request on
    its connection to that target (a new one if there is none or the server closed it)
    and resumes the coroutine from the connection's read callback with the response.
    `done` completes when the coroutine returns."""

    def __init__(self, targets: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.connections: list[Connection | None] = [None] * targets
        self.coroutine: Coroutine[Any, Any, None] | None = None
        self.waiting: Connection | None = None
        self.deadline = math.inf  # time.monotonic() by which the answer must be complete
        self.done: asyncio.Future[None] = self.loop.create_future()

    def start(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run `coroutine` up to its first request."""
        self.coroutine = coroutine
        self.answered(None, None)

    def answered(self, response: Response | None, error: BaseException | None) -> None:
        """Resume the coroutine with a response (or throw the error into it), then send
        the request it asks for next."""
        self.waiting = None
        self.deadline = math.inf
        assert self.coroutine is not None
        try:
            if error is None:
                request = self.coroutine.send(response)
            else:
                request = self.coroutine.throw(error)
            target, data = request
        except StopIteration:
            if not self.done.done():
                self.done.set_result(None)
            return
        except Exception as failure:  # noqa: BLE001 - a bug in a script: fail the run with it
            if not self.done.done():
                self.done.set_exception(failure)
            return
        self.deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
        connection = self.connections[target.index]
        if connection is not None and connection.open:
            self.waiting = connection
            connection.send(data)
            return
        try:  # none yet, or the server closed it
            connection = Connection(self, target.family)
        except OSError as failure:  # out of file descriptors, say: an error like any other
            self.loop.call_soon(self.answered, None, failure)
            return
        self.waiting = self.connections[target.index] = connection
        connection.connect(target.address, data)

    def expire(self, now: float) -> None:
        """Fail the request (connecting included) if it is past its deadline."""
        if self.waiting is not None and now >= self.deadline:
            self.waiting.close()
            self.answered(None, TimeoutError())

    def close(self) -> None:
        """Close every connection (the run is over)."""
        for connection in self.connections:
            if connection is not None:
                connection.close()


class Generator:
    """The visitors, the round-robin over targets and the measuring window."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.random = random.Random(plan.seed)
        self.questions = [Text(text) for text in _texts(ROOT / "evaluation" / "kb_eval.jsonl")]
        self.scams = [Text(line["text"])
                      for line in _lines(ROOT / "evaluation" / "scam_eval.jsonl")
                      if line.get("label") == "scam"]
        self.target_list = [Target.parse(number, url, plan.wechat_path)
                            for number, url in enumerate(plan.targets)]
        self.targets = itertools.cycle(self.target_list)
        self.visitors = itertools.count(1)
        self.msg_ids = itertools.count(6_000_000_000_000_000_000 + plan.seed * 10**12)
        names, weights = zip(*MIX, strict=True)
        self.scripts: tuple[str, ...] = names
        if plan.mix not in ("mixed", *names):
            raise ValueError(f"unknown mix {plan.mix!r}: mixed or one of {', '.join(names)}")
        self.cum_weights = list(itertools.accumulate(weights))
        self.check = member("action", "check")
        self.tallies: dict[str, Tally] = {}
        self.players: list[Player] = []
        self.start = 0.0
        self.window = (0.0, 0.0)
        self.stop_at = 0.0

    # -- one request ---------------------------------------------------------------------
    def _count(self, kind: str, began: float, ended: float, error: str | None) -> None:
        if not self.window[0] <= ended <= self.window[1]:
            return
        tally = self.tallies.get(kind)
        if tally is None:
            tally = self.tallies[kind] = Tally()
        if error is None:
            tally.latencies.append(ended - began)
        else:
            tally.errors += 1
            tally.statuses[error] = tally.statuses.get(error, 0) + 1

    async def chat(self, kind: str, visitor: Visitor, body: bytes) -> list[dict[str, Any]]:
        """One /api/chat message, `body` being the JSON member after the user's; the
        replies (empty on error)."""
        payload = b"%b%b}" % (visitor.chat_user, body)
        target = next(self.targets)
        request = b"%b%b\r\nContent-Length: %d\r\n\r\n%b" % (
            target.chat_head, visitor.forwarded_for, len(payload), payload)
        began = time.perf_counter()
        try:
            status, content_type, reply = await exchange(target, request)
            ended = time.perf_counter()
            data = json_object(content_type, reply) if status == 200 else None
        except (OSError, ValueError, BadResponseError) as error:
            self._count(kind, began, time.perf_counter(), type(error).__name__)
            return []
        if status != 200 or not isinstance(data, dict):
            self._count(kind, began, ended, str(status))
            return []
        self._count(kind, began, ended, None)
        return list(data.get("replies", []))

    async def wechat(self, kind: str, visitor: Visitor, text: Text) -> bool:
        """One signed plain-mode WeChat text message; True when answered with 200 and XML."""
        timestamp, nonce = str(int(time.time())), str(self.random.randrange(10**9))
        signature = sha1("".join(sorted((self.plan.token, timestamp, nonce)))
                         .encode()).hexdigest()
        stamp = timestamp.encode()
        body = (b"<xml><ToUserName><![CDATA[%b]]></ToUserName>"
                b"<FromUserName><![CDATA[%b]]></FromUserName>"
                b"<CreateTime>%b</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                b"<Content><![CDATA[%b]]></Content><MsgId>%d</MsgId></xml>"
                % (ACCOUNT.encode(), visitor.openid, stamp, text.utf8, next(self.msg_ids)))
        target = next(self.targets)
        request = b"%bsignature=%b&timestamp=%b&nonce=%b%b%d\r\n\r\n%b" % (
            target.wechat_path, signature.encode(), stamp, nonce.encode(),
            target.wechat_headers, len(body), body)
        began = time.perf_counter()
        try:
            status, _, reply = await exchange(target, request)
        except (OSError, BadResponseError) as error:
            self._count(kind, began, time.perf_counter(), type(error).__name__)
            return False
        ended = time.perf_counter()
        if status != 200 or not reply.lstrip().startswith(b"<xml>"):
            self._count(kind, began, ended, str(status) if status != 200 else "no-xml")
            return False
        self._count(kind, began, ended, None)
        return True

    # -- visitors ------------------------------------------------------------------------
    async def visit(self) -> None:
        """One visitor of the mix, start to end."""
        visitor = Visitor(next(self.visitors), self.plan.seed)
        if self.plan.mix != "mixed":
            script = self.plan.mix
        else:  # random.choices(names, weights)[0], without its per-call set-up
            script = self.scripts[bisect.bisect(self.cum_weights,
                                                self.random.random() * self.cum_weights[-1],
                                                0, len(self.scripts) - 1)]
        if script == "question":
            for _ in range(2):
                await self.chat("chat-question", visitor,
                                self.random.choice(self.questions).chat)
        elif script == "scam":
            if await self.chat("chat-scam", visitor, self.check):
                await self.chat("chat-scam", visitor, self.random.choice(self.scams).chat)
        elif script == "complaint":
            await self.complaint(visitor)
        else:
            for _ in range(2):
                if not await self.wechat("wechat-question", visitor,
                                         self.random.choice(self.questions)):
                    break

    async def complaint(self, visitor: Visitor) -> None:
        """A whole complaint: the story, every button and answer, then confirmation."""
        replies = await self.chat("chat-complaint", visitor, member("text", "我要投诉"))
        if replies:
            replies = await self.chat("chat-complaint", visitor, member("text", STORY))
        for step in COMPLAINT_STEPS:
            if not replies:
                return
            sent = complaint_step(step, replies, visitor.number)
            if sent is None:
                self._count("chat-complaint", 0.0, time.perf_counter(), "missing-button")
                return
            replies = await self.chat("chat-complaint", visitor, member(*sent))
        if replies and not any("BB-" in reply.get("text", "") for reply in replies):
            self._count("chat-complaint", 0.0, time.perf_counter(), "not-confirmed")

    async def play(self) -> None:
        """One closed-loop user: visitor after visitor until the window closes (driven by
        a Player, so it may await only `exchange`)."""
        while time.perf_counter() < self.stop_at:
            await self.visit()

    async def watchdog(self) -> None:
        """Fail requests that outlive REQUEST_TIMEOUT_SECONDS: one timer for all players."""
        while True:
            await asyncio.sleep(WATCHDOG_SECONDS)
            now = time.monotonic()
            for player in self.players:
                player.expire(now)

    async def run(self) -> dict[str, Any]:
        """Run the plan; the figures as a JSON-ready dictionary."""
        plan = self.plan
        self.start = time.perf_counter()
        self.window = (self.start + plan.warmup_seconds,
                       self.start + plan.warmup_seconds + plan.duration_seconds)
        self.stop_at = self.window[1]
        watchdog = asyncio.create_task(self.watchdog())
        self.players = [Player(len(self.target_list)) for _ in range(plan.concurrency)]
        try:
            for player in self.players:
                player.start(self.play())
            await asyncio.gather(*(player.done for player in self.players))
        finally:
            watchdog.cancel()
            for player in self.players:
                player.close()
        return summarise(self.tallies, plan.duration_seconds)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values (0.0 for none)."""
    if not values:
        return 0.0
    rank = max(0, min(len(values) - 1, math.ceil(fraction * len(values)) - 1))
    return values[rank]


def summarise(tallies: dict[str, Tally], seconds: float) -> dict[str, Any]:
    """Per kind and overall: messages/s, median and p99 in ms, errors by cause."""
    def figures(latencies: list[float], errors: int, statuses: dict[str, int]) -> dict[str, Any]:
        ordered = sorted(latencies)
        return {"messages": len(ordered), "per_second": round(len(ordered) / seconds, 1),
                "median_ms": round(percentile(ordered, 0.5) * 1000, 2),
                "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
                "errors": errors, "error_causes": statuses}

    result: dict[str, Any] = {"kinds": {}}
    everything: list[float] = []
    errors, causes = 0, {}
    for kind, tally in sorted(tallies.items()):
        result["kinds"][kind] = figures(tally.latencies, tally.errors, tally.statuses)
        everything += tally.latencies
        errors += tally.errors
        for cause, count in tally.statuses.items():
            causes[cause] = causes.get(cause, 0) + count
    result["all"] = figures(everything, errors, causes)
    chat = [t for kind, t in tallies.items() if kind.startswith("chat-")]
    if chat:
        result["chat"] = figures([v for t in chat for v in t.latencies],
                                 sum(t.errors for t in chat), {})
    return result


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def _texts(path: Path) -> list[str]:
    return [line["text"] for line in _lines(path)]


async def _main(plan: Plan) -> dict[str, Any]:
    return await Generator(plan).run()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the plan given as JSON and print the results as one JSON line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(_main(Plan.from_json(args[0])))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
