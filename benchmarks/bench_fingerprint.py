"""Benchmark: fingerprint size and time for a Llama-2-7B-shaped checkpoint, and comparisons
against the fingerprint (`unshell.lineage.fingerprint`).

Uses the pair `make_7b_pair.py` writes (base, noisy = base + 10% noise, rotated = norms folded,
residual stream rotated, heads and neurons permuted). Each measurement runs in its own process
(peak RSS is its own) after the files are dropped from the page cache. The fingerprint's size is
split into its parts and extrapolated from the layers built to Llama-2-7B's 32 layers (everything
per layer is a fixed number of bytes: 7 unit sketches, 9 content hashes and their records).

    python benchmarks/bench_fingerprint.py [--layers 4] [--directory DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_compare import drop_cache  # noqa: E402
from make_7b_pair import Llama, make_pair  # noqa: E402

CHILD = """
import json, resource, sys, time
from pathlib import Path
from unshell.lineage.fingerprint import Fingerprint, compare_with_fingerprint, fingerprint
mode, base = sys.argv[1], sys.argv[2]
start = time.perf_counter()
out = {}
if mode == "fingerprint":
    print_ = fingerprint(base)
    data = print_.to_bytes()
    Path(sys.argv[3]).write_bytes(data)
    out.update(bytes=len(data), sketches=print_.sketches.nbytes, anchors=print_.anchors.nbytes,
               hashes=len(print_.tensor_numels) * 96, units=len(print_.units), anchor_rows=print_.anchors.shape[1],
               layers=print_.layers)
else:
    print_ = Fingerprint.from_bytes(Path(base).read_bytes())
    suspect = sys.argv[3]
    if mode == "both":
        suspect = fingerprint(suspect)
    result = compare_with_fingerprint(print_, suspect)
    out.update(verdict=result.verdict, p_value=result.p_value, how=result.how, score=result.score,
               residual=None if result.alignment is None else result.alignment.residual)
out["seconds"] = time.perf_counter() - start
out["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with open("/proc/self/io") as handle:
    io = dict(line.split(": ") for line in handle.read().splitlines())
out["read_bytes"] = int(io["read_bytes"])
print(json.dumps(out))
"""


def child(*args: str) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True, env=dict(os.environ)
    )
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def weights(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--directory", type=Path, default=HERE / "_work" / "llama2-7b-pair")
    args = parser.parse_args()
    directory = args.directory
    if not (directory / "pair.json").exists():
        make_pair(directory, Llama(layers=args.layers))
    layers = json.loads((directory / "pair.json").read_text())["shape"]["layers"]
    base, noisy, rotated = directory / "base", directory / "noisy", directory / "rotated"
    target = directory / "base.fingerprint"

    drop_cache(weights(base))
    made = child("fingerprint", str(base), str(target))
    print(json.dumps({"fingerprint": made}))
    per_layer_units = int(made["units"]) // layers  # type: ignore[call-overload]
    unit_bytes = int(made["sketches"]) // max(int(made["units"]), 1)  # type: ignore[call-overload]
    layer_bytes = (int(made["bytes"]) - int(made["anchors"])) / layers  # type: ignore[call-overload]
    # Everything but the anchors (fixed for a vocabulary) grows with depth, at most by the per-layer
    # share measured here (an upper bound: the embeddings' hashes and the header are counted in it).
    estimate_32 = int(made["anchors"]) + 32 * layer_bytes  # type: ignore[call-overload]
    print(
        json.dumps(
            {
                "units_per_layer": per_layer_units,
                "bytes_per_unit_sketch": unit_bytes,
                "bytes_per_layer_upper_bound": round(layer_bytes),
                "estimate_32_layers_upper_bound": round(estimate_32),
            }
        )
    )
    for name, suspect in (("noisy", noisy), ("rotated", rotated)):
        drop_cache(weights(suspect))
        print(json.dumps({name: child("checkpoint", str(target), str(suspect))}))
    drop_cache(weights(noisy))
    print(json.dumps({"noisy, fingerprint vs fingerprint": child("both", str(target), str(noisy))}))


if __name__ == "__main__":
    main()
