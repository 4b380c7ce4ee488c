"""The pages' Jinja2 environment (autoescaped) and what the templates show of a result.

Text summaries are the CLI's own renderings from `unshell.report.text`; the web never imports
the CLI.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import jinja2
from fastapi.responses import HTMLResponse

from .. import __version__
from ..report import text as text_report

if TYPE_CHECKING:
    from .state import WebState

log = logging.getLogger("unshell.web")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("unshell.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = human_size
    env.filters["seconds"] = lambda s: f"{s:.1f} s" if s is not None else ""
    env.filters["p_value"] = p_value
    return env


def human_size(n: int | None) -> str:
    return "" if n is None else text_report.human_bytes(n)


def p_value(p: float | None) -> str:
    """``p < 1e-300`` or ``p = 0.0123``, as the CLI writes it: a p-value below what a double
    holds is never shown as ``p = 0``."""
    shown = text_report.p_text(p)
    return f"p {shown}" if shown.startswith("<") else f"p = {shown}"


def page(
    state: WebState, name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> HTMLResponse:
    context.setdefault("version", __version__)
    context.setdefault("roots", list(enumerate(state.roots.paths)))
    body = state.templates.get_template(name).render(**context)
    return HTMLResponse(body, status_code=status, headers=headers)


def summary_text(kind: str, doc: dict[str, Any]) -> str | None:
    """The CLI's table rendering of a result, or None (the JSON is always there)."""
    renderers = {
        "compare": text_report.render_compare,
        "audit": text_report.render_audit,
        "inspect": text_report.render_inspect,
        "search": text_report.render_search,
    }
    render = renderers.get(kind)
    if render is None:
        return None
    try:
        return str(render(doc))
    except Exception:  # a rendering nicety must not hide the result
        log.exception("could not render the %s summary", kind)
    return None


def _search_headline(doc: dict[str, Any]) -> dict[str, Any]:
    candidates = doc.get("candidates") or []
    matches = [c for c in candidates if c.get("verdict") in ("identical", "derived")]
    if not matches:
        tested = doc.get("tested", 0)
        return {
            "label": "best match",
            "value": "none",
            "detail": f"no fingerprint in the library ({tested} tested in full) is this model's source",
        }
    best = matches[0]
    return {
        "label": "best match",
        "value": best.get("verdict"),
        "detail": f"{best.get('name')}: {best.get('reason')}",
        "p_value": best.get("p_adjusted"),
        "p_label": "Holm-adjusted over the library",
    }


def headline(kind: str, doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The one thing a job page shows first: the verdict (compare) or level (audit)."""
    if not doc:
        return None
    if kind == "compare":
        if doc.get("kind") == "tokenizer-comparison":
            relation = doc.get("tokenizer") or {}
            return {"label": "tokenizer", "value": relation.get("relation"), "detail": relation.get("reason")}
        return {
            "label": "verdict",
            "value": doc.get("verdict"),
            "detail": doc.get("reason"),
            "p_value": doc.get("p_value"),
        }
    if kind == "search":
        return _search_headline(doc)
    if kind == "audit":
        findings = doc.get("findings") or []
        return {
            "label": "level",
            "value": doc.get("level"),
            "detail": findings[0].get("message") if findings else None,
        }
    return None
