"""The lineage zoo for tests: ``zoo()`` builds it on first use (about 6 minutes on 2 cores) or
loads it from the cache (``~/.cache/unshell-tests/zoo/<key>/``; ``UNSHELL_TEST_CACHE`` moves it).

    from zoo_fixture import zoo

    for pair in zoo().derived:        # Pair(name, a, b, how, note)
        ...
    zoo().independent                 # pairs that share no weights
    zoo().bases                       # name -> path
    zoo().null_pairs(200)             # cheap independent pairs for null calibration (cached too)
    vocab_zoo().derived               # the vocabulary cases (tools/zoo_vocab.py), built on zoo()

The builder is ``tools/zoo.py`` (also a CLI: ``python tools/zoo.py build``); this module only
imports it, under a name of its own so that it cannot clash with a test module.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from file_modules import file_module

_TOOLS_ZOO = Path(__file__).resolve().parent.parent / "tools" / "zoo.py"
_MODULE_NAME = "unshell_tools_zoo"


def zoo_module() -> ModuleType:
    """``tools/zoo.py`` as a module (loaded once per process)."""
    return file_module(_TOOLS_ZOO, _MODULE_NAME)


_zoo = zoo_module()
if TYPE_CHECKING:
    from tools.zoo import Pair, Zoo
else:
    Pair, Zoo = _zoo.Pair, _zoo.Zoo

__all__ = ["Pair", "Zoo", "compared", "vocab_zoo", "without_tokenizer", "zoo", "zoo_module"]


@functools.cache
def zoo() -> Zoo:
    """The lineage zoo, built (once, under a lock) or loaded from the cache. A build logs its
    progress to stderr (``pytest -s`` shows it)."""
    result: Zoo = _zoo.load_or_build(log=lambda message: print(message, file=sys.stderr, flush=True))
    return result


_TOOLS_ZOO_VOCAB = _TOOLS_ZOO.with_name("zoo_vocab.py")


@functools.cache
def vocab_zoo() -> Any:
    """The zoo's vocabulary cases (``tools/zoo_vocab.py``): built (about 8 minutes on 2 cores,
    after ``zoo()``) or loaded from the cache."""
    module = file_module(_TOOLS_ZOO_VOCAB, "unshell_tools_zoo_vocab")
    return module.load_or_build(log=lambda message: print(message, file=sys.stderr, flush=True))


@functools.cache
def compared(a: Path, b: Path, quick: bool = False) -> Any:
    """``unshell.compare(a, b, quick=quick)``, computed once per test session: compare is
    deterministic, and the zoo, vocabulary and search-parity tests check the same pairs against
    different references (how each model was made, and the fingerprint's verdict)."""
    import unshell

    return unshell.compare(a, b, quick=quick)


@functools.cache
def _bare_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="unshell-no-tokenizer-"))
    atexit.register(shutil.rmtree, root, True)
    return root


def without_tokenizer(path: Path) -> Path:
    """A copy of a model folder with only its weights and config (no tokenizer file), one per
    session; a file is returned as it is."""
    if not path.is_dir():
        return path
    copy = _bare_root() / path.parent.name / path.name
    if not copy.exists():
        copy.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy(path / name, copy / name)
    return copy
