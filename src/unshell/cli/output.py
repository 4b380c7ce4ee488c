"""One output sink for every command: a human table by default, JSON with ``--format json``.

Commands hand it plain dicts (the same documents the library's ``to_dict()`` returns) so the
JSON is exactly the library's, and the human rendering is the only place that formats text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import click

FORMATS = ("table", "json")


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

    def error(self, message: str) -> None:
        click.echo(f"error: {message}", err=True)


def key_value_table(rows: Sequence[tuple[str, str]]) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    lines = []
    for key, value in rows:
        first, *rest = str(value).split("\n") or [""]
        lines.append(f"{key.upper():<{width}}  {first}")
        lines.extend(f"{'':<{width}}  {line}" for line in rest)
    return "\n".join(lines) + "\n"


def columns(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, limit: int | None = None) -> str:
    shown = list(rows if limit is None else rows[:limit])
    table = [list(headers)] + [[("" if c is None else str(c)) for c in row] for row in shown]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if limit is not None and len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more (use --format json for all)")
    return "\n".join(lines)


def human_count(value: int | None) -> str:
    if value is None:
        return "?"
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(value)


def human_bytes(value: int | None) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"
