"""A checkpoint seen through its roles: per-layer matrices in one orientation, names forgotten.

Lineage works on what a tensor *is* (the query projection of layer 7), never on what it is called,
so that renaming, resharding and fused layouts make no difference. Fused tensors are split into
their parts; norm gains are folded into the matrices that read the normalized stream, because a
disguiser can do the same fold (and then rotate the residual stream) without changing the function.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..arch.catalog import Family, family_by_id
from ..formats.base import Checkpoint
from ..inspection import InspectResult, inspect_checkpoint
from .sketch import finite

T = TypeVar("T")

# Matrices that read the residual stream, and the norm whose gain multiplies their input.
READS_RESIDUAL = {
    "attn.q.weight": "attn_norm.weight",
    "attn.k.weight": "attn_norm.weight",
    "attn.v.weight": "attn_norm.weight",
    "mlp.gate.weight": "ffn_norm.weight",
    "mlp.up.weight": "ffn_norm.weight",
}
WRITES_RESIDUAL = ("attn.o.weight", "mlp.down.weight")
LAYER_ROLES = tuple(READS_RESIDUAL) + WRITES_RESIDUAL


@dataclass
class CanonicalModel:
    """Lazy per-layer access to a recognized checkpoint's weights by role."""

    checkpoint: Checkpoint
    result: InspectResult
    family: Family | None
    layers: list[int]
    # (layer or None, role) -> source tensor names; several names when the role is ambiguous.
    slots: dict[tuple[int | None, str], list[str]] = field(default_factory=dict)
    fused: dict[tuple[int | None, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # What `memo` keeps: results of whole passes over the weights that several comparisons of this
    # model may share (a search's candidates), the most recently used last.
    _memos: OrderedDict[Hashable, Any] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )
    # What `hold` was given: values made ahead for keys that `memo` will be asked for, kept until
    # the next `hold` (a search's batch of candidates, several of which may share one).
    _held: dict[Hashable, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def memo(self, key: Hashable, compute: Callable[[], T], *, keep: int = 2) -> T:
        """``compute()``, or the value it gave for ``key`` while this model is open: one of the
        ``keep`` most recently used (a bound on the memory held), or a value `hold` holds.
        ``compute`` runs outside the lock: two threads asking for a new key at once may both
        compute it (the same value)."""
        with self._memo_lock:
            if key in self._held:
                held: T = self._held[key]
                return held
            if key in self._memos:
                self._memos.move_to_end(key)
                found: T = self._memos[key]
                return found
        value = compute()
        with self._memo_lock:
            self._memos[key] = value
            while len(self._memos) > keep:
                self._memos.popitem(last=False)
        return value

    def hold(self, values: dict[Hashable, Any]) -> None:
        """Values made ahead for `memo`'s keys (a batch of a search's candidates), in place of any
        held before: `memo` gives them for their keys until the next batch, outside its ``keep``
        most recently used (a batch's candidates share some, and other passes come between)."""
        with self._memo_lock:
            self._held = dict(values)

    @property
    def hidden(self) -> int | None:
        value = self.result.recognition.config.get("hidden_size")
        return int(value) if value else None

    def tensor(self, name: str) -> np.ndarray:
        return finite(np.asarray(self.checkpoint.read(name), dtype=np.float32))

    def role(self, layer: int | None, role: str) -> np.ndarray | None:
        """The matrix of one role, unfolded (raw values), or None if absent or ambiguous."""
        names = self.slots.get((layer, role))
        if names and len(names) == 1:
            return self.tensor(names[0])
        fused = self.fused.get((layer, role))
        if fused is not None:
            return self._split(fused[0], fused[1], role)
        return None

    def folded(self, layer: int | None, role: str) -> np.ndarray | None:
        matrix = self.role(layer, role)
        if matrix is None or role not in READS_RESIDUAL:
            return matrix
        gain = self.role(layer, READS_RESIDUAL[role])
        if gain is not None and gain.shape == (matrix.shape[1],):
            with np.errstate(over="ignore", invalid="ignore"):  # huge gains: non-finite, handled by readers
                return matrix * gain[None, :]
        return matrix

    def embedding(self) -> np.ndarray | None:
        return self.role(None, "embed.weight")

    def _split(self, name: str, spec: dict[str, Any], role: str) -> np.ndarray | None:
        from ..arch.expr import parse_linear

        values = dict(self._symbol_values())
        sizes = [parse_linear(s).evaluate(values) for s in spec["sizes"]]
        if any(s is None for s in sizes) or spec.get("layout", "contiguous") != "contiguous":
            return None
        array = self.tensor(name)
        axis = int(spec.get("axis", 0))
        if spec.get("transposed"):
            array = array.T
            axis = 1 - axis if array.ndim == 2 else axis
        offsets = np.cumsum([0, *sizes])
        index = spec["parts"].index(role)
        piece = np.take(array, np.arange(offsets[index], offsets[index + 1]), axis=axis)
        return np.asarray(piece)

    def _symbol_values(self) -> Iterator[tuple[str, int]]:
        config = self.result.recognition.config
        hidden = config.get("hidden_size")
        heads, kv, head_dim = (
            config.get("num_attention_heads"),
            config.get("num_key_value_heads"),
            config.get("head_dim"),
        )
        inter = config.get("intermediate_size")
        if hidden:
            yield "H", int(hidden)
        if inter:
            yield "I", int(inter)
        if heads and head_dim:
            yield "Q", int(heads) * int(head_dim)
        if kv and head_dim:
            yield "K", int(kv) * int(head_dim)


def canonical_model(checkpoint: Checkpoint, result: InspectResult | None = None) -> CanonicalModel:
    """Index a checkpoint's tensors by (layer, role) using architecture recognition."""
    result = result or inspect_checkpoint(checkpoint)
    recognition = result.recognition
    family = family_by_id(recognition.matched_family) if recognition.matched_family else None
    fused_specs: dict[str, Any] = dict(family.facts.get("fused", {})) if family else {}
    model = CanonicalModel(checkpoint=checkpoint, result=result, family=family, layers=[])
    layers: set[int] = set()
    for assignment in recognition.assignments:
        layer = assignment.layer
        if layer is not None:
            layers.add(layer)
        if assignment.role is not None:
            model.slots.setdefault((layer, assignment.role), []).append(assignment.name)
            spec = fused_specs.get(assignment.role)
            if spec is not None:
                for part in spec["parts"]:
                    model.fused[(layer, part)] = (assignment.name, spec)
        elif assignment.candidates:
            # Every candidate role lists the tensor, so `role()` sees the ambiguity and declines.
            for role in assignment.candidates:
                model.slots.setdefault((layer, role), []).append(assignment.name)
    model.layers = sorted(layers)
    return model
