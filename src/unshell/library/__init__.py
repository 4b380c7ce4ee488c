"""The fingerprint library (SQLite) and `search` over it."""

from __future__ import annotations

from .search import Candidate, SearchResult, holm, search
from .store import (
    Library,
    LibraryEntry,
    add_checkpoint,
    add_checkpoints,
    default_library_path,
    existing_library,
)

__all__ = [
    "Candidate",
    "Library",
    "LibraryEntry",
    "SearchResult",
    "add_checkpoint",
    "add_checkpoints",
    "default_library_path",
    "existing_library",
    "holm",
    "search",
]
