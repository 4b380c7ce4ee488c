"""Reference forward passes of the source layouts `unshell convert` reads, in float32 torch.

`verify_conversion` compares these logits with the converted checkpoint run through transformers'
``LlamaForCausalLM``. To be a check rather than a restatement, each forward here is written from
the source layout's own definition and shares no code with the converter:

* fused projections are applied to the activations and the *outputs* split the way the original
  modeling code splits them (Baichuan's ``W_pack`` output unflattened to ``(3, H)``, InternLM2's
  ``wqkv`` output viewed as ``[nkv, G + 2, d]``, Phi-3's ``qkv_proj`` sliced, Qwen's ``c_attn``
  split in thirds), where the converter slices weight rows;
* rotary embeddings run in each layout's own convention (adjacent pairs for Meta, llama2.c and
  GGUF, half split for Hugging Face code), where the converter permutes q/k rows;
* scalars run at their place in the graph (MiniCPM's embedding, residual and logit scales,
  Baichuan2's NormHead normalizing the head at run time), where the converter folds them.

Tensors are found by the layout's own names; only a checkpoint whose names are not native (an
arbitrary rename) falls back to the roles ``unshell.inspect`` assigned. Weights are read one layer
at a time, so memory holds one layer plus the activations of a few tokens.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import (
    AmbiguousRolesError,
    InputError,
    MissingDependencyError,
    UnsupportedFormatError,
    UsageError,
)
from ..formats.base import Checkpoint, sanitize
from ..formats.facts import ForwardHeader, forward_header
from ..numbers import MAX_REAL, checked_float

if TYPE_CHECKING:
    import torch

    from ..inspection import InspectResult

__all__ = ["LAYOUTS", "RopeSpec", "SourceModel", "describe_source", "reference_logits"]

# The reference forward each layout runs, with a one-line statement of what it is.
LAYOUTS: dict[str, str] = {
    "llama-hf": "Hugging Face Llama code (Llama, Yi, Mistral, DeepSeek v1, InternLM v1, Qwen2): "
    "separate q/k/v/o with whatever biases are stored, rotate_half rotary",
    "meta": "Meta's model.py / llama2.c run.c: wq/wk/wv/wo, w1/w2/w3, rotary on adjacent pairs",
    "baichuan": "Baichuan W_pack: one projection, output unflattened to (3, H), rotate_half rotary",
    "baichuan2": "Baichuan2 W_pack plus NormHead: lm_head rows L2-normalized at run time",
    "qwen": "Qwen v1: c_attn output split in thirds, c_proj without bias, MLP c_proj(w1(x) * silu(w2(x)))",
    "internlm2": "InternLM2: wqkv output viewed as [nkv, G + 2, d] (G query heads, key, value)",
    "phi3": "Phi-3: qkv_proj output sliced q|k|v, gate_up_proj output chunked gate|up",
    "minicpm": "MiniCPM: embeddings * scale_emb, residual branches * scale_depth/sqrt(L), "
    "logits of h / (H / dim_model_base)",
    "gguf": "GGUF llama as llama.cpp runs it: dequantized weights, NORM rotary on adjacent pairs",
}

# Catalog families whose own modeling code is transformers' Llama up to names and biases.
_LLAMA_HF_FAMILIES = frozenset({"llama", "yi", "mistral", "deepseek-v1", "internlm", "qwen2"})

# Tensor names each layout's code uses, per role (recognizer role strings, so that a renamed
# checkpoint can fall back to inspect's assignments). Several spellings are tried in order.
_LLAMA_HF_NAMES: dict[str, tuple[str, ...]] = {
    "embed.weight": ("model.embed_tokens.weight",),
    "final_norm.weight": ("model.norm.weight",),
    "lm_head.weight": ("lm_head.weight",),
    "attn_norm.weight": ("model.layers.{i}.input_layernorm.weight", "model.layers.{i}.ln1.weight"),
    "ffn_norm.weight": ("model.layers.{i}.post_attention_layernorm.weight", "model.layers.{i}.ln2.weight"),
    **{
        f"attn.{p}.{kind}": (f"model.layers.{{i}}.self_attn.{p}_proj.{kind}",)
        for p in "qkvo"
        for kind in ("weight", "bias")
    },
    **{
        f"mlp.{p}.{kind}": (f"model.layers.{{i}}.mlp.{p}_proj.{kind}",)
        for p in ("gate", "up", "down")
        for kind in ("weight", "bias")
    },
}

_META_NAMES: dict[str, tuple[str, ...]] = {
    "embed.weight": ("tok_embeddings.weight",),
    "final_norm.weight": ("norm.weight",),
    "lm_head.weight": ("output.weight",),
    "attn_norm.weight": ("layers.{i}.attention_norm.weight",),
    "ffn_norm.weight": ("layers.{i}.ffn_norm.weight",),
    "attn.q.weight": ("layers.{i}.attention.wq.weight",),
    "attn.k.weight": ("layers.{i}.attention.wk.weight",),
    "attn.v.weight": ("layers.{i}.attention.wv.weight",),
    "attn.o.weight": ("layers.{i}.attention.wo.weight",),
    # Meta's FeedForward: w2(silu(w1(x)) * w3(x)).
    "mlp.gate.weight": ("layers.{i}.feed_forward.w1.weight",),
    "mlp.down.weight": ("layers.{i}.feed_forward.w2.weight",),
    "mlp.up.weight": ("layers.{i}.feed_forward.w3.weight",),
}

_BAICHUAN_NAMES: dict[str, tuple[str, ...]] = {
    **{k: v for k, v in _LLAMA_HF_NAMES.items() if not k.startswith("attn.")},
    "attn.qkv.weight": ("model.layers.{i}.self_attn.W_pack.weight",),
    "attn.o.weight": ("model.layers.{i}.self_attn.o_proj.weight",),
}

_QWEN_NAMES: dict[str, tuple[str, ...]] = {
    "embed.weight": ("transformer.wte.weight",),
    "final_norm.weight": ("transformer.ln_f.weight",),
    "lm_head.weight": ("lm_head.weight",),
    "attn_norm.weight": ("transformer.h.{i}.ln_1.weight",),
    "ffn_norm.weight": ("transformer.h.{i}.ln_2.weight",),
    "attn.qkv.weight": ("transformer.h.{i}.attn.c_attn.weight",),
    "attn.qkv.bias": ("transformer.h.{i}.attn.c_attn.bias",),
    "attn.o.weight": ("transformer.h.{i}.attn.c_proj.weight",),
    # QWenMLP.forward: c_proj(w1(x) * silu(w2(x))): w1 is the linear branch, w2 the gated one.
    "mlp.up.weight": ("transformer.h.{i}.mlp.w1.weight",),
    "mlp.gate.weight": ("transformer.h.{i}.mlp.w2.weight",),
    "mlp.down.weight": ("transformer.h.{i}.mlp.c_proj.weight",),
}

_INTERNLM2_NAMES: dict[str, tuple[str, ...]] = {
    "embed.weight": ("model.tok_embeddings.weight",),
    "final_norm.weight": ("model.norm.weight",),
    "lm_head.weight": ("output.weight",),
    "attn_norm.weight": ("model.layers.{i}.attention_norm.weight",),
    "ffn_norm.weight": ("model.layers.{i}.ffn_norm.weight",),
    "attn.qkv.weight": ("model.layers.{i}.attention.wqkv.weight",),
    "attn.qkv.bias": ("model.layers.{i}.attention.wqkv.bias",),
    "attn.o.weight": ("model.layers.{i}.attention.wo.weight",),
    "attn.o.bias": ("model.layers.{i}.attention.wo.bias",),
    "mlp.gate.weight": ("model.layers.{i}.feed_forward.w1.weight",),
    "mlp.up.weight": ("model.layers.{i}.feed_forward.w3.weight",),
    "mlp.down.weight": ("model.layers.{i}.feed_forward.w2.weight",),
}

_PHI3_NAMES: dict[str, tuple[str, ...]] = {
    "embed.weight": ("model.embed_tokens.weight",),
    "final_norm.weight": ("model.norm.weight",),
    "lm_head.weight": ("lm_head.weight",),
    "attn_norm.weight": ("model.layers.{i}.input_layernorm.weight",),
    "ffn_norm.weight": ("model.layers.{i}.post_attention_layernorm.weight",),
    "attn.qkv.weight": ("model.layers.{i}.self_attn.qkv_proj.weight",),
    "attn.o.weight": ("model.layers.{i}.self_attn.o_proj.weight",),
    "mlp.gate_up.weight": ("model.layers.{i}.mlp.gate_up_proj.weight",),
    "mlp.down.weight": ("model.layers.{i}.mlp.down_proj.weight",),
}

_GGUF_NAMES: dict[str, tuple[str, ...]] = {
    "embed.weight": ("token_embd.weight",),
    "final_norm.weight": ("output_norm.weight",),
    "lm_head.weight": ("output.weight",),
    "attn_norm.weight": ("blk.{i}.attn_norm.weight",),
    "ffn_norm.weight": ("blk.{i}.ffn_norm.weight",),
    **{
        f"attn.{p}.{kind}": (f"blk.{{i}}.{name}.{kind}",)
        for p, name in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"), ("o", "attn_output"))
        for kind in ("weight", "bias")
    },
    **{
        f"mlp.{p}.{kind}": (f"blk.{{i}}.ffn_{p}.{kind}",)
        for p in ("gate", "up", "down")
        for kind in ("weight", "bias")
    },
}

_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "llama-hf": _LLAMA_HF_NAMES,
    "meta": _META_NAMES,
    "baichuan": _BAICHUAN_NAMES,
    "baichuan2": _BAICHUAN_NAMES,
    "qwen": _QWEN_NAMES,
    "internlm2": _INTERNLM2_NAMES,
    "phi3": _PHI3_NAMES,
    "minicpm": _LLAMA_HF_NAMES,
    "gguf": _GGUF_NAMES,
}

# Baichuan2-7B's vocabulary; vLLM keys NormHead on it too.
_BAICHUAN2_VOCAB = 125696


@dataclass(frozen=True)
class RopeSpec:
    """Rotary embedding as the source runs it."""

    theta: float = 10000.0
    pairs: str = "half"
    """``half``: pair j is (j, j + r/2) (rotate_half); ``adjacent``: pair j is (2j, 2j + 1)."""
    rotary_dim: int | None = None
    """Leading dims of each head that rotate (None: all of them)."""
    scaling: Mapping[str, Any] | None = None
    """``{"type": "linear", "factor": f}`` or Llama 3's ``{"type": "llama3", ...}``."""


@dataclass(frozen=True)
class SourceModel:
    """What the reference forward needs to know about a source, read from its own declarations."""

    layout: str
    family: str | None
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    eps: float
    rope: RopeSpec
    scale_emb: float = 1.0
    residual_scale: float = 1.0
    logit_divisor: float = 1.0
    quantized: bool = False
    notes: tuple[str, ...] = ()
    roles: Mapping[tuple[str, int | None], str] = field(default_factory=dict, repr=False)
    """(role, layer) -> tensor name, from inspect; used only where native names are absent."""
    mapped: Mapping[tuple[str, int | None], str] = field(default_factory=dict, repr=False)
    """(role, layer) -> tensor name, from a user mapping; takes precedence over everything."""

    @property
    def folds(self) -> bool:
        """Whether converting this source folds a runtime operation into weights (class D)."""
        return self.layout in ("minicpm", "baichuan2")

    @property
    def description(self) -> str:
        return LAYOUTS[self.layout]


# --- describing the source ---------------------------------------------------------------------


def describe_source(
    checkpoint: Checkpoint, result: InspectResult, *, mapping: Mapping[str, str] | None = None
) -> SourceModel:
    """Pick the reference layout and read its hyperparameters from what the source declares.

    ``mapping`` is the ``{source tensor name: reference name}`` a conversion was given for roles
    that names and shapes do not decide; reference names may be the layout's own or Llama's.

    Raises:
        UnsupportedFormatError: no reference forward exists for this source (say, a GGUF of
            another architecture, or a family that is not convertible to Llama).
        InputError: the declarations lack a value the forward needs (head count, say).
        UsageError: a mapping entry names no tensor of the source, or no known reference name.
    """
    recognition = result.recognition
    family = recognition.matched_family
    mapped = _mapped_roles(checkpoint, mapping or {})
    undecided = [
        a.name for a in recognition.assignments if a.role is None and a.name not in set(mapped.values())
    ]
    if undecided:
        shown = ", ".join(sanitize(n) for n in undecided[:4]) + (" ..." if len(undecided) > 4 else "")
        raise AmbiguousRolesError(
            f"{sanitize(str(checkpoint.path))}: {len(undecided)} tensors have roles that neither names nor "
            f"shapes decide ({shown}); pass the mapping the conversion used"
        )
    roles = {**_role_table(result), **mapped}
    meta_named = any(a.convention == "meta" for a in recognition.assignments if a.role == "attn.q.weight")
    header = forward_header(checkpoint)
    if header is not None and header.graph is not None:
        model = _describe_header(checkpoint, header, family, roles)
    elif meta_named and checkpoint.config is None:
        # Meta's names and no config.json: Meta's code, with whatever hyperparameters the file keeps
        # (llama2.c's train.py saves its ModelArgs beside the state dict).
        model = _describe_header(
            checkpoint,
            replace(header or ForwardHeader(label="the source"), graph="meta", architecture="llama"),
            family,
            roles,
        )
    else:
        config = checkpoint.config
        if config is None:
            raise InputError(
                f"{sanitize(str(checkpoint.path))}: no config.json, so the source's own hyperparameters "
                "(heads, epsilon, rotary base) are unknown and no reference forward can run"
            )
        # Meta's names come from Meta's code, which rotates adjacent pairs, whatever config sits beside.
        layout = "meta" if meta_named else _hf_layout(family, config, checkpoint)
        model = _describe_hf(checkpoint, layout, family, config, roles)
    return replace(model, mapped=mapped)


def _role_table(result: InspectResult) -> dict[tuple[str, int | None], str]:
    """(role, layer) -> name from inspect, layers renumbered 0..L-1 in source order."""
    assignments = result.recognition.assignments
    order = {
        layer: index
        for index, layer in enumerate(sorted({a.layer for a in assignments if a.layer is not None}))
    }
    table: dict[tuple[str, int | None], str] = {}
    for assignment in assignments:
        if assignment.role is not None:
            layer = None if assignment.layer is None else order[assignment.layer]
            table.setdefault((assignment.role, layer), assignment.name)
    return table


def _reference_patterns() -> list[tuple[re.Pattern[str], str]]:
    patterns = []
    for table in _NAMES.values():
        for role, templates in table.items():
            for template in templates:
                regex = re.escape(template).replace(re.escape("{i}"), r"(\d+)")
                patterns.append((re.compile(f"^{regex}$"), role))
    return patterns


def _mapped_roles(checkpoint: Checkpoint, mapping: Mapping[str, str]) -> dict[tuple[str, int | None], str]:
    patterns = _reference_patterns()
    out: dict[tuple[str, int | None], str] = {}
    for source, target in mapping.items():
        if source not in checkpoint:
            raise UsageError(f"the mapping names {sanitize(source)!r}, which is not a tensor of the source")
        for pattern, role in patterns:
            match = pattern.match(target)
            if match:
                out[(role, int(match.group(1)) if match.groups() else None)] = source
                break
        else:
            raise UsageError(f"the mapping's target {sanitize(target)!r} is no reference tensor name")
    return out


def _hf_layout(family: str | None, config: Mapping[str, Any], checkpoint: Checkpoint) -> str:
    if family in _LLAMA_HF_FAMILIES:
        return "llama-hf"
    if family == "baichuan":
        architectures = config.get("architectures") or []
        vocab = config.get("vocab_size")
        # Baichuan-7B is "BaiChuanForCausalLM"; Baichuan2's RoPE model is "BaichuanForCausalLM".
        normhead = "BaichuanForCausalLM" in architectures or vocab == _BAICHUAN2_VOCAB
        return "baichuan2" if normhead else "baichuan"
    if family in ("qwen", "internlm2", "phi3", "minicpm"):
        return family
    raise UnsupportedFormatError(
        f"{sanitize(str(checkpoint.path))}: no reference forward for family {family!r}; "
        f"verification covers {', '.join(sorted(LAYOUTS))}"
    )


def _int(
    config: Mapping[str, Any], *keys: str, default: int | None = None, where: str, label: str | None = None
) -> int:
    """The first of ``keys`` the config states as a positive integer; ``label`` names the first
    key in the message (where the header keeps it), when it is not the key itself."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    if default is not None:
        return default
    raise InputError(f"{where}: the source declares no positive integer {label or keys[0]!r}")


def _float(config: Mapping[str, Any], *keys: str, default: float, label: str | None = None) -> float:
    """The first of ``keys`` the config states, as a finite float (anything else is refused)."""
    for key in keys:
        value = config.get(key)
        if value is not None:
            where = label or f"config {key}"
            return checked_float(value, where=where, minimum=-MAX_REAL, maximum=MAX_REAL)
    return default


def _embedding_shape(
    checkpoint: Checkpoint, names: Mapping[str, tuple[str, ...]], roles: Mapping[tuple[str, int | None], str]
) -> tuple[int, ...]:
    for name in names["embed.weight"]:
        if name in checkpoint:
            return checkpoint.info(name).shape
    fallback = roles.get(("embed.weight", None))
    if fallback is None:
        raise InputError(f"{sanitize(str(checkpoint.path))}: no embedding tensor found")
    return checkpoint.info(fallback).shape


def _describe_hf(
    checkpoint: Checkpoint,
    layout: str,
    family: str | None,
    config: Mapping[str, Any],
    roles: dict[tuple[str, int | None], str],
) -> SourceModel:
    where = sanitize(str(checkpoint.path))
    text = config.get("text_config")
    if isinstance(text, dict):
        config = {**config, **text}
    hidden = _int(config, "hidden_size", where=where)
    heads = _int(config, "num_attention_heads", where=where)
    layers = _int(config, "num_hidden_layers", where=where)
    if layout in ("baichuan", "baichuan2", "qwen"):
        kv_heads = heads  # both are multi-head only; neither config has a KV-head key
    else:
        kv_heads = _int(config, "num_key_value_heads", default=heads, where=where)
    head_dim = _int(config, "head_dim", "kv_channels", default=hidden // heads, where=where)
    vocab = _embedding_shape(checkpoint, _NAMES[layout], roles)[0]
    eps_default = 1e-5 if layout in ("phi3", "meta") else 1e-6
    eps = _float(config, "rms_norm_eps", "layer_norm_epsilon", default=eps_default)
    rope = _hf_rope(config, layout, head_dim, where)
    notes: list[str] = []
    scale_emb = residual_scale = logit_divisor = 1.0
    if layout == "minicpm":
        scale_emb = _float(config, "scale_emb", default=1.0)
        residual_scale = _float(config, "scale_depth", default=1.0) / math.sqrt(layers)
        logit_divisor = hidden / _float(config, "dim_model_base", default=float(hidden))
    window = config.get("sliding_window")
    if isinstance(window, int) and config.get("use_sliding_window", True) is not False:
        notes.append(f"sliding_window {window}: equal to full attention only within {window} tokens")
    return SourceModel(
        layout=layout,
        family=family,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=vocab,
        eps=eps,
        rope=rope,
        scale_emb=scale_emb,
        residual_scale=residual_scale,
        logit_divisor=logit_divisor,
        quantized=_quantized(checkpoint),
        notes=tuple(notes),
        roles=roles,
    )


def _hf_rope(config: Mapping[str, Any], layout: str, head_dim: int, where: str) -> RopeSpec:
    params = config.get("rope_parameters")
    scaling = config.get("rope_scaling")
    theta = _float(config, "rotary_emb_base" if layout == "qwen" else "rope_theta", default=10000.0)
    if isinstance(params, dict):
        theta = _float(params, "rope_theta", default=theta)
        if params.get("rope_type", "default") != "default":
            scaling = params
    fraction = _float(config, "rotary_pct" if layout == "qwen" else "partial_rotary_factor", default=1.0)
    rotary_dim = int(head_dim * fraction)
    return RopeSpec(
        theta=theta,
        pairs="adjacent" if layout == "meta" else "half",
        rotary_dim=None if rotary_dim == head_dim else rotary_dim,
        scaling=_scaling(scaling, where),
    )


def _scaling(scaling: object, where: str) -> dict[str, Any] | None:
    if not isinstance(scaling, dict):
        return None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    factor = scaling.get("factor", 1.0)
    if kind in ("default", None) or (kind in ("linear", "dynamic") and factor == 1.0):
        return None
    if kind == "dynamic":
        # Dynamic NTK changes nothing until the sequence outgrows max_position_embeddings.
        return None
    if kind in ("linear", "llama3"):
        return {**scaling, "type": kind}
    raise UnsupportedFormatError(f"{where}: the reference forward does not implement rope scaling {kind!r}")


def _quantized(checkpoint: Checkpoint) -> bool:
    from ..formats.base import BLOCK_TYPES, EXTRA_DECODERS

    return any(t.dtype in BLOCK_TYPES or t.dtype in EXTRA_DECODERS for t in checkpoint.tensors.values())


def _describe_header(
    checkpoint: Checkpoint,
    header: ForwardHeader,
    family: str | None,
    roles: dict[tuple[str, int | None], str],
) -> SourceModel:
    """The forward the format's own header fixes (`ForwardHeader`): Meta's and llama2.c's code, or
    llama.cpp's graph. Both fix RMSNorm epsilon 1e-5 and rotary base 10000 where the header is
    silent, and rotate adjacent pairs."""
    where = sanitize(str(checkpoint.path))
    if header.architecture != "llama":
        raise UnsupportedFormatError(
            f"{where}: the {header.label} reference forward runs the 'llama' graph, not "
            f"{sanitize(str(header.architecture))!r}"
        )
    values = header.values
    names = _NAMES[header.graph or "meta"]

    def whole(key: str, default: int | None = None) -> int:
        return _int(values, key, default=default, where=where, label=header.source(key))

    # Meta's code reads the width from params.json; a file without one has it in its embedding.
    hidden = whole(
        "hidden_size", _embedding_shape(checkpoint, names, roles)[1] if header.graph == "meta" else None
    )
    heads = whole("num_attention_heads")
    head_dim = whole("head_dim", hidden // heads)
    rotary_dim = whole("rotary_dim", head_dim)
    return SourceModel(
        layout=header.graph or "meta",
        family=family,
        hidden=hidden,
        layers=whole("num_hidden_layers"),
        heads=heads,
        kv_heads=whole("num_key_value_heads", heads),
        head_dim=head_dim,
        vocab=_embedding_shape(checkpoint, names, roles)[0],
        eps=_float(values, "rms_norm_eps", default=1e-5, label=header.source("rms_norm_eps")),
        rope=RopeSpec(
            theta=_float(values, "rope_theta", default=10000.0, label=header.source("rope_theta")),
            pairs="adjacent",
            rotary_dim=None if rotary_dim == head_dim else rotary_dim,
            scaling=_header_scaling(values.get("rope_scaling"), header.source("rope_scaling"), where),
        ),
        quantized=_quantized(checkpoint),
        notes=(header.note,) if header.note else (),
        roles=roles,
    )


def _header_scaling(scaling: object, label: str, where: str) -> dict[str, Any] | None:
    """Rope scaling as a header states it: Llama 3.1's (Meta's ``use_scaled_rope``) or linear."""
    if not isinstance(scaling, Mapping):
        return None
    kind = scaling.get("type")
    if kind == "llama3" and "original_max_position_embeddings" in scaling:
        return dict(scaling)
    factor = _float(scaling, "factor", default=1.0, label=label)
    if kind not in (None, "none", "linear") and factor != 1.0:
        raise UnsupportedFormatError(
            f"{where}: the reference forward does not implement rope scaling {kind!r}"
        )
    return {"type": "linear", "factor": factor} if factor != 1.0 else None


# --- weights -----------------------------------------------------------------------------------


# Output dtype codes narrower than float32 -> the torch dtype that rounds to them.
_TORCH_ROUNDING = {"BF16": "bfloat16", "F16": "float16"}


class _Weights:
    """Tensors by role and layer: the layout's own name first, inspect's assignment second."""

    def __init__(
        self, checkpoint: Checkpoint, model: SourceModel, rounding: Mapping[str, str] | None = None
    ) -> None:
        self.checkpoint = checkpoint
        self.model = model
        self.names = _NAMES[model.layout]
        self.used: set[str] = set()
        self.rounding = rounding or {}

    def name(self, role: str, layer: int | None = None) -> str | None:
        mapped = self.model.mapped.get((role, layer))
        if mapped is not None:
            return mapped
        for template in self.names.get(role, ()):
            candidate = template.format(i=layer) if layer is not None else template
            if candidate in self.checkpoint:
                return candidate
        return self.model.roles.get((role, layer))

    def get(self, role: str, layer: int | None = None) -> torch.Tensor | None:
        import torch

        name = self.name(role, layer)
        if name is None:
            return None
        self.used.add(name)
        values = torch.from_numpy(np.array(self.checkpoint.read(name), dtype=np.float32))
        narrow = _TORCH_ROUNDING.get(self.rounding.get(name, ""))
        if narrow is not None:
            # Where the output stores this tensor in a narrower float, run on the values it holds.
            values = values.to(getattr(torch, narrow)).to(torch.float32)
        return values

    def need(self, role: str, layer: int | None = None) -> torch.Tensor:
        tensor = self.get(role, layer)
        if tensor is None:
            where = f"layer {layer}" if layer is not None else "the model"
            raise InputError(
                f"{sanitize(str(self.checkpoint.path))}: no {role} tensor for {where} "
                f"(neither the {self.model.layout} name nor a recognized role)"
            )
        return tensor


# --- building blocks ---------------------------------------------------------------------------


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    import torch

    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    out = x @ weight.T
    return out if bias is None else out + bias


def _inv_freq(rope: RopeSpec, rotary_dim: int) -> torch.Tensor:
    """Inverse frequencies in float32: every source computes its rotary table in float32 (run.c's
    ``powf``, Meta's ``precompute_freqs_cis``, the Hugging Face rotary modules), and the angle at
    position p carries that rounding, so an exact table would differ from all of them."""
    import torch

    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim
    inv_freq = 1.0 / (torch.tensor(rope.theta, dtype=torch.float32) ** exponents)
    scaling = rope.scaling
    if scaling is None:
        return inv_freq
    factor = float(scaling.get("factor", 1.0))
    if scaling["type"] == "linear":
        return inv_freq / factor
    # Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth blend between.
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    original = float(scaling.get("original_max_position_embeddings", 8192))
    wavelength = 2 * math.pi / inv_freq
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
    middle = (wavelength <= original / low) & (wavelength >= original / high)
    return torch.where(middle, blended, out)


def _rotate(x: torch.Tensor, rope: RopeSpec) -> torch.Tensor:
    """Rotary embedding of x [T, heads, d] at positions 0..T-1, in the source's pair convention."""
    import torch

    length, _, dim = x.shape
    rotary_dim = rope.rotary_dim or dim
    angles = torch.arange(length, dtype=torch.float32)[:, None] * _inv_freq(rope, rotary_dim)[None, :]
    cos = torch.cos(angles)[:, None, :]
    sin = torch.sin(angles)[:, None, :]
    rotated, passed = x[..., :rotary_dim], x[..., rotary_dim:]
    if rope.pairs == "adjacent":
        # Meta's apply_rotary_emb / run.c: (x[2j], x[2j+1]) is one complex number times e^{i*angle}.
        real, imag = rotated[..., 0::2], rotated[..., 1::2]
        out = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1).flatten(-2)
    else:
        half = rotary_dim // 2
        first, second = rotated[..., :half], rotated[..., half:]
        out = torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
    return torch.cat((out, passed), dim=-1)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention; query head h reads key/value head h // (heads / kv_heads)."""
    import torch

    length, heads, dim = q.shape
    group = heads // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(dim)
    future = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("hts,shd->thd", weights, v).reshape(length, heads * dim)


def _silu(x: torch.Tensor) -> torch.Tensor:
    import torch

    return x * torch.sigmoid(x)


# --- per-layout projections --------------------------------------------------------------------

if TYPE_CHECKING:
    _Projection = Callable[[torch.Tensor, _Weights, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    _Mlp = Callable[[torch.Tensor, _Weights, int], torch.Tensor]


def _qkv_separate(h: torch.Tensor, w: _Weights, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m = w.model
    q = _linear(h, w.need("attn.q.weight", i), w.get("attn.q.bias", i))
    k = _linear(h, w.need("attn.k.weight", i), w.get("attn.k.bias", i))
    v = _linear(h, w.need("attn.v.weight", i), w.get("attn.v.bias", i))
    length = h.shape[0]
    return (
        q.view(length, m.heads, m.head_dim),
        k.view(length, m.kv_heads, m.head_dim),
        v.view(length, m.kv_heads, m.head_dim),
    )


def _qkv_baichuan(h: torch.Tensor, w: _Weights, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # modeling_baichuan: proj = W_pack(x); proj.unflatten(-1, (3, hidden_size)).
    m = w.model
    proj = _linear(h, w.need("attn.qkv.weight", i)).unflatten(-1, (3, m.hidden))
    q, k, v = (proj[:, j].reshape(h.shape[0], m.heads, m.head_dim) for j in range(3))
    return q, k, v


def _qkv_qwen(h: torch.Tensor, w: _Weights, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # QWenAttention: mixed = c_attn(x); query, key, value = mixed.split(projection_size, dim=2).
    m = w.model
    mixed = _linear(h, w.need("attn.qkv.weight", i), w.get("attn.qkv.bias", i))
    size = m.heads * m.head_dim
    q, k, v = mixed.split(size, dim=-1)
    shape = (h.shape[0], m.heads, m.head_dim)
    return q.reshape(shape), k.reshape(shape), v.reshape(shape)


def _qkv_internlm2(h: torch.Tensor, w: _Weights, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # InternLM2Attention: qkv.view(b, q_len, nkv, 2 + G, d); q = [..., :G, :], k = [..., -2, :], v = [..., -1, :].
    m = w.model
    group = m.heads // m.kv_heads
    qkv = _linear(h, w.need("attn.qkv.weight", i), w.get("attn.qkv.bias", i))
    qkv = qkv.view(h.shape[0], m.kv_heads, group + 2, m.head_dim)
    q = qkv[:, :, :group, :].reshape(h.shape[0], m.heads, m.head_dim)
    return q, qkv[:, :, -2, :], qkv[:, :, -1, :]


def _qkv_phi3(h: torch.Tensor, w: _Weights, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Phi3Attention: qkv = qkv_proj(x); query = qkv[..., :q_pos]; key = next nkv*d; value = the rest.
    m = w.model
    qkv = _linear(h, w.need("attn.qkv.weight", i))
    q_end = m.heads * m.head_dim
    k_end = q_end + m.kv_heads * m.head_dim
    length = h.shape[0]
    return (
        qkv[:, :q_end].reshape(length, m.heads, m.head_dim),
        qkv[:, q_end:k_end].reshape(length, m.kv_heads, m.head_dim),
        qkv[:, k_end:].reshape(length, m.kv_heads, m.head_dim),
    )


def _mlp_swiglu(h: torch.Tensor, w: _Weights, i: int) -> torch.Tensor:
    gate = _linear(h, w.need("mlp.gate.weight", i), w.get("mlp.gate.bias", i))
    up = _linear(h, w.need("mlp.up.weight", i), w.get("mlp.up.bias", i))
    return _linear(_silu(gate) * up, w.need("mlp.down.weight", i), w.get("mlp.down.bias", i))


def _mlp_qwen(h: torch.Tensor, w: _Weights, i: int) -> torch.Tensor:
    # QWenMLP: a1 = w1(x); a2 = w2(x); c_proj(a1 * silu(a2)).
    a1 = _linear(h, w.need("mlp.up.weight", i))
    a2 = _linear(h, w.need("mlp.gate.weight", i))
    return _linear(a1 * _silu(a2), w.need("mlp.down.weight", i))


def _mlp_phi3(h: torch.Tensor, w: _Weights, i: int) -> torch.Tensor:
    # Phi3MLP: gate, up = gate_up_proj(x).chunk(2, dim=-1); down_proj(up * silu(gate)).
    gate, up = _linear(h, w.need("mlp.gate_up.weight", i)).chunk(2, dim=-1)
    return _linear(up * _silu(gate), w.need("mlp.down.weight", i))


_PROJECTIONS: dict[str, _Projection] = {
    "llama-hf": _qkv_separate,
    "meta": _qkv_separate,
    "gguf": _qkv_separate,
    "minicpm": _qkv_separate,
    "baichuan": _qkv_baichuan,
    "baichuan2": _qkv_baichuan,
    "qwen": _qkv_qwen,
    "internlm2": _qkv_internlm2,
    "phi3": _qkv_phi3,
}

_MLPS: dict[str, _Mlp] = {
    "qwen": _mlp_qwen,
    "phi3": _mlp_phi3,
}


# --- the forward pass --------------------------------------------------------------------------


def reference_logits(
    checkpoint: Checkpoint,
    model: SourceModel,
    token_ids: Sequence[int],
    *,
    used: set[str] | None = None,
    rounding: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Logits ``[len(token_ids), vocab]`` (float32) of the source run as its own code runs it.

    Positions are 0..n-1 with causal attention, as one prompt with no cache. When ``used`` is
    given, the names of the tensors read are added to it. ``rounding`` maps source tensor names
    to ``BF16`` or ``F16``: those weights are rounded to that type (by torch) before use.

    Raises:
        MissingDependencyError: torch is not installed.
        InputError: a tensor the layout needs is missing.
    """
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "the reference forward pass needs torch: pip install 'unshell[transformers]'"
        ) from exc
    with torch.no_grad():
        weights = _Weights(checkpoint, model, rounding)
        logits = _forward(weights, token_ids).numpy()
    if used is not None:
        used.update(weights.used)
    return logits


def _forward(weights: _Weights, token_ids: Sequence[int]) -> torch.Tensor:
    import torch

    model = weights.model
    ids = torch.tensor(list(token_ids), dtype=torch.long)
    embed = weights.need("embed.weight")
    x = embed[ids] * model.scale_emb
    tied = weights.name("lm_head.weight") is None
    # Tied: the same matrix is the head (MiniCPM's scale_emb multiplies the lookup, not the matrix).
    tied_head = embed if tied else None
    del embed
    project = _PROJECTIONS[model.layout]
    mlp = _MLPS.get(model.layout, _mlp_swiglu)
    for i in range(model.layers):
        h = _rms_norm(x, weights.need("attn_norm.weight", i), model.eps)
        q, k, v = project(h, weights, i)
        attended = _attention(_rotate(q, model.rope), _rotate(k, model.rope), v)
        out = _linear(attended, weights.need("attn.o.weight", i), weights.get("attn.o.bias", i))
        x = x + out * model.residual_scale
        h = _rms_norm(x, weights.need("ffn_norm.weight", i), model.eps)
        x = x + mlp(h, weights, i) * model.residual_scale
    x = _rms_norm(x, weights.need("final_norm.weight"), model.eps)
    head = tied_head if tied_head is not None else weights.need("lm_head.weight")
    if model.layout == "baichuan2":
        # NormHead.forward: F.normalize(weight) (rows to unit L2 norm, eps 1e-12), then linear.
        head = head / head.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return _linear(x / model.logit_divisor, head)
