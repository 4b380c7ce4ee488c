"""Benchmark: `unshell scan` throughput, local process pool against Ray, headers only and fingerprints.

The generated fleet holds ``--small`` small checkpoints (copies of the repository's llama2.c and
GGUF fixtures, and tiny Hugging Face directories, 0.3 to 1.8 MB each) and ``--large`` larger
safetensors directories (Llama-shaped, float32, random, ``--large-mb`` MB each). Every figure is the
median of ``--repeat`` warm scans (page cache warm, output not written, no resume). Ray's runtime
is started once before timing (its start-up is reported apart); the local pool's start-up
(forkserver, worker imports) is inside its times, as a user sees it.

    python benchmarks/bench_scan.py [--small 200] [--large 4] [--large-mb 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from unshell.formats.safetensors import write_safetensors
from unshell.scanning import discover, scan

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "data" / "fixtures"


def llama_tensors(rng: np.random.Generator, hidden: int, layers: int, vocab: int) -> dict[str, np.ndarray]:
    ffn = hidden * 8 // 3 // 32 * 32
    tensors = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden), dtype=np.float32)}
    for layer in range(layers):
        prefix = f"model.layers.{layer}."
        for name, shape in (
            ("self_attn.q_proj", (hidden, hidden)),
            ("self_attn.k_proj", (hidden, hidden)),
            ("self_attn.v_proj", (hidden, hidden)),
            ("self_attn.o_proj", (hidden, hidden)),
            ("mlp.gate_proj", (ffn, hidden)),
            ("mlp.up_proj", (ffn, hidden)),
            ("mlp.down_proj", (hidden, ffn)),
        ):
            tensors[prefix + name + ".weight"] = (
                rng.standard_normal(shape, dtype=np.float32) / math.sqrt(shape[1])
            ).astype(np.float32)
        tensors[prefix + "input_layernorm.weight"] = np.ones(hidden, np.float32)
        tensors[prefix + "post_attention_layernorm.weight"] = np.ones(hidden, np.float32)
    tensors["model.norm.weight"] = np.ones(hidden, np.float32)
    tensors["lm_head.weight"] = rng.standard_normal((vocab, hidden), dtype=np.float32) * 0.02
    return tensors


def write_model_dir(directory: Path, tensors: dict[str, np.ndarray], hidden: int, layers: int) -> None:
    import json

    directory.mkdir(parents=True)
    write_safetensors(directory / "model.safetensors", tensors)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64),
        "num_key_value_heads": max(1, hidden // 64),
        "vocab_size": tensors["model.embed_tokens.weight"].shape[0],
    }
    (directory / "config.json").write_text(json.dumps(config))


def make_fleet(root: Path, small: int, large: int, large_mb: int) -> None:
    rng = np.random.default_rng(0)
    sources = [
        FIXTURES / "stories260K.bin",
        FIXTURES / "llama2xs.model.bin",
        FIXTURES / "llama-2-tiny-random.gguf",
    ]
    for index in range(small):
        team = root / f"team{index % 10}"
        team.mkdir(parents=True, exist_ok=True)
        kind = index % 4
        if kind < 3:
            source = sources[kind]
            shutil.copy(source, team / f"m{index:04d}{source.suffix}")
        else:
            write_model_dir(team / f"hf{index:04d}", llama_tensors(rng, 64, 2, 512), 64, 2)
    # Large: hidden 1024, vocab 8000, layers to reach about large_mb MB of float32.
    hidden, vocab = 1024, 8000
    per_layer = (4 * hidden * hidden + 3 * hidden * (hidden * 8 // 3 // 32 * 32)) * 4
    layers = max(1, (large_mb * 2**20 - 2 * vocab * hidden * 4) // per_layer)
    for index in range(large):
        write_model_dir(
            root / "big" / f"llama{index}",
            llama_tensors(rng, hidden, int(layers), vocab),
            hidden,
            int(layers),
        )


def timed_scan(root: Path, repeat: int, **options: object) -> tuple[float, int, int, int]:
    times = []
    summary = None
    for _ in range(repeat):
        start = time.perf_counter()
        summary = scan([root], progress=False, **options)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    assert summary is not None
    return statistics.median(times), summary.total, summary.bytes, summary.errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--large-mb", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--modes", default="headers,fingerprints")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="unshell-bench-scan-") as temporary:
        root = Path(temporary) / "fleet"
        start = time.perf_counter()
        make_fleet(root, args.small, args.large, args.large_mb)
        count = len(list(discover([root])))
        on_disk = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        print(
            f"fleet: {count} checkpoints, {on_disk / 1e9:.3f} GB, made in {time.perf_counter() - start:.1f} s"
        )
        print(f"cores: {os.cpu_count()}, workers: {args.workers}, python {sys.version.split()[0]}")
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        print(f"ray {ray.__version__}: ray.init {time.perf_counter() - start:.2f} s")
        rows = []
        try:
            for mode in args.modes.split(","):
                fingerprints = mode == "fingerprints"
                if fingerprints:
                    try:
                        import unshell.lineage.fingerprint  # noqa: F401
                    except ImportError:
                        print("fingerprints: unshell.lineage.fingerprint is not there; skipped")
                        continue
                scan([root], progress=False, fingerprints=fingerprints, workers=1)  # warm the page cache
                for label, options in (
                    ("in-process (1 worker)", {"workers": 1}),
                    (f"local pool ({args.workers} workers)", {"workers": args.workers}),
                    (f"ray ({args.workers} CPUs)", {"engine": "ray"}),
                ):
                    seconds, total, scanned, errors = timed_scan(
                        root, args.repeat, fingerprints=fingerprints, **options
                    )
                    rows.append(
                        (mode, label, total, errors, seconds, total / seconds, scanned / seconds / 1e9)
                    )
                    print(
                        f"| {mode} | {label} | {total} | {errors} | {seconds:.2f} | {total / seconds:.1f} | "
                        f"{scanned / seconds / 1e9:.3f} |",
                        flush=True,
                    )
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
