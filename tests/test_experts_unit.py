"""The neuron-twin statistic behind the expert map (`unshell.lineage.experts`), on synthetic
matrices whose relation is known by construction: a copy with its neurons permuted and signs
flipped (up rows only: what keeps a SwiGLU FFN's function) is a twin; an independent one is not."""

from __future__ import annotations

import numpy as np
import pytest

from unshell.lineage.experts import COPY_MIN_SIMILARITY, neuron_map, twin_similarity, unit_rows


def _ffn(rng: np.random.Generator, neurons: int = 256, hidden: int = 64) -> dict[str, np.ndarray]:
    return {"gate": rng.standard_normal((neurons, hidden)), "up": rng.standard_normal((neurons, hidden))}


def _unit(block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {part: unit_rows(matrix) for part, matrix in block.items()}


def test_a_permuted_sign_flipped_noisy_copy_is_a_twin_and_an_independent_ffn_is_not() -> None:
    rng = np.random.default_rng(15)
    dense = _ffn(rng)
    order = rng.permutation(256)
    signs = rng.choice([-1.0, 1.0], size=(256, 1))
    copy = {
        "gate": dense["gate"][order] + 0.05 * rng.standard_normal((256, 64)),
        "up": (signs * dense["up"])[order] + 0.05 * rng.standard_normal((256, 64)),
    }
    sample = {part: matrix[::2] for part, matrix in _unit(copy).items()}
    assert twin_similarity(sample, _unit(dense)) > 0.95
    other = {part: matrix[::2] for part, matrix in _unit(_ffn(rng)).items()}
    assert twin_similarity(other, _unit(dense)) < COPY_MIN_SIMILARITY


def test_twin_similarity_needs_a_shared_part_of_the_same_width() -> None:
    rng = np.random.default_rng(16)
    block = _unit(_ffn(rng))
    assert twin_similarity({"down": block["up"]}, block) is None
    assert twin_similarity({"up": block["up"][:, :32]}, block) is None


def test_a_fine_grained_expert_maps_to_its_slice_and_its_reinitialized_neurons_have_no_twin() -> None:
    """Truth by construction: the expert holds dense neurons 64..127 (shuffled, 2 % noise), 16 of
    its 64 neurons re-initialized; a whole copy holds all 256."""
    rng = np.random.default_rng(17)
    dense = _ffn(rng)
    order = 64 + rng.permutation(64)
    fresh = rng.permutation(64)[:16]
    expert = {part: m[order] + 0.02 * rng.standard_normal((64, 64)) for part, m in dense.items()}
    for part in expert:
        expert[part][fresh] = rng.standard_normal((16, 64))
    mapped = neuron_map(expert, 64, _unit(dense), None, 64)
    assert mapped is not None and mapped.complete and mapped.fine_grained
    assert mapped.twinned == 48
    assert set(np.flatnonzero(mapped.twins < 0)) == set(fresh)
    kept = np.setdiff1d(np.arange(64), fresh)
    assert np.array_equal(mapped.twins[kept], order[kept])
    assert mapped.runs() == [(int(order[kept].min()), int(order[kept].max()))]
    shuffled = rng.permutation(256)
    whole = neuron_map({p: m[shuffled] for p, m in dense.items()}, 256, _unit(dense), None, 64)
    assert whole is not None and not whole.fine_grained and whole.runs() == [(0, 255)]


def test_hostile_values_leave_unit_rows_finite_and_the_similarity_a_number() -> None:
    """A diverged or hostile FFN: a NaN, an infinity and a value whose square overflows float32,
    each in its own row. The NaN and the infinity count as zero, the overflowing row is a zero
    vector (no twin); every other row is the one a clean matrix gives, and the similarity stays a
    number (it was NaN)."""
    rng = np.random.default_rng(18)
    dense = {part: m.astype(np.float32) for part, m in _ffn(rng).items()}
    hostile = {part: m.copy() for part, m in dense.items()}
    hostile["gate"][0, 5] = np.nan
    hostile["gate"][1, 7] = np.inf
    hostile["up"][2, 3] = np.float32(3e38)  # finite, but its square is not
    kept = {part: m.copy() for part, m in hostile.items()}
    unit = _unit(hostile)
    assert all(np.array_equal(hostile[part], kept[part], equal_nan=True) for part in hostile)  # not modified
    assert all(np.isfinite(m).all() for m in unit.values())
    assert not unit["up"][2].any()  # its length overflows: a zero vector
    for row in (0, 1):  # the NaN and the infinity count as zero; the rest of the row is kept
        assert unit["gate"][row, 5 + 2 * row] == 0.0
        assert np.linalg.norm(unit["gate"][row]) == pytest.approx(1.0, abs=1e-6)
    clean = _unit(dense)
    for part in unit:
        np.testing.assert_array_equal(unit[part][3:], clean[part][3:])
    similarity = twin_similarity({p: m[::2] for p, m in unit.items()}, clean)
    assert similarity is not None and similarity > 0.95
