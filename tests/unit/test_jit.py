"""The compiled engine's start-up: Numba's math is loaded without ``scipy.linalg``, which is
only sound while no compiled function multiplies vectors or matrices through BLAS."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
import threading
import time

import pytest

import adaptd
from adaptd.learner import jit
from adaptd.learner.jit import COMPILED

pytestmark = pytest.mark.skipif(not COMPILED, reason="numba is not installed")

#: What would make Numba reach for BLAS (``np.dot`` / ``@`` / ``np.linalg``) in compiled code.
_BLAS = re.compile(r"np\.dot|\.dot\(|np\.linalg|np\.matmul|\s@\s")


def _compiled_functions() -> dict[str, object]:
    from numba.core.dispatcher import Dispatcher

    found: dict[str, object] = {}
    for info in pkgutil.walk_packages(adaptd.__path__, "adaptd."):
        if info.name.endswith("__main__") or ".connectors" in info.name or ".bench" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, Dispatcher) and value.py_func.__module__ == info.name:
                found[f"{info.name}.{name}"] = value.py_func
    return found


def test_no_compiled_function_uses_blas() -> None:
    functions = _compiled_functions()
    assert len(functions) > 10  # the engine's kernel, steps, network, scaling, detectors
    users = [name for name, fn in functions.items()
             if _BLAS.search(inspect.getsource(fn))]  # type: ignore[arg-type]
    assert users == []


def test_the_pattern_catches_a_dot() -> None:
    assert _BLAS.search("    z = x @ theta\n") and _BLAS.search("np.dot(a, b)")
    assert not _BLAS.search("a[i] * b[i]  # @decorator-free")


def test_a_run_does_not_import_scipy_linalg_and_scipy_still_imports() -> None:
    code = (
        "import sys, numpy as np\n"
        "from adaptd.learner.scaling import RunningMoments\n"
        "RunningMoments(2).standardize_each(np.ones((3, 2)), np.ones(3, dtype=bool))\n"
        "import numba.np.arraymath as m\n"
        "print('scipy.linalg' in sys.modules, m._HAVE_BLAS)\n"
        "import scipy.linalg.cython_blas\n"
        "print('scipy.linalg' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["False", "False", "True"]


def test_the_start_up_loader_names_compiled_functions_and_loads_those_first() -> None:
    """Every function :data:`FIRST_USE` names is compiled (a rename would otherwise drop it
    from the start-up load silently); the linear model loads those only, others everything,
    those first."""
    from adaptd.learner.jit import FIRST_USE, load_order, qualified_name

    compiled = _compiled_functions()
    assert set(FIRST_USE) <= set(compiled), set(FIRST_USE) - set(compiled)
    assert [qualified_name(d) for d in load_order("linear")] == list(FIRST_USE)
    everything = [qualified_name(d) for d in load_order("auto")]
    assert everything[:len(FIRST_USE)] == list(FIRST_USE)
    assert sorted(everything) == sorted(set(everything)) and len(everything) > len(FIRST_USE)


@pytest.mark.parametrize("standardize", [True, False])
def test_a_read_only_batch_runs_the_code_compiled_for_a_writable_one(standardize: bool) -> None:
    """Decoders give X writable (the compiled scan) or read-only (``np.frombuffer``); Numba
    types the flag, so without :func:`adaptd.learner.jit.read_only` a daemon whose batches come
    both ways compiled the kernel twice (a minute each on a cold cache, mid-stream)."""
    import numpy as np

    from adaptd.learner import kernel, scaling
    from adaptd.learner.adaptive import AdaptiveLearner
    from adaptd.records.schema import RecordBatch
    from adaptd.settings import LearnerConfig

    learner = AdaptiveLearner("logistic", task="classification",
                              config=LearnerConfig(standardize=standardize))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = (X[:, 0] > 0).astype(float)

    def batch(X: np.ndarray) -> RecordBatch:
        return RecordBatch([f"k{i % 4}" for i in range(len(X))], X, y.copy(),
                           [None] * len(X), [None] * len(X))

    learner.process_batch(batch(X.copy()))
    compiled = [set(f.signatures) for f in (kernel.process, scaling._welford_rows)]
    frozen = np.frombuffer(X.tobytes()).reshape(X.shape)
    assert not frozen.flags.writeable
    learner.process_batch(batch(frozen))
    assert [set(f.signatures) for f in (kernel.process, scaling._welford_rows)] == compiled


def test_a_run_waits_for_the_start_up_loader_before_it_returns() -> None:
    # serve() ends with wait_for_loader: an interpreter torn down while the loader still
    # loads machine code dies of SIGSEGV (a short run in a test's child process did).
    done = threading.Event()
    jit.meanwhile(lambda: (time.sleep(0.3), done.set()))
    jit.wait_for_loader()
    assert done.is_set()
    jit.wait_for_loader()  # nothing left to load: returns at once
