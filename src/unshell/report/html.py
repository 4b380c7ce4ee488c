"""HTML reports: `compare_html`, `audit_html`, `search_html` and `write_html`.

The page is one self-contained file: inline CSS, inline SVG drawn from the result's numbers, no
JavaScript, no fonts, and no web address at all (addresses quoted from model cards or licence
texts are shown defanged, ``https[:]//``, so that nothing in the file can load or link anything).
Every string that comes from a model's files (paths, tensor names, card values) is escaped:
those are chosen by whoever published the model.

Each fact is readable without colour: verdicts and levels are spelled out, heatmap cells carry
their value (or, when the grid is too dense for digits, a tooltip) and the best cell of each row
is outlined and marked with a triangle; line charts tell A from B by line style and marker shape.
"""

from __future__ import annotations

import html
import itertools
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..auditing.report import LEVELS, AuditResult
from ..formats.base import sanitize
from ..lineage.compare import (
    DERIVED_P,
    INDEPENDENT_P,
    PROFILE_NULL_ABOVE_09,
    PROFILE_NULL_MAX,
    PROFILE_NULL_MEDIAN,
    CompareResult,
    alignment_text,
    twins_text,
)
from ..tokenizers.report import TokenizerComparison

__all__ = ["audit_html", "compare_html", "search_html", "write_html"]

# --- text -----------------------------------------------------------------------------------------

_SCHEME = re.compile(r"(?i)\b(https?|ftps?|wss?|file)://")


def _e(value: Any, limit: int = 4096) -> str:
    """Any value as safe HTML text: control characters shown, markup escaped, addresses defanged."""
    text = sanitize("" if value is None else str(value), limit=limit)
    return _SCHEME.sub(lambda m: m.group(1) + "[:]//", html.escape(text, quote=True))


def _plain(value: Any, limit: int = 600) -> str:
    """A JSON-like value as one line of (unescaped) text."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        if set(value) >= {"value"}:
            text = _plain(value["value"], limit)
            return f"{text} [{value['source']}]" if value.get("source") else text
        text = "; ".join(f"{k}: {_plain(v, limit)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(_plain(v, limit) for v in value) if value else "none"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _p_text(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 1e-300" if p == 0 else f"{p:.3g}"


def _p_relation(p: float) -> str:
    """ "< 1e-300" or "= 3.2e-08": a p-value after "p"."""
    return "< 1e-300" if p == 0 else f"= {p:.3g}"


def _exp(value: float) -> str:
    """1e-06 -> "1e-6"."""
    mantissa, _, exponent = f"{value:.0e}".partition("e")
    return f"{mantissa}e{int(exponent)}"


def _percent(p: float) -> str:
    return f"{p:.0%}" if p >= 0.1 else f"{100 * p:.2g}%"


def chance_bound(p: float) -> str:
    """How unlikely: "below 1e-12" for tiny p-values, "about 3.2% (p = 0.032)" otherwise."""
    if p <= 1e-300:
        return "below 1e-300"
    if p < 1e-3:
        exponent = math.floor(-math.log10(p))
        return f"{'below' if p < 10.0**-exponent else 'about'} 1e-{exponent}"
    return f"about {_percent(p)} (p = {p:.2g})"


def _verdict_text(verdict: str, p: float | None, reason: str, how: Sequence[str]) -> tuple[str, str]:
    """(the verdict in one sentence, what its p-value means)."""
    derived_how = f" ({', '.join(how)})" if how else ""
    if verdict == "identical":
        return (
            f"B holds A's weights: the same values{derived_how}, proven by content hashes ({reason}).",
            "No p-value is needed: identical values cannot come from independent training.",
        )
    if verdict == "derived":
        assert p is not None
        return (
            f"B's weights were derived from A's, or both from a common ancestor{derived_how}: p {_p_relation(p)}.",
            f"The chance that independently trained models look this alike is {chance_bound(p)}. "
            f"'Derived' is only said when this chance is below {_exp(DERIVED_P)}. {reason}.",
        )
    if verdict == "independent":
        assert p is not None
        return (
            f"No sign that B's weights come from A's: p = {p:.2g}.",
            f"Independently trained models look at least this alike {_percent(p)} of the time, so "
            f"the weights show nothing beyond chance (a p-value of {INDEPENDENT_P} or more reads "
            "'independent'). This speaks of the weights only: the architecture or the tokenizer may "
            "still be borrowed, which the sections below report apart.",
        )
    if p is not None:
        return (
            f"Inconclusive: {reason}.",
            f"The chance that independently trained models look this alike is {chance_bound(p)}: too "
            f"large to claim derivation (that needs p < {_exp(DERIVED_P)}), too small to call the models "
            f"independent (p >= {INDEPENDENT_P}). No claim is made either way.",
        )
    return (
        f"Inconclusive: {reason}.",
        "The weight test could not run, so there is no p-value and no claim either way.",
    )


# --- page -----------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: #1b1f24; background: #fff; max-width: 1040px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 2px solid #d0d7de; }
h3 { font-size: 1.05em; margin: 18px 0 6px; }
section { margin: 28px 0; }
p { margin: 6px 0; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em;
  overflow-wrap: anywhere; }
.sub { color: #57606a; }
.small { font-size: 0.88em; }
nav ul { list-style: none; padding: 0; margin: 8px 0 0; display: flex; flex-wrap: wrap; gap: 4px 16px; }
nav a { color: #0a58ca; }
table { border-collapse: collapse; margin: 8px 0 12px; width: 100%; font-size: 0.93em; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top;
  overflow-wrap: break-word; }
th { background: #f6f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
.verdict { border: 2px solid #57606a; border-left-width: 12px; border-radius: 6px; padding: 12px 16px;
  margin: 14px 0; }
.verdict .word { font-weight: 700; letter-spacing: 0.04em; }
.verdict .headline { font-size: 1.15em; font-weight: 600; margin: 4px 0; }
.badge { display: inline-block; border: 1.5px solid currentColor; border-radius: 4px; padding: 0 6px;
  font-weight: 700; font-size: 0.85em; letter-spacing: 0.03em; white-space: nowrap; }
.lv-bad { border-color: #b42318; color: #8a1c12; }
.lv-warn { border-color: #b54708; color: #8a3a06; }
.lv-arch { border-color: #9a6700; color: #6f4a00; }
.lv-unsure { border-color: #6e40c9; color: #4f2c99; }
.lv-note { border-color: #0969da; color: #0550ae; }
.lv-ok { border-color: #1a7f37; color: #116329; }
.verdict.lv-bad { background: #fff1f0; } .verdict.lv-warn { background: #fff6ed; }
.verdict.lv-arch { background: #fffbe6; } .verdict.lv-unsure { background: #f6f2ff; }
.verdict.lv-note { background: #f0f7ff; } .verdict.lv-ok { background: #effaf2; }
.finding, .verdict { color: #1b1f24; }
.finding { border: 1px solid #d0d7de; border-left-width: 6px; border-radius: 4px; padding: 8px 12px;
  margin: 10px 0; }
.finding .advice { margin-top: 4px; }
.finding dl { margin: 6px 0 0; font-size: 0.88em; display: grid; grid-template-columns: max-content 1fr;
  gap: 2px 12px; }
.finding dt { color: #57606a; }
.finding dd { margin: 0; overflow-wrap: anywhere; }
.callout { border: 1px dashed #8c959f; border-radius: 4px; padding: 8px 12px; margin: 10px 0; }
.charts { display: flex; flex-wrap: wrap; gap: 8px 18px; }
figure { margin: 10px 0; }
figcaption { font-size: 0.88em; color: #57606a; max-width: 760px; }
svg { max-width: 100%; height: auto; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
ul.tight { margin: 4px 0; padding-left: 20px; }
blockquote { margin: 4px 0; padding-left: 10px; border-left: 3px solid #d0d7de; color: #424a53; }
footer { margin-top: 40px; color: #57606a; font-size: 0.85em; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; background: none; }
  nav { display: none; }
  section { break-before: page; page-break-before: always; }
  section.lead { break-before: auto; page-break-before: auto; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  figure, svg, tr, .finding, .verdict { break-inside: avoid; page-break-inside: avoid; }
  th, .verdict, .verdict.lv-bad, .verdict.lv-warn, .verdict.lv-arch, .verdict.lv-unsure,
  .verdict.lv-note, .verdict.lv-ok { background: none; }
  svg { print-color-adjust: exact; -webkit-print-color-adjust: exact; }
}
"""

_LEVEL_CLASS = {
    "undisclosed-derivative": "lv-bad",
    "licence-obligations-unmet": "lv-warn",
    "architecture-reuse-undisclosed": "lv-arch",
    "inconclusive": "lv-unsure",
    "note": "lv-note",
    "ok": "lv-ok",
    "derived": "lv-bad",
    "identical": "lv-bad",
    "independent": "lv-ok",
}

_LEVEL_MEANING = {
    "undisclosed-derivative": "the weights derive from another model, and the model card does not name it",
    "licence-obligations-unmet": "a licence this model is bound by asks for something its files do not show",
    "architecture-reuse-undisclosed": "the architecture (or the model code) is another model's and neither "
    "the config nor the card says so; reusing it is fine, not saying so is the fault",
    "inconclusive": "the evidence neither shows nor excludes reuse; no claim is made",
    "note": "for information: nothing undisclosed",
    "ok": "nothing undisclosed found",
}


def _badge(word: str) -> str:
    return f'<span class="badge {_LEVEL_CLASS.get(word, "lv-note")}">{_e(word.upper())}</span>'


def _page(title: str, subtitle: str, toc: list[tuple[str, str]], body: list[str]) -> str:
    from .. import __version__

    nav = "".join(f'<li><a href="#{anchor}">{_e(label)}</a></li>' for anchor, label in toc)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{_e(title)}</h1><p class="sub mono">{subtitle}</p>'
        f'<nav aria-label="Sections"><ul>{nav}</ul></nav></header>\n'
        + "\n".join(body)
        + f"\n<footer>Made by unshell {_e(__version__)}. This file is self-contained: it loads "
        "nothing and runs no code. Web addresses quoted from model files are shown defanged "
        "(<code>[:]//</code>).</footer>\n</body>\n</html>\n"
    )


def _section(anchor: str, title: str, content: str, *, lead: bool = False) -> str:
    css = ' class="lead"' if lead else ""
    return f'<section id="{anchor}"{css} aria-labelledby="{anchor}-h"><h2 id="{anchor}-h">{_e(title)}</h2>\n{content}\n</section>'


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    caption: str | None = None,
    numeric: Iterable[int] = (),
    row_headers: bool = False,
) -> str:
    """A table. Cells are HTML already (escape them first); headers are plain text."""
    right = set(numeric)

    def cls(i: int) -> str:
        return ' class="num"' if i in right else ""

    head = "".join(f'<th scope="col"{cls(i)}>{_e(h)}</th>' for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if i == 0 and row_headers:
                cells.append(f'<th scope="row">{cell}</th>')
            else:
                cells.append(f"<td{cls(i)}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _list(items: Iterable[str], *, escape: bool = True) -> str:
    entries = [f"<li>{_e(i) if escape else i}</li>" for i in items]
    return f'<ul class="tight">{"".join(entries)}</ul>' if entries else ""


# --- SVG ------------------------------------------------------------------------------------------

_SCALE = (
    (0.0, (247, 251, 255)),
    (0.25, (198, 219, 239)),
    (0.5, (107, 174, 214)),
    (0.75, (33, 113, 181)),
    (1.0, (8, 48, 107)),
)


def _colour(value: float) -> str:
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
        f'viewBox="0 0 {width:.0f} {height:.0f}"><title id="{ident}-t">{_e(title)}</title>'
        f'<desc id="{ident}-d">{_e(desc)}</desc>'
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


def heatmap_svg(layers_a: Sequence[int], layers_b: Sequence[int], matrix: Sequence[Sequence[float]]) -> str:
    """B's layers (rows) against A's (columns), with the best cell of every row outlined and
    marked (``class="best"``, ``data-b`` and ``data-a`` name the layers)."""
    na, nb = len(layers_a), len(layers_b)
    cell = max(8, min(44, 640 // max(na, nb, 1)))
    digits = cell >= 30
    left, top = 74.0, 62.0
    legend_x = left + na * cell + 24
    width = legend_x + 80
    height = max(top + nb * cell + 20, top + 220)
    best = [max(range(na), key=row.__getitem__) if row else -1 for row in matrix]
    desc = "; ".join(
        f"B layer {layers_b[i]} best matches A layer {layers_a[j]} ({matrix[i][j]:.2f})"
        for i, j in enumerate(best)
        if j >= 0
    )
    out = [
        _svg_open(
            width,
            height,
            "heatmap",
            "Similarity of each layer of B (rows) to each layer of A (columns)",
            desc,
        )
    ]
    out.append(
        f'<text x="{left + na * cell / 2:.1f}" y="16" text-anchor="middle" font-size="13" '
        f'font-weight="600">A\'s layers (the reference) →</text>'
    )
    out.append(
        f'<text transform="translate(16 {top + nb * cell / 2:.1f}) rotate(-90)" text-anchor="middle" '
        f'font-size="13" font-weight="600">B\'s layers ↓</text>'
    )
    for j in _tick_positions(na):
        out.append(
            f'<text x="{left + j * cell + cell / 2:.1f}" y="{top - 8:.1f}" text-anchor="middle" '
            f'font-size="11">{layers_a[j]}</text>'
        )
    for i in _tick_positions(nb):
        out.append(
            f'<text x="{left - 8:.1f}" y="{top + i * cell + cell / 2 + 4:.1f}" text-anchor="end" '
            f'font-size="11">{layers_b[i]}</text>'
        )
    # Cells: one rect each with its value as a tooltip; digits too when the cells are big enough.
    out.append('<g stroke="#ffffff" stroke-width="0.5">')
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            x, y = left + j * cell, top + i * cell
            out.append(
                f'<rect x="{x:.0f}" y="{y:.0f}" width="{cell}" height="{cell}" fill="{_colour(value)}">'
                f"<title>B {layers_b[i]} / A {layers_a[j]}: {value:.3f}</title></rect>"
            )
    out.append("</g>")
    if digits:
        out.append(f'<g text-anchor="middle" font-size="{10 if cell < 38 else 11}">')
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                x, y = left + j * cell + cell / 2, top + i * cell + cell / 2 + 4
                weight = ' font-weight="700"' if j == best[i] else ""
                fill = "#ffffff" if value > 0.55 else "#1b1f24"
                out.append(f'<text x="{x:.0f}" y="{y:.0f}" fill="{fill}"{weight}>{value:.2f}</text>')
        out.append("</g>")
    for i, j in enumerate(best):
        if j < 0:
            continue
        x, y = left + j * cell, top + i * cell
        size = max(5.0, cell * 0.32)
        out.append(
            f'<rect class="best" data-b="{layers_b[i]}" data-a="{layers_a[j]}" x="{x + 1.25:.1f}" '
            f'y="{y + 1.25:.1f}" width="{cell - 2.5:.1f}" height="{cell - 2.5:.1f}" fill="none" '
            f'stroke="#000000" stroke-width="2.5"><title>best match: B layer {layers_b[i]} is closest '
            f"to A layer {layers_a[j]}</title></rect>"
        )
        out.append(
            f'<polygon points="{x + 2:.1f},{y + 2:.1f} {x + 2 + size:.1f},{y + 2:.1f} {x + 2:.1f},{y + 2 + size:.1f}" '
            f'fill="#000000" stroke="#ffffff" stroke-width="0.75" aria-hidden="true"/>'
        )
    # Colour scale, with the best-cell marker explained.
    steps = 10
    bar = 160.0
    out.append(f'<text x="{legend_x:.1f}" y="{top - 8:.1f}" font-size="11">similarity</text>')
    for k in range(steps):
        value = 1 - k / steps
        out.append(
            f'<rect x="{legend_x:.1f}" y="{top + k * bar / steps:.1f}" width="16" height="{bar / steps:.1f}" '
            f'fill="{_colour(value - 0.05)}" stroke="none"/>'
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
    out.append("</svg>")
    return "".join(out)


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
) -> str:
    """Small line chart: one line per series, told apart by style and marker (solid with circles,
    dashed with squares), not by colour alone."""
    styles = (
        ("#0969da", "", "circle"),
        ("#cf222e", "5 3", "square"),
        ("#1a7f37", "2 2", "diamond"),
    )
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
    out.append(f'<text x="{left:.0f}" y="14" font-size="12" font-weight="600">{_e(title)}</text>')
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
        f'fill="#57606a">{_e(x_label)}</text>'
    )
    legend_x = left + 150
    for index, (name, ys) in enumerate(series):
        colour, dash, marker = styles[index % len(styles)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        lx = legend_x + index * 52
        out.append(
            f'<line x1="{lx:.0f}" x2="{lx + 18:.0f}" y1="10" y2="10" stroke="{colour}" stroke-width="2"{dash_attr}/>'
            + _marker(marker, lx + 9, 10, colour)
            + f'<text x="{lx + 22:.0f}" y="14" font-size="11">{_e(name)}</text>'
        )
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
    out.append("</svg>")
    return "".join(out)


def _marker(kind: str, x: float, y: float, colour: str) -> str:
    if kind == "square":
        return f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="#ffffff" stroke="{colour}" stroke-width="1.5"/>'
    if kind == "diamond":
        return (
            f'<polygon points="{x:.1f},{y - 4:.1f} {x + 4:.1f},{y:.1f} {x:.1f},{y + 4:.1f} {x - 4:.1f},{y:.1f}" '
            f'fill="{colour}"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>'


def profile_band_svg(value: float | None) -> str:
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
    return "".join(out)


# --- compare --------------------------------------------------------------------------------------

_CONFIG_ROWS = (
    ("hidden_size", "hidden size"),
    ("num_hidden_layers", "layers"),
    ("num_attention_heads", "attention heads"),
    ("num_key_value_heads", "key/value heads"),
    ("head_dim", "head dim"),
    ("intermediate_size", "FFN width"),
    ("vocab_size", "vocabulary"),
    ("tie_word_embeddings", "tied embeddings"),
)


def _layer_pattern(name: str, layer: int | None) -> str:
    if layer is None:
        return name
    return re.sub(rf"(^|[./]){layer}(?=[./]|$)", r"\g<1>{i}", name, count=1)


def grouped_renames(entries: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(name pattern, reference pattern, layers, decided by): one row per renaming pattern, with
    ``{i}`` for the layer index, as ``unshell inspect`` prints them."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for entry in entries:
        layer = entry.get("layer")
        targets = [entry["canonical"]] if entry.get("canonical") else entry.get("candidates", [])
        target = " | ".join(_layer_pattern(t, layer) for t in targets)
        key = (_layer_pattern(entry["name"], layer), target, str(entry.get("resolved_by", "")))
        groups.setdefault(key, []).append(layer if layer is not None else -1)
    rows = []
    for (name, target, how), layers in groups.items():
        known = sorted(x for x in layers if x >= 0)
        span = (
            f"{len(known)} ({known[0]}-{known[-1]})" if len(known) > 1 else (str(known[0]) if known else "")
        )
        rows.append((name, target, span, how))
    return rows


def _rename_table(rows: Sequence[tuple[str, str, str, str]], caption: str) -> str:
    return _table(
        ("Name in the file", "Reference name", "Layers", "Decided by"),
        ((f"<code>{_e(n)}</code>", f"<code>{_e(t)}</code>", _e(s), _e(h)) for n, t, s, h in rows),
        caption=caption,
    )


def _verdict_box(word: str, headline: str, meaning: str, extra: str = "") -> str:
    return (
        f'<div class="verdict {_LEVEL_CLASS.get(word, "lv-note")}" role="status">'
        f'<div class="word">VERDICT: {_e(word.upper())}</div>'
        f'<p class="headline">{_e(headline)}</p><p>{_e(meaning)}</p>{extra}</div>'
    )


def _compare_header(doc: dict[str, Any]) -> str:
    def side(key: str) -> str:
        s = doc[key]
        return (
            f"<code>{_e(s['path'])}</code> ({_e(s['family'] or 'unrecognized')}, {_e(s['format'])}, "
            f"{s['parameters']:,} parameters, {_e(', '.join(s['dtypes']))})"
        )

    return _table(
        ("Side", "Checkpoint"),
        [("A (reference)", side("a")), ("B (suspect)", side("b"))],
        row_headers=True,
    )


def _architecture_section(result: CompareResult, doc: dict[str, Any]) -> str:
    arch = doc["architecture"]
    config_a, config_b = arch["config_a"] or {}, arch["config_b"] or {}
    family = "the same family" if arch["same_family"] else "different families"
    shapes = "identical shapes" if arch["same_shapes"] else "different shapes"
    parts = [
        f"<p><strong>{_e('Same design' if arch['same_family'] else 'Different designs')}:</strong> "
        f"A is {_e(arch['family_a'] or 'unrecognized')}, B is {_e(arch['family_b'] or 'unrecognized')} "
        f"({family}, {shapes}); {arch['renamed_in_b']} of B's tensors are renamed from the reference names.</p>",
        '<p class="callout">Architecture reuse is stated apart from weight reuse: sharing a design '
        "(Yi-34B and Llama 2) is legitimate borrowing and says nothing about the weights; the verdict "
        "above rests on the weights alone.</p>",
    ]
    rows = []
    keys = [(k, label) for k, label in _CONFIG_ROWS if k in config_a or k in config_b]
    for key, label in keys:
        a, b = config_a.get(key), config_b.get(key)
        rows.append(
            (_e(label), _e(_plain(a)), _e(_plain(b)), "same" if a == b else "<strong>differs</strong>")
        )
    recognition_a, recognition_b = result.summary_a, result.summary_b
    rows.insert(
        0,
        (
            "family",
            _e(f"{recognition_a.family} ({recognition_a.confidence})"),
            _e(f"{recognition_b.family} ({recognition_b.confidence})"),
            "same" if arch["same_family"] else "<strong>differs</strong>",
        ),
    )
    renamed_a = result.summary_a.renamed_count
    rows.append(
        (
            "renamed tensors",
            "not recorded" if renamed_a is None else str(renamed_a),
            "not recorded" if arch["renamed_in_b"] is None else str(arch["renamed_in_b"]),
            "same" if renamed_a == arch["renamed_in_b"] else "<strong>differs</strong>",
        )
    )
    parts.append(
        _table(
            ("", "A", "B", "A vs B"),
            rows,
            caption="Architecture read from the tensor shapes",
            row_headers=True,
        )
    )
    return "".join(parts)


def _rename_section(result: CompareResult) -> str:
    entries = result.summary_b.renamed or []
    if not entries:
        return "<p>B uses the reference tensor names throughout: nothing is renamed.</p>"
    rows = grouped_renames(entries)
    text = (
        f"<p>{len(entries)} of B's tensors do not carry their reference names. Each row is one "
        "renaming pattern (<code>{i}</code> stands for the layer index); 'decided by' says how the "
        "reference name was found (<code>name</code>, <code>alias:…</code>, <code>structure</code>, "
        "<code>elimination</code>, <code>lexical</code>). Where structure cannot decide, the candidates "
        "are listed, separated by <code>|</code>.</p>"
    )
    return text + _rename_table(rows, "Rename map of B (name in B -> reference name)")


def _heatmap_section(result: CompareResult, doc: dict[str, Any]) -> str:
    similarity = doc.get("layer_similarity")
    verdict = doc["verdict"]
    if not similarity:
        why = {
            "identical": "B's values are A's (proven by hashes), so layers were not compared one by one",
        }.get(verdict, "the weight test did not run far enough to compare layers")
        return f"<p>No layer heatmap: {_e(why)}.</p>"
    layers_a, layers_b, matrix = similarity["layers_a"], similarity["layers_b"], similarity["matrix"]
    meaningful = verdict == "derived"
    parts = [
        "<p>Each cell: for every weight matrix of B's layer (row), its similarity to the most similar "
        "matrix of A's layer (column), averaged over the layer's matrices (sketch similarity, 0 = "
        "unrelated, 1 = the same up to permutation, rotation and scaling). The best cell of each row "
        "is outlined and marked with a black triangle, and its value is in bold.</p>"
    ]
    if not meaningful:
        parts.append(
            '<p class="callout"><strong>Not meaningful for this pair:</strong> the verdict is '
            + (
                "independent, so no layer of B was found to come from A: the outlined 'best' cells are noise."
                if verdict == "independent"
                else f"{_e(verdict)}, so the outlined 'best' cells may be noise."
            )
            + " A derivative shows one cell per row far above the rest of its row.</p>"
        )
    parts.append(
        "<figure>"
        + heatmap_svg(layers_a, layers_b, matrix)
        + "<figcaption>Rows: B's layers; columns: A's layers. Darker is more alike; values are "
        "printed in the cells (or shown on hover when the grid is too dense).</figcaption></figure>"
    )
    best = [layers_a[max(range(len(row)), key=row.__getitem__)] for row in matrix]
    if meaningful:
        owners: dict[int, list[int]] = {}
        for layer_b, layer_a in zip(layers_b, best, strict=True):
            owners.setdefault(layer_a, []).append(layer_b)
        shared = {a: bs for a, bs in owners.items() if len(bs) > 1}
        unused = [a for a in layers_a if a not in owners]
        findings = [
            f"A's layer {a} is the best match of B's layers {', '.join(map(str, bs))}: "
            "a duplicated layer (upscaling)."
            for a, bs in sorted(shared.items())
        ]
        if unused:
            findings.append(
                f"A's layer{'s' if len(unused) > 1 else ''} {', '.join(map(str, unused))} "
                f"{'are' if len(unused) > 1 else 'is'} no B layer's best match: dropped (pruned) or "
                "changed beyond recognition."
            )
        if findings:
            parts.append(
                '<div class="callout" id="layer-pattern"><strong>Pattern:</strong>'
                + _list(findings)
                + "</div>"
            )
        else:
            parts.append(
                "<p>Every layer of B matches its own layer of A, in order: no layer was duplicated or dropped.</p>"
            )
    if doc["layers"] and verdict in ("derived", "inconclusive"):
        rows = [
            (
                str(row["layer_b"]),
                _e(_plain(row["layer_a"])),
                f"{row['similarity']:.3f}",
                f"{row['agreeing_units']} of {row['units']}",
            )
            for row in doc["layers"]
        ]
        parts.append(
            _table(
                ("B layer", "A layer", "Similarity", "Matrices agreeing"),
                rows,
                caption="Layer map: each layer of B, the layer of A most of its matrices match",
                numeric=(0, 1, 2),
            )
        )
    return "".join(parts)


def _short_role(role: str) -> str:
    return role.removesuffix(".weight")


def _profile_section(result: CompareResult, doc: dict[str, Any]) -> str:
    evidence = doc["evidence"]
    value = evidence.get("std_profile_correlation")
    if result.std_profiles is None:
        why = (
            "the values are A's, proven by hashes, so no statistic was needed"
            if doc["verdict"] == "identical"
            else "the weight test did not run far enough to measure the matrices"
        )
        return f"<p>Not computed: {_e(why)}.</p>"
    profiles = result.std_profiles
    pa, pb = profiles.get("a") or {}, profiles.get("b") or {}
    parts = [
        '<p class="callout"><strong>This statistic does not decide.</strong> The correlation of '
        "per-layer weight standard deviations (the statistic of the 2025 Pangu-vs-Qwen dispute) is "
        "high for any two models of one architecture: independently trained pairs in unshell's lineage "
        f"zoo score median {PROFILE_NULL_MEDIAN} and up to {PROFILE_NULL_MAX} "
        f"({PROFILE_NULL_ABOVE_09:.0%} above 0.9). It is shown for reference; the verdict comes from "
        "the calibrated weight test.</p>"
    ]
    if value is None:
        parts.append("<p>Correlation: not computed (too few layers or roles in common).</p>")
    else:
        if value > PROFILE_NULL_MAX:
            where = (
                f"above every independent pair measured ({PROFILE_NULL_MAX}), yet still not evidence on its "
                "own: the statistic is not calibrated"
            )
        elif value >= PROFILE_NULL_MEDIAN:
            where = "inside the upper half of what independent pairs score: it cannot tell copying apart"
        else:
            where = "below the median of independent pairs"
        parts.append(f"<p>Correlation for this pair: <strong>{value:.3f}</strong>, {_e(where)}.</p>")
    parts.append(
        "<figure>"
        + profile_band_svg(value)
        + "<figcaption>The grey dashed band spans the upper half of independent same-architecture pairs "
        f"(median {PROFILE_NULL_MEDIAN} to maximum {PROFILE_NULL_MAX}); the triangle marks this pair."
        "</figcaption></figure>"
    )
    roles = [r for r in pa if r in pb]
    if not roles:
        parts.append("<p>No per-layer profiles to draw: the two models share no layered weight roles.</p>")
        return "".join(parts)
    charts = [
        line_chart_svg(
            f"profile-{index}",
            _short_role(role),
            (("A", pa[role]), ("B", pb[role])),
        )
        for index, role in enumerate(roles)
    ]
    parts.append(
        '<figure><div class="charts">'
        + "".join(charts)
        + "</div><figcaption>Standard deviation of each layer's matrix, by role (norm gains folded into "
        "the matrices that read the normalized stream). A: solid line, round markers; B: dashed line, "
        "square markers. Each model is drawn against its own layer numbers.</figcaption></figure>"
    )
    return "".join(parts)


_RELATION_MEANING = {
    "identical": "every id holds the same token",
    "extension": "B keeps all of A's ids and adds more",
    "shifted-extension": "all of A is in B at one constant id offset (tokens inserted in front)",
    "subset": "A keeps all of B's ids (B is A truncated)",
    "pruned": "B's tokens are nearly all A's, at other ids (a vocabulary cut and compacted)",
    "renumbered": "the two hold nearly the same tokens at different ids",
    "common-prefix": "both start with the same long run of ids, then diverge",
    "independent": "none of the above: no id-level relation",
}


def _tokenizer_table(t: dict[str, Any]) -> str:
    rows = [
        (
            "relation",
            f'<span class="badge lv-note">{_e(t["relation"].upper())}</span> '
            f"{_e(_RELATION_MEANING.get(t['relation'], ''))}",
        ),
        ("why", _e(t["reason"])),
        ("vocabulary size (ids)", f"A {t['size_a']:,} / B {t['size_b']:,}"),
        ("ordinary tokens", f"A {t['ordinary_a']:,} / B {t['ordinary_b']:,}"),
        ("A's ordinary tokens found in B", f"{t['shared']:,}"),
        ("… at the same id", f"{t['same_id']:,}"),
        (
            "most common id shift",
            "none" if t["offset"] is None else f"{t['offset']:+,} ids ({t['offset_count']:,} tokens)",
        ),
        ("leading ids that agree", f"{t['common_prefix']:,}"),
        ("special tokens renamed in place", f"{t['special_renamed']:,}"),
    ]
    merges = t.get("merges")
    if merges:
        rows.append(
            (
                "BPE merges",
                f"A {merges['merges_a']:,} / B {merges['merges_b']:,}; {merges['shared']:,} shared "
                f"({merges['shared_fraction']:.1%} of the smaller list); first {merges['common_prefix']:,} "
                "in the same order",
            )
        )
    return _table(("", "Tokenizer of B against A's"), rows, row_headers=True)


def _evidence_section(doc: dict[str, Any]) -> str:
    evidence = doc["evidence"]
    rows: list[tuple[str, str]] = []
    if doc["score"] is not None:
        rows.append(
            ("score", f"{doc['score']:.3f} (mean similarity of B's matrices to their best match in A)")
        )
    rows.append(("matrices compared", f"{evidence['units_compared']:,}"))
    hashes = evidence.get("hashes")
    if hashes:
        rows.append(
            (
                "content hashes",
                f"B's parameters with a twin in A: exact {hashes['exact']:.0%}, after bf16 rounding "
                f"{hashes['rounded']:.0%}, as value multisets {hashes['multiset']:.0%}",
            )
        )
    else:
        rows.append(("content hashes", "not computed" + (" (--quick)" if evidence["quick"] else "")))
    twins = twins_text(evidence.get("exact_twins"))
    if twins:
        rows.append(("exact twins", _e(twins)))
    alignment = alignment_text(evidence.get("alignment"))
    if alignment:
        rows.append(("residual alignment", _e(alignment)))
    rows.append(("mode", "quick (sampled rows, no hashing)" if evidence["quick"] else "full"))
    if evidence.get("bytes_read"):
        rows.append(("bytes read for the test", f"{evidence['bytes_read']:,}"))
    text = _table(
        ("", "Value"), rows, caption="Cheap evidence (shown; only exact twins can decide)", row_headers=True
    )
    if doc["notes"]:
        text += "<h3>Notes</h3>" + _list(doc["notes"])
    return text


_HOW_TO_READ_COMPARE = (
    "The verdict answers one question: did B's weights come from A's (or from a common ancestor)? "
    "'derived' needs p < 1e-6; 'independent' means p >= 0.01; anything between, or a test that could "
    "not run, is 'inconclusive'. 'identical' is proven by content hashes instead.",
    "The p-value is for the hypothesis 'B was trained independently of A'. It is calibrated: over 210 "
    "independent pairs none fell below 0.1. A tiny p-value says that chance alone cannot explain how "
    "alike the weights are.",
    "The test is blind to renaming, re-fusing, neuron and head permutations, sign flips and rotations "
    "of the residual stream: disguising a copy that way does not hide it.",
    "Architecture reuse (same design, same shapes, renamed tensors) is legitimate and reported apart: "
    "it is no evidence about the weights.",
    "The heatmap shows where B's layers come from: one dark cell per row for a derivative; two rows "
    "with the same best column for duplicated layers; a column no row picks for a dropped layer.",
    "The std-profile correlation is shown because it is often quoted, not because it decides: "
    "unrelated models of one architecture score high on it too.",
    "The tokenizer relation says whether B's vocabulary keeps A's token ids; tokenizers are shared "
    "legitimately, so it names no base by itself.",
)


def _how_to_read(items: Sequence[str]) -> str:
    return _list(items)


def compare_html(result: CompareResult | TokenizerComparison) -> str:
    """The report of `unshell.compare` as one self-contained HTML page."""
    if isinstance(result, TokenizerComparison):
        return _tokenizer_comparison_html(result)
    doc = result.to_dict()
    headline, meaning = _verdict_text(doc["verdict"], doc["p_value"], doc["reason"], doc["how"])
    extra = ""
    if doc["how"]:
        extra += f"<p><strong>How:</strong> {_e(', '.join(doc['how']))}</p>"
    if doc["p_value"] is not None:
        extra += (
            f'<p class="small">p-value {_e(_p_text(doc["p_value"]))} for H0 \'B was trained independently of '
            "A'.</p>"
        )
    alignment = alignment_text(doc["evidence"].get("alignment"))
    if alignment:
        extra += f'<p class="small">Residual alignment: {_e(alignment)}.</p>'
    body = [
        _section(
            "verdict",
            "Verdict",
            _compare_header(doc) + _verdict_box(doc["verdict"], headline, meaning, extra),
            lead=True,
        ),
        _section(
            "architecture", "Architecture reuse (apart from weight reuse)", _architecture_section(result, doc)
        ),
        _section("renames", "Rename map", _rename_section(result)),
        _section("layers", "Layers of B against layers of A", _heatmap_section(result, doc)),
        _section(
            "profiles", "Weight-statistics profiles (for reference only)", _profile_section(result, doc)
        ),
        _section(
            "tokenizer",
            "Tokenizer",
            _tokenizer_table(doc["tokenizer"])
            if doc.get("tokenizer")
            else "<p>Not compared: at least one side carries no tokenizer.</p>",
        ),
        _section("evidence", "Other evidence", _evidence_section(doc)),
        _section("how-to-read", "How to read this", _how_to_read(_HOW_TO_READ_COMPARE)),
    ]
    toc = [
        ("verdict", "Verdict"),
        ("architecture", "Architecture"),
        ("renames", "Rename map"),
        ("layers", "Layers"),
        ("profiles", "Profiles"),
        ("tokenizer", "Tokenizer"),
        ("evidence", "Evidence"),
        ("how-to-read", "How to read this"),
    ]
    subtitle = f"A: {_e(doc['a']['path'])}<br>B: {_e(doc['b']['path'])}"
    return _page(f"unshell compare: {doc['verdict']}", subtitle, toc, body)


def _tokenizer_comparison_html(result: TokenizerComparison) -> str:
    doc = result.to_dict()
    relation = doc["tokenizer"]["relation"]
    sides = _table(
        ("Side", "Tokenizer", "Kind", "Ids", "Ordinary", "Special", "Merges"),
        [
            (
                label,
                f"<code>{_e(doc[key]['path'])}</code>",
                _e(f"{doc[key]['kind']} ({doc[key]['model']})"),
                f"{doc[key]['vocab_size']:,}",
                f"{doc[key]['ordinary_tokens']:,}",
                f"{doc[key]['special_tokens']:,}",
                _e(_plain(doc[key]["merges"])),
            )
            for label, key in (("A (reference)", "a"), ("B (suspect)", "b"))
        ],
        numeric=(3, 4, 5, 6),
        row_headers=True,
    )
    word = "ok" if relation == "independent" else "note"
    box = (
        f'<div class="verdict {_LEVEL_CLASS[word]}" role="status"><div class="word">RELATION: '
        f'{_e(relation.upper())}</div><p class="headline">{_e(_RELATION_MEANING.get(relation, relation))}: '
        f"{_e(doc['tokenizer']['reason'])}.</p><p>Only tokenizers were compared: there are no weights here, "
        "so nothing is said about weight reuse. Tokenizers are shared legitimately; a kept vocabulary "
        "names a candidate base to test the weights against, never a derivative.</p></div>"
    )
    glossary = [f"<strong>{_e(k)}</strong>: {_e(v)}" for k, v in _RELATION_MEANING.items()]
    body = [
        _section("verdict", "Tokenizer relation", sides + box, lead=True),
        _section("tokenizer", "Counts", _tokenizer_table(doc["tokenizer"])),
        _section(
            "how-to-read",
            "How to read this",
            "<p>Tokens are compared as normalized bytes, so one vocabulary in SentencePiece, "
            "tokenizer.json, tiktoken or GGUF form compares equal. Ids matter: a model's embedding rows "
            "are indexed by them. The relations, from A (the reference) to B:</p>"
            + _list(glossary, escape=False),
        ),
    ]
    toc = [("verdict", "Relation"), ("tokenizer", "Counts"), ("how-to-read", "How to read this")]
    subtitle = f"A: {_e(doc['a']['path'])}<br>B: {_e(doc['b']['path'])}"
    return _page(f"unshell compare (tokenizers): {relation}", subtitle, toc, body)


# --- audit ----------------------------------------------------------------------------------------


def _claim(declared: dict[str, Any], key: str) -> str:
    claim = declared.get(key)
    if not isinstance(claim, dict):
        return '<span class="sub">not declared</span>'
    source = f' <span class="sub small">[{_e(claim.get("source"))}]</span>' if claim.get("source") else ""
    return f"{_e(_plain(claim.get('value')))}{source}"


def _evidence_list(evidence: dict[str, Any]) -> str:
    items = []
    for key, value in evidence.items():
        if key == "code":
            shown = "see 'Model code' below"
        elif key == "renamed_examples":
            shown = "see the rename map below"
        elif key == "missing" and isinstance(value, list):
            shown = ", ".join(
                f"{v.get('obligation')} (§{v.get('section')})" if isinstance(v, dict) else str(v)
                for v in value
            )
        elif key == "p_value" and isinstance(value, float | int):
            shown = _p_text(float(value))
        else:
            shown = _plain(value)
        items.append(f"<dt>{_e(key.replace('_', ' '))}</dt><dd>{_e(shown)}</dd>")
    return f"<dl>{''.join(items)}</dl>" if items else ""


def _findings_section(doc: dict[str, Any]) -> str:
    parts = []
    for finding in doc["findings"]:
        level = finding["level"]
        parts.append(
            f'<div class="finding {_LEVEL_CLASS.get(level, "lv-note")}">'
            f"<p>{_badge(level)} {_e(finding['message'])}</p>"
            f'<p class="advice"><strong>Advice:</strong> {_e(finding["advice"])}</p>'
            f"{_evidence_list(finding.get('evidence') or {})}</div>"
        )
    return "".join(parts)


def _declared_detected(doc: dict[str, Any]) -> str:
    declared, detected = doc["declared"], doc["detected"]
    arch = detected.get("architecture") or {}
    weights = detected.get("weights")
    licence = detected.get("licence")
    tokenizer = detected.get("tokenizer")
    code = detected.get("code") or []

    model_type = ", ".join(
        x
        for x in (_claim(declared, "model_type"), _claim(declared, "architectures"))
        if "not declared" not in x
    )
    arch_text = (
        f"{_e(arch.get('family'))} (matched as {_e(arch.get('matched_family'))}, confidence "
        f"{_e(arch.get('confidence'))}); {_e(arch.get('renamed_tensors', 0))} tensors renamed"
        if arch.get("family")
        else "not recognized"
    )
    library = weights.get("library") if weights else None
    if weights and library and weights.get("base") is None:
        weights_text = f'<span class="sub">searched a fingerprint library of {_e(library.get("size"))}: no source found</span>'
    elif weights:
        weights_text = (
            f"{_badge(weights['verdict'])} against {_e(weights['base'])} (p {_e(_p_text(weights['p_value']))}"
            + (f", Holm-adjusted over a library of {_e(library.get('size'))}" if library else "")
            + (f"; {_e(', '.join(weights['how']))}" if weights.get("how") else "")
            + ")"
        )
    else:
        weights_text = '<span class="sub">not tested (no --against base or --library)</span>'
    base_declared = _claim(declared, "base_model")
    relation = declared.get("base_model_relation")
    if isinstance(relation, dict):
        base_declared += f" ({_e(_plain(relation.get('value')))})"
    licence_detected = (
        f"{_e(licence.get('name') or licence.get('id'))} checked: {_e(licence.get('why'))}"
        if licence
        else '<span class="sub">no base licence to check (its obligations bind derivatives)</span>'
    )
    tokenizer_text = (
        f"{_e(tokenizer.get('name'))} family ({_e(tokenizer.get('relation'))})"
        if tokenizer
        else '<span class="sub">no known family</span>'
    )
    copies = [c for c in code if c.get("reference")]
    code_text = (
        "; ".join(f"{_e(c['file'])}: closest {_e(c['reference'])} ({c['similarity']:.2f})" for c in copies)
        if copies
        else '<span class="sub">no model code, or none like a reference</span>'
    )
    rows = [
        ("name", _claim(declared, "name"), "—"),
        ("architecture", model_type or '<span class="sub">not declared</span>', arch_text),
        ("base model (weights)", base_declared, weights_text),
        ("licence", _claim(declared, "license"), licence_detected),
        ("tokenizer", '<span class="sub">not declared</span>', tokenizer_text),
        ("model code", '<span class="sub">not declared</span>', code_text),
    ]
    text = _table(("", "Declared", "Detected"), rows, row_headers=True)
    claims = [(k, v) for k, v in declared.items() if isinstance(v, dict)]
    if claims:
        text += _table(
            ("Claim", "Value", "Source"),
            ((_e(k), _e(_plain(v.get("value"))), _e(v.get("source"))) for k, v in claims),
            caption="Everything the files declare",
        )
    return text


def _audit_renames(doc: dict[str, Any]) -> str:
    arch = doc["detected"].get("architecture") or {}
    count = arch.get("renamed_tensors", 0)
    examples: list[str] = []
    for finding in doc["findings"]:
        found = (finding.get("evidence") or {}).get("renamed_examples")
        if found:
            examples = list(found)
            break
    if not count:
        return "<p>The model uses the reference tensor names throughout: nothing is renamed.</p>"
    text = f"<p>{count} tensors do not carry {_e(arch.get('family'))}'s reference names.</p>"
    if not examples:
        return text
    rows = []
    for example in examples:
        reference, _, name = example.partition(" -> ")
        rows.append((name, reference, "", "pattern"))
    table = _table(
        ("Name in the model", "Reference name"),
        ((f"<code>{_e(n)}</code>", f"<code>{_e(r)}</code>") for n, r, _, _ in rows),
        caption="Rename map (name in the model -> reference name; {i} stands for the layer index)",
    )
    more = (
        f'<p class="small sub">The first {len(examples)} patterns; <code>unshell inspect</code> lists every renamed tensor.</p>'
        if len(examples) >= 6
        else ""
    )
    return text + table + more


def _code_section(doc: dict[str, Any]) -> str:
    code = doc["detected"].get("code") or []
    if not code:
        return "<p>The model ships no modeling code of its own (or none that was read).</p>"
    parts = [
        "<p>Each code file against the reference implementations of the installed transformers. "
        "Similarity is the share of the file found in the reference (1 = all of it; a copy scores above "
        "0.8, unrelated references below 0.5); 'removed references' are the renamed definitions and "
        "deleted attributions the files show.</p>"
    ]
    for match in code:
        runner = match.get("runner_up")
        removed = match.get("removed_references") or []
        reference = match.get("reference")
        rows = [
            (
                "closest reference",
                f"<code>{_e(reference)}</code>"
                + (f" ({_e(match['reference_family'])})" if match.get("reference_family") else "")
                if reference
                else "none close enough",
            ),
            ("similarity", f"{match['similarity']:.2f} of the file is found in the reference"),
            ("coverage", f"{match.get('coverage', 0):.2f} of the reference is found in the file"),
            ("runner-up", _e(f"{runner['reference']} ({runner['similarity']:.2f})") if runner else "none"),
        ]
        if match.get("also_from"):
            rows.append(
                (
                    "also from",
                    _e(", ".join(f"{x['reference']} (+{x['share']:.2f})" for x in match["also_from"])),
                )
            )
        if match.get("reference_derived_from"):
            rows.append(("the reference derives from", _e(", ".join(match["reference_derived_from"]))))
        rows.append(("removed references", _list(removed) if removed else "none"))
        if match.get("notes"):
            rows.append(("notes", _list(match["notes"])))
        parts.append(_table(("", "Value"), rows, caption=f"{sanitize(str(match['file']))}", row_headers=True))
    return "".join(parts)


_STATUS_TEXT = {"met": "MET", "missing": "MISSING", "manual": "NEEDS A PERSON"}


def _code_licence_rows(doc: dict[str, Any]) -> str:
    """Licence findings about copied model code (transformers' Apache-2.0 notices)."""
    rows = []
    for finding in doc["findings"]:
        evidence = finding.get("evidence") or {}
        if finding["level"] != "licence-obligations-unmet" or "file" not in evidence:
            continue
        rows.append(
            (
                f"<code>{_e(evidence['file'])}</code>",
                f"<code>{_e(evidence.get('reference'))}</code>",
                _e(evidence.get("licence")),
                '<span class="badge lv-bad">MISSING</span>',
                _list(evidence.get("removed") or []),
            )
        )
    if not rows:
        return ""
    return _table(
        ("File", "Copied from", "Licence", "Status", "What is missing"),
        rows,
        caption="Obligations of copied model code",
    )


def _licence_section(doc: dict[str, Any]) -> str:
    code_rows = _code_licence_rows(doc)
    licence = doc["detected"].get("licence")
    if not licence:
        return (
            "<p>No model licence checked: a licence's conditions bind whoever redistributes someone "
            "else's work, so a base model's licence is checked for a derivative (a declared base, or "
            "weights shown to derive from --against), never a model's own licence.</p>" + code_rows
        )
    head = (
        f"<p><strong>{_e(licence.get('name') or licence.get('id'))}</strong> ({_e(licence.get('why'))}).</p>"
    )
    if not licence.get("known"):
        return head + "<p>This licence has no obligations on file: not checked.</p>" + code_rows
    obligations = licence.get("obligations")
    if obligations is None:
        return head + "<p>No model folder to check the obligations in.</p>" + code_rows
    rows = []
    for item in obligations:
        status = item["status"]
        css = {"met": "lv-ok", "missing": "lv-bad"}.get(status, "lv-unsure")
        found = f" (found in {_e(item['found_in'])})" if item.get("found_in") else ""
        rows.append(
            (
                _e(item["obligation"]),
                f"§{_e(item['section'])}",
                f'<span class="badge {css}">{_e(_STATUS_TEXT.get(status, status.upper()))}</span>',
                _e(item["summary"]) + f'<blockquote class="small">{_e(item["quote"])}</blockquote>',
                _e(item["evidence"]) + found,
            )
        )
    return (
        head
        + _table(
            ("Obligation", "Section", "Status", "What it asks", "Evidence"),
            rows,
            caption="Licence obligations",
        )
        + code_rows
    )


def _weights_section(doc: dict[str, Any]) -> str:
    weights = doc["detected"].get("weights")
    if not weights:
        return (
            "<p>Not tested: the audit ran without <code>--against BASE</code> or <code>--library FILE</code>. "
            "Only a calibrated weight "
            "comparison can show a derivative; tokenizer and architecture evidence never accuse.</p>"
        )
    library = weights.get("library")
    candidates = _library_candidates(weights) if library else ""
    if library and weights.get("base") is None:
        return (
            f"<p>Searched a fingerprint library of {_e(library.get('size'))} models "
            f"(<code>{_e(library.get('path'))}</code>): none is the source of these weights. A base "
            "that is not in the library would not show; this is not evidence of independent training.</p>"
            + candidates
        )
    headline, meaning = _verdict_text(
        weights["verdict"], weights["p_value"], weights["reason"], weights["how"]
    )
    where = (
        f"Found in a fingerprint library of {_e(library.get('size'))} models as "
        f"<code>{_e(weights['base'])}</code>; its p-value is Holm-adjusted over the whole library"
        if library
        else f"Against <code>{_e(weights['base'])}</code>"
    )
    text = f"<p>{where} (A is that base, B this model):</p>" + _verdict_box(
        weights["verdict"], headline, meaning
    )
    text += candidates
    if weights.get("tokenizer"):
        text += "<h3>Tokenizer against the base's</h3>" + _tokenizer_table(weights["tokenizer"])
    return text


def _library_candidates(weights: dict[str, Any]) -> str:
    rows = [
        (
            _e(c.get("name")),
            _badge(str(c.get("verdict"))),
            _e(_p_text(c.get("p_value"))),
            _e(_p_text(c.get("p_adjusted"))),
        )
        for c in weights.get("candidates") or []
    ]
    if not rows:
        return ""
    return "<h3>Library candidates tested</h3>" + _table(
        ("Candidate", "Verdict", "p", "p (Holm, over the library)"), rows, numeric=(2, 3)
    )


_HOW_TO_READ_AUDIT = (
    "The audit sets what the evidence detects against what the model's files declare (config.json, "
    "the model card's front matter, GGUF metadata).",
    "Two questions are kept apart. Architecture reuse (structure, tensor layout, modeling code) is "
    "legitimate borrowing: the only fault is not saying so. Weight reuse makes the model a "
    "derivative, which must name its base and meet the base licence's conditions.",
    "A derivative is only ever claimed from a calibrated weight comparison (audit with --against BASE); "
    "tokenizer and architecture evidence suggest where to look but never accuse.",
    "Licence obligations marked NEEDS A PERSON cannot be shown by files either way; MISSING ones were "
    "looked for where the licence says they belong, and not found.",
)


def audit_html(result: AuditResult) -> str:
    """The report of `unshell.audit` as one self-contained HTML page."""
    doc = result.to_dict()
    level = doc["level"]
    box = (
        f'<div class="verdict {_LEVEL_CLASS.get(level, "lv-note")}" role="status">'
        f'<div class="word">LEVEL: {_e(level.upper())}</div>'
        f'<p class="headline">{_e(_LEVEL_MEANING.get(level, level).capitalize())}.</p>'
        f"<p>{len(doc['findings'])} finding(s), most severe first, below.</p></div>"
    )
    body = [
        _section("level", "Level", box + _findings_section(doc), lead=True),
        _section("declared", "Declared against detected", _declared_detected(doc)),
        _section("architecture", "Architecture reuse and rename map", _audit_renames(doc)),
        _section("weights", "Weight reuse", _weights_section(doc)),
        _section("code", "Model code provenance", _code_section(doc)),
        _section("licence", "Licence obligations", _licence_section(doc)),
    ]
    if doc["notes"]:
        body.append(_section("notes", "Notes", _list(doc["notes"])))
    levels = _table(
        ("Level", "Meaning"),
        ((_badge(level), _e(_LEVEL_MEANING[level])) for level in LEVELS),
        caption="Levels, most severe first (the report's level is its most severe finding's)",
    )
    body.append(_section("how-to-read", "How to read this", _how_to_read(_HOW_TO_READ_AUDIT) + levels))
    toc = [
        ("level", "Level and findings"),
        ("declared", "Declared vs detected"),
        ("architecture", "Architecture"),
        ("weights", "Weights"),
        ("code", "Code"),
        ("licence", "Licence"),
        *([("notes", "Notes")] if doc["notes"] else []),
        ("how-to-read", "How to read this"),
    ]
    subtitle = f"model: {_e(doc['path'])}" + (f"<br>against: {_e(doc['against'])}" if doc["against"] else "")
    return _page(f"unshell audit: {level}", subtitle, toc, body)


# --- search ---------------------------------------------------------------------------------------

_HOW_TO_READ_SEARCH = (
    "The library holds fingerprints of known models: enough of each to test lineage without its "
    "weights. The suspect's own weights were read in full.",
    "A cheap stage ranks the whole library by shared tensor hashes, architecture signature, width, "
    "vocabulary and tokenizer family; only the best candidates get the calibrated lineage test. A "
    "fingerprint screened out there counts as p = 1 below.",
    "Testing one suspect against many bases makes small p-values easier to find by chance, so every "
    "p-value is adjusted (Holm-Bonferroni) over the whole library, and 'derived' needs the adjusted "
    f"value below {_exp(DERIVED_P)}. A bigger library therefore needs stronger evidence.",
    "'identical' rests on content hashes, not on a p-value. 'inconclusive' makes no claim either way.",
    "Finding no match says only that none of these fingerprints is the source. A base that is not in "
    "the library would not show.",
)


def _search_headline(doc: dict[str, Any]) -> str:
    matches = [c for c in doc["candidates"] if c["verdict"] in ("identical", "derived")]
    size = doc["library"]["size"]
    if not matches:
        return (
            '<div class="verdict lv-ok" role="status"><div class="word">NO MATCH</div>'
            f'<p class="headline">None of the library\'s {_e(size)} fingerprints is the source of these '
            f"weights ({_e(doc['tested'])} tested in full).</p>"
            "<p>This is not evidence of independent training: a base missing from the library would "
            "not show.</p></div>"
        )
    best = matches[0]
    how = f" ({', '.join(best['how'])})" if best["how"] else ""
    if best["verdict"] == "identical":
        headline = f"The suspect holds the weights of {best['name']}: the same values{how}, proven by content hashes."
        meaning = "No p-value is needed: identical values cannot come from independent training."
    else:
        p = best["p_adjusted"]
        headline = (
            f"The suspect's weights were derived from {best['name']}'s, or both from a common ancestor{how}: "
            f"adjusted p {_p_relation(p)}."
        )
        meaning = (
            f"The chance that an independently trained model looks this much like one of the library's "
            f"{size} fingerprints is {chance_bound(p)} (Holm-adjusted over the whole library). "
            f"'Derived' is only said when this chance is below {_exp(DERIVED_P)}."
        )
    others = len(matches) - 1
    extra = f"<p>{others} more match(es) below.</p>" if others else ""
    return _verdict_box(best["verdict"], headline, meaning, extra)


def search_html(result: Any) -> str:
    """The report of `unshell.search` (a `SearchResult`) as one self-contained HTML page."""
    doc = result.to_dict()
    suspect = doc["suspect"]
    rows = [
        (
            f"<code>{_e(c['name'])}</code>",
            _badge(str(c["verdict"])),
            _e(_p_text(c["p_value"])),
            _e(_p_text(c["p_adjusted"])),
            _e(", ".join(c["how"])),
            _e(f"{c['evidence'].get('shared_hashes', 0)} of {c['evidence'].get('suspect_hashes', 0)}"),
            _e(", ".join(c["evidence"].get("matched") or []) or "none"),
            _e(c["reason"]),
        )
        for c in doc["candidates"]
    ]
    table = (
        _table(
            (
                "Candidate",
                "Verdict",
                "p",
                "p (Holm)",
                "How",
                "Shared tensor hashes",
                "Cheap signals shared",
                "Reason",
            ),
            rows,
            numeric=(2, 3),
        )
        if rows
        else "<p>No candidates: nothing in the library shares this model's architecture or weights.</p>"
    )
    suspect_rows = _table(
        ("", "Suspect"),
        [
            ("Path", f"<code>{_e(suspect['path'] or suspect['name'] or '?')}</code>"),
            ("Family", _e(suspect["family"] or "unrecognized")),
            ("Signature", f"<code>{_e(suspect['signature'] or '')}</code>"),
            ("Hidden size", _e(suspect["hidden"] if suspect["hidden"] is not None else "?")),
            ("Vocabulary", _e(suspect["vocab_size"] if suspect["vocab_size"] is not None else "?")),
            ("Tokenizer family", _e(suspect["tokenizer_family"] or "none recognized")),
            ("Tensor hashes", _e(suspect["content_hashes"])),
        ],
        row_headers=True,
    )
    screening = (
        f"<p>{_e(doc['tested'])} candidates tested in full; {_e(doc['screened_out'])} screened out by "
        f"the cheap stage in {_e(doc['timing']['candidates_ms'])} ms; lineage tests took "
        f"{_e(doc['timing']['lineage_s'])} s. {_e(doc['multiple_testing']['note'])}.</p>"
    )
    body = [
        _section("result", "Result", _search_headline(doc), lead=True),
        _section("candidates", "Candidates, best first", screening + table),
        _section("suspect", "The suspect", suspect_rows),
    ]
    if doc["notes"]:
        body.append(_section("notes", "Notes", _list(doc["notes"])))
    body.append(_section("how-to-read", "How to read this", _how_to_read(_HOW_TO_READ_SEARCH)))
    toc = [
        ("result", "Result"),
        ("candidates", "Candidates"),
        ("suspect", "Suspect"),
        *([("notes", "Notes")] if doc["notes"] else []),
        ("how-to-read", "How to read this"),
    ]
    subtitle = (
        f"suspect: {_e(suspect['path'] or suspect['name'])}<br>library: {_e(doc['library']['path'])} "
        f"({_e(doc['library']['size'])} fingerprints)"
    )
    return _page("unshell search", subtitle, toc, body)


# --- writing --------------------------------------------------------------------------------------


def write_html(text: str, path: str | os.PathLike[str]) -> None:
    """Write a report atomically: a temporary file in the same folder, then `os.replace`, so a
    reader never sees half a report and an existing one survives a failed write."""
    target = Path(path)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
