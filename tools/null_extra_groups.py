"""Null groups outside the calibration test: the issue-19 case and flat-loss variants.

``tools/null_population.py`` builds the population the calibration test reads (about 3 minutes
cold). The groups here cost too much to build in CI and are measured by
``benchmarks/bench_null_converged.py --extra``:

* ``llama2c-h64``: the case issue 19 reported, rebuilt: 7 models of the llama2.c stories260K shape
  (dim 64, 5 layers, 8 query / 4 key-value heads, FFN 172, vocabulary 512, tied output head),
  one data set (Python's documentation on the zoo's tokenizer) and one recipe (4,000 steps,
  lr 2e-3, weight decay 0.1), differing only in seed: 11.6 CPU minutes to build (about 6 minutes
  on 2 idle cores), loss 2.25 over the last tenth;
* ``llama2c-h64-short``: the same shape, seeds, data and weight decay, trained as long as a
  session on 2 shared cores affords (1,000 steps of 16 x 32 tokens at a peak rate of 5e-3);
* ``docs-h64-flat`` and ``docs-h32-flat``: the population's ``docs-h64`` group and the first 7
  models of ``docs-h32`` (same seeds, shapes, data and recipe) trained 2,000 steps instead of 300,
  until the loss is flat (the population's groups still fall by 1% to 2.6% over their last fifth):
  defined, not built yet (the whole population at 2,000 steps would cost about 41 CPU minutes);
* ``llama2c-h64-small``: ``llama2c-h64`` (shape, recipe, seeds) trained on the first 45,000
  tokens of the docs text (about 23 passes in 4,000 steps), so that the loss reaches the issue's
  (about 1.08; one seed reached 0.99 on 40,000 tokens and 0.26 on 16,000): independent seeds
  that memorize one small text, the adversarial case for the null. 10.6 CPU minutes to build,
  loss 1.17 over the last tenth.

Measured figures: ``benchmarks/RESULTS.md``, "null calibration on converged models", sessions 5 and 6.

Each group is cached by its own content under
``~/.cache/unshell-tests/null-converged-extra/<group>-<key>/``: ``<key>`` hashes the group's
definition, the functions here that train and write it, and ``null_population.cache_key()`` (the
training code, the zoo code it uses, the corpora, Python and torch), so that adding or changing
another group rebuilds nothing else. A group's models are split into ``processes`` batched runs of
one thread each (the models are independent: the split changes no model's trajectory).

    python tools/null_extra_groups.py build llama2c-h64
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent


def population_module() -> ModuleType:
    """``tools/null_population.py`` (shared with tests/null_fixture.py under the same name)."""
    name = "unshell_tools_null_population"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, TOOLS / "null_population.py")
        if spec is None or spec.loader is None:
            raise ImportError("cannot load tools/null_population.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class ExtraGroup:
    """A ``null_population.Group`` with the few things it lacks."""

    name: str
    models: int
    hidden: int
    layers: int
    intermediate: int
    steps: int
    lr: float
    batch: int
    seq: int
    warmup: int
    seed: int  # first seed: null_population.SEED_OFFSET + seed + i, as in the population
    heads: int = 4
    kv_heads: int = 2
    tied: bool = False
    corpus: str = "docs"
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.1
    processes: int = 2


@dataclass(frozen=True)
class SmallCorpusGroup(ExtraGroup):
    """An ``ExtraGroup`` trained on the first ``corpus_tokens`` tokens of its corpus only.

    A subclass, trained and written by functions of its own, so that the other groups' cache keys
    (their fields and the source of the functions that build them) stay what they were."""

    corpus_tokens: int = 0


EXTRA: dict[str, ExtraGroup] = {
    group.name: group
    for group in (
        # The models: the stories260K shape, the steps, rate and decay. The batch
        # (8 x 32 tokens, about 5 passes over the corpus in 4,000 steps) is what 2 cores afford.
        ExtraGroup(
            "llama2c-h64", 7, 64, 5, 172, 4000, 2e-3, 8, 32, 100, seed=400, heads=8, kv_heads=4, tied=True
        ),
        # The same shape, rate decay and seeds trained as long as a session on 2 shared cores
        # affords: 1,000 steps of 16 x 32 tokens at a higher peak rate (about 2 passes).
        ExtraGroup(
            "llama2c-h64-short",
            7,
            64,
            5,
            172,
            1000,
            5e-3,
            16,
            32,
            50,
            seed=400,
            heads=8,
            kv_heads=4,
            tied=True,
            processes=3,
        ),
        # The population's docs-h64 and docs-h32 (its first 7 seeds) trained 2,000 steps, not 300.
        ExtraGroup("docs-h64-flat", 6, 64, 2, 128, 2000, 1e-2, 32, 32, 20, seed=100),
        ExtraGroup("docs-h32-flat", 7, 32, 4, 96, 2000, 1e-2, 32, 32, 20, seed=0),
        # The loss (about 1.08): llama2c-h64 on a small slice of its text.
        SmallCorpusGroup(
            "llama2c-h64-small",
            7,
            64,
            5,
            172,
            4000,
            2e-3,
            8,
            32,
            100,
            seed=400,
            heads=8,
            kv_heads=4,
            tied=True,
            corpus_tokens=45_000,
        ),
    )
}


def _shape(group: ExtraGroup, vocab: int) -> Any:
    zoo = population_module().zoo_module()
    return zoo.Shape(
        hidden=group.hidden,
        layers=group.layers,
        heads=group.heads,
        kv_heads=group.kv_heads,
        head_dim=group.hidden // group.heads,
        intermediate=group.intermediate,
        vocab=vocab,
        tied=group.tied,
    )


def _recipe(group: ExtraGroup) -> Any:
    return population_module().TrainRecipe(
        steps=group.steps,
        lr=group.lr,
        batch=group.batch,
        seq=group.seq,
        warmup=group.warmup,
        min_lr_ratio=group.min_lr_ratio,
        weight_decay=group.weight_decay,
    )


def _train_chunk(group: ExtraGroup, seeds: list[int]) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """Train the models of ``seeds`` in one batched run on one thread; checks the batched forward
    against the zoo's on the last model."""
    import torch

    population = population_module()
    zoo = population.zoo_module()
    with zoo.torch_session(1):
        text = zoo.corpora()
        bpe, _ = zoo.tokenizers(zoo.SETTINGS)
        tokens = bpe.encode(text.docs if group.corpus == "docs" else text.docstrings)
        shape = _shape(group, bpe.vocab_size)
        models, losses = population.train_group(shape, tokens, _recipe(group), seeds)
        probe = torch.from_numpy(tokens[: 2 * 33].astype(np.int64)).view(2, 33)
        alone = zoo.forward(models[-1], shape, probe)
        stacked = population.batched_forward({n: t[None] for n, t in models[-1].items()}, shape, probe[None])[
            0
        ]
        if not torch.allclose(alone, stacked, atol=1e-4, rtol=1e-4):
            raise RuntimeError("batched_forward differs from the zoo's forward")
    return [{name: t.numpy() for name, t in m.items()} for m in models], losses


def build_group(group: ExtraGroup, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Train and write the group's models into ``out / group.name``; returns its manifest."""
    import torch

    population = population_module()
    zoo = population.zoo_module()
    started = time.monotonic()
    seeds = [population.SEED_OFFSET + group.seed + i for i in range(group.models)]
    chunks = [seeds[k :: group.processes] for k in range(group.processes)]
    with concurrent.futures.ProcessPoolExecutor(group.processes) as pool:
        results = list(pool.map(_train_chunk, [group] * len(chunks), chunks))
    by_seed: dict[int, tuple[dict[str, np.ndarray], np.ndarray]] = {}
    for chunk, (models, losses) in zip(chunks, results, strict=True):
        for e, seed in enumerate(chunk):
            by_seed[seed] = (models[e], losses[:, e])
    losses = np.stack([by_seed[seed][1] for seed in seeds], axis=1)  # [steps, models]
    bpe, _ = zoo.tokenizers(zoo.SETTINGS)
    shape = _shape(group, bpe.vocab_size)
    for e, seed in enumerate(seeds):
        folder = out / group.name / f"{group.name}-{e:02d}"
        params = {name: torch.from_numpy(value) for name, value in by_seed[seed][0].items()}
        zoo.save_hf(folder, params, shape, bpe)
        record = {
            "seed": seed,
            "loss_first": round(float(losses[0, e]), 4),
            "loss_last_10pct": round(float(losses[-len(losses) // 10 :, e].mean()), 4),
        }
        (folder / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    entry = {
        **dataclasses.asdict(group),
        "loss_last_10pct_mean": round(float(losses[-len(losses) // 10 :].mean()), 4),
        "loss_flatness_last_20pct": round(population.flatness(losses), 5),
        "loss_curve": [round(float(losses[k].mean()), 4) for k in range(0, len(losses), len(losses) // 10)],
        "seconds": round(time.monotonic() - started, 1),
    }
    log(
        f"{entry['seconds']:7.1f}s  {group.name}: {group.models} models, loss {entry['loss_last_10pct_mean']}, "
        f"flatness {entry['loss_flatness_last_20pct']}"
    )
    return {"groups": {group.name: entry}}


def _train_small_chunk(
    group: SmallCorpusGroup, seeds: list[int]
) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """``_train_chunk`` on the first ``group.corpus_tokens`` tokens of the group's corpus."""
    population = population_module()
    zoo = population.zoo_module()
    with zoo.torch_session(1):
        text = zoo.corpora()
        bpe, _ = zoo.tokenizers(zoo.SETTINGS)
        tokens = bpe.encode(text.docs if group.corpus == "docs" else text.docstrings)
        if len(tokens) < group.corpus_tokens:
            raise ValueError(f"{group.name}: the corpus has {len(tokens)} tokens, not {group.corpus_tokens}")
        models, losses = population.train_group(
            _shape(group, bpe.vocab_size), tokens[: group.corpus_tokens], _recipe(group), seeds
        )
    return [{name: t.numpy() for name, t in m.items()} for m in models], losses


def build_small_group(group: SmallCorpusGroup, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """``build_group`` for a ``SmallCorpusGroup``: the same models and manifest, trained on the slice."""
    import torch

    population = population_module()
    zoo = population.zoo_module()
    started = time.monotonic()
    seeds = [population.SEED_OFFSET + group.seed + i for i in range(group.models)]
    chunks = [seeds[k :: group.processes] for k in range(group.processes)]
    with concurrent.futures.ProcessPoolExecutor(group.processes) as pool:
        results = list(pool.map(_train_small_chunk, [group] * len(chunks), chunks))
    by_seed: dict[int, tuple[dict[str, np.ndarray], np.ndarray]] = {}
    for chunk, (models, chunk_losses) in zip(chunks, results, strict=True):
        for e, seed in enumerate(chunk):
            by_seed[seed] = (models[e], chunk_losses[:, e])
    losses = np.stack([by_seed[seed][1] for seed in seeds], axis=1)  # [steps, models]
    bpe, _ = zoo.tokenizers(zoo.SETTINGS)
    shape = _shape(group, bpe.vocab_size)
    tenth = len(losses) // 10
    for e, seed in enumerate(seeds):
        folder = out / group.name / f"{group.name}-{e:02d}"
        zoo.save_hf(folder, {name: torch.from_numpy(v) for name, v in by_seed[seed][0].items()}, shape, bpe)
        record = {
            "seed": seed,
            "loss_first": round(float(losses[0, e]), 4),
            "loss_last_10pct": round(float(losses[-tenth:, e].mean()), 4),
        }
        (folder / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    entry = {
        **dataclasses.asdict(group),
        "loss_last_10pct_mean": round(float(losses[-tenth:].mean()), 4),
        "loss_last_10pct_per_model": [round(float(v), 4) for v in losses[-tenth:].mean(axis=0)],
        "loss_flatness_last_20pct": round(population.flatness(losses), 5),
        "loss_curve": [round(float(losses[k].mean()), 4) for k in range(0, len(losses), tenth)],
        "seconds": round(time.monotonic() - started, 1),
        "cpu_seconds_children": round(_children_cpu_seconds(), 1),
    }
    log(
        f"{entry['seconds']:7.1f}s  {group.name}: {group.models} models, loss {entry['loss_last_10pct_mean']}, "
        f"flatness {entry['loss_flatness_last_20pct']}"
    )
    return {"groups": {group.name: entry}}


def _children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (the training processes)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _key_functions(group: ExtraGroup) -> tuple[Callable[..., Any], ...]:
    """The functions that train and write ``group``: those of ``group_key``'s first groups, whose
    list must not change (their keys would), or a subclass's own."""
    if isinstance(group, SmallCorpusGroup):
        return (_shape, _recipe, _train_small_chunk, build_small_group, _children_cpu_seconds)
    return (_shape, _recipe, _train_chunk, build_group)


def group_key(group: ExtraGroup) -> str:
    """The group's definition, the code that trains and writes it, and the population's key."""
    parts = [
        json.dumps(dataclasses.asdict(group), sort_keys=True),
        *(inspect.getsource(f) for f in _key_functions(group)),
        population_module().cache_key(),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def load_or_build(name: str, root: Path | None = None, log: Callable[[str], None] | None = None) -> Any:
    """The group as a ``null_population.Population`` (its ``pairs(name)``), built first if needed."""
    population = population_module()
    zoo = population.zoo_module()
    group = EXTRA[name]
    base = (root or zoo.cache_root()) / "null-converged-extra"
    final = base / f"{name}-{group_key(group)}"
    if not (final / population.MANIFEST).is_file():
        with zoo._locked(base / f".{final.name}.lock"):
            if not (final / population.MANIFEST).is_file():

                def make(temp: Path) -> None:
                    if isinstance(group, SmallCorpusGroup):
                        manifest = build_small_group(group, temp, log or (lambda _: None))
                    else:
                        manifest = build_group(group, temp, log or (lambda _: None))
                    (temp / population.MANIFEST).write_text(
                        json.dumps(manifest, indent=1) + "\n", encoding="utf-8"
                    )

                zoo.build_into(final, make)
    return population.Population(final, json.loads((final / population.MANIFEST).read_text(encoding="utf-8")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build groups (or find them in the cache)")
    build.add_argument("names", nargs="*", help=f"groups to build (default: all): {', '.join(EXTRA)}")
    args = parser.parse_args(argv)
    for name in args.names or list(EXTRA):
        found = load_or_build(name, log=lambda message: print(message, flush=True))
        entry = found.manifest["groups"][name]
        print(
            f"{name}: {found.root}  loss {entry['loss_last_10pct_mean']}  "
            f"flatness {entry['loss_flatness_last_20pct']}  curve {entry['loss_curve']}  {entry['seconds']} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
