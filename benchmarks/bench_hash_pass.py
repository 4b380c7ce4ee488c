"""Benchmark issue 14's hash pass: content hashes of every weight tensor against a plain read of the file.

    python benchmarks/bench_hash_pass.py A [B] [--repeat 3] [--threads 1] [--floor] [--before OLD/src] [--digests OUT.json]

For each model (A, then B), in one run: a plain sequential read of its weight files (16 MiB
``read`` calls, the baseline), then the content hashes of every weight tensor the way `compare`
makes them (``Model.of(open_checkpoint(A)).content_hashes(hashable_names(...))``). Each step runs
in its own process after the model's files were evicted from the page cache
(``posix_fadvise(POSIX_FADV_DONTNEED)``), so its page faults, disk reads and peak RSS are its own.
Printed per step, medians over ``--repeat`` runs: wall s, user and system CPU s (every thread of
the process, `resource.getrusage`), GB/s of wall, major and minor page faults, bytes the process
made the disk read (``/proc/self/io`` ``read_bytes``), the machine's I/O wait over the step (from
``/proc/stat``, every core and every process: on a shared machine a rough figure) and peak RSS;
then the hash pass's ratios to the read (wall and CPU). ``--before OLD/src`` also times the hash
pass of another tree (say main's), interleaved with this one's, and says if any digest differs.
``--threads`` is unshell's thread budget for the hash pass (`unshell.threads.limited`; default
every core). ``--floor`` also times, on the same bytes already in memory, the two computations
the pass cannot avoid: sha256 alone and the bincounts alone (CPU s; their sum is the pass's CPU
floor with one thread, their max its wall floor with two). ``--digests`` writes every tensor's
hashes (exact, rounded, multiset, distinct) as JSON, to check that a change left every value as
it was.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compare import drop_cache
from bench_compare_phases import files_of

CHILD = r"""
import json, os, resource, sys, time
step, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = json.loads(sys.argv[4])
digests_to = sys.argv[5]
uncounted = sys.argv[6] == "uncounted"

def iowait():
    with open("/proc/stat") as handle:
        fields = handle.readline().split()
    return int(fields[5]) / os.sysconf("SC_CLK_TCK")

if step in ("hash", "floor"):  # imports before the clock starts: the read pays none either
    from unshell.formats import open_checkpoint
    from unshell.lineage.compare import hashable_names
    from unshell.model import Model
    from unshell.threads import limited
    checkpoint = open_checkpoint(path)
    names = hashable_names(checkpoint)
    model = Model.of(checkpoint)
    if uncounted and step == "hash":
        model.canonical  # the roles `compare`'s pass reads, before the clock: headers only
if step == "floor":  # the two computations alone, on bytes already in memory: the pass's floor
    import hashlib
    import numpy as np
    raws = [checkpoint.raw_bytes(checkpoint.info(name)) for name in names]
    for raw in raws:
        hashlib.sha256(raw.data)  # faults every page in, untimed
    start = time.process_time()
    for raw in raws:
        hashlib.sha256(raw.data).hexdigest()
    sha = time.process_time() - start
    start = time.process_time()
    for raw in raws:
        values = raw.view("<u2")
        for at in range(0, values.size, 1 << 19):
            np.bincount(values[at : at + (1 << 19)], minlength=1 << 16)
    count = time.process_time() - start
    print(json.dumps({"sha": sha, "count": count, "bytes": sum(raw.size for raw in raws)}))
    sys.exit()
before, wait_before, wall_before = resource.getrusage(resource.RUSAGE_SELF), iowait(), time.perf_counter()
if step == "read":
    done = 0
    for name in files:
        with open(name, "rb", buffering=0) as handle:
            while chunk := handle.read(16 << 20):
                done += len(chunk)
else:
    with limited(threads or None):
        if uncounted:
            try:  # as `compare` hashes (its pass without sketches; a tree before it counted every one)
                from unshell.lineage.compare import read_once
                hashes = read_once(model, model.canonical, [], 0)[0]
            except ImportError:
                hashes = model.content_hashes(names)
        else:
            hashes = model.content_hashes(names)
    done = sum(checkpoint.info(name).nbytes for name in names)
wall = time.perf_counter() - wall_before
after, wait = resource.getrusage(resource.RUSAGE_SELF), iowait() - wait_before
with open("/proc/self/io") as handle:
    io = dict(line.split(": ") for line in handle.read().splitlines())
if step == "hash" and digests_to:
    with open(digests_to, "w") as handle:
        counts = [] if uncounted else ["multiset", "distinct"]  # uncounted: the digests alone
        json.dump([[getattr(t, f) for f in ["name", "numel", "exact", "rounded", *counts]] for t in hashes.tensors], handle)
print(json.dumps({
    "wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
    "bytes": done, "majflt": after.ru_majflt - before.ru_majflt, "minflt": after.ru_minflt - before.ru_minflt,
    "disk": int(io["read_bytes"]), "iowait": wait, "rss": after.ru_maxrss / 1024,
}))
"""


def run_step(
    step: str,
    model: Path,
    threads: int,
    digests: Path | None,
    source: Path | None = None,
    *,
    uncounted: bool = False,
) -> dict[str, Any]:
    """One step in a fresh process after evicting the model's files; ``source``: the ``src``
    folder whose unshell it imports (default: the one this interpreter finds); ``uncounted``:
    hash as `compare` does, without counting the multisets."""
    files = files_of(model)
    drop_cache(files)
    environment = dict(os.environ)
    if source is not None:
        environment["PYTHONPATH"] = str(source)
    argv = [sys.executable, "-c", CHILD, step, str(model), str(threads), json.dumps([str(f) for f in files])]
    completed = subprocess.run(
        [*argv, str(digests or ""), "uncounted" if uncounted else "counted"],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def row(label: str, m: dict[str, Any]) -> str:
    cpu = m["user"] + m["sys"]
    return (
        f"{label:28} {m['wall']:>7.2f} {m['user']:>7.2f} {m['sys']:>7.2f} {cpu:>7.2f} "
        f"{m['bytes'] / m['wall'] / 1e9:>6.2f} {m['majflt']:>8,.0f} {m['minflt']:>9,.0f} "
        f"{m['disk'] / 1e9:>6.2f} {m['iowait']:>7.2f} {m['rss']:>7,.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, nargs="+", help="A [B]")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=0, help="thread budget of the hash pass (0: every core)"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time sha256 alone and the 512k-value bincount alone on the same bytes, in memory",
    )
    parser.add_argument(
        "--digests", type=Path, default=None, help="write the hashes here (A's; B's to OUT.b.json)"
    )
    parser.add_argument(
        "--uncounted",
        action="store_true",
        help="hash as compare does (`read_once` without sketches: no multiset counted; a tree "
        "without it counts them)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="another tree's src folder: its hash pass is timed too, interleaved, and its digests compared",
    )
    args = parser.parse_args()

    print(
        f"load average {os.getloadavg()[0]:.2f} before; threads {args.threads or 'default'}; "
        f"{os.cpu_count()} cores; medians of {args.repeat}"
    )
    header = f"{'step':28} {'wall s':>7} {'user s':>7} {'sys s':>7} {'CPU s':>7} {'GB/s':>6} {'maj flt':>8} {'min flt':>9} {'disk GB':>6} {'iowait':>7} {'RSS MiB':>7}"
    print(header)
    for index, model in enumerate(args.models):
        digests = None
        if args.digests is not None:
            digests = args.digests if index == 0 else args.digests.with_suffix(f".{'ab'[index]}.json")
        runs: dict[str, list[dict[str, Any]]] = {"read": [], "hash": []}
        if args.before is not None:
            runs["before"] = []
        with tempfile.TemporaryDirectory() as work:
            compared = {"hash": Path(work) / "after.json", "before": Path(work) / "before.json"}
            for _ in range(args.repeat):
                for step in runs:  # interleaved, so a change of load touches each alike
                    runs[step].append(
                        run_step(
                            "read" if step == "read" else "hash",
                            model,
                            args.threads,
                            compared.get(step),
                            args.before if step == "before" else None,
                            uncounted=args.uncounted,
                        )
                    )
            if digests is not None:
                shutil.copyfile(compared["hash"], digests)
            same = args.before is None or compared["hash"].read_bytes() == compared["before"].read_bytes()
        read, hashed = median_of(runs["read"]), median_of(runs["hash"])
        print(row(f"read {model.name}", read))
        if args.before is not None:
            print(row(f"hash pass {model.name}, before", median_of(runs["before"])))
            if not same:
                print(f"{'  DIGESTS DIFFER from before':28}")
        print(row(f"hash pass {model.name}", hashed))
        walls = ", ".join(f"{run['wall']:.2f}" for run in runs["hash"])
        print(
            f"{'  hash / read':28} {hashed['wall'] / read['wall']:>7.2f}x wall, "
            f"{(hashed['user'] + hashed['sys']) / (read['user'] + read['sys']):.2f}x CPU "
            f"(walls of the hash runs: {walls})"
        )
        if args.floor:
            floor = median_of([run_step("floor", model, args.threads, None) for _ in range(args.repeat)])
            print(
                f"{'  floor, in memory':28} sha256 {floor['sha']:.2f} s ({floor['bytes'] / floor['sha'] / 1e9:.2f} GB/s), "
                f"bincount {floor['count']:.2f} s ({floor['bytes'] / floor['count'] / 1e9:.2f} GB/s): "
                f"{floor['sha'] + floor['count']:.2f} CPU s, "
                f"{max(floor['sha'], floor['count']):.2f} s on two cores"
            )
    print(f"load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
