"""Task state that outgrows the machine's memory (``learner.max_keys`` set beyond it): the
learner grows only to the keys it holds when all of ``max_keys`` does not fit, and stops with
one line naming the setting when those do not fit either, never dead-lettering records for it.

The machine's refusal is simulated (:data:`LIMIT_ROWS`): the arena's arrays are allocated
lazily, and when the OS refuses one depends on its memory and its overcommit policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adaptd.errors import ArenaMemoryError
from adaptd.isolation import learn_isolating
from adaptd.learner import adaptive
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.records import Record, RecordBatch
from adaptd.settings import DriftConfig, LearnerConfig, RegretConfig

#: Arena rows the simulated machine holds (a key takes two: its own and its baseline's).
LIMIT_ROWS = 1200


def _refusing(real):  # type: ignore[no-untyped-def]
    def grow(old, rows, *shape):  # type: ignore[no-untyped-def]
        if rows > LIMIT_ROWS:
            raise MemoryError(f"Unable to allocate an array of {rows} rows")
        return real(old, rows, *shape)
    return grow


def _batch(first: int, n: int) -> RecordBatch:
    rng = np.random.default_rng(first)
    return RecordBatch.from_records([Record(x=tuple(rng.normal(size=3).tolist()), y=float(i % 2),
                                            key=f"k{first + i}") for i in range(n)])


def _learner(max_keys: int) -> AdaptiveLearner:
    return AdaptiveLearner("logistic", "classification", config=LearnerConfig(max_keys=max_keys),
                           drift=DriftConfig(), regret=RegretConfig())


def test_all_of_max_keys_not_fitting_grows_to_the_keys_held(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setattr(adaptive, "grow_arena", _refusing(adaptive.grow_arena))
    lrn = _learner(max_keys=2000)
    seen = 0
    for _ in range(5):  # 500 keys: past a quarter of max_keys, where growth jumps to all of it
        lrn.process_batch(_batch(seen, 100))
        seen += 100
    assert len(lrn.keys()) == 500
    assert 500 <= lrn._capacity <= LIMIT_ROWS // 2
    with pytest.raises(ArenaMemoryError, match=r"learner\.max_keys=2000: no memory .* keys"):
        for _ in range(2):  # 700 keys: more than the machine's 600
            lrn.process_batch(_batch(seen, 100))
            seen += 100


def test_it_is_not_a_records_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolation re-runs a failed batch's records one at a time and dead-letters the ones that
    fail alone; out of memory, each would fail alone and every record be dead-lettered."""
    monkeypatch.setattr(adaptive, "grow_arena", _refusing(adaptive.grow_arena))
    lrn = _learner(max_keys=10_000)
    rejected: list[object] = []
    batch = _batch(0, 700)
    good = list(range(len(batch)))
    with pytest.raises(ArenaMemoryError):
        learn_isolating(lrn, good, batch, lambda raw, err: rejected.append(raw))  # type: ignore[arg-type]
    assert rejected == []


RUN = """
import sys
from adaptd.learner import adaptive
from tests.unit.test_arena_memory import _refusing
adaptive.grow_arena = _refusing(adaptive.grow_arena)
from adaptd.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_daemon_stops_with_one_line_naming_the_setting(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    with source.open("w") as fh:
        for i in range(2000):
            fh.write(json.dumps({"key": f"k{i}", "x": [i % 7, 1.0], "y": i % 2}) + "\n")
    out = subprocess.run(
        [sys.executable, "-c", RUN, "run", "--source", f"jsonl:{source}",
         "--sink", f"jsonl:{tmp_path / 'out.jsonl'}", "--state-dir", str(tmp_path / "state"),
         "--metrics-port", "0", "--model", "logistic", "--task", "classification",
         "--set", "learner.max_keys=5000", "--set", "batch_size=256"],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parents[2])
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("adaptd run: configuration error: learner.max_keys=5000: no memory")
    assert "Traceback" not in out.stderr
    assert (tmp_path / "state" / "dead-letter.jsonl").read_text() == ""
