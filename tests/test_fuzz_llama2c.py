"""Fuzz: llama2.c exports (legacy v0, v1 fp32, v2 int8), headers built from chosen values and the
real fixtures' headers changed. Only unshell errors may escape (see `fuzz_support`)."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import (
    exercise_checkpoint,
    field_mutated,
    fuzz_settings,
    mostly,
    reaches,
    scratch_dir,
)
from unshell.formats.llama2c import MAGIC, Llama2cHeader, _expected_size

FIXTURES = Path(__file__).resolve().parent / "data" / "fixtures"
INT32_EDGES = (0, 1, -1, 2, 3, 7, 1 << 16, (1 << 31) - 1, -(1 << 31))

small_dims = st.tuples(
    st.sampled_from((8, 16)),  # dim
    st.sampled_from((8, 16, 24)),  # hidden
    st.integers(1, 2),  # layers
    st.sampled_from((1, 2, 4)),  # heads
    st.sampled_from((1, 2)),  # kv heads
    st.sampled_from((4, 8, 32)),  # vocab
    st.sampled_from((1, 2, 4)),  # seq
)
header_values = st.one_of(
    small_dims, st.tuples(*[mostly((8, 16, 2, 4, 1), INT32_EDGES, every=4) for _ in range(7)])
)


def _body_size(values: tuple[int, ...], version: int, shared: bool, group: int) -> int | None:
    dim, hidden, layers, heads, kv_heads, vocab, seq = values
    try:
        header = Llama2cHeader(dim, hidden, layers, heads, kv_heads, abs(vocab), seq, shared, version, group)
        size = _expected_size(header)
    except Exception:  # values the reader refuses: any size will do
        return None
    return size if 0 <= size <= 1 << 16 else None


@st.composite
def llama2c_files(draw: st.DrawFn) -> bytes:
    values = draw(header_values)
    version = draw(mostly((0, 1, 2), (3, -1, 1 << 30), every=8))
    shared = draw(st.booleans())
    group = draw(mostly((8, 4, 2), (0, -1, 3, 1 << 20), every=6)) if version == 2 else 0
    if version == 0:
        stored = list(values)
        stored[5] = abs(stored[5]) if shared else -abs(stored[5])
        head = struct.pack("<7i", *(max(min(v, (1 << 31) - 1), -(1 << 31)) for v in stored))
    else:
        head = struct.pack("<Ii7iB", MAGIC, version, *values, draw(mostly((int(shared),), (2, 255))))
        if version == 2:
            head += struct.pack("<i", group)
        head = head.ljust(256, b"\0")
        if draw(st.integers(0, 9)) == 5:
            head = head[:255] + b"\x01"  # non-zero padding
    expected = _body_size(values, max(version, 0), shared, group)
    total = expected if expected is not None else draw(st.integers(0, 4096)) + len(head)
    total += draw(mostly((0,), (-4, -1, 1, 4, 256)))
    body_size = max(total - len(head), 0)
    return head + draw(st.binary(min_size=min(body_size, 1 << 16), max_size=min(body_size, 1 << 16)))


@reaches("inspect", "read_all", "fingerprint_round_trip")
@fuzz_settings(120)
@given(llama2c_files())
def test_structured_llama2c(data: bytes) -> None:
    with scratch_dir() as directory:
        path = directory / "model.bin"
        path.write_bytes(data)
        exercise_checkpoint(path, fingerprint=True)


V0 = (FIXTURES / "stories260K.bin").read_bytes()
V0_FIELDS = [(offset, 4) for offset in range(0, 28, 4)]


@fuzz_settings(40)
@given(field_mutated(V0, V0_FIELDS, max_mutations=2))
def test_mutated_real_v0_header(data: bytes) -> None:
    """stories260K.bin with its seven header ints changed. v0 has no magic: a file is v0 only
    when the size its header implies is its size, so most changes make it no checkpoint at all;
    this tests that detection (which also runs on every ``.bin`` in a model folder)."""
    with scratch_dir() as directory:
        path = directory / "stories260K.bin"
        path.write_bytes(data)
        exercise_checkpoint(path, read_values=False)
