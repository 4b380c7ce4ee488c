"""Write a bf16 Hugging Face derivative of a real Qwen2 GGUF, for the speed benchmarks' real pair.

    python benchmarks/make_real_pair.py GGUF DIRECTORY [--noise 0.02]

The derivative is what a converter (llama.cpp's `convert_hf_to_gguf` run backwards) gives: every
tensor of GGUF decoded (Q4_K, Q5_0, Q6_K, Q8_0, F32) and stored as bfloat16 under its Hugging Face
Qwen2 name in one ``model.safetensors``, with a ``config.json`` (``Qwen2ForCausalLM``). Qwen2 GGUF
files keep the Hugging Face row order of q and k (only llama's are permuted), so nothing is
reordered. With ``--noise 0`` (default) the values are the GGUF's own, so `compare` proves the pair
`identical` (a dtype cast) from the content hashes; ``--noise x`` adds N(0, (x * tensor std)^2) to
every element (seeded), a fine-tune stand-in that `compare` must find `derived` through the
lineage test.

One tensor is decoded at a time; the file appears complete or not at all.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_7b_pair import to_bf16_bits  # noqa: E402

GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(gguf_name: str) -> str:
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if match is None or match.group(2) not in LAYER_NAMES:
        raise ValueError(f"no Hugging Face name for {gguf_name}")
    return f"model.layers.{match.group(1)}.{LAYER_NAMES[match.group(2)]}"


def make_bf16_derivative(gguf: Path, directory: Path, noise: float = 0.0) -> Path:
    """Write ``directory/model.safetensors`` and ``config.json`` (skipped when present)."""
    from unshell.formats import open_checkpoint
    from unshell.inspection import inspect_checkpoint

    if (directory / "model.safetensors").exists():
        return directory
    checkpoint = open_checkpoint(gguf)
    config = inspect_checkpoint(checkpoint).recognition.config
    names = sorted(checkpoint.tensors, key=hf_name)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        shape = list(checkpoint.info(name).shape)
        size = math.prod(shape) * 2
        header[hf_name(name)] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    directory.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    with (temp / "model.safetensors").open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for index, name in enumerate(names):
            values = np.asarray(checkpoint.read(name), dtype=np.float32)
            if noise:
                rng = np.random.default_rng([index, 14])
                scale = np.float32(noise * float(values.std()))
                values = values + scale * rng.standard_normal(values.shape, dtype=np.float32)
            handle.write(to_bf16_bits(values).tobytes())
            checkpoint.release(checkpoint.info(name))
    hf_config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": config["hidden_size"],
        "num_hidden_layers": config["num_hidden_layers"],
        "num_attention_heads": config["num_attention_heads"],
        "num_key_value_heads": config["num_key_value_heads"],
        "intermediate_size": config["intermediate_size"],
        "vocab_size": config["vocab_size"],
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
        "torch_dtype": "bfloat16",
    }
    (temp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    temp.chmod(0o755)
    temp.rename(directory)
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--noise", type=float, default=0.0, help="relative noise per element (0: none)")
    args = parser.parse_args()
    make_bf16_derivative(args.gguf, args.directory, args.noise)
    print(args.directory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
