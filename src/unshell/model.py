"""`Model`: one opened checkpoint and every fact derived from it, each computed once.

The layers below (`formats`, `declared`, `tokenizers`, `inspection`) each compute one kind of fact
from a `Checkpoint`; they memoize it on the checkpoint (`Checkpoint.memo`), so a vocabulary, a
card or an inspection is parsed once however many verbs and layers ask. `Model` is the one place
the verbs read those facts from:

    >>> with Model.open("tests/data/fixtures/stories260K.bin") as model:  # doctest: +SKIP
    ...     model.family, model.facts.can_declare, model.declared.to_dict()
    ('llama', False, {})

Nothing here reads a file itself or tests a format name: format knowledge stays in `formats/`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .declared import Card, Declared, card_of, read_declared
from .formats import open_checkpoint
from .formats.base import Checkpoint
from .formats.facts import FormatFacts, facts_of
from .inspection import InspectResult, inspect_checkpoint

if TYPE_CHECKING:
    from .lineage.canonical import CanonicalModel
    from .lineage.hashes import ContentHashes, TensorHashes
    from .tokenizers.describe import TokenizerInfo
    from .tokenizers.families import FamilyMatch
    from .tokenizers.vocab import Vocabulary

__all__ = ["Model"]


class Model:
    """The analysis of one opened `Checkpoint`. Get it with `Model.of` (one per checkpoint) or
    `Model.open` (opens and closes the files)."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self._hashes: dict[str, TensorHashes] = {}  # by tensor name, counted or not (`tensor_hashes`)

    @classmethod
    def of(cls, source: Checkpoint | Model) -> Model:
        """The one `Model` of an opened checkpoint (a `Model` is returned as it is)."""
        if isinstance(source, Model):
            return source
        return source.memo("model", lambda: cls(source))

    @classmethod
    @contextmanager
    def open(cls, path: str | os.PathLike[str]) -> Iterator[Model]:
        with open_checkpoint(path) as checkpoint:
            yield cls.of(checkpoint)

    @property
    def facts(self) -> FormatFacts:
        """What the format says: identity claims, whether it can declare, whose names these are."""
        return facts_of(self.checkpoint)

    @property
    def card(self) -> Card:
        return card_of(self.checkpoint)

    @property
    def declared(self) -> Declared:
        return read_declared(self.checkpoint)

    @property
    def inspection(self) -> InspectResult:
        """Recognition, renamed tensors, declared config, tokenizer summary (headers only)."""
        return inspect_checkpoint(self.checkpoint)

    @property
    def family(self) -> str | None:
        return self.inspection.family

    @property
    def vocabulary(self) -> Vocabulary | None:
        from .tokenizers.vocab import vocabulary_of

        return vocabulary_of(self.checkpoint)

    @property
    def tokenizer(self) -> TokenizerInfo | None:
        from .tokenizers.describe import describe_tokenizer

        return describe_tokenizer(self.checkpoint)

    @property
    def tokenizer_families(self) -> list[FamilyMatch]:
        """The known tokenizer families the vocabulary keeps, best first (empty without one)."""
        from .tokenizers.families import match_families

        return self.checkpoint.memo(
            "tokenizer_families",
            lambda: match_families(self.vocabulary) if self.vocabulary is not None else [],
        )

    @property
    def canonical(self) -> CanonicalModel:
        """The weights indexed by (layer, role), for the lineage tests (built on `inspection`)."""
        from .lineage.canonical import canonical_model

        return self.checkpoint.memo("canonical", lambda: canonical_model(self.checkpoint, self.inspection))

    def tensor_hashes(self, name: str, *, counted: bool = True, digested: bool = True) -> TensorHashes:
        """The content hashes of one tensor, read and hashed once per opened checkpoint however
        many verbs ask (a fleet scan fingerprints a model, then searches and audits it).
        ``counted=False``: the multiset may be left uncounted; ``digested=False``: the digests may
        be left out (`hashes.hash_tensor`). Hashes with more serve too, and a later request for
        more hashes the tensor again or counts what was left."""
        from .lineage.hashes import count_tensor, hash_tensor

        known = self._hashes
        found = known.get(name)
        if found is None:
            found = known[name] = hash_tensor(self.checkpoint, name, counted=counted, digested=digested)
        elif found.exact is None and digested:
            again = counted or found.multiset is not None
            found = known[name] = hash_tensor(self.checkpoint, name, counted=again)
        if counted and found.multiset is None:
            found = known[name] = count_tensor(self.checkpoint, found)
        return found

    def content_hashes(self, names: list[str]) -> ContentHashes:
        """`tensor_hashes` of ``names``, in order (bytes hashed go to the bound progress reporter)."""
        from .lineage.hashes import ContentHashes, hashed_on_one_core
        from .progress import BYTES, stage
        from .threads import map_in_order

        sizes = {name: self.checkpoint.info(name).nbytes for name in names}
        # Tensors whose values are decoded (quantized blocks, f16, f32) hash on one core each, so
        # they run side by side on the thread budget's workers; a stored bf16 tensor's count and
        # sha256 already share two threads, and one at a time reads the file in order (`compare`
        # hashes without the count, side by side: `lineage.compare.read_once`).
        decoded = [name for name in names if hashed_on_one_core(self.checkpoint, name)]
        with stage(f"hashing {self.checkpoint.path.name}", sum(sizes[n] for n in names), BYTES) as shown:
            side_by_side = map_in_order(
                self.tensor_hashes,
                decoded,
                done=lambda index: shown.advance(sizes[decoded[index]]),
                name="unshell-hash",
            )
            found = dict(zip(decoded, side_by_side, strict=True))
            for name in names:
                if name not in found:
                    found[name] = self.tensor_hashes(name)
                    shown.advance(sizes[name])
        return ContentHashes([found[name] for name in names])
