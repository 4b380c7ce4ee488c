"""Benchmark issue 14's hash pass: content hashes of every weight tensor against a plain read of the file.

    python benchmarks/bench_hash_pass.py A [B] [--repeat 3] [--threads 1] [--digests OUT.json]

For each model (A, then B), in one run: a plain sequential read of its weight files (16 MiB
``read`` calls, the baseline), then the content hashes of every weight tensor the way `compare`
makes them (``Model.of(open_checkpoint(A)).content_hashes(hashable_names(...))``). Each step runs
in its own process after the model's files were evicted from the page cache
(``posix_fadvise(POSIX_FADV_DONTNEED)``), so its page faults, disk reads and peak RSS are its own.
Printed per step, medians over ``--repeat`` runs: wall s, user and system CPU s (every thread of
the process, `resource.getrusage`), GB/s of wall, major and minor page faults, bytes the process
made the disk read (``/proc/self/io`` ``read_bytes``), the machine's I/O wait over the step (from
``/proc/stat``, every core and every process: on a shared machine a rough figure) and peak RSS;
then the hash pass's ratios to the read (wall and CPU). ``--threads`` is unshell's thread budget
for the hash pass (`unshell.threads.limited`; default every core). ``--digests`` writes every
tensor's hashes (exact, rounded, multiset, distinct) as JSON, to check that a change left every
value as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
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

def iowait():
    with open("/proc/stat") as handle:
        fields = handle.readline().split()
    return int(fields[5]) / os.sysconf("SC_CLK_TCK")

if step == "hash":  # imports before the clock starts: the read pays none either
    from unshell.formats import open_checkpoint
    from unshell.lineage.compare import hashable_names
    from unshell.model import Model
    from unshell.threads import limited
    checkpoint = open_checkpoint(path)
    names = hashable_names(checkpoint)
    model = Model.of(checkpoint)
before, wait_before, wall_before = resource.getrusage(resource.RUSAGE_SELF), iowait(), time.perf_counter()
if step == "read":
    done = 0
    for name in files:
        with open(name, "rb", buffering=0) as handle:
            while chunk := handle.read(16 << 20):
                done += len(chunk)
else:
    with limited(threads or None):
        hashes = model.content_hashes(names)
    done = sum(checkpoint.info(name).nbytes for name in names)
wall = time.perf_counter() - wall_before
after, wait = resource.getrusage(resource.RUSAGE_SELF), iowait() - wait_before
with open("/proc/self/io") as handle:
    io = dict(line.split(": ") for line in handle.read().splitlines())
if step == "hash" and digests_to:
    with open(digests_to, "w") as handle:
        json.dump([[t.name, t.numel, t.exact, t.rounded, t.multiset, t.distinct] for t in hashes.tensors], handle)
print(json.dumps({
    "wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
    "bytes": done, "majflt": after.ru_majflt - before.ru_majflt, "minflt": after.ru_minflt - before.ru_minflt,
    "disk": int(io["read_bytes"]), "iowait": wait, "rss": after.ru_maxrss / 1024,
}))
"""

COLUMNS = ("wall", "user", "sys", "majflt", "minflt", "disk", "iowait", "rss")


def run_step(step: str, model: Path, threads: int, digests: Path | None) -> dict[str, Any]:
    files = files_of(model)
    drop_cache(files)
    argv = [sys.executable, "-c", CHILD, step, str(model), str(threads), json.dumps([str(f) for f in files])]
    completed = subprocess.run([*argv, str(digests or "")], capture_output=True, text=True, check=True)
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
        "--digests", type=Path, default=None, help="write the hashes here (A's; B's to OUT.b.json)"
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
        for _ in range(args.repeat):
            for step in runs:  # interleaved, so a change of load touches both alike
                runs[step].append(run_step(step, model, args.threads, digests if step == "hash" else None))
        read, hashed = median_of(runs["read"]), median_of(runs["hash"])
        print(row(f"read {model.name}", read))
        print(row(f"hash pass {model.name}", hashed))
        walls = ", ".join(f"{run['wall']:.2f}" for run in runs["hash"])
        print(
            f"{'  hash / read':28} {hashed['wall'] / read['wall']:>7.2f}x wall, "
            f"{(hashed['user'] + hashed['sys']) / (read['user'] + read['sys']):.2f}x CPU "
            f"(walls of the hash runs: {walls})"
        )
    print(f"load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
