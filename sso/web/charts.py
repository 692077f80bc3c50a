"""Chart geometry for server-rendered SVG: no JavaScript, no external files.

These functions only compute coordinates; the templates draw them
(``admin_charts.html``) with the page's translated titles and a data table
under each chart, so every number stays readable without the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")


def nice_ticks(maximum: int, count: int = 4) -> list[int]:
    """Round axis ticks from 0 covering ``maximum`` (at least 0 and 1)."""
    if maximum <= 0:
        return [0, 1]
    raw = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(1, int(step))
    top = step * math.ceil(maximum / step)
    return list(range(0, top + 1, step))


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Bar:
    label: str
    short_label: str
    value: int
    y: float
    width: float
    height: float


@dataclass
class BarChart:
    """Horizontal bars: one row per item, long labels fit on the left."""

    width: int
    height: int
    left: int
    bars: list[Bar]
    ticks: list[tuple[int, float]]  # (value, x)
    plot_top: int
    plot_bottom: int


def bar_chart(items: list[tuple[str, int]], width: int = 640, row: int = 30, left: int = 200) -> BarChart:
    top, bottom_margin, right_margin = 10, 30, 50
    plot_width = width - left - right_margin
    ticks = nice_ticks(max((v for _, v in items), default=0))
    scale = plot_width / ticks[-1]
    bars = [
        Bar(
            label=label,
            short_label=shorten(label, 16),
            value=value,
            y=top + i * row + 5,
            width=round(value * scale, 1),
            height=row - 10,
        )
        for i, (label, value) in enumerate(items)
    ]
    plot_bottom = top + max(1, len(items)) * row
    return BarChart(
        width=width,
        height=plot_bottom + bottom_margin,
        left=left,
        bars=bars,
        ticks=[(t, round(left + t * scale, 1)) for t in ticks],
        plot_top=top,
        plot_bottom=plot_bottom,
    )


@dataclass
class Point:
    label: str
    value: int
    x: float
    y: float


@dataclass
class Series:
    name: str
    colour: str
    points: list[Point] = field(default_factory=list)

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x},{p.y}" for p in self.points)


@dataclass
class LineChart:
    """One line per series over the same labels (days)."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    series: list[Series]
    ticks: list[tuple[int, float]]  # (value, y)
    x_labels: list[tuple[str, float]]  # shown labels only, (text, x)


def line_chart(
    labels: list[str], series: list[tuple[str, list[int]]], width: int = 640, height: int = 260
) -> LineChart:
    left, right, top, bottom = 50, width - 20, 15, height - 40
    peak = max((v for _, values in series for v in values), default=0)
    ticks = nice_ticks(peak)
    y_scale = (bottom - top) / ticks[-1]
    step = (right - left) / max(1, len(labels) - 1)

    def x_of(i: int) -> float:
        return round(left + (i * step if len(labels) > 1 else (right - left) / 2), 1)

    out = []
    for n, (name, values) in enumerate(series):
        line = Series(name=name, colour=PALETTE[n % len(PALETTE)])
        line.points = [
            Point(label=labels[i], value=v, x=x_of(i), y=round(bottom - v * y_scale, 1)) for i, v in enumerate(values)
        ]
        out.append(line)
    every = max(1, math.ceil(len(labels) / 10))  # at most about ten date labels
    return LineChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        series=out,
        ticks=[(t, round(bottom - t * y_scale, 1)) for t in ticks],
        x_labels=[(label, x_of(i)) for i, label in enumerate(labels) if i % every == 0],
    )
