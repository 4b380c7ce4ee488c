"""Write a Llama-2-7B-shaped synthetic bf16 base and two relatives of it for the compare benchmark.

    python benchmarks/make_7b_pair.py [DIRECTORY] [--layers 8] [--noise 0.1] [--seed 0]

Three Hugging Face folders (``config.json`` + ``model.safetensors``) with Llama-2-7B's tensor names
and shapes (H 4096, 32 heads, no GQA, FFN 11008, vocab 32000), under DIRECTORY (default
``benchmarks/_work/llama2-7b-pair``):

* ``base``: seeded random weights. Each matrix is N(0, s^2) with ``s`` set by its role and depth
  (so that per-layer statistics have a profile, as trained models do); RMSNorm gains are 1 + N(0, 0.1^2).
* ``noisy``: ``base + N(0, (noise * s)^2)`` element-wise, a stand-in for a fine-tune (relative
  weight change ``noise``).
* ``rotated``: the same function as ``base``, disguised: every RMSNorm gain folded into the
  matrices that read it (gains become 1), the residual stream rotated by one Haar-random
  orthogonal 4096 x 4096 matrix, and each layer's MLP neurons and attention heads permuted.

``pair.json`` beside them records the settings, the file sizes and the time each file took.

Size: a layer is 202M parameters (404 MB in bf16), embeddings and lm_head 262M (524 MB). The
default 8 layers make 3.8 GB per model and 11.3 GB for the three; ``--layers 32`` is the real
depth, 13.5 GB per model and 40 GB in all. Check ``df -h`` first.

Memory stays near one tensor: values are generated in blocks of rows from per-block seeds, each
file is written tensor by tensor, and transforms run on blocks of 1024 output rows. The largest
working set is one 11008 x 4096 float32 MLP matrix plus a permuted copy (0.36 GB) and the
rotation (64 MB). The rotation is dense: a 11008 x 4096 x 4096 matmul per MLP matrix (0.37
TFLOP), 1.7 TFLOP per layer, about 15 TFLOP for 8 layers with the embeddings: 3 minutes on 2
cores, against about 30 s and 60 s for the base and the noisy copy.

The generator is importable (`make_pair`) and takes any Llama shape, so tests can run it tiny.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

DEFAULT_DIRECTORY = Path(__file__).resolve().parent / "_work" / "llama2-7b-pair"
ROW_BLOCK = 1024
"""Rows generated (and transformed) per step; also the unit of the per-block random seeds."""


@dataclass(frozen=True)
class Llama:
    hidden: int = 4096
    layers: int = 8
    heads: int = 32
    kv_heads: int = 32
    intermediate: int = 11008
    vocab: int = 32000

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def tensors(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape for ``LlamaForCausalLM`` (untied), in state-dict order."""
        h, d = self.hidden, self.head_dim
        out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, h)}
        for i in range(self.layers):
            p = f"model.layers.{i}."
            out[p + "self_attn.q_proj.weight"] = (self.heads * d, h)
            out[p + "self_attn.k_proj.weight"] = (self.kv_heads * d, h)
            out[p + "self_attn.v_proj.weight"] = (self.kv_heads * d, h)
            out[p + "self_attn.o_proj.weight"] = (h, self.heads * d)
            out[p + "mlp.gate_proj.weight"] = (self.intermediate, h)
            out[p + "mlp.up_proj.weight"] = (self.intermediate, h)
            out[p + "mlp.down_proj.weight"] = (h, self.intermediate)
            out[p + "input_layernorm.weight"] = (h,)
            out[p + "post_attention_layernorm.weight"] = (h,)
        out["model.norm.weight"] = (h,)
        out["lm_head.weight"] = (self.vocab, h)
        return out

    def config(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
        }


# Standard deviation by role, scaled by depth below: a profile for std-profile evidence to see.
_ROLE_STD = {
    "q_proj": 0.020,
    "k_proj": 0.022,
    "v_proj": 0.012,
    "o_proj": 0.010,
    "gate_proj": 0.018,
    "up_proj": 0.016,
    "down_proj": 0.011,
    "embed_tokens": 0.020,
    "lm_head": 0.015,
}


def _role(name: str) -> str:
    return name.split(".")[-2]


def _layer(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[2]) if len(parts) > 2 and parts[1] == "layers" else None


def tensor_std(name: str, shape: Llama) -> float:
    layer = _layer(name)
    depth = 1.0 if layer is None else 0.7 + 0.6 * layer / max(1, shape.layers - 1)
    return _ROLE_STD[_role(name)] * depth


# --- values -------------------------------------------------------------------------------------


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, round to nearest even (finite inputs only)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def bf16_round(values: np.ndarray) -> np.ndarray:
    return from_bf16_bits(to_bf16_bits(values))


def base_rows(name: str, index: int, start: int, stop: int, shape: Llama, seed: int) -> np.ndarray:
    """Rows ``start:stop`` of base tensor number ``index``, exactly as stored (bf16-rounded).

    Row block ``b`` always comes from the generator seeded ``[seed, index, b]``, so any slice is
    reproducible on its own; blocks are rounded one at a time to keep temporaries small."""
    dims = shape.tensors()[name]
    if len(dims) == 1:
        rng = np.random.default_rng([seed, index])
        return bf16_round(1.0 + 0.1 * rng.standard_normal(dims[0], dtype=np.float32))
    std = np.float32(tensor_std(name, shape))
    out = np.empty((stop - start, dims[1]), dtype=np.float32)
    for block in range(start // ROW_BLOCK, math.ceil(stop / ROW_BLOCK)):
        first = block * ROW_BLOCK
        rows = min(ROW_BLOCK, dims[0] - first)
        values = np.random.default_rng([seed, index, block]).standard_normal(
            (rows, dims[1]), dtype=np.float32
        )
        low, high = max(start, first), min(stop, first + rows)
        out[low - start : high - start] = bf16_round(values[low - first : high - first] * std)
    return out


def base_tensor(name: str, shape: Llama, seed: int) -> np.ndarray:
    index = list(shape.tensors()).index(name)
    return base_rows(name, index, 0, shape.tensors()[name][0], shape, seed)


# A variant yields a tensor's float32 values in row blocks, in order.
Variant = Callable[[str, int], Iterator[np.ndarray]]


def base_variant(shape: Llama, seed: int) -> Variant:
    def rows(name: str, index: int) -> Iterator[np.ndarray]:
        total = shape.tensors()[name][0]
        if len(shape.tensors()[name]) == 1:
            yield base_rows(name, index, 0, total, shape, seed)
            return
        for start in range(0, total, ROW_BLOCK):
            yield base_rows(name, index, start, min(total, start + ROW_BLOCK), shape, seed)

    return rows


def noisy_variant(shape: Llama, seed: int, noise: float) -> Variant:
    base = base_variant(shape, seed)

    def rows(name: str, index: int) -> Iterator[np.ndarray]:
        std = noise * (0.1 if len(shape.tensors()[name]) == 1 else tensor_std(name, shape))
        for block, values in enumerate(base(name, index)):
            rng = np.random.default_rng([seed, 1_000_003, index, block])
            yield values + np.float32(std) * rng.standard_normal(values.shape, dtype=np.float32)

    return rows


def haar_orthogonal(size: int, seed: int) -> np.ndarray:
    """Haar-random orthogonal matrix, float32 throughout (orthogonal to ~1e-6, far below bf16's
    rounding, and a quarter of float64's memory)."""
    rng = np.random.default_rng([seed, 77])
    q, r = np.linalg.qr(rng.standard_normal((size, size), dtype=np.float32))
    q *= np.sign(np.diag(r))
    return q


def rotated_variant(shape: Llama, seed: int) -> tuple[Variant, dict[str, Any]]:
    """Norms folded into their readers, residual x -> x Q, heads and neurons permuted per layer."""
    if shape.kv_heads != shape.heads:
        raise ValueError("the head permutation here assumes no grouped-query attention")
    q = haar_orthogonal(shape.hidden, seed)
    d = shape.head_dim

    def permutations(layer: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, 99, layer])
        heads = rng.permutation(shape.heads)  # with GQA the groups would have to move together
        rows = (heads[:, None] * d + np.arange(d)).reshape(-1)
        return rows, rng.permutation(shape.intermediate)

    def gain(name: str) -> np.ndarray:
        return base_tensor(name, shape, seed)

    def reader_gain(name: str) -> np.ndarray:
        layer, role = _layer(name), _role(name)
        if layer is None:
            return gain("model.norm.weight")
        norm = "input_layernorm" if role in ("q_proj", "k_proj", "v_proj") else "post_attention_layernorm"
        return gain(f"model.layers.{layer}.{norm}.weight")

    def rows(name: str, index: int) -> Iterator[np.ndarray]:
        role, layer = _role(name), _layer(name)
        if len(shape.tensors()[name]) == 1:
            yield np.ones(shape.hidden, dtype=np.float32)
            return
        if role == "embed_tokens":
            total = shape.vocab
            for start in range(0, total, ROW_BLOCK):
                yield base_rows(name, index, start, min(total, start + ROW_BLOCK), shape, seed) @ q
            return
        if role == "lm_head":
            g = reader_gain(name)
            for start in range(0, shape.vocab, ROW_BLOCK):
                block = base_rows(name, index, start, min(shape.vocab, start + ROW_BLOCK), shape, seed)
                yield (block * g) @ q
            return
        assert layer is not None
        head_rows, neurons = permutations(layer)
        whole = base_tensor(name, shape, seed)
        attention = role in ("q_proj", "k_proj", "v_proj", "o_proj")
        order = head_rows if attention else neurons
        if role in ("o_proj", "down_proj"):  # writers: Q^T W, columns permuted
            permuted = whole[:, order]
            del whole
            for start in range(0, shape.hidden, ROW_BLOCK):
                yield q.T[start : start + ROW_BLOCK] @ permuted
            return
        g = reader_gain(name)  # readers: (W diag(g)) Q, rows permuted, one block of rows at a time
        for start in range(0, whole.shape[0], ROW_BLOCK):
            yield (whole[order[start : start + ROW_BLOCK]] * g) @ q

    truth = {
        "rotation": f"Haar orthogonal {shape.hidden}x{shape.hidden}, numpy default_rng([seed, 77])",
        "permutations": "per layer from default_rng([seed, 99, layer]): heads, then MLP neurons",
        "norms": "folded into q/k/v, gate/up and lm_head; stored as ones",
    }
    return rows, truth


# --- writing ------------------------------------------------------------------------------------


def write_model(directory: Path, shape: Llama, variant: Variant) -> float:
    """Write ``directory/model.safetensors`` (bf16, tensors sorted by name) and config.json,
    streaming; returns seconds taken. The folder appears complete or not at all."""
    started = time.monotonic()
    tensors = shape.tensors()
    order = sorted(tensors)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in order:
        size = math.prod(tensors[name]) * 2
        header[name] = {
            "dtype": "BF16",
            "shape": list(tensors[name]),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    directory.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        with (temp / "model.safetensors").open("wb") as handle:
            handle.write(struct.pack("<Q", len(encoded)))
            handle.write(encoded)
            index = {name: i for i, name in enumerate(tensors)}
            for name in order:
                _write_tensor(handle, variant(name, index[name]), tensors[name])
        (temp / "config.json").write_text(json.dumps(shape.config(), indent=2) + "\n")
        temp.chmod(0o755)  # mkdtemp's 0700 would otherwise stay on the finished folder
        temp.rename(directory)
    except BaseException:
        for path in temp.glob("*"):
            path.unlink()
        temp.rmdir()
        raise
    return time.monotonic() - started


def _write_tensor(handle: BinaryIO, blocks: Iterator[np.ndarray], dims: tuple[int, ...]) -> None:
    written = 0
    for block in blocks:
        handle.write(to_bf16_bits(block).tobytes())
        written += block.size
    if written != math.prod(dims):
        raise RuntimeError(f"wrote {written} values for a tensor of shape {dims}")


def make_pair(
    directory: Path, shape: Llama, *, seed: int = 0, noise: float = 0.1, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Write ``base``, ``noisy`` and ``rotated`` under ``directory`` (each skipped if present)."""
    directory.mkdir(parents=True, exist_ok=True)
    rotated, truth = rotated_variant(shape, seed)
    variants = {
        "base": base_variant(shape, seed),
        "noisy": noisy_variant(shape, seed, noise),
        "rotated": rotated,
    }
    record: dict[str, Any] = {"shape": asdict(shape), "seed": seed, "noise": noise, "models": {}}
    for label, variant in variants.items():
        target = directory / label
        seconds = None if target.exists() else round(write_model(target, shape, variant), 1)
        size = (target / "model.safetensors").stat().st_size
        record["models"][label] = {"path": label, "bytes": size, "seconds": seconds}
        log(
            f"{label}: {size / 1e9:.2f} GB"
            + (f" in {seconds} s" if seconds is not None else " (already there)")
        )
    record["models"]["noisy"]["how"] = f"base + N(0, ({noise} x tensor std)^2) per element"
    record["models"]["rotated"]["how"] = truth
    (directory / "pair.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIRECTORY)
    parser.add_argument("--layers", type=int, default=8, help="decoder layers (Llama-2-7B has 32; default 8)")
    parser.add_argument("--noise", type=float, default=0.1, help="noisy copy's relative weight change")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shape = Llama(layers=args.layers)
    need = 3 * 2 * sum(math.prod(s) for s in shape.tensors().values())
    existing = args.directory.resolve()
    while not existing.exists():
        existing = existing.parent
    free = os.statvfs(existing)
    if free.f_bavail * free.f_frsize < need:
        print(f"needs {need / 1e9:.1f} GB of disk; fewer --layers?", file=sys.stderr)
        return 1
    make_pair(args.directory, shape, seed=args.seed, noise=args.noise)
    return 0


if __name__ == "__main__":
    sys.exit(main())
