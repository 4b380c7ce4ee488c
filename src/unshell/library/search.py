"""`search`: which fingerprints of a library is this checkpoint a shell of?

Three stages:

1. **Candidates** (cheap, from indexed columns only): fingerprints that share content hashes with
   the suspect (identical or partial copies), then those sharing its architecture signature,
   family, hidden size, tokenizer family or vocabulary size, ranked by a cheap score. The query
   walks conjunctions of those signals from the highest score down, one index range per
   conjunction with a ``LIMIT``, and stops once ``MAX_CANDIDATES`` rows beat every conjunction
   not yet read (a threshold algorithm: exact top-k by cheap score, never a scan of the library).
2. **Lineage**: `compare_with_fingerprint(candidate, suspect, screen=True)` for every kept
   candidate: the suspect's matrices of a few layers are weighed first (one in eight, spread,
   for a model of more than eight layers: `compare.screening_layers`), and the rest only when
   they show something. A screen never says `derived` on its own, and its p-value is as valid as
   the full test's, so stopping there costs no calibration (see `compare.SCREEN_ABOVE_LAYERS`).
3. **Multiple testing**: Holm–Bonferroni over the whole library, not only the candidates tested.
   The screened-out fingerprints count as hypotheses with p = 1. Holm is monotone (raising a
   p-value never adds a rejection), so what is rejected here is a subset of what Holm over every
   fingerprint of the library would reject had each been compared: the family-wise error rate
   stays below the threshold over the whole library, and a large library cannot manufacture an
   accusation by being searched. A candidate is reported ``derived`` only when its adjusted p is
   below `DERIVED_P`; ``identical`` rests on content hashes (equal values), not on a p-value.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UnshellError
from ..formats.base import Checkpoint, sanitize
from ..lineage.compare import DERIVED_P
from ..model import Model
from ..progress import ProgressReporter, reporting, stage
from ..threads import budget, map_in_order
from .store import TIER_INDEXES, Library, cheap_signals, hashes_of

if TYPE_CHECKING:
    from ..lineage.fingerprint import Fingerprint

__all__ = [
    "MAX_CANDIDATES",
    "SCHEMA_VERSION",
    "Candidate",
    "CheapCandidate",
    "SearchResult",
    "cheap_candidates",
    "holm",
    "search",
]

SCHEMA_VERSION = 1
MAX_CANDIDATES = 32
# Candidates whose alignments are fitted, and the suspect's screened matrices sketched under all of
# them in one pass, before they are compared (`PreparedSuspect.prepare`): the sketches a batch
# holds are 28 x 256 KB per candidate at a 7B's 4 screened layers, 59 MB for 8.
SCREEN_BATCH = 8
COMMON_HASH_LIMIT = 1000  # a hash held by more fingerprints than this is a constant, not evidence
# Cheap score: shared content hashes dominate (100 x the fraction of the suspect's hashes shared, so
# one shared constant tensor, an all-ones norm, weighs next to nothing while a copy weighs 100); then
# the architecture signature, family and hidden size; the tokenizer family and vocabulary size last
# (independent models share those often).
HASH_WEIGHT = 100.0
WEIGHTS: dict[str, float] = {
    "signature": 16.0,
    "family": 4.0,
    "hidden": 4.0,
    "tokenizer_family": 2.0,
    "vocab_size": 1.0,
}
_FEATURES = tuple(WEIGHTS)
_ROW = "id, name, family, signature, hidden, vocab_size, tokenizer_family"


@dataclass
class CheapCandidate:
    """A fingerprint the candidate stage kept, and why."""

    name: str
    score: float
    matched: list[str]
    shared_hashes: int = 0

    def evidence(self, suspect_hashes: int) -> dict[str, Any]:
        return {
            "cheap_score": round(self.score, 3),
            "matched": self.matched,
            "shared_hashes": self.shared_hashes,
            "suspect_hashes": suspect_hashes,
        }


def _tiers(signals: dict[str, Any]) -> list[tuple[float, tuple[str, ...]]]:
    """Every conjunction of the suspect's known signals, highest score first."""
    known = [f for f in _FEATURES if signals.get(f) is not None]
    tiers = [
        (sum(WEIGHTS[f] for f in subset), subset)
        for size in range(len(known), 0, -1)
        for subset in itertools.combinations(known, size)
    ]
    tiers.sort(key=lambda tier: -tier[0])
    return tiers


def _index_for(subset: tuple[str, ...]) -> str:
    """The index whose prefix serves the conjunction (with a signature, the signature index: the
    signature already fixes the family, hidden and vocabulary sizes, so its other terms filter
    almost nothing out)."""
    if "signature" in subset:
        return "fp_sig"
    wanted = set(subset)
    for index, columns in TIER_INDEXES.items():
        if set(columns[: len(wanted)]) == wanted:
            return index
    raise AssertionError(f"no index serves {subset}")  # the chain cover is complete: never reached


def cheap_candidates(
    library: Library, signals: dict[str, Any], hashes: Sequence[str], *, limit: int = MAX_CANDIDATES
) -> list[CheapCandidate]:
    """The ``limit`` fingerprints with the highest cheap score (ties by name); none that share no
    signal at all. Reads indexes only: bounded work whatever the library's size."""
    db = library.db
    rows: dict[int, tuple[Any, ...]] = {}
    shared: dict[int, int] = {}
    for value in dict.fromkeys(hashes):
        holders = db.execute(
            "SELECT fingerprint_id FROM content_hashes WHERE hash = ? LIMIT ?", (value, COMMON_HASH_LIMIT + 1)
        ).fetchall()
        if len(holders) > COMMON_HASH_LIMIT:
            continue
        for (holder,) in holders:
            shared[holder] = shared.get(holder, 0) + 1
    holders_sorted = sorted(shared)
    for chunk in (holders_sorted[i : i + 500] for i in range(0, len(holders_sorted), 500)):
        query = f"SELECT {_ROW} FROM fingerprints WHERE id IN ({', '.join('?' * len(chunk))})"
        for row in db.execute(query, chunk):
            rows[row[0]] = row

    def score_of(row: tuple[Any, ...]) -> tuple[float, list[str]]:
        values = dict(
            zip(("family", "signature", "hidden", "vocab_size", "tokenizer_family"), row[2:], strict=True)
        )
        matched = [f for f in _FEATURES if signals.get(f) is not None and values[f] == signals[f]]
        score = sum(WEIGHTS[f] for f in matched)
        if shared.get(row[0]):
            score += HASH_WEIGHT * shared[row[0]] / max(len(hashes), 1)
        return score, matched

    scores = {row_id: score_of(row)[0] for row_id, row in rows.items()}
    tiers = _tiers(signals)
    for position, (_, subset) in enumerate(tiers):
        where = " AND ".join(f"{f} = ?" for f in subset)
        query = f"SELECT {_ROW} FROM fingerprints INDEXED BY {_index_for(subset)} WHERE {where} LIMIT ?"
        for row in db.execute(query, (*(signals[f] for f in subset), limit + len(rows))):
            if row[0] not in rows:
                rows[row[0]] = row
                scores[row[0]] = score_of(row)[0]
        following = tiers[position + 1][0] if position + 1 < len(tiers) else 0.0
        # Every row not read yet scores at most `following`: once `limit` rows reach it, stop.
        if len(scores) >= limit and sorted(scores.values(), reverse=True)[limit - 1] >= following:
            break
    ranked = sorted(rows.values(), key=lambda row: (-scores[row[0]], row[1]))[:limit]
    out = []
    for row in ranked:
        score, matched = score_of(row)
        if score > 0:
            out.append(CheapCandidate(row[1], score, matched, shared.get(row[0], 0)))
    return out


def holm(p_values: Sequence[float | None], m_total: int | None = None) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input's order. ``None`` counts as 1.

    ``m_total`` (at least ``len(p_values)``) adds hypotheses that were not tested, as p = 1: they
    rank last, so each tested p-value is multiplied by ``m_total - rank`` instead of
    ``len(p_values) - rank``."""
    values = [1.0 if p is None else min(max(float(p), 0.0), 1.0) for p in p_values]
    m = max(len(values), m_total or 0)
    order = sorted(range(len(values)), key=values.__getitem__)
    adjusted = [1.0] * len(values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted


@dataclass
class Candidate:
    """One library fingerprint compared with the suspect."""

    name: str
    verdict: str
    reason: str
    how: list[str]
    p_value: float | None
    p_adjusted: float | None
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "reason": self.reason,
            "how": self.how,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "evidence": self.evidence,
        }


@dataclass
class SearchResult:
    suspect: dict[str, Any]
    library_path: str
    library_size: int
    candidates: list[Candidate]
    tested: int
    screened_out: int
    candidate_seconds: float
    lineage_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def matches(self) -> list[Candidate]:
        """Candidates reported ``identical`` or ``derived``."""
        return [c for c in self.candidates if c.verdict in ("identical", "derived")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "suspect": self.suspect,
            "library": {"path": sanitize(self.library_path, limit=4096), "size": self.library_size},
            "candidates": [c.to_dict() for c in self.candidates],
            "tested": self.tested,
            "screened_out": self.screened_out,
            "multiple_testing": {
                "method": "holm",
                "hypotheses": self.library_size,
                "note": "Holm-Bonferroni over every fingerprint of the library; those screened out by the "
                "cheap stage count as p = 1. 'derived' needs an adjusted p below "
                f"{DERIVED_P:g}; 'identical' rests on content hashes",
            },
            "timing": {
                "candidates_ms": round(self.candidate_seconds * 1000, 3),
                "lineage_s": round(self.lineage_seconds, 3),
            },
            "notes": self.notes,
        }


def _relation(result: Any) -> str | None:
    tokenizer = getattr(result, "tokenizer", None)
    if tokenizer is not None:
        return str(tokenizer.relation)
    for note in getattr(result, "notes", []):  # a fingerprint comparison reports it on A's sample
        if note.startswith("tokenizer"):
            return str(note)
    return None


def _compare_all(
    library: Library,
    kept: list[CheapCandidate],
    suspect: Any,
    notes: list[str],
    workers: int | None,
    prepare: Callable[[list[Any]], bool] | None = None,
) -> list[tuple[CheapCandidate, Any]]:
    """Every kept candidate against the suspect. With a prepared checkpoint, candidates run on
    ``workers`` threads (None: the thread budget, at most 4): each comparison is numpy matrix work
    and memory-mapped reads, which release the GIL, and each holds about one tensor of the suspect
    at a time. ``prepare``: told each batch of `SCREEN_BATCH` candidates' fingerprints before they
    are compared (`PreparedSuspect.prepare`: their alignments, and the suspect's screened sketches
    under all of them in one pass). A batch it prepared is compared one candidate at a time unless
    ``workers`` says otherwise: what is left of each comparison is either milliseconds (a screen
    that shows nothing) or a derived candidate's weighing of every layer, which sketches its
    tensors side by side on the whole budget, where a second worker would leave it one core."""
    from ..lineage.fingerprint import compare_with_fingerprint

    fingerprints: list[Any] = []
    for cheap in kept:  # SQLite is read on this thread only
        try:
            fingerprints.append(library.get(cheap.name))
        except UnshellError as error:
            notes.append(f"{cheap.name}: could not be read from the library ({error})")
            fingerprints.append(None)

    def one(index: int) -> Any:
        fp = fingerprints[index]
        if fp is None:
            return None
        try:
            return compare_with_fingerprint(fp, suspect, screen=True)
        except UnshellError as error:
            notes.append(f"{kept[index].name}: could not be compared ({error})")
            return None

    # The pool and BLAS share the thread budget (`unshell.threads`): workers x BLAS threads <= it
    # (the default workers never exceed it; a caller's explicit count is taken as given).
    results: list[Any] = []
    with stage("testing candidates", len(kept), "candidate") as shown:
        step = SCREEN_BATCH if prepare is not None else max(1, len(kept))
        for start in range(0, len(kept), step):
            batch = range(start, min(start + step, len(kept)))
            prepared = False
            if prepare is not None:
                with contextlib.suppress(UnshellError):  # each comparison meets it again, in a note
                    prepared = prepare([fingerprints[i] for i in batch if fingerprints[i] is not None])
            side_by_side = workers if workers is not None else 1 if prepared else min(budget(), 4)
            results += map_in_order(
                one,
                batch,
                workers=max(1, side_by_side),
                done=lambda _: shown.advance(),
                name="unshell-search",
            )
    return list(zip(kept, results, strict=True))


def search(
    suspect: str | os.PathLike[str] | Checkpoint | Model | Fingerprint,
    library: Library | str | os.PathLike[str] | None = None,
    *,
    top: int = 5,
    max_candidates: int = MAX_CANDIDATES,
    workers: int | None = None,
    progress: ProgressReporter | None = None,
) -> SearchResult:
    """Search ``library`` for the fingerprints ``suspect`` derives from (a path, an open
    checkpoint or `Model`, or a fingerprint). Returns at most ``top`` candidates, matches first.

    ``library`` is a `Library`, the path of one, or None for the default library. ``workers``
    threads test candidates side by side (default: the thread budget, `unshell.threads.budget`, at
    most 4, since each holds about one tensor of the suspect in memory; one where a batch of
    candidates was prepared ahead, see `_compare_all`), each with its share of the budget's BLAS
    threads. ``progress``: where to report the suspect's bytes hashed and the candidates tested
    (`unshell.progress`).

    Example:
        >>> from unshell.library import Library, search
        >>> search("suspect/", Library()).to_dict()["candidates"]   # doctest: +SKIP
    """
    if not isinstance(library, Library):
        with Library(library) as opened_library:
            return search(
                suspect,
                opened_library,
                top=top,
                max_candidates=max_candidates,
                workers=workers,
                progress=progress,
            )
    from ..formats import open_checkpoint
    from ..lineage.fingerprint import Fingerprint, prepare_suspect

    notes: list[str] = []
    suspect_path = ""
    opened = None
    if isinstance(suspect, Fingerprint):
        notes.append(
            "the suspect was given as a fingerprint: fingerprint against fingerprint does not detect "
            "derivatives whose residual stream was rotated or permuted, nor width-pruned ones"
        )
    elif not isinstance(suspect, Checkpoint | Model):
        suspect_path = str(Path(suspect))
        opened = open_checkpoint(suspect)
    try:
        with reporting(progress):
            # The suspect is recognized and hashed once; each candidate then only aligns and sketches.
            target: Any = suspect
            if opened is not None:
                target = prepare_suspect(opened, suspect_path)
            elif isinstance(suspect, Checkpoint | Model):
                target = prepare_suspect(suspect)
            described = suspect if target is suspect else target.signals
            signals = cheap_signals(described)
            hashes = hashes_of(described)
            library_size = len(library)
            start = time.perf_counter()
            kept = cheap_candidates(library, signals, hashes, limit=max_candidates)
            candidate_seconds = time.perf_counter() - start
            if target is not suspect:
                target.expect(len(kept))
            start = time.perf_counter()
            prepare = target.prepare if target is not suspect else None
            tested = _compare_all(library, kept, target, notes, workers, prepare)
            lineage_seconds = time.perf_counter() - start
    finally:
        if opened is not None:
            opened.close()

    raw = [None if result is None else result.p_value for _, result in tested]
    adjusted = holm(raw, library_size)
    candidates = []
    for (cheap, result), p_adjusted in zip(tested, adjusted, strict=True):
        evidence = cheap.evidence(len(hashes))
        if result is None:
            candidates.append(
                Candidate(cheap.name, "inconclusive", "could not be compared", [], None, None, evidence)
            )
            continue
        evidence["tokenizer_relation"] = _relation(result)
        verdict, reason, how = result.verdict, result.reason, list(result.how)
        p_value = result.p_value
        if verdict == "derived" and not p_adjusted < DERIVED_P:
            verdict = "inconclusive"
            reason = (
                f"p = {p_value:.2g} alone, but {p_adjusted:.2g} after adjusting for the library's "
                f"{library_size} fingerprints: not enough to claim derivation"
            )
            how = []
        candidates.append(
            Candidate(
                cheap.name, verdict, reason, how, p_value, None if p_value is None else p_adjusted, evidence
            )
        )

    def order(candidate: Candidate) -> tuple[int, float, float, str]:
        matched = candidate.verdict in ("identical", "derived")
        p = (
            -1.0
            if candidate.verdict == "identical"
            else (candidate.p_adjusted if candidate.p_adjusted is not None else 2.0)
        )
        return (0 if matched else 1, p, -candidate.evidence["cheap_score"], candidate.name)

    candidates.sort(key=order)
    derived = [c.name for c in candidates if c.verdict == "derived"]
    if len(derived) >= 2:
        from ..lineage.merges import merge_hint

        notes.append(merge_hint(derived))
    return SearchResult(
        suspect={
            "path": sanitize(suspect_path, limit=4096),
            "name": getattr(described, "name", None),
            **{k: signals[k] for k in ("family", "signature", "hidden", "vocab_size", "tokenizer_family")},
            "content_hashes": len(hashes),
        },
        library_path=str(library.path),
        library_size=library_size,
        candidates=candidates[: max(top, 0)],
        tested=len(tested),
        screened_out=library_size - len(tested),
        candidate_seconds=candidate_seconds,
        lineage_seconds=lineage_seconds,
        notes=notes,
    )
