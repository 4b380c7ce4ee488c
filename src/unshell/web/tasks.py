"""What the server's work runs: one module-level function per kind, called in a child process.

`jobs.run_isolated` pickles a call to one of these (``functools.partial``) into a fresh process,
so each must be importable by name and take only picklable arguments. Each enters the run-time
confinement (`paths.confined`) around the library call, in the child: the confinement is a
per-process audit hook, and the child is where the files are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .paths import Roots, confined

# Imported once by the process that forks the children, so that a job starts in milliseconds.
PRELOAD = (
    "unshell.web.tasks",
    "unshell.inspection",
    "unshell.lineage.compare",
    "unshell.auditing.report",
    "unshell.library",
    "unshell.report.html",
)


def inspect_task(roots: Roots, path: Path, tensors: bool) -> dict[str, Any]:
    from ..inspection import inspect

    with confined(roots):
        document: dict[str, Any] = inspect(path).to_dict(tensor_map=tensors)
        return document


def compare_task(roots: Roots, a: Path, b: Path, quick: bool) -> Any:
    from ..lineage.compare import compare

    with confined(roots):
        return compare(a, b, quick=quick)


def audit_task(roots: Roots, path: Path, against: Path | None, quick: bool, library: Path | None) -> Any:
    """``library``: search the operator's library for the weights' source (``against`` is None)."""
    from ..auditing.report import audit

    if library is None:
        with confined(roots):
            return audit(path, against=against, quick=quick)
    with served_library(library) as opened, confined(roots):
        return audit(path, quick=quick, library=opened)


def search_task(roots: Roots, path: Path, top: int, library: Path) -> Any:
    from ..library import search

    with served_library(library) as opened, confined(roots):
        return search(path, opened, top=top)


@contextmanager
def served_library(path: Path) -> Iterator[Any]:
    """The operator's library, which must exist (the UI never creates or writes it). It lives
    outside the roots, so it is connected here, before the job enters its confinement."""
    from ..library import existing_library

    with existing_library(path) as library:
        _ = library.db
        yield library
