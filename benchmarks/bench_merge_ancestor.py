"""A trust case of the merge test: an original against light fine-tunes of itself.

    python benchmarks/bench_merge_ancestor.py [--tensors 40] [--seed 0]

`compare B --against A1 A2 ...` must not call B a merge of the candidates when B is their common
ancestor (the original release, compared against models fine-tuned from it): that would say the
original was made from its own derivatives. Dense merges are guarded by the common-ancestor rule
(`merges.MERGE_MIN_BEYOND_ANCESTOR`); a merge read as sparse (TIES/DARE-like: B holds one
candidate's values exactly on at least `SPARSE_MIN_FRACTION` of the values where the candidates
differ) is exempt from it, because a real TIES merge reads like an ancestor there too
(beyond-ancestor -0.06 on the SmolLM2 TIES merge).

A light fine-tune stored in bf16 (or f16) leaves many values exactly as they were: a change
smaller than half a unit in the last place rounds back to the original value. The original then
holds each candidate's values exactly wherever that candidate did not move them, reads as sparse,
skipped the ancestor rule, and with three candidates (the merge fit explains about 1 - 1/k = 0.66
of what the best single parent leaves, past `MERGE_MIN_EXPLAINED`) was called a sparse merge.
Now a sparse reading skips the rule only when B keeps the base's values where the other
candidates are close to it, as TIES does (`SPARSE_BASE_MAX_CLOSENESS`; the closeness column).

Each row: ``--tensors`` matrices of 256 x 128 (4 roles' worth of layers), an "original" of
N(0, 0.02) values rounded to the storage type, and k candidates each the original plus Gaussian
noise of ``rel`` times its scale (independent per candidate: uncorrelated fine-tunes), rounded to
the same type. The truth for every row: B is the candidates' common ancestor, not their merge.
`fit_tensor` / `decide_merge` are the merge test's own functions (no files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from unshell.lineage.merges import decide_merge, fit_tensor  # noqa: E402


def bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest even), as float32."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


def f16(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float16).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(
        "| stored | change (x scale) | k | values unchanged | sparse fraction | base closeness | explained "
        "| beyond ancestor | verdict |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, store in (("bf16", bf16), ("f16", f16)):
        for rel in (0.002, 0.005, 0.01, 0.03):
            for k in (2, 3):
                fits = []
                unchanged = []
                for t in range(args.tensors):
                    original = store(rng.standard_normal((256, 128)) * 0.02)
                    candidates = [
                        store(original + rel * 0.02 * rng.standard_normal(original.shape)) for _ in range(k)
                    ]
                    unchanged.append(float(np.mean(candidates[0] == original)))
                    fits.append(fit_tensor(t // 4, "mlp.up.weight", original, candidates))
                merge = decide_merge(fits, [f"ft{i}" for i in range(k)])
                verdict = "**merged (false)**" if merge.merged else "not merged"
                sparse = "-" if merge.sparse_fraction is None else f"{merge.sparse_fraction:.3f}"
                beyond = "-" if merge.beyond_ancestor is None else f"{merge.beyond_ancestor:.4f}"
                close = "-" if merge.sparse_base_closeness is None else f"{merge.sparse_base_closeness:.2f}"
                print(
                    f"| {label} | {rel} | {k} | {np.mean(unchanged):.2f} | {sparse} | {close} | "
                    f"{merge.explained:.3f} | {beyond} | {verdict} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
