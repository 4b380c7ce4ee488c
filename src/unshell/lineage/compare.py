"""`unshell.compare(a, b)`: did B's weights come from A's, or were they trained independently?

The decisive evidence is a test of H0 "B was trained independently of A", on weights alone:

1. Residual alignment: orthogonal Procrustes between the embedding rows of shared tokens undoes a
   permuted, sign-flipped or rotated residual stream (norm gains are folded into the matrices
   that read the normalized stream first, as a disguiser would have to). Rows are paired by token
   string when both sides carry a tokenizer and some shared tokens moved (a renumbered, shrunk or
   new vocabulary), else by id. When that fit is weak (residual above `TRUSTED_RESIDUAL`) or
   failed (no better than the same fit on randomly paired rows, `alignment_failure`), two more
   alignments are tried, which need no token at all: the stored basis, and a rotation read off
   the layer matrices' second moments (`layer_fit_alignment`, cross-fitted by layer parity). The
   p-value is multiplied by the number of alignments in the plan (Bonferroni).
2. Units: every matrix that touches the residual stream, as the set of its vectors in residual
   space. A unit's sketch (`sketch.gram_sketch`) forgets neuron and head permutations, sign
   flips, rotations inside heads and the scaling of one matrix against the next. A matrix with
   more than `sketch.row_sample_size` vectors is sketched from a fixed sample of them, chosen by
   its shape alone (`sketch.sampled_rows`; why the null stays valid is written beside it).
3. Each of B's units is matched to its most similar unit of A, by name-blind search over all of A.
   The unit's null is the rest of its own row: how similar B's unit is to A's *other* units,
   robustly located (median) and scaled (MAD, floored at the exact spread of two randomly
   rotated sketches). The best match's z-score is corrected for having been picked among
   N candidates (Šidák), giving a per-unit p-value; units are combined with Stouffer's method.
   Under H0 the best match is just the largest of N exchangeable draws, so the combined p-value
   is uniform or conservative; `benchmarks/RESULTS.md` holds the simulation over independent
   pairs that checks it, and the hardest negatives (same data, same recipe, other seed).

Cheap evidence (content hashes, std profiles, the alignment residual) is always reported next to
it. Hashes decide in two ways: `identical` needs every weight's values to match; and exact twins
of tensors that training cannot reproduce (`TWIN_MIN_ELEMENTS`, `TWIN_MIN_DISTINCT`) make most of
B's parameters copied `derived`, and any copied tensor rules out `independent`. `independent` is
only said when the embedding alignment succeeded; a failed one gives `inconclusive`, with why.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
from collections.abc import Callable, Hashable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import numpy as np

from ..arch.recognize import Assignment
from ..errors import UsageError
from ..formats.base import Checkpoint, sanitize
from ..inspection import InspectResult, weight_tensors
from ..model import Model
from ..progress import BYTES, ProgressReporter, reporting, stage, track
from ..threads import map_in_order
from ..tokenizers.relations import TokenizerRelation, relate
from ..tokenizers.vocab import Vocabulary, vocabulary_of
from .canonical import LAYER_ROLES, READS_RESIDUAL, CanonicalModel
from .change import ValueAdded, assess, copied_everywhere, revise_how
from .expert_change import account_experts
from .experts import ExpertMap, expert_map
from .hashes import (
    ContentHashes,
    HashMatch,
    TensorHashes,
    TwinMatch,
    digest_candidates,
    exact_twins,
    match_hashes,
    probably_identical,
    settle_multisets,
)
from .sketch import (
    SKETCH_DIM,
    Alignment,
    align_embeddings,
    anchor_stride,
    finite,
    finite_unit_rows,
    fit_rotation,
    identity_alignment,
    off_identity,
    projection,
    row_sample_size,
    sampled_rows,
    unit_sketches,
)
from .summary import ModelSummary

if TYPE_CHECKING:
    from ..tokenizers.report import TokenizerComparison

SCHEMA_VERSION = 1
DERIVED_P = 1e-6
INDEPENDENT_P = 0.01
MIN_UNITS = 4
# Sampled rows further apart than this (bytes from one to the next) are read without readahead;
# closer ones (the anchors: every 4th row of a 7B embedding, 32 KiB apart) are read sequentially,
# since readahead fetches the pages in between in large requests instead of one fault per row.
SPARSE_ROWS_GAP = 1 << 16
QUICK_ROW_STEP = 20  # --quick reads 1 row in 20 (of matrices whose names give their storage)
# ... of matrices larger than this: a smaller one is read whole (a tiny model's 7 sampled rows of
# 128 would sketch nothing, and reading all of it costs nothing).
QUICK_WHOLE_BYTES = 1 << 20
# All of B's units share one estimated alignment, so under H0 their z-scores are not fully
# independent; Stouffer's sum would over-count a common shift. Widening every unit's null by 10%
# absorbs it: measured on the zoo's same-data, same-recipe negatives and 210 cheap null pairs
# (benchmarks/RESULTS.md). It costs derivatives nothing that matters (their per-unit z is 10 to 100).
NULL_SCALE_MARGIN = 1.1
# The per-layer std-profile correlation (the statistic of the 2025 Pangu-vs-Qwen dispute) on the
# 116 independent pairs of the lineage zoo (benchmarks/RESULTS.md); shown beside every value.
PROFILE_NULL_MEDIAN = 0.85
PROFILE_NULL_MAX = 0.98
PROFILE_NULL_ABOVE_09 = 0.32
QUANTIZED_DTYPES_PREFIX = ("Q", "IQ", "TQ", "MXFP", "I8")
# --- alignment quality (benchmarks/RESULTS.md, "alignment without shared token ids") -----------
# An embedding alignment whose residual is no better than the same fit with the anchor rows paired
# at random (`Alignment.chance`) by at least this much has failed: the anchors do not pair the
# same tokens (a renumbered or new vocabulary, re-initialised rows) or carry nothing to align on.
# Measured (benchmarks/RESULTS.md, 2026-12-05; chance is only fitted above `TRUSTED_RESIDUAL`):
# derivatives that kept some rows sit 0.22 to 0.34 below chance (one whose embedding was
# re-initialised and relearned, 0.054), independently trained models 0.027 to 0.38 below it (the closest: stories260K
# against base-s0, other vocabularies at the same ids), the misses within 0.001 of it,
# and briefly trained null models, whose embeddings are still nearly random, 0.003 to 0.013.
# Rows paired at random vary by about 0.001 from one shuffle to the next.
ALIGNMENT_MIN_GAP = 0.02
# Below this residual the anchors alone align the streams (every zoo derivative that kept its
# embedding rows is under 0.13, its heaviest retraining 0.62); above it, the other candidates
# (the stored basis, a rotation fitted from the layer matrices) are tried too.
TRUSTED_RESIDUAL = 0.5
# String anchors need enough shared tokens to fix a rotation: at least this many per dimension.
MIN_ANCHORS_PER_DIMENSION = 2
# The rotation fitted from layer matrices works on full H x H second moments.
LAYER_FIT_MAX_HIDDEN = 2048
LAYER_FIT_MIN_MATRICES = 4
# A rotation fitted on the models themselves leaves their matrices closer than the random-rotation
# null says, even cross-fitted (uncorrected p down to 0.003 on the zoo's independent pairs with
# --quick, whose fit sees only the reading matrices): under it, every unit's null is this much
# wider than `NULL_SCALE_MARGIN`'s. Derivatives found only this way keep p = 0 (Z > 37).
LAYER_FIT_NULL_MARGIN = 1.5
# Exact twins (after bf16 rounding) count as evidence only for tensors that independent training
# cannot reproduce: at least this many values, this many of them distinct (an all-ones norm gain,
# a zero bias or a constant table is excluded).
TWIN_MIN_ELEMENTS = 1024
TWIN_MIN_DISTINCT = 256
# When this fraction of B's parameters are twins of A's tensors, B is `derived` whatever the
# sketches say; any twin at all rules out `independent`.
TWIN_DERIVED_FRACTION = 0.5
FIXED_ROLES = ("pos_embed.weight", "type_embed.weight")


@dataclass
class Unit:
    """One matrix as a set of vectors in residual space, kept only as its sketch."""

    name: str
    layer: int | None
    role: str | None
    orientation: str  # "rows" or "columns"
    sketch: np.ndarray
    std: float

    @property
    def label(self) -> str:
        return f"{self.name}[{self.orientation}]"


@dataclass
class UnitMatch:
    b: Unit
    a: Unit
    similarity: float
    null_median: float
    null_scale: float
    z: float
    p: float


@dataclass
class LayerSimilarity:
    """Every layer of B against every layer of A (for reports; the verdict never reads it).

    ``matrix[i][j]``: for each weight matrix of B's layer ``layers_b[i]``, its similarity (sketch
    cosine, 0 = unrelated, 1 = same) to the most similar matrix of A's layer ``layers_a[j]``,
    averaged over the layer's matrices. A derivative shows one cell per row far above the rest
    (a duplicated layer: two rows with the same best column); unrelated models show no pattern.
    """

    layers_a: list[int]
    layers_b: list[int]
    matrix: list[list[float]]

    def best_a(self) -> list[int | None]:
        """For each row, the layer of A with the highest value (None for an empty row)."""
        return [
            self.layers_a[max(range(len(row)), key=row.__getitem__)] if row else None for row in self.matrix
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers_a": self.layers_a,
            "layers_b": self.layers_b,
            "matrix": self.matrix,
            "statistic": "for each matrix of B's layer, its sketch similarity to the most similar matrix "
            "of A's layer, averaged over the layer (rows: B's layers, columns: A's layers)",
        }


@dataclass
class CompareResult:
    path_a: str
    path_b: str
    summary_a: ModelSummary
    summary_b: ModelSummary
    verdict: str
    reason: str
    how: list[str]
    p_value: float | None
    score: float | None
    layers: list[dict[str, Any]]
    hashes: HashMatch | None
    alignment: Alignment | None
    profile_correlation: float | None
    matches: list[UnitMatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bytes_read: int = 0
    quick: bool = False
    tokenizer: TokenizerRelation | None = None
    # For reports (never used by the verdict): B's layers against A's, and per-layer std profiles.
    layer_similarity: LayerSimilarity | None = None
    std_profiles: dict[str, dict[str, list[float | None]]] | None = None
    # Exact twins of A's tensors among B's (full mode only), the embedding alignment (`alignment` is
    # the one the verdict rests on), why the streams are not known to be aligned, and every
    # alignment tried: the p-value is corrected for `corrected_for` of them.
    twins: TwinMatch | None = None
    anchored: Alignment | None = None
    alignment_failure: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    corrected_for: int = 1
    # The full inspections, when both sides were read as checkpoints (None for a fingerprint's side).
    inspect_a: InspectResult | None = None
    inspect_b: InspectResult | None = None
    # log10 of p_value worked out in log space: finite where p_value underflows to 0.0.
    log10_p: float | None = None
    # B's FFN blocks (experts) mapped onto A's, when either side is an MoE (`lineage.experts`).
    experts: ExpertMap | None = None
    # What B adds to A, tensor by tensor (`lineage.change`): derived and identical pairs, full mode.
    value_added: ValueAdded | None = None

    @property
    def log10_p_value(self) -> float | None:
        """log10 of `p_value`, exact even where `p_value` underflows to 0.0 (None without a test)."""
        if self.log10_p is not None:
            return self.log10_p
        if self.p_value is None or self.p_value <= 0.0:
            return None
        return math.log10(self.p_value)

    @property
    def alignment_quality(self) -> str:
        """``aligned`` (the embedding anchors fit beyond chance), ``failed`` (they do not, or there
        are none), or ``n/a`` (no test was run)."""
        if not self.candidates and self.anchored is None:
            return "n/a"
        return "failed" if self.alignment_failure is not None else "aligned"

    def alignment_dict(self) -> dict[str, Any] | None:
        def number(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 6)

        if self.alignment is None and self.anchored is None:
            return None
        shown = self.alignment or self.anchored
        assert shown is not None
        anchored = self.anchored
        return {
            "method": shown.method,
            "residual": number(shown.residual),
            "anchors": shown.anchors,
            "quality": self.alignment_quality,
            "failure": self.alignment_failure,
            "anchored_by": None if anchored is None else anchored.anchored_by,
            "anchor_residual": None if anchored is None else number(anchored.residual),
            "anchor_fitted": None if anchored is None else anchored.fitted,
            "chance_residual": None if anchored is None else number(anchored.chance),
            "min_gap": ALIGNMENT_MIN_GAP,
            "candidates": [c.to_dict() for c in self.candidates],
            "corrected_for": self.corrected_for,
        }

    def to_dict(self) -> dict[str, Any]:
        arch_a, arch_b = self.summary_a, self.summary_b
        return {
            "schema_version": SCHEMA_VERSION,
            "a": _side(self.path_a, self.summary_a),
            "b": _side(self.path_b, self.summary_b),
            "architecture": {
                "same_family": bool(arch_a.family and arch_a.family == arch_b.family),
                "family_a": arch_a.family,
                "family_b": arch_b.family,
                "same_shapes": arch_a.config == arch_b.config,
                "config_a": arch_a.config,
                "config_b": arch_b.config,
                "renamed_in_b": arch_b.renamed_count,
                "note": "architecture reuse is reported apart from weight reuse: sharing a design is not sharing weights",
            },
            "tokenizer": None if self.tokenizer is None else self.tokenizer.to_dict(),
            "verdict": self.verdict,
            "reason": self.reason,
            "alignment_quality": self.alignment_quality,
            "how": self.how,
            "p_value": self.p_value,
            "log10_p_value": None if self.log10_p_value is None else round(self.log10_p_value, 6),
            "score": None if self.score is None else round(self.score, 6),
            "layers": self.layers,
            "layer_similarity": None if self.layer_similarity is None else self.layer_similarity.to_dict(),
            "experts": None if self.experts is None else self.experts.to_dict(),
            "evidence": {
                "hashes": None if self.hashes is None else self.hashes.to_dict(),
                "exact_twins": None if self.twins is None else self.twins.to_dict(),
                "alignment": self.alignment_dict(),
                "std_profile_correlation": None
                if self.profile_correlation is None
                else round(self.profile_correlation, 6),
                "std_profiles": self.std_profiles,
                "std_profile_note": (
                    f"for reference only: independently trained same-architecture pairs in the lineage "
                    f"zoo score median {PROFILE_NULL_MEDIAN}, up to {PROFILE_NULL_MAX} "
                    f"({PROFILE_NULL_ABOVE_09:.0%} above 0.9), so this statistic cannot tell copying apart"
                ),
                "units_compared": len(self.matches),
                "quick": self.quick,
                "bytes_read": self.bytes_read,
            },
            "notes": self.notes,
            "value_added": None if self.value_added is None else self.value_added.to_dict(),
        }


def alignment_text(alignment: dict[str, Any] | None) -> str | None:
    """One line on the residual alignment a comparison rests on, from `CompareResult.alignment_dict`
    (shown beside the verdict by the CLI and the HTML report)."""
    if not alignment:
        return None
    anchor = alignment.get("anchor_residual")
    chance = alignment.get("chance_residual")
    if anchor is None and alignment["quality"] == "n/a":  # a fingerprint's alignment
        residual = alignment.get("residual")
        return str(alignment["method"]) + ("" if residual is None else f", residual {residual:.3f}")
    if anchor is None:
        fit = "no embedding anchors"
    else:
        fit = f"embedding rows of the same {str(alignment['anchored_by']).removeprefix('token ')}, residual {anchor:.3f}"
        if alignment.get("anchor_fitted") is False:
            fit += " untransformed (no rotation fitted: none needed)"
        if chance is not None:
            fit += f" (rows paired at random: {chance:.3f})"
    text = f"{alignment['quality']}: {fit}"
    tried = alignment.get("candidates") or []
    if len(tried) > 1 or alignment.get("corrected_for", 1) > 1:
        names = {
            "procrustes-embeddings": "embeddings",
            "identity": "stored basis",
            "layer-matrices": "layer matrices",
        }
        parts = [f"{names.get(c['method'], c['method'])} p={_short_p(c['p_uncorrected'])}" for c in tried]
        text += f"; alignments tried: {', '.join(parts)} (p corrected for {alignment['corrected_for']})"
    return text


def twins_text(twins: dict[str, Any] | None) -> str | None:
    """One line on B's exact twins of A's tensors (`TwinMatch.to_dict`), or None when not computed."""
    if twins is None:
        return None
    return (
        f"{twins['fraction']:.0%} of B's parameters in {twins['tensors']} tensors identical to one of A's "
        f"(after bf16 rounding; only tensors of at least {twins['min_elements']:,} values, "
        f"{twins['min_distinct']} of them distinct, count): most makes B derived, any rules out independent"
    )


def _short_p(p: float | None) -> str:
    return "n/a (not tried)" if p is None else f"{p:.2g}"


def _side(path: str, result: ModelSummary) -> dict[str, Any]:
    return {
        "path": sanitize(path, limit=4096),
        "format": result.format,
        "family": result.family,
        "parameters": result.parameters,
        "dtypes": sorted(result.dtypes),
    }


# --- units ---------------------------------------------------------------------------------------


def model_units(
    model: CanonicalModel,
    hidden: int,
    basis: np.ndarray,
    *,
    quick: bool = False,
    sample: int | None = None,
    layers: frozenset[int] | None = None,
) -> list[Unit]:
    """Every 2-D weight with a residual-sized side, oriented so its vectors live in residual space,
    streamed a tensor at a time into its sketch (``basis`` maps the model's residual coordinates
    onto A's sketch space). ``quick`` reads every 20th row of the matrices that read the residual
    stream and skips those that write it, whose residual side is their rows. ``sample``: sketch a
    matrix from at most this many of its vectors (`sketch.sampled_rows`; 0: all of them; None:
    `default_sample` of the basis). ``layers``: only the matrices of these layers (None: all).

    The tensors are sketched side by side on the thread budget's workers, one BLAS thread each: a
    sketch's decoding, sampling and row norms run on one core, and its projection is too skinny
    for two BLAS threads to halve (RESULTS.md, session 10). The units come back in file order."""
    return model_unit_sets(model, hidden, [basis], quick=quick, sample=sample, layers=layers)[0]


def model_unit_sets(
    model: CanonicalModel,
    hidden: int,
    bases: list[np.ndarray],
    *,
    quick: bool = False,
    sample: int | None = None,
    layers: frozenset[int] | None = None,
) -> list[list[Unit]]:
    """`model_units` in each of ``bases`` (of one width), in one pass: each tensor is read, decoded
    and sampled once, and projected on every basis (`tensor_unit_sets`)."""
    roles = {a.name: a for a in model.result.recognition.assignments}
    checkpoint = model.checkpoint
    keep = default_sample(bases[0]) if sample is None else sample
    names = [
        n for n in checkpoint.tensors if layers is None or ((role := roles.get(n)) and role.layer in layers)
    ]
    with stage(
        f"sketching {checkpoint.path.name}", sum(checkpoint.info(n).nbytes for n in names), BYTES
    ) as shown:
        made = map_in_order(
            lambda name: tensor_unit_sets(model, name, roles, hidden, bases, quick=quick, sample=keep),
            names,
            done=lambda index: shown.advance(checkpoint.info(names[index]).nbytes),
            name="unshell-sketch",
        )
    return [[u for sets in made for u in sets[k]] for k in range(len(bases))]


def default_sample(basis: np.ndarray) -> int:
    """The vectors a sketch in ``basis``'s dimensions takes of each matrix (`sketch.row_sample_size`)."""
    return row_sample_size(basis.shape[1])


def suspect_units(
    model: CanonicalModel,
    hidden: int,
    basis: np.ndarray,
    *,
    quick: bool = False,
    sample: int | None = None,
    layers: frozenset[int] | None = None,
) -> list[Unit]:
    """`model_units`, kept on the model (`CanonicalModel.memo`) by the basis's content: a search
    sketches its suspect under each candidate's basis, and candidates that share one (the identity
    alignment of every base of the suspect's width whose anchors do not fit) share the pass. Units
    made ahead for this key (`units_ahead`, `CanonicalModel.hold`) are taken from there."""
    basis = np.ascontiguousarray(basis)
    keep = default_sample(basis) if sample is None else sample
    return list(
        model.memo(
            _units_key(basis, quick, keep, layers),
            functools.partial(model_units, model, hidden, basis, quick=quick, sample=keep, layers=layers),
        )
    )


def units_ahead(
    model: CanonicalModel,
    hidden: int,
    bases: list[np.ndarray],
    *,
    sample: int | None = None,
    layers: frozenset[int] | None = None,
) -> dict[Hashable, list[Unit]]:
    """`suspect_units` under each of ``bases`` (of one width), made in one pass over the model
    (`model_unit_sets`), by the keys `suspect_units` asks `CanonicalModel.memo` for, to be held
    there (`CanonicalModel.hold`): a search's candidates, each with its own alignment, read, decode
    and sample the suspect's screened matrices once instead of once each (RESULTS.md, session 11)."""
    if not bases:
        return {}
    keep = default_sample(bases[0]) if sample is None else sample
    keyed = _bases_by_key(bases, keep, layers)
    made = model_unit_sets(model, hidden, list(keyed.values()), sample=keep, layers=layers)
    return dict(zip(keyed, made, strict=True))


def read_once(
    analysed: Model,
    model: CanonicalModel,
    bases: list[np.ndarray],
    sample: int,
    *,
    digested: frozenset[str] | None = None,
) -> tuple[ContentHashes, dict[Hashable, list[Unit]]]:
    """The model's content hashes (multisets not counted: `settle_multisets`; digests only of the
    tensors in ``digested``, those the other model may hold a twin of: `hashes.digest_candidates`;
    None: of every tensor) and its units in each of ``bases`` (of one width, ``sample`` vectors a
    matrix), in one pass over the model: the hashes of `hashable_names`, in that order, and the
    units by the keys `suspect_units` asks `CanonicalModel.memo` for (to be held there:
    `CanonicalModel.hold`).

    A tensor's hash and its sketches are two jobs (`hashed_and_sketched`), as in a fingerprint.
    Hashing every tensor, then sketching them, read a pair larger than memory from the disk twice,
    and the hashes, bound by the disk, left a core idle (RESULTS.md, session 12). The sketches are
    wasted when the hashes prove the pair identical: `compare` hashes a pair alone when a probe of
    every tensor's leading values says they may (`hashes.probably_identical`)."""
    checkpoint = analysed.checkpoint
    hashed = hashable_names(checkpoint)
    hashing = set(hashed)
    hidden = model.hidden or 0
    roles = {a.name: a for a in model.result.recognition.assignments}
    keyed = _bases_by_key(bases, sample, None)
    unique = list(keyed.values()) if hidden else []

    def hash_job(name: str) -> TensorHashes | None:
        if name not in hashing:
            return None
        return analysed.tensor_hashes(name, counted=False, digested=digested is None or name in digested)

    def sketch_job(name: str) -> list[list[Unit]] | None:
        return tensor_unit_sets(model, name, roles, hidden, unique, sample=sample) if unique else None

    with stage(
        f"hashing {checkpoint.path.name}", sum(checkpoint.info(n).nbytes for n in hashed), BYTES
    ) as shown:
        found, made = hashed_and_sketched(
            list(checkpoint.tensors),
            hash_job,
            sketch_job,
            done=lambda name: shown.advance(checkpoint.info(name).nbytes) if name in hashing else None,
            name="unshell-read",
        )
    sets = [part for part in made if part is not None]
    units = {key: [u for each in sets for u in each[k]] for k, key in enumerate(keyed)} if sets else {}
    by_name = {name: h for name, h in zip(checkpoint.tensors, found, strict=True) if h is not None}
    return ContentHashes([by_name[name] for name in hashed]), units


H = TypeVar("H")
S = TypeVar("S")


def hashed_and_sketched(
    names: list[str],
    hash_job: Callable[[str], H],
    sketch_job: Callable[[str], S],
    *,
    done: Callable[[str], None],
    name: str,
) -> tuple[list[H], list[S]]:
    """Each tensor's hash job and sketch job, in one pass over ``names`` on the thread budget's
    workers (one BLAS thread each, `map_in_order`), as `read_once` and a fingerprint read a model:
    ``done(tensor)`` once both of its jobs are done. Returns the hash jobs' results and the sketch
    jobs', each in the order of ``names``.

    A tensor's sketch job comes after the next tensor's hash job: its own hash is done, or nearly,
    when a worker takes it, so the sketch's scattered rows come from the page cache. Taken at
    once, the two read the tensor from the disk side by side (4 CPU s more at 4 layers of a 7B
    pair, RESULTS.md session 12); a hash job alone keeps a core busy however long the sketches."""
    jobs = [(tensor, True) for tensor in names[:1]]
    for index, tensor in enumerate(names):
        jobs.extend([(names[index + 1], True)] if index + 1 < len(names) else [])
        jobs.append((tensor, False))

    def run(job: tuple[str, bool]) -> H | S:
        tensor, hashing = job
        return hash_job(tensor) if hashing else sketch_job(tensor)

    left = dict.fromkeys(names, 2)  # jobs of each tensor not done yet

    def advance(index: int) -> None:
        tensor = jobs[index][0]
        left[tensor] -= 1
        if not left[tensor]:
            done(tensor)

    hashes: dict[str, H] = {}
    sketches: dict[str, S] = {}
    for (tensor, hashing), part in zip(jobs, map_in_order(run, jobs, done=advance, name=name), strict=True):
        if hashing:
            hashes[tensor] = cast(H, part)
        else:
            sketches[tensor] = cast(S, part)
    return [hashes[t] for t in names], [sketches[t] for t in names]


def _bases_by_key(
    bases: list[np.ndarray], keep: int, layers: frozenset[int] | None
) -> dict[Hashable, np.ndarray]:
    """``bases`` (contiguous, one of each content) by the `_units_key` of their units, in order."""
    keyed: dict[Hashable, np.ndarray] = {}
    for basis in bases:
        basis = np.ascontiguousarray(basis)
        keyed.setdefault(_units_key(basis, False, keep, layers), basis)
    return keyed


def _units_key(
    basis: np.ndarray, quick: bool, keep: int, layers: frozenset[int] | None
) -> tuple[Hashable, ...]:
    """What identifies a model's units: the basis's content, shape and dtype, and how they were read."""
    digest = hashlib.blake2b(np.ascontiguousarray(basis).data, digest_size=16).digest()
    return ("units", digest, basis.shape, basis.dtype.str, quick, keep, layers)


def tensor_units(
    model: CanonicalModel,
    name: str,
    roles: dict[str, Assignment],
    hidden: int,
    basis: np.ndarray,
    *,
    quick: bool = False,
    sample: int | None = None,
) -> list[Unit]:
    """The units of one tensor (none when it does not touch the residual stream); see `model_units`.
    ``roles``: the recognition's assignments by tensor name. ``sample`` (None: `default_sample`):
    a matrix with more vectors than this is sketched from the fixed sample `sketch.sampled_rows`
    gives for its vector count, whatever its values; a matrix read by rows reads only those rows."""
    return tensor_unit_sets(model, name, roles, hidden, [basis], quick=quick, sample=sample)[0]


def tensor_unit_sets(
    model: CanonicalModel,
    name: str,
    roles: dict[str, Assignment],
    hidden: int,
    bases: list[np.ndarray],
    *,
    quick: bool = False,
    sample: int | None = None,
) -> list[list[Unit]]:
    """`tensor_units` in each of ``bases`` (of one width): the tensor read and its vectors taken
    once, then sketched in every basis (`sketch.unit_sketches`)."""
    info = model.checkpoint.info(name)
    assignment = roles.get(name)
    units: list[list[Unit]] = [[] for _ in bases]  # one list per basis
    if assignment is None or len(info.shape) != 2 or hidden not in info.shape:
        return units
    role = assignment.role
    if role in ("embed.weight", "lm_head.weight", "pos_embed.weight", "type_embed.weight"):
        return units
    if (
        role is None
        and assignment.candidates
        and set(assignment.candidates) <= {"embed.weight", "lm_head.weight"}
    ):
        return units
    orientations = _orientations(role, info.shape, hidden)
    # --quick samples the rows of the matrices that read the residual stream, and skips those that
    # write it. That needs the storage order, which only a role read from a name gives: a matrix
    # without one is read whole and tried both ways, as without --quick (`storage_known`).
    sampled = quick and storage_known(assignment)
    if sampled:
        orientations = [o for o in orientations if o == "rows"]
    if not orientations:
        return units
    keep = default_sample(bases[0]) if sample is None else sample
    step = _quick_step(model, name) if sampled else 1
    columns = sampled_rows(info.shape[1], keep) if orientations == ["columns"] else None
    if orientations == ["rows"]:  # only the sampled rows are read (and decoded)
        matrix = _sampled_matrix(model, name, step, keep)
    elif columns is not None:  # only the sampled columns are decoded, then laid out as vectors
        matrix = np.ascontiguousarray(
            finite(np.asarray(model.checkpoint.read_columns(name, columns), dtype=np.float32)).T
        )
    else:
        matrix = read_rows(model, name, step)
    for orientation in orientations:
        # Sampled columns were laid out one vector per row already.
        vectors = matrix if columns is not None or orientation == "rows" else matrix.T
        if columns is None and (orientation == "columns" or len(orientations) > 1):
            ids = sampled_rows(vectors.shape[0], keep)
            if ids is not None:
                vectors = vectors[ids]
        gain = None
        if orientation == "rows" and role in READS_RESIDUAL:
            gain = model.role(assignment.layer, READS_RESIDUAL[role])
            if gain is None or gain.shape != (vectors.shape[1],):
                gain = None
        sketches = unit_sketches(vectors, bases, gain=gain, overwrite=len(orientations) == 1)
        for made, (sketch, std) in zip(units, sketches, strict=True):
            made.append(Unit(name, assignment.layer, role, orientation, sketch.ravel(), std))
    del matrix
    return units


def _sampled_matrix(model: CanonicalModel, name: str, step: int, keep: int) -> np.ndarray:
    """Every ``step``-th row of a matrix (`read_rows`), then of those the fixed sample of ``keep``
    (`sketch.sampled_rows`), reading and decoding only the rows kept where rows decode on their own."""
    rows = model.checkpoint.info(name).shape[0]
    strided = -(-rows // step) if step > 1 and rows >= 64 else rows
    ids = sampled_rows(strided, keep)
    if ids is None:
        return read_rows(model, name, step)
    if strided != rows:
        ids = ids * step
    return read_row_ids(model, name, ids, sparse=True)


def storage_known(assignment: Assignment) -> bool:
    """Whether the tensor's role, read from its name, tells which side of it faces the residual
    stream. A role guessed from the shape (`structure`) or none (an ONNX export's anonymous MatMul
    weights, stored [in, out]: their reading vectors are their columns) leaves it open."""
    return assignment.role is not None and assignment.resolved_by != "structure"


def quick_reads_writers(model: CanonicalModel) -> bool:
    """Whether --quick must sketch the other model's writing matrices too: ``model`` has residual
    matrices of unknown storage, whose residual side may be a writing side (`storage_known`).
    Skipping the writers left such a matrix nothing to match, and sketching only its rows took
    the wrong side: the verdict hung on which model was A (an ONNX export of MiniLM-L3 against
    MiniLM-L6 was independent one way and derived the other)."""
    hidden = model.hidden
    return any(
        len(a.shape) == 2 and hidden in a.shape and not storage_known(a) and a.role not in FIXED_ROLES
        for a in model.result.recognition.assignments
        if not (a.candidates and set(a.candidates) <= {"embed.weight", "lm_head.weight"})
    )


def _quick_step(model: CanonicalModel, name: str) -> int:
    """The row step --quick reads ``name`` with (see `QUICK_WHOLE_BYTES`)."""
    return 1 if model.checkpoint.info(name).nbytes <= QUICK_WHOLE_BYTES else QUICK_ROW_STEP


def _orientations(role: str | None, shape: tuple[int, ...], hidden: int) -> list[str]:
    rows, cols = shape
    if (role in READS_RESIDUAL or role in ("attn.qkv.weight", "mlp.gate_up.weight")) and cols == hidden:
        return ["rows"]
    if role in ("attn.o.weight", "mlp.down.weight") and rows == hidden:
        return ["columns"]
    # Unknown or transposed storage (ONNX MatMul weights are [in, out]): try every residual side.
    out = []
    if cols == hidden:
        out.append("rows")
    if rows == hidden:
        out.append("columns")
    return out


def read_rows(model: CanonicalModel, name: str, step: int) -> np.ndarray:
    """A matrix as float32, or every ``step``-th row of it. Where rows decode on their own (plain
    dtypes and quantized blocks), only the sampled rows are read from disk and decoded."""
    info = model.checkpoint.info(name)
    row_bytes = model.checkpoint.row_bytes(info) if step > 1 and info.shape[0] >= 64 else None
    if row_bytes is not None:
        rows = slice(None, None, step)
        # Readahead reads the pages we need anyway where the rows lie close together.
        with model.checkpoint.rows_apart(info, rows) if step * row_bytes > SPARSE_ROWS_GAP else nullcontext():
            values = np.asarray(model.checkpoint.read_rows(name, rows), dtype=np.float32)
        model.checkpoint.release(info)
        return finite(values)
    matrix = finite(np.asarray(model.checkpoint.read(name), dtype=np.float32))
    return matrix[::step] if step > 1 and matrix.shape[0] >= 64 else matrix


# --- the test --------------------------------------------------------------------------------------


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def log10_normal_sf(z: float) -> float:
    """log10 of the normal upper tail at ``z``, finite far past where `_normal_sf` underflows."""
    if z < 30.0:
        return math.log10(_normal_sf(z))
    # Asymptotic series of erfc (Abramowitz & Stegun 7.1.23): three terms are exact to 1e-7 here.
    series = 1.0 - 1.0 / z**2 + 3.0 / z**4 - 15.0 / z**6
    return (-z * z / 2.0 - math.log(z) - 0.5 * math.log(2.0 * math.pi) + math.log(series)) / math.log(10.0)


def _normal_isf(p: float) -> float:
    """z with upper tail p, accurate far into the tail (bisection on erfc)."""
    p = min(max(p, 1e-300), 1 - 1e-16)
    low, high = -40.0, 40.0
    for _ in range(200):
        middle = (low + high) / 2
        if _normal_sf(middle) > p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def haar_scale(dim: int) -> float:
    """Standard deviation of the cosine between two traceless sketches when one is rotated at random."""
    return math.sqrt(2.0 / ((dim - 1) * (dim + 2)))


def similarity_table(units_a: list[Unit], units_b: list[Unit]) -> np.ndarray:
    """Sketch cosine of every unit of B (rows) with every unit of A (columns)."""
    sketches_a = np.stack([u.sketch for u in units_a])
    sketches_b = np.stack([u.sketch for u in units_b])
    return sketches_b @ sketches_a.T


def match_units(
    units_a: list[Unit],
    units_b: list[Unit],
    sketch_dim: int,
    table: np.ndarray | None = None,
    *,
    role_null: bool = False,
    margin: float = NULL_SCALE_MARGIN,
) -> list[UnitMatch]:
    """``table``: `similarity_table` of the same units, when the caller already has it.
    ``role_null``: each unit's null also takes the location and spread of A's other units of its
    own role (for an alignment fitted role by role, which pulls every unit of a role together)."""
    if table is None:
        table = similarity_table(units_a, units_b)
    # Under H0 a B sketch is randomly oriented relative to every A sketch: cosine mean 0 with the
    # exact Haar spread. Real independent models sit slightly above that (some shared structure
    # survives), so each unit's null also takes the location and spread of its own row (B's unit
    # against all of A's other units), and the wider of the two is used: conservative by design.
    floor = haar_scale(sketch_dim)
    matches = []
    candidates = len(units_a)
    for row, unit in enumerate(units_b):
        values = table[row]
        best = int(np.argmax(values))
        rest = np.delete(values, best)
        median = max(float(np.median(rest)), 0.0) if rest.size else 0.0
        mad = 1.4826 * float(np.median(np.abs(rest - median))) if rest.size else 0.0
        if role_null and unit.role is not None:
            same = values[[k for k, other in enumerate(units_a) if other.role == unit.role and k != best]]
            if same.size:
                median = max(median, float(np.median(same)))
                mad = max(mad, 1.4826 * float(np.median(np.abs(same - np.median(same)))))
        scale = margin * max(floor, mad)
        z = (float(values[best]) - median) / scale
        # Šidák: the best of N candidates is not one candidate.
        tail = _normal_sf(z)
        p = -math.expm1(candidates * math.log1p(-tail)) if tail < 1 else 1.0
        matches.append(UnitMatch(unit, units_a[best], float(values[best]), median, scale, z, p))
    return _one_per_tensor(matches)


def _one_per_tensor(matches: list[UnitMatch]) -> list[UnitMatch]:
    """A matrix tried in both orientations counts once, by its better orientation (Bonferroni x2)."""
    best: dict[str, UnitMatch] = {}
    tries: dict[str, int] = {}
    for match in matches:
        tries[match.b.name] = tries.get(match.b.name, 0) + 1
        current = best.get(match.b.name)
        if current is None or match.p < current.p:
            best[match.b.name] = match
    for name, match in best.items():
        match.p = min(1.0, match.p * tries[name])
    return list(best.values())


def one_to_one(matches: list[UnitMatch]) -> list[UnitMatch]:
    """Keep at most one B matrix per A matrix: of the k B matrices whose best match is the same A
    matrix, the most significant, its p-value multiplied by k (Bonferroni).

    Structure that unrelated models share makes a few of A's matrices resemble many of B's (hubs);
    a derivative's matrices each have their own counterpart. Letting every A matrix vouch for one
    B matrix only keeps hubs from being counted again and again. Which claim is kept, and at what
    p, matters under H0: the most significant of k colliding claims is the smallest of k draws,
    and combining it as if it were one draw was anti-conservative on independent models trained
    until their loss levelled off (issue 19; benchmarks/RESULTS.md, "null calibration on converged
    models"), since with few matrices collisions are common. Bonferroni over the k claims makes the
    kept p-value valid whatever their dependence. Keeping the least significant claim instead
    (also calibrated) cost real derivatives their verdict where roles are guessed from shapes: an
    ONNX export's anonymous matrices, tried in both orientations, collide with each other on their
    true counterpart, and the weaker orientation's claim is noise.
    """
    groups: dict[str, list[UnitMatch]] = {}
    for match in matches:
        groups.setdefault(match.a.label, []).append(match)
    kept = []
    for group in groups.values():
        best = min(group, key=lambda m: m.p)
        best.p = min(1.0, best.p * len(group))
        kept.append(best)
    return kept


def combine(matches: list[UnitMatch]) -> tuple[float, float]:
    """Stouffer's combination of the per-unit p-values: (Z, p)."""
    if not matches:
        return 0.0, 1.0
    zs = [_normal_isf(m.p) for m in matches]
    combined = sum(zs) / math.sqrt(len(zs))
    return combined, _normal_sf(combined)


# --- layer map and classification ---------------------------------------------------------------


def layer_similarity(units_a: list[Unit], units_b: list[Unit], table: np.ndarray) -> LayerSimilarity | None:
    """B's layers against A's, from the unit table `match_units` reads (see `LayerSimilarity`).
    A matrix tried in both orientations counts once, by its better one."""
    layers_a = sorted({u.layer for u in units_a if u.layer is not None})
    layers_b = sorted({u.layer for u in units_b if u.layer is not None})
    if not layers_a or not layers_b:
        return None
    # Best unit of each A layer, for every B unit: (units of B) x (layers of A).
    best = np.stack(
        [table[:, [k for k, u in enumerate(units_a) if u.layer == layer]].max(axis=1) for layer in layers_a],
        axis=1,
    )
    by_tensor: dict[tuple[int, str], np.ndarray] = {}
    for row, unit in enumerate(units_b):
        if unit.layer is None:
            continue
        key = (unit.layer, unit.name)
        by_tensor[key] = best[row] if key not in by_tensor else np.maximum(by_tensor[key], best[row])
    matrix = []
    for layer in layers_b:
        rows = [values for (owner, _), values in by_tensor.items() if owner == layer]
        matrix.append([round(float(v), 4) for v in np.mean(rows, axis=0)])
    return LayerSimilarity(layers_a, layers_b, matrix)


def std_profile(units: list[Unit]) -> dict[str, list[float | None]]:
    """Per role, the std of each layer's matrix (the values `_profile_correlation` correlates),
    indexed by layer number (None where a layer has no such matrix)."""
    values = {
        (u.layer, u.role): u.std
        for u in units
        if u.layer is not None and u.role is not None and math.isfinite(u.std)
    }
    if not values:
        return {}
    count = max(layer for layer, _ in values) + 1
    roles = sorted({role for _, role in values})
    return {
        role: [None if (i, role) not in values else round(values[(i, role)], 6) for i in range(count)]
        for role in roles
    }


def place_by_file_order(units: list[Unit], layer_count: int) -> list[Unit]:
    """Units whose tensor names give no layer index (an ONNX export's anonymous MatMul weights),
    placed in layers by their tensors' order in the file: of ``layer_count`` equal runs, the n-th
    is layer n. Used for the layer map and heatmap only; the test never reads layers this way.
    Returned unchanged when any unit has a layer already or the runs would not be equal."""
    if layer_count < 1 or any(u.layer is not None for u in units):
        return units
    names = list(dict.fromkeys(u.name for u in units))  # file order: `model_units` keeps it
    if not names or len(names) % layer_count:
        return units
    per_layer = len(names) // layer_count
    layer_of = {name: index // per_layer for index, name in enumerate(names)}
    return [replace(u, layer=layer_of[u.name]) for u in units]


def layer_map(matches: list[UnitMatch]) -> list[dict[str, Any]]:
    by_layer: dict[int, list[UnitMatch]] = {}
    for match in matches:
        if match.b.layer is not None:
            by_layer.setdefault(match.b.layer, []).append(match)
    rows = []
    for layer in sorted(by_layer):
        votes: dict[int | None, list[float]] = {}
        for match in by_layer[layer]:
            votes.setdefault(match.a.layer, []).append(match.similarity)
        best_a = max(votes, key=lambda k: (len(votes[k]), float(np.mean(votes[k]))))
        rows.append(
            {
                "layer_b": layer,
                "layer_a": best_a,
                "similarity": round(float(np.mean([m.similarity for m in by_layer[layer]])), 6),
                "units": len(by_layer[layer]),
                "agreeing_units": len(votes[best_a]),
            }
        )
    return rows


def derivation_kinds(
    a: ModelSummary,
    b: ModelSummary,
    layers: list[dict[str, Any]],
    alignment: Alignment | None,
    model_a: CanonicalModel | None,
    model_b: CanonicalModel | None,
    *,
    quick: bool = False,
) -> list[str]:
    """``model_a`` and ``model_b`` are read only without ``quick`` (A's may be None: a fingerprint)."""
    how: list[str] = []
    config_a, config_b = a.config, b.config
    if any(d.startswith(QUANTIZED_DTYPES_PREFIX) for d in b.dtypes) and not any(
        d.startswith(QUANTIZED_DTYPES_PREFIX) for d in a.dtypes
    ):
        how.append("quantized")
    layers_a = config_a.get("num_hidden_layers") or 0
    layers_b = config_b.get("num_hidden_layers") or 0
    # A layer of A that two layers of B match, each with most of their matrices agreeing.
    strong = [
        row["layer_a"]
        for row in layers
        if row["layer_a"] is not None and row["agreeing_units"] * 2 > row["units"]
    ]
    if strong and len(strong) != len(set(strong)) and layers_b > layers_a:
        how.append("upscaled")
    elif layers_b and layers_a and layers_b < layers_a:
        how.append("pruned")
    # An FFN width is only comparable between sides with as many experts: a fine-grained expert
    # is narrower than the dense FFN it holds a slice of without anything having been pruned
    # (the expert map says which neurons it holds).
    same_experts = (config_a.get("num_experts") or 0) == (config_b.get("num_experts") or 0)
    for key in ("hidden_size", "intermediate_size") if same_experts else ("hidden_size",):
        if config_a.get(key) and config_b.get(key) and config_b[key] < config_a[key] and "pruned" not in how:
            how.append("pruned")
    if (
        config_a.get("vocab_size")
        and config_b.get("vocab_size")
        and config_b["vocab_size"] > config_a["vocab_size"]
    ):
        how.append("vocab-extended")
    square = alignment is not None and alignment.transform.shape[0] == alignment.transform.shape[1]
    # The residual stream was permuted, sign-flipped or rotated if the alignment is no identity.
    if square and alignment is not None and _transformed(alignment):
        how.append("obfuscated")
    # --quick skips this full read of the MLP matrices: `how` is then coarser (no finetune or
    # continued-pretraining, and obfuscation only when the residual stream itself was changed).
    drift, scrambled = (
        (None, False)
        if quick or model_a is None or model_b is None
        else _relative_drift(model_a, model_b, alignment, layers)
    )
    if scrambled and "obfuscated" not in how:
        how.append("obfuscated")  # neurons permuted or matrices rescaled against each other
    if drift is not None and "quantized" not in how:
        how.append("finetune" if drift < 0.1 else "continued-pretraining")
    return how


# How much better the fitted transform must fit the anchors than none at all (relative residuals)
# to call the stream transformed. Measured: rotations, permutations and sign flips of the zoo and
# stories260K 0.88 to 1.0; long continued pretraining, whose noisy fit drifts off the identity
# (0.3 to 0.6), 0.02 to 0.05 (benchmarks/RESULTS.md, "obfuscated" without obfuscation).
TRANSFORM_GAIN = 0.2


def _transformed(alignment: Alignment) -> bool:
    """Whether B's residual stream was really transformed: the alignment is far from the identity
    and explains the anchors clearly better than no transform (when that was measured)."""
    if off_identity(alignment.transform) <= 0.5:
        return False
    untransformed = alignment.untransformed
    return math.isnan(untransformed) or untransformed - alignment.residual >= TRANSFORM_GAIN


def _relative_drift(
    a: CanonicalModel, b: CanonicalModel, alignment: Alignment | None, layers: list[dict[str, Any]]
) -> tuple[float | None, bool]:
    """(typical angular drift of MLP input rows, whether rows were permuted or rescaled).

    Each layer of B is compared with the layer of A it was mapped to, row by row in stored order
    after residual alignment. Drift is 1 - the median row cosine. Rows that point elsewhere
    (permuted neurons) or keep their direction but not their length (rescaled against the next
    matrix) mark obfuscation rather than training.
    """
    drifts: list[float] = []
    scrambled = False
    for row in layers[:8]:
        # 512 rows tell the median angle as well as 11,008 do, at a twentieth of the cost.
        wa, shape_a = folded_rows(a, row["layer_a"], "mlp.up.weight", 512)
        wb, shape_b = folded_rows(b, row["layer_b"], "mlp.up.weight", 512)
        if wa is None or wb is None or shape_a != shape_b:
            continue
        if alignment is not None and alignment.transform.shape == (wb.shape[1], wa.shape[1]):
            wb = alignment.apply(wb)
        # Rows of huge values overflow float32 to non-finite cosines, which no threshold below passes.
        with np.errstate(over="ignore", invalid="ignore"):
            norm_a = np.linalg.norm(wa, axis=1)
            norm_b = np.linalg.norm(wb, axis=1)
            cosines = np.sum(wa * wb, axis=1) / np.maximum(norm_a * norm_b, 1e-30)
        median = float(np.median(cosines))
        # Rows far from their stored counterparts: permuted neurons (each still has a twin
        # elsewhere in A) or rows that long training moved (no twin): only the first is
        # obfuscation; calling heavy training "obfuscated" would accuse without cause.
        if median < 0.3 and _rows_have_twins(a, row["layer_a"], wb[:: max(1, wb.shape[0] // ROWS_FOR_TWINS)]):
            scrambled = True
            continue
        ratios = np.log(np.maximum(norm_b, 1e-30) / np.maximum(norm_a, 1e-30))
        if median > 0.9 and float(np.std(ratios)) > 0.2:
            scrambled = True
        drifts.append(1.0 - median)
    return (float(np.median(drifts)) if drifts else None), scrambled


# B's rows tested for a twin among all of A's (a permutation check: 64 rows decide a median).
ROWS_FOR_TWINS = 64
# A row's twin: the cosine `lineage.experts` reads as "the same neuron" (fine-tuning keeps 0.9+).
TWIN_COSINE = 0.5
TWIN_BLOCK_ROWS = 4096


@np.errstate(over="ignore", invalid="ignore")
def _rows_have_twins(a: CanonicalModel, layer_a: int | None, rows_b: np.ndarray) -> bool:
    """Whether most of ``rows_b`` (B's MLP input rows, already in A's residual basis) have a twin
    among all of A's rows of ``layer_a``: the mark of permuted neurons. A's rows are read in blocks
    (a 70B model's matrix would be most of a gigabyte at once). Rows of huge values overflow
    float32 to non-finite cosines, which are never twins."""
    role = "mlp.up.weight"
    names = a.slots.get((layer_a, role))
    gain = a.role(layer_a, READS_RESIDUAL[role])
    norms_b = np.maximum(np.linalg.norm(rows_b, axis=1), 1e-30)
    best = np.full(rows_b.shape[0], -1.0)

    def take(block: np.ndarray) -> None:
        if gain is not None and gain.shape == (block.shape[1],):
            block = block * gain[None, :]
        norms = np.maximum(np.linalg.norm(block, axis=1), 1e-30)
        np.maximum(best, np.max((rows_b @ block.T) / (norms_b[:, None] * norms[None, :]), axis=1), out=best)

    name = names[0] if names and len(names) == 1 else None
    info = a.checkpoint.info(name) if name is not None else None
    if (
        name is not None
        and info is not None
        and len(info.shape) == 2
        and a.checkpoint.row_bytes(info) is not None
    ):
        if info.shape[1] != rows_b.shape[1]:
            return True  # cannot tell: keep the rule as it was
        for start in range(0, info.shape[0], TWIN_BLOCK_ROWS):
            rows = slice(start, min(start + TWIN_BLOCK_ROWS, info.shape[0]))
            take(finite(np.asarray(a.checkpoint.read_rows(name, rows), dtype=np.float32)))
    else:
        whole = a.folded(layer_a, role)
        if whole is None or whole.ndim != 2 or whole.shape[1] != rows_b.shape[1]:
            return True
        take(whole)
    return float(np.median(best)) >= TWIN_COSINE


def folded_rows(
    model: CanonicalModel, layer: int | None, role: str, most: int
) -> tuple[np.ndarray | None, tuple[int, ...]]:
    """(every n-th row of ``model.folded(layer, role)``, n = rows // ``most``; the whole matrix's
    shape). A role held by one tensor reads and folds only those rows (`read_rows`): the same
    values, since folding scales each element on its own."""
    names = model.slots.get((layer, role))
    if names and len(names) == 1 and len(shape := model.checkpoint.info(names[0]).shape) == 2:
        matrix = read_rows(model, names[0], max(1, shape[0] // most))
        gain = model.role(layer, READS_RESIDUAL[role]) if role in READS_RESIDUAL else None
        if gain is not None and gain.shape == (matrix.shape[1],):
            matrix = matrix * gain[None, :]
        return matrix, shape
    whole = model.folded(layer, role)
    if whole is None:
        return None, ()
    return whole[:: max(1, whole.shape[0] // most)], whole.shape


# --- profile (the std-profile evidence, reported for reference only) ----------------------------


def _profile_correlation(units_a: list[Unit], units_b: list[Unit]) -> float | None:
    """Correlation of per-layer weight std profiles (the Pangu-vs-Qwen statistic), by role and layer."""

    def profile(units: list[Unit]) -> dict[tuple[int, str], float]:
        return {(u.layer, u.role): u.std for u in units if u.layer is not None and u.role is not None}

    pa, pb = profile(units_a), profile(units_b)
    keys = sorted(set(pa) & set(pb))
    if len(keys) < 3:
        return None
    va, vb = np.array([pa[k] for k in keys]), np.array([pb[k] for k in keys])
    if not (np.isfinite(va).all() and np.isfinite(vb).all()):  # a std past float32's range
        return None
    if np.std(va) == 0 or np.std(vb) == 0:
        return None
    return float(np.corrcoef(va, vb)[0, 1])


# --- orchestration -------------------------------------------------------------------------------


def embedding_candidates(model: CanonicalModel) -> list[str]:
    """The input embedding's name, or every tensor that could be it when names do not say (a
    scrambled checkpoint's embedding and output head have the same shape)."""
    names = model.slots.get((None, "embed.weight"), [])
    if len(names) == 1:
        return names
    return [
        a.name
        for a in model.result.recognition.assignments
        if a.role is None and "embed.weight" in a.candidates
    ]


def _anchor_matrix(model: CanonicalModel, name: str, rows: int, hidden: int) -> np.ndarray:
    """Embedding rows to anchor on (every n-th, see `anchor_stride`), read without touching the rest."""
    return read_rows(model, name, anchor_stride(rows, hidden))


def read_row_ids(model: CanonicalModel, name: str, ids: np.ndarray, *, sparse: bool = False) -> np.ndarray:
    """The rows ``ids`` of a matrix as float32; where rows decode on their own, only those rows.
    ``sparse``: sorted ids that may lie far apart; readahead is turned off when they do on average
    (`SPARSE_ROWS_GAP`), and NaN and infinities read as zero (`finite`), as `read_rows` does."""
    info = model.checkpoint.info(name)
    apart = False
    if sparse and ids.size:
        row_bytes = model.checkpoint.row_bytes(info)
        apart = row_bytes is not None and row_bytes * info.shape[0] > SPARSE_ROWS_GAP * ids.size
    with model.checkpoint.rows_apart(info, ids) if apart else nullcontext():
        values = np.asarray(model.checkpoint.read_rows(name, ids), dtype=np.float32)
    model.checkpoint.release(info)
    return finite(values) if sparse else values


@dataclass(frozen=True)
class TokenPairs:
    """Rows of A and B that hold the same token string, when the two vocabularies say so."""

    ids_a: np.ndarray
    ids_b: np.ndarray
    moved: int  # shared tokens at another id in B


def token_pairs(
    vocabulary_a: Vocabulary | None, vocabulary_b: Vocabulary | None, rows_a: int, rows_b: int
) -> TokenPairs | None:
    """Ordinary tokens both vocabularies hold, as (A's id, B's id) within both embeddings; None
    without two vocabularies. Each token string counts once, at its lowest id on each side."""
    if vocabulary_a is None or vocabulary_b is None:
        return None

    def positions(vocabulary: Vocabulary, rows: int) -> dict[bytes, int]:
        where: dict[bytes, int] = {}
        for index in range(min(len(vocabulary.tokens), rows) - 1, -1, -1):
            token = vocabulary.tokens[index]
            if token is not None and index not in vocabulary.special:
                where[token] = index
        return where

    in_a, in_b = positions(vocabulary_a, rows_a), positions(vocabulary_b, rows_b)
    shared = sorted((in_b[token], in_a[token]) for token in in_a.keys() & in_b.keys())
    ids_b = np.array([pair[0] for pair in shared], dtype=np.int64)
    ids_a = np.array([pair[1] for pair in shared], dtype=np.int64)
    return TokenPairs(ids_a, ids_b, int(np.count_nonzero(ids_a != ids_b)))


def choose_anchor(count_a: int, count_b: int, fit: Callable[..., Alignment]) -> Alignment:
    """The anchor among A's ``count_a`` and B's ``count_b`` embedding candidates, given
    ``fit(i, j, chance=False)``: the best pairing when one side has one candidate, else the worse
    pairing of the bijection whose worse pairing fits best (see `_best_alignment`). An anchor above
    `TRUSTED_RESIDUAL` is fitted again with ``chance=True`` (its rows paired at random)."""
    fits: dict[tuple[int, int], Alignment] = {}
    if count_a == 1 or count_b == 1:
        options = [(i, j) for i in range(count_a) for j in range(count_b)]
        fits = {key: fit(*key) for key in options}
        i, j = min(options, key=lambda key: fits[key].residual)
    else:
        chosen: tuple[float, tuple[int, int]] | None = None
        for order in itertools.permutations(range(count_b), min(count_a, count_b)):
            for key in enumerate(order):
                if key not in fits:
                    fits[key] = fit(*key)
            worst = max(enumerate(order), key=lambda key: fits[key].residual)
            if chosen is None or fits[worst].residual < chosen[0]:
                chosen = (fits[worst].residual, worst)
        assert chosen is not None
        i, j = chosen[1]
    alignment = fits[(i, j)]
    if alignment.residual > TRUSTED_RESIDUAL:
        alignment = fit(i, j, chance=True)
    return alignment


def _best_alignment(
    model_a: CanonicalModel, model_b: CanonicalModel, pairs: TokenPairs | None = None
) -> Alignment | None:
    """The residual alignment, anchored on input embeddings: rows of the same token string when
    ``pairs`` is given, else rows of the same id.

    When names are scrambled on both sides, each side offers two candidates (input embedding and
    output head) and nothing says which is which. The output heads of independently trained models
    align far better than their input embeddings (they converge on the same token statistics), so
    anchoring on whichever pair aligns best would import shared structure into the test. Instead,
    the candidates are paired as a whole (a bijection): a derivative aligns well under *both*
    pairings of the right bijection, unrelated models do not. The bijection whose worse pairing
    aligns best is chosen, and that worse pairing is the anchor: conservative by construction.

    An alignment above `TRUSTED_RESIDUAL` is fitted once more with its rows paired at random
    (`Alignment.chance`), so that `alignment_failure` can tell a weak fit from a failed one.
    """
    names_a, names_b = embedding_candidates(model_a), embedding_candidates(model_b)
    if not names_a or not names_b:
        return None
    hidden = max(model_a.hidden or 0, model_b.hidden or 0)
    if pairs is not None:
        step = anchor_stride(len(pairs.ids_a), hidden)
        ids_a, ids_b = pairs.ids_a[::step], pairs.ids_b[::step]
        candidates_a = [read_row_ids(model_a, n, ids_a) for n in names_a]
        candidates_b = [read_row_ids(model_b, n, ids_b) for n in names_b]
    else:
        rows = min(model_a.checkpoint.info(names_a[0]).shape[0], model_b.checkpoint.info(names_b[0]).shape[0])
        candidates_a = [_anchor_matrix(model_a, n, rows, hidden) for n in names_a]
        candidates_b = [_anchor_matrix(model_b, n, rows, hidden) for n in names_b]
    rows = min(c.shape[0] for c in candidates_a + candidates_b)
    candidates_a = [c[:rows] for c in candidates_a]
    candidates_b = [c[:rows] for c in candidates_b]

    def fit(i: int, j: int, chance: bool = False) -> Alignment:
        return align_embeddings(candidates_a[i], candidates_b[j], chance=chance)

    alignment = choose_anchor(len(candidates_a), len(candidates_b), fit)
    return replace(alignment, anchored_by="token ids" if pairs is None else "token strings")


def alignment_failure(alignment: Alignment | None) -> str | None:
    """Why the residual streams are not known to be aligned (None: they are)."""
    if alignment is None:
        return "no embedding anchors to align the residual streams"
    if alignment.method != "procrustes-embeddings":
        return f"no embedding alignment (compared through {alignment.method})"
    if math.isfinite(alignment.chance) and alignment.chance - alignment.residual < ALIGNMENT_MIN_GAP:
        return (
            f"the embedding alignment failed: its residual {alignment.residual:.3f} is within "
            f"{ALIGNMENT_MIN_GAP} of the {alignment.chance:.3f} that rows paired at random give, so the "
            f"anchor rows ({alignment.anchored_by}) do not hold the same tokens or carry nothing to align on"
        )
    return None


# --- alignment from the layer matrices -------------------------------------------------------------


def layer_grams(
    model: CanonicalModel, hidden: int, *, quick: bool, layers: frozenset[int] | None = None
) -> dict[tuple[int, str], np.ndarray]:
    """Each layer matrix's second moment in residual space (unit-length vectors, norm gains folded),
    keyed by (layer, role). ``quick`` samples every 20th row of the readers and skips the writers.
    ``layers``: only these layers (None: all)."""
    grams: dict[tuple[int, str], np.ndarray] = {}
    chosen = [n for n in model.layers if layers is None or n in layers]
    for layer in track(chosen, f"layer moments of {model.checkpoint.path.name}", unit="layer"):
        for role in LAYER_ROLES:
            if quick and role not in READS_RESIDUAL:
                continue
            vectors = _layer_vectors(model, layer, role, hidden, quick=quick)
            if vectors is None:
                continue
            vectors = finite_unit_rows(vectors)
            grams[(layer, role)] = (vectors.T @ vectors).astype(np.float64)
    return grams


def _layer_vectors(
    model: CanonicalModel, layer: int, role: str, hidden: int, *, quick: bool
) -> np.ndarray | None:
    """A layer matrix as vectors in residual space (rows of a reader, columns of a writer)."""
    names = model.slots.get((layer, role))
    if quick and names and len(names) == 1:
        matrix: np.ndarray | None = read_rows(model, names[0], _quick_step(model, names[0]))
        gain = model.role(layer, READS_RESIDUAL[role]) if role in READS_RESIDUAL else None
        if matrix is not None and gain is not None and gain.shape == (matrix.shape[1],):
            matrix = matrix * gain[None, :]
    else:
        matrix = model.folded(layer, role)
    if matrix is None or matrix.ndim != 2:
        return None
    vectors = matrix if role in READS_RESIDUAL else matrix.T
    return vectors if vectors.shape[1] == hidden else None


@dataclass(frozen=True)
class LayerFit:
    """The residual alignment read off the layer matrices: ``folds[k]`` fitted on the layers whose
    number has parity ``k``, and `whole` fitted on every layer (for reports and `how`, computed
    only when asked: it costs as much as both folds).

    The test uses the folds crosswise (B's even layers through the rotation fitted on the odd ones
    and the reverse): a rotation fitted to a matrix makes that very matrix look alike in
    independent models too (p = 1e-72 on the zoo's null pairs), while the other fold's rotation
    only carries what the whole residual stream shares."""

    folds: tuple[np.ndarray, np.ndarray]
    pairs: tuple[list[np.ndarray], list[np.ndarray]]

    def whole(self) -> Alignment:
        transform = fit_rotation(*self.pairs)
        return Alignment(transform=transform, residual=float("nan"), anchors=0, method="layer-matrices")


def layer_fit_alignment(
    model_a: CanonicalModel, model_b: CanonicalModel, hidden: int, *, quick: bool
) -> LayerFit | None:
    """`LayerFit` for two models of one hidden size (`sketch.fit_rotation`): matrices matched by
    (layer, role) when both have the same layers, else by role summed over the fold's layers.
    None when too few matrices can be read by role (scrambled names) or the width is too large."""
    if hidden > LAYER_FIT_MAX_HIDDEN:
        return None
    return layer_fit_from_grams(
        layer_grams(model_a, hidden, quick=quick), layer_grams(model_b, hidden, quick=quick)
    )


def layer_fit_from_grams(
    grams_a: dict[tuple[int, str], np.ndarray], grams_b: dict[tuple[int, str], np.ndarray]
) -> LayerFit | None:
    """`layer_fit_alignment` from both models' `layer_grams` (A's may come from a fingerprint)."""
    same_layers = set(grams_a) == set(grams_b)

    def pairs(parities: tuple[int, ...]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        chosen_a = {k: g for k, g in grams_a.items() if k[0] % 2 in parities}
        chosen_b = {k: g for k, g in grams_b.items() if k[0] % 2 in parities}
        if same_layers:
            keys = sorted(chosen_a)
            return [chosen_a[k] for k in keys], [chosen_b[k] for k in keys]
        out_a, out_b = [], []
        for role in LAYER_ROLES:
            role_a = [g for (_, r), g in chosen_a.items() if r == role]
            role_b = [g for (_, r), g in chosen_b.items() if r == role]
            if role_a and role_b:
                out_a.append(np.sum(role_a, axis=0))
                out_b.append(np.sum(role_b, axis=0))
        return out_a, out_b

    every = pairs((0, 1))
    if len(every[0]) < LAYER_FIT_MIN_MATRICES:
        return None
    fits = []
    for parity in (0, 1):
        matrices_a, matrices_b = pairs((parity,))
        if len(matrices_a) < 2:
            return None
        fits.append(fit_rotation(matrices_a, matrices_b))
    return LayerFit((fits[0], fits[1]), every)


# A search screens each candidate on a few of the suspect's layers first (`screening_layers`) and
# reads the rest only when the screen is not `independent`. Under H0 the screen's p-value is as
# valid as the full test's (B's sketches of any layers are a function of B alone), and a screen
# never says `derived` on its own, so stopping there can cost power, never calibration: only a
# derivative whose screened layers all show nothing is missed (one that copied some layers only,
# all between the screened ones). Models of at most `SCREEN_ABOVE_LAYERS` layers are not screened.
SCREEN_ABOVE_LAYERS = 8
SCREEN_EVERY = 8  # one layer screened per this many, evenly spread, first and last included


def screening_layers(layers: list[int]) -> frozenset[int] | None:
    """The layers a search screens a candidate on, or None when the model is too shallow to screen."""
    if len(layers) <= SCREEN_ABOVE_LAYERS:
        return None
    ordered = sorted(layers)
    count = max(2, -(-len(ordered) // SCREEN_EVERY))
    picks = np.linspace(0, len(ordered) - 1, count).round().astype(int)
    return frozenset(ordered[i] for i in picks)


def _layer_parity(unit: Unit) -> int:
    return (unit.layer or 0) % 2


def _cross_fitted_units(
    model_b: CanonicalModel,
    hidden: int,
    fit: LayerFit,
    basis_a: np.ndarray,
    *,
    quick: bool,
    sample: int,
    layers: frozenset[int] | None = None,
) -> list[Unit]:
    """B's units, each layer's through the rotation fitted on the other parity's layers."""
    units: list[Unit] = []
    for parity in (0, 1):
        transform = fit.folds[1 - parity]
        units += [
            u
            for u in model_units(
                model_b, hidden, transform @ basis_a, quick=quick, sample=sample, layers=layers
            )
            if (u.layer or 0) % 2 == parity
        ]
    return units


def hashable_names(checkpoint: Checkpoint) -> list[str]:
    names, _ = weight_tensors(checkpoint)
    return [name for name, _ in names]


def _tokenizer_relation(
    vocabulary_a: Vocabulary | None, vocabulary_b: Vocabulary | None
) -> TokenizerRelation | None:
    """How B's tokenizer relates to A's, when both carry one (vocabulary extension shows here)."""
    if vocabulary_a is None or vocabulary_b is None:
        return None
    return relate(vocabulary_a, vocabulary_b)


def identical_by_hashes(hashes: HashMatch | None, reverse: HashMatch | None) -> tuple[str, list[str]] | None:
    """(reason, how) when the content hashes prove B holds A's values (both directions), else None."""
    if hashes is not None and reverse is not None and min(hashes.rounded, reverse.rounded) >= 0.999999:
        how = ["dtype-cast"] if hashes.exact < 0.999999 else []
        return "every weight tensor's values have a twin on the other side", how
    if hashes is not None and reverse is not None and min(hashes.multiset, reverse.multiset) >= 0.999999:
        return "the same values, re-laid out (transposed, permuted or re-fused)", ["re-laid-out"]
    return None


def decide(units: int, z: float, p: float) -> tuple[str, str]:
    """(verdict, reason) from the combined test over ``units`` matched matrices."""
    if units < MIN_UNITS:
        return "inconclusive", f"only {units} comparable matrices: too few for a calibrated test"
    if p < DERIVED_P:
        return "derived", f"B's weight matrices match A's far beyond chance (Stouffer Z = {z:.1f})"
    if p < INDEPENDENT_P:
        return (
            "inconclusive",
            f"weak evidence of shared weights (p = {p:.2g}): not enough to claim derivation",
        )
    return "independent", "no weight matrix of B matches A's beyond what unrelated models show"


@dataclass
class Candidate:
    """One residual alignment tried, and the test's uncorrected p-value under it."""

    alignment: Alignment
    weighed: WeighedUnits | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.alignment.method,
            "p_uncorrected": None if self.weighed is None else self.weighed.p_value,
            "units": 0 if self.weighed is None else len(self.weighed.matches),
        }


def exact_twin_match(
    hashes_a: ContentHashes | None, hashes_b: ContentHashes | None, model_b: CanonicalModel
) -> TwinMatch | None:
    if hashes_a is None or hashes_b is None:
        return None
    fixed = frozenset(a.name for a in model_b.result.recognition.assignments if a.role in FIXED_ROLES)
    return exact_twins(
        hashes_a, hashes_b, min_elements=TWIN_MIN_ELEMENTS, min_distinct=TWIN_MIN_DISTINCT, excluded=fixed
    )


def compare_checkpoints(
    a: Checkpoint | Model, b: Checkpoint | Model, *, quick: bool = False, path_a: str = "", path_b: str = ""
) -> CompareResult:
    # Every fact comes from the two `Model`s: what an audit or a search already read is not read again.
    analysed_a, analysed_b = Model.of(a), Model.of(b)
    a, b = analysed_a.checkpoint, analysed_b.checkpoint
    inspect_a, inspect_b = analysed_a.inspection, analysed_b.inspection
    model_a, model_b = analysed_a.canonical, analysed_b.canonical
    summary_a, summary_b = ModelSummary.of(inspect_a, path_a), ModelSummary.of(inspect_b, path_b)
    notes: list[str] = []

    vocabulary_a, vocabulary_b = vocabulary_of(a), vocabulary_of(b)
    base = CheckpointEvidence(
        model_a, summary_a, vocabulary_a, quick=quick, with_writers=quick and quick_reads_writers(model_b)
    )
    hashes_a = hashes_b = None
    if not quick and probably_identical(a, hashable_names(a), b, hashable_names(b)):
        # Every tensor's leading values have a twin on the other side: the hashes alone may decide
        # (`identical`), and sketches made in the same pass would be thrown away. When they do
        # not, `weigh_lineage` sketches what it needs, a second read of the rows it samples.
        hashes_b, _ = read_once(analysed_b, model_b, [], 0)
        hashes_a, _ = read_once(analysed_a, model_a, [], 0)
    elif not quick:
        # Each model is hashed and sketched in one pass (`read_once`), B first, B's sketches in the
        # bases `weigh_lineage` will ask for: its alignments come from the embeddings alone (the
        # identity's too, when the embeddings align poorly, though the first may decide).
        bases_b = []
        if model_a.hidden and model_b.hidden:
            anchored = base.anchor_alignment(model_b, vocabulary_b)
            plan = alignment_plan(anchored, model_a.hidden, model_b.hidden)
            bases_b = [
                base.suspect_basis(alignment) for alignment in plan if alignment.method != "layer-matrices"
            ]
        # A tensor is digested only where the other model has one of its size and leading values:
        # no other can share its digests (a derived pair's changed tensors need no sha256).
        digested_a, digested_b = digest_candidates(a, hashable_names(a), b, hashable_names(b))
        hashes_b, units_b = read_once(analysed_b, model_b, bases_b, base.row_sample(), digested=digested_b)
        bases_a = [base.basis()] if model_a.hidden else []
        hashes_a, units_a = read_once(analysed_a, model_a, bases_a, base.row_sample(), digested=digested_a)
        if model_a is model_b:  # one model compared with itself: one hold for both
            model_a.hold({**units_b, **units_a})
        else:
            model_b.hold(units_b)
            model_a.hold(units_a)
    if hashes_a is not None and hashes_b is not None:
        # Only tensors that could share a multiset with one on the other side are counted.
        hashes_a, hashes_b = settle_multisets(
            hashes_a,
            hashes_b,
            lambda t: analysed_a.tensor_hashes(t.name),
            lambda t: analysed_b.tensor_hashes(t.name),
            min_distinct=TWIN_MIN_DISTINCT,
        )
    hashes = match_hashes(hashes_a, hashes_b) if hashes_a and hashes_b else None
    reverse = match_hashes(hashes_b, hashes_a) if hashes_a and hashes_b else None
    twins = exact_twin_match(hashes_a, hashes_b, model_b)
    tokenizer = _tokenizer_relation(vocabulary_a, vocabulary_b)

    def result(verdict: str, reason: str, **kwargs: Any) -> CompareResult:
        return CompareResult(
            path_a=path_a,
            path_b=path_b,
            summary_a=summary_a,
            summary_b=summary_b,
            verdict=verdict,
            reason=reason,
            hashes=hashes,
            notes=notes,
            quick=quick,
            tokenizer=tokenizer,
            twins=twins,
            inspect_a=inspect_a,
            inspect_b=inspect_b,
            **kwargs,
        )

    same = identical_by_hashes(hashes, reverse)
    if same is not None:
        return result(
            "identical",
            same[0],
            how=same[1],
            p_value=None,
            score=1.0,
            layers=[],
            alignment=None,
            profile_correlation=None,
            value_added=None if quick else copied_everywhere(summary_b.parameters),
        )
    lineage = weigh_lineage(base, model_b, summary_b, vocabulary_b, twins=twins, quick=quick)
    experts = None
    value_added = None
    if lineage.verdict == "derived" and not quick:  # an MoE side: which FFN each expert copies
        experts = expert_map(model_a, model_b, lineage.layers, lineage.alignment)
        if experts is not None and experts.upcycled:
            lineage.how.append("upcycled")
        value_added = assess(model_a, model_b, lineage.layers, lineage.alignment)
        if experts is not None:  # experts against the FFN they copy, neuron by neuron
            account_experts(value_added, experts, model_a, model_b, lineage.alignment)
        lineage.how = revise_how(lineage.how, value_added)  # rounding is not training
    return result(**lineage.fields(), experts=experts, value_added=value_added)


@dataclass
class Lineage:
    """`weigh_lineage`'s answer: the verdict and everything `CompareResult` reports beside it."""

    verdict: str
    reason: str
    how: list[str] = field(default_factory=list)
    p_value: float | None = None
    score: float | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)
    alignment: Alignment | None = None
    profile_correlation: float | None = None
    matches: list[UnitMatch] = field(default_factory=list)
    layer_similarity: LayerSimilarity | None = None
    std_profiles: dict[str, dict[str, list[float | None]]] | None = None
    candidates: list[Candidate] = field(default_factory=list)
    anchored: Alignment | None = None
    alignment_failure: str | None = None
    corrected_for: int = 1
    # log10 of p_value worked out in log space: finite where p_value underflows to 0.0.
    log10_p: float | None = None

    def fields(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def _declared_layers(summary: ModelSummary) -> int:
    """A's layer count as recognized from its shapes (a fingerprint records the same), 0 if unknown:
    only used to place anonymous matrices for the layer map (`place_by_file_order`)."""
    count = summary.config.get("num_hidden_layers")
    return count if isinstance(count, int) and count > 0 else 0


class BaseEvidence(Protocol):
    """A's side of the lineage test, as `weigh_lineage` reads it: a loaded checkpoint
    (`CheckpointEvidence`) or a fingerprint (`lineage.fingerprint.FingerprintEvidence`)."""

    @property
    def summary(self) -> ModelSummary: ...

    @property
    def hidden(self) -> int | None: ...

    def basis(self) -> np.ndarray:
        """A's sketch basis (H_A x r): the units' sketches live in it."""
        ...

    def units(self) -> list[Unit]:
        """A's units, sketched in `basis`."""
        ...

    def row_sample(self) -> int:
        """How many vectors of each matrix A's sketches took (`tensor_units`' ``sample``; 0: all):
        B's are sketched alike, so that both sides are the same statistic."""
        ...

    def anchor_alignment(self, model_b: CanonicalModel, vocabulary_b: Vocabulary | None) -> Alignment | None:
        """The residual alignment anchored on the embedding rows (see `_best_alignment`)."""
        ...

    def suspect_basis(self, alignment: Alignment) -> np.ndarray:
        """B's sketch basis under ``alignment`` (H_B x r)."""
        ...

    def layer_grams(self) -> dict[tuple[int, str], np.ndarray] | None:
        """A's layer second moments (`layer_grams`), None when not available."""
        ...

    def derivation_kinds(
        self,
        summary_b: ModelSummary,
        layers: list[dict[str, Any]],
        alignment: Alignment,
        model_b: CanonicalModel,
    ) -> list[str]:
        """`how` B derives from A (see `derivation_kinds`)."""
        ...


@dataclass
class CheckpointEvidence:
    """`BaseEvidence` of a loaded checkpoint (``quick``: as `compare --quick` reads it)."""

    model: CanonicalModel
    summary: ModelSummary
    vocabulary: Vocabulary | None
    quick: bool = False
    # --quick, and B's storage is unknown: A's matrices are all sketched (`quick_reads_writers`).
    with_writers: bool = False
    # The last `anchor_alignment`: (model B, its vocabulary, the alignment).
    _anchored: tuple[CanonicalModel, Vocabulary | None, Alignment | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def hidden(self) -> int | None:
        return self.model.hidden

    def basis(self) -> np.ndarray:
        return projection(self.model.hidden or 0, SKETCH_DIM)

    def units(self) -> list[Unit]:
        # Through the model's memo: `compare` made them ahead, in the pass that hashed A (`read_once`).
        quick = self.quick and not self.with_writers
        return suspect_units(
            self.model, self.model.hidden or 0, self.basis(), quick=quick, sample=self.row_sample()
        )

    def row_sample(self) -> int:
        return row_sample_size(min(self.model.hidden or 0, SKETCH_DIM))  # `basis`'s width

    def anchor_alignment(self, model_b: CanonicalModel, vocabulary_b: Vocabulary | None) -> Alignment | None:
        """Fitted once for a model B and its vocabulary: `compare` asks before it reads B (for
        the bases B is sketched in), then `weigh_lineage` again."""
        found = self._anchored
        if found is None or found[0] is not model_b or found[1] is not vocabulary_b:
            anchors = _string_anchors(self.model, model_b, self.vocabulary, vocabulary_b)
            found = self._anchored = (model_b, vocabulary_b, _best_alignment(self.model, model_b, anchors))
        return found[2]

    def suspect_basis(self, alignment: Alignment) -> np.ndarray:
        if alignment.identity:  # the identity kept: the basis itself, not H x H x r
            return self.basis()
        return alignment.transform @ self.basis()

    def layer_grams(self) -> dict[tuple[int, str], np.ndarray] | None:
        hidden = self.model.hidden or 0
        if hidden > LAYER_FIT_MAX_HIDDEN:
            return None
        return layer_grams(self.model, hidden, quick=self.quick)

    def derivation_kinds(
        self,
        summary_b: ModelSummary,
        layers: list[dict[str, Any]],
        alignment: Alignment,
        model_b: CanonicalModel,
    ) -> list[str]:
        return derivation_kinds(
            self.summary, summary_b, layers, alignment, self.model, model_b, quick=self.quick
        )


def alignment_plan(anchored: Alignment | None, hidden_a: int, hidden_b: int) -> list[Alignment]:
    """The alignments `weigh_lineage` tries, in order, until one decides: the embedding alignment
    (``anchored``), then, when it failed or fits poorly and the widths agree, the identity and the
    alignment read off the layer matrices (fitted lazily: its transform here is a placeholder)."""
    plan: list[Alignment] = [] if anchored is None else [anchored]
    if (
        alignment_failure(anchored) is not None or anchored is None or anchored.residual > TRUSTED_RESIDUAL
    ) and hidden_a == hidden_b:
        plan.append(identity_alignment(hidden_a, hidden_b))
        plan.append(Alignment(np.eye(hidden_a, dtype=np.float32), float("nan"), 0, "layer-matrices"))
    return plan


def weigh_lineage(
    base: BaseEvidence,
    model_b: CanonicalModel,
    summary_b: ModelSummary,
    vocabulary_b: Vocabulary | None,
    *,
    twins: TwinMatch | None,
    quick: bool = False,
    layers: frozenset[int] | None = None,
) -> Lineage:
    """The test of H0 "B was trained independently of A" (the module docstring's steps 1 to 3),
    with A given as `BaseEvidence`: the one weighing behind `compare` and the comparison against
    a fingerprint, so both reach the same verdict from the same evidence. ``layers``: weigh only
    B's matrices of these layers (a search's screen, `screening_layers`), against all of A's."""
    hidden_a, hidden_b = base.hidden, model_b.hidden
    if not hidden_a or not hidden_b:
        verdict, reason = _with_twins(
            "inconclusive", "the hidden size of one model could not be recognized", twins
        )
        return Lineage(verdict, reason)
    anchored = base.anchor_alignment(model_b, vocabulary_b)
    failure = alignment_failure(anchored)
    plan = alignment_plan(anchored, hidden_a, hidden_b)
    if not plan:
        verdict, reason = _with_twins(
            "inconclusive", "different hidden sizes and no embeddings to align them", twins
        )
        return Lineage(verdict, reason)

    basis_a = base.basis()
    units_a = base.units()
    tried: list[Candidate] = []
    for alignment in plan:
        fitted: LayerFit | None = None
        if alignment.method == "layer-matrices":
            grams_a = base.layer_grams()
            fitted = (
                None
                if grams_a is None or hidden_b > LAYER_FIT_MAX_HIDDEN
                else layer_fit_from_grams(grams_a, layer_grams(model_b, hidden_b, quick=quick, layers=layers))
            )
            if fitted is None:
                tried.append(Candidate(alignment))
                continue
            # Shown as the fold fitted on even layers unless it decides (then the whole fit).
            candidate = Candidate(replace(alignment, transform=fitted.folds[0]))
            units_b = _cross_fitted_units(
                model_b, hidden_b, fitted, basis_a, quick=quick, sample=base.row_sample(), layers=layers
            )
        else:
            candidate = Candidate(alignment)
            units_b = suspect_units(
                model_b,
                hidden_b,
                base.suspect_basis(alignment),
                quick=quick,
                sample=base.row_sample(),
                layers=layers,
            )
        tried.append(candidate)
        if len(units_a) >= 2 and len(units_b) >= 1:
            # A rotation fitted role by role pulls all of a role's matrices together: their null
            # takes that into account (`match_units`).
            fitted_here = alignment.method == "layer-matrices"
            candidate.weighed = weigh_units(
                units_a,
                units_b,
                basis_a.shape[1],
                role_null=fitted_here,
                fold=_layer_parity if fitted_here else None,
                margin=LAYER_FIT_NULL_MARGIN if fitted_here else NULL_SCALE_MARGIN,
                layer_counts=(_declared_layers(base.summary), len(model_b.layers)),
            )
        # Every candidate in the plan is paid for (Bonferroni), tried or not, so stopping at the
        # first decisive one keeps the test calibrated.
        if candidate.weighed is not None and candidate.weighed.p_value * len(plan) < DERIVED_P:
            if fitted is not None and candidate.alignment.method == "layer-matrices":
                candidate.alignment = fitted.whole()
            break
    scored = [c for c in tried if c.weighed is not None]
    if not scored:
        verdict, reason = _with_twins("inconclusive", "no comparable weight matrices", twins)
        return Lineage(verdict, reason, alignment=anchored, candidates=tried)
    # By the corrected p-value: candidates that all come out at 1 (no evidence under any
    # alignment) tie, and the first in the plan, the embedding alignment, is shown, so that the
    # descriptive figures (similarity, layer map) do not follow noise among p-values near 1.
    best = min(scored, key=lambda c: min(1.0, c.weighed.p_value * len(plan)) if c.weighed else 1.0)
    weighed = best.weighed
    assert weighed is not None
    p_value = min(1.0, weighed.p_value * len(plan))
    log10_p = min(0.0, log10_normal_sf(weighed.z) + math.log10(len(plan)))
    # Past what a float holds, Z comes from the combined test itself (the correction for the
    # alignments tried moves it by ln(count) / Z), so the reason's Z agrees with log10_p_value.
    z_value = _normal_isf(p_value) if p_value > 1e-300 else weighed.z - math.log(len(plan)) / weighed.z
    verdict, reason = decide(len(weighed.matches), z_value, p_value)
    if len(plan) > 1 and verdict == "derived":
        reason += (
            f", through {_method_text(best.alignment)} ({len(plan)} alignments tried, p corrected for them)"
        )
    if verdict != "derived" and failure is not None:
        tried_text = ", ".join(_method_text(c.alignment) for c in tried)
        verdict = "inconclusive"
        reason = (
            f"{failure}; under every alignment tried ({tried_text}) no match was found, which cannot "
            "rule out a derivative with a new vocabulary and a transformed residual stream"
        )
    verdict, reason = _with_twins(verdict, reason, twins)
    how = (
        base.derivation_kinds(summary_b, weighed.layers, best.alignment, model_b)
        if verdict == "derived"
        else []
    )
    if verdict == "derived" and "vocab-extended" not in how and _vocabulary_replaced(anchored, failure):
        how.append("vocab-replaced")
    return Lineage(
        verdict,
        reason,
        how=how,
        p_value=p_value,
        score=weighed.score,
        layers=weighed.layers,
        # The alignment that decided, else the embedding alignment the verdict rests on.
        alignment=best.alignment if verdict == "derived" or anchored is None else anchored,
        profile_correlation=weighed.profile_correlation,
        matches=weighed.matches,
        layer_similarity=weighed.layer_similarity,
        std_profiles=weighed.std_profiles,
        candidates=tried,
        anchored=anchored,
        alignment_failure=failure,
        corrected_for=len(plan),
        log10_p=log10_p,
    )


def _string_anchors(
    model_a: CanonicalModel,
    model_b: CanonicalModel,
    vocabulary_a: Vocabulary | None,
    vocabulary_b: Vocabulary | None,
) -> TokenPairs | None:
    """Anchor pairs by token string, when both vocabularies are known, enough tokens are shared to
    fix a rotation, and some of them sit at other ids (else equal ids are the same anchors)."""
    names_a, names_b = embedding_candidates(model_a), embedding_candidates(model_b)
    if not names_a or not names_b:
        return None
    rows_a = model_a.checkpoint.info(names_a[0]).shape[0]
    rows_b = model_b.checkpoint.info(names_b[0]).shape[0]
    pairs = token_pairs(vocabulary_a, vocabulary_b, rows_a, rows_b)
    hidden = max(model_a.hidden or 0, model_b.hidden or 0)
    if pairs is None or pairs.moved == 0 or len(pairs.ids_a) < MIN_ANCHORS_PER_DIMENSION * hidden:
        return None
    return pairs


def _method_text(alignment: Alignment) -> str:
    if alignment.method == "procrustes-embeddings":
        return f"embedding rows of the same {alignment.anchored_by.removeprefix('token ')}"
    if alignment.method == "identity":
        return "the stored basis"
    return "a rotation fitted from the layer matrices"


def _with_twins(verdict: str, reason: str, twins: TwinMatch | None) -> tuple[str, str]:
    """Exact twins of A's tensors in B: most of B's parameters make B `derived`, any rules out
    `independent` (see `TWIN_MIN_ELEMENTS`)."""
    if twins is None or twins.tensors == 0 or verdict in ("derived", "identical"):
        return verdict, reason
    what = (
        f"{twins.fraction:.0%} of B's parameters ({twins.tensors} tensors of at least "
        f"{TWIN_MIN_ELEMENTS:,} values, {TWIN_MIN_DISTINCT} of them distinct) are exact copies of A's "
        "tensors (after bf16 rounding), which independent training does not reproduce"
    )
    if twins.fraction >= TWIN_DERIVED_FRACTION:
        return "derived", what
    return "inconclusive", f"{what}; the rest: {reason}"


def _vocabulary_replaced(anchored: Alignment | None, failure: str | None) -> bool:
    """B's embedding rows are not A's at A's ids: a renumbered or new vocabulary, or re-initialised rows."""
    if anchored is not None and anchored.anchored_by == "token strings":
        return True
    return failure is not None and anchored is not None


@dataclass
class WeighedUnits:
    """The calibrated test on two sets of sketched units, and what the reports draw from it."""

    verdict: str
    reason: str
    p_value: float
    score: float
    matches: list[UnitMatch]
    layers: list[dict[str, Any]]
    layer_similarity: LayerSimilarity | None
    std_profiles: dict[str, dict[str, list[float | None]]]
    profile_correlation: float | None
    z: float = 0.0  # Stouffer's combined Z, whose upper tail is p_value


def weigh_units(
    units_a: list[Unit],
    units_b: list[Unit],
    sketch_dim: int,
    *,
    role_null: bool = False,
    fold: Callable[[Unit], int] | None = None,
    margin: float = NULL_SCALE_MARGIN,
    layer_counts: tuple[int, int] = (0, 0),
) -> WeighedUnits:
    """Match B's units to A's, combine the matches' evidence and decide: the one test behind both
    `compare` and the comparison against a fingerprint (`lineage.fingerprint`). ``role_null``: see
    `match_units`. ``fold``: each B unit is matched only among A's units of its own fold (for a
    cross-fitted alignment, whose other fold's matrices it was fitted on). ``margin``: how much
    wider than the measured spread each unit's null is (`NULL_SCALE_MARGIN`). ``layer_counts``: A's
    and B's number of layers, to place matrices without a layer index (`place_by_file_order`)."""
    table = similarity_table(units_a, units_b)
    if fold is None:
        matches = match_units(units_a, units_b, sketch_dim, table, role_null=role_null, margin=margin)
    else:
        matches = []
        for key in sorted({fold(u) for u in units_b}):
            rows = [i for i, u in enumerate(units_b) if fold(u) == key]
            columns = [j for j, u in enumerate(units_a) if fold(u) == key]
            if len(columns) >= 2:
                matches += match_units(
                    [units_a[j] for j in columns],
                    [units_b[i] for i in rows],
                    sketch_dim,
                    table[np.ix_(rows, columns)],
                    role_null=role_null,
                    margin=margin,
                )
    placed_a = place_by_file_order(units_a, layer_counts[0])
    placed_b = place_by_file_order(units_b, layer_counts[1])
    similarity = layer_similarity(placed_a, placed_b, table)
    score = _similarity_score(table)
    del table
    layer_of_a = {u.label: u.layer for u in placed_a}
    layer_of_b = {u.label: u.layer for u in placed_b}
    placed_matches = [
        replace(m, a=replace(m.a, layer=layer_of_a[m.a.label]), b=replace(m.b, layer=layer_of_b[m.b.label]))
        for m in matches
    ]
    z, p = combine(one_to_one(matches))
    verdict, reason = decide(len(matches), z, p)
    return WeighedUnits(
        verdict=verdict,
        reason=reason,
        p_value=p,
        score=score,
        matches=matches,
        layers=layer_map(placed_matches),
        layer_similarity=similarity,
        std_profiles={"a": std_profile(units_a), "b": std_profile(units_b)},
        profile_correlation=_profile_correlation(units_a, units_b),
        z=z,
    )


def _similarity_score(table: np.ndarray) -> float:
    """The `score` shown beside the verdict, descriptive only (the verdict rests on the p-value):
    the mean sketch similarity of one model's matrices to their best match in the other's, in the
    better-matched direction. Taking both directions makes compare(A, B) and compare(B, A) show
    the same number, and a model that keeps a subset of the other's matrices (a pruned or
    re-exported copy) scores as high as a whole copy; an identical copy scores 1."""
    if table.size == 0:
        return 0.0
    b_in_a = float(np.mean(table.max(axis=1)))
    a_in_b = float(np.mean(table.max(axis=0)))
    return min(1.0, max(b_in_a, a_in_b))


def compare(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    *,
    quick: bool = False,
    progress: ProgressReporter | None = None,
) -> CompareResult | TokenizerComparison:
    """Compare two checkpoints: architecture reuse, and whether B's weights derive from A's.

    When either side is a tokenizer alone, only the tokenizers are compared (`TokenizerComparison`).
    ``progress``: where to report the stages (bytes hashed and sketched per model; `unshell.progress`).

    Example:
        >>> import unshell
        >>> result = unshell.compare("base", "suspect")  # doctest: +SKIP
        >>> result.verdict, result.p_value
    """
    with reporting(progress):
        return _compare_paths(a, b, quick=quick)


def _compare_paths(
    a: str | os.PathLike[str], b: str | os.PathLike[str], *, quick: bool
) -> CompareResult | TokenizerComparison:
    from ..tokenizers.report import compare_tokenizers, open_model_or_tokenizer

    opened_a = open_model_or_tokenizer(a)
    try:
        opened_b = open_model_or_tokenizer(b)
    except BaseException:
        if isinstance(opened_a, Checkpoint):
            opened_a.close()
        raise
    if isinstance(opened_a, Checkpoint) and isinstance(opened_b, Checkpoint):
        with opened_a as checkpoint_a, opened_b as checkpoint_b:
            return compare_checkpoints(
                checkpoint_a, checkpoint_b, quick=quick, path_a=str(Path(a)), path_b=str(Path(b))
            )
    # A tokenizer on either side: compare tokenizers only (a checkpoint contributes the one it carries).
    vocabularies = []
    for path, opened in ((a, opened_a), (b, opened_b)):
        if isinstance(opened, Checkpoint):
            with opened:
                vocabulary = vocabulary_of(opened)
            if vocabulary is None:
                raise UsageError(
                    f"{sanitize(str(path))} carries no tokenizer to compare with the other side's"
                )
            vocabularies.append(vocabulary)
        else:
            vocabularies.append(opened)
    return compare_tokenizers(a, b, vocabularies[0], vocabularies[1])
