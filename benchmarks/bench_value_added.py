"""Benchmark: the value-added account (`unshell.lineage.change`, issue 15 parts 3 and 4).

1. Rounding against training: the zoo's base-s0 and its fine-tune (150 steps, lr 2e-4), with the
   fine-tune's change scaled by 1, 0.3 and 0.1, then quantized to Q4_0 and Q8_0 with ggml's
   reference arithmetic (tests/test_value_added.py's quantizers): the fraction of B's values that
   are A's nearest grid point (`explained_by_grid`, threshold `EXPLAINED_FRACTION`), median over
   the 28 matrices. Pure quantization (scale 0) is the reference.
2. The account of every derivative of base-s0 in the zoo and of stories260K (tests/derivatives.py):
   how, new-information score, kind fractions, seconds for `assess` alone (after `compare`).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_value_added.py [--real]

``--real`` adds the whole comparisons on real files: Qwen2.5-Coder-0.5B-Instruct Q4_K_M against
its dequantization with four layers dropped, in bf16 (tests/derivatives.py, the issue's case), and
SmolLM2-135M-Instruct Q4_1 against llama.cpp's Q8_0 requantization (minutes each).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import unshell  # noqa: E402
from unshell.formats import open_checkpoint  # noqa: E402
from unshell.lineage.canonical import canonical_model  # noqa: E402
from unshell.lineage.change import assess, explained_by_grid, sample_blocks  # noqa: E402


def main() -> None:
    from derivatives import stories_derivatives
    from test_value_added import q4_0, q8_0
    from zoo_fixture import zoo

    root = Path(zoo().bases["base-s0"]).parent
    base = canonical_model(open_checkpoint(root / "base-s0"))
    tuned = canonical_model(open_checkpoint(root / "finetune"))
    print(
        "| quantizer | share of the fine-tune's change | relative change | explained fraction (median, min, max) |"
    )
    print("|---|---|---|---|")
    for name, quantize in (("Q8_0", q8_0), ("Q4_0", q4_0)):
        for scale in (0.0, 0.1, 0.3, 1.0):
            fractions, changes = [], []
            for layer in base.layers:
                for role in (
                    "attn.q.weight",
                    "attn.k.weight",
                    "attn.v.weight",
                    "attn.o.weight",
                    "mlp.gate.weight",
                    "mlp.up.weight",
                    "mlp.down.weight",
                ):
                    a, t = base.role(layer, role), tuned.role(layer, role)
                    assert a is not None and t is not None
                    b = quantize(a + scale * (t - a))
                    blocks_a, blocks_b = sample_blocks(a, b)
                    fractions.append(explained_by_grid(blocks_b, blocks_a))
                    changes.append(float(np.linalg.norm(a + scale * (t - a) - a) / np.linalg.norm(a)))
            print(
                f"| {name} | {scale:g} | {statistics.median(changes):.4f} | "
                f"{statistics.median(fractions):.4f} ({min(fractions):.4f}, {max(fractions):.4f}) |"
            )
    print()
    pairs = [
        (root / "base-s0", root / n)
        for n in (
            "base-s0-renamed",
            "q8_0.gguf",
            "q4_k.gguf",
            "q4_0.gguf",
            "lora-merged",
            "finetune",
            "merged",
            "pruned-depth",
            "upscaled",
            "vocab-extended",
            "continued-pretraining",
        )
    ]
    stories = ROOT / "tests" / "data" / "fixtures" / "stories260K.bin"
    pairs += [(stories, path) for path in stories_derivatives().values()]
    if "--real" in sys.argv[1:]:
        from artifacts import fetch
        from derivatives import qwen_layer_drop
        from llama_server import requantized_smollm2

        pairs += [
            (fetch("qwen05_gguf"), qwen_layer_drop()),
            (fetch("smollm2_gguf"), requantized_smollm2("Q8_0")),
        ]
    print("| A | B | how | score | copied | requantized | fine-tuned | new | assess s | summary |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for a, b in pairs:
        result = unshell.compare(a, b)
        value = result.value_added
        seconds = 0.0
        if result.verdict == "derived":
            start = time.perf_counter()
            value = assess(
                canonical_model(open_checkpoint(a)),
                canonical_model(open_checkpoint(b)),
                result.layers,
                result.alignment,
            )
            seconds = time.perf_counter() - start
        assert value is not None
        f = value.fractions()
        print(
            f"| {a.name} | {b.name} | {', '.join(result.how)} | {value.score:.4f} | {f['copied']:.2f} | "
            f"{f['requantized']:.2f} | {f['fine-tuned']:.2f} | {f['new']:.2f} | {seconds:.2f} | {value.summary()} |"
        )


if __name__ == "__main__":
    main()
