"""Null populations of independent models trained to convergence, to calibrate `unshell.compare`.

The zoo's null models (``tools/zoo.py``, ``Zoo.null_pairs``) are trained for 40 steps: their
weights are still mostly their random initialization, so they are nearly as unlike as two random
models. Independent models of one recipe trained to the end of their schedule become much more
alike (issue 19: seven llama2.c-shaped models trained 4,000 steps gave p = 7e-5 with full `compare`
and 1e-5 with `--quick`). This module builds such models, small enough to train in a few minutes:
each is trained to the end of a cosine schedule that decays to 2% of its peak rate, where its
loss has levelled off (it still moves by 1% to 2.6% over the last fifth of the steps; the
manifest records each group's loss curve and that change):

* ``docs-h32``: 21 models (210 pairs), hidden 32, 4 layers, trained on Python's documentation
  (the zoo's corpus and 512-piece byte-level BPE tokenizer) with one recipe, differing only in seed;
* ``docs-h64``: 6 models of a second size (hidden 64, 2 layers), same data and recipe;
* ``docstrings-h32``: 6 models of the first size on a second data set (standard-library docstrings);
* ``docs-h32-recipe2``: 5 models of the first size and data with another recipe (context length,
  learning rate, warmup, weight decay, final learning rate);
* pairs across groups: other data, other recipe (same shapes, so every matrix is comparable).

Every model of a group is trained in one batched run: the models' parameters are stacked on a
leading axis and one forward pass computes all of them, which costs a few per-operation overheads
instead of one per model. The models stay independent: each has its own initialization seed and
its own data order, AdamW works element by element, and gradient clipping is per model, so every
model's trajectory is exactly the one it would have alone (`batched_forward` equals the zoo's
`forward` for each model; `build_group` checks that on the final weights).

The population is cached under ``~/.cache/unshell-tests/null-converged/<key>/`` (``UNSHELL_TEST_CACHE``
moves the root), where ``<key>`` hashes this file's code (its syntax tree without docstrings, so
that rewording or reformatting does not rebuild it), the zoo functions it uses (tokenizer, shapes,
initialization, writer), the corpora, and the Python and torch versions. Groups build in two
processes (one thread each), in a temporary folder renamed into place, under a lock.

    python tools/null_population.py build
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

TOOLS = Path(__file__).resolve().parent
MANIFEST = "population.json"
FORMAT_VERSION = 1
SEED_OFFSET = 20_000


def zoo_module() -> ModuleType:
    """``tools/zoo.py`` (shared with tests/zoo_fixture.py under the same module name)."""
    name = "unshell_tools_zoo"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, TOOLS / "zoo.py")
        if spec is None or spec.loader is None:
            raise ImportError("cannot load tools/zoo.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class TrainRecipe:
    """AdamW, linear warmup, cosine decay to ``min_lr_ratio`` of the peak: a schedule that ends
    with the loss flat."""

    steps: int
    lr: float
    batch: int = 32
    seq: int = 32
    warmup: int = 20
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.1


@dataclass(frozen=True)
class Group:
    """Independent models of one shape, data set and recipe, differing only in seed."""

    name: str
    models: int
    hidden: int
    layers: int
    intermediate: int
    corpus: str  # "docs" or "docstrings"
    recipe: TrainRecipe
    heads: int = 4
    kv_heads: int = 2
    seed: int = 0  # first seed: SEED_OFFSET + seed + i


MAIN_RECIPE = TrainRecipe(steps=300, lr=1e-2)
GROUPS: tuple[Group, ...] = (
    Group("docs-h32", 21, 32, 4, 96, "docs", MAIN_RECIPE, seed=0),
    Group("docs-h64", 6, 64, 2, 128, "docs", MAIN_RECIPE, seed=100),
    Group("docstrings-h32", 6, 32, 4, 96, "docstrings", MAIN_RECIPE, seed=200),
    Group(
        "docs-h32-recipe2",
        5,
        32,
        4,
        96,
        "docs",
        TrainRecipe(steps=300, lr=4e-3, batch=16, seq=64, warmup=40, min_lr_ratio=0.1, weight_decay=0.0),
        seed=300,
    ),
)
# Pairs across groups of one shape: (group of A, group of B, how many, what differs).
CROSS: tuple[tuple[str, str, int, str], ...] = (
    ("docs-h32", "docstrings-h32", 21, "same shape and recipe, other data"),
    ("docs-h32", "docs-h32-recipe2", 15, "same shape and data, other recipe"),
)


@dataclass(frozen=True)
class NullPair:
    name: str
    a: Path
    b: Path
    population: str  # the group, or "cross"
    note: str


@dataclass
class Population:
    root: Path
    manifest: dict[str, Any]

    def models(self, group: str) -> list[Path]:
        return [
            self.root / group / f"{group}-{i:02d}" for i in range(self.manifest["groups"][group]["models"])
        ]

    def pairs(self, group: str) -> list[NullPair]:
        """Every pair within a group (same shape, data and recipe; other seed)."""
        paths = self.models(group)
        return [
            NullPair(
                f"{group}:{i:02d}-vs-{j:02d}", paths[i], paths[j], group, "same data and recipe, other seed"
            )
            for i in range(len(paths))
            for j in range(i + 1, len(paths))
        ]

    def cross_pairs(self) -> list[NullPair]:
        """Pairs across groups: model i of one against model i + k of the other, cycling."""
        out = []
        for group_a, group_b, count, note in CROSS:
            paths_a, paths_b = self.models(group_a), self.models(group_b)
            for k in range(count):
                i, j = k % len(paths_a), (k + k // len(paths_b)) % len(paths_b)
                out.append(
                    NullPair(f"{group_a}:{i:02d}-vs-{group_b}:{j:02d}", paths_a[i], paths_b[j], "cross", note)
                )
        return out

    def all_pairs(self) -> list[NullPair]:
        return [pair for group in self.manifest["groups"] for pair in self.pairs(group)] + self.cross_pairs()


# --------------------------------------------------------------------------------------------
# Batched training: E independent models in one pass
# --------------------------------------------------------------------------------------------


def group_shape(group: Group, vocab: int) -> Any:
    zoo = zoo_module()
    return zoo.Shape(
        hidden=group.hidden,
        layers=group.layers,
        heads=group.heads,
        kv_heads=group.kv_heads,
        head_dim=group.hidden // group.heads,
        intermediate=group.intermediate,
        vocab=vocab,
    )


def batched_forward(params: dict[str, torch.Tensor], shape: Any, ids: torch.Tensor) -> torch.Tensor:
    """The zoo's Llama `forward` for E models at once: every parameter ``[E, *dims]``, ids
    ``[E, batch, time]``, logits ``[E, batch, time, vocab]``."""
    import torch
    import torch.nn.functional as F

    zoo = zoo_module()
    models, batch, length = ids.shape
    s = shape
    cos, sin = zoo.rope_tables(s, length)

    def linear(h: torch.Tensor, name: str) -> torch.Tensor:
        weight = params[name]  # [E, out, in]: one batched GEMM for all models
        flat = torch.bmm(h.reshape(models, -1, h.shape[-1]), weight.transpose(1, 2))
        return flat.view(*h.shape[:-1], weight.shape[1])

    def norm(x: torch.Tensor, name: str) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + s.rms_eps) * params[name][:, None, None]

    x = params[zoo.EMBED][torch.arange(models)[:, None, None], ids]
    for i in range(s.layers):
        n = zoo.layer_names(i)
        h = norm(x, n["norm1"])
        q = linear(h, n["q"]).view(models, batch, length, s.heads, s.head_dim).transpose(2, 3)
        k = linear(h, n["k"]).view(models, batch, length, s.kv_heads, s.head_dim).transpose(2, 3)
        v = linear(h, n["v"]).view(models, batch, length, s.kv_heads, s.head_dim).transpose(2, 3)
        q = q * cos + zoo._rotate_half(q) * sin
        k = k * cos + zoo._rotate_half(k) * sin
        group = s.heads // s.kv_heads
        k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        attention = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + linear(attention.transpose(2, 3).reshape(models, batch, length, s.heads * s.head_dim), n["o"])
        h = norm(x, n["norm2"])
        x = x + linear(F.silu(linear(h, n["gate"])) * linear(h, n["up"]), n["down"])
    x = norm(x, zoo.FINAL_NORM)
    logits: torch.Tensor = linear(x, zoo.EMBED if s.tied else zoo.LM_HEAD)
    return logits


def _learning_rate(recipe: TrainRecipe, step: int) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    floor = recipe.lr * recipe.min_lr_ratio
    return floor + (recipe.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def train_group(
    shape: Any, tokens: np.ndarray, recipe: TrainRecipe, seeds: Sequence[int]
) -> tuple[list[dict[str, torch.Tensor]], np.ndarray]:
    """Train one model per seed (its initialization and data order) from the zoo's Hugging Face
    initialization; returns each model's parameters and the loss of every step, ``[steps, E]``."""
    import torch
    import torch.nn.functional as F

    zoo = zoo_module()
    inits = [zoo.init_params(shape, seed) for seed in seeds]
    params = {name: torch.stack([p[name] for p in inits]).requires_grad_(True) for name in inits[0]}
    data = torch.from_numpy(tokens.astype(np.int64))
    offsets = torch.arange(recipe.seq + 1)
    starts = torch.stack(
        [
            torch.randint(
                0,
                data.numel() - recipe.seq - 1,
                (recipe.steps, recipe.batch),
                generator=torch.Generator().manual_seed(seed + 7_919),
            )
            for seed in seeds
        ],
        dim=1,
    )  # [steps, E, batch]
    decay = [t for t in params.values() if t.ndim > 2]
    no_decay = [t for t in params.values() if t.ndim <= 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    losses = np.zeros((recipe.steps, len(seeds)))
    with torch.enable_grad():
        for step in range(recipe.steps):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(recipe, step)
            window = data[starts[step][..., None] + offsets]  # [E, batch, seq + 1]
            logits = batched_forward(params, shape, window[..., :-1])
            per_token = F.cross_entropy(
                logits.reshape(-1, shape.vocab), window[..., 1:].reshape(-1), reduction="none"
            )
            per_model = per_token.view(len(seeds), -1).mean(dim=1)
            optimizer.zero_grad(set_to_none=True)
            per_model.sum().backward()  # model e's gradient is that of its own loss
            # clip_grad_norm_(1.0) per model, as each would be clipped alone
            norms = torch.sqrt(sum(p.grad.pow(2).flatten(1).sum(1) for p in params.values()))
            scale = (1.0 / (norms + 1e-6)).clamp(max=1.0)
            for p in params.values():
                p.grad.mul_(scale.view(-1, *([1] * (p.ndim - 1))))
            optimizer.step()
            losses[step] = per_model.detach().numpy()
    out = [{name: t[e].detach().clone() for name, t in params.items()} for e in range(len(seeds))]
    return out, losses


def flatness(losses: np.ndarray) -> float:
    """Relative change of the mean loss between the two halves of the last 20% of steps (per
    model, the largest): the loss is flat when it is small."""
    tail = losses[-max(2, len(losses) // 5) :]
    half = len(tail) // 2
    first, last = tail[:half].mean(axis=0), tail[half:].mean(axis=0)
    return float(np.max((first - last) / last))


def build_group(group: Group, out: Path) -> dict[str, Any]:
    """Train and write one group's models into ``out / group.name``; returns its manifest entry."""
    import torch

    zoo = zoo_module()
    started = time.monotonic()
    with zoo.torch_session(1):
        text = zoo.corpora()
        bpe, _ = zoo.tokenizers(zoo.SETTINGS)
        tokens = bpe.encode(text.docs if group.corpus == "docs" else text.docstrings)
        shape = group_shape(group, bpe.vocab_size)
        seeds = [SEED_OFFSET + group.seed + i for i in range(group.models)]
        models, losses = train_group(shape, tokens, group.recipe, seeds)
        # The batched pass must be the zoo's forward, model by model.
        probe = torch.from_numpy(tokens[: 2 * 33].astype(np.int64)).view(2, 33)
        for e in (0, len(models) - 1):
            alone = zoo.forward(models[e], shape, probe)
            stacked = batched_forward({n: t[None] for n, t in models[e].items()}, shape, probe[None])[0]
            if not torch.allclose(alone, stacked, atol=1e-4, rtol=1e-4):
                raise RuntimeError("batched_forward differs from the zoo's forward")
        for e, params in enumerate(models):
            folder = out / group.name / f"{group.name}-{e:02d}"
            zoo.save_hf(folder, params, shape, bpe)
            record = {
                "seed": seeds[e],
                "loss_first": round(float(losses[0, e]), 4),
                "loss_last_10pct": round(float(losses[-len(losses) // 10 :, e].mean()), 4),
            }
            (folder / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return {
        **dataclasses.asdict(group),
        "loss_last_10pct_mean": round(float(losses[-len(losses) // 10 :].mean()), 4),
        "loss_flatness_last_20pct": round(flatness(losses), 5),
        # the group's mean loss at every tenth of training, for the record
        "loss_curve": [round(float(losses[k].mean()), 4) for k in range(0, len(losses), len(losses) // 10)],
        "seconds": round(time.monotonic() - started, 1),
    }


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def _code_without_docstrings(source: str) -> str:
    """The syntax tree of ``source`` with every docstring removed, as text: what the models
    depend on, whatever the formatting, comments and documentation."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def cache_key() -> str:
    """This file, the zoo code it runs (corpora, tokenizer, shapes, initialization, RoPE, writer),
    the corpora's text, the settings, and the Python and torch versions."""
    import torch

    zoo = zoo_module()
    used = [
        zoo.docs_corpus,
        zoo.docstring_corpus,
        zoo.learn_bpe,
        zoo._merge_pair,
        zoo.ByteBPE,
        zoo.tokenizers,
        zoo.Shape,
        zoo.layer_names,
        zoo.tensor_shapes,
        zoo.init_params,
        zoo.rope_tables,
        zoo._rotate_half,
        zoo.save_hf,
    ]
    parts = [
        hashlib.sha256(
            _code_without_docstrings(Path(__file__).read_text(encoding="utf-8")).encode()
        ).hexdigest(),
        *(hashlib.sha256(inspect.getsource(f).encode()).hexdigest() for f in used),
        json.dumps(dataclasses.asdict(zoo.SETTINGS), sort_keys=True),
        zoo.corpora().digest(),
        f"{sys.version_info[0]}.{sys.version_info[1]}",
        torch.__version__,
        str(FORMAT_VERSION),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _build_one(group: Group, out: str) -> dict[str, Any]:
    return build_group(group, Path(out))


def build(out: Path, log: Callable[[str], None], workers: int = 2) -> dict[str, Any]:
    """Every group into ``out``, largest first, on ``workers`` processes of one thread each."""
    started = time.monotonic()
    order = sorted(GROUPS, key=lambda g: -g.models * g.hidden * g.recipe.steps * g.recipe.batch)
    entries: dict[str, Any] = {}
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        futures = {pool.submit(_build_one, group, str(out)): group for group in order}
        for future in concurrent.futures.as_completed(futures):
            entry = future.result()
            entries[entry["name"]] = entry
            log(
                f"{time.monotonic() - started:6.1f}s  {entry['name']}: {entry['models']} models, "
                f"loss {entry['loss_last_10pct_mean']}, flatness {entry['loss_flatness_last_20pct']}"
            )
    manifest = {
        "format_version": FORMAT_VERSION,
        "groups": {group.name: entries[group.name] for group in GROUPS},
        "cross": [list(c) for c in CROSS],
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def load_or_build(root: Path | None = None, log: Callable[[str], None] | None = None) -> Population:
    """The cached population, built first if needed (several processes: one builds)."""
    zoo = zoo_module()
    base = (root or zoo.cache_root()) / "null-converged"
    key = cache_key()
    final = base / key
    if not (final / MANIFEST).is_file():
        with zoo._locked(base / f".{key}.lock"):
            if not (final / MANIFEST).is_file():
                zoo.build_into(final, lambda temp: build(temp, log or (lambda _: None)))
    return Population(final, json.loads((final / MANIFEST).read_text(encoding="utf-8")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the population (or find it in the cache)")
    args = parser.parse_args(argv)
    assert args.command == "build"
    population = load_or_build(log=lambda message: print(message, flush=True))
    print(f"population: {population.root} (built in {population.manifest['build_seconds']} s)")
    for name, entry in population.manifest["groups"].items():
        print(
            f"  {name:18s} {entry['models']:3d} models  loss {entry['loss_last_10pct_mean']}  "
            f"flatness {entry['loss_flatness_last_20pct']}  {entry['seconds']} s"
        )
    print(f"pairs: {len(population.all_pairs())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
