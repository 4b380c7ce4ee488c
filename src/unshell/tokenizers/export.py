"""Hugging Face tokenizer files from a tokenizer a checkpoint carries (`EmbeddedTokenizer`).

`tokenizer_files` builds ``tokenizer.json`` with the ``tokenizers`` library (the ``convert``
extra), plus ``tokenizer_config.json`` (special tokens, whether BOS is added, the chat template),
``special_tokens_map.json`` and ``generation_config.json``, so that a converted model loads with
``AutoTokenizer`` from its folder alone. Two models are rebuilt, as transformers' own converters
build them:

* byte-level BPE (GGUF ``gpt2``): the vocabulary and ranked merges as stored, GPT-2's byte-level
  pre-tokenizer and decoder. How text is split before BPE is not in the pieces: llama.cpp names it
  (``tokenizer.ggml.pre``), and only the splits in `PRE_TOKENIZERS` are rebuilt; any other is
  refused rather than guessed, since a wrong split tokenizes text differently without an error.
* SentencePiece BPE (GGUF ``llama``, llama2.c ``tokenizer.bin``): merges derived from the scores
  (a pair merges when the piece it makes is in the vocabulary; the higher that piece's score, the
  earlier), byte fallback to ``<0xNN>`` pieces, the ``\u2581`` space mark and dummy prefix in the
  normalizer, as transformers' ``LlamaConverter`` writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import MissingDependencyError, UnsupportedFormatError
from ..formats.facts import TOKEN_CONTROL, TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_UNUSED, EmbeddedTokenizer

__all__ = ["PRE_TOKENIZERS", "TokenizerFiles", "tokenizer_files"]

SPACE_MARK = "\u2581"


def _gpt2_split() -> list[Any]:
    from tokenizers import pre_tokenizers

    return [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]


def _smollm_split() -> list[Any]:
    from tokenizers import pre_tokenizers

    # llama.cpp's "smollm": every digit on its own, then GPT-2's split (SmolLM's tokenizer.json).
    return [
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ]


# llama.cpp ``tokenizer.ggml.pre`` -> the pre-tokenizer steps it stands for (byte-level BPE only).
PRE_TOKENIZERS = {"default": _gpt2_split, "gpt-2": _gpt2_split, "gpt2": _gpt2_split, "smollm": _smollm_split}


@dataclass(frozen=True)
class TokenizerFiles:
    """File name -> text for the output folder, and where the tokenizer came from."""

    files: dict[str, str]
    source: str
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None


def tokenizer_files(tokenizer: EmbeddedTokenizer, *, model_max_length: int | None = None) -> TokenizerFiles:
    """The Hugging Face files for ``tokenizer``.

    Raises:
        UnsupportedFormatError: a model or pre-tokenizer this module does not rebuild.
        MissingDependencyError: the ``tokenizers`` library is not installed.
    """
    try:
        from tokenizers import Tokenizer  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "writing a tokenizer.json needs the tokenizers library: pip install 'unshell[convert]'"
        ) from None
    if tokenizer.model == "byte-level-bpe":
        backend = _byte_level_bpe(tokenizer)
    elif tokenizer.model == "sentencepiece-bpe":
        backend = _sentencepiece_bpe(tokenizer)
    else:
        raise UnsupportedFormatError(f"{tokenizer.source}: a {tokenizer.model} tokenizer is not rebuilt")
    _add_special_tokens(backend, tokenizer)
    backend.post_processor = _post_processor(tokenizer)
    names = _special_names(tokenizer)
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **names,
        "add_bos_token": bool(tokenizer.add_bos),
        "add_eos_token": bool(tokenizer.add_eos),
        "clean_up_tokenization_spaces": False,
    }
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    if tokenizer.chat_template:
        config["chat_template"] = tokenizer.chat_template
    files = {
        "tokenizer.json": backend.to_str(pretty=True),
        "tokenizer_config.json": _json(config),
        "special_tokens_map.json": _json(names),
    }
    generation = {
        key: value
        for key, value in (
            ("bos_token_id", tokenizer.bos_id),
            ("eos_token_id", tokenizer.eos_id),
            ("pad_token_id", tokenizer.pad_id),
        )
        if value is not None
    }
    if generation:
        files["generation_config.json"] = _json(generation)
    return TokenizerFiles(files, tokenizer.source, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _vocab(tokenizer: EmbeddedTokenizer) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for index, piece in enumerate(tokenizer.tokens):
        vocab.setdefault(piece, index)  # a repeated piece keeps its first id, as llama.cpp looks it up
    return vocab


def _types(tokenizer: EmbeddedTokenizer) -> tuple[int, ...]:
    return tokenizer.token_types or (TOKEN_NORMAL,) * len(tokenizer.tokens)


def _byte_level_bpe(tokenizer: EmbeddedTokenizer) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    pre = tokenizer.pre_tokenizer or "default"
    split = PRE_TOKENIZERS.get(pre)
    if split is None:
        raise UnsupportedFormatError(
            f"{tokenizer.source}: the pre-tokenizer {pre!r} is not one unshell rebuilds "
            f"({', '.join(sorted(PRE_TOKENIZERS))}); pass --tokenizer with the model's tokenizer.json"
        )
    if tokenizer.merges is None:
        raise UnsupportedFormatError(f"{tokenizer.source}: a byte-level BPE without merges")
    backend = Tokenizer(models.BPE(vocab=_vocab(tokenizer), merges=list(tokenizer.merges), fuse_unk=False))
    steps = split()
    backend.pre_tokenizer = steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)
    backend.decoder = decoders.ByteLevel()
    return backend


def sentencepiece_merges(tokenizer: EmbeddedTokenizer) -> list[tuple[str, str]]:
    """Merges equivalent to SentencePiece BPE's scores: ``(left, right)`` for every split of a
    normal piece into two pieces of the vocabulary, earliest for the highest-scoring result."""
    scores = tokenizer.scores or tuple(-float(index) for index in range(len(tokenizer.tokens)))
    types = _types(tokenizer)
    vocab = {piece: index for index, piece in enumerate(tokenizer.tokens) if types[index] == TOKEN_NORMAL}
    ranked: list[tuple[float, int, int, int, str, str]] = []
    for piece, index in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-scores[index], index, vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _sentencepiece_bpe(tokenizer: EmbeddedTokenizer) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers

    unk = tokenizer.tokens[tokenizer.unk_id] if tokenizer.unk_id is not None else None
    backend = Tokenizer(
        models.BPE(
            vocab=_vocab(tokenizer),
            merges=sentencepiece_merges(tokenizer),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    prefix = tokenizer.add_space_prefix is not False
    steps = [normalizers.Replace(" ", SPACE_MARK)]
    backend.normalizer = (
        normalizers.Sequence([normalizers.Prepend(SPACE_MARK), *steps]) if prefix else steps[0]
    )
    decoding = [decoders.Replace(SPACE_MARK, " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        decoding.append(decoders.Strip(" ", 1, 0))
    backend.decoder = decoders.Sequence(decoding)
    return backend


def _add_special_tokens(backend: Any, tokenizer: EmbeddedTokenizer) -> None:
    """Control, unknown and unused pieces as special added tokens (never split, skipped when
    decoding with ``skip_special_tokens``); user-defined pieces as plain added tokens."""
    from tokenizers import AddedToken

    from ..formats.facts import TOKEN_USER_DEFINED

    special, added = [], []
    for index, kind in enumerate(_types(tokenizer)):
        piece = tokenizer.tokens[index]
        if kind in (TOKEN_CONTROL, TOKEN_UNKNOWN, TOKEN_UNUSED) or index in _special_ids(tokenizer):
            special.append(AddedToken(piece, special=True, normalized=False))
        elif kind == TOKEN_USER_DEFINED:
            added.append(AddedToken(piece, special=False, normalized=False))
    backend.add_special_tokens(special)
    backend.add_tokens(added)


def _special_ids(tokenizer: EmbeddedTokenizer) -> set[int]:
    ids = (tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id, tokenizer.pad_id)
    return {index for index in ids if index is not None}


def _post_processor(tokenizer: EmbeddedTokenizer) -> Any:
    from tokenizers import processors

    steps: list[Any] = []
    if tokenizer.model == "byte-level-bpe":
        steps.append(processors.ByteLevel(trim_offsets=False))
    ends = {}
    if tokenizer.add_bos and tokenizer.bos_id is not None:
        ends["bos"] = (tokenizer.tokens[tokenizer.bos_id], tokenizer.bos_id)
    if tokenizer.add_eos and tokenizer.eos_id is not None:
        ends["eos"] = (tokenizer.tokens[tokenizer.eos_id], tokenizer.eos_id)
    if ends:
        first = [ends["bos"][0]] if "bos" in ends else []
        last = [ends["eos"][0]] if "eos" in ends else []
        single = [*first, "$A", *last]
        pair = [*single, *[f"{t}:1" for t in first], "$B:1", *[f"{t}:1" for t in last]]
        ids = list(dict.fromkeys(ends.values()))
        steps.append(processors.TemplateProcessing(single=single, pair=pair, special_tokens=ids))
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else processors.Sequence(steps)


def _special_names(tokenizer: EmbeddedTokenizer) -> dict[str, str]:
    names = {}
    for key, index in (
        ("bos_token", tokenizer.bos_id),
        ("eos_token", tokenizer.eos_id),
        ("unk_token", tokenizer.unk_id),
        ("pad_token", tokenizer.pad_id),
    ):
        if index is not None:
            names[key] = tokenizer.tokens[index]
    return names
