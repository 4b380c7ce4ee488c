"""Find the checkpoints under some folders, the way `unshell scan` sees a fleet.

What counts as one checkpoint:

- a **model directory**: ``config.json`` or ``params.json`` beside Hugging Face or Meta weights
  (``*.safetensors``, ``*.safetensors.index.json``, ``pytorch_model*.bin``, ``consolidated.*.pth``).
  It is one checkpoint however many shards it holds, and nothing below it is looked at again;
- a **hub-cache repository** ``models--org--name`` (with ``snapshots/``): one checkpoint, named
  ``org/name``, opened at the snapshot ``refs/main`` names (as `unshell.open_checkpoint` does);
- a **single file** elsewhere: ``*.safetensors`` (a ``*.safetensors.index.json`` stands for the
  shards it lists), ``*.gguf`` (a split GGUF once, by its first part), ``*.onnx``, and
  ``*.bin``/``*.pt``/``*.pth``/``*.ckpt`` whose first bytes are a PyTorch zip, a pickle or a
  llama2.c export (``.bin`` is too common a name to go by the extension alone).

Files are taken by name for the unambiguous extensions, so a corrupt ``.safetensors`` is found
and reported rather than silently passed over. Symbolic links are followed only when they stay
inside the root they were found under (a link out of the root is ignored); directories reached
through a link are never entered (no cycles, no escapes). Hidden entries (``.git``, ``.locks``)
are skipped, except ``.cache`` so that scanning a home folder finds ``~/.cache/huggingface/hub``.
The walk goes at most ``max_depth`` levels below each root, visits entries in sorted order, and
yields each real file or folder once, so two scans of one tree list the same paths in the same order.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import PathNotFoundError

__all__ = ["DEFAULT_MAX_DEPTH", "Found", "discover", "discover_found"]

DEFAULT_MAX_DEPTH = 12
CACHE_PREFIX = "models--"
MODEL_MARKERS = ("config.json", "params.json")
INDEX_SUFFIX = ".safetensors.index.json"
SNIFFED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
SPLIT_GGUF = re.compile(r"(.+)-(\d{5})-of-(\d{5})\.gguf")
INDEX_LIMIT = 64_000_000
SKIPPED_DIRECTORIES = frozenset({"__pycache__", "node_modules", "site-packages"})


@dataclass(frozen=True)
class Found:
    """One discovered checkpoint: its path, the name it is recorded under, and its root."""

    path: Path
    name: str
    root: Path


def discover(
    roots: Iterable[str | os.PathLike[str]], *, max_depth: int = DEFAULT_MAX_DEPTH
) -> Iterator[Path]:
    """The checkpoint paths under ``roots`` (files and folders), each once, in a stable order.

    Raises:
        PathNotFoundError: a root that does not exist.
    """
    for found in discover_found(roots, max_depth=max_depth):
        yield found.path


def discover_found(
    roots: Iterable[str | os.PathLike[str]], *, max_depth: int = DEFAULT_MAX_DEPTH
) -> Iterator[Found]:
    """Like `discover`, with each checkpoint's name: ``org/name`` for a hub-cache repository,
    else its path relative to its root (the root's own name when the root is the checkpoint).

    Raises:
        PathNotFoundError: a root that does not exist.
    """
    seen: set[str] = set()
    for raw in roots:
        root = Path(os.path.abspath(os.fspath(raw)))
        if not os.path.exists(root):
            raise PathNotFoundError(f"{root}: no such file or directory")
        real_root = os.path.realpath(_containment_root(root))
        walker = _Walker(root, real_root, max_depth, seen)
        yield from walker.run()


class _Walker:
    def __init__(self, root: Path, real_root: str, max_depth: int, seen: set[str]) -> None:
        self.root = root
        self.real_root = real_root
        self.max_depth = max_depth
        self.seen = seen

    def run(self) -> Iterator[Found]:
        if self.root.is_dir():
            yield from self._directory(self.root, 0)
        elif self.root.is_file():
            # A root named explicitly is taken whatever its extension: the user asked for it.
            yield from self._emit(self.root)

    # -- helpers ---------------------------------------------------------------------------------

    def _name(self, path: Path) -> str:
        if path.name.startswith(CACHE_PREFIX) and (path / "snapshots").is_dir():
            return "/".join(path.name.removeprefix(CACHE_PREFIX).split("--"))
        if path == self.root:
            return path.name
        return path.relative_to(self.root).as_posix()

    def _emit(self, path: Path) -> Iterator[Found]:
        real = os.path.realpath(path)
        if real in self.seen:
            return
        self.seen.add(real)
        yield Found(path=path, name=self._name(path), root=self.root)

    def _inside(self, path: Path) -> bool:
        real = os.path.realpath(path)
        return real == self.real_root or real.startswith(self.real_root.rstrip(os.sep) + os.sep)

    # -- the walk --------------------------------------------------------------------------------

    def _directory(self, directory: Path, depth: int) -> Iterator[Found]:
        if _is_cache_repo(directory):
            yield from self._emit(directory)
            return
        try:
            with os.scandir(directory) as iterator:
                entries = sorted(iterator, key=lambda entry: entry.name)
        except OSError:
            return  # unreadable folders are passed over, like `find` does
        files: list[Path] = []
        folders: list[Path] = []
        for entry in entries:
            if entry.name.startswith(".") and entry.name != ".cache":
                continue
            path = Path(entry.path)
            try:
                if entry.is_symlink():
                    if not self._inside(path):
                        continue  # never follow a link out of the root
                    mode = os.stat(path).st_mode
                    if stat.S_ISREG(mode):
                        files.append(path)
                    continue  # linked directories are never entered
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in SKIPPED_DIRECTORIES:
                        folders.append(path)
                elif entry.is_file(follow_symlinks=False):
                    files.append(path)
            except OSError:
                continue
        names = {path.name for path in files}
        if any(marker in names for marker in MODEL_MARKERS) and any(_hf_weight(path.name) for path in files):
            yield from self._emit(directory)
            return
        for path in _weight_files(files):
            yield from self._emit(path)
        if depth >= self.max_depth:
            return
        for folder in folders:
            yield from self._directory(folder, depth + 1)


def _containment_root(root: Path) -> Path:
    """Where links may point: the root, or the whole cache repository for a root that is one of
    its snapshots (whose files link into ``blobs/``)."""
    for ancestor in (root, *root.parents[:3]):
        if ancestor.parent.name == "snapshots" and ancestor.parent.parent.name.startswith(CACHE_PREFIX):
            return ancestor.parent.parent
    return root


def _is_cache_repo(directory: Path) -> bool:
    return directory.name.startswith(CACHE_PREFIX) and (directory / "snapshots").is_dir()


def _hf_weight(name: str) -> bool:
    return (
        name.endswith(".safetensors")
        or name.endswith(INDEX_SUFFIX)
        or (name.startswith("pytorch_model") and name.endswith(".bin"))
        or (name.startswith("consolidated.") and name.endswith(".pth"))
    )


def _weight_files(files: list[Path]) -> list[Path]:
    """The checkpoints among the loose files of one folder (not a model directory)."""
    chosen: list[Path] = []
    sharded: set[str] = set()
    for path in files:
        if path.name.endswith(INDEX_SUFFIX):
            chosen.append(path)
            sharded.update(_index_shards(path))
    gguf_groups: set[str] = set()
    for path in files:
        name = path.name
        lower = name.lower()
        if lower.endswith(".safetensors"):
            if name not in sharded:
                chosen.append(path)
        elif lower.endswith(".gguf"):
            split = SPLIT_GGUF.fullmatch(name)
            if split is None:
                chosen.append(path)
            elif split.group(1) not in gguf_groups:  # files are sorted: the first part comes first
                gguf_groups.add(split.group(1))
                chosen.append(path)
        elif lower.endswith(".onnx") or (lower.endswith(SNIFFED_SUFFIXES) and _looks_like_weights(path)):
            chosen.append(path)
    return sorted(chosen, key=lambda path: path.name)


def _index_shards(index: Path) -> set[str]:
    """The shard names an index lists (none when it cannot be read: the scan reports it later)."""
    try:
        if index.stat().st_size > INDEX_LIMIT:
            return set()
        document = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return set()
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict):
        return set()
    return {os.path.normpath(value) for value in weight_map.values() if isinstance(value, str)}


def _looks_like_weights(path: Path) -> bool:
    """A ``.bin``/``.pt``/``.pth``/``.ckpt`` that is a PyTorch zip, a pickle or a llama2.c export."""
    from ..formats import detect_format

    try:
        kind = detect_format(path)
    except Exception:  # an unreadable or special file is not a weight file
        return False
    return kind in ("zip", "pickle", "llama2c", "safetensors", "gguf")
