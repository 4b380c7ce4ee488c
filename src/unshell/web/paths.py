"""Path confinement for the web application.

Every path a request names goes through `Roots.resolve` before anything else touches it: it is
checked as text (no NUL or control characters, no ``..`` component, an absolute path must name a
place under a root), then resolved strictly (every symlink followed), and the result must lie
under one of the served roots. Only that resolved path is handed to the library.

Checkpoints are directories: the files the library opens inside one (shards, sidecars, hub-cache
blobs) are not named by the request, and a symlink among them could lead anywhere. `confined`
closes that gap at run time: while a job runs, a process-wide audit hook refuses every ``open``,
directory listing and process start made from that thread outside the roots (and outside the
Python installation the library's own lazy imports read from).

Listing (`list_directory`, `find_checkpoints`) reads directory entries and file metadata only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import sysconfig
import threading
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import PathNotFoundError, UsageError

MAX_PATH_CHARS = 4096
MAX_LISTED = 2000  # entries shown for one directory
MAX_SCANNED_DIRS = 3000  # directories visited when looking for checkpoints under the roots
MAX_FOUND = 500
SCAN_DEPTH = 4  # root/org/models--x/snapshots/<rev> is depth 4

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".onnx")
TOKENIZER_NAMES = frozenset(
    {
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "spiece.model",
        "sentencepiece.bpe.model",
    }
)
MODEL_DIR_MARKERS = frozenset({"config.json", "params.json", "snapshots", "pytorch_model.bin"})


class PathRejected(Exception):
    """A path a request named is unusable or outside the roots. ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _shown(path: str, limit: int = 160) -> str:
    """A user-given path, cut short, for an error message (it is escaped where it is rendered)."""
    return path if len(path) <= limit else path[: limit - 3] + "..."


def _inside(path: Path, parents: Sequence[Path]) -> bool:
    return any(path == parent or path.is_relative_to(parent) for parent in parents)


@dataclass(frozen=True)
class Roots:
    """The directories a server exposes, resolved once at start (``given``: as the user wrote them)."""

    paths: tuple[Path, ...]
    given: tuple[Path, ...] = field(default=())

    @classmethod
    def from_paths(cls, roots: Sequence[str | os.PathLike[str]]) -> Roots:
        if not roots:
            raise UsageError("serve needs at least one root directory (--root)")
        resolved: list[Path] = []
        given: list[Path] = []
        for root in roots:
            text = os.fspath(root)
            if "\x00" in text:
                raise UsageError("a root directory name holds a NUL byte")
            try:
                path = Path(text).expanduser().resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                raise PathNotFoundError(f"{text}: root directory not found") from exc
            if not path.is_dir():
                raise UsageError(f"{text}: a root must be a directory")
            if path not in resolved:
                resolved.append(path)
                given.append(Path(os.path.abspath(Path(text).expanduser())))
        return cls(tuple(resolved), tuple(given))

    def contains(self, resolved: Path) -> bool:
        return _inside(resolved, self.paths)

    def locate(self, resolved: Path) -> tuple[int, str]:
        """(root index, POSIX path relative to it) of a resolved path; the innermost root wins."""
        best = max(
            (i for i, root in enumerate(self.paths) if _inside(resolved, (root,))),
            key=lambda i: len(self.paths[i].parts),
        )
        rel = resolved.relative_to(self.paths[best]).as_posix()
        return best, "" if rel == "." else rel

    def resolve(self, path: str, root: int | None = None) -> Path:
        """The resolved path a request means, or `PathRejected`. Reads nothing but metadata.

        ``path`` is relative to root ``root`` (default 0), or absolute and then under a root.
        """
        if not isinstance(path, str):
            raise PathRejected("a path must be a string")
        if "\x00" in path:
            raise PathRejected("a path must not hold a NUL byte")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
            raise PathRejected("a path must not hold control characters")
        if len(path) > MAX_PATH_CHARS:
            raise PathRejected(f"a path must be at most {MAX_PATH_CHARS} characters")
        pure = PurePosixPath(path)
        if ".." in pure.parts:
            raise PathRejected(f"{_shown(path)}: '..' is not allowed in a path")
        if pure.is_absolute():
            if root is not None:
                raise PathRejected("give either a root and a path relative to it, or an absolute path")
            candidate = Path(pure)
            # Lexically first, so that nothing outside the roots is even looked up.
            if not (_inside(candidate, self.given) or _inside(candidate, self.paths)):
                raise PathRejected(f"{_shown(path)}: outside the served roots", 403)
        else:
            index = 0 if root is None else root
            if not 0 <= index < len(self.paths):
                raise PathRejected(f"no root {index} (this server has {len(self.paths)})", 404)
            candidate = self.paths[index] / pure
        try:
            resolved = candidate.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            # A dangling symlink that points out reads as "outside", never as "not found": the
            # answer must not tell whether something exists outside the roots.
            try:
                loose = candidate.resolve(strict=False)
            except (OSError, RuntimeError):
                loose = None
            if loose is None or not self.contains(loose):
                raise PathRejected(f"{_shown(path)}: outside the served roots", 403) from None
            raise PathRejected(f"{_shown(path)}: no such file or directory", 404) from None
        except PermissionError:
            raise PathRejected(f"{_shown(path)}: permission denied", 403) from None
        except (OSError, RuntimeError) as exc:  # symlink loops, names too long
            reason = getattr(exc, "strerror", None) or "symlink loop"
            raise PathRejected(f"{_shown(path)}: cannot be resolved ({reason})") from None
        if not self.contains(resolved):
            raise PathRejected(f"{_shown(path)}: outside the served roots", 403)
        return resolved


# --- run-time confinement ----------------------------------------------------------------------


class OutsideRootsError(PathNotFoundError):
    """The library was about to read outside the roots (through a symlink inside a checkpoint).

    A `PathNotFoundError` (exit code 11: the path cannot be read), served as HTTP 403.
    """


@dataclass
class Confinement:
    """What one confined call may touch, and what it was refused (for the error message)."""

    roots: tuple[Path, ...]
    refused: list[str] = field(default_factory=list)

    def check(self, exc: BaseException) -> None:
        """Re-raise a failure that followed a refused read as what it was."""
        if self.refused:
            raise OutsideRootsError(
                f"{_shown(self.refused[0])}: outside the served roots (reached through a symlink inside "
                "the checkpoint); not read"
            ) from exc


_confined_to: ContextVar[Confinement | None] = ContextVar("unshell_web_confined_to", default=None)
_PATH_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})
_SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty"}
)
_hook_lock = threading.Lock()
_hook_installed = False
_runtime_dirs: tuple[Path, ...] = ()


def _python_dirs() -> tuple[Path, ...]:
    """Where the library's lazy imports and package data live: the only reads allowed outside roots."""
    dirs: set[Path] = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(KeyError, OSError):
            dirs.add(Path(sysconfig.get_paths()[key]).resolve())
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        dirs.add(Path(prefix).resolve() / "lib")
    dirs.add(Path(__file__).resolve().parent.parent)  # the unshell package (editable installs)
    return tuple(sorted(dirs))


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in _PATH_EVENTS and event not in _SPAWN_EVENTS:
        return
    confinement = _confined_to.get()
    if confinement is None:
        return
    if event in _SPAWN_EVENTS:
        raise PermissionError(errno.EPERM, f"unshell serve: a job may not start processes ({event})")
    target = args[0] if args else None
    if isinstance(target, int):  # an open descriptor: its path was checked when it was opened
        return
    if target is None:
        target = "."
    real = Path(os.path.realpath(os.fsdecode(target)))
    if _inside(real, confinement.roots) or _inside(real, _runtime_dirs):
        return
    confinement.refused.append(os.fsdecode(target))
    raise PermissionError(errno.EACCES, "outside the served roots", os.fsdecode(target))


def install_confinement() -> None:
    """Register the audit hook (once per process; hooks cannot be removed, it is idle outside jobs)."""
    global _hook_installed, _runtime_dirs
    with _hook_lock:
        if _hook_installed:
            return
        _runtime_dirs = _python_dirs()
        sys.addaudithook(_audit_hook)
        _hook_installed = True


@contextlib.contextmanager
def confined(roots: Roots) -> Iterator[Confinement]:
    """In this thread, until exit: opens and listings outside the roots fail, processes never start.

    An exception that escapes after a refused read becomes `OutsideRootsError`.
    """
    install_confinement()
    confinement = Confinement(roots.paths)
    token = _confined_to.set(confinement)
    try:
        yield confinement
    except Exception as exc:
        confinement.check(exc)
        raise
    finally:
        _confined_to.reset(token)


# --- listing -----------------------------------------------------------------------------------


def _is_weights(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(WEIGHT_SUFFIXES) or lower.endswith(".safetensors.index.json")


def _is_tokenizer(name: str) -> bool:
    lower = name.lower()
    return lower in TOKENIZER_NAMES or lower.endswith(".tiktoken")


def is_model_directory(path: Path) -> bool:
    """A model directory: a config, safetensors, or a hub-cache layout (judged from entry names only).

    A folder of loose ``*.bin``/``*.gguf`` files is not one: its files are listed one by one.
    """
    if path.name.startswith("models--"):
        return True
    try:
        with os.scandir(path) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_LISTED:
                    break
                lower = entry.name.lower()
                if entry.name in MODEL_DIR_MARKERS or lower.endswith(
                    (".safetensors", ".safetensors.index.json")
                ):
                    return True
    except OSError:
        return False
    return False


@dataclass(frozen=True)
class Entry:
    """One row of a listing: ``kind`` is directory, model, weights, tokenizer or outside."""

    name: str
    root: int
    path: str  # relative to the root, POSIX
    kind: str
    size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "root": self.root, "path": self.path, "kind": self.kind, "size": self.size}


def _classify(roots: Roots, full: Path) -> tuple[str, int | None] | None:
    try:
        target = full.resolve(strict=True)
    except (OSError, RuntimeError):
        return None  # dangling or looping symlink
    if not roots.contains(target):
        return "outside", None
    try:
        if target.is_dir():
            return ("model" if is_model_directory(target) else "directory"), None
        if not target.is_file():
            return None
        if _is_weights(full.name):
            return "weights", target.stat().st_size
        if _is_tokenizer(full.name):
            return "tokenizer", target.stat().st_size
    except OSError:
        return None
    return None


def list_directory(roots: Roots, root: int, path: str) -> tuple[Path, list[Entry], int]:
    """A directory under a root: (resolved directory, shown entries, number of other files)."""
    directory = roots.resolve(path, root=root)
    if not directory.is_dir():
        raise PathRejected(f"{_shown(path)}: not a directory")
    base = PurePosixPath(path) if path else PurePosixPath()
    entries: list[Entry] = []
    hidden = 0
    with os.scandir(directory) as scan:
        for count, item in enumerate(scan):
            if count >= MAX_LISTED:
                hidden += 1
                continue
            if item.name.startswith("."):
                continue
            kind = _classify(roots, Path(item.path))
            if kind is None:
                hidden += 1
                continue
            entries.append(Entry(item.name, root, (base / item.name).as_posix(), kind[0], kind[1]))
    entries.sort(key=lambda e: (e.kind not in ("directory", "model", "outside"), e.name.lower()))
    return directory, entries, hidden


def find_checkpoints(roots: Roots) -> list[Entry]:
    """Model directories, weight and tokenizer files under the roots (bounded walk, no symlinked dirs)."""
    found: list[Entry] = []
    visited = 0
    for index, root in enumerate(roots.paths):
        stack: list[tuple[Path, int]] = [(root, 0)]
        while stack and visited < MAX_SCANNED_DIRS and len(found) < MAX_FOUND:
            directory, depth = stack.pop()
            visited += 1
            try:
                with os.scandir(directory) as scan:
                    items = sorted(scan, key=lambda e: e.name)
            except OSError:
                continue
            subdirs: list[Path] = []
            for item in items:
                if item.name.startswith("."):
                    continue
                full = Path(item.path)
                rel = full.relative_to(root).as_posix()
                try:
                    is_dir = item.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    if is_model_directory(full):
                        found.append(Entry(item.name, index, rel, "model"))
                    elif depth + 1 < SCAN_DEPTH:
                        subdirs.append(full)
                    continue
                if _is_weights(item.name) or _is_tokenizer(item.name):
                    kind = _classify(roots, full)
                    if kind is not None and kind[0] in ("weights", "tokenizer"):
                        found.append(Entry(item.name, index, rel, kind[0], kind[1]))
            stack.extend((d, depth + 1) for d in reversed(subdirs))
    return found[:MAX_FOUND]
