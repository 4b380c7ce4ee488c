"""How much of a derivative is new: every tensor of B against its counterpart in A.

`compare` says *whether* B's weights came from A's; this module says *what was done to them*,
tensor by tensor, so a report can tell a renamed copy from a requantization, a LoRA, a full
fine-tune and a long continued pretraining:

* ``copied``: the same values (a rename, a reshard, an F32 re-export).
* ``requantized``: the difference is what storing the same weights at lower precision makes, and
  nothing more (`explained_by_rounding`). A quantized block (GGUF Q4_K, Q8_0, ... : 16 to 32 values
  along a row) holds the values of an affine grid ``m + d * q``; a requantized or dequantized copy
  is the other side's values rounded to the nearest point of that grid, so its error is bounded
  by half a grid step of its block. A bf16 or f16 cast rounds each value to 8 or 11 significant
  bits. Training moves values across grid points and past those bounds; a change smaller than a
  coarse grid's step, made to a dequantized model's values, stays inside the cells but gathers at
  their points, where values that were rounded onto the grid lie anywhere in them
  (`ROUNDING_SPREAD`): that is a change too.
* ``fine-tuned``: changed beyond rounding. The change's relative size ``||B - A|| / ||A||`` and
  whether it is low-rank (a merged LoRA concentrates its singular values in a few directions) or
  full-rank are kept.
* ``new``: no counterpart in A (rows of an extended vocabulary, a layer with no source).

Tensors are compared in stored order, with the residual alignment `compare` found applied (a
rotated or permuted stream is undone); a tensor whose rows no longer line up (permuted neurons) is
``not compared``. The magnitude is calibrated against training effort measured in the lineage zoo
(`EFFORT_CALIBRATION`). Each pair of matrices is measured a block of rows at a time, large stored
ones read by rows (`Rows`), so the account's memory stays a few blocks whatever the model's size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..formats.base import Checkpoint
from ..progress import BYTES, stage
from ..threads import map_in_order
from .canonical import READS_RESIDUAL, WRITES_RESIDUAL, CanonicalModel
from .sketch import Alignment, finite, off_identity

COPIED, REQUANTIZED, FINETUNED, NEW, NOT_COMPARED = (
    "copied",
    "requantized",
    "fine-tuned",
    "new",
    "not compared",
)
KINDS = (COPIED, REQUANTIZED, FINETUNED, NEW)
COMPONENTS = ("embeddings", "attention", "ffn", "norms", "other", "added layers", "added vocabulary")

# A grid is looked for in blocks of this many consecutive values along a row: the smallest block
# with one scale in every GGML type (Q2_K, Q3_K and Q6_K scale sub-blocks of 16; the others 32).
GRID_BLOCK = 16
# A block is a grid when every gap between its sorted distinct values is a whole number of steps,
# within this fraction of a step (a bf16-stored grid of up to 32 levels stays within 1/16).
GRID_TOLERANCE = 0.1
# The step is the smallest gap divided by 1..this (the smallest gap of 16 values drawn from a
# 255-level Q8_0 grid is a few steps).
GRID_MAX_DIVISOR = 16
# A step that divides every gap within this fraction of itself fits exactly (a dequantizer's
# float32 arithmetic stays near 1e-5). An exact fit wins over one within `GRID_TOLERANCE`, so a
# fine grid holding the image of a coarse one (Q8_0 values of a Q4_1 block: gaps of 15 and 16
# steps, which a step of 15.4 fits within 0.07) gets its own step.
GRID_EXACT = 0.01
# Steps tried exactly besides the smallest gap: the smallest difference between two of a block's
# gaps (Euclid's first step: 16 - 15 = 1 step of the image above) divided by 1 to this.
GRID_DIFFERENCE_DIVISORS = 4
# A tensor is requantized when at least this fraction of its sampled values are the other side's,
# rounded to the nearest point of the grid (ties and float rounding of the scale flip a few):
# pure quantization explains 99.98 % or more, while a tenth of the zoo's lightest fine-tune
# (relative change 0.008) explains at most 0.986 under Q4_0 and 0.79 under Q8_0
# (benchmarks/RESULTS.md, "Value added").
EXPLAINED_FRACTION = 0.99
# A stored f16 scale is within this relative distance of the one the values were rounded with.
SCALE_ROUNDING = 2.0**-10
# Rounding does not know the grid it rounds onto: the values a grid was rounded from lie anywhere in
# their cells, about half of them (0.45 to 0.49 measured: Gaussian and SmolLM2-135M weights under
# Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q4_K) more than a quarter step from the grid point. A change
# smaller than half a step made to the grid's own values (a light fine-tune of a dequantized Q4
# model) keeps them near the points: SmolLM2's Q4_1 weights plus Gaussian noise of 1 % and 3 % of
# their std leave 0.000 and 0.033 there; the largest Gaussian change that 99 % of values survive
# (0.19 step RMS) about 0.20. A one-way grid explanation needs at least this share
# (`rounding_spread`); a change that stays inside the grid's cells is not rounding.
ROUNDING_SPREAD = 0.3
# The spread is read on the values that differ, when there are this many (fewer: nothing to read).
SPREAD_MIN_VALUES = 64
# Blocks looked at first: a fine-tuned tensor shows there (far below `EXPLAINED_FRACTION`).
GRID_FIRST_LOOK = 256
# Values sampled per tensor for the rounding tests (a 16 x 16,384 sample: ample to tell 99 % from 90 %).
SAMPLE_VALUES = 1 << 18
# Float casts: bf16 keeps 8 significant bits (relative rounding 2^-9), f16 11 (2^-12); a cast of a
# value is within this relative distance of it (one unit in the last place covers both directions).
CAST_RELATIVE = 2.0**-8
HALF_PRECISION_HEAD = 4096  # values a 16-bit test looks at before all of them
F16_SUBNORMAL = 2.0**-24  # f16 spacing below its normal range: the absolute rounding of tiny values
# A merged LoRA of rank r changes a matrix in exactly r directions: they hold all of the change
# (bf16 rounding of the merged weights leaves well under 1 % outside); a full fine-tune spreads it.
LOW_RANK_ENERGY = 0.99  # the share of ||B - A||^2 the leading singular values must hold ...
LOW_RANK_MAX = 64  # ... within at most this many directions, and ...
LOW_RANK_MAX_SHARE = 0.125  # ... in at most this share of the tensor's smaller dimension.
SVD_SKETCH = 48  # columns of the randomized range finder for large tensors
EXACT_RANK_MAX = 512  # a change whose smaller side is at most this gets exact singular values
# Before the range finder (six products with the change), a random sketch of `SVD_SKETCH` + this
# many columns (`screen_product`), made in the pass that measures the change, screens out a change
# spread over many directions: its trailing directions then hold more than `SCREEN_TAIL` of the
# sketch's energy, which a change with `LOW_RANK_ENERGY` of its energy in `SVD_SKETCH` directions
# does not come near (`_spread`).
SCREEN_COLUMNS = 16
SCREEN_TAIL = 0.05
# Changes are measured a block of rows at a time, of about this many values: a block of each side
# and of their difference stay in the caches, and no whole (let alone float64) copy is made.
BLOCK_VALUES = 1 << 18
# A stored matrix of more values than this is read a block of rows at a time where its storage
# allows (`Checkpoint.row_bytes`), never whole.
STREAM_ABOVE = 1 << 22
RELEASE_BYTES = 1 << 24  # ... and the file pages behind its blocks are released every this many bytes
SCATTERED_ROWS = 8  # rows sampled far apart are read this many at a time (`StoredRows.take`)
# The rotary layout of query and key rows is told on this many evenly spaced rows (the right layout
# agrees near 1, the others near 0); the agreement is then taken once, on every row.
LAYOUT_SAMPLE_ROWS = 256
# `compare` calls a residual alignment farther than this from the identity (RMS per dimension) a
# transformed stream ("obfuscated"); nearer, the stream is taken as stored.
OBFUSCATED_OFF_IDENTITY = 0.5
# Rows whose median cosine with A's is below this no longer line up (neurons permuted): not compared.
ALIGNED_COSINE = 0.3
# Training effort. AdamW normalizes its update coordinate by coordinate, so a run moves each weight
# by about its learning rate per step whatever the layer's width or the weights' scale: the size of
# a change *per weight* (the RMS of B - A over a matrix, `rms_change`) is what a given effort makes
# at any width, while the relative change ||B - A|| / ||A|| divides it by the weights' own scale,
# which training sets (stories260K's weights have an RMS of 0.169, the zoo's 0.045: its continued
# pretraining, at 3/4 of the zoo's effort, moved each layer weight nearly as far, 0.049 against
# 0.055, but reads 0.42 relative against 0.99). The effort is the run's learning-rate
# integral (the sum of its per-step rates: steps x rate for a constant rate, about 0.55 x steps x
# peak rate for the zoo's cosine schedule with warmup). Measured on the zoo's 128-wide, 4-layer
# Llama models (tools/zoo.py, zoo.json): base-s0's fine-tune (150 steps at 2e-4, cosine), its
# pruned-depth healing (150 at 6e-4) and its continued pretraining (400 at 4e-3, constant): the
# median `rms_change` of the fine-tuned layer matrices against the integral. Checked where it was
# not made, at widths 64 and 256 (tools/zoo_widths.py) and on stories260K's derivatives: within a
# factor of 3 (benchmarks/RESULTS.md, "Effort across widths").
EFFORT_CALIBRATION: tuple[tuple[float, float], ...] = (
    (0.002591, 0.01659),
    (0.00482, 0.04977),
    (0.05499, 1.542),
)
REFERENCE_LR = 2e-4  # the zoo's fine-tuning rate: effort is said as steps at this rate
# A training run whose effort (learning-rate integral) reaches this is continued pretraining, not a
# fine-tune: the zoo's and stories260K's fine-tunes sit at 0.017 to 0.17, their continued
# pretraining at 1.2 to 1.5. (A typical published fine-tune, 1,000 to 3,000 steps at 1e-5 to 2e-5,
# integrates to 0.01 to 0.06; a continued pretraining of billions of tokens to several.)
CONTINUED_PRETRAINING_EFFORT = 0.4
# Words for the size of a full-rank change, by its effort (learning-rate integral).
MAGNITUDE_WORDS: tuple[tuple[float, str], ...] = (
    (0.004, "a very light"),
    (0.1, "a light"),
    (CONTINUED_PRETRAINING_EFFORT, "a substantial"),
    (math.inf, "a heavy (continued-pretraining scale)"),
)
# The layer matrices' change tells the effort: an embedding moves further when the new data uses
# other tokens (stories260K's on Python text: 3.5 times its layers' change), a norm gain less.
EFFORT_COMPONENTS = ("attention", "ffn", "added layers")


# How a summary names the components where new tensors lie.
NEW_WHERE = {"ffn": "the FFN", "other": "other tensors, such as routers", "attention": "the attention"}


@dataclass
class TensorChange:
    """One of B's tensors against its counterpart in A."""

    name: str
    component: str
    layer_b: int | None
    layer_a: int | None
    parameters: int
    kind: str
    shape: tuple[int, ...] = ()
    norm_a: float = 0.0  # ||A||, to pool relative changes over several tensors
    relative_change: float | None = None
    # Fine-tuned matrices: how many directions hold `LOW_RANK_ENERGY` of the change (None: more
    # than were computed), and whether that makes it low-rank.
    rank: int | None = None
    low_rank: bool | None = None
    # Requantized: what explains the difference ("grid of B", "grid of A", "bf16/f16 cast").
    explained_by: str | None = None

    @property
    def rms_change(self) -> float | None:
        """The RMS of B - A over the tensor: how far training moved each weight."""
        if self.relative_change is None or not self.parameters:
            return None
        return self.relative_change * self.norm_a / math.sqrt(self.parameters)

    @property
    def degrees_of_freedom(self) -> float:
        """How many numbers the change needs: the whole tensor, or rank x (rows + columns) for a
        low-rank change."""
        if self.kind == NEW:
            return float(self.parameters)
        if self.kind != FINETUNED:
            return 0.0
        if not self.low_rank or self.rank is None or len(self.shape) != 2:
            return float(self.parameters)
        return float(min(self.parameters, self.rank * (self.shape[0] + self.shape[1])))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "component": self.component,
            "layer_b": self.layer_b,
            "layer_a": self.layer_a,
            "parameters": self.parameters,
            "kind": self.kind,
            "relative_change": None if self.relative_change is None else round(self.relative_change, 6),
            "rms_change": _significant(self.rms_change),
            "rank": self.rank,
            "low_rank": self.low_rank,
            "explained_by": self.explained_by,
        }


@dataclass
class ValueAdded:
    """What B adds to A, from `assess`: per tensor, per component and per layer."""

    tensors: list[TensorChange] = field(default_factory=list)
    note: str | None = None

    @property
    def parameters(self) -> int:
        return sum(t.parameters for t in self.tensors)

    def fractions(self) -> dict[str, float]:
        """The fraction of B's parameters of each kind (``not compared`` when some were not)."""
        total = self.parameters or 1
        out = {kind: sum(t.parameters for t in self.tensors if t.kind == kind) / total for kind in KINDS}
        skipped = sum(t.parameters for t in self.tensors if t.kind == NOT_COMPARED)
        if skipped:
            out[NOT_COMPARED] = skipped / total
        return out

    @property
    def trained_change(self) -> float | None:
        """||B - A|| / ||A|| over the fine-tuned tensors (None when none was)."""
        tuned = [t for t in self.tensors if t.kind == FINETUNED and t.relative_change is not None]
        return _pooled(tuned)

    @property
    def score(self) -> float:
        """The share of B that is new information: every new parameter counts 1; a fine-tuned
        tensor counts its change's degrees of freedom (all its parameters, or rank x (rows +
        columns) for a low-rank change) times its relative change, capped at 1 (a rewrite). A
        copy or a requantization scores 0."""
        total = self.parameters
        if not total:
            return 0.0
        new = 0.0
        for t in self.tensors:
            if t.kind == NEW:
                new += t.parameters
            elif t.kind == FINETUNED and t.relative_change is not None:
                new += t.degrees_of_freedom * min(1.0, t.relative_change)
        return new / total

    def order_key(self) -> tuple[float, float]:
        """Orders derivatives by how much is new: the score, then (at equal score, as between a
        rename and a requantization, which add nothing) the share re-encoded at lower precision."""
        return (round(self.score, 9), self.fractions()[REQUANTIZED])

    def components(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in COMPONENTS:
            members = [t for t in self.tensors if t.component == name]
            if not members:
                continue
            parameters = sum(t.parameters for t in members)
            kinds = {k: sum(t.parameters for t in members if t.kind == k) / parameters for k in KINDS}
            tuned = [t for t in members if t.kind == FINETUNED]
            out[name] = {
                "parameters": parameters,
                "kinds": {k: round(v, 6) for k, v in kinds.items() if v},
                "relative_change": _rounded(_pooled([t for t in members if t.relative_change is not None])),
                "low_rank": None if not tuned else all(bool(t.low_rank) for t in tuned),
                "rank": None
                if not tuned or not all(t.low_rank for t in tuned)
                else max(t.rank or 0 for t in tuned),
            }
        return out

    def per_layer(self) -> list[dict[str, Any]]:
        """B's layers in order: their relative change from their source layer in A, and the kind
        that holds most of their parameters."""
        layers = sorted({t.layer_b for t in self.tensors if t.layer_b is not None})
        rows = []
        for layer in layers:
            members = [t for t in self.tensors if t.layer_b == layer]
            weights: dict[str, int] = {}
            for t in members:
                weights[t.kind] = weights.get(t.kind, 0) + t.parameters
            rows.append(
                {
                    "layer_b": layer,
                    "layer_a": next((t.layer_a for t in members if t.layer_a is not None), None),
                    "relative_change": _rounded(
                        _pooled([t for t in members if t.relative_change is not None])
                    ),
                    "kind": max(weights, key=lambda k: weights[k]),
                }
            )
        return rows

    def rms_change(self) -> float | None:
        """How far training moved each weight: the median RMS of B - A over the full-rank
        fine-tuned layer matrices (`EFFORT_COMPONENTS`; any full-rank fine-tuned matrix when no
        layer matrix was)."""
        full = [t for t in self.tensors if t.kind == FINETUNED and not t.low_rank and len(t.shape) == 2]
        layer = [t for t in full if t.component in EFFORT_COMPONENTS] or full
        shifts = [s for s in (t.rms_change for t in layer) if s is not None and s > 0]
        return float(np.median(shifts)) if shifts else None

    def effort(self) -> dict[str, Any] | None:
        """The training effort (learning-rate integral) that moves weights this far in the lineage
        zoo (`EFFORT_CALIBRATION`), with the full-rank change it was read from."""
        shift = self.rms_change()
        if shift is None:
            return None
        integral = _interpolate_effort(shift)
        full = [t for t in self.tensors if t.kind == FINETUNED and not t.low_rank]
        return {
            "rms_change": _significant(shift),
            "relative_change": _rounded(_pooled(full)),
            "lr_integral": _significant(integral),
            "steps_at_reference_lr": round(integral / REFERENCE_LR),
            "reference_lr": REFERENCE_LR,
            "continued_pretraining": integral >= CONTINUED_PRETRAINING_EFFORT,
            "basis": "lineage zoo: Llama models trained with AdamW (tools/zoo.py); within a factor "
            "of 3 at widths 64 to 256 and on stories260K",
        }

    def summary(self) -> str:
        """One sentence: what is new in B, in plain words."""
        parts: list[str] = []
        tuned = [t for t in self.tensors if t.kind == FINETUNED]
        effort = self.effort()
        full = [t for t in tuned if not t.low_rank]
        low = [t for t in tuned if t.low_rank]
        if full and effort is not None:
            word = next(w for bound, w in MAGNITUDE_WORDS if effort["lr_integral"] < bound)
            where = _component_list(t.component for t in full)
            parts.append(
                f"{word} fine-tune of {where} (relative change {effort['relative_change']:.3g}, each "
                f"weight moved by {effort['rms_change']:.2g} RMS: comparable to about "
                f"{effort['steps_at_reference_lr']:,} steps at learning rate {REFERENCE_LR:g} in our zoo)"
            )
        if low:
            rank = max(t.rank or 0 for t in low)
            parts.append(
                f"a low-rank (LoRA-like, rank <= {rank}) change of {_component_list(t.component for t in low)}"
                f" (relative change {_pooled(low) or 0:.3g})"
            )
        fractions = self.fractions()
        if fractions[REQUANTIZED] > 0:
            parts.append(f"{fractions[REQUANTIZED]:.0%} of parameters requantized (rounding only)")
        new_vocab = sum(t.parameters for t in self.tensors if t.component == "added vocabulary")
        if new_vocab:
            base_rows = sum(
                t.parameters for t in self.tensors if t.component == "embeddings" and t.kind != NEW
            )
            share = new_vocab / base_rows if base_rows else 1.0
            parts.append(f"vocabulary extended by about {share:.0%}")
        added = {t.layer_b for t in self.tensors if t.component == "added layers"}
        if added:
            parts.append(f"{len(added)} layer(s) added")
        # New tensors elsewhere: an MoE's routers, the re-initialized neurons of its experts.
        new_elsewhere = [
            t
            for t in self.tensors
            if t.kind == NEW and t.component not in ("added vocabulary", "added layers")
        ]
        if new_elsewhere:
            share = sum(t.parameters for t in new_elsewhere) / (self.parameters or 1)
            places = sorted({t.component for t in new_elsewhere}, key=COMPONENTS.index)
            parts.append(
                f"{share:.1%} of parameters new (in {', '.join(NEW_WHERE.get(c, c) for c in places)})"
            )
        skipped = fractions.get(NOT_COMPARED, 0.0)
        if not tuned and not new_vocab and not added and not new_elsewhere:
            found = "nothing new" if skipped < 0.01 else f"nothing new in the {1 - skipped:.0%} compared"
            return f"{found}: " + (parts[0] if parts else "every compared value is a copy of A's")
        if skipped >= 0.01:  # then "nothing else" cannot be said
            parts.append(
                f"{skipped:.0%} of parameters not compared (other shapes, or rows that no longer line up)"
            )
            return "; ".join(parts)
        return "; ".join(parts) + ", nothing else new"

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "score": round(self.score, 6),
            "fractions": {k: round(v, 6) for k, v in self.fractions().items()},
            "trained_change": _rounded(self.trained_change),
            "effort": self.effort(),
            "components": self.components(),
            "layers": self.per_layer(),
            "tensors": [t.to_dict() for t in self.tensors],
            "note": self.note,
        }


def copied_everywhere(parameters: int) -> ValueAdded:
    """The value added of an identical copy (every value equal): nothing."""
    return ValueAdded([TensorChange("(all tensors)", "other", None, None, parameters, COPIED)])


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _significant(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


def _pooled(tensors: Sequence[TensorChange]) -> float | None:
    """||B - A|| / ||A|| over several tensors, from each one's relative change and size."""
    if not tensors:
        return None
    total = sum(t.norm_a**2 for t in tensors)
    if not total:
        return None
    return math.sqrt(sum((t.norm_a * (t.relative_change or 0.0)) ** 2 for t in tensors) / total)


def _interpolate_effort(change: float) -> float:
    """The learning-rate integral for an RMS change per weight, log-log interpolated in `EFFORT_CALIBRATION`
    (extrapolated along the end segments)."""
    points = EFFORT_CALIBRATION
    xs = [math.log(c) for c, _ in points]
    ys = [math.log(e) for _, e in points]
    x = math.log(change)
    index = 1
    while index < len(xs) - 1 and x > xs[index]:
        index += 1
    x0, x1, y0, y1 = xs[index - 1], xs[index], ys[index - 1], ys[index]
    return math.exp(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


def _component_list(components: Iterable[str]) -> str:
    names = sorted(set(components), key=COMPONENTS.index)
    shown = {
        "ffn": "the FFN",
        "attention": "the attention",
        "embeddings": "the embeddings",
        "norms": "the norms",
    }
    words = [shown.get(n, f"the {n}") for n in names]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def component_of(role: str, layer: int | None) -> str:
    if role in ("embed.weight", "lm_head.weight"):
        return "embeddings"
    if "norm" in role:
        return "norms"
    if role.startswith("attn."):
        return "attention"
    if role.startswith("mlp."):
        return "ffn"
    return "other"


# --- the rounding tests -------------------------------------------------------------------------


def sample_rows(rows: int, size: int) -> np.ndarray:
    """The evenly spaced rows the rounding tests look at, of a tensor of ``rows`` rows (its first
    axis) holding ``size`` values in all."""
    return np.arange(0, rows, max(1, size // SAMPLE_VALUES))


def sample_blocks(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same evenly spaced rows of both, as blocks of `GRID_BLOCK` values (whole rows are kept:
    a block must not straddle two of a quantizer's blocks)."""
    a2 = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
    b2 = b.reshape(b.shape[0], -1) if b.ndim > 1 else b.reshape(1, -1)
    index = sample_rows(a2.shape[0], a2.size)
    return _as_blocks(a2[index], b2[index])


def _as_blocks(a2: np.ndarray, b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = a2.shape[1] - a2.shape[1] % GRID_BLOCK
    return a2[:, :width].reshape(-1, GRID_BLOCK), b2[:, :width].reshape(-1, GRID_BLOCK)


def grid_steps(blocks: np.ndarray) -> np.ndarray:
    """Each block's grid step (NaN where its values are not on an affine grid, 0 for a constant
    block): the largest step of the form smallest-gap / k (k <= `GRID_MAX_DIVISOR`) that divides
    every gap between its sorted distinct values."""
    ordered = np.sort(blocks, axis=1)
    gaps = np.diff(ordered, axis=1).astype(np.float64)
    scale = np.maximum(np.abs(ordered[:, -1:]), np.abs(ordered[:, :1])).astype(np.float64)
    positive = gaps > scale * 1e-6
    smallest = np.where(positive, gaps, np.inf).min(axis=1)
    steps = np.full(blocks.shape[0], np.nan)
    steps[~np.isfinite(smallest)] = 0.0
    pending = np.isfinite(smallest)
    # The smallest gap settles nearly every block of a grid read as stored. A block it does not
    # fit exactly tries the smallest difference between two of its gaps (and its halves, thirds,
    # quarters): a fine grid holding a coarse grid's image. A block left takes the first step of
    # the form smallest gap / k that fits within `GRID_TOLERANCE` (a grid stored in bf16, off by
    # its rounding), if any.
    _fit_first(steps, pending, gaps, positive, smallest[:, None], GRID_EXACT)
    if pending.any():
        differences = np.full(len(blocks), np.inf)
        differences[pending] = _smallest_gap_difference(gaps[pending], positive[pending], smallest[pending])
        divided = differences[:, None] / np.arange(1, GRID_DIFFERENCE_DIVISORS + 1)[None, :]
        _fit_first(steps, pending, gaps, positive, divided, GRID_EXACT)
    if pending.any():
        divided = smallest[:, None] / np.arange(1, GRID_MAX_DIVISOR + 1)[None, :]
        _fit_first(steps, pending, gaps, positive, divided, GRID_TOLERANCE)
    return steps


def _smallest_gap_difference(gaps: np.ndarray, positive: np.ndarray, smallest: np.ndarray) -> np.ndarray:
    """Per block, the smallest positive difference between two of its gaps (inf where none)."""
    ordered = np.sort(np.where(positive, gaps, np.inf), axis=1)
    with np.errstate(invalid="ignore"):
        differences = np.diff(ordered, axis=1)
    real = np.isfinite(differences) & (differences > smallest[:, None] * 1e-3)
    return np.where(real, differences, np.inf).min(axis=1)


def _fit_first(
    steps: np.ndarray,
    pending: np.ndarray,
    gaps: np.ndarray,
    positive: np.ndarray,
    candidates: np.ndarray,
    tolerance: float,
) -> None:
    """For each pending block, the first of its ``candidates`` (blocks x candidate steps) that
    divides all of its gaps within ``tolerance`` of a step: it goes into ``steps``, and the block
    is no longer pending."""
    for chunk in np.array_split(np.flatnonzero(pending), max(1, int(pending.sum()) // 4096 + 1)):
        if not chunk.size:
            continue
        step = candidates[chunk]
        usable = np.isfinite(step) & (step > 0)
        safe = np.where(usable, step, 1.0)
        ratio = gaps[chunk][:, None, :] / safe[:, :, None]
        off = np.abs(ratio - np.round(ratio))
        fits = usable & np.all(np.where(positive[chunk][:, None, :], off < tolerance, True), axis=2)
        found = fits.any(axis=1)
        first = np.argmax(fits, axis=1)
        rows = chunk[found]
        steps[rows] = step[found, first[found]]
        pending[rows] = False


def explained_by_grid(grid: np.ndarray, other: np.ndarray) -> float:
    """The fraction of ``grid``'s values that are ``other``'s rounded to the nearest point of the
    grid their block lies on (0 when the blocks are not grids). A first look at `GRID_FIRST_LOOK`
    blocks settles most fine-tuned tensors (far below `EXPLAINED_FRACTION`) at a fraction of the cost."""
    return grid_fit(grid, other)[0]


def grid_fit(grid: np.ndarray, other: np.ndarray) -> tuple[float, float | None]:
    """`explained_by_grid`, and `rounding_spread` of the values it explains (None when it was not
    read: a first look settled the fraction, or too few values differ)."""
    if grid.shape[0] > 2 * GRID_FIRST_LOOK:
        first, _ = _explained(
            grid[:: grid.shape[0] // GRID_FIRST_LOOK], other[:: grid.shape[0] // GRID_FIRST_LOOK]
        )
        if first < EXPLAINED_FRACTION - 0.05:
            return first, None
    return _explained(grid, other)


def _explained(grid: np.ndarray, other: np.ndarray) -> tuple[float, float | None]:
    steps = grid_steps(grid)
    usable = np.isfinite(steps) & (steps > 0)
    if not usable.any():
        return 0.0, None
    g, o, d = grid[usable].astype(np.float64), other[usable].astype(np.float64), steps[usable][:, None]
    low, high = g.min(axis=1, keepdims=True), g.max(axis=1, keepdims=True)
    predicted = np.clip(low + d * np.round((o - low) / d), low, high)
    # ggml quantizes with the exact scale and stores it in f16 (llama.cpp's quantize_row_q8_0 and
    # gguf-py alike): a value near the middle of a cell can land on the point next to the nearest
    # one, within half a step plus the scale's f16 rounding (0.7 % of Q8_0's values).
    matched = (np.abs(predicted - g) < d / 4) | (np.abs(o - g) <= d / 2 + np.abs(g) * SCALE_ROUNDING)
    # Blocks that are not grids count as unexplained.
    fraction = float(matched.sum()) / float(grid.size)
    return fraction, rounding_spread(g, o, d, matched)


def rounding_spread(
    grid: np.ndarray, other: np.ndarray, steps: np.ndarray, matched: np.ndarray
) -> float | None:
    """Of the matched values where ``other`` differs from ``grid`` (blocks of values with their
    steps), the share more than a quarter step from the grid point: about half for rounding, near
    none for a small change made to the grid's values (`ROUNDING_SPREAD`). None below
    `SPREAD_MIN_VALUES` such values."""
    differ = matched & (other != grid)
    count = int(differ.sum())
    if count < SPREAD_MIN_VALUES:
        return None
    offsets = np.abs(other - grid) / np.broadcast_to(steps, grid.shape)
    return float(np.count_nonzero(offsets[differ] > 0.25)) / count


def _half_precision(values: np.ndarray) -> bool:
    """Whether every value is a bf16 (the low 16 bits of its float32 are zero) or an f16 value."""
    values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    bits = values.view(np.uint32)
    # The first values usually settle it (one that is neither makes the answer False) cheaply.
    if not np.any(bits[:HALF_PRECISION_HEAD] & 0xFFFF) and not np.any(bits & 0xFFFF):
        return True
    with np.errstate(over="ignore"):
        for part in (values[:HALF_PRECISION_HEAD], values):
            if not np.array_equal(part.astype(np.float16).astype(np.float32), part):
                return False
    return True


def explained_by_rounding(a: np.ndarray, b: np.ndarray) -> str | None:
    """Why B's values differ from A's by rounding alone, or None if they differ by more: a float
    cast of one into the other's precision, or one side on a quantization grid that the other's
    values round onto."""
    return _rounding_reason(*sample_blocks(a, b))


def _rounding_reason(blocks_a: np.ndarray, blocks_b: np.ndarray) -> str | None:
    """`explained_by_rounding` of the sampled blocks."""
    if blocks_a.size == 0:
        return None
    bound = CAST_RELATIVE * np.maximum(np.abs(blocks_a), np.abs(blocks_b)) + F16_SUBNORMAL
    # A cast leaves one side holding only values its 16-bit type can hold; a light training step
    # that stays within the cast's bound does not.
    if (_half_precision(blocks_a) or _half_precision(blocks_b)) and np.all(
        np.abs(blocks_a - blocks_b) <= bound
    ):
        return "bf16/f16 cast"
    # One side's grid explains the other when it holds the other's values rounded (at least
    # `EXPLAINED_FRACTION` of them) and the other's values lie in its cells as rounded values do,
    # not gathered at the points (`ROUNDING_SPREAD`: a fine-tune smaller than the step of a
    # dequantized model's grid survives that grid's rounding). When each side's grid holds the
    # other's values rounded, the two are one set of values on two grids (a Q4_1 model and its
    # Q8_0 requantization, whose values sit near the Q4_1 points): rounding too.
    explained: list[str] = []
    for label, grid, other in (("grid of B", blocks_b, blocks_a), ("grid of A", blocks_a, blocks_b)):
        fraction, spread = grid_fit(grid, other)
        if fraction < EXPLAINED_FRACTION:
            continue
        if spread is None or spread >= ROUNDING_SPREAD:
            return label
        explained.append(label)
    # One-way and gathered at the grid's points: a change inside its cells, not rounding.
    return explained[0] if len(explained) == 2 else None


# --- matrices a block of rows at a time ---------------------------------------------------------


class Rows:
    """A tensor seen as a matrix (its first axis by the rest; a vector is one row) that is read a
    block of rows at a time, so that no statistic of a change needs a whole copy of it, let alone a
    float64 one: a 128k x 8192 embedding costs a few blocks of memory, not 4 GiB per side."""

    shape: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    @property
    def columns(self) -> int:
        return self.size // self.rows if self.rows else 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start`` to ``stop`` as a (stop - start) x `columns` matrix."""
        raise NotImplementedError

    def unchecked_block(self, start: int, stop: int) -> np.ndarray:
        """`block`, where a source that zeroes non-finite values may skip that check: for a caller
        that sums the block's squares anyway, and asks for `block` when a sum is not finite."""
        return self.block(start, stop)

    def take(self, index: np.ndarray) -> np.ndarray:
        """Some rows, in the order of ``index``."""
        raise NotImplementedError

    def head(self, rows: int) -> Rows:
        """The first ``rows`` rows."""
        raise NotImplementedError

    def whole(self) -> np.ndarray:
        """Every value, in the tensor's shape (for the small matrices that are transformed whole)."""
        return self.block(0, self.rows).reshape(self.shape)

    def close(self) -> None:
        """Give back what reading kept (a stored tensor's file pages)."""


class ArrayRows(Rows):
    """Rows of an array in memory."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.matrix = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)

    def block(self, start: int, stop: int) -> np.ndarray:
        return self.matrix[start:stop]

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.matrix[index]

    def head(self, rows: int) -> Rows:
        return ArrayRows(self.array[:rows])

    def whole(self) -> np.ndarray:
        return self.array


class StoredRows(Rows):
    """Rows of a stored tensor, decoded a block at a time (`Checkpoint.read_rows`), as float32 with
    non-finite values zeroed like `CanonicalModel.tensor`; the file pages behind the blocks read
    are released every `RELEASE_BYTES`, and all of them on `close`."""

    def __init__(self, checkpoint: Checkpoint, name: str, rows: int | None = None) -> None:
        self.checkpoint, self.name = checkpoint, name
        self.info = checkpoint.info(name)
        self.row_size = checkpoint.row_bytes(self.info) or 0
        stored = tuple(int(n) for n in self.info.shape)
        self.shape = (stored[0] if rows is None else rows, *stored[1:])
        self.kept_from = 0  # the first row whose pages may still be held
        self.taken = 0  # bytes spanned by `take` since the pages were last released

    def _values(self, rows: slice | np.ndarray, count: int, *, checked: bool = True) -> np.ndarray:
        values = np.asarray(self.checkpoint.read_rows(self.name, rows), dtype=np.float32).reshape(count, -1)
        # A finite sum has no NaN or infinity among its terms: one cheap reduction for the common case.
        return values if not checked or math.isfinite(float(values.sum())) else finite(values)

    def block(self, start: int, stop: int) -> np.ndarray:
        return self._block(start, stop, checked=True)

    def unchecked_block(self, start: int, stop: int) -> np.ndarray:
        return self._block(start, stop, checked=False)

    def _block(self, start: int, stop: int, *, checked: bool) -> np.ndarray:
        values = self._values(slice(start, stop), stop - start, checked=checked)
        self.kept_from = min(self.kept_from, start)  # a new pass starts again from the top
        if (stop - self.kept_from) * self.row_size >= RELEASE_BYTES:
            offset = self.info.offset + self.kept_from * self.row_size
            self.checkpoint.release(
                replace(self.info, offset=offset, nbytes=(stop - self.kept_from) * self.row_size)
            )
            self.kept_from = stop
        return values

    def take(self, index: np.ndarray) -> np.ndarray:
        # A scattered row faults in far more of the mapping than it holds (read-ahead, large
        # folios): scattered rows are read a few at a time, the pages released after each few.
        span = int(index.max()) - int(index.min()) + 1 if len(index) else 0
        if span * self.row_size <= RELEASE_BYTES:  # nearby rows (a block in another row order)
            values = self._values(index, len(index))
            self.taken += span * self.row_size
            if self.taken >= RELEASE_BYTES:
                self.close()
            return values
        parts = []
        for chunk in np.array_split(index, -(-len(index) // SCATTERED_ROWS)):
            parts.append(self._values(chunk, len(chunk)))
            self.close()
        return np.concatenate(parts)

    def head(self, rows: int) -> Rows:
        return StoredRows(self.checkpoint, self.name, rows)

    def close(self) -> None:
        self.checkpoint.release(self.info)
        self.kept_from = self.taken = 0


class _ReorderedRows(Rows):
    """Another source's rows in another order (A's query or key rows in the other rotary layout)."""

    def __init__(self, source: Rows, order: np.ndarray) -> None:
        self.source, self.order, self.shape = source, order, source.shape

    def block(self, start: int, stop: int) -> np.ndarray:
        return self.source.take(self.order[start:stop])

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.source.take(self.order[index])

    def close(self) -> None:
        self.source.close()


class _ReadingRows(Rows):
    """A matrix that reads the residual stream, in A's basis: each row times ``transform``."""

    def __init__(self, source: Rows, transform: np.ndarray) -> None:
        self.source, self.transform, self.shape = source, transform, source.shape

    def block(self, start: int, stop: int) -> np.ndarray:
        return self.source.block(start, stop) @ self.transform

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.source.take(index) @ self.transform

    def close(self) -> None:
        self.source.close()


def as_rows(values: np.ndarray | Rows) -> Rows:
    return values if isinstance(values, Rows) else ArrayRows(np.asarray(values))


def role_rows(model: CanonicalModel, layer: int | None, role: str) -> Rows | None:
    """The matrix of one role (as `CanonicalModel.role`), read a block of rows at a time when it is
    large (`STREAM_ABOVE`) and its storage can be decoded by rows; else read whole."""
    names = model.slots.get((layer, role))
    if names and len(names) == 1:
        info = model.checkpoint.info(names[0])
        if info.numel > STREAM_ABOVE and model.checkpoint.row_bytes(info) is not None:
            return StoredRows(model.checkpoint, names[0])
    matrix = model.role(layer, role)
    return None if matrix is None else ArrayRows(matrix)


def _spans(rows: int, columns: int) -> Iterator[tuple[int, int]]:
    step = max(1, BLOCK_VALUES // max(1, columns))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


class _Change:
    """B - A, a block of rows at a time (``a`` None: ``b`` is the change itself)."""

    def __init__(self, b: Rows, a: Rows | None = None) -> None:
        self.a, self.b = a, b

    @property
    def shape(self) -> tuple[int, ...]:
        return self.b.shape

    def blocks(self, dtype: Any = np.float32) -> Iterator[tuple[int, int, np.ndarray]]:
        for start, stop in _spans(self.b.rows, self.b.columns):
            b = self.b.block(start, stop)
            if self.a is None:
                yield start, stop, np.asarray(b, dtype=dtype)
            else:  # the difference of two float32 values is exact in float64
                yield start, stop, np.subtract(b, self.a.block(start, stop), dtype=dtype)

    def screened(self) -> np.ndarray:
        """`screen_product` of the whole change."""
        signs = _screen_signs(self.b.columns)
        return np.concatenate([screen_product(delta, signs) for _, _, delta in self.blocks()])

    def times(self, right: np.ndarray) -> np.ndarray:
        """Change @ right (float32 products)."""
        out = np.empty((self.b.rows, right.shape[1]), dtype=np.float32)
        right = np.asarray(right, dtype=np.float32)
        for start, stop, delta in self.blocks():
            np.matmul(delta, right, out=out[start:stop])
        return out

    def transposed_times(self, left: np.ndarray) -> np.ndarray:
        """Change.T @ left (float32 products of each block, summed in float64)."""
        out = np.zeros((self.b.columns, left.shape[1]), dtype=np.float64)
        for start, stop, delta in self.blocks():
            out += delta.T @ np.asarray(left[start:stop], dtype=np.float32)
        return out


# --- the rank of a change -----------------------------------------------------------------------


def change_rank(delta: np.ndarray) -> tuple[int | None, bool]:
    """(how many directions hold `LOW_RANK_ENERGY` of the change, whether that is low-rank).

    Matrices whose smaller side is at most `EXACT_RANK_MAX` get exact singular values (from the
    smaller Gram matrix, in float64); larger ones a randomized range finder of `SVD_SKETCH` columns
    with two power iterations, which resolves the leading directions (a rank above the sketch is
    reported as None: full-rank), after a one-product screen (`SCREEN_TAIL`) that answers None for
    a change spread over many directions. Either way the change is read a block of rows at a time."""
    change = _Change(ArrayRows(np.asarray(delta)))
    total = 0.0
    for _, _, block in change.blocks(np.float64):
        total += float(np.einsum("ij,ij->", block, block))
    return _rank(change, total, None)


@functools.lru_cache(maxsize=8)
def _screen_signs(columns: int) -> np.ndarray:
    """Random signs of the rank screen's columns (seeded, read-only: one per width, kept for the
    next matrix of that width)."""
    signs = np.where(np.random.default_rng(2).random(columns) < 0.5, -1.0, 1.0).astype(np.float32)
    signs.setflags(write=False)
    return signs


def screen_product(block: np.ndarray, signs: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
    """The rank screen's sketch of some rows of a change: column j, times a random sign, summed
    into column j mod (`SVD_SKETCH` + `SCREEN_COLUMNS`). Like a product with Gaussian vectors it
    keeps a change's energy in expectation (the signs cancel the cross terms) and cannot raise its
    rank, at the cost of two passes over the block instead of 128 flops per value. ``overwrite``:
    a float32 block may be signed in place (a block its caller is done with)."""
    width = SVD_SKETCH + SCREEN_COLUMNS
    rows, columns = block.shape
    whole = columns - columns % width
    if overwrite and block.dtype == np.float32 and block.flags.writeable:
        signed = np.multiply(block, signs, out=block)
    else:
        signed = np.multiply(block, signs, dtype=np.float32)
    out = signed[:, :whole].reshape(rows, -1, width).sum(axis=1)
    out[:, : columns - whole] += signed[:, whole:]
    return out


def _needs_range_finder(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and min(shape) > EXACT_RANK_MAX


def _rank(change: _Change, total: float, sketch: np.ndarray | None) -> tuple[int | None, bool]:
    """`change_rank` of a change whose squared norm is ``total``; ``sketch``: its
    `screen_product`, when a pass over the change already made it."""
    shape = change.shape
    if len(shape) != 2 or min(shape) < 2:
        return None, False
    if total == 0.0:
        return 0, True
    if not _needs_range_finder(shape):
        values, total = _exact_singular_values(change)
    else:
        if not math.isfinite(total):  # squares past float32's: its float32 products would overflow
            return None, False
        if sketch is None:
            sketch = change.screened()
        if _spread(sketch):
            return None, False
        start = np.random.default_rng(0).standard_normal((shape[1], SVD_SKETCH))
        values = _range_singular_values(change, change.times(start))
    energy = np.cumsum(values.astype(np.float64) ** 2) / total
    reached = np.flatnonzero(energy >= LOW_RANK_ENERGY)
    if reached.size == 0:
        return None, False
    rank = int(reached[0]) + 1
    low = rank <= LOW_RANK_MAX and rank <= LOW_RANK_MAX_SHARE * min(shape)
    return rank, low


def _exact_singular_values(change: _Change) -> tuple[np.ndarray, float]:
    """Every singular value, and the squared norm (the Gram matrix's trace, in float64): the
    squared values are the eigenvalues of the smaller Gram matrix, a symmetric eigenproblem of
    min(rows, columns), much cheaper than an SVD. A wide change (at most `EXACT_RANK_MAX` rows) is
    held whole in float64 (4 KiB a column); a tall one's Gram matrix is summed by blocks."""
    rows, columns = change.shape
    if rows <= columns:
        work = np.concatenate([block for _, _, block in change.blocks(np.float64)])
        gram = work @ work.T
    else:
        gram = np.zeros((columns, columns))
        for _, _, block in change.blocks(np.float64):
            gram += block.T @ block
    return np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)), float(np.trace(gram))


def _spread(sketch: np.ndarray) -> bool:
    """Whether the change is spread over more than `SVD_SKETCH` directions, read from its
    `screen_product` (`SVD_SKETCH` + `SCREEN_COLUMNS` columns). A change with `LOW_RANK_ENERGY` of
    its energy in at most `SVD_SKETCH` directions leaves the product's trailing `SCREEN_COLUMNS`
    directions at most the rest's share of the energy in expectation, 1 - `LOW_RANK_ENERGY`; a
    change spread over many directions leaves them about their share of the columns (a quarter
    less the spread of the spectrum); `SCREEN_TAIL` lies between, five times the former. A change
    the screen lets through gets the range finder, as before."""
    gram = (sketch.T @ sketch).astype(np.float64)
    values = np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)
    total = float(values.sum())
    return total > 0 and float(values[SVD_SKETCH:].sum()) > SCREEN_TAIL * total


def _range_singular_values(change: _Change, start: np.ndarray) -> np.ndarray:
    """The leading singular values from a randomized range finder with two power iterations,
    started from ``start`` (change @ `SVD_SKETCH` random vectors); float32 products, float64 QR."""
    basis = start
    for _ in range(2):
        basis, _ = np.linalg.qr(basis.astype(np.float64))
        basis = change.times(change.transposed_times(basis))
    basis, _ = np.linalg.qr(basis.astype(np.float64))
    projected = change.transposed_times(basis).T  # basis.T @ change
    return np.linalg.svd(projected, compute_uv=False)


# --- the assessment ------------------------------------------------------------------------------


def _aligned(role: str, matrix: Rows, transform: np.ndarray | None) -> Rows:
    """B's matrix in A's residual basis (``transform``: H_B x H_A, None for the identity)."""
    if transform is None or len(matrix.shape) != 2:
        return matrix
    if (role in READS_RESIDUAL or role in ("embed.weight", "lm_head.weight")) and matrix.shape[
        1
    ] == transform.shape[0]:
        return _ReadingRows(matrix, transform)
    if role in WRITES_RESIDUAL and matrix.shape[0] == transform.shape[0]:
        # Every row mixes all of B's: read whole (a hidden x width matrix of a transformed stream).
        return ArrayRows(transform.T @ matrix.whole())
    return matrix


def _rope_orders(
    role: str, shape: tuple[int, ...], head_dims: Sequence[int] = (64, 128, 32, 256, 16, 8)
) -> list[np.ndarray]:
    """A's query or key rows in the other rotary layout, as row orders: llama.cpp's GGUF stores
    them interleaved (pairs of rotated dimensions side by side) where Hugging Face stores the two
    halves apart."""
    if role not in ("attn.q.weight", "attn.k.weight") or len(shape) != 2:
        return []
    out = []
    rows = np.arange(shape[0])
    for head_dim in head_dims:
        if shape[0] % head_dim or head_dim % 2:
            continue
        heads = shape[0] // head_dim
        out.append(rows.reshape(heads, 2, head_dim // 2).swapaxes(1, 2).reshape(-1))  # halves -> interleaved
        out.append(rows.reshape(heads, head_dim // 2, 2).swapaxes(1, 2).reshape(-1))  # interleaved -> halves
    return out


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", a, a)) * np.sqrt(np.einsum("ij,ij->i", b, b))
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-30)


def _compares_rows(shape: tuple[int, ...]) -> bool:
    """Whether rows are compared by their cosines (the median is 1 for vectors and tiny matrices)."""
    return len(shape) == 2 and shape[0] >= 8


def _best_row_order(role: str, a: Rows, b: Rows) -> Rows:
    """A in the rotary layout whose rows agree best with B's (the first of equals, stored order
    first), told on `LAYOUT_SAMPLE_ROWS` evenly spaced rows: the right layout agrees near 1, the
    others near 0."""
    orders = _rope_orders(role, a.shape)
    if not orders or not _compares_rows(a.shape):
        return a
    sample = np.unique(np.linspace(0, a.rows - 1, min(a.rows, LAYOUT_SAMPLE_ROWS)).round().astype(np.int64))
    b_rows = b.take(sample)
    best: Rows = a
    best_agreement = float(np.median(_row_cosines(a.take(sample), b_rows)))
    for order in orders:
        agreement = float(np.median(_row_cosines(a.take(order[sample]), b_rows)))
        if agreement > best_agreement:
            best, best_agreement = _ReorderedRows(a, order), agreement
    return best


@dataclass
class _Pass:
    """What one pass over both matrices measured."""

    agreement: float = 1.0  # the median cosine between A's and B's rows
    equal: bool = True
    norm_a: float = 0.0
    norm_change: float = 0.0
    sketch: np.ndarray | None = None  # the change's `screen_product`, when asked for


def _squared_block(rows: Rows, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """A block of rows (`Rows.block`'s values) and the sum of squares of each row."""
    block = rows.unchecked_block(start, stop)
    squares = np.einsum("ij,ij->i", block, block)
    if not math.isfinite(float(squares.sum())):
        block = rows.block(start, stop)
        squares = np.einsum("ij,ij->i", block, block)
    return block, squares


def _measure(change: _Change, *, with_sketch: bool) -> _Pass:
    """One pass over A and B: the row agreement, equality, ||A||, ||B - A|| and, when asked, the
    rank screen's product (float32 row sums, summed in float64)."""
    a, b = change.a, change.b
    assert a is not None
    rows, columns = b.rows, b.columns
    cosines = np.empty(rows if _compares_rows(b.shape) else 0, dtype=np.float64)
    signs = _screen_signs(columns) if with_sketch else None
    sketch = None if signs is None else np.empty((rows, SVD_SKETCH + SCREEN_COLUMNS), dtype=np.float32)
    equal, squares_a, squares_change = True, 0.0, 0.0
    for start, stop in _spans(rows, columns):
        # Finite sums of squares have no NaN or infinity among their terms: they stand for the
        # check a stored block makes (a pass over it), and a block that fails is read checked.
        block_a, squares_a_rows = _squared_block(a, start, stop)
        block_b, squares_b_rows = _squared_block(b, start, stop)
        delta = np.subtract(block_b, block_a)
        if equal:  # of finite values, B - A is zero exactly where they are equal
            equal = not delta.any()
        squares_change_rows = np.einsum("ij,ij->i", delta, delta)
        squares_a += float(squares_a_rows.sum(dtype=np.float64))
        squares_change += float(squares_change_rows.sum(dtype=np.float64))
        if cosines.size:
            # a.b = (|a|^2 + |b|^2 - |b - a|^2) / 2: the cosine to about 1e-6, ample against
            # `ALIGNED_COSINE`, for one reduction less.
            norms = np.sqrt(squares_a_rows, dtype=np.float64) * np.sqrt(squares_b_rows, dtype=np.float64)
            dots = (squares_a_rows.astype(np.float64) + squares_b_rows - squares_change_rows) / 2
            cosines[start:stop] = dots / np.maximum(norms, 1e-30)
        if sketch is not None and signs is not None:
            sketch[start:stop] = screen_product(delta, signs, overwrite=True)  # delta's last use
    return _Pass(
        agreement=float(np.median(cosines)) if cosines.size else 1.0,
        equal=equal,
        norm_a=math.sqrt(squares_a),
        norm_change=math.sqrt(squares_change),
        sketch=sketch,
    )


def compare_tensor(
    name: str,
    role: str,
    layer_b: int | None,
    layer_a: int | None,
    a: np.ndarray | Rows | None,
    b: np.ndarray | Rows,
    *,
    component: str | None = None,
    transform: np.ndarray | None = None,
    with_rank: bool = True,
) -> TensorChange:
    """Classify one of B's tensors against A's counterpart ``a`` (None: it has none), each an
    array or `Rows` read a block at a time. Without ``with_rank`` a fine-tuned tensor's change is
    not tested for low rank (read as full-rank)."""
    component = component or component_of(role, layer_b)
    rows_b = as_rows(b)
    change = TensorChange(name, component, layer_b, layer_a, rows_b.size, NEW, tuple(rows_b.shape))
    if a is None:
        return change
    rows_a = as_rows(a)
    if rows_a.shape != rows_b.shape:
        change.kind = NOT_COMPARED
        return change
    if transform is not None:
        if len(rows_b.shape) == 1:  # a norm gain in a rotated stream has no elementwise counterpart
            change.kind = NOT_COMPARED
            return change
        rows_b = _aligned(role, rows_b, transform)
    # Query and key rows may be stored in the other rotary layout (a GGUF or llama2.c file against
    # a Hugging Face one): the layout whose rows agree best is A's.
    rows_a = _best_row_order(role, rows_a, rows_b)
    # The rounding tests read a sample of rows, before the pass over every row: a change they do
    # not explain (nor a copy) is a fine-tune, whose rank screen then rides on that pass.
    reason, sample_equal = None, False
    if transform is None:
        index = sample_rows(rows_a.rows, rows_a.size)
        blocks_a, blocks_b = _as_blocks(rows_a.take(index), rows_b.take(index))
        reason = _rounding_reason(blocks_a, blocks_b)
        sample_equal = bool(blocks_a.size) and bool(np.array_equal(blocks_a, blocks_b))
    delta = _Change(rows_b, rows_a)
    ranked = with_rank and _needs_range_finder(rows_b.shape)
    measured = _measure(delta, with_sketch=ranked and reason is None and not sample_equal)
    if measured.agreement < ALIGNED_COSINE:
        change.kind = NOT_COMPARED
        return change
    change.norm_a = measured.norm_a
    if transform is None and measured.equal:
        change.kind = COPIED
        change.relative_change = 0.0
        return change
    norm_a = measured.norm_a
    change.relative_change = measured.norm_change / norm_a if norm_a > 0 else float("inf")
    if reason is not None:
        change.kind = REQUANTIZED
        change.explained_by = reason
        return change
    change.kind = FINETUNED
    if with_rank:
        change.rank, change.low_rank = _rank(delta, measured.norm_change**2, measured.sketch)
    else:
        change.low_rank = False
    return change


def residual_transform(alignment: Alignment | None) -> np.ndarray | None:
    """The map of B's residual stream onto A's that changes are measured through (None: as stored)."""
    if alignment is None:
        return None
    t = alignment.transform
    # A fit between a model and its fine-tune is near the identity, not at it: only a stream
    # that was really transformed (`compare`'s "obfuscated" test) is undone.
    if t.shape[0] != t.shape[1] or off_identity(t) > OBFUSCATED_OFF_IDENTITY:
        return np.asarray(t, dtype=np.float32)
    return None


def assess(
    model_a: CanonicalModel,
    model_b: CanonicalModel,
    layers: list[dict[str, Any]],
    alignment: Alignment | None,
) -> ValueAdded:
    """Every tensor of B that has a role, against A's (layers paired by ``layers``, `compare`'s
    layer map; the residual stream aligned by ``alignment`` when it is not the identity). Large
    matrices are read a block of rows at a time (`role_rows`)."""
    transform = residual_transform(alignment)
    source_of = {row["layer_b"]: row["layer_a"] for row in layers if row.get("layer_a") is not None}
    # B's layers without their own source: a layer of A used a second time, or none at all.
    used: set[int] = set()
    added: set[int] = set()
    by_index = not source_of  # no layer map: each layer of B against A's of the same index
    for index in model_b.layers:
        source = source_of.get(index, index if by_index and index in model_a.layers else None)
        if source is None or source in used:
            added.add(index)
        else:
            used.add(source)
        if source is not None:
            source_of[index] = source
    value = ValueAdded()
    if transform is not None:
        value.note = (
            "B's residual stream was transformed: changes are measured after undoing the fitted "
            "alignment, whose own error adds to them (read them as upper bounds), and rounding is not "
            "tested"
        )
    tasks = [
        (names[0], layer, role)
        for (layer, role), names in sorted(
            model_b.slots.items(), key=lambda kv: (-1 if kv[0][0] is None else kv[0][0], kv[0][1])
        )
        if len(names) == 1
    ]

    def measure(task: tuple[str, int | None, str]) -> list[TensorChange]:
        name, layer, role = task
        b = role_rows(model_b, layer, role)
        if b is None:
            return []
        layer_a = source_of.get(layer) if layer is not None else None
        a = (
            role_rows(model_a, layer_a if layer is not None else None, role)
            if (layer is None or layer_a is not None)
            else None
        )
        if a is None and role == "lm_head.weight":  # A ties its output head to its embedding
            a = role_rows(model_a, None, "embed.weight")
        try:
            return _tensor_changes(name, role, layer, layer_a, a, b, layer in added, transform)
        finally:
            b.close()
            if a is not None:
                a.close()

    # Tensor by tensor on the thread budget's workers: the pass is NumPy's elementwise work and
    # reductions, which release the GIL, so one thread left the other cores idle (31 of
    # `compare`'s 150 CPU s at 32 layers, all on one core).
    # Last tensor first: the sketches read A, then B, start to end, so the ends of both files are
    # what the page cache still holds when a pair does not fit in memory (RESULTS.md, session 10).
    backwards = tasks[::-1]
    sizes = [model_b.checkpoint.info(name).nbytes for name, _, _ in backwards]
    with stage(f"measuring changes in {model_b.checkpoint.path.name}", sum(sizes), BYTES) as shown:
        measured = map_in_order(measure, backwards, done=lambda index: shown.advance(sizes[index]))
    for changes in measured[::-1]:
        value.tensors.extend(changes)
    return value


def _tensor_changes(
    name: str,
    role: str,
    layer: int | None,
    layer_a: int | None,
    a: Rows | None,
    b: Rows,
    added_layer: bool,
    transform: np.ndarray | None,
) -> list[TensorChange]:
    if (
        role in ("embed.weight", "lm_head.weight")
        and a is not None
        and len(b.shape) == 2
        and len(a.shape) == 2
        and b.shape[0] > a.shape[0]
        and b.shape[1] == a.shape[1]
    ):
        rows = a.shape[0]
        extra = TensorChange(
            f"{name}[{rows}:]", "added vocabulary", None, None, (b.rows - rows) * b.columns, NEW
        )
        return [compare_tensor(name, role, None, None, a, b.head(rows), transform=transform), extra]
    component = "added layers" if added_layer else None
    return [compare_tensor(name, role, layer, layer_a, a, b, component=component, transform=transform)]


TRAINING_WORDS = ("finetune", "continued-pretraining")
# `how` only loses its training word, or has it replaced, when nearly all of B was compared.
COMPARED_FOR_REVISION = 0.9


def training_word(value: ValueAdded) -> str:
    """``continued-pretraining`` when the full-rank change took the effort of one
    (`CONTINUED_PRETRAINING_EFFORT`), else ``finetune`` (a low-rank change is one)."""
    effort = value.effort()
    return "continued-pretraining" if effort is not None and effort["continued_pretraining"] else "finetune"


def revise_how(how: list[str], value: ValueAdded) -> list[str]:
    """`compare`'s ``how`` corrected by the tensor-by-tensor account: no training word when every
    compared tensor is a copy or a requantization (rounding is not training), ``quantized`` when
    some tensor is a requantization, and a training word beside ``quantized`` when some tensor
    changed beyond rounding. The word itself (fine-tune or continued pretraining) is the
    account's when it compared B as stored: `compare`'s own guess reads the drift of one matrix's
    rows, a relative change, which the same training makes smaller on larger weights."""
    fractions = value.fractions()
    tuned = fractions[FINETUNED] > 0
    compared = fractions.get(NOT_COMPARED, 0.0) <= 1 - COMPARED_FOR_REVISION
    out = list(how)
    if not tuned and compared:
        out = [word for word in out if word not in TRAINING_WORDS]
    if fractions[REQUANTIZED] > 0 and "quantized" not in out:
        out.append("quantized")
    if tuned and compared and value.note is None:  # a transformed stream's changes are upper bounds
        word = training_word(value)
        at = next((i for i, w in enumerate(out) if w in TRAINING_WORDS), len(out))
        out = [w for w in out if w not in TRAINING_WORDS]
        out.insert(min(at, len(out)), word)
    elif tuned and not any(word in out for word in TRAINING_WORDS):
        out.append(training_word(value))
    return out


def value_added_text(document: dict[str, Any]) -> str:
    """The value-added part of a compare document in one paragraph (text reports, audit)."""
    fractions = document["fractions"]
    shares = ", ".join(f"{kind} {share:.0%}" for kind, share in fractions.items() if share)
    return f"{document['summary']} (B's parameters: {shares}; new-information score {document['score']:.3g})"


# The new-information score above which an audit reads the change as substantive: a full-rank
# change of about 1 % of every weight (the zoo's lightest fine-tune scores 0.05 to 0.08; its
# rank-4 LoRA on two attention matrices 0.005; copies and requantizations 0).
SUBSTANTIVE_SCORE = 0.01


def substantive_change(value: ValueAdded) -> str:
    """What an audit says about the change: what B adds, and whether that is evidence for or
    against a "substantive change" (`SUBSTANTIVE_SCORE`)."""
    score = value.score
    if score == 0:
        stance = "evidence against a substantive change: B's compared values are A's, copied or rounded"
    elif score < SUBSTANTIVE_SCORE:
        stance = (
            f"weak evidence of a substantive change: new-information score {score:.3g}, below "
            f"{SUBSTANTIVE_SCORE} (a full-rank change of 1 % of every weight)"
        )
    else:
        stance = f"evidence of a substantive change: new-information score {score:.3g}"
    return f"what the weights add to the base: {value.summary()} ({stance})"
