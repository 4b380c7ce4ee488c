"""Code provenance: a model's own modeling code against the installed transformers' implementations.

Everything is real: the reference index is built from the transformers installed in this venv, and
the "Yi-style" file is made here from its Llama implementation by renaming classes, functions and
variables and deleting every comment, docstring and the license header.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unshell.auditing import (
    CodeMatch,
    ReferenceIndex,
    code,
    code_provenance,
    code_similarity,
    find_model_code,
)
from unshell.auditing.code import MAX_SOURCE_BYTES, fingerprint_code
from unshell.errors import InputError, MissingDependencyError, PathNotFoundError, ResourceLimitError

_SPEC = importlib.util.find_spec("transformers")
assert _SPEC is not None and _SPEC.submodule_search_locations, "the test extra installs transformers"
MODELS = Path(next(iter(_SPEC.submodule_search_locations))) / "models"
LLAMA = "transformers/models/llama/modeling_llama.py"
GPT2 = "transformers/models/gpt2/modeling_gpt2.py"

# What a careless rebrand renames: functions and local variables besides the class names.
RENAMES = {
    "rotate_half": "rot_half",
    "apply_rotary_pos_emb": "apply_rope",
    "repeat_kv": "rep_kv",
    "eager_attention_forward": "eager_attn",
    "hidden_states": "hs",
    "query_states": "q",
    "key_states": "k",
    "value_states": "v",
    "attn_output": "out",
    "attn_weights": "weights",
    "position_ids": "pos",
    "position_embeddings": "pos_emb",
    "residual": "res",
    "causal_mask": "mask",
    "past_key_values": "cache",
    "inputs_embeds": "embeds",
    "input_shape": "shape_in",
    "hidden_shape": "shape_h",
    "inv_freq": "freqs",
}


def _rename(name: str) -> str:
    return RENAMES.get(name, name.replace("Llama", "Yi"))


class _Rebrand(ast.NodeTransformer):
    """Llama -> Yi in every name and string, functions and variables renamed, docstrings deleted."""

    def _strip_docstring(self, node: ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef) -> None:
        body = node.body
        first = body[0] if body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self._strip_docstring(node)
        node.name = _rename(node.name)
        return self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self._strip_docstring(node)
        node.name = _rename(node.name)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = _rename(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = _rename(node.arg)
        return self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        if node.arg:
            node.arg = _rename(node.arg)
        return self.generic_visit(node)

    def visit_alias(self, node: ast.alias) -> ast.AST:
        node.name = _rename(node.name)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.module:
            node.module = node.module.replace("llama", "yi")
        return self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, str):
            node.value = node.value.replace("Llama", "Yi").replace("LLaMA", "Yi").replace("llama", "yi")
        return node


def _rebranded_llama() -> str:
    tree = _Rebrand().visit(ast.parse((MODELS / "llama" / "modeling_llama.py").read_text()))
    return ast.unparse(ast.fix_missing_locations(tree))  # unparse keeps no comment, hence no header


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> ReferenceIndex:
    started = time.perf_counter()
    built = ReferenceIndex(cache_dir=tmp_path_factory.mktemp("unshell-cache"))
    assert len(built) > 300
    print(f"\nreference index: {len(built)} files built in {time.perf_counter() - started:.2f}s")
    return built


@pytest.fixture(scope="module")
def yi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("yi")
    (directory / "modeling_yi.py").write_text(_rebranded_llama())
    config = {
        "model_type": "Yi",
        "auto_map": {
            "AutoConfig": "configuration_yi.YiConfig",
            "AutoModelForCausalLM": "modeling_yi.YiForCausalLM",
        },
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_rebranded_llama_is_traced_to_llama(index: ReferenceIndex, yi_dir: Path) -> None:
    source = (yi_dir / "modeling_yi.py").read_text()
    assert "llama" not in source.lower() and "#" not in source and "Copyright" not in source
    assert "class YiAttention" in source and "def rot_half" in source and "hs = " in source

    started = time.perf_counter()
    [match] = code_provenance(yi_dir, references=index)
    elapsed = time.perf_counter() - started
    print(
        f"renamed llama: {match.similarity:.4f} ({match.reference}), top {match.candidates[:3]}, {elapsed:.3f}s"
    )
    assert elapsed < 2.0
    assert match.file == "modeling_yi.py"
    assert match.reference == LLAMA and match.reference_family == "llama"
    assert match.similarity >= 0.9
    assert match.runner_up is not None and match.runner_up[0] != LLAMA
    removed = "\n".join(match.removed_references)
    for renamed in ("Attention", "DecoderLayer", "MLP", "Model", "RMSNorm", "ForSequenceClassification"):
        assert f"class Llama{renamed} -> Yi{renamed} (body 100% alike, name pattern)" in removed
    # Bodies that differ a little: the test renames keyword arguments but not the attributes they mirror.
    assert "class LlamaForCausalLM -> YiForCausalLM (body 8" in removed
    assert (
        "license header line 'Copyright 2022 EleutherAI and the HuggingFace Inc. team. All rights reserved.'"
        in removed
    )
    # The reference's mentions of its family are all gone from the file.
    assert any(
        line.startswith("'llama' (any case)") and line.endswith("the file has 0/0/0")
        for line in match.removed_references
    )
    assert any("named with 'Yi'" in note for note in match.notes)
    # Functions renamed without the family name are not "removed references": nothing to show.
    assert "rotate_half" not in removed

    as_dict = match.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["reference"] == LLAMA and as_dict["removed_references"]


def test_single_file_and_credited_copy(index: ReferenceIndex, tmp_path: Path) -> None:
    """A copy that keeps its attribution: nothing of the kind reported as removed."""
    original = MODELS / "llama" / "modeling_llama.py"
    copy = tmp_path / "modeling_llama_copy.py"
    copy.write_bytes(original.read_bytes())
    [match] = code_provenance(copy, references=index)
    assert match.reference == LLAMA and match.similarity == 1.0 and match.coverage == 1.0
    assert match.removed_references == ()
    assert any(note.startswith("'llama' (any case)") for note in match.notes)


def test_gpt2_is_not_llama(index: ReferenceIndex) -> None:
    gpt2 = MODELS / "gpt2" / "modeling_gpt2.py"
    versus_llama = code_similarity(gpt2, MODELS / "llama" / "modeling_llama.py")
    print(f"gpt2 vs llama: {versus_llama:.4f}")
    assert versus_llama < 0.2  # measured 0.061
    assert index.similarity(fingerprint_code(gpt2), LLAMA) == pytest.approx(versus_llama)

    [match] = code_provenance(gpt2, references=index)
    assert match.reference == GPT2 and match.similarity == 1.0
    # decision_transformer copies GPT-2's blocks ("Copied from transformers.models.gpt2"): the runner-up.
    assert match.runner_up is not None
    assert match.runner_up[0] == "transformers/models/decision_transformer/modeling_decision_transformer.py"
    assert 0.2 < match.runner_up[1] < 0.8  # measured 0.380
    assert "gpt2" in index.derived_from(match.runner_up[0])


def test_other_real_files(index: ReferenceIndex) -> None:
    """Each installed file finds itself; its runner-ups are the files it shares code with."""
    for family in ("mistral", "qwen2", "bert"):
        fingerprint = fingerprint_code(MODELS / family / f"modeling_{family}.py")
        ranked = index.rank(fingerprint, top=4)
        print(family, [(name.split("/")[2], round(sim, 3), round(cov, 3)) for name, sim, cov in ranked])
        assert ranked[0][0] == f"transformers/models/{family}/modeling_{family}.py" and ranked[0][1] == 1.0
        assert ranked[1][1] > 0.7  # all three share most of their code with a sibling
    # Mistral's modeling code is generated from a modular file built on Llama: close, and said so.
    mistral = fingerprint_code(MODELS / "mistral" / "modeling_mistral.py")
    assert index.similarity(mistral, LLAMA) > 0.75  # measured 0.852
    assert "llama" in index.derived_from("transformers/models/mistral/modeling_mistral.py")


def test_disk_cache_round_trip(index: ReferenceIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    fingerprint = fingerprint_code(MODELS / "gpt2" / "modeling_gpt2.py")
    expected = index.rank(fingerprint, top=5)
    monkeypatch.setattr(code, "_INDEXES", {})  # a new process, as far as the index can tell
    again = ReferenceIndex(cache_dir=index._cache_dir)
    assert again.references == index.references
    assert again.loaded_from_cache and again.build_seconds is not None and again.build_seconds < 2.0
    assert again.rank(fingerprint, top=5) == expected
    assert again.derived_from("transformers/models/mistral/modeling_mistral.py") == index.derived_from(
        "transformers/models/mistral/modeling_mistral.py"
    )
    # Within one process the index is shared, not rebuilt.
    third = ReferenceIndex(cache_dir=index._cache_dir)
    assert third.references == again.references and third._table is again._table


def test_corrupt_disk_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "transformers"
    for family in ("llama", "gpt2"):
        (small / "models" / family).mkdir(parents=True)
        source = MODELS / family / f"modeling_{family}.py"
        (small / "models" / family / source.name).write_bytes(source.read_bytes())
    cache = tmp_path / "cache"
    built = ReferenceIndex(small, cache_dir=cache)
    assert built.references == (GPT2, LLAMA) and not built.loaded_from_cache
    [cached] = list(cache.glob("code-index-*.npz"))
    cached.write_bytes(b"not a zip file")
    monkeypatch.setattr(code, "_INDEXES", {})
    rebuilt = ReferenceIndex(small, cache_dir=cache)
    assert rebuilt.references == (GPT2, LLAMA) and not rebuilt.loaded_from_cache


def test_find_model_code_and_symlinks(yi_dir: Path, tmp_path: Path, index: ReferenceIndex) -> None:
    config = json.loads((yi_dir / "config.json").read_text())
    assert find_model_code(yi_dir, config) == [yi_dir / "modeling_yi.py"]

    model = tmp_path / "model"
    model.mkdir()
    outside = tmp_path / "elsewhere.py"
    outside.write_text("import os\n")
    (model / "modeling_evil.py").symlink_to(outside)
    (model / "helpers.py").symlink_to(outside)
    (model / "modeling_yi.py").write_text((yi_dir / "modeling_yi.py").read_text())
    (model / "config.json").write_text(
        json.dumps(
            {
                "auto_map": {
                    "AutoModel": "helpers.YiModel",
                    "AutoModelForCausalLM": ["modeling_yi.YiForCausalLM"],
                    "AutoModelForSequenceClassification": "other/repo--modeling_x.XModel",
                    "AutoModelForTokenClassification": "modeling_missing.YiForTokens",
                    "AutoTokenizer": ["tokenization_yi.YiTokenizer", None],
                }
            }
        )
    )
    notes: list[str] = []
    found = find_model_code(model, json.loads((model / "config.json").read_text()), notes=notes)
    assert found == [model / "modeling_yi.py"]
    assert "helpers.py: a symlink to outside the model directory, not read" in notes
    assert "modeling_evil.py: a symlink to outside the model directory, not read" in notes
    assert "modeling_missing.py: named by auto_map but not in the directory" in notes
    assert any("code in another repository (other/repo--modeling_x.XModel)" in note for note in notes)

    matches = code_provenance(model, references=index)
    by_file = {match.file: match for match in matches}
    assert by_file["modeling_yi.py"].reference == LLAMA
    assert by_file["modeling_evil.py"].reference is None
    assert by_file["modeling_evil.py"].notes == (
        "modeling_evil.py: a symlink to outside the model directory, not read",
    )

    empty = tmp_path / "no_code"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert code_provenance(empty, references=index) == []


def test_syntax_errors_and_limits(tmp_path: Path, index: ReferenceIndex) -> None:
    broken = tmp_path / "modeling_broken.py"
    broken.write_text("class YiModel(nn.Module):\n    def forward(self, x:\n        return x\n")
    with pytest.raises(InputError, match=r"modeling_broken\.py: not valid Python \(line \d+\)"):
        code_provenance(broken, references=index)

    huge = tmp_path / "modeling_huge.py"
    huge.write_bytes(b"x = 1\n" * (MAX_SOURCE_BYTES // 6 + 1))
    with pytest.raises(ResourceLimitError, match=r"modeling_huge\.py: more than 4,000,000 bytes"):
        code_provenance(huge, references=index)

    deep = tmp_path / "modeling_deep.py"
    deep.write_text("x = " + "-" * 200_000 + "1\n")
    with pytest.raises(ResourceLimitError, match="nested too deeply"):
        code_provenance(deep, references=index)
    chained = tmp_path / "modeling_chain.py"
    chained.write_text("x = a" + ".b" * 100_000 + "\n")
    with pytest.raises(ResourceLimitError, match="nested too deeply"):
        code_provenance(chained, references=index)

    nul = tmp_path / "modeling_nul.py"
    nul.write_bytes(b"x = 1\x00\n")
    with pytest.raises(InputError, match="not valid Python"):
        code_provenance(nul, references=index)

    with pytest.raises(PathNotFoundError):
        code_provenance(tmp_path / "absent.py", references=index)

    # In a directory, a bad file is a note on its own entry; the other files are still compared.
    model = tmp_path / "model"
    model.mkdir()
    (model / "modeling_broken.py").write_bytes(broken.read_bytes())
    (model / "modeling_huge.py").symlink_to(huge)  # inside tmp_path but outside model/: refused
    (model / "modeling_ok.py").write_bytes((MODELS / "gpt2" / "modeling_gpt2.py").read_bytes())
    by_file = {match.file: match for match in code_provenance(model, references=index)}
    assert by_file["modeling_broken.py"].reference is None
    assert by_file["modeling_broken.py"].notes[0].startswith("modeling_broken.py: not valid Python (line 2)")
    assert by_file["modeling_huge.py"].reference is None
    assert by_file["modeling_ok.py"].reference == GPT2


def test_hostile_but_valid_code_is_bounded(tmp_path: Path, index: ReferenceIndex) -> None:
    """Deep but parseable nesting goes through the iterative walker without RecursionError."""
    nested = tmp_path / "modeling_nested.py"
    nested.write_text("x = " + "(1 + " * 90 + "1" + ")" * 90 + "\n" + "y = a" + "[0]" * 2_500 + "\n")
    [match] = code_provenance(nested, references=index)
    assert match.reference is None and match.similarity < 0.2
    assert match.notes and "no reference explains" in match.notes[0]
    empty = tmp_path / "modeling_empty.py"
    empty.write_text('"""Only a docstring."""\n')
    [match] = code_provenance(empty, references=index)
    assert match == CodeMatch("modeling_empty.py", None, None, 0.0, notes=match.notes)


def test_model_code_is_never_executed(tmp_path: Path, index: ReferenceIndex) -> None:
    marker = tmp_path / "executed"
    model = tmp_path / "model"
    model.mkdir()
    payload = (
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nraise SystemExit(3)\n"
        + (MODELS / "llama" / "modeling_llama.py").read_text()
    )
    (model / "modeling_trap.py").write_text(payload)
    (model / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('init ran')\n"
    )
    (model / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "modeling_trap.TrapModel"}}))
    [match] = code_provenance(model, references=index)
    assert match.reference == LLAMA and match.similarity > 0.95
    [match] = code_provenance(model / "modeling_trap.py", references=index)
    assert match.reference == LLAMA
    assert not marker.exists()


def test_missing_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def without_transformers(name: str, *args: object, **kwargs: object) -> object:
        return None if name == "transformers" else real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_transformers)
    with pytest.raises(MissingDependencyError, match=r"pip install 'unshell\[transformers\]'") as caught:
        ReferenceIndex()
    assert "\n" not in str(caught.value)


def test_default_index_is_cached_per_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, index: ReferenceIndex
) -> None:
    """``references=None`` uses the installed transformers and the cache directory from the environment."""
    monkeypatch.setenv("UNSHELL_CACHE_DIR", str(index._cache_dir))
    copy = tmp_path / "modeling_gpt2.py"
    copy.write_bytes((MODELS / "gpt2" / "modeling_gpt2.py").read_bytes())
    started = time.perf_counter()
    [match] = code_provenance(copy)  # shares the module's index: same root, same cache directory
    assert time.perf_counter() - started < 2.0
    assert match.reference == GPT2
    assert os.environ["UNSHELL_CACHE_DIR"] == str(index._cache_dir)


def _without_comments(path: Path) -> str:
    return ast.unparse(ast.parse(path.read_text()))  # docstrings stay, comments and header go


def test_removed_copied_from_and_generated_headers(index: ReferenceIndex, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    decision = MODELS / "decision_transformer" / "modeling_decision_transformer.py"
    (model / "modeling_dt.py").write_text(_without_comments(decision))
    (model / "modeling_mis.py").write_text(_without_comments(MODELS / "mistral" / "modeling_mistral.py"))
    by_file = {match.file: match for match in code_provenance(model, references=index)}

    dt = by_file["modeling_dt.py"]
    assert dt.reference == "transformers/models/decision_transformer/modeling_decision_transformer.py"
    assert dt.similarity == 1.0 and dt.reference_derived_from == ("gpt2",)
    assert dt.runner_up is not None and dt.runner_up[0] == GPT2
    assert (
        "comments 'Copied from transformers.models.gpt2...': the reference has 4, the file has 0"
        in dt.removed_references
    )
    assert any(line.startswith("license header line 'Copyright 2022") for line in dt.removed_references)
    assert (
        "the reference's own code credits gpt2: 4 'Copied from transformers.models.gpt2' comments" in dt.notes
    )

    mistral = by_file["modeling_mis.py"]
    assert mistral.reference == "transformers/models/mistral/modeling_mistral.py"
    assert mistral.reference_derived_from == ("llama",)
    assert (
        "comment 'This file was automatically generated from src/transformers/models/mistral/modular_mistral.py' "
        "of the reference is absent" in mistral.removed_references
    )
    assert any(
        note.startswith("the reference's own code credits llama: modular_mistral.py imports")
        for note in mistral.notes
    )


def test_rename_found_by_structure_alone(index: ReferenceIndex, tmp_path: Path) -> None:
    """One class renamed to an unrelated name: no name pattern, the body shows it."""
    renamed = tmp_path / "modeling_ff.py"
    renamed.write_text(
        (MODELS / "llama" / "modeling_llama.py").read_text().replace("LlamaMLP", "FeedForward")
    )
    [match] = code_provenance(renamed, references=index)
    assert match.reference == LLAMA
    assert match.removed_references == ("class LlamaMLP -> FeedForward (body 100% alike)",)
    assert any(note.startswith("the file's own header: 'Copyright 2022 EleutherAI") for note in match.notes)


def test_file_pasted_from_two_models(index: ReferenceIndex, yi_dir: Path, tmp_path: Path) -> None:
    yi = ast.parse((yi_dir / "modeling_yi.py").read_text())
    wanted = {
        "YiRMSNorm",
        "YiRotaryEmbedding",
        "rot_half",
        "apply_rope",
        "YiMLP",
        "rep_kv",
        "eager_attn",
        "YiAttention",
    }
    body = [
        node
        for node in yi.body
        if isinstance(node, ast.Import | ast.ImportFrom) or getattr(node, "name", "") in wanted
    ]
    mixed = tmp_path / "modeling_mixed.py"
    mixed.write_text(
        ast.unparse(ast.Module(body=body, type_ignores=[]))
        + "\n"
        + (MODELS / "gpt2" / "modeling_gpt2.py").read_text()
    )
    [match] = code_provenance(mixed, references=index)
    print(f"gpt2 + llama parts: {match.reference} {match.similarity:.3f}, also {match.also_from}")
    assert match.reference == GPT2 and 0.5 < match.similarity < 0.85  # measured 0.693
    assert [name for name, _ in match.also_from] == [LLAMA]
    assert 0.15 < match.also_from[0][1] < 0.35  # measured 0.221
    assert f"class LlamaMLP -> YiMLP (body 100% alike; {LLAMA})" in match.removed_references


def test_index_of_chosen_files(tmp_path: Path) -> None:
    chosen = ReferenceIndex.from_files(
        {"llama": MODELS / "llama" / "modeling_llama.py", "gpt2": MODELS / "gpt2" / "modeling_gpt2.py"}
    )
    assert chosen.references == ("llama", "gpt2") and chosen.family("gpt2") == "gpt2"
    rebranded = fingerprint_code(_rebranded_llama(), label="modeling_yi.py")
    [(best, similarity, coverage), (second, low, _)] = chosen.rank(rebranded)
    assert (best, second) == ("llama", "gpt2") and similarity > 0.95 and coverage > 0.95 and low < 0.2
    with pytest.raises(ResourceLimitError):
        fingerprint_code(b"#" * (MAX_SOURCE_BYTES + 1))


def test_not_python_and_family_words(tmp_path: Path, index: ReferenceIndex) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match=r"model\.safetensors: not a Python file"):
        code_provenance(weights, references=index)
    pattern = code._family_pattern("opt")
    assert [
        bool(pattern.search(text)) for text in ("OPTAttention", "facebook/opt-350m", "Optional", "optimizer")
    ] == [
        True,
        True,
        False,
        False,
    ]
    assert code._family_pattern("gpt_neox").search("GPTNeoXForCausalLM")


def test_transformers_and_torch_are_never_imported(tmp_path: Path) -> None:
    """Locating transformers and parsing its files imports neither it nor torch (fresh process)."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        "from unshell.auditing import ReferenceIndex, code_provenance\n"
        "from unshell.auditing.code import _transformers_root\n"
        "models = _transformers_root() / 'models'\n"
        "index = ReferenceIndex.from_files({'llama': models / 'llama' / 'modeling_llama.py'})\n"
        "[match] = code_provenance(models / 'gpt2' / 'modeling_gpt2.py', references=index)\n"
        "print(match.reference, round(match.similarity, 3), 'transformers' in sys.modules, 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    reference, similarity, imported_transformers, imported_torch = result.stdout.split()
    assert reference == "None" and float(similarity) < 0.2  # gpt2 against llama alone: 0.061
    assert (imported_transformers, imported_torch) == ("False", "False")
