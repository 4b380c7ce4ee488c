"""The lineage zoo's vocabulary cases: derivatives whose token ids say nothing (issue 18).

A new tokenizer is the cheapest disguise there is: swap in a vocabulary of your own (or renumber
the old one), re-initialise the embedding rows, train on, and alignment through shared token ids
is gone. This module builds, on top of the main zoo (``tools/zoo.py``: its ``base-s0`` and the
real ``stories260K``), the cases `unshell.compare` must still call ``derived``:

* the issue's own misses, on the real stories260K as a Hugging Face folder: every embedding row
  re-initialised with 20 % noise on every layer matrix; the ids permuted with 60 % of the rows
  re-initialised; the ids kept with 30 % re-initialised (that one was always found);
* ``base-s0`` renumbered (the same 512 pieces at shuffled ids), with no training and trained on;
  given a new vocabulary (byte-level BPE learned on other text, at ids of its own) whose shared
  pieces keep their rows and whose new pieces start at the mean row, or whose rows all start at
  random; its embedding re-initialised and relearned with every layer frozen (byte-identical);
  its vocabulary shrunk and renumbered;
* several of these with a rotated residual stream and permuted neurons and heads;

and independent pairs with different vocabularies (so the new alignment cannot manufacture
matches): the derivatives above against ``base-s0``'s independent siblings, ``base-s1`` given
the new vocabulary and trained on, and briefly trained null models with the new vocabulary
against the main zoo's null models.

Tokenizer files are written beside the weights (``tokenizer.json``), except for the stories
cases (none, as in the issue); tests make tokenizer-less copies where they need them.

The build is cached like the main zoo, under ``~/.cache/unshell-tests/zoo-vocab/<key>/``, where
``<key>`` hashes this file and the main zoo's key. It lives in its own file so that changing it
does not rebuild the main zoo (about 12 minutes on 2 cores).

    python tools/zoo_vocab.py build
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from tools.zoo import ByteBPE, Pair, Params, Shape, Zoo

MANIFEST = "zoo-vocab.json"
NULL_SEED_OFFSET = 20_000
_ZOO_MODULE = "unshell_tools_zoo"  # the name tests/zoo_fixture.py loads tools/zoo.py under


def zoo_module() -> ModuleType:
    """``tools/zoo.py``, loaded once per process under the name the tests use."""
    module = sys.modules.get(_ZOO_MODULE)
    if module is None:
        path = Path(__file__).resolve().parent / "zoo.py"
        spec = importlib.util.spec_from_file_location(_ZOO_MODULE, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[_ZOO_MODULE] = module
        spec.loader.exec_module(module)
    return module


Z = zoo_module()


@dataclass(frozen=True)
class VocabSettings:
    """Every number that decides what this part of the zoo holds; part of the cache key."""

    new_vocab_merges: int = 512  # the new tokenizer: 256 bytes + 512 merges learned on docstrings
    shrunk_vocab: int = 384  # bytes + the first 128 merges
    renumbered: Any = field(default_factory=lambda: Z.Recipe(steps=300, lr=2e-3, warmup=20))
    new_vocab: Any = field(default_factory=lambda: Z.Recipe(steps=300, lr=2e-3, warmup=20))
    reembed: Any = field(default_factory=lambda: Z.Recipe(steps=150, lr=3e-3, warmup=10))
    shrunk: Any = field(default_factory=lambda: Z.Recipe(steps=150, lr=6e-4, warmup=10))
    stories_noise: float = 0.2  # relative noise on every layer matrix
    null_models: int = 8


SETTINGS = VocabSettings()
OBFUSCATION_STEPS = ("rotate-residual", "permute-mlp", "permute-heads")


# --------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Renumbered:
    """A byte-level BPE whose token ``i`` is stored at id ``ids[i]``."""

    bpe: ByteBPE
    ids: tuple[int, ...]

    @property
    def vocab_size(self) -> int:
        return len(self.ids)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.ids, dtype=np.int32)[self.bpe.encode(text)]

    def pieces(self) -> dict[bytes, int]:
        """Token bytes -> stored id."""
        return {piece: self.ids[i] for i, piece in enumerate(self.bpe.token_bytes())}

    def tokenizer_json(self) -> dict[str, Any]:
        document: dict[str, Any] = self.bpe.tokenizer_json()
        strings = self.bpe.token_strings()
        document["model"]["vocab"] = {s: self.ids[i] for i, s in enumerate(strings)}
        return document


def renumber(bpe: ByteBPE, seed: int, size: int | None = None) -> Renumbered:
    """``bpe`` cut to its first ``size`` tokens, at ids shuffled by ``seed``."""
    count = size or bpe.vocab_size
    kept = Z.ByteBPE(bpe.merges[: count - 256])
    order = np.random.default_rng(seed).permutation(count)
    return Renumbered(kept, tuple(int(i) for i in order))


def _remap_rows(
    rows: torch.Tensor, old: Mapping[bytes, int], new: Renumbered, fill: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """A new embedding for ``new``: a piece ``old`` holds keeps its row, the others get the row ``fill``.
    Returns the matrix and how many rows were kept."""
    import torch

    out = torch.empty(new.vocab_size, rows.shape[1], dtype=rows.dtype)
    kept = 0
    for piece, new_id in new.pieces().items():
        old_id = old.get(piece)
        if old_id is not None and old_id < rows.shape[0]:
            out[new_id] = rows[old_id]
            kept += 1
        else:
            out[new_id] = fill
    return out, kept


def _with_vocab(
    params: Params, shape: Shape, old: Mapping[bytes, int], new: Renumbered, init: str, seed: int
) -> tuple[Params, Shape, int]:
    """``params`` with embedding (and output head) rows re-laid for ``new``: ``init`` "copy" keeps
    shared pieces' rows and starts new ones at the mean row; "random" starts every row at random."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = dict(params)
    kept = 0
    for name in (Z.EMBED, Z.LM_HEAD):
        if name not in out:
            continue
        rows = out[name]
        scale = float(rows.std())
        if init == "random":
            out[name] = torch.randn(new.vocab_size, rows.shape[1], generator=generator) * scale
            continue
        out[name], kept = _remap_rows(rows, old, new, rows.mean(dim=0))
    return out, dataclasses.replace(shape, vocab=new.vocab_size), kept


def _pieces(bpe: ByteBPE) -> dict[bytes, int]:
    return {piece: i for i, piece in enumerate(bpe.token_bytes())}


# --------------------------------------------------------------------------------------------
# The stories260K cases (the exact misses: no training, no tokenizer file)
# --------------------------------------------------------------------------------------------


def _noisy_layers(params: Params, shape: Shape, noise: float, generator: torch.Generator) -> Params:
    """Every layer matrix plus Gaussian noise of ``noise`` times its own std."""
    import torch

    out = dict(params)
    for i in range(shape.layers):
        for role in (*Z.READERS, *Z.WRITERS):
            name = Z.layer_names(i)[role]
            matrix = out[name]
            out[name] = matrix + noise * float(matrix.std()) * torch.randn(matrix.shape, generator=generator)
    return out


def _reinit_rows(
    params: Params, shape: Shape, fraction: float, permute: bool, generator: torch.Generator
) -> Params:
    """Re-initialise ``fraction`` of the embedding (and head) rows at random, after permuting the
    ids when ``permute``."""
    import torch

    out = dict(params)
    order = torch.randperm(shape.vocab, generator=generator) if permute else torch.arange(shape.vocab)
    fresh = torch.randperm(shape.vocab, generator=generator)[: round(fraction * shape.vocab)]
    for name in (Z.EMBED, Z.LM_HEAD):
        if name not in out:
            continue
        rows = out[name][order].clone()
        rows[fresh] = torch.randn(len(fresh), rows.shape[1], generator=generator) * float(rows.std())
        out[name] = rows
    return out


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, out: Path, log: Callable[[str], None]) -> None:
        self.out = out
        self.log = log
        self.models: dict[str, dict[str, Any]] = {}
        self.params: dict[str, tuple[Params, Shape]] = {}
        self.started = time.monotonic()

    def add(
        self,
        name: str,
        params: Params,
        shape: Shape,
        tokenizer: Renumbered | ByteBPE | None,
        *,
        source: str | None,
        how: Sequence[str],
        recipe: str,
        losses: Sequence[float] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        directory = self.out / "models" / name
        Z.save_hf(directory, params, shape, None)
        if tokenizer is not None:
            text = json.dumps(tokenizer.tokenizer_json(), ensure_ascii=False)
            (directory / "tokenizer.json").write_text(text, encoding="utf-8")
        entry: dict[str, Any] = {
            "path": f"models/{name}",
            "source": source,
            "how": sorted(how),
            "recipe": recipe,
            "tokenizer": tokenizer is not None,
        }
        if losses:
            entry["loss_first"] = round(float(np.mean(losses[:10])), 4)
            entry["loss_last"] = round(float(np.mean(losses[-10:])), 4)
        entry.update(extra or {})
        self.models[name] = entry
        self.params[name] = (params, shape)
        self.log(f"{time.monotonic() - self.started:7.1f}s  {name}: {recipe}")

    def obfuscate(self, name: str, source: str, seed: int, tokenizer: Renumbered | ByteBPE | None) -> None:
        params, shape = self.params[source]
        for offset, step in enumerate(OBFUSCATION_STEPS):
            params, shape = Z.OBFUSCATIONS[step](params, shape, seed + offset)
        entry = self.models[source]
        self.add(
            name,
            params,
            shape,
            tokenizer,
            source=entry["source"],
            how=[*entry["how"], "obfuscated"],
            recipe=f"obfuscation of {source}: " + ", ".join(OBFUSCATION_STEPS),
        )


def _build_stories(b: _Builder, s: VocabSettings) -> None:
    import torch

    params, shape = Z.load_llama2c(Z.STORIES)
    cases = [
        ("stories-reembedded-noisy", 1.0, False, "every embedding row re-initialised"),
        ("stories-permuted-reembedded60-noisy", 0.6, True, "ids permuted, 60% of rows re-initialised"),
        ("stories-reembedded30-noisy", 0.3, False, "ids kept, 30% of rows re-initialised"),
    ]
    for offset, (name, fraction, permute, what) in enumerate(cases):
        generator = torch.Generator().manual_seed(300 + offset)
        changed = _reinit_rows(params, shape, fraction, permute, generator)
        changed = _noisy_layers(changed, shape, s.stories_noise, generator)
        b.add(
            name,
            changed,
            shape,
            None,
            source="stories260K",
            how=["vocab-replaced"],
            recipe=f"stories260K, {what}, {s.stories_noise:.0%} noise on every layer matrix",
        )
    b.obfuscate("stories-reembedded-noisy-obfuscated", "stories-reembedded-noisy", 310, None)


def _build_base(b: _Builder, s: VocabSettings, zoo: Zoo) -> None:
    text = Z.corpora()
    bpe, _ = Z.tokenizers(Z.SETTINGS)
    old = _pieces(bpe)
    docs_text = text.docs
    mixed_text = text.docs + "\n" + text.docstrings
    base, shape = Z.load_hf(zoo.bases["base-s0"])
    other, _ = Z.load_hf(zoo.bases["base-s1"])
    new_bpe = Z.learn_bpe(text.docstrings, s.new_vocab_merges)

    # The same pieces at shuffled ids: with no training (full compare: the same values re-laid out),
    # and trained on.
    renumbered = renumber(bpe, 401)
    moved, shape_r, _ = _with_vocab(base, shape, old, renumbered, "copy", 401)
    b.add(
        "s0-renumbered", moved, shape_r, renumbered, source="base-s0", how=[], recipe="base-s0, ids shuffled"
    )
    trained, losses = Z.train_copy(moved, shape_r, renumbered.encode(docs_text), s.renumbered, 402)
    b.add(
        "s0-renumbered-trained",
        trained,
        shape_r,
        renumbered,
        source="base-s0",
        how=["continued-pretraining"],
        recipe="base-s0, ids shuffled, " + Z._recipe_text(s.renumbered, "docs", 402),
        losses=losses,
    )

    # A new vocabulary at ids of its own.
    new = renumber(new_bpe, 403)
    for name, init, seed in (
        ("s0-newvocab-trained", "copy", 404),
        ("s0-newvocab-random-trained", "random", 405),
    ):
        start, shape_n, kept = _with_vocab(base, shape, old, new, init, seed)
        trained, losses = Z.train_copy(start, shape_n, new.encode(mixed_text), s.new_vocab, seed)
        b.add(
            name,
            trained,
            shape_n,
            new,
            source="base-s0",
            how=["continued-pretraining", "vocab-replaced"],
            recipe=f"base-s0 with a new {new.vocab_size}-token vocabulary ({init} rows, "
            f"{sum(1 for p in new.pieces() if p in old)} pieces shared), "
            + Z._recipe_text(s.new_vocab, "docs + docstrings", seed),
            losses=losses,
            extra={"rows_kept": kept},
        )

    # The embedding re-initialised and relearned, every layer frozen (byte-identical to base-s0).
    frozen = Z.clone(base)
    leaves = {name: frozen.pop(name) for name in (Z.EMBED, Z.LM_HEAD)}
    generator = np.random.default_rng(406)
    import torch

    for name, tensor in leaves.items():
        noise = generator.standard_normal(tuple(tensor.shape)).astype(np.float32)
        leaves[name] = torch.from_numpy(noise) * 0.02
    losses = Z.train(leaves, lambda: {**frozen, **leaves}, shape, bpe.encode(docs_text), s.reembed, 406)
    b.add(
        "s0-reembedded-frozen",
        {**frozen, **leaves},
        shape,
        bpe,
        source="base-s0",
        how=["vocab-replaced"],
        recipe="base-s0, embedding and head re-initialised, "
        + Z._recipe_text(s.reembed, "docs", 406)
        + " with every layer frozen",
        losses=losses,
    )

    # The vocabulary shrunk to its first pieces, at shuffled ids.
    shrunk = renumber(bpe, 407, s.shrunk_vocab)
    start, shape_s, _ = _with_vocab(base, shape, old, shrunk, "copy", 407)
    trained, losses = Z.train_copy(start, shape_s, shrunk.encode(docs_text), s.shrunk, 408)
    b.add(
        "s0-shrunk-renumbered",
        trained,
        shape_s,
        shrunk,
        source="base-s0",
        how=["finetune", "vocab-replaced"],
        recipe=f"base-s0 cut to {s.shrunk_vocab} tokens at shuffled ids, "
        + Z._recipe_text(s.shrunk, "docs", 408),
        losses=losses,
    )

    # An independent model with the same new vocabulary: base-s1's layers, trained on.
    start, shape_n, _ = _with_vocab(other, shape, old, new, "copy", 409)
    trained, losses = Z.train_copy(start, shape_n, new.encode(mixed_text), s.new_vocab, 409)
    b.add(
        "s1-newvocab-trained",
        trained,
        shape_n,
        new,
        source="base-s1",
        how=["continued-pretraining", "vocab-replaced"],
        recipe="base-s1 with the new vocabulary, " + Z._recipe_text(s.new_vocab, "docs + docstrings", 409),
        losses=losses,
    )

    for seed, source, tokenizer in (
        (420, "s0-renumbered-trained", renumbered),
        (430, "s0-newvocab-trained", new),
        (440, "s0-newvocab-random-trained", new),
        (450, "s0-shrunk-renumbered", shrunk),
        (460, "s1-newvocab-trained", new),
    ):
        b.obfuscate(source + "-obfuscated", source, seed, tokenizer)


def _pairs(models: Mapping[str, Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    derived, independent = [], []
    for name, entry in models.items():
        root = entry["source"]
        if root in ("base-s0", "stories260K"):
            derived.append({"name": f"{root}->{name}", "a": root, "b": name, "how": entry["how"]})
    for name, entry in models.items():
        if entry["source"] == "base-s0":
            for other in ("base-s1", "base-s2", "base-docstrings-s4"):
                independent.append({"name": f"{other}<->{name}", "a": other, "b": name, "how": []})
        elif entry["source"] == "stories260K":
            for other in ("llama2xs", "base-s0"):
                independent.append({"name": f"{other}<->{name}", "a": other, "b": name, "how": []})
        elif entry["source"] == "base-s1":
            for other in (
                "base-s0",
                "s0-newvocab-trained",
                "s0-renumbered-trained",
                "s0-newvocab-trained-obfuscated",
            ):
                independent.append({"name": f"{other}<->{name}", "a": other, "b": name, "how": []})
    return derived, independent


def build(out: Path, s: VocabSettings = SETTINGS, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    started = time.monotonic()
    zoo = Z.load_or_build(log=log)
    with Z.torch_session():
        b = _Builder(out, log or (lambda _: None))
        _build_stories(b, s)
        _build_base(b, s, zoo)
    derived, independent = _pairs(b.models)
    manifest = {
        "settings": dataclasses.asdict(s),
        "zoo": zoo.root.name,
        "models": b.models,
        "derived": derived,
        "independent": independent,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n", encoding="utf-8")
    return manifest


# --------------------------------------------------------------------------------------------
# Loading, null models
# --------------------------------------------------------------------------------------------


@dataclass
class VocabZoo:
    root: Path
    zoo: Zoo
    manifest: dict[str, Any]
    models: dict[str, Path]
    derived: list[Pair]
    independent: list[Pair]
    settings: VocabSettings = field(default=SETTINGS)

    def null_pairs(self, n: int) -> list[Pair]:
        """``n`` independent pairs with different vocabularies: briefly trained models with the
        new vocabulary against the main zoo's null models (same recipe, other seeds)."""
        others = self.zoo.null_pairs(n)
        standard = sorted({p.a for p in others} | {p.b for p in others})
        mine = ensure_null_models(self.settings.null_models, self.settings)
        pairs = [
            Z.Pair(f"vnull-{i:02d}-vs-{path.name}", path, mine[i], frozenset(), "different vocabularies")
            for path in standard
            for i in range(len(mine))
        ]
        return pairs[:n]


def cache_key(s: VocabSettings = SETTINGS) -> str:
    parts = [
        hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        json.dumps(dataclasses.asdict(s), sort_keys=True, default=str),
        Z.cache_key(),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def load_or_build(s: VocabSettings = SETTINGS, log: Callable[[str], None] | None = None) -> VocabZoo:
    zoo = Z.load_or_build(log=log)
    base = Z.cache_root() / "zoo-vocab"
    key = cache_key(s)
    final = base / key
    if not (final / MANIFEST).is_file():
        with Z._locked(base / f".{key}.lock"):
            if not (final / MANIFEST).is_file():
                Z.build_into(final, lambda temp: build(temp, s, log))
    manifest = json.loads((final / MANIFEST).read_text(encoding="utf-8"))
    models = {name: final / entry["path"] for name, entry in manifest["models"].items()}

    def path(name: str) -> Path:
        return models.get(name) or zoo.models[name]

    def pairs(kind: str) -> list[Pair]:
        return [
            Z.Pair(
                p["name"],
                path(p["a"]),
                path(p["b"]),
                frozenset(p["how"]),
                manifest["models"].get(p["b"], {}).get("recipe", ""),
            )
            for p in manifest[kind]
        ]

    return VocabZoo(final, zoo, manifest, models, pairs("derived"), pairs("independent"), s)


def ensure_null_models(count: int, s: VocabSettings = SETTINGS) -> list[Path]:
    """``count`` briefly trained models (the main zoo's null recipe) with the new vocabulary."""
    root = Z.cache_root() / "zoo-vocab-null" / cache_key(s)
    paths = [root / f"vnull-{i:02d}" for i in range(count)]
    missing = [i for i, path in enumerate(paths) if not (path / "config.json").is_file()]
    if missing:
        with Z._locked(root.parent / f".{root.name}.lock"), Z.torch_session():
            new = renumber(Z.learn_bpe(Z.corpora().docstrings, s.new_vocab_merges), 403)
            tokens = new.encode(Z.corpora().docs)
            shape = Z.base_shape(Z.SETTINGS, new.vocab_size)
            for i in missing:
                if (paths[i] / "config.json").is_file():
                    continue
                seed = NULL_SEED_OFFSET + i

                def make(temp: Path, seed: int = seed) -> None:
                    params, _ = Z.train_copy(Z.init_params(shape, seed), shape, tokens, Z.SETTINGS.null, seed)
                    Z.save_hf(temp, params, shape, None)
                    text = json.dumps(new.tokenizer_json(), ensure_ascii=False)
                    (temp / "tokenizer.json").write_text(text, encoding="utf-8")

                Z.build_into(paths[i], make)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser(
        "build", help="build the vocabulary cases (or find them in the cache)"
    )
    build_command.add_argument(
        "--null", type=int, default=0, help="also build the null models for this many pairs"
    )
    args = parser.parse_args(argv)
    vocab = load_or_build(log=lambda message: print(message, flush=True))
    if args.null:
        print(f"null pairs: {len(vocab.null_pairs(args.null))}")
    print(
        f"zoo-vocab: {vocab.root}, {len(vocab.derived)} derived pairs, {len(vocab.independent)} independent"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
