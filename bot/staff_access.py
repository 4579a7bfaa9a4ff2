"""Who may see and act on which complaints: the dashboard's authorization, on the server.

Every query for complaints goes through a `Scope`, so a record outside it is simply not
found — the dashboard answers 404 for it whatever the URL, exactly as for a tracking
number that does not exist, and never confirms that it does.

- institution staff: their institution's queue only;
- association: its own queue and the queues of its sector's institutions (the banking
  association: banks; the insurance association: life and property insurers);
- regulator: everything, read-only;
- admin: everything, read-only, plus accounts and queue channels.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import Complaint, Notification, StaffUser
from classifiers.institutions import Directory, Institution


class NotVisible(LookupError):
    """The record does not exist for this user (answered as 404)."""


class ReadOnly(PermissionError):
    """The user may look but not act (answered as 403)."""


@dataclass(frozen=True)
class Scope:
    """The queues a user sees (None: all of them) and what they may do there."""

    queues: frozenset[str] | None
    can_act: bool
    can_admin: bool

    def sees(self, queue_id: str) -> bool:
        """Whether a record of this queue exists for the user."""
        return self.queues is None or queue_id in self.queues

    def complaints(self) -> ColumnElement[bool]:
        """The SQL condition every complaint query of this user carries."""
        return true() if self.queues is None else Complaint.queue_id.in_(sorted(self.queues))

    def notifications(self) -> ColumnElement[bool]:
        """The same condition for outbox rows (dead notifications on the queue page)."""
        return true() if self.queues is None else Notification.queue_id.in_(sorted(self.queues))


def association_queues(directory: Directory, association_id: str) -> frozenset[str]:
    """An association's own queue plus those of every institution of its sector(s)."""
    members = {i.id for i in directory.members()
               if directory.association_for(i.sector).id == association_id}
    return frozenset({association_id, *members})


def scope_for(user: StaffUser, directory: Directory) -> Scope:
    """The scope a role and queue give; an unknown role sees nothing."""
    if user.role == "institution" and user.queue_id:
        return Scope(frozenset({user.queue_id}), can_act=True, can_admin=False)
    if user.role == "association" and user.queue_id:
        return Scope(association_queues(directory, user.queue_id), can_act=True,
                     can_admin=False)
    if user.role == "regulator":
        return Scope(None, can_act=False, can_admin=False)
    if user.role == "admin":
        return Scope(None, can_act=False, can_admin=True)
    return Scope(frozenset(), can_act=False, can_admin=False)


async def visible_complaint(session: AsyncSession, scope: Scope,
                            tracking_no: str) -> Complaint:
    """The complaint with this number inside the scope (raises NotVisible otherwise)."""
    complaint = await session.scalar(
        select(Complaint).where(Complaint.tracking_no == tracking_no, scope.complaints()))
    if complaint is None:
        raise NotVisible(tracking_no)
    return complaint


async def actionable_complaint(session: AsyncSession, scope: Scope,
                               tracking_no: str) -> Complaint:
    """A complaint the user may act on: NotVisible first, then ReadOnly."""
    complaint = await visible_complaint(session, scope, tracking_no)
    if not scope.can_act:
        raise ReadOnly(tracking_no)
    return complaint


def transfer_targets(directory: Directory, complaint: Complaint) -> list[Institution]:
    """Where a complaint can be sent: the associations first, then every institution."""
    everyone = [*sorted((i for i in directory.institutions.values() if i.is_association),
                        key=lambda i: i.id),
                *directory.members()]
    return [i for i in everyone if i.id != complaint.queue_id]
