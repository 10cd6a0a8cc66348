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
    from numba.core.cpu import CPUTargetOptions
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None  # type: ignore[assignment]

F = TypeVar("F", bound=Callable[..., Any])

#: True when the pieces are compiled (the kernel is used only then).
COMPILED = numba is not None


def njit(inline: bool = False, nogil: bool = False, refcounts: bool = True
         ) -> Callable[[F], F]:
    """Compile with Numba (cached); ``inline`` for small helpers of the per-record loop.

    ``error_model="numpy"``: a division by zero gives inf/NaN (which the finiteness checks
    catch) instead of a branch to raise ZeroDivisionError around every division and modulo.

    ``refcounts=False`` (Numba's ``_nrt=False``) for a function that allocates nothing: Numba
    otherwise counts a reference each time an array is taken out of a named tuple, a call to
    the runtime per access, which took the logistic kernel from 0.35 to 0.9 µs a record. If a
    Numba version drops the option, the function is compiled with reference counts (slower,
    same results).
    """
    def wrap(fn: F) -> F:
        if numba is None:  # pragma: no cover
            return fn
        options: dict[str, Any] = {"cache": True, "error_model": "numpy", "nogil": nogil,
                                   "inline": "always" if inline else "never"}
        if not refcounts and hasattr(CPUTargetOptions, "_nrt"):
            options["_nrt"] = False
        return numba.njit(**options)(fn)  # type: ignore[no-any-return]
    return wrap
