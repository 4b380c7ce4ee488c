"""A search screens each candidate on a few of the suspect's layers (`compare.screening_layers`)
and reads the rest only when the screen is not `independent`.

The models are made here with `benchmarks/make_7b_pair.py`'s generator at a tiny Llama shape (16
layers, hidden 64): `base` (seeded Gaussian weights, per-role scales), `noisy` (base plus 10 %
element noise: a derivative) and `other` (another seed: independent of both). Ground truth is how
they were made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import unshell
from seeded_llamas import seeded_llamas
from unshell.lineage.compare import DERIVED_P, INDEPENDENT_P, screening_layers
from unshell.lineage.fingerprint import compare_with_fingerprint


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    shape = {"hidden": 64, "layers": 16, "heads": 4, "kv_heads": 4, "intermediate": 160, "vocab": 600}
    return seeded_llamas(tmp_path_factory.mktemp("screen"), ("other",), **shape)


def test_screening_layers_spread_one_in_eight() -> None:
    assert screening_layers(list(range(8))) is None  # too shallow: weighed in full
    assert screening_layers(list(range(9))) == {0, 8}
    assert screening_layers(list(range(32))) == {0, 10, 21, 31}
    assert screening_layers([3, 1, 2, 0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]) == {0, 15}


def test_search_stops_an_unrelated_candidate_at_its_screen(models: dict[str, Path], tmp_path: Path) -> None:
    library = unshell.Library(tmp_path / "library.sqlite")
    library.add(unshell.fingerprint(models["base"]), name="base")
    library.add(unshell.fingerprint(models["other"]), name="other")
    found = unshell.search(models["noisy"], library, top=5, max_candidates=5)
    by_name = {c.name: c for c in found.candidates}
    assert set(by_name) == {"base", "other"}

    derived = by_name["base"]  # not stopped: the screen found it, the full test decided
    assert derived.verdict == "derived" and derived.p_value is not None and derived.p_value < DERIVED_P
    assert "screened" not in derived.reason

    # Random embeddings carry nothing to align on, so the verdict is `inconclusive` (as the full
    # test says too, below); the screen found no match under any alignment and stopped there.
    unrelated = by_name["other"]
    assert unrelated.verdict == "inconclusive"
    assert "screened on 2 of B's 16 layers (0, 15)" in unrelated.reason
    assert unrelated.p_value is not None and unrelated.p_value >= INDEPENDENT_P


def test_the_full_comparison_agrees_with_the_screen(models: dict[str, Path]) -> None:
    other = unshell.fingerprint(models["other"])
    screened = compare_with_fingerprint(other, models["noisy"], screen=True)
    full = compare_with_fingerprint(other, models["noisy"])
    assert screened.verdict == full.verdict == "inconclusive"
    assert screened.p_value is not None and screened.p_value >= INDEPENDENT_P
    assert any(note.startswith("screened on 2 of B's 16 layers") for note in screened.notes)
    assert not any(note.startswith("screened") for note in full.notes)
    assert len(screened.matches) < len(full.matches)  # the screen weighed fewer of B's matrices


def test_a_candidate_past_its_screen_fits_its_alignment_once(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The screen and the full test rest on one embedding alignment, fitted once."""
    from unshell.lineage import fingerprint as fingerprint_module

    fits = []
    real = fingerprint_module.align_embeddings

    def counted(*args: object, **kwargs: object) -> object:
        fits.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    base = unshell.fingerprint(models["base"])
    monkeypatch.setattr(fingerprint_module, "align_embeddings", counted)
    result = compare_with_fingerprint(base, models["noisy"], screen=True)
    assert result.verdict == "derived" and not any(n.startswith("screened") for n in result.notes)
    assert len(fits) == 1
