"""Benchmark issue 14's memory bound: peak RSS of every computing command on the real artifacts.

    python benchmarks/bench_memory.py [--artifacts gemma3_gguf,qwen05_gguf,qwen15_gguf] [--commands ...]

Each command is a whole ``python -m unshell ...`` process started from a fresh wrapper process,
which reports ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``: the peak resident set of that one
command, page-cache-backed pages of the memory-mapped model that it touched included. Commands:

- ``inspect PATH``; ``audit PATH``;
- ``compare PATH PATH`` (hashes prove it identical: the hashing pass over every tensor);
- ``compare PATH PATH --quick`` (no hashes: the lineage test, anchors and sketches);
- ``library add PATH`` into a fresh library (the fingerprint);
- ``search PATH`` against that library (the suspect's hashes and the lineage test).

The artifacts are fetched through ``tests/artifacts.py`` (cached under ~/.cache/unshell-tests).
The target is 1.5 GB (1 GB stretch) for every command on every artifact.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

WRAPPER = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print(json.dumps({"rc": done.returncode, "seconds": time.perf_counter() - start,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "stderr": done.stderr[-500:]}))
"""

COMMANDS = ("inspect", "audit", "compare", "quick", "library-add", "search")


def peak_rss(argv: list[str]) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def command_line(command: str, path: Path, library: Path) -> list[str]:
    unshell = [sys.executable, "-m", "unshell"]
    if command == "inspect":
        return [*unshell, "inspect", str(path), "--format", "json"]
    if command == "audit":
        return [*unshell, "audit", str(path), "--format", "json"]
    if command == "compare":
        return [*unshell, "compare", str(path), str(path), "--format", "json"]
    if command == "quick":
        return [*unshell, "compare", str(path), str(path), "--quick", "--format", "json"]
    if command == "library-add":
        return [
            *unshell,
            "library",
            "add",
            str(path),
            "--name",
            "self",
            "--replace",
            "--library",
            str(library),
        ]
    if command == "search":
        return [*unshell, "search", str(path), "--library", str(library), "--format", "json"]
    raise ValueError(command)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifacts", default="gemma3_gguf,qwen05_gguf,qwen15_gguf")
    parser.add_argument("--commands", default=",".join(COMMANDS))
    args = parser.parse_args()
    from artifacts import fetch

    commands = args.commands.split(",")
    print(
        f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}  python: {sys.version.split()[0]}"
    )
    print(f"{'artifact':14} {'bytes':>14} {'command':12} {'peak RSS MiB':>13} {'s':>7} {'rc':>3}")
    worst = 0
    for key in args.artifacts.split(","):
        path = fetch(key)
        with tempfile.TemporaryDirectory() as work:
            library = Path(work) / "library.sqlite"
            for command in commands:
                started = time.perf_counter()
                outcome = peak_rss(command_line(command, path, library))
                kib = int(outcome["maxrss_kib"])  # type: ignore[call-overload]
                worst = max(worst, kib)
                print(
                    f"{key:14} {path.stat().st_size:>14,} {command:12} {kib / 1024:>13,.0f} "
                    f"{time.perf_counter() - started:>7.1f} {outcome['rc']:>3}",
                    flush=True,
                )
                if outcome["rc"] not in (0, 1):
                    print(f"  stderr: {outcome['stderr']}", flush=True)
    print(f"largest peak: {worst / 1024:,.0f} MiB (target 1,536 MiB)")


if __name__ == "__main__":
    main()
