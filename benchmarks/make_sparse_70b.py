"""Write a Llama-2-70B-shaped sharded safetensors checkpoint whose data costs no disk.

The headers are real: every tensor of Llama-2-70b-hf with its true name, dtype, shape and byte
range, split into 15 shards the way ``transformers`` split the real upload (tensors in state-dict
order, a new shard whenever the next tensor would pass 10 GB), plus ``model.safetensors.index.json``
and the real ``config.json``. The data regions are sparse (``truncate`` past the header), so the
138 GB checkpoint takes a few megabytes of disk and reads back as zeros. It exists to time
header-only commands such as ``unshell inspect`` at full scale.

The real upload is float16; this one is bfloat16 by default (same sizes) and its config says so.

    python benchmarks/make_sparse_70b.py [DIRECTORY]          # 70B, sparse
    python benchmarks/make_sparse_70b.py --tiny [DIRECTORY]   # H 64, L 2, real data: comparison row

The writer is importable: `make_llama_checkpoint`.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DIRECTORY = Path(__file__).resolve().parent / "_work" / "llama2-70b-sparse"
DEFAULT_TINY_DIRECTORY = Path(__file__).resolve().parent / "_work" / "llama-tiny"

# transformers' default max_shard_size when Llama-2-70b-hf was saved ("10GB", decimal).
HF_MAX_SHARD_BYTES = 10 * 10**9
_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4}
_TORCH_DTYPE = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]


def llama_tensors(
    *, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int
) -> list[_Tensor]:
    """Tensors of a Hugging Face ``LlamaForCausalLM`` in state-dict (module registration) order."""
    head_dim = hidden // heads
    tensors = [_Tensor("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        prefix = f"model.layers.{i}"
        tensors += [
            _Tensor(f"{prefix}.self_attn.q_proj.weight", (heads * head_dim, hidden)),
            _Tensor(f"{prefix}.self_attn.k_proj.weight", (kv_heads * head_dim, hidden)),
            _Tensor(f"{prefix}.self_attn.v_proj.weight", (kv_heads * head_dim, hidden)),
            _Tensor(f"{prefix}.self_attn.o_proj.weight", (hidden, heads * head_dim)),
            _Tensor(f"{prefix}.mlp.gate_proj.weight", (intermediate, hidden)),
            _Tensor(f"{prefix}.mlp.up_proj.weight", (intermediate, hidden)),
            _Tensor(f"{prefix}.mlp.down_proj.weight", (hidden, intermediate)),
            _Tensor(f"{prefix}.input_layernorm.weight", (hidden,)),
            _Tensor(f"{prefix}.post_attention_layernorm.weight", (hidden,)),
        ]
    tensors += [_Tensor("model.norm.weight", (hidden,)), _Tensor("lm_head.weight", (vocab, hidden))]
    return tensors


def split_into_shards(sizes: list[int], max_shard_bytes: int) -> list[int]:
    """Shard index of each tensor, packed greedily in order like transformers' ``shard_checkpoint``."""
    assignment, shard, used = [], 0, 0
    for size in sizes:
        if used and used + size > max_shard_bytes:
            shard, used = shard + 1, 0
        assignment.append(shard)
        used += size
    return assignment


def _limit_for_shard_count(sizes: list[int], shards: int) -> int:
    """Smallest greedy shard limit that yields at most ``shards`` shards (binary search)."""
    low, high = max(sizes), sum(sizes)
    while low < high:
        middle = (low + high) // 2
        if max(split_into_shards(sizes, middle)) + 1 <= shards:
            high = middle
        else:
            low = middle + 1
    return low


def make_llama_checkpoint(
    directory: Path,
    *,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    vocab: int,
    shards: int,
    sparse: bool,
    dtype: str = "BF16",
    max_shard_bytes: int | None = None,
    config_extra: dict[str, Any] | None = None,
) -> Path:
    """Write a Llama checkpoint into ``directory`` and return it.

    ``shards == 1`` writes ``model.safetensors``; more write ``model-0000i-of-0000n.safetensors`` and
    an index. ``max_shard_bytes`` fixes the packing limit (must then produce exactly ``shards``);
    without it the smallest limit giving ``shards`` shards is used. ``sparse`` leaves the data
    regions as holes; otherwise they hold seeded random values (bf16/f16/f32 of N(0, 0.02)).
    """
    if hidden % heads or heads % kv_heads:
        raise ValueError("hidden must divide by heads, and heads by kv_heads")
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPE_BYTES)}")
    tensors = llama_tensors(
        hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, intermediate=intermediate, vocab=vocab
    )
    sizes = [math.prod(t.shape) * _DTYPE_BYTES[dtype] for t in tensors]
    limit = max_shard_bytes if max_shard_bytes is not None else _limit_for_shard_count(sizes, shards)
    assignment = split_into_shards(sizes, limit)
    if max(assignment) + 1 != shards:
        raise ValueError(
            f"packing with a {limit}-byte limit gives {max(assignment) + 1} shards, not {shards}"
        )

    directory.mkdir(parents=True, exist_ok=True)
    names = _shard_names(shards)
    rng = np.random.default_rng(0)
    for shard, file_name in enumerate(names):
        members = [t for t, s in zip(tensors, assignment, strict=True) if s == shard]
        _write_safetensors(directory / file_name, members, dtype, sparse=sparse, rng=rng)
    if shards > 1:
        _write_index(directory, tensors, sizes, [names[s] for s in assignment])
    config = _llama_config(hidden, layers, heads, kv_heads, intermediate, vocab, dtype) | (config_extra or {})
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory


def _shard_names(shards: int) -> list[str]:
    if shards == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]


def _write_safetensors(
    path: Path, tensors: list[_Tensor], dtype: str, *, sparse: bool, rng: np.random.Generator
) -> None:
    # Like the safetensors serializer: metadata first, tensors sorted by name (one dtype here),
    # header padded with spaces so the data starts 8-byte aligned.
    ordered = sorted(tensors, key=lambda t: t.name)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in ordered:
        size = math.prod(tensor.shape) * _DTYPE_BYTES[dtype]
        header[tensor.name] = {
            "dtype": dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        if sparse:
            handle.truncate(8 + len(encoded) + offset)
            return
        for tensor in ordered:
            for chunk in _random_values(math.prod(tensor.shape), dtype, rng):
                handle.write(chunk)


def _random_values(count: int, dtype: str, rng: np.random.Generator, chunk: int = 1 << 22) -> Iterator[bytes]:
    for start in range(0, count, chunk):
        values = rng.normal(0.0, 0.02, size=min(chunk, count - start)).astype("<f4")
        if dtype == "BF16":
            yield (values.view("<u4") >> 16).astype("<u2").tobytes()
        elif dtype == "F16":
            yield values.astype("<f2").tobytes()
        else:
            yield values.tobytes()


def _write_index(directory: Path, tensors: list[_Tensor], sizes: list[int], files: list[str]) -> None:
    index = {
        "metadata": {"total_size": sum(sizes)},
        "weight_map": {t.name: f for t, f in zip(tensors, files, strict=True)},
    }
    text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    (directory / "model.safetensors.index.json").write_text(text)


def _llama_config(
    hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int, dtype: str
) -> dict[str, Any]:
    """Llama-2-70b-hf's config.json with the given sizes (its values for everything else)."""
    return {
        "_name_or_path": "meta-llama/Llama-2-70b-hf",
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "pad_token_id": 0,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "torch_dtype": _TORCH_DTYPE[dtype],
        "transformers_version": "4.31.0.dev0",
        "use_cache": True,
        "vocab_size": vocab,
    }


def make_llama2_70b(directory: Path = DEFAULT_DIRECTORY) -> Path:
    """The full-size sparse checkpoint: Llama-2-70b-hf's shapes, names and 15-shard layout."""
    return make_llama_checkpoint(
        directory,
        hidden=8192,
        layers=80,
        heads=64,
        kv_heads=8,
        intermediate=28672,
        vocab=32000,
        shards=15,
        sparse=True,
        max_shard_bytes=HF_MAX_SHARD_BYTES,
    )


def make_tiny(directory: Path = DEFAULT_TINY_DIRECTORY) -> Path:
    """The comparison row: the same structure at H 64, L 2 (GQA 8:1 as in 70B), real data, 2 shards."""
    return make_llama_checkpoint(
        directory,
        hidden=64,
        layers=2,
        heads=8,
        kv_heads=1,
        intermediate=224,
        vocab=32000,
        shards=2,
        sparse=False,
        config_extra={"_name_or_path": "unshell/llama-tiny-benchmark"},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "directory", nargs="?", type=Path, help="where to write (default under benchmarks/_work/)"
    )
    parser.add_argument("--tiny", action="store_true", help="write the small comparison checkpoint instead")
    args = parser.parse_args(argv)
    if args.tiny:
        written = make_tiny(args.directory or DEFAULT_TINY_DIRECTORY)
    else:
        written = make_llama2_70b(args.directory or DEFAULT_DIRECTORY)
    apparent = sum(p.stat().st_size for p in written.iterdir())
    on_disk = sum(p.stat().st_blocks * 512 for p in written.iterdir())
    print(f"{written}: {apparent:,} bytes apparent, {on_disk:,} bytes on disk")


if __name__ == "__main__":
    main()
