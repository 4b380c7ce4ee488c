"""Hugging Face model directories, hub-cache folders and sharded ``*.index.json`` checkpoints.

A directory is opened by finding its weights (safetensors first, then PyTorch ``.bin``, Meta's
``consolidated.*.pth``, GGUF, llama2.c, other PyTorch zips, ONNX) and the files beside them
(config, tokenizer, card...). A hub-cache folder ``models--org--name`` is resolved to the snapshot
that ``refs/main`` names. Snapshot files are symlinks into ``blobs/``; they are followed but must
stay inside the repository folder, so a planted cache cannot make unshell read arbitrary files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ..errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    NotACheckpointError,
    ResourceLimitError,
    UnsupportedFormatError,
    UsageError,
)
from ..numbers import MAX_WHOLE, Bound, check_numbers
from .base import MAX_TENSORS, Checkpoint, TensorInfo, sanitize
from .safetensors import open_regular_file, read_json_file, read_safetensors

__all__ = ["SIDECAR_FILES", "attach_sidecars", "open_directory", "read_sharded_index"]

INDEX_LIMIT = 64_000_000
CONFIG_LIMIT = 8_000_000
REF_LIMIT = 256
MAX_LISTED_NAMES = 5

_COUNT = Bound(whole=True, maximum=MAX_WHOLE)
_POSITIVE = Bound(whole=False, above=0.0)
_FRACTION = Bound(whole=False, above=0.0, maximum=1.0)
CONFIG_BOUNDS: dict[str, Bound] = {
    # Sizes and counts the architecture catalog and the converter read. ``model_max_length`` is
    # left out on purpose: Hugging Face writes 1e30 there to mean "no limit".
    **dict.fromkeys(
        (
            "hidden_size", "n_embd", "intermediate_size", "ffn_hidden_size", "n_inner",
            "num_hidden_layers", "n_layer", "num_layers", "num_attention_heads", "n_head",
            "num_key_value_heads", "num_kv_heads", "multi_query_group_num", "head_dim", "kv_channels",
            "vocab_size", "padded_vocab_size", "type_vocab_size", "num_local_experts",
            "max_position_embeddings", "n_positions", "seq_length",
        ),
        _COUNT,
    ),
    # Reals the converter writes into the output config or folds into weights.
    **dict.fromkeys(
        (
            "rope_theta", "rotary_emb_base", "rms_norm_eps", "layer_norm_epsilon", "layer_norm_eps",
            "scale_emb", "scale_depth", "dim_model_base",
        ),
        _POSITIVE,
    ),
    "partial_rotary_factor": _FRACTION,
    "rotary_pct": _FRACTION,
    "initializer_range": Bound(whole=False),
}  # fmt: skip
"""What each numeric config.json key unshell reads may hold (also inside ``text_config``); a
config outside these bounds is refused when read (InconsistentHeaderError)."""
ROPE_BOUNDS: dict[str, Bound] = {
    "rope_theta": _POSITIVE,
    "factor": _POSITIVE,
    "low_freq_factor": _POSITIVE,
    "high_freq_factor": _POSITIVE,
    "original_max_position_embeddings": _COUNT,
}

# File name -> sidecar role. The first existing file wins a role (LICENSE before LICENSE.txt).
SIDECAR_FILES: dict[str, str] = {
    "config.json": "config",
    "generation_config.json": "generation_config",
    "tokenizer.json": "tokenizer_json",
    "tokenizer_config.json": "tokenizer_config",
    "special_tokens_map.json": "special_tokens_map",
    "tokenizer.model": "tokenizer_model",
    "tokenizer.bin": "llama2c_tokenizer",
    "vocab.json": "vocab",
    "merges.txt": "merges",
    "vocab.txt": "vocab_txt",
    "added_tokens.json": "added_tokens",
    "chat_template.jinja": "chat_template",
    "README.md": "card",
    "LICENSE": "license",
    "LICENSE.txt": "license",
    "LICENSE.md": "license",
    "params.json": "params",
    "adapter_config.json": "adapter_config",
}

# Tokenizer sidecar roles, richest first: the file both tokenizer readers take (one table, so the
# description and the vocabulary always come from the same file).
TOKENIZER_ROLES = (
    "tokenizer_json",
    "tokenizer_model",
    "vocab",
    "tiktoken",
    "tokenizer_bin",
    "llama2c_tokenizer",
    "tokenizer",
    "vocab_txt",
)

SPLIT_GGUF = re.compile(r"(.+)-(\d{5})-of-(\d{5})\.gguf")
CACHE_PREFIX = "models--"
LOOKED_FOR = (
    "model.safetensors, *.safetensors(.index.json), pytorch_model.bin(.index.json), "
    "consolidated.NN.pth, *.gguf, a llama2.c *.bin, *.pt/*.pth/*.bin PyTorch zips, *.onnx"
)


# -- containment --------------------------------------------------------------------------------


def _cache_repo_root(directory: Path) -> Path | None:
    """The ``models--org--name`` folder when ``directory`` is one of its snapshots."""
    parent = directory.parent
    if parent.name == "snapshots" and parent.parent.name.startswith(CACHE_PREFIX):
        return parent.parent
    return None


def _require_inside(path: Path, root: Path) -> None:
    """Refuse a file (typically a symlink into blobs/) that resolves outside the cache repo."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise InconsistentHeaderError(
            f"{sanitize(path.name)} points outside the cache folder {sanitize(root.name)} "
            f"(to {sanitize(str(path.resolve()), 120)})"
        )


def _check_snapshot_links(snapshot: Path, root: Path) -> None:
    for entry in snapshot.iterdir():
        if entry.is_symlink():
            _require_inside(entry, root)


def _relative_file(directory: Path, name: str, where: str) -> Path:
    """``directory / name`` for a name read from a file, which must not leave the directory."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if (
        not name
        or "\x00" in name
        or "\\" in name
        or posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or ".." in posix.parts
    ):
        raise InconsistentHeaderError(f"{where}: shard name {sanitize(name)!r} points outside the directory")
    return directory / posix


def _is_file(path: Path) -> bool:
    """``path.is_file()``, also False for a name the system refuses (over 255 bytes: ENAMETOOLONG,
    which ``is_file`` raises instead of answering)."""
    try:
        return path.is_file()
    except OSError:
        return False


# -- sharded index ------------------------------------------------------------------------------


def read_sharded_index(path: Path) -> Checkpoint:
    """Open ``*.safetensors.index.json`` or ``pytorch_model.bin.index.json`` and merge its shards.

    Every shard is read (headers only). Tensors the index lists but no shard holds, tensors a
    shard holds but the index omits, and tensors found in another shard than listed become
    ``notes`` (a renamer that forgot to rewrite the index is itself a signal).

    Raises:
        InconsistentHeaderError: a shard name leaving the directory, one tensor in two shards.
        CorruptCheckpointError: bad JSON, or a listed shard file that does not exist.
    """
    return _read_index(path, _cache_repo_root(path.parent))


def _read_index(path: Path, repo_root: Path | None) -> Checkpoint:
    where = sanitize(path.name)
    index = read_json_file(path, limit=INDEX_LIMIT)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(value, str) for value in weight_map.values()):
        raise InconsistentHeaderError(f"{where}: weight_map must map tensor names to shard file names")
    if not weight_map:
        raise NotACheckpointError(f"{where}: the weight_map is empty")
    if len(weight_map) > MAX_TENSORS:
        raise ResourceLimitError(f"{where}: {len(weight_map)} tensors exceed the limit of {MAX_TENSORS}")
    index_metadata = index.get("metadata") or {}
    if not isinstance(index_metadata, dict):
        raise InconsistentHeaderError(f"{where}: metadata must be an object")
    # Compare shard names as paths, so that "./a.safetensors" and "a.safetensors" are one shard.
    spelled = {name: _relative_file(path.parent, name, where) for name in set(weight_map.values())}
    weight_map = {
        tensor: spelled[shard].relative_to(path.parent).as_posix() for tensor, shard in weight_map.items()
    }
    shard_names = sorted(set(weight_map.values()))
    shard_paths = [path.parent / name for name in shard_names]
    for name, shard_path in zip(shard_names, shard_paths, strict=True):
        if not _is_file(shard_path):
            raise CorruptCheckpointError(f"{where} lists shard {sanitize(name)!r}, which is missing")
        if repo_root is not None:
            _require_inside(shard_path, repo_root)
    shards = [_read_weight_file(shard_path) for shard_path in shard_paths]
    formats = {shard.format for shard in shards}
    if len(formats) != 1:
        raise UnsupportedFormatError(f"{where}: shards mix formats ({', '.join(sorted(formats))})")
    tensors, origin = _merge_shard_tables(shards, shard_names, where)
    notes = [note for shard in shards for note in shard.notes]
    notes.extend(_index_mismatch_notes(weight_map, origin, where))
    metadata: dict[str, Any] = {"index": index_metadata}
    for shard in shards:
        for key, value in shard.metadata.items():
            metadata.setdefault(key, value)
    total_size = index_metadata.get("total_size")
    stored = sum(info.nbytes for info in tensors.values())
    if "safetensors" in formats and isinstance(total_size, int) and total_size != stored:
        notes.append(
            f"{where}: metadata.total_size is {total_size} but the shards hold {stored} bytes of tensors"
        )
    return Checkpoint(
        format=shards[0].format,
        path=path,
        files=shard_paths,
        tensors=tensors,
        layout="sharded",
        metadata=metadata,
        notes=notes,
    )


def _read_weight_file(path: Path) -> Checkpoint:
    """A shard, by content: safetensors or a PyTorch zip."""
    handle, _ = open_regular_file(path)
    with handle:
        head = handle.read(9)
    # The safetensors test comes first: a header length can start with byte 0x80 like a pickle.
    if len(head) == 9 and head[8:9] == b"{":
        return read_safetensors(path)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        from .pytorch import read_pytorch

        return read_pytorch(path)
    raise UnsupportedFormatError(
        f"{sanitize(path.name)}: a shard that is neither safetensors nor a PyTorch zip"
    )


def _merge_shard_tables(
    shards: list[Checkpoint], shard_names: list[str], where: str
) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    tensors: dict[str, TensorInfo] = {}
    origin: dict[str, str] = {}
    for shard_name, shard in zip(shard_names, shards, strict=True):
        for name, info in shard.tensors.items():
            if name in tensors:
                raise InconsistentHeaderError(
                    f"{where}: tensor {sanitize(name)!r} is stored in both {sanitize(origin[name])} and {sanitize(shard_name)}"
                )
            tensors[name] = info
            origin[name] = shard_name
    return tensors, origin


def _listing(names: list[str]) -> str:
    shown = ", ".join(repr(sanitize(name, 100)) for name in names[:MAX_LISTED_NAMES])
    more = len(names) - MAX_LISTED_NAMES
    return shown + (f" and {more} more" if more > 0 else "")


def _index_mismatch_notes(weight_map: dict[str, str], origin: dict[str, str], where: str) -> list[str]:
    missing = [name for name in weight_map if name not in origin]
    misplaced = [name for name, shard in weight_map.items() if name in origin and origin[name] != shard]
    unlisted = [name for name in origin if name not in weight_map]
    notes = []
    if missing:
        notes.append(f"{where} lists {len(missing)} tensor(s) that no shard holds: {_listing(missing)}")
    if misplaced:
        notes.append(f"{where} puts {len(misplaced)} tensor(s) in the wrong shard: {_listing(misplaced)}")
    if unlisted:
        notes.append(f"{where} omits {len(unlisted)} tensor(s) that the shards hold: {_listing(unlisted)}")
    return notes


# -- directories --------------------------------------------------------------------------------


def open_directory(path: Path) -> Checkpoint:
    """Open a model directory or a hub-cache folder (``models--org--name`` or one of its snapshots).

    Weights are looked for in this order: ``model.safetensors.index.json``, ``model.safetensors``,
    another single ``*.safetensors.index.json`` or ``*.safetensors``, ``pytorch_model.bin.index.json``,
    ``pytorch_model.bin``, ``consolidated.NN.pth`` (+ ``params.json``), a ``*.gguf``, a llama2.c
    ``*.bin``, a PyTorch zip (``*.pt``, ``*.pth``, ``*.bin``, ``*.ckpt``), an ``*.onnx``.

    Raises:
        NotACheckpointError: nothing that looks like weights (the message lists what was looked for).
        UsageError: several candidates of the same kind and nothing says which one is the model.
        InconsistentHeaderError: a cache symlink pointing outside the cache folder.
    """
    snapshot, cache_info, repo_root = resolve_cache(path)
    if repo_root is not None:
        _check_snapshot_links(snapshot, repo_root)
    checkpoint = _open_weights(snapshot, repo_root)
    checkpoint.path = path
    if cache_info is not None:
        checkpoint.layout = "hf-cache"
        checkpoint.metadata["hf_cache"] = cache_info
    else:
        # A Hugging Face model folder has its config.json; a plain folder (a GGUF or a Meta
        # consolidated.*.pth beside other files) is just a folder.
        checkpoint.layout = "hf-directory" if (snapshot / "config.json").is_file() else "directory"
    attach_sidecars(checkpoint, snapshot)
    return checkpoint


def _repo_id(folder_name: str) -> str:
    return "/".join(folder_name.removeprefix(CACHE_PREFIX).split("--"))


def resolve_cache(path: Path) -> tuple[Path, dict[str, str] | None, Path | None]:
    """(directory holding the files, hf_cache metadata, cache repo root) for any directory."""
    root = _cache_repo_root(path)
    if root is not None:
        return path, {"repo_id": _repo_id(root.name), "revision": path.name}, root
    is_cache_repo = (path / "snapshots").is_dir() and (
        path.name.startswith(CACHE_PREFIX) or (path / "refs").is_dir() or (path / "blobs").is_dir()
    )
    if not is_cache_repo:
        return path, None, None
    snapshot = _pick_snapshot(path)
    _require_inside(snapshot, path)
    return snapshot, {"repo_id": _repo_id(path.name), "revision": snapshot.name}, path


def _pick_snapshot(repo: Path) -> Path:
    """The snapshot ``refs/main`` names, else the only or most recently modified one."""
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        handle, _ = open_regular_file(ref)
        with handle:
            revision = handle.read(REF_LIMIT).decode("ascii", "replace").strip()
        if re.fullmatch(r"[A-Za-z0-9._-]{1,128}", revision) and revision not in (".", ".."):
            candidate = snapshots / revision
            if candidate.is_dir():
                return candidate
    candidates = [entry for entry in snapshots.iterdir() if entry.is_dir()]
    if not candidates:
        raise NotACheckpointError(f"{sanitize(repo.name)}: a hub-cache folder with no snapshots")
    return max(candidates, key=lambda entry: (entry.stat().st_mtime, entry.name))


def _files(directory: Path) -> list[Path]:
    try:
        entries = sorted(directory.iterdir())
    except OSError as error:
        raise NotACheckpointError(f"{sanitize(str(directory))}: cannot list ({error.strerror})") from None
    return [entry for entry in entries if not entry.name.startswith(".") and entry.is_file()]


def _single(candidates: list[Path], kind: str, directory: Path) -> Path | None:
    if len(candidates) > 1:
        raise UsageError(
            f"{sanitize(directory.name)} holds {len(candidates)} {kind} files "
            f"({_listing([c.name for c in candidates])}); open one of them directly"
        )
    return candidates[0] if candidates else None


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        handle, _ = open_regular_file(path)
    except (NotACheckpointError, OSError):
        return False
    with handle:
        return handle.read(len(magic)) == magic


def _open_weights(directory: Path, repo_root: Path | None) -> Checkpoint:
    files = _files(directory)
    names = {entry.name: entry for entry in files}

    def ending(suffix: str, exclude: Iterable[str] = ()) -> list[Path]:
        return [entry for entry in files if entry.name.endswith(suffix) and entry.name not in exclude]

    if "model.safetensors.index.json" in names:
        return _read_index(names["model.safetensors.index.json"], repo_root)
    if "model.safetensors" in names:
        return read_safetensors(names["model.safetensors"])
    index = _single(ending(".safetensors.index.json"), "safetensors index", directory)
    if index is not None:
        return _read_index(index, repo_root)
    single = _single(ending(".safetensors"), "safetensors", directory)
    if single is not None:
        return read_safetensors(single)
    if "pytorch_model.bin.index.json" in names:
        return _read_index(names["pytorch_model.bin.index.json"], repo_root)
    if "pytorch_model.bin" in names:
        from .pytorch import read_pytorch

        return read_pytorch(names["pytorch_model.bin"])
    return _open_other_weights(directory, files)


def _open_other_weights(directory: Path, files: list[Path]) -> Checkpoint:
    from .meta import find_consolidated_shards

    if find_consolidated_shards(directory):
        from .meta import open_meta_directory

        return open_meta_directory(directory)
    gguf = _gguf_entry(directory, [entry for entry in files if entry.name.endswith(".gguf")])
    if gguf is not None:
        from .gguf import read_gguf  # type: ignore[import-not-found,unused-ignore]

        checkpoint: Checkpoint = read_gguf(gguf)
        return checkpoint
    from .llama2c import MAGIC, looks_like_llama2c_v0, read_llama2c

    bins = [entry for entry in files if entry.name.endswith(".bin")]
    llama2c = [
        entry
        for entry in bins
        if _starts_with(entry, MAGIC.to_bytes(4, "little")) or looks_like_llama2c_v0(entry)
    ]
    single = _single(llama2c, "llama2.c", directory)
    if single is not None:
        return read_llama2c(single)
    zips = [
        entry
        for entry in files
        if entry.suffix in (".pt", ".pth", ".bin", ".ckpt") and _starts_with(entry, b"PK\x03\x04")
    ]
    single = _single(zips, "PyTorch", directory)
    if single is not None:
        from .pytorch import read_pytorch

        return read_pytorch(single)
    onnx = _single([entry for entry in files if entry.name.endswith(".onnx")], "ONNX", directory)
    if onnx is not None:
        from .onnx import read_onnx  # type: ignore[import-not-found,unused-ignore]

        onnx_checkpoint: Checkpoint = read_onnx(onnx)
        return onnx_checkpoint
    raise NotACheckpointError(f"{sanitize(str(directory))}: no model weights found (looked for {LOOKED_FOR})")


def _gguf_entry(directory: Path, ggufs: list[Path]) -> Path | None:
    """The one GGUF to open; for a split model (``-00001-of-0000N.gguf``), its first part."""
    if len(ggufs) <= 1:
        return ggufs[0] if ggufs else None
    splits = [SPLIT_GGUF.fullmatch(entry.name) for entry in ggufs]
    prefixes = {match.group(1) for match in splits if match}
    if all(splits) and len(prefixes) == 1:
        return min(ggufs, key=lambda entry: entry.name)
    return _single(ggufs, "GGUF", directory)


# -- sidecars -----------------------------------------------------------------------------------


def attach_sidecars(checkpoint: Checkpoint, directory: Path) -> None:
    """Record the config, tokenizer, card, licence... files beside the weights; parse config.json.

    Inside a hub cache, every sidecar must resolve inside the cache repository folder.

    Raises:
        CorruptCheckpointError: config.json is not a JSON object.
        ResourceLimitError: config.json larger than a few megabytes.
        InconsistentHeaderError: a cache sidecar pointing outside the cache folder.
    """
    repo_root = _cache_repo_root(directory)
    found: dict[str, Path] = {}
    for file_name, role in SIDECAR_FILES.items():
        candidate = directory / file_name
        if role not in found and candidate.is_file():
            found[role] = candidate
    tiktoken = sorted(entry for entry in directory.glob("*.tiktoken") if entry.is_file())
    if tiktoken:
        found["tiktoken"] = tiktoken[0]
    if repo_root is not None:
        for sidecar in found.values():
            _require_inside(sidecar, repo_root)
    checkpoint.sidecars.update(found)
    if "config" in found:
        checkpoint.config = read_json_file(found["config"], limit=CONFIG_LIMIT)
        check_config_numbers(checkpoint.config, where=sanitize(found["config"].name))


def check_config_numbers(config: dict[str, Any], *, where: str) -> None:
    """Refuse a config.json whose numeric keys (`CONFIG_BOUNDS`, `ROPE_BOUNDS`) hold a value of the
    wrong type, a non-finite one or one out of range (InconsistentHeaderError)."""
    text = config.get("text_config")
    for level, label in ((config, where), (text, f"{where} text_config")):
        if not isinstance(level, dict):
            continue
        check_numbers(level, CONFIG_BOUNDS, where=label)
        for key in ("rope_scaling", "rope_parameters"):
            rope = level.get(key)
            if isinstance(rope, dict):
                check_numbers(rope, ROPE_BOUNDS, where=f"{label} {key}")
