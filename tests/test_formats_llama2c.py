"""llama2.c reader: the real legacy exports, and v1/v2 files written from them by export.py's logic."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from hostile_files import make_hostile_files
from llama2c_export import load_legacy, quantize_q80, write_legacy, write_v1, write_v2
from unshell.errors import CorruptCheckpointError, InconsistentHeaderError, NotACheckpointError
from unshell.formats import detect_format, open_checkpoint
from unshell.formats.llama2c import looks_like_llama2c_v0, read_llama2c
from unshell.formats.safetensors import write_safetensors

LAYER_KINDS = (
    "attention_norm",
    "attention.wq",
    "attention.wk",
    "attention.wv",
    "attention.wo",
    "ffn_norm",
    "feed_forward.w1",
    "feed_forward.w2",
    "feed_forward.w3",
)


@pytest.mark.parametrize(
    ("file_name", "hidden_dim", "seq_len"),
    [("stories260K.bin", 172, 512), ("llama2xs.model.bin", 192, 256)],
)
def test_real_legacy_exports(fixtures_dir: Path, file_name: str, hidden_dim: int, seq_len: int) -> None:
    path = fixtures_dir / file_name
    checkpoint = read_llama2c(path)

    assert checkpoint.format == "llama2c"
    assert checkpoint.metadata["llama2c"] == {
        "dim": 64,
        "hidden_dim": hidden_dim,
        "n_layers": 5,
        "n_heads": 8,
        "n_kv_heads": 4,
        "vocab_size": 512,
        "seq_len": seq_len,
        "shared_classifier": True,
        "version": 0,
    }
    expected_names = {"tok_embeddings.weight", "norm.weight", "freqs_cos", "freqs_sin"}
    expected_names |= {f"layers.{i}.{kind}.weight" for i in range(5) for kind in LAYER_KINDS}
    assert set(checkpoint.tensors) == expected_names
    assert checkpoint.info("layers.3.attention.wk.weight").shape == (32, 64)
    assert checkpoint.info("layers.0.feed_forward.w2.weight").shape == (64, hidden_dim)
    assert checkpoint.info("freqs_cos").extra == {"buffer": True}
    last = max(checkpoint.tensors.values(), key=lambda info: info.offset)
    assert last.offset + last.nbytes == path.stat().st_size

    _, state, shared = load_legacy(path)
    assert shared
    for name in checkpoint.tensors:
        assert np.array_equal(checkpoint.read(name), state[name]), name


def test_rope_tables_sit_where_run_c_expects_them(fixtures_dir: Path) -> None:
    """cos/sin of position * 10000^(-2j/head_size): a wrong offset anywhere before them would show."""
    checkpoint = read_llama2c(fixtures_dir / "stories260K.bin")
    head_size = 8
    positions = np.arange(512, dtype=np.float64)[:, None]
    frequencies = 1.0 / 10000.0 ** (np.arange(0, head_size, 2, dtype=np.float64) / head_size)
    assert np.allclose(checkpoint.read("freqs_cos"), np.cos(positions * frequencies), atol=1e-5)
    assert np.allclose(checkpoint.read("freqs_sin"), np.sin(positions * frequencies), atol=1e-5)


def test_untied_legacy_export_carries_the_classifier(tmp_path: Path, fixtures_dir: Path) -> None:
    params, state, _ = load_legacy(fixtures_dir / "stories260K.bin")
    state = {**state, "output.weight": -state["tok_embeddings.weight"]}
    target = tmp_path / "untied.bin"
    write_legacy(target, params, state, shared=False)

    checkpoint = read_llama2c(target)

    assert checkpoint.metadata["llama2c"]["shared_classifier"] is False
    assert checkpoint.metadata["llama2c"]["vocab_size"] == 512
    assert np.array_equal(checkpoint.read("output.weight"), state["output.weight"])
    assert not checkpoint.notes


def test_size_decides_when_the_vocab_sign_lies(tmp_path: Path, fixtures_dir: Path) -> None:
    params, state, _ = load_legacy(fixtures_dir / "stories260K.bin")
    state = {**state, "output.weight": state["tok_embeddings.weight"] * 2}
    target = tmp_path / "signless.bin"
    write_legacy(target, params, state, shared=False)
    raw = bytearray(target.read_bytes())
    raw[20:24] = struct.pack("<i", 512)  # claims "tied" although the classifier follows
    target.write_bytes(bytes(raw))

    assert looks_like_llama2c_v0(target)
    checkpoint = read_llama2c(target)
    assert "output.weight" in checkpoint
    assert np.array_equal(checkpoint.read("output.weight"), state["output.weight"])
    assert any("contradicts" in note for note in checkpoint.notes)


@pytest.mark.parametrize("shared", [True, False])
def test_version1_export_reads_back_exactly(tmp_path: Path, fixtures_dir: Path, shared: bool) -> None:
    params, state, _ = load_legacy(fixtures_dir / "stories260K.bin")
    if not shared:
        state = {**state, "output.weight": state["tok_embeddings.weight"][::-1].copy()}
    target = tmp_path / "v1.bin"
    write_v1(target, params, state, shared)

    checkpoint = read_llama2c(target)

    assert checkpoint.metadata["llama2c"]["version"] == 1
    assert checkpoint.metadata["llama2c"]["shared_classifier"] is shared
    assert "freqs_cos" not in checkpoint, "v1 does not store the RoPE tables"
    assert ("output.weight" in checkpoint) is not shared
    for name in checkpoint.tensors:
        assert checkpoint.info(name).dtype == "F32"
        assert np.array_equal(checkpoint.read(name), state[name]), name


@pytest.mark.parametrize("group_size", [64, 32])
def test_version2_export_dequantizes_like_run_c(tmp_path: Path, fixtures_dir: Path, group_size: int) -> None:
    params, state, _ = load_legacy(fixtures_dir / "stories260K.bin")
    target = tmp_path / "v2.bin"
    max_error = write_v2(target, params, state, shared=True, group_size=group_size)

    checkpoint = read_llama2c(target)

    assert checkpoint.metadata["llama2c"]["version"] == 2
    assert checkpoint.metadata["llama2c"]["group_size"] == group_size
    assert 0 < max_error < 0.05
    for name, info in checkpoint.tensors.items():
        value = checkpoint.read(name)
        if name.endswith("norm.weight"):
            assert info.dtype == "F32"
            assert np.array_equal(value, state[name]), name
            continue
        assert info.dtype == "Q8_LLAMA2C" and info.extra == {"group_size": group_size}
        q, scale, _ = quantize_q80(state[name], group_size)
        exact = (q.astype(np.float32) * scale[:, None]).reshape(state[name].shape)
        assert value.dtype == np.float32
        assert np.array_equal(value, exact), name
        assert np.abs(value - state[name]).max() <= max_error + 1e-7, name


def test_version2_untied_classifier(tmp_path: Path, fixtures_dir: Path) -> None:
    params, state, _ = load_legacy(fixtures_dir / "llama2xs.model.bin")
    state = {**state, "output.weight": state["tok_embeddings.weight"] + 1}
    target = tmp_path / "v2u.bin"
    write_v2(target, params, state, shared=False, group_size=128)  # backs off to 64 = dim

    checkpoint = read_llama2c(target)

    assert checkpoint.metadata["llama2c"]["group_size"] == 64
    assert np.abs(checkpoint.read("output.weight") - state["output.weight"]).max() < 0.05


def test_detection(tmp_path: Path, fixtures_dir: Path) -> None:
    stories = fixtures_dir / "stories260K.bin"
    assert looks_like_llama2c_v0(stories) and looks_like_llama2c_v0(fixtures_dir / "llama2xs.model.bin")
    assert detect_format(stories) == "llama2c"
    assert open_checkpoint(stories).format == "llama2c"

    params, state, _ = load_legacy(stories)
    v1 = tmp_path / "v1.model"
    write_v1(v1, params, state, True)
    assert not looks_like_llama2c_v0(v1)
    assert detect_format(v1) == "llama2c"

    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(stories.read_bytes()[:-4])
    assert not looks_like_llama2c_v0(truncated)
    other = tmp_path / "other.bin"
    write_safetensors(other, {"w": np.zeros(4, np.float32)})
    assert not looks_like_llama2c_v0(other)
    assert not looks_like_llama2c_v0(fixtures_dir / "stories260K.tok512.bin")


def test_wrong_sizes_and_garbage(tmp_path: Path, fixtures_dir: Path) -> None:
    data = (fixtures_dir / "stories260K.bin").read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[:-4])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        read_llama2c(truncated)
    longer = tmp_path / "longer.bin"
    longer.write_bytes(data + b"\0" * 3)
    with pytest.raises(InconsistentHeaderError, match="3 extra"):
        read_llama2c(longer)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\xff" * 300)
    with pytest.raises(NotACheckpointError):
        read_llama2c(garbage)


def test_hostile_corpus_direct(tmp_path: Path) -> None:
    expected = {
        name: error for name, error in make_hostile_files(tmp_path).items() if name.startswith("l2c_")
    }
    # The reader itself recognises the plausible v0 header and reports the truncation.
    expected["l2c_v0_wrong_size.bin"] = CorruptCheckpointError
    assert len(expected) >= 10
    for name, error in expected.items():
        with pytest.raises(error) as raised:
            read_llama2c(tmp_path / name)
        assert type(raised.value) is error, (name, raised.value)
