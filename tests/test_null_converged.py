"""Null calibration on independent models trained until their loss levels off (issue 19).

`tools/null_population.py` trains independent models to the end of a decaying schedule: 21 of one
shape, data set and recipe (210 pairs), a second size, a second data set, another recipe, and
pairs across data and recipe. Each pair is independent by construction (its own seed, nothing shared but the
recipe); every p-value of `compare`, `compare --quick` and the fingerprint comparison behind
`search` must be calibrated on them: the fraction below alpha at most alpha plus two binomial
standard errors. The briefly trained population is checked in `test_compare_zoo.py` and
`test_fingerprint.py`. Figures: `benchmarks/RESULTS.md`, "null calibration on converged models".
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
from pathlib import Path

import numpy as np
import pytest

import unshell
from null_fixture import converged_population
from unshell.lineage.fingerprint import Fingerprint, compare_with_fingerprint, fingerprint

pytestmark = pytest.mark.slow

ALPHAS = (0.01, 0.05, 0.2)
MODES = ("full", "quick", "fingerprint")


@functools.cache
def _print(path: Path) -> Fingerprint:
    """A fingerprint through bytes, as a library stores it."""
    return Fingerprint.from_bytes(fingerprint(path).to_bytes())


def _p_value(job: tuple[Path, Path, str]) -> tuple[float, str]:
    a, b, mode = job
    if mode == "fingerprint":
        result = compare_with_fingerprint(_print(a), b)
    else:
        result = unshell.compare(a, b, quick=mode == "quick")
    return (1.0 if result.p_value is None else float(result.p_value)), result.verdict


@functools.cache
def _p_values() -> dict[tuple[Path, Path, str], tuple[float, str]]:
    """Every pair of the population in every mode, on two processes (about 900 comparisons of
    tiny models)."""
    population = converged_population()
    pairs = [p for g in population.manifest["groups"] for p in population.pairs(g)] + population.cross_pairs()
    jobs = [(p.a, p.b, mode) for p in pairs for mode in MODES]
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        return dict(zip(jobs, pool.map(_p_value, jobs, chunksize=8), strict=True))


def _checked(pairs: list, mode: str) -> list[float]:
    results = _p_values()
    out = []
    for pair in pairs:
        p_value, verdict = results[(pair.a, pair.b, mode)]
        assert verdict not in ("derived", "identical"), (pair.name, mode, verdict, p_value)
        out.append(p_value)
    return out


def _assert_calibrated(p_values: list[float], what: str) -> None:
    values = np.asarray(p_values, dtype=float)
    assert values.size >= 70 and not np.isnan(values).any()
    for alpha in ALPHAS:
        bound = alpha + 2 * math.sqrt(alpha * (1 - alpha) / values.size)
        fraction = float((values < alpha).mean())
        assert fraction <= bound, (what, alpha, fraction, float(values.min()))


def test_population_is_trained_until_its_loss_levels_off() -> None:
    """Every group's loss fell from ln(512) = 6.24 to below 3.7 nats, and moved by less than 3%
    over the last fifth of training (measured: 0.9% to 2.6%; the cosine schedule ends at 2% of
    the peak rate)."""
    for name, group in converged_population().manifest["groups"].items():
        assert group["loss_curve"][0] > 6.0, name
        assert group["loss_last_10pct_mean"] < 3.7, name
        assert group["loss_flatness_last_20pct"] < 0.03, name


@pytest.mark.parametrize("mode", MODES)
def test_same_recipe_pairs_are_calibrated(mode: str) -> None:
    """210 pairs of one shape, data set and recipe, differing only in seed."""
    pairs = converged_population().pairs("docs-h32")
    assert len(pairs) == 210
    _assert_calibrated(_checked(pairs, mode), f"docs-h32 {mode}")


@pytest.mark.parametrize("mode", MODES)
def test_other_sizes_data_and_recipes_are_calibrated(mode: str) -> None:
    """The second size, the second data set and the other recipe (pairs within each), and pairs
    across data sets and recipes, together."""
    population = converged_population()
    groups = [g for g in population.manifest["groups"] if g != "docs-h32"]
    pairs = [p for g in groups for p in population.pairs(g)] + population.cross_pairs()
    _assert_calibrated(_checked(pairs, mode), f"other groups {mode}")
