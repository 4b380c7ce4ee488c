"""`unshell probe`: requests and wall time to a decided verdict, per pair type, on real models.

Serves five real GGUF models with llama.cpp's OpenAI-compatible server on loopback (SmolLM2-135M-
Instruct Q4_1 as published, the same re-quantized to Q8_0 by llama.cpp, a short fine-tune of it
from tools/smollm2_finetune.py, Qwen2.5-Coder-0.5B-Instruct Q4_K_M, Gemma-3-270M Q4_K_M), asks each the first N prompts of general-v1 (seed 0) for
growing N over one shared response cache, times every model's answers, and reports, per pair,
the verdict at each N and the first N from which it no longer changes ("decided"), with the
requests and the summed request wall time that N costs. The p-values of every ordered pair of
unrelated models (the third unrelated model as the control; the fine-tune standing for SmolLM2 in
four more pairs) are the null.

    python benchmarks/bench_probe.py [--ladder 8,12,16,24,32] [--max-tokens 8]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import unshell  # noqa: E402
from artifacts import fetch  # noqa: E402
from llama_server import LlamaServer, finetuned_smollm2, requantized_smollm2  # noqa: E402

PAIRS = [
    # (pair type, suspect, candidate, controls)
    ("same-model (Q4_1 -> Q8_0)", "smollm2-q8", "smollm2", ["qwen", "gemma"]),
    ("derived (fine-tune)", "smollm2-ft", "smollm2", ["qwen", "gemma"]),
    ("unrelated", "qwen", "smollm2", ["gemma"]),
    ("unrelated", "gemma", "smollm2", ["qwen"]),
    ("unrelated", "smollm2", "qwen", ["gemma"]),
    ("unrelated", "smollm2", "gemma", ["qwen"]),
    ("unrelated", "qwen", "gemma", ["smollm2"]),
    ("unrelated", "gemma", "qwen", ["smollm2"]),
    ("unrelated", "smollm2-ft", "qwen", ["gemma"]),
    ("unrelated", "smollm2-ft", "gemma", ["qwen"]),
    ("unrelated", "qwen", "smollm2-ft", ["gemma"]),
    ("unrelated", "gemma", "smollm2-ft", ["qwen"]),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ladder", default="8,12,16,24,32")
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()
    ladder = [int(n) for n in args.ladder.split(",")]
    started_run = time.perf_counter()
    cpu_started = time.process_time()
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {_load()}")
    models = {
        "smollm2": fetch("smollm2_gguf"),
        "smollm2-q8": requantized_smollm2("Q8_0"),
        "smollm2-ft": finetuned_smollm2(),
        "qwen": fetch("qwen05_gguf"),
        "gemma": fetch("gemma3_gguf"),
    }
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        servers = {name: LlamaServer(path, name, work / f"{name}.log") for name, path in models.items()}
        try:
            spent: dict[str, dict[int, float]] = {name: {} for name in servers}
            loads: list[float] = []  # the 1-minute load average after each step of answers
            for name, server in servers.items():
                elapsed = 0.0
                for count in ladder:
                    # Probing a model against itself asks it each new prompt once (the cache
                    # answers the other two): the wall time of its answers to the first `count`.
                    started = time.perf_counter()
                    unshell.probe(
                        server.spec,
                        against=[server.spec],
                        controls=[server.spec],
                        prompts=count,
                        max_tokens=args.max_tokens,
                        cache_dir=work / "cache",
                    )
                    elapsed += time.perf_counter() - started
                    spent[name][count] = elapsed
                    loads.append(os.getloadavg()[0])
            print(f"1-minute load average while the models answered: {min(loads):.1f} to {max(loads):.1f}")
            print(f"max_tokens {args.max_tokens}; seconds per request at N={ladder[-1]}:")
            for name in servers:
                print(f"  {name:<11} {spent[name][ladder[-1]] / ladder[-1]:.2f} s")
            print()
            print(
                "| pair | suspect | candidate | controls | "
                + " | ".join(f"N={n}" for n in ladder)
                + " | decided at | requests | wall s |"
            )
            print("|---|---|---|---|" + "---|" * len(ladder) + "---|---|---|")
            for kind, suspect, candidate, controls in PAIRS:
                cells: list[str] = []
                verdicts: list[str] = []
                for count in ladder:
                    result = unshell.probe(
                        servers[suspect].spec,
                        against=[servers[candidate].spec],
                        controls=[servers[c].spec for c in controls],
                        prompts=count,
                        max_tokens=args.max_tokens,
                        cache_dir=work / "cache",
                    )
                    assert result.spending.requests == 0
                    verdict = result.candidates[0]
                    verdicts.append(verdict.verdict)
                    cells.append(f"{verdict.verdict} p={verdict.p_value:.2g}")
                decided = (
                    next(
                        i
                        for i in range(len(ladder))
                        if len(set(verdicts[i:])) == 1 and verdicts[i] != "inconclusive"
                    )
                    if verdicts[-1] != "inconclusive"
                    else None
                )
                if decided is None:
                    tail = "not decided | | "
                else:
                    count = ladder[decided]
                    involved = [suspect, candidate, *controls]
                    wall = sum(spent[m][count] for m in involved)
                    tail = f"N={count} | {count * len(involved)} | {wall:.0f}"
                print(
                    f"| {kind} | {suspect} | {candidate} | {', '.join(controls)} | "
                    + " | ".join(cells)
                    + f" | {tail} |"
                )
        finally:
            server_cpu = sum(_cpu_seconds(server.process.pid) for server in servers.values())
            for server in servers.values():
                server.stop()
    print(
        f"\n{time.perf_counter() - started_run:.0f} s wall in all; CPU-seconds: {server_cpu:.0f} in the "
        f"servers, {time.process_time() - cpu_started:.0f} in this process; {_load()}"
    )


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a live process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f}, {five:.1f}, {fifteen:.1f}"


if __name__ == "__main__":
    main()
