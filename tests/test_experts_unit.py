"""The neuron-twin statistic behind the expert map (`unshell.lineage.experts`), on synthetic
matrices whose relation is known by construction: a copy with its neurons permuted and signs
flipped (up rows only: what keeps a SwiGLU FFN's function) is a twin; an independent one is not."""

from __future__ import annotations

import numpy as np

from unshell.lineage.experts import COPY_MIN_SIMILARITY, twin_similarity, unit_rows


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
