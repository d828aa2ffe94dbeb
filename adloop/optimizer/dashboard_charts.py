"""Small SVG charts drawn on the server, shared by the dashboard and the static report.

Inline SVG needs no script and no network: the dashboard swaps it in as HTML, and the
static report embeds the same figures. Variants are named by their short labels (A, B, ...)
in a fixed colour each, so a legend always fits and the same variant has the same colour in
every figure; the full texts are in the table beside them.

Example::

    svg = interval_chart([("A", 0.021, 0.019, 0.024, None)], title="CTR")
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import datetime

__all__ = ["PALETTE", "bar_chart", "colour", "interval_chart", "line_chart", "share_chart"]

#: Okabe–Ito colours (readable by colour-blind readers), then greys for the rest.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000", "#999999", "#666666")  # fmt: skip
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def colour(index: int) -> str:
    """The colour of the ``index``-th variant."""
    return PALETTE[index % len(PALETTE)]


def _nice_step(span: float, ticks: int = 5) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _percent_tick(value: float, step: float) -> str:
    digits = max(0, -math.floor(math.log10(step * 100) + 1e-9)) if step > 0 else 0
    return f"{value * 100:.{digits}f} %"


def _svg(width: int, height: int, title: str, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{html.escape(label)}" {_FONT}>'
        f"<title>{html.escape(title)}</title>{''.join(body)}</svg>"
    )


def interval_chart(
    rows: Sequence[tuple[str, float, float, float, float | None]],
    *,
    title: str,
    axis: str = "CTR",
    marker: str | None = None,
) -> str:
    """Estimate and 95 % interval per variant, one row each: ``(label, mean, low, high, mark)``.

    ``mark`` (optional) is a second value drawn as a cross, e.g. a simulation's true CTR;
    ``marker`` names it in the caption line.
    """
    width, left, right, top, row_height = 640, 46, 20, 14, 26
    height = top + row_height * max(len(rows), 1) + 42
    values = [x for r in rows for x in (r[2], r[3], r[4]) if x is not None]
    high = max(values, default=0.01) * 1.08 or 0.01
    step = _nice_step(high)
    high = min(math.ceil(high / step) * step, 1.0)  # a rate never exceeds 100 %

    def x(value: float) -> float:
        return left + (width - left - right) * value / high

    body = []
    tick = 0.0
    while tick <= high + 1e-12:
        body.append(
            f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top - 4}" '
            f'y2="{height - 34}" stroke="#e3e3e3"/>'
            f'<text x="{x(tick):.1f}" y="{height - 22}" text-anchor="middle">'
            f"{_percent_tick(tick, step)}</text>"
        )
        tick += step
    for i, (label, mean, low, high_, mark) in enumerate(rows):
        y = top + row_height * i + row_height / 2
        ink = colour(i)
        body.append(
            f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end" font-weight="600">'
            f"{html.escape(label)}</text>"
            f'<line x1="{x(low):.1f}" x2="{x(high_):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{ink}" stroke-width="3"/>'
            f'<circle cx="{x(mean):.1f}" cy="{y:.1f}" r="4.5" fill="{ink}"/>'
        )
        if mark is not None:
            body.append(
                f'<path d="M{x(mark) - 4:.1f},{y - 4:.1f}l8,8m0,-8l-8,8" stroke="#222" '
                'stroke-width="1.6"/>'
            )
    caption = f"{axis}: dot = estimate, bar = 95 % interval" + (f"; × = {marker}" if marker else "")
    body.append(f'<text x="{left}" y="{height - 6}" fill="#555">{html.escape(caption)}</text>')
    return _svg(width, height, title, body, title)


def _time_label(when: datetime, span_seconds: float) -> str:
    if span_seconds >= 86400:
        return f"{when:%b %d}"
    return f"{when:%H:%M}" if span_seconds < 3600 * 6 else f"{when:%b %d %H:%M}"


def share_chart(
    starts: Sequence[datetime | float],
    shares: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    span_seconds: float = 3600,
    x_label: str | None = None,
) -> str:
    """Stacked columns: each time bucket's share of impressions per variant (labels A, B ...).

    ``shares`` is ``(label, impressions per bucket)`` per variant; ``starts`` are the buckets'
    start times (datetimes) or numbers (e.g. simulated hours).
    """
    width, left, right, top, bottom = 640, 46, 12, 10, 58
    height = 240
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(starts)
    totals = [sum(series[i] for _, series in shares) for i in range(n)]
    body = []
    for tick in range(0, 101, 25):
        y = top + plot_h * (1 - tick / 100)
        body.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick} %</text>'
        )
    column = plot_w / max(n, 1)
    for i in range(n):
        base = 0.0
        for index, (label, series) in enumerate(shares):
            if not totals[i] or not series[i]:
                continue
            part = series[i] / totals[i]
            y = top + plot_h * (1 - base - part)
            body.append(
                f'<rect x="{left + column * i + 0.5:.1f}" y="{y:.1f}" '
                f'width="{max(column - 1, 1):.1f}" height="{plot_h * part:.1f}" '
                f'fill="{colour(index)}"><title>{html.escape(label)}: '
                f"{part * 100:.1f} %</title></rect>"
            )
            base += part
    every = max(1, math.ceil(n / 6))
    for i in range(0, n, every):
        start = starts[i]
        text = _time_label(start, span_seconds) if isinstance(start, datetime) else f"{start:g}"
        body.append(
            f'<text x="{left + column * (i + 0.5):.1f}" y="{top + plot_h + 14}" '
            f'text-anchor="middle">{html.escape(text)}</text>'
        )
    if x_label:
        body.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 28}" text-anchor="middle" '
            f'fill="#555">{html.escape(x_label)}</text>'
        )
    x_cursor = left
    for index, (label, _) in enumerate(shares):
        body.append(
            f'<rect x="{x_cursor}" y="{height - 16}" width="10" height="10" '
            f'fill="{colour(index)}"/><text x="{x_cursor + 14}" y="{height - 7}">'
            f"{html.escape(label)}</text>"
        )
        x_cursor += 22 + 7 * len(label)
    return _svg(width, height, title, body, title)


def line_chart(
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    title: str,
    x_label: str,
    y_label: str,
    integer_x: bool = False,
) -> str:
    """One line over numbers (e.g. cumulative regret per simulated hour)."""
    width, left, right, top, bottom = 640, 58, 14, 12, 44
    height = 230
    plot_w, plot_h = width - left - right, height - top - bottom
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y1 = max([*ys, 0.0]) or 1.0
    y0 = min([*ys, 0.0])
    x_step = max(_nice_step(x1 - x0), 1.0) if integer_x else _nice_step(x1 - x0)
    y_step = _nice_step(y1 - y0)
    y1 = math.ceil(y1 / y_step) * y_step

    def px(value: float) -> float:
        return left + plot_w * (value - x0) / ((x1 - x0) or 1.0)

    def py(value: float) -> float:
        return top + plot_h * (1 - (value - y0) / ((y1 - y0) or 1.0))

    body = []
    tick = math.floor(y0 / y_step) * y_step
    while tick <= y1 + 1e-9:
        body.append(
            f'<line x1="{left}" x2="{width - right}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
            f'stroke="#e3e3e3"/><text x="{left - 6}" y="{py(tick) + 4:.1f}" '
            f'text-anchor="end">{tick:g}</text>'
        )
        tick += y_step
    tick = math.ceil(x0 / x_step) * x_step
    while tick <= x1 + 1e-9:
        body.append(
            f'<text x="{px(tick):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{tick:g}</text>'
        )
        tick += x_step
    points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(xs, ys, strict=True))
    body.append(f'<polyline points="{points}" fill="none" stroke="{colour(5)}" stroke-width="2"/>')
    body.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="#555">'
        f"{html.escape(x_label)}</text>"
        f'<text transform="translate(12 {top + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle" fill="#555">{html.escape(y_label)}</text>'
    )
    return _svg(width, height, title, body, title)


def bar_chart(
    bars: Sequence[tuple[str, float | None, str]],
    *,
    title: str,
    y_label: str,
    as_percent: bool = True,
) -> str:
    """Vertical bars ``(label, value, note)``; a None value is drawn as a labelled gap.

    Used for retraining rounds: one bar per round, its note ("rejected", "promoted") under it.
    """
    width, left, right, top, bottom = 640, 58, 14, 12, 50
    height = 230
    plot_w, plot_h = width - left - right, height - top - bottom
    high = max([v for _, v, _ in bars if v is not None] or [1.0]) * 1.1 or 1.0
    step = _nice_step(high)
    high = math.ceil(high / step) * step
    body = []
    tick = 0.0
    while tick <= high + 1e-12:
        y = top + plot_h * (1 - tick / high)
        text = _percent_tick(tick, step) if as_percent else f"{tick:g}"
        body.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{text}</text>'
        )
        tick += step
    column = plot_w / max(len(bars), 1)
    for i, (label, value, note) in enumerate(bars):
        centre = left + column * (i + 0.5)
        muted = note.startswith(("rejected", "failed", "skipped"))
        if value is not None:
            bar_h = plot_h * value / high
            ink = 'fill="#bbbbbb" stroke="#D55E00" stroke-dasharray="4 2"' if muted else (
                f'fill="{colour(0)}"'
            )  # fmt: skip
            body.append(
                f'<rect x="{centre - column * 0.3:.1f}" y="{top + plot_h - bar_h:.1f}" '
                f'width="{column * 0.6:.1f}" height="{bar_h:.1f}" {ink}/>'
            )
        body.append(
            f'<text x="{centre:.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
            f"{html.escape(label)}</text>"
            f'<text x="{centre:.1f}" y="{top + plot_h + 28}" text-anchor="middle" '
            f'fill="{"#D55E00" if muted else "#555"}">{html.escape(note)}</text>'
        )
    body.append(
        f'<text transform="translate(12 {top + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle" fill="#555">{html.escape(y_label)}</text>'
    )
    return _svg(width, height, title, body, title)
