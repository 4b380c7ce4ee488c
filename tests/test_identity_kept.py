"""The embedding alignment keeps the identity, unfitted, where the anchor rows already agree
untransformed (`sketch.IDENTITY_KEPT_RESIDUAL`), and fits a rotation everywhere else.

Skipping the fit is what makes `compare --quick` of a 7B-shaped pair 10x cheaper (the fit is an
H x H eigendecomposition); these tests pin that it is skipped only where the identity is the
answer, that independent models are still fitted (their p-values are unchanged: the null stays
where it was), and that both of `compare`'s paths (A's rows, a fingerprint's projected anchors)
follow the rule on a real model.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import unshell
from unshell.lineage.sketch import IDENTITY_KEPT_RESIDUAL, align_embeddings, is_identity, off_identity


def _anchors(seed: int, rows: int = 600, hidden: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.exp(np.linspace(0.0, -1.5 * np.log(10.0), hidden))  # anisotropic, as embeddings are
    return (rng.standard_normal((rows, hidden)) * scales).astype(np.float32)


def _written_out_residual(a: np.ndarray, b: np.ndarray) -> float:
    """Centered rows of B against A's, untransformed, at the best free scale (the definition)."""
    target = a.astype(np.float64) - a.mean(axis=0)
    fitted = b.astype(np.float64) - b.mean(axis=0)
    scale = float(np.sum(fitted * target)) / float(np.sum(fitted * fitted))
    return float(np.linalg.norm(scale * fitted - target) / np.linalg.norm(target))


def _noisy(a: np.ndarray, relative: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(a.shape).astype(np.float32)
    return a + noise * (relative * np.linalg.norm(a) / np.linalg.norm(noise))


def test_rows_that_agree_untransformed_keep_the_identity() -> None:
    a = _anchors(0)
    b = _noisy(a, 0.1, 1)  # a fine-tune's drift: 10 % of the rows' norm
    alignment = align_embeddings(a.copy(), b.copy())
    assert alignment.fitted is False and alignment.identity is True
    np.testing.assert_array_equal(alignment.transform, np.eye(48, dtype=np.float32))
    assert alignment.apply(b) is b  # finite rows, unmoved: no product
    hostile = b.copy()
    hostile[0, 0] = np.inf
    with np.errstate(invalid="ignore"):  # inf x 0 in the product: the NaN this line checks for
        applied = alignment.apply(hostile)
    assert np.isnan(applied[0]).any()  # a non-finite row keeps the product's NaN
    assert alignment.residual == pytest.approx(_written_out_residual(a, b), rel=1e-5)
    assert alignment.residual == alignment.untransformed < IDENTITY_KEPT_RESIDUAL
    assert alignment.method == "procrustes-embeddings"


def test_rows_beyond_the_bound_or_rotated_are_fitted() -> None:
    a = _anchors(2)
    drifted = _noisy(a, 0.45, 3)  # heavier retraining: the identity no longer fits well enough
    assert _written_out_residual(a, drifted) > IDENTITY_KEPT_RESIDUAL
    refit = align_embeddings(a.copy(), drifted.copy())
    assert refit.fitted is True and refit.identity is False

    rotation = np.linalg.qr(np.random.default_rng(4).standard_normal((48, 48)))[0].astype(np.float32)
    rotated = _noisy(a, 0.05, 5) @ rotation.T  # a rotated stream, lightly fine-tuned
    alignment = align_embeddings(a.copy(), rotated.copy())
    assert alignment.fitted is True and alignment.identity is False
    np.testing.assert_array_equal(alignment.apply(rotated), rotated @ alignment.transform)
    assert alignment.untransformed > 0.9  # the identity explains nothing here...
    assert alignment.residual < 0.1  # ...and the fitted rotation nearly everything
    np.testing.assert_allclose(alignment.transform, rotation, atol=0.05)


def test_independent_rows_are_fitted() -> None:
    a, b = _anchors(6), _anchors(7)  # same spectrum, unrelated rows: what independent models share
    alignment = align_embeddings(a.copy(), b.copy())
    assert alignment.fitted is True
    assert alignment.untransformed > 0.9


def test_different_widths_are_fitted() -> None:
    a = _anchors(8, hidden=48)
    b = _noisy(a[:, :32], 0.01, 9)  # a width-pruned copy: no identity between 32 and 48 dimensions
    alignment = align_embeddings(a.copy(), b.copy())
    assert alignment.fitted is True and alignment.transform.shape == (32, 48)


@pytest.mark.slow
def test_a_real_finetune_keeps_the_identity_in_compare_and_against_a_fingerprint(tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct as published (Q4_1 GGUF, H 576) against a stand-in fine-tune made
    here: every matrix dequantized, moved by Gaussian noise of 5 % of its own std and stored as
    bf16 safetensors under the GGUF's names. Through A's rows (`compare`) and through the
    fingerprint's projected anchors (H 576 is above `FULL_ANCHOR_MAX_HIDDEN`: the search path),
    the identity is kept and the pair is still `derived`."""
    from artifacts import fetch
    from unshell.formats import open_checkpoint
    from unshell.formats.safetensors import write_safetensors
    from unshell.lineage.fingerprint import FULL_ANCHOR_MAX_HIDDEN, compare_with_fingerprint

    source = fetch("smollm2_gguf")
    rng = np.random.default_rng(0)
    tensors = {}
    with open_checkpoint(source) as gguf:
        for name in gguf.tensors:
            values = np.asarray(gguf.read(name), dtype=np.float32)
            if values.ndim == 2:
                noise = rng.standard_normal(values.shape, dtype=np.float32)
                values = values + noise * np.float32(0.05 * values.std())
            tensors[name] = values
    derived = tmp_path / "finetuned.safetensors"
    write_safetensors(derived, tensors, dtypes=dict.fromkeys(tensors, "BF16"))

    compared = unshell.compare(source, derived)
    assert compared.verdict == "derived" and "finetune" in compared.how
    assert compared.anchored is not None and compared.anchored.fitted is False
    assert compared.anchored.residual < 0.1
    assert compared.to_dict()["evidence"]["alignment"]["anchor_fitted"] is False

    base = unshell.fingerprint(source)
    assert (base.hidden or 0) > FULL_ANCHOR_MAX_HIDDEN  # anchors stored as projections
    against = compare_with_fingerprint(base, derived)
    assert against.verdict == "derived"
    assert against.anchored is not None and against.anchored.fitted is False
    assert against.anchored.residual < 0.1


def _written_out_off_identity(transform: np.ndarray) -> float:
    """The definition: RMS distance from the identity per dimension, through the H x H difference."""
    return float(np.linalg.norm(transform - np.eye(transform.shape[0]))) / np.sqrt(transform.shape[0])


def test_off_identity_is_the_definition_and_tells_the_identity_apart() -> None:
    rng = np.random.default_rng(6)
    identity = np.eye(64, dtype=np.float32)
    rotation = np.linalg.qr(rng.standard_normal((64, 64)))[0].astype(np.float32)
    near = identity + rng.standard_normal((64, 64)).astype(np.float32) * 1e-3  # a fine-tune's fit
    one_off = identity.copy()
    one_off[3, 5] = 1e-30  # a single tiny off-diagonal value is not the identity
    flipped = identity.copy()
    flipped[7, 7] = -1.0  # a sign flip has the identity's non-zero pattern
    scaled = identity * np.float32(1.0000001)
    for transform in (rotation, near, one_off, flipped, scaled):
        assert not is_identity(transform)
        assert off_identity(transform) == _written_out_off_identity(transform)
    assert is_identity(identity) and off_identity(identity) == 0.0
    assert not is_identity(np.eye(64, 65, dtype=np.float32))  # not square
    assert off_identity(flipped) == pytest.approx(2 / 8)


def test_the_kept_identity_costs_no_h_by_h_temporary() -> None:
    # A 7B model's kept identity (H 4096): the definition's float64 difference is 128 MiB, and
    # `compare` asks for it several times a comparison. The identity is told in two reads.
    identity = np.eye(4096, dtype=np.float32)
    tracemalloc.start()
    try:
        assert off_identity(identity) == 0.0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
