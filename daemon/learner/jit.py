"""How the engine's compiled pieces are compiled: one decorator, with a pure-Python fallback.

Every rule the engine has (the inner step, the per-row network math, Page-Hinkley) is written
once, as a function over arrays and scalars, and compiled by Numba. The compiled kernel
(:mod:`adaptd.learner.kernel`) calls them per record; the NumPy wave path, the carried-window
seed step and the detector bank call the same functions from Python. Without Numba the
functions run as plain Python (slowly, but with the same results).

Numba caches the machine code next to each module (``__pycache__``, or ``NUMBA_CACHE_DIR``):
the first batch after a fresh install compiles it (a few seconds), later processes load it in
about 0.3 s. Container images should run one batch at build time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None  # type: ignore[assignment]

F = TypeVar("F", bound=Callable[..., Any])

#: True when the pieces are compiled (the kernel is used only then).
COMPILED = numba is not None


def njit(inline: bool = False, nogil: bool = False) -> Callable[[F], F]:
    """Compile with Numba (cached); ``inline`` for small helpers of the per-record loop.

    ``error_model="numpy"``: a division by zero gives inf/NaN (which the finiteness checks
    catch) instead of a branch to raise ZeroDivisionError around every division and modulo.
    """
    def wrap(fn: F) -> F:
        if numba is None:  # pragma: no cover
            return fn
        return numba.njit(cache=True, error_model="numpy", nogil=nogil,  # type: ignore[no-any-return]
                          inline="always" if inline else "never")(fn)
    return wrap
