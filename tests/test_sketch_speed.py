"""The fast paths of the sketches and of the anchor fit give what the plain definitions give.

`sketch.unit_sketch` takes a matrix's std, its finiteness and its row lengths from one pass of row
moments and scales the rows after projecting them; `fingerprint.AnchorGram` makes the anchor
least squares' Gram once for every fit against the same rows. The references here are the
definitions written out, as the code computed them before (issue 14): replace NaN and infinities
by zero, take ``std()``, divide each row by its norm, then `gram_sketch`; centre, solve the ridge
normal equations, take the polar factor, measure the fitted rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unshell.lineage.fingerprint import RIDGE, AnchorGram, AnchorGrams, fit_anchor_basis
from unshell.lineage.sketch import all_finite, finite, gram_sketch, polar_factor, projection, unit_sketch


def reference_unit(
    vectors: np.ndarray, basis: np.ndarray, gain: np.ndarray | None
) -> tuple[np.ndarray, float]:
    if gain is not None:
        vectors = vectors * gain[None, :]
    with np.errstate(over="ignore", invalid="ignore"):
        vectors = finite(np.array(vectors, dtype=np.float32))
        std = float(vectors.std())
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return gram_sketch(vectors / np.maximum(norms, 1e-12), basis), std


def reference_fit(rows_b: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    x = np.asarray(rows_b, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    y = np.asarray(target, dtype=np.float64)
    y = y - y.mean(axis=0, keepdims=True)
    gram = x.T @ x
    ridge = RIDGE * max(float(np.trace(gram)) / gram.shape[0], 1e-30)
    solution = np.linalg.solve(gram + ridge * np.eye(gram.shape[0]), x.T @ y)
    basis = polar_factor(solution)
    fitted = x @ basis
    scale = float(np.sum(fitted * y)) / max(float(np.sum(fitted * fitted)), 1e-30)
    residual = float(np.linalg.norm(scale * fitted - y)) / max(float(np.linalg.norm(y)), 1e-30)
    return basis.astype(np.float32), residual


@pytest.mark.parametrize("orientation", ["rows", "columns"])
@pytest.mark.parametrize("with_gain", [False, True])
def test_unit_sketch_is_the_plain_definition(orientation: str, with_gain: bool) -> None:
    rng = np.random.default_rng(7)
    hidden = 96
    matrix = (rng.standard_normal((300, hidden)) * 0.02 + 0.001).astype(np.float32)
    matrix[5] *= 40.0  # rows of very different lengths
    matrix[9] = 0.0  # and a zero row
    # "columns": the vectors are the columns of a stored matrix (a transposed, non-contiguous view).
    stored = matrix if orientation == "rows" else np.ascontiguousarray(matrix.T)

    def view(array: np.ndarray) -> np.ndarray:
        return array if orientation == "rows" else array.T

    vectors = view(stored)
    gain = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32) if with_gain else None
    basis = projection(hidden, 32)
    expected, expected_std = reference_unit(vectors, basis, gain)
    sketch, std = unit_sketch(view(stored.copy()), basis, gain=gain, overwrite=True)
    assert sketch.dtype == np.float32 and sketch.shape == expected.shape
    np.testing.assert_allclose(sketch, expected, atol=2e-6)
    assert math.isclose(std, expected_std, rel_tol=1e-5)
    # The caller's array is left alone unless it said it may be overwritten.
    kept = vectors.copy()
    unit_sketch(kept, basis, gain=gain)
    np.testing.assert_array_equal(kept, vectors)


def test_unit_sketch_treats_non_finite_and_overflowing_values_as_the_definition_does() -> None:
    rng = np.random.default_rng(3)
    basis = projection(64, 16)
    matrix = (rng.standard_normal((80, 64)) * 0.05).astype(np.float32)
    matrix[2, 3] = np.inf
    matrix[4, :] = np.nan
    matrix[6, 1] = -np.inf
    expected, expected_std = reference_unit(matrix, basis, None)
    sketch, std = unit_sketch(matrix.copy(), basis)
    np.testing.assert_allclose(sketch, expected, atol=2e-6)
    assert math.isclose(std, expected_std, rel_tol=1e-5)
    # A gain that overflows float32 products (the fuzzing regression): same path as before.
    gain = np.ones(64, dtype=np.float32)
    gain[0] = 3e38
    expected, expected_std = reference_unit(matrix, basis, gain)
    with np.errstate(over="ignore", invalid="ignore"):
        sketch, std = unit_sketch(matrix.copy(), basis, gain=gain)
    assert np.isfinite(sketch).all()
    np.testing.assert_allclose(sketch, expected, atol=2e-6)
    assert std == expected_std or (math.isinf(std) and math.isinf(expected_std))


def test_all_finite_by_the_sum_and_element_wise() -> None:
    values = np.ones((50, 40), dtype=np.float32)
    assert all_finite(values)
    for bad in (np.nan, np.inf, -np.inf):
        damaged = values.copy()
        damaged[7, 9] = bad
        assert not all_finite(damaged)
    pair = values.copy()
    pair[0, 0], pair[1, 1] = np.inf, -np.inf  # their sum is NaN, not infinite
    assert not all_finite(pair)
    huge = np.full((4, 4), 3e38, dtype=np.float32)  # finite, but the sum overflows
    assert all_finite(huge)
    assert all_finite(np.zeros((0, 3), dtype=np.float32))
    assert all_finite(np.arange(6))


def test_anchor_gram_fits_as_the_plain_least_squares() -> None:
    rng = np.random.default_rng(11)
    rows, hidden, r = 400, 48, 16
    rows_b = rng.standard_normal((rows, hidden)).astype(np.float32) + 0.3
    rotation = np.linalg.qr(rng.standard_normal((hidden, hidden)))[0]
    targets = [
        ((rows_b @ rotation)[:, :r] + 0.05 * rng.standard_normal((rows, r))).astype(np.float32),
        rng.standard_normal((rows, r)).astype(np.float32),  # unrelated rows: a poor fit
    ]
    gram = AnchorGram(rows_b)
    fits = gram.fit(rows_b, targets)
    for (basis, residual), target in zip(fits, targets, strict=True):
        expected_basis, expected_residual = reference_fit(rows_b, target)
        np.testing.assert_allclose(basis, expected_basis, atol=1e-5)
        assert math.isclose(residual, expected_residual, rel_tol=1e-9)
    assert fits[0][1] < 0.2 < fits[1][1]
    # The chance fit pairs B's rows at random: the same Gram serves it.
    order = np.random.default_rng(0).permutation(rows)
    shuffled = gram.fit(rows_b[order], [targets[0]])[0]
    expected = reference_fit(rows_b[order], targets[0])
    np.testing.assert_allclose(shuffled[0], expected[0], atol=1e-5)
    assert math.isclose(shuffled[1], expected[1], rel_tol=1e-9)
    assert fit_anchor_basis(rows_b, targets[0])[1] == fits[0][1]


def test_anchor_grams_are_shared_by_content_and_bounded() -> None:
    rng = np.random.default_rng(5)
    grams = AnchorGrams()
    first = rng.standard_normal((60, 8)).astype(np.float32)
    kept = grams.of(first)
    assert grams.of(first.copy()) is kept  # by content, not by array
    others = [rng.standard_normal((60, 8)).astype(np.float32) for _ in range(AnchorGrams.KEEP)]
    for rows in others:
        assert grams.of(rows) is not kept
    assert grams.of(others[-1].copy()) is grams.of(others[-1])
    assert grams.of(first) is not kept  # the least recently used was let go


def test_a_search_sketches_its_suspect_once_per_basis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Independent bases of the suspect's width do not anchor it, so each is tried under the
    identity alignment too: the suspect is sketched under that shared basis once, and the search
    gives what it gives when every candidate sketches it afresh."""
    from foreign_layouts import make_tiny_llama
    from unshell.library import Library, search
    from unshell.lineage import compare
    from unshell.lineage.canonical import CanonicalModel
    from unshell.lineage.fingerprint import fingerprint

    library = Library(tmp_path / "library.sqlite")
    for seed in (1, 2):
        path = make_tiny_llama(tmp_path / f"base-{seed}", seed=seed)
        library.add(fingerprint(path), name=f"base-{seed}")
    suspect = make_tiny_llama(tmp_path / "suspect", seed=3)

    def digest(basis: np.ndarray) -> bytes:
        return np.ascontiguousarray(basis).tobytes()

    requested: list[bytes] = []
    sketched: list[bytes] = []
    suspect_units, model_units = compare.suspect_units, compare.model_units

    def requesting(model: Any, hidden: int, basis: np.ndarray, **options: Any) -> Any:
        requested.append(digest(basis))
        return suspect_units(model, hidden, basis, **options)

    def sketching(model: Any, hidden: int, basis: np.ndarray, **options: Any) -> Any:
        sketched.append(digest(basis))
        return model_units(model, hidden, basis, **options)

    monkeypatch.setattr(compare, "suspect_units", requesting)
    monkeypatch.setattr(compare, "model_units", sketching)
    shared = search(suspect, library, top=2, workers=1).to_dict()
    assert shared["tested"] == 2
    assert len(requested) > len(set(requested))  # a basis was asked for by both candidates...
    assert all(sketched.count(key) == 1 for key in set(requested))  # ...and sketched once

    monkeypatch.setattr(CanonicalModel, "memo", lambda self, key, compute, keep=2: compute())
    alone = search(suspect, library, top=2, workers=1).to_dict()
    for out in (shared, alone):
        out.pop("timing")
    assert shared == alone
