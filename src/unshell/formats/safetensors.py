"""safetensors: strict, lazy reader and a small numpy writer.

Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON (may be right-padded with
spaces), then the byte buffer. Each JSON entry gives ``dtype``, ``shape`` and ``data_offsets``
relative to the buffer. The reader checks everything the format promises (no overlaps, no holes,
sizes that match dtype and shape) because a header that lies is itself a finding.

The JSON helpers here are shared by the other JSON-bearing files (shard indexes, config.json,
params.json): they reject duplicate keys and turn every parser failure into an unshell error.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    NotACheckpointError,
    PathNotFoundError,
    ResourceLimitError,
    UnsupportedFormatError,
    UsageError,
)
from .base import (
    MAX_HEADER_BYTES,
    MAX_NAME_BYTES,
    MAX_TENSORS,
    PLAIN_DTYPES,
    Checkpoint,
    TensorInfo,
    check_shape,
    expected_nbytes,
    sanitize,
    validate_ranges,
)
from .facts import Claim, FormatFacts, claim_text

__all__ = [
    "float32_to_bf16",
    "open_regular_file",
    "parse_strict_json",
    "read_json_file",
    "read_safetensors",
    "write_safetensors",
    "write_sharded_safetensors",
]

_NUMPY_TO_CODE = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint64): "U64",
    np.dtype(np.uint32): "U32",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.complex64): "C64",
}

# -- shared file and JSON helpers ---------------------------------------------------------------


def open_regular_file(path: Path) -> tuple[IO[bytes], int]:
    """Open ``path`` for reading and return (handle, size), refusing anything but a regular file.

    Opening with O_NONBLOCK and checking the descriptor (not the name) means a FIFO or device
    planted under a weight file's name can neither block the process nor be swapped in between
    the check and the open.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise PathNotFoundError(f"{sanitize(str(path))}: no such file") from None
    except PermissionError:
        raise PathNotFoundError(f"{sanitize(str(path))}: permission denied") from None
    except OSError as error:
        raise PathNotFoundError(f"{sanitize(str(path))}: cannot open ({error.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotACheckpointError(f"{sanitize(str(path))}: not a regular file")
    return os.fdopen(fd, "rb"), info.st_size


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InconsistentHeaderError(f"duplicate JSON key {sanitize(key)!r}")
        result[key] = value
    return result


def parse_strict_json(data: bytes, *, where: str) -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object; duplicate keys are an InconsistentHeaderError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptCheckpointError(f"{where}: not valid UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except InconsistentHeaderError as error:
        raise InconsistentHeaderError(f"{where}: {error}") from None
    except RecursionError:
        raise CorruptCheckpointError(f"{where}: JSON nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, and ints beyond Python's digit limit
        raise CorruptCheckpointError(f"{where}: not valid JSON ({sanitize(str(error), 120)})") from None
    if not isinstance(value, dict):
        raise CorruptCheckpointError(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


def read_json_file(path: Path, *, limit: int) -> dict[str, Any]:
    """Read and strictly parse a small JSON object file (config.json, an index, params.json)."""
    handle, size = open_regular_file(path)
    with handle:
        if size > limit:
            raise ResourceLimitError(
                f"{sanitize(path.name)}: {size} bytes, more than the {limit}-byte limit for this file"
            )
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ResourceLimitError(f"{sanitize(path.name)}: grew past the {limit}-byte limit while reading")
    return parse_strict_json(data, where=sanitize(path.name))


# -- reader -------------------------------------------------------------------------------------


def read_safetensors(path: Path) -> Checkpoint:
    """Open a ``.safetensors`` file: parse and validate its header, read no tensor data.

    Raises:
        CorruptCheckpointError: truncated file or a header that is not JSON.
        InconsistentHeaderError: offsets, sizes or keys that contradict the format.
        ResourceLimitError: a header beyond `MAX_HEADER_BYTES` or too many tensors.
        UnsupportedFormatError: a dtype unshell does not decode.
    """
    where = sanitize(path.name)
    handle, file_size = open_regular_file(path)
    with handle:
        header_length = _read_header_length(handle, file_size, where)
        raw_header = handle.read(header_length)
    if len(raw_header) != header_length:
        raise CorruptCheckpointError(f"{where}: the file ended inside its header")
    header = _parse_header(raw_header, where)
    metadata = _extract_metadata(header, where)
    if len(header) > MAX_TENSORS:
        raise ResourceLimitError(f"{where}: {len(header)} tensors exceed the limit of {MAX_TENSORS}")
    buffer_start = 8 + header_length
    infos = [_tensor_info(name, entry, path, buffer_start, where) for name, entry in header.items()]
    _check_buffer_coverage(infos, buffer_start, file_size, where)
    infos.sort(key=lambda info: (info.offset, info.nbytes))
    return Checkpoint(
        format="safetensors",
        path=path,
        files=[path],
        tensors={info.name: info for info in infos},
        layout="file",
        metadata={"safetensors": metadata},
    )


def _read_header_length(handle: IO[bytes], file_size: int, where: str) -> int:
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise CorruptCheckpointError(f"{where}: {file_size} bytes, too short for a safetensors header")
    (header_length,) = struct.unpack("<Q", prefix)
    if header_length > file_size - 8:
        raise CorruptCheckpointError(
            f"{where}: header claims {header_length} bytes but only {file_size - 8} follow (truncated?)"
        )
    if header_length > MAX_HEADER_BYTES:
        raise ResourceLimitError(
            f"{where}: header of {header_length} bytes exceeds the limit of {MAX_HEADER_BYTES}"
        )
    if header_length < 2:
        raise CorruptCheckpointError(f"{where}: header of {header_length} bytes cannot hold a JSON object")
    return header_length


def _parse_header(raw_header: bytes, where: str) -> dict[str, Any]:
    if not raw_header.startswith(b"{"):
        raise CorruptCheckpointError(f"{where}: the header does not start with '{{'")
    # The format allows right-padding with spaces (and only spaces) for alignment.
    return parse_strict_json(raw_header.rstrip(b" "), where=f"{where} header")


def _extract_metadata(header: dict[str, Any], where: str) -> dict[str, str]:
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        raise InconsistentHeaderError(f"{where}: __metadata__ must map strings to strings")
    return metadata


def _tensor_info(name: str, entry: object, path: Path, buffer_start: int, where: str) -> TensorInfo:
    label = f"{where}: tensor {sanitize(name)!r}"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ResourceLimitError(f"{where}: a tensor name longer than {MAX_NAME_BYTES} bytes")
    if not isinstance(entry, dict):
        raise InconsistentHeaderError(f"{label}: entry is not an object")
    missing = {"dtype", "shape", "data_offsets"} - entry.keys()
    if missing:
        raise InconsistentHeaderError(f"{label}: missing {', '.join(sorted(missing))}")
    dtype = entry["dtype"]
    if not isinstance(dtype, str):
        raise InconsistentHeaderError(f"{label}: dtype is not a string")
    # Only element-wise dtypes: GGML block codes registered in base are not safetensors dtypes.
    if dtype not in PLAIN_DTYPES:
        raise UnsupportedFormatError(f"{label}: unsupported dtype {sanitize(dtype, 40)!r}")
    shape = check_shape(entry["shape"], where=label)
    begin, end = _check_offsets(entry["data_offsets"], label)
    nbytes = expected_nbytes(dtype, shape)
    if nbytes != end - begin:
        raise InconsistentHeaderError(
            f"{label}: {dtype} {list(shape)} needs {nbytes} bytes but data_offsets span {end - begin}"
        )
    return TensorInfo(
        name=name, dtype=dtype, shape=shape, file=path, offset=buffer_start + begin, nbytes=nbytes
    )


def _check_offsets(offsets: object, label: str) -> tuple[int, int]:
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(value, int) and not isinstance(value, bool) for value in offsets)
    ):
        raise InconsistentHeaderError(f"{label}: data_offsets must be two integers")
    begin, end = offsets
    if begin < 0 or end < begin:
        raise InconsistentHeaderError(f"{label}: bad data_offsets [{begin}, {end}]")
    return begin, end


def _check_buffer_coverage(infos: list[TensorInfo], buffer_start: int, file_size: int, where: str) -> None:
    """Every byte after the header belongs to exactly one tensor: no overlaps, no holes, no tail."""
    validate_ranges(infos, file_size, where=where, contiguous=True)
    first = min((info.offset for info in infos), default=buffer_start)
    last = max((info.offset + info.nbytes for info in infos), default=buffer_start)
    if first != buffer_start:
        raise InconsistentHeaderError(
            f"{where}: {first - buffer_start} unindexed bytes before the first tensor"
        )
    if last != file_size:
        raise InconsistentHeaderError(f"{where}: {file_size - last} unindexed bytes after the last tensor")


# -- writer -------------------------------------------------------------------------------------


def float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """BF16 bit patterns (uint16) of float32 values, rounded to nearest even like PyTorch does."""
    floats = np.asarray(values, dtype=np.float32, order="C")
    bits = floats.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    # Rounding could carry a NaN's payload into the sign bit; keep it a quiet NaN instead.
    rounded = np.where(np.isnan(floats), (bits >> 16) | 0x40, rounded)
    return rounded.astype(np.uint16)


def _encode_tensor(name: str, array: np.ndarray, code: str | None) -> tuple[str, np.ndarray]:
    """(dtype code, little-endian contiguous array holding exactly the bytes to store)."""
    if code is None:
        native = array.dtype.newbyteorder("=") if array.dtype.byteorder not in "=|" else array.dtype
        if native not in _NUMPY_TO_CODE:
            raise UsageError(f"tensor {name!r}: numpy dtype {array.dtype} has no safetensors code")
        code = _NUMPY_TO_CODE[native]
        stored = array
    elif code == "BF16":
        stored = float32_to_bf16(array)
    elif code in PLAIN_DTYPES and not code.startswith("F8"):
        stored = array.astype(PLAIN_DTYPES[code])
    else:
        raise UsageError(f"tensor {name!r}: cannot write dtype {code!r}")
    target = PLAIN_DTYPES[code]
    return code, np.asarray(stored, dtype=target.newbyteorder("<"), order="C")


def write_safetensors(
    path: Path,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
    dtypes: Mapping[str, str] | None = None,
) -> None:
    """Write numpy arrays as one safetensors file, atomically (temp file + rename).

    ``dtypes`` optionally names the stored dtype per tensor, e.g. ``"BF16"`` to store a float32
    array as bfloat16 (round to nearest even) or ``"F16"``. Tensors are laid out by descending
    element size, then name, like the reference writer, and the header is space-padded so the data
    starts 8-byte aligned.
    """
    encoded = {
        name: _encode_tensor(name, np.asarray(array), (dtypes or {}).get(name))
        for name, array in tensors.items()
    }
    order = sorted(encoded, key=lambda name: (-encoded[name][1].dtype.itemsize, name))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    position = 0
    for name in order:
        code, stored = encoded[name]
        header[name] = {
            "dtype": code,
            "shape": list(stored.shape),
            "data_offsets": [position, position + stored.nbytes],
        }
        position += stored.nbytes
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    _write_atomically(
        path, [struct.pack("<Q", len(header_bytes)), header_bytes, *(encoded[n][1] for n in order)]
    )


def _write_atomically(path: Path, chunks: list[bytes | np.ndarray]) -> None:
    path = Path(path)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk.tobytes() if isinstance(chunk, np.ndarray) else chunk)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_sharded_safetensors(
    directory: Path,
    tensors: Mapping[str, np.ndarray],
    shards: int,
    metadata: Mapping[str, str] | None = None,
    dtypes: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model-0000i-of-0000n.safetensors`` shards plus ``model.safetensors.index.json``.

    Tensors keep their order and are split into ``shards`` runs of near-equal count. Returns the
    index path.
    """
    names = list(tensors)
    if not 1 <= shards <= max(len(names), 1):
        raise UsageError(f"cannot split {len(names)} tensors into {shards} shards")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    total_size = 0
    for index in range(shards):
        shard_names = names[index * len(names) // shards : (index + 1) * len(names) // shards]
        file_name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        shard_dtypes = {name: dtypes[name] for name in shard_names if dtypes and name in dtypes}
        write_safetensors(directory / file_name, {n: tensors[n] for n in shard_names}, metadata, shard_dtypes)
        for name in shard_names:
            weight_map[name] = file_name
            total_size += _encode_tensor(name, np.asarray(tensors[name]), shard_dtypes.get(name))[1].nbytes
    index_path = directory / "model.safetensors.index.json"
    index_document = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    _write_atomically(index_path, [json.dumps(index_document, indent=2).encode("utf-8") + b"\n"])
    return index_path


# -- what the format declares ----------------------------------------------------------------------

# ``__metadata__`` keys that name the model (kohya/modelspec and hand-written conventions).
_METADATA_FIELDS = {
    "name": "name",
    "modelspec.title": "name",
    "license": "license",
    "modelspec.license": "license",
    "base_model": "base_model",
    "modelspec.author": "organization",
    "model_type": "model_type",
    "architecture": "model_type",
    "modelspec.architecture": "model_type",
}


def format_facts(checkpoint: Checkpoint) -> FormatFacts:
    """safetensors declares only what its free-form ``__metadata__`` strings say."""
    metadata = checkpoint.metadata.get("safetensors")
    claims: list[tuple[str, Claim]] = []
    if isinstance(metadata, dict):
        for key, field_name in _METADATA_FIELDS.items():
            text = claim_text(metadata.get(key))
            if text is not None:
                claims.append((field_name, Claim(text, f"safetensors __metadata__ {key}")))
    return FormatFacts(label="safetensors", claims=tuple(claims))
