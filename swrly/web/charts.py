"""Stacked bar charts laid out on the server, for inline SVG (no scripts, no external files).

A chart is plain geometry; templates/charts/bar_chart.html draws it. Colours come from CSS
classes (`series-<key>`), since the CSP allows no inline styles.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, timedelta

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 26


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    total: int = 0

    @property
    def css_class(self) -> str:
        return "series-" + re.sub(r"[^a-z0-9]+", "-", self.key.lower()).strip("-")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css_class: str
    title: str


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    summary: str  # for aria-label: what the chart shows and its totals
    width: int
    height: int
    plot_left: int
    plot_right: int
    plot_bottom: int
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    series: list[Series]
    days: list[date]
    rows: list[tuple[date, list[int]]]  # the same numbers, for a table
    total: int


def last_days(today: date, count: int) -> list[date]:
    """`count` days ending with `today`, oldest first."""
    return [today - timedelta(days=offset) for offset in range(count - 1, -1, -1)]


def _nice_max(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least `value` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def stacked_bars(
    *,
    title: str,
    days: list[date],
    series: list[tuple[str, str]],
    counts: dict[tuple[date, str], int],
    unit: str,
) -> Chart:
    """One stacked bar per day, one segment per series with a count that day."""
    rows = [(day, [counts.get((day, key), 0) for key, _ in series]) for day in days]
    totals = [sum(row[index] for _, row in rows) for index in range(len(series))]
    shown = [Series(key, label, total) for (key, label), total in zip(series, totals, strict=True)]
    top = _nice_max(max((sum(values) for _, values in rows), default=0))
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / max(len(days), 1)
    bar_width = round(slot * 0.7, 2)
    bars: list[Bar] = []
    for index, (day, values) in enumerate(rows):
        x = round(LEFT + index * slot + (slot - bar_width) / 2, 2)
        base: float = TOP + plot_height
        for item, value in zip(shown, values, strict=True):
            if not value:
                continue
            height = round(value / top * plot_height, 2)
            base = round(base - height, 2)
            bars.append(
                Bar(
                    x=x,
                    y=base,
                    width=bar_width,
                    height=height,
                    css_class=item.css_class,
                    title=f"{day:%Y-%m-%d}: {value} {item.label}",
                )
            )
    x_ticks = [
        Tick(round(LEFT + index * slot + slot / 2, 2), f"{day:%m-%d}")
        for index, day in enumerate(days)
    ]
    y_ticks = [
        Tick(round(TOP + plot_height * (1 - f), 2), str(round(top * f))) for f in (0, 0.5, 1)
    ]
    if top == 1:
        y_ticks = [y_ticks[0], y_ticks[2]]
    total = sum(totals)
    breakdown = ", ".join(f"{s.total} {s.label}" for s in shown if s.total) or "none"
    span = f"{days[0]:%Y-%m-%d} to {days[-1]:%Y-%m-%d}" if days else ""
    return Chart(
        title=title,
        summary=f"{title}, {span} (UTC): {total} {unit} in all ({breakdown}).",
        width=WIDTH,
        height=HEIGHT,
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
        plot_bottom=TOP + plot_height,
        bars=bars,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        series=shown,
        days=days,
        rows=rows,
        total=total,
    )
