"""Foreign checkpoint layouts built from a tiny random Hugging Face Llama (test helper).

`make_tiny_llama` writes a `LlamaForCausalLM` directory with random weights. Each ``to_*``
function then writes the same model in another family's layout by applying the INVERSE of what
``unshell convert`` undoes. Every inverse is written from the layout's documented definition
(``docs/tensor-naming.md``; llama.cpp's and llama2.c's exporters for GGUF and llama2.c),
on a code path that shares nothing with ``unshell.convert``: explicit per-row loops where the
converter reshapes, numpy-only reading of the source, torch/gguf writers for their containers.

A layout that cannot express something the source has (GQA in Baichuan, biases in Yi...) raises
`ValueError` rather than writing a model that is not equivalent. Layouts with fewer tensors than
Llama say in their docstring what the round trip gives back instead (Qwen has no ``o_proj.bias``).

Every ``to_*`` copies the source's model card and tokenizer files and writes a ``config.json`` in
the family's own key names, so a reference forward pass can be written from the config alone.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from unshell.formats.safetensors import write_safetensors

__all__ = [
    "hf_to_meta_rows",
    "load_llama",
    "make_tiny_llama",
    "read_safetensors_dir",
    "to_baichuan",
    "to_deepseek",
    "to_gguf",
    "to_internlm1",
    "to_internlm2",
    "to_llama2c",
    "to_meta",
    "to_minicpm",
    "to_mistral",
    "to_phi3",
    "to_qwen1",
    "to_qwen2",
    "to_renamed",
    "to_scrambled",
    "to_yi",
]

LLAMA_CARD = """---
license: apache-2.0
base_model: unshell-tests/tiny-llama-base
---
# tiny-llama (seed {seed})

Random weights for unshell's conversion tests.
"""
SIDE_FILES = (
    "README.md",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
)

# -- the reference model ---------------------------------------------------------------------------


def make_tiny_llama(
    directory: Path,
    *,
    seed: int = 0,
    gqa: bool = True,
    bias: bool = False,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 96,
    vocab: int = 128,
    tied: bool = False,
) -> Path:
    """Write a random float32 ``LlamaForCausalLM`` directory and return it.

    ``gqa=False`` makes it MHA (``kv_heads`` is then ignored). ``bias=True`` gives q, k, v and o
    random biases (Llama's ``attention_bias`` covers all four). Weights are scaled like a trained
    model's (unit-variance activations), norms are near 1, so that logits are O(1) and a wrong
    permutation changes them visibly.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    nkv = kv_heads if gqa else heads
    if hidden % heads or heads % nkv:
        raise ValueError(f"heads {heads} / kv_heads {nkv} do not fit hidden {hidden}")
    head_dim = hidden // heads
    rng = np.random.default_rng(seed)

    def linear(rows: int, columns: int) -> np.ndarray:
        return (rng.standard_normal((rows, columns)) / math.sqrt(columns)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)

    def bias_vector(size: int) -> np.ndarray:
        return (0.1 * rng.standard_normal(size)).astype(np.float32)

    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.standard_normal((vocab, hidden)).astype(np.float32)
    }
    for i in range(layers):
        prefix = f"model.layers.{i}"
        tensors[f"{prefix}.input_layernorm.weight"] = norm()
        shapes = {"q": heads * head_dim, "k": nkv * head_dim, "v": nkv * head_dim}
        for kind, rows in shapes.items():
            tensors[f"{prefix}.self_attn.{kind}_proj.weight"] = linear(rows, hidden)
            if bias:
                tensors[f"{prefix}.self_attn.{kind}_proj.bias"] = bias_vector(rows)
        tensors[f"{prefix}.self_attn.o_proj.weight"] = linear(hidden, heads * head_dim)
        if bias:
            tensors[f"{prefix}.self_attn.o_proj.bias"] = bias_vector(hidden)
        tensors[f"{prefix}.post_attention_layernorm.weight"] = norm()
        tensors[f"{prefix}.mlp.gate_proj.weight"] = linear(intermediate, hidden)
        tensors[f"{prefix}.mlp.up_proj.weight"] = linear(intermediate, hidden)
        tensors[f"{prefix}.mlp.down_proj.weight"] = linear(hidden, intermediate)
    tensors["model.norm.weight"] = norm()
    if not tied:
        tensors["lm_head.weight"] = linear(vocab, hidden)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_attention_heads": heads,
        "num_key_value_heads": nkv,
        "num_hidden_layers": layers,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": bias,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    write_safetensors(directory / "model.safetensors", tensors, metadata={"format": "pt"})
    _write_json(directory / "config.json", config)
    _write_json(directory / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})
    _write_json(directory / "tokenizer_config.json", {"model_max_length": 256, "bos_token": "<s>"})
    (directory / "README.md").write_text(LLAMA_CARD.format(seed=seed), encoding="utf-8")
    return directory


# -- reading (numpy only, independent of unshell's readers) ----------------------------------------


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}


def _read_safetensors_file(path: Path) -> dict[str, np.ndarray]:
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header.pop("__metadata__", None)
    base = 8 + length
    out = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        raw = data[base + begin : base + end]
        if entry["dtype"] == "BF16":
            array = _bf16_to_f32(np.frombuffer(raw, dtype="<u2"))
        else:
            array = np.frombuffer(raw, dtype=_ST_DTYPES[entry["dtype"]]).copy()
        out[name] = array.reshape(entry["shape"])
    return out


def read_safetensors_dir(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of a directory's ``model.safetensors`` or sharded index, as numpy arrays
    (BF16 widened to float32), read with a dozen lines of numpy rather than unshell's reader."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        out: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            tensors = _read_safetensors_file(directory / shard)
            assert set(tensors) == {n for n, s in weight_map.items() if s == shard}, shard
            out.update(tensors)
        return out
    return _read_safetensors_file(directory / "model.safetensors")


def load_llama(directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, tensors) of a Llama directory written by `make_tiny_llama` or by the converter."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    return config, read_safetensors_dir(directory)


class _Llama:
    """Named access to a loaded Llama's tensors and dimensions."""

    def __init__(self, src: Path) -> None:
        self.config, self.tensors = load_llama(src)
        c = self.config
        self.hidden = int(c["hidden_size"])
        self.layers = int(c["num_hidden_layers"])
        self.heads = int(c["num_attention_heads"])
        self.kv_heads = int(c.get("num_key_value_heads") or self.heads)
        self.head_dim = int(c.get("head_dim") or self.hidden // self.heads)
        self.intermediate = int(c["intermediate_size"])
        self.vocab = int(c["vocab_size"])
        self.tied = "lm_head.weight" not in self.tensors
        self.bias = any(name.endswith("_proj.bias") for name in self.tensors)

    def layer(self, i: int, short: str) -> np.ndarray:
        return self.tensors[f"model.layers.{i}.{short}"]

    def get_layer(self, i: int, short: str) -> np.ndarray | None:
        return self.tensors.get(f"model.layers.{i}.{short}")

    @property
    def embed(self) -> np.ndarray:
        return self.tensors["model.embed_tokens.weight"]

    @property
    def lm_head(self) -> np.ndarray:
        """The output projection, the embedding itself when tied."""
        return self.tensors.get("lm_head.weight", self.embed)

    @property
    def final_norm(self) -> np.ndarray:
        return self.tensors["model.norm.weight"]

    def require(self, *, mha: bool = False, no_bias: bool = False, family: str) -> None:
        if mha and self.kv_heads != self.heads:
            raise ValueError(f"{family} has no grouped-query attention: build the source with gqa=False")
        if no_bias and self.bias:
            raise ValueError(f"{family} has no attention biases: build the source with bias=False")

    def base_config(self) -> dict[str, Any]:
        return {
            "hidden_act": "silu",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "num_hidden_layers": self.layers,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.config["max_position_embeddings"],
            "rms_norm_eps": self.config["rms_norm_eps"],
            "rope_theta": self.config["rope_theta"],
            "tie_word_embeddings": self.tied,
            "bos_token_id": self.config.get("bos_token_id"),
            "eos_token_id": self.config.get("eos_token_id"),
            "torch_dtype": "float32",
        }


def _write_json(path: Path, value: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _start(src: Path, dst: Path) -> tuple[_Llama, Path]:
    llama = _Llama(Path(src))
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in SIDE_FILES:
        if (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, dst / name)
    return llama, dst


def _finish(dst: Path, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> Path:
    write_safetensors(dst / "model.safetensors", tensors, metadata={"format": "pt"})
    _write_json(dst / "config.json", config)
    return dst


# -- rotary permutation (docs/tensor-naming.md §2), written per row -------------------------


def hf_to_meta_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF rotate_half row order -> Meta interleaved order, per the documented row map:
    HF row ``h*d + s*(d/2) + j`` holds Meta row ``h*d + 2j + s``. Works for weights and 1-D biases."""
    rows = weight.shape[0]
    head_dim = rows // heads
    half = head_dim // 2
    out = np.empty_like(weight)
    for h in range(heads):
        for j in range(half):
            for s in (0, 1):
                out[h * head_dim + 2 * j + s] = weight[h * head_dim + s * half + j]
    return out


# -- HF-named families -----------------------------------------------------------------------------


def _llama_names(llama: _Llama, rename: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """The source tensors under Llama names with some short names replaced (``ln1`` for Yi...)."""
    out = {}
    for name, value in llama.tensors.items():
        for old, new in (rename or {}).items():
            name = name.replace(old, new)
        out[name] = value
    return out


def to_yi(src: Path, dst: Path) -> Path:
    """Yi's original (Nov 2023) layout: Llama with ``input_layernorm`` -> ``ln1`` and
    ``post_attention_layernorm`` -> ``ln2``; ``YiForCausalLM`` with an ``auto_map``."""
    llama, dst = _start(src, dst)
    llama.require(no_bias=True, family="Yi")
    config = {
        "architectures": ["YiForCausalLM"],
        "model_type": "Yi",
        "auto_map": {
            "AutoConfig": "configuration_yi.YiConfig",
            "AutoModelForCausalLM": "modeling_yi.YiForCausalLM",
        },
        **llama.base_config(),
    }
    tensors = _llama_names(llama, {".input_layernorm.": ".ln1.", ".post_attention_layernorm.": ".ln2."})
    return _finish(dst, config, tensors)


def to_mistral(src: Path, dst: Path) -> Path:
    """Mistral: Llama tensor names, ``MistralForCausalLM``, no sliding window (v0.2 and later)."""
    llama, dst = _start(src, dst)
    llama.require(no_bias=True, family="Mistral")
    config = {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        **llama.base_config(),
        "head_dim": llama.head_dim,
        "sliding_window": None,
    }
    return _finish(dst, config, _llama_names(llama))


def to_qwen2(src: Path, dst: Path) -> Path:
    """Qwen2: Llama names, q/k/v biases (zeros when the source has none), no o_proj bias.

    Qwen2 has no o_proj bias: a source o_proj.bias is dropped, so the round trip gives it back
    as zeros (build the source with bias=False, or compare against a zero o_proj.bias).
    """
    llama, dst = _start(src, dst)
    tensors = {n: v for n, v in _llama_names(llama).items() if not n.endswith("o_proj.bias")}
    for i in range(llama.layers):
        for kind, rows in (("q", llama.heads), ("k", llama.kv_heads), ("v", llama.kv_heads)):
            name = f"model.layers.{i}.self_attn.{kind}_proj.bias"
            tensors.setdefault(name, np.zeros(rows * llama.head_dim, dtype=np.float32))
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        **llama.base_config(),
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": llama.layers,
    }
    return _finish(dst, config, tensors)


def to_internlm1(src: Path, dst: Path) -> Path:
    """InternLM v1: Llama names with q/k/v/o biases switched by the config key ``bias``;
    ``InternLMForCausalLM``; weights in a single ``pytorch_model.bin`` like the released 7B."""
    llama, dst = _start(src, dst)
    llama.require(mha=True, family="InternLM v1")
    config = {
        "architectures": ["InternLMForCausalLM"],
        "model_type": "internlm",
        "auto_map": {"AutoModelForCausalLM": "modeling_internlm.InternLMForCausalLM"},
        **llama.base_config(),
        "bias": llama.bias,
    }
    config.pop("num_key_value_heads")  # InternLM v1 is MHA-only in its config
    _torch_save(dst / "pytorch_model.bin", _llama_names(llama))
    _write_json(dst / "config.json", config)
    return dst


def to_deepseek(src: Path, dst: Path) -> Path:
    """DeepSeek-LLM v1: ships as ``LlamaForCausalLM`` in sharded ``pytorch_model-*.bin`` files
    with a ``pytorch_model.bin.index.json``, as deepseek-llm-7b-base does."""
    llama, dst = _start(src, dst)
    llama.require(no_bias=True, family="DeepSeek v1")
    tensors = _llama_names(llama)
    names = list(tensors)
    shards = 2
    weight_map = {}
    for index in range(shards):
        file_name = f"pytorch_model-{index + 1:05d}-of-{shards:05d}.bin"
        part = names[index * len(names) // shards : (index + 1) * len(names) // shards]
        _torch_save(dst / file_name, {n: tensors[n] for n in part})
        weight_map.update(dict.fromkeys(part, file_name))
    total = sum(t.nbytes for t in tensors.values())
    _write_json(
        dst / "pytorch_model.bin.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map}
    )
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **llama.base_config()}
    _write_json(dst / "config.json", config)
    return dst


def to_minicpm(src: Path, dst: Path, *, scale_emb: float, scale_depth: float, dim_model_base: int) -> Path:
    """MiniCPM: Llama names and three runtime scalars, undone here so that MiniCPM's forward
    (embeddings times ``scale_emb``; each residual branch times ``scale_depth/sqrt(L)``; logits
    from ``h / (H/dim_model_base)``) equals the source Llama's.

    A tied source gives a tied MiniCPM, whose single embedding then serves both ends: the round
    trip gives ``embed`` back and ``lm_head = embed / scale_emb * dim_model_base / H``.
    """
    llama, dst = _start(src, dst)
    llama.require(no_bias=True, family="MiniCPM")
    residual = scale_depth / math.sqrt(llama.layers)
    tensors = _llama_names(llama)
    tensors["model.embed_tokens.weight"] = (llama.embed / np.float32(scale_emb)).astype(np.float32)
    for i in range(llama.layers):
        for short in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
            name = f"model.layers.{i}.{short}"
            tensors[name] = (tensors[name] / np.float32(residual)).astype(np.float32)
    if not llama.tied:
        factor = llama.hidden / dim_model_base
        tensors["lm_head.weight"] = (llama.lm_head * np.float32(factor)).astype(np.float32)
    config = {
        "architectures": ["MiniCPMForCausalLM"],
        "model_type": "minicpm",
        "auto_map": {"AutoModelForCausalLM": "modeling_minicpm.MiniCPMForCausalLM"},
        **llama.base_config(),
        "scale_emb": scale_emb,
        "scale_depth": scale_depth,
        "dim_model_base": dim_model_base,
    }
    return _finish(dst, config, tensors)


# -- fused families ----------------------------------------------------------------------------------


def _rows(llama: _Llama, i: int, kind: str) -> np.ndarray:
    return llama.layer(i, f"self_attn.{kind}_proj.weight")


def _bias(llama: _Llama, i: int, kind: str, size: int) -> np.ndarray:
    value = llama.get_layer(i, f"self_attn.{kind}_proj.bias")
    return value if value is not None else np.zeros(size, dtype=np.float32)


def to_baichuan(src: Path, dst: Path, *, v2: bool) -> Path:
    """Baichuan-7B (``v2=False``, ``BaiChuanForCausalLM``) or Baichuan2-7B (``BaichuanForCausalLM``):
    Llama names except ``self_attn.W_pack`` = contiguous ``[q; k; v]`` rows (MHA only).

    Baichuan2's NormHead divides each lm_head row by its L2 norm at run time. Its inverse is any
    positive per-row scale; this writes the rows multiplied by 1 + row index / V (so that
    conversion must normalize to recover a model equivalent to the Baichuan2 forward, and the
    round trip gives ``lm_head / ||lm_head row||``).
    """
    llama, dst = _start(src, dst)
    llama.require(mha=True, no_bias=True, family="Baichuan")
    if float(llama.config["rope_theta"]) != 10000.0:
        raise ValueError("Baichuan's remote code fixes the rotary base to 10000")
    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": llama.embed,
        "model.norm.weight": llama.final_norm,
    }
    lm_head = llama.lm_head
    if v2:
        lm_head = lm_head * (1.0 + np.arange(llama.vocab, dtype=np.float32) / llama.vocab)[:, None]
    tensors["lm_head.weight"] = lm_head.astype(np.float32)
    for i in range(llama.layers):
        p = f"model.layers.{i}"
        tensors[f"{p}.input_layernorm.weight"] = llama.layer(i, "input_layernorm.weight")
        pack = np.empty((3 * llama.hidden, llama.hidden), dtype=np.float32)
        for slot, kind in enumerate("qkv"):
            pack[slot * llama.hidden : (slot + 1) * llama.hidden] = _rows(llama, i, kind)
        tensors[f"{p}.self_attn.W_pack.weight"] = pack
        tensors[f"{p}.self_attn.o_proj.weight"] = _rows(llama, i, "o")
        tensors[f"{p}.post_attention_layernorm.weight"] = llama.layer(i, "post_attention_layernorm.weight")
        for short in ("gate_proj", "up_proj", "down_proj"):
            tensors[f"{p}.mlp.{short}.weight"] = llama.layer(i, f"mlp.{short}.weight")
    config = {
        "architectures": ["BaichuanForCausalLM" if v2 else "BaiChuanForCausalLM"],
        "model_type": "baichuan",
        "auto_map": {
            "AutoModelForCausalLM": f"modeling_baichuan.{'BaichuanForCausalLM' if v2 else 'BaiChuanForCausalLM'}"
        },
        **llama.base_config(),
        "model_max_length": llama.config["max_position_embeddings"],
        "tie_word_embeddings": False,
    }
    for key in ("num_key_value_heads", "rope_theta"):
        config.pop(key)
    return _finish(dst, config, tensors)


def to_qwen1(src: Path, dst: Path) -> Path:
    """Qwen v1 (``QWenLMHeadModel``): ``transformer.h.{i}``; ``attn.c_attn`` = contiguous
    ``[q; k; v]`` with a bias (zeros when the source has none); ``attn.c_proj`` without bias;
    ``mlp.w1`` = up and ``mlp.w2`` = gate (the forward is ``w1(x) * silu(w2(x))``); config
    ``intermediate_size`` twice the real width. MHA only.

    Qwen v1 has no o_proj bias: a source o_proj.bias is dropped, so the round trip gives it back
    as zeros.
    """
    llama, dst = _start(src, dst)
    llama.require(mha=True, family="Qwen v1")
    h, q_rows = llama.hidden, llama.heads * llama.head_dim
    tensors: dict[str, np.ndarray] = {
        "transformer.wte.weight": llama.embed,
        "transformer.ln_f.weight": llama.final_norm,
        "lm_head.weight": llama.lm_head,
    }
    for i in range(llama.layers):
        p = f"transformer.h.{i}"
        tensors[f"{p}.ln_1.weight"] = llama.layer(i, "input_layernorm.weight")
        weight = np.empty((3 * q_rows, h), dtype=np.float32)
        bias = np.empty(3 * q_rows, dtype=np.float32)
        for slot, kind in enumerate("qkv"):
            weight[slot * q_rows : (slot + 1) * q_rows] = _rows(llama, i, kind)
            bias[slot * q_rows : (slot + 1) * q_rows] = _bias(llama, i, kind, q_rows)
        tensors[f"{p}.attn.c_attn.weight"] = weight
        tensors[f"{p}.attn.c_attn.bias"] = bias
        tensors[f"{p}.attn.c_proj.weight"] = _rows(llama, i, "o")
        tensors[f"{p}.ln_2.weight"] = llama.layer(i, "post_attention_layernorm.weight")
        tensors[f"{p}.mlp.w1.weight"] = llama.layer(i, "mlp.up_proj.weight")
        tensors[f"{p}.mlp.w2.weight"] = llama.layer(i, "mlp.gate_proj.weight")
        tensors[f"{p}.mlp.c_proj.weight"] = llama.layer(i, "mlp.down_proj.weight")
    config = {
        "architectures": ["QWenLMHeadModel"],
        "model_type": "qwen",
        "auto_map": {
            "AutoConfig": "configuration_qwen.QWenConfig",
            "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
        },
        "hidden_size": h,
        "num_hidden_layers": llama.layers,
        "num_attention_heads": llama.heads,
        "intermediate_size": 2 * llama.intermediate,
        "kv_channels": llama.head_dim,
        "layer_norm_epsilon": llama.config["rms_norm_eps"],
        "max_position_embeddings": llama.config["max_position_embeddings"],
        "seq_length": llama.config["max_position_embeddings"],
        "no_bias": True,
        "rotary_emb_base": llama.config["rope_theta"],
        "rotary_pct": 1.0,
        "tie_word_embeddings": False,
        "use_dynamic_ntk": True,
        "use_logn_attn": True,
        "vocab_size": llama.vocab,
    }
    return _finish(dst, config, tensors)


def to_internlm2(src: Path, dst: Path) -> Path:
    """InternLM2 (``InternLM2ForCausalLM``): ``attention.wqkv`` is GROUPED: ``nkv`` blocks, block
    ``g`` = query heads ``g*G .. g*G+G-1``, then key head ``g``, then value head ``g``. With MHA
    (G = 1) that is ``[q_h, k_h, v_h]`` per head: the shape of a contiguous q|k|v, another order.
    Biases (config ``bias``) are laid out the same way; ``wo`` carries the o bias."""
    llama, dst = _start(src, dst)
    d, nkv = llama.head_dim, llama.kv_heads
    group = llama.heads // nkv
    tensors: dict[str, np.ndarray] = {
        "model.tok_embeddings.weight": llama.embed,
        "model.norm.weight": llama.final_norm,
    }
    if not llama.tied:
        tensors["output.weight"] = llama.lm_head
    for i in range(llama.layers):
        p = f"model.layers.{i}"
        sources = {kind: _rows(llama, i, kind) for kind in "qkv"}
        biases = {kind: _bias(llama, i, kind, sources[kind].shape[0]) for kind in "qkv"}
        weight_rows: list[np.ndarray] = []
        bias_rows: list[np.ndarray] = []
        for g in range(nkv):
            heads = [("q", g * group + j) for j in range(group)] + [("k", g), ("v", g)]
            for kind, head in heads:
                weight_rows.append(sources[kind][head * d : (head + 1) * d])
                bias_rows.append(biases[kind][head * d : (head + 1) * d])
        tensors[f"{p}.attention.wqkv.weight"] = np.concatenate(weight_rows)
        tensors[f"{p}.attention.wo.weight"] = _rows(llama, i, "o")
        if llama.bias:
            tensors[f"{p}.attention.wqkv.bias"] = np.concatenate(bias_rows)
            tensors[f"{p}.attention.wo.bias"] = _bias(llama, i, "o", llama.hidden)
        tensors[f"{p}.attention_norm.weight"] = llama.layer(i, "input_layernorm.weight")
        tensors[f"{p}.ffn_norm.weight"] = llama.layer(i, "post_attention_layernorm.weight")
        tensors[f"{p}.feed_forward.w1.weight"] = llama.layer(i, "mlp.gate_proj.weight")
        tensors[f"{p}.feed_forward.w3.weight"] = llama.layer(i, "mlp.up_proj.weight")
        tensors[f"{p}.feed_forward.w2.weight"] = llama.layer(i, "mlp.down_proj.weight")
    config = {
        "architectures": ["InternLM2ForCausalLM"],
        "model_type": "internlm2",
        "auto_map": {"AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
        **llama.base_config(),
        "bias": llama.bias,
        "rope_scaling": None,
    }
    return _finish(dst, config, tensors)


def to_phi3(src: Path, dst: Path) -> Path:
    """Phi-3 (``Phi3ForCausalLM``): ``self_attn.qkv_proj`` = contiguous ``[q; k; v]``,
    ``mlp.gate_up_proj`` = ``[gate; up]`` (the forward chunks the output in two, the first half
    through SiLU). No biases."""
    llama, dst = _start(src, dst)
    llama.require(no_bias=True, family="Phi-3")
    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": llama.embed,
        "model.norm.weight": llama.final_norm,
    }
    if not llama.tied:
        tensors["lm_head.weight"] = llama.lm_head
    for i in range(llama.layers):
        p = f"model.layers.{i}"
        tensors[f"{p}.self_attn.qkv_proj.weight"] = np.concatenate([_rows(llama, i, k) for k in "qkv"])
        tensors[f"{p}.self_attn.o_proj.weight"] = _rows(llama, i, "o")
        tensors[f"{p}.mlp.gate_up_proj.weight"] = np.concatenate(
            [llama.layer(i, "mlp.gate_proj.weight"), llama.layer(i, "mlp.up_proj.weight")]
        )
        tensors[f"{p}.mlp.down_proj.weight"] = llama.layer(i, "mlp.down_proj.weight")
        tensors[f"{p}.input_layernorm.weight"] = llama.layer(i, "input_layernorm.weight")
        tensors[f"{p}.post_attention_layernorm.weight"] = llama.layer(i, "post_attention_layernorm.weight")
    config = {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        **llama.base_config(),
        "original_max_position_embeddings": llama.config["max_position_embeddings"],
        "rope_scaling": None,
        "sliding_window": None,
        "partial_rotary_factor": 1.0,
        "pad_token_id": None,
    }
    return _finish(dst, config, tensors)


# -- Meta-ordered containers -------------------------------------------------------------------------


def _meta_state(llama: _Llama) -> dict[str, np.ndarray]:
    """Meta names (§3) with q and k rows in Meta's interleaved rotary order (K with the KV heads)."""
    state: dict[str, np.ndarray] = {"tok_embeddings.weight": llama.embed}
    for i in range(llama.layers):
        p = f"layers.{i}"
        state[f"{p}.attention.wq.weight"] = hf_to_meta_rows(_rows(llama, i, "q"), llama.heads)
        state[f"{p}.attention.wk.weight"] = hf_to_meta_rows(_rows(llama, i, "k"), llama.kv_heads)
        state[f"{p}.attention.wv.weight"] = _rows(llama, i, "v")
        state[f"{p}.attention.wo.weight"] = _rows(llama, i, "o")
        state[f"{p}.feed_forward.w1.weight"] = llama.layer(i, "mlp.gate_proj.weight")
        state[f"{p}.feed_forward.w2.weight"] = llama.layer(i, "mlp.down_proj.weight")
        state[f"{p}.feed_forward.w3.weight"] = llama.layer(i, "mlp.up_proj.weight")
        state[f"{p}.attention_norm.weight"] = llama.layer(i, "input_layernorm.weight")
        state[f"{p}.ffn_norm.weight"] = llama.layer(i, "post_attention_layernorm.weight")
    state["norm.weight"] = llama.final_norm
    state["output.weight"] = llama.lm_head
    return state


_COLUMN_PARALLEL = ("wq.weight", "wk.weight", "wv.weight", "w1.weight", "w3.weight")
_ROW_PARALLEL = ("wo.weight", "w2.weight")


def _meta_shard_axis(name: str) -> int | None:
    """Model-parallel split axis (§3): column-parallel on 0, row-parallel on 1, Llama 1/2
    embeddings on 1, norms replicated."""
    if name == "output.weight" or name.endswith(_COLUMN_PARALLEL):
        return 0
    if name.endswith(_ROW_PARALLEL) or name == "tok_embeddings.weight":
        return 1
    return None


def to_meta(src: Path, dst: Path, *, shards: int) -> Path:
    """Meta's ``consolidated.NN.pth`` + ``params.json``: Meta names, interleaved rotary order for
    wq (nh heads) and wk (nkv heads), split into ``shards`` model-parallel slices (each must hold
    whole KV heads). Always untied (``output.weight``)."""
    llama, dst = _start(src, dst)
    llama.require(no_bias=True, family="Meta consolidated")
    if llama.kv_heads % shards:
        raise ValueError(f"{shards} shards cannot split {llama.kv_heads} KV heads")
    state = _meta_state(llama)
    for index in range(shards):
        piece = {}
        for name, value in state.items():
            axis = _meta_shard_axis(name)
            if axis is None:
                piece[name] = value
            else:
                size = value.shape[axis] // shards
                piece[name] = np.take(value, range(index * size, (index + 1) * size), axis=axis)
        _torch_save(dst / f"consolidated.{index:02d}.pth", piece)
    params = {
        "dim": llama.hidden,
        "n_layers": llama.layers,
        "n_heads": llama.heads,
        "n_kv_heads": llama.kv_heads,
        "vocab_size": -1,
        "multiple_of": 1,
        "norm_eps": llama.config["rms_norm_eps"],
        "rope_theta": llama.config["rope_theta"],
    }
    _write_json(dst / "params.json", params)
    return dst


def to_llama2c(src: Path, dst_file: Path) -> Path:
    """llama2.c's version-1 export (export.py ``version1_export``): 256-byte header (magic ``ak42``,
    version 1, seven int32 hyperparameters, shared-classifier byte), then float32 norms, the
    embedding, wq/wk/wv/wo/w1/w2/w3 across layers, and ``output`` unless shared. q/k rows are in
    Meta's interleaved order, as llama2.c's model.py rotates adjacent pairs."""
    llama = _Llama(Path(src))
    llama.require(no_bias=True, family="llama2.c")
    if float(llama.config["rope_theta"]) != 10000.0 or float(llama.config["rms_norm_eps"]) != 1e-5:
        raise ValueError("llama2.c fixes the rotary base to 10000 and the norm epsilon to 1e-5")
    state = _meta_state(llama)
    shared = llama.tied
    header = struct.pack("<Ii", 0x616B3432, 1)
    header += struct.pack(
        "<7i",
        llama.hidden,
        llama.intermediate,
        llama.layers,
        llama.heads,
        llama.kv_heads,
        llama.vocab,
        int(llama.config["max_position_embeddings"]),
    )
    header += struct.pack("B", int(shared))
    header += b"\0" * (256 - len(header))
    order = [f"layers.{i}.attention_norm.weight" for i in range(llama.layers)]
    order += [f"layers.{i}.ffn_norm.weight" for i in range(llama.layers)]
    order += ["norm.weight", "tok_embeddings.weight"]
    for kind in ("attention.wq", "attention.wk", "attention.wv", "attention.wo"):
        order += [f"layers.{i}.{kind}.weight" for i in range(llama.layers)]
    for kind in ("feed_forward.w1", "feed_forward.w2", "feed_forward.w3"):
        order += [f"layers.{i}.{kind}.weight" for i in range(llama.layers)]
    if not shared:
        order.append("output.weight")
    body = b"".join(np.ascontiguousarray(state[name], dtype="<f4").tobytes() for name in order)
    dst_file = Path(dst_file)
    dst_file.write_bytes(header + body)
    return dst_file


def _llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py ``LlamaModel.permute``, transcribed."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def to_gguf(src: Path, dst_file: Path, *, qtype: str, metadata: dict[str, str | int] | None = None) -> Path:
    """A GGUF ``llama`` file written with gguf-py's ``GGUFWriter``, as llama.cpp's converter does:
    GGUF names, q/k through llama.cpp's permutation, 2-D weights quantized to ``qtype`` (``F32``,
    ``F16``, ``BF16``, ``Q8_0``, ``Q4_0``, ``Q5_0``...; a tensor whose rows are not a whole number
    of blocks stays F32, as llama.cpp falls back), norms in F32. ``metadata`` adds string and
    uint32 keys (``general.repo_url``, ``general.base_model.count``...)."""
    import gguf

    llama = _Llama(Path(src))
    llama.require(no_bias=True, family="GGUF llama")
    kind = gguf.GGMLQuantizationType[qtype]
    writer = gguf.GGUFWriter(str(dst_file), "llama")
    writer.add_name("tiny-llama")
    writer.add_license("apache-2.0")
    writer.add_context_length(int(llama.config["max_position_embeddings"]))
    writer.add_embedding_length(llama.hidden)
    writer.add_block_count(llama.layers)
    writer.add_feed_forward_length(llama.intermediate)
    writer.add_rope_dimension_count(llama.head_dim)
    writer.add_head_count(llama.heads)
    writer.add_head_count_kv(llama.kv_heads)
    writer.add_layer_norm_rms_eps(float(llama.config["rms_norm_eps"]))
    writer.add_rope_freq_base(float(llama.config["rope_theta"]))
    writer.add_vocab_size(llama.vocab)
    for key, value in (metadata or {}).items():
        if isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, value)

    def add(name: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value, dtype=np.float32)
        block = gguf.GGML_QUANT_SIZES[kind][0]
        if value.ndim == 1 or kind == gguf.GGMLQuantizationType.F32 or value.shape[-1] % block:
            writer.add_tensor(name, value)
        else:
            writer.add_tensor(name, gguf.quants.quantize(value, kind), raw_dtype=kind)

    add("token_embd.weight", llama.embed)
    for i in range(llama.layers):
        p = f"blk.{i}"
        add(f"{p}.attn_norm.weight", llama.layer(i, "input_layernorm.weight"))
        add(f"{p}.attn_q.weight", _llama_cpp_permute(_rows(llama, i, "q"), llama.heads, llama.heads))
        add(f"{p}.attn_k.weight", _llama_cpp_permute(_rows(llama, i, "k"), llama.heads, llama.kv_heads))
        add(f"{p}.attn_v.weight", _rows(llama, i, "v"))
        add(f"{p}.attn_output.weight", _rows(llama, i, "o"))
        add(f"{p}.ffn_norm.weight", llama.layer(i, "post_attention_layernorm.weight"))
        add(f"{p}.ffn_gate.weight", llama.layer(i, "mlp.gate_proj.weight"))
        add(f"{p}.ffn_up.weight", llama.layer(i, "mlp.up_proj.weight"))
        add(f"{p}.ffn_down.weight", llama.layer(i, "mlp.down_proj.weight"))
    add("output_norm.weight", llama.final_norm)
    if not llama.tied:
        add("output.weight", llama.lm_head)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(dst_file)


def _torch_save(path: Path, tensors: dict[str, np.ndarray]) -> None:
    import torch

    torch.save({name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in tensors.items()}, path)


# -- renames -----------------------------------------------------------------------------------------

# Words `unshell inspect` reads as a role when nothing else decides (its lexical fallback).
_LEXICAL_WORDS = {
    "self_attn.q_proj": ("query", "wq", "to_q"),
    "self_attn.k_proj": ("key", "wk", "to_k"),
    "self_attn.v_proj": ("value", "wv", "to_v"),
    "self_attn.o_proj": ("out_proj", "wo", "to_out"),
    "mlp.gate_proj": ("gate", "ffn_gate"),
    "mlp.up_proj": ("up", "ffn_up"),
    "mlp.down_proj": ("down", "ffn_down"),
    "input_layernorm": ("norm1", "attn_norm"),
    "post_attention_layernorm": ("norm2", "ffn_norm"),
}


def _rename_all(llama: _Llama, seed: int, lexical: bool) -> dict[str, str]:
    """{Llama name: new name}: a random root and block name per seed; per-layer tensors keep a
    numeric layer token; role words lexical (readable) or random tokens."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))

    def token(length: int = 6) -> str:
        return "".join(rng.choice(letters, size=length))

    root, block = f"m{token()}", f"blk{token(3)}"
    mapping = {
        "model.embed_tokens.weight": f"{root}.tok_embeddings.weight",
        "model.norm.weight": f"{root}.{token()}.weight",
        "lm_head.weight": f"{root}.output.weight" if lexical else f"{root}.{token()}.weight",
    }
    if not lexical:
        mapping["model.embed_tokens.weight"] = f"{root}.{token()}.weight"
    words = {
        short: (str(rng.choice(options)) if lexical else token()) for short, options in _LEXICAL_WORDS.items()
    }
    for name in llama.tensors:
        if not name.startswith("model.layers."):
            continue
        _, _, layer, rest = name.split(".", 3)
        short, suffix = rest.rsplit(".", 1)
        mapping[name] = f"{root}.{block}.{layer}.{words[short]}.{suffix}"
    return {old: new for old, new in mapping.items() if old in llama.tensors}


def _write_renamed(src: Path, dst: Path, seed: int, lexical: bool) -> dict[str, str]:
    llama, dst = _start(src, dst)
    mapping = _rename_all(llama, seed, lexical)
    tensors = {mapping[name]: value for name, value in llama.tensors.items()}
    config = {
        "architectures": [f"Renamed{seed}ForCausalLM"],
        "model_type": f"renamed{seed}",
        **llama.base_config(),
        "attention_bias": llama.bias,
    }
    _finish(dst, config, tensors)
    return mapping


def to_renamed(src: Path, dst: Path, seed: int) -> Path:
    """Every tensor renamed (random root and block names chosen by ``seed``), keeping a numeric
    layer token and a role word that `unshell inspect` resolves (``query``, ``wk``, ``norm1``...);
    the config names a made-up architecture. The kind of rename inspect can undo on its own."""
    _write_renamed(Path(src), Path(dst), seed, lexical=True)
    return Path(dst)


def to_scrambled(src: Path, dst: Path, seed: int) -> dict[str, str]:
    """Like `to_renamed` but every role word is a random token, so k vs v, gate vs up, q vs o and
    the two norms cannot be told apart from names or shapes. Returns {new name: Llama name}, the
    user mapping that resolves it."""
    mapping = _write_renamed(Path(src), Path(dst), seed, lexical=False)
    return {new: old for old, new in mapping.items()}
