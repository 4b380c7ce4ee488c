"""`unshell compare` on the lineage zoo (tools/zoo.py: tiny Llama models trained on real text,
their derivatives and obfuscations, and independently trained models), and null calibration.

Ground truth comes from how each model was made, never from unshell's answers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import unshell
from zoo_fixture import compared, zoo

STRUCTURAL_TAGS = {"quantized", "pruned", "upscaled", "vocab-extended"}
# Obfuscations that keep every value (only names and positions change): the truthful verdict is
# "identical", which the issue defines as equal values up to renaming and value-preserving re-layout.
VALUE_PRESERVING = {"rename", "permute-mlp", "permute-heads"}


def _obfuscations(note: str) -> set[str] | None:
    prefix = "obfuscation of "
    if not note.startswith(prefix) or ": " not in note:
        return None
    return {step.strip() for step in note.split(": ", 1)[1].split(",")}


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[object, unshell.CompareResult]]:
    lineage = zoo()
    out = {}
    for pair in [*lineage.derived, *lineage.independent]:
        out[pair.name] = (pair, compared(pair.a, pair.b))
    return out


def test_zoo_is_large_enough() -> None:
    lineage = zoo()
    assert len(lineage.derived) >= 30 and len(lineage.independent) >= 100
    hows = set().union(*(p.how for p in lineage.derived))
    assert {
        "finetune",
        "continued-pretraining",
        "pruned",
        "upscaled",
        "vocab-extended",
        "quantized",
        "merged",
        "obfuscated",
    } <= hows


def test_every_derived_pair_is_detected(results: dict) -> None:
    failures = []
    for pair, result in (results[p.name] for p in zoo().derived):
        steps = _obfuscations(pair.note)
        if steps is not None and steps <= VALUE_PRESERVING:
            ok = result.verdict == "identical"
        else:
            ok = result.verdict == "derived" and result.p_value is not None and result.p_value < 1e-6
        if not ok:
            failures.append(f"{pair.name}: {result.verdict} p={result.p_value}")
    assert not failures, failures


def test_no_independent_pair_is_accused(results: dict) -> None:
    accused = [
        f"{pair.name}: p={result.p_value}"
        for pair, result in (results[p.name] for p in zoo().independent)
        if result.verdict in ("derived", "identical")
    ]
    assert not accused, accused
    # Same data, same recipe, different seed: the hardest negatives still look independent.
    hardest = [results[p.name][1] for p in zoo().independent if "same data and recipe" in p.note]
    assert hardest and all(r.verdict == "independent" for r in hardest)


def test_the_identity_is_kept_only_for_unrotated_derivatives(results: dict) -> None:
    """The embedding alignment is fitted for every independent pair (so their p-values are what
    the fitted test gives: `sketch.IDENTITY_KEPT_RESIDUAL` leaves the null as it was) and for every
    derivative whose residual stream was rotated; most unrotated derivatives keep the identity."""
    wrongly_kept = [
        pair.name
        for pair, result in (results[p.name] for p in zoo().independent)
        if result.anchored is not None and not result.anchored.fitted
    ]
    assert not wrongly_kept, wrongly_kept
    kept = 0
    for pair, result in (results[p.name] for p in zoo().derived):
        steps = _obfuscations(pair.note) or set()
        if result.anchored is None:
            continue
        if steps & {"rotate-residual", "signed-permute-residual"}:
            wrongly_kept += [pair.name] if not result.anchored.fitted else []
        else:
            kept += not result.anchored.fitted
    assert not wrongly_kept, wrongly_kept
    assert kept >= 10


def test_how_names_what_was_done(results: dict) -> None:
    missing = []
    for pair, result in (results[p.name] for p in zoo().derived):
        if result.verdict != "derived":
            continue
        if pair.name.startswith(("base-s0->", "stories260K->")):
            for tag in (set(pair.how) & STRUCTURAL_TAGS) - set(result.how):
                missing.append(f"{pair.name}: {tag}")
        steps = _obfuscations(pair.note) or set()
        if (
            steps & {"rotate-residual", "signed-permute-residual", "permute-mlp"}
            and "obfuscated" not in result.how
        ):
            missing.append(f"{pair.name}: obfuscated")
    assert not missing, missing


def test_layer_map_shows_upscaling_and_pruning(results: dict) -> None:
    _, upscaled = results["base-s0->upscaled"]
    # layers 4 -> 6 by duplication [0, 1, 2, 1, 2, 3]
    assert [row["layer_a"] for row in upscaled.layers] == [0, 1, 2, 1, 2, 3]
    _, pruned = results["base-s0->pruned-depth"]
    assert [row["layer_a"] for row in pruned.layers] == [0, 1, 3]  # layer 2 dropped


def test_null_calibration() -> None:
    """Over at least 200 independent pairs the fraction with p < alpha is at most alpha. (The
    converged population: `test_null_converged.py`.)"""
    pairs = zoo().null_pairs(200)
    assert len(pairs) >= 200
    p_values = np.array([unshell.compare(pair.a, pair.b).p_value for pair in pairs], dtype=float)
    for alpha in (0.01, 0.05, 0.2):
        # allow two binomial standard errors of sampling noise
        bound = alpha + 2 * np.sqrt(alpha * (1 - alpha) / len(p_values))
        assert (p_values < alpha).mean() <= bound, (alpha, (p_values < alpha).mean())


def test_value_preserving_copies_are_identical() -> None:
    """Resharded, renamed and GGUF-F32 copies hold the same values: `identical`, with hashes."""
    pairs = zoo().identical
    assert pairs
    for pair in pairs:
        result = unshell.compare(pair.a, pair.b)
        assert result.verdict == "identical", (pair.name, result.verdict, result.p_value)


def _with_changed_rows(source: Path, out: Path, change: str) -> Path:
    """A copy of the zoo model ``source`` with one kind of row changed, and nothing else.
    ``mlp-noise``: Gaussian noise of four times each row's RMS added to every MLP input row
    (``up_proj``): rows that long training moved, none keeping a twin among A's.
    ``mlp-permute``: the same rows shuffled, with noise of 5 % of their RMS (so that no hash shows
    the values kept), each keeping its twin elsewhere (obfuscation).
    ``embed-noise``: noise of 1.5 times each row's RMS added to every embedding row: the fitted
    residual alignment drifts off the identity (as long continued pretraining makes it) without
    fitting the anchors much better than no transform."""
    from unshell.formats import open_checkpoint
    from unshell.formats.safetensors import write_safetensors

    rng = np.random.default_rng(7)
    target, how = change.split("-")
    suffix = "mlp.up_proj.weight" if target == "mlp" else "embed_tokens.weight"
    arrays: dict[str, np.ndarray] = {}
    with open_checkpoint(source) as checkpoint:
        for name in checkpoint.tensors:
            value = np.array(checkpoint.read(name), dtype=np.float32)
            if name.endswith(suffix):
                rms = np.sqrt(np.mean(value * value, axis=1, keepdims=True))
                scale = 0.05 if how == "permute" else 4.0 if target == "mlp" else 1.5
                value = value + scale * rms * rng.standard_normal(value.shape).astype(np.float32)
                if how == "permute":
                    value = value[rng.permutation(value.shape[0])]
            arrays[name] = value
    out.mkdir()
    for extra in ("config.json", "tokenizer.json"):
        shutil.copy(source / extra, out / extra)
    write_safetensors(out / "model.safetensors", arrays, metadata={"format": "pt"})
    return out


def test_rows_moved_by_training_are_not_called_obfuscated(tmp_path: Path) -> None:
    """`how` says "obfuscated" when rows were permuted, not when training moved them far: that
    word says someone hid a derivative, and heavy training is no evidence of it."""
    base = zoo().models["base-s0"]
    results = {
        change: unshell.compare(base, _with_changed_rows(base, tmp_path / change, change))
        for change in ("mlp-noise", "embed-noise", "mlp-permute")
    }

    # Attention and norms are A's: each is derived, whatever its changed rows say.
    assert all(result.verdict == "derived" for result in results.values()), results
    assert "obfuscated" not in results["mlp-noise"].how, results["mlp-noise"].how
    assert "obfuscated" not in results["embed-noise"].how, results["embed-noise"].how
    assert "obfuscated" in results["mlp-permute"].how, results["mlp-permute"].how
