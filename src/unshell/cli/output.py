"""One output sink for every command: a human table by default, JSON with ``--format json``.

Commands hand it plain dicts (the same documents the library's ``to_dict()`` returns) so the
JSON is exactly the library's, and the human rendering is the only place that formats text.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import click

from ..report.text import columns, human_bytes, human_count, key_value_table

__all__ = ["FORMATS", "Output", "columns", "human_bytes", "human_count", "key_value_table"]

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
