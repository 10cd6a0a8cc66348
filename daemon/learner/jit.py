"""How the engine's compiled pieces are compiled: one decorator, with a pure-Python fallback.

Every rule the engine has (the inner step, the per-row network math, Page-Hinkley) is written
once, as a function over arrays and scalars, and compiled by Numba. The compiled kernel
(:mod:`adaptd.learner.kernel`) calls them per record; the NumPy wave path, the carried-window
seed step and the detector bank call the same functions from Python. Without Numba the
functions run as plain Python (slowly, but with the same results).

Numba caches the machine code next to each module (``__pycache__``, or ``NUMBA_CACHE_DIR``):
after a fresh install the daemon compiles the engine before it opens its source (about a
minute on 2 cores: :mod:`adaptd.learner.warm_up`); later processes load it in about 0.3 s.
Container images should run one batch at build time (``deploy/Dockerfile`` does). Numba
checks only the defining file of each cached function; :mod:`adaptd.learner.jit_cache` drops
the whole cache when any source changed.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from adaptd.learner.jit_cache import drop_stale_cache

log = logging.getLogger(__name__)

try:
    import numba
    from numba.core.cpu import CPUTargetOptions
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None  # type: ignore[assignment]


def _load_numba_math_without_scipy() -> None:
    """Load Numba's NumPy implementations with ``scipy.linalg`` hidden (unless it is loaded).

    On its first compile or cache load Numba imports ``numba.np.arraymath``, which imports
    ``scipy.linalg.cython_blas`` (``numba`` itself imports only the light ``scipy`` package,
    for its version) only to decide whether a compiled ``np.dot`` of two vectors
    calls BLAS or a plain loop; ``scipy.linalg``'s import was about 0.15 s of the daemon's 1 s start-up.
    No compiled function here calls ``np.dot`` or ``@`` (``tests/unit/test_jit.py`` checks),
    so the plain loop is never used either. Anything that does need SciPy later (Numba's
    matrix products check for it when they are compiled) imports it as usual: the block is
    lifted before this returns.
    """
    if numba is None or "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # its import: ImportError
    try:
        importlib.import_module("numba.np.arraymath")
    finally:
        del sys.modules["scipy.linalg"]


_load_numba_math_without_scipy()
drop_stale_cache()  # before any compiled function is loaded from the cache

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
        dispatcher = numba.njit(**options)(fn)
        _COMPILED.append(dispatcher)
        return dispatcher  # type: ignore[no-any-return]
    return wrap


def read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array``, for an argument of a compiled function that only reads
    it. Numba compiles a function once per argument type, and the write flag is part of it:
    decoders hand over arrays writable (the compiled scan's cells) or read-only
    (``np.frombuffer`` in the general decode), and each second compile costs up to a minute on
    a cold cache, mid-stream. Passing every such array read-only keeps one compiled version."""
    view = array.view()
    view.flags.writeable = False
    return view


#: Every function compiled through :func:`njit`, for :func:`load_cached`.
_COMPILED: list[Any] = []


#: The compiled functions the daemon's Python calls with the linear and logistic models, in
#: the order their first batch calls them: decode (the read-ahead thread), standardization,
#: the engine and its baseline, totals, the outputs' encoding (the write-behind thread). The
#: start-up loader loads these first, so each is there before the batch needs it. Functions
#: only other compiled functions call are missing on purpose: their callers' cached code holds
#: them (loading ``eisel_lemire`` on its own was 0.1 s, and it is never called from Python).
FIRST_USE = (
    "adaptd.records.scan._scan",
    "adaptd.learner.scaling._welford_rows",
    "adaptd.learner.target_scales.frozen_scales",
    "adaptd.learner.kernel.process_shadow",
    "adaptd.learner.kernel.process",
    "adaptd.learner.totals.gather_runs",
    "adaptd.learner.step._step_rows",
    "adaptd.learner.kernel.shadow_sum",
    "adaptd.records.encoded._fill",
)
#: Models whose batches call nothing compiled beyond :data:`FIRST_USE` before their first
#: drift; anything else they call later loads at its first call, as without a loader.
FIRST_USE_ONLY = frozenset({"linear", "logistic"})


def qualified_name(dispatcher: Any) -> str:
    """``module.function`` of a compiled function, as :data:`FIRST_USE` names it."""
    return f"{dispatcher.py_func.__module__}.{dispatcher.py_func.__name__}"


def load_order(model: str | None = None) -> list[Any]:
    """The compiled functions :func:`load_cached` loads for ``model``, in that order:
    :data:`FIRST_USE` (those imported), then, unless ``model`` is in
    :data:`FIRST_USE_ONLY`, every other one (the MLP's, the ensemble's)."""
    named = {qualified_name(d): d for d in _COMPILED}
    first = [named[name] for name in FIRST_USE if name in named]
    if model in FIRST_USE_ONLY:
        return first
    return first + [d for d in _COMPILED if d not in first]


def load_cached(model: str | None = None) -> int:
    """Load the cached machine code of the compiled functions ``model`` needs
    (:func:`load_order`; every one for None), for each signature its cache holds (those the
    daemon's batches called it with); returns how many were loaded.

    Numba loads a function's code at its first call: 0.3 s of the first batch, on the
    daemon's thread, in every process. :func:`load_cached_meanwhile` does it while the
    daemon builds its runner and waits for its source instead. Uses Numba's cache index
    (``_cache``, not public API): a Numba without it, or an index it cannot read, loads
    nothing here (the first call then does, as before)."""
    # Numba's typeof of a read-only array (the scan's input buffer) imports numpy.ma on the
    # first call: 10-20 ms of the first batch otherwise.
    importlib.import_module("numpy.ma")
    loaded = 0
    for dispatcher in load_order(model):
        try:
            for signature in cached_signatures(dispatcher):
                dispatcher.compile(signature)
                loaded += 1
        except Exception:  # best effort: the first call compiles or loads as usual
            log.debug("cached code of %s not loaded ahead", dispatcher, exc_info=True)
    return loaded


def cached_signatures(dispatcher: Any) -> list[Any]:
    """The signatures ``dispatcher``'s cache holds code for, built for this machine (none if
    Numba's cache index cannot be read: ``_cache`` is not public API)."""
    try:
        index = dispatcher._cache._cache_file._load_index()
        magic = dispatcher.targetctx.codegen().magic_tuple()
    except Exception:  # best effort, as load_cached
        log.debug("cache index of %s not read", dispatcher, exc_info=True)
        return []
    return [key[0] for key in index if key[1] == magic]


#: The start-up loader's to-do list (see :func:`meanwhile`) and whether its thread runs.
_todo: list[Callable[[], Any]] = []
_loader_running = False
_loader_lock = threading.Lock()
_loader: threading.Thread | None = None


def meanwhile(task: Callable[[], Any]) -> None:
    """Run ``task`` on the start-up loader thread: one thread for every start-up load (the
    cached machine code, a connector's warm-up), started by the first call, ending when its
    list is done. The loads take Numba's compiler lock one after the other anyway; a thread
    each only added a thread's start and their contention for the lock. Returns at once."""
    global _loader_running, _loader
    with _loader_lock:
        _todo.append(task)
        if _loader_running:
            return
        _loader_running = True
        # Started under the lock, so a waiter never finds it unstarted.
        _loader = threading.Thread(target=_load_all, name="adaptd-load-compiled", daemon=True)
        _loader.start()


def wait_for_loader() -> None:
    """Until the start-up loader has done its list. An interpreter torn down while the thread
    still loads machine code dies of SIGSEGV inside LLVM: a caller of a run short enough to
    end first (a test's, a notebook's) waits here before it returns."""
    with _loader_lock:
        thread = _loader
    if thread is not None and thread is not threading.current_thread():
        thread.join()


def _load_all() -> None:
    global _loader_running
    while True:
        with _loader_lock:
            if not _todo:
                _loader_running = False
                return
            task = _todo.pop(0)
        try:
            task()
        except Exception:  # best effort: the first call loads or compiles as usual
            log.debug("start-up load %s failed", task, exc_info=True)


def load_cached_meanwhile(model: str | None = None) -> None:
    """:func:`load_cached` for ``model`` on the start-up loader thread (:func:`meanwhile`),
    started now: the daemon's thread builds its runner and connects to its source (waiting on
    the network, the GIL free) while the code loads."""
    meanwhile(lambda: load_cached(model))
