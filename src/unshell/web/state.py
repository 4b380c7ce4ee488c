"""What one served application holds: its roots, its job pool, its limits, its templates.

Routes receive it as a dependency (`StateDep`); it is built once by `app.create_app` and lives
on ``app.state.web``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
import jinja2
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from ..errors import UsageError
from .guard import allowed_host
from .inputs import PathRef
from .jobs import Job, JobManager
from .paths import Entry, PathRejected, Roots, find_checkpoints
from .problems import WebError
from .rendering import environment

CHECKPOINT_CACHE_S = 10.0


@dataclass
class WebState:
    roots: Roots
    jobs: JobManager
    allowed_hosts: frozenset[str] | None  # None: any Host (the operator bound to a wildcard address)
    inspect_limiter: anyio.CapacityLimiter
    templates: jinja2.Environment
    library_path: Path
    _checkpoints: tuple[float, list[Entry]] | None = field(default=None)

    def checkpoints(self) -> list[Entry]:
        """The checkpoints found under the roots (the suggestions), looked for at most every 10 s."""
        now = time.monotonic()
        if self._checkpoints is None or now - self._checkpoints[0] > CHECKPOINT_CACHE_S:
            self._checkpoints = (now, find_checkpoints(self.roots))
        return self._checkpoints[1]

    def absolute(self, entry: Entry) -> str:
        root = self.roots.paths[entry.root]
        return str(root / entry.path) if entry.path else str(root)

    def suggestions(self) -> list[tuple[Entry, str]]:
        return [(entry, self.absolute(entry)) for entry in self.checkpoints()]

    async def resolve(self, ref: PathRef | str) -> Path:
        """``ref`` confined to the roots (`paths.Roots.resolve`), off the event loop."""
        if isinstance(ref, PathRef):
            return await run_in_threadpool(self.roots.resolve, ref.path, ref.root)
        return await run_in_threadpool(self.roots.resolve, ref)

    async def resolve_text(self, text: str, what: str) -> Path:
        """A form field's path; ``what`` names the field when it is empty."""
        text = text.strip()
        if not text:
            raise PathRejected(f"{what}: give a path")
        return await self.resolve(text)

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise WebError("no such job (unknown id, or forgotten after a restart)", 404)
        return job

    def job_doc(self, job: Job, include_result: bool = True) -> dict[str, Any]:
        return job.to_dict(position=self.jobs.position(job), include_result=include_result)


def build_state(
    roots: Sequence[str | os.PathLike[str]],
    *,
    max_jobs: int,
    max_queued: int,
    allowed_hosts: Sequence[str] | None,
    library: str | os.PathLike[str] | None,
    job_timeout: float,
) -> WebState:
    """The state `app.create_app` serves; `UsageError` for limits that cannot work."""
    from ..library.store import default_library_path

    if max_jobs < 1:
        raise UsageError("max_jobs must be at least 1")
    if max_queued < 0:
        raise UsageError("max_queued must not be negative")
    if not 0 < job_timeout < float("inf"):
        raise UsageError("the job time limit must be a positive number of seconds")
    return WebState(
        roots=Roots.from_paths(roots),
        jobs=JobManager(max_jobs=max_jobs, max_queued=max_queued, timeout_s=job_timeout),
        allowed_hosts=None if allowed_hosts is None else frozenset(allowed_host(h) for h in allowed_hosts),
        inspect_limiter=anyio.CapacityLimiter(max(2, max_jobs)),
        templates=environment(),
        library_path=Path(library).expanduser() if library is not None else default_library_path(),
    )


async def served_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


StateDep = Annotated[WebState, Depends(served_state)]
