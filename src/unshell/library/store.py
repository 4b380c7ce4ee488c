"""The fingerprint library: one SQLite file of fingerprints, searchable by cheap signals.

Layout (schema version 4, in ``PRAGMA user_version``; ``PRAGMA application_id`` marks the file):

- ``fingerprints``: one row per fingerprint, with the cheap-signal columns the candidate stage of
  `unshell.library.search` reads (family, signature, hidden size, vocabulary size, tokenizer
  family), each served by composite indexes so that any conjunction of them is an index prefix.
- ``blobs``: the serialized fingerprint (``Fingerprint.to_bytes()``), its size and sha256, apart
  from ``fingerprints`` so that candidate queries never page through blob bytes.
- ``content_hashes``: name-blind content hash -> fingerprint, for identical and partial copies.
- ``meta``: key/value facts about the file (who created it, when).

Durability: WAL journal, ``synchronous=FULL`` and one transaction per write. A process killed
mid-write loses only its uncommitted transaction (WAL alone guarantees that); FULL also fsyncs the
WAL at every commit, so a power loss cannot drop a fingerprint that ``add`` already returned for.
The fsync costs milliseconds against the seconds a fingerprint takes to compute, so it is kept.
Writers take the write lock up front (``BEGIN IMMEDIATE``) and wait up to ``BUSY_TIMEOUT_MS`` for
one another, so concurrent ``unshell library add`` processes queue instead of failing.

Schemas evolve through ``MIGRATIONS`` (version -> function), each applied in the same
transaction as the version bump; a file from a newer unshell is refused, never guessed at.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    CorruptCheckpointError,
    PathNotFoundError,
    ResourceLimitError,
    StaleFingerprintError,
    UnsupportedFormatError,
    UsageError,
)
from ..formats.base import sanitize
from ..numbers import checked_float, checked_int, describe
from ..progress import ProgressReporter, reporting, stage

if TYPE_CHECKING:
    from ..lineage.fingerprint import Fingerprint

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "SCHEMA_VERSION",
    "Library",
    "LibraryEntry",
    "default_library_path",
]

SCHEMA_VERSION = 4
# The oldest fingerprint format a library may hold (`lineage.fingerprint.FINGERPRINT_VERSION`):
# older ones cannot be brought forward without their checkpoints' weights (`_migrate_to_4`).
MIN_FINGERPRINT_VERSION = 2
APPLICATION_ID = 0x756E7368  # "unsh"
BUSY_TIMEOUT_MS = 30_000
EXPORT_FORMAT = "unshell-fingerprint-library"
EXPORT_VERSION = 1
MAX_BLOB_BYTES = 64 << 20  # a fingerprint is kilobytes to a few megabytes; refuse absurd lines
MAX_NAME_CHARS = 512
MAX_TIMESTAMP = 253_402_300_799.0  # 9999-12-31T23:59:59Z: the latest `added` time.gmtime renders


def default_library_path() -> Path:
    """``$UNSHELL_HOME/library.sqlite``, ``UNSHELL_HOME`` defaulting to ``~/.cache/unshell``."""
    from ..constants import unshell_home

    return unshell_home() / "library.sqlite"


@dataclass(frozen=True)
class LibraryEntry:
    """One fingerprint as `Library.list` shows it (no blob is read)."""

    name: str
    family: str | None
    signature: str | None
    hidden: int | None
    layers: int | None
    vocab_size: int | None
    parameters: int | None
    tokenizer_family: str | None
    format: str | None
    source: str | None
    added: float
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "signature": self.signature,
            "hidden": self.hidden,
            "layers": self.layers,
            "vocab_size": self.vocab_size,
            "parameters": self.parameters,
            "tokenizer_family": self.tokenizer_family,
            "format": self.format,
            "source": self.source,
            "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.added)),
            "size_bytes": self.size,
        }


# --- the cheap-signal columns ---------------------------------------------------------------------

COLUMNS = (
    "family",
    "signature",
    "hidden",
    "layers",
    "vocab_size",
    "parameters",
    "tokenizer_family",
    "format",
    "source",
    "fingerprint_version",
)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any, limit: int = 4096) -> str | None:
    return sanitize(str(value), limit=limit) if isinstance(value, str) and value else None


def cheap_signals(fp: Any) -> dict[str, Any]:
    """The indexed columns of one fingerprint (read from its attributes, never trusted blindly)."""
    tokenizer = getattr(fp, "tokenizer", None)
    tokenizer_family = tokenizer.get("family") if isinstance(tokenizer, dict) else None
    return {
        "family": _str_or_none(getattr(fp, "family", None), 128),
        "signature": _str_or_none(getattr(fp, "signature", None), 512),
        "hidden": _int_or_none(getattr(fp, "hidden", None)),
        "layers": _int_or_none(getattr(fp, "layers", None)),
        "vocab_size": _int_or_none(getattr(fp, "vocab_size", None)),
        "parameters": _int_or_none(getattr(fp, "parameters", None)),
        "tokenizer_family": _str_or_none(tokenizer_family, 128),
        "format": _str_or_none(getattr(fp, "format", None), 64),
        "source": _str_or_none(getattr(fp, "source", None)),
        "fingerprint_version": _int_or_none(getattr(fp, "version", None)),
    }


def hashes_of(fp: Any) -> list[str]:
    """The fingerprint's content hashes, lower-case hex, deduplicated, in their order."""
    out: dict[str, None] = {}
    for value in getattr(fp, "content_hashes", None) or []:
        if isinstance(value, str) and 8 <= len(value) <= 128:
            out[value.lower()] = None
    return list(out)


def _decode(blob: bytes) -> Fingerprint:
    from ..lineage.fingerprint import Fingerprint

    return Fingerprint.from_bytes(blob)


# --- schema and migrations ------------------------------------------------------------------------


def _migrate_to_1(db: sqlite3.Connection) -> None:
    """Version 1: fingerprints with their blob inline, and the content-hash table."""
    db.execute(
        """CREATE TABLE fingerprints (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            family TEXT, signature TEXT, hidden INTEGER, vocab_size INTEGER, parameters INTEGER,
            added REAL NOT NULL,
            blob BLOB NOT NULL)"""
    )
    db.execute(
        """CREATE TABLE content_hashes (
            hash TEXT NOT NULL,
            fingerprint_id INTEGER NOT NULL REFERENCES fingerprints(id) ON DELETE CASCADE,
            PRIMARY KEY (hash, fingerprint_id)) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX fingerprints_family ON fingerprints(family)")
    db.execute("CREATE INDEX fingerprints_signature ON fingerprints(signature)")


# Every conjunction of (family, hidden, tokenizer family, vocabulary size) is the prefix of one of
# these (a chain cover of the subsets), so each candidate tier is one index range scan.
TIER_INDEXES: dict[str, tuple[str, ...]] = {
    "fp_hvtf": ("hidden", "vocab_size", "tokenizer_family", "family"),
    "fp_fht": ("family", "hidden", "tokenizer_family"),
    "fp_tfv": ("tokenizer_family", "family", "vocab_size"),
    "fp_vfh": ("vocab_size", "family", "hidden"),
    "fp_th": ("tokenizer_family", "hidden"),
    "fp_vt": ("vocab_size", "tokenizer_family"),
    "fp_sig": ("signature", "tokenizer_family"),
}


def _migrate_to_2(db: sqlite3.Connection) -> None:
    """Version 2: blobs move to their own table (with size and sha256), more cheap columns
    (layers, tokenizer family, format, source, fingerprint version) and the tier indexes.
    The new columns of existing rows are read back from their blobs."""
    db.execute("ALTER TABLE fingerprints RENAME TO fingerprints_v1")
    db.execute("DROP INDEX IF EXISTS fingerprints_family")
    db.execute("DROP INDEX IF EXISTS fingerprints_signature")
    db.execute(
        """CREATE TABLE fingerprints (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            family TEXT, signature TEXT, hidden INTEGER, layers INTEGER, vocab_size INTEGER,
            parameters INTEGER, tokenizer_family TEXT, format TEXT, source TEXT,
            fingerprint_version INTEGER,
            added REAL NOT NULL)"""
    )
    db.execute(
        """CREATE TABLE blobs (
            fingerprint_id INTEGER PRIMARY KEY REFERENCES fingerprints(id) ON DELETE CASCADE,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            blob BLOB NOT NULL)"""
    )
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    rows = db.execute("SELECT id, name, added, blob FROM fingerprints_v1 ORDER BY id").fetchall()
    for row_id, name, added, blob in rows:
        try:
            fp = _decode(bytes(blob))
        except StaleFingerprintError:
            raise StaleFingerprintError(_stale_text(1, [str(name)], "1")) from None
        except Exception as error:
            raise CorruptCheckpointError(
                f"library migration: the fingerprint {sanitize(str(name))!r} does not decode ({error})"
            ) from error
        signals = cheap_signals(fp)
        db.execute(
            f"INSERT INTO fingerprints (id, name, added, {', '.join(COLUMNS)}) "
            f"VALUES (?, ?, ?, {', '.join('?' * len(COLUMNS))})",
            (row_id, name, added, *(signals[c] for c in COLUMNS)),
        )
        db.execute(
            "INSERT INTO blobs (fingerprint_id, size, sha256, blob) VALUES (?, ?, ?, ?)",
            (row_id, len(blob), hashlib.sha256(blob).hexdigest(), blob),
        )
    # content_hashes references fingerprints by name of table: rebuild it against the new table.
    db.execute("ALTER TABLE content_hashes RENAME TO content_hashes_v1")
    db.execute(
        """CREATE TABLE content_hashes (
            hash TEXT NOT NULL,
            fingerprint_id INTEGER NOT NULL REFERENCES fingerprints(id) ON DELETE CASCADE,
            PRIMARY KEY (hash, fingerprint_id)) WITHOUT ROWID"""
    )
    db.execute("INSERT INTO content_hashes SELECT hash, fingerprint_id FROM content_hashes_v1")
    db.execute("DROP TABLE content_hashes_v1")
    db.execute("DROP TABLE fingerprints_v1")
    db.execute("CREATE INDEX content_hashes_fingerprint ON content_hashes(fingerprint_id)")
    for index, columns in TIER_INDEXES.items():
        db.execute(f"CREATE INDEX {index} ON fingerprints({', '.join(columns)})")
    db.execute("CREATE INDEX fp_family ON fingerprints(family)")


def _migrate_to_3(db: sqlite3.Connection) -> None:
    """Version 3: what `unshell scan` last saw of each fingerprinted checkpoint (path, size, mtime,
    tensor-table hash), so a scan into a library resumes without its previous output file."""
    db.execute(
        """CREATE TABLE scan_state (
            fingerprint_id INTEGER PRIMARY KEY REFERENCES fingerprints(id) ON DELETE CASCADE,
            record TEXT NOT NULL)"""
    )


# The tables and columns this version reads, and the indexes its queries name: a file whose schema
# version says 3 but that lacks one of them is damaged, and is refused when opened.
SCHEMA_TABLES: dict[str, tuple[str, ...]] = {
    "fingerprints": ("id", "name", "added", *COLUMNS),
    "blobs": ("fingerprint_id", "size", "sha256", "blob"),
    "content_hashes": ("hash", "fingerprint_id"),
    "meta": ("key", "value"),
    "scan_state": ("fingerprint_id", "record"),
}


def _stale_text(count: int, names: list[str], versions: str) -> str:
    shown = ", ".join(repr(sanitize(n, 60)) for n in names[:3]) + (", ..." if count > 3 else "")
    return (
        f"holds {count} fingerprint{'s' if count != 1 else ''} of format version {versions} ({shown}), "
        "which this unshell no longer compares with: re-fingerprint those checkpoints into a new "
        "library (the file was left untouched)"
    )


def _migrate_to_4(db: sqlite3.Connection) -> None:
    """Version 4: fingerprints of format version 2 (sketches at `compare`'s width, anchor token
    strings, layer moments). An older fingerprint cannot be brought forward without its
    checkpoint's weights, so a library holding one is refused (`StaleFingerprintError`), untouched."""
    rows = db.execute(
        "SELECT name, fingerprint_version FROM fingerprints "
        "WHERE fingerprint_version IS NULL OR fingerprint_version < ? ORDER BY name",
        (MIN_FINGERPRINT_VERSION,),
    ).fetchall()
    if rows:
        versions = "/".join(sorted({str(v) for _, v in rows}))
        raise StaleFingerprintError(_stale_text(len(rows), [str(n) for n, _ in rows], versions))


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_to_1,
    2: _migrate_to_2,
    3: _migrate_to_3,
    4: _migrate_to_4,
}
MAX_RESUME_RECORD_CHARS = 64 * 1024


# --- the library ----------------------------------------------------------------------------------


class Library:
    """A fingerprint library in one SQLite file, created (parent folders too) on first use.

    Example:
        >>> from unshell.library import Library
        >>> library = Library()                       # doctest: +SKIP
        >>> library.add(fingerprint("llama-2-7b/"), name="llama-2-7b")  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_library_path()
        self._db: sqlite3.Connection | None = None

    # connection ---------------------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _connect(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise UsageError(f"the library path {sanitize(str(self.path))} is a folder, not a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            try:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.DatabaseError as error:
                raise UnsupportedFormatError(
                    f"{sanitize(str(self.path))} is not an unshell library (not SQLite: {error})"
                ) from error
            if str(mode).lower() != "wal":
                raise UnsupportedFormatError(f"could not put {sanitize(str(self.path))} in WAL mode ({mode})")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            self._migrate(db)
            self._check_schema(db)
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            self._check_application(db)
            return
        with _transaction(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            if version > SCHEMA_VERSION:
                raise UnsupportedFormatError(
                    f"the library {sanitize(str(self.path))} has schema version {version}, newer than "
                    f"this unshell reads ({SCHEMA_VERSION}): upgrade unshell (the file was left untouched)"
                )
            if version == 0:
                tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
                if tables:
                    raise UnsupportedFormatError(
                        f"{sanitize(str(self.path))} is an SQLite file but not an unshell library"
                    )
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            else:
                self._check_application(db)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                try:
                    MIGRATIONS[target](db)
                except StaleFingerprintError as error:
                    raise StaleFingerprintError(f"the library {sanitize(str(self.path))} {error}") from None
                except sqlite3.DatabaseError as error:  # a schema that lies about its version
                    raise CorruptCheckpointError(
                        f"{sanitize(str(self.path))}: the library's schema does not match its version "
                        f"{version} ({sanitize(str(error), 120)}); the file was left untouched"
                    ) from None
                db.execute(f"PRAGMA user_version = {target}")
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('migrated', ?)",
                (f"{version}->{SCHEMA_VERSION} at {time.time():.0f}",),
            )
            if version == 0:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('created', ?)", (f"{time.time():.0f}",)
                )

    def _check_schema(self, db: sqlite3.Connection) -> None:
        where = sanitize(str(self.path))
        try:
            for table, columns in SCHEMA_TABLES.items():
                present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                missing = [column for column in columns if column not in present]
                if missing:
                    lack = "is missing" if not present else f"lacks {', '.join(missing)}"
                    raise CorruptCheckpointError(f"the library {where} is damaged: table {table} {lack}")
            indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        except sqlite3.DatabaseError as error:
            raise CorruptCheckpointError(
                f"the library {where} is damaged ({sanitize(str(error), 120)})"
            ) from None
        missing = sorted(set(TIER_INDEXES) - indexes)
        if missing:
            raise CorruptCheckpointError(f"the library {where} is damaged: index {missing[0]} is missing")

    def _entry(self, row: Sequence[Any]) -> LibraryEntry:
        """One `_ENTRY_QUERY` row, every column checked: a value of the wrong type or out of range
        (a text in ``hidden``, an ``added`` of 1e300) means the file was damaged or edited."""
        name = row[0]
        where = f"the library {sanitize(str(self.path))}: entry {sanitize(str(name), 80)!r}"

        def bad(column: str, value: object) -> CorruptCheckpointError:
            return CorruptCheckpointError(f"{where} holds {describe(value)} in {column}; the file is damaged")

        if not isinstance(name, str):
            raise bad("name", name)
        texts = dict(
            zip(
                ("family", "signature", "tokenizer_family", "format", "source"),
                (row[1], row[2], *row[7:10]),
                strict=True,
            )
        )
        for column, value in texts.items():
            if value is not None and not isinstance(value, str):
                raise bad(column, value)
        hidden, layers, vocab_size, parameters = (
            None
            if value is None
            else checked_int(value, where=f"{where}: {column}", error=CorruptCheckpointError)
            for column, value in zip(("hidden", "layers", "vocab_size", "parameters"), row[3:7], strict=True)
        )
        added = checked_float(
            row[10], where=f"{where}: added", minimum=0.0, maximum=MAX_TIMESTAMP, error=CorruptCheckpointError
        )
        size = checked_int(row[11], where=f"{where}: size", error=CorruptCheckpointError)
        return LibraryEntry(
            name, row[1], row[2], hidden, layers, vocab_size, parameters, row[7], row[8], row[9], added, size
        )

    def _check_application(self, db: sqlite3.Connection) -> None:
        application = db.execute("PRAGMA application_id").fetchone()[0]
        if application != APPLICATION_ID:
            raise UnsupportedFormatError(f"{sanitize(str(self.path))} is not an unshell library")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # writing ------------------------------------------------------------------------------------

    def add(self, fp: Fingerprint, *, name: str | None = None, replace: bool = False) -> str:
        """Store ``fp`` under ``name`` (default: the fingerprint's own name) and return the name.

        An existing name raises `UsageError` unless ``replace``."""
        chosen = name if name is not None else getattr(fp, "name", None)
        chosen = _valid_name(chosen)
        blob = fp.to_bytes()
        with _transaction(self.db) as db:
            self._insert(db, chosen, blob, cheap_signals(fp), hashes_of(fp), time.time(), replace=replace)
        return chosen

    def _insert(
        self,
        db: sqlite3.Connection,
        name: str,
        blob: bytes,
        signals: dict[str, Any],
        hashes: Sequence[str],
        added: float,
        *,
        replace: bool,
    ) -> None:
        if len(blob) > MAX_BLOB_BYTES:
            raise ResourceLimitError(
                f"fingerprint {name!r} is {len(blob):,} bytes (limit {MAX_BLOB_BYTES:,})"
            )
        existing = db.execute("SELECT id FROM fingerprints WHERE name = ?", (name,)).fetchone()
        if existing is not None:
            if not replace:
                raise UsageError(
                    f"the library already holds a fingerprint named {name!r} (replace it explicitly)"
                )
            db.execute("DELETE FROM fingerprints WHERE id = ?", (existing[0],))
        cursor = db.execute(
            f"INSERT INTO fingerprints (name, added, {', '.join(COLUMNS)}) "
            f"VALUES (?, ?, {', '.join('?' * len(COLUMNS))})",
            (name, added, *(signals[c] for c in COLUMNS)),
        )
        row_id = cursor.lastrowid
        db.execute(
            "INSERT INTO blobs (fingerprint_id, size, sha256, blob) VALUES (?, ?, ?, ?)",
            (row_id, len(blob), hashlib.sha256(blob).hexdigest(), blob),
        )
        db.executemany(
            "INSERT OR IGNORE INTO content_hashes (hash, fingerprint_id) VALUES (?, ?)",
            [(h, row_id) for h in hashes],
        )

    def remove(self, name: str) -> None:
        """Delete one fingerprint (its blob and content hashes go with it)."""
        self.remove_many([name])

    def remove_many(self, names: Sequence[str]) -> None:
        """Delete several fingerprints, all or none: an unknown name removes nothing."""
        with _transaction(self.db) as db:
            for name in names:
                cursor = db.execute("DELETE FROM fingerprints WHERE name = ?", (name,))
                if cursor.rowcount == 0:
                    raise UsageError(f"the library holds no fingerprint named {sanitize(name)!r}")

    # scan resume keys ---------------------------------------------------------------------------

    def set_resume_key(self, name: str, record: dict[str, Any]) -> None:
        """Remember what `unshell scan` saw of the checkpoint behind ``name`` (a JSON object of
        plain values; dropped with the fingerprint when it is removed or replaced)."""
        text = json.dumps(record, sort_keys=True, default=str)
        if len(text) > MAX_RESUME_RECORD_CHARS:
            raise ResourceLimitError(
                f"scan record for {sanitize(name)!r} is over {MAX_RESUME_RECORD_CHARS} chars"
            )
        with _transaction(self.db) as db:
            row = db.execute("SELECT id FROM fingerprints WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UsageError(f"the library holds no fingerprint named {sanitize(name)!r}")
            db.execute(
                "INSERT OR REPLACE INTO scan_state (fingerprint_id, record) VALUES (?, ?)", (row[0], text)
            )

    def resume_keys(self) -> list[dict[str, Any]]:
        """Every remembered scan record whose fingerprint is still in the library (rows that do not
        parse are skipped: a resume key only ever saves work, it never stands for evidence)."""
        records = []
        for (text,) in self.db.execute("SELECT record FROM scan_state ORDER BY fingerprint_id"):
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    # reading ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM fingerprints").fetchone()[0])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            self.db.execute("SELECT 1 FROM fingerprints WHERE name = ?", (name,)).fetchone() is not None
        )

    def names(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM fingerprints ORDER BY name")]

    def get_bytes(self, name: str) -> bytes:
        """The stored bytes of one fingerprint, checked against their sha256."""
        row = self.db.execute(
            "SELECT b.blob, b.sha256 FROM fingerprints f JOIN blobs b ON b.fingerprint_id = f.id WHERE f.name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise UsageError(f"the library holds no fingerprint named {sanitize(name)!r}")
        if not isinstance(row[0], bytes) or not isinstance(row[1], str):
            raise CorruptCheckpointError(
                f"the library's copy of {sanitize(name)!r} is corrupt (its blob or digest is not stored as one)"
            )
        blob = row[0]
        if hashlib.sha256(blob).hexdigest() != row[1]:
            raise CorruptCheckpointError(
                f"the library's copy of {sanitize(name)!r} is corrupt (sha256 mismatch)"
            )
        return blob

    def get(self, name: str) -> Fingerprint:
        return _decode(self.get_bytes(name))

    def list(
        self, *, contains: str = "", family: str = "", limit: int | None = None, offset: int = 0
    ) -> list[LibraryEntry]:
        """Fingerprint summaries by name: every one, or those whose name contains ``contains``
        (case-insensitive) and whose family is ``family``, ``limit`` at most from ``offset``."""
        where, params = self._filter(contains, family)
        query = _ENTRY_QUERY + where + " ORDER BY f.name"
        if limit is not None:
            query += " LIMIT ? OFFSET ?"
            params += [max(limit, 0), max(offset, 0)]
        return [self._entry(row) for row in self.db.execute(query, params)]

    def count(self, *, contains: str = "", family: str = "") -> int:
        """How many fingerprints `list` would give without a limit."""
        where, params = self._filter(contains, family)
        return int(self.db.execute("SELECT count(*) FROM fingerprints f" + where, params).fetchone()[0])

    def families(self) -> builtins.list[str]:
        """The architecture families present, sorted."""
        rows = self.db.execute("SELECT DISTINCT family FROM fingerprints WHERE family IS NOT NULL")
        return sorted(str(row[0]) for row in rows)

    @staticmethod
    def _filter(contains: str, family: str) -> tuple[str, builtins.list[Any]]:
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if contains:
            escaped = contains.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("lower(f.name) LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        if family:
            clauses.append("f.family = ?")
            params.append(family)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def entry(self, name: str) -> LibraryEntry:
        """One fingerprint's summary (no blob is read)."""
        row = self.db.execute(_ENTRY_QUERY + " WHERE f.name = ?", (name,)).fetchone()
        if row is None:
            raise UsageError(f"the library holds no fingerprint named {sanitize(name)!r}")
        return self._entry(row)

    def describe(self, name: str) -> dict[str, Any]:
        """One fingerprint's summary (`entry`) and what it holds: tensor hashes, sketched matrices
        by role, embedding anchors, the tensor-table hash, the tokenizer and the shape config."""
        entry = self.entry(name).to_dict()
        fp = self.get(name)
        roles: dict[str, int] = {}
        for unit in fp.units:
            role = str(unit.get("role") or "?")
            roles[role] = roles.get(role, 0) + 1
        tokenizer = fp.tokenizer or {}
        return {
            **entry,
            "version": fp.version,
            "header_hash": fp.header_hash,
            "tensors": len(fp.tensor_numels),
            "sketched_matrices": len(fp.units),
            "sketch_dim": fp.sketch_dim,
            "row_sample": fp.row_sample,
            "sketched_roles": dict(sorted(roles.items())),
            "anchor_tokens": int(fp.anchors.shape[1]) if fp.anchors.ndim == 3 else 0,
            "tokenizer": {k: v for k, v in tokenizer.items() if isinstance(v, str | int | float | bool)},
            "config": {k: v for k, v in fp.config.items() if isinstance(v, str | int | float | bool)},
        }

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    # export and import --------------------------------------------------------------------------

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every fingerprint to a portable JSON-lines file and return how many.

        Line 1 is the manifest (format, version, count); then one line per fingerprint (name,
        added, size, sha256, base64 blob); the last line is a trailer with the count and the
        sha256 of the record lines, so a truncated or edited file is refused on import. Written to
        a temporary file and renamed, so an interrupted export never leaves a partial file."""
        target = Path(path)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        count = 0
        with _snapshot(self.db) as db:
            total = db.execute("SELECT count(*) FROM fingerprints").fetchone()[0]
            try:
                with temporary.open("w", encoding="utf-8") as handle:
                    manifest = {
                        "format": EXPORT_FORMAT,
                        "version": EXPORT_VERSION,
                        "schema_version": SCHEMA_VERSION,
                        "count": total,
                        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    }
                    handle.write(json.dumps(manifest, sort_keys=True) + "\n")
                    rows = db.execute(
                        "SELECT f.name, f.added, b.size, b.sha256, b.blob FROM fingerprints f "
                        "JOIN blobs b ON b.fingerprint_id = f.id ORDER BY f.name"
                    )
                    for name, added, size, sha, blob in rows:
                        if not (isinstance(name, str) and isinstance(sha, str) and isinstance(blob, bytes)):
                            raise CorruptCheckpointError(
                                f"the library's entry {sanitize(str(name))!r} is corrupt "
                                "(a name, digest or blob is not stored as one)"
                            )
                        if hashlib.sha256(blob).hexdigest() != sha:
                            raise CorruptCheckpointError(
                                f"the library's copy of {sanitize(name)!r} is corrupt (sha256 mismatch)"
                            )
                        added = checked_float(
                            added,
                            where=f"the library's entry {sanitize(str(name))!r}: added",
                            minimum=0.0,
                            maximum=MAX_TIMESTAMP,
                            error=CorruptCheckpointError,
                        )
                        size = checked_int(
                            size,
                            where=f"the library's entry {sanitize(name)!r}: size",
                            error=CorruptCheckpointError,
                        )
                        record = {
                            "name": name,
                            "added": added,
                            "size": size,
                            "sha256": sha,
                            "blob": base64.b64encode(blob).decode("ascii"),
                        }
                        line = json.dumps(record, sort_keys=True) + "\n"
                        digest.update(line.encode("utf-8"))
                        handle.write(line)
                        count += 1
                    trailer = {"end": True, "count": count, "records_sha256": digest.hexdigest()}
                    handle.write(json.dumps(trailer, sort_keys=True) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, target)
            finally:
                temporary.unlink(missing_ok=True)
        return count

    def import_(self, path: str | os.PathLike[str], *, replace: bool = False) -> int:
        """Add every fingerprint of an exported file, all or nothing, and return how many.

        Every blob's size and sha256 are checked, and every blob is decoded by
        ``Fingerprint.from_bytes`` (data only: nothing in the file is executed) before anything is
        written; the cheap-signal columns are recomputed from the decoded fingerprint, never read
        from the file. A name the library already holds is refused unless ``replace``."""
        source = Path(path)
        if not source.is_file():
            raise PathNotFoundError(f"no such file: {sanitize(str(source))}")
        records = list(_read_export(source))
        seen: set[str] = set()
        for name, *_ in records:
            if name in seen:
                raise CorruptCheckpointError(f"{sanitize(str(source))}: the name {name!r} appears twice")
            seen.add(name)
        with _transaction(self.db) as db:
            for name, added, blob, fp in records:
                self._insert(db, name, blob, cheap_signals(fp), hashes_of(fp), added, replace=replace)
        return len(records)


def existing_library(path: str | os.PathLike[str] | None) -> Library:
    """The library at ``path`` (None: the default one), which must exist: reading a library that
    is not there is a mistake to report, not an empty library to create."""
    library = Library(path)
    if not library.path.is_file():
        raise PathNotFoundError(
            f"no fingerprint library at {sanitize(str(library.path))} (create one with `unshell library add`)"
        )
    return library


_ENTRY_QUERY = (
    "SELECT f.name, f.family, f.signature, f.hidden, f.layers, f.vocab_size, f.parameters, "
    "f.tokenizer_family, f.format, f.source, f.added, b.size "
    "FROM fingerprints f JOIN blobs b ON b.fingerprint_id = f.id"
)


def default_entry_name(path: str | os.PathLike[str]) -> str:
    """The name a checkpoint gets in the library unless one is given: the Hub repo id for a
    Hugging Face cache folder or one of its snapshots (``models--org--name`` is ``org/name``),
    else the file or folder name."""
    target = Path(path)
    for folder in (target, target.parent.parent if target.parent.name == "snapshots" else None):
        if folder is not None and folder.name.startswith("models--") and len(folder.name) > len("models--"):
            return folder.name[len("models--") :].replace("--", "/")
    return target.name or str(target)


def add_checkpoint(
    library: Library,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    replace: bool = False,
    progress: ProgressReporter | None = None,
) -> LibraryEntry:
    """Fingerprint the checkpoint at ``path`` (reads its weights once), store it, return its entry.

    The name defaults to `default_entry_name`: the Hub repo id, or the file or folder name.
    ``progress``: where to report the bytes read (`unshell.progress`)."""
    from ..lineage.fingerprint import fingerprint

    chosen = _valid_name(name if name is not None else default_entry_name(path))
    if not replace and chosen in library:
        raise UsageError(f"the library already holds {sanitize(chosen)!r} (use --replace to overwrite it)")
    found = fingerprint(path, name=chosen, progress=progress)
    return library.entry(library.add(found, name=chosen, replace=replace))


def add_checkpoints(
    library: Library,
    paths: Sequence[str | os.PathLike[str]],
    *,
    name: str | None = None,
    replace: bool = False,
    progress: ProgressReporter | None = None,
) -> list[LibraryEntry]:
    """`add_checkpoint` for each of ``paths`` in turn (``name`` names one path only); each is
    stored as soon as it is fingerprinted, so an error leaves the earlier ones added."""
    if name is not None and len(paths) > 1:
        raise UsageError("--name names one entry: give one PATH with it")
    added = []
    with reporting(progress):
        if len(paths) == 1:
            return [add_checkpoint(library, paths[0], name=name, replace=replace)]
        with stage("library add", len(paths), "checkpoint") as shown:
            for path in paths:
                added.append(add_checkpoint(library, path, name=name, replace=replace))
                shown.advance()
    return added


def _valid_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise UsageError("a library entry needs a name (give one explicitly)")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise UsageError(f"invalid library entry name {sanitize(name)!r} (control characters or too long)")
    return name


def _read_export(source: Path) -> Iterator[tuple[str, float, bytes, Fingerprint]]:
    where = sanitize(str(source))
    limit = MAX_BLOB_BYTES * 4 // 3 + 4096

    def corrupt(message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{where}: {message}; nothing was imported")

    def parse(line: str, what: str) -> dict[str, Any]:
        if not line.endswith("\n"):
            raise corrupt(f"the file ends in the middle of the {what}")
        try:
            value = json.loads(line)
        except ValueError as error:
            raise corrupt(f"the {what} is not JSON ({error})") from error
        if not isinstance(value, dict):
            raise corrupt(f"the {what} is not a JSON object")
        return value

    digest = hashlib.sha256()
    with source.open("r", encoding="utf-8", newline="\n") as handle:
        try:
            manifest = parse(handle.readline(65536), "manifest")
        except UnicodeDecodeError as error:
            raise corrupt("not UTF-8 text") from error
        if manifest.get("format") != EXPORT_FORMAT:
            raise UnsupportedFormatError(f"{where} is not an unshell library export")
        version = manifest.get("version")
        if not isinstance(version, int) or version > EXPORT_VERSION:
            raise UnsupportedFormatError(
                f"{where} is an export of version {version!r}; this unshell reads version {EXPORT_VERSION}"
            )
        expected = manifest.get("count")
        count = 0
        while True:
            try:
                line = handle.readline(limit)
            except UnicodeDecodeError as error:
                raise corrupt("not UTF-8 text") from error
            if not line:
                raise corrupt("the trailer is missing (truncated file)")
            record = parse(line, f"record {count + 1}")
            if record.get("end") is True:
                if record.get("count") != count or expected != count:
                    raise corrupt(
                        f"the trailer counts {record.get('count')!r} records, the file holds {count}"
                    )
                if record.get("records_sha256") != digest.hexdigest():
                    raise corrupt("the records' sha256 does not match the trailer")
                if handle.read(1):
                    raise corrupt("data after the trailer")
                return
            digest.update(line.encode("utf-8"))
            count += 1
            name, blob64, sha = record.get("name"), record.get("blob"), record.get("sha256")
            added = record.get("added")
            if not isinstance(name, str) or not isinstance(blob64, str) or not isinstance(sha, str):
                raise corrupt(f"record {count} lacks a name, blob or sha256")
            try:
                blob = base64.b64decode(blob64, validate=True)
            except (binascii.Error, ValueError) as error:
                raise corrupt(f"record {count} ({name!r}): the blob is not base64") from error
            if len(blob) != record.get("size") or hashlib.sha256(blob).hexdigest() != sha.lower():
                raise corrupt(f"record {count} ({sanitize(name)!r}): size or sha256 does not match its blob")
            try:
                fp = _decode(blob)
            except Exception as error:
                raise corrupt(
                    f"record {count} ({sanitize(name)!r}) is not a fingerprint ({error})"
                ) from error
            if added is not None:
                added = checked_float(
                    added,
                    where=f"{where}: record {count} ({sanitize(name)!r}) added",
                    minimum=0.0,
                    maximum=MAX_TIMESTAMP,
                    error=CorruptCheckpointError,
                )
            yield _valid_name(name), time.time() if added is None else added, blob, fp


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction that holds the write lock from its start (no lock upgrade, so two
    writers queue on the busy timeout instead of deadlocking); rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@contextmanager
def _snapshot(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A read transaction: one consistent snapshot while writers go on (WAL)."""
    db.execute("BEGIN DEFERRED")
    try:
        yield db
    finally:
        db.execute("COMMIT")
