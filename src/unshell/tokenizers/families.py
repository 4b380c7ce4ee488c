"""A library of known tokenizer families, kept as compact fingerprints, and matching against it.

A fingerprint is a content-defined sample of a vocabulary: the ordinary tokens whose 64-bit hash
is divisible by `SAMPLE_MOD`, each kept as (id, 32 other bits of the hash). Because the sample is
chosen by content, the same token is sampled in every vocabulary that holds it, whatever its id,
so a fingerprint answers the questions `relations.relate` answers (are A's ids kept? shifted? is
B a truncation?) on about 1/32 of the tokens, in a few kilobytes per family. The fingerprints are
generated from real tokenizer files by ``tools/gen_tokenizer_families.py`` and checked against
those files by the tests.

A family is named only when the evidence is an id-preserving relation (identical, extension,
subset, shifted) over enough sampled tokens: sharing common pieces is not membership.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import zlib
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from .vocab import Vocabulary

__all__ = [
    "FamilyMatch",
    "TokenizerFingerprint",
    "fingerprint",
    "known_families",
    "match_families",
    "match_family",
]

SCHEMA_VERSION = 1
SAMPLE_MOD = 32
# The fraction of sampled tokens an id-preserving relation must keep (see relations.KEPT; a
# sample of ~1,000 tokens cannot resolve 0.999, so allow a few misses).
KEPT = 0.99
# Fewer sampled tokens than this cannot name a family: 64 samples at 99% agreement would happen
# by chance only if the two vocabularies shared their order almost entirely.
MIN_SAMPLES = 64


def token_hash(token: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(token, digest_size=8).digest(), "little")


@dataclass(frozen=True)
class TokenizerFingerprint:
    family: str
    name: str
    kind: str
    model: str
    size: int
    ordinary: int
    ids: np.ndarray  # int64, sampled ids in increasing order
    hashes: np.ndarray  # uint32, the high half of each sampled token's hash
    source: str = ""
    licence: str = ""
    models: tuple[str, ...] = ()
    extends: str | None = None

    def to_dict(self) -> dict[str, Any]:
        packed = self.ids.astype("<u4").tobytes() + self.hashes.astype("<u4").tobytes()
        return {
            "schema_version": SCHEMA_VERSION,
            "family": self.family,
            "name": self.name,
            "kind": self.kind,
            "model": self.model,
            "size": self.size,
            "ordinary": self.ordinary,
            "extends": self.extends,
            "models": list(self.models),
            "source": self.source,
            "licence": self.licence,
            "sample_mod": SAMPLE_MOD,
            "samples": len(self.ids),
            "sample": base64.b64encode(zlib.compress(packed, 9)).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerFingerprint:
        if data.get("schema_version") != SCHEMA_VERSION or data.get("sample_mod") != SAMPLE_MOD:
            raise ValueError(f"tokenizer family {data.get('family')!r}: unsupported fingerprint version")
        packed = zlib.decompress(base64.b64decode(data["sample"]))
        count = int(data["samples"])
        if len(packed) != 8 * count:
            raise ValueError(
                f"tokenizer family {data['family']!r}: sample holds {len(packed)} bytes, not {8 * count}"
            )
        ids = np.frombuffer(packed[: 4 * count], dtype="<u4").astype(np.int64)
        hashes = np.frombuffer(packed[4 * count :], dtype="<u4").astype(np.uint32)
        return cls(
            family=data["family"],
            name=data["name"],
            kind=data["kind"],
            model=data["model"],
            size=int(data["size"]),
            ordinary=int(data["ordinary"]),
            ids=ids,
            hashes=hashes,
            source=data.get("source", ""),
            licence=data.get("licence", ""),
            models=tuple(data.get("models", ())),
            extends=data.get("extends"),
        )


def _sample(vocabulary: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    ids: list[int] = []
    hashes: list[int] = []
    special = vocabulary.special
    for index, token in enumerate(vocabulary.tokens):
        if token is None or index in special:
            continue
        value = token_hash(token)
        if value % SAMPLE_MOD == 0:
            ids.append(index)
            hashes.append(value >> 32)
    return np.asarray(ids, dtype=np.int64), np.asarray(hashes, dtype=np.uint32)


def fingerprint(
    vocabulary: Vocabulary,
    *,
    family: str,
    name: str,
    source: str = "",
    licence: str = "",
    models: tuple[str, ...] = (),
    extends: str | None = None,
) -> TokenizerFingerprint:
    ids, hashes = _sample(vocabulary)
    ordinary = sum(
        1 for i, t in enumerate(vocabulary.tokens) if t is not None and i not in vocabulary.special
    )
    return TokenizerFingerprint(
        family=family,
        name=name,
        kind=vocabulary.kind,
        model=vocabulary.model,
        size=len(vocabulary.tokens),
        ordinary=ordinary,
        ids=ids,
        hashes=hashes,
        source=source,
        licence=licence,
        models=models,
        extends=extends,
    )


@functools.cache
def known_families() -> tuple[TokenizerFingerprint, ...]:
    """Every fingerprint shipped in ``unshell/tokenizers/families/``."""
    folder = resources.files(__package__).joinpath("families")
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            found.append(TokenizerFingerprint.from_dict(json.loads(entry.read_text(encoding="utf-8"))))
    return tuple(found)


@dataclass(frozen=True)
class FamilyMatch:
    """How a vocabulary relates to one known family, measured on the family's sample."""

    family: str
    name: str
    relation: str  # identical | extension | subset | shifted-extension
    sampled: int  # the family's sampled tokens
    kept: int  # ... found at the same id (or at the shifted id)
    offset: int
    models: tuple[str, ...]
    licence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "name": self.name,
            "relation": self.relation,
            "sampled_tokens": self.sampled,
            "kept": self.kept,
            "offset": self.offset,
            "models": list(self.models),
            "licence": self.licence,
        }


def _relation_to(
    print_: TokenizerFingerprint, ids: np.ndarray, hashes: np.ndarray, size: int
) -> FamilyMatch | None:
    by_hash = dict(zip(hashes.tolist(), ids.tolist(), strict=True))
    family_pairs = list(zip(print_.hashes.tolist(), print_.ids.tolist(), strict=True))
    if len(family_pairs) < MIN_SAMPLES or len(ids) < MIN_SAMPLES:
        return None
    shifts = Counter(by_hash[h] - i for h, i in family_pairs if h in by_hash)
    if not shifts:
        return None
    offset, kept = shifts.most_common(1)[0]
    if kept < KEPT * len(family_pairs):
        # The family is not kept whole; is the vocabulary a truncation of it?
        family_by_hash = dict(family_pairs)
        ours_kept = sum(1 for h, i in by_hash.items() if family_by_hash.get(h) == i)
        if size < print_.size and ours_kept >= KEPT * len(by_hash):
            return _match(print_, "subset", len(family_pairs), ours_kept, 0)
        return None
    if offset != 0:
        return _match(print_, "shifted-extension", len(family_pairs), kept, offset)
    if size == print_.size:
        return _match(print_, "identical", len(family_pairs), kept, 0)
    if size > print_.size:
        return _match(print_, "extension", len(family_pairs), kept, 0)
    return _match(print_, "subset", len(family_pairs), kept, 0)


def _match(print_: TokenizerFingerprint, relation: str, sampled: int, kept: int, offset: int) -> FamilyMatch:
    return FamilyMatch(
        print_.family, print_.name, relation, sampled, kept, offset, print_.models, print_.licence
    )


_PREFERENCE = {"identical": 0, "extension": 1, "shifted-extension": 2, "subset": 3}


def match_families(
    vocabulary: Vocabulary, library: tuple[TokenizerFingerprint, ...] | None = None
) -> list[FamilyMatch]:
    """Every known family the vocabulary keeps (or is a truncation of), best first."""
    ids, hashes = _sample(vocabulary)
    size = len(vocabulary.tokens)
    found = []
    for print_ in known_families() if library is None else library:
        match = _relation_to(print_, ids, hashes, size)
        if match is not None:
            found.append((match, print_))
    # Best: identical; then the largest family kept whole (the most specific ancestor); subsets last.
    # Among equals, the closest sample agreement wins (two releases of one vocabulary).
    found.sort(
        key=lambda mp: (
            _PREFERENCE[mp[0].relation],
            -mp[1].size if mp[0].relation != "subset" else mp[1].size,
            -mp[0].kept / mp[0].sampled,
        )
    )
    return [match for match, _ in found]


def match_family(
    vocabulary: Vocabulary, library: tuple[TokenizerFingerprint, ...] | None = None
) -> FamilyMatch | None:
    """The known family this vocabulary belongs to, or None when it keeps none of them."""
    matches = match_families(vocabulary, library)
    return matches[0] if matches else None
