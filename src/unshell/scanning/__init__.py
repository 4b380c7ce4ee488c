"""`unshell scan`: fingerprint every checkpoint under some folders, on a local pool or on Ray.

::

    from unshell.scanning import scan
    summary = scan(["/models", "~/.cache/huggingface/hub"], output="scan.jsonl", library="fleet.lib")
    summary.ok, summary.errors, summary.skipped
    audit = scan(["/models"], output="fleet.jsonl", search="known.sqlite")   # a fleet audit
    audit.fleet["levels"], audit.fleet["derived"]

One JSON line per checkpoint goes to ``output`` (fields in `RECORD_FIELDS`). A checkpoint that
fails is recorded with its error and exit code, and the scan goes on. A second scan skips the
checkpoints whose files (total size, newest mtime) and tensor table (header hash) did not change
since the previous output or the library recorded them; their record says ``"skipped"`` and keeps
the previous fields, so each output is a complete picture of the fleet.

With ``search`` (a library of known bases), the scan is a fleet audit (`unshell.scanning.fleet`):
each checkpoint is also searched against that library and audited, its record gets
`FLEET_FIELDS` (mode ``"search"``), and the summary counts audit levels and lists the derived
pairs. Its records resume only a fleet audit against the same library content.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnshellError, UsageError
from ..formats.base import sanitize
from ..progress import ProgressReporter, reporting, stage
from .discover import DEFAULT_MAX_DEPTH, Found, discover, discover_found
from .engine import (
    CARRIED_FIELDS,
    COMPARED_FIELDS,
    DEFAULT_BATCH_BYTES,
    FLEET_FIELDS,
    RECORD_FIELDS,
    SEARCH_MODE,
    TIMING_FIELDS,
    ScanTask,
    WorkFunction,
    check_engine,
    comparable,
    run_local,
    run_ray,
)

__all__ = [
    "COMPARED_FIELDS",
    "FLEET_FIELDS",
    "RECORD_FIELDS",
    "TIMING_FIELDS",
    "Found",
    "ScanSummary",
    "comparable",
    "discover",
    "discover_found",
    "read_records",
    "scan",
]

PARTIAL_SUFFIX = ".partial"


@dataclass
class ScanSummary:
    """What a scan did. ``records`` are in discovery order (the order of the output file)."""

    records: list[dict[str, Any]]
    engine: str
    mode: str
    seconds: float
    output: Path | None = None
    library_added: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    # A fleet audit's (``search`` given): the library searched ({path, size, key}), and
    # `fleet.fleet_summary` of the records (counts by audit level, the derived pairs).
    searched: dict[str, Any] | None = None
    fleet: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.counts = {status: 0 for status in ("ok", "error", "skipped")}
        for record in self.records:
            self.counts[record["status"]] = self.counts.get(record["status"], 0) + 1

    @property
    def total(self) -> int:
        return len(self.records)

    @property
    def ok(self) -> int:
        return self.counts["ok"]

    @property
    def errors(self) -> int:
        return self.counts["error"]

    @property
    def skipped(self) -> int:
        return self.counts["skipped"]

    @property
    def bytes(self) -> int:
        """Bytes on disk of the checkpoints scanned this time (skipped ones not counted)."""
        return sum(r["bytes"] or 0 for r in self.records if r["status"] != "skipped")

    @property
    def exit_code(self) -> int:
        """0 when every checkpoint was read (or skipped), 1 when any failed."""
        return 1 if self.errors else 0

    def to_dict(self) -> dict[str, Any]:
        out = {
            "engine": self.engine,
            "mode": self.mode,
            "total": self.total,
            "ok": self.ok,
            "errors": self.errors,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "library_added": self.library_added,
            "output": None if self.output is None else str(self.output),
        }
        if self.searched is not None:
            out["search"] = {"library": self.searched, **(self.fleet or {})}
        return out


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a scan output (JSON lines); lines that do not parse are left out."""
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by an interrupted scan
                if isinstance(record, dict) and isinstance(record.get("path"), str):
                    records.append(record)
    except FileNotFoundError:
        return []
    return records


def scan(
    roots: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    library: Any = None,
    engine: str = "local",
    address: str | None = None,
    output: str | os.PathLike[str] | None = None,
    fingerprints: bool = True,
    workers: int | None = None,
    progress: ProgressReporter | bool | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    work: WorkFunction | None = None,
    search: str | os.PathLike[str] | None = None,
) -> ScanSummary:
    """Scan every checkpoint under ``roots`` (see `discover`), one JSON line each to ``output``.

    Args:
        library: a `unshell.library.store.Library` or the path of one; fingerprints that were
            computed are added to it (by this process only) under the checkpoint's name.
        engine: ``"local"`` (a process pool of ``workers`` processes, default the thread budget,
            `unshell.threads.budget`, each with one BLAS thread; one
            worker runs in this process) or ``"ray"`` (Ray tasks; ``address`` names a running
            cluster, else a local one with ``workers`` CPUs is started and stopped).
        output: the JSON-lines file; an existing one (and its ``.partial`` journal, left by an
            interrupted scan) is read first to resume from, then replaced.
        fingerprints: compute fingerprints (reads weights); ``False`` reads headers only.
        progress: where to report checkpoints done (`unshell.progress`); None or a bool: to the
            reporter the caller bound, if any (a bool is accepted for older callers).
        work: replaces the per-checkpoint work (a module-level function, see `engine.WorkFunction`).
        search: the path of a library of known bases: a fleet audit. Each checkpoint is also
            searched against it and audited; records get `FLEET_FIELDS`, the summary its `fleet`.
            Workers open it by its path (on Ray, a shared filesystem); it is never written.

    Raises:
        UsageError: an unknown engine; ``search`` with ``fingerprints=False``, or naming the
        library the fingerprints are added to. PathNotFoundError: a root, or the ``search``
        library, that does not exist. MissingDependencyError: ``engine="ray"`` without Ray.
    """
    check_engine(engine)
    if isinstance(roots, str | os.PathLike):
        roots = [roots]
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1, not {workers}")
    mode = "fingerprints" if fingerprints else "headers"
    if search is not None and not fingerprints:
        raise UsageError("a fleet audit (--search) reads the weights: it cannot be headers-only")
    store = _open_library(library)
    try:
        searched = None
        if search is not None:
            searched, work = _fleet_work(search, store, work)
            mode = SEARCH_MODE
        with reporting(None if isinstance(progress, bool) else progress):
            summary = _scan(
                roots,
                store,
                engine,
                address,
                output,
                mode,
                workers,
                max_depth,
                batch_bytes,
                work,
                None if searched is None else searched["key"],
            )
        if searched is not None:
            from .fleet import fleet_summary

            summary.searched = searched
            summary.fleet = fleet_summary(summary.records)
        return summary
    finally:
        if store is not library:
            store.close()  # opened here from a path


def _scan(
    roots: Iterable[str | os.PathLike[str]],
    store: Any,
    engine: str,
    address: str | None,
    output: str | os.PathLike[str] | None,
    mode: str,
    workers: int | None,
    max_depth: int,
    batch_bytes: int,
    work: WorkFunction | None,
    library_key: str | None,
) -> ScanSummary:
    started = time.perf_counter()
    output_path = None if output is None else Path(output)
    found = list(discover_found(roots, max_depth=max_depth))
    previous = _previous_records(output_path, store, mode, library_key)
    units = [
        ScanTask(
            index=index,
            path=str(item.path),
            name=item.name,
            size_hint=_size_hint(item.path),
            previous=previous.get(str(item.path)),
        )
        for index, item in enumerate(found)
    ]
    if engine == "ray":
        results = run_ray(units, mode, address=address, workers=workers, work=work, batch_bytes=batch_bytes)
    else:
        results = run_local(units, mode, workers=workers, work=work)
    records: list[dict[str, Any] | None] = [None] * len(units)
    added = errors = skipped = 0
    journal = None
    if output_path is not None:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        journal = open(_partial(output_path), "a", encoding="utf-8")  # noqa: SIM115 (closed below)
    try:
        with stage("scan", len(units), "checkpoint") as bar:
            for unit, record, fingerprint in results:
                if fingerprint is not None and store is not None:
                    try:
                        _library_add(store, fingerprint, record)
                        added += 1
                    except UnshellError as error:  # e.g. a fingerprint over the library's size limit
                        record.update(
                            status="error",
                            error=sanitize(" ".join(f"library: {error}".split()), limit=500),
                            error_type=type(error).__name__,
                            exit_code=error.exit_code,
                        )
                records[unit.index] = record
                if journal is not None:
                    journal.write(json.dumps(record) + "\n")
                    journal.flush()
                errors += record["status"] == "error"
                skipped += record["status"] == "skipped"
                bar.status(f"{errors} errors, {skipped} skipped")
                bar.advance()
    finally:
        if journal is not None:
            journal.close()
    done = [record for record in records if record is not None]
    if output_path is not None:
        temporary = output_path.with_name(output_path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            for record in done:
                handle.write(json.dumps(record) + "\n")
        os.replace(temporary, output_path)
        _partial(output_path).unlink(missing_ok=True)
    return ScanSummary(
        records=done,
        engine=engine,
        mode=mode,
        seconds=time.perf_counter() - started,
        output=output_path,
        library_added=added,
    )


# -- resume --------------------------------------------------------------------------------------


def _partial(output: Path) -> Path:
    return output.with_name(output.name + PARTIAL_SUFFIX)


def _previous_records(
    output: Path | None, store: Any, mode: str, library_key: str | None = None
) -> dict[str, dict[str, Any]]:
    """The latest record of each path: the library's resume keys, then the previous output,
    then the journal of an interrupted scan (later sources win). In a fleet audit, only records
    of a search against the same library content count."""
    previous: dict[str, dict[str, Any]] = {}
    if store is not None:
        for record in _library_resume_records(store):
            previous[record["path"]] = record
    if output is not None:
        for source in (output, _partial(output)):
            for record in read_records(source):
                previous[record["path"]] = record
    if store is not None and mode in ("fingerprints", SEARCH_MODE):
        # A fingerprint recorded as done must still be in the library to be skipped.
        previous = {path: r for path, r in previous.items() if _library_has(store, r.get("name"))}
    if mode == SEARCH_MODE:
        previous = {path: r for path, r in previous.items() if r.get("library_key") == library_key}
    return previous


def _size_hint(path: Path) -> int:
    """Bytes on disk, cheaply: a file's size, a folder's files (a cache repo's blobs)."""
    try:
        if path.is_file():
            return path.stat().st_size
        folder = path / "blobs" if (path / "blobs").is_dir() else path
        return sum(entry.stat().st_size for entry in folder.iterdir() if entry.is_file())
    except OSError:
        return 0


# -- the fleet audit's library (read by the workers, by its path) -----------------------------------


def _fleet_work(
    search: str | os.PathLike[str], store: Any, work: WorkFunction | None
) -> tuple[dict[str, Any], WorkFunction]:
    """What the library searched is ({path, size, key}), and the fleet work function."""
    from ..library import existing_library
    from .fleet import analyze_search, library_key

    if work is not None:
        raise UsageError("a fleet audit (--search) does its own work: give no work function")
    # Opened here first: a missing library is one error before any work, and a migration of an
    # older schema happens once, not in every worker at the same time.
    with existing_library(search) as searched:
        path = searched.path.resolve()
        target = getattr(store, "path", None)
        if target is not None and Path(target).resolve() == path:
            raise UsageError(
                "the library searched (--search) cannot be the one fingerprints are added to "
                "(--library): every checkpoint would find itself"
            )
        info: dict[str, Any] = {"path": str(path), "size": len(searched), "key": library_key(searched)}
    analysis = functools.partial(
        analyze_search, library_path=info["path"], key=info["key"], keep_fingerprint=store is not None
    )
    return info, analysis


# -- the library (written here only: workers return fingerprints to the driver) ----------------


def _open_library(library: Any) -> Any:
    if library is None or not isinstance(library, str | os.PathLike):
        return library
    from ..library.store import Library  # type: ignore[import-not-found,unused-ignore]

    return Library(library)


def _library_has(store: Any, name: Any) -> bool:
    if not isinstance(name, str):
        return False
    try:
        return name in store
    except TypeError:  # a library-like object without __contains__
        try:
            return store.get(name) is not None
        except (KeyError, LookupError, UsageError):
            return False


def _library_add(store: Any, fingerprint: Any, record: dict[str, Any]) -> None:
    store.add(fingerprint, name=record["name"], replace=True)
    remember = getattr(store, "set_resume_key", None)
    if callable(remember):
        remember(record["name"], _resume_key(record))


def _resume_key(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("path", "name", "status", "bytes", "mtime_ns", "header_hash", *CARRIED_FIELDS)
    return {key: record.get(key) for key in dict.fromkeys(keys)}


def _library_resume_records(store: Any) -> Iterator[dict[str, Any]]:
    keys = getattr(store, "resume_keys", None)
    if not callable(keys):
        return
    for record in keys():
        if isinstance(record, dict) and isinstance(record.get("path"), str):
            yield record
