"""CSV export of complaint records for the regulator's own statistics, audited and masked.

The regulator and the associations keep their own statistics, so they take the records
out: one row per complaint, with business line, cause, sector and status coded twice (the
stable id of complaints.toml and its Chinese name) so spreadsheets can both join and read.
Personal data — the complainant's name, phone and ID numbers, and any of these inside the
free texts — is masked unless the caller says the role may see it; every export, masked
or not, writes an `AuditEntry` (action "export") with its filters and row count.  The
dashboard decides which queues and sectors a user may export and passes them as filters;
this module never widens them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.codes import ComplaintCodes
from bot.complaint_records import RELATIONSHIPS, STATUS_NAMES
from bot.models import AuditEntry, Complaint, as_utc, utcnow
from bot.privacy import mask_id_number, mask_phone, redact
from bot.reports import CLOSED_STATUSES, DEFAULT_TZ, sector_filter, zone
from classifiers.institutions import Directory

COLUMNS = (
    "tracking_no", "received_at", "queue_id", "queue_name", "institution_id",
    "institution_name", "sector", "sector_zh", "business", "business_zh", "cause", "cause_zh",
    "status", "status_zh", "risk", "risk_reasons", "agent_led", "agent_reasons",
    "deadline_days", "deadline_at", "resolved_at", "days_to_resolution", "overdue",
    "channel", "relationship", "name", "phone", "id_number", "occurred", "story", "wish",
    "outcome",
)
PERSONAL_COLUMNS = ("name", "phone", "id_number", "occurred", "story", "wish", "outcome")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ExportFilters:
    """Which complaints to export; None means "no condition" for that field.

    Dates are local calendar days in the export's time zone, both ends included.
    """

    queues: Collection[str] | None = None
    sectors: Collection[str] | None = None
    received_from: date | None = None
    received_to: date | None = None
    statuses: Collection[str] | None = None
    risk: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form, as recorded in the audit log."""
        return {
            "queues": None if self.queues is None else sorted(self.queues),
            "sectors": None if self.sectors is None else sorted(self.sectors),
            "received_from": None if self.received_from is None
            else self.received_from.isoformat(),
            "received_to": None if self.received_to is None else self.received_to.isoformat(),
            "statuses": None if self.statuses is None else sorted(self.statuses),
            "risk": self.risk,
        }


@dataclass(frozen=True)
class Export:
    """One export: the CSV text, how many complaints it holds, and its audit row."""

    csv: str
    rows: int
    masked: bool
    audit: AuditEntry


def mask_name(name: str) -> str:
    """张** : the family name stays so staff can address a letter, the rest is hidden."""
    cleaned = name.strip()
    return cleaned[:1] + "*" * max(len(cleaned) - 1, 1) if cleaned else ""


def mask_text(text: str, name: str) -> str:
    """Free text with numbers masked and the complainant's own name replaced."""
    masked = redact(text)
    cleaned = name.strip()
    return masked.replace(cleaned, mask_name(cleaned)) if len(cleaned) >= 2 else masked


def _cell(value: Any) -> Any:
    """Neutralise text a spreadsheet would run as a formula (=, +, -, @ at the start)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _day_start(day: date, local: Any) -> datetime:
    return datetime.combine(day, time(0), tzinfo=local).astimezone(UTC)


async def export_complaints(
    session: AsyncSession,
    directory: Directory,
    filters: ExportFilters,
    *,
    may_see_personal: bool,
    user_id: int | None,
    tz: str = DEFAULT_TZ,
    now: datetime | None = None,
    codes: ComplaintCodes | None = None,
    excel_bom: bool = False,
) -> Export:
    """The filtered complaints as CSV, masked unless allowed, and audited (caller commits)."""
    local = zone(tz)
    codes = codes or ComplaintCodes.load()
    now = as_utc(now or utcnow()).astimezone(UTC)
    query = select(Complaint).order_by(Complaint.received_at, Complaint.id)
    if filters.queues is not None:
        query = query.where(Complaint.queue_id.in_(sorted(filters.queues)))
    scope = sector_filter(filters.sectors)
    if scope is not None:
        query = query.where(scope)
    if filters.received_from is not None:
        query = query.where(Complaint.received_at >= _day_start(filters.received_from, local))
    if filters.received_to is not None:
        end = _day_start(filters.received_to + timedelta(days=1), local)
        query = query.where(Complaint.received_at < end)
    if filters.statuses is not None:
        query = query.where(Complaint.status.in_(sorted(filters.statuses)))
    if filters.risk is not None:
        query = query.where(Complaint.risk == filters.risk)
    complaints = list((await session.scalars(query)).all())

    buffer = io.StringIO()
    if excel_bom:
        buffer.write("\ufeff")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for complaint in complaints:
        writer.writerow([_cell(value) for value in
                         _record(complaint, directory, codes, local, now, may_see_personal)])
    audit = AuditEntry(at=now, user_id=user_id, action="export", complaint_id=None,
                       detail={"filters": filters.as_dict(), "rows": len(complaints),
                               "masked": not may_see_personal, "tz": tz})
    session.add(audit)
    await session.flush()
    return Export(buffer.getvalue(), len(complaints), not may_see_personal, audit)


def _record(complaint: Complaint, directory: Directory, codes: ComplaintCodes, local: Any,
            now: datetime, may_see_personal: bool) -> list[Any]:
    """One CSV row, in COLUMNS order."""
    received = as_utc(complaint.received_at)
    deadline_at = as_utc(complaint.deadline_at)
    resolved = as_utc(complaint.resolved_at) if complaint.resolved_at else None
    closed = complaint.status in CLOSED_STATUSES and resolved is not None
    queue = directory.get(complaint.queue_id)
    institution = directory.get(complaint.institution_id or "")
    name = complaint.name
    if may_see_personal:
        personal = [name, complaint.phone, complaint.id_number or "", complaint.occurred,
                    complaint.story, complaint.wish, complaint.outcome or ""]
    else:
        personal = [mask_name(name), mask_phone(complaint.phone),
                    mask_id_number(complaint.id_number) if complaint.id_number else "",
                    mask_text(complaint.occurred, name), mask_text(complaint.story, name),
                    mask_text(complaint.wish, name), mask_text(complaint.outcome or "", name)]
    return [
        complaint.tracking_no,
        received.astimezone(local).isoformat(timespec="seconds"),
        complaint.queue_id, queue.name if queue else complaint.queue_id,
        complaint.institution_id or "", institution.name if institution else "",
        complaint.sector or "", codes.sector_name(complaint.sector) if complaint.sector else "",
        complaint.business, codes.business_name(complaint.business),
        complaint.cause, codes.cause_name(complaint.cause),
        complaint.status, STATUS_NAMES.get(complaint.status, complaint.status),
        int(complaint.risk), ";".join(complaint.risk_reasons or ()),
        int(complaint.agent_led), ";".join(complaint.agent_reasons or ()),
        complaint.deadline_days, deadline_at.astimezone(local).isoformat(timespec="seconds"),
        resolved.astimezone(local).isoformat(timespec="seconds") if closed and resolved else "",
        f"{(resolved - received).total_seconds() / 86400:.2f}"
        if complaint.status == "resolved" and resolved else "",
        int((resolved if closed and resolved else now) > deadline_at),
        complaint.channel, RELATIONSHIPS.get(complaint.relationship, complaint.relationship),
        *personal,
    ]
