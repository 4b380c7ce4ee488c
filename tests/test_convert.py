"""`unshell convert`: round trips from every foreign layout, refusals, output safety, the record.

Every foreign checkpoint is built from a tiny random Llama by `foreign_layouts`, which applies each
layout's documented inverse transform on its own code path; the converted output is read back with
`foreign_layouts.read_safetensors_dir` (plain numpy), never with the converter's code. Expected
values come from the source Llama, from the layout definition, or from gguf-py as an oracle.

Logit equivalence (the ``--verify`` reference forward passes) is tested in test_convert_verify.py;
here conversions run with ``verify=False`` except where the record's verification entry is tested.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from foreign_layouts import (
    hf_to_meta_rows,
    load_llama,
    make_tiny_llama,
    read_safetensors_dir,
    to_baichuan,
    to_deepseek,
    to_gguf,
    to_internlm1,
    to_internlm2,
    to_llama2c,
    to_meta,
    to_minicpm,
    to_mistral,
    to_phi3,
    to_qwen1,
    to_qwen2,
    to_renamed,
    to_scrambled,
    to_yi,
)
from unshell import errors
from unshell.arch.catalog import family_by_id
from unshell.cli import main as cli_main
from unshell.conversion import convert, transforms
from unshell.formats.safetensors import write_safetensors

TESTS = Path(__file__).resolve().parent

# -- helpers ----------------------------------------------------------------------------------------


def _llama(tmp_path: Path, **options: Any) -> Path:
    name = "llama-" + "-".join(f"{k}{v}" for k, v in sorted(options.items()))
    return make_tiny_llama(tmp_path / name, **options)


def _assert_same(
    expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], skip: tuple[str, ...] = ()
) -> None:
    """Bit-for-bit equality, tensor by tensor, same names on both sides."""
    assert set(actual) == set(expected), sorted(set(actual) ^ set(expected))
    for name, value in expected.items():
        if name in skip:
            continue
        assert actual[name].shape == value.shape, name
        assert actual[name].dtype == value.dtype, name
        assert np.array_equal(actual[name], value), name


def _convert(source: Path, out: Path, **options: Any) -> dict[str, Any]:
    result = convert(source, output=out, verify=options.pop("verify", False), **options)
    return result.record


def _meta_to_hf_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo `hf_to_meta_rows` by its documented row map (independent of unshell's transforms)."""
    rows = weight.shape[0]
    d = rows // heads
    out = np.empty_like(weight)
    for h in range(heads):
        for j in range(d // 2):
            for s in (0, 1):
                out[h * d + s * (d // 2) + j] = weight[h * d + 2 * j + s]
    return out


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the console script's entry point, run in this process."""
    with pytest.raises(SystemExit) as exited:
        cli_main.main(args)
    captured = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), captured.out, captured.err


def _no_leftovers(parent: Path) -> None:
    hidden = [p.name for p in parent.iterdir() if p.name.startswith(".") and ".unshell-" in p.name]
    assert hidden == []


# -- round trips: pure renames, splits and permutations are bit-identical -----------------------------

Builder = Callable[[Path, Path], Path]

EXACT_LAYOUTS: list[tuple[str, Builder, dict[str, Any]]] = [
    ("yi-gqa", to_yi, {"gqa": True}),
    ("yi-mha-tied", to_yi, {"gqa": False, "tied": True}),
    ("mistral", to_mistral, {"gqa": True}),
    ("deepseek", to_deepseek, {"gqa": True}),
    ("internlm1-bias", to_internlm1, {"gqa": False, "bias": True}),
    ("internlm1", to_internlm1, {"gqa": False}),
    ("internlm2-gqa", to_internlm2, {"gqa": True}),
    ("internlm2-mha", to_internlm2, {"gqa": False}),
    ("internlm2-gqa-bias", to_internlm2, {"gqa": True, "bias": True}),
    ("internlm2-tied", to_internlm2, {"gqa": True, "tied": True}),
    ("baichuan1", lambda s, d: to_baichuan(s, d, v2=False), {"gqa": False}),
    ("phi3-gqa", to_phi3, {"gqa": True}),
    ("phi3-mha", to_phi3, {"gqa": False}),
    ("meta-1-shard", lambda s, d: to_meta(s, d, shards=1), {"gqa": True}),
    ("meta-2-shards", lambda s, d: to_meta(s, d, shards=2), {"gqa": True}),
    ("meta-2-shards-mha", lambda s, d: to_meta(s, d, shards=2), {"gqa": False}),
    ("llama2c-tied", lambda s, d: to_llama2c(s, d.with_suffix(".bin")), {"gqa": True, "tied": True}),
    ("llama2c-untied", lambda s, d: to_llama2c(s, d.with_suffix(".bin")), {"gqa": False}),
    ("gguf-f32", lambda s, d: to_gguf(s, d.with_suffix(".gguf"), qtype="F32"), {"gqa": True}),
    ("gguf-f32-mha", lambda s, d: to_gguf(s, d.with_suffix(".gguf"), qtype="F32"), {"gqa": False}),
    ("renamed-1", lambda s, d: to_renamed(s, d, 1), {"gqa": True}),
    ("renamed-2-bias", lambda s, d: to_renamed(s, d, 2), {"gqa": False, "bias": True}),
]


@pytest.mark.parametrize(("label", "build", "options"), EXACT_LAYOUTS, ids=[c[0] for c in EXACT_LAYOUTS])
def test_exact_layouts_round_trip_bit_for_bit(
    tmp_path: Path, label: str, build: Builder, options: dict[str, Any]
) -> None:
    source = _llama(tmp_path, **options)
    config, expected = load_llama(source)
    foreign = build(source, tmp_path / label)
    record = _convert(foreign, tmp_path / "out")
    _assert_same(expected, read_safetensors_dir(tmp_path / "out"))
    assert record["exact"] is True
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["architectures"] == ["LlamaForCausalLM"] and written["model_type"] == "llama"
    assert "auto_map" not in written
    for key in (
        "hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "num_hidden_layers",
        "intermediate_size",
    ):
        assert written[key] == config[key], key
    assert written["head_dim"] == config["head_dim"]
    assert written["rms_norm_eps"] == config["rms_norm_eps"]
    assert written["rope_theta"] == config["rope_theta"]
    assert written["attention_bias"] is config["attention_bias"]
    assert written["tie_word_embeddings"] is config["tie_word_embeddings"]


def test_internlm2_mha_grouped_layout_is_not_the_contiguous_one(tmp_path: Path) -> None:
    """With nh == nkv the grouped wqkv has exactly the contiguous q|k|v shape, so only the family
    tells them apart: a contiguous split would return k rows as q. The conversion must not."""
    source = _llama(tmp_path, gqa=False)
    _, expected = load_llama(source)
    foreign = to_internlm2(source, tmp_path / "internlm2")
    wqkv = read_safetensors_dir(foreign)["model.layers.0.attention.wqkv.weight"]
    q = expected["model.layers.0.self_attn.q_proj.weight"]
    assert wqkv.shape == (3 * q.shape[0], q.shape[1])
    assert not np.array_equal(wqkv[: q.shape[0]], q)  # the naive contiguous split is wrong
    _convert(foreign, tmp_path / "out")
    assert np.array_equal(read_safetensors_dir(tmp_path / "out")["model.layers.0.self_attn.q_proj.weight"], q)


# -- round trips with biases the family adds or drops -------------------------------------------------


@pytest.mark.parametrize(
    ("label", "build", "gqa"),
    [("qwen1", to_qwen1, False), ("qwen2-gqa", to_qwen2, True), ("qwen2-mha", to_qwen2, False)],
)
def test_qwen_biases_round_trip_with_an_explicit_zero_o_proj_bias(
    tmp_path: Path, label: str, build: Builder, gqa: bool
) -> None:
    source = _llama(tmp_path, gqa=gqa, bias=True)
    _, expected = load_llama(source)
    record = _convert(build(source, tmp_path / label), tmp_path / "out")
    actual = read_safetensors_dir(tmp_path / "out")
    o_biases = tuple(n for n in expected if n.endswith("o_proj.bias"))
    _assert_same(expected, actual, skip=o_biases)
    for name in o_biases:
        # Qwen has no o_proj bias; Llama's attention_bias needs one, written as explicit zeros
        # (vLLM would leave an absent one uninitialized).
        assert np.array_equal(actual[name], np.zeros_like(expected[name]))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["attention_bias"] is True
    assert any(entry["transform"] == "zeros" for entry in record["transforms"])


def test_qwen1_without_source_biases_gets_the_c_attn_bias_back(tmp_path: Path) -> None:
    """Qwen v1 always has a c_attn bias: from a bias-free Llama it is zeros, and so are all four
    Llama biases after conversion."""
    source = _llama(tmp_path, gqa=False)
    _, expected = load_llama(source)
    _convert(to_qwen1(source, tmp_path / "qwen1"), tmp_path / "out")
    actual = read_safetensors_dir(tmp_path / "out")
    biases = {n: v for n, v in actual.items() if n.endswith(".bias")}
    assert len(biases) == 4 * 2
    assert all(not v.any() for v in biases.values())
    _assert_same(expected, {n: v for n, v in actual.items() if n not in biases})


# -- folds: equal within one rounding ------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_minicpm_scales_are_folded_into_weights(tmp_path: Path, tied: bool) -> None:
    source = _llama(tmp_path, tied=tied)
    config, expected = load_llama(source)
    scale_emb, scale_depth, base = 12.0, 1.4, 16
    foreign = to_minicpm(
        source, tmp_path / "minicpm", scale_emb=scale_emb, scale_depth=scale_depth, dim_model_base=base
    )
    record = _convert(foreign, tmp_path / "out")
    actual = read_safetensors_dir(tmp_path / "out")
    assert record["exact"] is False
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["tie_word_embeddings"] is False  # a fold on one end of tied embeddings unties them
    if tied:
        stored = read_safetensors_dir(foreign)["model.embed_tokens.weight"]
        expected["lm_head.weight"] = stored * (base / config["hidden_size"])
    assert set(actual) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def test_baichuan2_normhead_is_normalized_and_baichuan1_is_not(tmp_path: Path) -> None:
    source = _llama(tmp_path, gqa=False)
    _, expected = load_llama(source)
    v2 = to_baichuan(source, tmp_path / "baichuan2", v2=True)
    stored = read_safetensors_dir(v2)["lm_head.weight"]
    record = _convert(v2, tmp_path / "out2")
    head = read_safetensors_dir(tmp_path / "out2")["lm_head.weight"]
    norms = np.linalg.norm(stored.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(head, stored / norms, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(head, axis=1), 1.0, rtol=1e-6)
    assert [e["transform"] for e in record["transforms"] if e["class"] == "lm_head.weight"] == [
        "normalize_rows"
    ]
    _convert(to_baichuan(source, tmp_path / "baichuan1", v2=False), tmp_path / "out1")
    assert np.array_equal(
        read_safetensors_dir(tmp_path / "out1")["lm_head.weight"], expected["lm_head.weight"]
    )


# -- GGUF: quantized tensors are dequantized; gguf-py is the oracle --------------------------------------


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_0"])
@pytest.mark.parametrize("dtype", ["f32", "auto"])
def test_quantized_gguf_converts_to_the_dequantized_values(tmp_path: Path, qtype: str, dtype: str) -> None:
    """``f32``: the dequantized values exactly; ``auto``: the same values rounded to bf16 (torch
    rounds the oracle) for quantized tensors, F16 kept as it is."""
    import gguf
    import torch

    source = _llama(tmp_path, gqa=True)
    config, expected = load_llama(source)
    foreign = to_gguf(source, tmp_path / "model.gguf", qtype=qtype)
    record = _convert(foreign, tmp_path / "out", dtype=dtype)
    actual = read_safetensors_dir(tmp_path / "out")
    reader = gguf.GGUFReader(foreign)
    oracle = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}
    if dtype == "auto" and qtype != "F16":
        oracle = {
            name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).bfloat16().float().numpy()
            if value.ndim == 2
            else value
            for name, value in oracle.items()
        }
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    for i in range(config["num_hidden_layers"]):
        q = actual[f"model.layers.{i}.self_attn.q_proj.weight"]
        k = actual[f"model.layers.{i}.self_attn.k_proj.weight"]
        np.testing.assert_allclose(
            q, _meta_to_hf_rows(oracle[f"blk.{i}.attn_q.weight"], heads), rtol=0, atol=1e-6
        )
        np.testing.assert_allclose(
            k, _meta_to_hf_rows(oracle[f"blk.{i}.attn_k.weight"], kv_heads), rtol=0, atol=1e-6
        )
        down = oracle[f"blk.{i}.ffn_down.weight"]
        np.testing.assert_allclose(actual[f"model.layers.{i}.mlp.down_proj.weight"], down, rtol=0, atol=1e-6)
    # Within quantization error of the original Llama, and nowhere near a wrong permutation.
    error = np.abs(
        actual["model.layers.0.self_attn.q_proj.weight"] - expected["model.layers.0.self_attn.q_proj.weight"]
    )
    assert error.max() < 0.2
    stored = {e["exactness"] for e in record["transforms"] if e["dtype"]["source"] == qtype}
    if qtype == "F16":
        assert stored == ({"bitwise"} if dtype == "auto" else {"widened"})  # auto: F16 stays F16
    else:
        assert stored == {"dequantized"}
        written = {e["dtype"]["output"] for e in record["transforms"] if e["dtype"]["source"] == qtype}
        assert written == ({"F32"} if dtype == "f32" else {"BF16"})


def test_real_gguf_fixture_converts(tmp_path: Path, fixtures_dir: Path) -> None:
    import gguf

    path = fixtures_dir / "llama-2-tiny-random.gguf"
    record = _convert(path, tmp_path / "out")
    actual = read_safetensors_dir(tmp_path / "out")
    oracle = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in gguf.GGUFReader(path).tensors}
    assert np.array_equal(
        actual["model.layers.0.self_attn.q_proj.weight"], _meta_to_hf_rows(oracle["blk.0.attn_q.weight"], 2)
    )
    assert np.array_equal(actual["model.embed_tokens.weight"], oracle["token_embd.weight"])
    assert actual["model.embed_tokens.weight"].dtype == np.float16  # F16 stays F16
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["rms_norm_eps"] == 1e-5 and config["max_position_embeddings"] == 4096
    # The Llama 2 tokenizer the GGUF carries comes along as Hugging Face files.
    assert record["tokenizer"]["from"] == "rebuilt"
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(record["tokenizer"]["files"])


# -- real llama2.c files ----------------------------------------------------------------------------------


def test_llama2xs_checkpoint_and_export_convert_to_the_same_output(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    from llama2c_export import load_legacy

    bin_record = _convert(fixtures_dir / "llama2xs.model.bin", tmp_path / "from-bin")
    pt_record = _convert(fixtures_dir / "llama2xs.ckpt.pt", tmp_path / "from-pt")
    from_bin, from_pt = (
        read_safetensors_dir(tmp_path / "from-bin"),
        read_safetensors_dir(tmp_path / "from-pt"),
    )
    _assert_same(from_bin, from_pt)
    assert json.loads((tmp_path / "from-bin" / "config.json").read_text()) == json.loads(
        (tmp_path / "from-pt" / "config.json").read_text()
    )
    assert {d["name"] for d in pt_record["dropped"]} == {"output.weight"}  # the tied twin
    assert {d["name"] for d in bin_record["dropped"]} == {"freqs_cos", "freqs_sin"}
    params, state, _ = load_legacy(fixtures_dir / "llama2xs.model.bin")
    assert np.array_equal(
        from_bin["model.layers.3.self_attn.k_proj.weight"],
        _meta_to_hf_rows(state["layers.3.attention.wk.weight"], params.n_kv_heads),
    )
    assert np.array_equal(
        from_bin["model.layers.3.mlp.gate_proj.weight"], state["layers.3.feed_forward.w1.weight"]
    )


@pytest.mark.parametrize("name", ["stories260K.bin", "llama2xs.model.bin"])
def test_real_llama2c_exports_load_in_transformers(tmp_path: Path, fixtures_dir: Path, name: str) -> None:
    import torch
    from transformers import LlamaForCausalLM

    _convert(fixtures_dir / name, tmp_path / "out")
    model, info = LlamaForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.num_key_value_heads == 4 and model.config.tie_word_embeddings is True
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape == (1, 4, 512) and torch.isfinite(logits).all()


# -- bf16 stays bf16, bit for bit ----------------------------------------------------------------------------


def _to_bf16_directory(source: Path, target: Path) -> dict[str, np.ndarray]:
    """Rewrite a Yi directory's weights as bf16 (round to nearest even); returns the bf16 bits."""
    from unshell.formats.safetensors import float32_to_bf16

    tensors = read_safetensors_dir(source)
    target.mkdir()
    for entry in source.iterdir():
        if entry.name != "model.safetensors":
            (target / entry.name).write_bytes(entry.read_bytes())
    write_safetensors(
        target / "model.safetensors",
        tensors,
        metadata={"format": "pt"},
        dtypes=dict.fromkeys(tensors, "BF16"),
    )
    return {name: float32_to_bf16(value) for name, value in tensors.items()}


def _raw_tensors(path: Path) -> dict[str, tuple[str, bytes]]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header.pop("__metadata__")
    start = 8 + length
    return {
        n: (e["dtype"], data[start + e["data_offsets"][0] : start + e["data_offsets"][1]])
        for n, e in header.items()
    }


def test_bf16_weights_are_copied_bit_for_bit(tmp_path: Path) -> None:
    source = _llama(tmp_path, gqa=True)
    bits = _to_bf16_directory(to_yi(source, tmp_path / "yi"), tmp_path / "yi-bf16")
    _convert(tmp_path / "yi-bf16", tmp_path / "out")
    raw = _raw_tensors(next((tmp_path / "out").glob("model-*.safetensors")))
    rename = {".ln1.": ".input_layernorm.", ".ln2.": ".post_attention_layernorm."}
    for name, value in bits.items():
        for old, new in rename.items():
            name = name.replace(old, new)
        dtype, data = raw[name]
        assert dtype == "BF16" and data == value.astype("<u2").tobytes(), name
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"


# -- output files: shards, index, record, card -----------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sharded_output_with_index_and_hashes(tmp_path: Path) -> None:
    source = make_tiny_llama(tmp_path / "llama", vocab=6000)  # 1.5 MB embedding and lm_head
    _, expected = load_llama(source)
    foreign = to_internlm2(source, tmp_path / "internlm2")
    record = _convert(foreign, tmp_path / "out", shard_size="1MiB")
    out = tmp_path / "out"
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) >= 3
    assert all(p.name.endswith(f"-of-{len(shards):05d}.safetensors") for p in shards)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(expected)
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in expected.values())
    for shard in shards:
        (length,) = struct.unpack("<Q", shard.read_bytes()[:8])
        header = json.loads(shard.read_bytes()[8 : 8 + length])
        assert header["__metadata__"] == {"format": "pt"} and (8 + length) % 8 == 0
        assert {n for n in header if n != "__metadata__"} == {
            n for n, s in index["weight_map"].items() if s == shard.name
        }
    _assert_same(expected, read_safetensors_dir(out))
    listed = {f["path"]: f for f in record["output"]["files"]}
    on_disk = {p.name for p in out.iterdir()} - {"conversion.json"}
    assert set(listed) == on_disk
    for name, entry in listed.items():
        assert entry["sha256"] == _sha256(out / name) and entry["bytes"] == (out / name).stat().st_size
    sources = {Path(f["path"]).name: f for f in record["source"]["files"]}
    assert sources["model.safetensors"]["sha256"] == _sha256(foreign / "model.safetensors")
    assert sources["config.json"]["sha256"] == _sha256(foreign / "config.json")


def test_record_lists_every_transform_per_tensor_class(tmp_path: Path) -> None:
    source = _llama(tmp_path, gqa=True)
    record = _convert(to_internlm2(source, tmp_path / "internlm2"), tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "conversion.json").read_text())
    saved.pop("created")
    assert saved == {k: v for k, v in record.items() if k != "created"}
    by_class = {entry["class"]: entry for entry in record["transforms"]}
    q = by_class["attn.q.weight"]
    assert q["from"] == "model.layers.{i}.attention.wqkv.weight"
    assert q["to"] == "model.layers.{i}.self_attn.q_proj.weight"
    assert q["layers"] == [0, 1] and q["tensors"] == 2 and q["exactness"] == "bitwise"
    assert q["steps"][0]["op"] == "split_grouped_qkv" and q["steps"][0]["group"] == 2
    assert by_class["mlp.gate.weight"]["from"] == "model.layers.{i}.feed_forward.w1.weight"
    assert by_class["mlp.gate.weight"]["transform"] == "rename"
    assert sum(e["tensors"] for e in record["transforms"]) == record["output"]["tensors"]
    assert record["source"]["matched_family"] == "internlm2" and record["source"]["rotary"] == "hf"
    assert record["unshell_version"] and record["schema_version"] == 1
    assert record["verification"] == {"status": "skipped", "reason": "not run: --no-verify"}


def test_card_keeps_the_original_licence_base_model_and_text(tmp_path: Path) -> None:
    source = _llama(tmp_path)
    foreign = to_yi(source, tmp_path / "yi")
    (foreign / "LICENSE").write_text("Yi series models community license\n")
    _convert(foreign, tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    front = card.split("---")[1]
    assert 'license: "apache-2.0"' in front and 'base_model: "unshell-tests/tiny-llama-base"' in front
    assert "## Original model card" in card and "Random weights for unshell's conversion tests." in card
    assert (tmp_path / "out" / "LICENSE").read_text() == "Yi series models community license\n"
    assert (tmp_path / "out" / "tokenizer_config.json").read_bytes() == (
        foreign / "tokenizer_config.json"
    ).read_bytes()


def test_card_without_a_source_card_says_what_the_source_was(tmp_path: Path, fixtures_dir: Path) -> None:
    _convert(fixtures_dir / "stories260K.bin", tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "came without a model card" in card and "stories260K.bin" in card and "llama2c" in card


def test_record_carries_the_verification_report(tmp_path: Path) -> None:
    source = _llama(tmp_path, gqa=True, bias=True)
    record = _convert(to_qwen2(source, tmp_path / "qwen2"), tmp_path / "out", verify=True)
    verification = record["verification"]
    assert verification["status"] == "ran" and verification["passed"] is True
    assert verification["max_abs_logit_diff"] <= verification["tolerance"] <= 1e-4


def test_failed_verification_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unshell.conversion import verify

    class Report:
        passed, max_abs_logit_diff, tolerance, reference = False, 3.5, 1e-4, "llama"

    monkeypatch.setattr(verify, "verify_model", lambda source, output, **_: Report())
    source = _llama(tmp_path)
    with pytest.raises(errors.VerificationFailedError, match=r"3\.5"):
        convert(to_yi(source, tmp_path / "yi"), output=tmp_path / "out", verify=True)
    assert not (tmp_path / "out").exists()
    _no_leftovers(tmp_path)


# -- refusals ------------------------------------------------------------------------------------------------------


def _probe_checkpoint(directory: Path, family_id: str) -> Path:
    """A checkpoint with the tensor names and shapes transformers produced for the family's probe
    config (recorded in the catalog), random values, and that config."""
    family = family_by_id(family_id)
    assert family is not None
    rng = np.random.default_rng(0)
    directory.mkdir()
    tensors = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in family.facts_probe()}
    write_safetensors(directory / "model.safetensors", tensors, metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(family.probe_config()))
    return directory


def _baichuan_13b(tmp_path: Path) -> Path:
    """Baichuan-13B's config carries model_max_length and no max_position_embeddings (ALiBi)."""
    foreign = to_baichuan(_llama(tmp_path, gqa=False), tmp_path / "baichuan13b", v2=True)
    config = json.loads((foreign / "config.json").read_text())
    del config["max_position_embeddings"]
    (foreign / "config.json").write_text(json.dumps(config))
    return foreign


REFUSALS = [
    ("baichuan-13b", None, "ALiBi"),
    ("chatglm", "chatglm", "partial rotary"),
    ("gemma", "gemma", "GeGLU"),
    ("falcon", "falcon", "parallel"),
    ("gpt_neox", "gpt_neox", "parallel"),
    ("stablelm", "stablelm", "LayerNorm"),
    ("olmo", "olmo", "LayerNorm"),
    ("gpt2", "gpt2", "LayerNorm"),
]


@pytest.mark.parametrize(("label", "family", "reason"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_not_exactly_llama_is_refused_with_reason_and_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str, family: str | None, reason: str
) -> None:
    source = _baichuan_13b(tmp_path) if family is None else _probe_checkpoint(tmp_path / label, family)
    before = {p.name: _sha256(p) for p in source.iterdir()}
    code, _, stderr = _cli(["convert", str(source), "-o", str(tmp_path / "out")], capsys)
    assert code == errors.ConversionRefusedError.exit_code == 30, stderr
    assert stderr.startswith("error: ") and reason in stderr and stderr.count("\n") == 1
    with pytest.raises(errors.ConversionRefusedError, match=reason):
        convert(source, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _no_leftovers(tmp_path)
    assert {p.name: _sha256(p) for p in source.iterdir()} == before


SWITCHES = [
    (
        "phi3-longrope",
        to_phi3,
        {"rope_scaling": {"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}},
        "rope scaling",
    ),
    ("phi4-partial-rotary", to_phi3, {"partial_rotary_factor": 0.75}, "part of each head"),
    ("yi-gelu", to_yi, {"hidden_act": "gelu"}, "SiLU-only"),
    (
        "minicpm-no-scale",
        lambda s, d: to_minicpm(s, d, scale_emb=12, scale_depth=1.4, dim_model_base=16),
        {"scale_emb": None},
        "scale_emb",
    ),
]


@pytest.mark.parametrize(("label", "build", "change", "reason"), SWITCHES, ids=[s[0] for s in SWITCHES])
def test_config_switches_that_change_the_math_are_refused(
    tmp_path: Path, label: str, build: Builder, change: dict[str, Any], reason: str
) -> None:
    foreign = build(_llama(tmp_path), tmp_path / label)
    config = json.loads((foreign / "config.json").read_text())
    config.update(change)
    config = {k: v for k, v in config.items() if v is not None}
    (foreign / "config.json").write_text(json.dumps(config))
    with pytest.raises(errors.ConversionRefusedError, match=reason):
        convert(foreign, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refusal_through_the_console_script_is_one_line(tmp_path: Path) -> None:
    source = _probe_checkpoint(tmp_path / "falcon", "falcon")
    completed = subprocess.run(
        [sys.executable, "-m", "unshell", "convert", str(source), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 30
    assert (
        completed.stderr.startswith("error: falcon is not exactly Llama")
        and completed.stderr.count("\n") == 1
    )
    assert not (tmp_path / "out").exists()


def test_gguf_of_another_architecture_is_refused(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "qwen2.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((8, 4), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(errors.ConversionRefusedError):
        convert(path, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- ambiguity: never guessed, resolved by a mapping ---------------------------------------------------------


def test_ambiguous_roles_are_refused_and_listed_then_resolved_by_a_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _llama(tmp_path, gqa=True)
    _, expected = load_llama(source)
    mapping = to_scrambled(source, tmp_path / "scrambled", seed=7)
    code, _, _ = _cli(["convert", str(tmp_path / "scrambled"), "-o", str(tmp_path / "out")], capsys)
    assert code == errors.AmbiguousRolesError.exit_code == 32
    with pytest.raises(errors.AmbiguousRolesError) as caught:
        convert(tmp_path / "scrambled", output=tmp_path / "out")
    message = str(caught.value)
    # k and v, gate and up, q and o, the two norms, embedding and lm_head: each listed with its options.
    k_name = next(n for n, llama in mapping.items() if llama == "model.layers.0.self_attn.k_proj.weight")
    assert (
        f"{k_name} (model.layers.0.self_attn.k_proj.weight or model.layers.0.self_attn.v_proj.weight)"
        in message
    )
    assert "--mapping" in message and "18 tensors" in message
    assert not (tmp_path / "out").exists()
    (tmp_path / "mapping.json").write_text(json.dumps(mapping))
    record = _convert(tmp_path / "scrambled", tmp_path / "out", mapping=tmp_path / "mapping.json")
    _assert_same(expected, read_safetensors_dir(tmp_path / "out"))
    assert record["mapping"]["entries"] == len(mapping)
    assert record["mapping"]["sha256"] == _sha256(tmp_path / "mapping.json")


def test_a_mapping_that_swaps_k_and_v_is_obeyed(tmp_path: Path) -> None:
    """The mapping is the user's statement of fact: it wins over what names suggest."""
    source = _llama(tmp_path, gqa=True)
    _, expected = load_llama(source)
    mapping = {
        "model.layers.0.self_attn.k_proj.weight": "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.v_proj.weight": "model.layers.0.self_attn.k_proj.weight",
    }
    _convert(source, tmp_path / "out", mapping=mapping)
    actual = read_safetensors_dir(tmp_path / "out")
    assert np.array_equal(
        actual["model.layers.0.self_attn.k_proj.weight"], expected["model.layers.0.self_attn.v_proj.weight"]
    )


def test_bad_mappings_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _llama(tmp_path)
    with pytest.raises(errors.UsageError, match="not a weight"):
        convert(source, output=tmp_path / "out", mapping={"nope.weight": "model.norm.weight"})
    with pytest.raises(errors.UsageError, match="not a tensor name"):
        convert(source, output=tmp_path / "out", mapping={"model.norm.weight": "model.nonsense.weight"})
    with pytest.raises(errors.ConversionRefusedError, match="two tensors carry"):
        convert(
            source,
            output=tmp_path / "out",
            mapping={"model.norm.weight": "model.layers.0.input_layernorm.weight"},
        )
    (tmp_path / "list.json").write_text("[1, 2]")
    code, _, stderr = _cli(
        ["convert", str(source), "-o", str(tmp_path / "out"), "--mapping", str(tmp_path / "list.json")],
        capsys,
    )
    assert code == errors.UsageError.exit_code and "JSON object" in stderr
    assert not (tmp_path / "out").exists()


# -- destination safety ------------------------------------------------------------------------------------------


def test_existing_output_is_refused_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = to_yi(_llama(tmp_path), tmp_path / "yi")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, _ = _cli(["convert", str(source), "-o", str(out), "--no-verify"], capsys)
    assert code == errors.OutputExistsError.exit_code == 31
    assert (out / "keep.txt").read_text() == "precious"
    code, _, stderr = _cli(["convert", str(source), "-o", str(out), "--no-verify", "--force"], capsys)
    assert code == 0, stderr
    assert not (out / "keep.txt").exists() and (out / "conversion.json").is_file()
    _no_leftovers(tmp_path)


def test_an_existing_empty_directory_is_used(tmp_path: Path) -> None:
    source = to_yi(_llama(tmp_path), tmp_path / "yi")
    (tmp_path / "out").mkdir()
    _convert(source, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()


def test_output_directory_gets_ordinary_permissions(tmp_path: Path) -> None:
    source = to_yi(_llama(tmp_path), tmp_path / "yi")
    mask = os.umask(0o022)
    try:
        _convert(source, tmp_path / "out")
    finally:
        os.umask(mask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_output_that_is_or_contains_the_input_is_refused(tmp_path: Path) -> None:
    source = to_yi(_llama(tmp_path), tmp_path / "yi")
    for target in (source, tmp_path):
        with pytest.raises(errors.UsageError, match="contains the input"):
            convert(source, output=target, force=True)
    assert (source / "model.safetensors").is_file()


def _hub_cache(tmp_path: Path) -> tuple[Path, Path]:
    """A Hub cache repo (repo folder, snapshot folder) whose snapshot files link into ``blobs/``."""
    source = to_internlm2(make_tiny_llama(tmp_path / "llama"), tmp_path / "internlm2")
    repo = tmp_path / "hub" / "models--someone--tiny-internlm2"
    snapshot = repo / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        data = path.read_bytes()
        # Large files are LFS objects (sha256 names); small ones are git blobs (40-digit sha1 names).
        name = _sha256(path) if path.suffix == ".safetensors" else hashlib.sha1(data).hexdigest()
        (repo / "blobs" / name).write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.relpath(repo / "blobs" / name, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)
    return repo, snapshot


def _tree(directory: Path) -> dict[str, bytes | str]:
    """Every entry under ``directory``: file bytes, link targets, and folders."""
    tree: dict[str, bytes | str] = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        if path.is_symlink():
            tree[key] = "-> " + os.readlink(path)
        elif path.is_dir():
            tree[key] = "dir"
        else:
            tree[key] = path.read_bytes()
    return tree


@pytest.mark.parametrize("force", [True, False])
@pytest.mark.parametrize(
    ("source_of", "output_of"),
    [
        (lambda repo, snap: snap, lambda repo, snap: repo / "blobs"),  # the report's case
        (lambda repo, snap: snap, lambda repo, snap: repo),  # contains blobs/
        (lambda repo, snap: snap, lambda repo, snap: repo / "blobs" / "llama"),  # inside blobs/
        (lambda repo, snap: repo, lambda repo, snap: repo / "blobs"),  # the repo folder as source
        (lambda repo, snap: snap / "model.safetensors", lambda repo, snap: repo / "blobs"),  # one link
    ],
    ids=["snapshot-to-blobs", "snapshot-to-repo", "snapshot-into-blobs", "repo-to-blobs", "file-to-blobs"],
)
def test_output_where_the_inputs_links_lead_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    source_of: Callable[[Path, Path], Path],
    output_of: Callable[[Path, Path], Path],
    force: bool,
) -> None:
    """D1: a Hub snapshot's files are links into blobs/; --force on blobs/ used to delete them."""
    repo, snapshot = _hub_cache(tmp_path)
    before = _tree(repo)
    args = ["convert", str(source_of(repo, snapshot)), "-o", str(output_of(repo, snapshot)), "--no-verify"]
    code, stdout, stderr = _cli(args + (["--force"] if force else []), capsys)
    assert code == errors.UsageError.exit_code == 2, stderr
    assert stdout == "" and len(stderr.strip().splitlines()) == 1, stderr
    assert "model.safetensors" in stderr or "config.json" in stderr, stderr  # names the input file
    assert _tree(repo) == before  # nothing created, nothing removed


def test_the_snapshot_link_that_would_be_destroyed_is_named(tmp_path: Path) -> None:
    repo, snapshot = _hub_cache(tmp_path)
    with pytest.raises(errors.UsageError) as refused:
        convert(snapshot, output=repo / "blobs", force=True, verify=False)
    message = str(refused.value)
    assert f"is or contains the input file {snapshot / 'model.safetensors'}" in message, message
    assert f"(a link to {(snapshot / 'model.safetensors').resolve()})" in message, message


def test_output_inside_the_input_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """U6: the input folder must not gain a subfolder (nor a hidden staging folder)."""
    source = to_yi(_llama(tmp_path), tmp_path / "small")
    before = _tree(source)
    for output in (source / "converted", source / "deeper" / "converted"):
        code, _, stderr = _cli(["convert", str(source), "-o", str(output), "--no-verify"], capsys)
        assert code == 2, stderr
        assert f"lies inside {source}" in stderr, stderr
    assert _tree(source) == before
    # A single file's own folder is not the input: its sibling folder is a fine output.
    (tmp_path / "single").mkdir()
    single = to_llama2c(_llama(tmp_path, gqa=True), tmp_path / "single" / "model.bin")
    _convert(single, tmp_path / "single" / "llama")
    assert (tmp_path / "single" / "llama" / "conversion.json").is_file()


FILE_SIZE_LIMITED_CONVERT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))  # as `ulimit -f`
from unshell.cli.main import main
main(["convert", sys.argv[1], "-o", sys.argv[2], "--no-verify"])
"""


def test_a_failed_write_is_reported_as_the_outputs(tmp_path: Path) -> None:
    """U1: a file-size limit (or a full disk) is the output's failure, with exit code 19."""
    source = to_yi(_llama(tmp_path), tmp_path / "yi")
    assert (source / "model.safetensors").stat().st_size > 64 << 10
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMITED_CONVERT, str(source), str(out), str(64 << 10)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == errors.OutputWriteError.exit_code == 19, done.stderr
    assert done.stderr.startswith("error: cannot write the output "), done.stderr
    assert "model-00001-of-00001.safetensors: File too large" in done.stderr, done.stderr
    assert "input" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
    _no_leftovers(tmp_path)


INTERRUPTED_AT_COMMIT = """
import os, signal, sys, time
# A shell's background job inherits SIGINT ignored (CI scripts run under nohup): start from
# Python's own handler, as at a terminal, or the signal would never arrive.
signal.signal(signal.SIGINT, signal.default_int_handler)
real_rename = os.rename
def rename(src, dst, *args, **kwargs):
    real_rename(src, dst, *args, **kwargs)
    if ".unshell-" in os.fspath(src) and os.fspath(dst) == sys.argv[2]:  # the new output is in place
        os.kill(os.getpid(), int(sys.argv[3]))
        time.sleep(0.5)  # the handler runs here, before the old output is removed
os.rename = rename
from unshell.cli.main import main
main(["convert", sys.argv[1], "-o", sys.argv[2], "--no-verify", "--force"])
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupt_once_the_output_is_committed_finishes_the_job(tmp_path: Path, signum: int) -> None:
    """U4: a signal after the swap used to exit 130 and leave the old output in .replaced-XXXX."""
    source = to_yi(_llama(tmp_path), tmp_path / "yi")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("the output being replaced")
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_AT_COMMIT, str(source), str(out), str(int(signum))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "note: an interrupt came once the output was complete" in done.stderr, done.stderr
    assert (out / "conversion.json").is_file() and not (out / "old.txt").exists()
    _no_leftovers(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if ".replaced-" in p.name] == []


def _start_slow_convert(source: Path, out: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_CONVERT, str(source), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "writing"  # its staging folder exists now
    return process


def _staging_folders(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".unshell-" in p.name)


def test_a_killed_conversions_staging_folder_is_removed_by_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """U5: kill -9 leaves the hidden staging folder; the next run for that output removes it."""
    source = to_yi(_llama(tmp_path), tmp_path / "yi")
    out = tmp_path / "out"
    process = _start_slow_convert(source, out)
    process.kill()
    process.wait(timeout=60)
    left = _staging_folders(tmp_path)
    assert len(left) == 1 and left[0].startswith(".out.unshell-"), left  # what kill -9 leaves

    code, _, stderr = _cli(["convert", str(source), "-o", str(out), "--no-verify"], capsys)
    assert code == 0, stderr
    assert f"note: removed {left[0]}, left by an interrupted conversion" in stderr, stderr
    assert _staging_folders(tmp_path) == []
    assert (out / "conversion.json").is_file()


def test_a_running_conversions_staging_folder_is_left_alone(tmp_path: Path) -> None:
    from unshell.conversion.writer import remove_stale_staging

    source = to_yi(_llama(tmp_path), tmp_path / "yi")
    out = tmp_path / "out"
    process = _start_slow_convert(source, out)
    try:
        live = _staging_folders(tmp_path)
        removed: list[str] = []
        remove_stale_staging(out, removed.append)
        assert removed == [] and _staging_folders(tmp_path) == live  # its owner is alive
    finally:
        process.kill()
        process.wait(timeout=60)
    remove_stale_staging(out, removed.append)  # now it is dead: the lock died with it
    assert _staging_folders(tmp_path) == [] and len(removed) == 1


def test_an_old_output_left_aside_is_put_back_or_removed(tmp_path: Path) -> None:
    """A run killed between moving the old output aside and renaming the new one into place left
    the old output in .<name>.replaced-XXXX: it goes back if nothing took its place."""
    from unshell.conversion.writer import remove_stale_staging

    out = tmp_path / "out"
    aside = tmp_path / ".out.replaced-k1ll3d"
    aside.mkdir()
    (aside / "weights.bin").write_text("the old output")
    notes: list[str] = []
    remove_stale_staging(out, notes.append)
    assert (out / "weights.bin").read_text() == "the old output" and not aside.exists()
    assert notes and "put back .out.replaced-k1ll3d" in notes[0]

    aside.mkdir()  # an output is in place now: an old one beside it is what --force replaced
    (aside / "weights.bin").write_text("older")
    remove_stale_staging(out, notes.append)
    assert not aside.exists() and (out / "weights.bin").read_text() == "the old output"


def test_a_failure_midway_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    converter = importlib.import_module("unshell.conversion")
    original = converter.recipe_chunks
    calls = []

    def failing(recipe: Any, reader: Any) -> Any:
        calls.append(recipe.output)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(recipe, reader)

    monkeypatch.setattr(converter, "recipe_chunks", failing)
    source = to_yi(_llama(tmp_path), tmp_path / "yi")
    with pytest.raises(KeyboardInterrupt):
        convert(source, output=tmp_path / "out", verify=False)
    assert not (tmp_path / "out").exists()
    _no_leftovers(tmp_path)


SLOW_CONVERT = """
import importlib, sys, time
converter = importlib.import_module("unshell.conversion")
original = converter.recipe_chunks
def slow(recipe, reader):
    print("writing", flush=True)
    time.sleep(0.2)
    return original(recipe, reader)
converter.recipe_chunks = slow
from unshell.cli.main import main
main(["convert", sys.argv[1], "-o", sys.argv[2], "--no-verify"])
"""


def test_sigterm_midway_leaves_no_output(tmp_path: Path) -> None:
    source = to_yi(_llama(tmp_path), tmp_path / "yi")
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_CONVERT, str(source), str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "writing"
    time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode != 0
    assert not (tmp_path / "out").exists()
    _no_leftovers(tmp_path)


def test_small_chunks_give_the_same_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streaming in blocks of a few rows (row gathers across chunk boundaries, split permutations)
    gives the same bytes as whole-tensor blocks."""
    from unshell.conversion import writer

    source = _llama(tmp_path, gqa=True)
    _, expected = load_llama(source)
    foreign = to_meta(source, tmp_path / "meta", shards=2)
    monkeypatch.setattr(writer, "CHUNK_BYTES", 700)
    _convert(foreign, tmp_path / "out")
    _assert_same(expected, read_safetensors_dir(tmp_path / "out"))
    _convert(to_internlm2(source, tmp_path / "internlm2b"), tmp_path / "out2")
    _assert_same(expected, read_safetensors_dir(tmp_path / "out2"))


def test_json_output_is_the_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = to_phi3(_llama(tmp_path), tmp_path / "phi3")
    code, stdout, stderr = _cli(
        ["convert", str(source), "-o", str(tmp_path / "out"), "--no-verify", "--format", "json"], capsys
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["output_path"] == str(tmp_path / "out")
    assert document["source"]["matched_family"] == "phi3"
    saved = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert document["output"] == saved["output"] and document["transforms"] == saved["transforms"]


# -- transforms ------------------------------------------------------------------------------------------------------


def test_rotary_permutations_match_the_documented_row_map() -> None:
    weight = np.arange(4 * 8 * 3, dtype=np.float32).reshape(32, 3)
    for heads in (1, 2, 4):
        meta = hf_to_meta_rows(weight, heads)
        assert np.array_equal(transforms.hf_to_meta(weight, heads), meta)
        assert np.array_equal(transforms.meta_to_hf(meta, heads), weight)
        assert np.array_equal(_meta_to_hf_rows(meta, heads), weight)
    bias = np.arange(32, dtype=np.float32)
    assert np.array_equal(transforms.meta_to_hf(hf_to_meta_rows(bias, 4), 4), bias)


def test_grouped_and_contiguous_splits_follow_their_layouts() -> None:
    d, nkv, group = 2, 2, 3
    rows = []
    for g in range(nkv):
        rows += [("q", g * group + j) for j in range(group)] + [("k", g), ("v", g)]
    labels = np.array([f"{kind}{head}.{r}" for kind, head in rows for r in range(d)])
    q = transforms.split_grouped_qkv(labels, "q", kv_heads=nkv, group=group, head_dim=d)
    assert list(q) == [f"q{h}.{r}" for h in range(nkv * group) for r in range(d)]
    assert list(transforms.split_grouped_qkv(labels, "v", kv_heads=nkv, group=group, head_dim=d)) == [
        "v0.0",
        "v0.1",
        "v1.0",
        "v1.1",
    ]
    per_head = np.array([f"{kind}{h}" for h in range(3) for kind in "qkv"])
    assert list(transforms.split_per_head_qkv(per_head, "k", heads=3, head_dim=1)) == ["k0", "k1", "k2"]
    assert list(transforms.split_contiguous(np.arange(10), [4, 3, 3], 1)) == [4, 5, 6]
    maps = [("split_contiguous", {"sizes": (8, 4, 4), "part": 0}), ("meta_to_hf", {"heads": 2})]
    index = transforms.row_index(16, maps)
    assert index is not None
    data = np.random.default_rng(0).standard_normal((16, 3))
    assert np.array_equal(
        data[index], transforms.meta_to_hf(transforms.split_contiguous(data, (8, 4, 4), 0), 2)
    )


def test_normalize_rows_matches_torch() -> None:
    import torch

    values = np.random.default_rng(1).standard_normal((5, 7)).astype(np.float32)
    expected = torch.nn.functional.normalize(torch.from_numpy(values), dim=-1).numpy()
    np.testing.assert_allclose(transforms.normalize_rows(values), expected, rtol=1e-6, atol=1e-7)


def test_record_schema_doc_lists_every_field(tmp_path: Path) -> None:
    source = _llama(tmp_path, gqa=True)
    record = _convert(to_internlm2(source, tmp_path / "internlm2"), tmp_path / "out")
    doc = (TESTS.parent / "docs" / "convert-record.md").read_text()
    for key in record:
        assert f"| `{key}` |" in doc, key
    for section in ("source", "output"):
        for key in record[section]:
            assert f"`{section}.{key}`" in doc, f"{section}.{key}"
    for key in record["transforms"][0]:
        assert f"`transforms[].{key}`" in doc, key
    ops = {step["op"] for entry in record["transforms"] for step in entry["steps"]}
    for op in ops | {"split_contiguous", "split_per_head_qkv", "meta_to_hf", "scale", "normalize_rows"}:
        assert f"| `{op}` |" in doc, op


def test_hub_cache_source_digests_come_from_lfs_blob_names(tmp_path: Path) -> None:
    """Weight files in a Hub cache are named by their sha256 (the LFS object id): not hashed again."""
    repo, _ = _hub_cache(tmp_path)
    source = tmp_path / "internlm2"

    record = _convert(repo, tmp_path / "out")

    sources = {Path(f["path"]).name: f for f in record["source"]["files"]}
    weights, config = sources["model.safetensors"], sources["config.json"]
    assert weights["sha256_from"] == "hub-cache-blob-name"
    assert weights["sha256"] == _sha256(source / "model.safetensors")
    assert config["sha256_from"] == "computed" and config["sha256"] == _sha256(source / "config.json")

    # Without source digests, the Hub's names are still recorded (they cost nothing); the rest is
    # marked as not computed, never left looking like a digest.
    lean = _convert(repo, tmp_path / "lean", source_digests=False)
    lean_sources = {Path(f["path"]).name: f for f in lean["source"]["files"]}
    assert lean_sources["model.safetensors"] == weights
    assert lean_sources["config.json"] == {**config, "sha256": None, "sha256_from": "not-computed"}
    assert all(len(f["sha256"]) == 64 for f in lean["output"]["files"])  # the output is always hashed
