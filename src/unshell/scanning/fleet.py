"""Fleet audits: `unshell scan ROOT... --search LIBRARY`.

Each checkpoint a scan finds is fingerprinted once (the scan's own work), searched against a
library of known bases, and audited (declared lineage against detected), in the same worker: the
audit's weight evidence is that one search (`unshell.auditing.audit_checkpoint` with the library),
whose suspect is read and hashed once for every candidate. The record gets `FLEET_FIELDS`; the
scan's summary gets `fleet_summary`: counts by audit level and the derived pairs with their
evidence. Workers open the library read-only by its path (a Ray cluster needs it on a shared
filesystem, like the checkpoints); the driver reads it first, so that a migration happens once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..auditing import LEVELS, audit_checkpoint
from ..formats.base import Checkpoint
from ..library import Library, existing_library
from .engine import FLEET_FIELDS, SEARCH_MODE, Analysis, analyze_fingerprint

__all__ = ["FLEET_FIELDS", "SEARCH_MODE", "analyze_search", "fleet_summary", "library_key"]


def library_key(library: Library) -> str:
    """A digest of the library's content (every entry's name, time added and size): a fleet
    record stands for the library it was searched against, so a changed library is searched again."""
    digest = hashlib.sha256()
    for entry in library.list():
        digest.update(f"{entry.name}\0{entry.added!r}\0{entry.size}\n".encode())
    return digest.hexdigest()


def analyze_search(
    checkpoint: Checkpoint, path: str, name: str, *, library_path: str, key: str, keep_fingerprint: bool
) -> Analysis:
    """The fleet work of one checkpoint: its fingerprint, then the library search and the audit.

    ``keep_fingerprint``: return the fingerprint to the driver (it adds it to a library); else only
    its size is recorded, and nothing large crosses the process boundary."""
    analysis = analyze_fingerprint(checkpoint, path, name)
    with existing_library(library_path) as library:
        report = audit_checkpoint(checkpoint, path=path, library=library).to_dict()
    analysis.fields.update(fleet_fields(report, key))
    if not keep_fingerprint:
        analysis.fingerprint = None
    return analysis


def fleet_fields(report: dict[str, Any], key: str) -> dict[str, Any]:
    """The `FLEET_FIELDS` of a record, from an audit report (`AuditResult.to_dict`)."""
    weights = report["detected"].get("weights") or {}
    candidates = [
        {
            "name": candidate["name"],
            "verdict": candidate["verdict"],
            "p_value": candidate["p_value"],
            "p_holm": candidate["p_adjusted"],
            "how": candidate["how"],
            "reason": candidate["reason"],
            "evidence": candidate["evidence"],
        }
        for candidate in weights.get("candidates", [])
    ]
    base = weights.get("base")
    fields = {
        "library_key": key,
        "audit_level": report["level"],
        "base": base,
        # The audit's verdict on `base` (None when no library entry other than itself matched).
        "verdict": weights.get("verdict") if base is not None else None,
        "p_holm": weights.get("p_value") if base is not None else None,
        "how": list(weights.get("how") or []) if base is not None else [],
        "candidates": candidates,
        "findings": [{"level": f["level"], "message": f["message"]} for f in report["findings"]],
    }
    assert tuple(fields) == FLEET_FIELDS
    return fields


def fleet_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by audit level (checkpoints that failed are not audited) and the derived pairs:
    every checkpoint whose weights come from a library entry, with the evidence."""
    levels = dict.fromkeys(LEVELS, 0)
    pairs = []
    for record in records:
        level = record.get("audit_level")
        if record.get("status") == "error" or level not in levels:
            continue
        levels[level] += 1
        if record.get("base") is None:
            continue
        best = next((c for c in record.get("candidates") or [] if c["name"] == record["base"]), None)
        pairs.append(
            {
                "checkpoint": record["name"],
                "path": record["path"],
                "base": record["base"],
                "verdict": record["verdict"],
                "p_holm": record["p_holm"],
                "how": record["how"],
                "audit_level": level,
                "reason": None if best is None else best["reason"],
                "evidence": None if best is None else best["evidence"],
                "findings": [f for f in record.get("findings") or [] if f["level"] == level],
            }
        )
    return {
        "levels": levels,
        "audited": sum(levels.values()),
        "derived": pairs,
    }
