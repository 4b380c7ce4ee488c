"""What the HTML reports share: safe text, number wording, level colours and the Jinja2
environment that renders `report/templates/`.

Every value a template prints goes through `safe_text` (the environment's ``finalize``): control
characters shown, markup escaped, web addresses defanged (``https[:]//``). Only `Markup` built by
this package (the SVG of `svg.py`, the templates' own macros) passes unchanged.
"""

from __future__ import annotations

import functools
import html
import math
import re
from typing import Any

import jinja2
from markupsafe import Markup

from ..formats.base import sanitize
from ..lineage.compare import DERIVED_P

_SCHEME = re.compile(r"(?i)\b(https?|ftps?|wss?|file)://")


def safe_text(value: Any, limit: int = 4096) -> Markup:
    """Any value as safe HTML text: control characters shown, markup escaped, addresses defanged.
    `Markup` (made by this package, never read from a file) is returned as it is."""
    if isinstance(value, Markup):
        return value
    text = sanitize("" if value is None else str(value), limit=limit)
    return Markup(defang(html.escape(text, quote=True)))


def defang(text: str) -> str:
    """Web addresses quoted from model files, made unclickable (``https[:]//``), as in every report."""
    return _SCHEME.sub(lambda m: m.group(1) + "[:]//", text)


def plain(value: Any, limit: int = 600) -> str:
    """A JSON-like value as one line of (unescaped) text."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        if set(value) >= {"value"}:
            text = plain(value["value"], limit)
            return f"{text} [{value['source']}]" if value.get("source") else text
        text = "; ".join(f"{k}: {plain(v, limit)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(plain(v, limit) for v in value) if value else "none"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def p_text(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 1e-300" if p == 0 else f"{p:.3g}"


def p_relation(p: float) -> str:
    """ "< 1e-300" or "= 3.2e-08": a p-value after "p"."""
    return "< 1e-300" if p == 0 else f"= {p:.3g}"


def exponent_text(value: float) -> str:
    """1e-06 -> "1e-6"."""
    mantissa, _, exponent = f"{value:.0e}".partition("e")
    return f"{mantissa}e{int(exponent)}"


def percent(p: float) -> str:
    return f"{p:.0%}" if p >= 0.1 else f"{100 * p:.2g}%"


def chance_bound(p: float) -> str:
    """How unlikely: "below 1e-12" for tiny p-values, "about 3.2% (p = 0.032)" otherwise."""
    if p <= 1e-300:
        return "below 1e-300"
    if p < 1e-3:
        exponent = math.floor(-math.log10(p))
        return f"{'below' if p < 10.0**-exponent else 'about'} 1e-{exponent}"
    return f"about {percent(p)} (p = {p:.2g})"


DERIVED_P_TEXT = exponent_text(DERIVED_P)

# Each level and verdict has a colour class; the words are always spelled out beside it.
LEVEL_CLASS = {
    "undisclosed-derivative": "lv-bad",
    "licence-obligations-unmet": "lv-warn",
    "architecture-reuse-undisclosed": "lv-arch",
    "inconclusive": "lv-unsure",
    "note": "lv-note",
    "ok": "lv-ok",
    "derived": "lv-bad",
    "identical": "lv-same",
    "independent": "lv-ok",
    "same-model": "lv-same",  # `probe`'s verdicts
    "not-derived": "lv-ok",
}

# The weight verdicts, in the order the legend lists them.
VERDICT_MEANING = {
    "identical": "the suspect holds the reference's values, proven by content hashes (a copy, a "
    "repackaging or a lossless conversion)",
    "derived": "the suspect's weights come from the reference's, or both from a common ancestor "
    f"(p < {DERIVED_P_TEXT})",
    "inconclusive": "the weights neither show nor exclude it: no claim either way",
    "independent": "no sign that the suspect's weights come from the reference's",
}


def level_class(word: str) -> str:
    return LEVEL_CLASS.get(word, "lv-note")


def thousands(value: int) -> str:
    return f"{value:,}"


@functools.cache
def environment() -> jinja2.Environment:
    """The reports' Jinja2 environment: autoescaped, strict about missing names, and every printed
    value made safe by `safe_text`."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("unshell.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=safe_text,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        level_class=level_class,
        plain=plain,
        p_text=p_text,
        thousands=thousands,
    )
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
