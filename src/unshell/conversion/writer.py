"""Streaming output: safetensors shards with an index, hashed while written, staged and renamed.

Memory stays bounded by one block of rows (`CHUNK_BYTES`), not by the model: every safetensors
header is computed from the plan (shapes and dtypes give byte sizes) before any weight is read;
source rows are read with ``pread`` into a fresh buffer (never memory-mapped, so the source's
pages are not charged to this process), transformed, written and hashed, then dropped.

Hashes (sha256, the Hub's LFS object id) run on background threads, which hashlib lets run in
parallel with the main thread's reads and writes: one per output file, fed the bytes as they are
written, and one that reads the source files front to back.

The output is assembled in a hidden temporary directory next to the destination and renamed into
place only when complete, so an interrupted run leaves no destination behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from ..errors import CorruptCheckpointError, OutputExistsError, OutputWriteError, UsageError
from ..formats.base import BLOCK_TYPES, EXTRA_DECODERS, PLAIN_DTYPES, Checkpoint, TensorInfo, sanitize
from .plan import Recipe
from .transforms import cast_values, normalize_rows, row_index, scale, to_values

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_SHARD_SIZE",
    "FileDigest",
    "OutputFile",
    "SourceReader",
    "Staging",
    "check_destination",
    "hash_files",
    "hub_blob_sha256",
    "parse_size",
    "refuse_input_overlap",
    "remove_stale_staging",
    "staging_directory",
    "write_json",
    "write_shards",
]

CHUNK_BYTES = 16 << 20
DEFAULT_SHARD_SIZE = 5_000_000_000
INDEX_NAME = "model.safetensors.index.json"
_HASH_QUEUE = 4


@dataclass(frozen=True)
class OutputFile:
    path: str
    """Relative to the output directory."""
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}


def parse_size(value: int | str) -> int:
    """``5000000000``, ``"5GB"``, ``"500MiB"`` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        text = str(value).strip().upper().replace(" ", "")
        units = {
            "KIB": 1 << 10,
            "MIB": 1 << 20,
            "GIB": 1 << 30,
            "KB": 10**3,
            "MB": 10**6,
            "GB": 10**9,
            "B": 1,
        }
        factor = 1
        for unit, multiple in units.items():
            if text.endswith(unit):
                text, factor = text[: -len(unit)], multiple
                break
        try:
            size = int(float(text) * factor)
        except ValueError:
            raise UsageError(
                f"shard size {sanitize(str(value), 40)!r} is not a size like 5GB or 500MiB"
            ) from None
    if size < 1 << 20:
        raise UsageError(f"shard size {size} bytes is below the 1 MiB minimum")
    return size


# -- reading source rows ----------------------------------------------------------------------------


def _pread_into(fd: int, buffer: np.ndarray, offset: int, name: str) -> None:
    """Fill a C-contiguous array from the file at ``offset``."""
    view = buffer.data.cast("B")
    done = 0
    while done < len(view):
        count = os.preadv(fd, [view[done:]], offset + done)
        if count == 0:
            raise CorruptCheckpointError(
                f"tensor {sanitize(name)!r} lies beyond the end of its file (truncated?)"
            )
        done += count


class _Rows:
    """Rows (axis 0) of one source tensor. ``code`` is the dtype of what `read` returns: the stored
    dtype for plain types (BF16 as its uint16 bits), F32 for dequantized ones."""

    code: str
    rows: int
    row_bytes: int

    def read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        out[...] = self.read(start, stop)

    def take(self, index: np.ndarray) -> np.ndarray:
        """Rows by index. Long runs of consecutive rows (fused splits: whole heads) are read run by
        run straight into the result; short ones (the rotary permutation pairs single rows) through
        one read of their span."""
        if index.size == 0:
            return self.read(0, 0)
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        low, high = int(index.min()), int(index.max()) + 1
        compact = (high - low) * self.row_bytes <= 2 * index.size * self.row_bytes + CHUNK_BYTES
        if compact and index.size < 8 * (breaks.size + 1):
            return self.read(low, high)[index - low]
        first = self.read(int(index[0]), int(index[0]) + 1)
        out = np.empty((index.size, *first.shape[1:]), dtype=first.dtype)
        position = 0
        for run in np.split(index, breaks):
            self.read_into(int(run[0]), int(run[-1]) + 1, out[position : position + run.size])
            position += run.size
        return out


class _PlainRows(_Rows):
    def __init__(self, fd: int, info: TensorInfo) -> None:
        self.fd, self.info = fd, info
        self.code = info.dtype
        self.dtype = PLAIN_DTYPES[info.dtype]
        self.shape = info.shape if info.shape else (1,)
        self.rows = self.shape[0]
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        self.read_into(start, stop, out)
        return out

    def read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        _pread_into(self.fd, out, self.info.offset + start * self.row_bytes, self.info.name)


class _BlockRows(_Rows):
    """GGML block-quantized rows: each row is whole blocks, dequantized per read."""

    def __init__(self, fd: int, info: TensorInfo) -> None:
        self.fd, self.info = fd, info
        self.block = BLOCK_TYPES[info.dtype]
        self.code = "F32"
        self.rows = info.shape[0]
        self.row_elements = int(np.prod(info.shape[1:], dtype=np.int64))
        self.row_bytes = self.row_elements // self.block.block_elements * self.block.block_bytes

    def read(self, start: int, stop: int) -> np.ndarray:
        buffer = np.empty((stop - start) * self.row_bytes, dtype=np.uint8)
        _pread_into(self.fd, buffer, self.info.offset + start * self.row_bytes, self.info.name)
        values = self.block.dequantize(buffer, (stop - start) * self.row_elements)
        return np.asarray(values, dtype=np.float32).reshape((stop - start, *self.info.shape[1:]))


class _MaterializedRows(_Rows):
    """Layouts that are not addressable by row (strided views, llama2.c's grouped int8): the whole
    tensor is decoded once; memory is one tensor."""

    def __init__(self, array: np.ndarray, code: str) -> None:
        self.array = np.ascontiguousarray(array if array.ndim else array.reshape(1))
        self.code = code
        self.rows = self.array.shape[0]
        self.row_bytes = self.array[:1].nbytes

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]


class _ConcatRows(_Rows):
    """A logical tensor concatenated from model-parallel parts (Meta's consolidated shards)."""

    def __init__(self, parts: list[_Rows], axis: int) -> None:
        self.parts, self.axis = parts, axis
        codes = {p.code for p in parts}
        if len(codes) != 1:
            raise CorruptCheckpointError("the parts of a sharded tensor decode to different dtypes")
        self.code = codes.pop()
        if axis == 0:
            self.starts = np.cumsum([0] + [p.rows for p in parts])
            self.rows = int(self.starts[-1])
        else:
            self.rows = parts[0].rows
        self.row_bytes = sum(p.row_bytes for p in parts) // (len(parts) if axis == 0 else 1)

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.axis != 0:
            return np.concatenate([p.read(start, stop) for p in self.parts], axis=self.axis)
        pieces = []
        for part, begin in zip(self.parts, self.starts[:-1], strict=True):
            low, high = max(start, int(begin)), min(stop, int(begin) + part.rows)
            if low < high:
                pieces.append(part.read(low - int(begin), high - int(begin)))
        return np.concatenate(pieces) if len(pieces) != 1 else pieces[0]


class SourceReader:
    """Opens each source file once and hands out row readers for its tensors."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self._fds: dict[Path, int] = {}

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            self._fds[path] = fd
        return fd

    def rows(self, name: str) -> _Rows:
        info = self.checkpoint.info(name)
        if info.parts:
            return _ConcatRows([self._single(p, name) for p in info.parts], info.concat_axis)
        return self._single(info, name)

    def _single(self, info: TensorInfo, name: str) -> _Rows:
        if not self.checkpoint.raw_is_value(info) and info.strides is None:
            return _MaterializedRows(self.checkpoint.read(name), "F32")  # the reader transforms it
        if info.dtype in PLAIN_DTYPES and info.strides is None:
            return _PlainRows(self._fd(info.file), info)
        if info.dtype in BLOCK_TYPES and info.strides is None and len(info.shape) >= 2:
            return _BlockRows(self._fd(info.file), info)
        if info.dtype in PLAIN_DTYPES:
            return _MaterializedRows(self._strided(info), info.dtype)
        if info.dtype in EXTRA_DECODERS or info.dtype in BLOCK_TYPES:
            return _MaterializedRows(self.checkpoint.read(name), "F32")
        raise CorruptCheckpointError(f"tensor {sanitize(name)!r}: dtype {info.dtype} cannot be read")

    def _strided(self, info: TensorInfo) -> np.ndarray:
        """A strided (say, transposed) PyTorch view, read from its storage span in stored dtype."""
        assert info.strides is not None
        dtype = PLAIN_DTYPES[info.dtype]
        span = 1 + sum((n - 1) * s for n, s in zip(info.shape, info.strides, strict=True) if n > 0)
        if any(s < 0 for s in info.strides) or span * dtype.itemsize > info.nbytes:
            raise CorruptCheckpointError(f"tensor {sanitize(info.name)!r}: strides reach outside its storage")
        buffer = np.empty(span * dtype.itemsize, dtype=np.uint8)
        _pread_into(self._fd(info.file), buffer, info.offset, info.name)
        flat = buffer.view(dtype)
        view = np.lib.stride_tricks.as_strided(
            flat, shape=info.shape, strides=tuple(s * dtype.itemsize for s in info.strides), writeable=False
        )
        return np.ascontiguousarray(view)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def recipe_chunks(recipe: Recipe, reader: SourceReader) -> Iterator[np.ndarray]:
    """The output bytes of one recipe, as little-endian arrays of at most about `CHUNK_BYTES`."""
    if not recipe.shape:
        raise UsageError(f"{recipe.output}: scalar tensors are not part of a Llama checkpoint")
    row_elements = int(np.prod(recipe.shape[1:], dtype=np.int64))
    out_row_bytes = max(1, row_elements * PLAIN_DTYPES[recipe.dtype].itemsize)
    per_chunk = max(1, CHUNK_BYTES // out_row_bytes)
    total = recipe.shape[0]
    if recipe.source is None:
        for start in range(0, total, per_chunk):
            count = min(per_chunk, total - start)
            yield cast_values(np.zeros((count, *recipe.shape[1:]), dtype=np.float32), recipe.dtype)
        return
    rows = reader.rows(recipe.source)
    index = row_index(rows.rows, [(s.op, s.args) for s in recipe.row_maps])
    for start in range(0, total, per_chunk):
        stop = min(total, start + per_chunk)
        data = rows.read(start, stop) if index is None else rows.take(index[start:stop])
        if not recipe.folds and rows.code == recipe.dtype:
            yield data
            continue
        values = to_values(data, rows.code)
        for fold in recipe.folds:
            values = (
                normalize_rows(values) if fold.op == "normalize_rows" else scale(values, fold.args["factor"])
            )
        yield cast_values(values, recipe.dtype)


# -- hashing ------------------------------------------------------------------------------------------


class _BackgroundHash:
    """sha256 on a worker thread; `update` blocks when the worker is `_HASH_QUEUE` chunks behind."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_HASH_QUEUE)
        self._thread = threading.Thread(target=self._run, name="unshell-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._hash.update(item)

    def update(self, data: Any) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _hash_file(path: Path, stop: threading.Event) -> tuple[int, str]:
    digest = hashlib.sha256()
    buffer = bytearray(8 << 20)
    view = memoryview(buffer)
    size = 0
    with path.open("rb", buffering=0) as handle:
        while not stop.is_set():
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
            size += count
    return size, digest.hexdigest()


_LFS_BLOB_NAME = re.compile(r"[0-9a-f]{64}")


def hub_blob_sha256(path: Path) -> str | None:
    """The sha256 a Hugging Face cache states for ``path``, or None.

    Snapshot files link to ``blobs/<name>``; for files stored with Git LFS (every weight file)
    the name is the LFS object id, which is the sha256 of the content, and the download checked
    it. Small files kept in git are named by their 40-digit git hash and do not qualify.
    """
    if not path.is_symlink():
        return None
    target = path.resolve()
    if target.parent.name != "blobs" or not _LFS_BLOB_NAME.fullmatch(target.name):
        return None
    return target.name


@dataclass(frozen=True)
class FileDigest:
    """Size and sha256 of one source file; ``origin`` says how the digest was obtained."""

    bytes: int
    sha256: str | None
    origin: str  # "computed", "hub-cache-blob-name" or "not-computed" (convert(source_digests=False))


class _FileHashes:
    """sha256 of a list of files, computed on one background thread while the conversion runs.

    Files whose digest a Hub cache already states (see `hub_blob_sha256`) are not read again:
    hashing is the one cost that keeps a conversion from running at copy speed on two cores.
    """

    def __init__(self, paths: Iterable[Path], *, compute: bool = True) -> None:
        self._paths = list(dict.fromkeys(paths))
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unshell-source-hash")
        self._known = {path: sha for path in self._paths if (sha := hub_blob_sha256(path)) is not None}
        self._futures: dict[Path, Future[tuple[int, str]]] = {
            path: self._pool.submit(_hash_file, path, self._stop)
            for path in self._paths
            if path not in self._known and compute
        }

    def result(self) -> dict[Path, FileDigest]:
        try:
            digests: dict[Path, FileDigest] = {}
            for path in self._paths:
                if path in self._known:
                    digests[path] = FileDigest(path.stat().st_size, self._known[path], "hub-cache-blob-name")
                elif path not in self._futures:
                    digests[path] = FileDigest(path.stat().st_size, None, "not-computed")
                else:
                    size, sha = self._futures[path].result()
                    digests[path] = FileDigest(size, sha, "computed")
            return digests
        finally:
            self._pool.shutdown(wait=True)

    def cancel(self) -> None:
        self._stop.set()
        for future in self._futures.values():
            future.cancel()
        self._pool.shutdown(wait=True)


@contextlib.contextmanager
def hash_files(paths: Iterable[Path], *, compute: bool = True) -> Iterator[_FileHashes]:
    """Hash files in the background for the duration of the block (cancelled if it fails).

    ``compute=False`` hashes nothing: only digests a Hub cache states are reported."""
    hashes = _FileHashes(paths, compute=compute)
    try:
        yield hashes
    except BaseException:
        hashes.cancel()
        raise


# -- safetensors shards --------------------------------------------------------------------------------


def _shard_groups(recipes: list[Recipe], shard_size: int) -> list[list[Recipe]]:
    groups: list[list[Recipe]] = []
    current: list[Recipe] = []
    size = 0
    for recipe in recipes:
        if current and size + recipe.nbytes > shard_size:
            groups.append(current)
            current, size = [], 0
        current.append(recipe)
        size += recipe.nbytes
    if current:
        groups.append(current)
    return groups


def _header(recipes: list[Recipe]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    position = 0
    for recipe in recipes:
        header[recipe.output] = {
            "dtype": recipe.dtype,
            "shape": list(recipe.shape),
            "data_offsets": [position, position + recipe.nbytes],
        }
        position += recipe.nbytes
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # Pad so that the data section, and with it every tensor (largest element size first), is aligned.
    return encoded + b" " * (-(8 + len(encoded)) % 8)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError in the block is the output's (a full disk, ``ulimit -f``, a read-only file
    system), not the input's: say so, and name the path."""
    try:
        yield
    except OSError as error:
        raise OutputWriteError(
            f"cannot write the output {sanitize(str(path), 4096)}: {error.strerror or error}"
        ) from None


def _write_all(handle: Any, data: Any, path: Path) -> None:
    view = memoryview(data).cast("B")
    with _writing(path):
        while view:
            written = handle.write(view)
            view = view[written:]


def _write_shard(
    path: Path, recipes: list[Recipe], produce: Callable[[Recipe], Iterator[np.ndarray]]
) -> tuple[int, str]:
    header = _header(recipes)
    digest = _BackgroundHash()
    size = 0
    try:
        with _writing(path):
            handle = path.open("wb", buffering=0)
        with handle:
            for chunk in (struct.pack("<Q", len(header)), header):
                _write_all(handle, chunk, path)
                digest.update(chunk)
                size += len(chunk)
            for recipe in recipes:
                written = 0
                for data in produce(recipe):
                    data = np.ascontiguousarray(data)
                    _write_all(handle, data, path)
                    digest.update(data)
                    written += data.nbytes
                if written != recipe.nbytes:
                    raise CorruptCheckpointError(
                        f"{recipe.output}: produced {written} bytes, the header promised {recipe.nbytes}"
                    )
                size += written
        return size, digest.hexdigest()
    finally:
        digest.close()


def write_shards(
    directory: Path,
    recipes: list[Recipe],
    produce: Callable[[Recipe], Iterator[np.ndarray]],
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> list[OutputFile]:
    """Write ``model-0000i-of-0000n.safetensors`` shards (recipes in the given order, cut at
    ``shard_size`` bytes; a tensor larger than that gets its own shard) and the index. Within a
    shard, tensors are ordered by descending element size so every tensor is aligned."""
    groups = _shard_groups(recipes, shard_size)
    files: list[OutputFile] = []
    weight_map: dict[str, str] = {}
    for number, group in enumerate(groups, start=1):
        ordered = sorted(group, key=lambda r: -PLAIN_DTYPES[r.dtype].itemsize)
        name = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        size, sha = _write_shard(directory / name, ordered, produce)
        files.append(OutputFile(name, size, sha))
        weight_map.update(dict.fromkeys((r.output for r in group), name))
    index = {
        "metadata": {"total_size": sum(r.nbytes for r in recipes)},
        "weight_map": dict(sorted(weight_map.items())),
    }
    files.append(write_json(directory / INDEX_NAME, index))
    return files


def write_json(path: Path, value: Any) -> OutputFile:
    data = (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    with _writing(path):
        path.write_bytes(data)
    return OutputFile(path.name, len(data), hashlib.sha256(data).hexdigest())


def copy_file(source: Path, directory: Path, name: str | None = None) -> OutputFile:
    """Copy and hash a side file: a failed read is the input's, a failed write the output's."""
    target = directory / (name or source.name)
    digest = hashlib.sha256()
    size = 0
    with source.open("rb", buffering=0) as reader:
        with _writing(target):
            writer = target.open("wb", buffering=0)
        with writer:
            while block := reader.read(8 << 20):
                _write_all(writer, block, target)
                digest.update(block)
                size += len(block)
    return OutputFile(target.name, size, digest.hexdigest())


def write_text(path: Path, text: str) -> OutputFile:
    data = text.encode("utf-8")
    with _writing(path):
        path.write_bytes(data)
    return OutputFile(path.name, len(data), hashlib.sha256(data).hexdigest())


# -- destination ---------------------------------------------------------------------------------------
#
# The output is assembled in ``.<name>.unshell-XXXX`` beside the destination and renamed into place;
# with ``force``, the old destination is first renamed to ``.<name>.replaced-XXXX`` and deleted once
# the new one is in place. Each of these folders is locked (``flock``) by the process that made it,
# for as long as it lives: a folder of that shape nobody holds a lock on was left by a run that was
# killed, and the next run for the same destination removes it (or, for an old output moved aside
# whose replacement never arrived, puts it back).

STAGING_TAG = ".unshell-"
REPLACED_TAG = ".replaced-"
_LOCK_TRIES = 8


def _inside(path: Path, other: Path) -> bool:
    return path == other or path.is_relative_to(other)


def _shown(path: Path) -> str:
    return sanitize(str(path), 4096)


def _is_link(path: Path) -> bool:
    """Whether the file itself is a symbolic link (not merely reached through a linked folder)."""
    return path.resolve() != Path(os.path.realpath(path.parent)) / path.name


def _input_folders(source: Path, inputs: list[Path]) -> Iterator[tuple[Path, Path]]:
    """(folder, input in it) for every folder that is part of the input: a source directory itself,
    and the folder each input file lies in, really (after links), when the source is a directory or
    the file is a link (a Hub snapshot's files link into ``blobs/``). A single file's own folder is
    not part of the input: converting ``dir/model.gguf`` into ``dir/llama`` is fine."""
    directory = source.is_dir()
    if directory:
        yield source.resolve(), source
    for path in inputs:
        if directory or _is_link(path):
            yield path.resolve().parent, path


def refuse_input_overlap(destination: Path, source: Path, inputs: Iterable[Path]) -> None:
    """Refuse, with or without ``force``, a destination where writing would change the input.

    ``inputs`` are the files the conversion reads. The destination may not be or contain any of
    them where they really lie (``force`` would delete them), nor be or lie inside a folder of the
    input (see `_input_folders`; a new subfolder there changes the input).

    Raises:
        UsageError: naming the input file that would have been destroyed or changed.
    """
    target = destination.resolve()
    files = list(dict.fromkeys(inputs))
    for path in files:
        real = path.resolve()
        if _inside(real, target):
            link = f" (a link to {_shown(real)})" if _is_link(path) else ""
            raise UsageError(
                f"the output {_shown(destination)} is or contains the input file {_shown(path)}{link}: "
                "writing there would destroy it"
            )
    for folder, path in _input_folders(source, files):
        if _inside(target, folder):
            raise UsageError(
                f"the output {_shown(destination)} is or lies inside {_shown(folder)}, which holds the "
                f"input {_shown(path)}: writing there would change the input"
            )


def check_destination(destination: Path, *, force: bool) -> None:
    """Refuse a destination that exists and is not empty, unless ``force``.

    Raises:
        OutputExistsError: a non-empty destination without ``force``.
    """
    if not os.path.lexists(destination):
        return
    if destination.is_dir() and not destination.is_symlink() and not any(destination.iterdir()):
        return
    if not force:
        what = "directory is not empty" if destination.is_dir() else "path exists"
        raise OutputExistsError(f"{_shown(destination)}: the output {what} (pass --force to replace it)")


def _lock(path: Path) -> int | None:
    """A descriptor holding an exclusive ``flock`` on ``path`` (a folder or a file, not a link),
    or None when another process holds one. The lock ends with the descriptor, or the process."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _still_at(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file ``fd`` has open (a stale-folder sweep may have won)."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _leftovers(destination: Path) -> Iterator[tuple[Path, bool]]:
    """(path, is an old output moved aside) of the staging and replaced folders of ``destination``."""
    prefix = f".{destination.name}"
    try:
        entries = list(os.scandir(destination.parent))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        tag = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
        aside = tag.startswith(REPLACED_TAG)
        if (aside or tag.startswith(STAGING_TAG)) and not entry.is_symlink():
            yield Path(entry.path), aside


def remove_stale_staging(destination: Path, report: Callable[[str], object] | None = None) -> None:
    """Clean up after conversions to ``destination`` that were killed (``kill -9``, a crash, a
    power cut): remove their staging folders, and old outputs they had moved aside; an old output
    moved aside whose replacement never arrived goes back to ``destination`` if that is free.
    Folders a live conversion holds are left alone. ``report`` gets one line per action; a folder
    that cannot be removed (another user's) is reported and left: it is not this run's output."""
    for path, aside in _leftovers(destination):
        try:
            what = _remove_leftover(path, aside, destination)
        except OSError as error:
            what = (
                f"could not remove {path.name}, left by an interrupted conversion: {error.strerror or error}"
            )
        if what is not None and report is not None:
            report(f"{what} (beside {_shown(destination)})")


def _remove_leftover(path: Path, aside: bool, destination: Path) -> str | None:
    try:
        fd = _lock(path)
    except FileNotFoundError:  # its owner finished meanwhile
        return None
    if fd is None:  # a running conversion's
        return None
    try:
        if not _still_at(fd, path):
            return None
        if aside and not os.path.lexists(destination):
            os.rename(path, destination)
            return f"put back {path.name}, the old output an interrupted conversion had moved aside"
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        return f"removed {path.name}, left by an interrupted conversion"
    finally:
        os.close(fd)


class _Interrupts:
    """SIGINT and SIGTERM while a conversion stages its output (main thread only, and only where
    nobody else handles them). Before the commit they raise KeyboardInterrupt, so the staging
    folder is removed and nothing is written. From the commit on they are held: the output is
    complete, and stopping in the middle of the swap would leave the replaced output beside it."""

    def __init__(self) -> None:
        self.committing = False
        self.held: list[int] = []
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        for signum, default in defaults.items():
            current = signal.getsignal(signum)
            if current == default:
                self._previous[signum] = current
                signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.committing:
            self.held.append(signum)
            return
        raise KeyboardInterrupt("terminated" if signum == signal.SIGTERM else "interrupted")

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


class Staging:
    """The hidden folder a conversion writes into, beside ``destination`` (see `staging_directory`)."""

    def __init__(self, path: Path, destination: Path, interrupts: _Interrupts) -> None:
        self.path = path
        self.destination = destination
        self._interrupts = interrupts

    @property
    def interrupted_after_commit(self) -> bool:
        """Whether SIGINT or SIGTERM arrived once the output was complete (and was held)."""
        return bool(self._interrupts.held)

    def commit(self, *, force: bool) -> None:
        """Move the finished folder to the destination (replacing an empty directory, or with
        ``force`` anything there, which is moved aside first and deleted only after the rename).
        Interrupts are held from here on (see `_Interrupts`)."""
        self._interrupts.committing = True
        with _writing(self.destination):
            _swap(self.path, self.destination, force=force)


def _swap(staging: Path, destination: Path, *, force: bool) -> None:
    if not os.path.lexists(destination):
        try:
            os.rename(staging, destination)
            return
        except OSError:
            if not os.path.lexists(destination):
                raise
    if destination.is_dir() and not destination.is_symlink() and not any(destination.iterdir()):
        os.replace(staging, destination)
        return
    if not force:
        raise OutputExistsError(
            f"{_shown(destination)} appeared while converting (pass --force to replace it)"
        )
    # Locked before it is renamed, so that no other run ever sees the old output aside unlocked
    # while this one lives. A link is moved aside as it is (there is nothing of ours to lock).
    held = None if destination.is_symlink() else _lock(destination)
    if held is None and not destination.is_symlink():
        raise OutputExistsError(f"{_shown(destination)} is being replaced by another conversion")
    try:
        aside = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}{REPLACED_TAG}"))
        os.rmdir(aside)
        os.rename(destination, aside)
        try:
            os.rename(staging, destination)
        except BaseException:
            os.rename(aside, destination)
            raise
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)
    finally:
        if held is not None:
            os.close(held)


def _make_staging(destination: Path) -> tuple[Path, int]:
    """A new staging folder and the descriptor that holds its lock. mkdtemp and flock are two
    steps: a sweep by another run can take the lock in between and remove the folder; then try
    again with a fresh one."""
    for _ in range(_LOCK_TRIES):
        staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}{STAGING_TAG}"))
        try:
            fd = _lock(staging)
        except FileNotFoundError:
            continue
        if fd is None:
            continue
        if _still_at(fd, staging):
            return staging, fd
        os.close(fd)
    raise OutputWriteError(f"could not make a staging folder beside {_shown(destination)} that stays ours")


@contextlib.contextmanager
def staging_directory(destination: Path) -> Iterator[Staging]:
    """A hidden, locked temporary folder beside ``destination``, removed unless committed. SIGINT
    and SIGTERM abort the block until `Staging.commit` starts, and are held from then on."""
    with _writing(destination.parent):
        destination.parent.mkdir(parents=True, exist_ok=True)
        path, lock = _make_staging(destination)
        # mkdtemp makes the directory private; the output should get the permissions mkdir would give.
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(path, 0o777 & ~mask)
    interrupts = _Interrupts()
    try:
        interrupts.install()
        yield Staging(path, destination, interrupts)
    finally:
        try:
            if os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(lock)
            interrupts.restore()
