"""Benchmark: issue 15's leftovers on the value added (`unshell.lineage.change`, `expert_change`).

1. Rounding against a change inside a grid's cells (default): one sampled 1536 x 576 matrix, SmolLM2-
   135M-Instruct's Q4_1 ``blk.3.ffn_up`` or Gaussian values of its std, against its quantizations
   (gguf-py's quantizers, the zoo's Q4_K) and against itself plus Gaussian noise (a stand-in for a
   light fine-tune of a dequantized model), stored F32 or requantized to Q8_0. Per pair: the
   fraction each side's grid explains (`explained_by_grid`), the share of the differing values more
   than a quarter step from the grid point (`rounding_spread`) and the reading (`explained_by_rounding`).
2. ``--experts A B [A B ...]``: the expert account (`account_experts`) of each pair after `compare`,
   with every expert part's change read full-rank (as before session 7) and with its rank tested,
   median of ``--runs`` runs each.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_expert_value.py [--experts A B ...] [--runs 5]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import unshell  # noqa: E402
from unshell.formats import open_checkpoint  # noqa: E402
from unshell.lineage import change, expert_change  # noqa: E402
from unshell.lineage.canonical import canonical_model  # noqa: E402
from unshell.lineage.experts import expert_map  # noqa: E402


def _quantizer(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    import gguf

    qtype = gguf.GGMLQuantizationType[kind]

    def run(values: np.ndarray) -> np.ndarray:
        if kind == "Q4_K":  # gguf-py only dequantizes K types: the zoo's quantizer (512 columns)
            spec = importlib.util.spec_from_file_location("bench_zoo", ROOT / "tools" / "zoo.py")
            assert spec is not None and spec.loader is not None
            zoo = importlib.util.module_from_spec(spec)
            sys.modules["bench_zoo"] = zoo
            spec.loader.exec_module(zoo)
            blocks = zoo.quantize_q4_k(np.ascontiguousarray(values))
        else:
            blocks = gguf.quants.quantize(np.ascontiguousarray(values), qtype)
        return np.asarray(gguf.quants.dequantize(blocks, qtype), dtype=np.float32).reshape(values.shape)

    return run


def _row(label: str, a: np.ndarray, b: np.ndarray) -> str:
    blocks_a, blocks_b = change.sample_blocks(a, b)
    cells = []
    for grid, other in ((blocks_b, blocks_a), (blocks_a, blocks_b)):
        fraction, spread = change.grid_fit(grid, other)
        cells += [f"{fraction:.4f}", "" if spread is None else f"{spread:.3f}"]
    reason = change.explained_by_rounding(a, b) or "none (a change)"
    return f"| {label} | " + " | ".join(cells) + f" | {reason} |"


def rounding_table() -> None:
    from artifacts import fetch

    with open_checkpoint(fetch("smollm2_gguf")) as checkpoint:
        weights = np.asarray(checkpoint.read("blk.3.ffn_up.weight"), dtype=np.float32)
    rng = np.random.default_rng(0)
    gauss = (rng.standard_normal(weights.shape) * weights.std()).astype(np.float32)
    q8, q4k = _quantizer("Q8_0"), _quantizer("Q4_K")
    narrow = np.ascontiguousarray(weights[:, :512])  # Q4_K blocks hold 256 values
    print(
        "| A | B | B's grid explains | spread in B's cells | A's grid explains | spread in A's cells | reading |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind in ("Q8_0", "Q4_0", "Q4_1", "Q5_1"):
        quantized = _quantizer(kind)(gauss)
        print(_row(f"Gaussian | {kind} of it", gauss, quantized))
        print(_row(f"{kind} of Gaussian | the Gaussian", quantized, gauss))
    print(
        _row("Gaussian (512 columns) | Q4_K of it", gauss[:, :512], q4k(np.ascontiguousarray(gauss[:, :512])))
    )
    for kind in ("Q8_0", "Q4_0", "Q5_1"):
        print(_row(f"SmolLM2 Q4_1 | {kind} of it", weights, _quantizer(kind)(weights)))
        print(_row(f"{kind} of SmolLM2 Q4_1 | SmolLM2 Q4_1", _quantizer(kind)(weights), weights))
    print(_row("SmolLM2 Q4_1 (512 columns) | Q4_K of it", narrow, q4k(narrow)))
    print(_row("Q8_0 of SmolLM2 Q4_1 (512 columns) | Q4_K of that", q8(narrow), q4k(q8(narrow))))
    for noise in (0.001, 0.003, 0.01, 0.03, 0.05, 0.1):
        moved = weights + (noise * weights.std() * rng.standard_normal(weights.shape)).astype(np.float32)
        print(_row(f"SmolLM2 Q4_1 | + {noise:.1%} noise, F32", weights, moved))
        print(_row(f"SmolLM2 Q4_1 | + {noise:.1%} noise, Q8_0", weights, q8(moved)))


def expert_costs(paths: list[str], runs: int) -> None:
    print("| A | B | expert parts | low-rank parts | full-rank read (s) | rank tested (s) | ratio |")
    print("|---|---|---|---|---|---|---|")
    tested = expert_change.compare_tensor
    untested = functools.partial(tested, with_rank=False)
    for a, b in zip(paths[::2], paths[1::2], strict=True):
        result = unshell.compare(a, b)
        with open_checkpoint(a) as checkpoint_a, open_checkpoint(b) as checkpoint_b:
            model_a, model_b = canonical_model(checkpoint_a), canonical_model(checkpoint_b)
            experts = expert_map(model_a, model_b, result.layers, result.alignment)
            assert experts is not None, (a, b)
            base = change.assess(model_a, model_b, result.layers, result.alignment)
            medians, parts, low = [], 0, 0
            for compare_tensor in (untested, tested):
                expert_change.compare_tensor = compare_tensor  # type: ignore[assignment]
                seconds = []
                for _ in range(runs):
                    value = change.ValueAdded(list(base.tensors), base.note)
                    started = time.perf_counter()
                    expert_change.account_experts(value, experts, model_a, model_b, result.alignment)
                    seconds.append(time.perf_counter() - started)
                medians.append(statistics.median(seconds))
                twinned = [t for t in value.tensors if "twinned" in t.name]
                parts, low = len(twinned), sum(bool(t.low_rank) for t in twinned)
            expert_change.compare_tensor = tested
        print(
            f"| {Path(a).name} | {Path(b).name} | {parts} | {low} | {medians[0]:.3f} | {medians[1]:.3f} "
            f"| {medians[1] / medians[0]:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experts", nargs="+", help="pairs A B of a dense model and an MoE")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.experts:
        expert_costs(args.experts, args.runs)
    else:
        rounding_table()


if __name__ == "__main__":
    main()
