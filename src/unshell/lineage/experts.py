"""Mixture-of-experts lineage: which FFN of A each of B's experts was copied from.

An MoE "upcycled" from a dense model starts with every expert a copy of the dense model's FFN
(sparse upcycling: copies, often with a little noise, a new router, then training). Its
attention, norms and embeddings stay the dense model's. `compare` finds the derivation on all of
B's matrices; this module names it and draws the map, per layer: each of B's experts (and
shared experts) against A's dense FFN, or against A's experts when A is an MoE too, and B's
attention against A's.

The statistic is a neuron's *twin*: a neuron of an FFN is its gate row and its up row, vectors in
residual space (norm gain folded in, B's rows mapped into A's residual coordinates by the
alignment the verdict rests on). For a sample of B's neurons, the best |cosine| with any neuron of
A's block is taken, and the block's similarity is the median over the sample. It forgets the
order of neurons and of experts and their signs (a permutation of experts or of the neurons
inside an expert changes nothing the model computes, so it is never evidence of independence).
A copy that was then trained keeps its neurons' directions; independent FFNs of trained models
share none, and each block's similarity is shown beside the same statistic against A's FFN of a
distant layer (the null), which a copy must exceed by a margin.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..arch.recognize import Assignment
from .canonical import CanonicalModel
from .sketch import Alignment, all_finite, finite, finite_unit_rows, projection

EXPERT_ROLES = {
    "moe.expert.gate.weight": "gate",
    "moe.expert.up.weight": "up",
    "moe.expert.down.weight": "down",
}
SHARED_ROLES = {
    "moe.shared.gate.weight": "gate",
    "moe.shared.up.weight": "up",
    "moe.shared.down.weight": "down",
}
NEURON_PARTS = ("gate", "up")  # the parts whose rows are a neuron's input directions
DENSE_ROLES = {"mlp.gate.weight": "gate", "mlp.up.weight": "up"}
# B's neurons sampled per block: the median of 128 best-twin cosines moves by about 0.01 between
# samples, and A's block is read whole (a copy's twin may be any of its neurons).
SAMPLE_NEURONS = 128
# A block of B is a copy of A's block when its similarity reaches this and beats the null (the same
# statistic against A's FFN in a distant layer) by `COPY_MIN_MARGIN`. Measured 2026-12-05 on the
# MoE zoo (tools/zoo_moe.py) and the real upcycled stories260K and SmolLM2-135M (tests/test_moe.py):
# copies trained 60 to 100 steps 0.993 to 1.000; every block of the 4 independent pairs (an MoE
# from scratch, one upcycled from a sibling base) 0.195 to 0.250; the null 0.107 to 0.284.
COPY_MIN_SIMILARITY = 0.5
# Neurons are compared in a fixed random projection of A's residual space to this many dimensions
# (the identity for smaller models): a twin's cosine stays near 1, and a 7B model's 14,336 x 4,096
# FFN costs a seventh of the work. Unrelated neurons' best |cosine| grows a little (about 0.2 among
# 14,336 in 512 dimensions), still far under `COPY_MIN_SIMILARITY`.
TWIN_DIM = 512
COPY_MIN_MARGIN = 0.2
# The neuron map of a copy: each of its neurons against every neuron of the block it copies. A
# neuron has a twin when their best |cosine| reaches this (copies trained 80 steps: 0.9 and more;
# a re-initialized neuron's best against 256 unrelated ones: about 0.3 in 128 dimensions).
NEURON_TWIN = 0.5
# Neurons of a copy mapped one by one (an even sample of a larger block): bounds the work to
# NEURON_MAP_MAX x A's block neurons x `TWIN_DIM` per block.
NEURON_MAP_MAX = 4096
# A copy whose neurons are at most this share of its source's is a slice of it: fine-grained
# upcycling (Qwen1.5-MoE-A2.7B cut Qwen-1.8B's FFN into slices, each expert holding one).
FINE_GRAINED_SHARE = 0.75
# Twinned source neurons closer than this many (or this share of the source, if more) are one
# run: a slice with some neurons re-initialized is still one slice.
RUN_GAP = 4
RUN_GAP_SHARE = 1 / 32


@dataclass(frozen=True)
class Block:
    """One FFN of a layer: the dense one (``expert`` None) or one expert."""

    layer: int
    expert: int | None
    # role ("gate", "up") -> (tensor name, index into a stacked 3-D tensor or None)
    parts: tuple[tuple[str, str, int | None], ...] = ()
    dense: bool = False
    shared: bool = False  # an MoE's shared expert (Qwen2-MoE, DeepSeek-MoE): every token uses it

    @property
    def label(self) -> str:
        if self.shared:
            return "shared expert"
        return "ffn" if self.expert is None else f"expert {self.expert}"


@dataclass
class NeuronMap:
    """A copy's neurons against its source block's: which neuron of A each one twins."""

    neurons_b: int  # B's block
    neurons_a: int  # A's source block
    # Per mapped neuron of B (all of them, or an even sample `rows`): A's neuron index, -1 where it
    # has no twin (`NEURON_TWIN`), and the best |cosine|.
    rows: np.ndarray
    twins: np.ndarray
    cosines: np.ndarray

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.neurons_b

    @property
    def twinned(self) -> int:
        return int(np.sum(self.twins >= 0))

    @property
    def fine_grained(self) -> bool:
        return self.neurons_b <= FINE_GRAINED_SHARE * self.neurons_a

    def runs(self) -> list[tuple[int, int]]:
        """A's twinned neurons as runs [first, last] (near neighbours joined: `RUN_GAP`)."""
        used = np.unique(self.twins[self.twins >= 0])
        if used.size == 0:
            return []
        stride = self.neurons_b / max(1, len(self.rows))
        gap = max(RUN_GAP, round(RUN_GAP_SHARE * self.neurons_a), round(2 * stride))
        cuts = np.flatnonzero(np.diff(used) > gap)
        starts = np.concatenate(([0], cuts + 1))
        ends = np.concatenate((cuts, [used.size - 1]))
        return [(int(used[a]), int(used[b])) for a, b in zip(starts, ends, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        runs = self.runs()
        return {
            "neurons_b": self.neurons_b,
            "neurons_a": self.neurons_a,
            "mapped": len(self.rows),
            "twinned": self.twinned,
            "slice": self.fine_grained,
            "runs_a": [list(run) for run in runs[:RUNS_SHOWN]],
            "runs_a_count": len(runs),
        }


RUNS_SHOWN = 16


@dataclass
class BlockMatch:
    """One of B's FFN blocks, with A's block it resembles most and the null beside it."""

    block_b: str
    layer_a: int | None
    block_a: str | None
    similarity: float
    null_similarity: float | None
    copy: bool
    # Copies only: neuron by neuron against the source, and both blocks (for the value added).
    neurons: NeuronMap | None = field(default=None, repr=False)
    source: Block | None = field(default=None, repr=False)
    block: Block | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "b": self.block_b,
            "a": self.block_a,
            "layer_a": self.layer_a,
            "similarity": round(self.similarity, 4),
            "null_similarity": None if self.null_similarity is None else round(self.null_similarity, 4),
            "copy": self.copy,
            "neurons": None if self.neurons is None else self.neurons.to_dict(),
        }


@dataclass
class LayerExperts:
    layer_b: int
    layer_a: int | None
    attention_similarity: float | None
    blocks: list[BlockMatch] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer_b": self.layer_b,
            "layer_a": self.layer_a,
            "attention_similarity": None
            if self.attention_similarity is None
            else round(self.attention_similarity, 4),
            "experts": [b.to_dict() for b in self.blocks],
        }


@dataclass
class ExpertMap:
    """B's FFN blocks mapped onto A's (see the module docstring)."""

    experts_a: int  # experts per layer (0: dense)
    experts_b: int
    layers: list[LayerExperts]
    upcycled: bool
    upcycled_layers: int
    moe_layers_b: int

    @property
    def fine_grained(self) -> bool:
        """Most of B's expert copies hold a slice of their source's neurons, not all of them."""
        maps = [
            b.neurons
            for layer in self.layers
            for b in layer.blocks
            if b.copy and b.neurons is not None and b.block_b.startswith("expert ")
        ]
        return bool(maps) and 2 * sum(m.fine_grained for m in maps) > len(maps)

    @property
    def granularity(self) -> str | None:
        if not self.upcycled:
            return None
        return "fine-grained" if self.fine_grained else "whole"

    def to_dict(self) -> dict[str, Any]:
        return {
            "experts_per_layer_a": self.experts_a,
            "experts_per_layer_b": self.experts_b,
            "upcycled": self.upcycled,
            "granularity": self.granularity,
            "upcycled_layers": self.upcycled_layers,
            "moe_layers_b": self.moe_layers_b,
            "neuron_twin": NEURON_TWIN,
            "fine_grained_share": FINE_GRAINED_SHARE,
            "min_similarity": COPY_MIN_SIMILARITY,
            "min_margin": COPY_MIN_MARGIN,
            "statistic": (
                "per block of B (an expert, or the dense FFN): for a sample of its neurons (gate and up rows "
                "in residual space, B mapped into A's coordinates), the best |cosine| with any neuron of A's "
                "block, median over the sample; blind to the order and sign of neurons and experts. "
                "null_similarity: the same against A's FFN in a distant layer. copy: similarity at least "
                "min_similarity and min_margin above the null. attention_similarity: the same statistic on "
                "the query rows. neurons (copies): each neuron of B's block (up to NEURON_MAP_MAX) against "
                "every neuron of A's block, twinned at |cosine| >= neuron_twin; runs_a: A's twinned neurons "
                "(stored order) as [first, last] runs; slice: B's block has at most fine_grained_share of "
                "its source's neurons (fine-grained upcycling)"
            ),
            "layers": [layer.to_dict() for layer in self.layers],
        }


def has_experts(model: CanonicalModel) -> bool:
    """Whether the recognition found any expert tensor (routed or shared)."""
    roles = {*EXPERT_ROLES, *SHARED_ROLES}
    return any(a.role in roles for a in model.result.recognition.assignments)


def ffn_blocks(model: CanonicalModel) -> dict[int, list[Block]]:
    """Every layer's FFN blocks: its experts when it has any, else its dense FFN."""
    experts: dict[tuple[int, int], dict[str, tuple[str, int | None]]] = {}
    shared: dict[int, dict[str, tuple[str, int | None]]] = {}
    hidden = model.hidden or 0
    for assignment in model.result.recognition.assignments:
        if assignment.layer is None:
            continue
        part = SHARED_ROLES.get(assignment.role or "")
        if part is not None and len(assignment.shape) == 2:
            shared.setdefault(assignment.layer, {})[part] = (assignment.name, None)
        part = EXPERT_ROLES.get(assignment.role or "")
        if part is None:
            continue
        for expert, index in _expert_indices(assignment, hidden):
            experts.setdefault((assignment.layer, expert), {})[part] = (assignment.name, index)
    blocks: dict[int, list[Block]] = {}
    for (layer, expert), parts in sorted(experts.items()):
        flat = tuple((role, name, index) for role, (name, index) in sorted(parts.items()))
        blocks.setdefault(layer, []).append(Block(layer, expert, flat))
    for layer, parts in sorted(shared.items()):
        flat = tuple((role, name, index) for role, (name, index) in sorted(parts.items()))
        blocks.setdefault(layer, []).append(Block(layer, None, flat, shared=True))
    for layer in model.layers:
        # Present without reading it: one stored tensor, or a part of a fused one.
        if layer not in blocks and (
            len(model.slots.get((layer, "mlp.up.weight"), [])) == 1 or (layer, "mlp.up.weight") in model.fused
        ):
            blocks[layer] = [Block(layer, None, dense=True)]
    return blocks


def _expert_indices(assignment: Assignment, hidden: int) -> list[tuple[int, int | None]]:
    """(expert, index into the tensor) for one expert tensor: one per expert file, or every slice of
    a stacked 3-D tensor (GGUF's ``ffn_up_exps``: experts x neurons x hidden)."""
    if len(assignment.shape) == 3:
        return [(e, e) for e in range(int(assignment.shape[0]))]
    if len(assignment.shape) == 2 and hidden in assignment.shape:
        return [(assignment.expert if assignment.expert is not None else 0, None)]
    return []


class TensorReader:
    """Reads tensors as float32, keeping the last two: a layer's stacked expert tensors (GGUF's
    ``ffn_gate_exps`` and ``ffn_up_exps``) are then read once for all of its experts, not once each."""

    def __init__(self, model: CanonicalModel) -> None:
        self.model = model
        self._kept: dict[str, np.ndarray] = {}

    def read(self, name: str) -> np.ndarray:
        if name not in self._kept:
            if len(self._kept) >= 2:
                self._kept.pop(next(iter(self._kept)))
            self._kept[name] = finite(np.asarray(self.model.checkpoint.read(name), dtype=np.float32))
        return self._kept[name]


def block_neurons(
    model: CanonicalModel, block: Block, rows: int | None = None, reader: TensorReader | None = None
) -> dict[str, np.ndarray]:
    """The block's gate and up rows (neurons x hidden, norm gain folded in), every neuron or an
    even sample of ``rows`` of them."""
    hidden = model.hidden or 0
    reader = reader or TensorReader(model)
    out: dict[str, np.ndarray] = {}
    if block.dense:
        for role, part in DENSE_ROLES.items():
            matrix = model.folded(block.layer, role)
            if matrix is not None:
                out[part] = _residual_rows(matrix, hidden)
    else:
        gain = model.role(block.layer, "ffn_norm.weight")
        for part, name, index in block.parts:
            if part not in NEURON_PARTS:
                continue
            matrix = reader.read(name)
            if index is not None:
                matrix = matrix[index]
            matrix = _residual_rows(matrix, hidden)
            if gain is not None and gain.shape == (matrix.shape[1],):
                matrix = matrix * gain[None, :]
            out[part] = matrix
    if rows is not None:
        count = min(len(m) for m in out.values()) if out else 0
        pick = _even_sample(count, rows)
        out = {part: m[pick] for part, m in out.items()}
    return out


def _even_sample(count: int, most: int) -> np.ndarray:
    """Indices of at most ``most`` rows spread evenly over ``count``."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, count - 1, num=min(most, count)).astype(np.int64))


def _residual_rows(matrix: np.ndarray, hidden: int) -> np.ndarray:
    if matrix.ndim == 2 and matrix.shape[1] != hidden and matrix.shape[0] == hidden:
        return np.ascontiguousarray(matrix.T)  # stored [in, out]
    return matrix


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length, as float32 (`finite_unit_rows`: NaN and infinities count as
    zero, and a row whose squares overflow is zero), so one hostile or diverged value cannot turn
    every similarity of the map into NaN. ``matrix`` is left as it is."""
    if not all_finite(matrix):
        matrix = np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)  # a copy
    return finite_unit_rows(matrix).astype(np.float32)


def twin_similarity(sample: dict[str, np.ndarray], whole: dict[str, np.ndarray]) -> float | None:
    """Median over ``sample``'s neurons of the best |cosine| with a neuron of ``whole``, averaged
    over the parts both have (gate, up). Both in the same residual coordinates, rows unit length."""
    parts = [p for p in ("gate", "up") if p in sample and p in whole]
    if not parts or any(sample[p].shape[1] != whole[p].shape[1] for p in parts):
        return None
    scores = sum(np.abs(sample[p] @ whole[p].T) for p in parts) / len(parts)
    if scores.size == 0:
        return None
    return float(np.median(scores.max(axis=1)))


@functools.cache
def _twin_basis(hidden: int) -> np.ndarray:
    return projection(hidden, TWIN_DIM)


def _aligned(
    neurons: dict[str, np.ndarray], alignment: Alignment | None, hidden_a: int
) -> dict[str, np.ndarray]:
    """Rows in A's residual coordinates, projected to at most `TWIN_DIM` dimensions, unit length."""
    basis = _twin_basis(hidden_a)
    out = {}
    for part, matrix in neurons.items():
        if alignment is not None and alignment.transform.shape == (matrix.shape[1], hidden_a):
            matrix = alignment.apply(matrix) @ basis
        elif matrix.shape[1] == hidden_a:
            matrix = matrix @ basis
        out[part] = unit_rows(matrix)
    return out


def expert_map(
    model_a: CanonicalModel,
    model_b: CanonicalModel,
    layers: list[dict[str, Any]],
    alignment: Alignment | None,
) -> ExpertMap | None:
    """B's FFN blocks against A's, when either side is an MoE (else None). ``layers``: compare's
    layer map (B's layer -> A's layer, from every matrix); ``alignment``: B's residual coordinates
    onto A's, as the verdict used it."""
    if not (has_experts(model_a) or has_experts(model_b)):
        return None
    blocks_a, blocks_b = ffn_blocks(model_a), ffn_blocks(model_b)
    experts_a, experts_b = (_routed(blocks) for blocks in (blocks_a, blocks_b))
    hidden_a = model_a.hidden or 0
    if (experts_a == 0 and experts_b == 0) or not blocks_a or not blocks_b or not hidden_a:
        return None
    layers_a = sorted(blocks_a)
    mapped = {row["layer_b"]: row["layer_a"] for row in layers if row.get("layer_a") is not None}
    cache: dict[int, list[tuple[Block, dict[str, np.ndarray]]]] = {}
    reader_a, reader_b = TensorReader(model_a), TensorReader(model_b)

    def a_layer(layer: int) -> list[tuple[Block, dict[str, np.ndarray]]]:
        if layer not in cache:
            if len(cache) > 4:
                cache.pop(next(iter(cache)))
            cache[layer] = [
                (block, _aligned(block_neurons(model_a, block, reader=reader_a), None, hidden_a))
                for block in blocks_a[layer]
            ]
        return cache[layer]

    result: list[LayerExperts] = []
    for layer_b in sorted(blocks_b):
        candidates = [m for m in dict.fromkeys((mapped.get(layer_b), layer_b)) if m in blocks_a]
        if not candidates:
            continue
        null_layer = _distant(layers_a, candidates[0])
        row = LayerExperts(
            layer_b,
            candidates[0],
            _attention_similarity(model_a, model_b, candidates[0], layer_b, alignment, hidden_a),
        )
        for block in blocks_b[layer_b]:
            whole_b = block_neurons(model_b, block, reader=reader_b)
            count_b = min((len(m) for m in whole_b.values()), default=0)
            sample = _aligned(
                {p: m[_even_sample(count_b, SAMPLE_NEURONS)] for p, m in whole_b.items()}, alignment, hidden_a
            )
            best: tuple[float, int, Block, dict[str, np.ndarray]] | None = None
            for layer_a in candidates:
                for block_a, neurons_a in a_layer(layer_a):
                    value = twin_similarity(sample, neurons_a)
                    if value is not None and (best is None or value > best[0]):
                        best = (value, layer_a, block_a, neurons_a)
            if best is None:
                continue
            null = None
            if null_layer is not None:
                values = [twin_similarity(sample, n) for _, n in a_layer(null_layer)]
                null = max((v for v in values if v is not None), default=None)
            similarity, layer_a, block_a, neurons_a = best
            copy = similarity >= COPY_MIN_SIMILARITY and (
                null is None or similarity - null >= COPY_MIN_MARGIN
            )
            match = BlockMatch(block.label, layer_a, block_a.label, similarity, null, copy, block=block)
            if copy:
                match.neurons = neuron_map(whole_b, count_b, neurons_a, alignment, hidden_a)
                match.source = block_a
            row.blocks.append(match)
        if row.blocks:
            row.layer_a = max(
                (b.layer_a for b in row.blocks if b.copy),
                key=lambda m: sum(b.layer_a == m for b in row.blocks),
                default=row.layer_a,
            )
            result.append(row)
    moe_rows = [r for r in result if any(b.block_b.startswith("expert ") for b in r.blocks)]
    upcycled_layers = sum(_layer_upcycled(r, experts_a) for r in moe_rows)
    upcycled = experts_b > experts_a and bool(moe_rows) and 2 * upcycled_layers >= len(moe_rows)
    return ExpertMap(experts_a, experts_b, result, upcycled, upcycled_layers, len(moe_rows))


def neuron_map(
    whole_b: dict[str, np.ndarray],
    count_b: int,
    neurons_a: dict[str, np.ndarray],
    alignment: Alignment | None,
    hidden_a: int,
) -> NeuronMap | None:
    """Each of B's block neurons (``whole_b``, every one or an even sample of `NEURON_MAP_MAX`)
    against every neuron of A's block (``neurons_a``, aligned, unit rows): its twin, if any."""
    rows = _even_sample(count_b, NEURON_MAP_MAX)
    mapped = _aligned({p: m[rows] for p, m in whole_b.items()}, alignment, hidden_a)
    parts = [p for p in ("gate", "up") if p in mapped and p in neurons_a]
    if not parts or any(mapped[p].shape[1] != neurons_a[p].shape[1] for p in parts):
        return None
    count_a = min(len(neurons_a[p]) for p in parts)
    twins = np.full(len(rows), -1, dtype=np.int64)
    cosines = np.zeros(len(rows), dtype=np.float32)
    for start in range(0, len(rows), 1024):  # bounded memory: 1024 x A's neurons at a time
        chunk = slice(start, start + 1024)
        scores = sum(np.abs(mapped[p][chunk] @ neurons_a[p][:count_a].T) for p in parts) / len(parts)
        cosines[chunk] = scores.max(axis=1)
        twins[chunk] = scores.argmax(axis=1)
    twins[cosines < NEURON_TWIN] = -1
    return NeuronMap(count_b, count_a, rows, twins, cosines)


def _routed(blocks: dict[int, list[Block]]) -> int:
    """Routed experts per layer (0 for a dense model)."""
    return max((sum(not b.dense and not b.shared for b in v) for v in blocks.values()), default=0)


def _layer_upcycled(row: LayerExperts, experts_a: int) -> bool:
    """B's experts in this layer include copies of A's dense FFN, or two copies of one of A's experts."""
    sources = [(b.layer_a, b.block_a) for b in row.blocks if b.copy and b.block_b.startswith("expert ")]
    if experts_a == 0:
        return bool(sources)
    return len(sources) > len(set(sources))


def _distant(layers: list[int], layer: int) -> int | None:
    """A layer of A far from ``layer`` (half the depth away), None for a one-layer model."""
    if len(layers) < 2:
        return None
    index = layers.index(layer)
    return layers[(index + len(layers) // 2) % len(layers)]


def _attention_similarity(
    model_a: CanonicalModel,
    model_b: CanonicalModel,
    layer_a: int,
    layer_b: int,
    alignment: Alignment | None,
    hidden_a: int,
) -> float | None:
    query_a = model_a.folded(layer_a, "attn.q.weight")
    query_b = model_b.folded(layer_b, "attn.q.weight")
    if query_a is None or query_b is None:
        return None
    pick = _even_sample(len(query_b), SAMPLE_NEURONS)
    sample = _aligned({"up": _residual_rows(query_b, model_b.hidden or 0)[pick]}, alignment, hidden_a)
    whole = _aligned({"up": _residual_rows(query_a, hidden_a)}, None, hidden_a)
    return twin_similarity(sample, whole)


def expert_map_text(experts: dict[str, Any] | None) -> str | None:
    """One line on an `ExpertMap.to_dict` (None when there is none)."""
    if not experts:
        return None
    layers = experts["layers"]
    a_kind, b_kind = (
        "dense FFN" if count == 0 else f"{count} experts per layer"
        for count in (experts["experts_per_layer_a"], experts["experts_per_layer_b"])
    )
    blocks = [b for layer in layers for b in layer["experts"]]
    copies = [b for b in blocks if b["copy"]]
    similarity = np.median([b["similarity"] for b in copies]) if copies else None
    nulls = [b["null_similarity"] for b in blocks if b["null_similarity"] is not None]
    attention = [
        layer["attention_similarity"] for layer in layers if layer["attention_similarity"] is not None
    ]
    text = f"B: {b_kind}, A: {a_kind}; {len(copies)} of B's {len(blocks)} FFN blocks are copies of A's"
    if similarity is not None:
        text += f" (neuron-twin similarity median {similarity:.2f}"
        text += f", null {np.median(nulls):.2f})" if nulls else ")"
    if attention:
        text += f"; attention {np.median(attention):.2f}"
    if experts["upcycled"]:
        text += f"; upcycled in {experts['upcycled_layers']} of {experts['moe_layers_b']} MoE layers"
    slices = [b["neurons"] for b in copies if b.get("neurons") and b["neurons"]["slice"]]
    if experts.get("granularity") == "fine-grained" and slices:
        held = np.median([n["neurons_b"] for n in slices])
        of = np.median([n["neurons_a"] for n in slices])
        text += f"; fine-grained: each expert holds a slice of A's FFN neurons ({held:.0f} of {of:.0f})"
    return text


def block_source_text(block: dict[str, Any]) -> str:
    """A's block that one of B's blocks copies, with the slice of A's neurons it holds when it
    holds a slice (``ffn[64..127]``), or ``new``."""
    if not block["copy"]:
        return "new"
    neurons = block.get("neurons")
    if not neurons or not neurons["slice"] or not neurons["runs_a"]:
        return str(block["a"])
    runs = ",".join(f"{first}..{last}" for first, last in neurons["runs_a"][:3])
    more = "..." if neurons["runs_a_count"] > 3 else ""
    return f"{block['a']}[{runs}{more}]"


def expert_map_rows(
    experts: dict[str, Any] | None, limit: int | None = 12
) -> list[tuple[str, str, str, str]]:
    """(B's layer, A's layer, attention similarity, B's blocks -> A's with similarity) per layer,
    the first ``limit`` layers (all with None)."""
    if not experts:
        return []
    rows = []
    for layer in experts["layers"][:limit]:
        mapping = ", ".join(
            f"{b['b']}->{block_source_text(b)} {b['similarity']:.2f}" for b in layer["experts"]
        )
        attention = layer["attention_similarity"]
        rows.append(
            (
                str(layer["layer_b"]),
                "" if layer["layer_a"] is None else str(layer["layer_a"]),
                "" if attention is None else f"{attention:.2f}",
                mapping,
            )
        )
    return rows
