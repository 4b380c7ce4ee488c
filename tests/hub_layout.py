"""Lay a model folder out as a Hugging Face Hub cache repo, as `huggingface_hub` does on download."""

from __future__ import annotations

import hashlib
from pathlib import Path


def hub_cache(
    model: Path, root: Path, repo_id: str, *, commit: str = "0" * 40, ref: str | None = "main"
) -> Path:
    """``root/models--org--name``: blobs named by their sha256, ``snapshots/<commit>/`` of relative
    symlinks into them, ``refs/<ref>`` naming the commit. Returns the repo folder."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    if ref is not None:
        (repo / "refs" / ref).write_text(commit)
    for file in sorted(p for p in model.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / file.relative_to(model)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(link.relative_to(repo).parts) - 1)) / "blobs" / blob.name)
    return repo
