"""Tokenizer sections of `inspect` and `compare`, and their tokenizer-only forms.

`inspect` and `compare` accept a tokenizer on its own (a file or a folder holding one, in any
form `vocab.read_vocabulary` reads, or a vocabulary-only GGUF). For those, only the tokenizer
section is reported: there are no weights to speak of.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    CorruptCheckpointError,
    InputError,
    NotACheckpointError,
    ResourceLimitError,
    UnsupportedFormatError,
)
from ..formats import open_checkpoint
from ..formats.base import Checkpoint, sanitize
from .families import FamilyMatch, match_families
from .relations import TokenizerRelation, relate
from .vocab import Vocabulary, names_a_tokenizer, read_vocabulary, vocabulary_of

__all__ = [
    "TOKENIZER_SCHEMA_VERSION",
    "TokenizerComparison",
    "TokenizerReport",
    "compare_tokenizers",
    "family_section",
    "inspect_tokenizer",
    "open_model_or_tokenizer",
    "vocabulary_summary",
]

TOKENIZER_SCHEMA_VERSION = 1


def vocabulary_summary(vocabulary: Vocabulary) -> dict[str, Any]:
    ordinary = sum(
        1 for i, t in enumerate(vocabulary.tokens) if t is not None and i not in vocabulary.special
    )
    return {
        "kind": vocabulary.kind,
        "model": vocabulary.model,
        "vocab_size": len(vocabulary.tokens),
        "ordinary_tokens": ordinary,
        "special_tokens": len(vocabulary.special),
        "merges": None if vocabulary.merges is None else len(vocabulary.merges),
        "source": vocabulary.source,
    }


def family_section(matches: list[FamilyMatch]) -> dict[str, Any] | None:
    """The best family match, with the others it also keeps (an extension keeps its base)."""
    if not matches:
        return None
    best = matches[0].to_dict()
    best["also_matches"] = [f"{m.family} ({m.relation})" for m in matches[1:]]
    return best


@dataclass(frozen=True)
class TokenizerReport:
    """`inspect` of a tokenizer alone."""

    path: str
    vocabulary: Vocabulary
    families: list[FamilyMatch]

    @property
    def family(self) -> str | None:
        return self.families[0].family if self.families else None

    def to_dict(self, **_: Any) -> dict[str, Any]:
        section = vocabulary_summary(self.vocabulary)
        section["family"] = family_section(self.families)
        return {
            "schema_version": TOKENIZER_SCHEMA_VERSION,
            "kind": "tokenizer",
            "path": sanitize(self.path, limit=4096),
            "tokenizer": section,
        }


@dataclass(frozen=True)
class TokenizerComparison:
    """`compare` of two tokenizers alone: the relation of B's vocabulary to A's."""

    path_a: str
    path_b: str
    vocabulary_a: Vocabulary
    vocabulary_b: Vocabulary
    relation: TokenizerRelation

    @property
    def verdict(self) -> str:
        return self.relation.relation

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": TOKENIZER_SCHEMA_VERSION,
            "kind": "tokenizer-comparison",
            "a": {"path": sanitize(self.path_a, limit=4096), **vocabulary_summary(self.vocabulary_a)},
            "b": {"path": sanitize(self.path_b, limit=4096), **vocabulary_summary(self.vocabulary_b)},
            "tokenizer": self.relation.to_dict(),
        }


def inspect_tokenizer(path: str | os.PathLike[str], vocabulary: Vocabulary | None = None) -> TokenizerReport:
    vocabulary = read_vocabulary(path) if vocabulary is None else vocabulary
    return TokenizerReport(str(Path(path)), vocabulary, match_families(vocabulary))


def compare_tokenizers(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    vocabulary_a: Vocabulary | None = None,
    vocabulary_b: Vocabulary | None = None,
) -> TokenizerComparison:
    vocabulary_a = read_vocabulary(a) if vocabulary_a is None else vocabulary_a
    vocabulary_b = read_vocabulary(b) if vocabulary_b is None else vocabulary_b
    return TokenizerComparison(
        str(Path(a)), str(Path(b)), vocabulary_a, vocabulary_b, relate(vocabulary_a, vocabulary_b)
    )


def open_model_or_tokenizer(path: str | os.PathLike[str]) -> Checkpoint | Vocabulary:
    """An open checkpoint (the caller closes it), or the vocabulary when ``path`` is a tokenizer alone.

    A tokenizer alone is a tokenizer file or a folder of them, or a vocabulary-only GGUF. When
    ``path`` is neither a checkpoint nor a tokenizer, the checkpoint reader's error is raised: it
    says more about what is wrong than "not a tokenizer" would.
    """
    try:
        checkpoint = open_checkpoint(path)
    except (NotACheckpointError, UnsupportedFormatError, CorruptCheckpointError) as error:
        try:
            return read_vocabulary(path)
        except (CorruptCheckpointError, ResourceLimitError) as tokenizer_error:
            # A file named as a tokenizer (or a folder holding one) that is damaged or over a
            # limit: that says more than "not a checkpoint" does.
            if names_a_tokenizer(Path(path)):
                raise tokenizer_error from None
            raise error from None
        except InputError:
            raise error from None
    if not checkpoint.tensors:
        vocabulary = vocabulary_of(checkpoint)
        if vocabulary is not None:
            checkpoint.close()
            return vocabulary
    return checkpoint
