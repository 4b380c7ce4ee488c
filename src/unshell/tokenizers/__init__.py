"""Tokenizer files: what kind of tokenizer a checkpoint carries, read without tokenizer libraries."""

from __future__ import annotations

from .describe import TokenizerInfo, describe_gguf_tokenizer, describe_tokenizer, describe_tokenizer_file

__all__ = ["TokenizerInfo", "describe_gguf_tokenizer", "describe_tokenizer", "describe_tokenizer_file"]
