"""How much of an MoE is new, expert by expert: the value added (`lineage.change`) with the expert map.

`change.assess` pairs B's tensors with A's by role, which an MoE defeats: an upcycled expert's
counterpart is A's *dense* FFN (another role), its neurons are in an order of their own, and a
fine-grained expert holds only a slice of them. This module replaces, for every FFN block of B
that the expert map (`lineage.experts`) covers, the tensor-by-role account with a neuron-by-neuron
one: each of the block's neurons (a gate row, an up row and a down column) that twins a neuron of
the source block is compared with that neuron (``copied``, ``requantized`` or ``fine-tuned``, with
its change), a neuron with no twin (re-initialized) is ``new``, and a block that copies nothing
(a new expert) is ``new``. Several experts copying one source (replicas) each count as derived,
not new: the information they add is their change. The router has no counterpart in a dense
model and stays ``new``. An expert part's change is tested for low rank like any tensor's
(`change.compare_tensor`), so a LoRA-style change of an upcycled expert reads low-rank: a part
whose smaller side is at most `change.EXACT_RANK_MAX` (512) gets exact singular values (the
Gram matrix of that side), a larger one the rank screen, made in the pass that measures the
change (each column times a random sign, summed into 64 columns: two more passes over the part's
values), which settles a change spread over many directions (a trained or noisy copy) with no
further pass; only a change the screen lets through gets the range finder (six products with 48
columns). Requantized and copied parts get neither.
"""

from __future__ import annotations

import numpy as np

from .canonical import CanonicalModel
from .change import NEW, NOT_COMPARED, TensorChange, ValueAdded, compare_tensor, residual_transform
from .experts import DENSE_ROLES, Block, BlockMatch, ExpertMap, TensorReader
from .sketch import Alignment

PART_ROLES = {"gate": "mlp.gate.weight", "up": "mlp.up.weight", "down": "mlp.down.weight"}
DENSE_PARTS = {**{part: role for role, part in DENSE_ROLES.items()}, "down": "mlp.down.weight"}


def account_experts(
    value: ValueAdded,
    experts: ExpertMap,
    model_a: CanonicalModel,
    model_b: CanonicalModel,
    alignment: Alignment | None,
) -> None:
    """Replace ``value``'s entries for B's expert tensors by the neuron-by-neuron account above."""
    transform = residual_transform(alignment)
    reader_a, reader_b = TensorReader(model_a), TensorReader(model_b)
    covered: set[str] = set()
    changes: list[TensorChange] = []
    for layer in experts.layers:
        for match in layer.blocks:
            block = match.block
            if block is None or block.dense:
                continue
            covered.update(name for _, name, _ in block.parts)
            changes.extend(
                _block_changes(match, block, layer.layer_b, model_a, model_b, reader_a, reader_b, transform)
            )
    value.tensors = [t for t in value.tensors if t.name not in covered] + changes


def _matrices(model: CanonicalModel, block: Block, reader: TensorReader) -> dict[str, tuple[str, np.ndarray]]:
    """The block's parts as (display name, matrix): gate and up neurons x hidden, down hidden x neurons."""
    hidden = model.hidden or 0
    out: dict[str, tuple[str, np.ndarray]] = {}
    if block.dense:
        for part, role in DENSE_PARTS.items():
            matrix = model.role(block.layer, role)
            names = model.slots.get((block.layer, role), [role])
            if matrix is not None:
                out[part] = (names[0], _oriented(part, matrix, hidden))
        return out
    for part, name, index in block.parts:
        matrix = reader.read(name)
        if index is not None:
            matrix = matrix[index]
        out[part] = (name if index is None else f"{name}[{index}]", _oriented(part, matrix, hidden))
    return out


def _oriented(part: str, matrix: np.ndarray, hidden: int) -> np.ndarray:
    neurons_first = part != "down"
    if matrix.ndim != 2:
        return matrix
    if neurons_first and matrix.shape[1] != hidden and matrix.shape[0] == hidden:
        return np.ascontiguousarray(matrix.T)
    if not neurons_first and matrix.shape[0] != hidden and matrix.shape[1] == hidden:
        return np.ascontiguousarray(matrix.T)
    return matrix


def _block_changes(
    match: BlockMatch,
    block: Block,
    layer_b: int,
    model_a: CanonicalModel,
    model_b: CanonicalModel,
    reader_a: TensorReader,
    reader_b: TensorReader,
    transform: np.ndarray | None,
) -> list[TensorChange]:
    parts_b = _matrices(model_b, block, reader_b)
    neurons = match.neurons
    if not match.copy or neurons is None or match.source is None:
        return [
            TensorChange(name, "ffn", layer_b, None, int(m.size), NEW, tuple(m.shape))
            for name, m in parts_b.values()
        ]
    if not neurons.complete:  # sampled: the map cannot pair every row
        return [
            TensorChange(name, "ffn", layer_b, match.layer_a, int(m.size), NOT_COMPARED, tuple(m.shape))
            for name, m in parts_b.values()
        ]
    parts_a = _matrices(model_a, match.source, reader_a)
    twinned = neurons.twins >= 0
    rows_b, rows_a = neurons.rows[twinned], neurons.twins[twinned]
    fresh = neurons.rows[~twinned]
    signs = _signs(parts_a, parts_b, rows_a, rows_b)
    out: list[TensorChange] = []
    for part, (name, b) in parts_b.items():
        a_entry = parts_a.get(part)
        role = PART_ROLES[part]
        axis = 1 if part == "down" else 0
        if rows_b.size:
            b_twins = np.take(b, rows_b, axis=axis)
            a_twins = None if a_entry is None else np.take(a_entry[1], rows_a, axis=axis)
            if a_twins is not None and part in ("up", "down") and a_twins.shape == b_twins.shape:
                a_twins = a_twins * (signs[None, :] if axis else signs[:, None])
            if a_twins is not None and a_twins.shape != b_twins.shape:
                a_twins = None
            change = compare_tensor(
                f"{name} ({rows_b.size} neurons twinned in A)",
                role,
                layer_b,
                match.layer_a,
                a_twins,
                b_twins,
                component="ffn",
                transform=transform,
            )
            out.append(change)
        if fresh.size:
            b_fresh = np.take(b, fresh, axis=axis)
            out.append(
                TensorChange(
                    f"{name} ({fresh.size} neurons new)",
                    "ffn",
                    layer_b,
                    None,
                    int(b_fresh.size),
                    NEW,
                    tuple(b_fresh.shape),
                )
            )
    return out


def _signs(
    parts_a: dict[str, tuple[str, np.ndarray]],
    parts_b: dict[str, tuple[str, np.ndarray]],
    rows_a: np.ndarray,
    rows_b: np.ndarray,
) -> np.ndarray:
    """Per twinned neuron, -1 where B's up row points against A's: a neuron whose up row and down
    column are both negated computes the same (the gate's SiLU is not odd, so it keeps its sign)."""
    ones = np.ones(len(rows_b), dtype=np.float32)
    if "up" not in parts_a or "up" not in parts_b:
        return ones
    up_a, up_b = parts_a["up"][1], parts_b["up"][1]
    if up_a.ndim != 2 or up_a.shape[1] != up_b.shape[1]:
        return ones
    dots = np.sum(up_a[rows_a] * up_b[rows_b], axis=1)
    return np.where(dots < 0, -1.0, 1.0).astype(np.float32)
