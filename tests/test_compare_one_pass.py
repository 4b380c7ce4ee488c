"""`compare` hashes and sketches each model in one pass (`compare.read_once`).

The pair is stories260K (the real llama2.c checkpoint) against a fine-tune stand-in made here:
every tensor plus Gaussian noise of 1% of its std, written as float32 safetensors. Each tensor of
each model is sketched once, in the pass that hashes it, and the result is the one `compare`
gives when nothing is made ahead (every unit sketched when `weigh_lineage` asks for it).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unshell
from unshell.formats import open_checkpoint
from unshell.formats.safetensors import write_safetensors
from unshell.lineage import compare as compare_module
from unshell.lineage.canonical import CanonicalModel
from unshell.model import Model
from unshell.threads import limited


def noised(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``values`` plus Gaussian noise of 1% of their std (a fine-tune stand-in)."""
    return values + rng.normal(0.0, 0.01 * float(values.std()) + 1e-6, values.shape)


def derivative(
    fixtures_dir: Path,
    path: Path,
    change: Callable[[str, np.ndarray], np.ndarray] = lambda name, values: values,
    dtype: str | None = None,
) -> Path:
    """stories260K with ``change`` applied to each tensor (by name), written to ``path`` as float32
    safetensors, or as ``dtype``."""
    with open_checkpoint(fixtures_dir / "stories260K.bin") as source:
        tensors = {
            name: change(name, np.asarray(source.read(name), dtype=np.float32)).astype(np.float32)
            for name in source.tensors
        }
    write_safetensors(path, tensors, dtypes=dict.fromkeys(tensors, dtype) if dtype else None)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(11)
    tuned = tmp_path_factory.mktemp("tuned") / "model.safetensors"
    return fixtures_dir / "stories260K.bin", derivative(fixtures_dir, tuned, lambda _, v: noised(v, rng))


def document(result: Any) -> dict[str, Any]:
    out = dict(result.to_dict())
    out.pop("timing", None)
    return out


def test_each_tensor_is_sketched_once_in_the_pass_that_hashes_it(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    original, tuned = pair
    alone = unshell.compare(str(original), str(tuned))
    assert alone.verdict == "derived"

    sketched: Counter[str] = Counter()
    real_sets = compare_module.tensor_unit_sets

    def counting_sets(model: CanonicalModel, name: str, *args: Any, **kwargs: Any) -> Any:
        sketched[f"{model.checkpoint.path.name}:{name}"] += 1
        return real_sets(model, name, *args, **kwargs)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compare asked for a pass of its own")

    monkeypatch.setattr(compare_module, "tensor_unit_sets", counting_sets)
    monkeypatch.setattr(compare_module, "model_units", refused)
    monkeypatch.setattr(Model, "content_hashes", refused)
    result = unshell.compare(str(original), str(tuned))
    with open_checkpoint(original) as a, open_checkpoint(tuned) as b:
        expected = {f"{original.name}:{n}" for n in a.tensors} | {f"{tuned.name}:{n}" for n in b.tensors}
    assert set(sketched) == expected and set(sketched.values()) == {1}

    # Nothing made ahead: every unit is sketched when `weigh_lineage` asks, by `model_units`.
    monkeypatch.undo()
    monkeypatch.setattr(CanonicalModel, "hold", lambda self, values: None)
    assert document(result) == document(alone) == document(unshell.compare(str(original), str(tuned)))


def test_a_tensor_is_hashed_beside_another_one_s_sketch(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On two threads the pass's first hash job and first sketch job run at the same time (each
    waits for the other at a barrier, which breaks after 20 s when they run one after the other)."""
    original, tuned = pair
    meeting = threading.Barrier(2, timeout=20)
    threads: list[int] = []
    for owner, name in ((Model, "tensor_hashes"), (compare_module, "tensor_unit_sets")):
        real = getattr(owner, name)
        first = [True]

        def patched(*args: Any, _real: Any = real, _first: list[bool] = first, **kwargs: Any) -> Any:
            if _first[0]:
                _first[0] = False
                meeting.wait()
                threads.append(threading.get_ident())
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, patched)
    with limited(2):
        result = unshell.compare(str(original), str(tuned))
    assert result.verdict == "derived"
    assert len(set(threads)) == 2


def test_an_identical_pair_is_hashed_without_sketches(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stories260K against its cast to bf16 (every value rounded, each tensor's bytes new): every
    tensor's leading values have a twin, so the pass only hashes, and the hashes prove the pair
    identical; no unit is sketched."""
    original = fixtures_dir / "stories260K.bin"
    cast = derivative(fixtures_dir, tmp_path / "model.safetensors", dtype="BF16")

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an identical pair was sketched")

    monkeypatch.setattr(compare_module, "tensor_unit_sets", refused)
    monkeypatch.setattr(compare_module, "model_units", refused)
    result = unshell.compare(str(original), str(cast))
    assert result.verdict == "identical" and result.how == ["dtype-cast"]


def test_a_pair_alike_only_in_leading_values_is_sketched_when_weighed(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stories260K against a copy whose every tensor of more than 4,096 values has noise (1% of its
    std) past its first 4,096: the probe of leading values takes them for twins, the hashes do not,
    and `weigh_lineage` sketches what it needs. The document is the one `compare` gives when the
    probe finds a difference (each model hashed and sketched in one pass)."""
    original = fixtures_dir / "stories260K.bin"
    rng = np.random.default_rng(5)

    def past_4096(name: str, values: np.ndarray) -> np.ndarray:
        flat = values.reshape(-1)
        if flat.size <= 4096:
            return values
        return np.concatenate([flat[:4096], noised(flat[4096:], rng)]).reshape(values.shape)

    late = derivative(fixtures_dir, tmp_path / "model.safetensors", past_4096)
    probed = unshell.compare(str(original), str(late))
    assert probed.verdict == "derived"
    seen: list[bool] = []
    real_probe = compare_module.probably_identical
    monkeypatch.setattr(compare_module, "probably_identical", lambda *a: seen.append(real_probe(*a)) or False)
    assert document(unshell.compare(str(original), str(late))) == document(probed)
    assert seen == [True]


def test_tensors_without_a_twin_on_the_other_side_are_not_digested(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A is stories260K cast to bf16 with its first two layers fine-tuned (noise of 1% of each
    tensor's std), B the original (llama2.c float32). Each side's tensors get a sha256 only where
    the other side has a tensor of their size and leading values (`hashes.digest_candidates`),
    which the noised ones, on either side, do not: their digests are left out, on both sides, and
    the document is the one every digest gives."""
    original = fixtures_dir / "stories260K.bin"
    rng = np.random.default_rng(9)
    first_two = ("layers.0.", "layers.1.")
    tuned = derivative(
        fixtures_dir,
        tmp_path / "model.safetensors",
        lambda name, values: noised(values, rng) if name.startswith(first_two) else values,
        dtype="BF16",
    )
    with open_checkpoint(original) as source:
        names = list(source.tensors)

    hashed: dict[tuple[Path, str], Any] = {}
    real_hash = Model.tensor_hashes

    def recording(self: Model, name: str, **kwargs: Any) -> Any:
        found = real_hash(self, name, **kwargs)
        hashed.setdefault((self.checkpoint.path, name), found)  # as the pass left it
        return found

    monkeypatch.setattr(Model, "tensor_hashes", recording)
    result = unshell.compare(str(tuned), str(original))
    assert result.verdict == "derived"
    changed = {name for name in names if name.startswith(first_two)}
    for path in (tuned, original):
        found = {name: hashes for (side, name), hashes in hashed.items() if side == path}
        assert changed < set(found)
        assert {name for name, hashes in found.items() if hashes.exact is None} == changed
        assert all(hashes.exact is not None for name, hashes in found.items() if name not in changed)

    monkeypatch.undo()
    real_read = compare_module.read_once
    monkeypatch.setattr(
        compare_module, "read_once", lambda *args, digested=None, **kwargs: real_read(*args, **kwargs)
    )
    assert document(unshell.compare(str(tuned), str(original))) == document(result)
