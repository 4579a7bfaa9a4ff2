"""Staff accounts: who may sign in to the dashboard, and how.

Passwords are hashed with Argon2 (argon2-cffi, the maintained binding of the reference
implementation: salts, parameters and constant-time checks are its job, never ours).
Nobody is ever given a password: a new account gets a one-time link to set its own.  The
browser holds a random session token; the database keeps only its SHA-256, so a leaked
table signs nobody in.  Repeated wrong passwords lock an account for a while, and a
locked account refuses even the right password until then.

Functions take the caller's session and never commit.  Hashing is CPU-heavy, so it runs
off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import StaffConfig
from bot.models import AuditEntry, StaffInvite, StaffSession, StaffUser, as_utc, utcnow
from classifiers.institutions import Directory

ROLES = ("institution", "association", "regulator", "admin")
ROLE_NAMES = {
    "institution": "机构工作人员", "association": "行业协会", "regulator": "监管（只读）",
    "admin": "系统管理员",
}
FIRST_ADMIN = "admin"
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 256
MAX_DISPLAY_NAME = 64
INVITE_PATH = "/staff/invite/"


class AccountError(ValueError):
    """A request about an account that cannot be honoured, phrased for the person asking."""


class LoginRefused(Exception):
    """Wrong name, wrong password, locked or inactive: deliberately one message for all."""


@dataclass(frozen=True)
class SignedIn:
    """A resumed session: the browser's row and its user."""

    session: StaffSession
    user: StaffUser


def token_hash(token: str) -> str:
    """What the database keeps of a cookie or link token (never the token itself)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def invite_link(base_url: str, token: str) -> str:
    """The one-time set-password address to hand to the new user."""
    return f"{base_url.rstrip('/')}{INVITE_PATH}{token}"


def check_role(directory: Directory, role: str, queue_id: str | None) -> str | None:
    """The queue a role works, validated against the directory (raises AccountError)."""
    queue_id = (queue_id or "").strip() or None
    if role not in ROLES:
        raise AccountError(f"未知角色 {role!r}（可选：{', '.join(ROLES)}）")
    queue = directory.get(queue_id) if queue_id else None
    if role == "institution":
        if queue is None or queue.is_association:
            raise AccountError("机构工作人员需要指定本机构的队列编号（如 icbc）")
        return queue.id
    if role == "association":
        if queue is None or not queue.is_association:
            raise AccountError("行业协会账号需要指定 assoc-bank 或 assoc-insurance")
        return queue.id
    if queue_id:
        raise AccountError("监管和管理员账号不属于任何队列，请不要指定队列")
    return None


def check_password(password: str, username: str) -> None:
    """Refuse passwords too short to resist guessing, or the username itself."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"密码至少需要 {MIN_PASSWORD_CHARS} 个字符")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError(f"密码最多 {MAX_PASSWORD_CHARS} 个字符")
    if username.lower() in password.lower():
        raise AccountError("密码不能包含用户名")


def audit(session: AsyncSession, action: str, user_id: int | None,
          complaint_id: int | None = None, detail: dict[str, Any] | None = None,
          now: datetime | None = None) -> None:
    """Record who did or saw what (the audit log is append-only)."""
    session.add(AuditEntry(at=now or utcnow(), user_id=user_id, action=action,
                           complaint_id=complaint_id, detail=detail or {}))


class StaffAccounts:
    """Accounts, invites, sign-in and sessions under the [staff] policy."""

    def __init__(self, policy: StaffConfig, hasher: PasswordHasher | None = None) -> None:
        self.policy = policy
        self.hasher = hasher or PasswordHasher()
        # Unknown usernames are checked against this, so they cost as long as known ones.
        self._decoy = self.hasher.hash(secrets.token_urlsafe(16))

    # -- accounts ------------------------------------------------------------------------
    async def create_user(self, session: AsyncSession, directory: Directory, username: str,
                          role: str, queue_id: str | None = None,
                          display_name: str | None = None,
                          created_by: int | None = None) -> StaffUser:
        """Add an account without a password (it gets one through an invite link)."""
        username = username.strip().lower()
        if not USERNAME.match(username):
            raise AccountError("用户名为 2-64 个小写字母、数字、点、横线或下划线，以字母或数字开头")
        queue = check_role(directory, role, queue_id)
        name = (display_name or "").strip() or username
        if len(name) > MAX_DISPLAY_NAME:
            raise AccountError(f"显示名称最多 {MAX_DISPLAY_NAME} 个字符")
        if await self.find_user(session, username) is not None:
            raise AccountError(f"用户名 {username} 已被使用")
        user = StaffUser(username=username, display_name=name, role=role, queue_id=queue,
                         password_hash=None, active=True, failed_logins=0, created_at=utcnow())
        session.add(user)
        await session.flush()
        audit(session, "user-created", created_by,
              detail={"user": user.id, "role": role, "queue": queue})
        return user

    async def find_user(self, session: AsyncSession, username: str) -> StaffUser | None:
        """The account with this (case-insensitive) username, if any."""
        return await session.scalar(
            select(StaffUser).where(StaffUser.username == username.strip().lower()))

    async def users(self, session: AsyncSession) -> list[StaffUser]:
        """Every account, for the administrators' page."""
        return list((await session.scalars(select(StaffUser).order_by(StaffUser.id))).all())

    async def set_active(self, session: AsyncSession, user: StaffUser, active: bool,
                         by: int | None) -> None:
        """Switch an account on or off; switching off signs it out everywhere."""
        user.active = active
        if not active:
            await session.execute(delete(StaffSession).where(StaffSession.user_id == user.id))
        audit(session, "user-activated" if active else "user-deactivated", by,
              detail={"user": user.id})

    async def unlock(self, session: AsyncSession, user: StaffUser, by: int | None) -> None:
        """Lift a lock-out before it ends by itself."""
        user.locked_until = None
        user.failed_logins = 0
        audit(session, "user-unlocked", by, detail={"user": user.id})

    # -- invites -------------------------------------------------------------------------
    async def issue_invite(self, session: AsyncSession, user: StaffUser,
                           by: int | None = None, now: datetime | None = None) -> str:
        """A fresh one-time set-password token; earlier unused links stop working."""
        now = now or utcnow()
        await session.execute(
            update(StaffInvite)
            .where(StaffInvite.user_id == user.id, StaffInvite.used_at.is_(None))
            .values(expires_at=now))
        token = secrets.token_urlsafe(32)
        session.add(StaffInvite(token_hash=token_hash(token), user_id=user.id, created_at=now,
                                expires_at=now + timedelta(hours=self.policy.invite_hours)))
        audit(session, "invite-issued", by, detail={"user": user.id}, now=now)
        return token

    async def invited_user(self, session: AsyncSession, token: str,
                           now: datetime | None = None) -> StaffUser | None:
        """The active account an unused, unexpired invite token belongs to."""
        invite = await self._invite(session, token, now or utcnow())
        return None if invite is None else await self._active_user(session, invite.user_id)

    async def accept_invite(self, session: AsyncSession, token: str, password: str,
                            now: datetime | None = None) -> StaffUser:
        """Set the password an invite allows, once; every older session is signed out."""
        now = now or utcnow()
        invite = await self._invite(session, token, now)
        user = None if invite is None else await self._active_user(session, invite.user_id)
        if invite is None or user is None:
            raise AccountError("这个链接已失效，请向管理员索取新的链接")
        check_password(password, user.username)
        user.password_hash = await asyncio.to_thread(self.hasher.hash, password)
        user.failed_logins = 0
        user.locked_until = None
        invite.used_at = now
        await session.execute(delete(StaffSession).where(StaffSession.user_id == user.id))
        audit(session, "password-set", user.id, now=now)
        return user

    async def _invite(self, session: AsyncSession, token: str,
                      now: datetime) -> StaffInvite | None:
        if not token:
            return None
        invite = await session.get(StaffInvite, token_hash(token))
        if invite is None or invite.used_at is not None or as_utc(invite.expires_at) <= now:
            return None
        return invite

    async def _active_user(self, session: AsyncSession, user_id: int) -> StaffUser | None:
        user = await session.get(StaffUser, user_id)
        return user if user is not None and user.active else None

    async def first_admin_token(self, session: AsyncSession,
                                now: datetime | None = None) -> str | None:
        """On a fresh install, an invite for the first admin; None once one can sign in.

        Creates the account "admin" without a password when missing, and issues a new
        link at every start until someone has used one.
        """
        ready = await session.scalar(select(StaffUser.id).where(
            StaffUser.role == "admin", StaffUser.active.is_(True),
            StaffUser.password_hash.is_not(None)).limit(1))
        if ready is not None:
            return None
        admin = await self.find_user(session, FIRST_ADMIN)
        if admin is None:
            admin = StaffUser(username=FIRST_ADMIN, display_name="系统管理员", role="admin",
                              queue_id=None, password_hash=None, active=True, failed_logins=0,
                              created_at=now or utcnow())
            session.add(admin)
            await session.flush()
            audit(session, "user-created", None,
                  detail={"user": admin.id, "role": "admin", "queue": None}, now=now)
        elif admin.role != "admin" or not admin.active:
            raise AccountError(f"用户 {FIRST_ADMIN} 已存在但不是可用的管理员账号，"
                               "请用 `xiaobao staff add` 新建一个管理员")
        return await self.issue_invite(session, admin, now=now)

    # -- signing in ----------------------------------------------------------------------
    async def authenticate(self, session: AsyncSession, username: str, password: str,
                           now: datetime | None = None) -> StaffUser:
        """The account these credentials open, counting failures (raises LoginRefused)."""
        now = now or utcnow()
        user = await self.find_user(session, username) if username.strip() else None
        stored = user.password_hash if user is not None and user.active else None
        matches = await asyncio.to_thread(self._verify, stored or self._decoy, password)
        if user is None or stored is None:
            raise LoginRefused
        if user.locked_until is not None and as_utc(user.locked_until) > now:
            audit(session, "login-refused-locked", user.id, now=now)
            raise LoginRefused
        if not matches:
            # Counted in SQL, so parallel guesses cannot overwrite each other's failures.
            failures = await session.scalar(
                update(StaffUser).where(StaffUser.id == user.id)
                .values(failed_logins=StaffUser.failed_logins + 1)
                .returning(StaffUser.failed_logins))
            audit(session, "login-failed", user.id, now=now)
            if (failures or 0) >= self.policy.max_failed_logins:
                user.locked_until = now + timedelta(minutes=self.policy.lockout_minutes)
                user.failed_logins = 0
                audit(session, "locked-out", user.id, now=now)
            raise LoginRefused
        user.failed_logins = 0
        user.locked_until = None
        if self.hasher.check_needs_rehash(stored):
            user.password_hash = await asyncio.to_thread(self.hasher.hash, password)
        audit(session, "login", user.id, now=now)
        return user

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    async def open_session(self, session: AsyncSession, user: StaffUser,
                           now: datetime | None = None) -> tuple[str, StaffSession]:
        """A new browser session: the raw token goes in the cookie, its hash in the table."""
        now = now or utcnow()
        token = secrets.token_urlsafe(32)
        row = StaffSession(token_hash=token_hash(token), user_id=user.id,
                           csrf_token=secrets.token_urlsafe(32), created_at=now,
                           expires_at=now + timedelta(hours=self.policy.session_hours))
        session.add(row)
        return token, row

    async def resume(self, session: AsyncSession, token: str | None,
                     now: datetime | None = None) -> SignedIn | None:
        """The signed-in user behind a cookie token; expired sessions are removed."""
        if not token:
            return None
        now = now or utcnow()
        row = await session.get(StaffSession, token_hash(token))
        if row is None:
            return None
        if as_utc(row.expires_at) <= now:
            await session.delete(row)
            return None
        user = await self._active_user(session, row.user_id)
        return None if user is None or user.password_hash is None else SignedIn(row, user)

    async def close_session(self, session: AsyncSession, token: str | None) -> None:
        """Sign a browser out (its token stops working at once)."""
        if token:
            await session.execute(
                delete(StaffSession).where(StaffSession.token_hash == token_hash(token)))

    async def purge_expired(self, session: AsyncSession, now: datetime | None = None) -> int:
        """Drop sessions past their expiry (they no longer sign anyone in anyway)."""
        result = await session.execute(
            delete(StaffSession).where(StaffSession.expires_at <= (now or utcnow())))
        return int(getattr(result, "rowcount", 0) or 0)
