"""safetensors reader and writer: round trips on real weights, BF16 rounding, strict validation."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from hostile_files import make_hostile_files, safetensors_bytes
from llama2c_export import load_legacy
from unshell.errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    NotACheckpointError,
    PathNotFoundError,
    ResourceLimitError,
    UnsupportedFormatError,
    UsageError,
)
from unshell.formats import base
from unshell.formats.safetensors import (
    float32_to_bf16,
    open_regular_file,
    parse_strict_json,
    read_safetensors,
    write_safetensors,
)


def test_real_weights_round_trip_exactly(tmp_path: Path, fixtures_dir: Path) -> None:
    _, state, _ = load_legacy(fixtures_dir / "stories260K.bin")
    target = tmp_path / "model.safetensors"
    write_safetensors(target, state, metadata={"format": "pt", "source": "stories260K"})

    checkpoint = read_safetensors(target)

    assert checkpoint.format == "safetensors" and checkpoint.layout == "file"
    assert checkpoint.files == [target]
    assert checkpoint.metadata["safetensors"] == {"format": "pt", "source": "stories260K"}
    assert set(checkpoint.tensors) == set(state)
    for name, array in state.items():
        assert checkpoint.info(name).dtype == "F32"
        assert np.array_equal(checkpoint.read(name), array), name
    assert checkpoint.parameter_count == sum(a.size for a in state.values())
    assert checkpoint.total_bytes == target.stat().st_size - 8 - _header_length(target)


def _header_length(path: Path) -> int:
    return int(struct.unpack("<Q", path.read_bytes()[:8])[0])


def test_every_plain_dtype_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "f64": rng.standard_normal((3, 2)),
        "f32": rng.standard_normal(5).astype(np.float32),
        "f16": rng.standard_normal((2, 2)).astype(np.float16),
        "i64": np.array([-(1 << 40), 7], dtype=np.int64),
        "i32": np.array([-5, 6], dtype=np.int32),
        "i16": np.array([-300], dtype=np.int16),
        "i8": np.array([-128, 127], dtype=np.int8),
        "u64": np.array([1 << 63], dtype=np.uint64),
        "u32": np.array([4_000_000_000], dtype=np.uint32),
        "u16": np.array([65535], dtype=np.uint16),
        "u8": np.arange(10, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "c64": np.array([1 + 2j], dtype=np.complex64),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "big_endian": np.array([1.5, -2.0], dtype=">f4"),
    }
    target = tmp_path / "all.safetensors"
    write_safetensors(target, arrays)

    checkpoint = read_safetensors(target)

    for name, array in arrays.items():
        value = checkpoint.read(name)
        assert value.shape == array.shape, name
        assert np.array_equal(value, array), name
    assert checkpoint.info("scalar").shape == ()
    assert checkpoint.info("empty").nbytes == 0
    assert checkpoint.info("big_endian").dtype == "F32"
    assert (8 + _header_length(target)) % 8 == 0, "data must start 8-byte aligned"
    offsets = [info.offset for info in checkpoint.tensors.values()]
    assert offsets == sorted(offsets), "tensors are listed in file order"


def test_bf16_and_f16_storage_round_to_nearest_even(tmp_path: Path) -> None:
    one = 1.0
    values = np.array(
        [
            one,
            one + 2.0**-8,  # exactly halfway between 1 and 1+2^-7: ties to the even mantissa (1.0)
            one + 3 * 2.0**-8,  # halfway between 1+2^-7 (odd) and 1+2^-6: rounds up to even
            one + 2.0**-8 + 2.0**-20,  # just above halfway: rounds up
            -2.5,
            np.inf,
            np.finfo(np.float32).max,  # rounds past bf16's largest finite value to inf
        ],
        dtype=np.float32,
    )
    target = tmp_path / "bf16.safetensors"
    write_safetensors(target, {"b": values, "h": values[:5]}, dtypes={"b": "BF16", "h": "F16"})

    checkpoint = read_safetensors(target)

    assert checkpoint.info("b").dtype == "BF16" and checkpoint.info("b").nbytes == 2 * values.size
    expected = np.array([1.0, 1.0, 1 + 2.0**-6, 1 + 2.0**-7, -2.5, np.inf, np.inf], dtype=np.float32)
    assert np.array_equal(checkpoint.read("b"), expected)
    assert checkpoint.info("h").dtype == "F16"
    assert np.array_equal(checkpoint.read("h"), values[:5].astype(np.float16))


def test_bf16_conversion_keeps_nan_a_nan() -> None:
    nan_with_payload = np.array([0x7FFFFFFF, 0xFFFFFFFF], dtype=np.uint32).view(np.float32)
    bits = float32_to_bf16(nan_with_payload)
    assert np.isnan(base.bf16_to_f32(bits)).all()
    assert bits[0] >> 15 == 0 and bits[1] >> 15 == 1, "the sign survives"


def test_header_padding_with_spaces_is_accepted(tmp_path: Path) -> None:
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode() + b"     "
    target = tmp_path / "padded.safetensors"
    target.write_bytes(safetensors_bytes(header, np.array([1.0, 2.0], np.float32).tobytes()))
    assert read_safetensors(target).read("a").tolist() == [1.0, 2.0]


def test_metadata_only_file_with_no_tensors(tmp_path: Path) -> None:
    target = tmp_path / "empty.safetensors"
    write_safetensors(target, {}, metadata={"note": "nothing"})
    checkpoint = read_safetensors(target)
    assert len(checkpoint) == 0 and checkpoint.metadata["safetensors"] == {"note": "nothing"}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", CorruptCheckpointError),
        (b"\x10\x00\x00", CorruptCheckpointError),
        (struct.pack("<Q", 1 << 62) + b"{}", CorruptCheckpointError),
        (struct.pack("<Q", 1000) + b"{}" + b" " * 10, CorruptCheckpointError),
        (struct.pack("<Q", 1) + b"{", CorruptCheckpointError),
        (struct.pack("<Q", 4) + b"[1] ", CorruptCheckpointError),
        (struct.pack("<Q", 2) + b"{}" + b"\0" * 4, InconsistentHeaderError),
    ],
    ids=[
        "empty",
        "short",
        "huge-declared-header",
        "header-past-end",
        "tiny-header",
        "not-an-object",
        "tail-without-tensors",
    ],
)
def test_broken_headers_raise_specific_errors(tmp_path: Path, data: bytes, error: type[Exception]) -> None:
    target = tmp_path / "broken.safetensors"
    target.write_bytes(data)
    with pytest.raises(error) as raised:
        read_safetensors(target)
    assert type(raised.value) is error
    assert "broken.safetensors" in str(raised.value)


def test_header_beyond_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    target = tmp_path / "sparse.safetensors"
    with target.open("wb") as handle:
        handle.write(struct.pack("<Q", base.MAX_HEADER_BYTES + 1) + b"{")
        handle.truncate(base.MAX_HEADER_BYTES + 64)  # sparse: no disk space used
    with pytest.raises(ResourceLimitError, match="exceeds the limit"):
        read_safetensors(target)


def test_hostile_corpus_direct(tmp_path: Path) -> None:
    """Each hostile safetensors file raises its specific error from the reader itself."""
    expected = make_hostile_files(tmp_path)
    direct = {name: error for name, error in expected.items() if name.startswith("st_")}
    # Without the dispatcher in front, a header longer than the file is a truncation.
    direct["st_header_longer_than_file.safetensors"] = CorruptCheckpointError
    assert len(direct) >= 15
    for name, error in direct.items():
        with pytest.raises(error) as raised:
            read_safetensors(tmp_path / name)
        assert type(raised.value) is error, (name, raised.value)


def test_block_dtypes_are_not_safetensors_dtypes(tmp_path: Path) -> None:
    block = base.BlockType("TEST_BLOCK", 4, 4, lambda raw, count: np.zeros(count, np.float32))
    base.register_block_type(block)
    try:
        target = tmp_path / "block.safetensors"
        target.write_bytes(
            safetensors_bytes({"a": {"dtype": "TEST_BLOCK", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4)
        )
        with pytest.raises(UnsupportedFormatError, match="TEST_BLOCK"):
            read_safetensors(target)
    finally:
        del base.BLOCK_TYPES["TEST_BLOCK"]


def test_names_in_errors_are_sanitized(tmp_path: Path) -> None:
    target = tmp_path / "evil.safetensors"
    target.write_bytes(
        safetensors_bytes(
            {"\x1b[31mred\u202e": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4
        )
    )
    with pytest.raises(InconsistentHeaderError) as raised:
        read_safetensors(target)
    message = str(raised.value)
    assert "\x1b" not in message and "\u202e" not in message and "\\x1b" in message


def test_strict_json_rejects_duplicates_and_non_objects() -> None:
    assert parse_strict_json(b'{"a": {"b": 1}}', where="x") == {"a": {"b": 1}}
    with pytest.raises(InconsistentHeaderError, match="duplicate JSON key 'b'"):
        parse_strict_json(b'{"a": {"b": 1, "b": 2}}', where="x")
    with pytest.raises(CorruptCheckpointError, match="expected a JSON object"):
        parse_strict_json(b"[1, 2]", where="x")


def test_open_regular_file_refuses_fifos_and_missing_files(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(NotACheckpointError, match="not a regular file"):
        open_regular_file(fifo)  # would block forever if opened without O_NONBLOCK
    with pytest.raises(PathNotFoundError):
        read_safetensors(tmp_path / "missing.safetensors")


def test_writer_rejects_unwritable_dtypes(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        write_safetensors(tmp_path / "x.safetensors", {"a": np.array(["text"])})
    with pytest.raises(UsageError):
        write_safetensors(tmp_path / "x.safetensors", {"a": np.zeros(2, np.float32)}, dtypes={"a": "Q4_K"})
    assert not list(tmp_path.iterdir())


def test_writer_leaves_no_temp_file_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_replace(source: object, target: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_safetensors(tmp_path / "x.safetensors", {"a": np.zeros(2, np.float32)})
    assert not list(tmp_path.iterdir())
