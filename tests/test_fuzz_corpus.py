"""The coverage-guided harness's seed corpus (``tools/fuzz-corpus``), replayed once per target:
valid seeds and small reproductions of every crash of issue 13 and of those the fuzz tests found
since. No input in it may crash unshell (the harness's property, `fuzz_support`'s)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unshell_fuzz_harness", TOOLS / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


HARNESS = _harness()


def test_every_target_has_seeds_and_every_seed_a_target() -> None:
    assert {p.name for p in HARNESS.CORPUS.iterdir()} == set(HARNESS.TARGETS)
    for target in HARNESS.TARGETS:
        seeds = HARNESS._seeds(target)
        assert seeds, target
        assert all(seed.stat().st_size <= 16_384 for seed in seeds)


@pytest.mark.parametrize("target", sorted(HARNESS.TARGETS))
def test_corpus_replays_without_a_crash(target: str) -> None:
    workspace = HARNESS.Workspace()
    failures = []
    for seed in HARNESS._seeds(target):
        try:
            HARNESS.run_one(target, seed.read_bytes(), workspace)
        except Exception as error:  # collected: one report names every failing seed
            failures.append(f"{seed.name}: {type(error).__name__}: {str(error)[:300]}")
    assert not failures, "\n".join(failures)
