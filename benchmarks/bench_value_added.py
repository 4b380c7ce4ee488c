"""Benchmark: the value-added account (`unshell.lineage.change`, issue 15 parts 3 and 4).

1. Rounding against training: the zoo's base-s0 and its fine-tune (150 steps, lr 2e-4), with the
   fine-tune's change scaled by 1, 0.3 and 0.1, then quantized to Q4_0 and Q8_0 with ggml's
   reference arithmetic (tests/test_value_added.py's quantizers): the fraction of B's values that
   are A's nearest grid point (`explained_by_grid`, threshold `EXPLAINED_FRACTION`), median over
   the 28 matrices. Pure quantization (scale 0) is the reference.
2. The account of every derivative of base-s0 in the zoo and of stories260K (tests/derivatives.py):
   how, new-information score, kind fractions, seconds for `assess` alone (after `compare`).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_value_added.py [--real] [--effort]

3. Effort across widths (``--effort``): every fine-tune and continued pretraining with a known
   recipe, at the zoo's width (128) and away from it (tools/zoo_widths.py: the zoo's recipes at
   widths 64 and 256; stories260K, 64 wide, with weights 3.7 times the zoo's scale): the true
   learning-rate integral (from the recipe) against the estimate (`ValueAdded.effort`), and against
   what the former calibration, by relative change, said.

``--real`` adds the whole comparisons on real files: Qwen2.5-Coder-0.5B-Instruct Q4_K_M against
its dequantization with four layers dropped, in bf16 (tests/derivatives.py, the issue's case), and
SmolLM2-135M-Instruct Q4_1 against llama.cpp's Q8_0 requantization (minutes each).
"""

from __future__ import annotations

import math
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

# The calibration before widths were measured: whole-model relative change -> steps x peak learning
# rate in the zoo (kept here to show what it said away from the zoo's width).
RELATIVE_CALIBRATION = ((0.050, 0.03), (0.080, 0.09), (1.026, 1.60))


def _log_interpolate(points: tuple[tuple[float, float], ...], x: float) -> float:
    xs, ys = [math.log(p) for p, _ in points], [math.log(q) for _, q in points]
    index = 1
    while index < len(xs) - 1 and math.log(x) > xs[index]:
        index += 1
    x0, x1, y0, y1 = xs[index - 1], xs[index], ys[index - 1], ys[index]
    return math.exp(y0 + (y1 - y0) * (math.log(x) - x0) / (x1 - x0))


def effort_table() -> None:
    from derivatives import stories_derivatives
    from zoo_fixture import zoo, zoo_module

    sys.path.insert(0, str(ROOT / "tools"))
    import zoo_widths

    module = zoo_module()
    settings, recipe = module.SETTINGS, module.Recipe

    def integral(run: object) -> float:
        return sum(module._learning_rate(run, step) for step in range(run.steps))  # type: ignore[attr-defined]

    root = Path(zoo().bases["base-s0"]).parent
    stories = ROOT / "tests" / "data" / "fixtures" / "stories260K.bin"
    made = stories_derivatives()
    runs = [
        ("128 (calibration)", "base-s0 finetune", root / "base-s0", root / "finetune", settings.finetune),
        ("128 (calibration)", "base-s0 pruned-depth", root / "base-s0", root / "pruned-depth", settings.heal),
        (
            "128 (calibration)",
            "base-s0 continued",
            root / "base-s0",
            root / "continued-pretraining",
            settings.continued,
        ),
        ("128", "base-s0 finetune-2", root / "base-s0", root / "finetune-2", settings.finetune),
        ("128", "base-s0 upscaled", root / "base-s0", root / "upscaled", settings.upscale),
        ("128", "base-s0 vocab-extended", root / "base-s0", root / "vocab-extended", settings.vocab),
        (
            "64 (stories260K)",
            "zoo stories260K-finetune",
            stories,
            root / "stories260K-finetune",
            settings.stories,
        ),
        ("64 (stories260K)", "finetune", stories, made["finetune"], recipe(steps=60, lr=5e-4, warmup=10)),
        (
            "64 (stories260K)",
            "continued",
            stories,
            made["continued"],
            recipe(steps=400, lr=3e-3, warmup=20, schedule="constant"),
        ),
    ]
    for width, paths in zoo_widths.build().items():
        for name, (field, _, _) in zoo_widths.runs().items():
            runs.append(
                (str(width), f"zoo recipe {name}", paths["base"], paths[name], getattr(settings, field))
            )
    print(
        "| width | derivative | recipe | true lr integral | estimate | estimate / truth | rms change | "
        "relative change | former estimate / truth | how |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for width, name, a, b, run in runs:
        result = unshell.compare(a, b)
        value = result.value_added
        effort = None if value is None else value.effort()
        assert effort is not None and value is not None, name
        truth = integral(run)
        former = _log_interpolate(RELATIVE_CALIBRATION, value.trained_change or 0.0) / (run.steps * run.lr)
        print(
            f"| {width} | {name} | {run.steps} x {run.lr:g} {run.schedule} | {truth:.4g} | "
            f"{effort['lr_integral']:.4g} | {effort['lr_integral'] / truth:.2f} | {effort['rms_change']:.3g} | "
            f"{value.trained_change:.3g} | {former:.2f} | {', '.join(result.how)} |"
        )


def main() -> None:
    if "--effort" in sys.argv[1:]:
        effort_table()
        return
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
