"""Row-sampled sketches (`sketch.sampled_rows`, `compare.tensor_units`' ``sample``).

A matrix with more vectors in residual space than `sketch.row_sample_size` (8 per sketch dimension)
is sketched from a fixed sample of them. The sample must be a function of the vector count alone
(never of a value: that is what keeps the null calibrated), the same on every run and machine (a
fingerprint written today is compared with a checkpoint sketched tomorrow), and a matrix of at most
that many vectors must be sketched exactly as before. Fingerprints record the sample (format 3);
format 2 ones, which sketched every vector, still load and are compared the way they were made.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from foreign_layouts import make_tiny_llama, read_safetensors_dir
from unshell.errors import CorruptCheckpointError
from unshell.formats import open_checkpoint
from unshell.formats.safetensors import write_safetensors
from unshell.lineage import compare
from unshell.lineage.compare import Unit, haar_scale, model_units
from unshell.lineage.fingerprint import (
    MAGIC,
    Fingerprint,
    compare_with_fingerprint,
    fingerprint,
)
from unshell.lineage.sketch import projection, row_sample_size, sampled_rows, unit_sketch
from unshell.model import Model

GATE = "model.layers.0.mlp.gate_proj.weight"
DOWN = "model.layers.0.mlp.down_proj.weight"


def _units(path: Path, **options: Any) -> dict[tuple[str, str], Unit]:
    with open_checkpoint(path) as checkpoint:
        model = Model.of(checkpoint).canonical
        hidden = model.hidden or 0
        units = model_units(model, hidden, projection(hidden), **options)
    return {(u.name, u.orientation): u for u in units}


def _rewrite(src: Path, dst: Path, change: dict[str, np.ndarray]) -> Path:
    """A copy of the tiny Llama at ``src`` with some tensors replaced."""
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.name != "model.safetensors":
            (dst / item.name).write_bytes(item.read_bytes())
    tensors = {**read_safetensors_dir(src), **change}
    write_safetensors(dst / "model.safetensors", tensors, metadata={"format": "pt"})
    return dst


def test_the_sample_is_a_fixed_function_of_the_count() -> None:
    ids = sampled_rows(11008, 2048)
    assert ids is not None and ids.shape == (2048,) and ids.dtype == np.int64
    assert np.all(np.diff(ids) > 0) and ids[0] >= 0 and ids[-1] < 11008  # sorted, distinct, in range
    again = sampled_rows(11008, 2048)
    assert again is not None and np.array_equal(ids, again)
    # Pinned: the same rows on every machine and numpy version (splitmix64, not numpy's generators),
    # or a fingerprint made today would sample other rows than the checkpoint compared with it.
    assert hashlib.sha256(ids.tobytes()).hexdigest() == (
        "9e37aab68ca222e9a494c70410027624bfd49ef0aa53170986a5e365ea4cb0d1"
    )
    assert ids[:8].tolist() == [5, 9, 14, 22, 25, 27, 29, 33]
    other = sampled_rows(11009, 2048)  # another count is another sample, not a prefix of this one
    assert other is not None and not np.array_equal(ids, other)
    assert sampled_rows(2048, 2048) is None and sampled_rows(100, 2048) is None  # small: every vector
    assert sampled_rows(11008, 0) is None  # 0: no sampling (format 2 fingerprints)
    assert row_sample_size(256) == 2048 and row_sample_size(32) == 256


def test_a_sampled_sketch_reads_only_its_rows_and_no_value_chooses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hidden 32 (r 32, 256 vectors kept), FFN 512: gate and up keep 256 of their 512 rows, down
    256 of its 512 columns. Values outside the sample change nothing; one inside it changes the
    sketch; the rows read from the file are the sample's."""
    base = make_tiny_llama(tmp_path / "base", seed=1, hidden=32, intermediate=512, layers=1)
    kept = sampled_rows(512, row_sample_size(32))
    assert kept is not None and kept.size == 256
    dropped = np.setdiff1d(np.arange(512), kept)
    tensors = read_safetensors_dir(base)
    rng = np.random.default_rng(7)
    gate, down = tensors[GATE].copy(), tensors[DOWN].copy()
    gate[dropped] = rng.standard_normal((dropped.size, 32)).astype(np.float32) * 5.0
    down[:, dropped] = rng.standard_normal((32, dropped.size)).astype(np.float32) * 5.0
    outside = _rewrite(base, tmp_path / "outside", {GATE: gate, DOWN: down})
    inside_gate = tensors[GATE].copy()
    inside_gate[kept[3]] = rng.standard_normal(32).astype(np.float32)
    inside = _rewrite(base, tmp_path / "inside", {GATE: inside_gate})

    reads: list[tuple[str, Any]] = []
    original = compare.read_row_ids

    def recording(model: Any, name: str, ids: np.ndarray, **options: Any) -> np.ndarray:
        reads.append((name, ids.copy()))
        return original(model, name, ids, **options)

    monkeypatch.setattr(compare, "read_row_ids", recording)
    first = _units(base)
    assert [n for n, _ in reads].count(GATE) == 1
    assert np.array_equal(dict(reads)[GATE], kept)  # only the sampled rows were read
    monkeypatch.undo()

    changed_outside = _units(outside)
    changed_inside = _units(inside)
    again = _units(base)
    for key in ((GATE, "rows"), (DOWN, "columns")):
        assert np.array_equal(first[key].sketch, again[key].sketch)  # deterministic
        assert np.array_equal(first[key].sketch, changed_outside[key].sketch)  # values outside: no effect
        # the sample is the definition's: unit_sketch of the kept vectors (the gate's norm gain folded in)
    with open_checkpoint(base) as checkpoint:
        gain = np.asarray(checkpoint.read("model.layers.0.post_attention_layernorm.weight"), dtype=np.float32)
    plain, std = unit_sketch(tensors[GATE][kept], np.eye(32, dtype=np.float32), gain=gain)
    np.testing.assert_allclose(first[(GATE, "rows")].sketch, plain.ravel(), atol=1e-6)
    assert first[(GATE, "rows")].std == pytest.approx(std, rel=1e-6)  # the std is the sample's too
    plain_down, _ = unit_sketch(tensors[DOWN].T[kept], np.eye(32, dtype=np.float32))
    np.testing.assert_allclose(first[(DOWN, "columns")].sketch, plain_down.ravel(), atol=1e-6)
    assert not np.allclose(first[(GATE, "rows")].sketch, changed_inside[(GATE, "rows")].sketch, atol=1e-4)
    # Unsampled (format 2's statistic), the values outside the sample do count.
    full, full_outside = _units(base, sample=0), _units(outside, sample=0)
    assert not np.allclose(full[(GATE, "rows")].sketch, full_outside[(GATE, "rows")].sketch, atol=1e-4)


def test_matrices_within_the_sample_size_are_sketched_as_before(tmp_path: Path) -> None:
    """hidden 64 (512 vectors kept) and FFN 96: no matrix is sampled, and every sketch is bit for
    bit the unsampled one (every zoo and null-population model is of this kind)."""
    path = make_tiny_llama(tmp_path / "small", seed=2, hidden=64, intermediate=96)
    sampled, unsampled = _units(path), _units(path, sample=0)
    assert sampled.keys() == unsampled.keys() and len(sampled) == 14
    for key, unit in sampled.items():
        assert np.array_equal(unit.sketch, unsampled[key].sketch), key
        assert unit.std == unsampled[key].std
    quick, quick_unsampled = _units(path, quick=True), _units(path, quick=True, sample=0)
    assert all(np.array_equal(u.sketch, quick_unsampled[k].sketch) for k, u in quick.items())


def _population(rng: np.random.Generator, rows: int, hidden: int) -> np.ndarray:
    """Rows with a trained-like anisotropic second moment (a power-law spectrum)."""
    scale = (np.arange(1, hidden + 1, dtype=np.float32) ** -0.5).astype(np.float32)
    return rng.standard_normal((rows, hidden), dtype=np.float32) * scale


def test_a_row_permuted_copy_keeps_its_sampled_sketch_close() -> None:
    """4,096 structured rows of 64, 512 kept. Sampled sketches of a matrix and of its row-permuted
    (and slightly changed) copy are different rows' estimates of one second moment: they stay close
    (20 null spreads above the random-rotation null, closer than an independent draw of the same population),
    and each is close to the unsampled sketch. The same copy unpermuted samples the same rows and
    keeps nearly all its similarity. Unsampled, a permuted copy's sketch is the original's."""
    rng = np.random.default_rng(11)
    hidden, rows = 64, 4096
    keep = row_sample_size(hidden)
    basis = np.eye(hidden, dtype=np.float32)
    a = _population(rng, rows, hidden)
    copy = a + 0.1 * _population(rng, rows, hidden)
    permuted = copy[rng.permutation(rows)]
    independent = _population(rng, rows, hidden)

    def sketch(matrix: np.ndarray, sample: int = keep) -> np.ndarray:
        ids = sampled_rows(matrix.shape[0], sample)
        return unit_sketch(matrix if ids is None else matrix[ids], basis)[0].ravel()

    base = sketch(a)
    same_rows, other_rows, null = (float(base @ sketch(m)) for m in (copy, permuted, independent))
    assert same_rows > 0.98
    assert other_rows > 0.6 and other_rows > 20 * haar_scale(hidden)
    assert other_rows > null + 0.1
    full = sketch(a, 0)
    assert float(full @ base) > 0.8 and float(full @ sketch(permuted)) > 0.8
    assert float(full @ sketch(permuted, 0)) > 0.98  # unsampled: the same set of rows
    small = a[:keep]  # at most `keep` rows: every row, in any order, the same sketch
    np.testing.assert_allclose(sketch(small), sketch(small[rng.permutation(keep)]), atol=1e-5)


def _as_format_2(data: bytes) -> bytes:
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    header = json.loads(data[start : start + length])
    header["version"] = 2
    del header["row_sample"]
    encoded = json.dumps(header, separators=(",", ":")).encode("ascii")
    return MAGIC + struct.pack("<I", len(encoded)) + encoded + data[start + length :]


def _with_header(data: bytes, change: dict[str, Any]) -> bytes:
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    header = {**json.loads(data[start : start + length]), **change}
    encoded = json.dumps(header, separators=(",", ":")).encode("ascii")
    return MAGIC + struct.pack("<I", len(encoded)) + encoded + data[start + length :]


def test_fingerprints_record_the_sample_and_format_2_compares_as_it_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = make_tiny_llama(tmp_path / "base", seed=3, hidden=32, intermediate=512, layers=2)
    tensors = read_safetensors_dir(base)
    rng = np.random.default_rng(5)
    noisy = {
        k: v + (0.05 * v.std() * rng.standard_normal(v.shape)).astype(np.float32)
        for k, v in tensors.items()
        if v.ndim == 2
    }
    suspect = _rewrite(base, tmp_path / "suspect", noisy)
    made = fingerprint(base)
    assert made.version == 3 and made.row_sample == row_sample_size(32)
    data = made.to_bytes()
    assert Fingerprint.from_bytes(data).row_sample == made.row_sample

    samples: list[int | None] = []
    original = compare.model_units

    def recording(*args: Any, **options: Any) -> Any:
        samples.append(options.get("sample"))
        return original(*args, **options)

    monkeypatch.setattr(compare, "model_units", recording)
    current = compare_with_fingerprint(Fingerprint.from_bytes(data), suspect)
    assert current.verdict == "derived" and set(samples) == {row_sample_size(32)}

    # Format 2 (every vector sketched): made with sampling off, stored without a row sample.
    samples.clear()
    monkeypatch.setattr("unshell.lineage.fingerprint.row_sample_size", lambda dim: 0)
    old_bytes = _as_format_2(fingerprint(base).to_bytes())
    monkeypatch.undo()
    monkeypatch.setattr(compare, "model_units", recording)
    old = Fingerprint.from_bytes(old_bytes)
    assert old.version == 2 and old.row_sample == 0
    assert old.to_bytes() == old_bytes  # written back as format 2, byte for byte
    before = compare_with_fingerprint(old, suspect)
    assert before.verdict == "derived" and set(samples) == {0}  # B sketched as A was: every vector
    assert before.score != current.score  # two statistics, each consistent on both sides

    with pytest.raises(CorruptCheckpointError, match="row sample"):
        Fingerprint.from_bytes(_with_header(old_bytes, {"row_sample": 256}))
    with pytest.raises(CorruptCheckpointError, match="row sample 8 is smaller"):
        Fingerprint.from_bytes(_with_header(data, {"row_sample": 8}))
    with pytest.raises(CorruptCheckpointError):
        Fingerprint.from_bytes(_with_header(data, {"row_sample": -1}))
