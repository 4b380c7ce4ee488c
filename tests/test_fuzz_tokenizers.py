"""Fuzz: every tokenizer form `unshell.tokenizers.vocab` reads (tokenizer.json, vocab.json with
merges.txt, vocab.txt, SentencePiece tokenizer.model, tiktoken, llama2.c tokenizer.bin), built
from chosen pieces and mutated from the real fixtures. Each file is read on its own (``inspect``,
the family match, a comparison with itself) and beside a model. Only unshell errors may escape
(see `fuzz_support`); a tokenizer's own error keeps its exit code (issue 13, U2)."""

from __future__ import annotations

import base64
import itertools
import shutil
import struct
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from fuzz_support import (
    HUGE_NUMBERS,
    SPECIAL_NUMBERS,
    Pairs,
    adversarial_json,
    deep_nesting,
    dump_json,
    exercise_tokenizer,
    field_mutated,
    fuzz_settings,
    mostly,
    mutated,
    names,
    protobuf_fields,
    reaches,
    run_cli,
    scratch_dir,
    tiny_llama_template,
    usually,
)
from hostile_gguf_onnx import field_bytes, field_varint

FIXTURES = Path(__file__).resolve().parent / "data" / "fixtures"
TOKENS = (
    "<unk>",
    "<s>",
    "</s>",
    "<0x0A>",
    "▁the",
    "Ġthe",
    "the",
    "##ing",
    "[PAD]",
    "[CLS]",
    "a",
    "b",
    "ab",
    "",
)
token_text = usually(st.sampled_from(TOKENS), names("x"), every=4)
ids = usually(
    st.integers(0, 40), st.one_of(st.sampled_from(SPECIAL_NUMBERS), st.sampled_from(HUGE_NUMBERS)), every=6
)


# -- the forms --------------------------------------------------------------------------------------


@st.composite
def tokenizer_json(draw: st.DrawFn) -> bytes:
    kind = draw(mostly(("BPE", "WordPiece", "Unigram"), ("WordLevel", "", None, 7)))
    tokens = draw(st.lists(token_text, min_size=1, max_size=10, unique=True))
    if kind == "Unigram" and draw(st.booleans()):
        vocab: Any = [[t, draw(usually(st.floats(-10, 0), st.sampled_from(SPECIAL_NUMBERS)))] for t in tokens]
    elif draw(mostly((True,), (False,))):
        vocab = {t: i for i, t in enumerate(tokens)}
        if draw(mostly((False,), (True,), every=4)):
            vocab[draw(st.sampled_from(tokens))] = draw(ids)
    else:
        vocab = draw(adversarial_json())
    model: dict[str, Any] = {
        "type": kind,
        "vocab": vocab,
        "unk_token": draw(mostly(("<unk>",), (None, 3, ""))),
    }
    if kind == "BPE":
        merges = [f"{a} {b}" for a, b in itertools.pairwise(tokens)]
        if draw(st.booleans()):
            merges = [[a, b] for a, b in itertools.pairwise(tokens)]
        if draw(mostly((False,), (True,), every=4)):
            merges.append(
                draw(st.one_of(st.sampled_from(("a", "a b c", "", ["a"], [1, 2], None)), adversarial_json()))
            )
        model["merges"] = merges
        model["byte_fallback"] = draw(st.booleans())
    document: dict[str, Any] = {"version": "1.0", "model": model}
    if draw(st.booleans()):
        document["added_tokens"] = [
            {"id": draw(ids), "content": draw(token_text), "special": draw(st.booleans())}
            for _ in range(draw(st.integers(0, 3)))
        ]
    if draw(mostly((False,), (True,), every=5)):
        document["added_tokens"] = draw(adversarial_json())
    step = draw(st.sampled_from(({"type": "ByteLevel"}, {"type": "Metaspace", "replacement": "▁"}, None)))
    if draw(mostly((False,), (True,), every=10)):
        step = {"type": "Sequence", "pretokenizers": [deep_nesting(draw(st.integers(100, 3000)))]}
    document["pre_tokenizer"] = step
    document["decoder"] = draw(
        st.sampled_from(
            ({"type": "ByteLevel"}, {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, None)
        )
    )
    if draw(mostly((False,), (True,), every=12)):
        return dump_json(Pairs((*document.items(), ("model", None)))).encode("utf-8", "surrogatepass")
    return dump_json(document).encode("utf-8", "surrogatepass")


@st.composite
def bpe_vocab_and_merges(draw: st.DrawFn) -> tuple[bytes, bytes]:
    tokens = draw(st.lists(token_text, min_size=1, max_size=10, unique=True))
    vocab = {t: i for i, t in enumerate(tokens)}
    if draw(mostly((False,), (True,), every=3)):
        vocab[draw(st.sampled_from(tokens))] = draw(ids)
    lines = [draw(mostly(("#version: 0.2",), ("", "#", "\ufeff#version: 0.2")))]
    lines += [f"{a} {b}" for a, b in itertools.pairwise(tokens)]
    lines += draw(st.lists(st.sampled_from(("a", "a b c", " ", "\t", "x" * 300, "Ġ Ġ", "\r")), max_size=2))
    merges = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(mostly((False,), (True,), every=8)):
        merges += b"\xff\xfe"
    return dump_json(vocab).encode("utf-8", "surrogatepass"), merges


vocab_txt = st.lists(
    usually(
        st.sampled_from(TOKENS), st.sampled_from(("", " ", "\r", "[unused0]", "x" * 300, "a\x00b")), every=5
    ),
    min_size=0,
    max_size=12,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


@st.composite
def tiktoken_ranks(draw: st.DrawFn) -> bytes:
    tokens = draw(st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=10, unique=True))
    lines = [base64.b64encode(t) + b" " + str(rank).encode() for rank, t in enumerate(tokens)]
    for _ in range(draw(mostly((0,), (1, 2), every=3))):
        index = draw(st.integers(0, len(lines) - 1))
        lines[index] = draw(
            st.sampled_from(
                (b"!!!! 3", b"YQ== -1", b"YQ== 99999999999999999999", b"YQ==", b"YQ== 0", b"", b"YQ 1")
            )
        )
    return b"\n".join(lines) + draw(mostly((b"\n",), (b"", b"\r\n", b"\n\n")))


def _piece(text: str, score: float, piece_type: int) -> bytes:
    body = field_bytes(1, text.encode("utf-8", "surrogatepass")) + b"\x15" + struct.pack("<f", score)
    return field_bytes(1, body + field_varint(3, piece_type))


@st.composite
def sentencepiece_models(draw: st.DrawFn) -> bytes:
    pieces = draw(
        st.lists(
            st.tuples(token_text, st.floats(width=32), mostly((1, 2, 3, 6), (4, 5, 0, 7, 1 << 40))),
            min_size=0,
            max_size=10,
        )
    )
    model = b"".join(_piece(text, score, kind & ((1 << 64) - 1)) for text, score, kind in pieces)
    model += field_bytes(2, field_varint(3, draw(mostly((1, 2), (3, 4, 0, 9)))))
    return model


@st.composite
def llama2c_tokenizers(draw: st.DrawFn) -> bytes:
    tokens = draw(st.lists(st.binary(max_size=8), min_size=0, max_size=10))
    longest = max((len(t) for t in tokens), default=0)
    out = struct.pack("<i", draw(mostly((longest,), (0, -1, longest - 1, 1 << 30))))
    for token in tokens:
        length = draw(mostly((len(token),), (len(token) + 1, -1, 1 << 30), every=12))
        out += struct.pack("<fi", draw(st.floats(width=32)), length) + token
    return out


FORMS = {
    "tokenizer.json": tokenizer_json(),
    "vocab.json": bpe_vocab_and_merges(),
    "vocab.txt": vocab_txt,
    "cl100k.tiktoken": tiktoken_ranks(),
    "tokenizer.model": sentencepiece_models(),
    "tokenizer.bin": llama2c_tokenizers(),
}
forms = st.sampled_from(sorted(FORMS)).flatmap(lambda name: st.tuples(st.just(name), FORMS[name]))


def _write(directory: Path, name: str, data: Any) -> Path:
    if name == "vocab.json":
        vocab, merges = data
        (directory / "vocab.json").write_bytes(vocab)
        (directory / "merges.txt").write_bytes(merges)
    else:
        (directory / name).write_bytes(data)
    return directory / name


@reaches("tokenizer_report")
@fuzz_settings(150)
@given(forms)
@example(("tokenizer.json", b'{"model": {"type": "BPE", "vocab": {"a": -1}}}'))  # issue 13, U2
def test_structured_tokenizers(form: tuple[str, Any]) -> None:
    name, data = form
    with scratch_dir() as directory:
        exercise_tokenizer(_write(directory, name, data))


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


SPM = _fixture("openllama.tokenizer.model")
SPM_FIELDS = protobuf_fields(SPM[:4096]) + [(o, w) for o, w in protobuf_fields(SPM) if o > len(SPM) - 4096]
LLAMA2C_TOKENIZER = _fixture("stories260K.tok512.bin")


def _llama2c_fields(data: bytes) -> list[tuple[int, int]]:
    fields, position = [(0, 4)], 4
    while position + 8 <= len(data):
        fields += [(position, 4), (position + 4, 4)]
        position += 8 + struct.unpack_from("<i", data, position + 4)[0]
    return fields


@reaches("tokenizer_report")
@fuzz_settings(30)
@given(
    st.one_of(
        st.tuples(st.just("tokenizer.model"), field_mutated(SPM, SPM_FIELDS, max_mutations=2)),
        st.tuples(st.just("tokenizer.model"), mutated(SPM, hot=2048, max_mutations=2)),
        st.tuples(
            st.just("tokenizer.bin"), field_mutated(LLAMA2C_TOKENIZER, _llama2c_fields(LLAMA2C_TOKENIZER))
        ),
    )
)
def test_mutated_real_tokenizers(form: tuple[str, bytes]) -> None:
    """OpenLLaMA's SentencePiece model (32,000 pieces) with its first and last pieces' tags,
    lengths, scores and types changed, and the stories260K llama2.c tokenizer with its lengths
    and scores changed."""
    name, data = form
    with scratch_dir() as directory:
        exercise_tokenizer(_write(directory, name, data))


@reaches("inspect")
@fuzz_settings(40)
@given(forms)
def test_tokenizers_beside_a_model(form: tuple[str, Any]) -> None:
    """The same files as sidecars of a model folder: a broken tokenizer costs the tokenizer
    section, never the inspection (``vocabulary_of`` returns None)."""
    name, data = form
    with scratch_dir() as directory:
        model = directory / "model"
        shutil.copytree(tiny_llama_template(), model)
        _write(model, name, data)
        code, _ = run_cli("inspect", "--format", "json", str(model))
        assert code == 0, "a tokenizer sidecar made the model's inspection fail"
        from fuzz_support import OUTCOMES

        OUTCOMES["inspect: ok"] += 1
