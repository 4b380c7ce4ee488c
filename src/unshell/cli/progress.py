"""The CLI's progress bars: `unshell.progress` stages drawn by tqdm on stderr, on a terminal only.

Nothing is drawn when stderr is not a terminal (a pipe, a file, CI's log), nor with ``--quiet``:
stdout carries only the result (``--format json`` stays one JSON document) and stderr only
errors and notes. Each stage is one bar that disappears when it ends, nested stages below their
parent's, so a finished command leaves the terminal as it found it.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from ..progress import BYTES, ProgressReporter, ProgressStage

__all__ = ["TerminalProgress", "terminal_progress"]


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


# Bytes read as kB, MB, GB on both sides of the count (tqdm's default shows the unit in the rate only).
_BYTES_FORMAT = "{l_bar}{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def _sized(stream: TextIO) -> bool:
    """Whether the terminal says how big it is (a pseudo-terminal nobody sized says 0 x 0)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
    return size.columns > 0 and size.lines > 0


class _Bar:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def advance(self, amount: float = 1) -> None:
        self.bar.update(amount)

    def status(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        self.bar.close()


class TerminalProgress:
    """A `ProgressReporter` drawing tqdm bars on ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def stage(self, label: str, total: float | None, unit: str, depth: int) -> ProgressStage:
        from tqdm import tqdm

        in_bytes = unit == BYTES
        sized = _sized(self.stream)
        return _Bar(
            tqdm(
                total=total,
                desc=label,
                unit=unit,
                unit_scale=in_bytes,
                bar_format=_BYTES_FORMAT if in_bytes else None,
                file=self.stream,
                position=depth,
                leave=False,
                # tqdm draws nothing on a 0 x 0 terminal: an unsized one gets 80 x 24.
                dynamic_ncols=sized,
                ncols=None if sized else 80,
                nrows=None if sized else 24,
                mininterval=0.2,
            )
        )


def terminal_progress(*, quiet: bool, stream: TextIO | None = None) -> ProgressReporter | None:
    """Bars on ``stream`` (default stderr) when it is a terminal and not ``quiet``, else None."""
    shown = sys.stderr if stream is None else stream
    if quiet or not _is_terminal(shown):
        return None
    return TerminalProgress(shown)
