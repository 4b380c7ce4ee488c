"""Progress of long work, told to whoever asked for it; the library itself never draws anything.

A call that may take minutes (`compare`, `convert`, `audit`, `search`, fingerprinting, `scan`)
takes an optional `ProgressReporter` and binds it for its duration (`reporting`). Its loops then
say what they are doing as stages: a label ("hashing model.gguf"), a total and a unit (bytes of
tensors read, candidates tested, checkpoints scanned), and how far they got (`track`, `stage`).
With no reporter bound, `track` hands the items back untouched and costs nothing.

The CLI binds a tqdm bar on stderr when stderr is a terminal (`unshell.cli.progress`); a test
binds a recorder. Stages report from the thread that bound the reporter only: work a pool runs on
other threads is counted by the pool's own stage (one candidate done), so bars never interleave.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = ["BYTES", "ProgressReporter", "ProgressStage", "reporting", "stage", "track"]

T = TypeVar("T")

BYTES = "B"  # the unit of a stage counted in bytes (a bar may scale it: kB, MB, GB)


class ProgressStage(Protocol):
    """One stage of work as a reporter shows it."""

    def advance(self, amount: float = 1) -> None:
        """``amount`` more units are done."""

    def status(self, text: str) -> None:
        """A short note shown beside the count (``"2 errors"``)."""

    def close(self) -> None:
        """The stage has ended (done, or left by an error)."""


class ProgressReporter(Protocol):
    """What the library tells progress to."""

    def stage(self, label: str, total: float | None, unit: str, depth: int) -> ProgressStage:
        """A stage begins: ``total`` units (None when unknown) of ``unit``; ``depth`` is how many
        stages it runs inside (0 for the outermost)."""
        ...


@dataclass(frozen=True)
class _Binding:
    reporter: ProgressReporter
    thread: int
    depth: int


_bound: ContextVar[_Binding | None] = ContextVar("unshell_progress", default=None)


class _Silent:
    def advance(self, amount: float = 1) -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


_SILENT = _Silent()


def _active() -> _Binding | None:
    binding = _bound.get()
    if binding is None or binding.thread != threading.get_ident():
        return None
    return binding


@contextlib.contextmanager
def reporting(reporter: ProgressReporter | None) -> Iterator[None]:
    """Report the stages of the body to ``reporter``. None keeps whatever the caller bound, so a
    verb called by another (`audit` runs `compare`) reports to the outer call's reporter."""
    if reporter is None:
        yield
        return
    token = _bound.set(_Binding(reporter, threading.get_ident(), 0))
    try:
        yield
    finally:
        _bound.reset(token)


@contextlib.contextmanager
def stage(label: str, total: float | None, unit: str = "item") -> Iterator[ProgressStage]:
    """A stage of ``total`` units of ``unit``, for the body to `ProgressStage.advance`; stages
    begun inside it are shown as nested in it. A silent stage when no reporter is bound here."""
    binding = _active()
    if binding is None:
        yield _SILENT
        return
    shown = binding.reporter.stage(label, total, unit, binding.depth)
    token = _bound.set(_Binding(binding.reporter, binding.thread, binding.depth + 1))
    try:
        yield shown
    finally:
        _bound.reset(token)
        shown.close()


def track(
    items: Iterable[T], label: str, *, unit: str = "item", size: Callable[[T], float] | None = None
) -> Iterable[T]:
    """``items``, one stage long: each counts as done when the next is asked for (or the loop
    ends). ``size(item)``: its weight in ``unit`` (bytes of a tensor), else one each. Without a
    reporter, ``items`` itself."""
    if _active() is None:
        return items
    return _tracked(list(items), label, unit, size)


def _tracked(items: list[T], label: str, unit: str, size: Callable[[T], float] | None) -> Iterator[T]:
    total = sum(size(item) for item in items) if size is not None else len(items)
    with stage(label, total, unit) as shown:
        for item in items:
            yield item
            shown.advance(size(item) if size is not None else 1)
