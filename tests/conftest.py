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

from unshell.constants import CACHE_DIR_ENV, HOME_ENV, XDG_CACHE_ENV

TESTS_DIR = Path(__file__).resolve().parent


def _test_cache_root() -> Path:
    """``$UNSHELL_TEST_CACHE``, else ``~/.cache/unshell-tests`` (as `artifacts.py`)."""
    return Path(os.environ.get("UNSHELL_TEST_CACHE") or Path.home() / ".cache" / "unshell-tests")


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
    monkeypatch.setenv(HOME_ENV, str(home / "unshell"))
    # The model-code reference index is costly to build: one per test cache, never the user's.
    monkeypatch.setenv(CACHE_DIR_ENV, str(_test_cache_root() / "unshell-cache"))
    monkeypatch.delenv(XDG_CACHE_ENV, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield home


# -- the fast layer ------------------------------------------------------------------------------
#
# `pytest -m "not slow"` runs the numpy-only layer in seconds; CI runs it first. A test is slow
# when it, or a fixture it uses (transitively), refers to one of these names: a download from the
# registries (`fetch`), the torch-trained zoo, torch or transformers, a subprocess, Ray or a browser.
# Decided from the code, so a new test lands in the right layer without anyone marking it.
SLOW_NAMES = frozenset(
    {
        "fetch",
        "zoo",
        "zoo_module",
        "vocab_zoo",
        "torch",
        "transformers",
        "subprocess",
        "ray",
        "sync_playwright",
        "_zoo_pair",
        "gen_tokenizer_families",  # the tools/ generator fetches every real tokenizer
    }
)


def _code_names(function: object, seen: set[int]) -> set[str]:
    """Global names a function (and the module-level helpers it calls) refers to."""
    function = getattr(function, "__wrapped__", function)  # functools.cache and friends
    code = getattr(function, "__code__", None)
    if code is None or id(code) in seen:
        return set()
    seen.add(id(code))
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= set(const.co_names)
    module_globals = getattr(function, "__globals__", {})
    for name in list(names):
        helper = module_globals.get(name)
        if callable(helper) and getattr(helper, "__module__", None) == getattr(function, "__module__", ""):
            names |= _code_names(helper, seen)
    return names


def _is_slow(item: pytest.Item) -> bool:
    seen: set[int] = set()
    names = _code_names(getattr(item, "function", None), seen)
    info = getattr(item, "_fixtureinfo", None)
    for definitions in info.name2fixturedefs.values() if info is not None else ():
        for definition in definitions:
            names |= _code_names(definition.func, seen)
    return bool(names & SLOW_NAMES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
