"""Hub repo ids as paths: ``org/name`` (or ``org/name@revision``) found in the local Hub cache.

unshell never downloads. A path that does not exist and reads as a repo id is looked up in the
Hugging Face cache folder (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``) as ``models--org--name``: the revision is a branch or tag under
``refs/`` or a commit hash (or its prefix) under ``snapshots/``; without one, ``refs/main``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..constants import HF_HOME_ENV, HF_HUB_CACHE_ENV
from ..errors import PathNotFoundError, UsageError
from .base import sanitize

__all__ = ["hub_cache_dir", "looks_like_repo_id", "resolve_repo_id"]

_REPO = re.compile(
    r"^(?P<repo>[A-Za-z0-9][\w.-]{0,95}(?:/[A-Za-z0-9][\w.-]{0,95})?)(?:@(?P<rev>[\w./-]{1,128}))?$"
)
_REF_BYTES = 256


def hub_cache_dir() -> Path:
    if cache := os.environ.get(HF_HUB_CACHE_ENV):
        return Path(cache).expanduser()
    if home := os.environ.get(HF_HOME_ENV):
        return Path(home).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def looks_like_repo_id(text: str) -> bool:
    """``org/name`` or ``org/name@rev``: one slash at most, no path syntax (``./``, ``..``, ``~``)."""
    match = _REPO.match(text)
    return match is not None and ".." not in text and not text.startswith((".", "~"))


def resolve_repo_id(text: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of repo id ``text`` in the local Hub cache; None when ``text`` is no
    repo id. Raises `PathNotFoundError` when it is one but the cache does not hold it."""
    match = _REPO.match(text)
    if match is None or not looks_like_repo_id(text):
        return None
    repo_id, revision = match.group("repo"), revision or match.group("rev")
    cache = hub_cache_dir()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    if not (repo / "snapshots").is_dir():
        raise PathNotFoundError(
            f"{sanitize(text)}: no such file or directory, and the Hub cache ({sanitize(str(cache))}) "
            "does not hold it (unshell never downloads: fetch it with `hf download` first)"
        )
    return _snapshot(repo, revision or "main", explicit=revision is not None)


def _snapshot(repo: Path, revision: str, *, explicit: bool) -> Path:
    snapshots = repo / "snapshots"
    ref = repo / "refs" / revision
    commit = revision
    if ref.is_file() and ref.resolve().is_relative_to(repo.resolve()):
        with ref.open("rb") as handle:
            commit = handle.read(_REF_BYTES).decode("ascii", "replace").strip()
    if re.fullmatch(r"[0-9a-zA-Z._-]{1,128}", commit):
        exact = snapshots / commit
        if exact.is_dir():
            return exact
        prefixed = [p for p in snapshots.iterdir() if p.is_dir() and p.name.startswith(commit)]
        if len(prefixed) == 1 and len(commit) >= 7:
            return prefixed[0]
    available = sorted(p.name for p in snapshots.iterdir() if p.is_dir())
    if not explicit and len(available) == 1:
        return snapshots / available[0]
    listed = ", ".join(name[:12] for name in available[:8]) or "none"
    raise UsageError(
        f"{sanitize(repo.name)}: no snapshot for revision {sanitize(revision)!r} in the Hub cache "
        f"(snapshots: {listed}); pass --revision or repo@revision"
    )
