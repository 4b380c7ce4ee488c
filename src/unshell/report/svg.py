"""The reports' inline SVG, drawn from a result's numbers: the layer heatmap, small line charts and
the std-profile band. Every text from a model's files is escaped (`markup.safe_text`); each
function returns `Markup`, which the templates print as it is.

Each fact is readable without colour: heatmap cells carry their value (or, when the grid is too
dense for digits, a tooltip) and the best cell of each row is outlined and marked with a triangle;
line charts tell A from B by line style and marker shape.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup

from ..lineage.compare import PROFILE_NULL_ABOVE_09, PROFILE_NULL_MAX, PROFILE_NULL_MEDIAN
from .markup import safe_text

__all__ = ["change_bars_svg", "heatmap_svg", "line_chart_svg", "profile_band_svg"]

_SCALE = (
    (0.0, (247, 251, 255)),
    (0.25, (198, 219, 239)),
    (0.5, (107, 174, 214)),
    (0.75, (33, 113, 181)),
    (1.0, (8, 48, 107)),
)


def colour(value: float) -> str:
    """Sequential light-to-dark blue for a similarity in [0, 1] (clamped); darker is more alike."""
    v = min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
    for (x0, c0), (x1, c1) in itertools.pairwise(_SCALE):
        if v <= x1:
            t = (v - x0) / (x1 - x0)
            return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(c0, c1, strict=True))
    return "#08306b"


def _svg_open(width: float, height: float, ident: str, title: str, desc: str) -> str:
    return (
        f'<svg role="img" aria-labelledby="{ident}-t {ident}-d" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}"><title id="{ident}-t">{safe_text(title)}</title>'
        f'<desc id="{ident}-d">{safe_text(desc)}</desc>'
    )


def _ticks(count: int, target: int = 24) -> int:
    return max(1, math.ceil(count / target))


def _tick_positions(count: int, target: int = 24) -> list[int]:
    """Every n-th index and the last, leaving out a regular tick too close to the last one."""
    step = _ticks(count, target)
    positions = [i for i in range(0, count, step)]
    if positions and positions[-1] != count - 1:
        if count - 1 - positions[-1] < step / 2 and len(positions) > 1:
            positions.pop()
        positions.append(count - 1)
    return positions


@dataclass(frozen=True)
class _Grid:
    """The heatmap's geometry: B's layers are rows, A's columns, ``cell`` pixels square, the first
    cell's corner at (``left``, ``top``); ``best[i]``: the column of row i's highest value."""

    layers_a: Sequence[int]
    layers_b: Sequence[int]
    matrix: Sequence[Sequence[float]]
    cell: int
    left: float
    top: float
    best: list[int]


def heatmap_svg(
    layers_a: Sequence[int], layers_b: Sequence[int], matrix: Sequence[Sequence[float]]
) -> Markup:
    """B's layers (rows) against A's (columns), with the best cell of every row outlined and
    marked (``class="best"``, ``data-b`` and ``data-a`` name the layers)."""
    na, nb = len(layers_a), len(layers_b)
    grid = _Grid(
        layers_a,
        layers_b,
        matrix,
        cell=max(8, min(44, 640 // max(na, nb, 1))),
        left=74.0,
        top=62.0,
        best=[max(range(na), key=row.__getitem__) if row else -1 for row in matrix],
    )
    legend_x = grid.left + na * grid.cell + 24
    height = max(grid.top + nb * grid.cell + 20, grid.top + 220)
    desc = "; ".join(
        f"B layer {layers_b[i]} best matches A layer {layers_a[j]} ({matrix[i][j]:.2f})"
        for i, j in enumerate(grid.best)
        if j >= 0
    )
    title = "Similarity of each layer of B (rows) to each layer of A (columns)"
    out = [_svg_open(legend_x + 80, height, "heatmap", title, desc)]
    out += _heatmap_axes(grid)
    out += _heatmap_cells(grid)
    out += _heatmap_best_marks(grid)
    out += _heatmap_scale(legend_x, grid.top)
    out.append("</svg>")
    return Markup("".join(out))  # every text in it went through safe_text


def _heatmap_axes(grid: _Grid) -> list[str]:
    na, nb, cell, left, top = len(grid.layers_a), len(grid.layers_b), grid.cell, grid.left, grid.top
    out = [
        f'<text x="{left + na * cell / 2:.1f}" y="16" text-anchor="middle" font-size="13" '
        f'font-weight="600">A\'s layers (the reference) →</text>',
        f'<text transform="translate(16 {top + nb * cell / 2:.1f}) rotate(-90)" text-anchor="middle" '
        f'font-size="13" font-weight="600">B\'s layers ↓</text>',
    ]
    for j in _tick_positions(na):
        out.append(
            f'<text x="{left + j * cell + cell / 2:.1f}" y="{top - 8:.1f}" text-anchor="middle" '
            f'font-size="11">{grid.layers_a[j]}</text>'
        )
    for i in _tick_positions(nb):
        out.append(
            f'<text x="{left - 8:.1f}" y="{top + i * cell + cell / 2 + 4:.1f}" text-anchor="end" '
            f'font-size="11">{grid.layers_b[i]}</text>'
        )
    return out


def _heatmap_cells(grid: _Grid) -> list[str]:
    """One rect per cell with its value as a tooltip; digits too when the cells are big enough."""
    cell, left, top = grid.cell, grid.left, grid.top
    out = ['<g stroke="#ffffff" stroke-width="0.5">']
    for i, row in enumerate(grid.matrix):
        for j, value in enumerate(row):
            x, y = left + j * cell, top + i * cell
            out.append(
                f'<rect x="{x:.0f}" y="{y:.0f}" width="{cell}" height="{cell}" fill="{colour(value)}">'
                f"<title>B {grid.layers_b[i]} / A {grid.layers_a[j]}: {value:.3f}</title></rect>"
            )
    out.append("</g>")
    if cell < 30:
        return out
    out.append(f'<g text-anchor="middle" font-size="{10 if cell < 38 else 11}">')
    for i, row in enumerate(grid.matrix):
        for j, value in enumerate(row):
            x, y = left + j * cell + cell / 2, top + i * cell + cell / 2 + 4
            weight = ' font-weight="700"' if j == grid.best[i] else ""
            fill = "#ffffff" if value > 0.55 else "#1b1f24"
            out.append(f'<text x="{x:.0f}" y="{y:.0f}" fill="{fill}"{weight}>{value:.2f}</text>')
    out.append("</g>")
    return out


def _heatmap_best_marks(grid: _Grid) -> list[str]:
    """Each row's best cell outlined, with a triangle in its corner."""
    cell, out = grid.cell, []
    for i, j in enumerate(grid.best):
        if j < 0:
            continue
        x, y = grid.left + j * cell, grid.top + i * cell
        size = max(5.0, cell * 0.32)
        layer_b, layer_a = grid.layers_b[i], grid.layers_a[j]
        out.append(
            f'<rect class="best" data-b="{layer_b}" data-a="{layer_a}" x="{x + 1.25:.1f}" '
            f'y="{y + 1.25:.1f}" width="{cell - 2.5:.1f}" height="{cell - 2.5:.1f}" fill="none" '
            f'stroke="#000000" stroke-width="2.5"><title>best match: B layer {layer_b} is closest '
            f"to A layer {layer_a}</title></rect>"
        )
        out.append(
            f'<polygon points="{x + 2:.1f},{y + 2:.1f} {x + 2 + size:.1f},{y + 2:.1f} {x + 2:.1f},{y + 2 + size:.1f}" '
            f'fill="#000000" stroke="#ffffff" stroke-width="0.75" aria-hidden="true"/>'
        )
    return out


def _heatmap_scale(legend_x: float, top: float) -> list[str]:
    """The colour scale, with the best-cell marker explained."""
    steps, bar = 10, 160.0
    out = [f'<text x="{legend_x:.1f}" y="{top - 8:.1f}" font-size="11">similarity</text>']
    for k in range(steps):
        value = 1 - k / steps
        out.append(
            f'<rect x="{legend_x:.1f}" y="{top + k * bar / steps:.1f}" width="16" height="{bar / steps:.1f}" '
            f'fill="{colour(value - 0.05)}" stroke="none"/>'
        )
    out.append(
        f'<rect x="{legend_x:.1f}" y="{top:.1f}" width="16" height="{bar:.0f}" fill="none" stroke="#57606a" stroke-width="0.75"/>'
    )
    for label, y in (("1.0", top + 4), ("0.5", top + bar / 2 + 4), ("0.0", top + bar + 4)):
        out.append(f'<text x="{legend_x + 22:.1f}" y="{y:.1f}" font-size="11">{label}</text>')
    ly = top + bar + 22
    out.append(
        f'<rect x="{legend_x:.1f}" y="{ly:.1f}" width="16" height="16" fill="none" stroke="#000000" stroke-width="2.5"/>'
        f'<polygon points="{legend_x + 2:.1f},{ly + 2:.1f} {legend_x + 8:.1f},{ly + 2:.1f} {legend_x + 2:.1f},{ly + 8:.1f}" fill="#000000"/>'
        f'<text x="{legend_x + 22:.1f}" y="{ly + 12:.1f}" font-size="11">best</text>'
    )
    return out


def _axis_number(value: float) -> str:
    return f"{value:.3g}"


def line_chart_svg(
    ident: str,
    title: str,
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    width: float = 300,
    height: float = 170,
    x_label: str = "layer",
) -> Markup:
    """Small line chart: one line per series, told apart by style and marker (solid with circles,
    dashed with squares), not by colour alone."""
    values = [v for _, ys in series for v in ys if v is not None and math.isfinite(v)]
    longest = max((len(ys) for _, ys in series), default=0)
    left, right, top, bottom = 52.0, 10.0, 34.0, 30.0
    plot_w, plot_h = width - left - right, height - top - bottom
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5 * abs(low or 1), high + 0.5 * abs(high or 1)
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad

    def px(i: int) -> float:
        return left + (plot_w * i / (longest - 1) if longest > 1 else plot_w / 2)

    def py(v: float) -> float:
        return top + plot_h * (1 - (v - low) / (high - low))

    legend = ", ".join(
        f"{name}: {', '.join('-' if v is None else f'{v:.4g}' for v in ys)}" for name, ys in series
    )
    out = [_svg_open(width, height, ident, title, legend)]
    out.append(f'<text x="{left:.0f}" y="14" font-size="12" font-weight="600">{safe_text(title)}</text>')
    out.append(
        f'<rect x="{left:.0f}" y="{top:.0f}" width="{plot_w:.0f}" height="{plot_h:.0f}" fill="none" '
        'stroke="#8c959f" stroke-width="0.75"/>'
    )
    for v in (low + pad, (low + high) / 2, high - pad):
        out.append(
            f'<text x="{left - 4:.0f}" y="{py(v) + 4:.1f}" text-anchor="end" font-size="10">{_axis_number(v)}</text>'
            f'<line x1="{left:.0f}" x2="{left + plot_w:.0f}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#d0d7de" stroke-width="0.5"/>'
        )
    step = _ticks(longest, 8)
    for i in range(longest):
        if i % step == 0 or i == longest - 1:
            out.append(
                f'<text x="{px(i):.1f}" y="{top + plot_h + 13:.1f}" text-anchor="middle" font-size="10">{i}</text>'
            )
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 3:.0f}" text-anchor="middle" font-size="10" '
        f'fill="#57606a">{safe_text(x_label)}</text>'
    )
    for index, (name, ys) in enumerate(series):
        out += _series_svg(index, name, ys, left + 150 + index * 52, px, py)
    out.append("</svg>")
    return Markup("".join(out))  # every text in it went through safe_text


# (colour, dash pattern, marker) of the first, second and third series of a line chart.
_SERIES_STYLES = (
    ("#0969da", "", "circle"),
    ("#cf222e", "5 3", "square"),
    ("#1a7f37", "2 2", "diamond"),
)


def _series_svg(
    index: int,
    name: str,
    ys: Sequence[float | None],
    legend_x: float,
    px: Callable[[int], float],
    py: Callable[[float], float],
) -> list[str]:
    """One series of a line chart: its legend entry at ``legend_x``, its line (broken where a
    value is missing) and its markers."""
    colour, dash, marker = _SERIES_STYLES[index % len(_SERIES_STYLES)]
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    out = [
        f'<line x1="{legend_x:.0f}" x2="{legend_x + 18:.0f}" y1="10" y2="10" stroke="{colour}" stroke-width="2"{dash_attr}/>'
        + _marker(marker, legend_x + 9, 10, colour)
        + f'<text x="{legend_x + 22:.0f}" y="14" font-size="11">{safe_text(name)}</text>'
    ]
    points: list[list[tuple[float, float]]] = [[]]
    for i, y_value in enumerate(ys):
        if y_value is None or not math.isfinite(y_value):
            points.append([])
            continue
        points[-1].append((px(i), py(y_value)))
    for run in points:
        if len(run) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.75"{dash_attr}/>'
            )
        for x, y in run:
            out.append(_marker(marker, x, y, colour))
    return out


def _marker(kind: str, x: float, y: float, colour: str) -> str:
    if kind == "square":
        return f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="#ffffff" stroke="{colour}" stroke-width="1.5"/>'
    if kind == "diamond":
        return (
            f'<polygon points="{x:.1f},{y - 4:.1f} {x + 4:.1f},{y:.1f} {x:.1f},{y + 4:.1f} {x - 4:.1f},{y:.1f}" '
            f'fill="{colour}"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>'


def profile_band_svg(value: float | None) -> Markup:
    """The std-profile correlation on a 0..1 axis (wider if negative), beside the band that
    independently trained same-architecture pairs occupy."""
    low = -1.0 if value is not None and value < 0 else 0.0
    width, height = 640.0, 118.0
    left, right = 20.0, 20.0
    plot = width - left - right

    def px(v: float) -> float:
        return left + plot * (v - low) / (1.0 - low)

    axis_y = 70.0
    desc = f"independent pairs: median {PROFILE_NULL_MEDIAN}, maximum {PROFILE_NULL_MAX}; " + (
        "this pair: not computed" if value is None else f"this pair: {value:.3f}"
    )
    out = [
        _svg_open(width, height, "profile-band", "Std-profile correlation against independent pairs", desc)
    ]
    out.append(
        f'<rect x="{px(PROFILE_NULL_MEDIAN):.1f}" y="{axis_y - 26:.1f}" width="{px(PROFILE_NULL_MAX) - px(PROFILE_NULL_MEDIAN):.1f}" '
        f'height="26" fill="#d0d7de" stroke="#57606a" stroke-width="1" stroke-dasharray="3 2"/>'
    )
    out.append(
        f'<line x1="{px(low):.1f}" x2="{px(PROFILE_NULL_MEDIAN):.1f}" y1="{axis_y - 13:.1f}" y2="{axis_y - 13:.1f}" '
        'stroke="#57606a" stroke-width="1" stroke-dasharray="3 2"/>'
    )
    out.append(
        f'<text x="{px(PROFILE_NULL_MEDIAN) - 4:.1f}" y="{axis_y - 32:.1f}" text-anchor="end" font-size="11">'
        f"independent pairs: upper half {PROFILE_NULL_MEDIAN}-{PROFILE_NULL_MAX} "
        f"({PROFILE_NULL_ABOVE_09:.0%} above 0.9)</text>"
    )
    out.append(
        f'<line x1="{px(low):.1f}" x2="{px(1.0):.1f}" y1="{axis_y:.1f}" y2="{axis_y:.1f}" stroke="#1b1f24" stroke-width="1"/>'
    )
    ticks = [low + k * (1.0 - low) / 10 for k in range(11)]
    for t in ticks:
        out.append(
            f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{axis_y:.1f}" y2="{axis_y + 5:.1f}" stroke="#1b1f24"/>'
            f'<text x="{px(t):.1f}" y="{axis_y + 17:.1f}" text-anchor="middle" font-size="10">{t:.1f}</text>'
        )
    out.append(
        f'<text x="{px((low + 1) / 2):.1f}" y="{axis_y + 32:.1f}" text-anchor="middle" font-size="10" '
        'fill="#57606a">correlation of per-layer weight std profiles</text>'
    )
    if value is not None and math.isfinite(value):
        x = px(min(max(value, low), 1.0))
        out.append(
            f'<polygon points="{x:.1f},{axis_y - 2:.1f} {x - 7:.1f},{axis_y - 14:.1f} {x + 7:.1f},{axis_y - 14:.1f}" fill="#1b1f24"/>'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{axis_y - 14:.1f}" y2="{axis_y:.1f}" stroke="#1b1f24" stroke-width="2"/>'
            f'<text x="{x:.1f}" y="{axis_y - 48:.1f}" text-anchor="{"end" if value > 0.6 else "start"}" '
            f'font-size="12" font-weight="700">this pair: {value:.3f} ▼</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))  # every text in it went through safe_text


# Fill of a bar by what the layer's change is (the kind is also written beside each bar).
_KIND_FILL = {
    "copied": "#8c959f",
    "requantized": "#54aeff",
    "fine-tuned": "#0969da",
    "new": "#cf222e",
    "not compared": "#d0d7de",
}


def change_bars_svg(ident: str, title: str, rows: Sequence[tuple[str, float | None, str]]) -> Markup:
    """One horizontal bar per row (a layer of B): its relative change from its source in A on a
    square-root axis (a copy's 0 and a rewrite's 1 on one chart), with the value and the kind
    written beside it, so the chart reads without colour."""
    values = [v for _, v, _ in rows if v is not None and math.isfinite(v)]
    high = max([*values, 0.01])
    left, right, top, bar, gap = 84.0, 190.0, 26.0, 12.0, 4.0
    plot = 320.0
    width = left + plot + right
    height = top + len(rows) * (bar + gap) + 22

    def length(v: float) -> float:
        return plot * math.sqrt(max(v, 0.0) / high)

    desc = "; ".join(f"{label}: {'-' if v is None else f'{v:.3g}'} ({kind})" for label, v, kind in rows)
    out = [_svg_open(width, height, ident, title, desc)]
    out.append(f'<text x="{left:.0f}" y="14" font-size="12" font-weight="600">{safe_text(title)}</text>')
    for index, (label, value, kind) in enumerate(rows):
        y = top + index * (bar + gap)
        out.append(
            f'<text x="{left - 6:.0f}" y="{y + bar - 2:.1f}" text-anchor="end" font-size="10">{safe_text(label)}</text>'
        )
        shown = 0.0 if value is None or not math.isfinite(value) else length(value)
        fill = _KIND_FILL.get(kind, "#8c959f")
        out.append(
            f'<rect x="{left:.0f}" y="{y:.1f}" width="{max(shown, 1.0):.1f}" height="{bar:.0f}" fill="{fill}"/>'
        )
        text = f"{'-' if value is None else f'{value:.3g}'} {kind}"
        out.append(
            f'<text x="{left + shown + 4:.1f}" y="{y + bar - 2:.1f}" font-size="10">{safe_text(text)}</text>'
        )
    axis_y = top + len(rows) * (bar + gap) + 12
    for fraction in (0.0, 0.25, 1.0):
        x = left + plot * math.sqrt(fraction)
        out.append(
            f'<text x="{x:.1f}" y="{axis_y:.0f}" text-anchor="middle" font-size="9" fill="#57606a">{_axis_number(high * fraction)}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))  # every text in it went through safe_text
