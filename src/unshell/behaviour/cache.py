"""A resumable on-disk cache of model responses.

One JSON line per answered request, appended and flushed before the next request is sent, so a
probe that is killed keeps every answer it paid for and a rerun sends only the missing ones. A
torn last line (the process died mid-write) is ignored. The key is a digest of everything that
decides a response: the backend's identity (endpoint URL and model name, or the local file's
path, size and modification time), the mode (completion or chat), the prompt and the settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_FILE = "responses.jsonl"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unshell" / "probe"


def response_key(identity: str, mode: str, prompt: str, settings: dict[str, Any]) -> str:
    material = json.dumps([identity, mode, prompt, settings], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class ResponseCache:
    """``get``/``put`` responses by key; ``directory=None`` keeps them in memory only."""

    def __init__(self, directory: str | Path | None) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self.path = Path(directory) / CACHE_FILE if directory is not None else None
        if self.path is not None and self.path.exists():
            with self.path.open("r", encoding="utf-8") as stream:
                for line in stream:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn last line from a killed run
                    if isinstance(record, dict) and isinstance(record.get("key"), str):
                        self._entries[record["key"]] = record.get("response", {})

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._entries.get(key)

    def put(self, key: str, response: dict[str, Any]) -> None:
        self._entries[key] = response
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "response": response}, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(line)
            stream.flush()
            os.fsync(stream.fileno())
