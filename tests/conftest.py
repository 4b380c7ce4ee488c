"""Shared fixtures. Test helpers beside this file (``artifacts.py``) import as top-level modules."""

from __future__ import annotations

import os

# The suite's numpy matrices are tiny: OpenBLAS threads only add spin-waiting (and on a shared
# 2-core machine can make a 128 x 128 eigendecomposition a hundred times slower). Set before numpy
# loads. torch keeps its own thread pool, so zoo training is not affected.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent

# pytest's default import mode already does this; an explicit insert keeps `import artifacts`
# working under --import-mode=importlib too.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import fuzz_support  # noqa: E402  (a test helper beside this file: needs the path above)

# The fuzz tests' hypothesis profiles: `ci` (default, derandomized) or `dev` (UNSHELL_FUZZ_PROFILE=dev).
fuzz_support.register_profiles()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Small real files copied into the repository (sources and licences in its README.md)."""
    return TESTS_DIR / "data" / "fixtures"


@pytest.fixture(autouse=True)
def isolated_hf_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Keep every test away from the user's Hugging Face cache, unshell library and the network."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("UNSHELL_HOME", str(home / "unshell"))
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield home
