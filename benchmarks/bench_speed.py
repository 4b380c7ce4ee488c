"""Benchmark issue 14: compare, compare --quick, fingerprint (`library add`) and search's lineage
stage against a plain sequential read of the same files, measured in one run.

    python benchmarks/make_7b_pair.py DIR --layers 32      # or make_real_pair.py for a real pair
    python benchmarks/bench_speed.py A B [--repeat 3] [--steps read,compare,quick,fingerprint,search] [--candidate M]

Every step but the read runs in its own process (so its peak RSS is its own), after A's and B's
files are evicted from the page cache (``posix_fadvise(POSIX_FADV_DONTNEED)``). "read" is a plain
sequential read of both models' files in 16 MiB chunks; fingerprint and search read one model (A,
resp. B), so their ratio is taken against the read of that model alone. "search" fingerprints A
into a fresh library first (untimed), evicts, then times `search(B)`'s lineage stage for the one
candidate (``--candidate M``, repeatable: M's fingerprint joins the library too, and the figure is
per candidate tested; each candidate's own wall and CPU seconds are listed below the table, the
suspect's comparison with it alone: what a search prepares for a batch of candidates, their
alignments and the suspect's screened sketches, is in the stage's figure, not in theirs). "CPU s" is the step's user + system time (every thread; for search also the per-candidate CPU of
the lineage stage alone, the suspect's hashing excluded), which a loaded machine
inflates far less than wall time. ``--profile DIR`` writes each step's cProfile to DIR/STEP.prof (read them with
``python -m pstats``). Figures are medians over ``--repeat`` runs; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compare import drop_cache, sequential_read

CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
step, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
evict = json.loads(sys.argv[4])
profile_to = sys.argv[5] if len(sys.argv) > 5 else ""
others = json.loads(sys.argv[6]) if len(sys.argv) > 6 else []
search_workers = int(sys.argv[7]) if len(sys.argv) > 7 else 1
def drop():
    import os
    for path in evict:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
import unshell
out = {}
if profile_to:
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
if step in ("compare", "quick"):
    start = time.perf_counter()
    result = unshell.compare(a, b, quick=step == "quick")
    out = {"seconds": time.perf_counter() - start, "verdict": result.verdict, "p_value": result.p_value}
elif step == "fingerprint":
    from unshell.library import Library
    from unshell.lineage.fingerprint import fingerprint
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        fp = fingerprint(a, name="a")
        Library(Path(work) / "library.sqlite").add(fp, name="a")
        out = {"seconds": time.perf_counter() - start, "verdict": "", "p_value": None}
elif step == "search":
    from unshell.library import Library, search
    from unshell.lineage.fingerprint import fingerprint
    with tempfile.TemporaryDirectory() as work:
        library = Library(Path(work) / "library.sqlite")
        library.add(fingerprint(a, name="a"), name="a")
        for index, other in enumerate(others):
            library.add(fingerprint(other, name=f"other-{index}"), name=f"other-{index}")
        drop()
        searching = sys.modules["unshell.library.search"]
        compare_all, lineage_cpu = searching._compare_all, []
        def timed(*args, **kwargs):
            begin = time.process_time()
            try:
                return compare_all(*args, **kwargs)
            finally:
                lineage_cpu.append(time.process_time() - begin)
        searching._compare_all = timed
        fingerprints = sys.modules["unshell.lineage.fingerprint"]  # search imports it from there per call
        each, compare_one = [], fingerprints.compare_with_fingerprint
        def timed_one(base, *args, **kwargs):
            begin, cpu_begin = time.perf_counter(), time.process_time()
            try:
                return compare_one(base, *args, **kwargs)
            finally:
                each.append((base.name, time.perf_counter() - begin, time.process_time() - cpu_begin))
        fingerprints.compare_with_fingerprint = timed_one
        result = search(b, library, top=1 + len(others), workers=search_workers or None)
        c = result.candidates[0]
        verdicts = {x.name: x.verdict for x in result.candidates}
        out = {"seconds": result.lineage_seconds / max(result.tested, 1), "verdict": c.verdict,
               "p_value": c.p_adjusted, "stage_cpu": sum(lineage_cpu) / max(result.tested, 1),
               "each": [[name, wall, cpu, verdicts.get(name, "")] for name, wall, cpu in each]}
if profile_to:
    profiler.disable()
    profiler.dump_stats(profile_to)
usage = resource.getrusage(resource.RUSAGE_SELF)
out["rss"] = usage.ru_maxrss * 1024
out["cpu"] = usage.ru_utime + usage.ru_stime
print(json.dumps(out))
"""


def files_of(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".gguf", ".bin"))


def run_step(
    step: str,
    a: Path,
    b: Path,
    evict: list[Path],
    profile: str = "",
    others: list[Path] | None = None,
    search_workers: int = 1,
) -> dict[str, object]:
    drop_cache(evict)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            step,
            str(a),
            str(b),
            json.dumps([str(p) for p in evict]),
            profile,
            json.dumps([str(p) for p in others or []]),
            str(search_workers),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode:
        raise RuntimeError(f"{step} failed: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--steps", default="read,compare,quick,fingerprint,search")
    parser.add_argument(
        "--profile", default="", help="folder: each step's cProfile of its last run goes to STEP.prof there"
    )
    parser.add_argument(
        "--candidate",
        type=Path,
        action="append",
        default=[],
        help="search: another model whose fingerprint joins A's in the library (repeatable), so the "
        "lineage stage tests several candidates and the per-candidate figure includes what they share",
    )
    parser.add_argument(
        "--search-workers",
        type=int,
        default=1,
        help="search: candidates tested side by side (default 1; 0: search's own default, the thread budget up to 4)",
    )
    args = parser.parse_args()
    steps = args.steps.split(",")
    files_a, files_b = files_of(args.a), files_of(args.b)
    both = files_a + files_b
    load_before = os.getloadavg()
    reads: dict[str, list[float]] = {"both": [], "a": [], "b": []}
    results: dict[str, list[dict[str, object]]] = {s: [] for s in steps if s != "read"}
    for _ in range(args.repeat):
        reads["both"].append(sequential_read(both))
        reads["a"].append(sequential_read(files_a))
        reads["b"].append(sequential_read(files_b))
        for step in results:
            profile = str(Path(args.profile) / f"{step}.prof") if args.profile else ""
            results[step].append(
                run_step(step, args.a, args.b, both, profile, args.candidate, args.search_workers)
            )
    load_after = os.getloadavg()
    read = {k: statistics.median(v) for k, v in reads.items() if v}
    size = {"both": sum(p.stat().st_size for p in both), "a": sum(p.stat().st_size for p in files_a)}
    size["b"] = size["both"] - size["a"]
    print(
        f"cores: {os.cpu_count()}  repeats: {args.repeat}  load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
    )
    print(f"A: {args.a} ({size['a']:,} bytes)  B: {args.b} ({size['b']:,} bytes)")
    print(
        f"read both: {read['both']:.2f} s (runs {', '.join(f'{x:.2f}' for x in reads['both'])}); A {read['a']:.2f} s; B {read['b']:.2f} s"
    )
    print(
        f"{'step':12} {'median s':>9} {'runs':>24} {'baseline':>9} {'ratio':>6} {'CPU s':>7} {'peak RSS':>9}  verdict"
    )
    baseline_of = {"compare": "both", "quick": "both", "fingerprint": "a", "search": "b"}
    for step, runs in results.items():
        seconds = [float(r["seconds"]) for r in runs]  # type: ignore[arg-type]
        median = statistics.median(seconds)
        base = read[baseline_of[step]]
        rss = max(int(r["rss"]) for r in runs)  # type: ignore[call-overload]
        cpu = statistics.median(float(r["cpu"]) for r in runs)  # type: ignore[arg-type]
        last = runs[-1]
        stage = [float(r["stage_cpu"]) for r in runs if "stage_cpu" in r]  # type: ignore[arg-type]
        print(
            f"{step:12} {median:>9.2f} {', '.join(f'{x:.1f}' for x in seconds):>24} {baseline_of[step]:>9} "
            f"{median / base:>6.2f} {cpu:>7.1f} {rss / 2**20:>7.0f}MiB  {last['verdict']} p={last['p_value']}"
            + (f"  (lineage stage CPU s per candidate: {statistics.median(stage):.1f})" if stage else "")
        )
        for name, wall, cpu_s, verdict in last.get("each", []):  # type: ignore[attr-defined]
            print(f"  candidate {name}: {wall:.2f} s wall, {cpu_s:.1f} CPU s, {verdict} (last run)")


if __name__ == "__main__":
    main()
