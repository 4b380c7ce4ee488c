"""Invariants of the architecture catalog data (``arch/catalog/*.json`` and ``arch/aliases.json``).

The files are produced by ``tools/gen_catalog.py`` from transformers' modeling code; these tests
only read the JSON (no torch, no transformers) and check that the templates, evaluated with each
family's ``config_map``, reproduce the recorded probe tensors and the tensor and parameter counts
of the real published configs.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

ARCH = Path(__file__).resolve().parents[1] / "src" / "unshell" / "arch"
CATALOG = ARCH / "catalog"
DOCS: dict[str, dict[str, Any]] = {
    path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(CATALOG.glob("*.json"))
}
ALIASES: dict[str, Any] = json.loads((ARCH / "aliases.json").read_text(encoding="utf-8"))

# Mirrors ROLES in tools/gen_catalog.py (kept separate so these tests never import torch).
GLOBAL_ROLES = frozenset(
    {
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
    }
)
LAYER_ROLES = frozenset(
    {
        *(
            f"{n}.{k}"
            for n in ("attn_norm", "ffn_norm", "post_attn_norm", "post_ffn_norm")
            for k in ("weight", "bias")
        ),
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
        "moe.shared.gate.weight",
        "moe.shared.up.weight",
        "moe.shared.down.weight",
        "moe.shared_gate.weight",
        "moe.router.e_score_correction_bias",
        *(f"attn.{p}.weight" for p in ("q_a", "q_a_norm", "q_b", "kv_a", "kv_a_norm", "kv_b", "k_b", "v_b")),
    }
)
SHAPE_SYMBOLS = frozenset(
    {"H", "I", "V", "L", "P", "T", "E", "S", "nh", "nkv", "d", "Rq", "Rkv", "Qa", "Ka", "KVb", "O", "Id"}
)
REQUIRED_KEYS = {
    "schema_version": int,
    "family": str,
    "model_type": str,
    "reference": str,
    "architectures": list,
    "reference_family": str,
    "source": str,
    "config_map": dict,
    "globals": list,
    "layer": list,
    "groups": dict,
    "group_conditions": dict,
    "buffers": list,
    "fused": dict,
    "activation": str,
    "norm": str,
    "positional": str,
    "parallel_residual": bool,
    "published": list,
    "probe": dict,
}
FAMILY_IDS = sorted(DOCS)
ENCODERS = {"bert"}  # no language-model head


# --- a small evaluator for the catalog's integer expressions -----------------------------------


def _names(expression: str) -> set[str]:
    return {node.id for node in ast.walk(ast.parse(expression, mode="eval")) if isinstance(node, ast.Name)}


def evaluate(expression: str | int, values: Mapping[str, int]) -> int:
    if isinstance(expression, int):
        return expression

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return int(node.value)
        if isinstance(node, ast.Name):
            return int(values[node.id])
        if isinstance(node, ast.BinOp):
            left, right = walk(node.left), walk(node.right)
            operations = {
                ast.Add: int.__add__,
                ast.Sub: int.__sub__,
                ast.Mult: int.__mul__,
                ast.FloorDiv: int.__floordiv__,
            }
            return operations[type(node.op)](left, right)
        raise AssertionError(f"unsupported element in {expression!r}: {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


def resolve(config_map: Mapping[str, list[str]], config: Mapping[str, Any]) -> dict[str, int]:
    """config_map semantics: the first source present (and not null) wins; "=expr" computes a default."""
    values: dict[str, int] = {}

    def value_of(symbol: str) -> int:
        if symbol not in values:
            for source in config_map[symbol]:
                if source.startswith("="):
                    values[symbol] = evaluate(source[1:], {n: value_of(n) for n in _names(source[1:])})
                    break
                if config.get(source) is not None:
                    values[symbol] = int(config[source])
                    break
            else:
                raise AssertionError(f"no source of {symbol} in config")
        return values[symbol]

    for symbol in config_map:
        value_of(symbol)
    return values


def expand(doc: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    values = resolve(doc["config_map"], config)
    present = {group for group, condition in doc["group_conditions"].items() if evaluate(condition, values)}
    table: dict[str, tuple[int, ...]] = {}
    for scope, layers in (("globals", [None]), ("layer", range(values["L"]))):
        for entry in doc[scope]:
            if entry.get("group") not in (None, *present):
                continue
            # "dense" entries exist in the first Ld layers only, "sparse" ones in the others.
            kind = entry.get("layers")
            shape = tuple(evaluate(dim, values) for dim in entry["shape"])
            repeats = range(values[entry["repeat"]]) if "repeat" in entry else [None]
            for layer in layers:
                if kind is not None and layer is not None and (layer < values["Ld"]) != (kind == "dense"):
                    continue
                for expert in repeats:
                    name = entry["name"]
                    if layer is not None:
                        name = name.replace("{i}", str(layer))
                    if expert is not None:
                        name = name.replace("{e}", str(expert))
                    assert name not in table, f"{doc['family']}: {name} produced twice"
                    table[name] = shape
    return table


def totals(table: Mapping[str, tuple[int, ...]]) -> tuple[int, int]:
    parameters = 0
    for shape in table.values():
        size = 1
        for dim in shape:
            size *= dim
        parameters += size
    return len(table), parameters


def entries(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*doc["globals"], *doc["layer"]]


def probe_table(doc: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(shape) for name, shape in doc["probe"]["tensors"]}


# --- the evaluator itself -------------------------------------------------------------------------


def test_evaluator_follows_config_map_semantics() -> None:
    config_map = {
        "H": ["hidden_size"],
        "nh": ["n_head"],
        "d": ["head_dim", "=H//nh"],
        "x": ["=nh-(nh-1)*mq"],
        "mq": ["mq", "=1"],
    }
    assert resolve(config_map, {"hidden_size": 64, "n_head": 4, "head_dim": None}) == {
        "H": 64,
        "nh": 4,
        "d": 16,
        "x": 1,
        "mq": 1,
    }
    assert resolve(config_map, {"hidden_size": 64, "n_head": 4, "head_dim": 32, "mq": False})["x"] == 4
    assert evaluate("(nh+2*nkv)*d", {"nh": 8, "nkv": 2, "d": 16}) == 192


# --- coverage -------------------------------------------------------------------------------------


def test_catalog_covers_every_family_in_scope() -> None:
    expected = {
        "llama", "deepseek-v1", "yi", "internlm", "minicpm", "mistral", "mixtral", "qwen", "qwen2", "qwen3",
        "baichuan", "baichuan-alibi", "internlm2", "chatglm", "glm", "glm4", "gemma", "gemma2", "gemma3",
        "phi", "phi3", "falcon", "falcon-new-decoder", "gpt_neox", "gpt2", "bert", "olmo", "olmo2", "stablelm",
        "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3",
    }  # fmt: skip
    assert expected <= set(DOCS)


# --- per-family schema ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_family_schema(family: str) -> None:
    doc = DOCS[family]
    for key, kind in REQUIRED_KEYS.items():
        assert isinstance(doc.get(key), kind), f"{family}: {key} missing or not {kind.__name__}"
    assert doc["schema_version"] == 1
    assert doc["family"] == family
    assert doc["reference"] in doc["architectures"]
    assert doc["reference_family"] in DOCS
    assert doc["norm"] in {"rmsnorm", "layernorm", "none"}
    assert doc["positional"] in {"rope", "rope-partial", "learned", "alibi", "none"}
    assert doc["source"].startswith(
        ("generated from transformers ", "hand-written from docs/tensor-naming.md")
    )
    assert doc["globals"] and doc["layer"] and doc["published"]
    for symbol, sources in doc["config_map"].items():
        assert symbol.isidentifier() and sources and all(isinstance(s, str) for s in sources), (
            family,
            symbol,
        )
    for symbol in ("H", "L", "nh", "nkv", "d", "V"):
        assert symbol in doc["config_map"], f"{family}: config_map lacks {symbol}"


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_roles_come_from_the_vocabulary(family: str) -> None:
    doc = DOCS[family]
    for entry in doc["globals"]:
        assert entry["role"] in GLOBAL_ROLES, (family, entry)
    for entry in doc["layer"]:
        assert entry["role"] in LAYER_ROLES, (family, entry)
    roles = {e["role"] for e in entries(doc)}
    assert "embed.weight" in roles
    assert ("lm_head.weight" in roles) == (family not in ENCODERS)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_templates_are_well_formed(family: str) -> None:
    doc = DOCS[family]
    names = [e["name"] for e in entries(doc)]
    assert len(names) == len(set(names)), f"{family}: duplicate template names"
    for entry in doc["globals"]:
        assert "{i}" not in entry["name"] and "{e}" not in entry["name"] and "repeat" not in entry
    for entry in doc["layer"]:
        assert entry["name"].count("{i}") == 1, entry
        assert ("{e}" in entry["name"]) == ("repeat" in entry), entry
        if "repeat" in entry:
            assert entry["repeat"] in SHAPE_SYMBOLS, entry
    for entry in entries(doc):
        assert set(entry) <= {"name", "role", "shape", "group", "repeat", "transposed", "layers"}, entry
        if "layers" in entry:
            assert entry["layers"] in {"dense", "sparse"} and "{i}" in entry["name"], entry
            assert "Ld" in doc["config_map"], f"{family}: layers without an Ld symbol"
        assert entry["shape"], entry
        for dim in entry["shape"]:
            if isinstance(dim, int):
                assert dim > 0
                continue
            tree = ast.parse(dim, mode="eval")
            # Shapes are integer polynomials (the recognizer solves them linearly in nh*d, nkv*d).
            for node in ast.walk(tree):
                assert isinstance(
                    node,
                    ast.Expression
                    | ast.BinOp
                    | ast.Add
                    | ast.Sub
                    | ast.Mult
                    | ast.Name
                    | ast.Constant
                    | ast.Load,
                ), f"{family}: {dim!r}"
            assert _names(dim) <= SHAPE_SYMBOLS, f"{family}: {dim!r}"


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_groups_are_declared_and_used(family: str) -> None:
    doc = DOCS[family]
    used = {e["group"] for e in entries(doc) if "group" in e}
    assert used == set(doc["groups"]) == set(doc["group_conditions"]), family
    for description in doc["groups"].values():
        assert isinstance(description, str) and description
    for condition in doc["group_conditions"].values():
        assert _names(condition) <= set(doc["config_map"]), (family, condition)
    # An untied lm_head is optional exactly when the family can tie it.
    heads = [e for e in doc["globals"] if e["role"] == "lm_head.weight"]
    if "untied" in doc["groups"]:
        assert all(e.get("group") == "untied" for e in heads)
        assert doc["group_conditions"]["untied"] == "1-tie"


# --- the recorded transformers output -------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_templates_reproduce_the_probe(family: str) -> None:
    doc = DOCS[family]
    probe = doc["probe"]
    config = probe["config"]
    assert config["model_type"] == doc["model_type"]
    assert config["architectures"][0] in doc["architectures"]
    recorded = probe_table(doc)
    assert len(recorded) == len(probe["tensors"]), f"{family}: duplicate probe names"
    assert expand(doc, config) == recorded
    # The probe exercises at least two layers, so layer templates were abstracted from real indices.
    assert resolve(doc["config_map"], config)["L"] >= 2


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_published_configs_match_recorded_counts(family: str) -> None:
    doc = DOCS[family]
    names = [p["name"] for p in doc["published"]]
    assert len(names) == len(set(names))
    for published in doc["published"]:
        config = published["config"]
        assert config["model_type"] == doc["model_type"], published["name"]
        assert config["architectures"][0] in doc["architectures"], published["name"]
        assert totals(expand(doc, config)) == (published["tensors"], published["parameters"]), published[
            "name"
        ]


# Parameter counts known independently of transformers (model cards, papers, safetensors headers).
KNOWN_PARAMETERS = {
    ("llama", "meta-llama/Llama-2-7b-hf"): 6_738_415_616,
    ("llama", "meta-llama/Llama-2-70b-hf"): 68_976_648_192,
    ("llama", "meta-llama/Meta-Llama-3-8B"): 8_030_261_248,
    ("llama", "meta-llama/Llama-3.2-1B"): 1_235_814_400,
    ("mistral", "mistralai/Mistral-7B-v0.1"): 7_241_732_096,
    ("mixtral", "mistralai/Mixtral-8x7B-v0.1"): 46_702_792_704,
    ("qwen2", "Qwen/Qwen2.5-7B"): 7_615_616_512,
    ("qwen2", "Qwen/Qwen2.5-0.5B"): 494_032_768,
    ("qwen", "Qwen/Qwen-7B"): 7_721_324_544,
    ("baichuan", "baichuan-inc/Baichuan-7B"): 7_000_559_616,
    ("chatglm", "THUDM/chatglm2-6b"): 6_243_584_000,
    ("gemma", "google/gemma-2b"): 2_506_172_416,
    ("gemma", "google/gemma-7b"): 8_537_680_896,
    ("gemma2", "google/gemma-2-2b"): 2_614_341_888,
    ("phi", "microsoft/phi-2"): 2_779_683_840,
    ("phi3", "microsoft/Phi-3-mini-4k-instruct"): 3_821_079_552,
    ("falcon", "tiiuae/falcon-7b"): 6_921_720_704,
    ("gpt_neox", "EleutherAI/pythia-160m"): 162_322_944,
    ("gpt2", "openai-community/gpt2"): 124_439_808,
    ("bert", "google-bert/bert-base-uncased"): 109_482_240,
    ("bert", "sentence-transformers/all-MiniLM-L6-v2"): 22_713_216,
    ("yi", "01-ai/Yi-6B (original upload)"): 6_061_035_520,
}


@pytest.mark.parametrize(("family", "model"), sorted(KNOWN_PARAMETERS))
def test_known_parameter_counts(family: str, model: str) -> None:
    published = {p["name"]: p for p in DOCS[family]["published"]}[model]
    assert published["parameters"] == KNOWN_PARAMETERS[family, model]


# --- fused tensors --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_fused_tensors_split_into_known_parts(family: str) -> None:
    doc = DOCS[family]
    by_role = {e["role"]: e for e in entries(doc)}
    values = resolve(doc["config_map"], doc["probe"]["config"])
    for role, spec in doc["fused"].items():
        assert role in by_role, f"{family}: fused {role} has no template"
        assert spec["layout"] in {"contiguous", "grouped", "per_head_interleaved"}
        assert isinstance(spec["transposed"], bool)
        for part in spec["parts"]:
            assert part in LAYER_ROLES and part not in by_role, (family, part)
        assert len(spec["sizes"]) == len(spec["parts"])
        fused_dim = evaluate(by_role[role]["shape"][spec["axis"]], values)
        assert sum(evaluate(size, values) for size in spec["sizes"]) == fused_dim, (family, role)
        assert bool(by_role[role].get("transposed", False)) == spec["transposed"], (family, role)


# --- relations between families -------------------------------------------------------------------


def _required_roles(doc: Mapping[str, Any]) -> set[str]:
    return {e["role"] for e in entries(doc) if "group" not in e}


@pytest.mark.parametrize("family", [f for f in FAMILY_IDS if DOCS[f]["reference_family"] != f])
def test_clones_have_their_reference_layout(family: str) -> None:
    doc, reference = DOCS[family], DOCS[DOCS[family]["reference_family"]]
    assert _required_roles(doc) == _required_roles(reference)
    # Exact clones hold the same multiset of shapes as the reference family for the same config.
    config = dict(doc["published"][0]["config"])
    reference_config = {**config, "model_type": reference["model_type"]}
    if "bias" in config:
        reference_config["attention_bias"] = config["bias"]
    assert sorted(expand(doc, config).values()) == sorted(expand(reference, reference_config).values())


def test_deepseek_v1_is_llama() -> None:
    strip = ("family", "reference_family", "source", "published", "architectures")
    llama = {k: v for k, v in DOCS["llama"].items() if k not in strip}
    deepseek = {k: v for k, v in DOCS["deepseek-v1"].items() if k not in strip}
    assert deepseek == llama


def test_bert_variant_is_prefixed_base_model() -> None:
    (variant,) = DOCS["bert"]["variants"]
    assert variant["class"] == "BertForMaskedLM" and variant["prefix"] == "bert."
    assert set(variant["absent"]) == {"pooler.dense.weight", "pooler.dense.bias"}
    assert {e["name"] for e in variant["extra"]} >= {
        "cls.predictions.bias",
        "cls.predictions.transform.dense.weight",
    }


# --- aliases --------------------------------------------------------------------------------------


def _alias_entries() -> Iterable[tuple[str, dict[str, str]]]:
    for role, items in ALIASES["aliases"].items():
        for item in items:
            yield role, item


def test_aliases_schema_and_vocabulary() -> None:
    assert ALIASES["schema_version"] == 1 and ALIASES["source"]
    seen: set[tuple[str, str]] = set()
    for role, item in _alias_entries():
        assert role in GLOBAL_ROLES | LAYER_ROLES, role
        assert set(item) <= {"name", "convention", "note"} and item["name"] and item["convention"]
        assert ("{i}" in item["name"]) == (role in LAYER_ROLES), (role, item)
        assert ("{e}" in item["name"]) <= role.startswith("moe.expert."), item
        key = (item["name"], item["convention"])
        assert key not in seen, f"{key} listed twice"
        seen.add(key)


def test_aliases_cover_gguf_and_meta_names() -> None:
    names = {(item["name"], item["convention"]): role for role, item in _alias_entries()}
    expected = {
        ("token_embd.weight", "gguf"): "embed.weight",
        ("blk.{i}.attn_q.weight", "gguf"): "attn.q.weight",
        ("blk.{i}.attn_norm.weight", "gguf"): "attn_norm.weight",
        ("blk.{i}.ffn_norm.weight", "gguf"): "ffn_norm.weight",
        ("blk.{i}.post_attention_norm.weight", "gguf"): "post_attn_norm.weight",
        ("blk.{i}.post_ffw_norm.weight", "gguf"): "post_ffn_norm.weight",
        ("blk.{i}.attn_q_norm.weight", "gguf"): "attn.q_norm.weight",
        ("blk.{i}.ffn_gate.weight", "gguf"): "mlp.gate.weight",
        ("output_norm.weight", "gguf"): "final_norm.weight",
        ("output.weight", "gguf"): "lm_head.weight",
        ("tok_embeddings.weight", "meta"): "embed.weight",
        ("layers.{i}.attention.wq.weight", "meta"): "attn.q.weight",
        ("layers.{i}.attention_norm.weight", "meta"): "attn_norm.weight",
        ("layers.{i}.ffn_norm.weight", "meta"): "ffn_norm.weight",
        ("layers.{i}.feed_forward.w1.weight", "meta"): "mlp.gate.weight",
        ("layers.{i}.feed_forward.w3.weight", "meta"): "mlp.up.weight",
        ("layers.{i}.feed_forward.w2.weight", "meta"): "mlp.down.weight",
        ("norm.weight", "meta"): "final_norm.weight",
        ("model.layers.{i}.ln1.weight", "yi-original"): "attn_norm.weight",
        ("transformer.h.{i}.mlp.w2.weight", "qwen"): "mlp.gate.weight",
    }
    for key, role in expected.items():
        assert names.get(key) == role, key


def test_aliases_agree_with_catalog_roles() -> None:
    roles_by_name: dict[str, set[str]] = {}
    for doc in DOCS.values():
        for entry in entries(doc):
            roles_by_name.setdefault(entry["name"], set()).add(entry["role"])
    overlapping = 0
    for role, item in _alias_entries():
        if item["name"] in roles_by_name:
            overlapping += 1
            assert role in roles_by_name[item["name"]], (item, roles_by_name[item["name"]])
    assert overlapping >= 40  # the table really does restate catalog names, so the check bites
