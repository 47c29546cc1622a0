"""Charts drawn on the server as inline SVG (no charting library, no script): the health
page's fires by status (stacked bars), fire lag and overdue schedules (lines). Pure: values
in, markup out; every text is escaped.

    stacked_bars(labels, [{"success": 3.0, "failed": 1.0}, ...], colors=STATUS_COLORS, unit="fires/min",
                 ticks={0, 10, 20})
    lines(labels, {"avg lag": [0.4, None, ...], "max lag": [...]}, colors={...}, unit="s", width=HALF)

`labels` name the x positions (one per bucket); `ticks` are the positions whose label is
drawn under the axis (None: a few, evenly spaced); a None value is a gap. Each bar and
point carries a <title>, so hovering tells its numbers. `integer` keeps the axis on whole
numbers (counts); `width` is the drawing's own width (HALF for a chart in half a page, so
its text is not shrunk).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape

from markupsafe import Markup

WIDTH, HALF, HEIGHT = 960, 520, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 26, 30
X_LABELS = 7
# One colour per attempt status, the same on every chart and legend.
STATUS_COLORS = {  # static/dashboard.css's palette (render.py STATUS_TONE), a shade per status
    "success": "#1f9d55", "failed": "#d0342c", "timeout": "#8a1f18", "retrying": "#c77700",
    "running": "#2f6fed", "queued": "#7a5af5", "paused": "#a98bd6", "cancelled": "#8a93a3", "skipped": "#c3c8d1",
}
GRID = "#e9ecef"
INK = "#495057"


def nice_max(value: float, integer: bool = False) -> float:
    """The top of an axis drawn in four grid steps: four times the smallest 1, 2, 2.5 or 5
    times a power of ten at which four steps reach `value` (with `integer`, whole steps: at
    least 1, never 2.5)."""
    wanted = max(value, 0.0) / 4
    if wanted <= 0:
        return 4.0 if integer else 1.0
    if integer:
        wanted = max(wanted, 1.0)
    power = 10 ** math.floor(math.log10(wanted))
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * power
        if step >= wanted and not (integer and step != int(step)):
            return float(4 * step)
    return float(4 * 10 * power)


def _number(value: float) -> str:
    if abs(value - round(value)) < 1e-9 or abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _frame(labels: Sequence[str], top: float, unit: str, width: int, ticks: Iterable[int] | None) -> list[str]:
    """The axes: horizontal grid lines with their values, the x labels of `ticks`."""
    plot_w, plot_h = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = []
    for i in range(5):
        y = TOP + plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{width - RIGHT}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(top * (4 - i) / 4)}</text>')
    parts.append(f'<text x="4" y="{TOP - 12}" text-anchor="start" class="unit">{escape(unit)}</text>')
    if labels:
        shown = range(0, len(labels), max(1, math.ceil(len(labels) / X_LABELS))) if ticks is None else ticks
        slot = plot_w / len(labels)
        for i in shown:
            x = LEFT + slot * (i + 0.5)
            parts.append(f'<line x1="{x:.1f}" y1="{TOP + plot_h}" x2="{x:.1f}" y2="{TOP + plot_h + 4}" stroke="{INK}"/>')
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 10}" text-anchor="middle">{escape(labels[i])}</text>')
    return parts


def _svg(parts: list[str], title: str, width: int) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {HEIGHT}" width="100%" role="img" aria-label="{escape(title)}" '
        f'font-family="system-ui, sans-serif" font-size="11" fill="{INK}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def legend(colors: Mapping[str, str], shown: Sequence[str]) -> Markup:
    """An HTML legend of the named series (a swatch and a name each)."""
    items = "".join(f'<span><span class="swatch" style="background:{escape(colors[name])}">'
                    f"</span>{escape(name)}</span>" for name in shown)
    return Markup(f'<div class="chart-legend">{items}</div>')


def stacked_bars(labels: Sequence[str], values: Sequence[Mapping[str, float]], *, colors: Mapping[str, str],
                 unit: str, title: str = "", ticks: Iterable[int] | None = None, integer: bool = False,
                 width: int = WIDTH) -> Markup:
    """One bar per label, stacked by series in `colors`' order."""
    top = nice_max(max((sum(v.values()) for v in values), default=0.0), integer)
    plot_w, plot_h = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = _frame(labels, top, unit, width, ticks)
    slot = plot_w / max(1, len(values))
    bar_w = max(1.0, slot * 0.8)
    for i, stack in enumerate(values):
        x = LEFT + slot * i + (slot - bar_w) / 2
        base = TOP + plot_h
        tip = ", ".join(f"{name} {_number(stack[name])}" for name in colors if stack.get(name))
        for name, color in colors.items():
            value = stack.get(name) or 0.0
            if value <= 0:
                continue
            height = plot_h * value / top
            base -= height
            parts.append(f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{height:.1f}" '
                         f'fill="{escape(color)}"><title>{escape(labels[i])}: {escape(tip)}</title></rect>')
    return _svg(parts, title or unit, width)


def lines(labels: Sequence[str], series: Mapping[str, Sequence[float | None]], *, colors: Mapping[str, str],
          unit: str, title: str = "", ticks: Iterable[int] | None = None, width: int = WIDTH) -> Markup:
    """One polyline per series (broken at None values), a dot on every value; later series
    are drawn smaller, so a value two series share shows both colours."""
    top = nice_max(max((v for values in series.values() for v in values if v is not None), default=0.0))
    plot_w, plot_h = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = _frame(labels, top, unit, width, ticks)
    slot = plot_w / max(1, len(labels))
    for order, (name, values) in enumerate(series.items()):
        color = escape(colors.get(name, INK))
        radius = max(2.0, 4.5 - 1.5 * order)
        run: list[str] = []
        dots: list[str] = []
        for i, value in enumerate(values):
            if value is None:
                if len(run) > 1:
                    parts.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" stroke-width="2"/>')
                run = []
                continue
            x, y = LEFT + slot * (i + 0.5), TOP + plot_h * (1 - value / top)
            run.append(f"{x:.1f},{y:.1f}")
            dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{color}">'
                        f"<title>{escape(labels[i])}: {escape(name)} {_number(value)} {escape(unit)}</title></circle>")
        if len(run) > 1:
            parts.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.extend(dots)
    return _svg(parts, title or unit, width)
