"""A search prepares its candidates in batches (`PreparedSuspect.prepare`): each candidate's
alignment is fitted first, then the suspect's screened matrices are sketched under every
candidate's basis in one pass (`compare.units_ahead`), so each is read, decoded and sampled once per
batch instead of once per candidate. Every comparison must come out as it does alone.

The models are made here with `benchmarks/make_7b_pair.py`'s generator at a small Llama shape wide
enough (hidden 576, as SmolLM2's) that a fingerprint keeps projected anchors and a comparison fits
B's rows to them, and deep enough (10 layers) that a search screens the suspect on some of its
layers: `base`, `noisy` (base plus 10 % element noise: a derivative) and three other seeds
(independent of both and of each other). Ground truth is how they were made.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unshell
from seeded_llamas import seeded_llamas
from unshell.lineage import compare, fingerprint
from unshell.lineage.canonical import CanonicalModel
from unshell.lineage.compare import DERIVED_P, screening_layers
from unshell.lineage.fingerprint import compare_with_fingerprint, prepare_suspect
from unshell.lineage.sketch import projection
from unshell.threads import limited

HIDDEN = 576
LAYERS = 10
OTHERS = ("other1", "other2", "other3")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    shape = {
        "hidden": HIDDEN,
        "layers": LAYERS,
        "heads": 4,
        "kv_heads": 4,
        "intermediate": 256,
        "vocab": 2000,
    }
    return seeded_llamas(tmp_path_factory.mktemp("batch"), OTHERS, **shape)


@pytest.fixture(scope="module")
def printed(models: dict[str, Path]) -> dict[str, Any]:
    return {name: unshell.fingerprint(models[name], name=name) for name in ("base", *OTHERS)}


def _counting_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The tensors of the suspect read to be sketched, each time one is."""
    reads: Counter[str] = Counter()
    original = compare.tensor_unit_sets

    def counted(model: CanonicalModel, name: str, *args: Any, **kwargs: Any) -> Any:
        made = original(model, name, *args, **kwargs)
        if any(made):
            reads[name] += 1
        return made

    monkeypatch.setattr(compare, "tensor_unit_sets", counted)
    return reads


def test_a_search_sketches_the_screened_suspect_once_per_batch(
    models: dict[str, Path], printed: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with unshell.open_checkpoint(models["noisy"]) as checkpoint:
        alone = {
            name: compare_with_fingerprint(fp, prepare_suspect(checkpoint), screen=True).to_dict()
            for name, fp in printed.items()
        }
        screened = screening_layers(prepare_suspect(checkpoint).model.layers)
    assert screened is not None and len(screened) < LAYERS
    library = unshell.Library(tmp_path / "library.sqlite")
    for name, fp in printed.items():
        library.add(fp, name=name)

    reads = _counting_reads(monkeypatch)
    found = unshell.search(models["noisy"], library, top=5, max_candidates=5, workers=1)
    by_name = {c.name: c for c in found.candidates}
    assert set(by_name) == set(printed)
    assert by_name["base"].verdict == "derived"
    assert by_name["base"].p_value is not None and by_name["base"].p_value < DERIVED_P
    for name in OTHERS:
        assert by_name[name].verdict != "derived", name
    # Each screened matrix read once for the whole batch; the derived candidate's full weighing
    # then reads every matrix once more (its screen matched). Per candidate, that was 4 reads of
    # each screened matrix (one for each candidate's own alignment) and one more for the
    # unrelated candidates' shared identity alignment.
    in_screen = {n for n in reads if int(n.split(".")[2]) in screened}
    assert len(in_screen) == 7 * len(screened)  # q, k, v, o, gate, up, down
    assert all(reads[n] == 2 for n in in_screen), reads
    assert len(reads) == 7 * LAYERS and all(reads[n] == 1 for n in set(reads) - in_screen), reads

    # The comparisons are the ones each makes alone.
    with unshell.open_checkpoint(models["noisy"]) as checkpoint:
        suspect = prepare_suspect(checkpoint)
        bases = list(printed.values())
        suspect.expect(len(bases))
        suspect.prepare(bases)
        together = {fp.name: compare_with_fingerprint(fp, suspect, screen=True).to_dict() for fp in bases}
    assert together == alone


def test_sketches_in_several_bases_equal_each_made_alone(models: dict[str, Path]) -> None:
    """One pass in three bases (the stored one and two random rotations of it) gives, unit for
    unit, the very sketches and stds of three passes."""
    rng = np.random.default_rng(0)
    stored = projection(HIDDEN, 256)
    turned = [
        np.linalg.qr(rng.standard_normal((HIDDEN, HIDDEN)))[0].astype(np.float32) @ stored for _ in range(2)
    ]
    bases = [stored, *turned]
    with unshell.open_checkpoint(models["noisy"]) as checkpoint:
        model = prepare_suspect(checkpoint).model
        together = compare.model_unit_sets(model, HIDDEN, bases, layers=frozenset({0, 9}))
        for basis, units in zip(bases, together, strict=True):
            alone = compare.model_units(model, HIDDEN, basis, layers=frozenset({0, 9}))
            assert [u.label for u in units] == [u.label for u in alone] and len(units) == 14
            for one, other in zip(units, alone, strict=True):
                assert np.array_equal(one.sketch, other.sketch) and one.std == other.std


def test_held_values_serve_until_the_next_batch(models: dict[str, Path]) -> None:
    with unshell.open_checkpoint(models["noisy"]) as checkpoint:
        model = prepare_suspect(checkpoint).model
        model.hold({"a": 1, "b": 2})
        for _ in range(2):
            assert model.memo("a", lambda: pytest.fail("held: not computed")) == 1
        for key in ("x", "y", "z"):  # other passes fill the most recently used
            model.memo(key, lambda: 0)
        assert model.memo("b", lambda: pytest.fail("still held")) == 2
        model.hold({"c": 3})  # the next batch: "a" and "b" are dropped
        assert model.memo("b", lambda: 20) == 20
        assert model.memo("c", lambda: 30) == 3


def test_a_prepared_batch_is_compared_on_the_whole_budget_by_default(
    models: dict[str, Path], printed: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is left of a prepared comparison is milliseconds, or a derived candidate's weighing of
    every layer, which sketches its tensors side by side itself: by default the batch's candidates
    are compared one at a time on the calling thread (with two workers, the derived one had one
    core and took twice as long at 32 layers, RESULTS.md, session 11); a caller's count holds."""
    library = unshell.Library(tmp_path / "library.sqlite")
    for name, fp in printed.items():
        library.add(fp, name=name)
    threads: list[int] = []
    original = fingerprint.compare_with_fingerprint

    def recorded(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(fingerprint, "compare_with_fingerprint", recorded)
    with limited(2):
        found = unshell.search(models["noisy"], library, top=5, max_candidates=5)
        assert len(found.candidates) == 4 and threads == [threading.get_ident()] * 4
        threads.clear()
        unshell.search(models["noisy"], library, top=5, max_candidates=5, workers=2)
    assert len(threads) == 4 and threading.get_ident() not in threads
