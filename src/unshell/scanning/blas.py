"""One BLAS thread per scan worker.

A scan already runs one worker per core; a multithreaded BLAS inside each worker only makes the
workers fight over the cores (OpenBLAS threads spin while they wait: a fleet audit on 2 cores ran
ten times slower with 2 BLAS threads per worker than with 1). And a matrix product's rounding
depends on how many threads split it, so p-values would differ in their last digits between the
local pool (BLAS's default threads) and Ray (whose workers start with ``OMP_NUM_THREADS=1``).
With one thread in both, the engines give equal records, float for float.

NumPy has no API for this; like threadpoolctl, `blas_threads` finds the OpenBLAS that NumPy
loaded (on Linux, through ``/proc/self/maps``) and calls its own setter. Where none is found (an
other BLAS, another system) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Callable, Iterator

__all__ = ["blas_threads"]

# (setter, getter) names, by OpenBLAS build: NumPy's wheels (scipy-openblas, 64-bit ints), older
# NumPy wheels, and a system OpenBLAS.
_OPENBLAS_FUNCTIONS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


@functools.cache
def _openblas() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    import numpy  # noqa: F401 (loads the BLAS it links)

    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = sorted(
                {
                    fields[-1]
                    for line in maps
                    if len(fields := line.split()) >= 6 and "openblas" in os.path.basename(fields[-1]).lower()
                }
            )
    except OSError:
        return None
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _OPENBLAS_FUNCTIONS:
            setter = getattr(library, set_name, None)
            getter = getattr(library, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    return None


@contextlib.contextmanager
def blas_threads(count: int) -> Iterator[None]:
    """Run the body with ``count`` OpenBLAS threads, then restore the previous number."""
    found = _openblas()
    if found is None:
        yield
        return
    setter, getter = found
    before = getter()
    setter(count)
    try:
        yield
    finally:
        setter(before)
