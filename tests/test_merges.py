"""`unshell compare B --against A1 A2`: is B a merge of its candidate parents?

Truths come from how each model was made (tools/zoo_merges.py: mergekit's linear and SLERP
reproduced, with the coefficients applied to every tensor recorded), never from unshell's answers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unshell.errors import UsageError
from unshell.formats import open_checkpoint
from unshell.lineage.canonical import canonical_model
from unshell.lineage.merges import (
    MERGE_MIN_BEYOND_ANCESTOR,
    MERGE_MIN_EXPLAINED,
    SPARSE_BASE_MAX_CLOSENESS,
    MergeFit,
    binomial_upper_tail_log10,
    compare_merge,
    decide_merge,
    fit_merge,
    fit_tensor,
)
from zoo_fixture import zoo_module

# Fitted weights against the coefficients the merge applied: F32 merges are exact to about 1e-5;
# the SmolLM2 merges are stored in F16 (rounding of about 5e-4 of each value; up to 0.004 of bias
# in the blocks where the parents differ by only a few units in the last place).
WEIGHT_TOLERANCE = 0.01
SLERP_T_TOLERANCE = 0.01


def _zoo_merges() -> Any:
    import importlib.util

    zoo_module()  # tools/zoo.py under the tests' name first
    module = sys.modules.get("unshell_tools_zoo_merges")
    if module is None:
        path = Path(__file__).resolve().parent.parent / "tools" / "zoo_merges.py"
        spec = importlib.util.spec_from_file_location("unshell_tools_zoo_merges", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["unshell_tools_zoo_merges"] = module
        spec.loader.exec_module(module)
    return module


def _fit(b: Path, parents: tuple[Path, ...]) -> tuple[MergeFit, Any]:
    models = [canonical_model(open_checkpoint(p)) for p in (b, *parents)]
    try:
        return fit_merge(models[0], models[1:], [str(p) for p in parents]), models[0]
    finally:
        for model in models:
            model.checkpoint.close()


def _weight_errors(
    fit: MergeFit, model_b: Any, truth: dict[str, list[float]], layers: tuple[int, ...] | None = None
) -> list[str]:
    """Tensors (in ``layers``, or all) whose fitted weights are off the coefficients applied."""
    errors = []
    for tensor in fit.tensors:
        if layers is not None and tensor.layer not in layers:
            continue
        name = model_b.slots[(tensor.layer, tensor.role)][0]
        expected = truth[name]
        if max(abs(w - e) for w, e in zip(tensor.weights, expected, strict=True)) > WEIGHT_TOLERANCE:
            errors.append(f"{name}: fitted {tensor.weights}, made with {expected}")
    return errors


# --- the fit on synthetic tensors (fast) -------------------------------------------------------


def _slerp(t: float, v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    theta = math.acos(float(np.dot(v0.ravel(), v1.ravel()) / (np.linalg.norm(v0) * np.linalg.norm(v1))))
    return (math.sin((1 - t) * theta) * v0 + math.sin(t * theta) * v1) / math.sin(theta)


def test_linear_weights_are_recovered() -> None:
    rng = np.random.default_rng(0)
    p1, p2 = rng.standard_normal((64, 32)), rng.standard_normal((64, 32))
    fit = fit_tensor(0, "attn.q.weight", (0.7 * p1 + 0.3 * p2).astype(np.float32), [p1, p2])
    assert fit.weights == pytest.approx([0.7, 0.3], abs=1e-5)
    assert fit.method == "linear" and fit.explained == pytest.approx(1.0, abs=1e-6)
    assert fit.heldout_gain > 0.99


def test_slerp_t_is_recovered_from_the_angle() -> None:
    rng = np.random.default_rng(1)
    p1, p2 = rng.standard_normal((64, 32)), rng.standard_normal((64, 32))  # about 90 degrees apart
    fit = fit_tensor(2, "mlp.up.weight", _slerp(0.35, p1, p2).astype(np.float32), [p1, p2])
    assert fit.method == "slerp"
    assert fit.slerp_t == pytest.approx(0.35, abs=1e-4)
    assert sum(fit.weights) > 1.3  # SLERP's weights sum to more than 1 between distant parents


def test_a_changed_parent_is_not_evidence_and_a_copy_is_set_aside() -> None:
    rng = np.random.default_rng(2)
    p1, p2 = rng.standard_normal((64, 32)), rng.standard_normal((64, 32))
    changed = fit_tensor(0, "attn.v.weight", p1 + 0.05 * rng.standard_normal(p1.shape), [p1, p2])
    assert changed.best_single == 0 and changed.explained is not None and changed.explained < 0.01
    copy = fit_tensor(0, "attn.v.weight", p2.astype(np.float32), [p1, p2])
    assert copy.method == "copy" and copy.explained is None and copy.best_single == 1


def test_sign_test_tail() -> None:
    assert binomial_upper_tail_log10(0, 10) == 0.0
    assert 10 ** binomial_upper_tail_log10(10, 10) == pytest.approx(2**-10)
    assert 10 ** binomial_upper_tail_log10(6, 10) == pytest.approx(386 / 1024)


def test_unrelated_candidates_are_calibrated() -> None:
    """Candidates unrelated to B's change: over 100 synthetic cases (B a noisy copy of one parent,
    16 tensors each) the merge test's p falls below alpha at most alpha of the time."""
    rng = np.random.default_rng(3)
    p_values = []
    for _ in range(100):
        fits = []
        for layer in range(16):
            p1, p2 = rng.standard_normal((24, 16)), rng.standard_normal((24, 16))
            b = 0.98 * p1 + 0.1 * rng.standard_normal(p1.shape)  # shrunk, as by weight decay, and changed
            fits.append(fit_tensor(layer, "attn.q.weight", b, [p1, p2]))
        fit = decide_merge(fits, ["p1", "p2"])
        assert not fit.merged
        assert fit.p_value is not None
        p_values.append(fit.p_value)
    values = np.array(p_values)
    for alpha in (0.05, 0.2):
        assert (values < alpha).mean() <= alpha + 2 * math.sqrt(alpha * (1 - alpha) / len(values))


def _common_ancestor_fits(k: int, seed: int) -> tuple[list[Any], list[Any]]:
    """24 tensors: a base, k fine-tunes of it (uncorrelated changes of 5 %), the base fitted on the
    fine-tunes, and an equal-weight merge of the fine-tunes fitted on them."""
    rng = np.random.default_rng(seed)
    as_base, as_merge = [], []
    for layer in range(24):  # enough for the sign test's p to pass 1e-6 (2^-24)
        base = rng.standard_normal((64, 32))
        tuned = [base + 0.05 * rng.standard_normal(base.shape) for _ in range(k)]
        as_base.append(fit_tensor(layer, "mlp.up.weight", base, tuned))
        as_merge.append(fit_tensor(layer, "mlp.up.weight", sum(tuned) / k, tuned))
    return as_base, as_merge


@pytest.mark.parametrize("k", [2, 3, 4])
def test_the_common_ancestor_of_the_candidates_is_not_a_merge(k: int) -> None:
    """The base of k fine-tunes with uncorrelated changes is closer to their mean than to any one
    of them: the merge fit explains about 1 - 1/k of what the best one leaves (over
    `MERGE_MIN_EXPLAINED` from k = 3), and the sign test passes; it is still not a merge. An exact
    merge of the same fine-tunes is."""
    as_base, as_merge = _common_ancestor_fits(k, seed=10 + k)
    base = decide_merge(as_base, [f"ft{i}" for i in range(k)])
    assert base.p_value is not None and base.p_value < 1e-4
    assert base.explained is not None and abs(base.explained - (1 - 1 / k)) < 0.1
    assert not base.merged
    if k >= 3:  # from 3 candidates only the common-ancestor rule stops it (k = 2 sits at 0.5)
        assert base.explained > MERGE_MIN_EXPLAINED and "common ancestor" in base.reason
    merge = decide_merge(as_merge, [f"ft{i}" for i in range(k)])
    assert merge.merged, merge.reason
    assert merge.beyond_ancestor is not None and merge.beyond_ancestor > 0.99
    assert base.beyond_ancestor is not None and base.beyond_ancestor < MERGE_MIN_BEYOND_ANCESTOR


def test_ties_base_is_named_when_the_finetunes_are_uncorrelated() -> None:
    """mergekit's TIES (density 0.5) over a base of two fine-tunes with uncorrelated changes: B keeps
    a fine-tune's value wherever its delta alone survived the trimming (about 31 % of the values)
    a little more often than the base's (where both were trimmed, 25 %), so counting equal values
    alone names a fine-tune; the base is the one kept where the others are close to it."""
    ties = _zoo_merges().ties
    rng = np.random.default_rng(5)
    fits = []
    for layer in range(24):
        base = rng.standard_normal((64, 32)).astype(np.float32)
        tuned = [(base + 0.05 * rng.standard_normal(base.shape)).astype(np.float32) for _ in range(2)]
        merged = ties(base, tuned, [1.0, 1.0], 0.5)
        fit = fit_tensor(layer, "mlp.up.weight", merged, [base, *tuned])
        assert fit.sparse_fraction is not None and 0.2 < fit.sparse_fraction < 0.3
        fits.append(fit)
    decided = decide_merge(fits, ["base", "ft1", "ft2"])
    assert decided.sparse_base == 0 and decided.method == "sparse"


def _bf16(values: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return ((((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16).astype(np.uint32)).view(np.float32)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("change", [0.002, 0.01])
def test_an_original_is_not_a_sparse_merge_of_its_light_bf16_finetunes(k: int, change: float) -> None:
    """Truth: B is the original, stored bf16; each candidate is B plus its own Gaussian change of
    ``change`` times the weights' scale, rounded to bf16 (a light fine-tune: 60 % or 17 % of the
    values round back to B's). B holds each candidate's values exactly where it left them, which
    reads as sparse (TIES-like); B is their common ancestor, not their merge. Before the closeness
    check the three-candidate cases were `merged` (benchmarks/bench_merge_ancestor.py)."""
    rng = np.random.default_rng(11)
    fits = []
    for tensor in range(40):
        original = _bf16(rng.standard_normal((256, 128)) * 0.02)
        tuned = [_bf16(original + change * 0.02 * rng.standard_normal(original.shape)) for _ in range(k)]
        fits.append(fit_tensor(tensor // 4, "mlp.up.weight", original, tuned))
    decided = decide_merge(fits, [f"ft{i}" for i in range(k)])
    assert decided.sparse_fraction is not None and decided.sparse_fraction > 0.1  # read as sparse
    assert not decided.merged, decided.reason
    # Not a base the others were tuned from, so the common-ancestor rule applies, whatever
    # `explained` reads (two candidates sit at 0.5, the `MERGE_MIN_EXPLAINED` edge).
    assert decided.sparse_base_closeness is not None
    assert decided.sparse_base_closeness > SPARSE_BASE_MAX_CLOSENESS
    if k == 3:  # explained about 2/3: only the common-ancestor rule stops it
        assert decided.explained is not None and decided.explained > MERGE_MIN_EXPLAINED
        assert "common ancestor" in decided.reason


def test_no_shared_tensor_is_not_a_merge() -> None:
    fit = decide_merge([], ["p1", "p2"], skipped=12)
    assert not fit.merged and "share no tensor" in fit.reason and fit.p_value is None
    assert any("12 tensors differ in shape" in note for note in fit.notes)


def test_fewer_than_two_parents_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        compare_merge(tmp_path / "b", [tmp_path / "a"])


# --- the zoo (slow: built on the main zoo) -----------------------------------------------------


@pytest.fixture(scope="module")
def merges() -> Any:
    return _zoo_merges().load_or_build(log=lambda message: print(message, file=sys.stderr, flush=True))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["ft-linear", "ft-slerp", "bases-linear", "bases-slerp", "stories-linear", "stories-slerp"]
)
def test_merges_are_named_with_their_parents_and_weights(merges: Any, name: str) -> None:
    """Linear and SLERP merges (two fine-tunes of base-s0; two unrelated bases; the real
    stories260K and its fine-tune) are `merged`, every tensor's weights within 0.01 of the
    coefficients the merge applied."""
    merge = merges.merges[name]
    fit, model_b = _fit(merge.path, merge.parents)
    assert fit.merged, fit.reason
    assert fit.p_value is not None and fit.p_value < 1e-6
    assert not _weight_errors(fit, model_b, merge.truth)
    if name == "bases-slerp":  # parents 90 degrees apart: SLERP is told from linear, t recovered
        assert fit.method == "slerp"
        matrices = [t for t in fit.tensors if t.role.endswith(".weight") and "norm" not in t.role]
        assert all(t.slerp_t is not None and abs(t.slerp_t - 0.35) < SLERP_T_TOLERANCE for t in matrices)
    if name == "bases-linear":
        assert fit.method == "linear"


@pytest.mark.slow
def test_ties_merge_is_named_sparse_over_its_base(merges: Any) -> None:
    """mergekit's TIES (density 0.5) of finetune and finetune-2 over base-s0: not in the parents'
    span, but B keeps many of base-s0's values exactly: a sparse merge over base-s0."""
    merge = merges.merges["ft-ties"]
    assert [p.name for p in merge.parents] == ["base-s0", "finetune", "finetune-2"]
    fit, _ = _fit(merge.path, merge.parents)
    assert fit.merged and fit.method == "sparse" and fit.sparse_base == 0, fit.reason
    for name in ("ft-linear", "bases-slerp"):  # dense merges are never called sparse
        dense, _ = _fit(merges.merges[name].path, merges.merges[name].parents)
        assert dense.sparse_base is None and dense.method != "sparse"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "finetune-vs-sibling",
        "finetune-vs-unrelated",
        "base-vs-its-finetunes",
        "independent-candidates",
        "merge-vs-unrelated",
        "stories-finetune-vs-perturbed",
    ],
)
def test_non_merges_are_not_merged(merges: Any, name: str) -> None:
    """A plain fine-tune against its base and a sibling (or an unrelated base), the common base of
    two fine-tunes, and models against candidates they do not come from: never `merged`."""
    case = merges.negatives[name]
    fit, _ = _fit(case.path, case.candidates)
    assert not fit.merged, fit.reason
    if name in ("finetune-vs-unrelated", "independent-candidates", "merge-vs-unrelated"):
        assert fit.p_value is not None and fit.p_value > 0.01  # unrelated candidates: chance only


@pytest.mark.slow
def test_cli_shows_parents_weights_and_the_pairwise_results(merges: Any, tmp_path: Path) -> None:
    merge = merges.merges["bases-linear"]
    command = [sys.executable, "-m", "unshell", "compare", str(merge.path)]
    command += ["--against", str(merge.parents[0]), str(merge.parents[1]), "--format", "json"]
    document = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert document["kind"] == "merge-comparison" and document["merge"]["merged"] is True
    assert document["merge"]["weights"] == pytest.approx([0.6, 0.4], abs=WEIGHT_TOLERANCE)
    assert [row["weights"] for row in document["merge"]["layers"]] == [
        pytest.approx([0.6, 0.4], abs=WEIGHT_TOLERANCE)
    ] * len(document["merge"]["layers"])
    assert len(document["pairwise"]) == 2
    assert all(r["verdict"] == "derived" and "merged" in r["how"] for r in document["pairwise"])
    html = tmp_path / "merge.html"
    table = subprocess.run(
        [*command[:-2], "--html", str(html)], capture_output=True, text=True, check=True
    ).stdout
    assert "MERGED" in table and "base-s0 0.600, base-s1 0.400" in table and "B against each parent" in table
    page = html.read_text(encoding="utf-8")
    assert (
        "MERGED" in page
        and "Weights per layer" in page
        and "0.600" in page
        and "B against each parent" in page
    )


# --- real: SmolLM2-135M-Instruct (slow) --------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_merges() -> Any:
    from artifacts import fetch

    return _zoo_merges().load_or_build_smollm2(
        fetch("smollm2_gguf"), log=lambda message: print(message, file=sys.stderr, flush=True)
    )


def _layer_means(merge: Any, model_b: Any, fit: MergeFit, layer: int) -> list[float]:
    """The mean, over a layer's fitted tensors, of the coefficients the merge applied to each
    parent (what `MergeFit.layers()` reports fitted)."""
    names = [model_b.slots[(t.layer, t.role)][0] for t in fit.tensors if t.layer == layer]
    return [float(np.mean([merge.truth[n][i] for n in names])) for i in range(len(merge.parents))]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-linear", "smollm2-slerp"])
def test_smollm2_merges_of_real_finetunes_are_named_with_weights_per_layer(
    smollm2_merges: Any, name: str
) -> None:
    """Two real fine-tunes of SmolLM2-135M-Instruct (tools/smollm2_finetune.py: the last 6 blocks
    on one stretch of Python's documentation; the last 8 on a later stretch, another seed) merged
    linearly (0.6 / 0.4) and by SLERP (t a gradient over the layers, attention and MLP apart),
    stored F16: `merged` with both fine-tunes carrying weight.

    Only the 8 blocks a fine-tune trained can show the weights: everywhere else (22 blocks, the
    embeddings, the final norm) both parents hold the same values and the merge is a copy of them,
    which the fit must set aside. In those 8 blocks, every tensor's weights and every layer's mean
    weights are within `WEIGHT_TOLERANCE` of the coefficients the merge applied (F16 storage: the
    merge's rounding often lands on a parent's value where the parents differ by a few units in
    the last place, which biases the fit by up to about 0.004)."""
    merge = smollm2_merges.merges[name]
    assert merge.identifiable == tuple(range(22, 30))  # the sibling's 8 blocks hold the first's 6
    fit, model_b = _fit(merge.path, merge.parents)
    assert fit.merged, fit.reason
    assert fit.p_value is not None and fit.p_value < 1e-6
    assert min(fit.shares) > 0.2
    inside = [t for t in fit.tensors if t.layer in merge.identifiable]
    outside = [t for t in fit.tensors if t.layer not in merge.identifiable]
    assert len(inside) == 8 * 9 and all(t.evidence for t in inside)
    assert outside and all(t.method == "copy" for t in outside)
    assert not _weight_errors(fit, model_b, merge.truth, merge.identifiable)
    rows = {row["layer"]: row for row in fit.layers()}
    for layer in merge.identifiable:
        assert rows[layer]["weights"] == pytest.approx(
            _layer_means(merge, model_b, fit, layer), abs=WEIGHT_TOLERANCE
        ), layer
    if name == "smollm2-slerp":
        # The fine-tunes are within a degree of each other: mergekit's SLERP fell back to linear
        # interpolation for every tensor (its coefficients sum to 1), so the fit must say linear.
        assert all(abs(sum(c) - 1.0) < 1e-9 for c in merge.truth.values())
        assert fit.method == "linear"
        matrices = [t for t in inside if "norm" not in t.role]
        made_t = [merge.truth[model_b.slots[(t.layer, t.role)][0]][1] for t in matrices]
        assert all(
            t.slerp_t is not None and abs(t.slerp_t - m) < SLERP_T_TOLERANCE
            for t, m in zip(matrices, made_t, strict=True)
        )
        assert max(made_t) - min(made_t) > 0.4  # the gradient: t differs across layers and kinds
    else:
        assert fit.weights == pytest.approx([0.6, 0.4], abs=WEIGHT_TOLERANCE)


@pytest.mark.slow
def test_smollm2_ties_merge_is_named_sparse_over_the_base(smollm2_merges: Any) -> None:
    """mergekit's TIES (density 0.5) of the two fine-tunes over SmolLM2 stored F16: B keeps many of
    the base's values exactly in the trained blocks: a sparse merge over the base (candidate 0)."""
    merge = smollm2_merges.merges["smollm2-ties"]
    assert merge.parents[0].name == "smollm2-f16.gguf"
    fit, _ = _fit(merge.path, merge.parents)
    assert fit.merged and fit.method == "sparse" and fit.sparse_base == 0, fit.reason


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "smollm2-finetune-vs-sibling",
        "smollm2-sibling-vs-finetune",
        "smollm2-base-vs-its-finetunes",
        "smollm2-base-vs-three-finetunes",
    ],
)
def test_smollm2_finetunes_and_their_base_are_not_merges(smollm2_merges: Any, name: str) -> None:
    """A real fine-tune against the original (Q4_1) and its sibling fine-tune, either way round,
    and the original (stored F16) against two or three of its fine-tunes: never `merged`.

    The base is the hard case: the fine-tunes' changes are nearly uncorrelated, so their weighted
    mean is the base plus a smaller change than any one of them, and the merge fit explains a
    large share of what the best fine-tune alone leaves (0.445 for two, 0.59 for three, over
    `MERGE_MIN_EXPLAINED`). What tells it from a merge is that this share is no more than a common
    ancestor would show (`MergeFit.beyond_ancestor`)."""
    case = smollm2_merges.negatives[name]
    fit, _ = _fit(case.path, case.candidates)
    assert not fit.merged, fit.reason
    if name == "smollm2-base-vs-three-finetunes":
        assert fit.beyond_ancestor is not None and fit.beyond_ancestor < MERGE_MIN_BEYOND_ANCESTOR
        assert "common ancestor" in fit.reason
    else:
        assert fit.explained is not None and fit.explained < MERGE_MIN_EXPLAINED


@pytest.mark.slow
def test_search_notes_a_possible_merge_of_its_matches(merges: Any, tmp_path: Path) -> None:
    """A library holding both parents of a merge (and an unrelated base): search finds both and
    suggests the merge test (a fingerprint has no weights to fit, so it only suggests it)."""
    import unshell

    merge = merges.merges["ft-linear"]
    library = unshell.Library(tmp_path / "library.sqlite")
    for path in (*merge.parents, zoo_module().load_or_build().models["base-s2"]):
        library.add(unshell.fingerprint(path))
    result = unshell.search(merge.path, library)
    assert {c.name for c in result.matches} >= {p.name for p in merge.parents}
    assert any("may be a merge of them" in note and "--against" in note for note in result.notes)
