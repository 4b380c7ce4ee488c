"""Readers: any supported path -> one `Checkpoint`. Content decides the format, not the extension."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..errors import NotACheckpointError, PathNotFoundError
from .base import Checkpoint, TensorInfo, sanitize

__all__ = ["Checkpoint", "TensorInfo", "detect_format", "open_checkpoint", "sanitize"]

LLAMA2C_MAGIC = 0x616B3432  # "ak42"


def detect_format(path: Path) -> str:
    """Name the weight format of one file from its first bytes (and, for ONNX, its name)."""
    name = path.name.lower()
    if name.endswith(".index.json"):
        return "sharded-index"
    from .safetensors import open_regular_file

    handle, size = open_regular_file(path)  # a FIFO or device under a weight file's name must not block us
    with handle:
        head = handle.read(16)
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:4] == b"FUGG":
        return "gguf-big-endian"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= size - 8:
            return "safetensors"
    if len(head) >= 8 and struct.unpack("<I", head[:4])[0] == LLAMA2C_MAGIC:
        return "llama2c"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in (2, 3, 4, 5):
        return "pickle"
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(".bin") or name.endswith(".model") or len(head) >= 28:
        from .llama2c import looks_like_llama2c_v0

        if looks_like_llama2c_v0(path):
            return "llama2c"
    return "unknown"


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open a checkpoint file or directory for reading. Reads headers only.

    Accepts a Hub repo id held in the local Hub cache (``org/name``, ``org/name@revision``;
    `unshell.formats.hub`), a safetensors file, a sharded ``*.index.json``, a Hugging Face model directory or
    hub-cache folder, a PyTorch ``.bin``/``.pt``/``.pth`` zip checkpoint, Meta's
    ``consolidated.*.pth`` directory, a GGUF file, a llama2.c export, or an ONNX model.

    Raises:
        PathNotFoundError, NotACheckpointError, UnsupportedFormatError, CorruptCheckpointError,
        InconsistentHeaderError, UnsafePickleError (all `unshell.errors.InputError`).
    """
    target = Path(path)
    if not target.exists():
        from .hub import resolve_repo_id

        snapshot = resolve_repo_id(str(path))
        if snapshot is None:
            raise PathNotFoundError(f"{sanitize(str(target))}: no such file or directory")
        target = snapshot
    if target.is_dir():
        from .hf import open_directory

        return open_directory(target)
    if not os.access(target, os.R_OK):
        raise PathNotFoundError(f"{sanitize(str(target))}: permission denied")
    kind = detect_format(target)
    checkpoint = _open_file(target, kind)
    # A lone file's neighbours describe it only in a model directory; a folder of unrelated
    # checkpoints (a downloads folder, a fixtures folder) has a README that is no model card.
    if any((target.parent / marker).is_file() for marker in ("config.json", "params.json")):
        from .hf import attach_sidecars

        attach_sidecars(checkpoint, target.parent)
    return checkpoint


def _open_file(path: Path, kind: str) -> Checkpoint:
    if kind == "safetensors":
        from .safetensors import read_safetensors

        return read_safetensors(path)
    if kind == "sharded-index":
        from .hf import read_sharded_index

        return read_sharded_index(path)
    if kind == "gguf":
        from .gguf import read_gguf

        return read_gguf(path)
    if kind == "gguf-big-endian":
        from ..errors import UnsupportedFormatError

        raise UnsupportedFormatError(f"{sanitize(path.name)}: big-endian GGUF is not supported")
    if kind in ("zip", "pickle"):
        from .pytorch import read_pytorch

        return read_pytorch(path)
    if kind == "llama2c":
        from .llama2c import read_llama2c

        return read_llama2c(path)
    if kind == "onnx":
        from .onnx import read_onnx

        return read_onnx(path)
    raise NotACheckpointError(f"{sanitize(path.name)}: not a checkpoint in any format unshell reads")
