"""CSV export of complaint records: filters, coding, masking and the audit trail."""

from __future__ import annotations

import csv
import io
import tomllib
from dataclasses import replace
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from bot import db
from bot.exports import COLUMNS, ExportFilters, export_complaints, mask_name
from bot.models import AuditEntry, StaffUser
from classifiers.institutions import SPEC_FILE, Directory
from tests.synthetic_complaints import Spec, complaint_row, local

SPEC = tomllib.loads(SPEC_FILE.read_text(encoding="utf-8"))
BUSINESS_ZH = {item["id"]: item["zh"] for item in SPEC["business"]}
CAUSE_ZH = {item["id"]: item["zh"] for item in SPEC["cause"]}


def with_story(spec: Spec, story: str) -> Spec:
    return replace(spec, story=story.format(name=spec.name, phone=spec.phone))


SPECS = [
    # 23:30 on 31 March in Bengbu (15:30 UTC): a March complaint
    with_story(Spec(key=3, institution_id="icbc", queue_id="icbc", sector="bank",
                    business="bank-card", cause="fund-safety", status="received", risk=False,
                    agent_led=False, received_at=local(2026, 3, 31, 23, 30)),
               "我是{name}，电话{phone}，银行卡被盗刷了三千元。"),
    # 00:30 on 1 April in Bengbu, still 31 March in UTC: an April complaint
    with_story(Spec(key=4, institution_id="chinalife", queue_id="chinalife", sector="life",
                    business="life-insurance", cause="mis-selling", status="in_progress",
                    risk=True, agent_led=True, received_at=local(2026, 4, 1, 0, 30)),
               "=HYPERLINK(\"http://example.invalid\") 业务员说是存款，{name}被误导买了保险"),
    Spec(key=6, institution_id="picc-pc", queue_id="picc-pc", sector="property",
         business="car-insurance", cause="claims", status="resolved", risk=True,
         agent_led=False, received_at=local(2026, 3, 2, 10),
         resolved_at=local(2026, 3, 2, 10) + timedelta(days=20)),
    Spec(key=7, institution_id=None, queue_id="assoc-bank", sector="bank",
         business="other", cause="other", status="withdrawn", risk=False, agent_led=False,
         received_at=local(2026, 2, 14, 8), resolved_at=local(2026, 2, 15, 8)),
]


@pytest.fixture
async def sessions(database_url):
    await db.upgrade(database_url)
    engine = db.create_engine(database_url)
    sessions = db.create_sessionmaker(engine)
    async with sessions() as session, session.begin():
        session.add_all([complaint_row(spec) for spec in SPECS])
        session.add(StaffUser(username="regulator-1", display_name="监管测试", role="regulator"))
    yield sessions
    await engine.dispose()


async def export(sessions, filters=None, **kwargs):
    filters = filters or ExportFilters()
    async with sessions() as session, session.begin():
        user = await session.scalar(select(StaffUser))
        options = {"may_see_personal": False, "user_id": user.id, **kwargs}
        done = await export_complaints(session, Directory.load(), filters, **options)
    rows = list(csv.DictReader(io.StringIO(done.csv.removeprefix("\ufeff"))))
    return done, {row["tracking_no"]: row for row in rows}


async def audits(sessions) -> list[AuditEntry]:
    async with sessions() as session:
        return list((await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all())


async def test_masked_export_hides_personal_data_everywhere(sessions):
    done, rows = await export(sessions)
    assert done.rows == 4 and done.masked
    for spec in SPECS:
        row = rows[f"TS-{spec.key:06d}"]
        assert row["name"] == mask_name(spec.name) == spec.name[0] + "*" * (len(spec.name) - 1)
        assert row["phone"] == f"{spec.phone[:3]}****{spec.phone[-4:]}"
        assert spec.name not in done.csv and spec.phone not in done.csv
    assert rows["TS-000003"]["id_number"].startswith("110101") and "*" in rows[
        "TS-000003"]["id_number"]
    assert rows["TS-000004"]["id_number"] == ""
    assert "139****0003" in rows["TS-000003"]["story"]
    [entry] = await audits(sessions)
    assert entry.action == "export" and entry.complaint_id is None
    assert entry.detail["rows"] == 4 and entry.detail["masked"] is True
    assert entry.detail["filters"] == {"queues": None, "sectors": None, "received_from": None,
                                       "received_to": None, "statuses": None, "risk": None}


async def test_a_role_that_may_see_personal_data_gets_it_and_that_is_audited(sessions):
    done, rows = await export(sessions, may_see_personal=True)
    assert not done.masked
    first = rows["TS-000003"]
    assert (first["name"], first["phone"]) == (SPECS[0].name, SPECS[0].phone)
    assert SPECS[0].phone in first["story"]
    assert len(first["id_number"]) == 18 and "*" not in first["id_number"]
    [entry] = await audits(sessions)
    assert entry.detail["masked"] is False and entry.user_id is not None


async def test_business_line_cause_sector_and_status_are_coded_twice(sessions):
    _, rows = await export(sessions)
    assert list(next(iter(rows.values()))) == list(COLUMNS)
    for spec in SPECS:
        row = rows[f"TS-{spec.key:06d}"]
        assert (row["business"], row["business_zh"]) == (spec.business,
                                                          BUSINESS_ZH[spec.business])
        assert (row["cause"], row["cause_zh"]) == (spec.cause, CAUSE_ZH[spec.cause])
        assert row["sector"] == spec.sector and row["status"] == spec.status
    assert rows["TS-000004"]["sector_zh"] == "人身险"
    assert rows["TS-000004"]["institution_name"] == "中国人寿保险股份有限公司蚌埠分公司"
    assert rows["TS-000007"]["queue_name"] == "蚌埠市银行业协会"
    assert rows["TS-000007"]["institution_id"] == ""
    assert rows["TS-000006"]["days_to_resolution"] == "20.00"
    assert rows["TS-000006"]["overdue"] == "1"  # resolved on day 20 of 15
    assert rows["TS-000007"]["overdue"] == "0"  # withdrawn on day 1
    assert rows["TS-000003"]["received_at"] == "2026-03-31T23:30:00+08:00"
    assert rows["TS-000004"]["risk"] == "1" and rows["TS-000004"]["risk_reasons"] == "media"


async def test_free_text_that_looks_like_a_formula_is_neutralised(sessions):
    _, rows = await export(sessions)
    assert rows["TS-000004"]["story"].startswith("'=HYPERLINK")


@pytest.mark.parametrize(("filters", "expected"), [
    (ExportFilters(received_to=date(2026, 3, 31)), {3, 6, 7}),   # local days, end included
    (ExportFilters(received_from=date(2026, 4, 1)), {4}),         # 31 March in UTC, April here
    (ExportFilters(received_from=date(2026, 3, 1), received_to=date(2026, 3, 31)), {3, 6}),
    (ExportFilters(queues=["icbc", "assoc-bank"]), {3, 7}),
    (ExportFilters(sectors=["life", "property"]), {4, 6}),
    (ExportFilters(statuses=["resolved", "withdrawn"]), {6, 7}),
    (ExportFilters(risk=True), {4, 6}),
    (ExportFilters(risk=False, sectors=["bank"]), {3, 7}),
    (ExportFilters(queues=[]), set()),
])
async def test_filters(sessions, filters, expected):
    done, rows = await export(sessions, filters)
    assert {int(number.split("-")[1]) for number in rows} == expected
    [entry] = await audits(sessions)
    assert entry.detail["rows"] == done.rows == len(expected)
    assert entry.detail["filters"] == filters.as_dict()


async def test_every_export_is_audited_even_an_empty_one(sessions):
    await export(sessions, ExportFilters(statuses=["awaiting_info"]))
    await export(sessions, ExportFilters(received_from=date(2026, 3, 1)), excel_bom=True)
    entries = await audits(sessions)
    assert [e.detail["rows"] for e in entries] == [0, 3]
    assert entries[1].detail["filters"]["received_from"] == "2026-03-01"


async def test_excel_bom_is_optional(sessions):
    plain, _ = await export(sessions)
    excel, _ = await export(sessions, excel_bom=True)
    assert not plain.csv.startswith("\ufeff") and excel.csv.startswith("\ufefftracking_no,")
