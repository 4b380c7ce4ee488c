"""Benchmark: what row sampling (`sketch.sampled_rows`) costs a sketch's evidence, and saves its time.

For a Llama-2-7B-shaped FFN matrix (11,008 vectors of 4,096, r = 256) and an attention matrix
(4,096 vectors), two kinds of synthetic rows: ``init`` (i.i.d. Gaussian, what a model keeps of its
random initialization, the part of the bulk spectrum only a derivative shares) and ``aniso``
(Gaussian with a power-law covariance shared by every model of the "population": the structure
independently trained models share). For K vectors kept, prints the sketch cosine of A against:

* ``finetune``: A's rows plus 10% noise, same order (both sides sample the same rows);
* ``permuted``: the same rows shuffled (neurons permuted): the samples are different vectors;
* ``independent``: another draw of the same population (the null's hardest case here),

next to the exact null scale (`compare.haar_scale`) and the CPU seconds of one `unit_sketch`.

``--pair DIR`` instead compares `make_7b_pair.py`'s ``base`` with its ``noisy`` and ``rotated``
relatives (full `compare`, `--quick`, and base's fingerprint against the checkpoint), printing each
verdict, log10 p, `how`, similarity and the CPU seconds: the power of the sampled statistic at full
7B width. Run it once per source tree (``PYTHONPATH=.../src``) for before and after.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_row_sample.py [--keep 1024,2048,4096,0]
    python benchmarks/bench_row_sample.py --pair benchmarks/_work/llama2-7b-pair
    python benchmarks/bench_row_sample.py --zoo --per-dim 1     # the zoo's derivatives sampled hard
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HIDDEN = 4096
R = 256


def rows(kind: str, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((count, HIDDEN), dtype=np.float32)
    if kind == "aniso":
        scale = (np.arange(1, HIDDEN + 1, dtype=np.float32) ** -0.5).astype(np.float32)
        values *= scale[None, :]
    return values


def sketch(matrix: np.ndarray, basis: np.ndarray, keep: int) -> tuple[np.ndarray, float]:
    from unshell.lineage.sketch import sampled_rows, unit_sketch

    ids = sampled_rows(matrix.shape[0], keep)
    vectors = matrix if ids is None else matrix[ids]
    start = time.process_time()
    result, _ = unit_sketch(vectors, basis)
    return result.ravel(), time.process_time() - start


def pair(directory: Path) -> None:
    import unshell
    from unshell.lineage.fingerprint import Fingerprint, compare_with_fingerprint, fingerprint

    print(f"unshell from {Path(unshell.__file__).parent}")
    print("| B | mode | verdict | log10 p | how | similarity | CPU s |")
    print("|---|---|---|---:|---|---:|---:|")
    base = directory / "base"
    for label in ("noisy", "rotated"):
        for mode in ("full", "quick", "fingerprint"):
            start = time.process_time()
            if mode == "fingerprint":
                result = compare_with_fingerprint(
                    Fingerprint.from_bytes(fingerprint(base).to_bytes()), directory / label
                )
            else:
                result = unshell.compare(base, directory / label, quick=mode == "quick")
            seconds = time.process_time() - start
            out = result.to_dict()
            log10 = out.get("log10_p_value")
            score = out.get("score")
            print(
                f"| {label} | {mode} | {result.verdict} | {'' if log10 is None else f'{log10:.1f}'} | "
                f"{', '.join(out.get('how') or []) or '-'} | {'' if score is None else f'{score:.3f}'} | {seconds:.1f} |",
                flush=True,
            )


def zoo_power() -> None:
    """Every derived pair of the lineage zoo (tests/zoo_fixture.py) through full `compare` at the
    current sample (set with --per-dim): its verdict and `how` against the zoo's truth."""
    import sys

    root = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(root / "tests"), str(root / "tools")]
    import unshell
    from zoo_fixture import zoo

    print("| pair | truth | verdict | log10 p | how |")
    print("|---|---|---|---:|---|")
    counts: dict[str, int] = {}
    for pair in zoo().derived:
        result = unshell.compare(pair.a, pair.b)
        out = result.to_dict()
        counts[result.verdict] = counts.get(result.verdict, 0) + 1
        log10 = out.get("log10_p_value")
        print(
            f"| {pair.name} | {', '.join(pair.how)} | {result.verdict} | "
            f"{'' if log10 is None else f'{log10:.1f}'} | {', '.join(result.how) or '-'} |",
            flush=True,
        )
    print(f"verdicts: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", default="1024,2048,4096,0", help="vectors kept (0: all)")
    parser.add_argument("--counts", default="11008,4096")
    parser.add_argument("--pair", type=Path, help="make_7b_pair.py's folder: compare base with its relatives")
    parser.add_argument("--zoo", action="store_true", help="the lineage zoo's derived pairs, full compare")
    parser.add_argument(
        "--per-dim", type=int, help="--pair: vectors kept per sketch dimension (default unshell's; 0: all)"
    )
    args = parser.parse_args()
    if args.per_dim is not None:
        import unshell.lineage.sketch as sketch_module

        sketch_module.ROW_SAMPLE_PER_DIM = args.per_dim  # read at every `row_sample_size` call
    if args.pair:
        pair(args.pair)
        return
    if args.zoo:
        zoo_power()
        return
    from unshell.lineage.compare import haar_scale
    from unshell.lineage.sketch import projection

    basis = projection(HIDDEN, R)
    print(f"null scale (Haar, r = {R}): {haar_scale(R):.4f}")
    print("| kind | vectors | K | finetune | permuted | independent | CPU s per sketch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for count in (int(c) for c in args.counts.split(",")):
        for kind in ("init", "aniso"):
            a = rows(kind, count, 1)
            noise = rows(kind, count, 2)
            finetune = a + 0.1 * noise
            del noise
            permuted = finetune[np.random.default_rng(3).permutation(count)]
            other = rows(kind, count, 4)
            for keep in (int(k) for k in args.keep.split(",")):
                base, seconds = sketch(a, basis, keep)
                cosines = [float(base @ sketch(m, basis, keep)[0]) for m in (finetune, permuted, other)]
                shown = "all" if keep == 0 or keep >= count else str(keep)
                print(
                    f"| {kind} | {count} | {shown} | {cosines[0]:.3f} | {cosines[1]:.3f} | "
                    f"{cosines[2]:.4f} | {seconds:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
