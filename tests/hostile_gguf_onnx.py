"""Hostile GGUF and ONNX files, each wrong in one way, with the unshell error it must raise.

`make_hostile_files` writes them into a directory and returns ``relative path -> error class``;
the reader tests and the CLI-level hostile corpus test both run it. Every file must fail while
the header is read (quickly, without allocating what it claims), never while values are read.

The ONNX files are protobuf bytes encoded by the small encoder below rather than by the ``onnx``
package, which refuses to write most of these lies. `mutations` makes seeded random corruptions
of any file for the readers' "only unshell errors escape" tests.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gguf_writer import (
    ARRAY,
    F32,
    FLOAT32,
    Q4_0,
    STRING,
    UINT32,
    GGUFParts,
    gguf_file,
    kv,
    kv_array,
    kv_scalar,
    kv_string,
    small_model,
    string,
    tensor_info,
)
from unshell.errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    ResourceLimitError,
    UnsupportedFormatError,
)

# -- protobuf / ONNX encoding -------------------------------------------------------------------

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
ONNX_FLOAT, ONNX_INT64 = 1, 7


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values take ten bytes, as protobuf writes them
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def field_varint(number: int, value: int) -> bytes:
    return tag(number, VARINT) + varint(value)


def field_bytes(number: int, payload: bytes | str) -> bytes:
    raw = payload.encode() if isinstance(payload, str) else payload
    return tag(number, LENGTH) + varint(len(raw)) + raw


def onnx_tensor(
    name: str,
    data_type: int,
    dims: list[int],
    *,
    raw: bytes | None = None,
    float_data: list[float] | None = None,
    int64_data: list[int] | None = None,
    external: dict[str, str] | None = None,
    extra: bytes = b"",
) -> bytes:
    """A TensorProto. dims are written unpacked, one field each, as the onnx package does."""
    out = b"".join(field_varint(1, d) for d in dims) + field_varint(2, data_type)
    if float_data is not None:
        out += field_bytes(4, struct.pack(f"<{len(float_data)}f", *float_data))
    if int64_data is not None:
        out += field_bytes(7, b"".join(varint(v) for v in int64_data))
    out += field_bytes(8, name)
    if raw is not None:
        out += field_bytes(9, raw)
    if external is not None:
        out += b"".join(field_bytes(13, field_bytes(1, k) + field_bytes(2, v)) for k, v in external.items())
        out += field_varint(14, 1)
    return out + extra


def onnx_model(
    initializers: list[bytes], *, nodes: list[bytes] | None = None, graph_name: str = "g"
) -> bytes:
    """A ModelProto around one GraphProto holding ``nodes`` and ``initializers``."""
    graph = b"".join(field_bytes(1, n) for n in nodes or []) + field_bytes(2, graph_name)
    graph += b"".join(field_bytes(5, t) for t in initializers)
    opset = field_bytes(1, "") + field_varint(2, 17)
    return (
        field_varint(1, 8)
        + field_bytes(2, "unshell-tests")
        + field_bytes(3, "1.0")
        + field_bytes(7, graph)
        + field_bytes(8, opset)
    )


def constant_node(output: str, tensor: bytes) -> bytes:
    """A NodeProto ``Constant`` whose ``value`` attribute holds ``tensor``."""
    attribute = field_bytes(1, "value") + field_bytes(5, tensor) + field_varint(20, 4)
    return (
        field_bytes(2, output)
        + field_bytes(3, output + "_node")
        + field_bytes(4, "Constant")
        + field_bytes(5, attribute)
    )


def small_onnx_model() -> bytes:
    """A valid model: ``w`` FLOAT (2, 3) in raw_data = 0..5, ``b`` FLOAT (3,) in float_data."""
    w = onnx_tensor("w", ONNX_FLOAT, [2, 3], raw=struct.pack("<6f", *range(6)))
    b = onnx_tensor("b", ONNX_FLOAT, [3], float_data=[0.5, 1.5, 2.5])
    return onnx_model([w, b])


def mutations(data: bytes, count: int, seed: int) -> list[bytes]:
    """Deterministic random corruptions: flipped, deleted and inserted bytes, and truncation."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            pos = int(rng.integers(0, len(mutated)))
            kind = rng.random()
            if kind < 0.6:
                mutated[pos] = int(rng.integers(0, 256))
            elif kind < 0.8:
                del mutated[pos : pos + int(rng.integers(1, 9))]
            else:
                mutated[pos:pos] = rng.integers(
                    0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8
                ).tobytes()
        if rng.random() < 0.2:
            mutated = mutated[: int(rng.integers(0, len(mutated)))]
        out.append(bytes(mutated))
    return out


# -- GGUF cases ---------------------------------------------------------------------------------


def _with(change: Callable[[GGUFParts], None]) -> bytes:
    parts = small_model()
    change(parts)
    return gguf_file(parts)


def _set(**values: object) -> Callable[[GGUFParts], None]:
    def change(parts: GGUFParts) -> None:
        for key, value in values.items():
            setattr(parts, key, value)

    return change


def _gguf_cases() -> dict[str, tuple[bytes, type[Exception]]]:
    valid = gguf_file(small_model())
    header_end = len(valid) - len(small_model().data)
    f32_pair = [tensor_info("a", [8], F32, 0), tensor_info("b", [4, 2], F32, 32)]
    return {
        "truncated_header.gguf": (valid[:14], CorruptCheckpointError),
        "truncated_in_metadata.gguf": (valid[:40], CorruptCheckpointError),
        "truncated_data.gguf": (valid[: header_end + 40], CorruptCheckpointError),
        "string_beyond_eof.gguf": (
            _with(_set(kvs=[kv("general.name", STRING, struct.pack("<Q", 1 << 40) + b"x")])),
            CorruptCheckpointError,
        ),
        "tensor_count_2_60.gguf": (_with(_set(tensor_count=1 << 60)), ResourceLimitError),
        "kv_count_2_60.gguf": (_with(_set(kv_count=1 << 60)), ResourceLimitError),
        "kv_count_lies.gguf": (_with(_set(kv_count=100_000)), CorruptCheckpointError),
        "n_dims_9.gguf": (_with(_set(infos=[tensor_info("a", [1] * 9, F32, 0)])), InconsistentHeaderError),
        "unknown_type_id.gguf": (_with(_set(infos=[tensor_info("a", [8], 99, 0)])), UnsupportedFormatError),
        "removed_type_q4_2.gguf": (_with(_set(infos=[tensor_info("a", [32], 4, 0)])), UnsupportedFormatError),
        "misaligned_offset.gguf": (
            _with(_set(infos=[tensor_info("a", [4], F32, 16)])),
            InconsistentHeaderError,
        ),
        "offset_beyond_eof.gguf": (
            _with(_set(infos=[f32_pair[0], tensor_info("b", [4, 2], F32, 1 << 40)])),
            InconsistentHeaderError,
        ),
        "overlapping_tensors.gguf": (
            _with(_set(infos=[tensor_info("a", [8], F32, 0), tensor_info("b", [8], F32, 0)])),
            InconsistentHeaderError,
        ),
        "duplicate_keys.gguf": (
            _with(_set(kvs=[kv_string("general.name", "x"), kv_string("general.name", "y")])),
            InconsistentHeaderError,
        ),
        "duplicate_tensor_names.gguf": (
            _with(_set(infos=[tensor_info("a", [8], F32, 0), tensor_info("a", [8], F32, 32)])),
            InconsistentHeaderError,
        ),
        "alignment_3.gguf": (
            _with(_set(kvs=[kv_scalar("general.alignment", UINT32, 3)])),
            InconsistentHeaderError,
        ),
        "alignment_0.gguf": (
            _with(_set(kvs=[kv_scalar("general.alignment", UINT32, 0)])),
            InconsistentHeaderError,
        ),
        "alignment_string.gguf": (
            _with(_set(kvs=[kv_string("general.alignment", "32")])),
            InconsistentHeaderError,
        ),
        "nested_array.gguf": (
            _with(_set(kvs=[kv("x", ARRAY, struct.pack("<IQ", ARRAY, 1))])),
            UnsupportedFormatError,
        ),
        "unknown_value_type.gguf": (_with(_set(kvs=[kv("x", 13, b"\x00" * 8)])), CorruptCheckpointError),
        "array_count_beyond_eof.gguf": (
            _with(_set(kvs=[kv_array("x", FLOAT32, [1.0], count=1 << 40)])),
            CorruptCheckpointError,
        ),
        "string_array_beyond_eof.gguf": (
            _with(_set(kvs=[kv_array("x", STRING, ["a"] * 2000, count=1 << 20)])),
            CorruptCheckpointError,
        ),
        "block_size_mismatch.gguf": (
            _with(_set(infos=[tensor_info("a", [33], Q4_0, 0)])),
            InconsistentHeaderError,
        ),
        "dimension_2_63.gguf": (
            _with(_set(infos=[tensor_info("a", [1 << 63], F32, 0)])),
            InconsistentHeaderError,
        ),
        "huge_tensor.gguf": (
            _with(_set(infos=[tensor_info("a", [1 << 31, 1 << 31], F32, 0)])),
            InconsistentHeaderError,
        ),
        "key_not_utf8.gguf": (
            _with(_set(kvs=[kv(b"\xff\xfe", STRING, string("x"))])),
            CorruptCheckpointError,
        ),
        "key_too_long.gguf": (_with(_set(kvs=[kv("k" * 70_000, UINT32, b"\x00" * 4)])), ResourceLimitError),
        "version_1.gguf": (_with(_set(version=1)), UnsupportedFormatError),
        "version_4.gguf": (_with(_set(version=4)), UnsupportedFormatError),
        "big_endian.gguf": (_with(_set(version=3 << 24)), UnsupportedFormatError),
    }


# -- ONNX cases ---------------------------------------------------------------------------------


def _onnx_cases() -> dict[str, tuple[bytes, type[Exception]]]:
    valid = small_onnx_model()
    w_raw = struct.pack("<6f", *range(6))
    return {
        "truncated.onnx": (valid[: len(valid) // 2], CorruptCheckpointError),
        "length_beyond_eof.onnx": (
            field_varint(1, 8) + tag(7, LENGTH) + varint(1 << 50) + b"\x00" * 16,
            CorruptCheckpointError,
        ),
        "no_graph.onnx": (field_varint(1, 8) + field_bytes(2, "x"), CorruptCheckpointError),
        "bad_wire_type.onnx": (field_varint(1, 8) + tag(7, 7) + b"\x00" * 8, CorruptCheckpointError),
        "varint_11_bytes.onnx": (tag(1, VARINT) + b"\xff" * 10 + b"\x01", CorruptCheckpointError),
        "raw_size_mismatch.onnx": (
            onnx_model([onnx_tensor("w", ONNX_FLOAT, [4], raw=b"\x00" * 12)]),
            InconsistentHeaderError,
        ),
        "float_data_mismatch.onnx": (
            onnx_model([onnx_tensor("w", ONNX_FLOAT, [4], float_data=[1.0])]),
            InconsistentHeaderError,
        ),
        "varint_count_mismatch.onnx": (
            onnx_model([onnx_tensor("i", ONNX_INT64, [4], int64_data=[1, 2, 3])]),
            InconsistentHeaderError,
        ),
        "missing_data.onnx": (onnx_model([onnx_tensor("w", ONNX_FLOAT, [4])]), InconsistentHeaderError),
        "duplicate_initializer.onnx": (
            onnx_model([onnx_tensor("w", ONNX_FLOAT, [6], raw=w_raw)] * 2),
            InconsistentHeaderError,
        ),
        "rank_9.onnx": (
            onnx_model([onnx_tensor("w", ONNX_FLOAT, [1] * 9, raw=b"\x00" * 4)]),
            ResourceLimitError,
        ),
        "negative_dim.onnx": (
            onnx_model([onnx_tensor("w", ONNX_FLOAT, [-1], raw=b"")]),
            InconsistentHeaderError,
        ),
        "huge_dims.onnx": (
            onnx_model([onnx_tensor("w", ONNX_FLOAT, [1 << 40, 1 << 40], raw=w_raw)]),
            InconsistentHeaderError,
        ),
        "unpacked_float_data.onnx": (
            onnx_model([onnx_tensor("w", ONNX_FLOAT, [1], extra=tag(4, FIXED32) + b"\x00" * 4)]),
            UnsupportedFormatError,
        ),
        "unpacked_float_data_many.onnx": (
            onnx_model([onnx_tensor("w", ONNX_FLOAT, [3], extra=(tag(4, FIXED32) + b"\x00" * 4) * 3)]),
            UnsupportedFormatError,
        ),
        "segmented.onnx": (
            onnx_model(
                [onnx_tensor("w", ONNX_FLOAT, [1], raw=b"\x00" * 4, extra=field_bytes(3, field_varint(1, 0)))]
            ),
            UnsupportedFormatError,
        ),
        "no_data_type.onnx": (
            onnx_model([onnx_tensor("w", 0, [1], raw=b"\x00" * 4)]),
            InconsistentHeaderError,
        ),
        "name_not_utf8.onnx": (
            onnx_model(
                [onnx_tensor("w", ONNX_FLOAT, [1], raw=b"\x00" * 4).replace(b"\x42\x01w", b"\x42\x01\xff")]
            ),
            CorruptCheckpointError,
        ),
        "external_absolute.onnx": (
            onnx_model([onnx_tensor("w", ONNX_FLOAT, [6], external={"location": "/etc/hostname"})]),
            UnsupportedFormatError,
        ),
        "external_missing.onnx": (
            onnx_model([onnx_tensor("w", ONNX_FLOAT, [6], external={"location": "no-such-file.bin"})]),
            CorruptCheckpointError,
        ),
    }


def _external_escape(directory: Path) -> dict[str, type[Exception]]:
    """A model in a subfolder whose external data points at a real file one level up."""
    (directory / "outside.bin").write_bytes(struct.pack("<6f", *range(6)))
    model_dir = directory / "onnx_escape"
    model_dir.mkdir(exist_ok=True)
    tensor = onnx_tensor("w", ONNX_FLOAT, [6], external={"location": "../outside.bin"})
    (model_dir / "model.onnx").write_bytes(onnx_model([tensor]))
    return {"onnx_escape/model.onnx": UnsupportedFormatError}


def make_hostile_files(directory: Path) -> dict[str, type[Exception]]:
    """Write every hostile GGUF and ONNX file into ``directory``; returns relative path -> error class."""
    cases: dict[str, type[Exception]] = {}
    for prefix, table in (("gguf_", _gguf_cases()), ("onnx_", _onnx_cases())):
        for name, (content, expected) in table.items():
            (directory / (prefix + name)).write_bytes(content)
            cases[prefix + name] = expected
    cases.update(_external_escape(directory))
    return cases
