"""Server-side SVG charts for the oversight pages: volume per quarter, top institutions, causes.

People would rather look than read, but the dashboard must work without external
JavaScript or a CDN, so charts are plain SVG strings built here and embedded in the page.
Each chart keeps the numbers it draws (`Chart.bars`), and those are exactly the numbers of
the report's CSV and JSON (`Chart.as_dict`, `Chart.csv`), so a reader can always check a
bar against a figure.  Every label is XML-escaped; control characters that XML cannot
carry are dropped.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from bot.reports import QuarterlyReport, display_width

FONT = "'Noto Sans CJK SC','Noto Sans SC','Microsoft YaHei',sans-serif"
BAR_COLOUR = "#2f6db5"
AXIS_COLOUR = "#888888"
TEXT_COLOUR = "#222222"
FONT_SIZE = 13
LABEL_COLUMNS = 32  # longest label drawn, in terminal-style columns (CJK counts 2)
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Bar:
    """One bar: a stable key (id or quarter label), what to print, and the number."""

    key: str
    label: str
    value: float
    short: str = ""  # drawn on the axis when given (the whole label is in the tooltip)

    @property
    def axis_label(self) -> str:
        """What the axis shows: the short name if any, else the label."""
        return self.short or self.label

    def as_dict(self) -> dict[str, Any]:
        """JSON form (whole numbers stay whole)."""
        return {"key": self.key, "label": self.label, "value": _number(self.value)}


@dataclass(frozen=True)
class Chart:
    """An SVG chart and the numbers it shows."""

    kind: str
    title: str
    bars: tuple[Bar, ...]
    svg: str

    def as_dict(self) -> dict[str, Any]:
        """The chart's numbers as JSON (no SVG)."""
        return {"kind": self.kind, "title": self.title,
                "bars": [bar.as_dict() for bar in self.bars]}

    def csv(self) -> str:
        """The chart's numbers as CSV: key,label,value."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["key", "label", "value"])
        for bar in self.bars:
            writer.writerow([bar.key, bar.label, _number(bar.value)])
        return buffer.getvalue()


def xml_text(text: str) -> str:
    """Text safe inside an SVG element or a double- or single-quoted attribute."""
    return escape(_NOT_XML.sub("", text), {'"': "&quot;", "'": "&apos;"})


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 2)


def _shown(value: float) -> str:
    number = _number(value)
    return str(number) if isinstance(number, int) else f"{number:.2f}"


def _shorten(label: str, columns: int = LABEL_COLUMNS) -> str:
    """The label cut to fit `columns` terminal-style columns, with an ellipsis if cut."""
    if display_width(label) <= columns:
        return label
    kept = ""
    for ch in label:
        if display_width(kept + ch) > columns - 1:
            break
        kept += ch
    return kept + "…"


def axis_scale(value: float, integers: bool = True) -> tuple[float, float]:
    """A round axis maximum at or above value, and its grid step (at most five steps).

    Steps are 1, 2, 2.5 or 5 times a power of ten; counts (`integers`) get whole steps.
    """
    if value <= 0:
        return 1.0, 1.0
    power = 10.0 ** math.floor(math.log10(value / 5))
    for scale in (power, power * 10):
        for multiple in (1, 2, 2.5, 5):
            step = multiple * scale
            if integers and (step < 1 or not float(step).is_integer()):
                continue
            steps = math.ceil(round(value / step, 9))
            if steps <= 5:
                return step * steps, step
    return value, value


def _open(width: int, height: int, title: str) -> list[str]:
    safe = xml_text(title)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{safe}" '
        f'font-family="{xml_text(FONT)}" font-size="{FONT_SIZE}">',
        f"<title>{safe}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2:.0f}" y="22" text-anchor="middle" font-size="{FONT_SIZE + 2}" '
        f'font-weight="bold" fill="{TEXT_COLOUR}">{safe}</text>',
    ]


def _empty(parts: list[str], width: int, height: int) -> str:
    parts.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
                 f'fill="{AXIS_COLOUR}">暂无数据 No data</text>')
    return "\n".join([*parts, "</svg>"]) + "\n"


def column_svg(bars: Sequence[Bar], title: str, width: int = 640, height: int = 320) -> str:
    """Vertical bars with a value above each and the label below (few, short labels)."""
    parts = _open(width, height, title)
    if not bars:
        return _empty(parts, width, height)
    left, right, top, bottom = 56, 16, 44, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    integers = all(float(bar.value).is_integer() for bar in bars)
    ceiling, step = axis_scale(max(bar.value for bar in bars), integers)
    ticks = round(ceiling / step)
    for tick in range(ticks + 1):
        value = step * tick
        y = top + plot_h - plot_h * tick / ticks
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
                     f'stroke="#e6e6e6"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'fill="{AXIS_COLOUR}">{_shown(value)}</text>')
    slot = plot_w / len(bars)
    bar_w = max(min(slot * 0.6, 80), 2)
    for index, bar in enumerate(bars):
        h = plot_h * bar.value / ceiling
        x = left + slot * index + (slot - bar_w) / 2
        y = top + plot_h - h
        centre = x + bar_w / 2
        label = xml_text(bar.label)
        parts.append(f'<g><title>{label}: {_shown(bar.value)}</title>'
                     f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                     f'fill="{BAR_COLOUR}"/></g>')
        parts.append(f'<text x="{centre:.1f}" y="{y - 5:.1f}" text-anchor="middle" '
                     f'fill="{TEXT_COLOUR}">{_shown(bar.value)}</text>')
        parts.append(f'<text x="{centre:.1f}" y="{top + plot_h + 20:.1f}" '
                     f'text-anchor="middle" fill="{TEXT_COLOUR}">'
                     f'{xml_text(_shorten(bar.axis_label, 12))}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" '
                 f'y2="{top + plot_h}" stroke="{AXIS_COLOUR}"/>')
    return "\n".join([*parts, "</svg>"]) + "\n"


def bar_svg(bars: Sequence[Bar], title: str, width: int = 640) -> str:
    """Horizontal bars, one row per item, for long labels (institution and cause names)."""
    row_h, top, bottom, right = 26, 44, 16, 56
    height = top + row_h * max(len(bars), 1) + bottom
    parts = _open(width, height, title)
    if not bars:
        return _empty(parts, width, height)
    shown = [_shorten(bar.axis_label) for bar in bars]
    left = 12 + max(display_width(label) for label in shown) * FONT_SIZE * 0.55
    plot_w = max(width - left - right, 40)
    ceiling = max(bar.value for bar in bars) or 1
    for index, (bar, label) in enumerate(zip(bars, shown, strict=True)):
        y = top + row_h * index
        w = plot_w * bar.value / ceiling
        full = xml_text(bar.label)
        parts.append(f'<text x="{left - 8:.1f}" y="{y + row_h * 0.65:.1f}" text-anchor="end" '
                     f'fill="{TEXT_COLOUR}">{xml_text(label)}</text>')
        parts.append(f'<g><title>{full}: {_shown(bar.value)}</title>'
                     f'<rect x="{left:.1f}" y="{y + 4:.1f}" width="{w:.1f}" '
                     f'height="{row_h - 8}" fill="{BAR_COLOUR}"/></g>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + row_h * 0.65:.1f}" '
                     f'fill="{TEXT_COLOUR}">{_shown(bar.value)}</text>')
    parts.append(f'<line x1="{left:.1f}" y1="{top - 2}" x2="{left:.1f}" '
                 f'y2="{top + row_h * len(bars) + 2}" stroke="{AXIS_COLOUR}"/>')
    return "\n".join([*parts, "</svg>"]) + "\n"


# -- the three charts of the oversight pages ---------------------------------------------
def volume_chart(bars: Sequence[Bar], title: str = "季度投诉量 Complaints per quarter") -> Chart:
    """Complaints received per quarter, oldest first (bars from `volume_bars`)."""
    return Chart("volume", title, tuple(bars), column_svg(bars, title))


def institutions_chart(bars: Sequence[Bar],
                       title: str = "投诉量最多的机构 Institutions with most complaints"
                       ) -> Chart:
    """Institutions by complaints, most first (bars from `institution_bars`)."""
    return Chart("institutions", title, tuple(bars), bar_svg(bars, title))


def causes_chart(bars: Sequence[Bar], title: str = "投诉原因 Causes") -> Chart:
    """Complaints per cause (bars from `cause_bars`)."""
    return Chart("causes", title, tuple(bars), bar_svg(bars, title))


def volume_bars(report: QuarterlyReport) -> tuple[Bar, ...]:
    """The report's `volume` figures (last quarters up to the report's), oldest first."""
    return tuple(Bar(item.label, item.label, item.count) for item in report.volume)


def institution_bars(report: QuarterlyReport, limit: int = 10) -> tuple[Bar, ...]:
    """The report's institutions with complaints, most first, at most `limit`."""
    rows = [row for row in report.institutions if row.complaints.current > 0][:limit]
    return tuple(Bar(row.id, row.name, row.complaints.current, row.short) for row in rows)


def cause_bars(report: QuarterlyReport) -> tuple[Bar, ...]:
    """The report's causes with complaints, most first (ties in complaints.toml order)."""
    items = sorted((item for item in report.by_cause if item.count > 0),
                   key=lambda item: -item.count)
    return tuple(Bar(item.id, item.name, item.count) for item in items)


def report_charts(report: QuarterlyReport, limit: int = 10) -> dict[str, Chart]:
    """The three charts of a report page, keyed volume, institutions, causes."""
    label = f"{report.year}年第{report.quarter}季度"
    return {
        "volume": volume_chart(volume_bars(report)),
        "institutions": institutions_chart(
            institution_bars(report, limit),
            f"{label}投诉量最多的机构 Institutions with most complaints"),
        "causes": causes_chart(cause_bars(report), f"{label}投诉原因 Causes"),
    }
