"""Benchmark: `unshell compare` on Llama-2-7B-shaped synthetic bf16 checkpoints.

Pairs (made by `make_7b_pair.py`): base vs a noisy derivative (base + 10% noise per element), and
base vs a permuted and rotated copy (norms folded, residual stream rotated by a Haar-random
4096 x 4096 matrix, MLP neurons and attention heads permuted). Each comparison runs in its own
process so peak RSS is its own; the baseline is a plain sequential read (16 MiB chunks) of the
same files, after dropping them from the page cache, in the same run.

    python benchmarks/bench_compare.py [--layers 8] [--directory DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_7b_pair import Llama, make_pair  # noqa: E402

CHILD = """
import json, resource, sys, time
import unshell
start = time.perf_counter()
result = unshell.compare(sys.argv[1], sys.argv[2], quick=sys.argv[3] == "quick")
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with open("/proc/self/io") as handle:
    io = dict(line.split(": ") for line in handle.read().splitlines())
print(json.dumps({"seconds": seconds, "rss": rss, "read_bytes": int(io["read_bytes"]), "rchar": int(io["rchar"]),
                  "verdict": result.verdict, "p_value": result.p_value, "how": result.how, "score": result.score}))
"""


def drop_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sequential_read(paths: list[Path]) -> float:
    drop_cache(paths)
    start = time.perf_counter()
    for path in paths:
        with path.open("rb", buffering=0) as handle:
            while handle.read(16 << 20):
                pass
    return time.perf_counter() - start


def run_compare(a: Path, b: Path, mode: str) -> dict[str, object]:
    files = [a / "model.safetensors", b / "model.safetensors"]
    drop_cache(files)
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, str(a), str(b), mode], capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--directory", type=Path, default=None, help="where the pair is (made if absent)")
    args = parser.parse_args()
    shape = Llama(layers=args.layers)
    directory = args.directory or HERE / "_work" / "llama2-7b-pair" / f"layers-{args.layers}"
    make_pair(directory, shape, log=lambda line: print(line, file=sys.stderr))
    base = directory / "base"
    rows = []
    for label in ("noisy", "rotated"):
        other = directory / label
        files = [base / "model.safetensors", other / "model.safetensors"]
        size = sum(f.stat().st_size for f in files)
        baseline = sequential_read(files)
        for mode in ("full", "quick"):
            outcome = run_compare(base, other, mode)
            rows.append((label, mode, size, baseline, outcome))
    print(f"cores: {os.cpu_count()}  python: {sys.version.split()[0]}  layers: {args.layers}")
    print(
        f"{'pair':8} {'mode':6} {'bytes':>14} {'read s':>7} {'compare s':>10} {'ratio':>6} {'RSS MB':>7} {'disk read':>10}  verdict"
    )
    for label, mode, size, baseline, o in rows:
        print(
            f"{label:8} {mode:6} {size:>14,} {baseline:>7.1f} {o['seconds']:>10.1f} {o['seconds'] / baseline:>6.2f} "
            f"{o['rss'] / 1e6:>7.0f} {o['read_bytes'] / size:>9.1%}  {o['verdict']} p={o['p_value']} {o['how']}"
        )


if __name__ == "__main__":
    main()
