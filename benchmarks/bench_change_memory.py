"""Benchmark: the value-added account of one large stored matrix, read a block of rows at a time.

    python benchmarks/bench_change_memory.py DIR [--rows 131072] [--columns 8192] [--keep]

Writes one bf16 safetensors file under DIR holding A (an embedding-shaped ``rows x columns``
matrix, N(0, 0.02^2)), a full-rank fine-tune of it (A + 5 % noise) and a LoRA-like one (A plus a
rank-8 change of 10 %), streamed a chunk at a time (bf16 rounded to nearest even; the
file is never whole in memory), then runs `change.compare_tensor` on each pair in a fresh process with one
thread and prints its kind, rank, relative change, CPU seconds and peak RSS. The default shape is
a 128k x 8192 embedding: 2 GiB a side in bf16, 4 GiB in float32, 8 GiB as a float64 change. The
file is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHUNK_ROWS = 4096
NAMES = ("a", "finetune", "lora")


def write_pair(path: Path, rows: int, columns: int) -> None:
    size = rows * columns * 2
    header: dict[str, object] = {}
    for index, name in enumerate(NAMES):
        header[name] = {
            "dtype": "BF16",
            "shape": [rows, columns],
            "data_offsets": [index * size, (index + 1) * size],
        }
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    rng = np.random.default_rng(0)
    left = rng.standard_normal((rows, 8), dtype=np.float32)
    right = rng.standard_normal((8, columns), dtype=np.float32) * (0.1 * 0.02 / np.sqrt(8))
    temporary = path.with_suffix(".partial")
    with temporary.open("wb") as out:
        out.write(struct.pack("<Q", len(encoded)) + encoded)
        for name in NAMES:
            chunk_rng = np.random.default_rng(1)  # A again, chunk by chunk, under each change
            noise_rng = np.random.default_rng(2)
            for start in range(0, rows, CHUNK_ROWS):
                stop = min(rows, start + CHUNK_ROWS)
                values = chunk_rng.standard_normal((stop - start, columns), dtype=np.float32) * 0.02
                if name == "finetune":
                    values += noise_rng.standard_normal(values.shape, dtype=np.float32) * (0.05 * 0.02)
                elif name == "lora":
                    values += left[start:stop] @ right
                bits = values.view(np.uint32)
                out.write(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes())
    temporary.replace(path)


def peak_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: Path, name: str) -> None:
    """One account in this process (run in a fresh one per pair): prints a JSON line."""
    from unshell.formats import open_checkpoint
    from unshell.lineage.change import StoredRows, compare_tensor
    from unshell.threads import limited

    checkpoint = open_checkpoint(path)
    before = peak_mib()
    with limited(1):
        start = time.process_time()
        change = compare_tensor(
            name, "embed.weight", None, None, StoredRows(checkpoint, "a"), StoredRows(checkpoint, name)
        )
        cpu = time.process_time() - start
    peak = peak_mib()
    print(
        json.dumps(
            {
                "kind": change.kind,
                "rank": change.rank,
                "low_rank": change.low_rank,
                "relative_change": change.relative_change,
                "cpu": cpu,
                "peak_mib": peak,
                "before_mib": before,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--rows", type=int, default=131072)
    parser.add_argument("--columns", type=int, default=8192)
    parser.add_argument("--keep", action="store_true", help="keep the written file")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = args.directory / f"change-{args.rows}x{args.columns}.safetensors"
    if args.measure:
        measure(path, args.measure)
        return
    args.directory.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        start = time.perf_counter()
        write_pair(path, args.rows, args.columns)
        print(f"wrote {path} ({path.stat().st_size:,} bytes) in {time.perf_counter() - start:.0f} s")
    print(f"{args.rows:,} x {args.columns:,} bf16, one thread, load average {os.getloadavg()[0]:.1f}")
    print("| B | kind | rank | relative change | CPU s | peak RSS MiB (before the account) |")
    print("|---|---|---|---:|---:|---:|")
    try:
        for name in NAMES[1:]:
            command = [sys.executable, __file__, str(args.directory), "--rows", str(args.rows)]
            command += ["--columns", str(args.columns), "--measure", name]
            line = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()
            row = json.loads(line.splitlines()[-1])
            print(
                f"| {name} | {row['kind']} | {row['rank']} | {row['relative_change']:.4f} | {row['cpu']:.1f} | "
                f"{row['peak_mib']:,.0f} ({row['before_mib']:,.0f}) |"
            )
    finally:
        if not args.keep:
            path.unlink()


if __name__ == "__main__":
    main()
