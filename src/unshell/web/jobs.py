"""A bounded pool of jobs (compare, audit, search), each run in a child process with a time limit.

At most ``max_jobs`` run at once, at most ``max_queued`` more wait; beyond that `submit` raises
`QueueFull` (HTTP 429) instead of growing without bound. Submitting never waits for the work, so
request handlers stay free. Finished jobs are kept (newest ``keep``) for their results and reports.

Each job runs in its own process (`run_isolated`), watched by one of ``max_jobs`` threads: a thread
cannot be stopped, a process can. A job that runs past ``timeout_s`` is killed and ends
``timed-out``; `JobManager.cancel` ends a queued or running one as ``cancelled``. Either way its
slot is free at once. The child enters the run-time confinement of `paths.confined` itself (the
audit hook is per process), and a crash or a runaway allocation in it takes only the job down.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from ..errors import ResourceLimitError, UnshellError, failure, one_line
from ..threads import blas_ceiling, budget

log = logging.getLogger("unshell.web")

STATES = ("queued", "running", "done", "failed", "timed-out", "cancelled")
ENDED_WITHOUT_RESULT = ("failed", "timed-out", "cancelled")
DEFAULT_TIMEOUT_S = 600.0
_POLL_S = 0.1  # how soon a cancel request reaches a running job
_EXIT_GRACE_S = 5.0  # for a child that has sent its result to exit on its own


class TimeLimitExceeded(ResourceLimitError):
    """The work ran longer than the server's time limit (``unshell serve --job-timeout``)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s (the server's time limit per job, --job-timeout)")


class Cancelled(Exception):
    """The work was cancelled on request."""


class ChildFailed(Exception):
    """The child process failed in a way that does not travel as the original exception: a bug
    (``args``: the exception's type name and first line), or it died without an answer."""


# --- running one call in a child process -----------------------------------------------------------

_context_lock = threading.Lock()
_context: ForkServerContext | SpawnContext | None = None


def _mp_context() -> ForkServerContext | SpawnContext:
    """forkserver where there is one (a clean process, not a copy of this threaded server,
    preloaded with the library so a child starts in milliseconds), else spawn."""
    global _context
    with _context_lock:
        if _context is None:
            from .tasks import PRELOAD

            if "forkserver" in multiprocessing.get_all_start_methods():
                forkserver = multiprocessing.get_context("forkserver")
                forkserver.set_forkserver_preload(list(PRELOAD))
                _context = forkserver
            else:
                _context = multiprocessing.get_context("spawn")
        return _context


def _portable(exc: BaseException) -> BaseException:
    """The exception to send to the parent: unshell errors, MemoryError and OSError as they are
    (the parent maps them as before); anything else is a bug, logged here and sent as its name."""
    if isinstance(exc, UnshellError | MemoryError | OSError):
        with contextlib.suppress(Exception):
            pickle.loads(pickle.dumps(exc))
            return exc
    traceback.print_exception(exc)
    return ChildFailed(type(exc).__name__, str(exc))


def _child_main(
    sender: Connection, work: Callable[[], Any], threads: int | None = None, blas: int | None = None
) -> None:
    try:
        if threads is None:
            outcome: tuple[str, Any] = ("ok", work())
        else:
            from ..threads import limited

            with limited(threads, blas=blas):
                outcome = ("ok", work())
    except BaseException as exc:  # every failure goes back to the parent, which decides
        outcome = ("error", _portable(exc))
    try:
        sender.send(outcome)
    except Exception as exc:  # the result does not pickle: a bug
        sender.send(("error", ChildFailed(type(exc).__name__, f"the result could not be sent back: {exc}")))
    finally:
        sender.close()


def _stop(process: BaseProcess, *, finished: bool) -> None:
    """Reap the child; one still running (timed out, cancelled, or slow to exit) is killed."""
    if finished:
        process.join(_EXIT_GRACE_S)
    if process.is_alive():
        process.terminate()
        process.join(1.0)
    if process.is_alive():
        process.kill()
        process.join()
    process.close()


def _died(process: BaseProcess) -> ChildFailed:
    process.join(1.0)
    code = process.exitcode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
    return ChildFailed("ProcessDied", f"the worker process ended without a result ({how})", code)


def run_isolated(
    work: Callable[[], Any],
    *,
    timeout_s: float,
    cancel: threading.Event | None = None,
    threads: int | None = None,
    blas: int | None = None,
) -> Any:
    """``work()`` in a child process: its result, or its exception raised here. ``threads`` and
    ``blas``: the child's thread budget and BLAS threads (`unshell.threads.limited`; None: the
    child's own default).

    ``work`` must pickle (a module-level function, or a ``functools.partial`` of one); so must
    what it returns. The result comes back with pickle: the child is this program, running this
    library's code, with the same rights as this process.

    Raises:
        TimeLimitExceeded: still running after ``timeout_s`` seconds (the child was killed).
        Cancelled: ``cancel`` was set (the child was killed).
        ChildFailed: a bug in the child, or it died (out of memory, a signal).
        UnshellError, MemoryError, OSError: as the work raised them.
    """
    context = _mp_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child_main, args=(sender, work, threads, blas), name="unshell-job", daemon=True
    )
    process.start()
    sender.close()
    deadline = time.monotonic() + timeout_s
    finished = False
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeLimitExceeded(timeout_s)
            ready = wait([receiver, process.sentinel], timeout=min(remaining, _POLL_S))
            if receiver in ready:
                try:
                    kind, value = receiver.recv()
                except EOFError:
                    raise _died(process) from None
                finished = True
                break
            if process.sentinel in ready and not receiver.poll():
                raise _died(process)
    finally:
        receiver.close()
        _stop(process, finished=finished)
    if kind == "error":
        raise value
    return value


# --- the pool -----------------------------------------------------------------------------------------


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
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    ended: threading.Event = field(default_factory=threading.Event, repr=False)

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
        if self.active:
            doc["cancel"] = f"/api/jobs/{self.id}/cancel"
        if self.state in ENDED_WITHOUT_RESULT:
            doc["error"] = self.error
            doc["error_type"] = self.error_type
            doc["exit_code"] = self.exit_code
        if self.state == "done":
            doc["report"] = f"/api/jobs/{self.id}/report.html"
            if include_result:
                doc["result"] = self.document
        return doc


class JobManager:
    """Runs callables in child processes, ``max_jobs`` at a time, with a bounded queue and a time
    limit per job, and remembers the outcome."""

    def __init__(
        self, max_jobs: int = 2, max_queued: int = 8, keep: int = 200, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        if max_queued < 0:
            raise ValueError("max_queued must not be negative")
        if not 0 < timeout_s < float("inf"):
            raise ValueError("timeout_s must be a positive number of seconds")
        self.max_jobs = max_jobs
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self.keep = max(keep, max_jobs + max_queued)
        # The thread budget (`unshell serve --threads`, else the cores) shared by the jobs that
        # run at once: each gets its share, so max_jobs x threads stays within it, and BLAS
        # within the environment's cap where no --threads overrides it.
        self.threads_per_job = max(1, budget() // max_jobs)
        self.blas_per_job = min(self.threads_per_job, blas_ceiling())
        self._executor = ThreadPoolExecutor(max_workers=max_jobs, thread_name_prefix="unshell-job")
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def submit(self, kind: str, params: dict[str, Any], work: Callable[[], Any]) -> Job:
        """Queue ``work`` (returning an object with ``to_dict()``); `QueueFull` when there is no room.

        ``work`` runs in a child process (see `run_isolated`): it must pickle, as a module-level
        function or a ``functools.partial`` of one."""
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
        except RuntimeError:  # the pool is shutting down with the server
            self._end(job, "failed", "the server is shutting down", "RuntimeError", 70)
        return job

    def _evict(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if not job.active]
        for job_id in finished[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[job_id]

    def _run(self, job: Job, work: Callable[[], Any]) -> None:
        with self._lock:
            if job.state != "queued":  # cancelled while it waited
                return
            job.state = "running"
            job.started = time.time()
        try:
            result = run_isolated(
                work,
                timeout_s=self.timeout_s,
                cancel=job.cancel_requested,
                threads=self.threads_per_job,
                blas=self.blas_per_job,
            )
            document = result.to_dict()
        except Cancelled:
            self._end(job, "cancelled", "cancelled while running", None, None)
        except TimeLimitExceeded as exc:
            self._end(job, "timed-out", one_line(exc), type(exc).__name__, exc.exit_code)
        except ChildFailed as exc:
            self._child_failed(job, exc)
        except Exception as exc:  # `errors.failure` maps it, as the CLI does
            shown = failure(exc)
            if shown.internal:  # a bug in unshell, not bad input: keep the server up, log it
                log.exception("job %s (%s) failed", job.id, job.kind)
            self._end(job, "failed", shown.message, shown.error_type, shown.exit_code)
        else:
            with self._lock:
                job.result = result
                job.document = document
                job.finished = time.time()
                job.state = "done"
            job.ended.set()

    def _child_failed(self, job: Job, exc: ChildFailed) -> None:
        name, message = str(exc.args[0]), str(exc.args[1]) if len(exc.args) > 1 else ""
        if name == "ProcessDied":
            # SIGKILL from outside is almost always the kernel's out-of-memory killer.
            killed = len(exc.args) > 2 and exc.args[2] == -9
            self._end(job, "failed", message, name, 21 if killed else 70)
            return
        log.error("job %s (%s) failed in its process: %s: %s", job.id, job.kind, name, message)
        first = message.strip().splitlines()[0] if message.strip() else name
        self._end(job, "failed", f"internal error: {name}: {first}", name, 70)

    def _end(self, job: Job, state: str, message: str, error_type: str | None, exit_code: int | None) -> None:
        with self._lock:
            job.error = message
            job.error_type = error_type
            job.exit_code = exit_code
            job.finished = time.time()
            job.state = state
        job.ended.set()

    def cancel(self, job: Job) -> bool:
        """Stop a job: a queued one ends now, a running one as soon as its process is killed
        (within a tenth of a second; wait on ``job.ended``). False when it had already ended."""
        with self._lock:
            if job.state == "running":
                job.cancel_requested.set()
                return True
            if job.state != "queued":
                return False
            job.error = "cancelled before it started"
            job.finished = time.time()
            job.state = "cancelled"
        job.ended.set()
        return True

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
        """Stop taking jobs; running ones are cancelled (their processes killed)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            running = [job for job in self._jobs.values() if job.state == "running"]
        for job in running:
            job.cancel_requested.set()
