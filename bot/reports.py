"""The quarterly complaint report the regulator and the associations work from.

Each quarter the regulator calls in the heads of the three institutions with the most
complaints in banking, life insurance and property insurance; the associations name those
that handle complaints poorly.  `quarterly_report` computes every figure they need from the
complaint records, and the renderers turn it into an aligned text table (the command
line), CSV and JSON (the dashboard and the regulator's own statistics).

Definitions (docs/reports.md repeats them for readers of the README):

* **Quarter** — from local midnight of its first day to local midnight of the next
  quarter's first day (end excluded), in the report's time zone (Asia/Shanghai by default),
  so a complaint received at 2026-03-31 23:30 in Bengbu belongs to Q1 although it is
  15:30 UTC.  A complaint belongs to the quarter in which it was *received*.
* **As of** — the moment the report looks at the state of handling: the end of the
  quarter, or now while the quarter is still running (or an explicit `as_of`).  A
  resolution or withdrawal recorded after that moment counts as still open.
* **Complaints per institution** — complaints naming the institution (`institution_id`),
  whatever queue handles them; withdrawn complaints count, since they were received.
  Complaints naming no institution are counted apart ("unattributed").
* **Top three per sector** — institutions of the sector (by the directory) with at least
  one complaint, by count, highest first; equal counts are ordered by institution id so
  the order never depends on the database.  Institutions left out at the cut with the
  same count as the third are listed in `tied_at_cut`, so nobody is silently dropped.
* **Change** — current minus previous quarter, and that change in percent of the previous
  quarter; the percentage is None when the previous quarter had no complaints.
* **Handled within 15 days** — numerator: complaints resolved (status "resolved") by the
  as-of moment with `resolved_at - received_at <= 15 days`.  Denominator ("decided or
  due"): complaints of the quarter that are not withdrawn by the as-of moment and either
  were resolved by then or had been received at least 15 days before it.  Complaints still
  open and younger than 15 days at the as-of moment are "pending" and in neither.
* **Overdue** — complaints of the quarter whose deadline (`deadline_at`, including any
  extension) had passed before they were closed: open at the as-of moment with the
  deadline before it, or resolved or withdrawn after the deadline.
* **Median days to resolution** — median of `(resolved_at - received_at)` in days
  (fractional) over complaints resolved by the as-of moment; None when there are none.
* **Withdrawn, risk-flagged, suspected agent-led** — complaints of the quarter withdrawn
  by the as-of moment, with the `risk` flag, with the `agent_led` flag.
* **Per branch** — complaints divided by the directory's `branches:` count, only for
  institutions whose entry gives one (never estimated).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.codes import SECTOR_ORDER, SHORT_SECTOR_NAMES, ComplaintCodes
from bot.models import Complaint, as_utc, utcnow
from classifiers.institutions import Directory

DEFAULT_TZ = "Asia/Shanghai"
CLOSED_STATUSES = frozenset({"resolved", "withdrawn"})
HANDLING_DAYS = 15
TOP_N = 3
HISTORY_QUARTERS = 4
MIN_YEAR, MAX_YEAR = 2000, 2100
CSV_COLUMNS = ("section", "key", "label", "sector", "metric", "value")


class ReportError(ValueError):
    """A report asked for with impossible parameters, phrased as one line."""


# -- quarters ----------------------------------------------------------------------------
def zone(tz: str) -> ZoneInfo:
    """The time zone named, or a ReportError (not a KeyError) for an unknown name."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(f"unknown time zone {tz!r}") from None


def check_period(year: int, quarter: int) -> None:
    """Refuse years and quarters no report can be about, with a one-line reason."""
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ReportError(f"year must be between {MIN_YEAR} and {MAX_YEAR}, got {year}")
    if quarter not in (1, 2, 3, 4):
        raise ReportError(f"quarter must be 1, 2, 3 or 4, got {quarter}")


def shift_quarter(year: int, quarter: int, offset: int) -> tuple[int, int]:
    """The quarter `offset` quarters away (negative: earlier), across year ends."""
    index = year * 4 + (quarter - 1) + offset
    return index // 4, index % 4 + 1


def _bounds(year: int, quarter: int, local: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime(year, 3 * quarter - 2, 1, tzinfo=local)
    next_year, next_quarter = shift_quarter(year, quarter, 1)
    return start, datetime(next_year, 3 * next_quarter - 2, 1, tzinfo=local)


def quarter_bounds(year: int, quarter: int, tz: str = DEFAULT_TZ) -> tuple[datetime, datetime]:
    """Local midnight starting the quarter and starting the next one (end excluded)."""
    check_period(year, quarter)
    return _bounds(year, quarter, zone(tz))


def quarter_of(moment: datetime, tz: str = DEFAULT_TZ) -> tuple[int, int]:
    """The (year, quarter) a moment falls in, on the local calendar."""
    local = as_utc(moment).astimezone(zone(tz))
    return local.year, (local.month - 1) // 3 + 1


def quarter_label(year: int, quarter: int) -> str:
    """The short name used in tables, charts and CSV keys: 2026Q1."""
    return f"{year}Q{quarter}"


def sector_filter(sectors: Collection[str] | None) -> ColumnElement[bool] | None:
    """SQL condition keeping complaints of these sectors (None: every sector).

    A complaint without a sector goes to the bank association (`association_for(None)`),
    so it is visible with the bank sector.
    """
    if sectors is None:
        return None
    wanted = sorted(set(sectors))
    clause = Complaint.sector.in_(wanted)
    return or_(clause, Complaint.sector.is_(None)) if "bank" in wanted else clause


def association_sectors(directory: Directory, association_id: str) -> tuple[str, ...]:
    """The sectors an association oversees (the banking one: bank; insurance: life, property)."""
    return tuple(sector for sector in SECTOR_ORDER
                 if directory.association_for(sector).id == association_id)


# -- the result --------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """A count in the quarter and in the previous quarter."""

    current: int
    previous: int

    @property
    def delta(self) -> int:
        """Current minus previous."""
        return self.current - self.previous

    @property
    def percent(self) -> float | None:
        """The change in percent of the previous quarter; None when that was 0."""
        return None if self.previous == 0 else 100.0 * self.delta / self.previous

    def as_dict(self) -> dict[str, Any]:
        """JSON form (percent rounded to one decimal)."""
        percent = self.percent
        return {"current": self.current, "previous": self.previous, "delta": self.delta,
                "percent": None if percent is None else round(percent, 1)}


@dataclass(frozen=True)
class InstitutionRow:
    """One institution's complaints this quarter and last, and per branch where known."""

    id: str
    name: str
    sector: str | None
    complaints: Change
    branches: int | None = None
    short: str = ""

    @property
    def per_branch(self) -> float | None:
        """Complaints per branch; None where the directory gives no branch count."""
        return None if not self.branches else self.complaints.current / self.branches

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        per_branch = self.per_branch
        return {"id": self.id, "name": self.name, "short": self.short, "sector": self.sector,
                "complaints": self.complaints.as_dict(), "branches": self.branches,
                "per_branch": None if per_branch is None else round(per_branch, 2)}


@dataclass(frozen=True)
class SectorTop:
    """The institutions of one sector with the most complaints, highest first."""

    sector: str
    name: str
    entries: tuple[InstitutionRow, ...]
    tied_at_cut: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"sector": self.sector, "name": self.name,
                "entries": [{"rank": rank, "id": row.id, "name": row.name,
                             "count": row.complaints.current}
                            for rank, row in enumerate(self.entries, start=1)],
                "tied_at_cut": list(self.tied_at_cut)}


@dataclass(frozen=True)
class CodeCount:
    """How many complaints carry one business-line or cause code."""

    id: str
    name: str
    count: int

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"id": self.id, "name": self.name, "count": self.count}


@dataclass(frozen=True)
class Handling:
    """Complaints handled within 15 days, out of those decided or due (see the module)."""

    within: int
    decided_or_due: int
    pending: int

    @property
    def share(self) -> float | None:
        """within / decided_or_due, or None when nothing is decided or due yet."""
        return None if self.decided_or_due == 0 else self.within / self.decided_or_due

    def as_dict(self) -> dict[str, Any]:
        """JSON form (share rounded to four decimals)."""
        share = self.share
        return {"within": self.within, "decided_or_due": self.decided_or_due,
                "pending": self.pending, "share": None if share is None else round(share, 4)}


@dataclass(frozen=True)
class QuarterCount:
    """Complaints received in one quarter (for the volume chart)."""

    year: int
    quarter: int
    count: int

    @property
    def label(self) -> str:
        """2026Q1."""
        return quarter_label(self.year, self.quarter)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"label": self.label, "year": self.year, "quarter": self.quarter,
                "count": self.count}


@dataclass(frozen=True)
class QuarterlyReport:
    """Every figure of one quarter's report (definitions in the module docstring)."""

    year: int
    quarter: int
    tz: str
    start: datetime
    end: datetime
    as_of: datetime
    sectors: tuple[str, ...] | None
    total: Change
    unattributed: Change
    institutions: tuple[InstitutionRow, ...]
    top: tuple[SectorTop, ...]
    by_business: tuple[CodeCount, ...]
    by_cause: tuple[CodeCount, ...]
    handled_within_15: Handling
    overdue: int
    resolved: int
    median_days_to_resolution: float | None
    withdrawn: int
    risk_flagged: int
    agent_led: int
    volume: tuple[QuarterCount, ...]

    @property
    def label(self) -> str:
        """2026Q1."""
        return quarter_label(self.year, self.quarter)

    @property
    def per_branch(self) -> tuple[InstitutionRow, ...]:
        """The institutions whose directory entry gives a branch count."""
        return tuple(row for row in self.institutions if row.branches)

    def institution(self, institution_id: str) -> InstitutionRow | None:
        """One institution's row, if it is in the report."""
        return next((row for row in self.institutions if row.id == institution_id), None)

    def as_dict(self) -> dict[str, Any]:
        """The JSON document of `xiaobao report quarterly --format json`."""
        local = zone(self.tz)
        median = self.median_days_to_resolution
        return {
            "report": "quarterly", "label": self.label, "year": self.year,
            "quarter": self.quarter, "tz": self.tz,
            "start": self.start.isoformat(), "end": self.end.isoformat(),
            "as_of": self.as_of.astimezone(local).isoformat(),
            "sectors": None if self.sectors is None else list(self.sectors),
            "total": self.total.as_dict(),
            "unattributed": self.unattributed.as_dict(),
            "institutions": [row.as_dict() for row in self.institutions],
            "top": [top.as_dict() for top in self.top],
            "by_business": [item.as_dict() for item in self.by_business],
            "by_cause": [item.as_dict() for item in self.by_cause],
            "handled_within_15_days": self.handled_within_15.as_dict(),
            "overdue": self.overdue,
            "resolved": self.resolved,
            "median_days_to_resolution": None if median is None else round(median, 2),
            "withdrawn": self.withdrawn,
            "risk_flagged": self.risk_flagged,
            "agent_led": self.agent_led,
            "volume": [item.as_dict() for item in self.volume],
        }


# -- computing it ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Row:
    """The columns of a complaint a report reads (no personal data is ever selected)."""

    institution_id: str | None
    sector: str | None
    business: str
    cause: str
    status: str
    risk: bool
    agent_led: bool
    received_at: datetime
    deadline_at: datetime
    resolved_at: datetime | None

    def closed_at(self, as_of: datetime) -> datetime | None:
        """When it was resolved or withdrawn, if that happened by the as-of moment."""
        if self.status in CLOSED_STATUSES and self.resolved_at and self.resolved_at <= as_of:
            return self.resolved_at
        return None


_COLUMNS = (Complaint.institution_id, Complaint.sector, Complaint.business, Complaint.cause,
            Complaint.status, Complaint.risk, Complaint.agent_led, Complaint.received_at,
            Complaint.deadline_at, Complaint.resolved_at)


def _received_between(start: datetime, end: datetime,
                      scope: ColumnElement[bool] | None) -> list[ColumnElement[bool]]:
    # SQLite stores naive UTC: bounds are always passed in UTC.
    conditions = [Complaint.received_at >= start.astimezone(UTC),
                  Complaint.received_at < end.astimezone(UTC)]
    return conditions if scope is None else [*conditions, scope]


async def _cohort(session: AsyncSession, start: datetime, end: datetime,
                  scope: ColumnElement[bool] | None) -> list[_Row]:
    result = await session.execute(
        select(*_COLUMNS).where(*_received_between(start, end, scope)).order_by(Complaint.id))
    rows = []
    for (institution_id, sector, business, cause, status, risk, agent_led, received_at,
         deadline_at, resolved_at) in result.all():
        rows.append(_Row(institution_id, sector, business, cause, status, bool(risk),
                         bool(agent_led), as_utc(received_at), as_utc(deadline_at),
                         as_utc(resolved_at) if resolved_at else None))
    return rows


async def _counts_by_institution(session: AsyncSession, start: datetime, end: datetime,
                                 scope: ColumnElement[bool] | None
                                 ) -> list[tuple[str | None, str | None, int]]:
    result = await session.execute(
        select(Complaint.institution_id, Complaint.sector, func.count(Complaint.id))
        .where(*_received_between(start, end, scope))
        .group_by(Complaint.institution_id, Complaint.sector))
    return [(institution_id, sector, int(n)) for institution_id, sector, n in result.all()]


async def _count(session: AsyncSession, start: datetime, end: datetime,
                 scope: ColumnElement[bool] | None) -> int:
    total = await session.scalar(
        select(func.count(Complaint.id)).where(*_received_between(start, end, scope)))
    return int(total or 0)


def _code_counts(found: Counter[str], names: dict[str, str]) -> tuple[CodeCount, ...]:
    """Every code of complaints.toml in file order (zeros included), unknown codes after."""
    known = [CodeCount(code, name, found.get(code, 0)) for code, name in names.items()]
    unknown = [CodeCount(code, code, n) for code, n in sorted(found.items()) if code not in names]
    return (*known, *unknown)


def _institution_rows(directory: Directory, sectors: tuple[str, ...] | None,
                      current: Iterable[_Row],
                      previous: Iterable[tuple[str | None, str | None, int]]
                      ) -> tuple[InstitutionRow, ...]:
    now_counts: Counter[str] = Counter()
    before: Counter[str] = Counter()
    seen_sector: dict[str, str | None] = {}
    for row in current:
        if row.institution_id is not None:
            now_counts[row.institution_id] += 1
            seen_sector.setdefault(row.institution_id, row.sector)
    for institution_id, sector, n in previous:
        if institution_id is not None:
            before[institution_id] += n
            seen_sector.setdefault(institution_id, sector)
    members = [i for i in directory.members() if sectors is None or i.sector in sectors]
    ids = [i.id for i in members] + sorted(set(seen_sector) - {i.id for i in members})
    rows = []
    for institution_id in ids:
        known = directory.get(institution_id)
        rows.append(InstitutionRow(
            id=institution_id,
            name=known.name if known else institution_id,
            sector=known.sector if known else seen_sector.get(institution_id),
            complaints=Change(now_counts.get(institution_id, 0), before.get(institution_id, 0)),
            branches=known.branches if known else None,
            short=known.short if known else institution_id,
        ))
    rows.sort(key=lambda row: (-row.complaints.current, row.id))
    return tuple(rows)


def _top(rows: tuple[InstitutionRow, ...], sector: str, name: str) -> SectorTop:
    ranked = sorted((r for r in rows if r.sector == sector and r.complaints.current > 0),
                    key=lambda r: (-r.complaints.current, r.id))
    entries = tuple(ranked[:TOP_N])
    tied: tuple[str, ...] = ()
    if len(entries) == TOP_N:
        cut = entries[-1].complaints.current
        tied = tuple(r.id for r in ranked[TOP_N:] if r.complaints.current == cut)
    return SectorTop(sector, name, entries, tied)


def _handling(rows: Iterable[_Row], as_of: datetime) -> Handling:
    window = timedelta(days=HANDLING_DAYS)
    within = decided = pending = 0
    for row in rows:
        closed = row.closed_at(as_of)
        if closed is not None and row.status == "withdrawn":
            continue
        resolved = closed is not None
        if resolved or row.received_at + window <= as_of:
            decided += 1
            if resolved and closed - row.received_at <= window:
                within += 1
        else:
            pending += 1
    return Handling(within, decided, pending)


async def quarterly_report(
    session: AsyncSession,
    directory: Directory,
    year: int,
    quarter: int,
    tz: str = DEFAULT_TZ,
    *,
    sectors: Collection[str] | None = None,
    as_of: datetime | None = None,
    codes: ComplaintCodes | None = None,
    history: int = HISTORY_QUARTERS,
) -> QuarterlyReport:
    """Every figure of one quarter, optionally limited to some sectors (an association's)."""
    check_period(year, quarter)
    local = zone(tz)
    codes = codes or ComplaintCodes.load()
    start, end = _bounds(year, quarter, local)
    moment = as_utc(as_of) if as_of is not None else min(end.astimezone(UTC), utcnow())
    scope_sectors = None if sectors is None else tuple(s for s in SECTOR_ORDER if s in sectors)
    scope = sector_filter(sectors)

    rows = await _cohort(session, start, end, scope)
    previous_start, previous_end = _bounds(*shift_quarter(year, quarter, -1), local)
    previous = await _counts_by_institution(session, previous_start, previous_end, scope)
    volume = []
    for offset in range(max(history, 1) - 1, 0, -1):
        earlier = shift_quarter(year, quarter, -offset)
        count = await _count(session, *_bounds(*earlier, local), scope)
        volume.append(QuarterCount(*earlier, count))
    volume.append(QuarterCount(year, quarter, len(rows)))

    institutions = _institution_rows(directory, scope_sectors, rows, previous)
    top = tuple(_top(institutions, sector, codes.sector_name(sector)) for sector in SECTOR_ORDER
                if scope_sectors is None or sector in scope_sectors)
    closed = [(row, row.closed_at(moment)) for row in rows]
    resolved_days = [(at - row.received_at).total_seconds() / 86400 for row, at in closed
                     if at is not None and row.status == "resolved"]
    overdue = sum((at or moment) > row.deadline_at for row, at in closed)
    return QuarterlyReport(
        year=year, quarter=quarter, tz=tz, start=start, end=end, as_of=moment,
        sectors=scope_sectors,
        total=Change(len(rows), sum(n for _, _, n in previous)),
        unattributed=Change(sum(row.institution_id is None for row in rows),
                            sum(n for i, _, n in previous if i is None)),
        institutions=institutions,
        top=top,
        by_business=_code_counts(Counter(row.business for row in rows), codes.business),
        by_cause=_code_counts(Counter(row.cause for row in rows), codes.causes),
        handled_within_15=_handling(rows, moment),
        overdue=overdue,
        resolved=len(resolved_days),
        median_days_to_resolution=statistics.median(resolved_days) if resolved_days else None,
        withdrawn=sum(at is not None and row.status == "withdrawn" for row, at in closed),
        risk_flagged=sum(row.risk for row in rows),
        agent_led=sum(row.agent_led for row in rows),
        volume=tuple(volume),
    )


# -- rendering ---------------------------------------------------------------------------
def display_width(text: str) -> int:
    """Terminal columns a string takes: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * max(width - display_width(text), 0)
    return gap + text if right else text + gap


def render_table(headers: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    """An aligned plain-text table (numeric columns right-aligned) for terminals."""
    widths = [max(display_width(cell) for cell in column) for column in zip(headers, *rows,
                                                                           strict=False)]

    def line(cells: list[str]) -> str:
        return "  ".join(_pad(cell, widths[i], i in numeric)
                         for i, cell in enumerate(cells)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _signed(value: int) -> str:
    return f"{value:+d}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}%"


def _local(moment: datetime, tz: str) -> str:
    return moment.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M")


def render_text(report: QuarterlyReport) -> str:
    """The readable report of `xiaobao report quarterly` (Chinese and English headings)."""
    handling = report.handled_within_15
    share = handling.share
    median = report.median_days_to_resolution
    scope = ("全部行业 all sectors" if report.sectors is None
             else ", ".join(report.sectors))
    out = [
        f"季度投诉报告 Quarterly complaint report  {report.year}年第{report.quarter}季度"
        f" ({report.label})",
        f"统计区间 Period: {_local(report.start, report.tz)} 至 to "
        f"{_local(report.end, report.tz)} ({report.tz}, end excluded)",
        f"截至 As of: {_local(report.as_of, report.tz)}    范围 Scope: {scope}",
        "",
        "总体 Summary",
        render_table(["指标 Figure", "数值 Value"], [
            ["投诉总量 Complaints received", str(report.total.current)],
            ["上季度 Previous quarter", str(report.total.previous)],
            ["环比变化 Change", f"{_signed(report.total.delta)} "
                                f"({_percent(report.total.percent)})"],
            ["未指明机构 No institution named", str(report.unattributed.current)],
            ["15日内办结率 Handled within 15 days",
             "—" if share is None else f"{100 * share:.1f}% "
             f"({handling.within}/{handling.decided_or_due})"],
            ["未满15日 Pending (< 15 days)", str(handling.pending)],
            ["逾期 Overdue", str(report.overdue)],
            ["已办结 Resolved", str(report.resolved)],
            ["办结中位天数 Median days to resolution", "—" if median is None else f"{median:.1f}"],
            ["撤回 Withdrawn", str(report.withdrawn)],
            ["舆情风险 Risk-flagged", str(report.risk_flagged)],
            ["疑似代理投诉 Suspected agent-led", str(report.agent_led)],
        ], numeric={1}),
        "",
        "各行业前三名 Top three per sector",
    ]
    top_rows = []
    for top in report.top:
        if not top.entries:
            top_rows.append([top.name, "-", "（无投诉 none）", "0"])
        for rank, row in enumerate(top.entries, start=1):
            top_rows.append([top.name, str(rank), row.name, str(row.complaints.current)])
    out.append(render_table(["行业 Sector", "名次 Rank", "机构 Institution", "投诉量 Count"],
                            top_rows, numeric={1, 3}))
    notes = [f"注 Note: {top.name} 第{TOP_N}名并列 tied at rank {TOP_N}: "
             + ", ".join(top.tied_at_cut) for top in report.top if top.tied_at_cut]
    if notes:
        out += ["", *notes]
    out += ["", "各机构投诉量 Complaints per institution"]
    institution_rows = [[
        row.name, SHORT_SECTOR_NAMES.get(row.sector or "", row.sector or "-"),
        str(row.complaints.current), str(row.complaints.previous),
        _signed(row.complaints.delta), _percent(row.complaints.percent),
        str(row.branches) if row.branches else "—",
        "—" if row.per_branch is None else f"{row.per_branch:.2f}",
    ] for row in report.institutions]
    institution_rows.append(["（未指明机构 none named）", "-", str(report.unattributed.current),
                             str(report.unattributed.previous),
                             _signed(report.unattributed.delta),
                             _percent(report.unattributed.percent), "—", "—"])
    out.append(render_table(
        ["机构 Institution", "行业 Sector", "本季 Count", "上季 Prev", "变化 Change",
         "变化率 Change %", "网点 Branches", "每网点 Per branch"],
        institution_rows, numeric={2, 3, 4, 5, 6, 7}))
    for title, items in (("按业务 By business line", report.by_business),
                         ("按原因 By cause", report.by_cause)):
        total = report.total.current
        out += ["", title, render_table(
            ["名称 Name", "代码 Code", "件数 Count", "占比 Share"],
            [[item.name, item.id, str(item.count),
              "—" if not total else f"{100 * item.count / total:.1f}%"] for item in items],
            numeric={2, 3})]
    out += ["", "季度投诉量 Volume per quarter", render_table(
        ["季度 Quarter", "件数 Count"],
        [[item.label, str(item.count)] for item in report.volume], numeric={1})]
    return "\n".join(out) + "\n"


def csv_rows(report: QuarterlyReport) -> list[dict[str, Any]]:
    """The report as long-format rows: section, key, label, sector, metric, value."""
    rows: list[dict[str, Any]] = []

    def add(section: str, key: str, label: str, sector: str | None, metric: str,
            value: Any) -> None:
        rows.append({"section": section, "key": key, "label": label, "sector": sector or "",
                     "metric": metric, "value": "" if value is None else value})

    data = report.as_dict()
    for metric in ("label", "start", "end", "as_of", "tz"):
        add("period", report.label, "统计区间", None, metric, data[metric])
    for metric, value in data["total"].items():
        add("summary", "total", "投诉总量", None, metric, value)
    for metric, value in data["unattributed"].items():
        add("summary", "unattributed", "未指明机构", None, metric, value)
    for metric, value in data["handled_within_15_days"].items():
        add("summary", "handled_within_15_days", "15日内办结", None, metric, value)
    for key, label in (("overdue", "逾期"), ("resolved", "已办结"),
                       ("median_days_to_resolution", "办结中位天数"), ("withdrawn", "撤回"),
                       ("risk_flagged", "舆情风险"), ("agent_led", "疑似代理投诉")):
        add("summary", key, label, None, "count" if key != "median_days_to_resolution"
            else "days", data[key])
    for item in data["institutions"]:
        for metric, value in item["complaints"].items():
            add("institution", item["id"], item["name"], item["sector"], metric, value)
        if item["branches"]:
            add("institution", item["id"], item["name"], item["sector"], "branches",
                item["branches"])
            add("institution", item["id"], item["name"], item["sector"], "per_branch",
                item["per_branch"])
    for top in data["top"]:
        for entry in top["entries"]:
            add("top", entry["id"], entry["name"], top["sector"], "rank", entry["rank"])
            add("top", entry["id"], entry["name"], top["sector"], "count", entry["count"])
        for tied in top["tied_at_cut"]:
            add("top", tied, tied, top["sector"], "tied_at_cut", TOP_N)
    for section, items in (("business", data["by_business"]), ("cause", data["by_cause"])):
        for item in items:
            add(section, item["id"], item["name"], None, "count", item["count"])
    for item in data["volume"]:
        add("volume", item["label"], f"{item['year']}年第{item['quarter']}季度", None, "count",
            item["count"])
    return rows


def render_csv(report: QuarterlyReport) -> str:
    """The report as one CSV table (header: section,key,label,sector,metric,value)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(report))
    return buffer.getvalue()


def render_json(report: QuarterlyReport) -> str:
    """The report as one JSON document (UTF-8, Chinese names unescaped)."""
    return json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n"


FORMATS = ("text", "csv", "json")


def render(report: QuarterlyReport, fmt: str) -> str:
    """The report in one of FORMATS (what `--format` chooses)."""
    if fmt == "text":
        return render_text(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    raise ReportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
