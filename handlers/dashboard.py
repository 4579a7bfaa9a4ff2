"""Staff dashboard at /staff/: sign-in, the queue, complaint pages, actions, administration.

Only HTTP lives here: forms are read, the domain modules (`bot.staff_accounts`,
`bot.staff_access`, `bot.staff_queue`, `bot.staff_actions`, `bot.staff_channels`) are
called in one transaction per request, and Jinja2 renders the page.  Three rules hold for
every route of the sub-application, because a middleware enforces them rather than each
view:

- no session, no page (deny by default; only sign-in, invite links and static files are
  public);
- every POST carries the CSRF token of its session (or, before sign-in, of its form
  cookie), else 403;
- records are looked up through the user's scope, so another queue's complaint is 404.

Report pages and other later views plug in with `add_page` and extend
`staff/base.html`, which draws the role-aware navigation.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot import staff_access as access
from bot import staff_actions as actions
from bot import staff_channels as channels
from bot import staff_queue as queue
from bot.codes import ComplaintCodes
from bot.complaint_dialogue import SHANGHAI
from bot.complaint_records import RELATIONSHIPS, STATUS_NAMES
from bot.config import Config
from bot.limits import limits_of, retry_after
from bot.models import StaffUser, as_utc, utcnow
from bot.services import SERVICES, Services
from bot.staff_accounts import (
    ROLE_NAMES,
    ROLES,
    AccountError,
    LoginRefused,
    StaffAccounts,
    invite_link,
)
from classifiers.institutions import Directory

log = logging.getLogger(__name__)

PREFIX = "/staff"
TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "dashboard_static"
SESSION_COOKIE = "xiaobao_staff"
FORM_COOKIE = "xiaobao_staff_form"
CSRF_FIELD = "csrf_token"
PUBLIC_ROUTES = frozenset({"staff-login", "staff-login-post", "staff-invite",
                           "staff-invite-post", "staff-static"})
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Invite tokens live in URLs: never hand them on to another site.
    "Referrer-Policy": "no-referrer",
}
ALL_ROLES = frozenset(ROLES)
ACTIONS = ("claim", "reply", "ask-info", "extend", "resolve", "transfer")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class NavItem:
    """A link of the dashboard's navigation, shown only to the roles listed."""

    label: str
    path: str
    roles: frozenset[str]


@dataclass(frozen=True)
class StaffContext:
    """The signed-in user of a request, with what they may see and do."""

    user_id: int
    username: str
    display_name: str
    role: str
    queue_id: str | None
    csrf_token: str
    scope: access.Scope

    @property
    def role_name(self) -> str:
        """The role as the page names it."""
        return ROLE_NAMES.get(self.role, self.role)


@dataclass
class Dashboard:
    """The dashboard's long-lived parts: accounts policy, codes and the navigation."""

    config: Config
    accounts: StaffAccounts
    codes: ComplaintCodes
    nav: list[NavItem] = field(default_factory=list)

    def nav_for(self, role: str) -> list[NavItem]:
        """The navigation a role sees."""
        return [item for item in self.nav if role in item.roles]


DASHBOARD = web.AppKey("dashboard", Dashboard)
DASHBOARD_APP = web.AppKey("dashboard_app", web.Application)
TEMPLATES = web.AppKey("dashboard_templates", jinja2.Environment)
STAFF = web.RequestKey("staff", StaffContext)


# -- helpers -------------------------------------------------------------------------------
def _services(request: web.Request) -> Services:
    return request.config_dict[SERVICES]


def _dashboard(request: web.Request) -> Dashboard:
    return request.config_dict[DASHBOARD]


def _directory(request: web.Request) -> Directory:
    return _services(request).triage.directory


def staff(request: web.Request) -> StaffContext:
    """The signed-in user (the middleware guarantees one on every non-public route)."""
    return request[STAFF]


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f"{as_utc(moment).astimezone(SHANGHAI):%Y-%m-%d %H:%M}"


def _day(moment: datetime | None) -> str:
    return "" if moment is None else f"{as_utc(moment).astimezone(SHANGHAI):%Y-%m-%d}"


def _secure_cookies(request: web.Request) -> bool:
    staff_config = _dashboard(request).config.staff
    if staff_config.secure_cookies == "always":
        return True
    if staff_config.secure_cookies == "never":
        return False
    return request.secure or staff_config.public_url.startswith("https://")


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
                max_age: int | None = None) -> None:
    response.set_cookie(name, value, path=PREFIX, httponly=True, samesite="Strict",
                        secure=_secure_cookies(request), max_age=max_age)


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard may follow a sign-in (no open redirect)."""
    if (target and target.isprintable() and target.startswith(PREFIX + "/")
            and "//" not in target and "\\" not in target):
        return target
    return PREFIX + "/"


def _redirect(location: str) -> web.Response:
    """A 303 that can carry cookies (after a POST, the browser GETs the new page)."""
    return web.Response(status=303, headers={"Location": location})


def _form_text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


async def render(request: web.Request, template: str, context: dict[str, Any] | None = None,
                 status: int = 200) -> web.Response:
    """Render a dashboard template with the user, navigation and CSRF token filled in."""
    signed_in = request.get(STAFF)
    base: dict[str, Any] = {
        "staff": signed_in,
        "nav": _dashboard(request).nav_for(signed_in.role) if signed_in else [],
        "csrf_token": signed_in.csrf_token if signed_in else "",
        "prefix": PREFIX,
        "path": request.path,
        "service_name": _services(request).config.chat.service_name,
        "name_of": lambda queue_id: queue.queue_name(_directory(request), queue_id, "—"),
        "error": None,
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **(context or {})},
                                          app_key=TEMPLATES, status=status)


# -- middleware and signals ----------------------------------------------------------------
async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every dashboard response: strict CSP, no framing, no referrer, no cached pages."""
    if request.path != PREFIX and not request.path.startswith(PREFIX + "/"):
        return
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith(f"{PREFIX}/static/"):
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Out-of-scope records are 404 and read-only users get 403, as dashboard pages."""
    try:
        return await handler(request)
    except access.NotVisible:
        return await render(request, "staff/error.html",
                            {"title": "找不到这件投诉", "status": 404}, status=404)
    except access.ReadOnly:
        return await render(request, "staff/error.html",
                            {"title": "您的账号只能查看，不能办理", "status": 403}, status=403)
    except web.HTTPNotFound:
        return await render(request, "staff/error.html",
                            {"title": "页面不存在", "status": 404}, status=404)
    except web.HTTPForbidden as error:
        return await render(request, "staff/error.html",
                            {"title": error.text or "没有权限", "status": 403}, status=403)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Deny by default: a live session for every page, a CSRF token for every POST."""
    if request.match_info.route.name in PUBLIC_ROUTES:
        if request.method == "POST":
            form = await request.post()
            cookie = request.cookies.get(FORM_COOKIE, "")
            if not cookie or not hmac.compare_digest(_form_text(form, CSRF_FIELD), cookie):
                raise web.HTTPForbidden(text="表单已过期，请刷新页面后重试")
        return await handler(request)
    services = _services(request)
    async with services.sessions() as session, session.begin():
        signed_in = await _dashboard(request).accounts.resume(
            session, request.cookies.get(SESSION_COOKIE))
    if signed_in is None:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther(f"{PREFIX}/login?next={quote(request.path_qs)}")
        raise web.HTTPForbidden(text="请先登录")
    user = signed_in.user
    request[STAFF] = StaffContext(
        user_id=user.id, username=user.username, display_name=user.display_name,
        role=user.role, queue_id=user.queue_id, csrf_token=signed_in.session.csrf_token,
        scope=access.scope_for(user, services.triage.directory))
    if request.method == "POST":
        form = await request.post()
        if not hmac.compare_digest(_form_text(form, CSRF_FIELD), signed_in.session.csrf_token):
            raise web.HTTPForbidden(text="表单已过期，请刷新页面后重试")
    return await handler(request)


# -- signing in and out --------------------------------------------------------------------
def _form_token(request: web.Request) -> tuple[str, bool]:
    token = request.cookies.get(FORM_COOKIE)
    return (token, False) if token else (secrets.token_urlsafe(32), True)


async def _public_page(request: web.Request, template: str, context: dict[str, Any],
                       status: int = 200) -> web.Response:
    token, new = _form_token(request)
    response = await render(request, template, {**context, "csrf_token": token}, status)
    if new:
        _set_cookie(request, response, FORM_COOKIE, token)
    return response


async def login_page(request: web.Request) -> web.StreamResponse:
    """GET /staff/login: the sign-in form."""
    return await _public_page(request, "staff/login.html", {
        "next": _safe_next(request.query.get("next")),
        "notice": "密码已设置，请登录。" if request.query.get("set") == "1" else None,
    })


async def _login_throttled(request: web.Request,
                           form: Mapping[str, Any]) -> web.StreamResponse | None:
    """The friendly 429 page when this address or username tries too often, else None."""
    limits = limits_of(request)
    username = _form_text(form, "username").strip().lower()[:64]
    wait = limits.check((limits.login_address, limits.address(request)),
                        (limits.login_username, username))
    if not wait:
        return None
    minutes = max(1, math.ceil(wait / 60))
    response = await _public_page(request, "staff/login.html", {
        "next": _safe_next(_form_text(form, "next")), "notice": None,
        "error": f"登录尝试过于频繁，请 {minutes} 分钟后再试。",
        "username": _form_text(form, "username")[:64],
    }, status=429)
    response.headers["Retry-After"] = retry_after(wait)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """POST /staff/login: check the password (counting failures), open a session."""
    form = await request.post()
    throttled = await _login_throttled(request, form)
    if throttled is not None:
        return throttled
    dashboard = _dashboard(request)
    user: StaffUser | None = None
    async with _services(request).sessions() as session, session.begin():
        try:
            user = await dashboard.accounts.authenticate(
                session, _form_text(form, "username"), _form_text(form, "password"))
        except LoginRefused:
            user = None
        token = None
        if user is not None:
            await dashboard.accounts.purge_expired(session)
            token, _ = await dashboard.accounts.open_session(session, user)
    if user is None or token is None:
        return await _public_page(request, "staff/login.html", {
            "next": _safe_next(_form_text(form, "next")), "notice": None,
            "error": "用户名或密码不正确，或账号因多次输错已被暂时锁定。",
            "username": _form_text(form, "username")[:64],
        }, status=401)
    response = _redirect(_safe_next(_form_text(form, "next")))
    _set_cookie(request, response, SESSION_COOKIE, token,
                max_age=dashboard.config.staff.session_hours * 3600)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /staff/logout: end the session everywhere it could be replayed."""
    async with _services(request).sessions() as session, session.begin():
        await _dashboard(request).accounts.close_session(
            session, request.cookies.get(SESSION_COOKIE))
    response = _redirect(f"{PREFIX}/login")
    response.del_cookie(SESSION_COOKIE, path=PREFIX)
    return response


async def invite_page(request: web.Request) -> web.StreamResponse:
    """GET /staff/invite/{token}: the set-password form of a one-time link."""
    async with _services(request).sessions() as session:
        user = await _dashboard(request).accounts.invited_user(
            session, request.match_info["token"])
    if user is None:
        return await render(request, "staff/error.html", {
            "title": "这个链接已失效", "status": 404,
            "detail": "设置密码的链接只能使用一次，并有有效期。请向管理员索取新的链接。"},
            status=404)
    return await _public_page(request, "staff/invite.html", {"username": user.username})


async def accept_invite(request: web.Request) -> web.StreamResponse:
    """POST /staff/invite/{token}: set the password, then sign in with it."""
    form = await request.post()
    password = _form_text(form, "password")
    error = None
    username = ""
    if password != _form_text(form, "password2"):
        error = "两次输入的密码不一致"
    else:
        try:
            async with _services(request).sessions() as session, session.begin():
                await _dashboard(request).accounts.accept_invite(
                    session, request.match_info["token"], password)
        except AccountError as refused:
            error = str(refused)
    if error is None:
        raise web.HTTPSeeOther(f"{PREFIX}/login?set=1")
    async with _services(request).sessions() as session:
        user = await _dashboard(request).accounts.invited_user(
            session, request.match_info["token"])
        username = user.username if user else ""
    return await _public_page(request, "staff/invite.html",
                              {"username": username, "error": error}, status=400)


# -- queue and complaints ------------------------------------------------------------------
def _queue_filter(query: Mapping[str, str], codes: ComplaintCodes) -> queue.QueueFilter:
    """The filters of the queue page's query string; unknown values are ignored."""
    status = query.get("status")
    risk = {"yes": True, "no": False}.get(query.get("risk", ""))
    business = query.get("business")
    try:
        page = min(max(1, int(query.get("page", "1"))), queue.MAX_PAGE)
    except ValueError:
        page = 1
    return queue.QueueFilter(
        status=status if status in STATUS_NAMES else None, risk=risk,
        overdue=query.get("overdue") == "1",
        business=business if business in codes.business else None, page=page)


async def queue_view(request: web.Request) -> web.StreamResponse:
    """GET /staff/: the user's queue with filters, deadlines and flags; dead notifications."""
    user = staff(request)
    dashboard = _dashboard(request)
    directory = _directory(request)
    chosen = _queue_filter(request.query, dashboard.codes)
    async with _services(request).sessions() as session:
        rows, total = await queue.queue_page(session, user.scope, chosen, directory,
                                             dashboard.codes)
        dead = await queue.dead_notifications(session, user.scope, directory)
    return await render(request, "staff/queue.html", {
        "rows": rows, "total": total, "filter": chosen, "dead": dead,
        "pages": queue.page_count(total), "statuses": queue.STATUS_LABELS,
        "businesses": dashboard.codes.business, "when": _when, "day": _day,
        "queue_names": _queue_names(directory, user.scope),
        "due_soon_days": queue.DUE_SOON_DAYS,
    })


def _queue_names(directory: Directory, scope: access.Scope) -> list[str]:
    if scope.queues is None:
        return []
    return sorted(directory.get(q).name if directory.get(q) else q for q in scope.queues)


async def _complaint_page(request: web.Request, error: str | None = None,
                          status: int = 200) -> web.Response:
    user = staff(request)
    dashboard = _dashboard(request)
    directory = _directory(request)
    now = utcnow()
    async with _services(request).sessions() as session, session.begin():
        complaint = await access.visible_complaint(session, user.scope,
                                                   request.match_info["tracking_no"])
        events = await queue.history(session, complaint)
        assigned = await queue.staff_names(
            session, {complaint.assigned_to} if complaint.assigned_to else set())
        queue.record_contact_view(session, complaint, user.user_id, now)
    institution = directory.get(complaint.institution_id or "")
    open_ = complaint.status not in actions.CLOSED
    return await render(request, "staff/complaint.html", {
        "c": complaint, "contact": queue.contact(complaint), "history": events,
        "queue_name": queue.queue_name(directory, complaint.queue_id),
        "institution_name": institution.name if institution else "（未指明机构）",
        "sector_name": dashboard.codes.sector_name(complaint.sector),
        "business_name": dashboard.codes.business_name(complaint.business),
        "cause_name": dashboard.codes.cause_name(complaint.cause),
        "relationship": RELATIONSHIPS.get(complaint.relationship, complaint.relationship),
        "status_name": queue.status_label(complaint.status),
        "assigned_name": assigned.get(complaint.assigned_to or 0),
        "days_left": queue.days_left(complaint.deadline_at, now) if open_ else None,
        "overdue": queue.is_overdue(complaint, now),
        "due_soon_days": queue.DUE_SOON_DAYS,
        "can_act": user.scope.can_act and open_,
        "next_days": actions.next_deadline_days(complaint.deadline_days),
        "targets": access.transfer_targets(directory, complaint),
        "when": _when, "day": _day, "error": error,
    }, status=status)


async def complaint_view(request: web.Request) -> web.StreamResponse:
    """GET /staff/complaints/{tracking_no}: the whole record; the contact view is audited."""
    return await _complaint_page(request)


async def history_view(request: web.Request) -> web.StreamResponse:
    """GET /staff/complaints/{tracking_no}/history: the history alone (printable)."""
    user = staff(request)
    async with _services(request).sessions() as session:
        complaint = await access.visible_complaint(session, user.scope,
                                                   request.match_info["tracking_no"])
        events = await queue.history(session, complaint)
    return await render(request, "staff/history.html",
                        {"c": complaint, "history": events, "when": _when})


async def export_view(request: web.Request) -> web.StreamResponse:
    """GET /staff/complaints/{tracking_no}/export: the record as JSON (masked, audited)."""
    user = staff(request)
    async with _services(request).sessions() as session, session.begin():
        complaint = await access.visible_complaint(session, user.scope,
                                                   request.match_info["tracking_no"])
        document = await queue.export_record(session, complaint, user.user_id,
                                             _directory(request))
    return web.json_response(
        document, dumps=lambda obj: json.dumps(obj, ensure_ascii=False, indent=2),
        headers={"Content-Disposition":
                 f'attachment; filename="{complaint.tracking_no}.json"'})


async def _perform(request: web.Request, session: AsyncSession, action: str,
                   form: Mapping[str, Any]) -> None:
    user = staff(request)
    complaint = await access.actionable_complaint(session, user.scope,
                                                  request.match_info["tracking_no"])
    who = user.user_id
    if action == "claim":
        await actions.claim(session, complaint, who)
    elif action == "reply":
        await actions.reply(session, complaint, who, form.get("text"))
    elif action == "ask-info":
        await actions.ask_info(session, complaint, who, form.get("text"))
    elif action == "extend":
        await actions.extend(session, complaint, who, form.get("reason"))
    elif action == "resolve":
        await actions.resolve(session, complaint, who, form.get("outcome"))
    else:
        await actions.transfer(session, complaint, who, form.get("target"), form.get("reason"),
                               _directory(request),
                               _services(request).config.complaints.dashboard_url)


async def complaint_action(request: web.Request) -> web.StreamResponse:
    """POST /staff/complaints/{tracking_no}/{action}: one action, one history event."""
    action = request.match_info["action"]
    form = await request.post()
    try:
        async with _services(request).sessions() as session, session.begin():
            await _perform(request, session, action, form)
    except actions.ActionError as error:
        return await _complaint_page(request, error=str(error), status=400)
    tracking_no = request.match_info["tracking_no"]
    raise web.HTTPSeeOther(f"{PREFIX}/complaints/{quote(tracking_no)}")


# -- administration ------------------------------------------------------------------------
def _admin(request: web.Request) -> StaffContext:
    user = staff(request)
    if not user.scope.can_admin:
        raise web.HTTPForbidden(text="只有系统管理员可以管理账号和通知渠道")
    return user


def _queues(directory: Directory) -> list[tuple[str, str]]:
    return [(i.id, i.name) for i in directory.institutions.values()]


async def _users_page(request: web.Request, context: dict[str, Any] | None = None,
                      status: int = 200) -> web.Response:
    directory = _directory(request)
    now = utcnow()
    async with _services(request).sessions() as session:
        users = await _dashboard(request).accounts.users(session)
    return await render(request, "staff/users.html", {
        "users": users, "roles": ROLE_NAMES, "queues": _queues(directory),
        "queue_name": lambda q: queue.queue_name(directory, q, "—"),
        "locked": lambda u: u.locked_until is not None and as_utc(u.locked_until) > now,
        "when": _when, "new_link": None, "link_user": None, "form": {},
        **(context or {}),
    }, status=status)


async def users_view(request: web.Request) -> web.StreamResponse:
    """GET /staff/users: accounts (administrators only)."""
    _admin(request)
    return await _users_page(request)


async def create_user(request: web.Request) -> web.StreamResponse:
    """POST /staff/users: add an account and show its one-time set-password link once."""
    admin = _admin(request)
    form = await request.post()
    dashboard = _dashboard(request)
    try:
        async with _services(request).sessions() as session, session.begin():
            user = await dashboard.accounts.create_user(
                session, _directory(request), _form_text(form, "username"),
                _form_text(form, "role"), _form_text(form, "queue_id") or None,
                _form_text(form, "display_name"), created_by=admin.user_id)
            token = await dashboard.accounts.issue_invite(session, user, by=admin.user_id)
    except AccountError as error:
        return await _users_page(request, {"error": str(error), "form": dict(form)}, 400)
    return await _users_page(request, {
        "new_link": _invite_link(request, token), "link_user": user.username})


def _invite_link(request: web.Request, token: str) -> str:
    config = _dashboard(request).config
    return invite_link(config.staff.base_url(config.http), token)


async def _target_user(request: web.Request, session: AsyncSession) -> StaffUser:
    try:
        user_id = int(request.match_info["user_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    user = await session.get(StaffUser, user_id)
    if user is None:
        raise web.HTTPNotFound()
    return user


async def reinvite_user(request: web.Request) -> web.StreamResponse:
    """POST /staff/users/{user_id}/invite: a new one-time link (forgotten password)."""
    admin = _admin(request)
    async with _services(request).sessions() as session, session.begin():
        user = await _target_user(request, session)
        token = await _dashboard(request).accounts.issue_invite(session, user,
                                                                by=admin.user_id)
    return await _users_page(request, {
        "new_link": _invite_link(request, token), "link_user": user.username})


async def user_active(request: web.Request) -> web.StreamResponse:
    """POST /staff/users/{user_id}/active: switch an account on or off (not one's own)."""
    admin = _admin(request)
    form = await request.post()
    async with _services(request).sessions() as session, session.begin():
        user = await _target_user(request, session)
        if user.id == admin.user_id:
            raise web.HTTPForbidden(text="不能停用自己的账号")
        await _dashboard(request).accounts.set_active(
            session, user, _form_text(form, "active") == "1", by=admin.user_id)
    raise web.HTTPSeeOther(f"{PREFIX}/users")


async def user_unlock(request: web.Request) -> web.StreamResponse:
    """POST /staff/users/{user_id}/unlock: lift a lock-out now."""
    admin = _admin(request)
    async with _services(request).sessions() as session, session.begin():
        user = await _target_user(request, session)
        await _dashboard(request).accounts.unlock(session, user, by=admin.user_id)
    raise web.HTTPSeeOther(f"{PREFIX}/users")


async def _channels_page(request: web.Request, context: dict[str, Any] | None = None,
                         status: int = 200) -> web.Response:
    directory = _directory(request)
    async with _services(request).sessions() as session:
        rows = await channels.channels(session)
    return await render(request, "staff/channels.html", {
        "channels": rows, "kinds": channels.CHANNEL_KINDS, "queues": _queues(directory),
        "queue_name": lambda q: queue.queue_name(directory, q, "—"),
        "masked": channels.masked_target, "when": _when, "form": {}, **(context or {}),
    }, status=status)


async def channels_view(request: web.Request) -> web.StreamResponse:
    """GET /staff/channels: where each queue's notifications go (administrators only)."""
    _admin(request)
    return await _channels_page(request)


async def create_channel(request: web.Request) -> web.StreamResponse:
    """POST /staff/channels: add a WeCom robot, Telegram chat or e-mail to a queue."""
    admin = _admin(request)
    form = await request.post()
    try:
        async with _services(request).sessions() as session, session.begin():
            await channels.add_channel(session, _directory(request),
                                       _form_text(form, "queue_id"), _form_text(form, "kind"),
                                       _form_text(form, "target"), by=admin.user_id)
    except AccountError as error:
        return await _channels_page(request, {"error": str(error), "form": dict(form)}, 400)
    raise web.HTTPSeeOther(f"{PREFIX}/channels")


async def channel_active(request: web.Request) -> web.StreamResponse:
    """POST /staff/channels/{channel_id}/active: pause or resume a channel."""
    admin = _admin(request)
    form = await request.post()
    try:
        channel_id = int(request.match_info["channel_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    async with _services(request).sessions() as session, session.begin():
        found = await channels.set_channel_active(
            session, channel_id, _form_text(form, "active") == "1", by=admin.user_id)
    if found is None:
        raise web.HTTPNotFound()
    raise web.HTTPSeeOther(f"{PREFIX}/channels")


async def to_dashboard(request: web.Request) -> web.StreamResponse:
    """GET /staff: the dashboard lives at /staff/."""
    raise web.HTTPMovedPermanently(PREFIX + "/")


# -- wiring --------------------------------------------------------------------------------
def add_page(app: web.Application, path: str, handler: Handler, label: str | None = None,
             roles: frozenset[str] = ALL_ROLES, name: str | None = None,
             method: str = "GET") -> None:
    """Let another module add a signed-in page (e.g. reports) and its navigation link.

    `path` is relative to /staff; the guard, security headers and `render` apply to it
    like to every dashboard page, and users of other roles get 404 (the page does not
    exist for them).  Call from an extension passed to `setup`, before it mounts the
    dashboard.
    """
    dashboard_app = app[DASHBOARD_APP]
    allowed = frozenset(roles)

    async def gated(request: web.Request) -> web.StreamResponse:
        """Another role's page is answered like a page that does not exist."""
        if staff(request).role not in allowed:
            raise web.HTTPNotFound()
        return await handler(request)

    if method == "GET":
        dashboard_app.router.add_get(path, gated, name=name)
    else:
        dashboard_app.router.add_route(method, path, gated, name=name)
    if label is not None:
        dashboard_app[DASHBOARD].nav.append(NavItem(label, path, frozenset(roles)))


def setup(app: web.Application, config: Config,
          extensions: Sequence[Callable[[web.Application], None]] = ()) -> web.Application:
    """Mount the dashboard on the service's application at /staff/ and return it.

    Each extension is called with `app` before the dashboard is mounted, to `add_page`
    (aiohttp freezes a sub-application's router when it is mounted).
    """
    dashboard_app = web.Application(middlewares=[error_pages, guard])
    dashboard_app[DASHBOARD] = Dashboard(
        config=config, accounts=StaffAccounts(config.staff), codes=ComplaintCodes.load(),
        nav=[NavItem("投诉队列", "/", ALL_ROLES),
             NavItem("账号管理", "/users", frozenset({"admin"})),
             NavItem("通知渠道", "/channels", frozenset({"admin"}))])
    aiohttp_jinja2.setup(dashboard_app, app_key=TEMPLATES,
                         loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                         autoescape=True, undefined=jinja2.StrictUndefined)
    router = dashboard_app.router
    router.add_get("/login", login_page, name="staff-login")
    router.add_post("/login", login, name="staff-login-post")
    router.add_post("/logout", logout, name="staff-logout")
    router.add_get("/invite/{token}", invite_page, name="staff-invite")
    router.add_post("/invite/{token}", accept_invite, name="staff-invite-post")
    router.add_get("/", queue_view, name="staff-queue")
    router.add_get("/complaints/{tracking_no}", complaint_view, name="staff-complaint")
    router.add_get("/complaints/{tracking_no}/history", history_view, name="staff-history")
    router.add_get("/complaints/{tracking_no}/export", export_view, name="staff-export")
    router.add_post("/complaints/{tracking_no}/{action:" + "|".join(ACTIONS) + "}",
                    complaint_action, name="staff-action")
    router.add_get("/users", users_view, name="staff-users")
    router.add_post("/users", create_user, name="staff-users-create")
    router.add_post("/users/{user_id}/invite", reinvite_user, name="staff-user-invite")
    router.add_post("/users/{user_id}/active", user_active, name="staff-user-active")
    router.add_post("/users/{user_id}/unlock", user_unlock, name="staff-user-unlock")
    router.add_get("/channels", channels_view, name="staff-channels")
    router.add_post("/channels", create_channel, name="staff-channels-create")
    router.add_post("/channels/{channel_id}/active", channel_active,
                    name="staff-channel-active")
    router.add_static("/static/", STATIC_DIR, name="staff-static", show_index=False)
    app[DASHBOARD_APP] = dashboard_app
    for extend in extensions:
        extend(app)
    app.router.add_get(PREFIX, to_dashboard)
    app.add_subapp(PREFIX, dashboard_app)
    app.on_response_prepare.append(_security_headers)
    return dashboard_app
