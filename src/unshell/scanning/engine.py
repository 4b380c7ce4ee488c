"""Run the per-checkpoint work of a scan on a local process pool or on Ray, and resume.

A work unit is a path (with its name and the resume key of its previous record), never bytes:
workers open the checkpoint themselves, so a Ray cluster needs the files on a shared filesystem.
Every unit goes through `run_unit`, whichever engine runs it, so that the engines give equal
records (all fields but `TIMING_FIELDS`). Workers never write the library: they return the
fingerprint to the driver, which is the only writer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from ..errors import MissingDependencyError, UsageError, failure
from ..formats.base import Checkpoint, sanitize
from ..threads import blas_limit, budget

__all__ = [
    "COMPARED_FIELDS",
    "DEFAULT_BATCH_BYTES",
    "FLEET_FIELDS",
    "RECORD_FIELDS",
    "TIMING_FIELDS",
    "Analysis",
    "ScanTask",
    "analyze_fingerprint",
    "analyze_headers",
    "comparable",
    "header_hash",
    "make_batches",
    "record_fields",
    "run_local",
    "run_ray",
    "run_unit",
]

# Every JSON line has exactly these keys, in this order.
RECORD_FIELDS = (
    "path",
    "name",
    "status",  # "ok", "error" or "skipped" (unchanged since a previous scan)
    "error",  # one line, or null
    "error_type",  # the exception class, e.g. "CorruptCheckpointError", or null
    "exit_code",  # what `unshell inspect` would exit with on this file, or null
    "mode",  # "headers", "fingerprints" or "search" (a fleet audit): what produced the fields below
    "format",
    "layout",
    "family",
    "signature",
    "parameters",
    "tensors",
    "bytes",  # bytes on disk of the weight and side files the checkpoint is made of
    "mtime_ns",  # the newest of their modification times
    "header_hash",  # `unshell.lineage.fingerprint.header_hash`: sha256 of the tensor table
    "fingerprint_bytes",  # size of the serialized fingerprint (fingerprints mode), else null
    "seconds",
)
# Fields that depend on how fast the machine was, not on the checkpoint: left out when records
# from two engines (or two runs) are compared.
TIMING_FIELDS = frozenset({"seconds"})
COMPARED_FIELDS = tuple(name for name in RECORD_FIELDS if name not in TIMING_FIELDS)
# Fields a skipped checkpoint keeps from its previous record.
CARRIED_FIELDS = (
    "mode",
    "format",
    "layout",
    "family",
    "signature",
    "parameters",
    "tensors",
    "fingerprint_bytes",
)

# A fleet audit (`scan --search LIBRARY`, mode "search") adds these after `RECORD_FIELDS`: the
# library's search and the disclosure audit of the checkpoint (`unshell.scanning.fleet`).
FLEET_FIELDS = (
    "library_key",  # the searched library's content digest: a record stands only for that content
    "audit_level",  # the audit's level (`unshell.auditing.LEVELS`)
    "base",  # the library entry the weights derive from (never the checkpoint itself), or null
    "verdict",  # "identical" or "derived" against `base`, or null
    "p_holm",  # `base`'s p-value, Holm-adjusted over the whole library (null for identical)
    "how",  # how `base` was changed, as `compare` says (e.g. "finetune", "quantized")
    "candidates",  # the best library candidates: name, verdict, p_value, p_holm, how, evidence
    "findings",  # the audit's findings: level and message, most severe first
)
SEARCH_MODE = "search"

DEFAULT_BATCH_BYTES = 256 * 2**20
DEFAULT_BATCH_UNITS = 16


def record_fields(mode: str | None) -> tuple[str, ...]:
    """The keys of a record made in ``mode``, in order."""
    return RECORD_FIELDS + FLEET_FIELDS if mode == SEARCH_MODE else RECORD_FIELDS


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its timing fields, for comparing runs and engines."""
    return {key: record.get(key) for key in record_fields(record.get("mode")) if key not in TIMING_FIELDS}


@dataclass(frozen=True)
class ScanTask:
    """One checkpoint to scan: what a worker receives (a path, never bytes)."""

    index: int
    path: str
    name: str
    size_hint: int = 0  # bytes on disk, as the driver estimated them (for Ray batching)
    previous: dict[str, Any] | None = None  # the previous record, when it may be resumed from


@dataclass
class Analysis:
    """What a work function found: record fields, and the fingerprint for the library if any."""

    fields: dict[str, Any]
    fingerprint: Any = None
    fingerprint_bytes: int | None = None


# A work function: (opened checkpoint, path, name) -> Analysis. It must be importable by name
# (a module-level function) so that process pools and Ray can send it to their workers.
WorkFunction = Callable[[Checkpoint, str, str], Analysis]


def analyze_headers(checkpoint: Checkpoint, path: str, name: str) -> Analysis:
    """The header-only work: what `unshell inspect` says (family, parameters), no tensor data."""
    from ..lineage.fingerprint import signature_of
    from ..model import Model

    result = Model.of(checkpoint).inspection
    signature = signature_of(result.recognition.family, dict(result.recognition.config))
    return Analysis(
        fields={
            "family": result.family,
            "parameters": result.parameters,
            "signature": signature,
        }
    )


def analyze_fingerprint(checkpoint: Checkpoint, path: str, name: str) -> Analysis:
    """The fingerprint work: `unshell.lineage.fingerprint.fingerprint_checkpoint` (streams the
    weights once, one tensor in memory at a time)."""
    from ..lineage.fingerprint import fingerprint_checkpoint

    fp = fingerprint_checkpoint(checkpoint, name=name, path=path)
    return Analysis(
        fields={"family": fp.family, "signature": fp.signature, "parameters": fp.parameters},
        fingerprint=fp,
        fingerprint_bytes=len(fp.to_bytes()),
    )


WORK_FUNCTIONS: dict[str, WorkFunction] = {"headers": analyze_headers, "fingerprints": analyze_fingerprint}


def header_hash(checkpoint: Checkpoint) -> str:
    """The fingerprint's `header_hash`: sha256 of the format and the tensor table (names, dtypes,
    shapes, files, offsets, sizes), so a record's hash equals its library fingerprint's."""
    from ..lineage.fingerprint import header_hash as fingerprint_header_hash

    return fingerprint_header_hash(checkpoint)


def _stat_key(checkpoint: Checkpoint) -> tuple[int, int]:
    """(bytes, newest mtime_ns) over the weight files and the side files (config, tokenizer...)."""
    paths = {os.path.realpath(path) for path in [*checkpoint.files, *checkpoint.sidecars.values()]}
    total = 0
    newest = 0
    for path in sorted(paths):
        try:
            info = os.stat(path)
        except OSError:
            continue
        total += info.st_size
        newest = max(newest, info.st_mtime_ns)
    return total, newest


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return sanitize(text, limit=500)


def _empty_record(unit: ScanTask, mode: str) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(record_fields(mode))
    record.update(path=unit.path, name=unit.name, mode=mode, bytes=unit.size_hint)
    return record


def run_unit(unit: ScanTask, mode: str, work: WorkFunction | None = None) -> tuple[dict[str, Any], Any]:
    """Scan one checkpoint: (its record, the fingerprint for the library or None).

    An error in the checkpoint becomes an error record; nothing but KeyboardInterrupt and
    SystemExit leaves this function.
    """
    from ..formats import open_checkpoint

    start = time.perf_counter()
    record = _empty_record(unit, mode)
    fingerprint = None
    work = work or WORK_FUNCTIONS[mode]
    fields = record_fields(mode)
    carried = CARRIED_FIELDS + FLEET_FIELDS if mode == SEARCH_MODE else CARRIED_FIELDS
    try:
        with open_checkpoint(unit.path) as checkpoint:
            size, mtime_ns = _stat_key(checkpoint)
            digest = header_hash(checkpoint)
            record.update(
                format=checkpoint.format,
                layout=checkpoint.layout,
                tensors=len(checkpoint.tensors),
                bytes=size,
                mtime_ns=mtime_ns,
                header_hash=digest,
            )
            previous = unit.previous
            if _resumable(previous, mode, size, mtime_ns, digest):
                assert previous is not None
                record.update({key: previous.get(key) for key in carried})
                record["status"] = "skipped"
            else:
                # One BLAS thread per worker: the workers are the parallelism (`unshell.threads`),
                # and a matrix product's rounding depends on how many threads split it, so the
                # local pool and Ray (whose workers start with OMP_NUM_THREADS=1) give equal
                # records, float for float.
                with blas_limit(1):
                    analysis = work(checkpoint, unit.path, unit.name)
                record.update({k: v for k, v in analysis.fields.items() if k in fields})
                record["fingerprint_bytes"] = analysis.fingerprint_bytes
                fingerprint = analysis.fingerprint
                record["status"] = "ok"
    except Exception as error:  # one bad file must not stop a fleet scan
        shown = failure(error)
        record.update(
            status="error", error=_one_line(error), error_type=shown.error_type, exit_code=shown.exit_code
        )
        fingerprint = None
    record["seconds"] = round(time.perf_counter() - start, 6)
    return record, fingerprint


def _resumable(previous: dict[str, Any] | None, mode: str, size: int, mtime_ns: int, digest: str) -> bool:
    if not previous or previous.get("status") not in ("ok", "skipped"):
        return False
    if mode == "fingerprints" and previous.get("mode") != "fingerprints":
        return False  # a header-only record does not stand for a fingerprint
    if SEARCH_MODE in (mode, previous.get("mode")) and previous.get("mode") != mode:
        return False  # a fleet audit's record stands only for a fleet audit (and only it has its fields)
    return (
        previous.get("bytes") == size
        and previous.get("mtime_ns") == mtime_ns
        and previous.get("header_hash") == digest
    )


def run_batch(
    units: list[ScanTask], mode: str, work: WorkFunction | None = None
) -> list[tuple[dict[str, Any], Any]]:
    """Several small units in one task (Ray batches small checkpoints)."""
    return [run_unit(unit, mode, work) for unit in units]


Result = tuple[ScanTask, dict[str, Any], Any]


# -- local engine --------------------------------------------------------------------------------


def run_local(
    units: list[ScanTask], mode: str, *, workers: int | None = None, work: WorkFunction | None = None
) -> Iterator[Result]:
    """Run units on a process pool of ``workers`` processes (default: `unshell.threads.budget`), yielding
    results as they complete. One worker (or one unit) runs in this process, with no pool.

    A worker process that dies (a crash in native code) breaks the pool: every unit it had not
    finished is retried alone in a one-process pool, so only the culprit gets an error record.
    """
    count = workers or budget()
    if count <= 1 or len(units) <= 1:
        for unit in units:
            record, fingerprint = run_unit(unit, mode, work)
            yield unit, record, fingerprint
        return
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    # forkserver: forking a driver that holds threads (a progress bar, Ray's client) is unsafe.
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    remaining = list(units)
    while remaining:
        crashed: list[ScanTask] = []
        with ProcessPoolExecutor(max_workers=min(count, len(remaining)), mp_context=context) as pool:
            futures: dict[Future[tuple[dict[str, Any], Any]], ScanTask] = {
                pool.submit(run_unit, unit, mode, work): unit for unit in remaining
            }
            remaining = []
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: futures[f].index):
                    unit = futures[future]
                    try:
                        record, fingerprint = future.result()
                    except BrokenProcessPool:
                        crashed.append(unit)
                        continue
                    yield unit, record, fingerprint
        if crashed:
            # Which unit killed the pool is unknown: retry each alone.
            for unit in sorted(crashed, key=lambda u: u.index):
                yield _isolated(unit, mode, work, context)


def _isolated(unit: ScanTask, mode: str, work: WorkFunction | None, context: Any) -> Result:
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            record, fingerprint = pool.submit(run_unit, unit, mode, work).result()
        except BrokenProcessPool:
            record = _empty_record(unit, mode)
            record.update(
                status="error",
                error="the worker process died while reading this checkpoint",
                error_type="WorkerCrashed",
                exit_code=1,
                seconds=0.0,
            )
            fingerprint = None
    return unit, record, fingerprint


# -- Ray engine ----------------------------------------------------------------------------------


def make_batches(
    units: Iterable[ScanTask],
    *,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    batch_units: int = DEFAULT_BATCH_UNITS,
) -> list[list[ScanTask]]:
    """Large checkpoints (``size_hint >= batch_bytes``) one per task; small ones grouped until a
    group holds ``batch_bytes`` or ``batch_units`` checkpoints. Order is kept within a group."""
    batches: list[list[ScanTask]] = []
    current: list[ScanTask] = []
    current_bytes = 0
    for unit in units:
        if unit.size_hint >= batch_bytes:
            batches.append([unit])
            continue
        current.append(unit)
        current_bytes += unit.size_hint
        if current_bytes >= batch_bytes or len(current) >= batch_units:
            batches.append(current)
            current, current_bytes = [], 0
    if current:
        batches.append(current)
    return batches


def import_ray() -> Any:
    """Ray, or MissingDependencyError naming the extra."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            "--engine ray needs Ray: pip install 'unshell[ray]' (or pip install ray)"
        ) from None
    return ray


def run_ray(
    units: list[ScanTask],
    mode: str,
    *,
    address: str | None = None,
    workers: int | None = None,
    work: WorkFunction | None = None,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[Result]:
    """Run units as Ray tasks, yielding results as tasks complete.

    Uses the Ray runtime already initialized in this process if there is one; otherwise
    ``ray.init(address=address)`` (a running cluster, e.g. ``"auto"`` or ``"ray://host:10001"``),
    or a local one with ``workers`` CPUs when no address is given; a runtime started here is shut
    down at the end. Workers must see the same paths (a shared filesystem) and have unshell installed.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers or budget(), **options)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(run_batch)
        batches = make_batches(units, batch_bytes=batch_bytes)
        refs = {remote.remote(batch, mode, work): batch for batch in batches}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                batch = refs.pop(ref)
                try:
                    results = ray.get(ref)
                except Exception as error:  # the task itself died (worker crash, node lost)
                    for unit in batch:
                        record = _empty_record(unit, mode)
                        record.update(
                            status="error",
                            error=_one_line(error).split(". ")[0][:300],
                            error_type=type(error).__name__,
                            exit_code=1,
                            seconds=0.0,
                        )
                        yield unit, record, None
                    continue
                for unit, (record, fingerprint) in zip(batch, results, strict=True):
                    yield unit, record, fingerprint
    finally:
        if started:
            ray.shutdown()


def check_engine(engine: str) -> None:
    if engine not in ("local", "ray"):
        raise UsageError(f"unknown engine {engine!r}: use 'local' or 'ray'")
