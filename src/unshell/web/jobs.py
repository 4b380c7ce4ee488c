"""A bounded pool of worker threads for long work (compare, audit).

At most ``max_jobs`` run at once, at most ``max_queued`` more wait; beyond that `submit` raises
`QueueFull` (HTTP 429) instead of growing without bound. Submitting never waits for the work, so
request handlers stay free. Finished jobs are kept (newest ``keep``) for their results and reports.

Threads, not processes: the library's heavy work is numpy (which releases the GIL), results stay
in memory for the report, and the run-time confinement of `paths.confined` is per thread.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import failure

log = logging.getLogger("unshell.web")

STATES = ("queued", "running", "done", "failed")


class QueueFull(Exception):
    """Every worker is busy and the queue is full."""


@dataclass
class Job:
    id: str
    kind: str
    params: dict[str, Any]
    state: str = "queued"
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    document: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    exit_code: int | None = None
    report_html: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def timings(self, now: float | None = None) -> dict[str, float]:
        """Seconds spent waiting in the queue and running (so far, while it still is)."""
        now = time.time() if now is None else now
        start = self.started if self.started is not None else (self.finished or now)
        out = {"queued_s": round(max(0.0, start - self.submitted), 3)}
        if self.started is not None:
            out["running_s"] = round(max(0.0, (self.finished or now) - self.started), 3)
        out["elapsed_s"] = round(max(0.0, (self.finished or now) - self.submitted), 3)
        return out

    def to_dict(self, *, position: int | None = None, include_result: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "params": self.params,
            "submitted": self.submitted,
            "started": self.started,
            "finished": self.finished,
            **self.timings(),
        }
        if position is not None:
            doc["queue_position"] = position
        if self.state == "failed":
            doc["error"] = self.error
            doc["error_type"] = self.error_type
            doc["exit_code"] = self.exit_code
        if self.state == "done":
            doc["report"] = f"/api/jobs/{self.id}/report.html"
            if include_result:
                doc["result"] = self.document
        return doc


class JobManager:
    """Runs callables in ``max_jobs`` threads with a bounded queue, and remembers the outcome."""

    def __init__(self, max_jobs: int = 2, max_queued: int = 8, keep: int = 200) -> None:
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        if max_queued < 0:
            raise ValueError("max_queued must not be negative")
        self.max_jobs = max_jobs
        self.max_queued = max_queued
        self.keep = max(keep, max_jobs + max_queued)
        self._executor = ThreadPoolExecutor(max_workers=max_jobs, thread_name_prefix="unshell-job")
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def submit(self, kind: str, params: dict[str, Any], work: Callable[[], Any]) -> Job:
        """Queue ``work`` (returning an object with ``to_dict()``); `QueueFull` when there is no room."""
        with self._lock:
            active = sum(1 for job in self._jobs.values() if job.active)
            if active >= self.max_jobs + self.max_queued:
                raise QueueFull(
                    f"{active} jobs are queued or running (limit {self.max_jobs} running + "
                    f"{self.max_queued} queued); try again when one finishes"
                )
            job = Job(id=secrets.token_hex(8), kind=kind, params=params)
            self._jobs[job.id] = job
            self._evict()
        try:
            self._executor.submit(self._run, job, work)
        except RuntimeError as exc:  # the pool is shutting down with the server
            self._fail(job, "the server is shutting down", exc, exit_code=70)
        return job

    def _evict(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if not job.active]
        for job_id in finished[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[job_id]

    def _run(self, job: Job, work: Callable[[], Any]) -> None:
        with self._lock:
            job.state = "running"
            job.started = time.time()
        try:
            result = work()
            document = result.to_dict()
        except Exception as exc:  # `errors.failure` maps it, as the CLI does
            shown = failure(exc)
            if shown.internal:  # a bug in unshell, not bad input: keep the server up, log it
                log.exception("job %s (%s) failed", job.id, job.kind)
            self._fail(job, shown.message, exc, exit_code=shown.exit_code)
        else:
            with self._lock:
                job.result = result
                job.document = document
                job.finished = time.time()
                job.state = "done"

    def _fail(self, job: Job, message: str, exc: BaseException, exit_code: int | None = None) -> None:
        with self._lock:
            job.error = message
            job.error_type = type(exc).__name__
            job.exit_code = exit_code if exit_code is not None else getattr(exc, "exit_code", 1)
            job.finished = time.time()
            job.state = "failed"

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """1 for the next queued job to start; None once it runs."""
        if job.state != "queued":
            return None
        with self._lock:
            queued = [j for j in self._jobs.values() if j.state == "queued"]
        return next((i + 1 for i, j in enumerate(queued) if j.id == job.id), None)

    def recent(self, limit: int = 20) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs.values()))[:limit]

    def counts(self) -> dict[str, int]:
        with self._lock:
            jobs = list(self._jobs.values())
        return {state: sum(1 for j in jobs if j.state == state) for state in STATES}

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
