"""A byte-level GGUF writer for tests: every field is explicit, so a test can make any of them lie.

gguf-py's ``GGUFWriter`` only writes valid files; the reader's validation needs files that are
wrong in exactly one place. ``gguf_file`` assembles a file from pre-encoded pieces; the helpers
encode the pieces (keys, typed values, tensor infos) the way the GGUF spec lays them out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# GGUF metadata value type ids.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_SCALAR_CODES = {
    UINT8: "B",
    INT8: "b",
    UINT16: "H",
    INT16: "h",
    UINT32: "I",
    INT32: "i",
    FLOAT32: "f",
    BOOL: "?",
    UINT64: "Q",
    INT64: "q",
    FLOAT64: "d",
}

# GGML tensor type ids used by the tests.
F32, F16, Q4_0, Q8_0 = 0, 1, 2, 8


def string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def scalar(value_type: int, value: object) -> bytes:
    return struct.pack("<" + _SCALAR_CODES[value_type], value)


def kv(key: str | bytes, value_type: int, encoded_value: bytes) -> bytes:
    """One key/value pair; ``encoded_value`` is the value's bytes after the type id."""
    return string(key) + struct.pack("<I", value_type) + encoded_value


def kv_scalar(key: str, value_type: int, value: object) -> bytes:
    return kv(key, value_type, scalar(value_type, value))


def kv_string(key: str, value: str | bytes) -> bytes:
    return kv(key, STRING, string(value))


def kv_array(key: str, element_type: int, elements: list[object], count: int | None = None) -> bytes:
    """An array pair; ``count`` overrides the stored element count."""
    if element_type == STRING:
        payload = b"".join(string(e) for e in elements)  # type: ignore[arg-type]
    else:
        payload = b"".join(scalar(element_type, e) for e in elements)
    stored = len(elements) if count is None else count
    return kv(key, ARRAY, struct.pack("<IQ", element_type, stored) + payload)


def tensor_info(name: str | bytes, ne: list[int], ggml_type: int, offset: int) -> bytes:
    """``ne`` innermost first, as GGUF stores it."""
    return (
        string(name)
        + struct.pack("<I", len(ne))
        + b"".join(struct.pack("<Q", d) for d in ne)
        + struct.pack("<IQ", ggml_type, offset)
    )


@dataclass
class GGUFParts:
    """The pieces of a GGUF file; `gguf_file` joins them. Counts default to the list lengths."""

    kvs: list[bytes] = field(default_factory=list)
    infos: list[bytes] = field(default_factory=list)
    data: bytes = b""
    version: int = 3
    tensor_count: int | None = None
    kv_count: int | None = None
    alignment: int = 32
    magic: bytes = b"GGUF"


def gguf_file(parts: GGUFParts) -> bytes:
    tensor_count = len(parts.infos) if parts.tensor_count is None else parts.tensor_count
    kv_count = len(parts.kvs) if parts.kv_count is None else parts.kv_count
    head = parts.magic + struct.pack("<IQQ", parts.version, tensor_count, kv_count)
    body = head + b"".join(parts.kvs) + b"".join(parts.infos)
    padding = b"\x00" * (-len(body) % parts.alignment)
    return body + padding + parts.data


def small_model() -> GGUFParts:
    """A valid two-tensor file: ``a`` = F32 [0..7], ``b`` = F32 shape (2, 4) holding 8..15."""
    data = struct.pack("<8f", *range(8)) + struct.pack("<8f", *range(8, 16))
    return GGUFParts(
        kvs=[kv_string("general.architecture", "llama"), kv_scalar("llama.block_count", UINT32, 1)],
        infos=[tensor_info("a", [8], F32, 0), tensor_info("b", [4, 2], F32, 32)],
        data=data,
    )
