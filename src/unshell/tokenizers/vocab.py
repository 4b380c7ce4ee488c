"""Whole vocabularies, read from any common tokenizer form and normalized to bytes.

Why bytes: the same tokenizer is shipped in many spellings. Llama 2's vocabulary is a SentencePiece
``tokenizer.model`` (spaces written ``▁``, raw bytes as ``<0x0A>`` pieces), the same pieces in a
Hugging Face ``tokenizer.json``, a llama.cpp GGUF header and a llama2.c ``tokenizer.bin`` (spaces
already spaces). GPT-2 style vocabularies write every byte as a printable stand-in character
(``Ġthe`` is ``" the"``), while tiktoken rank files hold the raw bytes in base64. Telling whether two
checkpoints share a vocabulary, or whether one extends the other, needs one spelling: the bytes
each token stands for in text. Every reader here turns its form into that, so that equal
tokenizers compare equal id for id whatever file they came in.

No tokenizer library is needed or loaded, and nothing in the files is executed: JSON is parsed as
data, the SentencePiece protobuf is walked with `unshell.tokenizers.describe`'s field walker, GGUF
headers come from `unshell.formats.gguf`. Every length is checked against the bytes present, files
are capped at `MAX_TOKENIZER_BYTES` (one-entry-per-line files at `MAX_LINE_TOKENIZER_BYTES`), token
ids and merge rules at `MAX_VOCABULARY`; what does not parse raises an
`unshell.errors.InputError` subclass with a one-line message.

Interface contract (relations.py and families.py are written against it):

    Vocabulary.tokens   tuple[bytes | None, ...]; index = token id; None = an id with no token
                        (a hole, e.g. GGUF padding "[PAD123]" entries of type UNUSED may stay as
                        their bytes but must be in ``special``).
    Vocabulary.special  frozenset[int]: ids that are not ordinary text pieces (control, unknown,
                        user-defined/added special tokens, unused/padding). Byte-fallback pieces
                        <0xNN> are NOT special: they are normalized to their single byte.
    Vocabulary.merges   tuple[tuple[bytes, bytes], ...] | None, normalized like tokens, in rank order.
    Vocabulary.kind     the TokenizerInfo.kind vocabulary: "sentencepiece-bpe", "sentencepiece-unigram",
                        "bpe", "wordpiece", "unigram", "tiktoken", "llama2c", "gguf-llama", "gguf-gpt2", ...
    Vocabulary.model    the algorithm family for comparison: "spm" | "byte-bpe" | "wordpiece" | "other".
    Vocabulary.source   a sanitized file name for messages.

    read_vocabulary(path)            a file or directory, any supported form
    vocabulary_of(checkpoint)        the vocabulary carried by a checkpoint (GGUF kv, sidecars), or None

Normalization, per form:

- SentencePiece (``tokenizer.model``, GGUF ``llama``/``t5``, ``tokenizer.json`` with a Metaspace
  pre-tokenizer or a ``▁`` <-> space Replace step, llama2.c): ``▁`` becomes a space, byte pieces
  ``<0xNN>`` become that byte (pieces typed BYTE; in a ``tokenizer.json`` only with byte fallback).
  Pieces typed CONTROL, UNKNOWN or UNUSED are special.
- byte-level BPE (GPT-2 ``vocab.json``/``encoder.json``, ``tokenizer.json`` with a ByteLevel
  pre-tokenizer or decoder, GGUF ``gpt2``): GPT-2's ``bytes_to_unicode`` table is undone. tiktoken
  ranks are raw bytes already.
- WordPiece (``vocab.txt``, ``tokenizer.json`` WordPiece, GGUF ``bert``): the text as UTF-8, ``##``
  continuation prefix kept. llama.cpp writes BERT vocabularies with a "phantom space" (``▁the`` for
  ``the``, ``ing`` for ``##ing``); that is undone. ``[PAD] [UNK] [CLS] [SEP] [MASK] [unusedN]`` are
  special in every WordPiece form.
- A GGUF ``tokenizer.ggml.model`` not named above (``gemma4``, say) is read by its ordinary tokens:
  ``▁`` in one token of twenty means SentencePiece, byte-level stand-ins GPT-2, else raw UTF-8.

Special and added tokens (``tokenizer.json`` ``added_tokens``, GGUF USER_DEFINED and CONTROL
tokens) are kept as their raw text in UTF-8: tokenizers match them in the input before any
normalization, and llama.cpp stores them unencoded. Added tokens that are not special, and GGUF
USER_DEFINED tokens, count as ordinary tokens (in a SentencePiece vocabulary their ``▁`` still
reads as a space). What stays special by form: ``tokenizer.json`` added tokens flagged special
and the model's ``unk_token``; GGUF tokens typed UNKNOWN, CONTROL or UNUSED plus the ``[PADn]``
fillers llama.cpp's converter writes for unused ids (typed USER_DEFINED, UNKNOWN or UNUSED in
real files);
a GPT-2 ``vocab.json`` token that no merge produces and that is not one of the 256 byte symbols
(``<|endoftext|>``); llama2.c's ``<unk> <s> </s>``. tiktoken rank files carry no special tokens.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate, repeat
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    CorruptCheckpointError,
    InputError,
    PathNotFoundError,
    ResourceLimitError,
    UnsupportedFormatError,
)
from ..formats.base import Checkpoint, sanitize
from ..formats.facts import embedded_tokenizer_fields
from ..formats.hf import TOKENIZER_ROLES
from .describe import (
    BPE_VOCAB_NAMES,
    MAX_LINE_TOKENIZER_BYTES,
    MAX_TOKENIZER_BYTES,
    MERGES_NAMES,
    SENTENCEPIECE_KINDS,
    TIKTOKEN_LINE,
    TOKENIZER_JSON_KINDS,
    Malformed,
    check_wordpiece_lines,
    guess_model_type,
    load_json,
    looks_like_llama2c_tokenizer,
    protobuf_fields,
    read_capped,
    sibling,
    text_lines,
    trainer_model_type,
)

__all__ = ["MAX_VOCABULARY", "Vocabulary", "names_a_tokenizer", "read_vocabulary", "vocabulary_of"]

MAX_VOCABULARY = 1 << 22
"""Largest token id + 1 accepted (4,194,304; real vocabularies stop near 262,144)."""

SPM = "spm"
BYTE_BPE = "byte-bpe"
WORDPIECE = "wordpiece"
OTHER = "other"


@dataclass(frozen=True)
class Vocabulary:
    """One tokenizer's vocabulary, every token as the bytes it stands for (see the module doc)."""

    tokens: tuple[bytes | None, ...]
    special: frozenset[int]
    merges: tuple[tuple[bytes, bytes], ...] | None
    kind: str
    model: str
    source: str

    def __len__(self) -> int:
        return len(self.tokens)

    def normal_ids(self) -> tuple[int, ...]:
        """Ids of ordinary text pieces: neither special nor a hole."""
        special = self.special
        return tuple(i for i, token in enumerate(self.tokens) if token is not None and i not in special)


# -- entry points ----------------------------------------------------------------------------------


def read_vocabulary(path: str | os.PathLike[str]) -> Vocabulary:
    """Read the vocabulary of a tokenizer file, a folder holding one, or a GGUF file.

    A folder is searched for ``tokenizer.json``, then ``tokenizer.model``, then ``vocab.json`` or
    ``encoder.json`` (with ``merges.txt``/``vocab.bpe``), then ``*.tiktoken``, then
    ``tokenizer.bin``, then ``vocab.txt``.

    Raises:
        PathNotFoundError, UnsupportedFormatError, CorruptCheckpointError, ResourceLimitError
        (and the GGUF reader's `unshell.errors.InputError` subclasses for a GGUF file).
    """
    target = Path(path)
    if target.is_dir():
        found = _tokenizer_in_folder(target)
        if found is None:
            raise UnsupportedFormatError(f"{sanitize(target.name)}: no tokenizer file in this folder")
        return _read_file(found)
    if not target.exists():
        raise PathNotFoundError(f"{sanitize(target.name)}: no such file or directory")
    if not target.is_file():
        raise UnsupportedFormatError(f"{sanitize(target.name)}: not a regular file")
    return _read_file(target)


def vocabulary_of(checkpoint: Checkpoint) -> Vocabulary | None:
    """The vocabulary carried in or beside ``checkpoint``; None when there is none or it is unreadable.

    The source is chosen as `describe_tokenizer` chooses it: a GGUF file's ``tokenizer.ggml.*``
    keys, else the richest tokenizer sidecar. Tokenizers are sidecars, so a broken one gives None
    instead of an error. Read once per opened checkpoint.
    """
    return checkpoint.memo("vocabulary", lambda: _vocabulary_of(checkpoint))


def _vocabulary_of(checkpoint: Checkpoint) -> Vocabulary | None:
    kv = embedded_tokenizer_fields(checkpoint)
    if kv is not None:
        source = checkpoint.files[0].name if checkpoint.files else checkpoint.path.name
        try:
            return _from_gguf_kv(kv, sanitize(source))
        except (InputError, OSError):
            return None
    path = _pick_sidecar(checkpoint.sidecars)
    if path is None:
        return None
    try:
        if path == checkpoint.sidecars.get("vocab") and path.suffix.lower() == ".json":
            merges = checkpoint.sidecars.get("merges") or sibling(path, MERGES_NAMES)
            return _read_bpe_vocab(path, merges)
        return read_vocabulary(path)
    except (InputError, OSError):
        return None


# -- choosing the file -----------------------------------------------------------------------------

_SIDECAR_ROLES = TOKENIZER_ROLES
_FOLDER_ORDER = ("tokenizer.json", "tokenizer.model", *BPE_VOCAB_NAMES)


def _pick_sidecar(sidecars: Mapping[str, Path]) -> Path | None:
    for role in _SIDECAR_ROLES:
        if role in sidecars:
            return sidecars[role]
    for path in sidecars.values():
        if path.name.lower().endswith(".tiktoken"):
            return path
    return None


_TOKENIZER_FILE_NAMES = frozenset(
    {"tokenizer.json", "tokenizer.bin", "vocab.txt", *BPE_VOCAB_NAMES, *MERGES_NAMES}
)


def names_a_tokenizer(path: Path) -> bool:
    """Whether ``path`` is a file named like a tokenizer (``tokenizer.json``, ``*.model``,
    ``*.tiktoken``, ``vocab.json``, ``merges.txt``...) or a folder holding one."""
    if path.is_dir():
        return _tokenizer_in_folder(path) is not None
    name = path.name.lower()
    return name in _TOKENIZER_FILE_NAMES or name.endswith((".model", ".tiktoken"))


def _tokenizer_in_folder(folder: Path) -> Path | None:
    for name in _FOLDER_ORDER:
        if (folder / name).is_file():
            return folder / name
    tiktoken = sorted(entry for entry in folder.glob("*.tiktoken") if entry.is_file())
    if tiktoken:
        return tiktoken[0]
    for name in ("tokenizer.bin", "vocab.txt"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_file(path: Path) -> Vocabulary:
    name = path.name.lower()
    if _starts_with(path, b"GGUF"):
        return _read_gguf(path)
    if name.endswith(".tiktoken"):
        return _read_tiktoken(path)
    if name.endswith(".json"):
        return _read_json(path)
    if name in MERGES_NAMES:
        vocab = sibling(path, BPE_VOCAB_NAMES)
        if vocab is None:
            raise UnsupportedFormatError(
                f"{sanitize(path.name)}: BPE merges without a vocab.json beside them"
            )
        return _read_bpe_vocab(vocab, path)
    if name.endswith(".txt"):
        return _read_wordpiece_txt(path)
    return _read_binary(path)


def _starts_with(path: Path, magic: bytes) -> bool:
    label = sanitize(path.name)
    try:
        with path.open("rb") as handle:
            return handle.read(len(magic)) == magic
    except FileNotFoundError:
        raise PathNotFoundError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise UnsupportedFormatError(f"{label}: a folder, not a tokenizer file") from None
    except OSError as exc:
        raise PathNotFoundError(
            f"{label}: cannot read ({sanitize(exc.strerror or type(exc).__name__)})"
        ) from None


# -- normalization ---------------------------------------------------------------------------------

_SPACE_MARK = "\u2581"
_SPACE_MARK_BYTES = _SPACE_MARK.encode()
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")
_WORDPIECE_SPECIAL = re.compile(r"\[(?:PAD|UNK|CLS|SEP|MASK|unused[0-9]+)\]")
_GGUF_PADDING = re.compile(rb"\[PAD[0-9]+\]")


def _gpt2_byte_symbols() -> dict[int, int]:
    """GPT-2's ``bytes_to_unicode``: byte -> the code point that stands for it."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {byte: byte for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = 0x100 + extra
            extra += 1
    return table


_BYTE_SYMBOLS = _gpt2_byte_symbols()
_BYTE_SYMBOL_CHARS = frozenset(chr(code) for code in _BYTE_SYMBOLS.values())
# Stand-in code point -> its byte, as an array over code points 0..0x143 (the last stand-in), -1
# where a code point stands for no byte; larger code points are clipped onto the extra last entry.
_BYTE_OF_CODE = np.full(max(_BYTE_SYMBOLS.values()) + 2, -1, dtype=np.int16)
_BYTE_OF_CODE[list(_BYTE_SYMBOLS.values())] = list(_BYTE_SYMBOLS)


def _utf8(text: str) -> bytes:
    # JSON may hold lone surrogates; keep them rather than fail on a single odd token.
    return text.encode("utf-8", "surrogatepass")


def _from_byte_level(texts: list[str]) -> list[bytes | None]:
    """The bytes GPT-2 byte-level tokens stand for; None for a text that is not byte-level encoded.

    Vectorized over all texts at once (150,000 tokens in ~20 ms).
    """
    if not texts:
        return []
    codes = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4")
    mapped = _BYTE_OF_CODE[np.minimum(codes, len(_BYTE_OF_CODE) - 1)]
    whole = mapped.astype(np.uint8).tobytes()
    ends = list(accumulate(map(len, texts)))
    starts = [0, *ends[:-1]]
    bad = mapped < 0
    if not bad.any():
        return [whole[start:end] for start, end in zip(starts, ends, strict=True)]
    bad_before = np.concatenate(([0], np.cumsum(bad))).tolist()
    return [
        None if bad_before[end] > bad_before[start] else whole[start:end]
        for start, end in zip(starts, ends, strict=True)
    ]


def _normal_texts(texts: list[str], model: str, byte_fallback: bool = False) -> list[bytes]:
    """Ordinary (non-special) tokens' bytes under ``model``'s spelling."""
    if model == BYTE_BPE:
        decoded = _from_byte_level(texts)
        return [_utf8(text) if raw is None else raw for text, raw in zip(texts, decoded, strict=True)]
    out = [_utf8(text) for text in texts]
    if model != SPM:
        return out
    for index, raw in enumerate(out):
        match = _BYTE_PIECE.fullmatch(raw) if byte_fallback else None
        out[index] = bytes([int(match.group(1), 16)]) if match else raw.replace(_SPACE_MARK_BYTES, b" ")
    return out


def _normal_raws(raws: list[bytes], model: str) -> list[bytes]:
    """As `_normal_texts` for tokens stored as bytes (GGUF); undecodable bytes are kept as they are."""
    if model == SPM:
        return [raw.replace(_SPACE_MARK_BYTES, b" ") for raw in raws]
    if model != BYTE_BPE:
        return raws
    # surrogateescape: invalid UTF-8 survives as lone surrogates, which no stand-in matches.
    decoded = _from_byte_level([raw.decode("utf-8", "surrogateescape") for raw in raws])
    return [raw if value is None else value for raw, value in zip(raws, decoded, strict=True)]


def _byte_piece(raw: bytes, what: str, source: str) -> bytes:
    match = _BYTE_PIECE.fullmatch(raw)
    if match is None:
        raise CorruptCheckpointError(
            f"{source}: {what} is typed BYTE but reads {sanitize(raw.decode('utf-8', 'replace'), 40)!r}, "
            "not <0xNN>"
        )
    return bytes([int(match.group(1), 16)])


def _guess_model(texts: list[str]) -> str:
    """The spelling of a vocabulary that does not say it: ``▁`` marks SentencePiece, stand-ins GPT-2."""
    if not texts:
        return OTHER
    if sum(_SPACE_MARK in text for text in texts) * 20 >= len(texts):
        return SPM
    decoded = _from_byte_level(texts)
    byte_level = sum(value is not None for value in decoded)
    stand_ins = sum(
        value is not None and any(ord(ch) >= 0x100 for ch in text)
        for text, value in zip(texts, decoded, strict=True)
    )
    if byte_level * 100 >= len(texts) * 99 and stand_ins * 100 >= len(texts):
        return BYTE_BPE
    return OTHER


def _split_merges(rules: list[str], source: str, first_line: int = 0) -> list[str]:
    """Merge rules ``"a b"`` as one flat list ``[a, b, a, b, ...]``.

    As llama.cpp and tokenizers read a rule, the first space after its first character splits it.
    """
    joined = "\n".join(rules)
    one_space_each = list(map(str.count, rules, repeat(" "))).count(1) == len(rules)
    if one_space_each and joined.count("\n") == len(rules) - 1:  # the common case, split at C speed
        flat = joined.replace("\n", " ").split(" ")
        if "" not in flat[0::2]:
            return flat
    flat = []
    for index, rule in enumerate(rules):
        position = rule.find(" ", 1)
        if position < 0:
            raise CorruptCheckpointError(
                f"{source}: merge rule {index + first_line} has no space between its two parts"
            )
        flat += (rule[:position], rule[position + 1 :])
    return flat


def _check_merge_count(count: int, source: str) -> None:
    """Each merge makes one token: more merges than `MAX_VOCABULARY` ids is no real tokenizer (and
    normalizing them costs a few hundred bytes each)."""
    if count > MAX_VOCABULARY:
        raise ResourceLimitError(f"{source}: {count} merge rules, over the limit of {MAX_VOCABULARY}")


def _normal_merges(
    flat: list[str], model: str, byte_fallback: bool = False
) -> tuple[tuple[bytes, bytes], ...]:
    parts = _normal_texts(flat, model, byte_fallback)
    return tuple(zip(parts[0::2], parts[1::2], strict=True))


def _check_id(value: object, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CorruptCheckpointError(
            f"{source}: {what} has id {sanitize(repr(value), 40)}, not an integer >= 0"
        )
    if value >= MAX_VOCABULARY:
        raise ResourceLimitError(f"{source}: {what} has id {value}, over the limit of {MAX_VOCABULARY} ids")
    return value


def _table(entries: Mapping[int, bytes]) -> tuple[bytes | None, ...]:
    if not entries:
        return ()
    table: list[bytes | None] = [None] * (max(entries) + 1)
    for index, token in entries.items():
        table[index] = token
    return tuple(table)


# -- SentencePiece and llama2.c (binary) -----------------------------------------------------------

_SPM_NORMAL, _SPM_UNKNOWN, _SPM_CONTROL, _SPM_USER_DEFINED, _SPM_UNUSED, _SPM_BYTE = 1, 2, 3, 4, 5, 6
_SPECIAL_TYPES = frozenset({_SPM_UNKNOWN, _SPM_CONTROL, _SPM_UNUSED})


def _read_binary(path: Path) -> Vocabulary:
    data = read_capped(path)
    source = sanitize(path.name)
    # Meta's Llama 3 ships its tiktoken rank file under the SentencePiece name tokenizer.model.
    if TIKTOKEN_LINE.fullmatch(data.split(b"\n", 1)[0].removesuffix(b"\r")):
        if len(data) > MAX_LINE_TOKENIZER_BYTES:
            raise ResourceLimitError(
                f"{source}: a tiktoken rank file of {len(data)} bytes, over the {MAX_LINE_TOKENIZER_BYTES}-byte limit"
            )
        return _tiktoken_from_lines(_lines(data), source)
    try:
        return _sentencepiece(data, source)
    except Malformed as protobuf_problem:
        if not looks_like_llama2c_tokenizer(data):
            raise CorruptCheckpointError(
                f"{source}: neither a SentencePiece model ({protobuf_problem}) nor a llama2.c tokenizer"
            ) from None
    return _llama2c(data, source)


def _sentencepiece(data: bytes, source: str) -> Vocabulary:
    """ModelProto: field 1 repeated SentencePiece {1 piece, 2 score, 3 type}, field 2 TrainerSpec."""
    tokens: list[bytes | None] = []
    special: set[int] = set()
    model_type = 1
    for number, wire, start, end in protobuf_fields(data):
        if number == 1 and wire == 2:
            piece, piece_type = _sentencepiece_piece(data[start:end], len(tokens), source)
            if piece_type in _SPECIAL_TYPES:
                special.add(len(tokens))
            elif piece_type == _SPM_BYTE:
                piece = _byte_piece(piece, f"piece {len(tokens)}", source)
            else:
                piece = piece.replace(_SPACE_MARK_BYTES, b" ")
            tokens.append(piece)
            if len(tokens) > MAX_VOCABULARY:
                raise ResourceLimitError(f"{source}: more than {MAX_VOCABULARY} pieces")
        elif number == 2 and wire == 2:
            model_type = trainer_model_type(data[start:end], model_type)
    if not tokens:
        raise Malformed("no pieces")
    kind = SENTENCEPIECE_KINDS.get(model_type)
    if kind is None:
        raise CorruptCheckpointError(f"{source}: unknown SentencePiece model type {model_type}")
    return Vocabulary(tuple(tokens), frozenset(special), None, kind, SPM, source)


def _sentencepiece_piece(message: bytes, index: int, source: str) -> tuple[bytes, int]:
    piece = b""
    piece_type = _SPM_NORMAL
    for number, wire, start, end in protobuf_fields(message):
        if number == 1 and wire == 2:
            piece = message[start:end]
        elif number == 3 and wire == 0:
            piece_type = start  # a varint field carries its value where others carry a start
    if not _SPM_NORMAL <= piece_type <= _SPM_BYTE:
        raise CorruptCheckpointError(f"{source}: piece {index} has unknown type {piece_type}")
    return piece, piece_type


_LLAMA2C_SPECIAL = {
    b"<unk>": b"<unk>",
    b"\n<s>\n": b"<s>",
    b"\n</s>\n": b"</s>",
    b"<s>": b"<s>",
    b"</s>": b"</s>",
}


def _llama2c(data: bytes, source: str) -> Vocabulary:
    """llama2.c layout: int32 max_token_length, then per token float32 score, int32 length, bytes.

    llama2.c's export already turned ``▁`` into spaces; it writes BOS and EOS as ``"\\n<s>\\n"`` and
    ``"\\n</s>\\n"``, read back here as ``<s>`` and ``</s>`` (special, like ``<unk>``).
    """
    (max_token_length,) = struct.unpack_from("<i", data, 0)
    tokens: list[bytes | None] = []
    special: set[int] = set()
    position = 4
    unpack_length = struct.Struct("<i").unpack_from
    while position < len(data):
        index = len(tokens)
        if position + 8 > len(data):
            raise CorruptCheckpointError(f"{source}: ends inside the record of token {index}")
        (length,) = unpack_length(data, position + 4)
        if not 0 <= length <= max_token_length:
            raise CorruptCheckpointError(
                f"{source}: token {index} claims {length} bytes (the maximum is {max_token_length})"
            )
        start = position + 8
        position = start + length
        if position > len(data):
            raise CorruptCheckpointError(f"{source}: ends inside the bytes of token {index}")
        raw = data[start:position]
        if index < 3 and raw in _LLAMA2C_SPECIAL:
            special.add(index)
            tokens.append(_LLAMA2C_SPECIAL[raw])
            continue
        match = _BYTE_PIECE.fullmatch(raw)
        tokens.append(bytes([int(match.group(1), 16)]) if match else raw)
    if not tokens:
        raise CorruptCheckpointError(f"{source}: no tokens")
    return Vocabulary(tuple(tokens), frozenset(special), None, "llama2c", SPM, source)


# -- line formats ----------------------------------------------------------------------------------


def _lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


def _read_tiktoken(path: Path) -> Vocabulary:
    return _tiktoken_from_lines(text_lines(path), sanitize(path.name))


def _tiktoken_from_lines(lines: list[bytes], source: str) -> Vocabulary:
    entries: dict[int, bytes] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not TIKTOKEN_LINE.fullmatch(line):
            raise CorruptCheckpointError(f"{source}: line {number} is not a 'base64 rank' pair")
        encoded, rank_text = line.split(b" ")
        try:
            token = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise CorruptCheckpointError(f"{source}: line {number} holds invalid base64") from None
        rank = _check_id(int(rank_text), f"line {number}", source)
        if rank in entries:
            raise CorruptCheckpointError(f"{source}: rank {rank} appears twice (line {number})")
        entries[rank] = token
    if not entries:
        raise CorruptCheckpointError(f"{source}: no ranks")
    return Vocabulary(_table(entries), frozenset(), None, "tiktoken", BYTE_BPE, source)


def _read_wordpiece_txt(path: Path) -> Vocabulary:
    source = sanitize(path.name)
    lines = text_lines(path)
    check_wordpiece_lines(path, lines)
    if len(lines) > MAX_VOCABULARY:
        raise ResourceLimitError(f"{source}: more than {MAX_VOCABULARY} tokens")
    tokens: list[bytes | None] = []
    special: set[int] = set()
    for index, line in enumerate(lines):
        text = line.decode("utf-8", "replace")
        if _WORDPIECE_SPECIAL.fullmatch(text):
            special.add(index)
        tokens.append(line)
    return Vocabulary(tuple(tokens), frozenset(special), None, "wordpiece", WORDPIECE, source)


# -- JSON formats ----------------------------------------------------------------------------------


def _read_json(path: Path) -> Vocabulary:
    data = load_json(path)
    source = sanitize(path.name)
    if not isinstance(data, dict):
        raise UnsupportedFormatError(f"{source}: JSON but not a tokenizer.json or a vocab.json")
    # A GPT-2 vocab holds the token "model" too, mapped to an id rather than an object.
    if isinstance(data.get("model"), dict):
        return _tokenizer_json(data, source)
    return _read_bpe_vocab(path, sibling(path, MERGES_NAMES), data=data)


def _has_step(node: object, predicate: Any, depth: int = 0) -> bool:
    """Whether a pre-tokenizer/decoder/normalizer tree holds a step ``predicate`` accepts."""
    if depth > 32:
        return False
    if isinstance(node, dict):
        if predicate(node):
            return True
        return any(_has_step(value, predicate, depth + 1) for value in node.values())
    if isinstance(node, list):
        return any(_has_step(value, predicate, depth + 1) for value in node)
    return False


def _is_type(name: str) -> Any:
    return lambda step: step.get("type") == name


def _replaces_space_mark(step: dict[str, Any]) -> bool:
    """A Replace step between ``▁`` and a space, either way (Llama 2's decoder and normalizer)."""
    if step.get("type") != "Replace":
        return False
    pattern = step.get("pattern")
    needle = pattern.get("String") if isinstance(pattern, dict) else None
    return {needle, step.get("content")} == {_SPACE_MARK, " "}


def _tokenizer_json_model(data: Mapping[str, Any], kind: str) -> str:
    steps = [data.get("pre_tokenizer"), data.get("decoder")]
    if kind == "wordpiece":
        return WORDPIECE
    if _has_step(steps, _is_type("ByteLevel")):
        return BYTE_BPE
    if _has_step(steps, _is_type("Metaspace")) or _has_step(
        [*steps, data.get("normalizer")], _replaces_space_mark
    ):
        return SPM
    return OTHER


def _tokenizer_json(data: dict[str, Any], source: str) -> Vocabulary:
    model_spec = data["model"]
    vocab = model_spec.get("vocab")
    if isinstance(vocab, dict):
        pairs: list[tuple[int, str]] = []
        for text, token_id in vocab.items():
            pairs.append((_check_id(token_id, f"model.vocab entry {sanitize(text, 40)!r}", source), text))
    elif isinstance(vocab, list):
        pairs = []
        for index, entry in enumerate(vocab):
            if not isinstance(entry, list | tuple) or not entry or not isinstance(entry[0], str):
                raise CorruptCheckpointError(
                    f"{source}: model.vocab entry {index} is not a [piece, score] pair"
                )
            pairs.append((_check_id(index, f"model.vocab entry {index}", source), entry[0]))
    else:
        raise CorruptCheckpointError(f"{source}: model.vocab is neither a mapping nor a list")
    model_type = model_spec.get("type") or guess_model_type(model_spec, vocab)
    kind = TOKENIZER_JSON_KINDS.get(model_type) if isinstance(model_type, str) else None
    if kind is None:
        raise UnsupportedFormatError(
            f"{source}: unknown tokenizer model type {sanitize(str(model_type), 40)!r}"
        )
    model = _tokenizer_json_model(data, kind)
    byte_fallback = model == SPM and (
        model_spec.get("byte_fallback") is True or _has_step(data.get("decoder"), _is_type("ByteFallback"))
    )

    entries = _entries(pairs, model, source, byte_fallback)
    ids_of = {text: token_id for token_id, text in pairs}
    special: set[int] = set()
    unk = model_spec.get("unk_token")
    if isinstance(unk, str) and unk in ids_of:
        special.add(ids_of[unk])
    if model == WORDPIECE:
        special.update(ids_of[text] for text in ids_of if _WORDPIECE_SPECIAL.fullmatch(text))
    _apply_added_tokens(data.get("added_tokens"), entries, special, model, source)
    merges = _tokenizer_json_merges(model_spec.get("merges"), model, byte_fallback, source)
    return Vocabulary(
        _table(entries), frozenset(special), merges if kind == "bpe" else None, kind, model, source
    )


def _apply_added_tokens(
    added: object, entries: dict[int, bytes], special: set[int], model: str, source: str
) -> None:
    """Added tokens are matched in raw text: their content is what they stand for, unencoded."""
    if added is None:
        return
    if not isinstance(added, list):
        raise CorruptCheckpointError(f"{source}: added_tokens is not a list")
    for index, entry in enumerate(added):
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise CorruptCheckpointError(f"{source}: added_tokens[{index}] has no content string")
        token_id = _check_id(entry.get("id"), f"added_tokens[{index}]", source)
        content: str = entry["content"]
        if entry.get("special") is True:
            special.add(token_id)
            entries[token_id] = _utf8(content)
        else:
            entries[token_id] = _utf8(content.replace(_SPACE_MARK, " ") if model == SPM else content)


def _tokenizer_json_merges(
    merges: object, model: str, byte_fallback: bool, source: str
) -> tuple[tuple[bytes, bytes], ...] | None:
    if merges is None:
        return None
    if not isinstance(merges, list):
        raise CorruptCheckpointError(f"{source}: model.merges is not a list")
    _check_merge_count(len(merges), source)
    if all(isinstance(rule, str) for rule in merges):
        return _normal_merges(_split_merges(merges, source), model, byte_fallback)
    flat: list[str] = []
    for index, rule in enumerate(merges):
        if isinstance(rule, str):
            flat += _split_merges([rule], source, index)
        elif isinstance(rule, list) and len(rule) == 2 and all(isinstance(part, str) for part in rule):
            flat += rule
        else:
            raise CorruptCheckpointError(f"{source}: merge rule {index} is neither 'a b' nor [a, b]")
    return _normal_merges(flat, model, byte_fallback)


def _entries(
    pairs: list[tuple[int, str]], model: str, source: str, byte_fallback: bool = False
) -> dict[int, bytes]:
    entries = dict(
        zip(
            (token_id for token_id, _ in pairs),
            _normal_texts([text for _, text in pairs], model, byte_fallback),
            strict=True,
        )
    )
    if len(entries) != len(pairs):
        seen: set[int] = set()
        for token_id, _ in pairs:
            if token_id in seen:
                raise CorruptCheckpointError(f"{source}: id {token_id} is given to two tokens")
            seen.add(token_id)
    return entries


def _read_bpe_vocab(vocab_path: Path, merges_path: Path | None, *, data: Any = None) -> Vocabulary:
    """GPT-2's ``vocab.json``/``encoder.json`` (token -> id) with ``merges.txt``/``vocab.bpe``."""
    source = sanitize(vocab_path.name)
    vocab = load_json(vocab_path) if data is None else data
    if not isinstance(vocab, dict) or not vocab:
        raise UnsupportedFormatError(f"{source}: not a BPE vocab (a mapping of tokens to ids)")
    pairs = [
        (_check_id(token_id, f"token {sanitize(text, 40)!r}", source), text)
        for text, token_id in vocab.items()
    ]
    model = _guess_model(list(vocab))
    flat = _read_merges_file(merges_path) if merges_path is not None else None
    entries = _entries(pairs, model, source)
    special: set[int] = set()
    if flat is not None and model == BYTE_BPE:
        # A byte-level BPE reaches only its 256 byte symbols and what merges build from them:
        # any other entry (<|endoftext|>) is a token added beside the BPE.
        reachable = set(map(str.__add__, flat[0::2], flat[1::2])) | _BYTE_SYMBOL_CHARS
        special = {token_id for token_id, text in pairs if text not in reachable}
    merges = _normal_merges(flat, model) if flat is not None else None
    return Vocabulary(_table(entries), frozenset(special), merges, "bpe", model, source)


def _read_merges_file(path: Path) -> list[str]:
    source = sanitize(path.name)
    lines = text_lines(path)
    # The first line of a GPT-2 style merges file is a "#version: 0.2" comment.
    first = 1 if lines and lines[0].startswith(b"#version") else 0
    _check_merge_count(len(lines) - first, source)
    rules = [line for line in lines[first:] if line.strip()]
    try:
        texts = b"\n".join(rules).decode("utf-8").split("\n") if rules else []
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(f"{source}: not UTF-8 ({sanitize(str(exc), 80)})") from None
    return _split_merges(texts, source, first)


# -- GGUF ------------------------------------------------------------------------------------------

_GGUF_MODELS = {"llama": SPM, "t5": SPM, "gpt2": BYTE_BPE, "bert": WORDPIECE}
_GGUF_UNDEFINED = 0
_U64 = struct.Struct("<Q")


def _read_gguf(path: Path) -> Vocabulary:
    from ..formats.gguf import read_gguf, tokenizer_fields

    kv = tokenizer_fields(read_gguf(path))
    source = sanitize(path.name)
    if kv is None:
        raise UnsupportedFormatError(f"{source}: the GGUF file holds no tokenizer (no tokenizer.ggml.model)")
    return _from_gguf_kv(kv, source)


def _from_gguf_kv(kv: Mapping[str, Any], source: str) -> Vocabulary:
    name = kv["tokenizer.ggml.model"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise CorruptCheckpointError(
            f"{source}: GGUF tokenizer.ggml.model is {sanitize(str(name), 40)!r}, not a model name"
        )
    if "tokenizer.ggml.tokens" not in kv:
        raise CorruptCheckpointError(f"{source}: GGUF has no tokenizer.ggml.tokens array")
    raw_tokens = _gguf_strings(kv["tokenizer.ggml.tokens"], "tokenizer.ggml.tokens", source)
    if len(raw_tokens) > MAX_VOCABULARY:
        raise ResourceLimitError(f"{source}: {len(raw_tokens)} tokens, over the limit of {MAX_VOCABULARY}")
    types = _gguf_types(kv.get("tokenizer.ggml.token_type"), len(raw_tokens), source)
    model = _GGUF_MODELS.get(name)
    ordinary: list[int] = np.flatnonzero(types <= _SPM_NORMAL).tolist()  # NORMAL, or UNDEFINED (0)
    if model is None:
        model = _guess_model([raw_tokens[index].decode("utf-8", "replace") for index in ordinary])

    tokens: list[bytes | None] = list(raw_tokens)
    special: set[int] = set(np.flatnonzero(np.isin(types, list(_SPECIAL_TYPES))).tolist())
    for index in np.flatnonzero(types == _SPM_BYTE).tolist():
        tokens[index] = _byte_piece(raw_tokens[index], f"token {index}", source)
    if model == SPM:
        # llama.cpp stores added tokens as their raw text (never byte-level encoded).
        for index in np.flatnonzero(types == _SPM_USER_DEFINED).tolist():
            tokens[index] = raw_tokens[index].replace(_SPACE_MARK_BYTES, b" ")
    # The [PADn] fillers llama.cpp's converter writes for ids the tokenizer leaves empty.
    special.update(
        index
        for index, raw in enumerate(raw_tokens)
        if raw.startswith(b"[PAD") and _GGUF_PADDING.fullmatch(raw)
    )
    ordinary_raw = [raw_tokens[index] for index in ordinary]
    if model == WORDPIECE:
        normal = [_from_phantom_space(raw) for raw in ordinary_raw]
        special.update(
            index
            for index, raw in zip(ordinary, ordinary_raw, strict=True)
            if _WORDPIECE_SPECIAL.fullmatch(raw.decode("utf-8", "replace"))
        )
    else:
        normal = _normal_raws(ordinary_raw, model)
    for index, value in zip(ordinary, normal, strict=True):
        tokens[index] = value

    merges_value = kv.get("tokenizer.ggml.merges")
    merges = None
    if merges_value is not None:
        raws = _gguf_strings(merges_value, "tokenizer.ggml.merges", source)
        rules = b"\n".join(raws).decode("utf-8", "replace").split("\n") if raws else []
        if len(rules) != len(raws):  # a rule holding a newline (SentencePiece-style merges)
            rules = [raw.decode("utf-8", "replace") for raw in raws]
        merges = _normal_merges(_split_merges(rules, source), model)
    return Vocabulary(tuple(tokens), frozenset(special), merges, f"gguf-{name}", model, source)


def _from_phantom_space(raw: bytes) -> bytes:
    """Undo llama.cpp's BERT conversion: ``▁word`` was ``word``, ``ing`` was ``##ing``, ``[X]`` kept."""
    if raw.startswith(_SPACE_MARK_BYTES):
        return raw[len(_SPACE_MARK_BYTES) :]
    if raw.startswith(b"[") and raw.endswith(b"]"):
        return raw
    return b"##" + raw


def _gguf_strings(value: object, key: str, source: str) -> list[bytes]:
    """A GGUF string array as raw bytes. Long arrays are lazy handles: read and split them here."""
    from ..formats.gguf import GGUFArray

    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise CorruptCheckpointError(f"{source}: GGUF {key} is not an array of strings")
        # Short arrays were decoded when the file was opened (invalid UTF-8 already replaced).
        return [item.encode("utf-8", "surrogatepass") for item in value]
    if not isinstance(value, GGUFArray) or value.element_type != "string":
        raise CorruptCheckpointError(f"{source}: GGUF {key} is not an array of strings")
    if value.nbytes > MAX_TOKENIZER_BYTES:
        raise ResourceLimitError(
            f"{source}: GGUF {key} takes {value.nbytes} bytes, over the {MAX_TOKENIZER_BYTES}-byte tokenizer limit"
        )
    try:
        with value.file.open("rb") as handle:
            handle.seek(value.offset)
            data = handle.read(value.nbytes)
    except OSError as exc:
        raise PathNotFoundError(
            f"{source}: cannot read ({sanitize(exc.strerror or type(exc).__name__)})"
        ) from None
    return _split_gguf_strings(data, value.count, key, source)


def _split_gguf_strings(data: bytes, count: int, key: str, source: str) -> list[bytes]:
    out: list[bytes] = []
    append, unpack, size, position = out.append, _U64.unpack_from, len(data), 0
    for index in range(count):
        if position + 8 > size:
            raise CorruptCheckpointError(f"{source}: GGUF {key} element {index} runs past the array")
        (length,) = unpack(data, position)
        position += 8
        end = position + length
        if end > size:
            raise CorruptCheckpointError(f"{source}: GGUF {key} element {index} runs past the array")
        append(data[position:end])
        position = end
    return out


def _gguf_types(value: object, count: int, source: str) -> np.ndarray:
    if value is None:
        return np.full(count, _SPM_NORMAL, dtype=np.int64)
    from ..formats.gguf import GGUFArray

    if isinstance(value, GGUFArray) and value.element_type not in ("string", "float32", "float64", "bool"):
        types = np.asarray(value.decode(), dtype=np.int64)
    elif isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        types = np.array(value, dtype=np.int64)
    else:
        raise CorruptCheckpointError(f"{source}: GGUF tokenizer.ggml.token_type is not an integer array")
    if len(types) != count:
        raise CorruptCheckpointError(f"{source}: GGUF has {count} tokens but {len(types)} token types")
    outside = types[(types < _GGUF_UNDEFINED) | (types > _SPM_BYTE)]
    if len(outside):
        raise CorruptCheckpointError(f"{source}: GGUF token type {outside[0]} is not one llama.cpp defines")
    return types
