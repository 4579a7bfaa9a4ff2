"""Oversight pages of the staff dashboard: quarterly report, public-opinion board, export, curation.

The associations and the regulator watch the institutions rather than handle complaints,
so these pages read aggregates and lists through the domain modules (`bot.reports`,
`bot.charts`, `bot.risk_board`, `bot.exports`, `knowledge.curation`) and only translate
HTTP to those calls.  Each page is registered with `dashboard.add_page`, which gives it the
sign-in guard, the CSRF check, the security headers and a 404 for every other role
(institution staff never learn that these pages exist).

Scope is the user's dashboard scope, never wider: an association sees the sectors it
oversees (`association_sectors`) and, for records, only the queues of its scope; the
regulator and administrators see every sector.  Exports are masked for every role (see
`PERSONAL_DATA_ROLES`): the complaint page, one audited record at a time, stays the only
place where a consumer's contact appears in full.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from datetime import date, datetime
from typing import Any

from aiohttp import web
from markupsafe import Markup

from bot.charts import report_charts
from bot.codes import SECTOR_ORDER, ComplaintCodes
from bot.complaint_dialogue import SHANGHAI
from bot.exports import ExportFilters, export_complaints
from bot.models import as_utc, utcnow
from bot.reports import (
    DEFAULT_TZ,
    MAX_YEAR,
    MIN_YEAR,
    QuarterlyReport,
    ReportError,
    association_sectors,
    check_period,
    quarter_of,
    quarterly_report,
    render_csv,
    render_json,
)
from bot.risk_board import risk_board
from bot.services import SERVICES, Services
from bot.staff_queue import EVENT_NAMES, STATUS_LABELS
from handlers import dashboard
from knowledge.curation import most_unanswered

log = logging.getLogger(__name__)

OVERSIGHT_ROLES = frozenset({"association", "regulator", "admin"})
# Roles whose exports carry unmasked personal data.  None: the regulator is read-only and
# keeps its statistics on masked records; administrators run the service, not the cases.
PERSONAL_DATA_ROLES: frozenset[str] = frozenset()
BOARD_REFRESH_SECONDS = 60
CURATION_LIMIT = 50
_NUMBER = re.compile(r"\d{1,4}")


# -- scope and parameters ------------------------------------------------------------------
def _services(request: web.Request) -> Services:
    return request.config_dict[SERVICES]


def _codes(request: web.Request) -> ComplaintCodes:
    return request.config_dict[dashboard.DASHBOARD].codes


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f"{as_utc(moment).astimezone(SHANGHAI):%Y-%m-%d %H:%M}"


def _day(moment: datetime | None) -> str:
    return "" if moment is None else f"{as_utc(moment).astimezone(SHANGHAI):%Y-%m-%d}"


def sectors_of(user: dashboard.StaffContext, services: Services) -> tuple[str, ...] | None:
    """The sectors a user oversees: the association's own, every one (None) for the rest.

    Derived from the dashboard scope, so it is never wider: a user whose scope is limited
    to some queues and who is not an association oversees no sector at all.
    """
    if user.scope.queues is None:
        return None
    if user.role == "association" and user.queue_id:
        return association_sectors(services.triage.directory, user.queue_id)
    return ()


def _whole_number(text: str, what: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise ReportError(f"{what} must be a whole number, got {text[:20]!r}")
    return int(text)


def report_period(query: Mapping[str, str], now: datetime) -> tuple[int, int]:
    """The year and quarter asked for; the current quarter (Beijing time) by default."""
    year, quarter = quarter_of(now, DEFAULT_TZ)
    if query.get("year"):
        year = _whole_number(query["year"], "year")
    if query.get("quarter"):
        quarter = _whole_number(query["quarter"], "quarter")
    check_period(year, quarter)
    return year, quarter


async def _bad_request(request: web.Request, detail: str) -> web.Response:
    return await dashboard.render(request, "staff/error.html", {
        "title": "请求的参数有误", "detail": detail, "status": 400}, status=400)


async def _report(request: web.Request) -> QuarterlyReport:
    """The report the query asks for, in the user's scope (ReportError for bad input)."""
    services = _services(request)
    user = dashboard.staff(request)
    year, quarter = report_period(request.query, utcnow())
    async with services.sessions() as session:
        return await quarterly_report(session, services.triage.directory, year, quarter,
                                      sectors=sectors_of(user, services),
                                      codes=_codes(request))


def _download_name(report: QuarterlyReport, ext: str) -> str:
    scope = "" if report.sectors is None else "-" + "-".join(report.sectors or ("none",))
    return f"xiaobao-report-{report.label}{scope}.{ext}"


def _download(text: str, content_type: str, filename: str) -> web.Response:
    return web.Response(text=text, content_type=content_type, charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# -- the quarterly report ------------------------------------------------------------------
def _share(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}%"


def _days(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


async def report_view(request: web.Request) -> web.StreamResponse:
    """GET /staff/reports: the quarter's figures as tables and three server-drawn charts."""
    try:
        report = await _report(request)
    except ReportError as error:
        return await _bad_request(request, str(error))
    # bot.charts escapes every label it draws, so the SVG markup is embedded as it is.
    charts = {key: (chart, Markup(chart.svg)) for key, chart in report_charts(report).items()}
    codes = _codes(request)
    query = f"year={report.year}&quarter={report.quarter}"
    return await dashboard.render(request, "staff/reports.html", {
        "report": report, "charts": charts, "query": query,
        "sector_name": codes.sector_name, "share": _share, "percent": _percent,
        "days": _days, "min_year": MIN_YEAR, "max_year": MAX_YEAR,
        "scope_names": None if report.sectors is None
        else [codes.sector_name(s) for s in report.sectors],
    })


async def report_csv(request: web.Request) -> web.StreamResponse:
    """GET /staff/reports.csv: the same report as the CLI's CSV (same scope as the page)."""
    try:
        report = await _report(request)
    except ReportError as error:
        return await _bad_request(request, str(error))
    return _download(render_csv(report), "text/csv",
                     _download_name(report, "csv"))


async def report_json(request: web.Request) -> web.StreamResponse:
    """GET /staff/reports.json: the same report as the CLI's JSON (same scope as the page)."""
    try:
        report = await _report(request)
    except ReportError as error:
        return await _bad_request(request, str(error))
    return _download(render_json(report), "application/json",
                     _download_name(report, "json"))


# -- the public-opinion board --------------------------------------------------------------
async def risk_view(request: web.Request) -> web.StreamResponse:
    """GET /staff/risk: risk-flagged complaints of the user's scope, refreshed every minute."""
    services = _services(request)
    user = dashboard.staff(request)
    now = utcnow()
    async with services.sessions() as session:
        items = await risk_board(session, services.triage.directory,
                                 sectors_of(user, services), queues=user.scope.queues, now=now)
    return await dashboard.render(request, "staff/risk.html", {
        "items": items, "refresh_seconds": BOARD_REFRESH_SECONDS,
        "updated": _when(now), "day": _day, "when": _when,
        "statuses": STATUS_LABELS, "events": EVENT_NAMES,
        "open_count": sum(item.open for item in items),
    })


# -- export --------------------------------------------------------------------------------
class FormError(ValueError):
    """An export form that cannot be honoured, phrased for the page."""


def _dates(form: Mapping[str, Any]) -> tuple[date | None, date | None]:
    found: list[date | None] = []
    for field in ("received_from", "received_to"):
        text = _text(form, field).strip()
        try:
            found.append(date.fromisoformat(text) if text else None)
        except ValueError:
            raise FormError("日期格式应为 YYYY-MM-DD") from None
    start, end = found
    if start is not None and end is not None and start > end:
        raise FormError("开始日期不能晚于结束日期")
    return start, end


def _chosen(form: Any, field: str, allowed: Collection[str], what: str) -> list[str]:
    values = [v for v in form.getall(field, []) if isinstance(v, str)]
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise FormError(f"{what}不在可选范围内")
    return values


def export_filters(form: Any, user: dashboard.StaffContext,
                   sectors: tuple[str, ...] | None) -> ExportFilters:
    """The export form as filters, always inside the user's queues and sectors."""
    allowed_sectors = SECTOR_ORDER if sectors is None else sectors
    chosen_sectors = _chosen(form, "sector", allowed_sectors, "行业")
    statuses = _chosen(form, "status", STATUS_LABELS, "状态")
    risk_text = _text(form, "risk")
    if risk_text not in ("", "yes", "no"):
        raise FormError("风险筛选不在可选范围内")
    start, end = _dates(form)
    return ExportFilters(
        queues=user.scope.queues,
        sectors=chosen_sectors or sectors,
        received_from=start, received_to=end,
        statuses=statuses or None,
        risk={"yes": True, "no": False}.get(risk_text))


async def _export_page(request: web.Request, error: str | None = None,
                       form: Mapping[str, Any] | None = None, status: int = 200
                       ) -> web.Response:
    services = _services(request)
    user = dashboard.staff(request)
    sectors = sectors_of(user, services)
    codes = _codes(request)
    chosen = form or {}
    return await dashboard.render(request, "staff/export.html", {
        "sectors": [(s, codes.sector_name(s)) for s in (SECTOR_ORDER if sectors is None
                                                        else sectors)],
        "statuses": STATUS_LABELS, "masked": user.role not in PERSONAL_DATA_ROLES,
        "form": chosen,
        "picked": lambda field: set(chosen.getall(field, [])) if chosen else set(),
        "error": error,
    }, status=status)


async def export_view(request: web.Request) -> web.StreamResponse:
    """GET /staff/export: the filter form of the CSV export."""
    return await _export_page(request)


async def export_download(request: web.Request) -> web.StreamResponse:
    """POST /staff/export: the filtered complaints as CSV, masked and audited."""
    services = _services(request)
    user = dashboard.staff(request)
    form = await request.post()
    try:
        filters = export_filters(form, user, sectors_of(user, services))
    except FormError as error:
        return await _export_page(request, str(error), form, status=400)
    now = utcnow()
    async with services.sessions() as session, session.begin():
        export = await export_complaints(
            session, services.triage.directory, filters,
            may_see_personal=user.role in PERSONAL_DATA_ROLES, user_id=user.user_id,
            now=now, codes=_codes(request), excel_bom=_text(form, "excel") == "1")
    log.info("complaint export by staff user %d: %d rows, masked=%s",
             user.user_id, export.rows, export.masked)
    stamp = f"{now.astimezone(SHANGHAI):%Y%m%d-%H%M}"
    return _download(export.csv, "text/csv", f"xiaobao-complaints-{stamp}.csv")


# -- knowledge-base curation ---------------------------------------------------------------
async def curation_view(request: web.Request) -> web.StreamResponse:
    """GET /staff/curation: the most frequent questions the bot could not answer well."""
    services = _services(request)
    async with services.sessions() as session:
        rows = await most_unanswered(session, CURATION_LIMIT)
    base = services.knowledge.matcher.base_
    items = []
    for row in rows:
        entry = base.entry(row["best"]) if row["best"] else None
        items.append({**row, "best_title": entry.title if entry else None})
    return await dashboard.render(request, "staff/curation.html", {"items": items})


# -- wiring --------------------------------------------------------------------------------
def setup(app: web.Application) -> None:
    """Add the oversight pages (an extension of `dashboard.setup`, before it mounts)."""
    roles = OVERSIGHT_ROLES
    dashboard.add_page(app, "/reports", report_view, label="季度报告", roles=roles,
                       name="staff-reports")
    dashboard.add_page(app, "/reports.csv", report_csv, roles=roles, name="staff-reports-csv")
    dashboard.add_page(app, "/reports.json", report_json, roles=roles,
                       name="staff-reports-json")
    dashboard.add_page(app, "/risk", risk_view, label="舆情看板", roles=roles,
                       name="staff-risk")
    dashboard.add_page(app, "/export", export_view, label="数据导出", roles=roles,
                       name="staff-export-form")
    dashboard.add_page(app, "/export", export_download, roles=roles,
                       name="staff-export-download", method="POST")
    dashboard.add_page(app, "/curation", curation_view, label="知识库补充", roles=roles,
                       name="staff-curation")
