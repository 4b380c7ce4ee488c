"""Stand-ins for `unshell.web.tasks` functions, for tests that need a job to hang or to report on
itself. Jobs run in child processes, so a test cannot patch the library in its own process: it
patches the task function the server picks instead, with one of these (module-level, so the call
pickles by name and the child imports this module).

They talk to the test through files in ``<first root>/../probe/``: ``started-<pid>`` when one
starts, and they wait for ``release`` before they finish.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from unshell.web.paths import Roots


def probe_dir(roots: Roots) -> Path:
    return roots.paths[0].parent / "probe"


class Finished:
    """What a stand-in returns: a result with ``to_dict()``, as the real ones."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def to_dict(self) -> dict[str, Any]:
        return self.document


def _started(roots: Roots) -> Path:
    folder = probe_dir(roots)
    (folder / f"started-{os.getpid()}").write_text(str(os.getpid()))
    return folder


def held_compare(roots: Roots, a: Path, b: Path, quick: bool) -> Finished:
    """A compare that runs until the test creates ``probe/release`` (at most a minute)."""
    folder = _started(roots)
    deadline = time.monotonic() + 60
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return Finished({"verdict": "independent", "reason": "stub", "p_value": 0.5})


def instant(roots: Roots, *args: Any) -> Finished:
    """Work that is done at once (what runs after a stopped job: its slot must be free)."""
    return Finished({"verdict": "independent", "reason": "stub", "p_value": 0.5, "format": "stub"})


def instant_inspection(roots: Roots, *args: Any) -> dict[str, Any]:
    return {"format": "stub"}


def endless(roots: Roots, *args: Any) -> Finished:
    """Work that never ends on its own (as a crafted input could make a parser run for hours)."""
    _started(roots)
    while True:
        time.sleep(0.05)


def recording_search(roots: Roots, path: Path, top: int, library: Path) -> Finished:
    """The real search task, recording on which threads candidates are tested and whether the
    confinement was in force there."""
    from unshell.lineage import fingerprint as fingerprint_module
    from unshell.web import paths, tasks

    seen: list[tuple[str, bool]] = []
    real = fingerprint_module.compare_with_fingerprint

    def recording(base: Any, suspect: Any, *, screen: bool = False) -> Any:
        seen.append((threading.current_thread().name, paths._confined_to.get() is not None))
        return real(base, suspect, screen=screen)

    fingerprint_module.compare_with_fingerprint = recording  # type: ignore[assignment]
    os.cpu_count = lambda: 2  # threads even on a one-core machine
    result = tasks.search_task(roots, path, top, library)
    return Finished({"search": result.to_dict(), "seen": seen})
