"""Benchmark: where one `compare` spends its CPU, phase by phase (issue 14's profile, without cProfile's overhead).

    python benchmarks/bench_compare_phases.py A B [--quick] [--threads 1] [--json OUT.json]

Runs one `compare(A, B)` in this process, after evicting both models' files from the page cache,
and prints its wall and CPU seconds, its peak RSS and the CPU seconds (user + system, every thread
of the process; the kernel's share beside them: page faults, reads from the disk, reclaim), wall
seconds and bytes read from the disk (``/proc/self/io``: what the page cache did not hold) spent
in each phase: the content hashes and sketches of each model in one pass
(`read_once`, since session 12; before it, the content hashes, `Model.content_hashes`, then the
sketches, `model_units`, A's and B's), the embedding alignment (`_best_alignment`), the value-added account
(`assess`) and the expert map. On a shared machine CPU seconds are the figures to hold on to: a
loaded machine stretches the wall time, much less the CPU time. ``--json`` writes the result's
document (sorted keys), to check that a change left every output byte as it was.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compare import drop_cache

PHASES = (
    ("unshell.lineage.compare", "read_once", "hashes and sketches (read_once)"),
    ("unshell.model", "Model.content_hashes", "content hashes"),
    ("unshell.lineage.compare", "model_units", "sketches (model_units)"),
    ("unshell.lineage.compare", "_best_alignment", "alignment (_best_alignment)"),
    ("unshell.lineage.compare", "assess", "value added (assess)"),
    ("unshell.lineage.compare", "expert_map", "expert map"),
)


def files_of(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".gguf", ".bin"))


def disk_bytes() -> int:
    """Bytes this process made the disk read so far (page-cache misses, every thread)."""
    try:
        with open("/proc/self/io") as handle:
            fields = dict(line.split(": ") for line in handle.read().splitlines())
        return int(fields["read_bytes"])
    except (OSError, KeyError, ValueError):  # not Linux
        return 0


def timed(
    function: Callable[..., Any],
    spent: collections.Counter[str],
    walls: collections.Counter[str],
    label: str,
    disk: collections.Counter[str],
    system: collections.Counter[str],
) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, wall_start, read_start = time.process_time(), time.perf_counter(), disk_bytes()
        system_start = os.times().system
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] += time.process_time() - start
            system[label] += os.times().system - system_start
            walls[label] += time.perf_counter() - wall_start
            disk[label] += disk_bytes() - read_start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--quick", action="store_true", help="compare --quick")
    parser.add_argument(
        "--threads", type=int, default=None, help="unshell's thread budget (default: every core)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the result's document here")
    args = parser.parse_args()

    import importlib

    import unshell
    from unshell.threads import limited

    spent: collections.Counter[str] = collections.Counter()
    walls: collections.Counter[str] = collections.Counter()
    disk: collections.Counter[str] = collections.Counter()
    system: collections.Counter[str] = collections.Counter()
    for module_name, dotted, label in PHASES:
        owner: Any = importlib.import_module(module_name)
        *path, attribute = dotted.split(".")
        for part in path:
            owner = getattr(owner, part)
        if not hasattr(owner, attribute):  # an older tree (``PYTHONPATH=OLD/src``) without this phase
            continue
        setattr(owner, attribute, timed(getattr(owner, attribute), spent, walls, label, disk, system))

    drop_cache(files_of(args.a) + files_of(args.b))
    load = os.getloadavg()[0]
    start, cpu_start, read_start = time.perf_counter(), time.process_time(), disk_bytes()
    system_start = os.times().system
    with limited(args.threads):
        result = unshell.compare(str(args.a), str(args.b), quick=args.quick)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    system_all = os.times().system - system_start
    read = disk_bytes() - read_start
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_dict(), sort_keys=True, indent=1, default=str))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{'quick' if args.quick else 'full'} compare: wall {wall:.1f} s, CPU {cpu:.1f} s, peak RSS {rss:,.0f} MiB, "
        f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after; {result.verdict}, p = {result.p_value}"
    )
    print(f"{'phase':32} {'CPU s':>7} {'of it sys':>9} {'share':>6} {'wall s':>7} {'disk GB':>8}")
    for label, seconds in spent.most_common():
        print(
            f"{label:32} {seconds:>7.1f} {system[label]:>9.1f} {seconds / cpu:>6.1%} {walls[label]:>7.1f}"
            f" {disk[label] / 1e9:>8.2f}"
        )
    rest = read - sum(disk.values())
    print(
        f"{'the rest':32} {cpu - sum(spent.values()):>7.1f} {system_all - sum(system.values()):>9.1f} {'':>6}"
        f" {wall - sum(walls.values()):>7.1f} {rest / 1e9:>8.2f}"
    )
    print(f"{'all':32} {cpu:>7.1f} {system_all:>9.1f} {'':>6} {wall:>7.1f} {read / 1e9:>8.2f}")


if __name__ == "__main__":
    main()
