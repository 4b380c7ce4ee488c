"""Write PyTorch zip checkpoints without torch (test helper).

``torch.save`` writes a zip whose ``<top>/data.pkl`` is a protocol-2 pickle: tensors are
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`` calls
and each storage is a persistent id ``("storage", torch.FloatStorage, key, location, numel)``
whose bytes are the stored member ``<top>/data/<key>``, 64-byte aligned through the local header's
extra field. This module emits those opcodes by hand (so it can also emit hostile variants) and
lays the zip out the same way.
"""

from __future__ import annotations

import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STORAGE_NAMES = {
    "F64": "DoubleStorage",
    "F32": "FloatStorage",
    "F16": "HalfStorage",
    "BF16": "BFloat16Storage",
    "I64": "LongStorage",
    "I32": "IntStorage",
    "I16": "ShortStorage",
    "I8": "CharStorage",
    "U8": "ByteStorage",
    "BOOL": "BoolStorage",
}
NUMPY_CODES = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}
ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


@dataclass(frozen=True)
class Storage:
    """One storage: ``data`` (raw little-endian bytes) under zip key ``key``."""

    key: str
    dtype: str
    data: bytes
    numel: int | None = None  # declared element count; defaults to len(data) / itemsize


@dataclass(frozen=True)
class TensorRef:
    """A ``_rebuild_tensor_v2`` call: a view of ``storage``."""

    storage: Storage
    shape: tuple[int, ...]
    stride: tuple[int, ...] | None = None  # None: C-contiguous
    offset: int = 0


@dataclass(frozen=True)
class TensorV3:
    """A ``_rebuild_tensor_v3`` call: an untyped storage viewed as ``dtype`` (a torch dtype name)."""

    storage: Storage
    shape: tuple[int, ...]
    dtype_name: str


@dataclass(frozen=True)
class Global:
    """A bare ``GLOBAL module name`` reference."""

    module: str
    name: str


@dataclass(frozen=True)
class Raw:
    """Opcodes inserted verbatim (they must leave exactly one value on the stack)."""

    opcodes: bytes


@dataclass
class PickleWriter:
    out: bytearray = field(default_factory=lambda: bytearray(b"\x80\x02"))

    def finish(self) -> bytes:
        return bytes(self.out) + b"."

    def emit(self, value: Any) -> None:
        if value is None:
            self.out += b"N"
        elif value is True:
            self.out += b"\x88"
        elif value is False:
            self.out += b"\x89"
        elif isinstance(value, int):
            self._int(value)
        elif isinstance(value, float):
            self.out += b"G" + struct.pack(">d", value)
        elif isinstance(value, str):
            encoded = value.encode("utf-8", "surrogatepass")  # as pickle writes lone surrogates
            self.out += b"X" + struct.pack("<I", len(encoded)) + encoded
        elif isinstance(value, OrderedDict):
            self.global_(Global("collections", "OrderedDict"))
            self.out += b")R"
            self._items(value)
        elif isinstance(value, dict):
            self.out += b"}"
            self._items(value)
        elif isinstance(value, list):
            self.out += b"]"
            if value:
                self.out += b"("
                for item in value:
                    self.emit(item)
                self.out += b"e"
        elif isinstance(value, tuple):
            self.out += b"("
            for item in value:
                self.emit(item)
            self.out += b"t"
        elif isinstance(value, TensorRef):
            self._tensor(value)
        elif isinstance(value, TensorV3):
            self._tensor_v3(value)
        elif isinstance(value, Global):
            self.global_(value)
        elif isinstance(value, Raw):
            self.out += value.opcodes
        else:
            raise TypeError(f"cannot pickle {type(value).__name__}")

    def _int(self, value: int) -> None:
        if -(1 << 31) <= value < 1 << 31:
            self.out += b"J" + struct.pack("<i", value)
        else:
            encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(encoded)]) + encoded

    def _items(self, mapping: Mapping[Any, Any]) -> None:
        if not mapping:
            return
        self.out += b"("
        for key, item in mapping.items():
            self.emit(key)
            self.emit(item)
        self.out += b"u"

    def global_(self, ref: Global) -> None:
        self.out += b"c" + f"{ref.module}\n{ref.name}\n".encode()

    def persistent_storage(self, storage: Storage, type_name: str) -> None:
        numel = storage.numel if storage.numel is not None else len(storage.data) // ITEMSIZE[storage.dtype]
        self.out += b"("
        self.emit("storage")
        self.global_(Global("torch", type_name))
        self.emit(storage.key)
        self.emit("cpu")
        self.emit(numel)
        self.out += b"tQ"

    def _tensor(self, tensor: TensorRef) -> None:
        stride = tensor.stride if tensor.stride is not None else contiguous_strides(tensor.shape)
        self.global_(Global("torch._utils", "_rebuild_tensor_v2"))
        self.out += b"("
        self.persistent_storage(tensor.storage, STORAGE_NAMES[tensor.storage.dtype])
        self.emit(tensor.offset)
        self.emit(tuple(tensor.shape))
        self.emit(tuple(stride))
        self.emit(False)
        self.emit(OrderedDict())
        self.out += b"tR"

    def _tensor_v3(self, tensor: TensorV3) -> None:
        self.global_(Global("torch._utils", "_rebuild_tensor_v3"))
        self.out += b"("
        self.persistent_storage(tensor.storage, "UntypedStorage")
        self.emit(0)
        self.emit(tuple(tensor.shape))
        self.emit(tuple(contiguous_strides(tensor.shape)))
        self.emit(False)
        self.emit(OrderedDict())
        self.global_(Global("torch", tensor.dtype_name))
        self.out += b"tR"


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def pickle_bytes(value: Any) -> bytes:
    writer = PickleWriter()
    writer.emit(value)
    return writer.finish()


def collect_storages(value: Any, found: dict[str, Storage] | None = None) -> dict[str, Storage]:
    found = {} if found is None else found
    if isinstance(value, TensorRef | TensorV3):
        found.setdefault(value.storage.key, value.storage)
    elif isinstance(value, dict):
        for item in value.values():
            collect_storages(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            collect_storages(item, found)
    return found


def write_zip(
    path: Path,
    pickle_data: bytes,
    storages: Mapping[str, bytes],
    *,
    top: str = "archive",
    compress_storages: bool = False,
    extra_members: Mapping[str, bytes] | None = None,
) -> None:
    """Lay out a torch-style zip: data.pkl, byteorder, 64-byte aligned stored storages, version."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo(f"{top}/data.pkl"), pickle_data)
        archive.writestr(zipfile.ZipInfo(f"{top}/byteorder"), b"little")
        for key, data in storages.items():
            info = zipfile.ZipInfo(f"{top}/data/{key}")
            if compress_storages:
                info.compress_type = zipfile.ZIP_DEFLATED
            else:
                info.extra = _alignment_padding(archive, info.filename)
            archive.writestr(info, data)
        for name, data in (extra_members or {}).items():
            archive.writestr(zipfile.ZipInfo(f"{top}/{name}"), data)
        archive.writestr(zipfile.ZipInfo(f"{top}/version"), b"3\n")


def _alignment_padding(archive: zipfile.ZipFile, name: str) -> bytes:
    """An extra field ("FB" + length + zeros) that puts the member's data on a 64-byte boundary."""
    assert archive.fp is not None
    start = archive.fp.tell() + 30 + len(name.encode()) + 4
    padding = -start % 64
    return b"FB" + struct.pack("<H", padding) + b"\x00" * padding


def save(path: Path, value: Any, *, top: str = "archive", compress_storages: bool = False) -> None:
    """Write ``value`` (dicts, lists, primitives, `TensorRef`...) as a torch zip checkpoint."""
    storages = {key: storage.data for key, storage in collect_storages(value).items()}
    write_zip(path, pickle_bytes(value), storages, top=top, compress_storages=compress_storages)


def state_dict_refs(
    tensors: Mapping[str, np.ndarray], dtypes: Mapping[str, str] | None = None
) -> OrderedDict[str, Any]:
    """An OrderedDict of `TensorRef`, one storage per array (``dtypes`` may ask for "BF16")."""
    refs: OrderedDict[str, Any] = OrderedDict()
    for index, (name, array) in enumerate(tensors.items()):
        code = (dtypes or {}).get(name) or NUMPY_CODES[array.dtype]
        if code == "BF16":
            bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
            data = (bits >> 16).astype("<u2").tobytes()  # truncation is enough for a test
        else:
            data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        refs[name] = TensorRef(Storage(str(index), code, data), tuple(array.shape))
    return refs
