"""Benchmark: `unshell inspect` on a Llama-2-70B-shaped sharded safetensors checkpoint.

The checkpoint has real headers (15 shards, 723 tensors, bf16, the real config) and sparse data
regions, so it costs no disk. It is compared, in the same run, with a tiny checkpoint of the same
structure: inspect must cost about the same for both, because it reads headers only.

Bytes read are counted by the kernel (``rchar`` in /proc/self/io: every read/pread syscall).

    python benchmarks/bench_inspect.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_sparse_70b import make_llama_checkpoint

import unshell


def bytes_read() -> int:
    with open("/proc/self/io") as handle:
        for line in handle:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def measure(path: Path, repeat: int) -> tuple[float, int, unshell.InspectResult]:
    unshell.inspect(path)  # warm imports and the page cache; the figures are for repeat calls
    times, reads = [], []
    result = None
    for _ in range(repeat):
        before = bytes_read()
        start = time.perf_counter()
        result = unshell.inspect(path)
        times.append(time.perf_counter() - start)
        reads.append(bytes_read() - before)
    assert result is not None
    return statistics.median(times), int(statistics.median(reads)), result


def cli_seconds(path: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "unshell", "inspect", str(path)], check=True, capture_output=True
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--work", type=Path, default=None, help="where to write the sparse checkpoints")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        big = make_llama_checkpoint(
            Path(tmp) / "llama2-70b",
            hidden=8192,
            layers=80,
            heads=64,
            kv_heads=8,
            intermediate=28672,
            vocab=32000,
            shards=15,
            sparse=True,
        )
        tiny = make_llama_checkpoint(
            Path(tmp) / "tiny",
            hidden=64,
            layers=2,
            heads=8,
            kv_heads=4,
            intermediate=172,
            vocab=512,
            shards=1,
            sparse=True,
        )
        rows = []
        for label, path in (("Llama-2-70B shape, 15 shards", big), ("tiny (H 64, 2 layers)", tiny)):
            seconds, read, result = measure(path, args.repeat)
            logical = result.total_bytes
            cli = cli_seconds(path, max(3, args.repeat // 3))
            rows.append((label, result.tensor_count, logical, seconds, read, cli, result.family))
        print(f"cores: {os.cpu_count()}  python: {sys.version.split()[0]}  repeat: {args.repeat} (medians)")
        print(
            f"{'checkpoint':32} {'tensors':>7} {'model bytes':>14} {'inspect s':>10} {'bytes read':>11} {'CLI s':>7}  family"
        )
        for label, tensors, logical, seconds, read, cli, family in rows:
            print(
                f"{label:32} {tensors:>7} {logical:>14,} {seconds:>10.4f} {read:>11,} {cli:>7.3f}  {family}"
            )
        big_row, tiny_row = rows
        print(
            f"ratio 70B/tiny: time {big_row[3] / tiny_row[3]:.1f}x, bytes read {big_row[4] / max(tiny_row[4], 1):.1f}x"
        )


if __name__ == "__main__":
    main()
