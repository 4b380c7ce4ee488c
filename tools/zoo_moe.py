"""The lineage zoo's mixture-of-experts cases (issue 15): upcycled MoEs and MoEs trained from scratch.

Sparse upcycling turns a dense model into an MoE: every expert starts as a copy of the dense
layer's FFN (here with 1 % relative noise, and each copy's neurons in an order of its own, which
changes nothing it computes), the router is new, attention, norms and embeddings are kept, and
the whole is trained on. This module builds, on top of the main zoo (``tools/zoo.py``):

* ``moe-upcycled-s0``: ``base-s0`` upcycled into 4 experts per layer (top-2 routing, Mixtral
  layout), trained briefly on the docstrings; truth: derived from ``base-s0``, ``upcycled``, every
  expert of layer i a copy of base-s0's FFN of layer i;
* ``moe-upcycled-s0-gguf``: the same MoE as a llama-architecture GGUF whose experts are stacked
  3-D tensors (``blk.N.ffn_gate_exps`` ...), Q8_0: derived from ``base-s0``, upcycled;
* ``moe-upcycled-s0-tuned``: that MoE trained on, its experts stored in another order per layer
  (router rows permuted with them); truth: derived from ``moe-upcycled-s0``, not upcycled
  (same expert count), each expert a copy of the expert it was moved from;
* ``moe-upcycled-s1``: ``base-s1`` (same data and recipe as base-s0, another seed) upcycled the
  same way: derived from base-s1, independent of base-s0 and of ``moe-upcycled-s0``;
* ``moe-scratch-s7``: the same MoE shapes trained from scratch on the docs (independent of every
  other model here);
* ``moe-fine-s0``: ``base-s0`` upcycled fine-grained (as Qwen1.5-MoE-A2.7B was from Qwen-1.8B):
  each FFN's 256 neurons cut into 4 contiguous slices of 64, each slice copied into 2 experts
  (8 experts of 64 neurons, 1 % noise, neurons shuffled), a quarter of each expert's neurons
  re-initialized, a new router, top-4 routing, trained like ``moe-upcycled-s0``; truth: derived from
  ``base-s0``, upcycled, expert e of layer i copying base-s0's neurons of slice e % 4 of layer i;
  independent of ``base-s1``;
* ``stories260K-moe``: the real stories260K upcycled the same way (4 experts), trained briefly on
  the docs with its own tokenizer.

Models are ``MixtralForCausalLM`` folders (config.json, model.safetensors F32, tokenizer.json
where the zoo has one). Cached like the main zoo under ``~/.cache/unshell-tests/zoo-moe/<key>/``,
``<key>`` hashing this file, the settings and the main zoo's key; it lives in its own file so that
changing it does not rebuild the main zoo.

    python tools/zoo_moe.py build
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from tools.zoo import Pair, Params, Shape

MANIFEST = "zoo-moe.json"
_ZOO_MODULE = "unshell_tools_zoo"  # the name tests/zoo_fixture.py loads tools/zoo.py under


def zoo_module() -> ModuleType:
    """``tools/zoo.py``, loaded once per process under the name the tests use."""
    module = sys.modules.get(_ZOO_MODULE)
    if module is None:
        path = Path(__file__).resolve().parent / "zoo.py"
        spec = importlib.util.spec_from_file_location(_ZOO_MODULE, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[_ZOO_MODULE] = module
        spec.loader.exec_module(module)
    return module


Z = zoo_module()


@dataclass(frozen=True)
class MoeSettings:
    """Every number that decides what this part of the zoo holds; part of the cache key."""

    experts: int = 4
    top_k: int = 2
    upcycle_noise: float = 0.01  # relative noise on each expert copy
    # Batches of 8 (the main zoo trains with 16): the whole build stays near 2 minutes on 2 cores.
    upcycled: Any = field(default_factory=lambda: Z.Recipe(steps=80, lr=6e-4, batch=8, warmup=10))
    tuned: Any = field(default_factory=lambda: Z.Recipe(steps=60, lr=6e-4, batch=8, warmup=10))
    scratch: Any = field(default_factory=lambda: Z.Recipe(steps=250, lr=2e-3, batch=8, warmup=20))
    stories: Any = field(default_factory=lambda: Z.Recipe(steps=100, lr=1e-3, batch=8, warmup=10))
    # Fine-grained upcycling (Qwen1.5-MoE-A2.7B from Qwen-1.8B): the dense FFN's neurons cut into
    # `fine_segments` contiguous slices, each slice copied into `fine_replicas` experts, a share
    # `fine_reinit` of each expert's neurons re-initialized; top-`fine_top_k` routing.
    fine_segments: int = 4
    fine_replicas: int = 2
    fine_reinit: float = 0.25
    fine_top_k: int = 4


SETTINGS = MoeSettings()


# --------------------------------------------------------------------------------------------
# The MoE (Mixtral layout, Hugging Face names)
# --------------------------------------------------------------------------------------------


def moe_names(i: int, e: int | None = None) -> dict[str, str]:
    prefix = f"model.layers.{i}.block_sparse_moe"
    names = {"router": f"{prefix}.gate.weight"}
    if e is not None:
        names.update(
            {
                "gate": f"{prefix}.experts.{e}.w1.weight",
                "down": f"{prefix}.experts.{e}.w2.weight",
                "up": f"{prefix}.experts.{e}.w3.weight",
            }
        )
    return names


def mixtral_config(shape: Shape, s: MoeSettings) -> dict[str, Any]:
    config: dict[str, Any] = dict(shape.config_json())
    for key in ("attention_bias", "mlp_bias"):
        config.pop(key, None)
    config.update(
        {
            "architectures": ["MixtralForCausalLM"],
            "model_type": "mixtral",
            "num_local_experts": s.experts,
            "num_experts_per_tok": s.top_k,
            "router_aux_loss_coef": 0.0,
        }
    )
    return config


def moe_forward(
    params: Mapping[str, torch.Tensor], shape: Shape, ids: torch.Tensor, s: MoeSettings = SETTINGS
) -> torch.Tensor:
    """Logits of ``MixtralForCausalLM``: top-k routing with the softmax over the chosen experts
    (every expert is computed; the unchosen ones weigh zero, which is the same function)."""
    import torch
    import torch.nn.functional as F

    batch, length = ids.shape
    cos, sin = Z.rope_tables(shape, length)
    x = params[Z.EMBED][ids]
    for i in range(shape.layers):
        n = Z.layer_names(i)
        h = Z._rms_norm(x, params[n["norm1"]], shape.rms_eps)
        q = (h @ params[n["q"]].T).view(batch, length, shape.heads, shape.head_dim).transpose(1, 2)
        k = (h @ params[n["k"]].T).view(batch, length, shape.kv_heads, shape.head_dim).transpose(1, 2)
        v = (h @ params[n["v"]].T).view(batch, length, shape.kv_heads, shape.head_dim).transpose(1, 2)
        q = q * cos + Z._rotate_half(q) * sin
        k = k * cos + Z._rotate_half(k) * sin
        group = shape.heads // shape.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        attention = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = (
            x
            + attention.transpose(1, 2).reshape(batch, length, shape.heads * shape.head_dim)
            @ params[n["o"]].T
        )
        h = Z._rms_norm(x, params[n["norm2"]], shape.rms_eps)
        logits = h @ params[moe_names(i)["router"]].T
        top, chosen = logits.topk(s.top_k, dim=-1)
        weights = torch.zeros_like(logits).scatter(-1, chosen, top.softmax(dim=-1))
        out = torch.zeros_like(x)
        for e in range(s.experts):
            m = moe_names(i, e)
            expert = (F.silu(h @ params[m["gate"]].T) * (h @ params[m["up"]].T)) @ params[m["down"]].T
            out = out + weights[..., e : e + 1] * expert
        x = x + out
    x = Z._rms_norm(x, params[Z.FINAL_NORM], shape.rms_eps)
    head = params[Z.EMBED] if shape.tied else params[Z.LM_HEAD]
    result: torch.Tensor = x @ head.T
    return result


def train_moe(
    params: Mapping[str, torch.Tensor],
    shape: Shape,
    tokens: np.ndarray,
    recipe: Any,
    seed: int,
    s: MoeSettings = SETTINGS,
) -> tuple[Params, list[float]]:
    """A trained copy of an MoE's parameters (AdamW as the main zoo trains)."""
    forward = Z.forward
    try:
        Z.forward = lambda p, sh, ids: moe_forward(p, sh, ids, s)
        return Z.train_copy(params, shape, tokens, recipe, seed)  # type: ignore[no-any-return]
    finally:
        Z.forward = forward


def upcycle(
    dense: Mapping[str, torch.Tensor], shape: Shape, s: MoeSettings, seed: int
) -> tuple[Params, dict[int, list[int]]]:
    """Every layer's FFN copied into ``s.experts`` experts (relative noise ``s.upcycle_noise``,
    neurons of each copy in an order of its own) and a new router; everything else kept.
    Returns the parameters and, per layer, the dense layer each expert copies (itself)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out: Params = {}
    for name, tensor in dense.items():
        if ".mlp." not in name:
            out[name] = tensor.clone()
    for i in range(shape.layers):
        n = Z.layer_names(i)
        out[moe_names(i)["router"]] = torch.randn((s.experts, shape.hidden), generator=generator) * 0.02
        for e in range(s.experts):
            order = torch.randperm(shape.intermediate, generator=generator)
            m = moe_names(i, e)
            for part, rows in (("gate", True), ("up", True), ("down", False)):
                weight = dense[n[part]]
                noisy = weight + s.upcycle_noise * weight.std() * torch.randn(
                    weight.shape, generator=generator
                )
                out[m[part]] = noisy[order] if rows else noisy[:, order]
    return out, {i: [i] * s.experts for i in range(shape.layers)}


def fine_grained_settings(s: MoeSettings) -> MoeSettings:
    """The expert count and routing of the fine-grained MoE."""
    return dataclasses.replace(s, experts=s.fine_segments * s.fine_replicas, top_k=s.fine_top_k)


def upcycle_fine_grained(
    dense: Mapping[str, torch.Tensor], shape: Shape, s: MoeSettings, seed: int
) -> tuple[Params, Shape, dict[int, list[list[int]]]]:
    """Fine-grained upcycling: layer i's FFN neurons cut into ``s.fine_segments`` contiguous slices
    (neurons k*w .. (k+1)*w - 1, w = intermediate / segments); expert e holds slice e % segments
    (so each slice is replicated ``s.fine_replicas`` times) with relative noise
    ``s.upcycle_noise``, its neurons in an order of its own, and a share ``s.fine_reinit`` of them
    (the same count in every expert) re-initialized at the FFN's scale; a new router. Returns the
    parameters, the MoE's shape (intermediate = the slice width) and, per layer and expert, the
    dense neurons [first, last] the expert copies and how many of its neurons were re-initialized."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    width = shape.intermediate // s.fine_segments
    fresh = round(width * s.fine_reinit)
    experts = s.fine_segments * s.fine_replicas
    out: Params = {name: t.clone() for name, t in dense.items() if ".mlp." not in name}
    slices: dict[int, list[list[int]]] = {}
    for i in range(shape.layers):
        n = Z.layer_names(i)
        out[moe_names(i)["router"]] = torch.randn((experts, shape.hidden), generator=generator) * 0.02
        slices[i] = []
        for e in range(experts):
            segment = e % s.fine_segments
            first = segment * width
            order = first + torch.randperm(width, generator=generator)
            renew = torch.randperm(width, generator=generator)[:fresh]
            m = moe_names(i, e)
            for part, rows in (("gate", True), ("up", True), ("down", False)):
                weight = dense[n[part]]
                noisy = weight + s.upcycle_noise * weight.std() * torch.randn(
                    weight.shape, generator=generator
                )
                piece = (noisy[order] if rows else noisy[:, order]).clone()
                random = weight.std() * torch.randn(piece.shape, generator=generator)
                if rows:
                    piece[renew] = random[renew]
                else:
                    piece[:, renew] = random[:, renew]
                out[m[part]] = piece
            slices[i].append([first, first + width - 1, fresh])
    return out, dataclasses.replace(shape, intermediate=width), slices


def init_moe(shape: Shape, s: MoeSettings, seed: int) -> Params:
    import torch

    dense = Z.init_params(shape, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    out: Params = {name: t for name, t in dense.items() if ".mlp." not in name}
    for i in range(shape.layers):
        out[moe_names(i)["router"]] = torch.randn((s.experts, shape.hidden), generator=generator) * 0.02
        for e in range(s.experts):
            m = moe_names(i, e)
            out[m["gate"]] = torch.randn((shape.intermediate, shape.hidden), generator=generator) * 0.02
            out[m["up"]] = torch.randn((shape.intermediate, shape.hidden), generator=generator) * 0.02
            out[m["down"]] = torch.randn((shape.hidden, shape.intermediate), generator=generator) * 0.02
    return out


def permute_experts(
    params: Mapping[str, torch.Tensor], shape: Shape, s: MoeSettings, seed: int
) -> tuple[Params, dict[int, list[int]]]:
    """Experts stored in another order per layer, router rows moved with them (the same function).
    Returns, per layer, the old index of each new expert."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out: Params = dict(params)
    moved: dict[int, list[int]] = {}
    for i in range(shape.layers):
        order = [int(e) for e in torch.randperm(s.experts, generator=generator)]
        moved[i] = order
        out[moe_names(i)["router"]] = params[moe_names(i)["router"]][order].clone()
        for new, old in enumerate(order):
            for part in ("gate", "up", "down"):
                out[moe_names(i, new)[part]] = params[moe_names(i, old)[part]].clone()
    return out, moved


def save_moe(
    directory: Path, params: Mapping[str, torch.Tensor], shape: Shape, s: MoeSettings, tokenizer: Any
) -> None:
    from unshell.formats.safetensors import write_safetensors

    directory.mkdir(parents=True, exist_ok=True)
    arrays = {name: t.detach().float().numpy() for name, t in params.items()}
    if shape.tied:
        arrays.pop(Z.LM_HEAD, None)
    write_safetensors(directory / "model.safetensors", arrays, metadata={"format": "pt"})
    (directory / "config.json").write_text(
        json.dumps(mixtral_config(shape, s), indent=2) + "\n", encoding="utf-8"
    )
    if tokenizer is not None:
        text = json.dumps(tokenizer.tokenizer_json(), ensure_ascii=False)
        (directory / "tokenizer.json").write_text(text, encoding="utf-8")


def save_moe_gguf(
    path: Path, params: Mapping[str, torch.Tensor], shape: Shape, s: MoeSettings, tokenizer: Any, title: str
) -> None:
    """A llama-architecture GGUF with llama.cpp's MoE layout: each layer's experts stacked in one
    3-D tensor per part (``blk.N.ffn_gate_exps`` etc., experts x rows x columns), the router as
    ``blk.N.ffn_gate_inp``; matrices Q8_0, vectors F32."""
    import gguf

    dense = {name: t for name, t in params.items() if ".block_sparse_moe." not in name}
    names = Z.gguf_names(shape)
    arrays = {name: t.detach().float().numpy() for name, t in params.items()}
    temp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(temp, "llama")
    writer.add_name(title)
    writer.add_context_length(shape.max_positions)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.intermediate)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_expert_count(s.experts)
    writer.add_expert_used_count(s.top_k)
    writer.add_vocab_size(shape.vocab)
    writer.add_tokenizer_model("gpt2")
    strings = tokenizer.token_strings()
    writer.add_token_list(strings)
    writer.add_token_types([1] * len(strings))
    writer.add_token_merges([f"{strings[a]} {strings[b]}" for a, b in tokenizer.merges])

    def add(name: str, values: np.ndarray) -> None:
        kind = "F32" if values.ndim == 1 else "Q8_0"
        data, qtype = Z._encode_gguf_tensor(np.ascontiguousarray(values), kind)
        writer.add_tensor(name, data, raw_dtype=qtype)

    for name, values in arrays.items():
        if name not in dense:
            continue
        role = name.rsplit(".", 2)[-2]
        if role == "q_proj":
            values = Z.hf_to_meta_rows(values, shape.heads)
        elif role == "k_proj":
            values = Z.hf_to_meta_rows(values, shape.kv_heads)
        if name == Z.LM_HEAD and shape.tied:
            continue
        add(names[name], values)
    for i in range(shape.layers):
        add(f"blk.{i}.ffn_gate_inp.weight", arrays[moe_names(i)["router"]])
        for part in ("gate", "up", "down"):
            stacked = np.stack([arrays[moe_names(i, e)[part]] for e in range(s.experts)])
            add(f"blk.{i}.ffn_{part}_exps.weight", stacked)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    temp.replace(path)


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def build(out: Path, s: MoeSettings = SETTINGS, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = log or (lambda message: None)
    started = time.monotonic()
    zoo = Z.load_or_build(log=log)
    text = Z.corpora()
    bpe, _ = Z.tokenizers(Z.SETTINGS)
    docs = bpe.encode(text.docs)
    docstrings = bpe.encode(text.docstrings)
    models: dict[str, dict[str, Any]] = {}

    def add(name: str, params: Params, shape: Shape, tokenizer: Any, **entry: Any) -> None:
        save_moe(out / "models" / name, params, shape, s, tokenizer)
        models[name] = {"path": f"models/{name}", **entry}
        say(f"{time.monotonic() - started:7.1f}s  {name}: {entry['recipe']}")

    with Z.torch_session():
        for seed, base in ((0, "base-s0"), (1, "base-s1")):
            dense, shape = Z.load_hf(zoo.bases[base])
            start, copies = upcycle(dense, shape, s, 500 + seed)
            trained, losses = train_moe(start, shape, docstrings, s.upcycled, 510 + seed)
            add(
                f"moe-upcycled-s{seed}",
                trained,
                shape,
                bpe,
                source=base,
                experts_from=copies,
                recipe=f"{base} upcycled to {s.experts} experts ({s.upcycle_noise:.0%} noise, neurons shuffled, "
                f"new router), trained {s.upcycled.steps} steps at lr {s.upcycled.lr} on docstrings",
                loss_first=round(float(np.mean(losses[:10])), 4),
                loss_last=round(float(np.mean(losses[-10:])), 4),
            )
            if seed == 0:
                upcycled_s0, shape_s0 = trained, shape
                save_moe_gguf(
                    out / "models" / "moe-upcycled-s0.gguf", trained, shape, s, bpe, "moe-upcycled-s0"
                )
                models["moe-upcycled-s0-gguf"] = {
                    "path": "models/moe-upcycled-s0.gguf",
                    "source": "moe-upcycled-s0",
                    "experts_from": copies,
                    "recipe": "moe-upcycled-s0 as a llama GGUF with stacked experts (ffn_*_exps), Q8_0",
                }
        moved, order = permute_experts(upcycled_s0, shape_s0, s, 520)
        tuned, losses = train_moe(moved, shape_s0, docs, s.tuned, 521)
        add(
            "moe-upcycled-s0-tuned",
            tuned,
            shape_s0,
            bpe,
            source="moe-upcycled-s0",
            experts_from=order,
            recipe=f"moe-upcycled-s0 with its experts reordered, trained {s.tuned.steps} steps at lr {s.tuned.lr} on docs",
        )
        scratch, losses = train_moe(init_moe(shape_s0, s, 7), shape_s0, docs, s.scratch, 7)
        add(
            "moe-scratch-s7",
            scratch,
            shape_s0,
            bpe,
            source=None,
            recipe=f"the same MoE shapes from scratch (seed 7), {s.scratch.steps} steps at lr {s.scratch.lr} on docs",
            loss_first=round(float(np.mean(losses[:10])), 4),
            loss_last=round(float(np.mean(losses[-10:])), 4),
        )
        fine = fine_grained_settings(s)
        dense_s0, _ = Z.load_hf(zoo.bases["base-s0"])
        start, fine_shape, slices = upcycle_fine_grained(dense_s0, shape_s0, s, 540)
        trained, losses = train_moe(start, fine_shape, docstrings, s.upcycled, 541, fine)
        save_moe(out / "models" / "moe-fine-s0", trained, fine_shape, fine, bpe)
        models["moe-fine-s0"] = {
            "path": "models/moe-fine-s0",
            "source": "base-s0",
            "slices": slices,
            "recipe": f"base-s0 fine-grained upcycled: each FFN's {shape_s0.intermediate} neurons cut into "
            f"{s.fine_segments} slices, each slice copied into {s.fine_replicas} experts ({fine.experts} "
            f"in all, {s.upcycle_noise:.0%} noise, neurons shuffled, {s.fine_reinit:.0%} of each expert's "
            f"neurons re-initialized, new router, top-{fine.top_k}), trained {s.upcycled.steps} steps at "
            f"lr {s.upcycled.lr} on docstrings",
            "loss_first": round(float(np.mean(losses[:10])), 4),
            "loss_last": round(float(np.mean(losses[-10:])), 4),
        }
        say(f"{time.monotonic() - started:7.1f}s  moe-fine-s0")
        stories, stories_shape = Z.load_llama2c(Z.STORIES)
        start, copies = upcycle(stories, stories_shape, s, 530)
        story_tokens = Z.Llama2cTokenizer.read(Z.STORIES_TOKENIZER).encode(text.docs)
        trained, losses = train_moe(start, stories_shape, story_tokens, s.stories, 531)
        add(
            "stories260K-moe",
            trained,
            stories_shape,
            None,
            source="stories260K",
            experts_from=copies,
            recipe=f"real stories260K upcycled to {s.experts} experts ({s.upcycle_noise:.0%} noise, neurons "
            f"shuffled, new router), trained {s.stories.steps} steps at lr {s.stories.lr} on docs (its own tokenizer)",
        )
    manifest = {
        "models": models,
        "derived": [
            {"name": "base-s0 -> moe-upcycled-s0", "a": "base-s0", "b": "moe-upcycled-s0", "upcycled": True},
            {"name": "base-s1 -> moe-upcycled-s1", "a": "base-s1", "b": "moe-upcycled-s1", "upcycled": True},
            {
                "name": "base-s0 -> moe-upcycled-s0-gguf",
                "a": "base-s0",
                "b": "moe-upcycled-s0-gguf",
                "upcycled": True,
            },
            {
                "name": "stories260K -> stories260K-moe",
                "a": "stories260K",
                "b": "stories260K-moe",
                "upcycled": True,
            },
            {"name": "base-s0 -> moe-fine-s0", "a": "base-s0", "b": "moe-fine-s0", "upcycled": True},
            {
                "name": "moe-upcycled-s0 -> moe-upcycled-s0-tuned",
                "a": "moe-upcycled-s0",
                "b": "moe-upcycled-s0-tuned",
                "upcycled": False,
            },
        ],
        "independent": [
            {"name": "base-s0 vs moe-scratch-s7", "a": "base-s0", "b": "moe-scratch-s7"},
            {"name": "base-s0 vs moe-upcycled-s1", "a": "base-s0", "b": "moe-upcycled-s1"},
            {"name": "moe-upcycled-s0 vs moe-scratch-s7", "a": "moe-upcycled-s0", "b": "moe-scratch-s7"},
            {"name": "moe-upcycled-s0 vs moe-upcycled-s1", "a": "moe-upcycled-s0", "b": "moe-upcycled-s1"},
            {"name": "base-s1 vs moe-fine-s0", "a": "base-s1", "b": "moe-fine-s0"},
        ],
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


@dataclass
class MoeZoo:
    root: Path
    manifest: dict[str, Any]
    models: dict[str, Path]
    derived: list[Pair]
    independent: list[Pair]

    def experts_from(self, name: str) -> dict[int, list[int]]:
        """Per layer of ``name``: the layer (dense source) or expert (MoE source) each expert copies."""
        return {int(k): v for k, v in self.manifest["models"][name]["experts_from"].items()}

    def slices_of(self, name: str) -> dict[int, list[list[int]]]:
        """Per layer of a fine-grained MoE, per expert: [first, last] dense neuron it copies and how
        many of its neurons were re-initialized."""
        return {int(k): v for k, v in self.manifest["models"][name]["slices"].items()}


def cache_key(s: MoeSettings = SETTINGS) -> str:
    parts = [
        hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        json.dumps(dataclasses.asdict(s), sort_keys=True, default=str),
        Z.cache_key(),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def load_or_build(s: MoeSettings = SETTINGS, log: Callable[[str], None] | None = None) -> MoeZoo:
    zoo = Z.load_or_build(log=log)
    base = Z.cache_root() / "zoo-moe"
    key = cache_key(s)
    final = base / key
    if not (final / MANIFEST).is_file():
        with Z._locked(base / f".{key}.lock"):
            if not (final / MANIFEST).is_file():
                Z.build_into(final, lambda temp: build(temp, s, log))
    manifest = json.loads((final / MANIFEST).read_text(encoding="utf-8"))
    models = {name: final / entry["path"] for name, entry in manifest["models"].items()}

    def path(name: str) -> Path:
        return models.get(name) or zoo.models[name]

    def pairs(kind: str) -> list[Pair]:
        return [
            Z.Pair(
                p["name"],
                path(p["a"]),
                path(p["b"]),
                frozenset(["upcycled"] if p.get("upcycled") else []),
                manifest["models"].get(p["b"], {}).get("recipe", ""),
            )
            for p in manifest[kind]
        ]

    return MoeZoo(final, manifest, models, pairs("derived"), pairs("independent"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build"], help="build (or load) the MoE zoo")
    parser.parse_args(argv)
    zoo = load_or_build(log=lambda message: print(message, flush=True))
    print(zoo.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
