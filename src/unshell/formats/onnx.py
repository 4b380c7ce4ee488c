"""ONNX reader: graph initializers (and ``Constant`` node values) as byte ranges in the file.

``onnx.load`` materializes every weight in memory; this reader walks the protobuf wire format
itself and records where each tensor's bytes are, so values are read lazily like any other
format. Only the few fields needed are decoded:

- ModelProto: ir_version 1, producer_name 2, producer_version 3, domain 4, model_version 5,
  graph 7, opset_import 8, metadata_props 14.
- GraphProto: node 1, name 2, initializer 5, sparse_initializer 15.
- NodeProto: output 2, op_type 4, attribute 5, domain 7; AttributeProto: name 1, t 5.
- TensorProto: dims 1, data_type 2, segment 3, float_data 4, int32_data 5, int64_data 7, name 8,
  raw_data 9, double_data 10, uint64_data 11, external_data 13, data_location 14.

Tensor bytes come from ``raw_data``, from packed ``float_data``/``double_data`` (little-endian,
addressable in place), from packed varint fields (``int32_data``, ``int64_data``,
``uint64_data``: decoded when read, marked ``extra["encoding"] == "varint"``), or from an external
data file beside the model. Every length is checked against the bytes that remain before use.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    ResourceLimitError,
    UnsupportedFormatError,
)
from .base import (
    MAX_NAME_BYTES,
    MAX_RANK,
    MAX_TENSORS,
    PLAIN_DTYPES,
    Checkpoint,
    TensorInfo,
    check_shape,
    decode,
    expected_nbytes,
    sanitize,
    validate_ranges,
)
from .facts import Claim, FormatFacts, claim_text

# ONNX TensorProto.DataType -> unshell dtype code, for the types unshell can decode.
ONNX_DTYPES: dict[int, str] = {
    1: "F32",
    2: "U8",
    3: "I8",
    4: "U16",
    5: "I16",
    6: "I32",
    7: "I64",
    9: "BOOL",
    10: "F16",
    11: "F64",
    12: "U32",
    13: "U64",
    14: "C64",
    16: "BF16",
    17: "F8_E4M3",
    19: "F8_E5M2",
}
# Types that exist but have no decoder here; their tensors are listed in `Checkpoint.notes`.
ONNX_UNREADABLE_TYPES: dict[int, str] = {
    8: "STRING",
    15: "COMPLEX128",
    18: "FLOAT8E4M3FNUZ",
    20: "FLOAT8E5M2FNUZ",
    21: "UINT4",
    22: "INT4",
    23: "FLOAT4E2M1",
}

_INTEGER_CODES = {"I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64"}

_MAX_EXTERNAL_ENTRIES = 16
MAX_ONNX_NODES = 500_000
"""Nodes in one graph. Exported LLMs have a few thousand to tens of thousands."""
MAX_ONNX_FIELDS = 4_000_000
"""Protobuf fields the reader walks in one file (a node costs about ten, an initializer about five;
tensor data is one field however large). Walking costs microseconds a field, so this bounds the
time a file of millions of empty messages takes, whatever its size."""
_MAX_CONSTANT_ATTRIBUTES = 4

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

# Which packed field may carry which dtype (the ONNX spec's table for TensorProto).
_PACKED_FLOATS = {4: ("F32", "C64"), 10: ("F64",)}
_PACKED_VARINTS = {
    5: ("I32", "I16", "I8", "U16", "U8", "BOOL", "F16", "BF16", "F8_E4M3", "F8_E5M2"),
    7: ("I64",),
    11: ("U32", "U64"),
}


class OnnxCheckpoint(Checkpoint):
    """A `Checkpoint` whose small integer tensors may be stored as protobuf varints, and whose
    quantized weights (an integer initializer times a scale, in the graph) read as one float tensor.
    """

    # Integer codes, scales and zero points folded into dequantized tensors, by name.
    components: dict[str, TensorInfo]

    def read(self, name: str) -> np.ndarray:
        info = self.info(name)
        dequantize = info.extra.get("dequantize")
        if dequantize:
            values = self._decode(info).astype(np.float32)
            zero_point = dequantize.get("zero_point")
            if zero_point:
                values = values - self._decode(self.components[zero_point]).astype(np.float32)
            scale = self._decode(self.components[dequantize["scale"]]).astype(np.float32)
            return values * np.reshape(scale, dequantize["scale_shape"])
        return self._decode(info)

    def raw_is_value(self, info: TensorInfo) -> bool:
        extra = info.extra
        return (
            super().raw_is_value(info) and not extra.get("dequantize") and extra.get("encoding") != "varint"
        )

    def _decode(self, info: TensorInfo) -> np.ndarray:
        if info.extra.get("encoding") == "varint":
            return decode_varint_tensor(self.raw_bytes(info), info)
        return decode(self.raw_bytes(info), info)


@dataclass(frozen=True)
class _Field:
    number: int
    wire_type: int
    value: int
    """The integer for varint fields; the payload offset for all others."""
    length: int = 0


class _Wire:
    """Bounds-checked protobuf field iteration over a byte buffer."""

    def __init__(self, buffer: bytes | mmap.mmap, where: str) -> None:
        self.buffer = buffer
        self.where = where
        self.fields_left = MAX_ONNX_FIELDS

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        result = 0
        for index in range(_MAX_VARINT_BYTES):
            if pos >= end:
                raise CorruptCheckpointError(f"{self.where}: a protobuf varint runs past its message")
            byte = self.buffer[pos]
            pos += 1
            result |= (byte & 0x7F) << (7 * index)
            if byte < 0x80:
                return result & 0xFFFFFFFFFFFFFFFF, pos
        raise CorruptCheckpointError(f"{self.where}: a protobuf varint is longer than 10 bytes")

    def fields(self, start: int, end: int) -> Iterator[_Field]:
        pos = start
        while pos < end:
            tag, pos = self.varint(pos, end)
            number, wire_type = tag >> 3, tag & 7
            if number == 0:
                raise CorruptCheckpointError(f"{self.where}: protobuf field number 0 at offset {pos}")
            self.fields_left -= 1
            if self.fields_left < 0:
                raise ResourceLimitError(
                    f"{self.where}: more than {MAX_ONNX_FIELDS} protobuf fields to walk, more than any real model has"
                )
            if wire_type == _VARINT:
                value, pos = self.varint(pos, end)
                yield _Field(number, wire_type, value)
                continue
            if wire_type == _LENGTH:
                length, pos = self.varint(pos, end)
            elif wire_type == _FIXED64:
                length = 8
            elif wire_type == _FIXED32:
                length = 4
            else:
                raise CorruptCheckpointError(
                    f"{self.where}: protobuf wire type {wire_type} at offset {pos} (not an ONNX model?)"
                )
            if length > end - pos:
                raise CorruptCheckpointError(
                    f"{self.where}: a protobuf field of {length} bytes at offset {pos} runs past "
                    f"the end of its message ({end - pos} bytes left)"
                )
            yield _Field(number, wire_type, pos, length)
            pos += length

    def bytes_of(self, item: _Field) -> bytes:
        return bytes(self.buffer[item.value : item.value + item.length])

    def text(self, item: _Field, what: str, *, limit: int | None = None, strict: bool = False) -> str:
        self.expect(item, _LENGTH, what)
        if limit is not None and item.length > limit:
            raise ResourceLimitError(f"{self.where}: {what} is {item.length} bytes long (limit {limit})")
        raw = self.bytes_of(item)
        try:
            return raw.decode("utf-8", errors="strict" if strict else "replace")
        except UnicodeDecodeError:
            raise CorruptCheckpointError(f"{self.where}: {what} is not valid UTF-8") from None

    def expect(self, item: _Field, wire_type: int, what: str) -> None:
        if item.wire_type != wire_type:
            raise CorruptCheckpointError(
                f"{self.where}: {what} has protobuf wire type {item.wire_type}, expected {wire_type}"
            )


@dataclass
class _TensorProto:
    """The fields of one TensorProto that locate its data."""

    name: str = ""
    dims: list[int] = field(default_factory=list)
    data_type: int = 0
    data: list[_Field] = field(default_factory=list)
    external: dict[str, str] = field(default_factory=dict)
    data_location: int = 0
    has_segment: bool = False


def read_onnx(path: Path) -> Checkpoint:
    """Open an ONNX model: initializers and ``Constant`` node tensors as lazily read tensors.

    Initializers carry ``extra["onnx_source"] == "initializer"``; tensors held by ``Constant``
    nodes (named after the node's output) carry ``"constant"``. ``metadata["onnx"]`` holds
    ``ir_version``, ``producer_name``, ``producer_version``, ``domain``, ``model_version``,
    ``graph_name``, ``opset`` (domain -> version; the default domain is ``ai.onnx``) and
    ``metadata_props``. Tensors of types with no decoder here (strings, 4-bit) are skipped and
    named in ``notes``.

    Raises:
        UnsupportedFormatError, CorruptCheckpointError, InconsistentHeaderError, ResourceLimitError.
    """
    where = sanitize(path.name)
    size = path.stat().st_size
    if size == 0:
        raise CorruptCheckpointError(f"{where}: the file is empty")
    checkpoint = OnnxCheckpoint(format="onnx", path=path, files=[path], tensors={})
    checkpoint.components = {}
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        wire = _Wire(mapped, where)
        metadata, graph = _read_model(wire, size)
        if graph is None:
            raise CorruptCheckpointError(f"{where}: the ONNX model has no graph")
        metadata["graph_name"] = _read_graph(wire, graph, path, checkpoint)
    checkpoint.metadata["onnx"] = metadata
    _validate_files(checkpoint)
    return checkpoint


def _read_model(wire: _Wire, size: int) -> tuple[dict[str, object], _Field | None]:
    metadata: dict[str, object] = {}
    opset: dict[str, int] = {}
    properties: dict[str, str] = {}
    text_fields = {2: "producer_name", 3: "producer_version", 4: "domain", 6: "doc_string"}
    number_fields = {1: "ir_version", 5: "model_version"}
    graph: _Field | None = None
    for item in wire.fields(0, size):
        if item.number in text_fields:
            metadata[text_fields[item.number]] = wire.text(item, text_fields[item.number])
        elif item.number in number_fields:
            wire.expect(item, _VARINT, number_fields[item.number])
            metadata[number_fields[item.number]] = item.value
        elif item.number == 7:
            wire.expect(item, _LENGTH, "the graph")
            graph = item
        elif item.number == 8:
            wire.expect(item, _LENGTH, "an opset import")
            domain, version = _read_opset(wire, item)
            opset[domain or "ai.onnx"] = version
        elif item.number == 14:
            wire.expect(item, _LENGTH, "a metadata property")
            key, value = _read_string_pair(wire, item)
            properties[key] = value
    metadata["opset"] = opset
    metadata["metadata_props"] = properties
    return metadata, graph


def _read_opset(wire: _Wire, message: _Field) -> tuple[str, int]:
    domain, version = "", 0
    for item in wire.fields(message.value, message.value + message.length):
        if item.number == 1:
            domain = wire.text(item, "an opset domain")
        elif item.number == 2:
            wire.expect(item, _VARINT, "an opset version")
            version = item.value
    return domain, version


def _read_string_pair(wire: _Wire, message: _Field) -> tuple[str, str]:
    key, value = "", ""
    for item in wire.fields(message.value, message.value + message.length):
        if item.number == 1:
            key = wire.text(item, "a key")
        elif item.number == 2:
            value = wire.text(item, "a value")
    return key, value


def _read_graph(wire: _Wire, graph: _Field, path: Path, checkpoint: OnnxCheckpoint) -> str:
    graph_name = ""
    sparse = 0
    found: list[tuple[str, _TensorProto]] = []
    nodes: list[tuple[str, list[str], list[str]]] = []
    node_count = 0
    for item in wire.fields(graph.value, graph.value + graph.length):
        if item.number == 2:
            graph_name = wire.text(item, "the graph name")
        elif item.number == 5:
            wire.expect(item, _LENGTH, "an initializer")
            found.append(("initializer", _read_tensor_proto(wire, item)))
        elif item.number == 1:
            wire.expect(item, _LENGTH, "a node")
            node_count += 1
            if node_count > MAX_ONNX_NODES:
                raise ResourceLimitError(f"{wire.where}: more than {MAX_ONNX_NODES} nodes in the graph")
            constant, op_type = _read_constant_node(wire, item)
            if constant is not None:
                found.append(("constant", constant))
            elif op_type in _DEQUANTIZING_OPS and len(nodes) < MAX_TENSORS:  # a second pass only for these
                signature = _read_node_signature(wire, item)
                if signature is not None:
                    nodes.append(signature)
        elif item.number == 15:
            sparse += 1
        if len(found) > MAX_TENSORS:
            raise ResourceLimitError(f"{wire.where}: more than {MAX_TENSORS} tensors")
    if sparse:
        checkpoint.notes.append(
            f"{sparse} sparse initializers were not read (sparse tensors are unsupported)"
        )
    # Initializers first: nodes usually precede them in the file, and most Constants are shapes.
    found.sort(key=lambda item: item[0] != "initializer")
    for source, proto in found:
        info = _tensor_info(wire, proto, path, source, checkpoint)
        if info is None:
            continue
        if info.name in checkpoint.tensors:
            raise InconsistentHeaderError(f"{wire.where}: two tensors named {sanitize(info.name)!r}")
        checkpoint.tensors[info.name] = info
        if info.file not in checkpoint.files:
            checkpoint.files.append(info.file)
    _fold_dequantization(checkpoint, nodes)
    return graph_name


# Nodes that turn a stored integer tensor into a float weight inside the graph.
_DEQUANTIZING_OPS = frozenset({"Cast", "Mul", "DequantizeLinear"})
_QUANTIZED_CODES = frozenset({"I8", "U8", "I16", "U16", "I32"})


def _read_node_signature(wire: _Wire, message: _Field) -> tuple[str, list[str], list[str]] | None:
    """(op_type, inputs, outputs) of a node that may dequantize a weight; None for any other node."""
    op_type = ""
    inputs: list[str] = []
    outputs: list[str] = []
    for item in wire.fields(message.value, message.value + message.length):
        if item.number == 1 and len(inputs) < 4:
            inputs.append(wire.text(item, "a node input", limit=MAX_NAME_BYTES, strict=False))
        elif item.number == 2 and len(outputs) < 2:
            outputs.append(wire.text(item, "a node output", limit=MAX_NAME_BYTES, strict=False))
        elif item.number == 4:
            op_type = wire.text(item, "a node op_type")
    if op_type not in _DEQUANTIZING_OPS or len(outputs) != 1:
        return None
    return op_type, inputs, outputs


def _fold_dequantization(checkpoint: OnnxCheckpoint, nodes: list[tuple[str, list[str], list[str]]]) -> None:
    """``Mul(Cast(q), scale)`` and ``DequantizeLinear(q, scale, zero_point)`` over initializers
    become one logical tensor named after the node's output, read as ``(q - zero_point) * scale``.

    A quantized export then shows the weights it computes with, under the graph's own names, and
    its integer codes and scales stop looking like extra tensors of an unknown architecture.
    """
    tensors = checkpoint.tensors
    casts = {
        outputs[0]: inputs[0]
        for op, inputs, outputs in nodes
        if op == "Cast" and inputs and inputs[0] in tensors and tensors[inputs[0]].dtype in _QUANTIZED_CODES
    }
    for op, inputs, outputs in nodes:
        if op == "Mul" and len(inputs) == 2:
            first, second = inputs
            quantized, scale = (casts.get(first), second) if first in casts else (casts.get(second), first)
            zero_point = None
        elif op == "DequantizeLinear" and len(inputs) >= 2 and inputs[0] in tensors:
            quantized, scale = inputs[0], inputs[1]
            zero_point = inputs[2] if len(inputs) > 2 and inputs[2] else None
        else:
            continue
        if quantized is None or quantized not in tensors or scale not in tensors or outputs[0] in tensors:
            continue
        q_info, scale_info = tensors[quantized], tensors[scale]
        if q_info.dtype not in _QUANTIZED_CODES or scale_info.dtype not in ("F32", "F16"):
            continue
        scale_shape = _broadcast_shape(scale_info.shape, q_info.shape)
        if scale_shape is None or (zero_point and zero_point not in tensors):
            continue
        extra = {
            **q_info.extra,
            "dequantize": {"scale": scale, "zero_point": zero_point, "scale_shape": scale_shape},
        }
        tensors[outputs[0]] = replace(q_info, name=outputs[0], extra=extra)
        for part in (quantized, scale, zero_point):
            if part and part in tensors:
                checkpoint.components[part] = tensors.pop(part)


def _broadcast_shape(scale: tuple[int, ...], target: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape to view ``scale`` in so it broadcasts over ``target`` per row or per column."""
    count = int(np.prod(scale)) if scale else 1
    if count == 1:
        return (1,) * len(target) if target else ()
    if len(target) == 2 and count == target[0] and (scale in ((target[0],), (target[0], 1))):
        return (target[0], 1)
    if len(target) == 2 and count == target[1] and (scale in ((target[1],), (1, target[1]))):
        return (1, target[1])
    return None


def _read_tensor_proto(wire: _Wire, message: _Field) -> _TensorProto:
    proto = _TensorProto()
    for item in wire.fields(message.value, message.value + message.length):
        number = item.number
        if number == 1:
            _read_dims(wire, item, proto.dims)
        elif number == 2:
            wire.expect(item, _VARINT, "a tensor data type")
            proto.data_type = item.value
        elif number == 3:
            proto.has_segment = True
        elif number in (4, 5, 7, 9, 10, 11):
            if proto.data:
                # Valid writers use one packed field; many unpacked ones would each cost an object.
                raise UnsupportedFormatError(
                    f"{wire.where}: tensor {sanitize(proto.name)!r} stores its data in several fields "
                    "(unpacked repeated values)"
                )
            proto.data.append(item)
        elif number == 8:
            proto.name = wire.text(item, "a tensor name", limit=MAX_NAME_BYTES, strict=True)
        elif number == 13:
            wire.expect(item, _LENGTH, "an external data entry")
            key, value = _read_string_pair(wire, item)
            proto.external[key] = value
            if len(proto.external) > _MAX_EXTERNAL_ENTRIES:
                raise InconsistentHeaderError(
                    f"{wire.where}: a tensor has over {_MAX_EXTERNAL_ENTRIES} external data entries"
                )
        elif number == 14:
            wire.expect(item, _VARINT, "a data location")
            proto.data_location = item.value
    return proto


def _read_dims(wire: _Wire, item: _Field, dims: list[int]) -> None:
    """Dims are a repeated int64: one varint per field, or a packed run of varints."""
    if item.wire_type == _VARINT:
        values = [item.value]
    else:
        wire.expect(item, _LENGTH, "tensor dims")
        values, pos, end = [], item.value, item.value + item.length
        while pos < end and len(values) + len(dims) <= MAX_RANK:
            value, pos = wire.varint(pos, end)
            values.append(value)
    for value in values:
        dims.append(value - (1 << 64) if value >= 1 << 63 else value)  # int64 two's complement
    if len(dims) > MAX_RANK:
        raise ResourceLimitError(f"{wire.where}: a tensor with more than {MAX_RANK} dimensions")


def _read_constant_node(wire: _Wire, message: _Field) -> tuple[_TensorProto | None, str]:
    """(the tensor of a ``Constant`` node's ``value`` attribute, named after the node's output, or
    None; the node's op_type)."""
    op_type, domain = "", ""
    outputs: list[str] = []
    attributes: list[_Field] = []
    for item in wire.fields(message.value, message.value + message.length):
        if item.number == 2 and len(outputs) < 2:  # a Constant has exactly one; more only need counting
            outputs.append(wire.text(item, "a node output", limit=MAX_NAME_BYTES, strict=True))
        elif item.number == 4:
            op_type = wire.text(item, "a node op_type")
        elif item.number == 7:
            domain = wire.text(item, "a node domain")
        elif item.number == 5 and len(attributes) < _MAX_CONSTANT_ATTRIBUTES:
            wire.expect(item, _LENGTH, "a node attribute")
            attributes.append(item)
    if op_type != "Constant" or domain not in ("", "ai.onnx") or len(outputs) != 1:
        return None, op_type
    for attribute in attributes:
        name, tensor = "", None
        for item in wire.fields(attribute.value, attribute.value + attribute.length):
            if item.number == 1:
                name = wire.text(item, "an attribute name")
            elif item.number == 5 and item.wire_type == _LENGTH:
                tensor = item
        if name == "value" and tensor is not None:
            proto = _read_tensor_proto(wire, tensor)
            proto.name = outputs[0]
            return proto, op_type
    return None, op_type


def _tensor_info(
    wire: _Wire, proto: _TensorProto, path: Path, source: str, checkpoint: Checkpoint
) -> TensorInfo | None:
    label = f"tensor {sanitize(proto.name)!r}"
    if not proto.name:
        raise InconsistentHeaderError(f"{wire.where}: an initializer has no name")
    if proto.has_segment:
        raise UnsupportedFormatError(f"{wire.where}: {label} is stored in segments")
    dtype = ONNX_DTYPES.get(proto.data_type)
    if dtype is None:
        if proto.data_type == 0:
            raise InconsistentHeaderError(f"{wire.where}: {label} has no data type")
        type_name = ONNX_UNREADABLE_TYPES.get(proto.data_type, f"data type {proto.data_type}")
        checkpoint.notes.append(f"{label} skipped: ONNX {type_name} tensors are not read")
        return None
    shape = check_shape(proto.dims, where=f"{wire.where}: {label}")
    nbytes = expected_nbytes(dtype, shape)
    base = TensorInfo(proto.name, dtype, shape, path, 0, 0, extra={"onnx_source": source})
    if proto.data_location == _EXTERNAL:
        if proto.data:
            raise InconsistentHeaderError(f"{wire.where}: {label} has both inline and external data")
        return _external_info(base, proto.external, nbytes, wire.where)
    if not proto.data:
        if nbytes:
            raise InconsistentHeaderError(
                f"{wire.where}: {label} has {math.prod(shape)} elements but no data"
            )
        return base
    return _inline_info(wire, base, proto.data[0], nbytes)


def _inline_info(wire: _Wire, base: TensorInfo, item: _Field, nbytes: int) -> TensorInfo:
    label = f"tensor {sanitize(base.name)!r}"
    if item.wire_type != _LENGTH:
        raise UnsupportedFormatError(
            f"{wire.where}: {label} stores its values unpacked (one field per value)"
        )
    if item.number in _PACKED_VARINTS:
        if base.dtype not in _PACKED_VARINTS[item.number]:
            raise InconsistentHeaderError(
                f"{wire.where}: {label} of type {base.dtype} in protobuf field {item.number}"
            )
        stored = _count_varints(wire.buffer, item)
        if stored != base.numel:
            raise InconsistentHeaderError(
                f"{wire.where}: {label} holds {stored} values, its shape {base.shape} needs {base.numel}"
            )
        extra = {**base.extra, "encoding": "varint"}
        return replace(base, offset=item.value, nbytes=item.length, extra=extra)
    if item.number in _PACKED_FLOATS and base.dtype not in _PACKED_FLOATS[item.number]:
        raise InconsistentHeaderError(
            f"{wire.where}: {label} of type {base.dtype} in protobuf field {item.number}"
        )
    if item.length != nbytes:
        raise InconsistentHeaderError(
            f"{wire.where}: {label} stores {item.length} bytes, its dtype and shape need {nbytes}"
        )
    return replace(base, offset=item.value, nbytes=nbytes)


def _count_varints(buffer: bytes | mmap.mmap, item: _Field) -> int:
    """Values in a packed varint run: one per byte without the continuation bit."""
    payload = np.frombuffer(buffer, dtype=np.uint8, count=item.length, offset=item.value)
    if item.length and payload[-1] >= 0x80:
        return -1  # the last varint is cut off
    return int(np.count_nonzero(payload < 0x80))


def _external_info(base: TensorInfo, entries: dict[str, str], nbytes: int, where: str) -> TensorInfo:
    label = f"tensor {sanitize(base.name)!r}"
    location = entries.get("location")
    if not location:
        raise InconsistentHeaderError(f"{where}: {label} is external but names no location")
    target = _resolve_external(base.file.parent, location, f"{where}: {label}'s external data")
    file_size = target.stat().st_size
    offset = _decimal(entries.get("offset", "0"), f"{label}'s external offset", where)
    length = _decimal(
        entries.get("length", str(max(file_size - offset, 0))), f"{label}'s external length", where
    )
    if length != nbytes:
        raise InconsistentHeaderError(
            f"{where}: {label}'s external data is {length} bytes, its dtype and shape need {nbytes}"
        )
    return replace(base, file=target, offset=offset, nbytes=length)


def _resolve_external(model_dir: Path, location: str, what: str) -> Path:
    """The external data file, which must be a regular file inside the model's directory."""
    shown = sanitize(location)
    if "\x00" in location or Path(location).is_absolute():
        raise UnsupportedFormatError(f"{what} {shown!r} is not a relative path inside the model's directory")
    try:
        root = model_dir.resolve()
        target = (root / location).resolve()
        inside = target.is_relative_to(root)
        exists = inside and target.is_file()
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop before Python 3.13
        raise CorruptCheckpointError(f"{what} {shown!r} cannot be resolved ({error})") from None
    if not inside:
        raise UnsupportedFormatError(f"{what} {shown!r} lies outside the model's directory")
    if not exists:
        raise CorruptCheckpointError(f"{what} file {shown!r} is missing")
    return target


def _decimal(text: str, what: str, where: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise InconsistentHeaderError(f"{where}: {what} is {sanitize(text)!r}, not a non-negative integer")
    return int(text)


def _validate_files(checkpoint: Checkpoint) -> None:
    for file in checkpoint.files:
        infos = [t for t in checkpoint.tensors.values() if t.file == file]
        validate_ranges(infos, file.stat().st_size, where=sanitize(file.name))


def decode_varint_tensor(raw: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Values of a tensor stored as a packed protobuf varint run (``int32_data`` and friends)."""
    values = _decode_varints(raw, info).view(np.int64)
    if values.size != info.numel:
        raise InconsistentHeaderError(
            f"tensor {sanitize(info.name)!r}: {values.size} values stored, shape needs {info.numel}"
        )
    if info.dtype == "BOOL":
        return (values != 0).reshape(info.shape)
    target = PLAIN_DTYPES[info.dtype]
    if info.dtype in _INTEGER_CODES:
        return values.astype(target).reshape(info.shape)
    # Half, bfloat16 and float8 values travel as their bit patterns in int32_data.
    bits = values.astype(np.dtype(f"<u{target.itemsize}"))
    return decode(bits.view(np.uint8), info)


def _decode_varints(raw: np.ndarray, info: TensorInfo) -> np.ndarray:
    """A packed varint run -> uint64 values, vectorized (bits past 64 dropped, as protobuf does)."""
    data = raw.reshape(-1).view(np.uint8)
    if data.size == 0:
        return np.zeros(0, dtype=np.uint64)
    last_bytes = np.flatnonzero(data < 0x80)
    if last_bytes.size == 0 or last_bytes[-1] != data.size - 1:
        raise CorruptCheckpointError(f"tensor {sanitize(info.name)!r}: its last varint is cut off")
    starts = np.concatenate(([0], last_bytes[:-1] + 1))
    lengths = last_bytes - starts + 1
    if int(lengths.max()) > _MAX_VARINT_BYTES:
        raise CorruptCheckpointError(f"tensor {sanitize(info.name)!r}: a varint is longer than 10 bytes")
    position = np.arange(data.size) - np.repeat(starts, lengths)
    parts = (data & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts)


# -- what the format declares ----------------------------------------------------------------------

# metadata_props keys that declare the model's identity (Optimum, onnxruntime-genai and hand-set).
_PROPERTY_FIELDS = {
    "name": "name",
    "model_name": "name",
    "model_type": "model_type",
    "architecture": "model_type",
    "base_model": "base_model",
    "license": "license",
    "author": "organization",
    "organization": "organization",
}


def format_facts(checkpoint: Checkpoint) -> FormatFacts:
    """ONNX declares ``metadata_props``, the producer and a doc string; its initializer names
    (``onnx::MatMul_470``, ``val_88``) are the exporter's, not the publisher's."""
    metadata = checkpoint.metadata.get("onnx")
    claims: list[tuple[str, Claim]] = []
    if isinstance(metadata, dict):
        properties = metadata.get("metadata_props")
        if isinstance(properties, dict):
            for key, value in properties.items():
                field_name = _PROPERTY_FIELDS.get(str(key).casefold())
                text = claim_text(value)
                if field_name is not None and text is not None:
                    claims.append((field_name, Claim(text, f"ONNX metadata_props {sanitize(str(key), 60)}")))
        producer = claim_text(metadata.get("producer_name"))
        if producer is not None:
            version = claim_text(metadata.get("producer_version"))
            shown = f"{producer} {version}" if version else producer
            claims.append(("producer", Claim(shown, "ONNX producer_name")))
        doc = claim_text(metadata.get("doc_string"))
        if doc is not None:
            claims.append(("description", Claim(doc, "ONNX doc_string")))
    return FormatFacts(
        label="ONNX",
        names_from="exporter",
        claims=tuple(claims),
        naming_note="ONNX initializer names are chosen by the exporter, not by the publisher",
    )
