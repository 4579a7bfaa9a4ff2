"""Rate limits: per-process token buckets for chat messages, staff sign-in and WeChat users.

A bucket holds up to `burst` tokens and refills at `per_minute / 60` tokens a second; each
request takes one token, and an empty bucket answers how many seconds until the next token
(the `Retry-After` the handlers send).  `create_app` builds one `RateLimits` per
application and stores it under `LIMITS`; nothing lives at module level.  Keys are opaque
strings (a user id, an address, a username), kept only in memory, never logged, and bounded
in number: the least recently used key is forgotten first.

Limits are per worker process: with N workers behind the reverse proxy a client can get up
to N times the configured rate (docs/limits.md).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from bot.config import LimitsConfig

Clock = Callable[[], float]
UNKNOWN_ADDRESS = "unknown"
IPV6_PREFIX = 64


class TokenBuckets:
    """One token bucket per key, created full on first use and forgotten least-recent-first."""

    def __init__(self, per_minute: float, burst: int, max_keys: int,
                 clock: Clock = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Spend one token of `key`: 0.0 when allowed, else seconds until a token is back."""
        now = self.clock()
        state = self._buckets.pop(key, None)
        if state is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_keys:
                del self._buckets[next(iter(self._buckets))]
        else:
            tokens, then = state
            tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait: float) -> str:
    """A `Retry-After` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))


def address_key(peer: str | None, headers: Mapping[str, str], trust_forwarded_for: bool) -> str:
    """The client address to count against: the peer, or the proxy's X-Forwarded-For entry.

    Only the last X-Forwarded-For entry is used: it is the one our own reverse proxy appended
    (`$proxy_add_x_forwarded_for`); entries before it are whatever the client sent.  An IPv6
    address counts as its /64, which one household or phone usually holds whole.
    """
    address = peer or ""
    if trust_forwarded_for:
        forwarded = headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            address = last
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return UNKNOWN_ADDRESS if not address else address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_PREFIX}", strict=False))
    return str(parsed)


@dataclass
class RateLimits:
    """Every limiter of one application, built from the [limits] section."""

    config: LimitsConfig
    chat_user: TokenBuckets
    chat_address: TokenBuckets
    login_address: TokenBuckets
    login_username: TokenBuckets
    wechat_user: TokenBuckets

    @classmethod
    def from_config(cls, config: LimitsConfig, clock: Clock = time.monotonic) -> RateLimits:
        """One bucket set per limit named in the configuration."""
        def buckets(per_minute: float, burst: int) -> TokenBuckets:
            return TokenBuckets(per_minute, burst, config.max_tracked_keys, clock)

        return cls(
            config=config,
            chat_user=buckets(config.chat_per_user_per_minute, config.chat_user_burst),
            chat_address=buckets(config.chat_per_address_per_minute,
                                 config.chat_address_burst),
            login_address=buckets(config.login_per_address_per_minute,
                                  config.login_address_burst),
            login_username=buckets(config.login_per_username_per_minute,
                                   config.login_username_burst),
            wechat_user=buckets(config.wechat_per_user_per_minute, config.wechat_user_burst),
        )

    def address(self, request: web.BaseRequest) -> str:
        """The address a request counts against (see `address_key`)."""
        return address_key(request.remote, request.headers, self.config.trust_forwarded_for)

    def check(self, *takes: tuple[TokenBuckets, str]) -> float:
        """Spend a token from each (buckets, key) pair; the longest wait, 0.0 when allowed.

        Every bucket is charged even when an earlier one refuses, so hammering one limit
        does not leave the others full.  With limits disabled this is always 0.0.
        """
        if not self.config.enabled:
            return 0.0
        return max((buckets.take(key) for buckets, key in takes), default=0.0)


LIMITS = web.AppKey("limits", RateLimits)


def limits_of(request: web.Request) -> RateLimits:
    """The application's limits, from the main app or any sub-application."""
    return request.config_dict[LIMITS]
