"""How two tokenizers relate: identical, extended, shifted, renumbered, pruned, or independent.

Tokens are compared as normalized bytes (`unshell.tokenizers.vocab`), so the same vocabulary in
SentencePiece, ``tokenizer.json``, tiktoken or GGUF form compares equal. Ids matter: a model's
embedding rows are indexed by them, so a tokenizer that keeps every id of another can carry that
model's weights, while one that merely shares many pieces cannot.

The relations, from A (the reference) to B (the suspect):

* ``identical``: every id holds the same token (special tokens may be renamed in place, counted
  in ``special_renamed``: chat models repurpose reserved slots);
* ``extension``: B keeps all of A's ids and adds more;
* ``shifted-extension``: all of A is in B at one constant id offset (tokens inserted in front);
* ``subset``: A keeps all of B's ids (B is A truncated);
* ``pruned``: B's tokens are nearly all A's, at other ids (a vocabulary cut and compacted);
* ``renumbered``: the two hold nearly the same tokens at different ids;
* ``common-prefix``: both start with the same long run of ids, then diverge (two extensions of
  one base, such as two tokenizers grown from the same BPE ranks);
* ``independent``: none of the above.

Thresholds are fractions of ordinary (non-special) tokens. Independently trained tokenizers
share many pieces (common words, and the 256 byte pieces every byte-fallback or byte-level BPE
holds in the same place), so the set relations demand near-totality: measured on real pairs
(Llama-2, Mistral, OpenLLaMA and Baichuan, all 32,000-64,000-piece SentencePiece BPEs trained
on web text), independent tokenizers keep at most a few hundred ids and share well under 90% of
their pieces, while every derived pair in the tests keeps over 99.9%.
"""

from __future__ import annotations

import bisect
import functools
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .vocab import Vocabulary

__all__ = ["MergeAgreement", "TokenizerRelation", "merge_agreement", "relate"]

# An id-preserving relation (identical, extension, subset) tolerates this fraction of changed
# ordinary tokens: a handful of normalizations differ between formats (a stray control character
# kept as text in one export and flagged special in another).
KEPT = 0.999
# Sharing this fraction of the pieces (of both vocabularies for renumbering, of the smaller one
# for pruning, which must also keep A's order) without keeping ids. Independent tokenizers share
# up to 0.95 of the smaller one's pieces (OpenLLaMA in Falcon's), but never both ways.
SHARED = 0.95
# A common prefix must hold this fraction of the smaller vocabulary's multi-byte tokens.
PREFIX = 0.5


@dataclass(frozen=True)
class MergeAgreement:
    """How far two BPE merge lists agree: as sets, and in rank order."""

    merges_a: int
    merges_b: int
    shared: int
    common_prefix: int  # leading ranks that are the same merge on both sides

    @property
    def shared_fraction(self) -> float:
        smaller = min(self.merges_a, self.merges_b)
        return self.shared / smaller if smaller else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "merges_a": self.merges_a,
            "merges_b": self.merges_b,
            "shared": self.shared,
            "shared_fraction": round(self.shared_fraction, 6),
            "common_prefix": self.common_prefix,
        }


@dataclass(frozen=True)
class TokenizerRelation:
    """The relation of tokenizer B to tokenizer A, with the counts it rests on."""

    relation: str
    reason: str
    size_a: int
    size_b: int
    ordinary_a: int
    ordinary_b: int
    shared: int  # A's ordinary tokens found anywhere in B
    same_id: int  # A's ordinary tokens found at the same id in B
    offset: int | None  # the most common id shift of shared tokens, when not 0
    offset_count: int
    common_prefix: int  # leading ids that hold the same token on both sides
    special_renamed: int
    merges: MergeAgreement | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "relation": self.relation,
            "reason": self.reason,
            "size_a": self.size_a,
            "size_b": self.size_b,
            "ordinary_a": self.ordinary_a,
            "ordinary_b": self.ordinary_b,
            "shared": self.shared,
            "same_id": self.same_id,
            "offset": self.offset,
            "offset_count": self.offset_count,
            "common_prefix": self.common_prefix,
            "special_renamed": self.special_renamed,
            "merges": None if self.merges is None else self.merges.to_dict(),
        }


@functools.lru_cache(maxsize=64)
def _prepared(vocabulary: Vocabulary) -> tuple[dict[int, bytes], dict[bytes, int], int]:
    """Ordinary tokens by id and by content, and how many are multi-byte: built once per
    vocabulary (one suspect is compared with many)."""
    ordinary = _ordinary(vocabulary)
    return ordinary, _positions(ordinary), sum(1 for token in ordinary.values() if len(token) > 1)


@functools.lru_cache(maxsize=64)
def _merge_set(vocabulary: Vocabulary) -> frozenset[tuple[bytes, bytes]]:
    return frozenset(vocabulary.merges or ())


def _ordinary(vocabulary: Vocabulary) -> dict[int, bytes]:
    special = vocabulary.special
    return {i: t for i, t in enumerate(vocabulary.tokens) if t is not None and i not in special}


def _positions(ordinary: dict[int, bytes]) -> dict[bytes, int]:
    """Token -> its lowest id (a vocabulary may hold one byte string twice after normalization)."""
    where: dict[bytes, int] = {}
    for index in sorted(ordinary, reverse=True):
        where[ordinary[index]] = index
    return where


def _common_prefix(a: Vocabulary, b: Vocabulary) -> tuple[int, int]:
    """(leading ids that agree, how many of them hold multi-byte tokens).

    Single bytes are left out of the second count: every byte-fallback SentencePiece model puts
    its control tokens and the 256 byte pieces first, in the same order, trained or not.
    """
    count = multi = 0
    for index, (x, y) in enumerate(zip(a.tokens, b.tokens, strict=False)):
        special = index in a.special and index in b.special
        if x != y and not special:
            break
        count += 1
        if not special and x is not None and len(x) > 1:
            multi += 1
    return count, multi


def _monotone_fraction(pairs: list[tuple[int, int]]) -> float:
    """The share of (id in A, id in B) pairs on the longest run that keeps A's order in B.

    A vocabulary cut down and compacted keeps its tokens in order (1.0); independently trained
    vocabularies order shared pieces only loosely by frequency.
    """
    if not pairs:
        return 0.0
    tails: list[int] = []
    for _, target in sorted(pairs):
        position = bisect.bisect_left(tails, target)
        if position == len(tails):
            tails.append(target)
        else:
            tails[position] = target
    return len(tails) / len(pairs)


def merge_agreement(a: Vocabulary, b: Vocabulary) -> MergeAgreement | None:
    if not a.merges or not b.merges:
        return None
    prefix = 0
    for x, y in zip(a.merges, b.merges, strict=False):
        if x != y:
            break
        prefix += 1
    shared = len(_merge_set(a) & _merge_set(b))
    return MergeAgreement(len(a.merges), len(b.merges), shared, prefix)


def relate(a: Vocabulary, b: Vocabulary) -> TokenizerRelation:
    """The relation of B to A (A is the reference, B the suspect)."""
    ordinary_a, where_a, multi_a = _prepared(a)
    ordinary_b, where_b, multi_b = _prepared(b)
    common = where_a.keys() & where_b.keys()
    shared = len(common)
    # (id, token) pairs on both sides: A's tokens at their id in B, equally B's at their id in A.
    same_id = b_in_a_same_id = len(ordinary_a.items() & ordinary_b.items())
    shifts = Counter(where_b[token] - where_a[token] for token in common)
    offset, offset_count = next(((s, c) for s, c in shifts.most_common(2) if s != 0), (None, 0))
    prefix, prefix_multi = _common_prefix(a, b)
    special_renamed = sum(
        1
        for index in a.special & b.special
        if index < len(a.tokens) and index < len(b.tokens) and a.tokens[index] != b.tokens[index]
    )
    n_a, n_b = len(ordinary_a), len(ordinary_b)
    multi = min(multi_a, multi_b)

    def made(relation: str, reason: str) -> TokenizerRelation:
        return TokenizerRelation(
            relation=relation,
            reason=reason,
            size_a=len(a.tokens),
            size_b=len(b.tokens),
            ordinary_a=n_a,
            ordinary_b=n_b,
            shared=shared,
            same_id=same_id,
            offset=offset,
            offset_count=offset_count,
            common_prefix=prefix,
            special_renamed=special_renamed,
            merges=merge_agreement(a, b),
        )

    if n_a == 0 or n_b == 0:
        return made("independent", "one side has no ordinary tokens to compare")
    keeps_a = same_id >= KEPT * n_a
    keeps_b = b_in_a_same_id >= KEPT * n_b
    if keeps_a and keeps_b and len(a.tokens) == len(b.tokens):
        renamed = f"; {special_renamed} special tokens renamed in place" if special_renamed else ""
        return made("identical", f"all {n_a:,} ordinary tokens keep their ids{renamed}")
    if keeps_a and len(b.tokens) >= len(a.tokens):
        added = len(b.tokens) - len(a.tokens)
        filled = sum(
            1
            for index in ordinary_b
            if index < len(a.tokens) and (index in a.special or a.tokens[index] is None)
        )
        grew = [f"adds {added:,} ids"] if added else []
        grew += [f"turns {filled:,} of A's reserved ids into tokens"] if filled else []
        return made(
            "extension",
            f"B keeps all {n_a:,} of A's ordinary token ids and {' and '.join(grew) or 'adds none'}",
        )
    if keeps_b and (len(b.tokens) < len(a.tokens) or n_b < n_a):
        more = (
            f"{len(a.tokens) - len(b.tokens):,} more ids"
            if len(a.tokens) > len(b.tokens)
            else f"{n_a - n_b:,} more ordinary tokens"
        )
        return made("subset", f"all {n_b:,} of B's ordinary tokens sit at A's ids; A has {more}")
    # Token-set counts use distinct byte strings: normalization can make two ids one string
    # (SentencePiece's "▁" and its <0x20> byte piece are both b" ").
    distinct_a, distinct_b = len(where_a), len(where_b)
    if offset is not None and offset_count >= KEPT * distinct_a:
        return made(
            "shifted-extension", f"all of A's {n_a:,} ordinary tokens appear in B shifted by {offset:+d} ids"
        )
    if multi and prefix_multi >= PREFIX * multi:
        return made(
            "common-prefix",
            f"the first {prefix:,} ids hold the same tokens, then the vocabularies diverge",
        )
    b_in_a = [(where_a[token], where_b[token]) for token in common]
    if n_b < n_a and len(b_in_a) >= SHARED * distinct_b and _monotone_fraction(b_in_a) >= KEPT:
        return made(
            "pruned", f"{len(b_in_a):,} of B's {n_b:,} ordinary tokens are A's, in A's order at compacted ids"
        )
    if shared >= SHARED * max(distinct_a, distinct_b):
        return made(
            "renumbered", f"{shared:,} of {max(distinct_a, distinct_b):,} tokens are shared, at other ids"
        )
    return made(
        "independent",
        f"{shared:,} of A's {distinct_a:,} distinct tokens appear in B ({shared / max(1, distinct_a):.0%}), "
        f"{same_id:,} at the same id",
    )
