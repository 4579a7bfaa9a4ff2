"""Server-side SVG charts: well-formed, escaped, and drawing exactly the report's numbers."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

import pytest
from defusedxml import ElementTree

from bot import db
from bot.charts import (
    Bar,
    axis_scale,
    bar_svg,
    causes_chart,
    column_svg,
    institutions_chart,
    report_charts,
    volume_chart,
    xml_text,
)
from bot.reports import quarterly_report
from classifiers.institutions import Directory
from tests.synthetic_complaints import SHANGHAI, insert, quarter_dataset

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(\"x\")</script> & 'q' ]]> \x00\x07"


def parse(svg: str):
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root) -> list[str]:
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


@pytest.fixture
async def report(database_url):
    await insert(database_url, quarter_dataset())
    engine = db.create_engine(database_url)
    try:
        async with db.create_sessionmaker(engine)() as session:
            return await quarterly_report(session, Directory.load(), 2026, 1,
                                          as_of=datetime(2026, 4, 1, tzinfo=SHANGHAI))
    finally:
        await engine.dispose()


async def test_charts_draw_exactly_the_numbers_of_the_report_json(report):
    data = report.as_dict()
    charts = report_charts(report)
    assert set(charts) == {"volume", "institutions", "causes"}

    volume = charts["volume"]
    assert [(b["key"], b["value"]) for b in volume.as_dict()["bars"]] == [
        (item["label"], item["count"]) for item in data["volume"]]
    institutions = charts["institutions"]
    listed = [(row["id"], row["complaints"]["current"]) for row in data["institutions"]
              if row["complaints"]["current"] > 0][:10]
    assert [(b["key"], b["value"]) for b in institutions.as_dict()["bars"]] == listed
    causes = charts["causes"]
    assert sorted((b["key"], b["value"]) for b in causes.as_dict()["bars"]) == sorted(
        (item["id"], item["count"]) for item in data["by_cause"] if item["count"] > 0)
    values = [b["value"] for b in causes.as_dict()["bars"]]
    assert values == sorted(values, reverse=True)

    for chart in charts.values():
        root = parse(chart.svg)
        groups = list(root.iter(f"{SVG}g"))
        assert len(groups) == len(chart.bars)
        for group, bar in zip(groups, chart.bars, strict=True):
            assert group.find(f"{SVG}title").text.endswith(f": {bar.value}")
        rows = list(csv.DictReader(io.StringIO(chart.csv())))
        assert [(r["key"], int(r["value"])) for r in rows] == [
            (b.key, b.value) for b in chart.bars]


def test_bar_lengths_are_proportional_to_the_values():
    bars = [Bar("a", "甲", 10), Bar("b", "乙", 5), Bar("c", "丙", 0)]
    root = parse(bar_svg(bars, "t"))
    widths = [float(g.find(f"{SVG}rect").get("width")) for g in root.iter(f"{SVG}g")]
    assert widths[0] > 0 and widths[1] == pytest.approx(widths[0] / 2, abs=0.1)
    assert widths[2] == 0
    root = parse(column_svg(bars, "t"))
    heights = [float(g.find(f"{SVG}rect").get("height")) for g in root.iter(f"{SVG}g")]
    assert heights[1] == pytest.approx(heights[0] / 2, abs=0.1) and heights[2] == 0


@pytest.mark.parametrize("make", [volume_chart, institutions_chart, causes_chart])
def test_hostile_labels_and_titles_are_escaped_and_stay_well_formed(make):
    chart = make([Bar("k&<", HOSTILE, 3), Bar("k2", "正常机构", 1)], title=HOSTILE)
    assert "<script>" not in chart.svg
    root = parse(chart.svg)
    assert root.find(f"{SVG}script") is None and not list(root.iter(f"{SVG}script"))
    cleaned = HOSTILE.replace("\x00", "").replace("\x07", "")
    assert root.find(f"{SVG}title").text == cleaned
    assert root.get("aria-label") == cleaned
    assert any(cleaned in t for t in (g.find(f"{SVG}title").text
                                      for g in root.iter(f"{SVG}g")))
    assert chart.as_dict()["bars"][0] == {"key": "k&<", "label": HOSTILE, "value": 3}


def test_long_labels_are_shortened_on_the_axis_but_whole_in_the_tooltip():
    label = "资金安全（盗刷、错误扣款、冻结）以及其他很长很长的说明"
    root = parse(bar_svg([Bar("x", label, 2)], "t"))
    shown = texts(root)
    assert any(t.endswith("…") for t in shown)
    assert next(root.iter(f"{SVG}g")).find(f"{SVG}title").text == f"{label}: 2"


@pytest.mark.parametrize("render", [column_svg, bar_svg])
def test_empty_charts_say_so(render):
    root = parse(render([], "空 empty"))
    assert "暂无数据 No data" in texts(root)


@pytest.mark.parametrize(("value", "integers", "scale"), [
    (114, True, (125, 25)), (83, True, (100, 20)), (14, True, (15, 5)), (7, True, (8, 2)),
    (3, True, (3, 1)), (1, True, (1, 1)), (0, True, (1, 1)), (0.4, False, (0.4, 0.1)),
    (1000, True, (1000, 200)),
])
def test_axis_is_round_with_at_most_five_whole_steps(value, integers, scale):
    ceiling, step = axis_scale(value, integers)
    assert (ceiling, step) == pytest.approx(scale)
    assert ceiling >= value and round(ceiling / step) <= 5


async def test_institution_bars_use_short_names_on_the_axis(report):
    chart = report_charts(report)["institutions"]
    root = parse(chart.svg)
    shown = texts(root)
    assert "建设银行" in shown and "中国人寿" in shown
    first = next(root.iter(f"{SVG}g")).find(f"{SVG}title").text
    assert first == "中国建设银行蚌埠分行: 14"


def test_xml_text_escapes_for_elements_and_both_quote_styles():
    assert xml_text("a<b>&\"c'") == "a&lt;b&gt;&amp;&quot;c&apos;"
    assert xml_text("\x01ok\ufffe") == "ok"


# -- in a real browser ---------------------------------------------------------------------
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update"]


async def test_charts_render_in_headless_chromium(chromium_path, sqlite_url):
    playwright_api = pytest.importorskip("playwright.async_api")
    await insert(sqlite_url, quarter_dataset())
    engine = db.create_engine(sqlite_url)
    async with db.create_sessionmaker(engine)() as session:
        report = await quarterly_report(session, Directory.load(), 2026, 1,
                                        as_of=datetime(2026, 4, 1, tzinfo=SHANGHAI))
    await engine.dispose()
    charts = report_charts(report)
    html = ("<!doctype html><meta charset=utf-8><body style='margin:8px'>"
            + "".join(f"<figure id='{name}'>{chart.svg}</figure>"
                      for name, chart in charts.items()))
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path,
                                                   headless=True, args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 700, "height": 900})
        await page.set_content(html)
        for name, chart in charts.items():
            bars = page.locator(f"#{name} svg g rect")
            assert await bars.count() == len(chart.bars)
            boxes = [await bars.nth(i).bounding_box() for i in range(len(chart.bars))]
            assert max(box["width"] for box in boxes) > 50
            assert max(box["height"] for box in boxes) > 10
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "oversight-charts.png"), full_page=True)
        await browser.close()
