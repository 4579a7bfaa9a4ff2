"""Rate limits: the token buckets, the address they count, and the three places that use them
(/api/chat per user and per address, staff sign-in per address and per username, WeChat
per follower), over real HTTP with small limits."""

from __future__ import annotations

import pytest

from bot.app import create_app
from bot.config import ConfigError, build_config
from bot.limits import LIMITS, RateLimits, TokenBuckets, address_key, retry_after
from handlers.wechat import SLOW_DOWN
from tests.test_dashboard import Browser
from tests.test_wechat import TOKEN, WechatServer


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited_config(sqlite_url: str, **limits: object):
    return build_config({"database": {"url": sqlite_url}, "limits": limits}, environ={})


# -- the buckets ---------------------------------------------------------------------------
def test_a_bucket_allows_its_burst_then_says_how_long_to_wait():
    clock = FakeClock()
    buckets = TokenBuckets(per_minute=6, burst=3, max_keys=10, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(10.0)
    assert buckets.take("b") == 0.0  # keys are independent
    clock.now += 5.0
    assert buckets.take("a") == pytest.approx(5.0)  # a refused take spends nothing
    clock.now += 5.0
    assert buckets.take("a") == 0.0
    clock.now += 3600.0
    assert [buckets.take("a") for _ in range(4)][-1] > 0  # refills to the burst, no more


def test_the_least_recently_seen_key_is_forgotten_first():
    clock = FakeClock()
    buckets = TokenBuckets(per_minute=1, burst=1, max_keys=2, clock=clock)
    buckets.take("old")
    buckets.take("recent")
    assert buckets.take("old") > 0  # touching "old" makes "recent" the eldest
    buckets.take("new")
    assert len(buckets) == 2
    assert buckets.take("recent") == 0.0  # forgotten, so full again
    assert buckets.take("new") > 0


def test_retry_after_is_whole_seconds_and_at_least_one():
    assert retry_after(0.01) == "1"
    assert retry_after(10.2) == "11"


def test_the_address_is_the_peer_unless_the_proxy_is_trusted():
    forwarded = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
    assert address_key("127.0.0.1", forwarded, trust_forwarded_for=False) == "127.0.0.1"
    # Only the entry our proxy appended counts; what the client put before it does not.
    assert address_key("127.0.0.1", forwarded, trust_forwarded_for=True) == "203.0.113.7"
    assert address_key("127.0.0.1", {}, trust_forwarded_for=True) == "127.0.0.1"
    assert address_key("2001:db8:1:2:3:4:5:6", {}, False) == "2001:db8:1:2::/64"
    assert address_key("::ffff:198.51.100.4", {}, False) == "198.51.100.4"
    assert address_key(None, {}, False) == "unknown"


def test_disabled_limits_allow_everything():
    config = build_config({"limits": {"enabled": False, "chat_user_burst": 1}}, environ={})
    limits = RateLimits.from_config(config.limits)
    assert all(limits.check((limits.chat_user, "u")) == 0.0 for _ in range(5))


@pytest.mark.parametrize(("key", "value", "named"), [
    ("chat_user_burst", 0, "limits.chat_user_burst"),
    ("login_per_username_per_minute", 0.0, "limits.login_per_username_per_minute"),
    ("max_tracked_keys", 0, "limits.max_tracked_keys"),
])
def test_impossible_limits_stop_start_up_naming_the_key(key, value, named):
    with pytest.raises(ConfigError, match=named):
        build_config({"limits": {key: value}}, environ={})


def test_the_limits_belong_to_the_application(sqlite_url):
    first = create_app(limited_config(sqlite_url))
    second = create_app(limited_config(sqlite_url))
    assert isinstance(first[LIMITS], RateLimits)
    assert first[LIMITS] is not second[LIMITS]


# -- /api/chat -----------------------------------------------------------------------------
async def chat(client, user: str, headers: dict[str, str] | None = None):
    return await client.post("/api/chat", json={"user": user, "action": "menu"},
                             headers=headers or {})


async def test_chat_refuses_a_user_over_their_limit_with_429_and_retry_after(
        aiohttp_client, sqlite_url, knowledge_index):
    config = limited_config(sqlite_url, chat_user_burst=2, chat_per_user_per_minute=6.0)
    client = await aiohttp_client(create_app(config, knowledge_index))
    assert [(await chat(client, "alice")).status for _ in range(2)] == [200, 200]
    refused = await chat(client, "alice")
    assert refused.status == 429
    assert 5 <= int(refused.headers["Retry-After"]) <= 10  # one token at 6 a minute
    assert "error" in await refused.json()
    assert (await chat(client, "bob")).status == 200


async def test_chat_counts_addresses_and_trusts_the_proxy_only_when_told(
        aiohttp_client, sqlite_url, knowledge_index):
    untrusted = limited_config(sqlite_url, chat_address_burst=2, chat_per_address_per_minute=1.0)
    client = await aiohttp_client(create_app(untrusted, knowledge_index))
    statuses = [(await chat(client, f"user-{n}", {"X-Forwarded-For": f"198.51.100.{n}"})).status
                for n in range(3)]
    assert statuses == [200, 200, 429]  # one peer, whatever the header says

    trusted = limited_config(sqlite_url, chat_address_burst=2, chat_per_address_per_minute=1.0,
                             trust_forwarded_for=True)
    client = await aiohttp_client(create_app(trusted, knowledge_index))
    statuses = [(await chat(client, f"user-{n}", {"X-Forwarded-For": f"198.51.100.{n}"})).status
                for n in range(3)]
    assert statuses == [200, 200, 200]
    same = [(await chat(client, f"other-{n}", {"X-Forwarded-For": "198.51.100.9"})).status
            for n in range(3)]
    assert same == [200, 200, 429]


# -- staff sign-in -------------------------------------------------------------------------
async def test_sign_in_is_limited_per_username_with_a_friendly_page(
        aiohttp_server, sqlite_url, knowledge_index):
    config = limited_config(sqlite_url, login_username_burst=2,
                            login_per_username_per_minute=1.0)
    server = await aiohttp_server(create_app(config, knowledge_index))
    person = Browser(server)
    try:
        attempts = [(await person.login("nobody", "wrong")).status for _ in range(2)]
        assert attempts == [401, 401]
        refused = await person.login("NoBody", "wrong")  # usernames count case-blind
        assert refused.status == 429
        assert 30 <= int(refused.headers["Retry-After"]) <= 60  # one token a minute
        assert "登录尝试过于频繁" in refused.body
        assert 'name="username"' in refused.body  # the form is still there
        assert (await person.login("somebody-else", "wrong")).status == 401
    finally:
        await person.http.close()


async def test_sign_in_is_limited_per_address(aiohttp_server, sqlite_url, knowledge_index):
    config = limited_config(sqlite_url, login_address_burst=2, login_per_address_per_minute=1.0)
    server = await aiohttp_server(create_app(config, knowledge_index))
    person = Browser(server)
    try:
        statuses = [(await person.login(f"user{n}", "wrong")).status for n in range(3)]
        assert statuses == [401, 401, 429]
    finally:
        await person.http.close()


# -- WeChat --------------------------------------------------------------------------------
async def test_wechat_asks_one_fast_follower_to_slow_down_and_no_one_else(
        aiohttp_client, sqlite_url, knowledge_index):
    config = build_config({"database": {"url": sqlite_url}, "wechat": {"mode": "plain"},
                           "limits": {"wechat_user_burst": 2, "wechat_per_user_per_minute": 1.0,
                                      "chat_address_burst": 1}},
                          environ={"XIAOBAO_WECHAT_TOKEN": TOKEN})
    client = await aiohttp_client(create_app(config, knowledge_index))
    fast = WechatServer(client, user="oFastFollower000000000000000")
    assert (await fast.text("菜单")) != SLOW_DOWN
    assert (await fast.text("帮助")) != SLOW_DOWN
    assert (await fast.text("菜单")) == SLOW_DOWN
    # Every request comes from one address (WeChat's): other followers are not affected.
    for n in range(3):
        other = WechatServer(client, user=f"oOtherFollower{n:014d}")
        assert (await other.text("菜单")) != SLOW_DOWN
