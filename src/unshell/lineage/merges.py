"""`unshell.compare_merge(b, parents)`: is B a merge of the candidate parents?

A merge (mergekit's ``linear``, ``task_arithmetic``, ``slerp``) builds every tensor of B from the
tensors of the same name in its parents, all of one architecture and shape:

* linear: ``B = sum_i w_i P_i`` (``normalize``: the weights sum to 1; task arithmetic over a base
  is the same with the base as one more parent, ``B = base + sum_i l_i (P_i - base)``);
* SLERP (two parents): ``B = sin((1-t) theta) / sin(theta) P_1 + sin(t theta) / sin(theta) P_2``,
  with ``theta`` the angle between the two whole tensors; the weights sum to more than 1 when the
  parents are far apart, and SLERP falls back to linear when they are nearly parallel (two
  fine-tunes of one base are, to within a degree);
* ``t`` and the weights may change from layer to layer (mergekit's gradients) and between
  attention and MLP.

Both put each of B's tensors in the span of its parents' tensors. So for each tensor (matched by
role, never by name) B is regressed on its parents by least squares, with free weights: the
closed form ``w = G^-1 c`` (``G`` the parents' Gram matrix, ``c`` their inner products with B). The
weights say linear (sum 1) or SLERP (the sum the SLERP of the fitted ``t`` would give; ``t`` comes
from the weights' ratio and the parents' angle in closed form: ``tan(t theta) = w_2 sin(theta) /
(w_1 + w_2 cos(theta))``).

The test. A fine-tune of one parent is explained by that parent alone (with a free scale, which
absorbs weight decay's shrinkage); a merge is not. For every tensor the rows are split into two
folds, the one-parent fit and the merge fit are made on one fold and scored on the other, and the
tensor counts as evidence when the merge fit predicts the held-out rows better. Under H0 "given
its best single parent, B's tensor owes nothing to the other parents", the other parents' fitted
weights are noise to the held-out fold: the merge's held-out gain is a symmetric term minus the
cost of fitting noise, so it is positive with probability at most 1/2, and the count of positive
tensors is at most Binomial(n, 1/2). Its one-sided tail is the p-value: calibrated (conservative)
for candidates unrelated to B's change, whatever the tensors' sizes or the models' training, as
long as tensors are independent under H0 (`benchmarks/RESULTS.md` and the zoo's independent
candidates check it).

A significant p only says that the other parents carry information about B's change. A fine-tune
that merely resembles a sibling fine-tune of the same base (same data, same weight decay) also
passes it, with a small effect. So ``merged`` also needs the merge to explain most of what the
best single parent leaves (`MERGE_MIN_EXPLAINED`, the median over tensors of
``1 - residual(merge) / residual(best parent)``: 1 for an exact merge, about 0.2 for the zoo's
sibling fine-tunes) and at least two parents to carry weight (`MERGE_MIN_SHARE`).

The common ancestor. If B is the parents' common base (each ``P_i = B + d_i``, the fine-tunes'
changes ``d_i`` uncorrelated, as real fine-tunes on different data are), the parents' weighted
mean with weights ``1 / |d_i|^2`` is B plus a change of only ``1 / sum_i 1 / |d_i|^2``: the merge
fit explains ``1 - 1 / sum_i (r_best / r_i)`` of what the best parent leaves (``r_i`` each single
parent's residual), 1/2 for two equally changed fine-tunes, 2/3 for three, whatever the models.
So ``merged`` also needs the merge to explain at least half of what that common-ancestor account
leaves (`MERGE_MIN_BEYOND_ANCESTOR`, median over tensors; exact merges: all of it). Without it, the
original SmolLM2-135M-Instruct against three real fine-tunes of it was called a merge of them
(explained 0.59). Sparse merges (below) are exempt only over a base that B keeps where the other
candidates are close to it, as TIES does (`SPARSE_BASE_MAX_CLOSENESS`): an original holds each of
its light bf16 fine-tunes' values exactly wherever that one left them, which alone reads as sparse.

TIES and DARE (sparsified merges). Both work on the parents' deltas from a base
(``d_i = P_i - base``): TIES keeps each delta's largest entries (``density``), elects one sign per
entry (the sign of the summed deltas) and averages the entries that agree with it; DARE drops
entries at random with probability ``p`` and rescales the rest by ``1 / (1 - p)``. Their B is not
in the span of the parents, but B's residual against the base is *sparse*: many entries exactly
equal to the base's (where a fine-tune or a linear merge changes nearly all of them), and each
changed entry equals one parent's delta, or the mean of several, rescaled. With the base among the
candidates, the exact-equality count (`SPARSE_MIN_FRACTION`) names the method ``sparse`` and the
base (`TensorMoments.base_candidate`: the candidate B keeps where the others are close to it, since
TIES trims the smallest deltas); the decision is still the one above, so a very sparse merge whose linear fit explains less
than half of B's change is not called ``merged`` (its pairwise comparisons still say ``derived``).
A merge obfuscated afterwards (a rotated residual stream, permuted neurons) is not in its parents'
span either: the pairwise comparisons still find it, the merge test does not.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..formats.base import Checkpoint, sanitize
from ..progress import ProgressReporter
from .canonical import CanonicalModel, canonical_model
from .compare import CompareResult, compare_checkpoints

MERGE_HOW = "merged"  # what a parent's pairwise `how` gains when B is a merge giving it weight
# Calibrated like the rest of lineage: B is `merged` when the sign test's p is below this ...
MERGE_P = 1e-6
# ... the median tensor's merge fit leaves at most this much of what its best single parent
# leaves unexplained (exact merges: 0.998 to 1.0, merges fine-tuned or requantized afterwards
# less; the zoo's fine-tune of base-s0 against base-s0 and a sibling fine-tune, and base-s0
# against its two fine-tunes: 0.19 to 0.20, benchmarks/RESULTS.md) ...
MERGE_MIN_EXPLAINED = 0.5
# ... and at least two parents carry at least this share of the weight (mean over tensors) ...
MERGE_MIN_SHARE = 0.02
# ... and (dense merges) the merge explains at least this much of what B being the parents' common
# ancestor would leave (median over tensors of (explained - ancestor) / (1 - ancestor); exact
# merges about 1; SmolLM2 against two or three of its real fine-tunes, -0.1 to -0.2).
MERGE_MIN_BEYOND_ANCESTOR = 0.5
# A tensor whose best single parent leaves less than this (relative to B's squared norm) is a
# copy of that parent (mergekit's SLERP at t = 0 or 1 does this): it tells nothing about a merge.
COPY_RESIDUAL = 1e-10
# SLERP and linear are told apart only where the SLERP of the fitted t would put the weights' sum
# this far from 1 (two fine-tunes of one base are within a degree of each other: there both
# methods give the same tensor, and SLERP itself falls back to linear).
SLERP_MIN_SEPARATION = 1e-3
# TIES and DARE leave many of the base's values exactly as they were: where the parents differ,
# the zoo's TIES merge (density 0.5) holds 27 to 38 % of base-s0's values exactly (median 29 %);
# linear and SLERP merges, fine-tunes and unrelated models, 0 (median over tensors; single
# tensors up to 0.3 % and one of 39 at 32 %); linear and SLERP merges of two real SmolLM2
# fine-tunes stored in F16, 5 to 6 % (rounding lands on a parent's value where the parents differ
# by a few units in the last place), their TIES merge 25 % of the base's. A median above this
# calls the merge sparse.
SPARSE_MIN_FRACTION = 0.1
# A sparse reading is a TIES/DARE merge only over a base the others were fine-tuned from, and only
# then is it exempt from the common-ancestor rule (a real TIES merge reads like an ancestor there).
# TIES keeps the base's value where every delta from it was small: there the other candidates are
# close to the base. An original release against light bf16 fine-tunes of itself holds each one's
# value exactly wherever that one left it, whatever the others did there; it read as sparse and
# was called a merge of them (benchmarks/bench_merge_ancestor.py). `TensorMoments.closeness` of
# the base (the others' distance from it where B keeps its value, over their distance where the
# candidates differ; median over tensors): TIES at density 0.5, 0.39 to 0.41 for changes of
# correlation 0 to 0.8; the original against 2 or 3 light fine-tunes, 0.71 to 1.01.
SPARSE_BASE_MAX_CLOSENESS = 0.6
# Tensors are read in row blocks of about this many values (float64 working copies).
CHUNK_VALUES = 1 << 20
# A merge only needs tensors that exist in every model: the layer matrices, norms, embeddings.
MERGE_ROLES = (
    "attn.q.weight",
    "attn.k.weight",
    "attn.v.weight",
    "attn.o.weight",
    "mlp.gate.weight",
    "mlp.up.weight",
    "mlp.down.weight",
    "attn_norm.weight",
    "ffn_norm.weight",
    "final_norm.weight",
    "embed.weight",
    "lm_head.weight",
)


@dataclass
class TensorFit:
    """One tensor of B fitted on its parents' tensors of the same role."""

    layer: int | None
    role: str
    elements: int
    weights: list[float]  # one per parent, in the order given
    best_single: int  # the parent that alone explains B's tensor best (with a free scale)
    # 1 - residual(merge) / residual(best single parent); None for a copy of one parent.
    explained: float | None
    heldout_gain: float  # the merge's gain on held-out rows, relative to the best parent's residual
    method: str  # "linear", "slerp", "copy" (of one parent), or "linear" for more than 2 parents
    slerp_t: float | None = None  # two parents: the SLERP t the weights give
    angle_degrees: float | None = None  # two parents: the angle between their tensors
    # Where the parents differ, the fraction of values B holds exactly as `sparse_parent` does.
    sparse_fraction: float | None = None
    sparse_parent: int | None = None
    # What the merge fit would explain if B were the parents' common ancestor and their changes
    # from it uncorrelated: 1 - 1 / sum_i (residual of the best parent / residual of parent i).
    ancestor: float | None = None
    # `TensorMoments.closeness` of `sparse_parent` (`SPARSE_BASE_MAX_CLOSENESS`).
    base_closeness: float | None = None

    @property
    def evidence(self) -> bool:
        return self.explained is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "role": self.role,
            "elements": self.elements,
            "weights": [round(w, 6) for w in self.weights],
            "best_single_parent": self.best_single,
            "explained": None if self.explained is None else round(self.explained, 6),
            "heldout_gain": round(self.heldout_gain, 6),
            "method": self.method,
            "slerp_t": None if self.slerp_t is None else round(self.slerp_t, 6),
            "angle_degrees": None if self.angle_degrees is None else round(self.angle_degrees, 4),
            "sparse_fraction": None if self.sparse_fraction is None else round(self.sparse_fraction, 6),
            "sparse_parent": self.sparse_parent,
            "ancestor": None if self.ancestor is None else round(self.ancestor, 6),
        }


@dataclass
class MergeFit:
    """Every tensor's fit, and the decision: is B a merge of these parents?"""

    parents: list[str]
    tensors: list[TensorFit]
    merged: bool
    reason: str
    method: str | None
    p_value: float | None
    log10_p: float | None
    explained: float | None  # median over tensors that are not copies
    weights: list[float]  # median per parent over those tensors
    shares: list[float]  # mean share |w_i| / sum |w| per parent
    notes: list[str] = field(default_factory=list)
    # Median over tensors of the fraction of B's values equal to one parent's where the parents
    # differ, and that parent when it is above `SPARSE_MIN_FRACTION` (TIES/DARE's base).
    sparse_fraction: float | None = None
    sparse_base: int | None = None
    # Median over tensors of (explained - ancestor) / (1 - ancestor): how much of what B being the
    # parents' common ancestor would leave unexplained the merge explains.
    beyond_ancestor: float | None = None
    # Median over the tensors that name `sparse_base` of `TensorFit.base_closeness` (None: no
    # sparse reading, or B keeps none of its values).
    sparse_base_closeness: float | None = None

    def layers(self) -> list[dict[str, Any]]:
        """Per layer (None: tensors outside the layers): the parents' mean weights, SLERP's mean t
        where it applies, the median explained fraction and the method most of its tensors show."""
        groups: dict[int | None, list[TensorFit]] = {}
        for fit in self.tensors:
            groups.setdefault(fit.layer, []).append(fit)
        rows = []
        for layer in sorted(groups, key=lambda x: (x is None, x if x is not None else 0)):
            fits = groups[layer]
            explained = [f.explained for f in fits if f.explained is not None]
            ts = [f.slerp_t for f in fits if f.slerp_t is not None and f.method == "slerp"]
            rows.append(
                {
                    "layer": layer,
                    "weights": [
                        round(float(np.mean([f.weights[i] for f in fits])), 4)
                        for i in range(len(self.parents))
                    ],
                    "slerp_t": round(float(np.mean(ts)), 4) if ts else None,
                    "explained": round(float(np.median(explained)), 4) if explained else None,
                    "method": Counter(f.method for f in fits).most_common(1)[0][0],
                    "tensors": len(fits),
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "parents": [sanitize(p, limit=4096) for p in self.parents],
            "merged": self.merged,
            "reason": self.reason,
            "method": self.method,
            "p_value": self.p_value,
            "log10_p_value": None if self.log10_p is None else round(self.log10_p, 6),
            "explained": None if self.explained is None else round(self.explained, 6),
            "weights": [round(w, 6) for w in self.weights],
            "shares": [round(s, 6) for s in self.shares],
            "layers": self.layers(),
            "tensors": [t.to_dict() for t in self.tensors],
            "thresholds": {
                "p": MERGE_P,
                "min_explained": MERGE_MIN_EXPLAINED,
                "min_share": MERGE_MIN_SHARE,
                "min_beyond_ancestor": MERGE_MIN_BEYOND_ANCESTOR,
                "max_sparse_base_closeness": SPARSE_BASE_MAX_CLOSENESS,
            },
            "sparse_fraction": None if self.sparse_fraction is None else round(self.sparse_fraction, 6),
            "sparse_base": None
            if self.sparse_base is None
            else sanitize(self.parents[self.sparse_base], limit=4096),
            "beyond_ancestor": None if self.beyond_ancestor is None else round(self.beyond_ancestor, 6),
            "sparse_base_closeness": None
            if self.sparse_base_closeness is None
            else round(self.sparse_base_closeness, 6),
            "notes": self.notes,
        }


@dataclass
class MergeResult:
    """`compare_merge`'s answer: B against each candidate parent, and the merge test."""

    path_b: str
    parents: list[str]
    pairwise: list[CompareResult]
    fit: MergeFit

    @property
    def merged(self) -> bool:
        return self.fit.merged

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "kind": "merge-comparison",
            "b": sanitize(self.path_b, limit=4096),
            "parents": [sanitize(p, limit=4096) for p in self.parents],
            "merge": self.fit.to_dict(),
            "pairwise": [result.to_dict() for result in self.pairwise],
        }


# --- the fit -------------------------------------------------------------------------------------


def _as_rows(values: np.ndarray) -> np.ndarray:
    """A tensor as rows to fold: a matrix's rows, a vector's (or one-row matrix's) single values."""
    if values.ndim >= 2 and values.shape[0] >= 2:
        return values.reshape(values.shape[0], -1)
    return values.reshape(-1, 1)


@dataclass
class TensorMoments:
    """What the fit reads of one tensor: the fold Gram matrices, and where B equals a parent."""

    grams: np.ndarray  # (2, k+1, k+1), see `tensor_moments`
    equal: np.ndarray  # (k,): values where B equals parent i exactly while the parents differ
    differ: int  # values where the parents are not all equal
    # (k,): the other parents' mean distance from parent i, summed where B equals parent i (and
    # the parents differ), and its mean where the parents differ (over the row blocks where B
    # equals parent i somewhere).
    near: np.ndarray
    spread: np.ndarray

    def closeness(self, i: int) -> float | None:
        """Where B keeps parent i's value (and the parents differ), the other parents' mean
        distance from it, over that distance where the parents differ (None where B keeps none)."""
        if self.equal[i] <= 0:
            return None
        return float(self.near[i] / self.equal[i] / max(float(self.spread[i]), 1e-300))

    def base_candidate(self) -> int:
        """The parent most likely to be a TIES/DARE base: among those B equals most often (at
        least half as often as the most), the one whose values B keeps where the other parents are
        closest to it. TIES keeps the base's value where every parent's delta from it is small (it
        trims the smallest), while a parent whose delta alone survived is kept where its distance
        from the others is large; at density 0.5 with uncorrelated deltas that parent is kept a
        little more often than the base (about 31 % against 25 %)."""
        top = float(np.max(self.equal))
        if top <= 0 or self.differ == 0:
            return int(np.argmax(self.equal))
        ratios = [
            math.inf if self.equal[i] < 0.5 * top or (close := self.closeness(i)) is None else close
            for i in range(len(self.equal))
        ]
        return int(np.argmin(ratios))


def tensor_moments(b: np.ndarray, parents: list[np.ndarray]) -> TensorMoments:
    """Gram matrices (2, k+1, k+1) of ``[B - P_1, P_1, P_2 - P_1, ..., P_k - P_1]`` over the even
    and the odd rows. Differences are taken in float64 before the products, so that the small
    distances between a fine-tune and its base keep their precision. Also counts, where the
    parents differ, the values B holds exactly as each parent does (TIES and DARE leave many of
    the base's values untouched; a linear merge or a fine-tune almost none)."""
    k = len(parents)
    rows_b = _as_rows(b)
    rows_p = [_as_rows(p) for p in parents]
    grams = np.zeros((2, k + 1, k + 1))
    equal = np.zeros(k)
    near = np.zeros(k)
    spread = np.zeros(k)
    spread_count = np.zeros(k)
    differ = 0
    step = max(2, (CHUNK_VALUES // max(1, rows_b.shape[1])) // 2 * 2)  # even: folds stay aligned
    for start in range(0, rows_b.shape[0], step):
        raw_b = rows_b[start : start + step]
        raw_p = [p[start : start + step] for p in rows_p]
        differs = np.zeros(raw_b.shape, dtype=bool)
        for other in raw_p[1:]:
            differs |= other != raw_p[0]
        differ += int(differs.sum())
        for i, parent in enumerate(raw_p):
            same = (raw_b == parent) & differs
            count = int(np.count_nonzero(same))
            equal[i] += count
            if count and k > 1:  # where B keeps parent i's value: how far the others are from it
                others = [o for j, o in enumerate(raw_p) if j != i]
                distance = sum(np.abs(o.astype(np.float32) - parent) for o in others) / (k - 1)
                near[i] += float(distance[same].sum(dtype=np.float64))
                spread[i] += float(distance[differs].sum(dtype=np.float64))
                spread_count[i] += int(differs.sum())
        first = raw_p[0].astype(np.float64)
        vectors = [raw_b.astype(np.float64) - first, first]
        vectors += [p.astype(np.float64) - first for p in raw_p[1:]]
        for fold in (0, 1):
            stacked = np.stack([v[fold::2].ravel() for v in vectors])
            grams[fold] += stacked @ stacked.T
    spread /= np.maximum(spread_count, 1)
    return TensorMoments(grams, equal, differ, near, spread)


def _fit(gram: np.ndarray, target: np.ndarray, regressors: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of ``target`` on ``regressors`` (columns), both as coefficient
    vectors over the Gram matrix's vectors."""
    lhs = regressors.T @ gram @ regressors
    rhs = regressors.T @ gram @ target
    solution, *_ = np.linalg.lstsq(lhs, rhs, rcond=1e-13)
    return np.asarray(solution)


def _residual(
    gram: np.ndarray, target: np.ndarray, regressors: np.ndarray, coefficients: np.ndarray
) -> float:
    z = target - regressors @ coefficients
    return max(0.0, float(z @ gram @ z))


def fit_tensor(layer: int | None, role: str, b: np.ndarray, parents: list[np.ndarray]) -> TensorFit:
    """Fit one tensor of B on its parents' (see the module docstring)."""
    k = len(parents)
    moments = tensor_moments(b, parents)
    grams = moments.grams
    whole = grams[0] + grams[1]
    sparse_parent = moments.base_candidate()
    sparse = float(moments.equal[sparse_parent]) / moments.differ if moments.differ else None
    unit = np.eye(k + 1)
    # B - P_1 against the span of the parents: (P_1, P_2 - P_1, ...).
    merge_target, merge_regressors = unit[0], unit[:, 1:]

    def single(j: int) -> tuple[np.ndarray, np.ndarray]:
        # B - P_j against P_j alone (a free scale).
        offset = unit[j + 1] if j > 0 else np.zeros(k + 1)
        return unit[0] - offset, (unit[1] + offset)[:, None]

    singles = []
    for j in range(k):
        target, regressors = single(j)
        singles.append(_residual(whole, target, regressors, _fit(whole, target, regressors)))
    best = int(np.argmin(singles))
    coefficients = _fit(whole, merge_target, merge_regressors)
    merge_residual = _residual(whole, merge_target, merge_regressors, coefficients)
    weights = [1.0 + coefficients[0] - float(np.sum(coefficients[1:])), *map(float, coefficients[1:])]
    b_norm = float(np.sum(np.square(b, dtype=np.float64)))
    elements = int(b.size)
    if singles[best] <= COPY_RESIDUAL * max(b_norm, 1e-30):
        target, regressors = single(best)
        scale = 1.0 + float(_fit(whole, target, regressors)[0])
        copy_weights = [scale if j == best else 0.0 for j in range(k)]
        return TensorFit(layer, role, elements, copy_weights, best, None, 0.0, "copy")
    # Held out: fit on one fold of rows, score on the other, both ways.
    heldout_single = heldout_merge = 0.0
    target, regressors = single(best)
    for fit_fold, score_fold in ((0, 1), (1, 0)):
        heldout_single += _residual(
            grams[score_fold], target, regressors, _fit(grams[fit_fold], target, regressors)
        )
        heldout_merge += _residual(
            grams[score_fold],
            merge_target,
            merge_regressors,
            _fit(grams[fit_fold], merge_target, merge_regressors),
        )
    gain = (heldout_single - heldout_merge) / max(heldout_single, 1e-300)
    explained = 1.0 - merge_residual / singles[best]
    ancestor = 1.0 - 1.0 / sum(singles[best] / max(r, 1e-300) for r in singles)
    method, slerp_t, angle = "linear", None, None
    if k == 2:
        p1, p2 = unit[1], unit[1] + unit[2]
        cosine = float(p1 @ whole @ p2) / math.sqrt(
            max(float(p1 @ whole @ p1) * float(p2 @ whole @ p2), 1e-300)
        )
        theta = math.acos(min(1.0, max(-1.0, cosine)))
        angle = math.degrees(theta)
        method, slerp_t = _slerp_or_linear(weights[0], weights[1], theta)
    base_closeness = moments.closeness(sparse_parent)
    return TensorFit(
        layer,
        role,
        elements,
        weights,
        best,
        explained,
        gain,
        method,
        slerp_t,
        angle,
        sparse,
        sparse_parent,
        ancestor,
        base_closeness,
    )


def _slerp_or_linear(w1: float, w2: float, theta: float) -> tuple[str, float | None]:
    """Which of linear and SLERP the weights fit (see `SLERP_MIN_SEPARATION`), and SLERP's t."""
    if theta < 1e-9:
        return "linear", None
    angle = math.atan2(w2 * math.sin(theta), w1 + w2 * math.cos(theta))
    t = angle / theta
    slerp_sum = (math.sin((1 - t) * theta) + math.sin(t * theta)) / math.sin(theta)
    if abs(slerp_sum - 1.0) < SLERP_MIN_SEPARATION:
        return "linear", t
    total = w1 + w2
    return ("slerp" if abs(total - slerp_sum) < abs(total - 1.0) else "linear"), t


def binomial_upper_tail_log10(successes: int, trials: int) -> float:
    """log10 P(Binomial(trials, 1/2) >= successes), exact."""
    if successes <= 0:
        return 0.0
    terms = [
        math.lgamma(trials + 1) - math.lgamma(i + 1) - math.lgamma(trials - i + 1) - trials * math.log(2)
        for i in range(successes, trials + 1)
    ]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / math.log(10)


def merge_tensors(models: list[CanonicalModel]) -> list[tuple[int | None, str]]:
    """The (layer, role) slots that B (``models[0]``) and every parent hold, in B's order."""
    b = models[0]
    keys = [(layer, role) for layer in [*b.layers, None] for role in MERGE_ROLES]
    return [key for key in keys if all(key in m.slots or key in m.fused for m in models)]


def fit_merge(b: CanonicalModel, parents: list[CanonicalModel], names: list[str]) -> MergeFit:
    """Fit every shared tensor of B on its parents' and decide whether B is a merge of them."""
    fits: list[TensorFit] = []
    skipped = 0
    for layer, role in merge_tensors([b, *parents]):
        values_b = b.role(layer, role)
        values_p = [p.role(layer, role) for p in parents]
        if values_b is None or any(v is None or v.shape != values_b.shape for v in values_p):
            skipped += 1
            continue
        fits.append(fit_tensor(layer, role, values_b, [v for v in values_p if v is not None]))
    return decide_merge(fits, names, skipped)


def decide_merge(fits: list[TensorFit], names: list[str], skipped: int = 0) -> MergeFit:
    """The decision from the tensors' fits (see the module docstring and the thresholds above)."""
    k = len(names)
    notes = []
    if skipped:
        notes.append(f"{skipped} tensors differ in shape between B and a parent: not fitted")
    evidence = [f for f in fits if f.evidence]
    copies = len(fits) - len(evidence)
    if copies:
        notes.append(f"{copies} of B's tensors are copies of one parent (a merge weight of 0 or 1 there)")
    if not evidence:
        reason = "no tensor of B differs from every parent with the same shape: nothing to test"
        if not fits:
            reason = "B and the parents share no tensor of the same role and shape: not a merge of them"
        return MergeFit(names, fits, False, reason, None, None, None, None, [], [], notes)
    positive = sum(1 for f in evidence if f.heldout_gain > 0)
    log10_p = binomial_upper_tail_log10(positive, len(evidence))
    p_value = 10.0**log10_p
    explained = float(np.median([f.explained for f in evidence]))
    weights = [float(np.median([f.weights[i] for f in evidence])) for i in range(k)]
    shares = [
        float(np.mean([abs(f.weights[i]) / max(sum(abs(w) for w in f.weights), 1e-300) for f in evidence]))
        for i in range(k)
    ]
    carrying = [i for i in range(k) if shares[i] >= MERGE_MIN_SHARE]
    methods = Counter(f.method for f in evidence)
    distinguishable = [f for f in evidence if f.method == "slerp" or _separable(f)]
    if k == 2 and distinguishable:
        method = Counter(f.method for f in distinguishable).most_common(1)[0][0]
    else:
        method = "linear"
        if k == 2 and methods:
            notes.append(
                "the parents' tensors are nearly parallel: SLERP and linear give the same weights "
                "there (SLERP falls back to linear), so the method is called linear"
            )
    fractions = [f.sparse_fraction for f in evidence if f.sparse_fraction is not None]
    sparse_fraction = float(np.median(fractions)) if fractions else None
    sparse_base = None
    if sparse_fraction is not None and sparse_fraction >= SPARSE_MIN_FRACTION:
        sparse_base = Counter(f.sparse_parent for f in evidence if f.sparse_parent is not None).most_common(
            1
        )[0][0]
        method = "sparse"
        notes.append(
            f"where the parents differ, B holds {sparse_fraction:.0%} of {names[sparse_base]}'s values exactly "
            "(median over tensors): sparse deltas over that base, as TIES or DARE leave them; the linear "
            "weights are then only an approximation"
        )
    closeness = None
    if sparse_base is not None:
        known = [f.base_closeness for f in evidence if f.sparse_parent == sparse_base]
        values = [v for v in known if v is not None]
        closeness = float(np.median(values)) if values else None
    # A sparse reading is exempt from the common-ancestor rule only over a base of the others.
    over_a_base = closeness is not None and closeness <= SPARSE_BASE_MAX_CLOSENESS
    heldout = f"the merge predicts held-out rows better than the best single parent in {positive} of {len(evidence)} tensors"
    beyond = [
        (f.explained - f.ancestor) / max(1.0 - f.ancestor, 1e-12)
        for f in evidence
        if f.explained is not None and f.ancestor is not None
    ]
    beyond_ancestor = float(np.median(beyond)) if beyond else None

    def answer(merged: bool, reason: str) -> MergeFit:
        return MergeFit(
            names,
            fits,
            merged,
            reason,
            method if merged else None,
            p_value,
            log10_p,
            explained,
            weights,
            shares,
            notes,
            sparse_fraction,
            sparse_base,
            beyond_ancestor,
            closeness,
        )

    if log10_p > math.log10(MERGE_P):
        return answer(False, f"not a merge: {heldout} (p = {p_value:.2g}, no better than chance)")
    if explained < MERGE_MIN_EXPLAINED:
        return answer(
            False,
            f"not a merge: the other parents explain only {explained:.0%} of what B's best single parent "
            f"leaves (a merge explains at least {MERGE_MIN_EXPLAINED:.0%}); they are related to B's change, "
            "as a sibling fine-tune is",
        )
    if not over_a_base and beyond_ancestor is not None and beyond_ancestor < MERGE_MIN_BEYOND_ANCESTOR:
        sparse_note = ""
        if sparse_base is not None:
            shown = "unknown" if closeness is None else f"{closeness:.2f}"
            sparse_note = (
                f"B holds many of {names[sparse_base]}'s values exactly, as a TIES/DARE merge holds its base's, "
                "but not where the other candidates are close to it, as TIES does (closeness "
                f"{shown}; a TIES base's is about 0.4, at most {SPARSE_BASE_MAX_CLOSENESS}); "
            )
        return answer(
            False,
            f"not a merge: {sparse_note}B may be the candidates' common ancestor; if it were, with their changes from it "
            f"uncorrelated, the candidates' weighted mean would already explain what this fit explains "
            f"({explained:.0%}), and the fit explains only {max(beyond_ancestor, 0.0):.0%} of what that account "
            f"leaves (a merge explains at least {MERGE_MIN_BEYOND_ANCESTOR:.0%})",
        )
    if len(carrying) < 2:
        return answer(
            False, f"not a merge: only {names[carrying[0]] if carrying else 'no parent'} carries weight"
        )
    kind = f"sparse (TIES/DARE-like, over {names[sparse_base]})" if sparse_base is not None else method
    return answer(
        True,
        f"B is a {kind} merge of {len(carrying)} parents: {heldout} (p for 'B owes nothing to a second "
        f"parent' {p_value:.2g}); the merge explains {explained:.1%} of what the best single parent leaves",
    )


def _separable(fit: TensorFit) -> bool:
    """Whether SLERP and linear would give different weights for this tensor."""
    if fit.slerp_t is None or fit.angle_degrees is None:
        return False
    theta = math.radians(fit.angle_degrees)
    if theta < 1e-9:
        return False
    t = fit.slerp_t
    return (
        abs((math.sin((1 - t) * theta) + math.sin(t * theta)) / math.sin(theta) - 1.0) >= SLERP_MIN_SEPARATION
    )


def merge_hint(derived: list[str]) -> str:
    """`search`'s note when the suspect derives from several library entries: a fingerprint holds
    sketches, not the weights a merge fit needs, so the test is only suggested."""
    shown = ", ".join(derived[:3])
    return (
        f"derived from {len(derived)} library entries ({shown}): B may be a merge of them, or they may "
        "descend from one another; with their weights at hand, `unshell compare B --against A1 "
        "--against A2` tests a merge"
    )


# --- the library call --------------------------------------------------------------------------


def compare_merge(
    b: str | os.PathLike[str],
    parents: list[str | os.PathLike[str]],
    *,
    quick: bool = False,
    progress: ProgressReporter | None = None,
) -> MergeResult:
    """Is B a merge of the candidate parents? Compares B with each parent (as `compare`) and fits
    B's tensors on the parents' (linear and SLERP, per tensor). Needs at least two parents of B's
    shapes for the merge test; each parent's pairwise result is returned beside it, with
    ``merged`` in its ``how`` when B is a merge that gives it weight.

    Named ``compare_merge`` rather than ``test_merge`` so that importing it into a test module
    does not make pytest collect it.

    Example:
        >>> import unshell
        >>> result = unshell.compare_merge("merged", ["parent1", "parent2"])  # doctest: +SKIP
        >>> result.merged, result.fit.weights
    """
    from ..formats import open_checkpoint
    from ..progress import reporting

    if len(parents) < 2:
        raise UsageError("a merge test needs at least two candidate parents (--against A1 --against A2)")
    paths = [str(Path(p)) for p in parents]
    with reporting(progress), ExitStack() as stack:
        checkpoint_b: Checkpoint = stack.enter_context(open_checkpoint(b))
        checkpoints = [stack.enter_context(open_checkpoint(p)) for p in parents]
        pairwise = [
            compare_checkpoints(c, checkpoint_b, quick=quick, path_a=path, path_b=str(Path(b)))
            for c, path in zip(checkpoints, paths, strict=True)
        ]
        models = [canonical_model(c, r.inspect_a) for c, r in zip(checkpoints, pairwise, strict=True)]
        model_b = canonical_model(checkpoint_b, pairwise[0].inspect_b)
        fit = fit_merge(model_b, models, paths)
    if fit.merged:
        for i, result in enumerate(pairwise):
            if (
                fit.shares[i] >= MERGE_MIN_SHARE
                and result.verdict == "derived"
                and MERGE_HOW not in result.how
            ):
                result.how.append(MERGE_HOW)
    return MergeResult(str(Path(b)), paths, pairwise, fit)
