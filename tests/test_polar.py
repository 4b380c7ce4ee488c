"""The alignment's polar factor and residuals (`lineage.sketch`) against their definitions: the
SVD's ``U Vᵀ`` and the residual of the fitted rows written out, so the faster forms change no
transform and no residual beyond float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest

from unshell.lineage.sketch import align_embeddings, fit_rotation, polar_factor, procrustes_residual


def _svd_polar(matrix: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
    result: np.ndarray = u @ vt
    return result


def _written_out_residual(a: np.ndarray, b: np.ndarray, transform: np.ndarray) -> float:
    """The residual as the definition says: fit ``b @ transform`` to ``a`` with a free scale."""
    fitted = b.astype(np.float64) @ transform.astype(np.float64)
    target = a.astype(np.float64)
    scale = float(np.sum(fitted * target)) / float(np.sum(fitted * fitted))
    return float(np.linalg.norm(scale * fitted - target) / np.linalg.norm(target))


def _anisotropic_rows(rng: np.random.Generator, rows: int, hidden: int, decades: float) -> np.ndarray:
    scales = np.exp(np.linspace(0.0, -decades * np.log(10.0), hidden))
    return (rng.standard_normal((rows, hidden)) * scales).astype(np.float32)


@pytest.mark.parametrize(
    ("rows", "cols", "decades"), [(64, 64, 0.0), (96, 64, 2.0), (64, 96, 3.0), (200, 200, 1.0)]
)
def test_polar_factor_is_the_svd_factor(rows: int, cols: int, decades: float) -> None:
    rng = np.random.default_rng(rows * 1000 + cols)
    matrix = rng.standard_normal((rows, cols)) * np.exp(np.linspace(0.0, -decades * np.log(10.0), cols))
    factor = polar_factor(matrix)
    assert factor.shape == (rows, cols)
    np.testing.assert_allclose(factor, _svd_polar(matrix), atol=1e-9)
    small = min(rows, cols)
    gram = factor.T @ factor if rows >= cols else factor @ factor.T
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-10)


def test_polar_factor_falls_back_to_the_svd_where_the_gram_is_singular() -> None:
    rng = np.random.default_rng(1)
    low_rank = rng.standard_normal((50, 5)) @ rng.standard_normal((5, 40))  # rank 5 of 40
    np.testing.assert_array_equal(polar_factor(low_rank), _svd_polar(low_rank))
    zero = np.zeros((8, 8))
    np.testing.assert_array_equal(polar_factor(zero), _svd_polar(zero))


@pytest.mark.parametrize(("hidden_a", "hidden_b"), [(48, 48), (48, 32), (32, 48)])
def test_procrustes_transform_and_residuals_match_their_definitions(hidden_a: int, hidden_b: int) -> None:
    rng = np.random.default_rng(hidden_a + 7 * hidden_b)
    rows = 400
    a = _anisotropic_rows(rng, rows, hidden_a, 1.5)
    mix = np.linalg.qr(rng.standard_normal((max(hidden_a, hidden_b), max(hidden_a, hidden_b))))[0]
    b = (a @ mix[:hidden_a, :hidden_b]).astype(np.float32) + 0.2 * _anisotropic_rows(rng, rows, hidden_b, 1.5)
    a -= a.mean(axis=0)
    b -= b.mean(axis=0)
    alignment = align_embeddings(a.copy(), b.copy(), chance=True)
    expected = _svd_polar(b.T.astype(np.float64) @ a.astype(np.float64))
    np.testing.assert_allclose(alignment.transform, expected, atol=2e-5)
    assert alignment.residual == pytest.approx(_written_out_residual(a, b, expected), rel=1e-4)
    order = np.random.default_rng(20_018).permutation(rows)
    shuffled = b[order]
    chance = _written_out_residual(
        a, shuffled, _svd_polar(shuffled.T.astype(np.float64) @ a.astype(np.float64))
    )
    assert alignment.chance == pytest.approx(chance, rel=1e-4)
    assert procrustes_residual(a, shuffled) == pytest.approx(chance, rel=1e-4)
    assert alignment.residual < alignment.chance


def test_fit_rotation_recovers_a_rotation_of_the_moments() -> None:
    rng = np.random.default_rng(3)
    hidden = 24
    rotation = np.linalg.qr(rng.standard_normal((hidden, hidden)))[0]
    grams_a = []
    for _ in range(6):
        vectors = _anisotropic_rows(rng, 80, hidden, 1.0).astype(np.float64)
        grams_a.append(vectors.T @ vectors)
    grams_b = [rotation @ g @ rotation.T for g in grams_a]  # x_A = x_B @ rotation
    transform = fit_rotation(grams_a, grams_b)
    for ga, gb in zip(grams_a, grams_b, strict=True):
        aligned = transform.T.astype(np.float64) @ gb @ transform
        assert np.linalg.norm(aligned - ga) / np.linalg.norm(ga) < 1e-4
