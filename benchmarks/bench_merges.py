"""The merge test (`unshell compare B --against A1 A2`) on the zoo's merges and non-merges, and its
null over triples of independently trained models.

    python benchmarks/bench_merges.py [--null 100] [--smollm2 | --smollm2-only]

Prints one row per case (the merge fit only: the pairwise comparisons are `compare`'s own
benchmark), then the null: B and two candidates all trained independently (the zoo's null models,
same data and recipe, different seeds), where no p should fall below alpha more than alpha of the
time and `explained` should stay near 0. ``--smollm2-only`` runs the SmolLM2 cases alone (no main
zoo, no null).

"max weight error" is over the tensors where the parents differ (`Merge.identifiable`: for the
SmolLM2 merges, the blocks the fine-tunes trained; elsewhere both parents hold the same values,
the merge is a copy of them and no weight can be identified); "copies" counts the tensors the fit
set aside as copies of one parent; "beyond ancestor" is how much of what B being the candidates'
common ancestor would leave the merge explains (`MergeFit.beyond_ancestor`); "base closeness" is
`MergeFit.sparse_base_closeness` (a sparse reading's base: TIES about 0.4).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from unshell.formats import open_checkpoint  # noqa: E402
from unshell.lineage.canonical import canonical_model  # noqa: E402
from unshell.lineage.merges import MergeFit, fit_merge  # noqa: E402


def fit(b: Path, parents: tuple[Path, ...]) -> tuple[MergeFit, Any, float]:
    start = time.perf_counter()
    models = [canonical_model(open_checkpoint(p)) for p in (b, *parents)]
    result = fit_merge(models[0], models[1:], [p.name for p in parents])
    seconds = time.perf_counter() - start
    return result, models[0], seconds


def weight_error(
    result: MergeFit, model_b: Any, truth: dict[str, list[float]], identifiable: tuple[int, ...] | None
) -> float | None:
    if not truth:
        return None
    return max(
        max(abs(w - e) for w, e in zip(t.weights, truth[model_b.slots[(t.layer, t.role)][0]], strict=True))
        for t in result.tensors
        if identifiable is None or t.layer in identifiable
    )


def row(name: str, truth: str, result: MergeFit, error: float | None, seconds: float) -> str:
    p = "n/a" if result.p_value is None else f"{result.p_value:.2g}"
    explained = "n/a" if result.explained is None else f"{result.explained:.3f}"
    sparse = "n/a" if result.sparse_fraction is None else f"{result.sparse_fraction:.3f}"
    beyond = "n/a" if result.beyond_ancestor is None else f"{result.beyond_ancestor:.3f}"
    close = "n/a" if result.sparse_base_closeness is None else f"{result.sparse_base_closeness:.2f}"
    err = "" if error is None else f"{error:.1e}"
    weights = ", ".join(f"{w:.3f}" for w in result.weights)
    said = f"merged ({result.method})" if result.merged else "not merged"
    copies = sum(1 for t in result.tensors if not t.evidence)
    return (
        f"| {name} | {truth} | {said} | {p} | {explained} | {beyond} | {sparse} | {close} | {weights} | {err} "
        f"| {copies}/{len(result.tensors)} | {seconds:.2f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--null", type=int, default=100, help="null triples of independent models")
    parser.add_argument("--smollm2", action="store_true", help="also the SmolLM2-135M merges (1.1 GB cache)")
    parser.add_argument("--smollm2-only", action="store_true", help="only the SmolLM2-135M merges")
    args = parser.parse_args()
    from test_merges import _zoo_merges
    from zoo_fixture import zoo

    module = _zoo_merges()
    zoos = [] if args.smollm2_only else [module.load_or_build()]
    if args.smollm2 or args.smollm2_only:
        from artifacts import fetch

        zoos.append(module.load_or_build_smollm2(fetch("smollm2_gguf")))
    print(
        "| case | truth | said | p | explained | beyond ancestor | sparse | base closeness | weights (median) "
        "| max weight error | copies | fit s |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for merges in zoos:
        for merge in merges.merges.values():
            result, model_b, seconds = fit(merge.path, merge.parents)
            print(
                row(
                    merge.name,
                    f"{merge.method} merge",
                    result,
                    weight_error(result, model_b, merge.truth, merge.identifiable),
                    seconds,
                )
            )
        for case in merges.negatives.values():
            result, _, seconds = fit(case.path, case.candidates)
            print(row(case.name, "not a merge", result, None, seconds))
    if args.smollm2_only or args.null <= 0:
        return 0
    paths = [pair.a for pair in zoo().null_pairs(300)] + [pair.b for pair in zoo().null_pairs(300)]
    models = sorted(set(paths))
    triples = list(itertools.islice(itertools.permutations(models, 3), 0, None, 7))[: args.null]
    p_values, explained, merged = [], [], 0
    for b, a1, a2 in triples:
        result, _, _ = fit(b, (a1, a2))
        p_values.append(1.0 if result.p_value is None else result.p_value)
        explained.append(0.0 if result.explained is None else result.explained)
        merged += result.merged
    n = len(p_values)
    print()
    print(f"null: {n} triples of independent models ({len(models)} null models)")
    for alpha in (0.01, 0.05, 0.1):
        print(f"  p < {alpha}: {sum(p < alpha for p in p_values) / n:.3f}")
    print(
        f"  explained: median {statistics.median(explained):.4f}, max {max(explained):.4f}; merged: {merged}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
