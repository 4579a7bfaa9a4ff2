"""The quarterly report, checked figure by figure against an independent count in the test.

The data are a synthetic quarter (tests/synthetic_complaints.py: generated, fictitious);
every expected figure below is computed here from the specs the test generated, following
the definitions of docs/reports.md, never by calling the report's own helpers.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tomllib
import unicodedata
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from bot import db
from bot.reports import (
    ReportError,
    check_period,
    quarter_bounds,
    quarter_of,
    quarterly_report,
    render_csv,
    render_json,
    render_text,
    shift_quarter,
)
from classifiers.institutions import DIRECTORY_FILE, SPEC_FILE, Directory
from tests.synthetic_complaints import (
    SHANGHAI,
    Spec,
    boundary_specs,
    edge_specs,
    insert,
    local,
    quarter_dataset,
)

REPO = Path(__file__).resolve().parents[1]
Q1_END = datetime(2026, 4, 1, tzinfo=SHANGHAI)
SPEC = tomllib.loads(SPEC_FILE.read_text(encoding="utf-8"))


# -- the independent computation -----------------------------------------------------------
def in_quarter(spec: Spec, year: int, quarter: int, tz: ZoneInfo = SHANGHAI) -> bool:
    """Membership by the local calendar month of receipt."""
    moment = spec.received_at.astimezone(tz)
    return moment.year == year and (moment.month - 1) // 3 + 1 == quarter


def expected_figures(specs: list[Spec], as_of: datetime,
                     sectors: set[str] | None = None) -> dict:
    """Every figure of the 2026Q1 report, from the specs, as docs/reports.md defines it."""
    def scoped(s: Spec) -> bool:
        return sectors is None or s.sector in sectors

    now = [s for s in specs if in_quarter(s, 2026, 1) and scoped(s)]
    before = [s for s in specs if in_quarter(s, 2025, 4) and scoped(s)]

    def closed_by(s: Spec) -> datetime | None:
        ok = s.status in ("resolved", "withdrawn") and s.resolved_at is not None
        return s.resolved_at if ok and s.resolved_at <= as_of else None

    resolved = [s for s in now if s.status == "resolved" and closed_by(s)]
    withdrawn = [s for s in now if s.status == "withdrawn" and closed_by(s)]
    not_withdrawn = [s for s in now if s not in withdrawn]
    decided = [s for s in not_withdrawn
               if s in resolved or s.received_at + timedelta(days=15) <= as_of]
    within = [s for s in resolved if s.resolved_at - s.received_at <= timedelta(days=15)]
    overdue = [s for s in now if (closed_by(s) or as_of) > s.deadline_at]
    days = sorted((s.resolved_at - s.received_at) / timedelta(days=1) for s in resolved)
    return {
        "total": len(now), "previous": len(before),
        "by_institution": Counter(s.institution_id for s in now if s.institution_id),
        "previous_by_institution": Counter(s.institution_id for s in before
                                           if s.institution_id),
        "unattributed": sum(s.institution_id is None for s in now),
        "unattributed_previous": sum(s.institution_id is None for s in before),
        "business": Counter(s.business for s in now),
        "cause": Counter(s.cause for s in now),
        "within": len(within), "decided": len(decided),
        "pending": len(not_withdrawn) - len(decided),
        "overdue": len(overdue), "resolved": len(resolved),
        "median": statistics.median(days) if days else None,
        "withdrawn": len(withdrawn),
        "risk": sum(s.risk for s in now), "agent_led": sum(s.agent_led for s in now),
    }


def expected_top(by_institution: Counter, sector: str, directory: Directory) -> list[str]:
    """The documented rule: most complaints first, equal counts by institution id."""
    members = [i.id for i in directory.members(sector) if by_institution[i.id] > 0]
    return sorted(members, key=lambda i: (-by_institution[i], i))[:3]


async def build_report(url: str, **kwargs):
    engine = db.create_engine(url)
    try:
        async with db.create_sessionmaker(engine)() as session:
            return await quarterly_report(session, kwargs.pop("directory", Directory.load()),
                                          2026, 1, **kwargs)
    finally:
        await engine.dispose()


@pytest.fixture
async def quarter_url(database_url):
    """A database of each kind holding the synthetic quarter."""
    await insert(database_url, quarter_dataset())
    return database_url


# -- every figure --------------------------------------------------------------------------
@pytest.mark.parametrize("as_of", [Q1_END, datetime(2026, 3, 1, 12, tzinfo=SHANGHAI)],
                         ids=["quarter-end", "mid-quarter"])
async def test_every_figure_matches_an_independent_count(quarter_url, as_of):
    specs = quarter_dataset()
    want = expected_figures(specs, as_of.astimezone(UTC))
    report = await build_report(quarter_url, as_of=as_of)

    assert report.total.current == want["total"]
    assert report.total.previous == want["previous"]
    assert report.total.delta == want["total"] - want["previous"]
    assert report.total.percent == pytest.approx(
        100 * (want["total"] - want["previous"]) / want["previous"])
    assert report.unattributed.current == want["unattributed"]
    assert report.unattributed.previous == want["unattributed_previous"]

    directory = Directory.load()
    listed = {row.id: row for row in report.institutions}
    assert set(listed) == {i.id for i in directory.members()}
    for institution in directory.members():
        row = listed[institution.id]
        current = want["by_institution"][institution.id]
        previous = want["previous_by_institution"][institution.id]
        assert (row.complaints.current, row.complaints.previous) == (current, previous)
        assert row.complaints.delta == current - previous
        if previous:
            assert row.complaints.percent == pytest.approx(100 * (current - previous) / previous)
        else:
            assert row.complaints.percent is None
        assert row.name == institution.name and row.sector == institution.sector
    counts = [row.complaints.current for row in report.institutions]
    assert counts == sorted(counts, reverse=True)

    assert [(c.id, c.name, c.count) for c in report.by_business] == [
        (item["id"], item["zh"], want["business"][item["id"]]) for item in SPEC["business"]]
    assert [(c.id, c.name, c.count) for c in report.by_cause] == [
        (item["id"], item["zh"], want["cause"][item["id"]]) for item in SPEC["cause"]]

    handling = report.handled_within_15
    assert (handling.within, handling.decided_or_due, handling.pending) == (
        want["within"], want["decided"], want["pending"])
    assert handling.share == pytest.approx(want["within"] / want["decided"])
    assert (handling.decided_or_due + handling.pending + report.withdrawn
            == report.total.current)
    assert report.overdue == want["overdue"]
    assert report.resolved == want["resolved"]
    assert report.median_days_to_resolution == pytest.approx(want["median"])
    assert report.withdrawn == want["withdrawn"]
    assert report.risk_flagged == want["risk"]
    assert report.agent_led == want["agent_led"]
    assert report.as_of == as_of


async def test_top_three_per_sector_with_ties_at_the_top_and_at_the_cut(quarter_url):
    report = await build_report(quarter_url, as_of=Q1_END)
    want = expected_figures(quarter_dataset(), Q1_END)
    directory = Directory.load()
    tops = {top.sector: top for top in report.top}
    assert list(tops) == ["bank", "life", "property"]
    for sector, top in tops.items():
        assert [row.id for row in top.entries] == expected_top(
            want["by_institution"], sector, directory)
    # As designed in the synthetic data: icbc and ccb tie at 14 (ccb first by id); abc and
    # boc tie at 9 for third place: abc is third, boc is reported as tied at the cut.
    assert [(r.id, r.complaints.current) for r in tops["bank"].entries] == [
        ("ccb", 14), ("icbc", 14), ("abc", 9)]
    assert tops["bank"].tied_at_cut == ("boc",)
    assert [r.id for r in tops["life"].entries] == ["chinalife", "pingan-life", "cpic-life"]
    assert tops["life"].tied_at_cut == ()
    assert [r.id for r in tops["property"].entries] == ["picc-pc", "pingan-pc"]
    assert tops["bank"].name == "银行"


async def test_change_from_the_previous_quarter(quarter_url):
    report = await build_report(quarter_url, as_of=Q1_END)
    icbc, ccb, abc, boc = (report.institution(i) for i in ("icbc", "ccb", "abc", "boc"))
    assert (icbc.complaints.delta, icbc.complaints.percent) == (4, pytest.approx(40.0))
    assert (ccb.complaints.previous, ccb.complaints.percent) == (0, None)  # from nothing
    assert abc.complaints.percent == 0.0
    assert (boc.complaints.delta, boc.complaints.percent) == (-3, pytest.approx(-25.0))
    hsbank = report.institution("hsbank")
    assert (hsbank.complaints.current, hsbank.complaints.previous) == (0, 3)
    assert hsbank.complaints.percent == pytest.approx(-100.0)
    assert report.total.current == 114 and report.total.previous == 83
    assert [(q.label, q.count) for q in report.volume] == [
        ("2025Q2", 2), ("2025Q3", 7), ("2025Q4", 83), ("2026Q1", 114)]


# -- quarter boundaries in local time ------------------------------------------------------
async def test_quarter_boundaries_are_local_midnights_in_shanghai(database_url):
    edges = [s for s in edge_specs(6000) if s.key in (6004, 6005)]
    outside = boundary_specs(5000)
    await insert(database_url, [*edges, *outside])
    report = await build_report(database_url, as_of=Q1_END)
    # 2026-01-01 00:00 (16:00 UTC on 31 December) and 2026-03-31 23:30 (15:30 UTC) are in;
    # 2025-12-31 23:59:59, 2026-04-01 00:00 and 00:30 (still 31 March in UTC) are not.
    assert report.total.current == 2
    assert report.total.previous == 1
    assert [(q.label, q.count) for q in report.volume][-2:] == [("2025Q4", 1), ("2026Q1", 2)]
    # The same rows on the UTC calendar: 2026-04-01 00:00 and 00:30 Shanghai fall in Q1,
    # 2026-01-01 00:00 Shanghai and 2025-12-31 23:59:59 Shanghai in Q4.
    in_utc = await build_report(database_url, as_of=Q1_END, tz="UTC")
    assert in_utc.total.current == 3
    assert in_utc.total.previous == 2
    assert in_utc.start == datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))


def test_quarter_arithmetic():
    start, end = quarter_bounds(2026, 1)
    assert start == datetime(2026, 1, 1, tzinfo=SHANGHAI)
    assert end == datetime(2026, 4, 1, tzinfo=SHANGHAI)
    assert start.astimezone(UTC) == datetime(2025, 12, 31, 16, tzinfo=UTC)
    assert quarter_bounds(2026, 4)[1] == datetime(2027, 1, 1, tzinfo=SHANGHAI)
    assert shift_quarter(2026, 1, -1) == (2025, 4)
    assert shift_quarter(2025, 4, 1) == (2026, 1)
    assert shift_quarter(2026, 1, -5) == (2024, 4)
    assert quarter_of(local(2026, 3, 31, 23, 30)) == (2026, 1)
    assert quarter_of(local(2026, 4, 1, 0, 30)) == (2026, 2)
    assert quarter_of(local(2026, 4, 1, 0, 30), "UTC") == (2026, 1)


@pytest.mark.parametrize(("year", "quarter"), [(2026, 0), (2026, 5), (1999, 1), (2101, 2)])
def test_impossible_periods_are_refused_in_one_line(year, quarter):
    with pytest.raises(ReportError) as raised:
        check_period(year, quarter)
    assert "\n" not in str(raised.value)


async def test_unknown_time_zone_is_a_report_error(database_url):
    await insert(database_url, [])
    with pytest.raises(ReportError, match="time zone"):
        await build_report(database_url, tz="Mars/Olympus")


# -- scoping and branches ------------------------------------------------------------------
async def test_a_sector_scoped_report_counts_only_those_sectors(quarter_url):
    specs = quarter_dataset()
    insurance = {"life", "property"}
    want = expected_figures(specs, Q1_END, insurance)
    report = await build_report(quarter_url, as_of=Q1_END, sectors=["property", "life"])
    assert report.sectors == ("life", "property")
    assert report.total.current == want["total"] and report.total.previous == want["previous"]
    assert {row.sector for row in report.institutions} == insurance
    assert [top.sector for top in report.top] == ["life", "property"]
    assert report.overdue == want["overdue"]
    assert report.risk_flagged == want["risk"]
    assert report.handled_within_15.within == want["within"]
    assert {c.id: c.count for c in report.by_cause} == {
        item["id"]: want["cause"][item["id"]] for item in SPEC["cause"]}
    assert report.institution("icbc") is None


def directory_with_branches(tmp_path: Path, branches: dict[str, object]) -> Path:
    document = yaml.safe_load(DIRECTORY_FILE.read_text(encoding="utf-8"))
    for entry in document["institutions"]:
        if entry["id"] in branches:
            entry["branches"] = branches[entry["id"]]
    path = tmp_path / "institutions.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


async def test_complaints_per_branch_only_where_the_directory_gives_branches(quarter_url,
                                                                              tmp_path):
    directory = Directory.load(directory_with_branches(tmp_path, {"icbc": 20, "chinalife": 8}))
    report = await build_report(quarter_url, as_of=Q1_END, directory=directory)
    assert [row.id for row in report.per_branch] == ["icbc", "chinalife"]
    assert report.institution("icbc").per_branch == pytest.approx(14 / 20)
    assert report.institution("chinalife").per_branch == pytest.approx(12 / 8)
    assert report.institution("ccb").per_branch is None
    assert report.institution("ccb").branches is None
    data = report.as_dict()
    icbc = next(row for row in data["institutions"] if row["id"] == "icbc")
    assert (icbc["branches"], icbc["per_branch"]) == (20, 0.7)
    assert "per_branch,0.7" in render_csv(report)


@pytest.mark.parametrize("bad", [0, -3, "many", 2.5, True])
def test_a_bad_branch_count_stops_the_directory_load(tmp_path, bad):
    with pytest.raises(ValueError, match="branches"):
        Directory.load(directory_with_branches(tmp_path, {"icbc": bad}))


def test_the_shipped_directory_invents_no_branch_counts():
    assert all(i.branches is None for i in Directory.load().institutions.values())


# -- renderers -----------------------------------------------------------------------------
def width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def table_after(text: str, heading: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return lines[start:end]


async def test_text_is_an_aligned_table_with_chinese_and_english_headings(quarter_url):
    text = render_text(await build_report(quarter_url, as_of=Q1_END))
    assert "季度投诉报告 Quarterly complaint report" in text and "2026Q1" in text
    for heading in ("总体 Summary", "各行业前三名 Top three per sector",
                    "各机构投诉量 Complaints per institution", "按业务 By business line",
                    "按原因 By cause", "季度投诉量 Volume per quarter"):
        table = table_after(text, heading)
        rule = table[1]
        assert set(rule) <= {"-", " "}
        # numeric last columns are right-aligned: every row ends where the rule ends
        assert all(width(line) == width(rule) for line in table), heading
    institutions = table_after(text, "各机构投诉量 Complaints per institution")
    assert institutions[2].startswith("中国建设银行蚌埠分行")  # ccb: 14, first by id
    assert "注 Note:" in text and "boc" in text


async def test_json_and_csv_carry_the_same_figures(quarter_url):
    report = await build_report(quarter_url, as_of=Q1_END)
    want = expected_figures(quarter_dataset(), Q1_END)
    data = json.loads(render_json(report))
    assert data["total"] == {"current": 114, "previous": 83, "delta": 31,
                             "percent": round(100 * 31 / 83, 1)}
    assert data["overdue"] == want["overdue"]
    assert data["handled_within_15_days"]["within"] == want["within"]
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert set(rows[0]) == {"section", "key", "label", "sector", "metric", "value"}
    value = {(r["section"], r["key"], r["metric"]): r["value"] for r in rows}
    assert value[("summary", "total", "current")] == "114"
    assert value[("summary", "overdue", "count")] == str(want["overdue"])
    assert value[("institution", "icbc", "percent")] == "40.0"
    assert value[("institution", "ccb", "percent")] == ""
    assert value[("top", "abc", "rank")] == "3"
    assert value[("top", "boc", "tied_at_cut")] == "3"
    assert value[("cause", "claims", "count")] == str(want["cause"]["claims"])
    assert value[("volume", "2025Q4", "count")] == "83"


# -- the command line ----------------------------------------------------------------------
def xiaobao(*args: str, url: str):
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True,
                          cwd=REPO, env={**os.environ, "XIAOBAO_DATABASE_URL": url},
                          timeout=120, text=True)


@pytest.fixture
async def cli_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'report.db'}"
    await insert(url, quarter_dataset())
    return url


def test_report_quarterly_in_three_formats(cli_url):
    want = expected_figures(quarter_dataset(), Q1_END)
    base = ("report", "quarterly", "--year", "2026", "--quarter", "1")

    text = xiaobao(*base, url=cli_url)
    assert text.returncode == 0, text.stderr
    assert "季度投诉报告 Quarterly complaint report  2026年第1季度 (2026Q1)" in text.stdout
    top = table_after(text.stdout, "各行业前三名 Top three per sector")
    assert [line.split()[2] for line in top[2:5]] == [
        "中国建设银行蚌埠分行", "中国工商银行蚌埠分行", "中国农业银行蚌埠分行"]

    as_json = xiaobao(*base, "--format", "json", url=cli_url)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["label"] == "2026Q1" and data["as_of"] == "2026-04-01T00:00:00+08:00"
    assert data["total"]["current"] == want["total"]
    assert data["overdue"] == want["overdue"]
    assert data["withdrawn"] == want["withdrawn"]
    assert data["median_days_to_resolution"] == round(want["median"], 2)
    assert [e["id"] for e in data["top"][0]["entries"]] == ["ccb", "icbc", "abc"]
    counts = {row["id"]: row["complaints"]["current"] for row in data["institutions"]}
    assert counts == {i.id: want["by_institution"][i.id] for i in Directory.load().members()}

    as_csv = xiaobao(*base, "--format", "csv", url=cli_url)
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    totals = {r["metric"]: r["value"] for r in rows if r["key"] == "total"}
    assert totals["current"] == str(want["total"])

    life = xiaobao(*base, "--format", "json", "--sector", "life", url=cli_url)
    assert json.loads(life.stdout)["sectors"] == ["life"]


@pytest.mark.parametrize("args", [
    ("--year", "2026", "--quarter", "5"),
    ("--year", "2026", "--quarter", "0"),
    ("--year", "twenty", "--quarter", "1"),
    ("--year", "1999", "--quarter", "1"),
    ("--quarter", "1"),
    ("--year", "2026", "--quarter", "1", "--format", "xml"),
])
def test_bad_year_or_quarter_exits_2_with_one_line(args, tmp_path):
    done = xiaobao("report", "quarterly", *args, url=f"sqlite:///{tmp_path / 'x.db'}")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
