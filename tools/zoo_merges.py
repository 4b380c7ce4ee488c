"""The lineage zoo's merges (issue 15): models made by merging others, with the weights known.

mergekit's own methods, reproduced in numpy from mergekit 0.1.5's source (``merge_methods/
linear.py``, ``slerp.py``, ``generalized_task_arithmetic.py``; mergekit is not a dependency: its
wheel was only read as the reference):

* ``linear``: ``sum_i w_i P_i / sum_i w_i`` (``normalize``, mergekit's default);
* ``slerp``: the spherical interpolation of the two whole tensors, falling back to linear when
  their normalized dot product exceeds 0.9995; ``t`` may follow a gradient over the layers
  (mergekit interpolates a list of values across the layers) and differ between the attention
  and MLP matrices (mergekit's ``filter: self_attn`` / ``filter: mlp``);
* ``ties``: each parent's delta from the base keeps its largest-magnitude entries (``density``),
  one sign is elected per entry (the sign of the weighted sum), and the agreeing entries are
  averaged (weighted), then added to the base.

Cases, built on the main zoo (``tools/zoo.py``), on the real stories260K and, separately, on the
real SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized):

* two fine-tunes of ``base-s0`` (``finetune``, ``finetune-2``) merged linearly (0.7 / 0.3) and by
  SLERP (t from 0.2 to 0.8 over the layers for attention, 0.8 to 0.2 for the MLP, 0.5 elsewhere);
  and by TIES over ``base-s0`` (density 0.5), which the merge test is not expected to name;
* two unrelated bases of the same shapes (``base-s0``, ``base-s1``) merged linearly (0.6 / 0.4)
  and by SLERP (t = 0.35), where SLERP's weights sum to clearly more than 1;
* stories260K (as a Hugging Face folder) and the zoo's fine-tune of it merged linearly (0.5 / 0.5)
  and by SLERP (t = 0.3); a perturbed copy of stories260K (low-rank noise, as a LoRA would add)
  for the negative case;
* SmolLM2: two real fine-tunes of it (``tools/smollm2_finetune.py``: its default recipe, the last
  6 blocks trained on the first stretch of Python's documentation, and a sibling, the last 8
  blocks on a later stretch in another order) merged linearly (0.6 / 0.4), by SLERP (t from 0.2
  to 0.8 over the layers for attention, 0.8 to 0.2 for the MLP, 0.5 elsewhere) and by TIES over
  the original stored F16 (density 0.5); stored as F16 GGUFs (vectors F32, as the fine-tunes).
  Only the blocks either fine-tune trained (the last 8) differ between the parents: everywhere
  else both parents hold the same values, every merge there is a copy of them, and the merge
  weights can only be identified in those 8 blocks. The two parents are within a degree of each
  other (cosine above mergekit's 0.9995), so mergekit's SLERP falls back to linear interpolation.

Every merge records, per tensor name, the coefficients it applied to each parent (``truth``), so
tests compare the fitted weights with what was done.

Cached like the vocabulary cases: ``~/.cache/unshell-tests/zoo-merges/<key>/`` (this file, the
settings and the main zoo's key) and ``zoo-merges-smollm2/<key>/`` (this file, the settings, the
GGUF's sha256 and the two fine-tunes' cache keys). Building takes seconds after the main zoo (no
training); the SmolLM2 cases need three fine-tunes (about 25 CPU-seconds each, cached by
tools/smollm2_finetune.py, the first shared with tests/test_probe_real.py; the third only for a
control, the original against its three fine-tunes) and then about 25 CPU-seconds.

    python tools/zoo_merges.py build
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import math
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

MANIFEST = "zoo-merges.json"
_ZOO_MODULE = "unshell_tools_zoo"  # the name tests/zoo_fixture.py loads tools/zoo.py under
SLERP_DOT_THRESHOLD = 0.9995  # mergekit's: above it, SLERP is linear interpolation
ATTENTION = re.compile(r"(q_proj|k_proj|v_proj|o_proj|attn_q\.|attn_k\.|attn_v\.|attn_output)")
MLP = re.compile(r"(gate_proj|up_proj|down_proj|ffn_gate\.|ffn_up\.|ffn_down\.)")
LAYER = re.compile(r"(?:layers|blk)\.(\d+)\.")


def _tool_module(filename: str, name: str) -> ModuleType:
    """``tools/<filename>``, loaded once per process under ``name`` (the name the tests load it under,
    so that tests and this module share one copy)."""
    module = sys.modules.get(name)
    if module is None:
        path = Path(__file__).resolve().parent / filename
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def zoo_module() -> ModuleType:
    """``tools/zoo.py``, loaded once per process under the name the tests use."""
    return _tool_module("zoo.py", _ZOO_MODULE)


@dataclass(frozen=True)
class MergeSettings:
    """Every number that decides what this part of the zoo holds; part of the cache key."""

    finetunes_linear: tuple[float, float] = (0.7, 0.3)
    finetunes_slerp_attention: tuple[float, ...] = (0.2, 0.8)
    finetunes_slerp_mlp: tuple[float, ...] = (0.8, 0.2)
    finetunes_slerp_other: float = 0.5
    finetunes_ties_density: float = 0.5
    bases_linear: tuple[float, float] = (0.6, 0.4)
    bases_slerp: float = 0.35
    stories_linear: tuple[float, float] = (0.5, 0.5)
    stories_slerp: float = 0.3
    perturbation: float = 0.01  # low-rank noise, relative to each matrix's norm
    perturbation_rank: int = 8
    smollm_linear: tuple[float, float] = (0.6, 0.4)
    smollm_slerp_attention: tuple[float, ...] = (0.2, 0.8)
    smollm_slerp_mlp: tuple[float, ...] = (0.8, 0.2)
    smollm_slerp_other: float = 0.5
    smollm_ties_density: float = 0.5
    # The second parent: tools/smollm2_finetune.py's recipe with these changed (the first parent
    # is its default: the last 6 blocks, tokens 0 to 2,080 of the corpus, seed 0).
    smollm_sibling_seed: int = 1
    smollm_sibling_corpus_start: int = 4160  # two training slices later: no token shared
    smollm_sibling_train_layers: int = 8
    # A third fine-tune, only for the control "the original against its three fine-tunes".
    smollm_third_seed: int = 2
    smollm_third_corpus_start: int = 8320
    smollm_third_train_layers: int = 6


SETTINGS = MergeSettings()

# --- mergekit's methods ----------------------------------------------------------------------------


def linear_coefficients(weights: Sequence[float], normalize: bool = True) -> list[float]:
    """mergekit ``linear``: the coefficient of each parent."""
    total = sum(weights) if normalize else 1.0
    return [w / total for w in weights]


def slerp_coefficients(t: float, v0: np.ndarray, v1: np.ndarray, eps: float = 1e-8) -> tuple[float, float]:
    """mergekit ``slerp``: the coefficients of ``v0`` and ``v1`` (whole tensors) for ``t``."""
    a, b = v0.astype(np.float64).ravel(), v1.astype(np.float64).ravel()
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    dot = float(np.dot(a / (norm_a if norm_a > eps else 1.0), b / (norm_b if norm_b > eps else 1.0)))
    dot = min(1.0, max(-1.0, dot))
    if abs(dot) > SLERP_DOT_THRESHOLD:
        return 1.0 - t, t
    theta = math.acos(dot)
    return math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)


def gradient(values: Sequence[float], layer: int, layers: int) -> float:
    """mergekit's gradient: ``values`` spread evenly over the layers, linearly interpolated."""
    if len(values) == 1 or layers <= 1:
        return float(values[0])
    anchors = np.linspace(0, layers - 1, len(values))
    return float(np.interp(layer, anchors, values))


def ties(
    base: np.ndarray, parents: Sequence[np.ndarray], weights: Sequence[float], density: float
) -> np.ndarray:
    """mergekit ``ties`` (normalize on, lambda 1): trim each delta to its largest ``density``
    fraction, elect a sign per entry, average the agreeing entries (weighted)."""
    deltas = []
    origin = base.astype(np.float64)
    for parent, weight in zip(parents, weights, strict=True):
        delta = parent.astype(np.float64) - origin
        keep = max(1, round(density * delta.size))
        threshold = np.partition(np.abs(delta).ravel(), delta.size - keep)[delta.size - keep]
        deltas.append(weight * np.where(np.abs(delta) >= threshold, delta, 0.0))
    stacked = np.stack(deltas)
    elected = np.where(stacked.sum(axis=0) >= 0, 1.0, -1.0)
    agree = np.sign(stacked) == elected
    weight_sum = sum(w * agree[i] for i, w in enumerate(weights))
    mixed = (stacked * agree).sum(axis=0) / np.where(weight_sum == 0, 1.0, weight_sum)
    return (origin + mixed).astype(np.float32)


def gradient_t(
    attention: Sequence[float], mlp: Sequence[float], other: float, layers: int
) -> Callable[[str], float]:
    """SLERP's t for a tensor name: mergekit's gradients over the layers, one for the attention
    matrices and one for the MLP's (``filter: self_attn`` / ``filter: mlp``), ``other`` elsewhere."""

    def t_of(name: str) -> float:
        layer = layer_of(name)
        kind = category(name)
        if layer is None or kind == "other":
            return other
        return gradient(attention if kind == "attention" else mlp, layer, layers)

    return t_of


def category(name: str) -> str:
    """mergekit's filters: ``self_attn`` (the attention matrices), ``mlp``, or everything else."""
    if ATTENTION.search(name):
        return "attention"
    if MLP.search(name):
        return "mlp"
    return "other"


def layer_of(name: str) -> int | None:
    match = LAYER.search(name)
    return int(match.group(1)) if match else None


# --- reading and writing -------------------------------------------------------------------------


def read_all(path: Path) -> dict[str, np.ndarray]:
    from unshell.formats import open_checkpoint

    with open_checkpoint(path) as checkpoint:
        return {name: np.array(checkpoint.read(name), dtype=np.float32) for name in checkpoint.tensors}


def write_model(directory: Path, tensors: Mapping[str, np.ndarray], like: Path | None, dtype: str) -> None:
    """A safetensors folder (``dtype``: ``F32`` or ``F16``), with the config and tokenizer of
    ``like`` when that is a folder."""
    from unshell.formats.safetensors import write_safetensors

    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(
        directory / "model.safetensors",
        dict(tensors),
        metadata={"format": "pt"},
        dtypes={name: dtype for name in tensors},
    )
    if like is not None and like.is_dir():
        for extra in ("config.json", "tokenizer.json"):
            if (like / extra).is_file():
                shutil.copy(like / extra, directory / extra)


Combine = Callable[[str, list[np.ndarray]], tuple[np.ndarray, list[float]]]


def combine_all(
    tensors: Sequence[Mapping[str, np.ndarray]], combine: Combine
) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Merge tensor by tensor (``combine(name, arrays)`` -> merged tensor, coefficients): the
    merged tensors, and the coefficients applied to each parent per tensor name (the truth tests
    check)."""
    merged: dict[str, np.ndarray] = {}
    truth: dict[str, list[float]] = {}
    for name in tensors[0]:
        merged[name], truth[name] = combine(name, [t[name] for t in tensors])
    return merged, truth


def merge_models(
    directory: Path, parents: Sequence[Path], combine: Combine, dtype: str = "F32"
) -> dict[str, list[float]]:
    """Merge ``parents`` into a safetensors folder; returns the truth (see `combine_all`)."""
    merged, truth = combine_all([read_all(p) for p in parents], combine)
    write_model(directory, merged, parents[0], dtype)
    return truth


def linear_combine(weights: Sequence[float]) -> Combine:
    coefficients = linear_coefficients(weights)

    def combine(name: str, arrays: list[np.ndarray]) -> tuple[np.ndarray, list[float]]:
        out = sum(c * a.astype(np.float64) for c, a in zip(coefficients, arrays, strict=True))
        return np.asarray(out, dtype=np.float32), list(coefficients)

    return combine


def slerp_combine(t_of: Callable[[str], float]) -> Combine:
    def combine(name: str, arrays: list[np.ndarray]) -> tuple[np.ndarray, list[float]]:
        s0, s1 = slerp_coefficients(t_of(name), arrays[0], arrays[1])
        out = s0 * arrays[0].astype(np.float64) + s1 * arrays[1].astype(np.float64)
        return out.astype(np.float32), [s0, s1]

    return combine


def perturbed(source: Path, directory: Path, scale: float, rank: int, seed: int, dtype: str) -> None:
    """``source`` plus low-rank noise (what a LoRA adds) of ``scale`` times each matrix's norm;
    vectors get dense noise of the same relative size."""
    rng = np.random.default_rng(seed)
    tensors = read_all(source)
    out = {}
    for name, value in tensors.items():
        if value.ndim == 2:
            noise = rng.standard_normal((value.shape[0], rank)) @ rng.standard_normal((rank, value.shape[1]))
        else:
            noise = rng.standard_normal(value.shape)
        noise *= scale * np.linalg.norm(value) / max(float(np.linalg.norm(noise)), 1e-30)
        out[name] = (value + noise).astype(np.float32)
    write_model(directory, out, source, dtype)


# --- the cases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Merge:
    """A merged model and the truth about it."""

    name: str
    path: Path
    method: str  # "linear", "slerp", "ties"
    parents: tuple[Path, ...]
    truth: dict[str, list[float]]  # coefficients per tensor name, one per parent
    note: str
    # The layers where the parents differ (elsewhere the merge is a copy of them and its weights
    # cannot be identified); None: every layer.
    identifiable: tuple[int, ...] | None = None


@dataclass(frozen=True)
class NotMerged:
    """A model and candidate parents it is not a merge of, with why."""

    name: str
    path: Path
    candidates: tuple[Path, ...]
    note: str


@dataclass
class MergeZoo:
    root: Path
    merges: dict[str, Merge]
    negatives: dict[str, NotMerged]


def _cache_key(*parts: str) -> str:
    own = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    settings = json.dumps(dataclasses.asdict(SETTINGS), sort_keys=True)
    return hashlib.sha256("\n".join([own, settings, *parts]).encode()).hexdigest()[:16]


def _load_or_build(base: Path, key: str, build: Callable[[Path], None]) -> dict[str, Any]:
    Z = zoo_module()
    final = base / key
    if not (final / MANIFEST).is_file():
        with Z._locked(base / f".{key}.lock"):
            if not (final / MANIFEST).is_file():
                Z.build_into(final, build)
    manifest: dict[str, Any] = json.loads((final / MANIFEST).read_text(encoding="utf-8"))
    return manifest


def _resolve(manifest: dict[str, Any], root: Path, paths: Mapping[str, Path]) -> MergeZoo:
    files: dict[str, str] = manifest.get("files", {})  # models stored as one file under root

    def path(name: str) -> Path:
        return paths.get(name) or root / files.get(name, name)

    merges = {
        m["name"]: Merge(
            m["name"],
            path(m["name"]),
            m["method"],
            tuple(path(p) for p in m["parents"]),
            m["truth"],
            m["note"],
            None if m.get("identifiable") is None else tuple(m["identifiable"]),
        )
        for m in manifest["merges"]
    }
    negatives = {
        n["name"]: NotMerged(n["name"], path(n["b"]), tuple(path(p) for p in n["candidates"]), n["note"])
        for n in manifest["negatives"]
    }
    return MergeZoo(root, merges, negatives)


def load_or_build(log: Callable[[str], None] | None = None) -> MergeZoo:
    """The zoo's and stories260K's merges, built (seconds, after the main zoo) or from the cache."""
    Z = zoo_module()
    zoo = Z.load_or_build(log=log)
    s = SETTINGS
    layers = zoo.settings.layers

    def build(out: Path) -> None:
        m = zoo.models
        merges: list[dict[str, Any]] = []

        def add(name: str, method: str, parents: list[str], combine: Combine, note: str) -> None:
            paths = [m[p] if p in m else out / p for p in parents]
            truth = merge_models(out / name, paths, combine)
            merges.append({"name": name, "method": method, "parents": parents, "truth": truth, "note": note})

        finetune_t = gradient_t(
            s.finetunes_slerp_attention, s.finetunes_slerp_mlp, s.finetunes_slerp_other, layers
        )

        add(
            "ft-linear",
            "linear",
            ["finetune", "finetune-2"],
            linear_combine(s.finetunes_linear),
            f"mergekit linear {s.finetunes_linear} of two fine-tunes of base-s0",
        )
        add(
            "ft-slerp",
            "slerp",
            ["finetune", "finetune-2"],
            slerp_combine(finetune_t),
            f"mergekit slerp of two fine-tunes of base-s0, t {s.finetunes_slerp_attention} (attention), "
            f"{s.finetunes_slerp_mlp} (mlp), {s.finetunes_slerp_other} elsewhere",
        )
        add(
            "bases-linear",
            "linear",
            ["base-s0", "base-s1"],
            linear_combine(s.bases_linear),
            f"mergekit linear {s.bases_linear} of two independently trained bases",
        )
        add(
            "bases-slerp",
            "slerp",
            ["base-s0", "base-s1"],
            slerp_combine(lambda name: s.bases_slerp),
            f"mergekit slerp t={s.bases_slerp} of two independently trained bases",
        )
        # TIES over base-s0: not in the parents' span (see lineage/merges.py); its truth is the
        # method and the base, not per-tensor weights.
        merge_models(
            out / "ft-ties",
            [m["base-s0"], m["finetune"], m["finetune-2"]],
            lambda name, arrays: (ties(arrays[0], arrays[1:], [1.0, 1.0], s.finetunes_ties_density), []),
        )
        merges.append(
            {
                "name": "ft-ties",
                "method": "ties",
                "parents": ["base-s0", "finetune", "finetune-2"],
                "truth": {},
                "note": f"mergekit ties density {s.finetunes_ties_density} over base-s0",
            }
        )
        # stories260K: the real model as a Hugging Face folder, and a perturbed copy.
        params, shape = Z.load_llama2c(Z.STORIES)
        Z.save_hf(out / "stories260K-hf", params, shape, None)
        perturbed(
            out / "stories260K-hf",
            out / "stories260K-perturbed",
            s.perturbation,
            s.perturbation_rank,
            1,
            "F32",
        )
        add(
            "stories-linear",
            "linear",
            ["stories260K-hf", "stories260K-finetune"],
            linear_combine(s.stories_linear),
            f"mergekit linear {s.stories_linear} of stories260K and its fine-tune",
        )
        add(
            "stories-slerp",
            "slerp",
            ["stories260K-hf", "stories260K-finetune"],
            slerp_combine(lambda name: s.stories_slerp),
            f"mergekit slerp t={s.stories_slerp} of stories260K and its fine-tune",
        )
        negatives = [
            {
                "name": "finetune-vs-sibling",
                "b": "finetune",
                "candidates": ["base-s0", "finetune-2"],
                "note": "a fine-tune of base-s0 against its base and a sibling fine-tune",
            },
            {
                "name": "finetune-vs-unrelated",
                "b": "finetune",
                "candidates": ["base-s0", "base-s1"],
                "note": "a fine-tune of base-s0 against its base and an unrelated base",
            },
            {
                "name": "base-vs-its-finetunes",
                "b": "base-s0",
                "candidates": ["finetune", "finetune-2"],
                "note": "the common base of both candidates",
            },
            {
                "name": "independent-candidates",
                "b": "base-s2",
                "candidates": ["base-s0", "base-s1"],
                "note": "trained independently of both candidates",
            },
            {
                "name": "merge-vs-unrelated",
                "b": "bases-linear",
                "candidates": ["base-s2", "base-s3"],
                "note": "a merge, against candidates it does not come from",
            },
            {
                "name": "stories-finetune-vs-perturbed",
                "b": "stories260K-finetune",
                "candidates": ["stories260K-hf", "stories260K-perturbed"],
                "note": "the zoo's fine-tune of stories260K against stories260K and a perturbed copy of it",
            },
        ]
        manifest = {"merges": merges, "negatives": negatives, "settings": dataclasses.asdict(s)}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")

    base = Z.cache_root() / "zoo-merges"
    manifest = _load_or_build(base, _cache_key(Z.cache_key()), build)
    root = base / _cache_key(Z.cache_key())
    return _resolve(manifest, root, zoo.models)


_FINETUNE_MODULE = "unshell_tools_smollm2_finetune"  # the name tests/llama_server.py loads it under


def finetune_module() -> ModuleType:
    """``tools/smollm2_finetune.py``, loaded once per process under the name the tests use."""
    return _tool_module("smollm2_finetune.py", _FINETUNE_MODULE)


def smollm2_parents(gguf: Path, log: Callable[[str], None] | None = None) -> tuple[Any, Any, Any]:
    """The real fine-tunes of SmolLM2: the two merged here, tools/smollm2_finetune.py's default
    recipe (the one tests/test_probe_real.py uses) and a sibling (`MergeSettings`'
    ``smollm_sibling_*``), and a third one for a control (``smollm_third_*``)."""
    ft = finetune_module()
    s = SETTINGS
    sibling = dataclasses.replace(
        ft.SETTINGS,
        seed=s.smollm_sibling_seed,
        corpus_start=s.smollm_sibling_corpus_start,
        train_layers=s.smollm_sibling_train_layers,
    )
    third = dataclasses.replace(
        ft.SETTINGS,
        seed=s.smollm_third_seed,
        corpus_start=s.smollm_third_corpus_start,
        train_layers=s.smollm_third_train_layers,
    )
    return tuple(ft.load_or_build(gguf, recipe, log) for recipe in (ft.SETTINGS, sibling, third))


def _trained_layers(manifest: Mapping[str, Any]) -> set[int]:
    """The blocks a fine-tune changed, from its build manifest."""
    return {layer for name in manifest["changed"] if (layer := layer_of(name)) is not None}


def load_or_build_smollm2(gguf: Path, log: Callable[[str], None] | None = None) -> MergeZoo:
    """Merges of two real fine-tunes of SmolLM2-135M-Instruct (``gguf``, the Q4_1 original), as F16
    GGUFs: about 1.1 GB in the cache; the three fine-tunes (cached apart) about 25 CPU-seconds
    each, then about 25 CPU-seconds."""
    s = SETTINGS
    ft = finetune_module()
    first, second, third = smollm2_parents(gguf, log)
    identifiable = sorted(_trained_layers(first.manifest) | _trained_layers(second.manifest))
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    layers = int(ft.read_shape(gguf).layers)
    files = {
        name: f"{name}.gguf" for name in ("smollm2-f16", "smollm2-linear", "smollm2-slerp", "smollm2-ties")
    }

    def build(out: Path) -> None:
        original = read_all(gguf)
        # The original as the fine-tunes store their untouched tensors (F16): TIES's base, and the
        # base-against-its-fine-tunes control.
        ft.write_gguf(gguf, out / files["smollm2-f16"], original, name="SmolLM2-135M-Instruct (stored F16)")
        base = read_all(out / files["smollm2-f16"])
        parents = [read_all(first.path), read_all(second.path)]
        slerp_t = gradient_t(s.smollm_slerp_attention, s.smollm_slerp_mlp, s.smollm_slerp_other, layers)
        merges = []
        for name, method, combine, note in (
            ("smollm2-linear", "linear", linear_combine(s.smollm_linear), f"{s.smollm_linear}"),
            (
                "smollm2-slerp",
                "slerp",
                slerp_combine(slerp_t),
                f"t {s.smollm_slerp_attention} (attention), {s.smollm_slerp_mlp} (mlp), "
                f"{s.smollm_slerp_other} elsewhere",
            ),
        ):
            merged, truth = combine_all(parents, combine)
            ft.write_gguf(gguf, out / files[name], merged, name=f"SmolLM2 fine-tunes, {method} merge")
            merges.append(
                {
                    "name": name,
                    "method": method,
                    "parents": ["smollm2-ft", "smollm2-ft-sibling"],
                    "truth": truth,
                    "identifiable": identifiable,
                    "note": f"mergekit {method} {note} of two real fine-tunes of SmolLM2-135M-Instruct",
                }
            )
        tied, _ = combine_all(
            [base, *parents],
            lambda name, arrays: (ties(arrays[0], arrays[1:], [1.0, 1.0], s.smollm_ties_density), []),
        )
        ft.write_gguf(gguf, out / files["smollm2-ties"], tied, name="SmolLM2 fine-tunes, ties merge")
        merges.append(
            {
                "name": "smollm2-ties",
                "method": "ties",
                "parents": ["smollm2-f16", "smollm2-ft", "smollm2-ft-sibling"],
                "truth": {},
                "identifiable": identifiable,
                "note": f"mergekit ties density {s.smollm_ties_density} over SmolLM2 stored F16",
            }
        )
        negatives = [
            {
                "name": "smollm2-finetune-vs-sibling",
                "b": "smollm2-ft",
                "candidates": ["smollm2", "smollm2-ft-sibling"],
                "note": "a real fine-tune of SmolLM2 against the original and a sibling fine-tune",
            },
            {
                "name": "smollm2-sibling-vs-finetune",
                "b": "smollm2-ft-sibling",
                "candidates": ["smollm2", "smollm2-ft"],
                "note": "the sibling fine-tune against the original and the first fine-tune",
            },
            {
                "name": "smollm2-base-vs-its-finetunes",
                "b": "smollm2-f16",
                "candidates": ["smollm2-ft", "smollm2-ft-sibling"],
                "note": "SmolLM2 (stored F16, as the fine-tunes store what they did not train) against "
                "its two fine-tunes: only the trained blocks decide",
            },
            {
                "name": "smollm2-base-vs-three-finetunes",
                "b": "smollm2-f16",
                "candidates": ["smollm2-ft", "smollm2-ft-sibling", "smollm2-ft-third"],
                "note": "SmolLM2 (stored F16) against three of its fine-tunes: their weighted mean is "
                "closer to it than any one of them",
            },
        ]
        manifest = {
            "merges": merges,
            "negatives": negatives,
            "files": files,
            "parents": {
                "smollm2-ft": first.manifest,
                "smollm2-ft-sibling": second.manifest,
                "smollm2-ft-third": third.manifest,
            },
            "settings": dataclasses.asdict(s),
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")

    Z = zoo_module()
    base_dir = Z.cache_root() / "zoo-merges-smollm2"
    key = _cache_key(digest, first.path.parent.name, second.path.parent.name, third.path.parent.name)
    manifest = _load_or_build(base_dir, key, build)
    paths = {
        "smollm2": gguf,
        "smollm2-ft": first.path,
        "smollm2-ft-sibling": second.path,
        "smollm2-ft-third": third.path,
    }
    return _resolve(manifest, base_dir / key, paths)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the merge cases (or find them in the cache)")
    parser.parse_args(argv)
    zoo = load_or_build(log=lambda message: print(message, flush=True))
    print(f"zoo-merges: {zoo.root}, {len(zoo.merges)} merges, {len(zoo.negatives)} negatives")
    return 0


if __name__ == "__main__":
    sys.exit(main())
