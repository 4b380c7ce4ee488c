"""The fleet audit's report (`unshell scan ROOT... --search LIBRARY`): the summary table for the
terminal, and one self-contained HTML page (``templates/fleet.html``, rendered like every report
by `report.markup`'s environment, which escapes and defangs every name and message from a
checkpoint, and styled by ``report.css``: no script, nothing loaded).

Both take the scan's document: ``ScanSummary.to_dict()`` with its ``records`` added (what
``scan --format json`` prints), whose ``search`` part is `unshell.scanning.fleet.fleet_summary`.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jinja2

from .html import write_html
from .markup import LEVEL_CLASS, environment
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


@functools.cache
def _environment() -> jinja2.Environment:
    """report.markup's environment (autoescape, every value through `safe_text`), with the fleet
    tables' own number wording added."""
    env = environment().overlay()
    env.filters.update(p=p_text, bytes=human_bytes, count=human_count)
    return env


def fleet_html(doc: dict[str, Any]) -> str:
    """The fleet report as one HTML page: counts by level, the derived pairs with their evidence,
    every checkpoint audited, and those that failed."""
    from .. import __version__

    fleet = doc["search"]
    levels = fleet["levels"]
    largest = max(levels.values(), default=0) or 1
    template = _environment().get_template("fleet.html")
    derived = len(fleet["derived"])
    audited = _audited(doc)
    failed = [r for r in doc["records"] if r["status"] == "error"]
    toc = [
        ("summary", "Summary"),
        ("levels", "Levels"),
        ("derived", f"Derived pairs ({derived})"),
        ("checkpoints", f"Every checkpoint ({len(audited)})"),
        *([("failed", f"Failed ({len(failed)})")] if failed else []),
    ]
    return str(
        template.render(
            title=f"Fleet audit: {doc['total']} checkpoints",
            toc=toc,
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
            audited=audited,
            failed=failed,
            level_class=LEVEL_CLASS,
            version=__version__,
        )
    )


def write_fleet_html(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write `fleet_html` atomically (a temporary file, then a rename)."""
    write_html(fleet_html(doc), path)
