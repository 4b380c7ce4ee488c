"""The fleet audit's report (`unshell scan ROOT... --search LIBRARY`): the summary table for the
terminal, and one self-contained HTML page (``templates/fleet.html``, Jinja2 with autoescape:
every name and message from a checkpoint is escaped; inline CSS, no script, nothing loaded).

Both take the scan's document: ``ScanSummary.to_dict()`` with its ``records`` added (what
``scan --format json`` prints), whose ``search`` part is `unshell.scanning.fleet.fleet_summary`.
"""

from __future__ import annotations

import os
from typing import Any

from ..formats.base import sanitize
from .html import write_html
from .markup import LEVEL_CLASS, defang
from .text import columns, human_bytes, human_count

__all__ = ["LEVEL_MEANING", "fleet_html", "render_fleet", "write_fleet_html"]

# The audit's levels, most severe first (`unshell.auditing.LEVELS`), and what each means here.
LEVEL_MEANING = {
    "undisclosed-derivative": "the weights derive from a library entry, and the model does not name it",
    "licence-obligations-unmet": "a licence the model is bound by asks for something its files do not show",
    "architecture-reuse-undisclosed": "another model's architecture or code, not declared",
    "inconclusive": "the evidence neither shows nor excludes reuse; no claim is made",
    "note": "for information: nothing undisclosed",
    "ok": "nothing undisclosed found",
}
_ROWS_SHOWN = 50


def plain_text(value: Any, limit: int = 4096) -> str:
    """A value from a model's files as text for the page: control characters shown, addresses
    defanged (the template escapes the markup)."""
    text = sanitize("" if value is None else str(value), limit=limit)
    return defang(text)


def p_text(p: float | None) -> str:
    """A Holm-adjusted p-value as the tables show it (None: an identical copy, by content hashes)."""
    if p is None:
        return "hashes"
    return "< 1e-300" if p == 0 else f"{p:.2g}"


def _severity(record: dict[str, Any]) -> int:
    level = record.get("audit_level")
    return list(LEVEL_MEANING).index(level) if level in LEVEL_MEANING else len(LEVEL_MEANING)


def _audited(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The records that were audited, most severe first, then by name."""
    records = [r for r in doc["records"] if r["status"] != "error" and r.get("audit_level")]
    return sorted(records, key=lambda r: (_severity(r), r["name"]))


def render_fleet(doc: dict[str, Any]) -> str:
    """The terminal summary: one row per checkpoint (most severe first), counts by level, the scan's
    totals, and the checkpoints that failed."""
    fleet = doc["search"]
    rows = [
        (
            r["name"],
            r["audit_level"].upper(),
            r["base"] or "",
            r["verdict"] or "",
            "" if r["base"] is None else p_text(r["p_holm"]),
            ", ".join(r["how"] or []),
            "unchanged" if r["status"] == "skipped" else "audited",
        )
        for r in _audited(doc)
    ]
    text = ""
    if rows:
        headers = ("CHECKPOINT", "LEVEL", "BASE", "VERDICT", "P (HOLM)", "HOW", "STATUS")
        text += columns(headers, rows, limit=_ROWS_SHOWN) + "\n\n"
    counts = ", ".join(f"{n} {level}" for level, n in fleet["levels"].items() if n)
    library = fleet["library"]
    text += (
        f"{doc['total']} checkpoints ({human_bytes(doc['bytes'])} read) in {doc['seconds']:.1f} s on "
        f"{doc['engine']}: {doc['ok']} audited, {doc['skipped']} unchanged, {doc['errors']} failed\n"
        f"searched against {library['size']} fingerprints in {library['path']}\n"
        f"levels: {counts or 'none'}; {len(fleet['derived'])} with weights from a library entry "
        "(derived or identical)\n"
    )
    if doc["library_added"]:
        text += f"{doc['library_added']} fingerprints added to the library\n"
    if doc["output"]:
        text += f"records: {doc['output']}\n"
    failed = [(r["path"], r["error"] or "") for r in doc["records"] if r["status"] == "error"]
    if failed:
        text += "\n" + columns(("FAILED", "ERROR"), failed, limit=20) + "\n"
    return text


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("unshell.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["p"] = p_text
    env.filters["text"] = plain_text
    env.filters["bytes"] = human_bytes
    env.filters["count"] = human_count
    return env


def fleet_html(doc: dict[str, Any]) -> str:
    """The fleet report as one HTML page: counts by level, the derived pairs with their evidence,
    every checkpoint audited, and those that failed."""
    from .. import __version__

    fleet = doc["search"]
    levels = fleet["levels"]
    largest = max(levels.values(), default=0) or 1
    template = _environment().get_template("fleet.html")
    return str(
        template.render(
            doc=doc,
            fleet=fleet,
            levels=[
                {
                    "name": level,
                    "count": count,
                    "meaning": LEVEL_MEANING.get(level, ""),
                    "css": LEVEL_CLASS.get(level, "lv-note"),
                    "width": round(100 * count / largest),
                }
                for level, count in levels.items()
            ],
            pairs=sorted(fleet["derived"], key=lambda pair: (pair["base"], pair["checkpoint"])),
            audited=_audited(doc),
            failed=[r for r in doc["records"] if r["status"] == "error"],
            level_class=LEVEL_CLASS,
            version=__version__,
        )
    )


def write_fleet_html(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write `fleet_html` atomically (a temporary file, then a rename)."""
    write_html(fleet_html(doc), path)
