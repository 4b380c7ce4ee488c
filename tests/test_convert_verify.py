"""`unshell convert --verify`: the independent reference forward passes and the logit comparison.

Every source layout is built from a tiny random Llama by `foreign_layouts` (inverse transforms
on a code path of their own), converted by `unshell.convert`, and verified: the source's reference
forward (written from its own layout) must give the logits ``LlamaForCausalLM`` gives on the
output. Where the foreign layout loses nothing, the reference forward must also reproduce
``LlamaForCausalLM`` on the ORIGINAL tiny Llama: a check of the reference that involves no
converter at all. Negative controls feed deliberately wrong conversions and must fail.

The real llama2.c files are checked against `llama2c_forward`, a numpy transcription of run.c.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

import foreign_layouts as fl
from llama2c_forward import Llama2cTokenizer, greedy, load_checkpoint
from unshell.conversion import convert
from unshell.conversion.reference import LAYOUTS
from unshell.conversion.verify import (
    EXACT_TOLERANCE,
    FOLD_TOLERANCE,
    QUANTIZED_TOLERANCE,
    verify_conversion,
)
from unshell.errors import (
    AmbiguousRolesError,
    InputError,
    MissingDependencyError,
    PathNotFoundError,
    UnsupportedFormatError,
    UsageError,
)
from unshell.formats import open_checkpoint
from unshell.formats.safetensors import write_safetensors

LILY = "Once upon a time, there was a little girl named Lily"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """The models here are tiny: a thread pool only adds wake-up latency on a busy CI machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- the layouts -----------------------------------------------------------------------------------

Builder = Callable[[Path, Path], Path]


@dataclass(frozen=True)
class Case:
    layout: str
    build: Builder
    gqa: bool
    bias: bool
    reference: str
    tolerance: float
    lossless: bool = True
    """The foreign layout keeps every value of the source Llama, so its reference forward must
    equal LlamaForCausalLM on the source itself."""
    tied: bool = False

    @property
    def id(self) -> str:
        parts = [self.layout, "gqa" if self.gqa else "mha"]
        if self.bias:
            parts.append("bias")
        if self.tied:
            parts.append("tied")
        return "-".join(parts)


def _minicpm(src: Path, dst: Path) -> Path:
    return fl.to_minicpm(src, dst, scale_emb=12.0, scale_depth=1.4, dim_model_base=16)


CASES = [
    *(Case("yi", fl.to_yi, gqa, False, "llama-hf", EXACT_TOLERANCE) for gqa in (True, False)),
    *(Case("mistral", fl.to_mistral, gqa, False, "llama-hf", EXACT_TOLERANCE) for gqa in (True, False)),
    *(Case("deepseek", fl.to_deepseek, gqa, False, "llama-hf", EXACT_TOLERANCE) for gqa in (True, False)),
    Case("qwen2", fl.to_qwen2, True, False, "llama-hf", EXACT_TOLERANCE),
    Case("qwen2", fl.to_qwen2, False, False, "llama-hf", EXACT_TOLERANCE),
    # Qwen2 has no o_proj bias: the source's is dropped, so only the conversion is compared.
    Case("qwen2", fl.to_qwen2, True, True, "llama-hf", EXACT_TOLERANCE, lossless=False),
    Case("internlm1", fl.to_internlm1, False, False, "llama-hf", EXACT_TOLERANCE),
    Case("internlm1", fl.to_internlm1, False, True, "llama-hf", EXACT_TOLERANCE),
    Case("baichuan", lambda s, d: fl.to_baichuan(s, d, v2=False), False, False, "baichuan", EXACT_TOLERANCE),
    # NormHead makes Baichuan2 a different function of the stored weights than the source Llama.
    Case(
        "baichuan2",
        lambda s, d: fl.to_baichuan(s, d, v2=True),
        False,
        False,
        "baichuan2",
        FOLD_TOLERANCE,
        False,
    ),
    Case("qwen1", fl.to_qwen1, False, False, "qwen", EXACT_TOLERANCE),
    Case("qwen1", fl.to_qwen1, False, True, "qwen", EXACT_TOLERANCE, lossless=False),
    *(
        Case("internlm2", fl.to_internlm2, gqa, bias, "internlm2", EXACT_TOLERANCE)
        for gqa in (True, False)
        for bias in (False, True)
    ),
    Case("internlm2", fl.to_internlm2, True, False, "internlm2", EXACT_TOLERANCE, tied=True),
    *(Case("phi3", fl.to_phi3, gqa, False, "phi3", EXACT_TOLERANCE) for gqa in (True, False)),
    *(Case("minicpm", _minicpm, gqa, False, "minicpm", FOLD_TOLERANCE) for gqa in (True, False)),
    # A tied MiniCPM shares one (1/scale_emb-scaled) matrix at both ends: no longer the source Llama.
    Case("minicpm", _minicpm, True, False, "minicpm", FOLD_TOLERANCE, lossless=False, tied=True),
    *(
        Case("meta", lambda s, d: fl.to_meta(s, d, shards=1), g, False, "meta", EXACT_TOLERANCE)
        for g in (True, False)
    ),
    *(
        Case("meta2", lambda s, d: fl.to_meta(s, d, shards=2), g, False, "meta", EXACT_TOLERANCE)
        for g in (True, False)
    ),
    *(
        Case(
            "llama2c",
            lambda s, d: fl.to_llama2c(s, d.with_suffix(".bin")),
            gqa,
            False,
            "meta",
            EXACT_TOLERANCE,
        )
        for gqa in (True, False)
    ),
    Case(
        "llama2c",
        lambda s, d: fl.to_llama2c(s, d.with_suffix(".bin")),
        True,
        False,
        "meta",
        EXACT_TOLERANCE,
        tied=True,
    ),
    Case(
        "gguf-f32",
        lambda s, d: fl.to_gguf(s, d.with_suffix(".gguf"), qtype="F32"),
        True,
        False,
        "gguf",
        EXACT_TOLERANCE,
    ),
    Case(
        "gguf-f32",
        lambda s, d: fl.to_gguf(s, d.with_suffix(".gguf"), qtype="F32"),
        False,
        False,
        "gguf",
        EXACT_TOLERANCE,
    ),
    # Rounding to F16 / Q8_0 changes the weights themselves; the conversion must keep them.
    Case(
        "gguf-f16",
        lambda s, d: fl.to_gguf(s, d.with_suffix(".gguf"), qtype="F16"),
        True,
        False,
        "gguf",
        EXACT_TOLERANCE,
        False,
    ),
    Case(
        "gguf-q8_0",
        lambda s, d: fl.to_gguf(s, d.with_suffix(".gguf"), qtype="Q8_0"),
        True,
        False,
        "gguf",
        QUANTIZED_TOLERANCE,
        False,
    ),
    Case(
        "gguf-q4_0",
        lambda s, d: fl.to_gguf(s, d.with_suffix(".gguf"), qtype="Q4_0"),
        False,
        False,
        "gguf",
        QUANTIZED_TOLERANCE,
        False,
    ),
    Case("renamed", lambda s, d: fl.to_renamed(s, d, 5), True, False, "llama-hf", EXACT_TOLERANCE),
    Case("renamed", lambda s, d: fl.to_renamed(s, d, 6), False, True, "llama-hf", EXACT_TOLERANCE),
]


def _build(case: Case, tmp_path: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """(source Llama, foreign layout, converted output)."""
    src = fl.make_tiny_llama(tmp_path / "llama", seed=seed, gqa=case.gqa, bias=case.bias, tied=case.tied)
    foreign = case.build(src, tmp_path / "foreign")
    output = convert(foreign, output=tmp_path / "converted", verify=False).output
    return src, foreign, output


def test_every_reference_layout_is_exercised() -> None:
    assert {case.reference for case in CASES} == set(LAYOUTS)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_converted_output_computes_what_the_source_computes(case: Case, tmp_path: Path) -> None:
    src, foreign, output = _build(case, tmp_path, seed=len(case.id))
    report = verify_conversion(foreign, output)
    assert report.reference == case.reference
    assert report.tolerance == case.tolerance
    assert report.passed, report.to_dict()
    assert report.max_abs_logit_diff <= case.tolerance
    assert report.argmax_agreement == 1.0
    assert report.tokens == 16
    # Logits of O(1): a 1e-4 agreement is a statement about the whole function, not about noise.
    assert report.max_abs_logit > 0.5
    assert not [n for n in report.notes if "loading" in n or "does not use" in n], report.notes
    if case.lossless:
        original = verify_conversion(foreign, src)
        assert original.passed, original.to_dict()


# -- negative controls: the verifier must see wrong conversions ------------------------------------


def _rewrite(output: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> Path:
    tensors = fl.read_safetensors_dir(output)
    edit(tensors)
    for stale in output.glob("*.safetensors*"):
        stale.unlink()
    write_safetensors(output / "model.safetensors", tensors, metadata={"format": "pt"})
    return output


def _case(layout: str, gqa: bool = True) -> Case:
    return next(c for c in CASES if c.layout == layout and c.gqa == gqa and not c.bias and not c.tied)


def _swap(tensors: dict[str, np.ndarray], first: str, second: str) -> None:
    tensors[first], tensors[second] = tensors[second], tensors[first]


def test_swapped_gate_and_up_fail(tmp_path: Path) -> None:
    _, foreign, output = _build(_case("qwen1", gqa=False), tmp_path)
    _rewrite(
        output, lambda t: _swap(t, "model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight")
    )
    report = verify_conversion(foreign, output)
    assert not report.passed
    assert report.max_abs_logit_diff > 100 * report.tolerance


def test_missing_rotary_permutation_fails(tmp_path: Path) -> None:
    _, foreign, output = _build(_case("meta"), tmp_path)

    def back_to_meta_order(tensors: dict[str, np.ndarray]) -> None:
        for i in range(2):
            q, k = f"model.layers.{i}.self_attn.q_proj.weight", f"model.layers.{i}.self_attn.k_proj.weight"
            tensors[q] = fl.hf_to_meta_rows(tensors[q], 4)
            tensors[k] = fl.hf_to_meta_rows(tensors[k], 2)

    report = verify_conversion(foreign, _rewrite(output, back_to_meta_order))
    assert not report.passed
    assert report.max_abs_logit_diff > 100 * report.tolerance


def test_internlm2_mha_split_contiguously_fails(tmp_path: Path) -> None:
    """The textbook bug: an MHA wqkv has the shape of q|k|v but is grouped [q_h, k_h, v_h]."""
    _, foreign, output = _build(_case("internlm2", gqa=False), tmp_path)
    packed = fl.read_safetensors_dir(foreign)

    def contiguous_split(tensors: dict[str, np.ndarray]) -> None:
        for i in range(2):
            q, k, v = np.split(packed[f"model.layers.{i}.attention.wqkv.weight"], 3)
            for kind, rows in zip("qkv", (q, k, v), strict=True):
                tensors[f"model.layers.{i}.self_attn.{kind}_proj.weight"] = rows

    report = verify_conversion(foreign, _rewrite(output, contiguous_split))
    assert not report.passed


def test_unfolded_minicpm_scales_fail(tmp_path: Path) -> None:
    _, foreign, output = _build(_case("minicpm"), tmp_path)
    raw = fl.read_safetensors_dir(foreign)
    report = verify_conversion(foreign, _rewrite(output, lambda t: t.update(raw)))
    assert not report.passed


def test_baichuan2_head_left_unnormalized_fails(tmp_path: Path) -> None:
    _, foreign, output = _build(next(c for c in CASES if c.layout == "baichuan2"), tmp_path)
    raw_head = fl.read_safetensors_dir(foreign)["lm_head.weight"]
    report = verify_conversion(foreign, _rewrite(output, lambda t: t.update({"lm_head.weight": raw_head})))
    assert not report.passed


def test_a_tensor_transformers_would_initialize_fails(tmp_path: Path) -> None:
    _, foreign, output = _build(_case("yi"), tmp_path)
    report = verify_conversion(
        foreign, _rewrite(output, lambda t: t.pop("model.layers.0.self_attn.o_proj.weight"))
    )
    assert not report.passed
    assert any("missing keys" in note and "o_proj" in note for note in report.notes)


# -- the report ----------------------------------------------------------------------------------------


def test_report_is_json_and_one_line(tmp_path: Path) -> None:
    _, foreign, output = _build(_case("phi3"), tmp_path)
    report = verify_conversion(foreign, output, tokens=5, seed=3)
    document = json.loads(json.dumps(report.to_dict()))
    assert document["passed"] is True
    assert document["tokens"] == 5 and document["seed"] == 3
    assert document["reference"] == "phi3"
    assert document["tolerance"] == EXACT_TOLERANCE
    assert document["reference_description"] == LAYOUTS["phi3"]
    assert "\n" not in report.summary() and "passed" in report.summary()
    again = verify_conversion(foreign, output, tokens=5, seed=3)
    assert again.max_abs_logit_diff == report.max_abs_logit_diff


def test_scrambled_roles_need_the_conversion_mapping(tmp_path: Path) -> None:
    src = fl.make_tiny_llama(tmp_path / "llama", seed=11)
    mapping = fl.to_scrambled(src, tmp_path / "scrambled", seed=4)
    output = convert(
        tmp_path / "scrambled", output=tmp_path / "converted", verify=False, mapping=mapping
    ).output
    with pytest.raises(AmbiguousRolesError, match="mapping"):
        verify_conversion(tmp_path / "scrambled", output)
    report = verify_conversion(tmp_path / "scrambled", output, mapping=mapping)
    assert report.passed, report.to_dict()
    assert verify_conversion(tmp_path / "scrambled", src, mapping=mapping).passed


# -- refusals ----------------------------------------------------------------------------------------


def test_needs_transformers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r"unshell\[transformers\]") as caught:
        verify_conversion(tmp_path, tmp_path)
    assert caught.value.exit_code == 20


@pytest.mark.parametrize("tokens", [0, -1, True, 10**6])
def test_token_count_is_checked(tmp_path: Path, tokens: int) -> None:
    with pytest.raises(UsageError):
        verify_conversion(tmp_path, tmp_path, tokens=tokens)


def test_output_that_is_not_a_model(tmp_path: Path) -> None:
    src = fl.make_tiny_llama(tmp_path / "llama")
    with pytest.raises(PathNotFoundError):
        verify_conversion(src, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="LlamaForCausalLM"):
        verify_conversion(src, tmp_path / "empty")


def test_family_without_a_reference_forward_is_refused(tmp_path: Path) -> None:
    """GPT-NeoX (parallel attention, LayerNorm) is no source `convert` accepts, nor one we verify."""
    catalog = Path(__file__).resolve().parents[1] / "src/unshell/arch/catalog/gpt_neox.json"
    probe = json.loads(catalog.read_text())["probe"]
    neox = tmp_path / "neox"
    neox.mkdir()
    write_safetensors(neox / "model.safetensors", {n: np.zeros(s, np.float32) for n, s in probe["tensors"]})
    (neox / "config.json").write_text(json.dumps(probe["config"]))
    with pytest.raises(UnsupportedFormatError, match="no reference forward"):
        verify_conversion(neox, tmp_path)


# -- real llama2.c files ---------------------------------------------------------------------------


def _greedy_llama(model_dir: Path, steps: int) -> list[int]:
    """Greedy decoding from BOS with LlamaForCausalLM, stopping at BOS like run.c."""
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    ids = [1]
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if token == 1:
                break
            ids.append(token)
    return ids[1:]


@pytest.fixture(scope="module")
def stories_converted(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    output = tmp_path_factory.mktemp("stories") / "hf"
    return convert(fixtures_dir / "stories260K.bin", output=output, verify=False).output


def test_stories260k_tells_the_lily_story(stories_converted: Path, fixtures_dir: Path) -> None:
    tokens = _greedy_llama(stories_converted, 40)
    tokenizer = Llama2cTokenizer(fixtures_dir / "stories260K.tok512.bin", 512)
    assert tokenizer.decode(tokens).startswith(LILY)


def test_stories260k_matches_run_c_token_for_token(stories_converted: Path, fixtures_dir: Path) -> None:
    run_c = greedy(load_checkpoint(fixtures_dir / "stories260K.bin"), 30)
    assert len(run_c) == 30
    assert _greedy_llama(stories_converted, 30) == run_c


def test_stories260k_verifies(stories_converted: Path, fixtures_dir: Path) -> None:
    report = verify_conversion(fixtures_dir / "stories260K.bin", stories_converted, tokens=32)
    assert report.reference == "meta"
    assert report.passed, report.to_dict()
    assert report.max_abs_logit > 5  # a trained model: confident logits


def test_run_c_transcription_tells_the_lily_story(fixtures_dir: Path) -> None:
    """The oracle itself, on the original file, before anything of unshell is involved."""
    model = load_checkpoint(fixtures_dir / "stories260K.bin")
    tokenizer = Llama2cTokenizer(fixtures_dir / "stories260K.tok512.bin", model.vocab_size)
    assert tokenizer.decode(greedy(model, 20)).startswith(LILY)


@pytest.mark.parametrize("name", ["llama2xs.model.bin", "llama2xs.ckpt.pt"])
def test_llama2xs_converts_loads_and_verifies(name: str, fixtures_dir: Path, tmp_path: Path) -> None:
    output = convert(fixtures_dir / name, output=tmp_path / "hf", verify=False).output
    report = verify_conversion(fixtures_dir / name, output)
    assert report.reference == "meta"
    assert report.passed, report.to_dict()
    run_c = greedy(load_checkpoint(fixtures_dir / "llama2xs.model.bin"), 30)
    assert _greedy_llama(output, 30) == run_c


def test_meta_names_beside_a_config_keep_meta_rotary(fixtures_dir: Path, tmp_path: Path) -> None:
    """llama2.c's training checkpoint re-saved as safetensors with a config.json: Meta's names still
    mean Meta's adjacent-pair rotary, and the config supplies the hyperparameters."""
    with open_checkpoint(fixtures_dir / "llama2xs.ckpt.pt") as checkpoint:
        tensors = {n: np.array(checkpoint.read(n)) for n in checkpoint.tensors if n != "output.weight"}
    source = tmp_path / "meta-names"
    source.mkdir()
    write_safetensors(source / "model.safetensors", tensors)
    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 5,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "intermediate_size": 192,
        "vocab_size": 512,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    }
    (source / "config.json").write_text(json.dumps(config))
    output = convert(source, output=tmp_path / "hf", verify=False).output
    report = verify_conversion(source, output)
    assert report.reference == "meta"
    assert report.passed, report.to_dict()


def test_real_gguf_verifies(fixtures_dir: Path, tmp_path: Path) -> None:
    source = fixtures_dir / "llama-2-tiny-random.gguf"
    output = convert(source, output=tmp_path / "hf", verify=False).output
    report = verify_conversion(source, output)
    assert report.reference == "gguf"
    assert report.passed, report.to_dict()
    assert math.isfinite(report.max_abs_logit_diff)
