"""Which tokenizer a checkpoint carries: its kind and vocabulary size, read from the files alone.

No tokenizer library is needed (nor loaded): ``tokenizer.json`` is JSON, a SentencePiece
``tokenizer.model`` is a protobuf walked here field by field, ``vocab.txt``/``*.tiktoken`` are
line lists, the llama2.c tokenizer is a flat binary, and a GGUF file states its tokenizer in its
key/value header.

Tokenizers are sidecars: a broken one must not make ``inspect`` fail, so `describe_tokenizer`
reports it as ``kind="unreadable"`` with a note. `describe_tokenizer_file`, for a path the user
named, raises the `unshell.errors.InputError` subclasses instead.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    CorruptCheckpointError,
    InputError,
    NotACheckpointError,
    PathNotFoundError,
    ResourceLimitError,
    UnsupportedFormatError,
)
from ..formats.base import Checkpoint, sanitize
from ..formats.facts import embedded_tokenizer_fields, facts_of
from ..formats.hf import TOKENIZER_ROLES

__all__ = ["TokenizerInfo", "describe_gguf_tokenizer", "describe_tokenizer", "describe_tokenizer_file"]

MAX_TOKENIZER_BYTES = 64 * 1024 * 1024
"""tokenizer.json, vocab.json and SentencePiece models (Gemma 3's tokenizer.json is 33 MB)."""
MAX_LINE_TOKENIZER_BYTES = 16 * 1024 * 1024
"""One-entry-per-line files: merges.txt, ``*.tiktoken`` (also under the name tokenizer.model) and
vocab.txt. Real ones stay under 4 MB (Qwen's tiktoken file is 2.5 MB, o200k 3.6 MB); reading one
takes tens of bytes of memory per byte, so this cap is what keeps a planted file bounded."""
MAX_LLAMA2C_TOKEN_BYTES = 1 << 16

# SentencePiece TrainerSpec.model_type; UNIGRAM is the proto default when the field is absent.
SENTENCEPIECE_KINDS = {
    1: "sentencepiece-unigram",
    2: "sentencepiece-bpe",
    3: "sentencepiece-word",
    4: "sentencepiece-char",
}
TOKENIZER_JSON_KINDS = {
    "BPE": "bpe",
    "WordPiece": "wordpiece",
    "Unigram": "unigram",
    "WordLevel": "wordlevel",
}
MERGES_NAMES = ("merges.txt", "vocab.bpe")
BPE_VOCAB_NAMES = ("vocab.json", "encoder.json")


@dataclass(frozen=True)
class TokenizerInfo:
    """Kind and size of one tokenizer.

    ``vocab_size`` counts the base vocabulary plus ``added_tokens`` (tokens declared outside the
    base vocabulary, such as the special tokens a ``tokenizer.json`` appends). ``merges`` is the
    number of BPE merge rules when the files state them.
    """

    kind: str
    vocab_size: int | None
    source: str
    added_tokens: int = 0
    merges: int | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "added_tokens": self.added_tokens,
            "source": self.source,
        }
        if self.merges is not None:
            out["merges"] = self.merges
        if self.note is not None:
            out["note"] = self.note
        return out


# -- entry points ----------------------------------------------------------------------------------


def describe_tokenizer(checkpoint: Checkpoint, *, vocab_size_hint: int | None = None) -> TokenizerInfo | None:
    """Describe the tokenizer stored in or beside ``checkpoint``; None when there is none.

    ``vocab_size_hint`` (else the llama2.c header's or config's vocab size) is compared with the
    token count of a llama2.c tokenizer, which does not state its own size. Described once per
    opened checkpoint and hint.
    """
    return checkpoint.memo(
        f"tokenizer:{vocab_size_hint}", lambda: _describe_tokenizer(checkpoint, vocab_size_hint)
    )


def _describe_tokenizer(checkpoint: Checkpoint, vocab_size_hint: int | None) -> TokenizerInfo | None:
    fields = embedded_tokenizer_fields(checkpoint)
    if fields is not None:
        source = checkpoint.files[0].name if checkpoint.files else checkpoint.path.name
        info = describe_gguf_tokenizer(fields, source=sanitize(source))
        if info is not None:
            return info
    sidecars = checkpoint.sidecars
    path = _pick_sidecar(sidecars)
    if path is None:
        return None
    hint = vocab_size_hint if vocab_size_hint is not None else _vocab_size_from_header(checkpoint)
    try:
        if path == sidecars.get("vocab") and path.suffix.lower() == ".json":
            return _describe_bpe_vocab(path, sidecars.get("merges") or sibling(path, MERGES_NAMES))
        return describe_tokenizer_file(path, vocab_size_hint=hint)
    except InputError as exc:
        return TokenizerInfo(kind="unreadable", vocab_size=None, source=sanitize(path.name), note=str(exc))


def describe_tokenizer_file(
    path: str | os.PathLike[str], *, vocab_size_hint: int | None = None
) -> TokenizerInfo:
    """Describe one tokenizer file, choosing the parser from its name and content.

    Raises:
        PathNotFoundError, UnsupportedFormatError, CorruptCheckpointError, ResourceLimitError.
    """
    target = Path(path)
    name = target.name.lower()
    if name.endswith(".tiktoken"):
        return _describe_tiktoken(target)
    if name.endswith(".json"):
        return _describe_json(target)
    if name in MERGES_NAMES:
        vocab = sibling(target, BPE_VOCAB_NAMES)
        if vocab is None:
            raise UnsupportedFormatError(
                f"{sanitize(target.name)}: BPE merges without a vocab.json beside them"
            )
        return _describe_bpe_vocab(vocab, target)
    if name.endswith(".txt"):
        return _describe_wordpiece_vocab(target)
    return _describe_binary(target, vocab_size_hint)


def describe_gguf_tokenizer(kv: Any, *, source: str) -> TokenizerInfo | None:
    """From GGUF ``tokenizer.ggml.*`` keys; the token array is only measured, never decoded."""
    if not isinstance(kv, Mapping) or "tokenizer.ggml.model" not in kv:
        return None
    model = kv["tokenizer.ggml.model"]
    if isinstance(model, bytes):
        model = model.decode("utf-8", errors="replace")
    if not isinstance(model, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", model):
        shown = sanitize(str(model), 40)
        return TokenizerInfo("unreadable", None, source, note=f"GGUF tokenizer.ggml.model is {shown!r}")
    tokens = kv.get("tokenizer.ggml.tokens")
    if tokens is None or isinstance(tokens, str | bytes):
        return TokenizerInfo(f"gguf-{model}", None, source, note="GGUF has no tokenizer.ggml.tokens array")
    try:
        count = len(tokens)
    except TypeError:
        return TokenizerInfo(f"gguf-{model}", None, source, note="GGUF tokenizer.ggml.tokens is not an array")
    return TokenizerInfo(f"gguf-{model}", count, source)


# -- sidecar choice --------------------------------------------------------------------------------

# Richest description first: tokenizer.json also lists added tokens.
_SIDECAR_ROLES = TOKENIZER_ROLES


def _pick_sidecar(sidecars: Mapping[str, Path]) -> Path | None:
    for role in _SIDECAR_ROLES:
        if role in sidecars:
            return sidecars[role]
    for path in sidecars.values():
        if path.name.lower().endswith(".tiktoken"):
            return path
    return None


def _vocab_size_from_header(checkpoint: Checkpoint) -> int | None:
    candidates: list[Any] = [facts_of(checkpoint).header_vocab_size]
    if isinstance(checkpoint.config, Mapping):
        candidates.append(checkpoint.config.get("vocab_size"))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value != 0:
            # llama2.c stores a negative vocab size to flag an untied classifier.
            return abs(value)
    return None


def sibling(path: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        candidate = path.with_name(name)
        if candidate.is_file():
            return candidate
    return None


# -- reading ---------------------------------------------------------------------------------------


def read_capped(path: Path, limit: int | None = None) -> bytes:
    """The file's bytes, refused (ResourceLimitError) past ``limit`` (default `MAX_TOKENIZER_BYTES`)."""
    label = sanitize(path.name)
    limit = MAX_TOKENIZER_BYTES if limit is None else min(limit, MAX_TOKENIZER_BYTES)
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise ResourceLimitError(f"{label}: {size} bytes, over the {limit}-byte tokenizer limit")
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise PathNotFoundError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise UnsupportedFormatError(f"{label}: a folder, not a tokenizer file") from None
    except OSError as exc:
        raise PathNotFoundError(
            f"{label}: cannot read ({sanitize(exc.strerror or type(exc).__name__)})"
        ) from None
    if len(data) > limit:
        raise ResourceLimitError(f"{label}: grew past the {limit}-byte tokenizer limit while read")
    return data


def load_json(path: Path) -> Any:
    raw = read_capped(path)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(
            f"{sanitize(path.name)}: not valid JSON ({sanitize(str(exc), 120)})"
        ) from None


def text_lines(path: Path) -> list[bytes]:
    """The lines of a one-entry-per-line tokenizer file (at most `MAX_LINE_TOKENIZER_BYTES`)."""
    lines = read_capped(path, MAX_LINE_TOKENIZER_BYTES).split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


# -- JSON formats ----------------------------------------------------------------------------------


def _describe_json(path: Path) -> TokenizerInfo:
    data = load_json(path)
    if not isinstance(data, dict):
        raise UnsupportedFormatError(f"{sanitize(path.name)}: JSON but not a tokenizer.json or a vocab.json")
    # A GPT-2 vocab holds the token "model" too, mapped to an id rather than an object.
    if isinstance(data.get("model"), dict):
        return _describe_tokenizer_json(data, sanitize(path.name))
    return _describe_bpe_vocab(path, sibling(path, MERGES_NAMES), data=data)


def _describe_tokenizer_json(data: dict[str, Any], source: str) -> TokenizerInfo:
    model = data["model"]
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        pieces = set(vocab)
    elif isinstance(vocab, list):
        pieces = {
            entry[0] for entry in vocab if isinstance(entry, list) and entry and isinstance(entry[0], str)
        }
    else:
        raise CorruptCheckpointError(f"{source}: model.vocab is neither a mapping nor a list")
    model_type = model.get("type") or guess_model_type(model, vocab)
    kind = TOKENIZER_JSON_KINDS.get(model_type) if isinstance(model_type, str) else None
    if kind is None:
        raise UnsupportedFormatError(
            f"{source}: unknown tokenizer model type {sanitize(str(model_type), 40)!r}"
        )
    added = _count_added_tokens(data.get("added_tokens"), pieces)
    merges = model.get("merges")
    return TokenizerInfo(
        kind=kind,
        vocab_size=len(vocab) + added,
        source=source,
        added_tokens=added,
        merges=len(merges) if isinstance(merges, list) and kind == "bpe" else None,
    )


def guess_model_type(model: Mapping[str, Any], vocab: object) -> str:
    """Old tokenizer.json files omit model.type; the vocab's shape and the merges tell it."""
    if isinstance(vocab, list):
        return "Unigram"
    if "merges" in model:
        return "BPE"
    if "continuing_subword_prefix" in model:
        return "WordPiece"
    return "WordLevel"


def _count_added_tokens(added_tokens: object, vocab: set[str]) -> int:
    if not isinstance(added_tokens, list):
        return 0
    contents = {entry.get("content") for entry in added_tokens if isinstance(entry, dict)}
    return sum(1 for content in contents if isinstance(content, str) and content not in vocab)


def _describe_bpe_vocab(vocab_path: Path, merges_path: Path | None, *, data: Any = None) -> TokenizerInfo:
    source = sanitize(vocab_path.name)
    vocab = load_json(vocab_path) if data is None else data
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise UnsupportedFormatError(f"{source}: not a BPE vocab (a mapping of tokens to ids)")
    merges = _count_merges(merges_path) if merges_path is not None else None
    note = None if merges_path is not None else "no merges file beside the vocabulary"
    return TokenizerInfo("bpe", len(vocab), source, merges=merges, note=note)


def _count_merges(path: Path) -> int:
    # The first line of a GPT-2 style merges file is a "#version: 0.2" comment.
    return sum(1 for line in text_lines(path) if line.strip() and not line.startswith(b"#version"))


# -- line formats ----------------------------------------------------------------------------------


WORDPIECE_SPECIAL_LINE = re.compile(rb"\[(?:PAD|UNK|CLS|SEP|MASK)\]")
MIN_WORDPIECE_TOKENS = 100
"""A ``.txt`` file not named vocab.txt is read as a WordPiece vocabulary only when it looks like
one: at least this many lines, one token a line (no spaces), and BERT's special tokens among them."""


def check_wordpiece_lines(path: Path, lines: list[bytes]) -> None:
    """Refuse a text file that is not a WordPiece vocabulary ("hello world" is not 1 token id)."""
    if not lines:
        raise CorruptCheckpointError(f"{sanitize(path.name)}: empty vocabulary")
    if path.name.lower() == "vocab.txt":
        return
    if (
        len(lines) < MIN_WORDPIECE_TOKENS
        or any(len(line.split()) > 1 for line in lines)
        or not any(WORDPIECE_SPECIAL_LINE.fullmatch(line) for line in lines)
    ):
        raise NotACheckpointError(
            f"{sanitize(path.name)}: a text file, not a tokenizer vocabulary (a WordPiece vocab.txt "
            f"has one token a line, {MIN_WORDPIECE_TOKENS} or more, with [UNK], [CLS] and the like among them)"
        )


def _describe_wordpiece_vocab(path: Path) -> TokenizerInfo:
    lines = text_lines(path)
    check_wordpiece_lines(path, lines)
    return TokenizerInfo("wordpiece", len(lines), sanitize(path.name))


TIKTOKEN_LINE = re.compile(rb"[A-Za-z0-9+/]+={0,2} [0-9]+")


def _describe_tiktoken(path: Path) -> TokenizerInfo:
    source = sanitize(path.name)
    lines = [line for line in text_lines(path) if line.strip()]
    for number, line in enumerate(lines, 1):
        if not TIKTOKEN_LINE.fullmatch(line):
            raise CorruptCheckpointError(f"{source}: line {number} is not a 'base64 rank' pair")
    if not lines:
        raise CorruptCheckpointError(f"{source}: no ranks")
    return TokenizerInfo("tiktoken", len(lines), source)


# -- binary formats --------------------------------------------------------------------------------


def _describe_binary(path: Path, vocab_size_hint: int | None) -> TokenizerInfo:
    data = read_capped(path)
    source = sanitize(path.name)
    # Meta's Llama 3 ships its tiktoken rank file under the SentencePiece name tokenizer.model.
    if TIKTOKEN_LINE.fullmatch(data.split(b"\n", 1)[0].removesuffix(b"\r")):
        return _describe_tiktoken(path)
    try:
        return _describe_sentencepiece(data, source)
    except Malformed as protobuf_problem:
        if not looks_like_llama2c_tokenizer(data):
            raise CorruptCheckpointError(
                f"{source}: neither a SentencePiece model ({protobuf_problem}) nor a llama2.c tokenizer"
            ) from None
    return _describe_llama2c(data, source, vocab_size_hint)


class Malformed(Exception):
    """Bytes that do not parse; turned into a user-facing error by the caller."""


def _describe_sentencepiece(data: bytes, source: str) -> TokenizerInfo:
    pieces = 0
    model_type = 1
    for number, wire, start, end in protobuf_fields(data):
        if number == 1 and wire == 2:
            pieces += 1
        elif number == 2 and wire == 2:
            model_type = trainer_model_type(data[start:end], model_type)
    if pieces == 0:
        raise Malformed("no pieces")
    kind = SENTENCEPIECE_KINDS.get(model_type)
    if kind is None:
        raise CorruptCheckpointError(f"{source}: unknown SentencePiece model type {model_type}")
    return TokenizerInfo(kind, pieces, source)


def trainer_model_type(trainer_spec: bytes, default: int) -> int:
    model_type = default
    for number, wire, value, _ in protobuf_fields(trainer_spec):
        if number == 3 and wire == 0:
            model_type = value
    return model_type


def protobuf_fields(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """Walk one protobuf message: (field number, wire type, start or varint value, end)."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise Malformed(f"field number 0 at byte {position}")
        if wire == 0:
            value, position = _varint(data, position)
            yield number, wire, value, position
            continue
        if wire == 2:
            length, position = _varint(data, position)
            start, position = position, position + length
        elif wire in (1, 5):
            start, position = position, position + (8 if wire == 1 else 4)
        else:
            raise Malformed(f"unsupported wire type {wire} at byte {position}")
        if position > len(data):
            raise Malformed("a field runs past the end")
        yield number, wire, start, position


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if position >= len(data):
            raise Malformed("the data ends inside a varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
    raise Malformed("a varint longer than 10 bytes")


def looks_like_llama2c_tokenizer(data: bytes) -> bool:
    if len(data) < 12:
        return False
    max_token_length, _score, first_length = struct.unpack_from("<ifi", data, 0)
    return 0 < max_token_length <= MAX_LLAMA2C_TOKEN_BYTES and 0 <= first_length <= max_token_length


def _describe_llama2c(data: bytes, source: str, vocab_size_hint: int | None) -> TokenizerInfo:
    """llama2.c layout: int32 max_token_length, then per token float32 score, int32 length, bytes."""
    (max_token_length,) = struct.unpack_from("<i", data, 0)
    position, count = 4, 0
    while position < len(data):
        if position + 8 > len(data):
            raise CorruptCheckpointError(f"{source}: ends inside the record of token {count}")
        length = struct.unpack_from("<i", data, position + 4)[0]
        if not 0 <= length <= max_token_length:
            raise CorruptCheckpointError(
                f"{source}: token {count} claims {length} bytes (the maximum is {max_token_length})"
            )
        position += 8 + length
        count += 1
    if position != len(data):
        raise CorruptCheckpointError(f"{source}: ends inside the bytes of token {count - 1}")
    note = None
    if vocab_size_hint is not None and vocab_size_hint != count:
        note = f"holds {count} tokens but the model header says {vocab_size_hint}"
    return TokenizerInfo("llama2c", count, source, note=note)
