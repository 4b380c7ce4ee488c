"""PyTorch zip checkpoints (``.bin``/``.pt``/``.pth``) read without torch and without running code.

A checkpoint saved by ``torch.save`` (torch >= 1.6) is a zip archive: ``<top>/data.pkl`` pickles the
object tree, and every tensor storage is a separate, uncompressed member ``<top>/data/<key>``.

Pickles can run arbitrary code, so data.pkl is never given to ``pickle.load`` as is:

1. The opcode stream is scanned first (`pickletools.genops`, which never allocates more than the
   bytes present): only the opcodes real checkpoints use are accepted, declared lengths must fit in
   the data, and memo indices must grow one by one (CPython sizes its memo table from the index).
2. A restricted unpickler then resolves globals from a fixed allow-list of harmless stand-ins
   (`find_class`) and turns storages into references to zip members (`persistent_load`). Every
   object it hands out refuses ``__setstate__``, so BUILD cannot mutate it (an OrderedDict takes
   torch's ``_metadata`` attribute only, and drops it).
3. The object tree is searched with ``dict.items(value)``, never with a method looked up on an
   unpickled object, and within bounds: containers built (`MAX_PICKLE_CONTAINERS`), containers
   searched (`MAX_SEARCH_NODES`), how far a deflated data.pkl may inflate
   (`MAX_PICKLE_INFLATE_RATIO`), how often a strided view may repeat its storage (`MAX_VIEW_REPEAT`).

The tensors found are mapped to absolute byte ranges in the zip file; no tensor data is read.
"""

from __future__ import annotations

import collections
import io
import itertools
import math
import pickle
import pickletools
import re
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    NotACheckpointError,
    ResourceLimitError,
    UnsafePickleError,
    UnshellError,
    UnsupportedFormatError,
)
from .base import MAX_TENSORS, PLAIN_DTYPES, Checkpoint, TensorInfo, check_shape, sanitize
from .facts import (
    Claim,
    FormatFacts,
    ForwardHeader,
    claim_text,
    hub_repo_id,
    llama_style_config,
    meta_forward_header,
)
from .safetensors import open_regular_file

__all__ = ["MAX_PICKLE_BYTES", "MAX_PICKLE_OPCODES", "read_pytorch"]

MAX_PICKLE_BYTES = 100_000_000
# Each opcode creates at most one small object, so this bounds the memory unpickling can take.
# A state dict needs ~30 opcodes per tensor; an optimizer state a few more.
MAX_PICKLE_OPCODES = 8_000_000
MAX_MEMO_GAP = 256
MAX_DIMENSION = 1 << 48
MAX_METADATA_NODES = 100_000
MAX_METADATA_DEPTH = 32
MAX_SEARCH_NODES = 1_000_000
# Containers (lists, dicts, tuples, sets) a pickle may build: a state dict needs about six per
# tensor, so this admits every pickle the opcode cap does in practice, while bounding what a
# stream of one-byte EMPTY_SET opcodes (216 bytes each once built) can take.
MAX_PICKLE_CONTAINERS = 2_000_000
# torch.save stores data.pkl uncompressed; a deflated one (a re-zipped checkpoint) may inflate
# this many times its compressed size (real pickles compress 3 to 8 times), at least to
# MIN_INFLATED_PICKLE_BYTES, so that a few kilobytes cannot become millions of opcodes.
MAX_PICKLE_INFLATE_RATIO = 64
MIN_INFLATED_PICKLE_BYTES = 1_000_000
# A strided view may read each stored element at most this many times (an expanded or
# zero-stride view): decoding it allocates its logical size, which must stay a bounded multiple of
# the bytes in the file.
MAX_VIEW_REPEAT = 16

STATE_DICT_KEYS = ("model", "state_dict", "module", "model_state_dict")
# Training state that says nothing about the model's identity and can be large.
DROPPED_ENTRIES = frozenset(
    {
        "optimizer",
        "optimizer_states",
        "optimizer_state_dict",
        "lr_scheduler",
        "lr_schedulers",
        "scheduler",
        "scaler",
    }
)
COMPILE_PREFIX = "_orig_mod."

# Legacy typed-storage class names -> dtype code (None: a dtype unshell does not decode).
STORAGE_TYPES: dict[str, str | None] = {
    "DoubleStorage": "F64",
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
    "ComplexFloatStorage": "C64",
    "ComplexDoubleStorage": None,
    "QInt8Storage": None,
    "QUInt8Storage": None,
    "QInt32Storage": None,
    "QUInt4x2Storage": None,
    "QUInt2x4Storage": None,
    "UntypedStorage": "U8",
}

# ``torch.<name>`` dtype objects (pickled as globals, e.g. by _rebuild_tensor_v3).
TORCH_DTYPES: dict[str, str | None] = {
    "float64": "F64",
    "double": "F64",
    "float32": "F32",
    "float": "F32",
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int64": "I64",
    "long": "I64",
    "int32": "I32",
    "int": "I32",
    "int16": "I16",
    "short": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
    "complex64": "C64",
    "cfloat": "C64",
    "complex128": None,
    "cdouble": None,
    "float8_e4m3fnuz": None,
    "float8_e5m2fnuz": None,
    "qint8": None,
    "quint8": None,
    "qint32": None,
}

# Everything a weights pickle needs. Missing on purpose: INST/OBJ/EXT* (import by other routes),
# NEWOBJ_EX, PERSID (text ids torch never writes) and out-of-band buffers.
ALLOWED_OPCODES = frozenset(
    {
        "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
        "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
        "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
        "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
        "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
        "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_SET", "ADDITEMS", "FROZENSET",
        "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "NEWOBJ", "BINPERSID",
        "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    }
)  # fmt: skip
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_CONTAINER_OPCODES = frozenset(
    {"EMPTY_DICT", "DICT", "EMPTY_LIST", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
     "EMPTY_SET", "FROZENSET"}
)  # fmt: skip
_STORAGE_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}")


# -- what the unpickler hands out ---------------------------------------------------------------


class _Stub:
    """Base of every object the unpickler creates itself: a BUILD opcode on it is refused."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise UnsafePickleError(f"the pickle tries to set the state of {self!r}")


class _StorageType(_Stub):
    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: str | None) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _TorchDtype(_Stub):
    __slots__ = ("code", "name")

    def __init__(self, name: str, code: str | None) -> None:
        self.name, self.code = name, code

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _TypeMarker(_Stub):
    """``torch.Tensor`` / ``torch.nn.Parameter`` as named by ``_rebuild_from_type_v2``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


class _SafeCallable(_Stub):
    """An allow-listed global that REDUCE may call; wraps a harmless Python function."""

    __slots__ = ("function", "name")

    def __init__(self, name: str, function: Callable[..., object]) -> None:
        self.name, self.function = name, function

    def __call__(self, *args: object) -> object:
        return self.function(*args)

    def __repr__(self) -> str:
        return self.name


class _Storage(_Stub):
    """A storage: zip member ``data/<key>`` holding ``numel`` elements of ``dtype``."""

    __slots__ = ("dtype", "key", "numel", "type_name")

    def __init__(self, key: str, type_name: str, dtype: str | None, numel: int) -> None:
        self.key, self.type_name, self.dtype, self.numel = key, type_name, dtype, numel

    def __repr__(self) -> str:
        return f"storage {self.key}"


class _Tensor(_Stub):
    """A tensor view into a storage, with offset and strides in elements of ``dtype``."""

    __slots__ = ("dtype", "offset", "shape", "storage", "stride")

    def __init__(
        self,
        storage: _Storage,
        offset: int,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
        dtype: str | None,
    ) -> None:
        self.storage, self.offset, self.shape, self.stride, self.dtype = storage, offset, shape, stride, dtype

    def __repr__(self) -> str:
        return f"tensor {list(self.shape)}"


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if isinstance(value, list):
        value = tuple(value)
    dims = check_shape(value, where=f"tensor {what}")
    if any(dim > MAX_DIMENSION for dim in dims):
        raise InconsistentHeaderError(f"tensor {what} {list(dims)} is implausibly large")
    return dims


def _make_tensor(storage: object, offset: object, size: object, stride: object, dtype: str | None) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise InconsistentHeaderError(f"a tensor is rebuilt from {type(storage).__name__}, not a storage")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_DIMENSION:
        raise InconsistentHeaderError(f"bad storage offset {sanitize(repr(offset), 60)}")
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
    if len(strides) != len(shape):
        raise InconsistentHeaderError(f"size {list(shape)} and stride {list(strides)} differ in rank")
    return _Tensor(storage, offset, shape, strides, dtype)


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object, *rest: object) -> _Tensor:
    """torch._utils._rebuild_tensor and _rebuild_tensor_v2 (requires_grad, hooks, metadata ignored)."""
    if len(rest) > 3:
        raise InconsistentHeaderError("_rebuild_tensor_v2 called with too many arguments")
    dtype = storage.dtype if isinstance(storage, _Storage) else None
    return _make_tensor(storage, offset, size, stride, dtype)


def _rebuild_tensor_v3(
    storage: object,
    offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    hooks: object,
    dtype: object,
    metadata: object = None,
) -> _Tensor:
    """torch._utils._rebuild_tensor_v3: an untyped storage viewed as ``dtype``."""
    if not isinstance(dtype, _TorchDtype):
        raise InconsistentHeaderError("_rebuild_tensor_v3 without a torch dtype")
    return _make_tensor(storage, offset, size, stride, dtype.code)


def _rebuild_parameter(data: object, *rest: object) -> object:
    """torch._utils._rebuild_parameter(_with_state): a Parameter is just its tensor here."""
    if not isinstance(data, _Tensor) or len(rest) > 3:
        raise InconsistentHeaderError("a parameter rebuilt from something that is not a tensor")
    return data


def _rebuild_from_type_v2(function: object, new_type: object, args: object, state: object) -> object:
    """torch._tensor._rebuild_from_type_v2: only for plain tensors and parameters."""
    if not isinstance(function, _SafeCallable) or not isinstance(new_type, _TypeMarker):
        raise UnsafePickleError("_rebuild_from_type_v2 with a function or type off the allow-list")
    if not isinstance(args, tuple):
        raise InconsistentHeaderError("_rebuild_from_type_v2 without an argument tuple")
    return function(*args)


def _encode_latin1(text: object, encoding: object = "latin1") -> bytes:
    """_codecs.encode, which protocol-2 pickles use to carry bytes objects."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode used for something other than latin-1 bytes")
    return text.encode("latin-1")


def _empty_bytes(*args: object) -> bytes:
    """builtins.bytes as protocol-2 pickles call it for b"": with no argument only (bytes(n) allocates n)."""
    if args:
        raise UnsafePickleError("builtins.bytes called with arguments")
    return b""


class _OrderedDict(collections.OrderedDict):
    """``collections.OrderedDict`` as the unpickler builds it.

    torch pickles a state dict's ``_metadata`` attribute (per-module versions) with BUILD; that one
    is accepted and dropped. Any other attribute is refused: an instance attribute named ``items``
    or ``get`` would shadow the method the state-dict search calls. (That search also calls
    ``dict.items(value)``, never a method looked up on the unpickled object.)
    """

    def __setstate__(self, state: object) -> None:
        if isinstance(state, dict) and set(dict.keys(state)) <= {"_metadata"}:
            return
        keys = list(dict.keys(state)) if isinstance(state, dict) else []
        shown = [repr(sanitize(key, 40)) for key in keys if isinstance(key, str) and key != "_metadata"]
        raise UnsafePickleError(
            f"the pickle sets {', '.join(shown[:3]) or 'a state'} on an OrderedDict "
            "(only torch's _metadata attribute is allowed)"
        )


def _allowed_globals() -> dict[tuple[str, str], object]:
    table: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): _OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch", "Size"): tuple,
        ("_codecs", "encode"): _SafeCallable("_codecs.encode", _encode_latin1),
        ("builtins", "bytes"): _SafeCallable("builtins.bytes", _empty_bytes),
        ("torch", "Tensor"): _TypeMarker("torch.Tensor"),
        ("torch.nn.parameter", "Parameter"): _TypeMarker("torch.nn.parameter.Parameter"),
        ("torch._tensor", "_rebuild_from_type_v2"): _SafeCallable(
            "_rebuild_from_type_v2", _rebuild_from_type_v2
        ),
    }
    for name, function in (
        ("_rebuild_tensor", _rebuild_tensor),
        ("_rebuild_tensor_v2", _rebuild_tensor),
        ("_rebuild_tensor_v3", _rebuild_tensor_v3),
        ("_rebuild_parameter", _rebuild_parameter),
        ("_rebuild_parameter_with_state", _rebuild_parameter),
    ):
        table["torch._utils", name] = _SafeCallable(f"torch._utils.{name}", function)
    for name, code in STORAGE_TYPES.items():
        table["torch", name] = _StorageType(name, code)
    table["torch.storage", "UntypedStorage"] = table["torch", "UntypedStorage"]
    for name, code in TORCH_DTYPES.items():
        table["torch", name] = _TorchDtype(name, code)
    return table


ALLOWED_GLOBALS = _allowed_globals()


def _lookup_global(module: str, name: str) -> object:
    # Protocol 0-2 pickles name the builtins module by its Python 2 name.
    target = ALLOWED_GLOBALS.get(("builtins" if module == "__builtin__" else module, name))
    if target is None:
        raise UnsafePickleError(
            f"the pickle asks for {sanitize(module, 80)}.{sanitize(name, 80)}, which is not on the allow-list "
            "of a weights-only pickle (torch.load would have imported and maybe run it)"
        )
    return target


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        return _lookup_global(module, name)

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise InconsistentHeaderError(f"unexpected persistent id {sanitize(repr(pid), 80)}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise InconsistentHeaderError("a storage without a storage type")
        if not isinstance(key, str) or not _STORAGE_KEY.fullmatch(key):
            raise InconsistentHeaderError(f"bad storage key {sanitize(repr(key), 80)}")
        if isinstance(numel, bool) or not isinstance(numel, int) or not 0 <= numel <= MAX_DIMENSION:
            raise InconsistentHeaderError(f"storage {key} has a bad size {sanitize(repr(numel), 60)}")
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = _Storage(key, storage_type.name, storage_type.dtype, numel)
        elif (known.type_name, known.numel) != (storage_type.name, numel):
            raise InconsistentHeaderError(f"storage {key} is declared twice with different types")
        return known


# -- opcode pre-scan ----------------------------------------------------------------------------


def scan_pickle(data: bytes, *, where: str) -> int:
    """Check a pickle's opcode stream before unpickling it; return the number of opcodes.

    Raises UnsafePickleError for an opcode or ``GLOBAL`` off the allow-list,
    CorruptCheckpointError for a truncated or malformed stream, ResourceLimitError for a stream
    that would make CPython allocate far more than its own size.
    """
    count = 0
    memo_puts = 0
    containers = 0
    try:
        for opcode, argument, position in pickletools.genops(data):
            count += 1
            if count > MAX_PICKLE_OPCODES:
                raise ResourceLimitError(f"{where}: more than {MAX_PICKLE_OPCODES} pickle opcodes")
            if opcode.name in _CONTAINER_OPCODES:
                containers += 1
                if containers > MAX_PICKLE_CONTAINERS:
                    raise ResourceLimitError(
                        f"{where}: more than {MAX_PICKLE_CONTAINERS} lists, dicts, tuples and sets in the pickle"
                    )
            if opcode.name not in ALLOWED_OPCODES:
                raise UnsafePickleError(
                    f"{where}: pickle opcode {opcode.name} at byte {position} is not allowed in a weights pickle"
                )
            if opcode.name == "GLOBAL":
                module, _, name = str(argument).partition(" ")
                _lookup_global(module, name)
            elif opcode.name in _MEMO_PUTS:
                if not isinstance(argument, int) or argument > memo_puts + MAX_MEMO_GAP:
                    raise ResourceLimitError(f"{where}: memo index {argument} at byte {position} jumps ahead")
                memo_puts += 1
            elif opcode.name == "MEMOIZE":
                memo_puts += 1
            elif (
                opcode.name == "FRAME"
                and isinstance(argument, int)
                and argument > len(data) - (position or 0)
            ):
                raise CorruptCheckpointError(
                    f"{where}: a pickle frame of {argument} bytes at byte {position} runs past the end"
                )
    except UnshellError as error:
        raise _with_context(error, where) from None
    except Exception as error:  # genops: ValueError for unknown opcodes and short reads
        raise CorruptCheckpointError(f"{where}: malformed pickle ({sanitize(str(error), 160)})") from None
    return count


def unpickle_restricted(data: bytes, *, where: str) -> tuple[object, dict[str, _Storage]]:
    """Scan, then unpickle ``data`` with the allow-list. Returns (object tree, storages by key)."""
    scan_pickle(data, where=where)
    unpickler = _RestrictedUnpickler(data)
    try:
        root = unpickler.load()
    except UnshellError as error:
        raise _with_context(error, where) from None
    except Exception as error:
        raise CorruptCheckpointError(
            f"{where}: the pickle does not load ({type(error).__name__}: {sanitize(str(error), 160)})"
        ) from None
    return root, unpickler.storages


def _with_context(error: UnshellError, where: str) -> UnshellError:
    """The same error class, its message prefixed with the file it came from."""
    message = str(error)
    return error if message.startswith(where) else type(error)(f"{where}: {message}")


# -- zip container ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    offset: int
    size: int


class _Archive:
    """The zip container: where data.pkl and each storage member lie."""

    def __init__(self, path: Path, handle: IO[bytes], file_size: int) -> None:
        self.path, self.handle, self.file_size = path, handle, file_size
        self.where = sanitize(path.name)
        try:
            self.zip = zipfile.ZipFile(handle)
            self.names = self.zip.namelist()
        except Exception as error:  # zipfile raises many types on a damaged central directory
            raise CorruptCheckpointError(
                f"{self.where}: not a readable zip archive ({sanitize(str(error), 120)})"
            ) from None
        if len(set(self.names)) != len(self.names):
            # zipfile reads the last copy; another loader may read the first, and see other bytes.
            twice = next(name for name, count in collections.Counter(self.names).items() if count > 1)
            raise InconsistentHeaderError(f"{self.where}: the archive holds {sanitize(twice)!r} twice")
        self.prefix = self._find_prefix()

    def _find_prefix(self) -> str:
        pickles = [name for name in self.names if name.endswith("/data.pkl") and name.count("/") == 1]
        if not pickles:
            if any(name.endswith("constants.pkl") for name in self.names):
                raise UnsupportedFormatError(
                    f"{self.where}: a TorchScript archive, not a state dict checkpoint"
                )
            raise NotACheckpointError(
                f"{self.where}: a zip archive without data.pkl, not a PyTorch checkpoint"
            )
        if len(pickles) > 1:
            raise InconsistentHeaderError(f"{self.where}: more than one data.pkl in the archive")
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "constants.pkl" in self.names or any(
            name.startswith(prefix + "code/") for name in self.names
        ):
            raise UnsupportedFormatError(f"{self.where}: a TorchScript archive, not a state dict checkpoint")
        return prefix

    def read_small(self, name: str, limit: int) -> bytes:
        try:
            info = self.zip.getinfo(self.prefix + name)
        except KeyError:
            raise NotACheckpointError(f"{self.where}: no {sanitize(name)} in the archive") from None
        why = f"limit {limit}"
        if info.compress_type != zipfile.ZIP_STORED:
            limit = min(limit, max(MIN_INFLATED_PICKLE_BYTES, info.compress_size * MAX_PICKLE_INFLATE_RATIO))
            why = (
                f"{info.compress_size} compressed; at most {MAX_PICKLE_INFLATE_RATIO} times that, "
                f"or {MIN_INFLATED_PICKLE_BYTES}, is read"
            )
        if info.file_size > limit:
            raise ResourceLimitError(f"{self.where}: {sanitize(name)} is {info.file_size} bytes ({why})")
        try:
            with self.zip.open(info) as member:
                data = member.read(limit + 1)
        except UnshellError:
            raise
        except Exception as error:
            raise CorruptCheckpointError(
                f"{self.where}: cannot read {sanitize(name)} ({sanitize(str(error), 120)})"
            ) from None
        if len(data) > limit:
            raise ResourceLimitError(f"{self.where}: {sanitize(name)} inflates past {limit} bytes ({why})")
        return data

    def has(self, name: str) -> bool:
        return self.prefix + name in self.names

    def storage_member(self, key: str) -> _Member:
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise InconsistentHeaderError(
                f"{self.where}: storage {sanitize(key)} is missing from the archive"
            ) from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise UnsupportedFormatError(
                f"{self.where}: storage {sanitize(key)} is compressed; torch never does that"
            )
        if info.flag_bits & 0x1:
            raise UnsupportedFormatError(f"{self.where}: storage {sanitize(key)} is encrypted")
        offset = self._data_offset(info)
        if offset + info.file_size > self.file_size or info.compress_size != info.file_size:
            raise CorruptCheckpointError(
                f"{self.where}: storage {sanitize(key)} runs past the end of the file"
            )
        return _Member(offset, info.file_size)

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        """Absolute offset of a stored member's bytes: after its local header, whose extra field
        (torch pads it for 64-byte alignment) may differ from the central directory's."""
        self.handle.seek(info.header_offset)
        header = self.handle.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise CorruptCheckpointError(f"{self.where}: bad local zip header for {sanitize(info.filename)}")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        stored_name = self.handle.read(name_length)
        if stored_name not in (info.filename.encode("utf-8"), info.filename.encode("cp437", "replace")):
            raise InconsistentHeaderError(
                f"{self.where}: local and central zip headers disagree on {sanitize(info.filename)}"
            )
        return info.header_offset + 30 + name_length + extra_length


# -- reader -------------------------------------------------------------------------------------


def read_pytorch(path: Path) -> Checkpoint:
    """Open a PyTorch zip checkpoint without torch and without executing its pickle.

    The state dict is found at the top level, under ``model``/``state_dict``/``module``/
    ``model_state_dict``, or else as the largest dict of tensors. JSON-able entries beside it
    (``model_args``, ``config``, ``iter_num``...) go to ``metadata["pytorch"]``; optimizer state
    is dropped.

    Raises:
        UnsafePickleError: the pickle references anything off the allow-list.
        UnsupportedFormatError: legacy (pre-1.6) pickles, TorchScript, compressed storages.
        CorruptCheckpointError / InconsistentHeaderError: damaged archive or pickle.
        NotACheckpointError: a zip or pickle that holds no tensors.
    """
    where = sanitize(path.name)
    handle, file_size = open_regular_file(path)
    with handle:
        magic = handle.read(4)
        if magic != b"PK\x03\x04":
            if magic[:1] == b"\x80":
                raise UnsupportedFormatError(
                    f"{where}: a bare pickle (PyTorch < 1.6 'legacy' format or not PyTorch at all); "
                    "re-save it with a current torch.save"
                )
            raise NotACheckpointError(f"{where}: not a PyTorch zip checkpoint")
        handle.seek(0)
        archive = _Archive(path, handle, file_size)
        if archive.has("byteorder") and archive.read_small("byteorder", 16).strip() == b"big":
            raise UnsupportedFormatError(f"{where}: a big-endian PyTorch checkpoint")
        data = archive.read_small("data.pkl", MAX_PICKLE_BYTES)
        root, storages = unpickle_restricted(data, where=f"{where} data.pkl")
        state_dict, state_path = _find_state_dict(root, where)
        used = {tensor.storage.key for tensor in state_dict.values()}
        members = {key: _storage_member(archive, storages[key]) for key in used}
    return _build_checkpoint(path, root, state_dict, state_path, members)


def _storage_member(archive: _Archive, storage: _Storage) -> _Member:
    member = archive.storage_member(storage.key)
    if storage.dtype is not None:
        expected = storage.numel * PLAIN_DTYPES[storage.dtype].itemsize
        if member.size != expected:
            raise InconsistentHeaderError(
                f"{archive.where}: storage {storage.key} holds {member.size} bytes, its header says {expected}"
            )
    return member


def _build_checkpoint(
    path: Path,
    root: object,
    state_dict: dict[str, _Tensor],
    state_path: tuple[str, ...],
    members: dict[str, _Member],
) -> Checkpoint:
    where = sanitize(path.name)
    notes: list[str] = []
    if state_path:
        notes.append(f"{where}: state dict found under {'/'.join(sanitize(p, 60) for p in state_path)!r}")
    names = _strip_compile_prefix(list(state_dict), notes, where)
    tensors = {
        new: _tensor_info(old, new, state_dict[old], members[state_dict[old].storage.key], path)
        for old, new in zip(state_dict, names, strict=True)
    }
    notes.extend(_shared_storage_notes(state_dict, names, where))
    metadata = _metadata_entries(root, state_path)
    return Checkpoint(
        format="pytorch",
        path=path,
        files=[path],
        tensors=tensors,
        layout="file",
        metadata={"pytorch": metadata},
        notes=notes,
    )


def _tensor_info(source_name: str, name: str, tensor: _Tensor, member: _Member, path: Path) -> TensorInfo:
    label = f"{sanitize(path.name)}: tensor {sanitize(source_name)!r}"
    if tensor.dtype is None or tensor.dtype not in PLAIN_DTYPES:
        raise UnsupportedFormatError(
            f"{label} has a dtype unshell does not decode ({tensor.storage.type_name})"
        )
    itemsize = PLAIN_DTYPES[tensor.dtype].itemsize
    contiguous = _is_contiguous(tensor.shape, tensor.stride)
    numel = math.prod(tensor.shape)
    if numel == 0:
        span = 0
    elif contiguous:
        span = numel
    else:
        span = 1 + sum((size - 1) * step for size, step in zip(tensor.shape, tensor.stride, strict=True))
    if (tensor.offset + span) * itemsize > member.size:
        raise InconsistentHeaderError(f"{label} reaches past the end of its storage")
    if numel > MAX_VIEW_REPEAT * max(span, 1):
        raise ResourceLimitError(
            f"{label} is a view of {numel} elements over {span} stored ones (strides {list(tensor.stride)}): "
            f"more than {MAX_VIEW_REPEAT} reads of each stored element"
        )
    return TensorInfo(
        name=name,
        dtype=tensor.dtype,
        shape=tensor.shape,
        file=path,
        offset=member.offset + tensor.offset * itemsize,
        nbytes=span * itemsize,
        strides=None if contiguous else tensor.stride,
    )


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for size, step in zip(reversed(shape), reversed(stride), strict=True):
        if size != 1 and step != expected:
            return False
        expected *= size
    return True


def _strip_compile_prefix(names: list[str], notes: list[str], where: str) -> list[str]:
    """Drop torch.compile's ``_orig_mod.`` prefix, unless stripping would merge two names."""
    if not any(name.startswith(COMPILE_PREFIX) for name in names):
        return names
    stripped = [name.removeprefix(COMPILE_PREFIX) for name in names]
    if len(set(stripped)) != len(stripped):
        notes.append(f"{where}: kept the {COMPILE_PREFIX!r} prefixes, removing them would merge tensors")
        return names
    notes.append(f"{where}: removed torch.compile's {COMPILE_PREFIX!r} prefix from tensor names")
    return stripped


def _shared_storage_notes(state_dict: dict[str, _Tensor], names: list[str], where: str) -> list[str]:
    """Tensors that are the same view of one storage (tied weights), which torch saves once."""
    views: dict[tuple[str, int, tuple[int, ...], tuple[int, ...]], list[str]] = {}
    for name, tensor in zip(names, state_dict.values(), strict=True):
        views.setdefault((tensor.storage.key, tensor.offset, tensor.shape, tensor.stride), []).append(name)
    tied = [group for group in views.values() if len(group) > 1]
    return [
        f"{where}: tensors share one storage: {', '.join(sanitize(n, 80) for n in group)}"
        for group in tied[:20]
    ]


# -- finding the state dict ---------------------------------------------------------------------


def _tensor_items(value: object) -> dict[str, _Tensor]:
    if not isinstance(value, dict):
        return {}
    return {
        key: item for key, item in dict.items(value) if isinstance(key, str) and isinstance(item, _Tensor)
    }


def _find_state_dict(root: object, where: str) -> tuple[dict[str, _Tensor], tuple[str, ...]]:
    """(the dict of tensors, the key path that leads to it from the root)."""
    if isinstance(root, dict):
        for key in STATE_DICT_KEYS:
            found = _tensor_items(dict.get(root, key))
            if found:
                return _checked(found, where), (key,)
    # The root itself comes first in the walk, so a bare state dict wins ties.
    best: tuple[dict[str, _Tensor], tuple[str, ...]] = ({}, ())
    for path, value in _walk(root):
        found = _tensor_items(value)
        if len(found) > len(best[0]):
            best = (found, path)
    if not best[0]:
        raise NotACheckpointError(f"{where}: the pickle holds no tensors")
    return _checked(best[0], where), best[1]


def _checked(tensors: dict[str, _Tensor], where: str) -> dict[str, _Tensor]:
    if len(tensors) > MAX_TENSORS:
        raise ResourceLimitError(f"{where}: {len(tensors)} tensors exceed the limit of {MAX_TENSORS}")
    return tensors


def _walk(root: object) -> Iterator[tuple[tuple[str, ...], object]]:
    """Breadth-first over dicts, lists and tuples, each container once (pickles may hold cycles).

    At most ``MAX_SEARCH_NODES`` containers are visited or queued, so a list of millions of
    containers costs a bounded queue, not one entry (and one path) per element.
    """
    seen: set[int] = set()
    queue: collections.deque[tuple[tuple[str, ...], object]] = collections.deque([((), root)])
    visited = 0
    while queue and visited < MAX_SEARCH_NODES:
        path, value = queue.popleft()
        if id(value) in seen or len(path) > MAX_METADATA_DEPTH:
            continue
        seen.add(id(value))
        visited += 1
        yield path, value
        room = MAX_SEARCH_NODES - visited - len(queue)
        if room > 0:
            queue.extend(itertools.islice(_children(path, value), room))


def _children(path: tuple[str, ...], value: object) -> Iterator[tuple[tuple[str, ...], object]]:
    """The non-empty containers directly inside ``value``, with their paths (empty ones hold no tensors)."""
    if isinstance(value, dict):
        for key, item in dict.items(value):
            if isinstance(item, dict | list | tuple) and item:
                yield (*path, _key_label(key)), item
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if isinstance(item, dict | list | tuple) and item:
                yield (*path, str(index)), item


def _key_label(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int) and abs(key) < 1 << 63:
        return str(key)
    return f"<{type(key).__name__}>"


# -- metadata -----------------------------------------------------------------------------------

_SKIP = object()


def _metadata_entries(root: object, state_path: tuple[str, ...]) -> dict[str, Any]:
    """JSON-able top-level entries beside the state dict: training arguments, config, counters."""
    if not isinstance(root, dict) or not state_path:
        return {}
    budget = [MAX_METADATA_NODES]
    entries: dict[str, Any] = {}
    for key, value in dict.items(root):
        if not isinstance(key, str) or key == state_path[0] or key in DROPPED_ENTRIES:
            continue
        converted = _to_json(value, 0, budget, set())
        if converted is not _SKIP:
            entries[key] = converted
    return entries


def _to_json(value: object, depth: int, budget: list[int], ancestors: set[int]) -> Any:
    """A JSON-compatible copy of ``value``; tensors, storages and unknown objects are left out."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_METADATA_DEPTH:
        return _SKIP
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) < 1 << 63 else _SKIP
    if isinstance(value, float):
        return value
    if isinstance(value, _TorchDtype):
        return repr(value)
    if not isinstance(value, dict | list | tuple) or id(value) in ancestors:
        return _SKIP
    ancestors = ancestors | {id(value)}
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in dict.items(value):
            if isinstance(key, str) or (
                isinstance(key, int) and not isinstance(key, bool) and abs(key) < 1 << 63
            ):
                converted = _to_json(item, depth + 1, budget, ancestors)
                if converted is not _SKIP:
                    result[str(key)] = converted
        return result
    items = [_to_json(item, depth + 1, budget, ancestors) for item in value]
    return [item for item in items if item is not _SKIP]


# -- what the format declares ----------------------------------------------------------------------

# Training scripts' ``init_from`` values that mean "not from another model".
_FRESH_STARTS = frozenset({"scratch", "resume", ""})


def format_facts(checkpoint: Checkpoint) -> FormatFacts:
    """A training checkpoint may record where training started (nanoGPT/llama2.c ``config.init_from``);
    ``model_args`` are hyperparameters, read as the declared config."""
    metadata = checkpoint.metadata.get("pytorch")
    claims: list[tuple[str, Claim]] = []
    config = metadata.get("config") if isinstance(metadata, dict) else None
    if isinstance(config, dict):
        start = claim_text(config.get("init_from"))
        if start is not None and start.casefold() not in _FRESH_STARTS:
            claims.append(("base_model", Claim(hub_repo_id(start) or start, "checkpoint config init_from")))
    model_args = metadata.get("model_args") if isinstance(metadata, dict) else None
    config_values = llama_style_config(model_args) if isinstance(model_args, dict) else None
    return FormatFacts(
        label="PyTorch",
        claims=tuple(claims),
        config=config_values,
        config_source="checkpoint model_args" if config_values is not None else None,
    )


def forward_header(checkpoint: Checkpoint) -> ForwardHeader | None:
    """A training script's ``model_args`` (llama2.c's train.py saves its ModelArgs beside the
    state dict): hyperparameters in Meta's names, whatever names the tensors have."""
    metadata = checkpoint.metadata.get("pytorch")
    model_args = metadata.get("model_args") if isinstance(metadata, dict) else None
    if not isinstance(model_args, dict):
        return None
    return meta_forward_header(model_args, "model_args", graph=None)
