"""A search inverts B's anchor Gram once and fits every candidate by products with it
(`PreparedSuspect.expect`, `fingerprint.INVERT_FOR_CANDIDATES`), where one comparison solves.

The models are made here with `benchmarks/make_7b_pair.py`'s generator at a small Llama shape wide
enough (hidden 576, as SmolLM2's) that a fingerprint keeps projected anchors and a comparison fits
B's rows to them (`FULL_ANCHOR_MAX_HIDDEN`): `base`, `noisy` (base plus 10 % element noise: a
derivative) and three other seeds (independent of both and of each other). Ground truth is how
they were made.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unshell
from seeded_llamas import seeded_llamas
from unshell.lineage import fingerprint
from unshell.lineage.compare import DERIVED_P
from unshell.lineage.fingerprint import (
    FULL_ANCHOR_MAX_HIDDEN,
    INVERT_FOR_CANDIDATES,
    AnchorGram,
    compare_with_fingerprint,
    prepare_suspect,
)

HIDDEN = 576
OTHERS = ("other1", "other2", "other3")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    shape = {"hidden": HIDDEN, "layers": 2, "heads": 4, "kv_heads": 4, "intermediate": 256, "vocab": 2000}
    return seeded_llamas(tmp_path_factory.mktemp("inverse"), OTHERS, **shape)


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[int, ...]]:
    """Shapes of the square matrices ``numpy.linalg.<name>`` is called on (at H x H)."""
    seen: list[tuple[int, ...]] = []
    original: Callable[..., Any] = getattr(np.linalg, name)

    def counted(matrix: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        if np.shape(matrix) == (HIDDEN, HIDDEN):
            seen.append(np.shape(matrix))
        return original(matrix, *args, **kwargs)

    monkeypatch.setattr(np.linalg, name, counted)
    return seen


def test_a_search_inverts_the_gram_once_and_agrees_with_each_comparison(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert HIDDEN > FULL_ANCHOR_MAX_HIDDEN
    library = unshell.Library(tmp_path / "library.sqlite")
    printed = {name: unshell.fingerprint(models[name]) for name in ("base", *OTHERS)}
    for name, fp in printed.items():
        library.add(fp, name=name)
    alone = {name: compare_with_fingerprint(fp, models["noisy"]) for name, fp in printed.items()}

    inverted, solved = _counting(monkeypatch, "inv"), _counting(monkeypatch, "solve")
    found = unshell.search(models["noisy"], library, top=5, max_candidates=5, workers=1)
    by_name = {c.name: c for c in found.candidates}
    assert set(by_name) == set(printed)
    # Three unrelated candidates, each fitted twice (its alignment and the rows paired at
    # random): one inverse per embedding matrix of B, no solve at H x H.
    assert 1 <= len(inverted) <= 2 and not solved

    assert by_name["base"].verdict == alone["base"].verdict == "derived"
    assert by_name["base"].p_value is not None and by_name["base"].p_value < DERIVED_P
    for name in OTHERS:
        one = alone[name]
        assert by_name[name].verdict == one.verdict != "derived", name
        assert by_name[name].p_value == pytest.approx(one.p_value, rel=1e-6, abs=1e-12), name


def test_a_suspect_inverts_only_for_a_search_of_several_candidates(models: dict[str, Path]) -> None:
    suspect = prepare_suspect(unshell.open_checkpoint(models["noisy"]))
    suspect.expect(INVERT_FOR_CANDIDATES - 1)
    assert suspect.anchor_grams.invert is False
    suspect.expect(INVERT_FOR_CANDIDATES)
    assert suspect.anchor_grams.invert is True


def test_an_inverted_gram_and_rows_paired_by_permutation_fit_as_before(models: dict[str, Path]) -> None:
    """B's real anchor rows (noisy's embedding, every other row) fitted to base's: the inverse's
    products give the solve's fit, and pairing the rows at random by permuting the targets gives
    the residual of the permuted rows' own fit."""
    with unshell.open_checkpoint(models["noisy"]) as b, unshell.open_checkpoint(models["base"]) as a:
        rows_b = np.asarray(b.read("model.embed_tokens.weight"), dtype=np.float32)[::2]
        rows_a = np.asarray(a.read("model.embed_tokens.weight"), dtype=np.float32)[::2]
    target = rows_a @ np.random.default_rng(0).standard_normal((HIDDEN, 64)).astype(np.float32)
    solved = AnchorGram(rows_b).fit(rows_b, [target])[0]
    products = AnchorGram(rows_b, inverted=True).fit(rows_b, [target])[0]
    np.testing.assert_allclose(products[0], solved[0], atol=1e-5)
    assert products[1] == pytest.approx(solved[1], rel=1e-9)
    assert solved[1] < 0.2  # a derivative's rows: the fit holds

    order = np.random.default_rng(1).permutation(rows_b.shape[0])
    gram = AnchorGram(rows_b)
    by_targets = gram.fit(rows_b, [target], paired=order)[0][1]
    by_rows = gram.fit(rows_b[order], [target])[0][1]
    assert by_targets == pytest.approx(by_rows, rel=1e-9)
    assert by_targets > solved[1] + 0.4  # paired at random: far worse than the true pairing


def test_a_search_reads_and_centers_the_suspects_anchor_rows_once(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every candidate of a search anchors on the same rows of B (every `anchor_stride`-th row of
    its embedding): they are read, decoded and keyed once for the search (`AnchorGrams.rows`), and
    each unrelated candidate centers them once for its two fits (its alignment, then its rows paired
    at random), where each fit centered them again before. The fits are the comparisons' alone."""
    printed = {name: unshell.fingerprint(models[name]) for name in OTHERS}
    alone = {name: compare_with_fingerprint(fp, models["noisy"]) for name, fp in printed.items()}
    reads: list[str] = []
    keyed: list[tuple[int, ...]] = []
    centered: list[tuple[int, ...]] = []
    read_rows, key, center = fingerprint.read_rows, fingerprint.AnchorGrams.key, fingerprint._centered

    def counted_read(model: Any, name: str, step: int) -> np.ndarray:
        reads.append(name)
        return read_rows(model, name, step)

    def counted_key(rows: np.ndarray) -> Any:
        keyed.append(rows.shape)
        return key(rows)

    def counted_center(rows: np.ndarray) -> np.ndarray:
        centered.append(rows.shape)
        return center(rows)

    monkeypatch.setattr(fingerprint, "read_rows", counted_read)
    monkeypatch.setattr(fingerprint.AnchorGrams, "key", staticmethod(counted_key))
    monkeypatch.setattr(fingerprint, "_centered", counted_center)
    with unshell.open_checkpoint(models["noisy"]) as checkpoint:
        suspect = prepare_suspect(checkpoint)
        suspect.expect(len(OTHERS))
        together = {name: compare_with_fingerprint(fp, suspect, screen=True) for name, fp in printed.items()}
    assert reads == ["model.embed_tokens.weight"]
    assert len(keyed) == 1
    # One Gram (its own centered rows), then one centering per candidate for both of its fits.
    assert len(centered) == 1 + len(OTHERS)
    for name in OTHERS:
        assert together[name].alignment is not None and alone[name].alignment is not None
        assert math.isfinite(together[name].alignment.chance), name  # the fit by chance ran
        assert together[name].to_dict() == alone[name].to_dict(), name
