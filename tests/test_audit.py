"""`unshell audit`: detected lineage against declared lineage, on generated models.

* Yi-style: a tiny Llama re-laid out as Yi's November 2023 release (``ln1``/``ln2``, ``YiForCausalLM``)
  with a card that names no base: the architecture reuse is undisclosed.
* A fine-tune from the lineage zoo (``tools/zoo.py``: a tiny Llama trained on Python's
  documentation, then fine-tuned on other text) against its base: with a card that omits
  ``base_model`` it is an undisclosed derivative; with a correct card it is ok.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import unshell
from foreign_layouts import make_tiny_llama, to_yi
from unshell.auditing.report import LEVELS
from unshell.cli.main import cli
from zoo_fixture import zoo

APACHE_LICENCE_HEAD = """
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION
"""


def _card(directory: Path, front: dict[str, object], body: str) -> None:
    lines = ["---", *(f"{k}: {json.dumps(v)}" for k, v in front.items()), "---", "", body, ""]
    (directory / "README.md").write_text("\n".join(lines))


def _zoo_pair(tmp_path: Path, name: str = "finetune") -> tuple[Path, Path]:
    pair = next(p for p in zoo().derived if p.b.name == name)
    base, tuned = tmp_path / "zoo-base-7m", tmp_path / "tuned"
    shutil.copytree(pair.a, base)
    shutil.copytree(pair.b, tuned)
    _card(base, {"license": "apache-2.0", "model_name": "zoo-base-7m"}, "# zoo-base-7m\n\nA tiny base model.")
    (base / "LICENSE").write_text(APACHE_LICENCE_HEAD)
    return base, tuned


def _levels(result: unshell.AuditResult) -> list[str]:
    return [f.level for f in result.findings]


# -- Yi-style architecture reuse ----------------------------------------------------------------------


@pytest.fixture
def yi_style(tmp_path: Path) -> Path:
    model = to_yi(make_tiny_llama(tmp_path / "llama"), tmp_path / "yi-tiny")
    _card(
        model, {"license": "apache-2.0"}, "# Yi-Tiny\n\nA bilingual model trained from scratch by our team."
    )
    return model


def test_yi_style_model_without_a_declared_base_is_undisclosed_architecture_reuse(yi_style: Path) -> None:
    result = unshell.audit(yi_style)

    assert result.level == "architecture-reuse-undisclosed"
    finding = next(f for f in result.findings if f.level == "architecture-reuse-undisclosed")
    assert "Llama's" in finding.message and finding.evidence["family"] == "llama"
    assert finding.evidence["renamed_tensors"] > 0
    assert any("ln1" in example or "ln2" in example for example in finding.evidence["renamed_examples"])
    assert "fine" in finding.advice  # reuse is legitimate; the fault is not saying so
    assert result.detected["architecture"]["declared_model_type"] == ["Yi", "YiForCausalLM"]
    assert "weights" not in result.detected  # no --against: weights are not judged


def test_yi_style_model_that_names_llama_is_not_flagged(yi_style: Path) -> None:
    _card(
        yi_style,
        {"license": "apache-2.0"},
        "# Yi-Tiny\n\nYi uses the Llama architecture, trained from scratch.",
    )

    result = unshell.audit(yi_style)

    assert "architecture-reuse-undisclosed" not in _levels(result)
    # The renaming still costs downstream users something: a note, with the way back.
    note = next(f for f in result.findings if f.level == "note")
    assert "renamed" in note.message and "unshell convert" in note.advice
    assert result.level == "note"  # informational: nothing undisclosed


# -- weight derivatives (needs --against) --------------------------------------------------------------


def test_fine_tune_whose_card_omits_base_model_is_an_undisclosed_derivative(tmp_path: Path) -> None:
    base, tuned = _zoo_pair(tmp_path)
    _card(tuned, {"license": "apache-2.0"}, "# tuned\n\nOur own model.")
    (tuned / "LICENSE").write_text(APACHE_LICENCE_HEAD)

    result = unshell.audit(tuned, against=base)

    assert result.level == "undisclosed-derivative"
    finding = next(f for f in result.findings if f.level == "undisclosed-derivative")
    assert finding.evidence["verdict"] == "derived" and finding.evidence["p_value"] < 1e-6
    assert "base_model: zoo-base-7m" in finding.advice
    assert result.detected["weights"]["verdict"] == "derived"


def test_the_same_fine_tune_with_a_correct_card_is_ok(tmp_path: Path) -> None:
    base, tuned = _zoo_pair(tmp_path)
    _card(
        tuned,
        {"license": "apache-2.0", "base_model": "zoo-base-7m", "base_model_relation": "finetune"},
        "# tuned\n\nA fine-tune of zoo-base-7m. Modified files carry a notice of the change.",
    )
    (tuned / "LICENSE").write_text(APACHE_LICENCE_HEAD)

    result = unshell.audit(tuned, against=base)

    assert result.level == "ok", [f.to_dict() for f in result.findings]
    assert any("declares it" in f.message for f in result.findings)
    assert result.detected["licence"]["id"] == "apache-2.0"


def test_a_derivative_that_drops_its_base_licence_is_flagged(tmp_path: Path) -> None:
    base, tuned = _zoo_pair(tmp_path)
    _card(tuned, {"license": "mit", "base_model": "zoo-base-7m"}, "# tuned\n\nA fine-tune of zoo-base-7m.")

    result = unshell.audit(tuned, against=base)

    assert result.level == "licence-obligations-unmet"
    messages = " ".join(f.message for f in result.findings if f.level == "licence-obligations-unmet")
    assert "mit" in messages and "apache-2.0" in messages
    assert "LICENSE" in json.dumps(result.to_dict()) or "licence-copy" in json.dumps(result.to_dict())


def test_an_independent_model_is_not_called_a_derivative(tmp_path: Path) -> None:
    pair = next(p for p in zoo().independent if p.name == "base-s0<->base-s1")
    base, other = tmp_path / "base", tmp_path / "other"
    shutil.copytree(pair.a, base)
    shutil.copytree(pair.b, other)
    _card(other, {"license": "apache-2.0"}, "# other\n\nTrained from scratch.")
    (other / "LICENSE").write_text(APACHE_LICENCE_HEAD)

    result = unshell.audit(other, against=base)

    assert result.detected["weights"]["verdict"] == "independent"
    assert "undisclosed-derivative" not in _levels(result)


# -- CLI ------------------------------------------------------------------------------------------------


def test_cli_json_is_versioned_and_fail_on_sets_the_exit_code(yi_style: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["audit", str(yi_style), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.output)
    assert document["schema_version"] == 1
    assert document["level"] == "architecture-reuse-undisclosed"
    assert all(set(f) >= {"level", "message", "evidence", "advice"} for f in document["findings"])
    assert all(f["level"] in LEVELS for f in document["findings"])

    failing = runner.invoke(cli, ["audit", str(yi_style), "--fail-on", "architecture-reuse-undisclosed"])
    assert failing.exit_code == 1
    assert "ARCHITECTURE-REUSE-UNDISCLOSED" in failing.output and "advice:" in failing.output
    passing = runner.invoke(cli, ["audit", str(yi_style), "--fail-on", "undisclosed-derivative"])
    assert passing.exit_code == 0


def test_audit_of_a_tokenizer_alone_is_a_usage_error(tmp_path: Path) -> None:
    fixtures = Path(__file__).parent / "data" / "fixtures"
    result = CliRunner().invoke(cli, ["audit", str(fixtures / "llama-2-tiny-random.gguf")])
    assert result.exit_code == 0  # a GGUF with weights (random) audits fine
    tokenizer = tmp_path / "tokenizer.model"
    shutil.copyfile(fixtures / "llama2.tokenizer.model", tokenizer)
    refused = CliRunner().invoke(cli, ["audit", str(tokenizer)])
    assert refused.exit_code != 0 and "Traceback" not in refused.output


def test_yi_style_model_code_copied_from_llama_with_its_attribution_removed(yi_style: Path) -> None:
    """The model ships modeling_yi.py: transformers' modeling_llama.py with classes and variables
    renamed and every comment, docstring and licence line deleted (made by test_audit_code)."""
    from test_audit_code import _rebranded_llama

    (yi_style / "modeling_yi.py").write_text(_rebranded_llama())

    result = unshell.audit(yi_style)

    code = result.detected["code"]
    assert len(code) == 1 and code[0]["reference"] == "transformers/models/llama/modeling_llama.py"
    assert code[0]["similarity"] >= 0.9
    architecture = next(f for f in result.findings if f.level == "architecture-reuse-undisclosed")
    assert "modeling_yi.py is a copy of transformers/models/llama/modeling_llama.py" in architecture.message
    attribution = next(f for f in result.findings if f.level == "licence-obligations-unmet")
    assert "§4(c)" in attribution.advice and attribution.evidence["file"] == "modeling_yi.py"
    assert result.level == "licence-obligations-unmet"


def test_schema_doc_lists_every_field(tmp_path: Path) -> None:
    base, tuned = _zoo_pair(tmp_path)
    _card(tuned, {"license": "apache-2.0"}, "# tuned")
    document = unshell.audit(tuned, against=base).to_dict()
    schema = (Path(__file__).resolve().parent.parent / "docs" / "audit-schema.md").read_text()
    for key in document:
        assert f"`{key}" in schema, key
    for key in document["detected"]:
        assert f"`detected.{key}`" in schema, key


# -- --library: the weights' source searched among known fingerprints ---------------------------------


def _library_of(tmp_path: Path, models: dict[str, Path]) -> Path:
    from unshell.library import Library
    from unshell.lineage.fingerprint import fingerprint

    path = tmp_path / "known.sqlite"
    with Library(path) as library:
        for name, model in models.items():
            library.add(fingerprint(model, name=name))
    return path


def test_library_finds_the_undisclosed_base(tmp_path: Path) -> None:
    base, tuned = _zoo_pair(tmp_path)
    other = next(p for p in zoo().independent if p.name == "base-s0<->base-s1")
    _card(tuned, {"license": "apache-2.0"}, "# tuned\n\nOur own model, trained from scratch.")
    library = _library_of(tmp_path, {"zoo/zoo-base-7m": base, "zoo/unrelated": other.b})

    result = unshell.audit(tuned, library=library)

    assert result.level == "undisclosed-derivative"
    finding = next(f for f in result.findings if f.level == "undisclosed-derivative")
    assert "zoo/zoo-base-7m" in finding.message and finding.evidence["p_value"] < 1e-6
    weights = result.detected["weights"]
    assert weights["source"] == "library" and weights["base"] == "zoo/zoo-base-7m"
    assert weights["verdict"] == "derived" and weights["library"]["size"] == 2
    # The p-value judged is the Holm-adjusted one, never smaller than the raw one.
    best = weights["candidates"][0]
    assert best["name"] == "zoo/zoo-base-7m" and weights["p_value"] == best["p_adjusted"] >= best["p_value"]

    from unshell.report.html import audit_html

    page = audit_html(result)
    assert "Holm-adjusted over the whole library" in page and "zoo/unrelated" in page

    # The same model, with its card naming the base (by its short name), is in order.
    _card(tuned, {"license": "apache-2.0", "base_model": "zoo-base-7m"}, "# tuned\n\nA fine-tune.")
    declared = unshell.audit(tuned, library=library)
    assert "undisclosed-derivative" not in _levels(declared)
    assert any("declares it" in f.message for f in declared.findings)


def test_library_without_the_base_claims_nothing(tmp_path: Path, fixtures_dir: Path) -> None:
    _, tuned = _zoo_pair(tmp_path)
    library = _library_of(tmp_path, {"stories260K": fixtures_dir / "stories260K.bin"})

    result = unshell.audit(tuned, library=library)

    assert "undisclosed-derivative" not in _levels(result)
    assert result.detected["weights"]["base"] is None
    note = next(f for f in result.findings if "none of the library's 1 fingerprints" in f.message)
    assert note.level == "note"


def test_library_cli_errors_and_report(tmp_path: Path, yi_style: Path, fixtures_dir: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["audit", str(yi_style), "--library", str(tmp_path / "none.sqlite")])
    assert missing.exit_code != 0 and not (tmp_path / "none.sqlite").exists()
    library = _library_of(tmp_path, {"stories260K": fixtures_dir / "stories260K.bin"})
    both = runner.invoke(cli, ["audit", str(yi_style), "--against", str(yi_style), "--library", str(library)])
    assert both.exit_code != 0
    report = tmp_path / "audit.html"
    shown = runner.invoke(cli, ["audit", str(yi_style), "--library", str(library), "--html", str(report)])
    assert shown.exit_code == 0, shown.output
    assert "no source found among 1 fingerprints" in shown.output
    assert "searched a fingerprint library of 1: no source found" in report.read_text()


def test_library_entry_of_the_model_itself_is_not_its_base(tmp_path: Path) -> None:
    base, tuned = _zoo_pair(tmp_path)
    # The library holds the audited model (recorded from this very folder, under another name) and
    # its real base: the base is found, the model itself is not counted.
    library = _library_of(tmp_path, {"uploads/model-1234": tuned, "zoo/zoo-base-7m": base})
    _card(tuned, {"license": "apache-2.0"}, "# tuned\n\nOur own model.")

    result = unshell.audit(tuned, library=library)

    assert result.detected["weights"]["base"] == "zoo/zoo-base-7m"
    assert any("uploads/model-1234 is this model itself" in n for n in result.notes)
    # With only itself in the library, nothing is claimed.
    alone = _library_of(tmp_path / "alone", {"tuned": base.parent / "tuned"})
    assert "undisclosed-derivative" not in _levels(unshell.audit(tuned, library=alone))


def test_library_base_names_say_where_they_came_from(tmp_path: Path) -> None:
    """A library entry named like a Hub repo id is offered as one; a local name is said to be one."""
    base, tuned = _zoo_pair(tmp_path)
    _card(tuned, {"license": "apache-2.0"}, "# tuned\n\nOur own model.")
    library = _library_of(tmp_path, {"my-local-base": base})

    result = unshell.audit(tuned, library=library)

    weights = result.detected["weights"]
    assert weights["base"] == "my-local-base"
    assert weights["base_name_source"] == "library entry name (a local name, not a Hub repo id)"
    finding = next(f for f in result.findings if f.level == "undisclosed-derivative")
    assert (
        "(library entry name (a local name, not a Hub repo id): write the base's Hub repo id"
        in finding.advice
    )
