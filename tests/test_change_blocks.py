"""The value-added account a block of rows at a time (issue 14): the rank of a change read by
blocks agrees with exact singular values, a stored matrix read by rows gives the account of the
whole matrix, and a large matrix's account never holds a whole copy of its change."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from unshell.formats import open_checkpoint
from unshell.formats.safetensors import write_safetensors
from unshell.lineage import change as change_module
from unshell.lineage.change import (
    BLOCK_VALUES,
    COPIED,
    EXACT_RANK_MAX,
    FINETUNED,
    LOW_RANK_ENERGY,
    LOW_RANK_MAX,
    LOW_RANK_MAX_SHARE,
    REQUANTIZED,
    StoredRows,
    change_rank,
    compare_tensor,
)


def exact_rank(delta: np.ndarray) -> tuple[int | None, bool]:
    """The rank `change_rank` stands for, from a full float64 SVD (None past the range finder's
    `SVD_SKETCH` directions on large matrices, where the estimate reports full-rank)."""
    values = np.linalg.svd(delta.astype(np.float64), compute_uv=False)
    energy = np.cumsum(values**2) / np.sum(values**2)
    rank = int(np.flatnonzero(energy >= LOW_RANK_ENERGY)[0]) + 1
    if min(delta.shape) > EXACT_RANK_MAX and rank > change_module.SVD_SKETCH:
        return None, False
    return rank, rank <= LOW_RANK_MAX and rank <= LOW_RANK_MAX_SHARE * min(delta.shape)


def low_rank_plus_noise(
    rng: np.random.Generator, shape: tuple[int, int], spectrum: np.ndarray, noise: float
) -> np.ndarray:
    """U diag(spectrum) V^T with orthonormal U, V, plus Gaussian noise of ``noise`` times the
    low-rank part's RMS."""
    rank = len(spectrum)
    u, _ = np.linalg.qr(rng.standard_normal((shape[0], rank)))
    v, _ = np.linalg.qr(rng.standard_normal((shape[1], rank)))
    low = (u * spectrum) @ v.T
    rms = float(np.sqrt(np.mean(low**2)))
    return (low + noise * rms * rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize(
    ("shape", "spectrum", "noise"),
    [
        ((3000, 700), np.ones(4), 0.02),  # taller than a block: the range finder sums over blocks
        ((3000, 700), 0.8 ** np.arange(40), 0.01),  # a decaying spectrum: rank 11
        ((700, 1200), np.linspace(3.0, 1.0, 30), 0.05),  # wide, rank 30
        ((1500, 600), np.ones(8), 3.0),  # noise outweighs the low-rank part: full-rank
        ((2000, 300), np.linspace(2.0, 1.0, 20), 0.05),  # small side: exact Gram, summed by blocks
        ((200, 4000), np.ones(12), 0.01),  # small side: exact, held whole
    ],
)
def test_blocked_rank_matches_exact_singular_values(
    shape: tuple[int, int], spectrum: np.ndarray, noise: float
) -> None:
    delta = low_rank_plus_noise(np.random.default_rng(7), shape, spectrum, noise)
    assert delta.size > BLOCK_VALUES  # read in several blocks
    assert change_rank(delta) == exact_rank(delta)


def test_spread_change_is_screened_out_and_low_rank_one_is_not() -> None:
    rng = np.random.default_rng(3)
    spread = rng.standard_normal((2000, 800)).astype(np.float32)
    assert change_rank(spread) == (None, False)
    signs = change_module._screen_signs(800)
    assert change_module._spread(change_module.screen_product(spread, signs))
    lora = low_rank_plus_noise(rng, (2000, 800), np.ones(40), 0.05)
    assert not change_module._spread(change_module.screen_product(lora, signs))
    assert change_rank(lora) == exact_rank(lora) == (40, True)


def test_stored_rows_give_the_account_of_the_whole_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    a = rng.standard_normal((1024, 768)).astype(np.float32)
    lora = low_rank_plus_noise(rng, (1024, 768), np.ones(6), 0.01)
    tuned = a + 0.05 * lora / np.sqrt(np.mean(lora**2))  # 5 % of A's RMS, far above bf16 rounding
    # A's rows in llama.cpp's interleaved rotary layout (heads of 64), as a GGUF query stores them.
    interleaved = a.reshape(16, 2, 32, 768).swapaxes(1, 2).reshape(a.shape)
    path = tmp_path / "pair.safetensors"
    write_safetensors(
        path,
        {"a": a, "tuned": tuned, "cast": a, "interleaved": interleaved},
        dtypes={"a": "BF16", "tuned": "BF16", "cast": "F16", "interleaved": "BF16"},
    )
    checkpoint = open_checkpoint(path)
    stored = {name: StoredRows(checkpoint, name) for name in ("a", "tuned", "cast", "interleaved")}
    whole = {name: np.asarray(checkpoint.read(name), dtype=np.float32) for name in stored}
    for name in ("tuned", "cast"):
        by_rows = compare_tensor(name, "mlp.up.weight", 0, 0, stored["a"], stored[name])
        at_once = compare_tensor(name, "mlp.up.weight", 0, 0, whole["a"], whole[name])
        assert by_rows == at_once
    assert at_once.kind == REQUANTIZED and at_once.explained_by == "bf16/f16 cast"
    by_rows = compare_tensor("q", "attn.q.weight", 0, 0, stored["a"], stored["interleaved"])
    assert by_rows == compare_tensor("q", "attn.q.weight", 0, 0, whole["a"], whole["interleaved"])
    assert by_rows.kind == COPIED  # the layout was found on a sample of rows, then every row agreed
    tuned_change = compare_tensor("tuned", "mlp.up.weight", 0, 0, stored["a"], stored["tuned"])
    assert tuned_change.kind == FINETUNED and tuned_change.low_rank and tuned_change.rank == 6
    head = stored["tuned"].head(100)
    assert head.shape == (100, 768) and np.array_equal(head.block(0, 100), whole["tuned"][:100])


@pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning"
)
def test_stored_rows_zero_non_finite_values_in_the_account(tmp_path: Path) -> None:
    # The pass over both matrices reads their blocks without the finiteness check, which their sums
    # of squares stand for: a NaN in A, an infinity in B and a value whose square overflows float32
    # must give the account of the matrices with their non-finite values zeroed, as before. The
    # change's squares overflow float32: a matrix this large (past `EXACT_RANK_MAX`) is then
    # reported full-rank, where its rank screen used to hand LAPACK infinities (LinAlgError).
    rng = np.random.default_rng(12)
    a = rng.standard_normal((1024, 768)).astype(np.float32)
    tuned = a + 0.05 * rng.standard_normal(a.shape).astype(np.float32)
    a[5, 7], tuned[900, 3], tuned[600, 1] = np.nan, np.inf, 3e20
    path = tmp_path / "pair.safetensors"
    write_safetensors(path, {"a": a, "tuned": tuned}, dtypes={"a": "BF16", "tuned": "BF16"})
    checkpoint = open_checkpoint(path)
    whole = {name: np.asarray(checkpoint.read(name), dtype=np.float32) for name in ("a", "tuned")}
    zeroed = {name: np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0) for name, values in whole.items()}
    by_rows = compare_tensor(
        "tuned", "mlp.up.weight", 0, 0, StoredRows(checkpoint, "a"), StoredRows(checkpoint, "tuned")
    )
    assert by_rows == compare_tensor("tuned", "mlp.up.weight", 0, 0, zeroed["a"], zeroed["tuned"])
    assert by_rows.kind == FINETUNED and by_rows.relative_change == float("inf")  # 3e20 squared


@pytest.mark.parametrize("low_rank", [False, True])
def test_large_account_holds_no_whole_change(low_rank: bool) -> None:
    rng = np.random.default_rng(5)
    shape = (16384, 1024)  # 64 MiB of float32 per side; a float64 change would be 128 MiB
    a = rng.standard_normal(shape, dtype=np.float32)
    if low_rank:
        u = rng.standard_normal((shape[0], 4), dtype=np.float32)
        v = rng.standard_normal((4, shape[1]), dtype=np.float32)
        b = a + 0.01 * (u @ v)
    else:
        b = a + 0.01 * rng.standard_normal(shape, dtype=np.float32)
    tracemalloc.start()
    try:
        change = compare_tensor("w", "mlp.up.weight", 0, 0, a, b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert change.kind == FINETUNED
    assert (change.rank, change.low_rank) == ((4, True) if low_rank else (None, False))
    assert change.relative_change == pytest.approx(0.01 * (2.0 if low_rank else 1.0), rel=0.05)
    # Blocks, the rank screen's product (rows x 64 float32, 4 MiB) and the range finder's basis
    # (rows x 48 float64, 6 MiB, a few copies in its QR): under two thirds of one float32 copy of
    # the change (64 MiB), a third of a float64 one.
    assert peak < 40 * 2**20, peak


def test_stored_rows_release_their_pages_on_every_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "one.safetensors"
    write_safetensors(path, {"w": np.ones((4096, 256), dtype=np.float32)}, dtypes={"w": "BF16"})
    checkpoint = open_checkpoint(path)
    monkeypatch.setattr(change_module, "RELEASE_BYTES", 64 * 1024)
    released: list[tuple[int, int]] = []
    release = checkpoint.release
    monkeypatch.setattr(
        checkpoint, "release", lambda info: (released.append((info.offset, info.nbytes)), release(info))
    )
    rows = StoredRows(checkpoint, "w")
    for _ in range(2):  # the range finder reads a change several times over
        for start, stop in change_module._spans(rows.rows, rows.columns):
            rows.block(start, stop)
    from_the_top = [size for offset, size in released if offset == rows.info.offset]
    assert len(from_the_top) == 2 and all(size < rows.info.nbytes for size in from_the_top)
    assert sum(size for _, size in released) == 2 * rows.info.nbytes  # every page, once a pass


def test_without_a_layer_map_every_layer_is_against_its_own_index(tmp_path: Path) -> None:
    """`assess` with no layer map pairs each layer of B with A's of the same index: all three of
    them, not only the first (the map once filled up after layer 0 and left the rest "added")."""
    from foreign_layouts import make_tiny_llama
    from unshell.lineage.canonical import canonical_model
    from unshell.lineage.change import assess

    folder = make_tiny_llama(tmp_path / "a", layers=3)
    with open_checkpoint(folder) as checkpoint:
        model = canonical_model(checkpoint)
        value = assess(model, model, [], None)
    layer_kinds = {(t.layer_b, t.kind) for t in value.tensors if t.layer_b is not None}
    assert {layer for layer, _ in layer_kinds} == {0, 1, 2}
    assert {kind for _, kind in layer_kinds} == {COPIED}
    assert "added layers" not in {t.component for t in value.tensors}
