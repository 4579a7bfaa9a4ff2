"""The staff dashboard over real HTTP: sign-in, roles and scopes, every action, audits.

Each staff member is a separate HTTP client with its own cookies, signing in through the
real form, against the service's own application on a fresh SQLite database.  Complaints
are filed with `file_complaint`, as the consumer dialogue files them; all data is
fictitious.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from bot.app import create_app
from bot.complaint_records import Submission, file_complaint, staff_replies
from bot.config import Config, build_config
from bot.models import (
    AuditEntry,
    Complaint,
    ComplaintEvent,
    ConsumerMessage,
    Notification,
    QueueChannel,
    StaffInvite,
    StaffSession,
    StaffUser,
    utcnow,
)
from bot.services import SERVICES
from bot.staff_accounts import AccountError, StaffAccounts, token_hash
from handlers.dashboard import ACTIONS, DASHBOARD, DASHBOARD_APP
from tests.log_guard import looks_personal

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "correct-horse-battery-staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
STORIES = [
    "上个月在银行办信用卡，说好免年费，结果被扣了三百块年费，打客服也没人给说法",
    "理财经理推荐的产品说保本，到期亏了两万，当时根本没有说有风险",
    "房贷提前还款被收了违约金，合同里没有写清楚，柜台也解释不清",
    "手机银行半夜被转走五千块，我没有操作过，挂失以后银行一直拖着不处理",
    "重疾险理赔被拒，说我投保前没有如实告知，可是业务员当时说不用填",
    "车险出险以后定损员一直不来，修车厂等了半个月，理赔款到现在也没有",
    "催收电话打到我单位和父母那里，说话很难听，还威胁要上门",
    "存款到期想取出来，网点说必须买一份保险才能办，不买就拖着",
]
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


# -- factories ----------------------------------------------------------------------------
def services_of(app):
    return app[SERVICES]


def accounts_of(app) -> StaffAccounts:
    return app[DASHBOARD_APP][DASHBOARD].accounts


class Factory:
    """Test data written through the domain functions, on the running app's database."""

    def __init__(self, app) -> None:
        self.app = app
        self.counter = itertools.count(1)
        self.rng = random.Random(7)

    @property
    def directory(self):
        return services_of(self.app).triage.directory

    async def staff(self, username: str, role: str, queue: str | None = None,
                    password: str = PASSWORD) -> StaffUser:
        """An account with its password set through its one-time invite."""
        accounts = accounts_of(self.app)
        async with services_of(self.app).sessions() as session, session.begin():
            user = await accounts.create_user(session, self.directory, username, role, queue,
                                              username.upper())
            token = await accounts.issue_invite(session, user)
        async with services_of(self.app).sessions() as session, session.begin():
            return await accounts.accept_invite(session, token, password)

    async def complaint(self, institution: str = "icbc", *, queue: str | None = None,
                        risk: tuple[str, ...] = (), agent: tuple[str, ...] = (),
                        business: str = "bank-card", received: datetime | None = None,
                        phone: str = "13800001234", user_id: str = "consumer-1",
                        channel: str = "web") -> Complaint:
        """A complaint filed as the consumer dialogue files it (fictitious data)."""
        number = next(self.counter)
        named = self.directory.get(institution)
        assert named is not None
        submission = Submission(
            channel=channel, user_id=user_id, confirmation_key=f"test-{number}",
            queue=self.directory.get(queue or institution), institution=named,
            sector=named.sector, business=business, cause="fees",
            story=STORIES[(number - 1) % len(STORIES)], occurred="上个月", wish="退还费用",
            name="测试用户", phone=phone, id_number="110101199003071234",
            relationship="self", consent_at=received or utcnow(), risk_reasons=risk,
            agent_reasons=agent)
        async with services_of(self.app).sessions() as session, session.begin():
            return await file_complaint(session, submission, self.directory, "BB",
                                        "http://127.0.0.1/staff", self.rng, now=received)

    async def rows(self, model, *where):
        async with services_of(self.app).sessions() as session:
            return list((await session.scalars(select(model).where(*where))).all())

    async def get(self, model, key):
        async with services_of(self.app).sessions() as session:
            return await session.get(model, key)

    async def execute(self, statement) -> None:
        async with services_of(self.app).sessions() as session, session.begin():
            await session.execute(statement)


class Browser:
    """One person's HTTP client: its own cookie jar, the real forms and their tokens."""

    def __init__(self, server) -> None:
        self.http = aiohttp.ClientSession(base_url=str(server.make_url("")),
                                          cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.token = ""

    async def get(self, path: str, **kwargs) -> aiohttp.ClientResponse:
        response = await self.http.get(path, **kwargs)
        body = await response.text()
        found = CSRF.search(body)
        if found:
            self.token = found.group(1)
        response.body = body  # type: ignore[attr-defined]
        return response

    async def post(self, path: str, data: dict | None = None, *, csrf: str | None = None,
                   follow: bool = False) -> aiohttp.ClientResponse:
        form = {**(data or {}), "csrf_token": self.token if csrf is None else csrf}
        if csrf == "":
            form.pop("csrf_token")
        response = await self.http.post(path, data=form, allow_redirects=follow)
        response.body = await response.text()  # type: ignore[attr-defined]
        return response

    async def login(self, username: str, password: str = PASSWORD,
                    next_path: str = "/staff/") -> aiohttp.ClientResponse:
        await self.get("/staff/login")
        return await self.post("/staff/login", {"username": username, "password": password,
                                                "next": next_path})

    async def act(self, tracking_no: str, action: str, **fields: str) -> aiohttp.ClientResponse:
        await self.get(f"/staff/complaints/{tracking_no}")
        return await self.post(f"/staff/complaints/{tracking_no}/{action}", fields)


@pytest.fixture
def staff_config(sqlite_url) -> Config:
    return build_config({"database": {"url": sqlite_url},
                         "staff": {"max_failed_logins": 3, "lockout_minutes": 10}}, environ={})


@pytest.fixture
async def server(aiohttp_server, staff_config, knowledge_index):
    return await aiohttp_server(create_app(staff_config, knowledge_index))


@pytest.fixture
def data(server) -> Factory:
    return Factory(server.app)


@pytest.fixture
async def browser(server) -> AsyncIterator:
    opened: list[Browser] = []

    def open_browser() -> Browser:
        opened.append(Browser(server))
        return opened[-1]

    yield open_browser
    for one in opened:
        await one.http.close()


async def signed_in(browser, data, username: str, role: str, queue: str | None = None):
    user = await data.staff(username, role, queue)
    person = browser()
    response = await person.login(username)
    assert response.status == 303, response.body
    person.user = user
    return person


# -- sign-in, sessions, cookies, CSRF, headers ---------------------------------------------
async def test_pages_need_a_session_and_carry_security_headers(browser, data):
    anonymous = browser()
    for path in ("/staff/", "/staff/users", "/staff/complaints/BB-2611-AAAA"):
        response = await anonymous.get(path, allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"].startswith("/staff/login?next=")
    response = await anonymous.post("/staff/complaints/BB-2611-AAAA/claim", csrf="x")
    assert response.status == 403
    response = await anonymous.get("/staff/login")
    assert response.status == 200
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for header, value in SECURITY_HEADERS.items():
        assert response.headers[header] == value
    assert "http://" not in response.body and "https://" not in response.body  # no CDN
    static = await anonymous.get("/staff/static/dashboard.js")
    assert static.status == 200 and static.headers["X-Frame-Options"] == "DENY"
    assert (await anonymous.get("/staff", allow_redirects=False)).status == 301


async def test_login_sets_a_strict_httponly_cookie_and_logout_ends_the_session(
        browser, data, server):
    await data.staff("icbc-wang", "institution", "icbc")
    person = browser()
    response = await person.login("icbc-wang")
    assert response.status == 303 and response.headers["Location"] == "/staff/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/staff" in cookie
    assert "Secure" not in cookie  # served over plain http in tests (secure_cookies = auto)
    token = re.search(r"xiaobao_staff=([^;]+)", cookie).group(1)
    stored = await data.rows(StaffSession)
    assert [row.token_hash for row in stored] == [token_hash(token)]  # only the hash is kept
    assert (await person.get("/staff/")).status == 200

    assert (await person.post("/staff/logout")).status == 303
    assert await data.rows(StaffSession) == []
    replay = browser()
    replay.http.cookie_jar.update_cookies({"xiaobao_staff": token}, server.make_url("/staff/"))
    assert (await replay.get("/staff/", allow_redirects=False)).status == 303


@pytest.mark.parametrize(("staff_settings", "secure"), [
    ({"secure_cookies": "always"}, True),
    ({"public_url": "https://xiaobao.example.org"}, True),
    ({"secure_cookies": "never", "public_url": "https://xiaobao.example.org"}, False),
])
async def test_secure_cookie_flag_follows_the_configuration(
        aiohttp_server, sqlite_url, knowledge_index, staff_settings, secure):
    config = build_config({"database": {"url": sqlite_url}, "staff": staff_settings},
                          environ={})
    server = await aiohttp_server(create_app(config, knowledge_index))
    async with aiohttp.ClientSession() as http:
        response = await http.get(server.make_url("/staff/login"))
        assert ("Secure" in response.headers["Set-Cookie"]) is secure


async def test_next_after_login_stays_inside_the_dashboard(browser, data):
    await data.staff("icbc-wang", "institution", "icbc")
    for target, expected in [("/staff/users", "/staff/users"),
                             ("https://evil.example/", "/staff/"),
                             ("//evil.example/staff/", "/staff/")]:
        response = await browser().login("icbc-wang", next_path=target)
        assert response.headers["Location"] == expected


async def test_login_form_rejects_missing_or_wrong_csrf_tokens(browser, data):
    await data.staff("icbc-wang", "institution", "icbc")
    person = browser()
    await person.get("/staff/login")
    credentials = {"username": "icbc-wang", "password": PASSWORD}
    assert (await person.post("/staff/login", credentials, csrf="")).status == 403
    assert (await person.post("/staff/login", credentials, csrf="forged")).status == 403
    assert await data.rows(StaffSession) == []
    assert (await person.post("/staff/login", credentials)).status == 303


async def test_action_forms_reject_missing_or_wrong_csrf_tokens(browser, data):
    complaint = await data.complaint("icbc")
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    await person.get(f"/staff/complaints/{complaint.tracking_no}")
    path = f"/staff/complaints/{complaint.tracking_no}/reply"
    assert (await person.post(path, {"text": "您好"}, csrf="")).status == 403
    assert (await person.post(path, {"text": "您好"}, csrf="not-the-token")).status == 403
    other = await signed_in(browser, data, "icbc-li", "institution", "icbc")
    await other.get("/staff/")
    assert (await person.post(path, {"text": "您好"}, csrf=other.token)).status == 403
    assert await data.rows(ConsumerMessage) == []
    assert await data.rows(ComplaintEvent, ComplaintEvent.kind == "reply") == []
    assert (await person.post("/staff/logout", csrf="")).status == 403


async def test_repeated_failures_lock_the_account_even_against_the_right_password(
        browser, data):
    user = await data.staff("icbc-wang", "institution", "icbc")
    person = browser()
    for _ in range(3):
        response = await person.login("icbc-wang", "wrong-password-123")
        assert response.status == 401 and "暂时锁定" in response.body
    locked = await data.get(StaffUser, user.id)
    assert locked.locked_until is not None
    response = await person.login("icbc-wang")
    assert response.status == 401  # locked: the right password is refused too
    assert await data.rows(StaffSession) == []
    actions = [e.action for e in await data.rows(AuditEntry, AuditEntry.user_id == user.id)]
    assert actions.count("login-failed") == 3 and "locked-out" in actions
    assert "login-refused-locked" in actions

    await data.execute(update(StaffUser).where(StaffUser.id == user.id)
                       .values(locked_until=utcnow() - timedelta(seconds=1)))
    assert (await person.login("icbc-wang")).status == 303


async def test_unknown_users_and_wrong_passwords_get_the_same_answer(browser, data):
    await data.staff("icbc-wang", "institution", "icbc")
    wrong = await browser().login("icbc-wang", "wrong-password-123")
    unknown = await browser().login("nobody-here", "wrong-password-123")
    assert wrong.status == unknown.status == 401
    assert (CSRF.sub("", wrong.body).replace("icbc-wang", "")
            == CSRF.sub("", unknown.body).replace("nobody-here", ""))


async def test_sessions_expire(browser, data):
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    assert (await person.get("/staff/")).status == 200
    await data.execute(update(StaffSession).values(expires_at=utcnow() - timedelta(minutes=1)))
    response = await person.get("/staff/", allow_redirects=False)
    assert response.status == 303 and "/staff/login" in response.headers["Location"]
    assert await data.rows(StaffSession) == []  # the expired row is gone


async def test_session_lifetime_comes_from_the_configuration(browser, data, staff_config):
    await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    session = (await data.rows(StaffSession))[0]
    lifetime = session.expires_at - session.created_at
    assert lifetime == timedelta(hours=staff_config.staff.session_hours)


async def test_deactivated_users_are_signed_out(browser, data):
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    await data.execute(update(StaffUser).where(StaffUser.id == person.user.id)
                       .values(active=False))
    assert (await person.get("/staff/", allow_redirects=False)).status == 303


# -- invites and passwords -----------------------------------------------------------------
async def test_an_invite_link_sets_a_password_once(browser, data, server):
    accounts = accounts_of(server.app)
    async with services_of(server.app).sessions() as session, session.begin():
        user = await accounts.create_user(session, data.directory, "ccb-zhao", "institution",
                                          "ccb")
        token = await accounts.issue_invite(session, user)
    assert (await data.get(StaffUser, user.id)).password_hash is None  # no default password
    person = browser()
    page = await person.get(f"/staff/invite/{token}")
    assert page.status == 200 and "ccb-zhao" in page.body
    short = await person.post(f"/staff/invite/{token}", {"password": "short",
                                                         "password2": "short"})
    assert short.status == 400 and "12" in short.body
    mismatch = await person.post(f"/staff/invite/{token}", {"password": PASSWORD,
                                                            "password2": PASSWORD + "x"})
    assert mismatch.status == 400
    done = await person.post(f"/staff/invite/{token}", {"password": PASSWORD,
                                                        "password2": PASSWORD})
    assert done.status == 303 and done.headers["Location"] == "/staff/login?set=1"
    stored = (await data.get(StaffUser, user.id)).password_hash
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert (await person.get(f"/staff/invite/{token}")).status == 404  # used up
    again = await person.post(f"/staff/invite/{token}", {"password": PASSWORD + "2",
                                                         "password2": PASSWORD + "2"})
    assert again.status == 400
    assert (await person.login("ccb-zhao")).status == 303


async def test_invites_expire_and_a_new_one_replaces_the_old(data, server):
    accounts = accounts_of(server.app)
    async with services_of(server.app).sessions() as session, session.begin():
        user = await accounts.create_user(session, data.directory, "ccb-zhao", "institution",
                                          "ccb")
        first = await accounts.issue_invite(session, user)
        second = await accounts.issue_invite(session, user)
    async with services_of(server.app).sessions() as session:
        assert await accounts.invited_user(session, first) is None
        assert (await accounts.invited_user(session, second)).id == user.id
        later = utcnow() + timedelta(hours=accounts.policy.invite_hours + 1)
        assert await accounts.invited_user(session, second, now=later) is None
    stored = await data.rows(StaffInvite)
    assert all(len(row.token_hash) == 64 for row in stored)
    assert first not in {row.token_hash for row in stored}


@pytest.mark.parametrize(("role", "queue", "fragment"), [
    ("institution", None, "队列"),
    ("institution", "assoc-bank", "队列"),
    ("institution", "no-such-bank", "队列"),
    ("association", "icbc", "assoc-bank"),
    ("association", None, "assoc-bank"),
    ("regulator", "icbc", "不属于任何队列"),
    ("admin", "assoc-bank", "不属于任何队列"),
    ("superuser", None, "未知角色"),
])
async def test_roles_and_queues_are_checked_against_the_directory(data, server, role, queue,
                                                                  fragment):
    with pytest.raises(AccountError, match=fragment):
        async with services_of(server.app).sessions() as session, session.begin():
            await accounts_of(server.app).create_user(session, data.directory, "someone",
                                                      role, queue)


# -- scopes: who sees what -------------------------------------------------------------------
async def test_institution_staff_see_only_their_own_queue(browser, data):
    own = await data.complaint("icbc")
    other = await data.complaint("ccb")
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    page = await person.get("/staff/")
    assert own.tracking_no in page.body and other.tracking_no not in page.body
    assert "共 1 件" in page.body


async def test_another_institutions_complaint_is_404_whatever_the_url(browser, data):
    other = await data.complaint("ccb")
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    missing = await person.get("/staff/complaints/BB-2611-ZZZZ")
    assert missing.status == 404
    number = other.tracking_no
    for path in (f"/staff/complaints/{number}", f"/staff/complaints/{number}/history",
                 f"/staff/complaints/{number}/export", f"/staff/complaints/{number.lower()}",
                 f"/staff/complaints/{number.replace('-', '%2D')}",
                 f"/staff/complaints/{number}/history?tracking_no={number}"):
        response = await person.get(path)
        assert response.status == 404, path
        assert response.body == missing.body  # indistinguishable from "does not exist"
        assert "测试用户" not in response.body and "13800001234" not in response.body
    await person.get("/staff/")
    for action, fields in [("claim", {}), ("reply", {"text": "hi"}),
                           ("ask-info", {"text": "材料"}), ("extend", {"reason": "复杂"}),
                           ("resolve", {"outcome": "已退款"}),
                           ("transfer", {"target": "icbc", "reason": "抢过来"})]:
        response = await person.post(f"/staff/complaints/{number}/{action}", fields)
        assert response.status == 404, action
    complaint = (await data.rows(Complaint, Complaint.id == other.id))[0]
    assert complaint.queue_id == "ccb" and complaint.status == "received"
    assert complaint.assigned_to is None
    assert await data.rows(ConsumerMessage) == []
    staff_events = [e for e in await data.rows(ComplaintEvent)
                    if e.actor.startswith("staff:")]
    assert staff_events == []
    assert await data.rows(AuditEntry, AuditEntry.complaint_id == other.id) == []


async def test_bank_association_sees_the_banks_and_its_own_queue(browser, data):
    icbc = await data.complaint("icbc")
    ccb = await data.complaint("ccb")
    unnamed = await data.complaint("icbc", queue="assoc-bank")
    life = await data.complaint("chinalife", business="life-insurance")
    person = await signed_in(browser, data, "bank-assoc", "association", "assoc-bank")
    page = await person.get("/staff/")
    for visible in (icbc, ccb, unnamed):
        assert visible.tracking_no in page.body
    assert life.tracking_no not in page.body
    assert (await person.get(f"/staff/complaints/{life.tracking_no}")).status == 404
    assert (await person.act(ccb.tracking_no, "claim")).status == 303


async def test_insurance_association_sees_life_and_property_insurers(browser, data):
    life = await data.complaint("chinalife", business="life-insurance")
    car = await data.complaint("picc-pc", business="car-insurance")
    own = await data.complaint("picc-pc", queue="assoc-insurance")
    bank = await data.complaint("icbc")
    person = await signed_in(browser, data, "ins-assoc", "association", "assoc-insurance")
    page = await person.get("/staff/")
    for visible in (life, car, own):
        assert visible.tracking_no in page.body
    assert bank.tracking_no not in page.body
    assert (await person.get(f"/staff/complaints/{bank.tracking_no}/history")).status == 404


async def test_the_regulator_sees_everything_and_changes_nothing(browser, data):
    bank = await data.complaint("icbc")
    insurer = await data.complaint("chinalife", business="life-insurance")
    person = await signed_in(browser, data, "cbirc", "regulator")
    page = await person.get("/staff/")
    assert bank.tracking_no in page.body and insurer.tracking_no in page.body
    detail = await person.get(f"/staff/complaints/{bank.tracking_no}")
    assert detail.status == 200 and 'id="actions"' not in detail.body
    assert "只能查看" in detail.body
    for action, fields in [("claim", {}), ("reply", {"text": "hi"}),
                           ("ask-info", {"text": "x"}), ("extend", {"reason": "x"}),
                           ("resolve", {"outcome": "x"}),
                           ("transfer", {"target": "ccb", "reason": "x"})]:
        response = await person.post(f"/staff/complaints/{bank.tracking_no}/{action}", fields)
        assert response.status in (403, 404), action
    assert (await person.get("/staff/users")).status == 403
    assert (await person.post("/staff/users", {"username": "x1", "role": "regulator"})
            ).status == 403
    assert await data.rows(ConsumerMessage) == []
    assert (await data.get(Complaint, bank.id)).status == "received"


async def test_admins_see_everything_read_only_and_manage_accounts(browser, data):
    bank = await data.complaint("icbc")
    admin = await signed_in(browser, data, "root", "admin")
    assert bank.tracking_no in (await admin.get("/staff/")).body
    assert (await admin.act(bank.tracking_no, "claim")).status == 403
    page = await admin.get("/staff/users")
    assert page.status == 200 and "root" in page.body
    created = await admin.post("/staff/users", {"username": "CCB-Zhao", "role": "institution",
                                                "queue_id": "ccb", "display_name": "赵"})
    assert created.status == 200
    link = re.search(r"http://[^<\s]+/staff/invite/([A-Za-z0-9_-]+)", created.body)
    assert link, created.body
    newcomer = browser()
    await newcomer.get(f"/staff/invite/{link.group(1)}")
    assert (await newcomer.post(f"/staff/invite/{link.group(1)}",
                                {"password": PASSWORD, "password2": PASSWORD})).status == 303
    assert (await newcomer.login("ccb-zhao")).status == 303
    refused = await admin.post("/staff/users", {"username": "bad", "role": "institution"})
    assert refused.status == 400 and "队列" in refused.body
    duplicate = await admin.post("/staff/users", {"username": "ccb-zhao", "role": "regulator"})
    assert duplicate.status == 400
    user = (await data.rows(StaffUser, StaffUser.username == "ccb-zhao"))[0]
    await admin.get("/staff/users")
    assert (await admin.post(f"/staff/users/{user.id}/active", {"active": "0"})).status == 303
    assert (await newcomer.get("/staff/", allow_redirects=False)).status == 303
    assert (await admin.post(f"/staff/users/{admin.user.id}/active", {"active": "0"})
            ).status == 403
    assert (await admin.post("/staff/users/999/unlock")).status == 404
    audited = {e.action for e in await data.rows(AuditEntry, AuditEntry.user_id == admin.user.id)}
    assert {"user-created", "invite-issued", "user-deactivated"} <= audited


async def test_admins_manage_queue_channels_and_others_cannot(browser, data):
    admin = await signed_in(browser, data, "root", "admin")
    await admin.get("/staff/channels")
    webhook = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=secret-robot-key"
    assert (await admin.post("/staff/channels", {"queue_id": "icbc", "kind": "wecom",
                                                 "target": webhook})).status == 303
    assert (await admin.post("/staff/channels", {"queue_id": "icbc", "kind": "email",
                                                 "target": "kefu@icbc.example"})).status == 303
    for kind, target in [("telegram", "not a chat"), ("wecom", "https://example.org/hook"),
                         ("wecom", "http://qyapi.example/send?key=plain-http-key"),
                         ("email", "not-an-address"), ("sms", "13800001234")]:
        bad = await admin.post("/staff/channels", {"queue_id": "icbc", "kind": kind,
                                                   "target": target})
        assert bad.status == 400, (kind, target)
    assert (await admin.post("/staff/channels", {"queue_id": "nowhere", "kind": "email",
                                                 "target": "a@b.example"})).status == 400
    page = await admin.get("/staff/channels")
    assert "secret-robot-key" not in page.body and "kefu@icbc.example" in page.body
    rows = await data.rows(QueueChannel)
    assert [(r.queue_id, r.kind, r.active) for r in rows] == [("icbc", "wecom", True),
                                                              ("icbc", "email", True)]
    assert (await admin.post(f"/staff/channels/{rows[0].id}/active", {"active": "0"})
            ).status == 303
    assert (await data.get(QueueChannel, rows[0].id)).active is False
    staff = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    assert (await staff.get("/staff/channels")).status == 403
    await staff.get("/staff/")
    assert (await staff.post("/staff/channels", {"queue_id": "icbc", "kind": "email",
                                                 "target": "me@x.example"})).status == 403


async def test_navigation_is_role_aware(browser, data):
    admin = await signed_in(browser, data, "root", "admin")
    staff = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    assert 'href="/staff/users"' in (await admin.get("/staff/")).body
    assert 'href="/staff/users"' not in (await staff.get("/staff/")).body


# -- the queue page ------------------------------------------------------------------------
async def test_queue_shows_deadlines_flags_and_masked_phones_with_filters(browser, data):
    now = utcnow()
    overdue = await data.complaint("icbc", received=now - timedelta(days=20))
    soon = await data.complaint("icbc", received=now - timedelta(days=13), business="loan")
    risky = await data.complaint("icbc", risk=("扬言向媒体曝光",), agent=("代理维权机构",))
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    page = (await person.get("/staff/")).body

    def row(tracking_no: str) -> str:
        return re.search(rf'<tr class="([^"]*)"\s+data-tracking="{tracking_no}"', page).group(1)

    assert row(overdue.tracking_no) == "overdue"
    assert row(soon.tracking_no) == "due-soon"
    assert row(risky.tracking_no) == ""
    assert "已超期 5 天" in page and "剩 2 天" in page and "剩 15 天" in page
    assert "扬言向媒体曝光" in page and "代理维权机构" in page and "疑似代理投诉" in page
    assert "138****1234" in page and "13800001234" not in page
    assert "测试用户" not in page and "110101199003071234" not in page

    only_overdue = (await person.get("/staff/?overdue=1")).body
    assert overdue.tracking_no in only_overdue and soon.tracking_no not in only_overdue
    only_risk = (await person.get("/staff/?risk=yes")).body
    assert risky.tracking_no in only_risk and overdue.tracking_no not in only_risk
    no_risk = (await person.get("/staff/?risk=no")).body
    assert risky.tracking_no not in no_risk and soon.tracking_no in no_risk
    loans = (await person.get("/staff/?business=loan")).body
    assert soon.tracking_no in loans and overdue.tracking_no not in loans
    await person.act(soon.tracking_no, "claim")
    progressing = (await person.get("/staff/?status=in_progress")).body
    assert soon.tracking_no in progressing and risky.tracking_no not in progressing
    ignored = await person.get("/staff/?status=<script>&risk=maybe&business=x&page=-3")
    assert ignored.status == 200 and "<script>" not in ignored.body


async def test_dead_notifications_are_listed_within_the_users_scope(browser, data):
    own = await data.complaint("icbc")
    other = await data.complaint("ccb")
    await data.execute(update(Notification).where(Notification.complaint_id.in_(
        [own.id, other.id])).values(status="dead", attempts=8, last_error="HTTP 502 from robot"))
    icbc = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    page = (await icbc.get("/staff/")).body
    assert 'id="dead-notifications"' in page and "HTTP 502 from robot" in page
    dead_part = page.split('id="dead-notifications"')[1]
    assert own.tracking_no in dead_part and other.tracking_no not in dead_part
    regulator = await signed_in(browser, data, "cbirc", "regulator")
    everything = (await regulator.get("/staff/")).body.split('id="dead-notifications"')[1]
    assert own.tracking_no in everything and other.tracking_no in everything


# -- the complaint page and its actions ------------------------------------------------------
async def test_complaint_page_shows_the_record_and_audits_the_contact_view(browser, data):
    complaint = await data.complaint("icbc", risk=("扬言向媒体曝光",))
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    page = await person.get(f"/staff/complaints/{complaint.tracking_no}")
    assert page.status == 200
    for shown in ("13800001234", "测试用户", "110101199003071234", STORIES[0], "退还费用",
                  "扬言向媒体曝光", "银行卡", "收费与定价", "消费者提交投诉", "分派到队列"):
        assert shown in page.body, shown
    await person.get(f"/staff/complaints/{complaint.tracking_no}")
    views = await data.rows(AuditEntry, AuditEntry.action == "view-contact")
    assert len(views) == 2
    assert {(v.user_id, v.complaint_id) for v in views} == {(person.user.id, complaint.id)}
    history = await person.get(f"/staff/complaints/{complaint.tracking_no}/history")
    assert history.status == 200 and "13800001234" not in history.body
    assert len(await data.rows(AuditEntry, AuditEntry.action == "view-contact")) == 2


async def test_export_is_masked_and_audited(browser, data):
    complaint = await data.complaint("icbc")
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    response = await person.http.get(f"/staff/complaints/{complaint.tracking_no}/export")
    document = await response.json()
    assert response.status == 200 and "attachment" in response.headers["Content-Disposition"]
    assert response.headers["Cache-Control"] == "no-store"
    assert document["phone"] == "138****1234" and "name" not in document
    assert document["id_number"] == "110101********1234"
    assert [e["kind"] for e in document["history"]][:2] == ["received", "routed"]
    exports = await data.rows(AuditEntry, AuditEntry.action == "export")
    assert [(e.user_id, e.complaint_id) for e in exports] == [(person.user.id, complaint.id)]


async def test_every_action_is_an_event_with_who_and_when(browser, data):
    complaint = await data.complaint("icbc", user_id="tg-4242", channel="telegram")
    number = complaint.tracking_no
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    actor = f"staff:{person.user.id}"
    before = utcnow()

    assert (await person.act(number, "claim")).status == 303
    record = await data.get(Complaint, complaint.id)
    assert record.assigned_to == person.user.id and record.status == "in_progress"

    assert (await person.act(number, "reply", text="您好，我们已联系网点核实。")).status == 303
    messages = await data.rows(ConsumerMessage)
    assert [(m.channel, m.user_id) for m in messages] == [("telegram", "tg-4242")]
    assert "您好，我们已联系网点核实。" in messages[0].text and number in messages[0].text
    async with services_of(data.app).sessions() as session:
        replies = await staff_replies(session, record)
    assert [r.detail for r in replies] == [{"text": "您好，我们已联系网点核实。"}]

    assert (await person.act(number, "ask-info", text="请提供扣费短信截图")).status == 303
    assert (await data.get(Complaint, complaint.id)).status == "awaiting_info"
    assert "请提供扣费短信截图" in (await data.rows(ConsumerMessage))[-1].text

    assert (await person.act(number, "extend", reason="需要调取录音")).status == 303
    record = await data.get(Complaint, complaint.id)
    assert record.deadline_days == 30 and record.extension_reason == "需要调取录音"
    assert record.deadline_at == record.received_at + timedelta(days=30)

    assert (await person.act(number, "resolve", outcome="已退还年费300元")).status == 303
    record = await data.get(Complaint, complaint.id)
    assert record.status == "resolved" and record.outcome == "已退还年费300元"
    assert record.resolved_at is not None
    assert "已退还年费300元" in (await data.rows(ConsumerMessage))[-1].text

    events = [e for e in await data.rows(ComplaintEvent, ComplaintEvent.complaint_id ==
                                         complaint.id) if e.actor.startswith("staff:")]
    assert [e.kind for e in events] == ["claimed", "reply", "info-requested",
                                       "deadline-extended", "resolved"]
    assert {e.actor for e in events} == {actor}
    assert all(e.at.replace(tzinfo=UTC) >= before - timedelta(seconds=1) for e in events)
    page = await person.get(f"/staff/complaints/{number}")
    assert page.body.count("ICBC-WANG（staff:") == 5
    assert 'id="actions"' not in page.body  # closed: nothing left to do

    late = await person.post(f"/staff/complaints/{number}/reply", {"text": "再补充一句"})
    assert late.status == 400 and "办结" in late.body
    assert len(await data.rows(ConsumerMessage)) == 4


async def test_extension_goes_15_30_60_never_beyond_and_needs_a_reason(browser, data):
    complaint = await data.complaint("icbc")
    number = complaint.tracking_no
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    empty = await person.act(number, "extend", reason="   ")
    assert empty.status == 400 and "延期理由" in empty.body
    assert (await data.get(Complaint, complaint.id)).deadline_days == 15
    for days in (30, 60):
        assert (await person.act(number, "extend", reason=f"延到{days}日")).status == 303
        record = await data.get(Complaint, complaint.id)
        assert record.deadline_days == days
        assert record.deadline_at == record.received_at + timedelta(days=days)
    beyond = await person.act(number, "extend", reason="还要更久")
    assert beyond.status == 400 and "60" in beyond.body
    assert (await data.get(Complaint, complaint.id)).deadline_days == 60
    extensions = await data.rows(ComplaintEvent, ComplaintEvent.kind == "deadline-extended")
    assert [(e.detail["from_days"], e.detail["to_days"]) for e in extensions] == [(15, 30),
                                                                                 (30, 60)]


async def test_actions_refuse_empty_text(browser, data):
    complaint = await data.complaint("icbc")
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    for action, field in [("reply", "text"), ("ask-info", "text"), ("resolve", "outcome"),
                          ("transfer", "reason")]:
        response = await person.act(complaint.tracking_no, action, **{field: " ",
                                                                      "target": "ccb"})
        assert response.status == 400, action
    assert await data.rows(ConsumerMessage) == []
    assert (await data.get(Complaint, complaint.id)).status == "received"


async def test_transfer_moves_the_complaint_and_tells_the_new_queue(browser, data):
    complaint = await data.complaint("icbc")
    number = complaint.tracking_no
    icbc = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    ccb = await signed_in(browser, data, "ccb-zhao", "institution", "ccb")
    await icbc.act(number, "claim")
    response = await icbc.act(number, "transfer", target="ccb", reason="实际是建行的信用卡")
    assert response.status == 303
    record = await data.get(Complaint, complaint.id)
    assert (record.queue_id, record.institution_id, record.status) == ("ccb", "ccb",
                                                                       "transferred")
    assert record.assigned_to is None
    assert (await icbc.get(f"/staff/complaints/{number}")).status == 404
    assert number not in (await icbc.get("/staff/")).body
    assert number in (await ccb.get("/staff/")).body

    response = await ccb.act(number, "transfer", target="assoc-bank", reason="请协会调解")
    assert response.status == 303
    record = await data.get(Complaint, complaint.id)
    assert (record.queue_id, record.institution_id) == ("assoc-bank", "ccb")
    same = await ccb.act(number, "transfer", target="ccb", reason="x")
    assert same.status == 404  # no longer ccb's to move

    transfers = await data.rows(Notification, Notification.kind == "transferred")
    assert [n.queue_id for n in transfers] == ["ccb", "assoc-bank"]
    keys = {n.idempotency_key for n in await data.rows(Notification)}
    assert len(keys) == len(await data.rows(Notification))
    assert transfers[0].payload["tracking_no"] == number
    assert transfers[0].payload["phone"] == "138****1234"
    events = await data.rows(ComplaintEvent, ComplaintEvent.kind == "transferred")
    assert [(e.detail["from"], e.detail["to"], e.actor) for e in events] == [
        ("icbc", "ccb", f"staff:{icbc.user.id}"), ("ccb", "assoc-bank", f"staff:{ccb.user.id}")]


async def test_unknown_transfer_target_is_refused(browser, data):
    complaint = await data.complaint("icbc")
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    for target in ("", "nowhere", "icbc"):
        response = await person.act(complaint.tracking_no, "transfer", target=target,
                                    reason="试试")
        assert response.status == 400, target
    assert (await data.get(Complaint, complaint.id)).queue_id == "icbc"


async def test_no_personal_data_reaches_the_logs(browser, data, caplog):
    caplog.set_level(logging.INFO)  # drivers' DEBUG output is silenced by `xiaobao serve`
    caplog.set_level(logging.DEBUG, logger="bot")
    caplog.set_level(logging.DEBUG, logger="handlers")
    complaint = await data.complaint("icbc")
    person = await signed_in(browser, data, "icbc-wang", "institution", "icbc")
    await person.get(f"/staff/complaints/{complaint.tracking_no}")
    await person.act(complaint.tracking_no, "reply", text="请致电13900005678联系我们")
    await person.login("icbc-wang", "wrong-password-123")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in ("13800001234", "测试用户", "110101199003071234", "13900005678", PASSWORD,
                   "wrong-password-123"):
        assert secret not in logged


# -- the command line ----------------------------------------------------------------------
def xiaobao(*args: str, env: dict | None = None, cwd: Path = REPO):
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=120)


def test_staff_add_prints_a_one_time_link_and_validates_roles(tmp_path):
    env = {"XIAOBAO_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
           "XIAOBAO_STAFF_PUBLIC_URL": "https://xiaobao.example.org"}
    done = xiaobao("staff", "add", "icbc-wang", "--role", "institution", "--queue", "icbc",
                   "--name", "王经理", env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert re.search(r"https://xiaobao\.example\.org/staff/invite/[A-Za-z0-9_-]{40,}", out)
    assert "password" not in out.lower().replace("set a password", "")
    # Every wrong combination is covered above; here: the command's contract for them.
    for args in (["--role", "institution"], ["--role", "association", "--queue", "icbc"], []):
        failed = xiaobao("staff", "add", "someone", *args, env=env)
        assert failed.returncode == 2, args
        assert len(failed.stderr.decode().strip().splitlines()) == 1
        assert "Traceback" not in failed.stderr.decode()
    duplicate = xiaobao("staff", "add", "ICBC-Wang", "--role", "regulator", env=env)
    assert duplicate.returncode == 2
    assert xiaobao("staff", "add", "ins", "--role", "association", "--queue",
                   "assoc-insurance", env=env).returncode == 0
    again = xiaobao("staff", "invite", "icbc-wang", env=env)
    assert again.returncode == 0 and "/staff/invite/" in again.stdout.decode()
    assert xiaobao("staff", "invite", "nobody", env=env).returncode == 2


# -- hostile forms ---------------------------------------------------------------------------
form_values = st.one_of(
    st.text(max_size=120),
    st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=60),
    st.sampled_from(["", " ", "0", "-1", "1", "99999999999", "2026-13-45", "../../etc/passwd",
                     "<script>alert(1)</script>", "icbc", "ccb", "institution", "admin",
                     "wecom", "email", "🙂" * 40, "x" * 5000]),
)
FIELDS = ("text", "reason", "outcome", "notice", "target", "status", "business", "set",
          "next", "username", "role", "queue_id", "display_name", "kind", "active",
          "password", "days")
forms = st.dictionaries(st.one_of(st.sampled_from(FIELDS),  # names a client can send
                                  st.text(st.characters(categories=("L", "N", "P")),
                                          max_size=12)),
                        form_values, max_size=6)


@pytest.fixture
async def cast(browser, data) -> dict:
    """Who posts in the hostile-form test; Hypothesis sets it up once for all examples.
    The administrator's user-state forms aim at a spare account, so that no example signs
    the officer or the administrator out for the ones after it."""
    return {"officer": await signed_in(browser, data, "icbc-wang", "institution", "icbc"),
            "admin": await signed_in(browser, data, "root", "admin"),
            "association": await signed_in(browser, data, "bank-assoc", "association",
                                           "assoc-bank"),
            "anonymous": browser(),
            "spare": await data.staff("icbc-spare", "institution", "icbc"),
            "complaint": await data.complaint("icbc")}


posts = st.one_of(
    st.tuples(st.just("officer"),
              st.sampled_from([*(f"/staff/complaints/{{tn}}/{action}" for action in ACTIONS),
                               "/staff/complaints/BB-0000-ZZZZ/reply"])),
    st.tuples(st.just("admin"),
              st.sampled_from(["/staff/users", "/staff/users/{spare}/active",
                               "/staff/users/{spare}/unlock", "/staff/users/{spare}/invite",
                               "/staff/users/999999/active", "/staff/channels",
                               "/staff/channels/1/active", "/staff/channels/999999/active"])),
    st.tuples(st.just("association"), st.just("/staff/export")),
    st.tuples(st.just("anonymous"),
              st.sampled_from(["/staff/login", "/staff/invite/not-a-token",
                               "/staff/complaints/{tn}/reply"])),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(post=posts, form=forms)
async def test_any_form_gets_a_page_or_a_clear_refusal(cast, post, form):
    """Whatever a signed-in officer, administrator or association member, or a stranger,
    posts with a valid CSRF token to the dashboard's forms: a page, a redirect or a 4xx,
    never a 500."""
    who, path = post
    person = cast[who]
    path = path.format(tn=cast["complaint"].tracking_no, spare=cast["spare"].id)
    await person.get("/staff/login" if who == "anonymous" else "/staff/")  # a fresh token
    response = await person.post(path, form)
    event(f"{who}: {response.status}")  # --hypothesis-show-statistics shows the spread
    assert response.status in {200, 303, 400, 401, 403, 404, 409, 413, 429}, response.body[:500]


query_values = st.one_of(
    form_values, st.integers().map(str),
    st.sampled_from(["9" * 30, "-9" * 10, "٣", "1_000", "0x10", "2026", "4", "5", "yes", "no",
                     "bank", "life", "property", "2026-02-30", "2026-01-01", "//evil.example"]),
).filter(lambda value: not looks_personal(value))  # the access log shows query strings
QUERY_KEYS = ("status", "risk", "business", "page", "overdue", "year", "quarter", "next",
              "set", "from", "to", "sector", "format")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(who=st.sampled_from(["officer", "association", "admin", "anonymous"]),
       path=st.sampled_from(["/staff/", "/staff/complaints/{tn}", "/staff/complaints/{tn}/history",
                             "/staff/complaints/{tn}/export", "/staff/reports",
                             "/staff/reports.csv", "/staff/reports.json", "/staff/risk",
                             "/staff/export", "/staff/curation", "/staff/users",
                             "/staff/channels", "/staff/login"]),
       query=st.dictionaries(st.sampled_from(QUERY_KEYS), query_values, max_size=4))
@example(who="officer", path="/staff/", query={"page": "200000000000000000"})  # was a 500
async def test_any_query_string_gets_a_page_or_a_clear_refusal(cast, who, path, query):
    """Filters, pages and periods come from the address bar, where anything can be typed."""
    person = cast[who]
    response = await person.get(path.format(tn=cast["complaint"].tracking_no), params=query,
                                allow_redirects=False)
    event(f"{who}: {response.status}")
    assert response.status in {200, 303, 400, 403, 404}, response.body[:500]


async def test_first_admin_token_only_until_an_admin_can_sign_in(data, server):
    accounts = accounts_of(server.app)
    sessions = services_of(server.app).sessions
    async with sessions() as session, session.begin():
        first = await accounts.first_admin_token(session)
    async with sessions() as session, session.begin():
        second = await accounts.first_admin_token(session)  # link lost: a new one
    assert first and second and first != second
    admins = await data.rows(StaffUser, StaffUser.role == "admin")
    assert [(a.username, a.password_hash) for a in admins] == [("admin", None)]
    async with sessions() as session, session.begin():
        assert await accounts.invited_user(session, first) is None
        await accounts.accept_invite(session, second, PASSWORD)
    async with sessions() as session, session.begin():
        assert await accounts.first_admin_token(session) is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_serve_prints_the_first_admin_link_on_a_fresh_install(tmp_path):
    port = _free_port()
    env = {**os.environ, "XIAOBAO_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
           "XIAOBAO_HTTP_PORT": str(port),
           "XIAOBAO_KNOWLEDGE_CACHE_DIR": str(REPO / "var" / "cache")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "serve", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        lines: list[str] = []

        async def until_link() -> str:
            while True:
                line = (await process.stdout.readline()).decode()
                assert line, f"serve ended early: {lines}"
                lines.append(line)
                found = re.search(r"http://127\.0\.0\.1:\d+/staff/invite/\S+", line)
                if found:
                    return found.group(0)

        link = await asyncio.wait_for(until_link(), timeout=120)
        assert f":{port}/" in link
        assert not any("password:" in line.lower() for line in lines)
        async with aiohttp.ClientSession() as http:
            for _ in range(60):  # the link is printed at start-up, just before listening
                try:
                    response = await http.get(link)
                    break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.5)
            assert response.status == 200 and "admin" in await response.text()
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
