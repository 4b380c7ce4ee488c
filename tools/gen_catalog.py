"""Generate the architecture catalog (``src/unshell/arch/catalog/*.json``) and ``arch/aliases.json``.

Usage (needs torch and transformers, which the package itself never imports)::

    python tools/gen_catalog.py --out src/unshell/arch/catalog

For every family that transformers implements, the reference class is built on the meta device
(no memory, no weights) three ways:

* with each real published config typed in below: the tensor count and parameter count that a
  ``save_pretrained`` of that model writes (tied weights dropped, load-time conversions reverted);
* with two tiny probe configs whose numbers cannot coincide (``PROBE_A``, ``PROBE_B``): every
  tensor dimension is matched against a small grammar of shape expressions and must be explained
  by exactly one expression (up to identities the family's config forces, e.g. ``nh*d == H`` when
  the config has no ``head_dim``), which yields the symbolic templates;
* with one probe switched per optional group (biases, untied head, ...): the tensors that appear
  or disappear form the group.

Families that only exist as Hub remote code (Qwen v1, Baichuan, InternLM2, ChatGLM) are written by
hand from docs/tensor-naming.md; a few exact clones (Yi's original naming, InternLM v1,
MiniCPM, DeepSeek v1) are built with transformers' Llama and, for Yi, renamed. Every file is
checked before it is written: templates expanded with the probe config must reproduce the probe,
and templates expanded with each published config must reproduce its tensor and parameter counts.

Schema notes beyond the brief:

* ``group_conditions``: group -> arithmetic expression over ``config_map`` symbols (booleans read
  as 0/1); the group is present when it evaluates to non-zero.
* ``config_map`` defaults (``"=expr"``) are plain integer arithmetic (``+ - * //``) so that any
  evaluator for shape expressions also reads them; a flag-dependent default is written
  arithmetically (``"=nh-(nh-1)*multi_query"``).
* ``transposed: true`` on an entry marks a GPT-2 ``Conv1D`` weight stored ``[in, out]``.
* ``fused.<role>.sizes``: the part sizes along ``axis``, as shape expressions.
* ``published[].tensors``/``parameters`` count every tensor the checkpoint files hold.
* ``layers: "dense"`` / ``"sparse"`` on a layer entry: the tensor exists only in the first ``Ld``
  layers (DeepSeek's ``first_k_dense_replace``) / only in the others; no ``layers``: in every layer.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

ROLES = frozenset(
    {
        # globals
        "embed.weight",
        "pos_embed.weight",
        "type_embed.weight",
        "embed_norm.weight",
        "embed_norm.bias",
        "final_norm.weight",
        "final_norm.bias",
        "lm_head.weight",
        "lm_head.bias",
        "pooler.weight",
        "pooler.bias",
        "rotary.inv_freq",
        # per layer
        "attn_norm.weight",
        "attn_norm.bias",
        "ffn_norm.weight",
        "ffn_norm.bias",
        "post_attn_norm.weight",
        "post_attn_norm.bias",
        "post_ffn_norm.weight",
        "post_ffn_norm.bias",
        *(
            f"attn.{p}.{k}"
            for p in ("q", "k", "v", "o", "qkv", "kv", "q_norm", "k_norm")
            for k in ("weight", "bias")
        ),
        *(f"mlp.{p}.{k}" for p in ("gate", "up", "down", "gate_up") for k in ("weight", "bias")),
        "moe.router.weight",
        "moe.expert.gate.weight",
        "moe.expert.up.weight",
        "moe.expert.down.weight",
        # A shared expert (Qwen2-MoE, DeepSeek-MoE): an FFN every token goes through, and its gate.
        "moe.shared.gate.weight",
        "moe.shared.up.weight",
        "moe.shared.down.weight",
        "moe.shared_gate.weight",
        # DeepSeek-V3's per-expert routing bias (added to the scores only to pick experts).
        "moe.router.e_score_correction_bias",
        # Multi-head latent attention (DeepSeek-V2/V3): low-rank q (q_a -> norm -> q_b) and the joint
        # compressed kv (kv_a, with the shared rope key appended -> norm -> kv_b).
        "attn.q_a.weight",
        "attn.q_a_norm.weight",
        "attn.q_b.weight",
        "attn.kv_a.weight",
        "attn.kv_a_norm.weight",
        "attn.kv_b.weight",
        # Newer llama.cpp GGUFs store kv_b split per head for MLA absorption: k_b [nh, Rkv, d_n]
        # (transposed) and v_b [nh, d_v, Rkv] (arch.recognize joins them back to fit kv_b).
        "attn.k_b.weight",
        "attn.v_b.weight",
    }
)

# S: the shared expert's FFN width (Qwen2-MoE's shared_expert_intermediate_size).
# MLA (DeepSeek-V2/V3): Rq, Rkv the q and kv ranks; Qa = nh*(qk_nope+qk_rope) (q_b's rows), Ka = Rkv +
# qk_rope (kv_a's rows), KVb = nh*(qk_nope+v_head) (kv_b's rows), O = nh*v_head (o_proj's columns): one
# symbol each, so that every shape stays linear for the recognizer. Id: the dense layers' FFN width in
# a model whose first layers are dense and the rest sparse (``"layers"`` on a template, symbol Ld).
MLA_SYMBOLS = ("Rq", "Rkv", "Qa", "Ka", "KVb", "O")
SHAPE_SYMBOLS = ("H", "I", "V", "P", "T", "E", "L", "S", "nh", "nkv", "d", *MLA_SYMBOLS, "Id")

# Values chosen so that no two candidate expressions agree on both probes unless the family's
# config forces them equal: nh/nkv differ between probes (G = 2 vs 3), L != nkv in probe B, etc.
# MLA's head sizes (dn, dr, dv) and the shared-expert count (ns) are config values only: the shapes
# show them through Qa, Ka, KVb, O and S, which a family's ``forced`` recomputes from them.
PROBE_A = {
    "H": 48, "nh": 4, "nkv": 2, "d": 16, "I": 80, "V": 101, "P": 67, "T": 3, "E": 5, "L": 2, "S": 92,
    "Rq": 36, "Rkv": 20, "Id": 60, "dn": 6, "dr": 4, "dv": 7, "ns": 5, "Qa": 40, "Ka": 24, "KVb": 52, "O": 28,
}  # fmt: skip
PROBE_B = {
    "H": 72, "nh": 9, "nkv": 3, "d": 14, "I": 88, "V": 113, "P": 71, "T": 5, "E": 7, "L": 4, "S": 98,
    "Rq": 44, "Rkv": 26, "Id": 66, "dn": 10, "dr": 6, "dv": 11, "ns": 5, "Qa": 144, "Ka": 32, "KVb": 189, "O": 99,
}  # fmt: skip
PROBE_TOKEN_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def _candidate_expressions() -> list[str]:
    """The shape grammar, simplest first: ties between equivalent forms go to the earlier one."""
    atoms = ["H", "I", "V", "P", "T", "E", "L", "S", "nh", "nkv", "d", "nh*d", "nkv*d"]
    atoms += [*MLA_SYMBOLS, "Id"]
    multiples = [f"{k}*{a}" for k in (2, 3, 4) for a in ("H", "I", "nh*d", "nkv*d")]
    fused = ["(nh+2*nkv)*d", "(nh+nkv)*d"]
    return atoms + multiples + fused


CANDIDATES = _candidate_expressions()


# ----------------------------------------------------------------------------------------------
# Expressions
# ----------------------------------------------------------------------------------------------


class CatalogError(RuntimeError):
    """The generator cannot produce a trustworthy entry: stop rather than write a guess."""


def evaluate(expression: str | int, values: Mapping[str, Any]) -> int:
    """Integer arithmetic over named values (``+ - * //``, parentheses); booleans count as 0/1."""
    if isinstance(expression, int):
        return expression
    return _eval_node(ast.parse(expression, mode="eval").body, values, expression)


def _eval_node(node: ast.AST, values: Mapping[str, Any], text: str) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return int(node.value)
    if isinstance(node, ast.Name):
        if node.id not in values:
            raise CatalogError(f"{text!r}: symbol {node.id} has no value")
        return int(values[node.id])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval_node(node.operand, values, text)
    if isinstance(node, ast.BinOp):
        left, right = _eval_node(node.left, values, text), _eval_node(node.right, values, text)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.FloorDiv):
            return left // right
    raise CatalogError(f"{text!r}: unsupported expression element {ast.dump(node)}")


def resolve_config(config_map: Mapping[str, list[str]], config: Mapping[str, Any]) -> dict[str, int]:
    """Read every symbol of ``config_map`` from a config.json dict (first present source wins)."""
    resolved: dict[str, int] = {}

    def resolve(symbol: str, stack: tuple[str, ...]) -> int:
        if symbol in resolved:
            return resolved[symbol]
        if symbol in stack:
            raise CatalogError(f"config_map cycle through {symbol}")
        for source in config_map[symbol]:
            if source.startswith("="):
                needed = {
                    n.id for n in ast.walk(ast.parse(source[1:], mode="eval")) if isinstance(n, ast.Name)
                }
                value = evaluate(source[1:], {n: resolve(n, (*stack, symbol)) for n in needed})
                break
            if config.get(source) is not None:
                value = int(config[source])
                break
        else:
            raise CatalogError(f"config has none of {config_map[symbol]} for symbol {symbol}")
        resolved[symbol] = value
        return value

    for symbol in config_map:
        resolve(symbol, ())
    return resolved


# ----------------------------------------------------------------------------------------------
# Family specifications
# ----------------------------------------------------------------------------------------------

ConfigBuilder = Callable[[Mapping[str, int]], dict[str, Any]]


@dataclass(frozen=True)
class Group:
    """An optional set of tensors, found by switching ``variant`` on top of the probe config.

    Tensors the switch removes form ``name``; tensors it adds form ``alt_name`` (for layouts that
    replace one another, e.g. Falcon's one vs two parallel layer norms).
    """

    name: str
    description: str
    condition: str
    variant: Mapping[str, Any]
    alt_name: str | None = None
    alt_description: str = ""
    alt_condition: str = ""


@dataclass(frozen=True)
class Published:
    name: str
    config: Mapping[str, Any]


@dataclass(frozen=True)
class HandTensor:
    name: str
    role: str
    shape: tuple[str | int, ...]
    group: str | None = None
    repeat: str | None = None  # one per expert: the symbol counting them ({e} in the name)
    layers: str | None = None  # "dense" (the first Ld layers only) or "sparse" (the others)


@dataclass(frozen=True)
class Family:
    family: str
    model_type: str
    reference: str
    architectures: tuple[str, ...]
    reference_family: str
    config_map: Mapping[str, list[str]]
    probe_config: ConfigBuilder
    published: tuple[Published, ...]
    activation: str
    norm: str
    positional: str
    parallel_residual: bool
    source_note: str = ""
    # Symbols the family's config ties to others ("d": "H//nh", "nkv": "nh" or "1").
    forced: Mapping[str, str] = field(default_factory=dict)
    groups: tuple[Group, ...] = ()
    # Heads a model can be built without although no config key says so (BertModel's pooler with
    # add_pooling_layer=False, as sentence-transformers ONNX exports ship): (name prefix, group, text).
    optional_heads: tuple[tuple[str, str, str], ...] = ()
    fused: Mapping[str, Any] = field(default_factory=dict)
    buffers: tuple[str, ...] = ()
    role_overrides: Mapping[str, str] = field(default_factory=dict)
    transposed_modules: frozenset[str] = frozenset()
    # transformers build: model_type whose class is built, config translation, template renames.
    build_model_type: str | None = None
    to_build_config: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    renames: Mapping[str, str] = field(default_factory=dict)
    build_class: str | None = None
    variants_of: tuple[tuple[str, str], ...] = ()
    # (config key, symbol): the first <key> layers are dense, the rest sparse (DeepSeek's
    # first_k_dense_replace); found by building the probes once more with the key set to 1.
    dense_prefix: tuple[str, str] | None = None
    # hand-written families: templates instead of a build.
    hand_globals: tuple[HandTensor, ...] = ()
    hand_layer: tuple[HandTensor, ...] = ()

    @property
    def hand_written(self) -> bool:
        return bool(self.hand_layer)


# Generic module path -> role stem (per layer: path after "{i}."; globals: full path).
GLOBAL_ROLES = {
    "model.embed_tokens": "embed",
    "transformer.word_embeddings": "embed",
    "gpt_neox.embed_in": "embed",
    "transformer.wte": "embed",
    "embeddings.word_embeddings": "embed",
    "transformer.wpe": "pos_embed",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.token_type_embeddings": "type_embed",
    "embeddings.LayerNorm": "embed_norm",
    "model.norm": "final_norm",
    "model.final_layernorm": "final_norm",
    "transformer.ln_f": "final_norm",
    "gpt_neox.final_layer_norm": "final_norm",
    "lm_head": "lm_head",
    "embed_out": "lm_head",
    "pooler.dense": "pooler",
}
LAYER_ROLES = {
    "input_layernorm": "attn_norm",
    "ln_1": "attn_norm",
    "ln_attn": "attn_norm",
    # In Llama-style decoders post_attention_layernorm normalizes the residual stream before the
    # MLP; families that apply it to the attention output override this.
    "post_attention_layernorm": "ffn_norm",
    "ln_2": "ffn_norm",
    "ln_mlp": "ffn_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffn_norm",
    "post_self_attn_layernorm": "post_attn_norm",
    "post_mlp_layernorm": "post_ffn_norm",
    "self_attn.q_proj": "attn.q",
    "self_attn.k_proj": "attn.k",
    "self_attn.v_proj": "attn.v",
    "self_attn.o_proj": "attn.o",
    "self_attn.dense": "attn.o",
    "attention.dense": "attn.o",
    "self_attention.dense": "attn.o",
    "attn.c_proj": "attn.o",
    "self_attn.qkv_proj": "attn.qkv",
    "attention.query_key_value": "attn.qkv",
    "self_attention.query_key_value": "attn.qkv",
    "attn.c_attn": "attn.qkv",
    "self_attn.q_norm": "attn.q_norm",
    "self_attn.k_norm": "attn.k_norm",
    "self_attn.q_layernorm": "attn.q_norm",
    "self_attn.k_layernorm": "attn.k_norm",
    "self_attn.q_layernorm.norms.{e}": "attn.q_norm",
    "self_attn.k_layernorm.norms.{e}": "attn.k_norm",
    "mlp.gate_proj": "mlp.gate",
    "mlp.up_proj": "mlp.up",
    "mlp.down_proj": "mlp.down",
    "mlp.gate_up_proj": "mlp.gate_up",
    "mlp.fc1": "mlp.up",
    "mlp.fc2": "mlp.down",
    "mlp.c_fc": "mlp.up",
    "mlp.c_proj": "mlp.down",
    "mlp.dense_h_to_4h": "mlp.up",
    "mlp.dense_4h_to_h": "mlp.down",
    "attention.self.query": "attn.q",
    "attention.self.key": "attn.k",
    "attention.self.value": "attn.v",
    "attention.output.dense": "attn.o",
    "attention.output.LayerNorm": "post_attn_norm",
    "intermediate.dense": "mlp.up",
    "output.dense": "mlp.down",
    "output.LayerNorm": "post_ffn_norm",
    "block_sparse_moe.gate": "moe.router",
    "block_sparse_moe.experts.{e}.w1": "moe.expert.gate",
    "block_sparse_moe.experts.{e}.w3": "moe.expert.up",
    "block_sparse_moe.experts.{e}.w2": "moe.expert.down",
    "mlp.gate": "moe.router",
    "mlp.experts.{e}.gate_proj": "moe.expert.gate",
    "mlp.experts.{e}.up_proj": "moe.expert.up",
    "mlp.experts.{e}.down_proj": "moe.expert.down",
    "mlp.shared_expert.gate_proj": "moe.shared.gate",
    "mlp.shared_expert.up_proj": "moe.shared.up",
    "mlp.shared_expert.down_proj": "moe.shared.down",
    "mlp.shared_expert_gate": "moe.shared_gate",
    "mlp.shared_experts.gate_proj": "moe.shared.gate",
    "mlp.shared_experts.up_proj": "moe.shared.up",
    "mlp.shared_experts.down_proj": "moe.shared.down",
    "self_attn.q_a_proj": "attn.q_a",
    "self_attn.q_a_layernorm": "attn.q_a_norm",
    "self_attn.q_b_proj": "attn.q_b",
    "self_attn.kv_a_proj_with_mqa": "attn.kv_a",
    "self_attn.kv_a_layernorm": "attn.kv_a_norm",
    "self_attn.kv_b_proj": "attn.kv_b",
}
POST_ATTN_IS_OUTPUT_NORM = {"post_attention_layernorm": "post_attn_norm"}


def role_of(template: str, family: Family) -> str:
    local = template.split("{i}.", 1)[1] if "{i}." in template else template
    module, _, param = local.rpartition(".")
    stem = family.role_overrides.get(module) or (LAYER_ROLES if "{i}." in template else GLOBAL_ROLES).get(
        module
    )
    role = f"{stem}.{param}"
    if stem is None or role not in ROLES:
        raise CatalogError(f"{family.family}: no role for tensor template {template}")
    return role


# ----------------------------------------------------------------------------------------------
# Config builders (symbol values -> config.json dict in the family's own vocabulary)
# ----------------------------------------------------------------------------------------------

LLAMA_CONFIG_MAP = {
    "H": ["hidden_size"],
    "L": ["num_hidden_layers"],
    "nh": ["num_attention_heads"],
    "nkv": ["num_key_value_heads", "=nh"],
    "d": ["head_dim", "=H//nh"],
    "I": ["intermediate_size"],
    "V": ["vocab_size"],
    "P": ["max_position_embeddings"],
    "tie": ["tie_word_embeddings", "=0"],
}


def config_map(**changes: list[str] | None) -> dict[str, list[str]]:
    """LLAMA_CONFIG_MAP with symbols replaced, added, or (value None) removed."""
    merged: dict[str, list[str]] = dict(LLAMA_CONFIG_MAP)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def decoder_config(
    model_type: str, architecture: str, *, head_dim: bool = True, **extra: Any
) -> ConfigBuilder:
    def build(s: Mapping[str, int]) -> dict[str, Any]:
        config: dict[str, Any] = {
            "architectures": [architecture],
            "model_type": model_type,
            "hidden_size": s["H"],
            "intermediate_size": s["I"],
            "num_hidden_layers": s["L"],
            "num_attention_heads": s["nh"],
            "num_key_value_heads": s["nkv"],
            "vocab_size": s["V"],
            "max_position_embeddings": s["P"],
            "tie_word_embeddings": False,
            **PROBE_TOKEN_IDS,
        }
        if head_dim:
            config["head_dim"] = s["d"]
        for key, value in extra.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value(s) if callable(value) else value
        return config

    return build


UNTIED = Group("untied", "lm_head present unless tie_word_embeddings", "1-tie", {"tie_word_embeddings": True})


def bias_group(name: str, key: str, description: str) -> Group:
    return Group(name, description, name, {key: False})


ATTENTION_BIAS = bias_group(
    "attention_bias", "attention_bias", "config attention_bias: q, k, v, o biases together"
)
MLP_BIAS = bias_group("mlp_bias", "mlp_bias", "config mlp_bias: gate, up, down biases together")
LLAMA_BUFFERS = ("model.layers.{i}.self_attn.rotary_emb.inv_freq",)
QKV_CONTIGUOUS = {
    "parts": ["attn.q.weight", "attn.k.weight", "attn.v.weight"],
    "sizes": ["nh*d", "nkv*d", "nkv*d"],
    "axis": 0,
    "transposed": False,
}
GATE_UP_CONTIGUOUS = {
    "mlp.gate_up.weight": {
        "parts": ["mlp.gate.weight", "mlp.up.weight"],
        "sizes": ["I", "I"],
        "axis": 0,
        "layout": "contiguous",
        "transposed": False,
    }
}


def fused_qkv(layout: str, *, bias: bool = False, axis: int = 0, transposed: bool = False) -> dict[str, Any]:
    weight = {**QKV_CONTIGUOUS, "layout": layout, "axis": axis, "transposed": transposed}
    fused = {"attn.qkv.weight": weight}
    if bias:
        fused["attn.qkv.bias"] = {
            **weight,
            "parts": ["attn.q.bias", "attn.k.bias", "attn.v.bias"],
            "axis": 0,
            "transposed": False,
        }
    return fused


# ----------------------------------------------------------------------------------------------
# Published configs, typed in from the models' config.json files
# ----------------------------------------------------------------------------------------------


def llama_published(name: str, **config: Any) -> Published:
    base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu"}
    return Published(name, {**base, **config})


LLAMA_1_7B = llama_published(
    "huggyllama/llama-7b",
    hidden_size=4096,
    intermediate_size=11008,
    num_attention_heads=32,
    num_hidden_layers=32,
    vocab_size=32000,
    max_position_embeddings=2048,
    rms_norm_eps=1e-06,
    tie_word_embeddings=False,
)
LLAMA_2_7B = llama_published(
    "meta-llama/Llama-2-7b-hf",
    hidden_size=4096,
    intermediate_size=11008,
    num_attention_heads=32,
    num_hidden_layers=32,
    num_key_value_heads=32,
    vocab_size=32000,
    max_position_embeddings=4096,
    rms_norm_eps=1e-05,
    pretraining_tp=1,
    rope_scaling=None,
    tie_word_embeddings=False,
)
LLAMA_2_70B = llama_published(
    "meta-llama/Llama-2-70b-hf",
    hidden_size=8192,
    intermediate_size=28672,
    num_attention_heads=64,
    num_hidden_layers=80,
    num_key_value_heads=8,
    vocab_size=32000,
    max_position_embeddings=4096,
    rms_norm_eps=1e-05,
    pretraining_tp=1,
    tie_word_embeddings=False,
)
LLAMA_3_8B = llama_published(
    "meta-llama/Meta-Llama-3-8B",
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_hidden_layers=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=8192,
    rms_norm_eps=1e-05,
    rope_theta=500000.0,
    tie_word_embeddings=False,
)
LLAMA_3_2_1B = llama_published(
    "meta-llama/Llama-3.2-1B",
    hidden_size=2048,
    intermediate_size=8192,
    num_attention_heads=32,
    num_hidden_layers=16,
    num_key_value_heads=8,
    head_dim=64,
    vocab_size=128256,
    max_position_embeddings=131072,
    rms_norm_eps=1e-05,
    rope_theta=500000.0,
    rope_scaling={
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    attention_bias=False,
    mlp_bias=False,
    tie_word_embeddings=True,
)
YI_6B_LLAMA = llama_published(
    "01-ai/Yi-6B",
    hidden_size=4096,
    intermediate_size=11008,
    num_attention_heads=32,
    num_hidden_layers=32,
    num_key_value_heads=4,
    vocab_size=64000,
    max_position_embeddings=4096,
    rms_norm_eps=1e-05,
    rope_theta=5000000.0,
    tie_word_embeddings=False,
)


def drop_keys(*keys: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def translate(config: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k not in keys}

    return translate


def internlm_to_llama(config: Mapping[str, Any]) -> dict[str, Any]:
    # InternLM v1 spells Llama's attention_bias as "bias".
    translated = {k: v for k, v in config.items() if k != "bias"}
    translated["attention_bias"] = bool(config.get("bias", False))
    return translated


# ----------------------------------------------------------------------------------------------
# The families
# ----------------------------------------------------------------------------------------------


def transformers_families() -> list[Family]:
    llama_cfg = decoder_config("llama", "LlamaForCausalLM", attention_bias=True, mlp_bias=True)
    llama_map = config_map(attention_bias=["attention_bias", "=0"], mlp_bias=["mlp_bias", "=0"])
    llama_like = {
        "activation": "silu",
        "norm": "rmsnorm",
        "positional": "rope",
        "parallel_residual": False,
        "buffers": LLAMA_BUFFERS,
    }
    gemma_overrides = POST_ATTN_IS_OUTPUT_NORM
    return [
        Family(
            family="llama",
            model_type="llama",
            reference="LlamaForCausalLM",
            architectures=("LlamaForCausalLM", "LLaMAForCausalLM"),
            reference_family="llama",
            config_map=llama_map,
            probe_config=llama_cfg,
            groups=(UNTIED, ATTENTION_BIAS, MLP_BIAS),
            published=(LLAMA_1_7B, LLAMA_2_7B, LLAMA_2_70B, LLAMA_3_8B, LLAMA_3_2_1B, YI_6B_LLAMA),
            **llama_like,  # type: ignore[arg-type]
        ),
        Family(
            family="deepseek-v1",
            model_type="llama",
            reference="LlamaForCausalLM",
            architectures=("LlamaForCausalLM",),
            reference_family="llama",
            config_map=llama_map,
            probe_config=llama_cfg,
            groups=(UNTIED, ATTENTION_BIAS, MLP_BIAS),
            source_note="DeepSeek-LLM v1 ships as LlamaForCausalLM; templates equal llama's",
            published=(
                llama_published(
                    "deepseek-ai/deepseek-llm-7b-base",
                    hidden_size=4096,
                    intermediate_size=11008,
                    num_attention_heads=32,
                    num_hidden_layers=30,
                    num_key_value_heads=32,
                    vocab_size=102400,
                    max_position_embeddings=4096,
                    rms_norm_eps=1e-06,
                    rope_theta=10000.0,
                    bos_token_id=100000,
                    eos_token_id=100001,
                    tie_word_embeddings=False,
                ),
                llama_published(
                    "deepseek-ai/deepseek-llm-67b-base",
                    hidden_size=8192,
                    intermediate_size=22016,
                    num_attention_heads=64,
                    num_hidden_layers=95,
                    num_key_value_heads=8,
                    vocab_size=102400,
                    max_position_embeddings=4096,
                    rms_norm_eps=1e-06,
                    rope_theta=10000.0,
                    bos_token_id=100000,
                    eos_token_id=100001,
                    tie_word_embeddings=False,
                ),
            ),
            **llama_like,  # type: ignore[arg-type]
        ),
        Family(
            family="yi",
            model_type="Yi",
            reference="YiForCausalLM",
            architectures=("YiForCausalLM",),
            reference_family="llama",
            config_map=LLAMA_CONFIG_MAP,
            probe_config=decoder_config("Yi", "YiForCausalLM", head_dim=False),
            forced={"d": "H//nh"},
            groups=(UNTIED,),
            build_model_type="llama",
            to_build_config=drop_keys("auto_map"),
            renames={".input_layernorm.": ".ln1.", ".post_attention_layernorm.": ".ln2."},
            role_overrides={"ln1": "attn_norm", "ln2": "ffn_norm"},
            source_note=(
                "Yi's original (Nov 2023) naming: transformers' Llama with input_layernorm -> ln1 and "
                "post_attention_layernorm -> ln2 (tensor-naming.md §5.2); the re-uploaded Yi is plain llama"
            ),
            published=(
                Published(
                    "01-ai/Yi-6B (original upload)",
                    {
                        "architectures": ["YiForCausalLM"],
                        "model_type": "Yi",
                        "auto_map": {
                            "AutoConfig": "configuration_yi.YiConfig",
                            "AutoModelForCausalLM": "modeling_yi.YiForCausalLM",
                        },
                        "hidden_act": "silu",
                        "hidden_size": 4096,
                        "intermediate_size": 11008,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 32,
                        "num_key_value_heads": 4,
                        "vocab_size": 64000,
                        "max_position_embeddings": 4096,
                        "rms_norm_eps": 1e-05,
                        "rope_theta": 5000000.0,
                        "tie_word_embeddings": False,
                    },
                ),
                Published(
                    "01-ai/Yi-34B (original upload)",
                    {
                        "architectures": ["YiForCausalLM"],
                        "model_type": "Yi",
                        "auto_map": {
                            "AutoConfig": "configuration_yi.YiConfig",
                            "AutoModelForCausalLM": "modeling_yi.YiForCausalLM",
                        },
                        "hidden_act": "silu",
                        "hidden_size": 7168,
                        "intermediate_size": 20480,
                        "num_attention_heads": 56,
                        "num_hidden_layers": 60,
                        "num_key_value_heads": 8,
                        "vocab_size": 64000,
                        "max_position_embeddings": 4096,
                        "rms_norm_eps": 1e-05,
                        "rope_theta": 5000000.0,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
            **llama_like,  # type: ignore[arg-type]
        ),
        Family(
            family="internlm",
            model_type="internlm",
            reference="InternLMForCausalLM",
            architectures=("InternLMForCausalLM",),
            reference_family="llama",
            config_map=config_map(d=["=H//nh"], attention_bias=["bias", "attention_bias", "=0"]),
            probe_config=decoder_config(
                "internlm", "InternLMForCausalLM", head_dim=False, num_key_value_heads=None, bias=True
            ),
            forced={"d": "H//nh", "nkv": "nh"},
            groups=(
                UNTIED,
                Group(
                    "attention_bias",
                    "config bias: q, k, v, o biases together",
                    "attention_bias",
                    {"bias": False},
                ),
            ),
            build_model_type="llama",
            to_build_config=internlm_to_llama,
            source_note="InternLM v1 (remote code) is transformers' Llama with config bias -> attention_bias",
            published=(
                Published(
                    "internlm/internlm-7b",
                    {
                        "architectures": ["InternLMForCausalLM"],
                        "model_type": "internlm",
                        "auto_map": {"AutoModelForCausalLM": "modeling_internlm.InternLMForCausalLM"},
                        "bias": True,
                        "hidden_act": "silu",
                        "hidden_size": 4096,
                        "intermediate_size": 11008,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 32,
                        "vocab_size": 103168,
                        "max_position_embeddings": 2048,
                        "rms_norm_eps": 1e-06,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
            **llama_like,  # type: ignore[arg-type]
        ),
        Family(
            family="minicpm",
            model_type="minicpm",
            reference="MiniCPMForCausalLM",
            architectures=("MiniCPMForCausalLM",),
            reference_family="minicpm",
            config_map=config_map(d=["=H//nh"], tie=["tie_word_embeddings", "=1"]),
            probe_config=decoder_config(
                "minicpm",
                "MiniCPMForCausalLM",
                head_dim=False,
                scale_emb=12,
                dim_model_base=256,
                scale_depth=1.4,
            ),
            forced={"d": "H//nh"},
            groups=(UNTIED,),
            build_model_type="llama",
            to_build_config=drop_keys("auto_map", "scale_emb", "dim_model_base", "scale_depth"),
            source_note=(
                "MiniCPM (remote code) uses Llama tensor names; its scale_emb/scale_depth/dim_model_base "
                "scalars change no tensor"
            ),
            published=(
                Published(
                    "openbmb/MiniCPM-2B-sft-bf16",
                    {
                        "architectures": ["MiniCPMForCausalLM"],
                        "model_type": "minicpm",
                        "auto_map": {"AutoModelForCausalLM": "modeling_minicpm.MiniCPMForCausalLM"},
                        "hidden_act": "silu",
                        "hidden_size": 2304,
                        "intermediate_size": 5760,
                        "num_attention_heads": 36,
                        "num_key_value_heads": 36,
                        "num_hidden_layers": 40,
                        "vocab_size": 122753,
                        "max_position_embeddings": 4096,
                        "rms_norm_eps": 1e-05,
                        "scale_emb": 12,
                        "dim_model_base": 256,
                        "scale_depth": 1.4,
                        "tie_word_embeddings": True,
                    },
                ),
            ),
            **llama_like,  # type: ignore[arg-type]
        ),
        Family(
            family="mistral",
            model_type="mistral",
            reference="MistralForCausalLM",
            architectures=("MistralForCausalLM",),
            reference_family="mistral",
            config_map=LLAMA_CONFIG_MAP,
            probe_config=decoder_config("mistral", "MistralForCausalLM"),
            groups=(UNTIED,),
            published=(
                Published(
                    "mistralai/Mistral-7B-v0.1",
                    {
                        "architectures": ["MistralForCausalLM"],
                        "model_type": "mistral",
                        "hidden_act": "silu",
                        "hidden_size": 4096,
                        "intermediate_size": 14336,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 32,
                        "num_key_value_heads": 8,
                        "vocab_size": 32000,
                        "max_position_embeddings": 32768,
                        "rms_norm_eps": 1e-05,
                        "rope_theta": 10000.0,
                        "sliding_window": 4096,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
            **llama_like,  # type: ignore[arg-type]
        ),
        Family(
            family="mixtral",
            model_type="mixtral",
            reference="MixtralForCausalLM",
            architectures=("MixtralForCausalLM",),
            reference_family="mixtral",
            config_map=config_map(E=["num_local_experts"]),
            probe_config=decoder_config(
                "mixtral",
                "MixtralForCausalLM",
                num_local_experts=lambda s: s["E"],
                num_experts_per_tok=2,
            ),
            groups=(UNTIED,),
            source_note=(
                "names as saved (transformers v5 fuses experts at load time and reverts on save; "
                "the per-expert block_sparse_moe names are the on-disk ones)"
            ),
            published=(
                Published(
                    "mistralai/Mixtral-8x7B-v0.1",
                    {
                        "architectures": ["MixtralForCausalLM"],
                        "model_type": "mixtral",
                        "hidden_act": "silu",
                        "hidden_size": 4096,
                        "intermediate_size": 14336,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 32,
                        "num_key_value_heads": 8,
                        "num_local_experts": 8,
                        "num_experts_per_tok": 2,
                        "vocab_size": 32000,
                        "max_position_embeddings": 32768,
                        "rms_norm_eps": 1e-05,
                        "rope_theta": 1000000.0,
                        "router_aux_loss_coef": 0.02,
                        "sliding_window": None,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
            **llama_like,  # type: ignore[arg-type]
        ),
        Family(
            family="qwen2",
            model_type="qwen2",
            reference="Qwen2ForCausalLM",
            architectures=("Qwen2ForCausalLM",),
            reference_family="qwen2",
            config_map=LLAMA_CONFIG_MAP,
            probe_config=decoder_config("qwen2", "Qwen2ForCausalLM", head_dim=False),
            forced={"d": "H//nh"},
            groups=(UNTIED,),
            published=(
                Published(
                    "Qwen/Qwen2.5-7B",
                    {
                        "architectures": ["Qwen2ForCausalLM"],
                        "model_type": "qwen2",
                        "hidden_act": "silu",
                        "hidden_size": 3584,
                        "intermediate_size": 18944,
                        "num_attention_heads": 28,
                        "num_hidden_layers": 28,
                        "num_key_value_heads": 4,
                        "vocab_size": 152064,
                        "max_position_embeddings": 131072,
                        "max_window_layers": 28,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 1000000.0,
                        "sliding_window": 131072,
                        "use_sliding_window": False,
                        "tie_word_embeddings": False,
                    },
                ),
                Published(
                    "Qwen/Qwen2.5-0.5B",
                    {
                        "architectures": ["Qwen2ForCausalLM"],
                        "model_type": "qwen2",
                        "hidden_act": "silu",
                        "hidden_size": 896,
                        "intermediate_size": 4864,
                        "num_attention_heads": 14,
                        "num_hidden_layers": 24,
                        "num_key_value_heads": 2,
                        "vocab_size": 151936,
                        "max_position_embeddings": 32768,
                        "max_window_layers": 24,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 1000000.0,
                        "sliding_window": 32768,
                        "use_sliding_window": False,
                        "tie_word_embeddings": True,
                    },
                ),
            ),
            **llama_like,  # type: ignore[arg-type]
        ),
        Family(
            family="qwen2_moe",
            model_type="qwen2_moe",
            reference="Qwen2MoeForCausalLM",
            architectures=("Qwen2MoeForCausalLM",),
            reference_family="qwen2_moe",
            # Every layer sparse (decoder_sparse_step 1, no mlp_only_layers), as in the published
            # Qwen1.5-MoE and Qwen2-MoE: routed experts of moe_intermediate_size, one shared expert
            # of shared_expert_intermediate_size with a scalar gate.
            config_map=config_map(
                I=["moe_intermediate_size"], E=["num_experts"], S=["shared_expert_intermediate_size"]
            ),
            probe_config=decoder_config(
                "qwen2_moe",
                "Qwen2MoeForCausalLM",
                head_dim=False,
                moe_intermediate_size=lambda s: s["I"],
                shared_expert_intermediate_size=lambda s: s["S"],
                num_experts=lambda s: s["E"],
                num_experts_per_tok=2,
                decoder_sparse_step=1,
                mlp_only_layers=[],
            ),
            forced={"d": "H//nh"},
            groups=(UNTIED,),
            source_note=(
                "names as saved (transformers v5 fuses experts at load time and reverts on save; "
                "the per-expert mlp.experts names are the on-disk ones); all layers sparse"
            ),
            published=(
                Published(
                    "Qwen/Qwen1.5-MoE-A2.7B",
                    {
                        "architectures": ["Qwen2MoeForCausalLM"],
                        "model_type": "qwen2_moe",
                        "decoder_sparse_step": 1,
                        "hidden_act": "silu",
                        "hidden_size": 2048,
                        "intermediate_size": 5632,
                        "max_position_embeddings": 8192,
                        "moe_intermediate_size": 1408,
                        "norm_topk_prob": False,
                        "num_attention_heads": 16,
                        "num_experts": 60,
                        "num_experts_per_tok": 4,
                        "num_hidden_layers": 24,
                        "num_key_value_heads": 16,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 1000000.0,
                        "shared_expert_intermediate_size": 5632,
                        "tie_word_embeddings": False,
                        "vocab_size": 151936,
                    },
                ),
            ),
            **llama_like,  # type: ignore[arg-type]
        ),
        Family(
            family="qwen3_moe",
            model_type="qwen3_moe",
            reference="Qwen3MoeForCausalLM",
            architectures=("Qwen3MoeForCausalLM",),
            reference_family="qwen3_moe",
            # Every layer sparse (decoder_sparse_step 1, no mlp_only_layers), as in every published
            # Qwen3-MoE: the experts' width is moe_intermediate_size (intermediate_size is unused).
            config_map=config_map(
                I=["moe_intermediate_size"], E=["num_experts"], attention_bias=["attention_bias", "=0"]
            ),
            probe_config=decoder_config(
                "qwen3_moe",
                "Qwen3MoeForCausalLM",
                attention_bias=True,
                moe_intermediate_size=lambda s: s["I"],
                num_experts=lambda s: s["E"],
                num_experts_per_tok=2,
                decoder_sparse_step=1,
                mlp_only_layers=[],
            ),
            groups=(UNTIED, ATTENTION_BIAS),
            source_note=(
                "names as saved (transformers v5 fuses experts at load time and reverts on save; "
                "the per-expert mlp.experts names are the on-disk ones); all layers sparse"
            ),
            published=(
                Published(
                    "Qwen/Qwen3-30B-A3B",
                    {
                        "architectures": ["Qwen3MoeForCausalLM"],
                        "model_type": "qwen3_moe",
                        "attention_bias": False,
                        "decoder_sparse_step": 1,
                        "head_dim": 128,
                        "hidden_act": "silu",
                        "hidden_size": 2048,
                        "intermediate_size": 6144,
                        "max_position_embeddings": 40960,
                        "mlp_only_layers": [],
                        "moe_intermediate_size": 768,
                        "norm_topk_prob": True,
                        "num_attention_heads": 32,
                        "num_experts": 128,
                        "num_experts_per_tok": 8,
                        "num_hidden_layers": 48,
                        "num_key_value_heads": 4,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 1000000.0,
                        "tie_word_embeddings": False,
                        "vocab_size": 151936,
                    },
                ),
            ),
            **llama_like,  # type: ignore[arg-type]
        ),
        *deepseek_mla_families(llama_like),
        Family(
            family="qwen3",
            model_type="qwen3",
            reference="Qwen3ForCausalLM",
            architectures=("Qwen3ForCausalLM",),
            reference_family="qwen3",
            config_map=config_map(attention_bias=["attention_bias", "=0"]),
            probe_config=decoder_config("qwen3", "Qwen3ForCausalLM", attention_bias=True),
            groups=(UNTIED, ATTENTION_BIAS),
            published=(
                Published(
                    "Qwen/Qwen3-0.6B",
                    {
                        "architectures": ["Qwen3ForCausalLM"],
                        "model_type": "qwen3",
                        "attention_bias": False,
                        "hidden_act": "silu",
                        "hidden_size": 1024,
                        "intermediate_size": 3072,
                        "num_attention_heads": 16,
                        "num_hidden_layers": 28,
                        "num_key_value_heads": 8,
                        "head_dim": 128,
                        "vocab_size": 151936,
                        "max_position_embeddings": 40960,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 1000000,
                        "tie_word_embeddings": True,
                    },
                ),
                Published(
                    "Qwen/Qwen3-8B",
                    {
                        "architectures": ["Qwen3ForCausalLM"],
                        "model_type": "qwen3",
                        "attention_bias": False,
                        "hidden_act": "silu",
                        "hidden_size": 4096,
                        "intermediate_size": 12288,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 36,
                        "num_key_value_heads": 8,
                        "head_dim": 128,
                        "vocab_size": 151936,
                        "max_position_embeddings": 40960,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 1000000,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
            **llama_like,  # type: ignore[arg-type]
        ),
        Family(
            family="glm",
            model_type="glm",
            reference="GlmForCausalLM",
            architectures=("GlmForCausalLM",),
            reference_family="glm",
            config_map=config_map(attention_bias=["attention_bias", "=1"]),
            probe_config=decoder_config("glm", "GlmForCausalLM", attention_bias=True),
            groups=(
                UNTIED,
                bias_group(
                    "attention_bias", "attention_bias", "config attention_bias: q, k, v biases (no o bias)"
                ),
            ),
            fused=GATE_UP_CONTIGUOUS,
            activation="silu",
            norm="rmsnorm",
            positional="rope-partial",
            parallel_residual=False,
            published=(
                Published(
                    "THUDM/glm-4-9b-chat-hf",
                    {
                        "architectures": ["GlmForCausalLM"],
                        "model_type": "glm",
                        "attention_bias": True,
                        "head_dim": 128,
                        "hidden_act": "silu",
                        "hidden_size": 4096,
                        "intermediate_size": 13696,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 40,
                        "num_key_value_heads": 2,
                        "partial_rotary_factor": 0.5,
                        "vocab_size": 151552,
                        "max_position_embeddings": 131072,
                        "rms_norm_eps": 1.5625e-07,
                        "rope_theta": 10000.0,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
        ),
        Family(
            family="glm4",
            model_type="glm4",
            reference="Glm4ForCausalLM",
            architectures=("Glm4ForCausalLM",),
            reference_family="glm4",
            config_map=config_map(attention_bias=["attention_bias", "=1"]),
            probe_config=decoder_config("glm4", "Glm4ForCausalLM", attention_bias=True),
            groups=(
                UNTIED,
                bias_group(
                    "attention_bias", "attention_bias", "config attention_bias: q, k, v biases (no o bias)"
                ),
            ),
            fused=GATE_UP_CONTIGUOUS,
            activation="silu",
            norm="rmsnorm",
            positional="rope-partial",
            parallel_residual=False,
            published=(
                Published(
                    "THUDM/GLM-4-9B-0414",
                    {
                        "architectures": ["Glm4ForCausalLM"],
                        "model_type": "glm4",
                        "attention_bias": True,
                        "head_dim": 128,
                        "hidden_act": "silu",
                        "hidden_size": 4096,
                        "intermediate_size": 13696,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 40,
                        "num_key_value_heads": 2,
                        "partial_rotary_factor": 0.5,
                        "vocab_size": 151552,
                        "max_position_embeddings": 32768,
                        "rms_norm_eps": 1e-05,
                        "rope_theta": 10000.0,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
        ),
        Family(
            family="gemma",
            model_type="gemma",
            reference="GemmaForCausalLM",
            architectures=("GemmaForCausalLM",),
            reference_family="gemma",
            config_map=config_map(
                d=["head_dim", "=256"],
                tie=["tie_word_embeddings", "=1"],
                attention_bias=["attention_bias", "=0"],
            ),
            probe_config=decoder_config("gemma", "GemmaForCausalLM", attention_bias=True),
            groups=(UNTIED, ATTENTION_BIAS),
            activation="gelu_pytorch_tanh",
            norm="rmsnorm",
            positional="rope",
            parallel_residual=False,
            buffers=LLAMA_BUFFERS,
            published=(
                Published(
                    "google/gemma-2b",
                    {
                        "architectures": ["GemmaForCausalLM"],
                        "model_type": "gemma",
                        "head_dim": 256,
                        "hidden_act": "gelu",
                        "hidden_size": 2048,
                        "intermediate_size": 16384,
                        "num_attention_heads": 8,
                        "num_hidden_layers": 18,
                        "num_key_value_heads": 1,
                        "vocab_size": 256000,
                        "max_position_embeddings": 8192,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 10000.0,
                    },
                ),
                Published(
                    "google/gemma-7b",
                    {
                        "architectures": ["GemmaForCausalLM"],
                        "model_type": "gemma",
                        "head_dim": 256,
                        "hidden_act": "gelu",
                        "hidden_size": 3072,
                        "intermediate_size": 24576,
                        "num_attention_heads": 16,
                        "num_hidden_layers": 28,
                        "num_key_value_heads": 16,
                        "vocab_size": 256000,
                        "max_position_embeddings": 8192,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 10000.0,
                    },
                ),
            ),
        ),
        Family(
            family="gemma2",
            model_type="gemma2",
            reference="Gemma2ForCausalLM",
            architectures=("Gemma2ForCausalLM",),
            reference_family="gemma2",
            config_map=config_map(
                d=["head_dim", "=256"],
                tie=["tie_word_embeddings", "=1"],
                attention_bias=["attention_bias", "=0"],
            ),
            probe_config=decoder_config("gemma2", "Gemma2ForCausalLM", attention_bias=True),
            groups=(UNTIED, ATTENTION_BIAS),
            role_overrides=gemma_overrides,
            activation="gelu_pytorch_tanh",
            norm="rmsnorm",
            positional="rope",
            parallel_residual=False,
            published=(
                Published(
                    "google/gemma-2-2b",
                    {
                        "architectures": ["Gemma2ForCausalLM"],
                        "model_type": "gemma2",
                        "attn_logit_softcapping": 50.0,
                        "final_logit_softcapping": 30.0,
                        "head_dim": 256,
                        "hidden_activation": "gelu_pytorch_tanh",
                        "hidden_size": 2304,
                        "intermediate_size": 9216,
                        "num_attention_heads": 8,
                        "num_hidden_layers": 26,
                        "num_key_value_heads": 4,
                        "query_pre_attn_scalar": 256,
                        "sliding_window": 4096,
                        "vocab_size": 256000,
                        "max_position_embeddings": 8192,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 10000.0,
                    },
                ),
                Published(
                    "google/gemma-2-9b",
                    {
                        "architectures": ["Gemma2ForCausalLM"],
                        "model_type": "gemma2",
                        "attn_logit_softcapping": 50.0,
                        "final_logit_softcapping": 30.0,
                        "head_dim": 256,
                        "hidden_activation": "gelu_pytorch_tanh",
                        "hidden_size": 3584,
                        "intermediate_size": 14336,
                        "num_attention_heads": 16,
                        "num_hidden_layers": 42,
                        "num_key_value_heads": 8,
                        "query_pre_attn_scalar": 256,
                        "sliding_window": 4096,
                        "vocab_size": 256000,
                        "max_position_embeddings": 8192,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 10000.0,
                    },
                ),
            ),
        ),
        Family(
            family="gemma3",
            model_type="gemma3_text",
            reference="Gemma3ForCausalLM",
            architectures=("Gemma3ForCausalLM",),
            reference_family="gemma3",
            config_map=config_map(
                d=["head_dim", "=256"],
                tie=["tie_word_embeddings", "=1"],
                attention_bias=["attention_bias", "=0"],
            ),
            probe_config=decoder_config("gemma3_text", "Gemma3ForCausalLM", attention_bias=True),
            groups=(UNTIED, ATTENTION_BIAS),
            role_overrides=gemma_overrides,
            activation="gelu_pytorch_tanh",
            norm="rmsnorm",
            positional="rope",
            parallel_residual=False,
            published=(
                Published(
                    "google/gemma-3-270m",
                    {
                        "architectures": ["Gemma3ForCausalLM"],
                        "model_type": "gemma3_text",
                        "head_dim": 256,
                        "hidden_activation": "gelu_pytorch_tanh",
                        "hidden_size": 640,
                        "intermediate_size": 2048,
                        "num_attention_heads": 4,
                        "num_hidden_layers": 18,
                        "num_key_value_heads": 1,
                        "query_pre_attn_scalar": 256,
                        "sliding_window": 512,
                        "vocab_size": 262144,
                        "max_position_embeddings": 32768,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 1000000.0,
                        "rope_local_base_freq": 10000.0,
                    },
                ),
                Published(
                    "google/gemma-3-1b-pt",
                    {
                        "architectures": ["Gemma3ForCausalLM"],
                        "model_type": "gemma3_text",
                        "head_dim": 256,
                        "hidden_activation": "gelu_pytorch_tanh",
                        "hidden_size": 1152,
                        "intermediate_size": 6912,
                        "num_attention_heads": 4,
                        "num_hidden_layers": 26,
                        "num_key_value_heads": 1,
                        "query_pre_attn_scalar": 256,
                        "sliding_window": 512,
                        "vocab_size": 262144,
                        "max_position_embeddings": 32768,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 1000000.0,
                        "rope_local_base_freq": 10000.0,
                    },
                ),
            ),
        ),
        Family(
            family="phi",
            model_type="phi",
            reference="PhiForCausalLM",
            architectures=("PhiForCausalLM",),
            reference_family="phi",
            config_map=config_map(d=["=H//nh"], qk_layernorm=["qk_layernorm", "=0"]),
            probe_config=decoder_config("phi", "PhiForCausalLM", head_dim=False, qk_layernorm=True),
            forced={"d": "H//nh"},
            groups=(
                UNTIED,
                bias_group("qk_layernorm", "qk_layernorm", "config qk_layernorm: per-head q/k LayerNorms"),
            ),
            activation="gelu_new",
            norm="layernorm",
            positional="rope-partial",
            parallel_residual=True,
            buffers=LLAMA_BUFFERS,
            published=(
                Published(
                    "microsoft/phi-2",
                    {
                        "architectures": ["PhiForCausalLM"],
                        "model_type": "phi",
                        "hidden_act": "gelu_new",
                        "hidden_size": 2560,
                        "intermediate_size": 10240,
                        "layer_norm_eps": 1e-05,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 32,
                        "num_key_value_heads": None,
                        "partial_rotary_factor": 0.4,
                        "qk_layernorm": False,
                        "vocab_size": 51200,
                        "max_position_embeddings": 2048,
                        "rope_theta": 10000.0,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
        ),
        Family(
            family="phi3",
            model_type="phi3",
            reference="Phi3ForCausalLM",
            architectures=("Phi3ForCausalLM",),
            reference_family="phi3",
            config_map=config_map(d=["=H//nh"]),
            probe_config=decoder_config("phi3", "Phi3ForCausalLM", head_dim=False),
            forced={"d": "H//nh"},
            groups=(UNTIED,),
            fused={**fused_qkv("contiguous"), **GATE_UP_CONTIGUOUS},
            activation="silu",
            norm="rmsnorm",
            positional="rope",
            parallel_residual=False,
            buffers=LLAMA_BUFFERS,
            published=(
                Published(
                    "microsoft/Phi-3-mini-4k-instruct",
                    {
                        "architectures": ["Phi3ForCausalLM"],
                        "model_type": "phi3",
                        "hidden_act": "silu",
                        "hidden_size": 3072,
                        "intermediate_size": 8192,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 32,
                        "num_key_value_heads": 32,
                        "original_max_position_embeddings": 4096,
                        "sliding_window": 2047,
                        "vocab_size": 32064,
                        "max_position_embeddings": 4096,
                        "rms_norm_eps": 1e-05,
                        "rope_theta": 10000.0,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
        ),
        falcon_family(new_decoder=False),
        falcon_family(new_decoder=True),
        Family(
            family="gpt_neox",
            model_type="gpt_neox",
            reference="GPTNeoXForCausalLM",
            architectures=("GPTNeoXForCausalLM",),
            reference_family="gpt_neox",
            config_map=config_map(nkv=["=nh"], d=["=H//nh"], attention_bias=["attention_bias", "=1"]),
            probe_config=decoder_config(
                "gpt_neox",
                "GPTNeoXForCausalLM",
                head_dim=False,
                num_key_value_heads=None,
                attention_bias=True,
            ),
            forced={"d": "H//nh", "nkv": "nh"},
            groups=(
                UNTIED,
                bias_group("attention_bias", "attention_bias", "config attention_bias: qkv and dense biases"),
            ),
            fused=fused_qkv("per_head_interleaved", bias=True),
            activation="gelu",
            norm="layernorm",
            positional="rope-partial",
            parallel_residual=True,
            buffers=(
                "gpt_neox.layers.{i}.attention.bias",
                "gpt_neox.layers.{i}.attention.masked_bias",
                "gpt_neox.layers.{i}.attention.rotary_emb.inv_freq",
            ),
            published=(
                Published(
                    "EleutherAI/pythia-160m",
                    {
                        "architectures": ["GPTNeoXForCausalLM"],
                        "model_type": "gpt_neox",
                        "hidden_act": "gelu",
                        "hidden_size": 768,
                        "intermediate_size": 3072,
                        "layer_norm_eps": 1e-05,
                        "num_attention_heads": 12,
                        "num_hidden_layers": 12,
                        "rotary_pct": 0.25,
                        "rotary_emb_base": 10000,
                        "use_parallel_residual": True,
                        "vocab_size": 50304,
                        "max_position_embeddings": 2048,
                        "tie_word_embeddings": False,
                    },
                ),
                Published(
                    "EleutherAI/gpt-neox-20b",
                    {
                        "architectures": ["GPTNeoXForCausalLM"],
                        "model_type": "gpt_neox",
                        "hidden_act": "gelu_fast",
                        "hidden_size": 6144,
                        "intermediate_size": 24576,
                        "layer_norm_eps": 1e-05,
                        "num_attention_heads": 64,
                        "num_hidden_layers": 44,
                        "rotary_pct": 0.25,
                        "rotary_emb_base": 10000,
                        "use_parallel_residual": True,
                        "vocab_size": 50432,
                        "max_position_embeddings": 2048,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
        ),
        gpt2_family(),
        bert_family(),
        Family(
            family="olmo",
            model_type="olmo",
            reference="OlmoForCausalLM",
            architectures=("OlmoForCausalLM",),
            reference_family="olmo",
            config_map=config_map(d=["=H//nh"], attention_bias=["attention_bias", "=0"]),
            probe_config=decoder_config("olmo", "OlmoForCausalLM", head_dim=False, attention_bias=True),
            forced={"d": "H//nh"},
            groups=(UNTIED, ATTENTION_BIAS),
            activation="silu",
            norm="layernorm",
            positional="rope",
            parallel_residual=False,
            buffers=LLAMA_BUFFERS,
            source_note="OLMo v1's LayerNorm is non-parametric: the model holds no norm tensors",
            published=(
                Published(
                    "allenai/OLMo-1B-hf",
                    {
                        "architectures": ["OlmoForCausalLM"],
                        "model_type": "olmo",
                        "attention_bias": False,
                        "clip_qkv": None,
                        "hidden_act": "silu",
                        "hidden_size": 2048,
                        "intermediate_size": 8192,
                        "num_attention_heads": 16,
                        "num_hidden_layers": 16,
                        "num_key_value_heads": 16,
                        "vocab_size": 50304,
                        "max_position_embeddings": 2048,
                        "rope_theta": 10000.0,
                        "tie_word_embeddings": True,
                    },
                ),
                Published(
                    "allenai/OLMo-7B-hf",
                    {
                        "architectures": ["OlmoForCausalLM"],
                        "model_type": "olmo",
                        "attention_bias": False,
                        "clip_qkv": None,
                        "hidden_act": "silu",
                        "hidden_size": 4096,
                        "intermediate_size": 11008,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 32,
                        "num_key_value_heads": 32,
                        "vocab_size": 50304,
                        "max_position_embeddings": 2048,
                        "rope_theta": 10000.0,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
        ),
        Family(
            family="olmo2",
            model_type="olmo2",
            reference="Olmo2ForCausalLM",
            architectures=("Olmo2ForCausalLM",),
            reference_family="olmo2",
            config_map=config_map(d=["=H//nh"], attention_bias=["attention_bias", "=0"]),
            probe_config=decoder_config("olmo2", "Olmo2ForCausalLM", head_dim=False, attention_bias=True),
            forced={"d": "H//nh"},
            groups=(UNTIED, ATTENTION_BIAS),
            role_overrides=POST_ATTN_IS_OUTPUT_NORM,
            activation="silu",
            norm="rmsnorm",
            positional="rope",
            parallel_residual=False,
            buffers=LLAMA_BUFFERS,
            published=(
                Published(
                    "allenai/OLMo-2-1124-7B",
                    {
                        "architectures": ["Olmo2ForCausalLM"],
                        "model_type": "olmo2",
                        "attention_bias": False,
                        "hidden_act": "silu",
                        "hidden_size": 4096,
                        "intermediate_size": 11008,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 32,
                        "num_key_value_heads": 32,
                        "vocab_size": 100352,
                        "max_position_embeddings": 4096,
                        "rms_norm_eps": 1e-06,
                        "rope_theta": 500000,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
        ),
        Family(
            family="stablelm",
            model_type="stablelm",
            reference="StableLmForCausalLM",
            architectures=("StableLmForCausalLM", "StableLMEpochForCausalLM"),
            reference_family="stablelm",
            config_map=config_map(
                d=["=H//nh"], qkv_bias=["use_qkv_bias", "=0"], qk_layernorm=["qk_layernorm", "=0"]
            ),
            probe_config=decoder_config(
                "stablelm", "StableLmForCausalLM", head_dim=False, use_qkv_bias=True, qk_layernorm=True
            ),
            forced={"d": "H//nh"},
            groups=(
                UNTIED,
                Group("qkv_bias", "config use_qkv_bias: q, k, v biases", "qkv_bias", {"use_qkv_bias": False}),
                bias_group("qk_layernorm", "qk_layernorm", "config qk_layernorm: one LayerNorm per head"),
            ),
            activation="silu",
            norm="layernorm",
            positional="rope-partial",
            parallel_residual=False,
            buffers=LLAMA_BUFFERS,
            published=(
                Published(
                    "stabilityai/stablelm-2-1_6b",
                    {
                        "architectures": ["StableLmForCausalLM"],
                        "model_type": "stablelm",
                        "hidden_act": "silu",
                        "hidden_size": 2048,
                        "intermediate_size": 5632,
                        "layer_norm_eps": 1e-05,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 24,
                        "num_key_value_heads": 32,
                        "partial_rotary_factor": 0.25,
                        "qk_layernorm": False,
                        "use_parallel_residual": False,
                        "use_qkv_bias": True,
                        "vocab_size": 100352,
                        "max_position_embeddings": 4096,
                        "rope_theta": 10000,
                        "tie_word_embeddings": False,
                    },
                ),
                Published(
                    "stabilityai/stablelm-3b-4e1t",
                    {
                        "architectures": ["StableLmForCausalLM"],
                        "model_type": "stablelm",
                        "hidden_act": "silu",
                        "hidden_size": 2560,
                        "intermediate_size": 6912,
                        "layer_norm_eps": 1e-05,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 32,
                        "num_key_value_heads": 32,
                        "partial_rotary_factor": 0.25,
                        "use_qkv_bias": False,
                        "vocab_size": 50304,
                        "max_position_embeddings": 4096,
                        "rope_theta": 10000,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
        ),
    ]


DEEPSEEK_MLA_CONFIG_MAP = config_map(
    I=["moe_intermediate_size"],
    E=["n_routed_experts"],
    ns=["n_shared_experts", "=0"],
    S=["=ns*I"],
    Id=["intermediate_size"],
    Ld=["first_k_dense_replace", "=0"],
    Rq=["q_lora_rank", "=0"],
    Rkv=["kv_lora_rank"],
    dn=["qk_nope_head_dim"],
    dr=["qk_rope_head_dim"],
    dv=["v_head_dim"],
    Qa=["=nh*(dn+dr)"],
    Ka=["=Rkv+dr"],
    KVb=["=nh*(dn+dv)"],
    O=["=nh*dv"],
)
# Q's low-rank path (q_a_proj, q_a_layernorm, q_b_proj) with q_lora_rank set; one q_proj without
# (DeepSeek-V2-Lite). "1//(Rq+1)" is 1 exactly when Rq is 0.
Q_LORA = Group(
    "q_lora",
    "q_a_proj, q_a_layernorm, q_b_proj when q_lora_rank is set",
    "Rq",
    {"q_lora_rank": None},
    alt_name="q_full",
    alt_description="one q_proj when q_lora_rank is null",
    alt_condition="1//(Rq+1)",
)


def deepseek_mla_families(llama_like: Mapping[str, Any]) -> list[Family]:
    """DeepSeek-V2 and V3: MLA attention, routed plus shared experts, the first layers dense."""

    def probe(model_type: str, architecture: str, **extra: Any) -> ConfigBuilder:
        return decoder_config(
            model_type,
            architecture,
            head_dim=False,
            intermediate_size=lambda s: s["Id"],
            moe_intermediate_size=lambda s: s["I"],
            n_routed_experts=lambda s: s["E"],
            n_shared_experts=lambda s: s["ns"],
            num_experts_per_tok=2,
            first_k_dense_replace=0,
            q_lora_rank=lambda s: s["Rq"],
            kv_lora_rank=lambda s: s["Rkv"],
            qk_nope_head_dim=lambda s: s["dn"],
            qk_rope_head_dim=lambda s: s["dr"],
            v_head_dim=lambda s: s["dv"],
            num_key_value_heads=lambda s: s["nh"],
            **extra,
        )

    forced = {
        "d": "H//nh",
        "nkv": "nh",
        "Qa": "nh*(dn+dr)",
        "Ka": "Rkv+dr",
        "KVb": "nh*(dn+dv)",
        "O": "nh*dv",
        "S": "ns*I",
    }
    note = (
        "names as saved (transformers v5 fuses experts at load time and reverts on save); the first "
        "first_k_dense_replace layers are dense (templates marked layers: dense), the rest sparse"
    )
    v2_lite = {
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "hidden_act": "silu",
        "hidden_size": 2048,
        "intermediate_size": 10944,
        "moe_intermediate_size": 1408,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "n_routed_experts": 64,
        "n_shared_experts": 2,
        "num_experts_per_tok": 6,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "kv_lora_rank": 512,
        "q_lora_rank": None,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "vocab_size": 102400,
        "max_position_embeddings": 163840,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False,
    }
    v3 = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "hidden_act": "silu",
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "num_hidden_layers": 61,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "n_routed_experts": 256,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "first_k_dense_replace": 3,
        "moe_layer_freq": 1,
        "kv_lora_rank": 512,
        "q_lora_rank": 1536,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "vocab_size": 129280,
        "max_position_embeddings": 163840,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False,
    }
    return [
        Family(
            family="deepseek_v2",
            model_type="deepseek_v2",
            reference="DeepseekV2ForCausalLM",
            architectures=("DeepseekV2ForCausalLM",),
            reference_family="deepseek_v2",
            config_map=DEEPSEEK_MLA_CONFIG_MAP,
            probe_config=probe("deepseek_v2", "DeepseekV2ForCausalLM"),
            forced=forced,
            groups=(UNTIED, Q_LORA),
            dense_prefix=("first_k_dense_replace", "Ld"),
            source_note=note,
            published=(Published("deepseek-ai/DeepSeek-V2-Lite", v2_lite),),
            **llama_like,  # type: ignore[arg-type]
        ),
        Family(
            family="deepseek_v3",
            model_type="deepseek_v3",
            reference="DeepseekV3ForCausalLM",
            architectures=("DeepseekV3ForCausalLM",),
            reference_family="deepseek_v3",
            config_map=DEEPSEEK_MLA_CONFIG_MAP,
            probe_config=probe("deepseek_v3", "DeepseekV3ForCausalLM"),
            forced=forced,
            groups=(UNTIED, Q_LORA),
            dense_prefix=("first_k_dense_replace", "Ld"),
            source_note=note + "; the multi-token-prediction layer the Hub checkpoint adds is not built",
            published=(Published("deepseek-ai/DeepSeek-V3", v3),),
            **llama_like,  # type: ignore[arg-type]
        ),
    ]


def falcon_family(*, new_decoder: bool) -> Family:
    def probe(s: Mapping[str, int]) -> dict[str, Any]:
        config: dict[str, Any] = {
            "architectures": ["FalconForCausalLM"],
            "model_type": "falcon",
            "hidden_size": s["H"],
            "ffn_hidden_size": s["I"],
            "num_hidden_layers": s["L"],
            "num_attention_heads": s["nh"],
            "vocab_size": s["V"],
            "max_position_embeddings": s["P"],
            "new_decoder_architecture": new_decoder,
            "bias": True,
            "tie_word_embeddings": False,
            **PROBE_TOKEN_IDS,
        }
        if new_decoder:
            config.update(num_kv_heads=s["nkv"], num_ln_in_parallel_attn=2)
        else:
            config.update(multi_query=True, parallel_attn=False)
        return config

    shared_map = {
        "H": ["hidden_size"],
        "L": ["num_hidden_layers", "n_layer"],
        "nh": ["num_attention_heads", "n_head"],
        "d": ["=H//nh"],
        "I": ["ffn_hidden_size", "=4*H"],
        "V": ["vocab_size"],
        "P": ["max_position_embeddings", "=2048"],
        "tie": ["tie_word_embeddings", "=1"],
        "bias": ["bias", "=0"],
    }
    bias = Group("bias", "config bias: biases on every linear layer", "bias", {"bias": False})
    common = {
        "model_type": "falcon",
        "reference": "FalconForCausalLM",
        "architectures": ("FalconForCausalLM", "RWForCausalLM"),
        "activation": "gelu",
        "norm": "layernorm",
        "positional": "rope",
        "parallel_residual": True,
        "fused": fused_qkv("grouped", bias=True),
    }
    if new_decoder:
        return Family(
            family="falcon-new-decoder",
            reference_family="falcon-new-decoder",
            config_map={
                **shared_map,
                "nkv": ["num_kv_heads", "=nh"],
                "num_ln": ["num_ln_in_parallel_attn", "=2"],
            },
            probe_config=probe,
            forced={"d": "H//nh"},
            source_note="new_decoder_architecture (Falcon-40B/180B, Falcon2): grouped GQA qkv",
            groups=(
                UNTIED,
                bias,
                Group(
                    "two_ln",
                    "num_ln_in_parallel_attn 2 (default): ln_attn before attention, ln_mlp before the MLP",
                    "num_ln-1",
                    {"num_ln_in_parallel_attn": 1},
                    alt_name="one_ln",
                    alt_description="num_ln_in_parallel_attn 1 (Falcon2): one input_layernorm for both branches",
                    alt_condition="2-num_ln",
                ),
            ),
            published=(
                Published(
                    "tiiuae/falcon-40b",
                    {
                        "architectures": ["FalconForCausalLM"],
                        "model_type": "falcon",
                        "alibi": False,
                        "bias": False,
                        "hidden_size": 8192,
                        "layer_norm_epsilon": 1e-05,
                        "new_decoder_architecture": True,
                        "num_attention_heads": 128,
                        "num_hidden_layers": 60,
                        "num_kv_heads": 8,
                        "parallel_attn": True,
                        "vocab_size": 65024,
                    },
                ),
                Published(
                    "tiiuae/falcon-11B",
                    {
                        "architectures": ["FalconForCausalLM"],
                        "model_type": "falcon",
                        "alibi": False,
                        "bias": False,
                        "ffn_hidden_size": 16384,
                        "hidden_size": 4096,
                        "layer_norm_epsilon": 1e-05,
                        "max_position_embeddings": 8192,
                        "new_decoder_architecture": True,
                        "num_attention_heads": 32,
                        "num_hidden_layers": 60,
                        "num_kv_heads": 8,
                        "num_ln_in_parallel_attn": 1,
                        "parallel_attn": True,
                        "rope_theta": 500042.0,
                        "vocab_size": 65024,
                        "tie_word_embeddings": False,
                    },
                ),
            ),
            **common,  # type: ignore[arg-type]
        )
    return Family(
        family="falcon",
        reference_family="falcon",
        config_map={
            **shared_map,
            "multi_query": ["multi_query", "=1"],
            "parallel_attn": ["parallel_attn", "=1"],
            # one KV head under multi_query, else one per query head
            "nkv": ["=nh-(nh-1)*multi_query"],
        },
        probe_config=probe,
        forced={"d": "H//nh", "nkv": "1"},
        source_note=(
            "Falcon-7B-style decoder (multi_query, one LayerNorm for the parallel branches); Falcon-RW "
            "(parallel_attn false, config alibi true) has the same names plus a pre-MLP LayerNorm"
        ),
        groups=(
            UNTIED,
            bias,
            Group(
                "sequential",
                "parallel_attn false (Falcon-RW): a second LayerNorm before the MLP",
                "1-parallel_attn",
                {"parallel_attn": True},
            ),
        ),
        published=(
            Published(
                "tiiuae/falcon-7b",
                {
                    "architectures": ["FalconForCausalLM"],
                    "model_type": "falcon",
                    "alibi": False,
                    "bias": False,
                    "hidden_size": 4544,
                    "layer_norm_epsilon": 1e-05,
                    "multi_query": True,
                    "new_decoder_architecture": False,
                    "num_attention_heads": 71,
                    "num_hidden_layers": 32,
                    "parallel_attn": True,
                    "vocab_size": 65024,
                },
            ),
            Published(
                "tiiuae/falcon-rw-1b",
                {
                    "architectures": ["FalconForCausalLM"],
                    "model_type": "falcon",
                    "alibi": True,
                    "bias": True,
                    "hidden_size": 2048,
                    "layer_norm_epsilon": 1e-05,
                    "multi_query": False,
                    "new_decoder_architecture": False,
                    "num_attention_heads": 32,
                    "num_hidden_layers": 24,
                    "parallel_attn": False,
                    "vocab_size": 50304,
                },
            ),
        ),
        **common,  # type: ignore[arg-type]
    )


def gpt2_family() -> Family:
    def probe(s: Mapping[str, int]) -> dict[str, Any]:
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "n_embd": s["H"],
            "n_inner": s["I"],
            "n_layer": s["L"],
            "n_head": s["nh"],
            "n_positions": s["P"],
            "vocab_size": s["V"],
            "tie_word_embeddings": False,
            **PROBE_TOKEN_IDS,
        }

    def published(name: str, n_embd: int, n_layer: int, n_head: int) -> Published:
        return Published(
            name,
            {
                "architectures": ["GPT2LMHeadModel"],
                "model_type": "gpt2",
                "activation_function": "gelu_new",
                "n_ctx": 1024,
                "n_embd": n_embd,
                "n_head": n_head,
                "n_layer": n_layer,
                "n_positions": 1024,
                "vocab_size": 50257,
            },
        )

    return Family(
        family="gpt2",
        model_type="gpt2",
        reference="GPT2LMHeadModel",
        architectures=("GPT2LMHeadModel", "GPT2Model"),
        reference_family="gpt2",
        config_map={
            "H": ["n_embd", "hidden_size"],
            "L": ["n_layer", "num_hidden_layers"],
            "nh": ["n_head", "num_attention_heads"],
            "nkv": ["=nh"],
            "d": ["=H//nh"],
            "I": ["n_inner", "=4*H"],
            "V": ["vocab_size"],
            "P": ["n_positions", "max_position_embeddings"],
            "tie": ["tie_word_embeddings", "=1"],
        },
        probe_config=probe,
        forced={"d": "H//nh", "nkv": "nh"},
        groups=(UNTIED,),
        fused=fused_qkv("contiguous", bias=True, axis=1, transposed=True),
        transposed_modules=frozenset({"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}),
        activation="gelu_new",
        norm="layernorm",
        positional="learned",
        parallel_residual=False,
        buffers=("transformer.h.{i}.attn.bias", "transformer.h.{i}.attn.masked_bias"),
        source_note="Conv1D weights are stored [in, out] (entries marked transposed)",
        published=(
            published("openai-community/gpt2", 768, 12, 12),
            published("openai-community/gpt2-medium", 1024, 24, 16),
        ),
    )


def bert_family() -> Family:
    def probe(s: Mapping[str, int]) -> dict[str, Any]:
        return {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_size": s["H"],
            "intermediate_size": s["I"],
            "num_hidden_layers": s["L"],
            "num_attention_heads": s["nh"],
            "vocab_size": s["V"],
            "max_position_embeddings": s["P"],
            "type_vocab_size": s["T"],
            "pad_token_id": 0,
        }

    def published(name: str, architecture: str, **fields: Any) -> Published:
        base = {
            "architectures": [architecture],
            "model_type": "bert",
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
            "vocab_size": 30522,
        }
        return Published(name, {**base, **fields})

    return Family(
        family="bert",
        model_type="bert",
        reference="BertModel",
        architectures=("BertModel", "BertForMaskedLM", "BertForPreTraining"),
        reference_family="bert",
        config_map={
            "H": ["hidden_size"],
            "L": ["num_hidden_layers"],
            "nh": ["num_attention_heads"],
            "nkv": ["=nh"],
            "d": ["=H//nh"],
            "I": ["intermediate_size"],
            "V": ["vocab_size"],
            "P": ["max_position_embeddings"],
            "T": ["type_vocab_size", "=2"],
        },
        probe_config=probe,
        forced={"d": "H//nh", "nkv": "nh"},
        build_class="BertModel",
        variants_of=(("BertForMaskedLM", "bert."),),
        optional_heads=(("pooler.", "pooler", "the pooling head; absent with add_pooling_layer=False"),),
        activation="gelu",
        norm="layernorm",
        positional="learned",
        parallel_residual=False,
        buffers=("embeddings.position_ids", "embeddings.token_type_ids"),
        source_note=(
            "canonical names are BertModel's (sentence-transformers saves exactly these); "
            "BertForMaskedLM/BertForPreTraining prefix them with bert. (see variants)"
        ),
        published=(
            published(
                "sentence-transformers/all-MiniLM-L6-v2",
                "BertModel",
                hidden_size=384,
                num_hidden_layers=6,
                num_attention_heads=12,
                intermediate_size=1536,
            ),
            published(
                "google-bert/bert-base-uncased",
                "BertForMaskedLM",
                hidden_size=768,
                num_hidden_layers=12,
                num_attention_heads=12,
                intermediate_size=3072,
            ),
        ),
    )


# Hand-written families (remote code on the Hub; no transformers class to build).


def _t(
    name: str,
    role: str,
    *shape: str | int,
    group: str | None = None,
    repeat: str | None = None,
    layers: str | None = None,
) -> HandTensor:
    return HandTensor(name, role, tuple(shape), group, repeat, layers)


def hand_written_families() -> list[Family]:
    return [qwen_family(), *baichuan_families(), internlm2_family(), chatglm_family(), deepseek_moe_family()]


def deepseek_moe_family() -> Family:
    """DeepSeek-MoE v1 (``DeepseekForCausalLM``, remote code: deepseek-ai/deepseek-moe-16b-base):
    Llama attention (q/k/v/o projections), the first ``first_k_dense_replace`` layers with a dense
    FFN, the rest a router, routed experts and ``n_shared_experts`` shared experts fused into one
    FFN (DeepSeek-V2's MoE names). llama.cpp's architecture name: ``deepseek``."""
    layer = "model.layers.{i}."

    def probe(s: Mapping[str, int]) -> dict[str, Any]:
        return {
            "architectures": ["DeepseekForCausalLM"],
            "model_type": "deepseek",
            "hidden_size": s["H"],
            "intermediate_size": s["Id"],
            "moe_intermediate_size": s["I"],
            "num_hidden_layers": s["L"],
            "num_attention_heads": s["nh"],
            "num_key_value_heads": s["nh"],
            "n_routed_experts": s["E"],
            "n_shared_experts": s["ns"],
            "num_experts_per_tok": 2,
            # All sparse, as deepseek_v2's probe: two layers cannot show which signature is the
            # majority; the dense prefix is tested in tests/test_recognize_moe.py.
            "first_k_dense_replace": 0,
            "moe_layer_freq": 1,
            "vocab_size": s["V"],
            "max_position_embeddings": s["P"],
            "tie_word_embeddings": False,
        }

    published = Published(
        "deepseek-ai/deepseek-moe-16b-base",
        {
            "architectures": ["DeepseekForCausalLM"],
            "model_type": "deepseek",
            "auto_map": {
                "AutoConfig": "configuration_deepseek.DeepseekConfig",
                "AutoModel": "modeling_deepseek.DeepseekModel",
                "AutoModelForCausalLM": "modeling_deepseek.DeepseekForCausalLM",
            },
            "hidden_act": "silu",
            "hidden_size": 2048,
            "intermediate_size": 10944,
            "moe_intermediate_size": 1408,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "n_routed_experts": 64,
            "n_shared_experts": 2,
            "num_experts_per_tok": 6,
            "first_k_dense_replace": 1,
            "moe_layer_freq": 1,
            "scoring_func": "softmax",
            "norm_topk_prob": False,
            "vocab_size": 102400,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-06,
            "rope_theta": 10000,
            "tie_word_embeddings": False,
        },
    )
    return Family(
        family="deepseek_moe",
        model_type="deepseek",
        reference="DeepseekForCausalLM",
        architectures=("DeepseekForCausalLM",),
        reference_family="deepseek_moe",
        config_map={
            "H": ["hidden_size"],
            "L": ["num_hidden_layers"],
            "nh": ["num_attention_heads"],
            "nkv": ["num_key_value_heads", "=nh"],
            "d": ["=H//nh"],
            "I": ["moe_intermediate_size"],
            "V": ["vocab_size"],
            "P": ["max_position_embeddings"],
            "tie": ["tie_word_embeddings", "=0"],
            "E": ["n_routed_experts"],
            "ns": ["n_shared_experts", "=0"],
            "S": ["=ns*I"],
            "Id": ["intermediate_size"],
            "Ld": ["first_k_dense_replace", "=0"],
        },
        probe_config=probe,
        forced={"d": "H//nh", "nkv": "nh", "S": "ns*I"},
        groups=(UNTIED,),
        activation="silu",
        norm="rmsnorm",
        positional="rope",
        parallel_residual=False,
        source_note=(
            "hand-written from docs/tensor-naming.md §5.10 (DeepSeek-MoE: the remote code's "
            "modeling_deepseek.py, names as saved); the first first_k_dense_replace layers are dense "
            "(templates marked layers: dense), the rest sparse"
        ),
        hand_globals=(
            _t("model.embed_tokens.weight", "embed.weight", "V", "H"),
            _t("model.norm.weight", "final_norm.weight", "H"),
            _t("lm_head.weight", "lm_head.weight", "V", "H", group="untied"),
        ),
        hand_layer=(
            _t(layer + "input_layernorm.weight", "attn_norm.weight", "H"),
            _t(layer + "self_attn.q_proj.weight", "attn.q.weight", "nh*d", "H"),
            _t(layer + "self_attn.k_proj.weight", "attn.k.weight", "nkv*d", "H"),
            _t(layer + "self_attn.v_proj.weight", "attn.v.weight", "nkv*d", "H"),
            _t(layer + "self_attn.o_proj.weight", "attn.o.weight", "H", "nh*d"),
            _t(layer + "post_attention_layernorm.weight", "ffn_norm.weight", "H"),
            _t(layer + "mlp.gate_proj.weight", "mlp.gate.weight", "Id", "H", layers="dense"),
            _t(layer + "mlp.up_proj.weight", "mlp.up.weight", "Id", "H", layers="dense"),
            _t(layer + "mlp.down_proj.weight", "mlp.down.weight", "H", "Id", layers="dense"),
            _t(layer + "mlp.gate.weight", "moe.router.weight", "E", "H", layers="sparse"),
            _t(
                layer + "mlp.experts.{e}.gate_proj.weight",
                "moe.expert.gate.weight",
                "I",
                "H",
                repeat="E",
                layers="sparse",
            ),
            _t(
                layer + "mlp.experts.{e}.up_proj.weight",
                "moe.expert.up.weight",
                "I",
                "H",
                repeat="E",
                layers="sparse",
            ),
            _t(
                layer + "mlp.experts.{e}.down_proj.weight",
                "moe.expert.down.weight",
                "H",
                "I",
                repeat="E",
                layers="sparse",
            ),
            _t(
                layer + "mlp.shared_experts.gate_proj.weight",
                "moe.shared.gate.weight",
                "S",
                "H",
                layers="sparse",
            ),
            _t(
                layer + "mlp.shared_experts.up_proj.weight", "moe.shared.up.weight", "S", "H", layers="sparse"
            ),
            _t(
                layer + "mlp.shared_experts.down_proj.weight",
                "moe.shared.down.weight",
                "H",
                "S",
                layers="sparse",
            ),
        ),
        published=(published,),
    )


def qwen_family() -> Family:
    layer = "transformer.h.{i}."

    def probe(s: Mapping[str, int]) -> dict[str, Any]:
        return {
            "architectures": ["QWenLMHeadModel"],
            "model_type": "qwen",
            "hidden_size": s["H"],
            "intermediate_size": 2 * s["I"],
            "kv_channels": s["d"],
            "num_attention_heads": s["nh"],
            "num_hidden_layers": s["L"],
            "vocab_size": s["V"],
            "seq_length": s["P"],
            "max_position_embeddings": s["P"],
            "no_bias": True,
            "tie_word_embeddings": False,
        }

    def published(name: str, **fields: Any) -> Published:
        return Published(
            name,
            {
                "architectures": ["QWenLMHeadModel"],
                "model_type": "qwen",
                "auto_map": {
                    "AutoConfig": "configuration_qwen.QWenConfig",
                    "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
                },
                **fields,
                "kv_channels": 128,
                "layer_norm_epsilon": 1e-06,
                "max_position_embeddings": 32768,
                "no_bias": True,
                "rotary_emb_base": 10000,
                "rotary_pct": 1.0,
                "seq_length": 8192,
                "tie_word_embeddings": False,
                "use_dynamic_ntk": True,
                "use_logn_attn": True,
                "vocab_size": 151936,
            },
        )

    return Family(
        family="qwen",
        model_type="qwen",
        reference="QWenLMHeadModel",
        architectures=("QWenLMHeadModel",),
        reference_family="qwen",
        config_map={
            "H": ["hidden_size"],
            "L": ["num_hidden_layers"],
            "nh": ["num_attention_heads"],
            "nkv": ["=nh"],
            "d": ["kv_channels", "=H//nh"],
            # config intermediate_size is twice the width of w1 and w2
            "I_cfg": ["intermediate_size"],
            "I": ["=I_cfg//2"],
            "V": ["vocab_size"],
            "P": ["max_position_embeddings", "seq_length"],
            "tie": ["tie_word_embeddings", "=0"],
        },
        probe_config=probe,
        forced={"d": "H//nh", "nkv": "nh"},
        groups=(UNTIED,),
        fused=fused_qkv("contiguous", bias=True),
        activation="silu",
        norm="rmsnorm",
        positional="rope",
        parallel_residual=False,
        source_note="hand-written from docs/tensor-naming.md §5.5 (mlp.w1 = up, mlp.w2 = gate)",
        hand_globals=(
            _t("transformer.wte.weight", "embed.weight", "V", "H"),
            _t("transformer.ln_f.weight", "final_norm.weight", "H"),
            _t("lm_head.weight", "lm_head.weight", "V", "H", group="untied"),
        ),
        hand_layer=(
            _t(layer + "ln_1.weight", "attn_norm.weight", "H"),
            _t(layer + "attn.c_attn.weight", "attn.qkv.weight", "3*nh*d", "H"),
            _t(layer + "attn.c_attn.bias", "attn.qkv.bias", "3*nh*d"),
            _t(layer + "attn.c_proj.weight", "attn.o.weight", "H", "nh*d"),
            _t(layer + "ln_2.weight", "ffn_norm.weight", "H"),
            _t(layer + "mlp.w1.weight", "mlp.up.weight", "I", "H"),
            _t(layer + "mlp.w2.weight", "mlp.gate.weight", "I", "H"),
            _t(layer + "mlp.c_proj.weight", "mlp.down.weight", "H", "I"),
        ),
        published=(
            published(
                "Qwen/Qwen-7B",
                hidden_size=4096,
                num_hidden_layers=32,
                num_attention_heads=32,
                intermediate_size=22016,
            ),
            published(
                "Qwen/Qwen-1_8B",
                hidden_size=2048,
                num_hidden_layers=24,
                num_attention_heads=16,
                intermediate_size=11008,
            ),
        ),
    )


def baichuan_families() -> list[Family]:
    layer = "model.layers.{i}."
    hand_globals = (
        _t("model.embed_tokens.weight", "embed.weight", "V", "H"),
        _t("model.norm.weight", "final_norm.weight", "H"),
        _t("lm_head.weight", "lm_head.weight", "V", "H", group="untied"),
    )
    hand_layer = (
        _t(layer + "input_layernorm.weight", "attn_norm.weight", "H"),
        _t(layer + "self_attn.W_pack.weight", "attn.qkv.weight", "3*H", "H"),
        _t(layer + "self_attn.o_proj.weight", "attn.o.weight", "H", "H"),
        _t(layer + "post_attention_layernorm.weight", "ffn_norm.weight", "H"),
        _t(layer + "mlp.gate_proj.weight", "mlp.gate.weight", "I", "H"),
        _t(layer + "mlp.up_proj.weight", "mlp.up.weight", "I", "H"),
        _t(layer + "mlp.down_proj.weight", "mlp.down.weight", "H", "I"),
    )
    cfg_map = {
        "H": ["hidden_size"],
        "L": ["num_hidden_layers"],
        "nh": ["num_attention_heads"],
        "nkv": ["=nh"],
        "d": ["=H//nh"],
        "I": ["intermediate_size"],
        "V": ["vocab_size"],
        "P": ["max_position_embeddings", "model_max_length"],
        "tie": ["tie_word_embeddings", "=0"],
    }

    def probe_for(architecture: str, *, alibi: bool) -> ConfigBuilder:
        def probe(s: Mapping[str, int]) -> dict[str, Any]:
            config: dict[str, Any] = {
                "architectures": [architecture],
                "model_type": "baichuan",
                "hidden_size": s["H"],
                "intermediate_size": s["I"],
                "num_attention_heads": s["nh"],
                "num_hidden_layers": s["L"],
                "vocab_size": s["V"],
                "model_max_length": s["P"],
                "tie_word_embeddings": False,
            }
            if not alibi:
                config["max_position_embeddings"] = s["P"]
            return config

        return probe

    def published(name: str, architecture: str, *, alibi: bool, **fields: Any) -> Published:
        config: dict[str, Any] = {
            "architectures": [architecture],
            "model_type": "baichuan",
            "auto_map": {"AutoModelForCausalLM": "modeling_baichuan." + architecture},
            "hidden_act": "silu",
            **fields,
            "model_max_length": 4096,
            "rms_norm_eps": 1e-06,
            "tie_word_embeddings": False,
        }
        if not alibi:
            config["max_position_embeddings"] = 4096
        return Published(name, config)

    shared: dict[str, Any] = {
        "model_type": "baichuan",
        "config_map": cfg_map,
        "forced": {"d": "H//nh", "nkv": "nh"},
        "groups": (UNTIED,),
        "fused": {
            "attn.qkv.weight": {**QKV_CONTIGUOUS, "sizes": ["H", "H", "H"], "layout": "contiguous"},
        },
        "activation": "silu",
        "norm": "rmsnorm",
        "parallel_residual": False,
        "hand_globals": hand_globals,
        "hand_layer": hand_layer,
    }
    return [
        Family(
            family="baichuan",
            reference="BaichuanForCausalLM",
            architectures=("BaiChuanForCausalLM", "BaichuanForCausalLM"),
            reference_family="baichuan",
            probe_config=probe_for("BaichuanForCausalLM", alibi=False),
            positional="rope",
            buffers=LLAMA_BUFFERS,
            source_note=(
                "hand-written from docs/tensor-naming.md §5.7: Baichuan-7B and Baichuan2-7B (RoPE); "
                "Baichuan2 normalizes lm_head rows at run time (NormHead)"
            ),
            published=(
                published(
                    "baichuan-inc/Baichuan-7B",
                    "BaiChuanForCausalLM",
                    alibi=False,
                    hidden_size=4096,
                    num_hidden_layers=32,
                    num_attention_heads=32,
                    intermediate_size=11008,
                    vocab_size=64000,
                ),
                published(
                    "baichuan-inc/Baichuan2-7B-Base",
                    "BaichuanForCausalLM",
                    alibi=False,
                    hidden_size=4096,
                    num_hidden_layers=32,
                    num_attention_heads=32,
                    intermediate_size=11008,
                    vocab_size=125696,
                ),
            ),
            **shared,
        ),
        Family(
            family="baichuan-alibi",
            reference="BaichuanForCausalLM",
            architectures=("BaichuanForCausalLM",),
            reference_family="baichuan-alibi",
            probe_config=probe_for("BaichuanForCausalLM", alibi=True),
            positional="alibi",
            source_note=(
                "hand-written from docs/tensor-naming.md §5.7: the 13B models use ALiBi "
                "(configs carry only model_max_length); same tensors as the 7B"
            ),
            published=(
                published(
                    "baichuan-inc/Baichuan-13B-Base",
                    "BaichuanForCausalLM",
                    alibi=True,
                    hidden_size=5120,
                    num_hidden_layers=40,
                    num_attention_heads=40,
                    intermediate_size=13696,
                    vocab_size=64000,
                ),
                published(
                    "baichuan-inc/Baichuan2-13B-Base",
                    "BaichuanForCausalLM",
                    alibi=True,
                    hidden_size=5120,
                    num_hidden_layers=40,
                    num_attention_heads=40,
                    intermediate_size=13696,
                    vocab_size=125696,
                ),
            ),
            **shared,
        ),
    ]


def internlm2_family() -> Family:
    layer = "model.layers.{i}."

    def probe(s: Mapping[str, int]) -> dict[str, Any]:
        return {
            "architectures": ["InternLM2ForCausalLM"],
            "model_type": "internlm2",
            "bias": True,
            "hidden_size": s["H"],
            "intermediate_size": s["I"],
            "num_attention_heads": s["nh"],
            "num_hidden_layers": s["L"],
            "num_key_value_heads": s["nkv"],
            "vocab_size": s["V"],
            "max_position_embeddings": s["P"],
            "tie_word_embeddings": False,
        }

    def published(name: str, **fields: Any) -> Published:
        return Published(
            name,
            {
                "architectures": ["InternLM2ForCausalLM"],
                "model_type": "internlm2",
                "auto_map": {"AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
                "bias": False,
                "hidden_act": "silu",
                **fields,
                "vocab_size": 92544,
                "max_position_embeddings": 32768,
                "rms_norm_eps": 1e-05,
                "rope_theta": 1000000,
                "tie_word_embeddings": False,
            },
        )

    return Family(
        family="internlm2",
        model_type="internlm2",
        reference="InternLM2ForCausalLM",
        architectures=("InternLM2ForCausalLM",),
        reference_family="internlm2",
        config_map=config_map(d=["=H//nh"], bias=["bias", "=0"]),
        probe_config=probe,
        forced={"d": "H//nh"},
        groups=(UNTIED, Group("bias", "config bias: wqkv and wo biases", "bias", {"bias": False})),
        fused=fused_qkv("grouped", bias=True),
        activation="silu",
        norm="rmsnorm",
        positional="rope",
        parallel_residual=False,
        buffers=("model.layers.{i}.attention.rotary_emb.inv_freq",),
        source_note=(
            "hand-written from docs/tensor-naming.md §5.8: wqkv is grouped "
            "(nkv blocks of [G query heads, key, value])"
        ),
        hand_globals=(
            _t("model.tok_embeddings.weight", "embed.weight", "V", "H"),
            _t("model.norm.weight", "final_norm.weight", "H"),
            _t("output.weight", "lm_head.weight", "V", "H", group="untied"),
        ),
        hand_layer=(
            _t(layer + "attention_norm.weight", "attn_norm.weight", "H"),
            _t(layer + "attention.wqkv.weight", "attn.qkv.weight", "(nh+2*nkv)*d", "H"),
            _t(layer + "attention.wqkv.bias", "attn.qkv.bias", "(nh+2*nkv)*d", group="bias"),
            _t(layer + "attention.wo.weight", "attn.o.weight", "H", "nh*d"),
            _t(layer + "attention.wo.bias", "attn.o.bias", "H", group="bias"),
            _t(layer + "ffn_norm.weight", "ffn_norm.weight", "H"),
            _t(layer + "feed_forward.w1.weight", "mlp.gate.weight", "I", "H"),
            _t(layer + "feed_forward.w3.weight", "mlp.up.weight", "I", "H"),
            _t(layer + "feed_forward.w2.weight", "mlp.down.weight", "H", "I"),
        ),
        published=(
            published(
                "internlm/internlm2-7b",
                hidden_size=4096,
                intermediate_size=14336,
                num_attention_heads=32,
                num_hidden_layers=32,
                num_key_value_heads=8,
            ),
            published(
                "internlm/internlm2-chat-1_8b",
                hidden_size=2048,
                intermediate_size=8192,
                num_attention_heads=16,
                num_hidden_layers=24,
                num_key_value_heads=8,
            ),
        ),
    )


def chatglm_family() -> Family:
    layer = "transformer.encoder.layers.{i}."

    def probe(s: Mapping[str, int]) -> dict[str, Any]:
        return {
            "architectures": ["ChatGLMModel"],
            "model_type": "chatglm",
            "add_bias_linear": True,
            "add_qkv_bias": True,
            "ffn_hidden_size": s["I"],
            "hidden_size": s["H"],
            "kv_channels": s["d"],
            "multi_query_attention": True,
            "multi_query_group_num": s["nkv"],
            "num_attention_heads": s["nh"],
            "num_layers": s["L"],
            "padded_vocab_size": s["V"],
            "seq_length": s["P"],
            "rmsnorm": True,
            "tie_word_embeddings": False,
        }

    def published(name: str, **fields: Any) -> Published:
        return Published(
            name,
            {
                "architectures": ["ChatGLMModel"],
                "model_type": "chatglm",
                "auto_map": {"AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration"},
                "add_bias_linear": False,
                "add_qkv_bias": True,
                "apply_residual_connection_post_layernorm": False,
                "ffn_hidden_size": 13696,
                "hidden_size": 4096,
                "kv_channels": 128,
                "layernorm_epsilon": 1e-05,
                "multi_query_attention": True,
                "multi_query_group_num": 2,
                "num_attention_heads": 32,
                "post_layer_norm": True,
                "rmsnorm": True,
                "tie_word_embeddings": False,
                **fields,
            },
        )

    return Family(
        family="chatglm",
        model_type="chatglm",
        reference="ChatGLMForConditionalGeneration",
        architectures=("ChatGLMModel", "ChatGLMForConditionalGeneration"),
        reference_family="chatglm",
        config_map={
            "H": ["hidden_size"],
            "L": ["num_layers", "num_hidden_layers"],
            "nh": ["num_attention_heads"],
            "mqa": ["multi_query_attention", "=0"],
            "ng": ["multi_query_group_num", "=1"],
            # multi_query_group_num KV heads under multi-query attention, else one per query head
            "nkv": ["=nh-(nh-ng)*mqa"],
            "d": ["kv_channels", "=H//nh"],
            "I": ["ffn_hidden_size"],
            "V": ["padded_vocab_size", "vocab_size"],
            "P": ["seq_length"],
            "tie": ["tie_word_embeddings", "=0"],
            "qkv_bias": ["add_qkv_bias", "=0"],
            "linear_bias": ["add_bias_linear", "=0"],
        },
        probe_config=probe,
        groups=(
            UNTIED,
            Group(
                "qkv_bias", "config add_qkv_bias: query_key_value bias", "qkv_bias", {"add_qkv_bias": False}
            ),
            Group(
                "linear_bias",
                "config add_bias_linear: dense, dense_h_to_4h, dense_4h_to_h biases",
                "linear_bias",
                {"add_bias_linear": False},
            ),
        ),
        fused={
            **fused_qkv("contiguous", bias=True),
            "mlp.gate_up.weight": GATE_UP_CONTIGUOUS["mlp.gate_up.weight"],
            "mlp.gate_up.bias": {
                **GATE_UP_CONTIGUOUS["mlp.gate_up.weight"],
                "parts": ["mlp.gate.bias", "mlp.up.bias"],
            },
        },
        activation="silu",
        norm="rmsnorm",
        positional="rope-partial",
        parallel_residual=False,
        # Persistent in the remote code, so checkpoints carry it; [kv_channels//4] values.
        buffers=("transformer.rotary_pos_emb.inv_freq",),
        source_note=(
            "hand-written from docs/tensor-naming.md §5.9: ChatGLM2/3 and GLM-4 (remote code); "
            "dense_h_to_4h is [gate; up]"
        ),
        hand_globals=(
            _t("transformer.embedding.word_embeddings.weight", "embed.weight", "V", "H"),
            _t("transformer.encoder.final_layernorm.weight", "final_norm.weight", "H"),
            _t("transformer.output_layer.weight", "lm_head.weight", "V", "H", group="untied"),
        ),
        hand_layer=(
            _t(layer + "input_layernorm.weight", "attn_norm.weight", "H"),
            _t(layer + "self_attention.query_key_value.weight", "attn.qkv.weight", "(nh+2*nkv)*d", "H"),
            _t(
                layer + "self_attention.query_key_value.bias",
                "attn.qkv.bias",
                "(nh+2*nkv)*d",
                group="qkv_bias",
            ),
            _t(layer + "self_attention.dense.weight", "attn.o.weight", "H", "nh*d"),
            _t(layer + "self_attention.dense.bias", "attn.o.bias", "H", group="linear_bias"),
            _t(layer + "post_attention_layernorm.weight", "ffn_norm.weight", "H"),
            _t(layer + "mlp.dense_h_to_4h.weight", "mlp.gate_up.weight", "2*I", "H"),
            _t(layer + "mlp.dense_h_to_4h.bias", "mlp.gate_up.bias", "2*I", group="linear_bias"),
            _t(layer + "mlp.dense_4h_to_h.weight", "mlp.down.weight", "H", "I"),
            _t(layer + "mlp.dense_4h_to_h.bias", "mlp.down.bias", "H", group="linear_bias"),
        ),
        published=(
            published("THUDM/chatglm2-6b", num_layers=28, padded_vocab_size=65024, seq_length=32768),
            published("THUDM/chatglm3-6b", num_layers=28, padded_vocab_size=65024, seq_length=8192),
            published("THUDM/glm-4-9b", num_layers=40, padded_vocab_size=151552, seq_length=8192),
        ),
    )


# ----------------------------------------------------------------------------------------------
# Building with transformers
# ----------------------------------------------------------------------------------------------

TensorTable = dict[str, tuple[int, ...]]


class Transformers:
    """Thin wrapper around the transformers/torch calls, imported only when generating."""

    def __init__(self) -> None:
        import torch
        import transformers
        from transformers.core_model_loading import revert_weight_conversion
        from transformers.modeling_utils import remove_tied_weights_from_state_dict

        warnings.filterwarnings("ignore")
        transformers.logging.set_verbosity_error()
        self.torch = torch
        self.transformers = transformers
        self.version = transformers.__version__
        self._revert = revert_weight_conversion
        self._untie = remove_tied_weights_from_state_dict

    def saved_tensors(
        self, model_type: str, config: Mapping[str, Any], class_name: str | None = None
    ) -> tuple[str, TensorTable]:
        """(class name, name -> shape) of what ``save_pretrained`` writes for this config."""
        kwargs = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "auto_map")}
        cfg = self.transformers.AutoConfig.for_model(model_type, **kwargs)
        with self.torch.device("meta"):
            if class_name is not None:
                model = getattr(self.transformers, class_name)(cfg)
            else:
                model = self.transformers.AutoModelForCausalLM.from_config(cfg)
        state = self._untie(dict(model.state_dict()), model)
        state = self._revert(model, state)
        return type(model).__name__, {name: tuple(int(d) for d in t.shape) for name, t in state.items()}

    def config_facts(self, model_type: str) -> dict[str, Any]:
        """Activation and rotary fraction that the config class defaults to."""
        config = self.transformers.AutoConfig.for_model(model_type)
        facts: dict[str, Any] = {}
        for key in ("hidden_activation", "hidden_act", "activation_function", "activation"):
            if getattr(config, key, None):
                facts["activation"] = getattr(config, key)
                break
        rope = getattr(config, "rope_parameters", None)
        if isinstance(rope, dict):
            rope = rope.get("full_attention", rope)
            facts["partial_rotary"] = float(rope.get("partial_rotary_factor", 1.0)) < 1.0
        return facts

    def modeling_file(self, model_type: str) -> str:
        from transformers.models.auto.configuration_auto import model_type_to_module_name

        return f"modeling_{model_type_to_module_name(model_type)}.py"


# ----------------------------------------------------------------------------------------------
# From tensor tables to templates
# ----------------------------------------------------------------------------------------------

_INDEX = re.compile(r"(?<=\.)\d+(?=\.)")


@dataclass
class Observed:
    """One template seen in a tensor table: its shape and how many experts/heads it repeats over."""

    shape: tuple[int, ...]
    repeat: int | None
    order: int


def templates_of(table: TensorTable, layers: int, family: str) -> dict[str, Observed]:
    """Abstract layer (``{i}``) and second (``{e}``) indices; check every layer holds the same set."""
    seen: dict[str, dict[tuple[int, int | None], tuple[int, ...]]] = {}
    order: dict[str, int] = {}
    for name, shape in table.items():
        indices = [int(m.group()) for m in _INDEX.finditer(name)]
        if len(indices) > 2:
            raise CatalogError(f"{family}: {name} has more than two indices")
        template = name
        for placeholder in ("{i}", "{e}")[: len(indices)]:
            template = _INDEX.sub(placeholder, template, count=1)
        key = (indices[0], indices[1] if len(indices) > 1 else None) if indices else (-1, None)
        seen.setdefault(template, {})[key] = shape
        order.setdefault(template, len(order))
    result = {}
    for template, instances in seen.items():
        shapes = set(instances.values())
        if len(shapes) != 1:
            raise CatalogError(f"{family}: {template} changes shape across layers: {sorted(shapes)}")
        repeat = None
        if "{i}" in template:
            layer_ids = {i for i, _ in instances}
            if layer_ids != set(range(layers)):
                raise CatalogError(f"{family}: {template} is not present in every layer")
            if "{e}" in template:
                counts = {sum(1 for i, _ in instances if i == layer) for layer in range(layers)}
                if len(counts) != 1:
                    raise CatalogError(f"{family}: {template} repeats unevenly across layers")
                repeat = counts.pop()
        result[template] = Observed(next(iter(shapes)), repeat, order[template])
    return result


def _one_layer(table: TensorTable, layer: int) -> dict[str, Observed]:
    """The templates (``{i}``, ``{e}``) of one layer's tensors, with their expert repeat counts."""
    found: dict[str, Observed] = {}
    for name, shape in table.items():
        indices = [int(m.group()) for m in _INDEX.finditer(name)]
        if not indices or indices[0] != layer:
            continue
        template = _INDEX.sub("{i}", name, count=1)
        if len(indices) > 1:
            template = _INDEX.sub("{e}", template, count=1)
        if template in found:
            found[template] = Observed(shape, (found[template].repeat or 1) + 1, found[template].order)
        else:
            found[template] = Observed(shape, 1 if len(indices) > 1 else None, len(found))
    return found


def probe_symbols(base: Mapping[str, int], forced: Mapping[str, str]) -> dict[str, int]:
    values = dict(base)
    if "d" in forced:
        values["d"] = evaluate(forced["d"], values)
    if "nkv" in forced:
        values["nkv"] = evaluate(forced["nkv"], values)
    for symbol, expression in forced.items():
        if symbol not in ("d", "nkv"):
            values[symbol] = evaluate(expression, values)
    return values


def _random_assignments(forced: Mapping[str, str], count: int = 32) -> list[dict[str, int]]:
    """Symbol values the family's config can produce, for testing two expressions for identity."""
    rng = random.Random(20240229)
    samples = []
    for _ in range(count):
        values = {s: rng.randint(2, 100_000) for s in SHAPE_SYMBOLS}
        values["nh"] = rng.randint(2, 200)
        values["nkv"] = rng.randint(1, 64)
        values["d"] = rng.randint(2, 512)
        if "d" in forced:
            values["H"] = values["nh"] * values["d"]
        if "nkv" in forced:
            values["nkv"] = evaluate(forced["nkv"], values)
        others = [s for s in forced if s not in ("d", "nkv")]
        if others:
            values.update({k: rng.randint(2, 512) for k in PROBE_A if k not in values})
            for symbol in others:
                values[symbol] = evaluate(forced[symbol], values)
        samples.append(values)
    return samples


def explain(
    a: int,
    b: int,
    probe_a: Mapping[str, int],
    probe_b: Mapping[str, int],
    forced: Mapping[str, str],
    what: str,
) -> str | int:
    """The one grammar expression that gives ``a`` under probe A and ``b`` under probe B."""
    matches = [c for c in CANDIDATES if evaluate(c, probe_a) == a and evaluate(c, probe_b) == b]
    if not matches:
        if a == b:
            return a
        raise CatalogError(f"{what}: no expression gives {a} (probe A) and {b} (probe B)")
    samples = _random_assignments(forced)
    distinct = {tuple(evaluate(m, s) for s in samples) for m in matches}
    if len(distinct) > 1:
        raise CatalogError(f"{what}: several different expressions fit ({a}, {b}): {matches}")
    return matches[0]


def symbolic(
    template: str, a: Observed, b: Observed, pa: Mapping[str, int], pb: Mapping[str, int], family: Family
) -> dict[str, Any]:
    if len(a.shape) != len(b.shape):
        raise CatalogError(f"{family.family}: {template} changes rank between probes")
    shape = [
        explain(x, y, pa, pb, family.forced, f"{family.family} {template}")
        for x, y in zip(a.shape, b.shape, strict=True)
    ]
    entry: dict[str, Any] = {"name": template, "role": role_of(template, family), "shape": shape}
    if a.repeat is not None and b.repeat is not None:
        repeat = explain(a.repeat, b.repeat, pa, pb, family.forced, f"{family.family} {template} repeat")
        if not isinstance(repeat, str) or not repeat.isidentifier():
            raise CatalogError(f"{family.family}: {template} repeats {repeat} times, not a symbol")
        entry["repeat"] = repeat
    module = template.split("{i}.", 1)[-1].rpartition(".")[0]
    if module in family.transposed_modules and len(a.shape) == 2:
        entry["transposed"] = True
    return entry


def rename(table: TensorTable, renames: Mapping[str, str]) -> TensorTable:
    renamed = {}
    for name, shape in table.items():
        for old, new in renames.items():
            name = name.replace(old, new)
        renamed[name] = shape
    return renamed


# ----------------------------------------------------------------------------------------------
# Expanding templates (the checks every generated file must pass before it is written)
# ----------------------------------------------------------------------------------------------


def expand(document: Mapping[str, Any], config: Mapping[str, Any]) -> TensorTable:
    """The concrete tensors a checkpoint of this family with this config.json holds, in
    state_dict order (embeddings, then layer by layer, then the rest)."""
    values = resolve_config(document["config_map"], config)
    present = {g for g, condition in document["group_conditions"].items() if evaluate(condition, values)}

    def wanted(entries: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [e for e in entries if e.get("group") is None or e["group"] in present]

    def emit(entry: Mapping[str, Any], layer: int | None) -> None:
        shape = tuple(evaluate(d, values) for d in entry["shape"])
        name = entry["name"] if layer is None else entry["name"].replace("{i}", str(layer))
        if "repeat" in entry:
            for e in range(values[entry["repeat"]]):
                table[name.replace("{e}", str(e))] = shape
        else:
            table[name] = shape

    table: TensorTable = {}
    embeddings = ("embed.", "pos_embed.", "type_embed.", "embed_norm.")
    head = [e for e in wanted(document["globals"]) if e["role"].startswith(embeddings)]
    tail = [e for e in wanted(document["globals"]) if not e["role"].startswith(embeddings)]
    for entry in head:
        emit(entry, None)
    for layer in range(values["L"]):
        for entry in wanted(document["layer"]):
            if in_layer(entry, layer, values):
                emit(entry, layer)
    for entry in tail:
        emit(entry, None)
    return table


def in_layer(entry: Mapping[str, Any], layer: int, values: Mapping[str, int]) -> bool:
    """``layers: dense`` entries exist in the first Ld layers only, ``layers: sparse`` in the rest."""
    kind = entry.get("layers")
    if kind is None:
        return True
    return (layer < values["Ld"]) == (kind == "dense")


def count(table: TensorTable) -> tuple[int, int]:
    parameters = 0
    for shape in table.values():
        size = 1
        for dim in shape:
            size *= dim
        parameters += size
    return len(table), parameters


# ----------------------------------------------------------------------------------------------
# Assembling one family document
# ----------------------------------------------------------------------------------------------


class Generator:
    def __init__(self, backend: Transformers) -> None:
        self.backend = backend

    def build(self, family: Family, config: Mapping[str, Any]) -> TensorTable:
        model_type = family.build_model_type or family.model_type
        translated = dict(family.to_build_config(config) if family.to_build_config else config)
        class_name, table = self.backend.saved_tensors(model_type, translated, family.build_class)
        expected = family.build_class or (
            "LlamaForCausalLM" if family.build_model_type == "llama" else family.reference
        )
        if class_name != expected:
            raise CatalogError(f"{family.family}: transformers built {class_name}, expected {expected}")
        return rename(table, family.renames)

    def document(self, family: Family) -> dict[str, Any]:
        pa, pb = probe_symbols(PROBE_A, family.forced), probe_symbols(PROBE_B, family.forced)
        config_a, config_b = family.probe_config(pa), family.probe_config(pb)
        for config, values in ((config_a, pa), (config_b, pb)):
            resolved = resolve_config(family.config_map, config)
            wrong = {
                s: (resolved[s], values[s])
                for s in SHAPE_SYMBOLS
                if s in resolved and resolved[s] != values[s]
            }
            if wrong:
                raise CatalogError(f"{family.family}: config_map misreads the probe config: {wrong}")
        if family.hand_written:
            doc = self._hand_written(family, config_a)
        else:
            doc = self._generated(family, config_a, config_b, pa, pb)
        doc["probe"] = {"config": config_a, "tensors": [[n, list(s)] for n, s in doc.pop("_probe").items()]}
        doc["published"] = self._published(family, doc)
        self._verify(family, doc)
        return doc

    def _header(self, family: Family, source: str) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "family": family.family,
            "model_type": family.model_type,
            "reference": family.reference,
            "architectures": list(family.architectures),
            "reference_family": family.reference_family,
            "source": source,
            "config_map": {k: list(v) for k, v in family.config_map.items()},
        }

    def _footer(self, family: Family, groups: dict[str, str], conditions: dict[str, str]) -> dict[str, Any]:
        return {
            "groups": groups,
            "group_conditions": conditions,
            "buffers": list(family.buffers),
            "fused": dict(family.fused),
            "activation": family.activation,
            "norm": family.norm,
            "positional": family.positional,
            "parallel_residual": family.parallel_residual,
        }

    def _generated(
        self,
        family: Family,
        config_a: dict[str, Any],
        config_b: dict[str, Any],
        pa: Mapping[str, int],
        pb: Mapping[str, int],
    ) -> dict[str, Any]:
        table_a, table_b = self.build(family, config_a), self.build(family, config_b)
        seen_a, seen_b = (
            templates_of(table_a, pa["L"], family.family),
            templates_of(table_b, pb["L"], family.family),
        )
        if seen_a.keys() != seen_b.keys():
            raise CatalogError(f"{family.family}: probes A and B produce different templates")
        entries = {t: symbolic(t, seen_a[t], seen_b[t], pa, pb, family) for t in seen_a}
        groups: dict[str, str] = {}
        conditions: dict[str, str] = {}
        for group in family.groups:
            self._apply_group(family, group, (config_a, config_b), (pa, pb), (seen_a, seen_b), entries)
            groups[group.name] = group.description
            conditions[group.name] = group.condition
            if group.alt_name:
                groups[group.alt_name] = group.alt_description
                conditions[group.alt_name] = group.alt_condition
        if family.dense_prefix:
            self._apply_dense_prefix(family, (config_a, config_b), (pa, pb), (seen_a, seen_b), entries)
        for prefix, name, description in family.optional_heads:
            matched = [t for t in entries if t.startswith(prefix) and not entries[t].get("group")]
            if not matched:
                raise CatalogError(f"{family.family}: optional head {prefix!r} matches no tensor")
            for template in matched:
                entries[template]["group"] = name
            groups[name] = description
            conditions[name] = "1"  # present in the published configs; absence is a build choice
        model_type = family.build_model_type or family.model_type
        self._check_facts(family, model_type)
        source = (
            f"generated from transformers {self.backend.version} "
            f"({self.backend.modeling_file(model_type)}) on the meta device"
        )
        if family.source_note:
            source += f"; {family.source_note}"
        doc = self._header(family, source)
        doc["globals"] = [e for t, e in entries.items() if "{i}" not in t]
        doc["layer"] = [e for t, e in entries.items() if "{i}" in t]
        doc.update(self._footer(family, groups, conditions))
        variants = [
            self._variant(family, cls, prefix, config_a, table_a, pa) for cls, prefix in family.variants_of
        ]
        if variants:
            doc["variants"] = variants
        doc["_probe"] = table_a
        return doc

    def _apply_dense_prefix(
        self,
        family: Family,
        configs: tuple[dict[str, Any], dict[str, Any]],
        probes: tuple[Mapping[str, int], Mapping[str, int]],
        seen: tuple[dict[str, Observed], dict[str, Observed]],
        entries: dict[str, dict[str, Any]],
    ) -> None:
        """Build each probe with its first layer dense: tensors only layer 0 then holds are the dense
        layers' (``layers: dense``), per-layer tensors it lacks the sparse layers' (``layers: sparse``)."""
        assert family.dense_prefix is not None
        key, _symbol = family.dense_prefix
        layer_zero: list[dict[str, Observed]] = []
        for config, probe, sparse in zip(configs, probes, seen, strict=True):
            table = self.build(family, {**config, key: 1})
            by_layer = {layer: _one_layer(table, layer) for layer in range(probe["L"])}
            sparse_layer = {t: o for t, o in sparse.items() if "{i}" in t}
            for layer in range(1, probe["L"]):
                if {t: (o.shape, o.repeat) for t, o in by_layer[layer].items()} != {
                    t: (o.shape, o.repeat) for t, o in sparse_layer.items()
                }:
                    raise CatalogError(f"{family.family}: layer {layer} is not the all-sparse layer")
            globals_now = {n: s for n, s in table.items() if not _INDEX.search(n)}
            if globals_now != {t: o.shape for t, o in sparse.items() if "{i}" not in t}:
                raise CatalogError(f"{family.family}: a dense first layer changes the global tensors")
            layer_zero.append(by_layer[0])
        (dense_a, dense_b), sparse_templates = layer_zero, {t for t in seen[0] if "{i}" in t}
        if dense_a.keys() != dense_b.keys():
            raise CatalogError(f"{family.family}: probes A and B give different dense layers")
        for template in sparse_templates - dense_a.keys():
            entries[template]["layers"] = "sparse"
        for template in sorted(dense_a.keys() - sparse_templates, key=lambda t: dense_a[t].order):
            entry = symbolic(template, dense_a[template], dense_b[template], *probes, family)
            entry["layers"] = "dense"
            entries[template] = entry
        for template in dense_a.keys() & sparse_templates:
            if dense_a[template].shape != seen[0][template].shape:
                raise CatalogError(f"{family.family}: {template} changes shape in a dense layer")

    def _check_facts(self, family: Family, model_type: str) -> None:
        facts = self.backend.config_facts(model_type)
        if facts.get("activation", family.activation) != family.activation:
            raise CatalogError(f"{family.family}: transformers defaults to activation {facts['activation']}")
        if "partial_rotary" in facts and family.positional.startswith("rope"):
            expected = "rope-partial" if facts["partial_rotary"] else "rope"
            if family.positional != expected:
                raise CatalogError(
                    f"{family.family}: transformers' rotary is {expected}, spec says {family.positional}"
                )

    def _apply_group(
        self,
        family: Family,
        group: Group,
        configs: tuple[dict[str, Any], dict[str, Any]],
        probes: tuple[Mapping[str, int], Mapping[str, int]],
        seen: tuple[dict[str, Observed], dict[str, Observed]],
        entries: dict[str, dict[str, Any]],
    ) -> None:
        switched = []
        for config, probe, base in zip(configs, probes, seen, strict=True):
            variant_config = {**config, **group.variant}
            self._check_condition(family, group.name, group.condition, config, True)
            self._check_condition(family, group.name, group.condition, variant_config, False)
            variant = templates_of(self.build(family, variant_config), probe["L"], family.family)
            removed = base.keys() - variant.keys()
            added = variant.keys() - base.keys()
            changed = [t for t in base.keys() & variant.keys() if base[t].shape != variant[t].shape]
            if changed:
                raise CatalogError(f"{family.family}: group {group.name} changes shapes of {changed}")
            switched.append((removed, added, variant))
        (removed_a, added_a, variant_a), (removed_b, added_b, variant_b) = switched
        if removed_a != removed_b or added_a != added_b:
            raise CatalogError(f"{family.family}: group {group.name} differs between probes")
        if not removed_a:
            raise CatalogError(f"{family.family}: switching {dict(group.variant)} removes nothing")
        if added_a and not group.alt_name:
            raise CatalogError(f"{family.family}: switching group {group.name} adds {sorted(added_a)}")
        for template in removed_a:
            if entries[template].get("group"):
                raise CatalogError(f"{family.family}: {template} is in two groups")
            entries[template]["group"] = group.name
        for template in sorted(added_a, key=lambda t: variant_a[t].order):
            entry = symbolic(template, variant_a[template], variant_b[template], *probes, family)
            entry["group"] = group.alt_name
            entries[template] = entry
        if group.alt_name:
            self._check_condition(family, group.alt_name, group.alt_condition, configs[0], False)
            self._check_condition(
                family, group.alt_name, group.alt_condition, {**configs[0], **group.variant}, True
            )

    @staticmethod
    def _check_condition(
        family: Family, name: str, condition: str, config: Mapping[str, Any], expected: bool
    ) -> None:
        if bool(evaluate(condition, resolve_config(family.config_map, config))) != expected:
            raise CatalogError(
                f"{family.family}: group {name} condition {condition!r} is wrong for {dict(config)}"
            )

    def _variant(
        self,
        family: Family,
        class_name: str,
        prefix: str,
        config: Mapping[str, Any],
        base: TensorTable,
        probe: Mapping[str, int],
    ) -> dict[str, Any]:
        kwargs = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
        built_class, table = self.backend.saved_tensors(family.model_type, kwargs, class_name)
        if built_class != class_name:
            raise CatalogError(f"{family.family}: built {built_class} instead of {class_name}")
        prefixed = {prefix + name for name in base}
        absent = sorted(name[len(prefix) :] for name in prefixed - table.keys())
        extra = [name for name in table if name not in prefixed]
        if any("." in n and _INDEX.search(n) for n in extra):
            raise CatalogError(f"{family.family}: {class_name} adds per-layer tensors {extra}")
        pb = probe_symbols(PROBE_B, family.forced)
        table_b = self.backend.saved_tensors(
            family.model_type,
            {k: v for k, v in family.probe_config(pb).items() if k not in ("model_type", "architectures")},
            class_name,
        )[1]
        extras = [
            {
                "name": n,
                "shape": [
                    explain(x, y, probe, pb, family.forced, n)
                    for x, y in zip(table[n], table_b[n], strict=True)
                ],
            }
            for n in extra
        ]
        return {"class": class_name, "prefix": prefix, "absent": sorted(set(absent)), "extra": extras}

    def _hand_written(self, family: Family, config_a: dict[str, Any]) -> dict[str, Any]:
        def entry(tensor: HandTensor) -> dict[str, Any]:
            result: dict[str, Any] = {"name": tensor.name, "role": tensor.role, "shape": list(tensor.shape)}
            if tensor.group:
                result["group"] = tensor.group
            if tensor.repeat:
                result["repeat"] = tensor.repeat
            if tensor.layers:
                result["layers"] = tensor.layers
            return result

        groups = {g.name: g.description for g in family.groups}
        conditions = {g.name: g.condition for g in family.groups}
        doc = self._header(family, family.source_note)
        doc["globals"] = [entry(t) for t in family.hand_globals]
        doc["layer"] = [entry(t) for t in family.hand_layer]
        doc.update(self._footer(family, groups, conditions))
        for group in family.groups:
            self._check_condition(family, group.name, group.condition, config_a, True)
            self._check_condition(family, group.name, group.condition, {**config_a, **group.variant}, False)
        doc["_probe"] = expand(doc, config_a)
        return doc

    def _published(self, family: Family, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
        records = []
        for published in family.published:
            from_templates = count(expand(doc, published.config))
            if not family.hand_written:
                built = count(self.build(family, published.config))
                if built != from_templates:
                    raise CatalogError(
                        f"{family.family}: {published.name}: transformers saves {built} (tensors, parameters), "
                        f"templates give {from_templates}"
                    )
            tensors, parameters = from_templates
            records.append(
                {
                    "name": published.name,
                    "config": dict(published.config),
                    "tensors": tensors,
                    "parameters": parameters,
                }
            )
        return records

    def _verify(self, family: Family, doc: Mapping[str, Any]) -> None:
        probe = {name: tuple(shape) for name, shape in doc["probe"]["tensors"]}
        expanded = expand(doc, doc["probe"]["config"])
        if expanded != probe:
            missing, extra = sorted(probe.keys() - expanded.keys()), sorted(expanded.keys() - probe.keys())
            raise CatalogError(f"{family.family}: templates do not reproduce the probe: {missing=} {extra=}")
        roles = [e["role"] for e in (*doc["globals"], *doc["layer"])]
        for fused_role, spec in doc["fused"].items():
            if fused_role not in roles:
                raise CatalogError(f"{family.family}: fused entry {fused_role} has no tensor")
            if any(part in roles for part in spec["parts"]):
                raise CatalogError(f"{family.family}: {fused_role} parts also exist unfused")


# ----------------------------------------------------------------------------------------------
# Cross-family alias table
# ----------------------------------------------------------------------------------------------

# (role, template, convention, llama.cpp arch to check it against or None, note)
# GGUF names are checked against gguf-py's TENSOR_NAMES; other names whose arch is given are
# checked to map, through gguf-py's TensorNameMap, to the GGUF name listed for the same role.
ALIASES: list[tuple[str, str, str, str | None, str]] = [
    ("embed.weight", "token_embd.weight", "gguf", None, ""),
    ("embed.weight", "tok_embeddings.weight", "meta", "LLAMA", ""),
    ("embed.weight", "model.embed_tokens.weight", "hf-llama", "LLAMA", ""),
    ("embed.weight", "model.tok_embeddings.weight", "internlm2", "INTERNLM2", ""),
    ("embed.weight", "transformer.wte.weight", "gpt2", "GPT2", "also Qwen v1"),
    ("embed.weight", "wte.weight", "gpt2-unprefixed", "GPT2", ""),
    ("embed.weight", "transformer.word_embeddings.weight", "falcon", "FALCON", ""),
    ("embed.weight", "gpt_neox.embed_in.weight", "gpt-neox", "GPTNEOX", ""),
    ("embed.weight", "transformer.embedding.word_embeddings.weight", "chatglm", None, ""),
    ("embed.weight", "embeddings.word_embeddings.weight", "bert", "BERT", ""),
    ("embed.weight", "bert.embeddings.word_embeddings.weight", "bert-prefixed", None, ""),
    ("embed.weight", "transformer.embd.wte.weight", "phi2-msft", "PHI2", ""),
    ("pos_embed.weight", "position_embd.weight", "gguf", None, ""),
    ("pos_embed.weight", "transformer.wpe.weight", "gpt2", "GPT2", ""),
    ("pos_embed.weight", "wpe.weight", "gpt2-unprefixed", "GPT2", ""),
    ("pos_embed.weight", "embeddings.position_embeddings.weight", "bert", "BERT", ""),
    ("pos_embed.weight", "bert.embeddings.position_embeddings.weight", "bert-prefixed", None, ""),
    ("type_embed.weight", "token_types.weight", "gguf", None, ""),
    ("type_embed.weight", "embeddings.token_type_embeddings.weight", "bert", "BERT", ""),
    ("type_embed.weight", "bert.embeddings.token_type_embeddings.weight", "bert-prefixed", None, ""),
    ("embed_norm.weight", "token_embd_norm.weight", "gguf", None, ""),
    ("embed_norm.weight", "embeddings.LayerNorm.weight", "bert", "BERT", ""),
    ("embed_norm.weight", "bert.embeddings.LayerNorm.weight", "bert-prefixed", None, ""),
    ("embed_norm.bias", "token_embd_norm.bias", "gguf", None, ""),
    ("embed_norm.bias", "embeddings.LayerNorm.bias", "bert", "BERT", ""),
    ("embed_norm.bias", "bert.embeddings.LayerNorm.bias", "bert-prefixed", None, ""),
    ("final_norm.weight", "output_norm.weight", "gguf", None, ""),
    ("final_norm.weight", "norm.weight", "meta", "LLAMA", ""),
    ("final_norm.weight", "model.norm.weight", "hf-llama", "LLAMA", "also InternLM2, Baichuan"),
    ("final_norm.weight", "transformer.ln_f.weight", "gpt2", "GPT2", "also Qwen v1, Falcon"),
    ("final_norm.weight", "ln_f.weight", "gpt2-unprefixed", "GPT2", ""),
    ("final_norm.weight", "gpt_neox.final_layer_norm.weight", "gpt-neox", "GPTNEOX", ""),
    ("final_norm.weight", "transformer.encoder.final_layernorm.weight", "chatglm", None, ""),
    ("final_norm.weight", "model.final_layernorm.weight", "phi2", "PHI2", ""),
    ("final_norm.weight", "lm_head.ln.weight", "phi2-msft", "PHI2", ""),
    ("final_norm.bias", "output_norm.bias", "gguf", None, ""),
    ("final_norm.bias", "transformer.ln_f.bias", "gpt2", "GPT2", ""),
    ("final_norm.bias", "gpt_neox.final_layer_norm.bias", "gpt-neox", "GPTNEOX", ""),
    ("final_norm.bias", "model.final_layernorm.bias", "phi2", "PHI2", ""),
    ("lm_head.weight", "output.weight", "gguf", None, "also the Meta and InternLM2 name"),
    ("lm_head.weight", "lm_head.weight", "hf-llama", "LLAMA", ""),
    ("lm_head.weight", "embed_out.weight", "gpt-neox", "GPTNEOX", ""),
    ("lm_head.weight", "transformer.output_layer.weight", "chatglm", None, ""),
    ("lm_head.weight", "lm_head.linear.weight", "phi2-msft", "PHI2", ""),
    ("lm_head.bias", "output.bias", "gguf", None, ""),
    ("lm_head.bias", "lm_head.bias", "phi2", "PHI2", ""),
    ("rotary.inv_freq", "rope_freqs.weight", "gguf", None, "llama.cpp's generated rope factor tensor"),
    ("rotary.inv_freq", "rope.freqs", "meta", None, "dropped by converters"),
    (
        "rotary.inv_freq",
        "transformer.rotary_pos_emb.inv_freq",
        "chatglm",
        None,
        "a buffer saved in checkpoints",
    ),
    ("attn_norm.weight", "blk.{i}.attn_norm.weight", "gguf", None, ""),
    ("attn_norm.weight", "layers.{i}.attention_norm.weight", "meta", "LLAMA", ""),
    ("attn_norm.weight", "model.layers.{i}.input_layernorm.weight", "hf-llama", "LLAMA", ""),
    ("attn_norm.weight", "model.layers.{i}.ln1.weight", "yi-original", "LLAMA", ""),
    ("attn_norm.weight", "model.layers.{i}.attention_norm.weight", "internlm2", "INTERNLM2", ""),
    ("attn_norm.weight", "transformer.h.{i}.ln_1.weight", "gpt2", "GPT2", "also Qwen v1"),
    ("attn_norm.weight", "h.{i}.ln_1.weight", "gpt2-unprefixed", "GPT2", ""),
    ("attn_norm.weight", "transformer.h.{i}.input_layernorm.weight", "falcon", "FALCON", "Falcon-7B"),
    (
        "attn_norm.weight",
        "transformer.h.{i}.ln_attn.weight",
        "falcon",
        None,
        "Falcon-40B; llama.cpp stores it as attn_norm_2 and ln_mlp as attn_norm",
    ),
    ("attn_norm.weight", "gpt_neox.layers.{i}.input_layernorm.weight", "gpt-neox", "GPTNEOX", ""),
    ("attn_norm.weight", "transformer.encoder.layers.{i}.input_layernorm.weight", "chatglm", None, ""),
    ("attn_norm.weight", "transformer.h.{i}.ln.weight", "phi2-msft", "PHI2", ""),
    ("attn_norm.bias", "blk.{i}.attn_norm.bias", "gguf", None, ""),
    ("attn_norm.bias", "transformer.h.{i}.ln_1.bias", "gpt2", "GPT2", ""),
    ("attn_norm.bias", "gpt_neox.layers.{i}.input_layernorm.bias", "gpt-neox", "GPTNEOX", ""),
    ("attn_norm.bias", "transformer.h.{i}.input_layernorm.bias", "falcon", "FALCON", ""),
    ("ffn_norm.weight", "blk.{i}.ffn_norm.weight", "gguf", None, "the pre-MLP norm"),
    ("ffn_norm.weight", "layers.{i}.ffn_norm.weight", "meta", "LLAMA", ""),
    (
        "ffn_norm.weight",
        "model.layers.{i}.post_attention_layernorm.weight",
        "hf-llama",
        "LLAMA",
        "pre-MLP in Llama",
    ),
    ("ffn_norm.weight", "model.layers.{i}.ln2.weight", "yi-original", "LLAMA", ""),
    ("ffn_norm.weight", "model.layers.{i}.ffn_norm.weight", "internlm2", "INTERNLM2", ""),
    ("ffn_norm.weight", "transformer.h.{i}.ln_2.weight", "gpt2", "GPT2", "also Qwen v1"),
    ("ffn_norm.weight", "h.{i}.ln_2.weight", "gpt2-unprefixed", "GPT2", ""),
    ("ffn_norm.weight", "gpt_neox.layers.{i}.post_attention_layernorm.weight", "gpt-neox", "GPTNEOX", ""),
    (
        "ffn_norm.weight",
        "transformer.encoder.layers.{i}.post_attention_layernorm.weight",
        "chatglm",
        None,
        "",
    ),
    ("ffn_norm.weight", "model.layers.{i}.pre_feedforward_layernorm.weight", "hf-gemma2", "GEMMA2", ""),
    ("ffn_norm.bias", "blk.{i}.ffn_norm.bias", "gguf", None, ""),
    ("ffn_norm.bias", "transformer.h.{i}.ln_2.bias", "gpt2", "GPT2", ""),
    ("ffn_norm.bias", "gpt_neox.layers.{i}.post_attention_layernorm.bias", "gpt-neox", "GPTNEOX", ""),
    (
        "post_attn_norm.weight",
        "blk.{i}.post_attention_norm.weight",
        "gguf",
        None,
        "Gemma 2/3, OLMo 2, GLM-4-0414",
    ),
    (
        "post_attn_norm.weight",
        "model.layers.{i}.post_attention_layernorm.weight",
        "hf-gemma2",
        "GEMMA2",
        "normalizes the attention output in Gemma 2/3 and OLMo 2 (pre-MLP in Llama)",
    ),
    ("post_attn_norm.weight", "model.layers.{i}.post_self_attn_layernorm.weight", "hf-glm4", "GLM4", ""),
    (
        "post_attn_norm.weight",
        "blk.{i}.attn_output_norm.weight",
        "gguf-bert",
        None,
        "BERT's post-residual norm",
    ),
    ("post_attn_norm.weight", "encoder.layer.{i}.attention.output.LayerNorm.weight", "bert", "BERT", ""),
    ("post_attn_norm.bias", "blk.{i}.attn_output_norm.bias", "gguf-bert", None, ""),
    ("post_attn_norm.bias", "encoder.layer.{i}.attention.output.LayerNorm.bias", "bert", "BERT", ""),
    ("post_ffn_norm.weight", "blk.{i}.post_ffw_norm.weight", "gguf", None, ""),
    ("post_ffn_norm.weight", "model.layers.{i}.post_feedforward_layernorm.weight", "hf-gemma2", "GEMMA2", ""),
    ("post_ffn_norm.weight", "model.layers.{i}.post_mlp_layernorm.weight", "hf-glm4", "GLM4", ""),
    (
        "post_ffn_norm.weight",
        "blk.{i}.layer_output_norm.weight",
        "gguf-bert",
        None,
        "BERT's post-residual norm",
    ),
    ("post_ffn_norm.weight", "encoder.layer.{i}.output.LayerNorm.weight", "bert", "BERT", ""),
    ("post_ffn_norm.bias", "blk.{i}.layer_output_norm.bias", "gguf-bert", None, ""),
    ("post_ffn_norm.bias", "encoder.layer.{i}.output.LayerNorm.bias", "bert", "BERT", ""),
]

_PERMUTED = "rows in Meta interleaved rotary order for GGUF arch llama (HF rows are half-split)"
for _p, _wname, _meta, _bert in (
    ("q", "wq", "attn_q", "query"),
    ("k", "wk", "attn_k", "key"),
    ("v", "wv", "attn_v", "value"),
):
    _note = _PERMUTED if _p in "qk" else ""
    ALIASES += [
        (f"attn.{_p}.weight", f"blk.{{i}}.{_meta}.weight", "gguf", None, _note),
        (
            f"attn.{_p}.weight",
            f"layers.{{i}}.attention.{_wname}.weight",
            "meta",
            "LLAMA",
            _note.replace("for GGUF arch llama ", ""),
        ),
        (f"attn.{_p}.weight", f"model.layers.{{i}}.self_attn.{_p}_proj.weight", "hf-llama", "LLAMA", ""),
        (f"attn.{_p}.weight", f"encoder.layer.{{i}}.attention.self.{_bert}.weight", "bert", "BERT", ""),
        (f"attn.{_p}.bias", f"blk.{{i}}.{_meta}.bias", "gguf", None, ""),
        (f"attn.{_p}.bias", f"model.layers.{{i}}.self_attn.{_p}_proj.bias", "hf-llama", "LLAMA", ""),
        (f"attn.{_p}.bias", f"encoder.layer.{{i}}.attention.self.{_bert}.bias", "bert", "BERT", ""),
    ]
ALIASES += [
    ("attn.o.weight", "blk.{i}.attn_output.weight", "gguf", None, ""),
    ("attn.o.weight", "layers.{i}.attention.wo.weight", "meta", "LLAMA", ""),
    ("attn.o.weight", "model.layers.{i}.self_attn.o_proj.weight", "hf-llama", "LLAMA", ""),
    ("attn.o.weight", "model.layers.{i}.attention.wo.weight", "internlm2", "INTERNLM2", ""),
    (
        "attn.o.weight",
        "transformer.h.{i}.attn.c_proj.weight",
        "gpt2",
        "GPT2",
        "Conv1D [in, out] in GPT-2; Linear in Qwen v1",
    ),
    ("attn.o.weight", "h.{i}.attn.c_proj.weight", "gpt2-unprefixed", "GPT2", ""),
    ("attn.o.weight", "gpt_neox.layers.{i}.attention.dense.weight", "gpt-neox", "GPTNEOX", ""),
    ("attn.o.weight", "transformer.h.{i}.self_attention.dense.weight", "falcon", "FALCON", ""),
    ("attn.o.weight", "transformer.encoder.layers.{i}.self_attention.dense.weight", "chatglm", None, ""),
    ("attn.o.weight", "model.layers.{i}.self_attn.dense.weight", "phi2", "PHI2", ""),
    ("attn.o.weight", "transformer.h.{i}.mixer.out_proj.weight", "phi2-msft", "PHI2", ""),
    ("attn.o.weight", "encoder.layer.{i}.attention.output.dense.weight", "bert", "BERT", ""),
    ("attn.o.bias", "blk.{i}.attn_output.bias", "gguf", None, ""),
    ("attn.o.bias", "model.layers.{i}.self_attn.o_proj.bias", "hf-llama", "LLAMA", ""),
    ("attn.o.bias", "transformer.h.{i}.attn.c_proj.bias", "gpt2", "GPT2", ""),
    ("attn.o.bias", "gpt_neox.layers.{i}.attention.dense.bias", "gpt-neox", "GPTNEOX", ""),
    ("attn.o.bias", "encoder.layer.{i}.attention.output.dense.bias", "bert", "BERT", ""),
    (
        "attn.qkv.weight",
        "blk.{i}.attn_qkv.weight",
        "gguf",
        None,
        "llama.cpp regroups fused QKV to contiguous [Q;K;V]",
    ),
    ("attn.qkv.weight", "model.layers.{i}.attention.wqkv.weight", "internlm2", None, "grouped per KV head"),
    (
        "attn.qkv.weight",
        "transformer.h.{i}.attn.c_attn.weight",
        "gpt2",
        "GPT2",
        "Conv1D [H, 3H] in GPT-2; Linear in Qwen v1",
    ),
    ("attn.qkv.weight", "h.{i}.attn.c_attn.weight", "gpt2-unprefixed", "GPT2", ""),
    ("attn.qkv.weight", "model.layers.{i}.self_attn.W_pack.weight", "baichuan", None, "contiguous [Q;K;V]"),
    (
        "attn.qkv.weight",
        "gpt_neox.layers.{i}.attention.query_key_value.weight",
        "gpt-neox",
        "GPTNEOX",
        "per-head [q,k,v]",
    ),
    (
        "attn.qkv.weight",
        "transformer.h.{i}.self_attention.query_key_value.weight",
        "falcon",
        "FALCON",
        "grouped",
    ),
    (
        "attn.qkv.weight",
        "transformer.encoder.layers.{i}.self_attention.query_key_value.weight",
        "chatglm",
        None,
        "contiguous [Q;K;V]",
    ),
    ("attn.qkv.weight", "model.layers.{i}.self_attn.qkv_proj.weight", "phi3", "PHI3", "contiguous [Q;K;V]"),
    ("attn.qkv.weight", "transformer.h.{i}.mixer.Wqkv.weight", "phi2-msft", "PHI2", ""),
    ("attn.qkv.bias", "blk.{i}.attn_qkv.bias", "gguf", None, ""),
    ("attn.qkv.bias", "transformer.h.{i}.attn.c_attn.bias", "gpt2", "GPT2", ""),
    ("attn.qkv.bias", "gpt_neox.layers.{i}.attention.query_key_value.bias", "gpt-neox", "GPTNEOX", ""),
    (
        "attn.qkv.bias",
        "transformer.encoder.layers.{i}.self_attention.query_key_value.bias",
        "chatglm",
        None,
        "",
    ),
    ("attn.q_norm.weight", "blk.{i}.attn_q_norm.weight", "gguf", None, ""),
    ("attn.q_norm.weight", "model.layers.{i}.self_attn.q_norm.weight", "hf-qwen3", "QWEN3", ""),
    ("attn.q_norm.weight", "model.layers.{i}.self_attn.q_layernorm.weight", "hf-phi", None, ""),
    ("attn.k_norm.weight", "blk.{i}.attn_k_norm.weight", "gguf", None, ""),
    ("attn.k_norm.weight", "model.layers.{i}.self_attn.k_norm.weight", "hf-qwen3", "QWEN3", ""),
    ("attn.k_norm.weight", "model.layers.{i}.self_attn.k_layernorm.weight", "hf-phi", None, ""),
    ("mlp.gate.weight", "blk.{i}.ffn_gate.weight", "gguf", None, ""),
    ("mlp.gate.weight", "layers.{i}.feed_forward.w1.weight", "meta", "LLAMA", ""),
    ("mlp.gate.weight", "model.layers.{i}.mlp.gate_proj.weight", "hf-llama", "LLAMA", ""),
    ("mlp.gate.weight", "model.layers.{i}.feed_forward.w1.weight", "internlm2", "INTERNLM2", ""),
    ("mlp.gate.weight", "transformer.h.{i}.mlp.w2.weight", "qwen", "QWEN", "Qwen v1's w2 is the gate"),
    (
        "mlp.up.weight",
        "blk.{i}.ffn_up.weight",
        "gguf",
        None,
        "holds fused [gate; up] for Phi-3 and ChatGLM GGUFs",
    ),
    ("mlp.up.weight", "layers.{i}.feed_forward.w3.weight", "meta", "LLAMA", ""),
    ("mlp.up.weight", "model.layers.{i}.mlp.up_proj.weight", "hf-llama", "LLAMA", ""),
    ("mlp.up.weight", "model.layers.{i}.feed_forward.w3.weight", "internlm2", "INTERNLM2", ""),
    ("mlp.up.weight", "transformer.h.{i}.mlp.w1.weight", "qwen", "QWEN", "Qwen v1's w1 is the up projection"),
    ("mlp.up.weight", "transformer.h.{i}.mlp.c_fc.weight", "gpt2", "GPT2", "Conv1D [in, out]"),
    ("mlp.up.weight", "h.{i}.mlp.c_fc.weight", "gpt2-unprefixed", "GPT2", ""),
    ("mlp.up.weight", "gpt_neox.layers.{i}.mlp.dense_h_to_4h.weight", "gpt-neox", "GPTNEOX", ""),
    ("mlp.up.weight", "transformer.h.{i}.mlp.dense_h_to_4h.weight", "falcon", "FALCON", ""),
    ("mlp.up.weight", "model.layers.{i}.mlp.fc1.weight", "phi2", "PHI2", ""),
    ("mlp.up.weight", "transformer.h.{i}.mlp.fc1.weight", "phi2-msft", "PHI2", ""),
    ("mlp.up.weight", "encoder.layer.{i}.intermediate.dense.weight", "bert", "BERT", ""),
    ("mlp.up.bias", "blk.{i}.ffn_up.bias", "gguf", None, ""),
    ("mlp.up.bias", "transformer.h.{i}.mlp.c_fc.bias", "gpt2", "GPT2", ""),
    ("mlp.up.bias", "gpt_neox.layers.{i}.mlp.dense_h_to_4h.bias", "gpt-neox", "GPTNEOX", ""),
    ("mlp.up.bias", "model.layers.{i}.mlp.fc1.bias", "phi2", "PHI2", ""),
    ("mlp.up.bias", "encoder.layer.{i}.intermediate.dense.bias", "bert", "BERT", ""),
    ("mlp.down.weight", "blk.{i}.ffn_down.weight", "gguf", None, ""),
    ("mlp.down.weight", "layers.{i}.feed_forward.w2.weight", "meta", "LLAMA", ""),
    ("mlp.down.weight", "model.layers.{i}.mlp.down_proj.weight", "hf-llama", "LLAMA", ""),
    ("mlp.down.weight", "model.layers.{i}.feed_forward.w2.weight", "internlm2", "INTERNLM2", ""),
    (
        "mlp.down.weight",
        "transformer.h.{i}.mlp.c_proj.weight",
        "gpt2",
        "GPT2",
        "Conv1D in GPT-2; Linear in Qwen v1",
    ),
    ("mlp.down.weight", "h.{i}.mlp.c_proj.weight", "gpt2-unprefixed", "GPT2", ""),
    ("mlp.down.weight", "gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight", "gpt-neox", "GPTNEOX", ""),
    ("mlp.down.weight", "transformer.h.{i}.mlp.dense_4h_to_h.weight", "falcon", "FALCON", ""),
    ("mlp.down.weight", "transformer.encoder.layers.{i}.mlp.dense_4h_to_h.weight", "chatglm", None, ""),
    ("mlp.down.weight", "model.layers.{i}.mlp.fc2.weight", "phi2", "PHI2", ""),
    ("mlp.down.weight", "transformer.h.{i}.mlp.fc2.weight", "phi2-msft", "PHI2", ""),
    ("mlp.down.weight", "encoder.layer.{i}.output.dense.weight", "bert", "BERT", ""),
    ("mlp.down.bias", "blk.{i}.ffn_down.bias", "gguf", None, ""),
    ("mlp.down.bias", "transformer.h.{i}.mlp.c_proj.bias", "gpt2", "GPT2", ""),
    ("mlp.down.bias", "gpt_neox.layers.{i}.mlp.dense_4h_to_h.bias", "gpt-neox", "GPTNEOX", ""),
    ("mlp.down.bias", "model.layers.{i}.mlp.fc2.bias", "phi2", "PHI2", ""),
    ("mlp.down.bias", "encoder.layer.{i}.output.dense.bias", "bert", "BERT", ""),
    ("mlp.gate_up.weight", "model.layers.{i}.mlp.gate_up_proj.weight", "phi3", None, "[gate; up]"),
    (
        "mlp.gate_up.weight",
        "transformer.encoder.layers.{i}.mlp.dense_h_to_4h.weight",
        "chatglm",
        None,
        "[gate; up]",
    ),
    ("moe.router.weight", "blk.{i}.ffn_gate_inp.weight", "gguf", None, ""),
    ("moe.router.weight", "layers.{i}.feed_forward.gate.weight", "meta", "LLAMA", "Mixtral consolidated"),
    ("moe.router.weight", "model.layers.{i}.block_sparse_moe.gate.weight", "hf-mixtral", "LLAMA", ""),
    (
        "moe.router.weight",
        "model.layers.{i}.mlp.gate.weight",
        "transformers-v5-runtime",
        None,
        "in-memory name only",
    ),
    (
        "moe.expert.gate.weight",
        "blk.{i}.ffn_gate_exps.weight",
        "gguf",
        None,
        "all experts stacked in one 3-D tensor",
    ),
    (
        "moe.expert.gate.weight",
        "layers.{i}.feed_forward.experts.{e}.w1.weight",
        "meta",
        None,
        "Mixtral consolidated",
    ),
    (
        "moe.expert.gate.weight",
        "model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight",
        "hf-mixtral",
        None,
        "",
    ),
    (
        "moe.expert.up.weight",
        "blk.{i}.ffn_up_exps.weight",
        "gguf",
        None,
        "all experts stacked in one 3-D tensor",
    ),
    (
        "moe.expert.up.weight",
        "layers.{i}.feed_forward.experts.{e}.w3.weight",
        "meta",
        None,
        "Mixtral consolidated",
    ),
    (
        "moe.expert.up.weight",
        "model.layers.{i}.block_sparse_moe.experts.{e}.w3.weight",
        "hf-mixtral",
        None,
        "",
    ),
    (
        "moe.expert.down.weight",
        "blk.{i}.ffn_down_exps.weight",
        "gguf",
        None,
        "all experts stacked in one 3-D tensor",
    ),
    (
        "moe.expert.down.weight",
        "layers.{i}.feed_forward.experts.{e}.w2.weight",
        "meta",
        None,
        "Mixtral consolidated",
    ),
    (
        "moe.expert.down.weight",
        "model.layers.{i}.block_sparse_moe.experts.{e}.w2.weight",
        "hf-mixtral",
        None,
        "",
    ),
]

# Shared experts: one FFN every token goes through beside the routed ones (Qwen2-MoE's single
# ``shared_expert`` with a scalar gate, DeepSeek-MoE's ``shared_experts`` of n_shared_experts fused).
for _proj, _gguf in (("gate", "ffn_gate_shexp"), ("up", "ffn_up_shexp"), ("down", "ffn_down_shexp")):
    ALIASES += [
        (f"moe.shared.{_proj}.weight", f"blk.{{i}}.{_gguf}.weight", "gguf", None, ""),
        (
            f"moe.shared.{_proj}.weight",
            f"model.layers.{{i}}.mlp.shared_expert.{_proj}_proj.weight",
            "hf-qwen2-moe",
            "QWEN2MOE",
            "",
        ),
        (
            f"moe.shared.{_proj}.weight",
            f"model.layers.{{i}}.mlp.shared_experts.{_proj}_proj.weight",
            "hf-deepseek",
            "DEEPSEEK2",
            "n_shared_experts fused into one FFN",
        ),
    ]
# Multi-head latent attention (DeepSeek-V2/V3; llama.cpp's deepseek2).
for _role, _gguf, _hf in (
    ("attn.q_a.weight", "attn_q_a", "q_a_proj"),
    ("attn.q_a_norm.weight", "attn_q_a_norm", "q_a_layernorm"),
    ("attn.q_b.weight", "attn_q_b", "q_b_proj"),
    ("attn.kv_a.weight", "attn_kv_a_mqa", "kv_a_proj_with_mqa"),
    ("attn.kv_a_norm.weight", "attn_kv_a_norm", "kv_a_layernorm"),
    ("attn.kv_b.weight", "attn_kv_b", "kv_b_proj"),
):
    ALIASES += [
        (_role, f"blk.{{i}}.{_gguf}.weight", "gguf", None, ""),
        (_role, f"model.layers.{{i}}.self_attn.{_hf}.weight", "hf-deepseek", "DEEPSEEK2", ""),
    ]
ALIASES += [
    (
        "attn.k_b.weight",
        "blk.{i}.attn_k_b.weight",
        "gguf",
        None,
        "kv_b split: [nh, Rkv, d_n] (k part, transposed)",
    ),
    ("attn.v_b.weight", "blk.{i}.attn_v_b.weight", "gguf", None, "kv_b split: [nh, d_v, Rkv] (v part)"),
]
ALIASES += [
    ("moe.router.e_score_correction_bias", "blk.{i}.exp_probs_b.bias", "gguf", None, "DeepSeek-V3"),
    (
        "moe.router.e_score_correction_bias",
        "model.layers.{i}.mlp.gate.e_score_correction_bias",
        "hf-deepseek",
        None,
        "",
    ),
    ("moe.shared_gate.weight", "blk.{i}.ffn_gate_inp_shexp.weight", "gguf", None, "[1, H] scalar gate"),
    ("moe.shared_gate.weight", "model.layers.{i}.mlp.shared_expert_gate.weight", "hf-qwen2-moe", None, ""),
]

# BertForMaskedLM / BertForPreTraining prefix every BertModel name with "bert.".
ALIASES += [
    (role, "bert." + name, "bert-prefixed", None, "")
    for role, name, convention, _arch, _note in list(ALIASES)
    if convention == "bert" and "{i}" in name
]


def aliases_document(gguf_version: str | None) -> dict[str, Any]:
    by_role: dict[str, list[dict[str, str]]] = {}
    for role, name, convention, _arch, note in ALIASES:
        if role not in ROLES:
            raise CatalogError(f"alias {name}: role {role} is not in the vocabulary")
        entry = {"name": name, "convention": convention}
        if note:
            entry["note"] = note
        by_role.setdefault(role, []).append(entry)
    checked = (
        f"; GGUF names and llama.cpp aliases checked against gguf-py {gguf_version}" if gguf_version else ""
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "source": (
            "seeded from llama.cpp's gguf-py TensorNameMap and the Meta/llama2.c names "
            "(docs/tensor-naming.md §3, §6), plus BERT, GPT-2, Falcon, ChatGLM and Mixtral names "
            "from the catalog families" + checked
        ),
        "aliases": by_role,
    }


def check_aliases_against_gguf() -> str | None:
    """Verify the alias table against gguf-py where installed; return its version."""
    try:
        import gguf
        from gguf.constants import TENSOR_NAMES
    except ImportError:
        return None
    gguf_names = set(TENSOR_NAMES.values())
    by_role_gguf: dict[str, set[str]] = {}
    for role, name, convention, _arch, _note in ALIASES:
        if convention.startswith("gguf"):
            base = name.rsplit(".", 1)[0].replace("{i}", "{bid}")
            if base not in gguf_names:
                raise CatalogError(f"alias {name} is not a GGUF tensor name")
            by_role_gguf.setdefault(role, set()).add(name.replace("{i}", "0"))
    for role, name, _convention, arch, _note in ALIASES:
        if arch is None:
            continue
        mapper = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch), 4)
        mapped = mapper.get_name(name.replace("{i}", "0"), try_suffixes=(".weight", ".bias"))
        if mapped not in by_role_gguf.get(role, set()):
            raise CatalogError(
                f"alias {name}: llama.cpp ({arch}) maps it to {mapped}, not a GGUF name of {role}"
            )
    import importlib.metadata

    return importlib.metadata.version("gguf")


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def all_families() -> list[Family]:
    families = transformers_families() + hand_written_families()
    ids = [f.family for f in families]
    if len(ids) != len(set(ids)):
        raise CatalogError(f"duplicate family ids: {ids}")
    return families


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("src/unshell/arch/catalog"), help="catalog folder")
    parser.add_argument(
        "--aliases", type=Path, default=None, help="aliases.json path (default: OUT/../aliases.json)"
    )
    parser.add_argument("--only", action="append", default=[], help="generate only these family ids")
    args = parser.parse_args(list(argv) if argv is not None else None)

    families = [f for f in all_families() if not args.only or f.family in args.only]
    generator = Generator(Transformers())
    args.out.mkdir(parents=True, exist_ok=True)
    for family in families:
        document = generator.document(family)
        write_json(args.out / f"{family.family}.json", document)
        kind = "hand-written" if family.hand_written else "generated"
        print(
            f"{family.family:20s} {kind:12s} {len(document['globals']) + len(document['layer']):3d} templates"
        )
    if not args.only:
        gguf_version = check_aliases_against_gguf()
        write_json(args.aliases or args.out.parent / "aliases.json", aliases_document(gguf_version))
        print(
            f"aliases.json: {len(ALIASES)} names"
            + (f" (checked with gguf {gguf_version})" if gguf_version else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
