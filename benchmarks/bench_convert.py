"""Benchmark: `unshell convert` of a 7B-shaped sharded bf16 checkpoint, against a plain copy.

The source is a Llama-2-7B-shaped checkpoint (H 4096, FFN 11008, 32 heads, vocabulary 32000,
bf16) in InternLM2's layout (``wqkv`` grouped per KV head, ``wo``, ``feed_forward.w1/w2/w3``,
``tok_embeddings``/``output``), or Yi's (a pure rename), in safetensors shards of about 2 GB
with an index. Values are random bf16 bits with a normal-sized exponent, written shard by shard.
``--layers`` scales the depth: 32 is the whole 7B (13.5 GB); the default 8 layers plus the full
embedding and output matrices (3.8 GB) keeps the source, the copy and the output within the disk
of a small CI machine while every tensor keeps its 7B shape.

Measured in the same run, each repeated ``--repeat`` times (median reported):

* plain copy: ``shutil.copyfile`` of every source file (sendfile in the kernel, no Python in the
  data path): the floor for moving the bytes once;
* convert: ``python -m unshell convert SRC -o OUT --no-verify`` in a child process: recognition,
  planning, reading, splitting, writing the shards, hashing source and output (sha256), record;
  peak RSS from ``wait4``;
* convert --no-source-digests: the same, hashing only the output (the user's option when the
  source is not in a Hub cache, whose blob names are the source digests for free);
* convert without sha256 (diagnostic): the same child with the two hashers replaced by no-ops, to
  separate the data path from the cost of the record's sha256 of every source and output byte.

Throughput is source bytes per second. Before each measurement the source files are evicted
from the page cache (``posix_fadvise(DONTNEED)``), so both sides read the weights from disk.

    python benchmarks/bench_convert.py [--layers 8] [--layout internlm2] [--repeat 3] [--dir /tmp] [--hub-cache]

``--hub-cache`` lays the source out the way ``huggingface_hub`` stores a download (weights as
blobs named by their sha256); `convert` then takes the source digests from the blob names and
hashes only its output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HIDDEN, FFN, HEADS, KV_HEADS, VOCAB = 4096, 11008, 32, 32, 32000
SHARD_BYTES = 2_000_000_000


def _tensors(layout: str, layers: int) -> list[tuple[str, tuple[int, ...]]]:
    head_dim = HIDDEN // HEADS
    out: list[tuple[str, tuple[int, ...]]] = []
    if layout == "internlm2":
        out.append(("model.tok_embeddings.weight", (VOCAB, HIDDEN)))
        for i in range(layers):
            p = f"model.layers.{i}"
            out += [
                (f"{p}.attention_norm.weight", (HIDDEN,)),
                (f"{p}.attention.wqkv.weight", ((HEADS + 2 * KV_HEADS) * head_dim, HIDDEN)),
                (f"{p}.attention.wo.weight", (HIDDEN, HIDDEN)),
                (f"{p}.ffn_norm.weight", (HIDDEN,)),
                (f"{p}.feed_forward.w1.weight", (FFN, HIDDEN)),
                (f"{p}.feed_forward.w3.weight", (FFN, HIDDEN)),
                (f"{p}.feed_forward.w2.weight", (HIDDEN, FFN)),
            ]
        out += [("model.norm.weight", (HIDDEN,)), ("output.weight", (VOCAB, HIDDEN))]
        return out
    out.append(("model.embed_tokens.weight", (VOCAB, HIDDEN)))
    for i in range(layers):
        p = f"model.layers.{i}"
        out += [
            (f"{p}.ln1.weight", (HIDDEN,)),
            (f"{p}.self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
            (f"{p}.self_attn.k_proj.weight", (KV_HEADS * head_dim, HIDDEN)),
            (f"{p}.self_attn.v_proj.weight", (KV_HEADS * head_dim, HIDDEN)),
            (f"{p}.self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
            (f"{p}.ln2.weight", (HIDDEN,)),
            (f"{p}.mlp.gate_proj.weight", (FFN, HIDDEN)),
            (f"{p}.mlp.up_proj.weight", (FFN, HIDDEN)),
            (f"{p}.mlp.down_proj.weight", (HIDDEN, FFN)),
        ]
    out += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    return out


def _config(layout: str, layers: int) -> dict[str, object]:
    common = {
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": layers,
        "vocab_size": VOCAB,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "hidden_act": "silu",
    }
    if layout == "internlm2":
        return {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "bias": False, **common}
    return {"architectures": ["YiForCausalLM"], "model_type": "Yi", **common}


def _random_bf16(rng: np.random.Generator, count: int) -> np.ndarray:
    """bf16 bits of values with magnitude in [2^-8, 2^0), random sign: plausible weights, fast."""
    bits = rng.integers(0x3B80, 0x3F80, size=count, dtype=np.uint16)
    return bits | (rng.integers(0, 2, size=count, dtype=np.uint16) << 15)


def _write_shard(path: Path, tensors: list[tuple[str, tuple[int, ...]]], rng: np.random.Generator) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    position = 0
    for name, shape in tensors:
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [position, position + size]}
        position += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-(8 + len(encoded)) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        for _, shape in tensors:
            remaining = int(np.prod(shape))
            while remaining:
                count = min(remaining, 32 << 20)
                handle.write(_random_bf16(rng, count).tobytes())
                remaining -= count


def make_checkpoint(directory: Path, layout: str, layers: int) -> int:
    """Write the sharded checkpoint; returns its weight bytes."""
    directory.mkdir(parents=True)
    tensors = _tensors(layout, layers)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in tensors:
        nbytes = int(np.prod(shape)) * 2
        if groups[-1] and size + nbytes > SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    rng = np.random.default_rng(0)
    weight_map = {}
    for number, group in enumerate(groups, start=1):
        file_name = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        _write_shard(directory / file_name, group, rng)
        weight_map.update(dict.fromkeys((n for n, _ in group), file_name))
    total = sum(int(np.prod(s)) * 2 for _, s in tensors)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (directory / "config.json").write_text(json.dumps(_config(layout, layers), indent=2))
    return total


def as_hub_cache(directory: Path, root: Path) -> Path:
    """Move a model folder into the Hugging Face cache layout and return the snapshot folder.

    Weight files become blobs named by their sha256 (the LFS object id, as the Hub stores
    them); small files get 40-digit git blob names. This is how a model downloaded with
    ``huggingface_hub`` sits on disk, and it lets `convert` take source digests from the names.
    """
    repo = root / "models--bench--internlm2-7b"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for path in sorted(directory.iterdir()):
        digest = hashlib.sha256() if path.suffix == ".safetensors" else hashlib.sha1()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(8 << 20), b""):
                digest.update(block)
        blob = repo / "blobs" / digest.hexdigest()
        path.rename(blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    directory.rmdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return snapshot


def _evict(directory: Path) -> None:
    """Drop the source files' pages from the page cache (and only theirs: the interpreter and
    numpy stay cached), so every run reads the weights from disk."""
    os.sync()
    for entry in directory.iterdir():
        fd = os.open(entry, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def plain_copy(source: Path, target: Path) -> float:
    _evict(source)
    start = time.perf_counter()
    target.mkdir()
    for entry in sorted(source.iterdir()):
        shutil.copyfile(entry, target / entry.name)
    seconds = time.perf_counter() - start
    shutil.rmtree(target)
    return seconds


WITHOUT_HASHES = """
import sys
from unshell.conversion import writer

class _NoHash:
    def update(self, data): pass
    def hexdigest(self): return "-"
    def close(self): pass

class _NoFileHashes:
    def __init__(self, paths, compute=True): self.paths = list(paths)
    def result(self): return {p: writer.FileDigest(0, "-", "computed") for p in self.paths}
    def cancel(self): pass

writer._BackgroundHash = _NoHash
writer._FileHashes = _NoFileHashes
from unshell.cli.main import main
main(sys.argv[1:])
"""


def run_convert(
    source: Path, target: Path, *, hashes: bool = True, options: tuple[str, ...] = ()
) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of one `unshell convert` child process."""
    _evict(source)
    start = time.perf_counter()
    arguments = ["convert", str(source), "-o", str(target), "--no-verify", *options]
    command = ["-m", "unshell", *arguments] if hashes else ["-c", WITHOUT_HASHES, *arguments]
    process = subprocess.Popen([sys.executable, *command], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"convert failed with exit code {process.returncode}")
    shutil.rmtree(target)
    return seconds, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--layout", choices=("internlm2", "yi"), default="internlm2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--hub-cache",
        action="store_true",
        help="lay the source out as a Hugging Face cache repo (sha256-named blobs)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="unshell-bench-convert-", dir=args.dir))
    try:
        source = work / "source"
        start = time.perf_counter()
        total = make_checkpoint(source, args.layout, args.layers)
        print(
            f"generated {total:,} bytes ({args.layout}, {args.layers} layers) in {time.perf_counter() - start:.1f} s"
        )
        if args.hub_cache:
            source = as_hub_cache(source, work / "hub")
            print(f"laid out as a Hub cache repo: {source}")
        copies, converts, lean, bare, peaks = [], [], [], [], []
        for _ in range(args.repeat):
            copies.append(plain_copy(source, work / "copy"))
            seconds, peak = run_convert(source, work / "out")
            converts.append(seconds)
            peaks.append(peak)
            lean.append(run_convert(source, work / "out", options=("--no-source-digests",))[0])
            bare.append(run_convert(source, work / "out", hashes=False)[0])
        copy_s, convert_s, bare_s = (
            statistics.median(copies),
            statistics.median(converts),
            statistics.median(bare),
        )
        print(f"copies s: {[round(s, 2) for s in copies]}  converts s: {[round(s, 2) for s in converts]}")
        print(f"converts without sha256 s: {[round(s, 2) for s in bare]}")
        print(f"plain copy: {copy_s:.2f} s, {total / copy_s / 1e9:.2f} GB/s")
        print(f"convert:    {convert_s:.2f} s, {total / convert_s / 1e9:.2f} GB/s")
        print(f"ratio (convert throughput / copy throughput): {copy_s / convert_s:.2f}")
        lean_s = statistics.median(lean)
        print(f"convert --no-source-digests s: {[round(s, 2) for s in lean]}")
        print(f"convert --no-source-digests: {lean_s:.2f} s, ratio {copy_s / lean_s:.2f}")
        print(f"convert without sha256: {bare_s:.2f} s, ratio {copy_s / bare_s:.2f}")
        print(f"peak RSS of convert: {max(peaks) / 2**20:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
