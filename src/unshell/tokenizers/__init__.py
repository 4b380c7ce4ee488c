"""Tokenizers read without tokenizer libraries: kind and size, whole vocabularies normalized to
bytes, relations between two vocabularies, and the library of known tokenizer families."""

from __future__ import annotations

from .describe import TokenizerInfo, describe_gguf_tokenizer, describe_tokenizer, describe_tokenizer_file
from .families import FamilyMatch, TokenizerFingerprint, known_families, match_families, match_family
from .relations import MergeAgreement, TokenizerRelation, relate
from .report import TokenizerComparison, TokenizerReport, compare_tokenizers, inspect_tokenizer
from .vocab import Vocabulary, read_vocabulary, vocabulary_of

__all__ = [
    "FamilyMatch",
    "MergeAgreement",
    "TokenizerComparison",
    "TokenizerFingerprint",
    "TokenizerInfo",
    "TokenizerRelation",
    "TokenizerReport",
    "Vocabulary",
    "compare_tokenizers",
    "describe_gguf_tokenizer",
    "describe_tokenizer",
    "describe_tokenizer_file",
    "inspect_tokenizer",
    "known_families",
    "match_families",
    "match_family",
    "read_vocabulary",
    "relate",
    "vocabulary_of",
]
