"""GGUF reader on real files and on files written to order, with gguf-py's GGUFReader as the oracle."""

from __future__ import annotations

import contextlib
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize as oracle_dequantize
from gguf.quants import quantize as oracle_quantize

import gguf_writer as gw
import hostile_gguf_onnx
from artifacts import fetch
from unshell.errors import CorruptCheckpointError, UnshellError, UnsupportedFormatError
from unshell.formats import detect_format, open_checkpoint
from unshell.formats import gguf as gguf_reader
from unshell.formats.base import Checkpoint
from unshell.formats.gguf import LAZY_ARRAY_THRESHOLD, GGUFArray, read_gguf

TINY = "llama-2-tiny-random.gguf"
NATIVE_TYPES = {"F16", "F64", "I8", "I16", "I32", "I64"}


def assert_metadata_equals_reader(checkpoint: Checkpoint, reader: GGUFReader) -> None:
    ours = checkpoint.metadata["gguf"]
    expected_keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert list(ours) == expected_keys
    for key in expected_keys:
        expected = reader.fields[key].contents()
        value = ours[key]
        if isinstance(value, GGUFArray):
            assert len(value) == len(expected) > LAZY_ARRAY_THRESHOLD
            decoded = value.decode()
            if value.element_type == "string":
                assert decoded == expected, key
            else:
                assert np.array_equal(decoded, np.array(expected)), key
        else:
            assert value == expected, key
            assert type(value) is type(expected), key


def assert_tensors_equal_reader(checkpoint: Checkpoint, reader: GGUFReader) -> None:
    assert list(checkpoint.tensors) == [t.name for t in reader.tensors]
    for tensor in reader.tensors:
        info = checkpoint.info(tensor.name)
        assert info.shape == tuple(int(d) for d in reversed(tensor.shape))
        assert info.dtype == tensor.tensor_type.name
        assert (info.offset, info.nbytes) == (tensor.data_offset, tensor.n_bytes)
        if tensor.tensor_type.name in NATIVE_TYPES:
            expected = tensor.data  # base.decode keeps numpy's own dtype for these
        else:
            expected = oracle_dequantize(tensor.data, tensor.tensor_type)
        values = checkpoint.read(tensor.name)
        assert values.dtype == expected.dtype, tensor.name
        assert values.shape == expected.shape, tensor.name
        assert np.array_equal(
            values.reshape(-1).view(np.uint8), np.ascontiguousarray(expected).reshape(-1).view(np.uint8)
        ), tensor.name


# -- the tiny real llama fixture -----------------------------------------------------------------


def test_tiny_llama_matches_gguf_reader(fixtures_dir: Path) -> None:
    path = fixtures_dir / TINY
    reader = GGUFReader(path)
    with read_gguf(path) as checkpoint:
        assert checkpoint.format == "gguf" and checkpoint.files == [path]
        assert checkpoint.metadata["gguf_header"] == {
            "version": 3,
            "tensor_count": 12,
            "kv_count": 18,
            "alignment": 32,
            "data_offset": reader.data_offset,
        }
        assert_metadata_equals_reader(checkpoint, reader)
        assert_tensors_equal_reader(checkpoint, reader)
        meta = checkpoint.metadata["gguf"]
        assert (
            meta["llama.embedding_length"],
            meta["llama.feed_forward_length"],
            meta["llama.block_count"],
        ) == (8, 32, 1)
        assert checkpoint.info("token_embd.weight").shape == (32000, 8)
        assert checkpoint.info("blk.0.ffn_down.weight").shape == (8, 32)
        assert Counter(t.dtype for t in checkpoint.tensors.values()) == {"F16": 9, "F32": 3}


def test_tiny_llama_tokenizer_is_llama2s(fixtures_dir: Path) -> None:
    with read_gguf(fixtures_dir / TINY) as checkpoint:
        tokens = checkpoint.metadata["gguf"]["tokenizer.ggml.tokens"]
        assert isinstance(tokens, GGUFArray) and tokens.element_type == "string" and len(tokens) == 32000
        pieces = tokens.decode()
        assert pieces[:3] == ["<unk>", "<s>", "</s>"] and pieces[3] == "<0x00>"
        assert pieces[29871] == "▁"
        types = checkpoint.metadata["gguf"]["tokenizer.ggml.token_type"].decode()
        assert types.dtype == np.int32 and types[0] == 2 and types[1] == 3 and types[3] == 6


def test_dispatcher_routes_gguf_to_this_reader(fixtures_dir: Path) -> None:
    path = fixtures_dir / TINY
    assert detect_format(path) == "gguf"
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.format == "gguf" and len(checkpoint) == 12


# -- the real Gemma-3-270M Q4_K_M ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    return fetch("gemma3_gguf")


def test_gemma_header_facts(gemma_path: Path) -> None:
    with read_gguf(gemma_path) as checkpoint:
        meta = checkpoint.metadata["gguf"]
        assert meta["general.architecture"] == "gemma3"
        assert meta["gemma3.block_count"] == 18
        assert meta["gemma3.embedding_length"] == 640
        assert meta["gemma3.feed_forward_length"] == 2048
        assert meta["gemma3.attention.head_count"] == 4
        assert meta["gemma3.attention.head_count_kv"] == 1
        assert meta["gemma3.attention.key_length"] == 256
        assert len(meta["tokenizer.ggml.tokens"]) == 262144
        header = checkpoint.metadata["gguf_header"]
        assert (header["version"], header["tensor_count"], header["alignment"]) == (3, 236, 32)
        assert Counter(t.dtype for t in checkpoint.tensors.values()) == {
            "F32": 109,
            "Q5_0": 81,
            "Q4_K": 27,
            "Q8_0": 10,
            "Q6_K": 9,
        }
        assert checkpoint.info("token_embd.weight").shape == (262144, 640)
        assert checkpoint.info("token_embd.weight").dtype == "Q8_0"


def test_gemma_opens_fast_reading_only_lengths(gemma_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cursors: list[Any] = []

    class RecordingCursor(gguf_reader._Cursor):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            cursors.append(self)

    monkeypatch.setattr(gguf_reader, "_Cursor", RecordingCursor)
    started = time.perf_counter()
    checkpoint = read_gguf(gemma_path)
    elapsed = time.perf_counter() - started
    checkpoint.close()
    # 262,144 token strings cost 8 bytes of length each to step over; their text, the scores and
    # token types (1 MB each) and the 246 MB of tensor data are never read at open time.
    (cursor,) = cursors
    assert cursor.bytes_read < 2_200_000
    assert cursor.bytes_read < checkpoint.metadata["gguf_header"]["data_offset"] / 3
    assert elapsed < 1.0


@pytest.mark.slow
def test_gemma_every_tensor_equals_gguf_py(gemma_path: Path) -> None:
    reader = GGUFReader(gemma_path)
    with read_gguf(gemma_path) as checkpoint:
        assert checkpoint.metadata["gguf_header"]["data_offset"] == reader.data_offset
        assert_tensors_equal_reader(checkpoint, reader)


# -- files written by gguf-py's GGUFWriter ------------------------------------------------------


def write_with_gguf_py(path: Path, tensors: dict[str, tuple[np.ndarray, GGMLQuantizationType]]) -> None:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_custom_alignment(64)
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -100)
    writer.add_uint16("t.u16", 60000)
    writer.add_int16("t.i16", -30000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_float32("t.f32", 0.1)
    writer.add_uint64("t.u64", 1 << 60)
    writer.add_int64("t.i64", -(1 << 60))
    writer.add_float64("t.f64", 0.1)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "héllo\nworld")
    writer.add_array("t.short_strings", ["a", "bb", ""])
    writer.add_array("t.long_strings", [f"tok{i}" for i in range(LAZY_ARRAY_THRESHOLD + 1)])
    writer.add_array("t.edge_ints", list(range(LAZY_ARRAY_THRESHOLD)))
    writer.add_array("t.long_floats", [i / 4 for i in range(3000)])
    writer.add_array("t.empty", [])
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_file_written_by_gguf_py(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    weights = (rng.standard_normal((16, 256)) * 0.1).astype(np.float32)
    tensors: dict[str, tuple[np.ndarray, GGMLQuantizationType]] = {
        "f32": (weights[:3], GGMLQuantizationType.F32),
        "f16": (weights.astype(np.float16), GGMLQuantizationType.F16),
        "i32": (np.arange(24, dtype=np.int32).reshape(2, 3, 4), GGMLQuantizationType.I32),
    }
    for qtype in (GGMLQuantizationType.BF16, GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q8_0):
        tensors[qtype.name.lower()] = (oracle_quantize(weights, qtype), qtype)
    # gguf-py cannot quantize k-quants: random blocks with finite d/dmin halves stand in.
    half = np.array([0.01], dtype="<f2").view(np.uint8)
    for code, scale_offsets in (("Q2_K", (80, 82)), ("Q3_K", (108,)), ("Q5_K", (0, 2))):
        kquant = GGMLQuantizationType[code]
        raw = rng.integers(0, 256, size=(4, gguf.GGML_QUANT_SIZES[kquant][1]), dtype=np.uint8)
        for offset in scale_offsets:
            raw[:, offset : offset + 2] = half
        tensors[code.lower()] = (raw, kquant)
    path = tmp_path / "written.gguf"
    write_with_gguf_py(path, tensors)
    reader = GGUFReader(path)
    with read_gguf(path) as checkpoint:
        assert checkpoint.metadata["gguf_header"]["alignment"] == 64
        assert all(t.offset % 64 == 0 for t in checkpoint.tensors.values())
        assert_metadata_equals_reader(checkpoint, reader)
        assert_tensors_equal_reader(checkpoint, reader)
        meta = checkpoint.metadata["gguf"]
        assert meta["t.short_strings"] == ["a", "bb", ""]
        assert meta["t.edge_ints"] == list(range(LAZY_ARRAY_THRESHOLD))
        assert isinstance(meta["t.long_strings"], GGUFArray)
        assert meta["t.long_strings"].decode()[-1] == f"tok{LAZY_ARRAY_THRESHOLD}"
        assert meta["t.str"] == "héllo\nworld" and meta["t.bool"] is True and meta["t.u64"] == 1 << 60
        assert checkpoint.read("i32").tolist() == np.arange(24).reshape(2, 3, 4).tolist()
        q8 = checkpoint.read("q8_0")
        assert q8.shape == (16, 256) and np.abs(q8 - weights).max() < 0.01


# -- files written byte by byte ------------------------------------------------------------------


def test_small_handwritten_file(tmp_path: Path) -> None:
    path = tmp_path / "small.gguf"
    path.write_bytes(gw.gguf_file(gw.small_model()))
    with read_gguf(path) as checkpoint:
        assert checkpoint.read("a").tolist() == list(range(8))
        assert checkpoint.read("b").tolist() == [[8, 9, 10, 11], [12, 13, 14, 15]]
        assert checkpoint.metadata["gguf"] == {"general.architecture": "llama", "llama.block_count": 1}


def test_version_2_is_read(tmp_path: Path) -> None:
    parts = gw.small_model()
    parts.version = 2
    path = tmp_path / "v2.gguf"
    path.write_bytes(gw.gguf_file(parts))
    with read_gguf(path) as checkpoint:
        assert checkpoint.metadata["gguf_header"]["version"] == 2
        assert checkpoint.read("b").sum() == sum(range(8, 16))


def test_big_endian_file_from_gguf_py_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big-endian.gguf"
    writer = gguf.GGUFWriter(path, "llama", endianess=gguf.GGUFEndian.BIG)
    writer.add_tensor("a", np.arange(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert path.read_bytes()[:4] == b"GGUF"  # only the fields after the magic are swapped
    with pytest.raises(UnsupportedFormatError, match="big-endian"):
        read_gguf(path)


def test_scalar_and_empty_tensors(tmp_path: Path) -> None:
    parts = gw.GGUFParts(
        infos=[gw.tensor_info("scalar", [], gw.F32, 0), gw.tensor_info("empty", [0, 4], gw.F32, 32)],
        data=struct.pack("<f", 2.5) + bytes(28),
    )
    path = tmp_path / "scalar.gguf"
    path.write_bytes(gw.gguf_file(parts))
    with read_gguf(path) as checkpoint:
        assert checkpoint.read("scalar").shape == () and float(checkpoint.read("scalar")) == 2.5
        assert checkpoint.read("empty").shape == (4, 0)


def test_undecodable_type_opens_but_refuses_to_read(tmp_path: Path) -> None:
    iq2_xxs = 16
    parts = gw.GGUFParts(infos=[gw.tensor_info("w", [256, 2], iq2_xxs, 0)], data=bytes(2 * 66))
    path = tmp_path / "iq2.gguf"
    path.write_bytes(gw.gguf_file(parts))
    with read_gguf(path) as checkpoint:
        assert checkpoint.info("w").dtype == "IQ2_XXS" and checkpoint.info("w").nbytes == 132
        with pytest.raises(UnsupportedFormatError, match="IQ2_XXS"):
            checkpoint.read("w")


def test_lazy_array_of_a_file_that_shrank(tmp_path: Path) -> None:
    parts = gw.small_model()
    parts.kvs.append(gw.kv_array("big", gw.INT32, list(range(5000))))
    path = tmp_path / "big.gguf"
    path.write_bytes(gw.gguf_file(parts))
    with read_gguf(path) as checkpoint:
        big = checkpoint.metadata["gguf"]["big"]
    assert big.decode().tolist() == list(range(5000))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptCheckpointError):
        big.decode()


@pytest.mark.parametrize(
    "name", sorted(n for n in hostile_gguf_onnx._gguf_cases()), ids=lambda n: n.removesuffix(".gguf")
)
def test_hostile_gguf_raises_its_error_quickly(tmp_path: Path, name: str) -> None:
    cases = hostile_gguf_onnx.make_hostile_files(tmp_path)
    path = tmp_path / f"gguf_{name}"
    started = time.perf_counter()
    with pytest.raises(Exception) as caught:
        read_gguf(path)
    assert type(caught.value) is cases[f"gguf_{name}"], str(caught.value)
    message = str(caught.value)
    assert "\n" not in message and path.name in message
    assert time.perf_counter() - started < 0.5


def test_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGML" + bytes(100))
    with pytest.raises(Exception, match="not a GGUF file") as caught:
        read_gguf(path)
    assert type(caught.value).__name__ == "NotACheckpointError"


def test_corrupted_files_raise_only_unshell_errors(tmp_path: Path) -> None:
    parts = gw.small_model()
    parts.kvs.append(gw.kv_array("tokens", gw.STRING, [f"t{i}" for i in range(1100)]))
    parts.kvs.append(gw.kv_array("short", gw.INT32, [1, 2, 3]))
    path = tmp_path / "m.gguf"
    opened = 0
    for mutated in hostile_gguf_onnx.mutations(gw.gguf_file(parts), 400, seed=5):
        path.write_bytes(mutated)
        try:
            with read_gguf(path) as checkpoint:
                opened += 1
                for name in checkpoint.tensors:
                    with contextlib.suppress(UnshellError):
                        checkpoint.read(name)
                for value in checkpoint.metadata["gguf"].values():
                    if isinstance(value, GGUFArray):
                        value.decode()
        except UnshellError as error:
            assert "\n" not in str(error)
    assert 0 < opened < 400  # both outcomes were exercised
