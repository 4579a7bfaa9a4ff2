"""The oversight pages over real HTTP: quarterly report, public-opinion board, export, curation.

Staff sign in through the real form (the helpers of tests/test_dashboard.py) against the
service's own application on a fresh SQLite database.  The report's data are a synthetic
quarter (tests/synthetic_complaints.py, fictitious); the board and export data are filed
as the consumer dialogue files them.  The page's figures are checked against
`quarterly_report` for the same scope, and every route against every role.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from bot.app import create_app
from bot.models import AuditEntry, StaffUser, UnansweredQuestion, utcnow
from bot.reports import quarter_of, quarterly_report, render_csv
from tests.synthetic_complaints import complaint_row, quarter_dataset
from tests.test_browser import ARTIFACTS, CHROMIUM_FLAGS
from tests.test_dashboard import PASSWORD, Browser, Factory, services_of

PAGES = ("/staff/reports", "/staff/reports.csv", "/staff/reports.json", "/staff/risk",
         "/staff/export", "/staff/curation")
OVERSIGHT = (("assoc-bank-li", "association", "assoc-bank"),
             ("assoc-ins-zhao", "association", "assoc-insurance"),
             ("cbirc-chen", "regulator", None),
             ("root-admin", "admin", None))
Q1 = "year=2026&quarter=1"
SECTORS = {"assoc-bank-li": ("bank",), "assoc-ins-zhao": ("life", "property"),
           "cbirc-chen": None, "root-admin": None}
FIGURE = re.compile(r'data-figure="([\w-]+)">([^<]*)<')
INSTITUTION_ROW = re.compile(r'<tr data-institution="([\w-]+)">.*?<td class="current">(\d+)</td>',
                             re.S)


@pytest.fixture
async def server(aiohttp_server, config, knowledge_index):
    return await aiohttp_server(create_app(config, knowledge_index))


@pytest.fixture
def data(server) -> Factory:
    return Factory(server.app)


@pytest.fixture
async def people(server, data) -> AsyncIterator:
    """Open a signed-in HTTP client per person; all are closed at the end."""
    opened: list[Browser] = []

    async def sign_in(username: str, role: str, queue: str | None = None) -> Browser:
        await data.staff(username, role, queue)
        person = Browser(server)
        opened.append(person)
        response = await person.login(username)
        assert response.status == 303, response.body
        return person

    yield sign_in
    for person in opened:
        await person.http.close()


async def synthetic_quarter(app) -> None:
    """2026Q1 and its neighbours, generated (fictitious people), as complaint rows."""
    async with services_of(app).sessions() as session, session.begin():
        session.add_all([complaint_row(spec) for spec in quarter_dataset()])


async def expected_report(app, username: str):
    services = services_of(app)
    async with services.sessions() as session:
        return await quarterly_report(session, services.triage.directory, 2026, 1,
                                      sectors=SECTORS[username])


# -- who may open what ---------------------------------------------------------------------
async def test_institution_staff_get_404_for_every_oversight_route_and_no_links(people):
    icbc = await people("icbc-wang", "institution", "icbc")
    for path in PAGES:
        response = await icbc.get(path)
        assert response.status == 404, path
        assert "页面不存在" in response.body
    assert (await icbc.post("/staff/export", {})).status == 404
    queue = await icbc.get("/staff/")
    for path in ("/staff/reports", "/staff/risk", "/staff/export", "/staff/curation"):
        assert f'href="{path}"' not in queue.body


@pytest.mark.parametrize(("username", "role", "queue"), OVERSIGHT)
async def test_oversight_roles_open_every_page_and_see_the_links(people, username, role,
                                                                  queue):
    person = await people(username, role, queue)
    for path in PAGES:
        response = await person.get(path)
        assert response.status == 200, path
        assert response.headers["Cache-Control"] == "no-store"
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    home = await person.get("/staff/")
    for path in ("/staff/reports", "/staff/risk", "/staff/export", "/staff/curation"):
        assert f'href="{path}"' in home.body
    assert 'href="/staff/users"' not in home.body or role == "admin"


async def test_pages_need_a_session(server):
    anonymous = Browser(server)
    try:
        for path in PAGES:
            response = await anonymous.get(path, allow_redirects=False)
            assert response.status == 303 and "/staff/login" in response.headers["Location"]
        assert (await anonymous.post("/staff/export", {}, csrf="x")).status == 403
    finally:
        await anonymous.http.close()


# -- the quarterly report ------------------------------------------------------------------
@pytest.mark.parametrize("username", ["assoc-bank-li", "assoc-ins-zhao", "cbirc-chen"])
async def test_report_page_figures_match_quarterly_report_for_the_same_scope(
        server, people, username):
    role, queue = next((r, q) for u, r, q in OVERSIGHT if u == username)
    await synthetic_quarter(server.app)
    person = await people(username, role, queue)
    report = await expected_report(server.app, username)

    page = await person.get(f"/staff/reports?{Q1}")
    assert page.status == 200
    figures = dict(FIGURE.findall(page.body))
    handling = report.handled_within_15
    assert figures["total"] == str(report.total.current)
    assert figures["previous"] == str(report.total.previous)
    assert figures["unattributed"] == str(report.unattributed.current)
    assert figures["pending"] == str(handling.pending)
    assert figures["overdue"] == str(report.overdue)
    assert figures["resolved"] == str(report.resolved)
    assert figures["withdrawn"] == str(report.withdrawn)
    assert figures["risk-flagged"] == str(report.risk_flagged)
    assert figures["agent-led"] == str(report.agent_led)
    assert f"（{handling.within}/{handling.decided_or_due}）" in figures["handled-share"]
    assert figures["median-days"] == f"{report.median_days_to_resolution:.1f}"
    rows = dict(INSTITUTION_ROW.findall(page.body))
    assert rows == {row.id: str(row.complaints.current) for row in report.institutions}
    for top in report.top:
        for entry in top.entries:
            assert f'data-sector="{top.sector}" data-institution="{entry.id}"' in page.body
    assert page.body.count("<svg") == 3 and "<script" not in page.body.split("</head>")[1]
    if role == "regulator":
        assert "只读" in page.body

    sectors = {row.sector for row in report.institutions}
    if username == "assoc-bank-li":
        assert sectors == {"bank"} and "chinalife" not in rows and "icbc" in rows
    elif username == "assoc-ins-zhao":
        assert sectors == {"life", "property"} and "icbc" not in rows
    else:
        assert sectors == {"bank", "life", "property"}


@pytest.mark.parametrize("username", ["assoc-bank-li", "cbirc-chen"])
async def test_csv_and_json_downloads_are_the_same_report_in_the_same_scope(
        server, people, username):
    role, queue = next((r, q) for u, r, q in OVERSIGHT if u == username)
    await synthetic_quarter(server.app)
    person = await people(username, role, queue)
    report = await expected_report(server.app, username)

    as_json = await person.get(f"/staff/reports.json?{Q1}")
    assert as_json.status == 200 and as_json.content_type == "application/json"
    assert "attachment" in as_json.headers["Content-Disposition"]
    assert json.loads(as_json.body) == report.as_dict()

    as_csv = await person.get(f"/staff/reports.csv?{Q1}")
    assert as_csv.status == 200 and as_csv.content_type == "text/csv"
    assert as_csv.body == render_csv(report)
    keys = {row["key"] for row in csv.DictReader(io.StringIO(as_csv.body))
            if row["section"] == "institution"}
    if username == "assoc-bank-li":
        assert "icbc" in keys and not keys & {"chinalife", "picc-pc", "pingan-life"}
    else:
        assert {"icbc", "chinalife", "picc-pc"} <= keys


async def test_report_defaults_to_the_current_quarter(people):
    person = await people("cbirc-chen", "regulator")
    year, quarter = quarter_of(utcnow())
    page = await person.get("/staff/reports")
    assert page.status == 200 and f"{year}年第{quarter}季度" in page.body
    assert f'href="/staff/reports.csv?year={year}&amp;quarter={quarter}"' in page.body


@pytest.mark.parametrize("query", ["year=abc", "year=1999&quarter=1", "year=2026&quarter=5",
                                   "year=2026&quarter=0", "quarter=-1", "year=2026.5",
                                   "year=" + "9" * 5000])
async def test_bad_year_or_quarter_is_a_400_page_not_a_500(people, query):
    person = await people("cbirc-chen", "regulator")
    for path in ("/staff/reports", "/staff/reports.csv", "/staff/reports.json"):
        response = await person.get(f"{path}?{query}")
        assert response.status == 400, (path, query)
        assert "请求的参数有误" in response.body


# -- the public-opinion board --------------------------------------------------------------
async def test_board_shows_each_association_only_its_sectors_and_links_to_scoped_pages(
        people, data):
    bank_risk = await data.complaint("icbc", risk=("media",))
    insurer_risk = await data.complaint("chinalife", business="life-insurance",
                                        risk=("gathering",))
    calm = await data.complaint("ccb")
    bank = await people("assoc-bank-li", "association", "assoc-bank")
    insurance = await people("assoc-ins-zhao", "association", "assoc-insurance")
    regulator = await people("cbirc-chen", "regulator")

    seen = {}
    for name, person in (("bank", bank), ("insurance", insurance), ("regulator", regulator)):
        page = await person.get("/staff/risk")
        assert page.status == 200
        assert '<meta http-equiv="refresh" content="60">' in page.body
        seen[name] = set(re.findall(r'data-tracking="([^"]+)"', page.body))
        assert calm.tracking_no not in page.body
        assert "13800001234" not in page.body and "测试用户" not in page.body
    assert seen == {"bank": {bank_risk.tracking_no}, "insurance": {insurer_risk.tracking_no},
                    "regulator": {bank_risk.tracking_no, insurer_risk.tracking_no}}

    page = await bank.get("/staff/risk")
    assert f'href="/staff/complaints/{bank_risk.tracking_no}"' in page.body
    assert "提到媒体或网络曝光" in page.body and "新投诉" in page.body
    assert (await bank.get(f"/staff/complaints/{bank_risk.tracking_no}")).status == 200
    assert (await bank.get(f"/staff/complaints/{insurer_risk.tracking_no}")).status == 404
    assert (await insurance.get(f"/staff/complaints/{bank_risk.tracking_no}")).status == 404
    assert (await regulator.get(f"/staff/complaints/{insurer_risk.tracking_no}")).status == 200
    # read only: the regulator may look but not act
    assert "只读" in (await regulator.get("/staff/risk")).body
    await regulator.get(f"/staff/complaints/{bank_risk.tracking_no}")
    claim = await regulator.post(f"/staff/complaints/{bank_risk.tracking_no}/claim")
    assert claim.status == 403


# -- export --------------------------------------------------------------------------------
def exported(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.removeprefix("\ufeff"))))


async def test_export_is_scoped_masked_and_audited(people, data):
    icbc = await data.complaint("icbc", risk=("media",))
    ccb = await data.complaint("ccb")
    insurer = await data.complaint("chinalife", business="life-insurance")
    bank = await people("assoc-bank-li", "association", "assoc-bank")
    insurance = await people("assoc-ins-zhao", "association", "assoc-insurance")
    regulator = await people("cbirc-chen", "regulator")

    form = await bank.get("/staff/export")
    assert form.status == 200 and 'value="life"' not in form.body and "已遮蔽" in form.body
    response = await bank.post("/staff/export", {"excel": "1"})
    assert response.status == 200 and response.content_type == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.body.startswith("\ufeff")
    rows = exported(response.body)
    assert {row["tracking_no"] for row in rows} == {icbc.tracking_no, ccb.tracking_no}
    for row in rows:
        assert row["phone"] == "138****1234" and row["name"] == "测***"
        assert row["id_number"] != "110101199003071234"
    assert "13800001234" not in response.body and "测试用户" not in response.body

    await insurance.get("/staff/export")
    rows = exported((await insurance.post("/staff/export", {})).body)
    assert {row["tracking_no"] for row in rows} == {insurer.tracking_no}

    await regulator.get("/staff/export")
    everything = await regulator.post("/staff/export", {})
    assert {row["tracking_no"] for row in exported(everything.body)} == {
        icbc.tracking_no, ccb.tracking_no, insurer.tracking_no}
    assert "13800001234" not in everything.body
    risky = await regulator.post("/staff/export", {"risk": "yes", "sector": "bank"})
    assert [row["tracking_no"] for row in exported(risky.body)] == [icbc.tracking_no]

    audits = await data.rows(AuditEntry, AuditEntry.action == "export")
    assert len(audits) == 4 and all(entry.detail["masked"] for entry in audits)
    by_user = {entry.user_id: entry for entry in audits}
    bank_audit = by_user[await user_id(data, "assoc-bank-li")]
    assert bank_audit.detail["rows"] == 2
    assert "assoc-bank" in bank_audit.detail["filters"]["queues"]
    assert bank_audit.detail["filters"]["sectors"] == ["bank"]
    regulator_audits = [e for e in audits if e.user_id == await user_id(data, "cbirc-chen")]
    assert sorted(e.detail["rows"] for e in regulator_audits) == [1, 3]
    assert regulator_audits[0].detail["filters"]["queues"] is None


async def user_id(data: Factory, username: str) -> int:
    (user,) = await data.rows(StaffUser, StaffUser.username == username)
    return user.id


@pytest.mark.parametrize("fields", [
    {"received_from": "2026-13-01"},
    {"received_from": "2026-03-02", "received_to": "2026-03-01"},
    {"sector": "life"},
    {"status": "lost"},
    {"risk": "maybe"},
])
async def test_bad_export_filters_are_a_400_form_and_nothing_is_exported(people, data, fields):
    bank = await people("assoc-bank-li", "association", "assoc-bank")
    await bank.get("/staff/export")
    response = await bank.post("/staff/export", fields)
    assert response.status == 400 and 'id="export-form"' in response.body
    assert await data.rows(AuditEntry, AuditEntry.action == "export") == []


async def test_export_without_csrf_token_is_refused(people, data):
    regulator = await people("cbirc-chen", "regulator")
    assert (await regulator.post("/staff/export", {}, csrf="")).status == 403
    assert await data.rows(AuditEntry, AuditEntry.action == "export") == []


# -- curation ------------------------------------------------------------------------------
async def test_curation_lists_logged_questions_most_frequent_first(server, people,
                                                                   knowledge_index):
    entry = knowledge_index.matcher.base_.entries[0]
    candidates = [{"entry_id": entry.id, "similarity": 0.31}]
    async with services_of(server.app).sessions() as session, session.begin():
        session.add_all([
            *(UnansweredQuestion(text="数字人民币钱包怎么注销", normalized="数字人民币 钱包 注销",
                                 score=0.2, candidates=candidates) for _ in range(3)),
            UnansweredQuestion(text="外币兑换有额度吗", normalized="外币 兑换 额度", score=0.1,
                               candidates=[]),
        ])
    person = await people("assoc-ins-zhao", "association", "assoc-insurance")
    page = await person.get("/staff/curation")
    assert page.status == 200
    rows = re.findall(r'<tr data-normalized="([^"]+)">\s*<td class="count">(\d+)</td>',
                      page.body)
    assert rows == [("数字人民币 钱包 注销", "3"), ("外币 兑换 额度", "1")]
    assert entry.title in page.body and entry.id in page.body


# -- a real browser ------------------------------------------------------------------------
@pytest.mark.browser
async def test_regulator_sees_the_report_charts_in_a_real_browser(chromium_path, server, data):
    playwright_api = pytest.importorskip("playwright.async_api")
    await synthetic_quarter(server.app)
    await data.staff("cbirc-chen", "regulator")
    problems: list[str] = []
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path,
                                                   headless=True, args=CHROMIUM_FLAGS)
        try:
            context = await browser.new_context(viewport={"width": 1366, "height": 900},
                                                locale="zh-CN")
            page = await context.new_page()
            page.set_default_timeout(15000)
            page.on("console", lambda message: problems.append(message.text)
                    if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            await page.goto(str(server.make_url(f"/staff/reports?{Q1}")))
            await page.fill("#username", "cbirc-chen")
            await page.fill("#password", PASSWORD)
            await page.click("#login")
            await page.wait_for_selector("#charts")
            assert "2026年第1季度" in await page.inner_text("h1")
            for key in ("volume", "institutions", "causes"):
                chart = page.locator(f"#chart-{key} svg")
                assert await chart.is_visible()
                box = await chart.bounding_box()
                assert box is not None and box["width"] > 200 and box["height"] > 100
                assert await page.locator(f"#chart-{key} svg rect").count() > 1
            assert "工商银行" in await page.inner_text("#chart-institutions")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "oversight-report.png"),
                                  full_page=True)
        finally:
            await browser.close()
    assert problems == []  # the CSP blocked nothing the page needs


async def test_no_oversight_page_leaks_another_sector_in_its_html(server, people, data):
    await synthetic_quarter(server.app)
    insurer = await data.complaint("chinalife", business="life-insurance", risk=("media",))
    bank = await people("assoc-bank-li", "association", "assoc-bank")
    for path in (f"/staff/reports?{Q1}", f"/staff/reports.json?{Q1}", "/staff/risk"):
        body = (await bank.get(path)).body
        assert "chinalife" not in body and insurer.tracking_no not in body, path
    services = services_of(server.app)
    async with services.sessions() as session:
        scoped = (await session.scalars(select(AuditEntry))).all()
    assert all(entry.action != "export" for entry in scoped)
