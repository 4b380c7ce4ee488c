"""The one in-memory model every reader produces: a tensor table plus lazy access to values.

Readers parse headers only. A `Checkpoint` knows, for every tensor, which file holds it and
which byte range; values are read one tensor at a time on request (memory-mapped, so a 100 GB
model costs no more memory than its largest tensor), decoded and dequantized to numpy.

Dtype codes follow safetensors (``F32``, ``BF16``, ...) with GGML block types added under their
GGUF names (``Q4_K``, ``Q8_0``, ...). A block type is registered with `register_block_type`
together with its dequantizer.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from ..errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    ResourceLimitError,
    TensorNotFoundError,
    UnsupportedFormatError,
)

T = TypeVar("T")

# Safety bounds applied by every reader. A header is metadata: nothing legitimate comes close.
MAX_HEADER_BYTES = 100_000_000
MAX_TENSORS = 2_000_000
MAX_RANK = 8
MAX_NAME_BYTES = 4096

# numpy dtype for each plain (element-wise) dtype code; BF16 and F8 have no numpy dtype and are
# widened on read.
PLAIN_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "C64": np.dtype("<c8"),
}


@dataclass(frozen=True)
class BlockType:
    """A quantized type stored in fixed-size blocks along the innermost axis."""

    code: str
    block_elements: int
    block_bytes: int
    dequantize: Callable[[np.ndarray, int], np.ndarray]
    """(raw uint8 bytes of whole blocks, number of elements) -> float32 array of that many values."""


BLOCK_TYPES: dict[str, BlockType] = {}


def register_block_type(block_type: BlockType) -> None:
    BLOCK_TYPES[block_type.code] = block_type


def is_known_dtype(code: str) -> bool:
    return code in PLAIN_DTYPES or code in BLOCK_TYPES


def expected_nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes a C-contiguous tensor of this dtype and shape occupies. Raises for unknown dtypes."""
    count = math.prod(shape)
    if dtype in PLAIN_DTYPES:
        return count * PLAIN_DTYPES[dtype].itemsize
    if dtype in BLOCK_TYPES:
        block = BLOCK_TYPES[dtype]
        inner = shape[-1] if shape else 1
        if inner % block.block_elements:
            raise InconsistentHeaderError(
                f"{dtype} tensor's innermost dimension {inner} is not a multiple of its "
                f"block size {block.block_elements}"
            )
        return count // block.block_elements * block.block_bytes
    raise UnsupportedFormatError(f"unsupported tensor dtype {dtype!r}")


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives. ``offset`` is absolute within ``file``.

    ``strides`` (in elements) is set only for non-contiguous views, such as a transposed tensor
    saved by PyTorch. ``parts`` is set for a logical tensor concatenated from several shards along
    ``concat_axis`` (Meta's model-parallel ``consolidated.*.pth``); then ``file``/``offset`` describe
    the first part. ``extra`` carries reader-specific decoding parameters (say, a group size).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    offset: int
    nbytes: int
    strides: tuple[int, ...] | None = None
    parts: tuple[TensorInfo, ...] = ()
    concat_axis: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


TensorDecoder = Callable[[np.ndarray, TensorInfo], np.ndarray]

EXTRA_DECODERS: dict[str, TensorDecoder] = {}
"""Decoders for reader-specific layouts that fit neither plain nor block types, such as llama2.c's
grouped int8 (all values first, then all group scales). Their codes are deliberately not known to
`expected_nbytes`, so no other reader accepts them from a file header."""


def register_decoder(dtype: str, decoder: TensorDecoder) -> None:
    """Register ``decoder(raw bytes, info) -> array of info.shape`` for a reader-specific dtype code."""
    EXTRA_DECODERS[dtype] = decoder


def validate_ranges(infos: list[TensorInfo], file_size: int, *, where: str, contiguous: bool = False) -> None:
    """Reject byte ranges outside the file, overlapping ranges, and (optionally) holes.

    ``infos`` must all live in one file. Runs in O(n log n) over the tensor table, no data read.
    """
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in infos)
    previous_end, previous_name = None, ""
    past_end: tuple[int, int, str] | None = None
    for start, end, name in spans:
        if start < 0:
            raise InconsistentHeaderError(f"{where}: tensor {sanitize(name)!r} claims bytes {start}..{end}")
        if end > file_size and past_end is None:
            past_end = (start, end, name)
        if previous_end is not None:
            if start < previous_end:
                raise InconsistentHeaderError(
                    f"{where}: tensors {sanitize(previous_name)!r} and {sanitize(name)!r} overlap"
                )
            if contiguous and start != previous_end:
                raise InconsistentHeaderError(
                    f"{where}: a gap of {start - previous_end} bytes before tensor {sanitize(name)!r}"
                )
        previous_end, previous_name = end, name
    if past_end is not None:
        start, end, name = past_end
        # Consistent ranges, and the file ends inside them: it was cut short (unless the size
        # claimed is beyond any real file, 2^48 bytes).
        if start <= file_size and end <= 1 << 48:
            raise CorruptCheckpointError(
                f"{where}: truncated: tensor {sanitize(name)!r} needs bytes {start}..{end} but the file "
                f"ends at {file_size}"
            )
        raise InconsistentHeaderError(
            f"{where}: tensor {sanitize(name)!r} claims bytes {start}..{end} but the file has {file_size}"
        )


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x20), 0x7F]}


def sanitize(text: str, limit: int = 300) -> str:
    """Make a name read from an untrusted file safe to print: no control or bidi characters, and
    no lone surrogates (JSON's ``\\ud800`` escapes and pickles can carry them; no UTF-8 stream can
    write them)."""
    cleaned = []
    for ch in text:
        code = ord(ch)
        if code in _CONTROL:
            cleaned.append(_CONTROL[code])
        elif (
            0x80 <= code < 0xA0
            or 0x202A <= code <= 0x202E
            or 0x2066 <= code <= 0x2069
            or 0xD800 <= code <= 0xDFFF
        ):
            cleaned.append(f"\\u{code:04x}")
        else:
            cleaned.append(ch)
    out = "".join(cleaned)
    return out if len(out) <= limit else out[: limit - 3] + "..."


# Values decoded per block of rows when `Checkpoint.read_columns` cannot gather before decoding.
_COLUMN_BLOCK_ELEMENTS = 1 << 22
# Rows whose stored elements `Checkpoint.read_columns` gathers at a time (16 was the fastest of 16,
# 64 and 256 on 4096 x 4096 and 4096 x 11008 bf16 matrices: the block and its transpose stay in L1/L2).
_GATHER_ROWS = 16


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    # Widened and shifted in one pass: one tensor-sized array, written once.
    return np.left_shift(raw, 16, dtype=np.uint32).view(np.float32)


def _f8_table(exponent_bits: int, mantissa_bits: int, bias: int, *, fn: bool) -> np.ndarray:
    """Lookup table from the 256 byte values to float32 (OCP FP8; E4M3 is the 'fn' variant)."""
    table = np.empty(256, dtype=np.float32)
    for byte in range(256):
        sign = -1.0 if byte & 0x80 else 1.0
        exponent = (byte >> mantissa_bits) & ((1 << exponent_bits) - 1)
        mantissa = byte & ((1 << mantissa_bits) - 1)
        max_exponent = (1 << exponent_bits) - 1
        if fn and exponent == max_exponent and mantissa == (1 << mantissa_bits) - 1:
            value = float("nan")
        elif not fn and exponent == max_exponent:
            value = float("inf") if mantissa == 0 else float("nan")
        elif exponent == 0:
            value = mantissa / (1 << mantissa_bits) * 2.0 ** (1 - bias)
        else:
            value = (1 + mantissa / (1 << mantissa_bits)) * 2.0 ** (exponent - bias)
        table[byte] = sign * value
    return table


_F8_TABLES = {
    "F8_E4M3": _f8_table(4, 3, 7, fn=True),
    "F8_E5M2": _f8_table(5, 2, 15, fn=False),
}


def f8_to_f32(codes: np.ndarray, dtype: str) -> np.ndarray:
    """FP8 codes (``F8_E4M3``, ``F8_E5M2``, stored as uint8) as float32 values."""
    return _F8_TABLES[dtype][codes]


def decode(raw: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Turn the raw bytes of one (contiguous or strided) tensor into a numpy array of its shape.

    Floating types come back as float32 except F16 and F64, which numpy represents natively.
    Quantized types are dequantized to float32.
    """
    dtype = info.dtype
    if dtype in BLOCK_TYPES:
        values = BLOCK_TYPES[dtype].dequantize(raw, info.numel)
        return values.reshape(info.shape)
    if dtype in EXTRA_DECODERS:
        return EXTRA_DECODERS[dtype](raw, info)
    if dtype not in PLAIN_DTYPES:
        raise UnsupportedFormatError(f"cannot decode dtype {dtype!r} of tensor {sanitize(info.name)!r}")
    np_dtype = PLAIN_DTYPES[dtype]
    flat = raw.view(np_dtype)
    if info.strides is not None:
        itemsize = np_dtype.itemsize
        needed = 1 + sum((n - 1) * s for n, s in zip(info.shape, info.strides, strict=True) if n > 0)
        if any(s < 0 for s in info.strides) or (info.numel and needed > flat.size):
            raise InconsistentHeaderError(
                f"tensor {sanitize(info.name)!r}: strides reach outside its storage"
            )
        array = np.lib.stride_tricks.as_strided(
            flat, shape=info.shape, strides=tuple(s * itemsize for s in info.strides), writeable=False
        )
        array = np.ascontiguousarray(array)
    else:
        if flat.size != info.numel:
            raise InconsistentHeaderError(
                f"tensor {sanitize(info.name)!r}: {flat.size} elements stored, shape needs {info.numel}"
            )
        array = flat.reshape(info.shape)
    if dtype == "BF16":
        return bf16_to_f32(array)
    if dtype in _F8_TABLES:
        return _F8_TABLES[dtype][array]
    return array


@dataclass
class Checkpoint:
    """A checkpoint opened for reading: tensor table, declared metadata and lazy values.

    Attributes:
        format: the weight container: ``safetensors``, ``pytorch``, ``gguf``, ``llama2c``,
            ``meta-pth`` or ``onnx``.
        layout: how the files are arranged: ``file``, ``sharded`` (an index file),
            ``hf-directory`` (a folder with ``config.json``), ``directory`` (any other folder: a GGUF
            or Meta's ``consolidated.*.pth`` in it), ``hf-cache`` (``models--org--name/snapshots/<rev>``).
        path: the path the user gave.
        files: the weight files, in shard order.
        tensors: name -> `TensorInfo`, in file order.
        metadata: format-level key/values (GGUF KV pairs, safetensors ``__metadata__``, the
            llama2.c header, Meta's ``params.json``, the PyTorch checkpoint's non-tensor entries).
        config: the parsed ``config.json`` when there is one.
        sidecars: other files found beside the weights, by role: ``config``,
            ``generation_config``, ``tokenizer_json``, ``tokenizer_model``, ``tokenizer_config``,
            ``vocab``, ``merges``, ``card`` (README.md), ``params``, ``license``...
        notes: findings the reader made that are not errors (an index listing a missing tensor...).
    """

    format: str
    path: Path
    files: list[Path]
    tensors: dict[str, TensorInfo]
    layout: str = "file"
    metadata: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    sidecars: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _maps: dict[Path, mmap.mmap] = field(default_factory=dict, repr=False)
    # Workers may read one checkpoint side by side (`threads.map_in_order`): a file is mapped once.
    _mapping: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # Facts derived from this checkpoint, computed once (`memo`; `unshell.model.Model` reads them).
    _memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per opened checkpoint: a vocabulary, a card or an inspection is read
        and parsed once, however many verbs and layers ask for it."""
        if key not in self._memo:
            self._memo[key] = compute()
        return cast(T, self._memo[key])

    # -- tensor table ---------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise TensorNotFoundError(f"no tensor named {sanitize(name)!r}") from None

    @property
    def parameter_count(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    # -- values ---------------------------------------------------------------------------------

    def raw_bytes(self, info: TensorInfo) -> np.ndarray:
        """The stored bytes of one tensor (one part), as a read-only uint8 view of the mapped file."""
        mapped = self._map(info.file)
        if info.offset < 0 or info.offset + info.nbytes > len(mapped):
            raise CorruptCheckpointError(
                f"{info.file.name}: tensor {sanitize(info.name)!r} lies beyond the end of the file "
                "(was it truncated after opening?)"
            )
        return np.frombuffer(mapped, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def raw_is_value(self, info: TensorInfo) -> bool:
        """Whether the stored bytes decode to the tensor's values on their own, so a caller may
        decode them a block of rows at a time. A reader whose `read` does more (ONNX folds a
        ``DequantizeLinear`` scale in) says no for those tensors, and callers use `read`."""
        return not info.parts and info.strides is None

    def read(self, name: str) -> np.ndarray:
        """Values of one tensor as numpy (bf16/fp8/quantized widened to float32).

        The result owns its memory and the tensor's pages are released from this process after
        decoding, so streaming a 100 GB model keeps memory near one tensor, not the whole file.
        """
        info = self.info(name)
        if info.parts:
            pieces = [decode(self.raw_bytes(p), p) for p in info.parts]
            for part in info.parts:
                self.release(part)
            return np.concatenate(pieces, axis=info.concat_axis)
        values = decode(self.raw_bytes(info), info)
        if np.shares_memory(values, self._map(info.file)):
            values = values.copy()
        self.release(info)
        return values

    def row_bytes(self, info: TensorInfo) -> int | None:
        """Bytes of one row (one index of the first axis) when the stored bytes are a sequence of
        equal, independently decodable rows: plain dtypes, and GGML block types (a row is whole
        blocks); None when rows cannot be decoded on their own."""
        if not self.raw_is_value(info) or len(info.shape) < 2 or info.shape[0] == 0:
            return None
        if info.dtype not in PLAIN_DTYPES and info.dtype not in BLOCK_TYPES:
            return None
        rows = info.shape[0]
        if info.nbytes % rows or info.numel % rows:
            return None
        return info.nbytes // rows

    def read_rows(self, name: str, rows: slice | np.ndarray) -> np.ndarray:
        """Values of some rows of one tensor, decoding only those rows when the storage allows
        (`row_bytes`), so sampling a 262k-row quantized embedding never widens all of it; else the
        whole tensor is read and indexed. Same values as ``read(name)[rows]``."""
        info = self.info(name)
        size = self.row_bytes(info)
        if size is None:
            return np.asarray(self.read(name)[rows])
        raw = self.raw_bytes(info).reshape(info.shape[0], size)[rows]
        picked = replace(info, shape=(raw.shape[0], *info.shape[1:]), nbytes=raw.size)
        values = decode(np.ascontiguousarray(raw).reshape(-1), picked)
        if np.shares_memory(values, self._map(info.file)):
            values = values.copy()
        return values

    def read_columns(self, name: str, columns: np.ndarray) -> np.ndarray:
        """Values of some columns (indices along the second axis) of a 2-D tensor: the values of
        ``read(name)[:, columns]``. Plain dtypes gather the stored elements first and widen only
        those (a sketch of a 4096 x 11008 bf16 matrix samples 2,048 columns: a fifth of the
        decoding); rows of block types are decoded a block of rows at a time."""
        info = self.info(name)
        if len(info.shape) != 2:
            return np.asarray(self.read(name)[:, columns])
        rows, cols = info.shape
        stored_type = PLAIN_DTYPES.get(info.dtype)
        if (
            self.raw_is_value(info)
            and stored_type is not None
            and info.nbytes == info.numel * stored_type.itemsize
        ):
            # Laid out as rows of the transpose (the result is a transposed view of contiguous
            # columns: what a caller that wants the columns as vectors lays out anyway), gathered
            # along each row a few rows at a time, where gathering down each column strides
            # through the whole matrix once per column (2 to 3.5 times slower at 7B shapes).
            matrix = self.raw_bytes(info).view(stored_type).reshape(rows, cols)
            stored = np.empty((len(columns), rows), dtype=stored_type)
            for start in range(0, rows, _GATHER_ROWS):
                stored[:, start : start + _GATHER_ROWS] = np.take(
                    matrix[start : start + _GATHER_ROWS], columns, axis=1
                ).T
            picked = replace(info, shape=stored.shape, nbytes=stored.nbytes)
            values = decode(stored.reshape(-1).view(np.uint8), picked)
            self.release(info)
            return values.T
        if self.row_bytes(info) is None or cols == 0:
            return np.asarray(self.read(name)[:, columns])
        step = max(1, _COLUMN_BLOCK_ELEMENTS // cols)
        blocks = [
            np.asarray(self.read_rows(name, slice(start, start + step)))[:, columns]
            for start in range(0, rows, step)
        ]
        self.release(info)
        return np.concatenate(blocks, axis=0) if blocks else np.asarray(self.read(name)[:, columns])

    def release(self, info: TensorInfo) -> None:
        """Drop one tensor's file pages from this process's resident memory (they stay on disk)."""
        mapped = self._maps.get(info.file)
        if mapped is None or not hasattr(mapped, "madvise") or info.nbytes == 0:
            return
        page = mmap.PAGESIZE
        start = info.offset - info.offset % page
        end = min(len(mapped), info.offset + info.nbytes)
        with contextlib.suppress(OSError, ValueError):
            mapped.madvise(mmap.MADV_DONTNEED, start, end - start)

    @contextlib.contextmanager
    def rows_apart(self, info: TensorInfo, rows: slice | np.ndarray) -> Iterator[None]:
        """While some far-apart rows of a tensor are read (every n-th, a sample, the leading rows
        of many tensors): its readahead is off, so a fault reads only its own pages, and all of
        those rows' pages are asked for at once (``MADV_WILLNEED``), so a file not in the page
        cache is read with every request queued instead of one fault at a time (a cold
        `compare --quick` was bound by those waits). On leaving, the tensor's readahead is back
        (``MADV_NORMAL``): a later pass over all of its rows (a hash, the value-added account)
        would otherwise fault them in a page at a time, 20 times slower from the disk
        (RESULTS.md, session 15). Advice only: a kernel or platform without it reads the rows as
        before."""
        size = self.row_bytes(info)
        mapped = self._map(info.file)
        page = mmap.PAGESIZE
        start = info.offset - info.offset % page
        end = min(len(mapped), info.offset + info.nbytes)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            mapped.madvise(mmap.MADV_RANDOM, start, end - start)
            if size is not None:
                # A slice's rows without an index of every row (a probe reads a few of millions).
                picked = (
                    np.arange(*rows.indices(info.shape[0])) if isinstance(rows, slice) else np.asarray(rows)
                )
                firsts = info.offset + picked.astype(np.int64) * size
                for first, last in _page_spans(firsts, firsts + size, page):
                    mapped.madvise(mmap.MADV_WILLNEED, first, min(last, end) - first)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                mapped.madvise(mmap.MADV_NORMAL, start, end - start)

    def iter_tensors(self, names: list[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """Stream tensors one at a time (memory: one decoded tensor at once)."""
        for name in names if names is not None else list(self.tensors):
            yield name, self.read(name)

    def _map(self, path: Path) -> mmap.mmap:
        mapped = self._maps.get(path)
        if mapped is not None:
            return mapped
        with self._mapping:
            mapped = self._maps.get(path)
            if mapped is None:
                fd = os.open(path, os.O_RDONLY)
                try:
                    if os.fstat(fd).st_size == 0:
                        raise CorruptCheckpointError(f"{path.name}: the file is empty")
                    mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                finally:
                    os.close(fd)
                self._maps[path] = mapped
        return mapped

    def close(self) -> None:
        for mapped in self._maps.values():
            # A caller may still hold a view; the map is then freed once that goes away.
            with contextlib.suppress(BufferError):
                mapped.close()
        self._maps.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _page_spans(firsts: np.ndarray, ends: np.ndarray, page: int) -> list[tuple[int, int]]:
    """The page-aligned spans covering the byte ranges [first, end) (sorted, not overlapping),
    ranges that share or touch a page merged into one span."""
    spans: list[tuple[int, int]] = []
    for first, end in zip(firsts.tolist(), ends.tolist(), strict=True):
        low, high = first - first % page, -(-end // page) * page
        if spans and low <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], high))
        else:
            spans.append((low, high))
    return spans


def check_shape(shape: object, *, where: str) -> tuple[int, ...]:
    """Validate a shape read from a header: a short list of non-negative ints."""
    if not isinstance(shape, list | tuple):
        raise InconsistentHeaderError(f"{where}: shape is not a list")
    if len(shape) > MAX_RANK:
        raise ResourceLimitError(f"{where}: rank {len(shape)} exceeds the limit of {MAX_RANK}")
    dims = []
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise InconsistentHeaderError(f"{where}: bad dimension {dim!r}")
        dims.append(dim)
    return tuple(dims)
