"""`unshell audit` on real releases and on derivatives made from them: never accuse an original.

Every original below was published by the people who made it (or is a faithful export of it), so
none may get an accusation level: ``undisclosed-derivative``, ``licence-obligations-unmet`` or
``architecture-reuse-undisclosed``. Each file is checked against its sha256 (``tests/artifacts.py``
for the downloads, ``tests/data/fixtures/SHA256SUMS``-style digests below for the fixtures).

Then derivatives made here from real models get exactly the findings they deserve:

* a renamed and relabelled fine-tune whose card names no base (the lineage zoo's fine-tune,
  re-laid out with Yi's ``ln1``/``ln2`` and declared as ``AcmeLM``): an undisclosed derivative that
  also hides its architecture;
* the same Yi-style rename with its base declared: only a note about the renames;
* an fp16 copy of all-MiniLM-L6-v2 (every fp32 tensor cast) that names its base, against the base
  laid out as a Hub cache folder: in order, and named by the cache's repo id;
* the same copy with a card that names no base: an undisclosed derivative, named by the repo id
  (never by the stale ``_name_or_path`` that both MiniLM configs carry);
* a Q8_0 GGUF quantization of the zoo base (llama.cpp's quantizer, through gguf-py) that names
  its base in ``general.base_model.0.repo_url``: in order; without that key, an undisclosed
  derivative with ``base_model_relation: quantized`` as the advice;
* a GGUF base that records ``general.repo_url``: the base is named by that repo id.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import unshell
from artifacts import fetch
from foreign_layouts import read_safetensors_dir, to_gguf, to_yi
from hub_layout import hub_cache
from unshell.cli.main import cli
from unshell.errors import UsageError
from zoo_fixture import zoo

APACHE_LICENCE = """
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION
"""
ACCUSATIONS = {"undisclosed-derivative", "licence-obligations-unmet", "architecture-reuse-undisclosed"}

# From shared/fixtures/SHA256SUMS (the fixtures' README gives their sources).
FIXTURE_SHA256 = {
    "stories260K.bin": "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696",
    "llama2xs.model.bin": "b1e0376c2456e18f294ffe062a2b44e5cb2e207c8aa53538209d2689122ea641",
    "llama2xs.ckpt.pt": "6befe39681a189046ffe44e91e9ec1a10e1a3bf9d40a1987f0962ea3c3e0419e",
    "llama-2-tiny-random.gguf": "81f226c62d28ed4a1a9b9fa080fcd9f0cc40e0f9d5680036583ff98fbcd035cb",
}

# (what, expected level, why). "ok": the files declare what they are; "note": nothing can be (or
# is) declared, and nothing claims another identity, so there is something to say but nothing to
# accuse. Never an accusation: these are the publishers' own releases.
ORIGINALS: list[tuple[str, str, str]] = [
    ("gemma3_gguf", "ok", "Google's Gemma-3-270M GGUF declares general.architecture gemma3"),
    ("smollm2_gguf", "ok", "HuggingFaceTB's SmolLM2-135M-Instruct GGUF declares llama"),
    ("qwen05_gguf", "ok", "Qwen's Qwen2.5-Coder-0.5B-Instruct GGUF declares qwen2"),
    ("qwen15_gguf", "ok", "Qwen's Qwen2.5-Coder-1.5B-Instruct GGUF declares qwen2"),
    ("minilm_gt_dir", "ok", "all-MiniLM-L6-v2: config.json model_type bert"),
    ("minilm_zip_dir", "ok", "the same model packaged by someone else: config.json model_type bert"),
    ("minilm_int8_onnx", "note", "ONNX export: the exporter chose the names, nothing is declared"),
    ("paraphrase_minilm_onnx", "note", "ONNX export: the exporter chose the names, nothing is declared"),
    ("fixture:stories260K.bin", "note", "llama2.c: the format can declare nothing"),
    ("fixture:llama2xs.model.bin", "note", "llama2.c: the format can declare nothing"),
    ("fixture:llama2xs.ckpt.pt", "note", "a llama2.c training checkpoint in Meta's names, declaring nothing"),
    ("fixture:llama-2-tiny-random.gguf", "ok", "declares general.architecture llama"),
    ("akiki:akiki-vad.pt", "ok", "a small CNN+GRU: no known architecture to reuse"),
    ("akiki:akiki-vad.onnx", "ok", "the same CNN+GRU as ONNX"),
    ("akiki:akiki-vad-native/model.safetensors", "ok", "the same CNN+GRU as safetensors"),
]


def _original(key: str, fixtures_dir: Path) -> Path:
    if key.startswith("fixture:"):
        return fixtures_dir / key.removeprefix("fixture:")
    if key.startswith("akiki:"):
        return fetch("akiki_dir") / key.removeprefix("akiki:")
    return fetch(key)


@pytest.mark.parametrize(("key", "expected", "why"), ORIGINALS, ids=[o[0] for o in ORIGINALS])
def test_an_original_release_is_never_accused(key: str, expected: str, why: str, fixtures_dir: Path) -> None:
    path = _original(key, fixtures_dir)
    result = unshell.audit(path)

    levels = {f.level for f in result.findings}
    assert not levels & ACCUSATIONS, f"{key} ({why}): {[f.message for f in result.findings]}"
    assert result.level == expected, f"{key} ({why}): {[(f.level, f.message) for f in result.findings]}"
    exit_code = CliRunner().invoke(
        cli, ["audit", str(path), "--fail-on", "architecture-reuse-undisclosed", "--format", "json"]
    )
    assert exit_code.exit_code == 0, exit_code.output


def test_fixture_digests(fixtures_dir: Path) -> None:
    """The fixtures are the files their README names (the downloads are checked by `fetch`)."""
    for name, expected in FIXTURE_SHA256.items():
        assert hashlib.sha256((fixtures_dir / name).read_bytes()).hexdigest() == expected, name


def test_gguf_declarations_are_read_with_their_sources() -> None:
    declared = unshell.audit(fetch("smollm2_gguf")).to_dict()["declared"]
    assert declared["model_type"] == {"value": "llama", "source": "GGUF general.architecture"}
    assert declared["organization"] == {"value": "HuggingFaceTB", "source": "GGUF general.organization"}
    assert declared["license"] == {"value": "apache-2.0", "source": "GGUF general.license"}
    assert declared["finetune"]["source"] == "GGUF general.finetune"
    architecture = unshell.audit(fetch("gemma3_gguf")).detected["architecture"]
    assert architecture["declared_model_type"] == ["gemma3"]
    assert architecture["declared_model_type_sources"] == ["GGUF general.architecture"]


def test_onnx_exporter_names_are_the_format_convention_not_renames() -> None:
    result = unshell.audit(fetch("minilm_int8_onnx"))
    architecture = result.detected["architecture"]
    assert architecture["names_from"] == "exporter"
    assert architecture["renamed_tensors"] == 0 and architecture["convention_names"] > 0
    note = next(f for f in result.findings if f.level == "note")
    assert "exporter" in note.message and "tensor names" not in note.advice
    assert result.to_dict()["declared"]["producer"]["source"] == "ONNX producer_name"


def test_llama2c_says_nothing_can_be_declared(fixtures_dir: Path) -> None:
    result = unshell.audit(fixtures_dir / "stories260K.bin")
    assert "nothing can be declared in llama2.c files" in result.findings[0].message
    assert "llama2.c: none declared (the format has no metadata fields)" in result.notes


def test_vocabulary_only_ggufs_have_no_weights_to_accuse() -> None:
    vocabularies = sorted(fetch("llama_cpp_vocabs").glob("*.gguf"))
    assert len(vocabularies) == 19
    for path in vocabularies:
        with pytest.raises(UsageError, match="no weights to audit"):
            unshell.audit(path)


# -- derivatives made here ------------------------------------------------------------------------


def _card(directory: Path, front: dict[str, object], body: str) -> None:
    lines = ["---", *(f"{k}: {json.dumps(v)}" for k, v in front.items()), "---", "", body, ""]
    (directory / "README.md").write_text("\n".join(lines))


def _zoo_finetune(tmp_path: Path) -> tuple[Path, Path]:
    pair = next(p for p in zoo().derived if p.b.name == "finetune")
    return Path(pair.a), Path(pair.b)


@pytest.fixture
def relabelled_finetune(tmp_path: Path) -> tuple[Path, Path]:
    """The zoo's fine-tune (a tiny Llama trained on Python's docs, then fine-tuned on other text),
    re-laid out with Yi's ``ln1``/``ln2`` names, declared as ``AcmeLM``, with a card naming no base."""
    base, tuned = _zoo_finetune(tmp_path)
    model = to_yi(tuned, tmp_path / "acme-lm")
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="acme", architectures=["AcmeLMForCausalLM"])
    (model / "config.json").write_text(json.dumps(config))
    _card(model, {"license": "apache-2.0"}, "# AcmeLM\n\nOur own model, trained from scratch by our team.")
    (model / "LICENSE").write_text(APACHE_LICENCE)
    return hub_cache(base, tmp_path / "hub", "zoo-org/zoo-base-7m"), model


def test_relabelled_renamed_finetune_gets_both_accusations(relabelled_finetune: tuple[Path, Path]) -> None:
    base, model = relabelled_finetune
    result = unshell.audit(model, against=base)

    levels = [f.level for f in result.findings]
    assert "undisclosed-derivative" in levels and "architecture-reuse-undisclosed" in levels
    weights = next(f for f in result.findings if f.level == "undisclosed-derivative")
    assert weights.evidence["base"] == {
        "name": "zoo-org/zoo-base-7m",
        "source": "hf-cache repo id",
        "hub_repo_id": True,
    }
    assert "`base_model: zoo-org/zoo-base-7m`" in weights.advice
    architecture = next(f for f in result.findings if f.level == "architecture-reuse-undisclosed")
    assert "declared as AcmeLMForCausalLM, acme" in architecture.message
    assert any("ln1" in example for example in architecture.evidence["renamed_examples"])
    outcome = CliRunner().invoke(cli, ["audit", str(model), "--fail-on", "architecture-reuse-undisclosed"])
    assert outcome.exit_code == 1


def test_yi_style_rename_with_a_declared_base_is_only_a_note(relabelled_finetune: tuple[Path, Path]) -> None:
    base, model = relabelled_finetune
    _card(model, {"license": "apache-2.0", "base_model": "zoo-org/zoo-base-7m"}, "# AcmeLM\n\nA fine-tune.")

    result = unshell.audit(model, against=base)

    assert result.level == "note", [(f.level, f.message) for f in result.findings]
    ok = next(f for f in result.findings if f.level == "ok")
    assert "declares it (README.md front matter)" in ok.message
    note = next(f for f in result.findings if f.level == "note")
    assert "renamed" in note.message and "unshell convert" in note.advice
    outcome = CliRunner().invoke(cli, ["audit", str(model), "--fail-on", "architecture-reuse-undisclosed"])
    assert outcome.exit_code == 0


def _fp16_copy(source: Path, destination: Path) -> Path:
    """all-MiniLM-L6-v2 in fp16 (every fp32 tensor cast), its other files kept."""
    from safetensors.numpy import save_file

    shutil.copytree(source, destination)
    tensors = {
        k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in read_safetensors_dir(source).items()
    }
    save_file(tensors, str(destination / "model.safetensors"))
    return destination


@pytest.fixture
def minilm_base_and_quantized(tmp_path: Path) -> tuple[Path, Path]:
    base = hub_cache(fetch("minilm_gt_dir"), tmp_path / "hub", "sentence-transformers/all-MiniLM-L6-v2")
    return base, _fp16_copy(fetch("minilm_gt_dir"), tmp_path / "minilm-fp16")


def test_quantization_that_names_its_base_is_in_order(minilm_base_and_quantized: tuple[Path, Path]) -> None:
    base, quantized = minilm_base_and_quantized
    _card(
        quantized,
        {
            "license": "apache-2.0",
            "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            "base_model_relation": "quantized",
        },
        "# all-MiniLM-L6-v2, fp16\n",
    )
    (quantized / "LICENSE").write_text(APACHE_LICENCE)

    result = unshell.audit(quantized, against=base)

    assert not {f.level for f in result.findings} & ACCUSATIONS, [f.message for f in result.findings]
    assert result.detected["weights"]["base"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert result.detected["weights"]["base_name_source"] == "hf-cache repo id"


def test_unlabelled_quantization_is_named_by_the_repo_id(
    minilm_base_and_quantized: tuple[Path, Path],
) -> None:
    base, quantized = minilm_base_and_quantized
    _card(quantized, {"license": "apache-2.0"}, "# MiniEmbed\n\nOur own sentence encoder.")

    result = unshell.audit(quantized, against=base)

    finding = next(f for f in result.findings if f.level == "undisclosed-derivative")
    assert "sentence-transformers/all-MiniLM-L6-v2" in finding.message
    # Both configs carry `_name_or_path: nreimers/MiniLM-L6-H384-uncased`, the parent of the
    # base: naming the base after it would be wrong if pasted.
    assert "nreimers" not in finding.advice
    assert "`base_model: sentence-transformers/all-MiniLM-L6-v2`" in finding.advice
    # The suspect's own config names a base (its `_name_or_path`): said as what it declares.
    assert "declares base nreimers/MiniLM-L6-H384-uncased instead" in finding.message
    assert finding.evidence["declared_base_sources"] == ["config.json _name_or_path"]


def test_a_gguf_base_is_named_by_its_repo_url(tmp_path: Path) -> None:
    base_dir, tuned = _zoo_finetune(tmp_path)
    base = to_gguf(
        base_dir,
        tmp_path / "zoo-base.gguf",
        qtype="F32",
        metadata={"general.repo_url": "https://huggingface.co/zoo-org/zoo-base-7m"},
    )
    model = tmp_path / "tuned"
    shutil.copytree(tuned, model)
    _card(model, {"license": "apache-2.0"}, "# tuned\n\nOur own model.")

    result = unshell.audit(model, against=base)

    assert result.detected["weights"]["base"] == "zoo-org/zoo-base-7m"
    assert result.detected["weights"]["base_name_source"] == "GGUF general.repo_url"
    finding = next(f for f in result.findings if f.level == "undisclosed-derivative")
    assert "`base_model: zoo-org/zoo-base-7m`" in finding.advice
    # Its general.name ("tiny-llama") is a display name, never offered as a base_model.
    assert "tiny-llama" not in finding.advice


def test_a_gguf_base_without_a_repo_id_is_named_by_its_file_saying_so(tmp_path: Path) -> None:
    """SmolLM2's GGUF records no repo id; its general.name is 'Smollm2 135M 8k Lc100K Mix1 Ep2'.
    The copy here is the same file with that name overwritten in place (same length)."""
    original = fetch("smollm2_gguf")
    data = bytearray(original.read_bytes())
    old, new = b"Smollm2 135M 8k Lc100K Mix1 Ep2", b"AcmeChat 135M, our own LLM v1.0"
    assert len(old) == len(new) and data.count(old) == 1
    data[data.index(old) : data.index(old) + len(old)] = new
    copy = tmp_path / "acme-chat.gguf"
    copy.write_bytes(bytes(data))

    result = unshell.audit(copy, against=original)

    finding = next(f for f in result.findings if f.level == "undisclosed-derivative")
    assert result.detected["weights"]["verdict"] == "identical"
    assert result.detected["weights"]["base"] == "SmolLM2-135M-Instruct.Q4_1"
    assert result.detected["weights"]["base_name_source"] == "file name (no Hub repo id is recorded)"
    assert "Smollm2 135M 8k" not in finding.advice
    assert "file name (no Hub repo id is recorded)" in finding.advice


@pytest.mark.parametrize("names_base", [True, False], ids=["names-base", "names-nothing"])
def test_a_gguf_quantization(tmp_path: Path, names_base: bool) -> None:
    base_dir, _ = _zoo_finetune(tmp_path)
    base = hub_cache(base_dir, tmp_path / "hub", "zoo-org/zoo-base-7m")
    keys: dict[str, str | int] = (
        {
            "general.base_model.count": 1,
            "general.base_model.0.repo_url": "https://huggingface.co/zoo-org/zoo-base-7m",
        }
        if names_base
        else {}
    )
    quantized = to_gguf(base_dir, tmp_path / "zoo-base-q8_0.gguf", qtype="Q8_0", metadata=keys)

    result = unshell.audit(quantized, against=base)

    assert "quantized" in result.detected["weights"]["how"]
    levels = {f.level for f in result.findings}
    if names_base:
        assert not levels & ACCUSATIONS, [f.message for f in result.findings]
        ok = next(f for f in result.findings if f.level == "ok" and "derive" in f.message)
        assert "GGUF general.base_model.0.repo_url" in ok.message
    else:
        finding = next(f for f in result.findings if f.level == "undisclosed-derivative")
        assert "`base_model: zoo-org/zoo-base-7m`" in finding.advice
        assert "`base_model_relation: quantized`" in finding.advice
        assert "general.base_model.0.repo_url" in finding.advice  # an export's own metadata keys


def test_schema_documents_every_declared_source_and_field(
    minilm_base_and_quantized: tuple[Path, Path], fixtures_dir: Path
) -> None:
    """docs/audit-schema.md's sources table against the sources real files produce."""
    import re

    docs = Path(__file__).resolve().parent.parent / "docs"
    audit_schema = (docs / "audit-schema.md").read_text()
    inspect_schema = (docs / "inspect-schema.md").read_text()
    base, _ = minilm_base_and_quantized
    paths = [
        fetch("smollm2_gguf"),
        fetch("gemma3_gguf"),
        fetch("minilm_int8_onnx"),
        base,
        fixtures_dir / "llama2xs.ckpt.pt",
    ]
    seen: set[str] = set()
    for path in paths:
        document = unshell.audit(path).to_dict()
        for field, claim in document["declared"].items():
            assert f"`{field}`" in inspect_schema, field
            source = re.sub(r"\.\d+\.", ".N.", claim["source"])
            prefix, _, key = source.partition(" ")
            assert f"`{prefix} " in audit_schema or f"`{source}`" in audit_schema, source
            if key and not source.startswith("hf-cache"):
                assert f"`{key.split(' ')[-1]}" in audit_schema or key in audit_schema, source
            seen.add(source)
        for key in document["detected"]["architecture"]:
            assert key in audit_schema, key
    assert {"GGUF general.architecture", "ONNX producer_name", "hf-cache repo id"} <= seen
