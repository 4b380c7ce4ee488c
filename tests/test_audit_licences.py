"""Licence obligations as data (``unshell/auditing/licences/*.json``) and the card-compliance checker.

Each directory test quotes the licence sentence its check relies on; the data files carry the same
quotes with their section numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from unshell.auditing.licences import (
    APPLIES_TO,
    MAX_TEXT_BYTES,
    STATUSES,
    Licence,
    ObligationResult,
    check_obligations,
    known_licences,
    licence_candidates_for_family,
    licence_data_files,
    licence_for_family,
    load_licence,
    model_display_name,
    validate_licence_data,
)
from unshell.errors import PathNotFoundError

# The opening of the Meta Llama 3 agreement, as Meta ships it in LICENSE.
LLAMA3_LICENSE = """META LLAMA 3 COMMUNITY LICENSE AGREEMENT

Meta Llama 3 Version Release Date: April 18, 2024
"Agreement" means the terms and conditions for use, reproduction, distribution and modification of the Llama Materials set forth herein.
"""
LLAMA3_NOTICE = (
    "Meta Llama 3 is licensed under the Meta Llama 3 Community License, "
    "Copyright \u00a9 Meta Platforms, Inc. All Rights Reserved.\n"
)
LLAMA2_LICENSE = """LLAMA 2 COMMUNITY LICENSE AGREEMENT\t
Llama 2 Version Release Date: July 18, 2023
"""
# As TheBloke's Llama 2 derivatives write it: a © where the agreement has (c).
LLAMA2_NOTICE = "Llama 2 is licensed under the LLAMA 2 Community License, Copyright \u00a9 Meta Platforms, Inc. All Rights Reserved."
APACHE_LICENSE = """
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION
"""


def _card(front_matter: str, body: str) -> str:
    return f"---\n{front_matter.strip()}\n---\n{body}"


def _model(tmp_path: Path, name: str, files: dict[str, str | bytes]) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    for file_name, content in files.items():
        target = directory / file_name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return directory


def _by_id(results: list[ObligationResult]) -> dict[str, ObligationResult]:
    return {result.obligation: result for result in results}


def _licence(identifier: str, license_name: str | None = None) -> Licence:
    licence = load_licence(identifier, license_name)
    assert licence is not None, (identifier, license_name)
    return licence


# -- the data files -----------------------------------------------------------------------------


DATA_FILES = licence_data_files()


def test_every_expected_licence_has_a_file() -> None:
    ids = {licence.id for licence in known_licences()}
    assert {
        "llama2",
        "llama3",
        "llama3.1",
        "llama3.2",
        "llama3.3",
        "tongyi-qianwen",
        "qwen",
        "gemma",
        "apache-2.0",
        "mit",
        "deepseek",
        "cc-by-4.0",
        "cc-by-nc-4.0",
    } <= ids


@pytest.mark.parametrize(("name", "text"), DATA_FILES, ids=[name for name, _ in DATA_FILES])
def test_data_file_validates(name: str, text: str) -> None:
    data = json.loads(text)
    assert validate_licence_data(data) == []
    assert name == f"{data['id']}.json"
    ids = [item["id"] for item in [*data["obligations"], *data.get("notes", [])]]
    assert len(ids) == len(set(ids))
    for item in [*data["obligations"], *data.get("notes", [])]:
        assert item["section"].strip() and item["quote"].strip(), item["id"]
    if data["verification"] == "secondary":
        assert data.get("verification_note"), "a secondary source must say what was not verified"


@pytest.mark.parametrize(("name", "text"), DATA_FILES, ids=[name for name, _ in DATA_FILES])
def test_checked_phrases_come_from_the_quoted_sentence(name: str, text: str) -> None:
    """A notice, display phrase or name prefix must be the licence's own words, as quoted."""
    for obligation in json.loads(text)["obligations"]:
        check = obligation["check"]
        quote = _plain(obligation["quote"])
        if obligation["id"] in ("notice", "built-with") and check["kind"] == "text_contains":
            assert any(_plain(phrase) in quote for phrase in check["any_of"]), obligation["id"]
        if check["kind"] == "name_prefix":
            assert _plain(f'"{check["prefix"]}"') in quote


def _plain(text: str) -> str:
    table = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2019": "'", "\u00a9": "(c)"})
    return " ".join(text.translate(table).casefold().split())


def test_aliases_are_unique_across_files() -> None:
    seen: dict[str, str] = {}
    for licence in known_licences():
        for alias in licence.aliases:
            key = alias.casefold().replace("_", "-").replace(" ", "-")
            assert key not in seen, f"{alias!r} names both {seen[key]} and {licence.id}"
            seen[key] = licence.id


@pytest.mark.parametrize(("name", "text"), DATA_FILES, ids=[name for name, _ in DATA_FILES])
def test_licence_to_dict_is_the_data_file(name: str, text: str) -> None:
    data = json.loads(text)
    data.setdefault("notes", [])
    assert _licence(data["id"]).to_dict() == data


def test_validation_reports_problems() -> None:
    data: dict[str, Any] = json.loads(dict(DATA_FILES)["llama3.json"])
    data["schema_version"] = 2
    data["obligations"][0]["section"] = ""
    data["obligations"][1]["id"] = data["obligations"][0]["id"]
    data["obligations"][2]["applies_to"] = "sometimes"
    data["obligations"][3]["check"] = {"kind": "regex", "pattern": ".*"}
    problems = validate_licence_data(data)
    assert any("schema_version" in p for p in problems)
    assert any("obligations[0].section" in p for p in problems)
    assert any("used twice" in p for p in problems)
    assert any("applies_to" in p for p in problems)
    assert any("kind 'regex'" in p for p in problems)
    assert validate_licence_data([]) == ["top level is a list, not an object"]


def test_every_status_and_scope_is_known() -> None:
    for licence in known_licences():
        for obligation in licence.obligations:
            assert obligation.applies_to in APPLIES_TO
    assert STATUSES == ("met", "missing", "manual")


# -- resolving card values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("license", "license_name", "expected"),
    [
        ("llama2", None, "llama2"),
        ("llama3", None, "llama3"),
        ("llama3.1", None, "llama3.1"),
        ("llama3.2", None, "llama3.2"),
        ("llama3.3", None, "llama3.3"),
        ("LLAMA3", None, "llama3"),
        ("other", "llama2", "llama2"),  # tests/data/cards/license_other.md
        ("other", "tongyi-qianwen", "tongyi-qianwen"),  # Qwen1.5 / Qwen2-72B cards
        ("other", "tongyi-qianwen-license-agreement", "tongyi-qianwen"),  # Qwen-7B card
        ("other", "qwen", "qwen"),  # Qwen2.5-72B card
        ("other", "qwen-research", "qwen-research"),
        ("other", "deepseek", "deepseek"),
        ("deepseek", None, "deepseek"),
        ("apache-2.0", None, "apache-2.0"),
        ("Apache-2.0", None, "apache-2.0"),  # SPDX spelling, as GGUF general.license often has it
        ("mit", None, "mit"),
        ("MIT", None, "mit"),
        ("gemma", None, "gemma"),
        ("cc-by-4.0", None, "cc-by-4.0"),
        ("cc-by-nc-4.0", None, "cc-by-nc-4.0"),
        (" Llama 3 ", None, "llama3"),
        ("unknown", "gemma-terms-of-use", "gemma"),
    ],
)
def test_load_licence_resolves_card_values(license: str, license_name: str | None, expected: str) -> None:
    assert _licence(license, license_name).id == expected


@pytest.mark.parametrize(
    ("license", "license_name"),
    [("other", None), ("other", "my-own-licence"), ("gpl-3.0", None), ("", None), ("unknown", None)],
)
def test_load_licence_unknown(license: str, license_name: str | None) -> None:
    assert load_licence(license, license_name) is None


def test_load_licence_falls_back_to_license_name() -> None:
    assert _licence("some-unlisted-value", "llama3").id == "llama3"


def test_family_hints() -> None:
    assert licence_for_family("gemma") == licence_for_family("gemma2") == licence_for_family("gemma3")
    assert _licence("gemma") == licence_for_family("Gemma3")
    assert licence_for_family("deepseek-v1") == _licence("deepseek")
    # Llama 2, 3, 3.1, 3.2 and 3.3 each have their own agreement: no single answer.
    assert licence_for_family("llama") is None
    assert [licence.id for licence in licence_candidates_for_family("llama")] == [
        "llama2",
        "llama3",
        "llama3.1",
        "llama3.2",
        "llama3.3",
    ]
    # Qwen2-architecture models ship under Tongyi Qianwen, the Qwen licence or the research licence.
    assert licence_for_family("qwen2") is None
    assert {licence.id for licence in licence_candidates_for_family("qwen2")} >= {"tongyi-qianwen", "qwen"}
    assert licence_for_family("qwen") == _licence("other", "tongyi-qianwen")
    assert licence_for_family("bert") is None


# -- checking directories: Llama 3 --------------------------------------------------------------


def _llama3_finetune(tmp_path: Path, *, built_with: bool = True) -> Path:
    body = "# Llama-3-MyTune\n\nA fine-tune of Meta Llama 3 8B.\n"
    if built_with:
        body += "\nBuilt with Meta Llama 3\n"
    return _model(
        tmp_path,
        "mytune",
        {
            "README.md": _card("license: llama3\nbase_model: meta-llama/Meta-Llama-3-8B", body),
            "LICENSE": LLAMA3_LICENSE,
            "NOTICE": LLAMA3_NOTICE,
            "USE_POLICY.md": "Meta Llama 3 Acceptable Use Policy\n",
            "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
        },
    )


def test_llama3_finetune_meets_everything_but_the_manual_items(tmp_path: Path) -> None:
    # 1.b.i: "you shall (A) provide a copy of this Agreement with any such Llama Materials; and
    # (B) prominently display "Built with Meta Llama 3" [...] If you use the Llama Materials to
    # create, train, fine tune, or otherwise improve an AI model, which is distributed or made
    # available, you shall also include "Llama 3" at the beginning of any such AI model name."
    # 1.b.iii: "You must retain in all copies of the Llama Materials that you distribute the
    # following attribution notice within a "Notice" text file"
    directory = _llama3_finetune(tmp_path)
    results = check_obligations(_licence("llama3"), directory, model_name="Llama-3-MyTune", card_text=None)
    statuses = {result.obligation: result.status for result in results}
    assert statuses == {
        "licence-copy": "met",
        "built-with": "met",
        "name-prefix": "met",
        "notice": "met",
        "acceptable-use": "manual",
    }
    found = _by_id(results)
    assert found["licence-copy"].found_in == "LICENSE:1"
    assert found["notice"].found_in == "NOTICE:1"
    assert found["built-with"].found_in == "README.md:9"  # the line in the file, front matter counted
    assert found["name-prefix"].found_in == "model name"
    assert "USE_POLICY.md" in found["acceptable-use"].evidence
    assert found["name-prefix"].section == "1.b.i" and found["notice"].section == "1.b.iii"
    assert json.loads(json.dumps([result.to_dict() for result in results]))[0]["licence"] == "llama3"


def test_llama3_name_without_the_prefix(tmp_path: Path) -> None:
    # 1.b.i: "you shall also include "Llama 3" at the beginning of any such AI model name."
    directory = _llama3_finetune(tmp_path)
    results = _by_id(check_obligations(_licence("llama3"), directory, model_name="MyTune", card_text=None))
    assert results["name-prefix"].status == "missing"
    assert 'does not begin with "Llama 3"' in results["name-prefix"].evidence
    assert results["licence-copy"].status == "met"


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("Llama-3-MyTune", "met"),
        ("llama_3_mytune", "met"),
        ("Llama3-MyTune", "met"),
        ("Llama 3 Instruct", "met"),
        ("someone/Llama-3-MyTune", "met"),
        ("Llama-30B-Thing", "missing"),  # "Llama 30B" does not begin with "Llama 3"
        ("Meta-Llama-3-8B-Instruct-abliterated", "missing"),
        ("MyTune-Llama-3", "missing"),
        ("", "manual"),
    ],
)
def test_llama3_name_prefix_forms(tmp_path: Path, name: str, status: str) -> None:
    directory = _llama3_finetune(tmp_path)
    results = _by_id(check_obligations(_licence("llama3"), directory, model_name=name, card_text=None))
    assert results["name-prefix"].status == status


def test_no_model_name_leaves_the_prefix_to_a_person(tmp_path: Path) -> None:
    directory = _llama3_finetune(tmp_path)
    results = _by_id(check_obligations(_licence("llama3"), directory, model_name=None, card_text=None))
    assert results["name-prefix"].status == "manual"


def test_quantized_copy_leaves_the_naming_rule_to_a_person(tmp_path: Path) -> None:
    # The naming rule binds "If you use the Llama Materials to create, train, fine tune, or
    # otherwise improve an AI model"; a re-quantized copy is not obviously that.
    directory = _llama3_finetune(tmp_path)
    results = _by_id(
        check_obligations(
            _licence("llama3"),
            directory,
            model_name="Meta-Llama-3-8B-GGUF",
            card_text=None,
            relation="quantized",
        )
    )
    assert results["name-prefix"].status == "manual"
    assert "quantized" in results["name-prefix"].evidence
    assert results["licence-copy"].status == "met"


def test_built_with_missing(tmp_path: Path) -> None:
    directory = _llama3_finetune(tmp_path, built_with=False)
    results = _by_id(check_obligations(_licence("llama3"), directory, model_name="Llama-3-X", card_text=None))
    assert results["built-with"].status == "missing"
    assert "the model card" in results["built-with"].evidence


def test_the_licence_quoting_itself_does_not_count(tmp_path: Path) -> None:
    """A card that pastes the agreement holds "Built with Meta Llama 3" only as the licence's words.

    Meta's own cards carry the whole agreement in ``extra_gated_prompt``; derivatives copy it.
    Front matter never counts, and in the body the phrase right after 'display' is the licence
    quoting itself.
    """
    front_matter = (
        "license: llama3\n"
        'extra_gated_prompt: "META LLAMA 3 COMMUNITY LICENSE AGREEMENT\\nMeta Llama 3 Version Release Date: '
        'April 18, 2024 ... prominently display \\u201cBuilt with Meta Llama 3\\u201d ..."'
    )
    body = (
        "# Llama-3-Copy\n\n## License\n\n(B) prominently display \u201cBuilt with Meta Llama 3\u201d on a related "
        "website, user interface, blogpost, about page, or product documentation.\n"
    )
    directory = _model(tmp_path, "copy", {"README.md": _card(front_matter, body)})
    results = _by_id(
        check_obligations(_licence("llama3"), directory, model_name="Llama-3-Copy", card_text=None)
    )
    assert results["built-with"].status == "missing"
    assert results["licence-copy"].status == "missing"  # the gated prompt is front matter


def test_agreement_pasted_into_the_card_body_is_a_copy(tmp_path: Path) -> None:
    body = "# Llama-3-X\n\n" + LLAMA3_LICENSE + "\nBuilt with Meta Llama 3\n"
    directory = _model(tmp_path, "pasted", {})
    card_text = _card("license: llama3", body)
    results = _by_id(
        check_obligations(_licence("llama3"), directory, model_name="Llama-3-X", card_text=card_text)
    )
    assert results["licence-copy"].status == "met"
    # The release-date line: in a card, the title alone is no copy (it may be a mere mention).
    assert results["licence-copy"].found_in == "README.md:8"
    assert results["built-with"].status == "met"


def test_a_mention_of_the_agreement_is_not_a_copy(tmp_path: Path) -> None:
    directory = _model(
        tmp_path,
        "mention",
        {"LICENSE": "This model is licensed under the META LLAMA 3 COMMUNITY LICENSE AGREEMENT.\n"},
    )
    results = _by_id(check_obligations(_licence("llama3"), directory, model_name="Llama-3-X", card_text=""))
    assert results["licence-copy"].status == "missing"


# -- checking directories: Llama 2, notices -----------------------------------------------------


def test_llama2_derivative_without_a_licence_copy(tmp_path: Path) -> None:
    # 1.b.i: "If you distribute or make the Llama Materials, or any derivative works thereof,
    # available to a third party, you shall provide a copy of this Agreement to such third party."
    directory = _model(
        tmp_path,
        "l2",
        {
            "README.md": _card("license: llama2\nbase_model: meta-llama/Llama-2-7b-hf", "# MyLlama2\n"),
            "Notice": LLAMA2_NOTICE,
        },
    )
    results = _by_id(check_obligations(_licence("llama2"), directory, model_name="MyLlama2", card_text=None))
    assert results["licence-copy"].status == "missing"
    assert "no such file" in results["licence-copy"].evidence
    # 1.b.iii: "... within a "Notice" text file ...: "Llama 2 is licensed under the LLAMA 2
    # Community License, Copyright (c) Meta Platforms, Inc. All Rights Reserved."" (© read as (c))
    assert results["notice"].status == "met"
    assert results["notice"].found_in == "Notice:1"
    # Llama 2 has no naming or display rule.
    assert set(results) == {"licence-copy", "notice", "acceptable-use"}
    assert {note.section for note in _licence("llama2").notes} == {"1.b.ii", "1.b.v", "2"}


def test_llama2_licence_copy_in_a_wrapped_file(tmp_path: Path) -> None:
    directory = _model(tmp_path, "l2", {"LICENSE.txt": LLAMA2_LICENSE})
    results = _by_id(check_obligations(_licence("llama2"), directory, model_name=None, card_text=""))
    assert results["licence-copy"].status == "met"
    assert results["licence-copy"].found_in == "LICENSE.txt:1"


def test_notice_only_in_the_card_is_missing_with_a_hint(tmp_path: Path) -> None:
    directory = _model(
        tmp_path,
        "l2",
        {"README.md": _card("license: llama2", "# X\n\n" + LLAMA2_NOTICE + "\n"), "LICENSE": LLAMA2_LICENSE},
    )
    results = _by_id(check_obligations(_licence("llama2"), directory, model_name=None, card_text=None))
    assert results["notice"].status == "missing"
    assert "README.md:6" in results["notice"].evidence
    assert "not where the licence asks" in results["notice"].evidence


def test_the_notice_quoted_inside_the_agreement_is_not_the_notice(tmp_path: Path) -> None:
    # A file named NOTICE-and-LICENSE.txt holding the agreement's own 1.b.iii sentence.
    agreement = (
        LLAMA2_LICENSE + "iii. You must retain in all copies of the Llama Materials that you \n"
        'distribute the following attribution notice within a "Notice" text file distributed as a \n'
        'part of such copies: "Llama 2 is licensed under the LLAMA 2 Community License, \n'
        'Copyright (c) Meta Platforms, Inc. All Rights Reserved."\n'
    )
    directory = _model(tmp_path, "l2", {"NOTICE-and-LICENSE.txt": agreement})
    results = _by_id(check_obligations(_licence("llama2"), directory, model_name=None, card_text=""))
    assert results["notice"].status == "missing"
    assert results["licence-copy"].status == "met"


# -- checking directories: other licences -------------------------------------------------------


def test_apache_with_licence_file(tmp_path: Path) -> None:
    # 4(a): "You must give any other recipients of the Work or Derivative Works a copy of this License"
    directory = _model(tmp_path, "a", {"LICENSE": APACHE_LICENSE, "NOTICE": "Copyright 2024 Someone\n"})
    results = _by_id(check_obligations(_licence("apache-2.0"), directory, model_name="x", card_text=""))
    assert results["licence-copy"].status == "met"
    assert results["licence-copy"].section == "4(a)"
    assert {results[key].status for key in ("modified-files", "retain-notices", "notice-file")} == {"manual"}
    assert "NOTICE" in results["notice-file"].evidence


def test_apache_tag_in_the_card_is_not_a_copy(tmp_path: Path) -> None:
    card = _card("license: apache-2.0", "# X\n\nReleased under the Apache License 2.0.\n")
    directory = _model(tmp_path, "a", {"README.md": card})
    results = _by_id(check_obligations(_licence("apache-2.0"), directory, model_name="x", card_text=None))
    assert results["licence-copy"].status == "missing"


def test_mit_permission_notice(tmp_path: Path) -> None:
    # "The above copyright notice and this permission notice shall be included in all copies or
    # substantial portions of the Software."
    text = "MIT License\n\nCopyright (c) 2024 A\n\nPermission is hereby granted, free of charge, to any person obtaining a copy\n"
    directory = _model(tmp_path, "m", {"LICENSE.md": text})
    results = check_obligations(_licence("mit"), directory, model_name="x", card_text="")
    assert [(r.obligation, r.status, r.found_in) for r in results] == [
        ("permission-notice", "met", "LICENSE.md:5")
    ]


def test_gemma_notice_file(tmp_path: Path) -> None:
    # 3.1: "All Distributions (other than through a Hosted Service) must be accompanied by a "Notice"
    # text file that contains the following notice: "Gemma is provided under and subject to the
    # Gemma Terms of Use found at ai.google.dev/gemma/terms"."
    directory = _model(
        tmp_path,
        "g",
        {
            "NOTICE.txt": "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms\n"
        },
    )
    results = _by_id(check_obligations(_licence("gemma"), directory, model_name="x", card_text=""))
    assert results["notice"].status == "met"
    assert results["notice"].section == "3.1"
    assert results["licence-copy"].status == "missing"
    assert results["use-restrictions-passed-on"].status == "manual"
    assert results["use-restrictions"].section == "3.2"


def test_qwen_improved_using(tmp_path: Path) -> None:
    # 5.b: "you shall prominently display "Built with Qwen" or "Improved using Qwen" in the related
    # product documentation."
    card = _card("license: other\nlicense_name: qwen", "# Tune\n\nImproved using Qwen.\n")
    directory = _model(tmp_path, "q", {"README.md": card})
    results = _by_id(
        check_obligations(_licence("other", "qwen"), directory, model_name="Tune", card_text=None)
    )
    assert results["built-with"].status == "met"
    assert results["built-with"].section == "5.b"
    assert results["notice"].status == "missing"


def test_cc_by_uri_in_the_card(tmp_path: Path) -> None:
    # 3(a)(1)(C): "indicate the Licensed Material is licensed under this Public License, and include
    # the text of, or the URI or hyperlink to, this Public License."
    card = _card("license: cc-by-4.0", "# D\n\n[CC BY 4.0](https://creativecommons.org/licenses/by/4.0/)\n")
    directory = _model(tmp_path, "c", {"README.md": card})
    results = _by_id(check_obligations(_licence("cc-by-4.0"), directory, model_name="D", card_text=None))
    assert results["licence-indicated"].status == "met"
    nc = _by_id(check_obligations(_licence("cc-by-nc-4.0"), directory, model_name="D", card_text=None))
    assert nc["licence-indicated"].status == "missing"  # by/4.0 is not by-nc/4.0


# -- reading files safely -----------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_links_out_of_the_directory_are_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.txt"
    outside.write_text(LLAMA3_LICENSE, encoding="utf-8")
    directory = _model(tmp_path, "m", {})
    (directory / "LICENSE").symlink_to(outside)
    results = _by_id(check_obligations(_licence("llama3"), directory, model_name=None, card_text=""))
    assert results["licence-copy"].status == "missing"
    assert "a link out of the directory" in results["licence-copy"].evidence


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_hub_cache_snapshot_links_into_blobs_are_read(tmp_path: Path) -> None:
    repo = tmp_path / "models--someone--Llama-3-MyTune"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (blobs / "1111").write_text(LLAMA3_LICENSE, encoding="utf-8")
    (snapshot / "LICENSE").symlink_to(Path("..", "..", "blobs", "1111"))
    results = _by_id(check_obligations(_licence("llama3"), snapshot, model_name=None, card_text=""))
    assert results["licence-copy"].status == "met"
    assert model_display_name(snapshot, None) == "Llama-3-MyTune"
    # The cache folder itself means the snapshot refs/main names.
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123", encoding="ascii")
    from_repo = _by_id(check_obligations(_licence("llama3"), repo, model_name=None, card_text=""))
    assert from_repo["licence-copy"].found_in == "LICENSE:1"
    assert model_display_name(repo, None) == "Llama-3-MyTune"


def test_undecodable_binary_and_oversized_files(tmp_path: Path) -> None:
    latin1 = LLAMA3_LICENSE.encode("utf-8") + "Caf\u00e9 \u00e0 la carte\n".encode("latin-1")
    directory = _model(
        tmp_path,
        "m",
        {
            "LICENSE": latin1,
            "NOTICE.bin": b"\x00\x01" + LLAMA3_NOTICE.encode(),
            "notice_big.txt": b"x" * (MAX_TEXT_BYTES + 10) + LLAMA3_NOTICE.encode(),
        },
    )
    results = _by_id(check_obligations(_licence("llama3"), directory, model_name=None, card_text=""))
    assert results["licence-copy"].status == "met"
    assert results["notice"].status == "missing"
    assert "binary, not read" in results["notice"].evidence
    assert "the first part read" in results["notice"].evidence


def test_utf16_notice(tmp_path: Path) -> None:
    directory = _model(tmp_path, "m", {"NOTICE": LLAMA3_NOTICE.encode("utf-16")})
    results = _by_id(check_obligations(_licence("llama3"), directory, model_name=None, card_text=""))
    assert results["notice"].status == "met"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError):
        check_obligations(_licence("mit"), tmp_path / "nope", model_name=None, card_text=None)


def test_a_file_path_means_its_directory(tmp_path: Path) -> None:
    directory = _llama3_finetune(tmp_path)
    results = _by_id(
        check_obligations(
            _licence("llama3"), directory / "model.safetensors", model_name=None, card_text=None
        )
    )
    assert results["licence-copy"].status == "met"


# -- model names --------------------------------------------------------------------------------


def test_model_display_name_order(tmp_path: Path) -> None:
    card = _card("license: mit", "```\n# not a title\n```\n\n## Sub\n\n# Real Title\n")
    directory = _model(tmp_path, "dir-name", {"README.md": card})
    assert (
        model_display_name(directory, {"model_name": "From-Meta", "model-index": [{"name": "Idx"}]})
        == "From-Meta"
    )
    assert model_display_name(directory, {"model-index": [{"name": "From-Index"}]}) == "From-Index"
    assert model_display_name(directory, {"model-index": "garbage"}) == "Real Title"
    assert model_display_name(directory, None) == "Real Title"
    bare = _model(tmp_path, "bare-dir", {})
    assert model_display_name(bare, None) == "bare-dir"
