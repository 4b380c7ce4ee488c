"""The lineage zoo's own invariants: what `unshell.compare` is tested against must itself be true.

Checked against oracles that are not the zoo's code: transformers' ``LlamaForCausalLM`` for the
forward pass, the ``tokenizers`` library for tokenizer.json, gguf-py's reader and dequantizers for
the GGUF files, llama2.c's own rotary tables for the stories260K conversion, and plain linear
algebra on the stored tensors (a LoRA delta has low rank, a merge is an average, ...).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unshell
from unshell.formats import open_checkpoint
from zoo_fixture import Zoo, zoo, zoo_module

Z = zoo_module()
Tensors = dict[str, np.ndarray]
# The forward passes here are tiny; one thread cannot thrash when the machine is busy.


@pytest.fixture(scope="module")
def built() -> Zoo:
    return zoo()


@functools.cache
def stored(path: Path) -> Tensors:
    """Every tensor of a checkpoint as float32 numpy, under its stored name."""
    with open_checkpoint(path) as checkpoint:
        return {name: np.array(checkpoint.read(name), dtype=np.float32) for name in checkpoint.tensors}


def true_named(built: Zoo, name: str) -> Tensors:
    """A model's tensors under their Hugging Face names (renames undone with the manifest's truth)."""
    renamed = built.info(name).get("renamed", {})
    return {
        renamed.get(key, key): value
        for key, value in stored(built.models[name] / "model.safetensors").items()
    }


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def sample_ids(vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 48), generator=torch.Generator().manual_seed(seed))


def logits_of(built: Zoo, name: str, ids: torch.Tensor) -> torch.Tensor:
    """Logits of a zoo model through the zoo's forward (HF folders, GGUF files or llama2.c)."""
    entry = built.info(name)
    path = built.models[name]
    if entry["format"] == "llama2c":
        params, shape = Z.load_llama2c(path)
    elif entry["format"] == "gguf":
        shape = Z.Shape.from_config(entry["config"])
        params = Z.load_gguf(path, shape)
    else:
        params, shape = Z.load_hf(path, entry.get("renamed"))
    with Z.torch_session(1):
        result: torch.Tensor = Z.forward(params, shape, ids)
    return result


# --- what the zoo holds --------------------------------------------------------------------------


def test_zoo_covers_every_case_the_issue_lists(built: Zoo) -> None:
    how = set().union(*(pair.how for pair in built.derived))
    assert {
        "finetune",
        "continued-pretraining",
        "pruned",
        "upscaled",
        "vocab-extended",
        "quantized",
        "merged",
        "obfuscated",
    } <= how
    obfuscations = {
        step for entry in built.manifest["models"].values() for step in entry.get("obfuscations", [])
    }
    assert obfuscations == {
        "rename",
        "permute-mlp",
        "permute-heads",
        "signed-permute-residual",
        "rotate-residual",
        "scale-pairs",
    }
    same_recipe = [name for name in built.bases if name.startswith("base-s")]
    assert len(same_recipe) >= 4
    assert {"stories260K", "llama2xs", "base-docstrings-s4", "base-recipe2-s5"} <= set(built.bases)
    assert {"lora-merged", "q8_0", "q4_k", "stories260K-finetune", "stories260K-finetune-obfuscated"} <= set(
        built.models
    )


def test_pairs_are_consistent_with_the_recorded_ancestry(built: Zoo) -> None:
    models = built.manifest["models"]
    by_path = {path: name for name, path in built.models.items()}

    def root(name: str) -> str:
        while models[name].get("source"):
            name = models[name]["source"]
        return name

    names = [pair.name for pair in built.derived + built.independent]
    assert len(names) == len(set(names))
    for pair in built.derived:
        assert pair.a.exists() and pair.b.exists(), pair.name
        assert root(by_path[pair.a]) == root(by_path[pair.b]), pair.name
        assert pair.how, pair.name
    for pair in built.independent:
        assert pair.a.exists() and pair.b.exists(), pair.name
        assert root(by_path[pair.a]) != root(by_path[pair.b]), pair.name
        assert not pair.how
    derived_keys = {frozenset((p.a, p.b)) for p in built.derived}
    assert not derived_keys & {frozenset((p.a, p.b)) for p in built.independent}
    for pair in built.derived + built.identical:
        if pair.layers is not None:
            layers_b = built.info(by_path[pair.b])["layer_source"]
            assert len(pair.layers) == len(layers_b), pair.name
            assert all(-1 <= i < len(built.info(by_path[pair.a])["layer_source"]) for i in pair.layers)
    renamed_only = [n for n, e in built.manifest["models"].items() if e.get("obfuscations") == ["rename"]]
    assert renamed_only and all("obfuscated" not in built.info(n)["how"] for n in renamed_only)
    same_seed_pairs = [p for p in built.independent if p.note == "same data and recipe, different seeds"]
    assert len(same_seed_pairs) >= 6
    assert len(built.derived) >= 30 and len(built.independent) >= 100


def test_every_model_is_recognized_as_llama_with_its_recorded_shape(built: Zoo) -> None:
    for name, path in built.models.items():
        result = unshell.inspect(path)
        assert result.family == "llama", name
        if "config" not in built.info(name):
            continue
        expected = built.info(name)["config"]
        found = result.to_dict()["architecture"]["config"]
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "num_key_value_heads",
            "intermediate_size",
            "vocab_size",
        ):
            assert found[key] == expected[key], (name, key)


# --- the forward pass and the tokenizer against their reference implementations ------------------


@pytest.mark.parametrize(
    "name",
    ["base-s0", "pruned-width", "upscaled", "vocab-extended", "finetune-rotated", "stories260K-finetune"],
)
def test_zoo_forward_equals_transformers_llama(built: Zoo, name: str) -> None:
    from transformers import LlamaForCausalLM

    config = built.info(name)["config"]
    ids = sample_ids(config["vocab_size"])
    model = LlamaForCausalLM.from_pretrained(built.models[name]).eval()  # float32, as config.json says
    assert model.dtype == torch.float32
    with torch.no_grad():
        reference = model(ids).logits
    ours = logits_of(built, name, ids)
    assert float((ours - reference).abs().max()) <= 1e-4 * float(reference.abs().max())


def test_stories260k_conversion_matches_llama2c_interleaved_rotary(built: Zoo) -> None:
    """llama2.c rotates adjacent pairs with the cos/sin tables stored in the file; the converted
    model (rows permuted to rotate-half) must give the same logits, and predict children's stories."""
    raw = {k: torch.from_numpy(v) for k, v in stored(built.models["stories260K"]).items()}
    with open_checkpoint(built.models["stories260K"]) as checkpoint:
        header = checkpoint.metadata["llama2c"]
    tokenizer = Z.Llama2cTokenizer.read(Z.STORIES_TOKENIZER)
    story = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
    ids = torch.from_numpy(tokenizer.encode(story).astype(np.int64))[None]
    reference = _llama2c_forward(raw, header, ids)
    ours = logits_of(built, "stories260K", ids)
    assert float((ours - reference).abs().max()) <= 1e-5 * float(reference.abs().max())
    assert float(F.cross_entropy(ours[0, :-1], ids[0, 1:])) < 1.0  # uniform would be ln 512 = 6.2


def _llama2c_forward(w: dict[str, torch.Tensor], header: dict[str, Any], ids: torch.Tensor) -> torch.Tensor:
    """llama2.c's model.py forward on its own (Meta-layout) tensors, complex-pair rotary."""
    batch, length = ids.shape
    dim, heads, kv_heads = header["dim"], header["n_heads"], header["n_kv_heads"]
    head = dim // heads
    cos, sin = w["freqs_cos"][:length, None, :], w["freqs_sin"][:length, None, :]

    def norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight

    def rotate(x: torch.Tensor) -> torch.Tensor:
        real, imag = x.reshape(*x.shape[:-1], head // 2, 2).unbind(-1)
        return torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1).flatten(-2)

    x = w["tok_embeddings.weight"][ids]
    for i in range(header["n_layers"]):
        p = f"layers.{i}."
        h = norm(x, w[p + "attention_norm.weight"])
        q = rotate((h @ w[p + "attention.wq.weight"].T).view(batch, length, heads, head))
        k = rotate((h @ w[p + "attention.wk.weight"].T).view(batch, length, kv_heads, head))
        v = (h @ w[p + "attention.wv.weight"].T).view(batch, length, kv_heads, head)
        k, v = k.repeat_interleave(heads // kv_heads, 2), v.repeat_interleave(heads // kv_heads, 2)
        attention = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + attention.transpose(1, 2).reshape(batch, length, dim) @ w[p + "attention.wo.weight"].T
        h = norm(x, w[p + "ffn_norm.weight"])
        gate, up = h @ w[p + "feed_forward.w1.weight"].T, h @ w[p + "feed_forward.w3.weight"].T
        x = x + (F.silu(gate) * up) @ w[p + "feed_forward.w2.weight"].T
    return norm(x, w["norm.weight"]) @ w["tok_embeddings.weight"].T


@pytest.mark.parametrize("name", ["base-s0", "vocab-extended"])
def test_tokenizer_json_loads_in_hf_tokenizers_and_compresses_real_text(built: Zoo, name: str) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(built.models[name] / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == built.info(name)["config"]["vocab_size"]
    text = Z.corpora().docs[:30_000]
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text
    assert len(text.encode()) / len(ids) > 1.8  # the merges were learned on this kind of text
    assert max(ids) >= 256


# --- obfuscations keep the function and change the weights ---------------------------------------


def _obfuscated(built: Zoo) -> list[str]:
    return [name for name, entry in built.manifest["models"].items() if entry.get("obfuscations")]


def test_obfuscated_models_compute_their_sources_logits(built: Zoo) -> None:
    names = _obfuscated(built)
    assert len(names) >= 12
    for name in names:
        source = built.info(name)["source"]
        ids = sample_ids(built.info(name)["config"]["vocab_size"], seed=len(name))
        expected = logits_of(built, source, ids)
        found = logits_of(built, name, ids)
        error = float((found - expected).abs().max()) / float(expected.abs().max())
        assert error < 2e-5, (name, error)


# Which matrices each obfuscation rewrites (a residual transform rewrites every matrix).
_TOUCHED = {
    "rename": set(),
    "permute-mlp": {"gate_proj", "up_proj", "down_proj"},
    "permute-heads": {"q_proj", "k_proj", "v_proj", "o_proj"},
    "scale-pairs": {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"},
    "signed-permute-residual": {"*"},
    "rotate-residual": {"*"},
}


def _touched(step: str, single_kv_head: bool) -> set[str]:
    if step == "permute-heads" and single_kv_head:
        return {"q_proj", "o_proj"}  # one KV head has nowhere to move
    return _TOUCHED[step]


def test_obfuscations_really_change_the_stored_weights(built: Zoo) -> None:
    for name in _obfuscated(built):
        steps = built.info(name)["obfuscations"]
        ours = stored(built.models[name] / "model.safetensors")
        if "rename" in steps:
            assert all(key.startswith("w.") for key in ours)
            assert len(set(built.info(name)["renamed"].values())) == len(ours)
        single_kv_head = built.info(name)["config"]["num_key_value_heads"] == 1
        touched = set().union(*(_touched(step, single_kv_head) for step in steps))
        theirs = _source_tensors(built, built.info(name)["source"])
        theirs.setdefault("lm_head.weight", theirs["model.embed_tokens.weight"])  # a tied source
        mine = true_named(built, name)
        for key, value in mine.items():
            if value.ndim != 2:
                continue
            role = key.split(".")[-2]
            if "*" in touched or role in touched:
                assert not np.array_equal(value, theirs[key]), (name, key)
            elif key in theirs and theirs[key].shape == value.shape:
                assert np.array_equal(value, theirs[key]), (name, key)


def _source_tensors(built: Zoo, name: str) -> Tensors:
    if built.info(name)["format"] == "llama2c":
        params, _ = Z.load_llama2c(built.models[name])
        return {k: v.numpy() for k, v in params.items()}
    return dict(true_named(built, name))


# --- derivatives moved, and how ------------------------------------------------------------------


def test_finetunes_and_continued_pretraining_moved_by_the_recorded_amount(built: Zoo) -> None:
    base = true_named(built, "base-s0")
    changes = {}
    for name in ("finetune", "finetune-2", "continued-pretraining", "lora-merged", "merged"):
        ours = true_named(built, name)
        num = sum(float(np.sum((ours[k].astype(np.float64) - base[k]) ** 2)) for k in base)
        den = sum(float(np.sum(base[k].astype(np.float64) ** 2)) for k in base)
        changes[name] = (num / den) ** 0.5
        assert changes[name] == pytest.approx(built.info(name)["relative_change"], abs=1e-3)
    assert 0.01 < changes["finetune"] < 0.5
    assert changes["continued-pretraining"] > 0.5
    assert changes["lora-merged"] > 0.005
    tuned = stored(built.models["stories260K-finetune"] / "model.safetensors")
    assert (
        relative(
            tuned["model.embed_tokens.weight"], stored(built.models["stories260K"])["tok_embeddings.weight"]
        )
        > 0.01
    )


def test_lora_merge_changed_only_q_and_v_and_by_a_low_rank_delta(built: Zoo) -> None:
    base, merged = true_named(built, "base-s0"), true_named(built, "lora-merged")
    rank = built.settings.lora_rank
    for key, value in base.items():
        if key.endswith(("q_proj.weight", "v_proj.weight")):
            singular = np.linalg.svd(merged[key].astype(np.float64) - value, compute_uv=False)
            assert singular[rank - 1] > 1e-4 and singular[rank] < 1e-5 * singular[0], key
        else:
            assert np.array_equal(merged[key], value), key


def test_merged_is_the_average_of_the_two_finetunes(built: Zoo) -> None:
    first, second, merged = (true_named(built, n) for n in ("finetune", "finetune-2", "merged"))
    for key in merged:
        np.testing.assert_allclose(merged[key], (first[key] + second[key]) / 2, rtol=0, atol=1e-7)
    assert (
        relative(first["model.layers.0.mlp.up_proj.weight"], second["model.layers.0.mlp.up_proj.weight"])
        > 0.01
    )


@pytest.mark.parametrize("name", ["pruned-depth", "upscaled"])
def test_depth_changes_keep_each_layer_closest_to_its_recorded_source_layer(built: Zoo, name: str) -> None:
    base, ours = true_named(built, "base-s0"), true_named(built, name)
    sources = built.info(name)["layer_source"]
    assert len(sources) == built.info(name)["config"]["num_hidden_layers"]
    for j, source in enumerate(sources):
        key = f"model.layers.{j}.mlp.down_proj.weight"
        distances = [relative(ours[key], base[f"model.layers.{i}.mlp.down_proj.weight"]) for i in range(4)]
        assert int(np.argmin(distances)) == source and 0 < distances[source] < 0.9, (name, j, distances)
    if name == "upscaled":  # the duplicated layers were trained apart
        assert not np.array_equal(
            ours["model.layers.1.mlp.down_proj.weight"], ours["model.layers.3.mlp.down_proj.weight"]
        )


def test_width_pruning_and_vocab_extension_shapes(built: Zoo) -> None:
    base = true_named(built, "base-s0")
    pruned = true_named(built, "pruned-width")
    assert pruned["model.layers.0.mlp.up_proj.weight"].shape == (192, 128)
    assert pruned["model.layers.0.self_attn.q_proj.weight"].shape == (64, 128)
    assert pruned["model.layers.0.self_attn.k_proj.weight"].shape == (32, 128)
    extended = true_named(built, "vocab-extended")
    assert extended["model.embed_tokens.weight"].shape == (576, 128)
    assert extended["lm_head.weight"].shape == (576, 128)
    old_rows = extended["model.embed_tokens.weight"][:512]
    assert 0.001 < relative(old_rows, base["model.embed_tokens.weight"]) < 0.9


# --- quantized files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "types", "max_error"),
    [
        ("q8_0", {"Q8_0", "F32"}, 0.01),
        ("q4_k", {"Q4_K", "Q5_0", "Q8_0", "F32"}, 0.15),
        ("q4_0", {"Q4_0", "F32"}, 0.15),
        ("finetune-rotated-q8_0", {"Q8_0", "F32"}, 0.01),
    ],
)
def test_quantized_gguf_opens_with_unshell_and_dequantizes_like_gguf_py(
    built: Zoo, name: str, types: set[str], max_error: float
) -> None:
    import gguf
    from gguf.quants import dequantize

    path = built.models[name]
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "llama"
    found_types = {tensor.tensor_type.name for tensor in reader.tensors}
    assert found_types == types
    ours = stored(path)
    source = true_named(built, built.info(name)["source"])
    names = {
        gguf_name: hf
        for hf, gguf_name in Z.gguf_names(Z.Shape.from_config(built.info(name)["config"])).items()
    }
    for tensor in reader.tensors:
        reference = dequantize(tensor.data, tensor.tensor_type).reshape(ours[tensor.name].shape)
        np.testing.assert_array_equal(ours[tensor.name], reference)
        original = source[names[tensor.name]]
        if tensor.name.endswith(("attn_q.weight", "attn_k.weight")):  # llama.cpp's rotary row order
            heads = reader.fields[
                "llama.attention.head_count" + ("" if "attn_q" in tensor.name else "_kv")
            ].contents()
            original = Z.hf_to_meta_rows(original, heads)
        assert relative(reference, original) < max_error, tensor.name
    ids = sample_ids(512)
    expected, found = logits_of(built, built.info(name)["source"], ids), logits_of(built, name, ids)
    agreement = float((expected.argmax(-1) == found.argmax(-1)).float().mean())
    assert agreement > (0.95 if "q8" in name else 0.7)


def test_q4_k_quantizer_round_trips_through_gguf_py() -> None:
    import gguf
    from gguf.quants import dequantize

    values = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float32) * 0.05
    values[0, :32] = 0.0  # a constant sub-block
    blocks = Z.quantize_q4_k(values)
    assert blocks.shape == (8, 2 * 144)
    decoded = dequantize(blocks, gguf.GGMLQuantizationType.Q4_K)
    assert decoded.shape == values.shape
    np.testing.assert_allclose(decoded[0, :32], 0.0, atol=1e-3)
    assert relative(decoded, values) < 0.1
    assert np.unique(np.round(decoded[1, :32] / 1e-6)).size <= 16  # 4-bit values within a sub-block


# --- determinism and the null set ----------------------------------------------------------------


def test_training_is_deterministic_and_seeded() -> None:
    bpe, _ = Z.tokenizers()
    shape = Z.base_shape(Z.SETTINGS, bpe.vocab_size)
    tokens = bpe.encode(Z.corpora().docs[:50_000])
    recipe = Z.Recipe(steps=3, lr=1e-3, batch=4, seq=32, warmup=1)
    with Z.torch_session(1):
        runs = [
            Z.train_copy(Z.init_params(shape, seed), shape, tokens, recipe, seed)[0] for seed in (5, 5, 6)
        ]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.equal(
        runs[0]["model.layers.0.mlp.up_proj.weight"], runs[2]["model.layers.0.mlp.up_proj.weight"]
    )


def test_null_pairs_are_distinct_independent_models(built: Zoo) -> None:
    pairs = built.null_pairs(200)
    assert len(pairs) == 200
    assert len({frozenset((p.a, p.b)) for p in pairs}) == 200
    models = sorted({p.a for p in pairs} | {p.b for p in pairs})
    assert len(models) >= 21
    rows = []
    for model in models:
        with open_checkpoint(model / "model.safetensors") as checkpoint:
            rows.append(np.array(checkpoint.read("model.layers.0.mlp.up_proj.weight")[0]))
    for i in range(1, len(rows)):
        assert not np.array_equal(rows[0], rows[i])
    assert json.loads((models[0] / "config.json").read_text())["hidden_size"] == built.settings.hidden
    assert unshell.inspect(models[-1]).family == "llama"


# --- the 7B benchmark pair's generator, run tiny ------------------------------------------------


def test_make_7b_pair_writes_a_noisy_copy_and_a_function_preserving_rotation(tmp_path: Path) -> None:
    from file_modules import ROOT, file_module

    module = file_module(ROOT / "benchmarks" / "make_7b_pair.py", "unshell_bench_make_7b_pair")
    shape = module.Llama(hidden=64, layers=2, heads=4, kv_heads=4, intermediate=96, vocab=3000)
    record = module.make_pair(tmp_path, shape, seed=3, noise=0.1, log=lambda _: None)
    assert set(record["models"]) == {"base", "noisy", "rotated"}
    loaded = {label: Z.load_hf(tmp_path / label) for label in ("base", "noisy", "rotated")}
    base = stored(tmp_path / "base" / "model.safetensors")
    noisy = stored(tmp_path / "noisy" / "model.safetensors")
    rotated = stored(tmp_path / "rotated" / "model.safetensors")
    with open_checkpoint(tmp_path / "rotated" / "model.safetensors") as checkpoint:
        assert {info.dtype for info in checkpoint.tensors.values()} == {"BF16"}
    for name, value in base.items():
        if value.ndim == 2:
            assert 0.09 < relative(noisy[name], value) < 0.11, name
            assert relative(rotated[name], value) > 0.5, name
        else:
            assert np.all(rotated[name] == 1.0)
    ids = sample_ids(3000)
    with Z.torch_session(1):
        logits = {label: Z.forward(params, shape_, ids) for label, (params, shape_) in loaded.items()}
    scale = float(logits["base"].abs().max())
    assert float((logits["rotated"] - logits["base"]).abs().max()) < 0.02 * scale  # bf16 rounding only
    assert float((logits["noisy"] - logits["base"]).abs().max()) > 0.05 * scale
    assert unshell.inspect(tmp_path / "rotated").family == "llama"


def test_identical_copies_hold_their_sources_values_exactly(built: Zoo) -> None:
    by_path = {path: name for name, path in built.models.items()}
    names = {by_path[p.b] for p in built.identical}
    assert names >= {"base-s0-resharded", "base-s0-renamed", "base-s0-f32", "finetune-renamed"}
    for pair in built.identical:
        name, source = by_path[pair.b], by_path[pair.a]
        if built.info(name)["format"] == "gguf":
            shape = Z.Shape.from_config(built.info(name)["config"])
            copy = {k: v.numpy() for k, v in Z.load_gguf(pair.b, shape).items()}
        elif (pair.b / "model.safetensors.index.json").is_file():
            copy = stored(pair.b / "model.safetensors.index.json")
            assert len(list(pair.b.glob("model-*-of-00003.safetensors"))) == 3
        else:
            copy = true_named(built, name)
        original = true_named(built, source)
        assert copy.keys() == original.keys(), name
        for key, value in original.items():
            np.testing.assert_array_equal(copy[key], value)
