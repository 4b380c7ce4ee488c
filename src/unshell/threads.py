"""How many threads unshell may use, in one place: the CLI's ``--threads``, the web jobs and scan.

A budget of N threads (default: the cores this process may run on) bounds everything that runs
side by side: NumPy's BLAS pool (set through threadpoolctl, which finds the BLAS NumPy loaded and
calls its own setter) and unshell's own pools. A pool of W workers gives each ``N // W`` BLAS
threads (at least one), so W workers x M BLAS threads never exceed N (`split`): an oversubscribed
BLAS makes the workers fight over the cores (OpenBLAS threads spin while they wait; a fleet audit
on 2 cores ran ten times slower with 2 BLAS threads per worker than with 1). Without ``--threads``,
a cap the environment sets on BLAS (``OMP_NUM_THREADS``...) still holds for each process.

The budget is bound for the duration of a call (`limited`), in a context variable, so pools deep
in the library read it (`budget`) without a parameter on every function.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import UsageError

__all__ = [
    "MAX_THREADS",
    "THREAD_ENVIRONMENT",
    "available_cores",
    "blas_ceiling",
    "blas_limit",
    "budget",
    "check_threads",
    "environment_cap",
    "limited",
    "map_in_order",
    "split",
]

T = TypeVar("T")
R = TypeVar("R")

MAX_THREADS = 1024
# Caps on the numeric libraries' threads that a user, a batch scheduler (Ray starts its workers
# with OMP_NUM_THREADS=1) or a test suite may have set: threads per process, not processes.
THREAD_ENVIRONMENT = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


@dataclass(frozen=True)
class _Bound:
    threads: int  # the whole budget: workers x BLAS threads stay within it
    blas: int  # the most BLAS threads one process may use


_bound: ContextVar[_Bound | None] = ContextVar("unshell_threads", default=None)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or ``taskset``
    narrows), not every core of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def environment_cap() -> int | None:
    """The lowest thread cap `THREAD_ENVIRONMENT` sets (``OMP_NUM_THREADS=4,2`` counts as 4), if any."""
    caps = []
    for name in THREAD_ENVIRONMENT:
        first = os.environ.get(name, "").split(",")[0].strip()
        if first.isdigit() and int(first) >= 1:
            caps.append(int(first))
    return min(caps) if caps else None


def check_threads(count: object, option: str = "--threads") -> int:
    """``count`` as a thread count (1 to `MAX_THREADS`), else `UsageError` naming ``option``."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_THREADS:
        raise UsageError(f"{option} must be a whole number from 1 to {MAX_THREADS}, not {count!r}")
    return count


def budget() -> int:
    """The thread budget bound by `limited`, else the cores this process may use."""
    bound = _bound.get()
    return bound.threads if bound is not None else available_cores()


def blas_ceiling() -> int:
    """The most BLAS threads one process may use: what `limited` bound, else the budget lowered
    to the environment's cap (`environment_cap`: someone's decision, which raising would undo)."""
    bound = _bound.get()
    if bound is not None:
        return bound.blas
    cap = environment_cap()
    return budget() if cap is None else min(budget(), cap)


def split(tasks: int, count: int | None = None) -> tuple[int, int]:
    """(workers, BLAS threads per worker) for ``tasks`` that can run side by side within ``count``
    threads (default: `budget`): workers x BLAS threads <= count, no idle worker, and no worker
    above `blas_ceiling`."""
    total = budget() if count is None else count
    workers = max(1, min(tasks, total))
    return workers, max(1, min(total // workers, blas_ceiling()))


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the BLAS NumPy loaded, found once per process: finding it reads
    ``/proc/self/maps``, which a web job's confinement to its roots would refuse later on. None
    where it cannot be found (the body then runs with BLAS as it is)."""
    import numpy  # noqa: F401 (threadpoolctl only sees the libraries already loaded)
    from threadpoolctl import ThreadpoolController

    try:
        return ThreadpoolController().select(user_api="blas")
    except OSError:
        return None


@contextlib.contextmanager
def blas_limit(count: int) -> Iterator[None]:
    """Run the body with at most ``count`` BLAS threads, then restore the previous limits.

    The setting is the process's, not the thread's: a pool of worker threads is bounded by
    entering this once around the whole pool."""
    controller = _blas_controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=count):
        yield


@contextlib.contextmanager
def limited(count: int | None = None, *, blas: int | None = None) -> Iterator[int]:
    """Run the body within ``count`` threads (None: the cores this process may use): BLAS gets
    them all, or ``blas`` where given (without either, no more than the environment's cap), and
    unshell's pools size themselves from `budget`. Yields the count."""
    if count is None:
        total = available_cores()
        cap = environment_cap()
        ceiling = total if cap is None else min(total, cap)
    else:
        total = ceiling = check_threads(count)
    if blas is not None:
        ceiling = min(total, check_threads(blas, "the BLAS thread count"))
    token = _bound.set(_Bound(total, ceiling))
    try:
        with blas_limit(ceiling):
            yield total
    finally:
        _bound.reset(token)


def map_in_order(
    function: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int | None = None,
    done: Callable[[int], None] | None = None,
    name: str = "unshell-work",
) -> list[R]:
    """``[function(item) for item in items]``, the items side by side on a pool of threads named
    ``name``: `split`'s workers, or ``workers`` where the caller gives a count (taken as given,
    with BLAS threads so that workers x BLAS threads stay within the budget where they can).

    For work whose NumPy steps release the GIL (elementwise passes, reductions, BLAS). Each task
    runs in a copy of the caller's context (the web server's path confinement holds there too)
    with the budget narrowed to its share, so a pool inside a task stays within it, and BLAS is
    bounded to that share while the pool runs. ``done(i)``: called on the calling thread as item
    ``i`` finishes (a progress stage's advance). The first error a task raises is raised here;
    tasks not begun are cancelled, and those already running end first."""
    listed = list(items)
    if workers is None:
        workers, blas = split(len(listed))
    else:
        workers = max(1, min(workers, len(listed)))
        blas = max(1, min(budget() // workers, blas_ceiling()))
    if workers <= 1:
        results = []
        for index, item in enumerate(listed):
            results.append(function(item))
            if done is not None:
                done(index)
        return results

    def run(item: T) -> R:
        token = _bound.set(_Bound(blas, blas))
        try:
            return function(item)
        finally:
            _bound.reset(token)

    with blas_limit(blas), ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        futures = [pool.submit(contextvars.copy_context().run, run, item) for item in listed]
        index_of = {future: index for index, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                future.result()
                if done is not None:
                    done(index_of[future])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [future.result() for future in futures]
