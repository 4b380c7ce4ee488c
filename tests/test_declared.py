"""Declared metadata: model-card front matter, config.json, GGUF general.*, safetensors, hub cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from artifacts import fetch
from unshell.declared import Claim, Declared, read_card_front_matter, read_declared
from unshell.formats.base import Checkpoint

CARDS = Path(__file__).parent / "data" / "cards"


def _checkpoint(
    card: Path | None = None,
    *,
    config: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    format: str | None = None,
) -> Checkpoint:
    # Each format's reader reads its own metadata: GGUF keys are read from a GGUF checkpoint.
    if format is None:
        format = "gguf" if metadata and "gguf" in metadata else "safetensors"
    return Checkpoint(
        format=format,
        path=Path("model"),
        files=[],
        tensors={},
        sidecars={"card": card} if card is not None else {},
        config=config,
        metadata=metadata or {},
    )


def _values(declared: Declared) -> dict[str, Any]:
    return {name: claim.value for name, claim in declared.claims()}


def test_normal_card() -> None:
    declared = read_declared(_checkpoint(CARDS / "normal.md"))
    assert _values(declared) == {
        "name": "TinyStories Chat 15M",
        "base_model": "karpathy/tinyllamas",
        "base_model_relation": "finetune",
        "license": "apache-2.0",
    }
    assert declared.license == Claim("apache-2.0", "normal.md front matter")
    assert declared.conflicts == []
    assert declared.notes == []


def test_windows_line_breaks_parse_like_unix_ones() -> None:
    raw = (CARDS / "windows_line_breaks.md").read_bytes()
    assert b"\r\n" in raw  # the fixture must keep its CRLFs for this test to mean anything
    windows = _values(read_declared(_checkpoint(CARDS / "windows_line_breaks.md")))
    unix = _values(read_declared(_checkpoint(CARDS / "normal.md")))
    assert windows == unix


def test_base_model_list_is_a_merge() -> None:
    declared = read_declared(_checkpoint(CARDS / "base_model_list.md"))
    assert declared.base_model is not None
    assert declared.base_model.value == ["meta-llama/Llama-2-7b-hf", "lmsys/vicuna-7b-v1.5"]
    assert declared.base_model_relation is not None
    assert declared.base_model_relation.value == "merge"
    assert "inferred" in declared.base_model_relation.source
    assert declared.license == Claim("llama2", "base_model_list.md front matter")


def test_invalid_yaml_becomes_a_note_and_other_sources_still_count() -> None:
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    declared = read_declared(_checkpoint(CARDS / "invalid_yaml.md", config=config))
    assert declared.license is None
    assert declared.base_model is None
    assert declared.architectures == Claim(["LlamaForCausalLM"], "config.json")
    assert declared.model_type == Claim("llama", "config.json")
    assert len(declared.notes) == 1
    assert "not valid YAML" in declared.notes[0]


def test_card_without_front_matter() -> None:
    declared = read_declared(_checkpoint(CARDS / "no_front_matter.md"))
    assert list(declared.claims()) == []
    assert declared.notes == ["no_front_matter.md: no YAML front matter"]


def test_tabs_are_read_as_spaces_with_a_note() -> None:
    declared = read_declared(_checkpoint(CARDS / "tabs.md"))
    assert _values(declared) == {"license": "mit", "base_model": "google/gemma-3-270m"}
    assert any("tabs" in note for note in declared.notes)


def test_license_other_with_name_and_link() -> None:
    declared = read_declared(_checkpoint(CARDS / "license_other.md"))
    assert _values(declared) == {
        "license": "other",
        "license_name": "llama2",
        "license_link": "https://ai.meta.com/llama/license/",
        "base_model": "meta-llama/Llama-2-7b-hf",
        "base_model_relation": "quantized",
    }


def test_norway_problem_keeps_strings_as_written() -> None:
    notes: list[str] = []
    meta = read_card_front_matter(CARDS / "norway.md", notes)
    assert meta is not None
    assert meta["language"] == ["no", "nb", "en"]
    assert meta["widget"] == "on"
    assert meta["created"] == "2024-03-01"
    assert meta["inference"] is False
    assert notes == []
    declared = read_declared(_checkpoint(CARDS / "norway.md"))
    assert _values(declared) == {"name": "NorLlama tiny", "license": "cc-by-4.0"}


def test_front_matter_that_is_not_a_mapping() -> None:
    declared = read_declared(_checkpoint(CARDS / "list_front_matter.md"))
    assert list(declared.claims()) == []
    assert declared.notes == ["list_front_matter.md: front matter is a list, not a mapping; ignored"]


def test_missing_card_file_is_a_note(tmp_path: Path) -> None:
    declared = read_declared(_checkpoint(tmp_path / "README.md"))
    assert list(declared.claims()) == []
    assert declared.notes and "unreadable" in declared.notes[0]


def test_huge_card_reads_the_front_matter_only(tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: mit\n---\n" + "prose\n" * 400_000)
    declared = read_declared(_checkpoint(card))
    assert declared.license == Claim("mit", "README.md front matter")
    assert any("larger than" in note for note in declared.notes)


@pytest.mark.parametrize(
    "front_matter",
    [
        "license: " + "[" * 20_000 + "]" * 20_000,  # nesting deep enough to exhaust the parser's recursion
        "license: !!python/object:os.system ls",  # a tag the safe loader refuses
        "license: " + "x" * 300_000,  # front matter over the size cap
        "\x00\x01license: mit",
    ],
)
def test_hostile_front_matter_is_a_note(tmp_path: Path, front_matter: str) -> None:
    card = tmp_path / "README.md"
    card.write_text(f"---\n{front_matter}\n---\n")
    declared = read_declared(_checkpoint(card))
    assert declared.license is None
    assert len(declared.notes) == 1


def test_non_string_values_are_not_claims(tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: {id: mit}\nbase_model: [gpt2, {x: 1}, 7]\nmodel_name: true\n---\n")
    declared = read_declared(_checkpoint(card))
    assert declared.license is None
    assert declared.name is None
    # 7 is kept as text; the mapping is dropped with a note.
    assert declared.base_model == Claim(["gpt2", "7"], "README.md front matter")
    assert any("kept 2 of 3" in note for note in declared.notes)


GEMMA_GGUF_KV = {
    "general.architecture": "gemma3",
    "general.name": "Gemma 3 270m",
    "general.license": "gemma",
    "general.organization": "Google",
    "general.finetune": "it",
    "general.base_model.count": 1,
    "general.base_model.0.name": "Gemma 3 270m",
    "general.base_model.0.organization": "Google",
    "general.base_model.0.repo_url": "https://huggingface.co/google/gemma-3-270m",
}


def test_gguf_general_keys() -> None:
    declared = read_declared(_checkpoint(metadata={"gguf": GEMMA_GGUF_KV}, format="gguf"))
    assert declared.name == Claim("Gemma 3 270m", "GGUF general.name")
    assert declared.license == Claim("gemma", "GGUF general.license")
    assert declared.organization == Claim("Google", "GGUF general.organization")
    assert declared.base_model == Claim("google/gemma-3-270m", "GGUF general.base_model.0.repo_url")
    assert declared.base_model_relation == Claim("finetune", "GGUF general.finetune")


def test_gguf_several_base_models_and_license_name() -> None:
    kv = {
        "general.license": "other",
        "general.license.name": "llama3",
        "general.license.link": "https://llama.meta.com/llama3/license",
        "general.base_model.count": 2,
        "general.base_model.0.name": "Llama 3 8B",
        "general.base_model.1.repo_url": "https://huggingface.co/NousResearch/Hermes-2-Pro-Llama-3-8B",
    }
    declared = read_declared(_checkpoint(metadata={"gguf": kv}, format="gguf"))
    assert declared.base_model == Claim(
        ["Llama 3 8B", "NousResearch/Hermes-2-Pro-Llama-3-8B"], "GGUF general.base_model.*"
    )
    assert declared.license_name == Claim("llama3", "GGUF general.license.name")
    assert declared.license_link == Claim(
        "https://llama.meta.com/llama3/license", "GGUF general.license.link"
    )
    assert declared.base_model_relation is None


def test_gguf_bad_values_are_ignored() -> None:
    kv = {"general.name": b"bytes name", "general.license": ["not", "text"], "general.base_model.count": "2"}
    declared = read_declared(_checkpoint(metadata={"gguf": kv}, format="gguf"))
    assert _values(declared) == {"name": "bytes name"}


def test_card_wins_and_disagreement_is_recorded(tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text(
        "---\nlicense: apache-2.0\nmodel_name: Gemma 3 270M\nbase_model: google/gemma-3-270m\n---\n"
    )
    declared = read_declared(_checkpoint(card, metadata={"gguf": GEMMA_GGUF_KV}))
    assert declared.license == Claim("apache-2.0", "README.md front matter")
    assert declared.conflicts == [
        "license: README.md front matter says 'apache-2.0', GGUF general.license says 'gemma'"
    ]
    # Same name and base model spelled differently is agreement, not a conflict.
    assert declared.name == Claim("Gemma 3 270M", "README.md front matter")
    assert declared.base_model == Claim("google/gemma-3-270m", "README.md front matter")


def test_hub_cache_repo_id_and_safetensors_metadata() -> None:
    metadata = {
        "hf_cache": {"repo_id": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "revision": "abc"},
        "safetensors": {"format": "pt", "modelspec.title": "Some Other Model", "license": "MIT"},
    }
    declared = read_declared(_checkpoint(metadata=metadata))
    assert declared.name == Claim("Some Other Model", "safetensors __metadata__ modelspec.title")
    assert declared.license == Claim("MIT", "safetensors __metadata__ license")
    assert declared.organization == Claim("TinyLlama", "hf-cache repo id")
    assert declared.conflicts == [
        "name: safetensors __metadata__ modelspec.title says 'Some Other Model', "
        "hf-cache repo id says 'TinyLlama/TinyLlama-1.1B-Chat-v1.0'"
    ]


def test_hub_cache_repo_id_as_plain_string() -> None:
    declared = read_declared(_checkpoint(metadata={"hf_cache": "gpt2"}))
    assert declared.name == Claim("gpt2", "hf-cache repo id")
    assert declared.organization is None


def test_llama2c_declares_nothing() -> None:
    declared = read_declared(_checkpoint(metadata={"llama2c": {"dim": 64}}, format="llama2c"))
    assert list(declared.claims()) == []
    assert declared.notes == ["llama2.c: none declared (the format has no metadata fields)"]


def test_to_dict_is_json() -> None:
    card = CARDS / "normal.md"
    declared = read_declared(_checkpoint(card, metadata={"gguf": {"general.license": "mit"}}))
    as_dict = json.loads(json.dumps(declared.to_dict()))
    assert as_dict["license"] == {"value": "apache-2.0", "source": "normal.md front matter"}
    assert as_dict["base_model"]["value"] == "karpathy/tinyllamas"
    assert as_dict["conflicts"] == [
        "license: normal.md front matter says 'apache-2.0', GGUF general.license says 'mit'"
    ]
    assert "architectures" not in as_dict
    assert "notes" not in as_dict


def test_real_minilm_card_and_config() -> None:
    model_dir = fetch("minilm_gt_dir")
    config = json.loads((model_dir / "config.json").read_text())
    declared = read_declared(_checkpoint(model_dir / "README.md", config=config))
    assert _values(declared) == {
        "license": "apache-2.0",
        "architectures": ["BertModel"],
        "model_type": "bert",
        "started_from": "nreimers/MiniLM-L6-H384-uncased",
    }
    # `_name_or_path` records where training started (here the parent's parent), not this model's
    # name: issue 12 found audits naming the base after it.
    assert declared.name is None
    assert declared.started_from is not None
    assert declared.started_from.source == "config.json _name_or_path"
    assert declared.notes == []


def test_real_gemma_gguf_declares_name_and_license() -> None:
    from unshell.formats.gguf import read_gguf

    checkpoint = read_gguf(fetch("gemma3_gguf"))
    try:
        declared = read_declared(checkpoint)
    finally:
        checkpoint.close()
    assert declared.to_dict() == {
        "name": {"value": "Gemma 3 270m", "source": "GGUF general.name"},
        "license": {"value": "gemma", "source": "GGUF general.license"},
        # The architecture is declared too: an audit that missed it accused Google's own file.
        "model_type": {"value": "gemma3", "source": "GGUF general.architecture"},
        "basename": {"value": "gemma-3", "source": "GGUF general.basename"},
        "tags": {"value": ["gemma3", "gemma", "google", "text-generation"], "source": "GGUF general.tags"},
    }


def test_auto_map_names_the_model_code_transformers_would_run() -> None:
    config = {
        "architectures": ["YiForCausalLM"],
        "model_type": "Yi",
        "auto_map": {
            "AutoConfig": "configuration_yi.YiConfig",
            "AutoModelForCausalLM": "modeling_yi.YiForCausalLM",
            "AutoTokenizer": ["tokenization_yi.YiTokenizer", None],
            "bogus": 7,
        },
    }
    declared = read_declared(_checkpoint(None, config=config))
    assert declared.auto_map is not None
    assert declared.auto_map.source == "config.json auto_map"
    assert declared.auto_map.value == {
        "AutoConfig": "configuration_yi.YiConfig",
        "AutoModelForCausalLM": "modeling_yi.YiForCausalLM",
        "AutoTokenizer": "tokenization_yi.YiTokenizer",
    }
