"""Behavioural profiles in the fingerprint library: a model's answers to a fixed prompt set.

A profile lets `unshell probe` (``--against library:NAME``) and `unshell search --endpoint` test a
suspect against a model without its weights or a live endpoint: the answers were recorded once
(`unshell library profile`) and are read back here. A profile is kept per (name, prompt set,
max_tokens, mode): answers to different settings do not compare. Its answers are keyed by prompt
text, so a probe may use any seed whose prompts the profile holds.

The table is created on the first profile written, so a library that holds none is unchanged and
older unshell versions still open it; `library export` carries fingerprints only.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptCheckpointError, UsageError
from ..formats.base import sanitize
from .store import Library

TABLE = "behaviour_profiles"
_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    name TEXT NOT NULL,
    prompt_set TEXT NOT NULL,
    max_tokens INTEGER NOT NULL,
    mode TEXT NOT NULL,
    source TEXT NOT NULL,
    added REAL NOT NULL,
    answers TEXT NOT NULL,
    PRIMARY KEY (name, prompt_set, max_tokens, mode)
)
"""


@dataclass(frozen=True)
class BehaviourProfile:
    """``answers`` maps each prompt to the reply (`unshell.behaviour.backends.Reply.to_dict`)."""

    name: str
    prompt_set: str
    max_tokens: int
    mode: str  # "completion" or "chat"
    source: str  # the label of what answered (endpoint and model, or file name)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    added: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prompt_set": self.prompt_set,
            "max_tokens": self.max_tokens,
            "mode": self.mode,
            "source": self.source,
            "prompts": len(self.answers),
            "added": self.added,
        }


def _has_table(library: Library) -> bool:
    row = library.db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
    ).fetchone()
    return row is not None


def save_profile(library: Library, profile: BehaviourProfile, *, replace: bool = False) -> BehaviourProfile:
    """Store ``profile``; an existing one for the same settings is refused unless ``replace``."""
    stored = BehaviourProfile(
        profile.name,
        profile.prompt_set,
        profile.max_tokens,
        profile.mode,
        profile.source,
        dict(profile.answers),
        profile.added or time.time(),
    )
    db = library.db
    db.execute(_CREATE)
    key = (stored.name, stored.prompt_set, stored.max_tokens, stored.mode)
    exists = db.execute(
        f"SELECT 1 FROM {TABLE} WHERE name = ? AND prompt_set = ? AND max_tokens = ? AND mode = ?", key
    ).fetchone()
    if exists and not replace:
        raise UsageError(
            f"the library already holds a profile of {sanitize(stored.name, 80)!r} for {stored.prompt_set} "
            f"at {stored.max_tokens} tokens ({stored.mode}): pass --replace to overwrite it"
        )
    db.execute(
        f"INSERT OR REPLACE INTO {TABLE} (name, prompt_set, max_tokens, mode, source, added, answers) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (*key, stored.source, stored.added, json.dumps(stored.answers, ensure_ascii=False, sort_keys=True)),
    )
    return stored


def profiles_of(library: Library, name: str | None = None) -> list[BehaviourProfile]:
    """Every profile in the library (of entry ``name`` only, when given), by name and settings."""
    if not _has_table(library):
        return []
    query = f"SELECT name, prompt_set, max_tokens, mode, source, added, answers FROM {TABLE}"
    parameters: tuple[Any, ...] = ()
    if name is not None:
        query += " WHERE name = ?"
        parameters = (name,)
    query += " ORDER BY name, prompt_set, max_tokens, mode"
    try:
        rows = library.db.execute(query, parameters).fetchall()
    except sqlite3.DatabaseError as error:
        raise CorruptCheckpointError(
            f"the library {sanitize(str(library.path))}: its profiles are damaged ({sanitize(str(error), 120)})"
        ) from None
    return [_profile(library, row) for row in rows]


def _profile(library: Library, row: tuple[Any, ...]) -> BehaviourProfile:
    name, prompt_set, max_tokens, mode, source, added, answers = row
    where = f"the library {sanitize(str(library.path))}: profile {sanitize(str(name), 80)!r}"
    try:
        decoded = json.loads(answers)
    except (TypeError, json.JSONDecodeError):
        raise CorruptCheckpointError(
            f"{where} holds answers that are not JSON; the file is damaged"
        ) from None
    if not (
        isinstance(decoded, dict)
        and all(isinstance(k, str) and isinstance(v, dict) for k, v in decoded.items())
        and isinstance(max_tokens, int)
        and isinstance(added, (int, float))
    ):
        raise CorruptCheckpointError(f"{where} is malformed; the file is damaged")
    return BehaviourProfile(
        str(name), str(prompt_set), max_tokens, str(mode), str(source), decoded, float(added)
    )
