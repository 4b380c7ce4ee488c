"""Fuzz: ONNX models, built field by field (`hostile_gguf_onnx`'s protobuf encoder) and mutated
from a valid model. Only unshell errors may escape (see `fuzz_support`)."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import (
    INTERESTING_U64,
    exercise_checkpoint,
    field_mutated,
    fuzz_settings,
    mostly,
    mutated,
    names,
    protobuf_fields,
    reaches,
    scratch_dir,
    usually,
)
from hostile_gguf_onnx import (
    constant_node,
    field_bytes,
    field_varint,
    onnx_model,
    onnx_tensor,
)
from unshell.formats.onnx import ONNX_DTYPES, ONNX_UNREADABLE_TYPES

ITEMSIZE = {
    1: 4,
    2: 1,
    3: 1,
    4: 2,
    5: 2,
    6: 4,
    7: 8,
    9: 1,
    10: 2,
    11: 8,
    12: 4,
    13: 8,
    14: 8,
    16: 2,
    17: 1,
    19: 1,
}
DATA_TYPES = mostly(tuple(ONNX_DTYPES), (0, *ONNX_UNREADABLE_TYPES, 24, 1000, 1 << 40), every=6)
dims_lists = usually(
    st.lists(st.integers(0, 6), max_size=3),
    st.lists(st.sampled_from((0, 1, 7, *INTERESTING_U64, -1, -(1 << 63))), max_size=9),
    every=20,
)
WEIGHT_NAMES = ("model.layers.0.self_attn.q_proj.weight", "onnx::MatMul_1", "w", "scale", "zp", "q")


@st.composite
def tensor_protos(draw: st.DrawFn, name: str) -> bytes:
    """A TensorProto named ``name`` (lone surrogates become invalid UTF-8, as a file may hold)."""
    data_type = draw(DATA_TYPES)
    dims = draw(dims_lists)
    count = 1
    for dim in dims:
        count *= max(dim, 0)
    nbytes = min(count, 256) * ITEMSIZE.get(data_type, 4)
    storage = draw(mostly(("raw",), ("float_data", "int64_data", "external", "none", "segment", "unpacked")))
    raw = float_data = int64_data = external = None
    extra = b""
    if storage == "raw":
        raw = draw(mostly((nbytes,), (0, nbytes + 1, max(nbytes - 1, 0)), every=6)) * b"\x01"
    elif storage == "float_data":
        float_data = draw(st.lists(st.floats(width=32), min_size=min(count, 64), max_size=min(count, 64)))
    elif storage == "int64_data":
        int64_data = draw(
            st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=min(count, 64), max_size=min(count, 64))
        )
    elif storage == "external":
        external = {
            "location": draw(
                st.sampled_from(
                    ("weights.bin", "../weights.bin", "/etc/passwd", "missing.bin", "", "a\x00b", ".")
                )
            ),
            "offset": draw(st.sampled_from(("0", "4", "-1", "abc", "9" * 30, "١"))),
        }
        if draw(st.booleans()):
            external["length"] = draw(st.sampled_from((str(nbytes), "0", "18446744073709551616")))
    elif storage == "segment":
        extra = field_bytes(3, field_varint(1, 0) + field_varint(2, 1))
    elif storage == "unpacked":
        extra = field_varint(4, 0) * 2
    return onnx_tensor(
        name.encode("utf-8", "surrogatepass"),  # type: ignore[arg-type]  (the encoder takes bytes too)
        data_type & ((1 << 64) - 1),
        dims,
        raw=raw,
        float_data=float_data,
        int64_data=int64_data,
        external=external,
        extra=extra,
    )


def node(op_type: str, inputs: list[str], outputs: list[str]) -> bytes:
    return (
        b"".join(field_bytes(1, i.encode("utf-8", "surrogatepass")) for i in inputs)
        + b"".join(field_bytes(2, o.encode("utf-8", "surrogatepass")) for o in outputs)
        + field_bytes(4, op_type)
    )


@st.composite
def onnx_models(draw: st.DrawFn) -> bytes:
    tensor_names = draw(st.lists(names(*WEIGHT_NAMES), min_size=1, max_size=5))
    initializers = [
        draw(tensor_protos(name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")))
        for name in tensor_names
    ]
    nodes = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(("DequantizeLinear", "Cast", "Mul", "Constant", "MatMul")))
        if kind == "Constant":
            output = draw(names("c", "w")).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            nodes.append(constant_node(output, draw(tensor_protos("ignored"))))
        else:
            inputs = draw(st.lists(st.sampled_from((*tensor_names, "x", "")), max_size=4))
            nodes.append(node(kind, inputs, draw(st.lists(names("y", "w"), min_size=1, max_size=2))))
    graph_name = draw(names("g")).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return onnx_model(initializers, nodes=nodes, graph_name=graph_name)


def _write_model(directory: Path, data: bytes) -> Path:
    (directory / "weights.bin").write_bytes(bytes(range(256)) * 4)
    path = directory / "model.onnx"
    path.write_bytes(data)
    return path


@reaches("inspect", "read_all", "fingerprint_round_trip")
@fuzz_settings(150)
@given(onnx_models())
def test_structured_onnx(data: bytes) -> None:
    with scratch_dir() as directory:
        exercise_checkpoint(_write_model(directory, data), fingerprint=True)


def _valid_model() -> bytes:
    q = onnx_tensor("q", 3, [2, 3], raw=struct.pack("<6b", *range(6)))
    scale = onnx_tensor("scale", 1, [2], float_data=[0.5, 0.25])
    zero = onnx_tensor("zp", 3, [], raw=b"\x00")
    dequantize = node("DequantizeLinear", ["q", "scale", "zp"], ["w"])
    constant = constant_node("c", onnx_tensor("ignored", 7, [3], int64_data=[1, -2, 3]))
    return onnx_model([q, scale, zero], nodes=[dequantize, constant])


VALID = _valid_model()
VALID_FIELDS = protobuf_fields(VALID)


@reaches("inspect", "read_all")
@fuzz_settings(80)
@given(
    st.one_of(
        field_mutated(VALID, VALID_FIELDS, max_mutations=1),
        field_mutated(VALID, VALID_FIELDS),
        mutated(VALID),
    )
)
def test_mutated_onnx(data: bytes) -> None:
    """A valid model (a DequantizeLinear over int8 weights, a Constant node) with tags, lengths and
    values changed in place, or bytes changed."""
    with scratch_dir() as directory:
        exercise_checkpoint(_write_model(directory, data))
