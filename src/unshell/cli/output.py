"""One output sink for every command: a human table by default, JSON with ``--format json``.

Commands hand it plain dicts (the same documents the library's ``to_dict()`` returns) so the
JSON is exactly the library's, and the human rendering is the only place that formats text.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from ..errors import OutputWriteError
from ..report.text import columns, human_bytes, human_count, key_value_table

__all__ = [
    "FORMATS",
    "Output",
    "check_output_path",
    "columns",
    "human_bytes",
    "human_count",
    "key_value_table",
    "note",
    "set_quiet",
]

FORMATS = ("table", "json")

_quiet = False


def set_quiet(quiet: bool) -> None:
    """``-q/--quiet``: no progress, notes or "report written" lines; results and errors still print."""
    global _quiet
    _quiet = quiet


def quiet() -> bool:
    return _quiet


def note(message: str) -> None:
    """A line for the person at the terminal (stderr, so stdout stays the result), unless quiet."""
    if not _quiet:
        click.echo(message, err=True)


def check_output_path(path: str, *, makes_folders: bool = False, is_folder: bool = False) -> str:
    """Refuse, before any work starts, an output that cannot be written (a long comparison should
    not end in "no such file" for its report): its folder must exist, or for writers that create
    missing folders (``makes_folders``) the nearest existing one, and be writable. ``is_folder``:
    the output is itself a folder (`convert`), else an existing folder in its place is refused."""
    target = Path(path).absolute()
    folder = target.parent
    if makes_folders:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise OutputWriteError(f"cannot write {path}: {folder} {what}")
    if not os.access(folder, os.W_OK):
        raise OutputWriteError(f"cannot write {path}: the folder {folder} is not writable")
    if not is_folder and target.is_dir():
        raise OutputWriteError(f"cannot write {path}: it is a folder")
    return path


class Output:
    def __init__(self, fmt: str = "table", stream: TextIO | None = None) -> None:
        if fmt not in FORMATS:
            raise click.BadParameter(f"format must be one of {', '.join(FORMATS)}")
        self.format = fmt
        self.stream = stream or sys.stdout

    def document(self, data: dict[str, Any], render_human: Any) -> None:
        """Print ``data`` as JSON, or through ``render_human(data) -> str`` as a table."""
        if self.format == "json":
            self.stream.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
        else:
            self.stream.write(render_human(data))

    def error(self, message: str, exit_code: int | None = None) -> None:
        """One line on stderr; with ``--format json``, ``{"error": ..., "exit_code": ...}`` on stdout."""
        if self.format == "json":
            self.stream.write(
                json.dumps({"error": message, "exit_code": exit_code}, ensure_ascii=False) + "\n"
            )
        else:
            click.echo(f"error: {message}", err=True)
