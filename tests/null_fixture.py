"""The converged null population for tests (``tools/null_population.py``): built on first use
(a few minutes on 2 cores) or loaded from the cache (``~/.cache/unshell-tests/null-converged/<key>/``).

    from null_fixture import converged_population

    converged_population().pairs("docs-h32")   # 210 same-recipe pairs of independent models
    converged_population().cross_pairs()       # pairs that differ in data or recipe
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from file_modules import file_module

_TOOL = Path(__file__).resolve().parent.parent / "tools" / "null_population.py"


@functools.cache
def _module() -> Any:
    return file_module(_TOOL, "unshell_tools_null_population")


@functools.cache
def converged_population() -> Any:
    """The population, built (once, under a lock) or loaded; a build logs to stderr."""
    return _module().load_or_build(log=lambda message: print(message, file=sys.stderr, flush=True))
