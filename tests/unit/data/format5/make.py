"""How data/format5 was made, with main at b52ff14 (store format 5), from /work/main:
``PYTHONPATH=. .venv/bin/python tests/unit/data/format5/make.py OUT``: a state dir after 400
records (keys a and r evicted), and that adaptd's predictions of the 200 records after them."""

import shutil
import sqlite3
import sys
from pathlib import Path

from adaptd.runner import RunnerConfig
from tests.unit.file_runs import file_runner
from tests.unit.test_runner_restart import write_stream


def main() -> None:
    """Write the state dir and the predictions into ``sys.argv[1]``."""
    out = Path(sys.argv[1])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    src = out / "in.jsonl"
    write_stream(src, 400, seed=1, rare="r")
    config = RunnerConfig(batch_size=16, poll_timeout_s=0.01, checkpoint_every_records=50)
    flags = {"model": "linear", "learner.standardize": False, "learner.standardize_target": False,
             "learner.max_keys": 3}
    file_runner(out / "run", src, config, **flags).run()
    db = sqlite3.connect(out / "run/state/state.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    (out / "state").mkdir()
    for name in ("state.db", "meta.pt"):
        shutil.copy(out / "run/state" / name, out / "state" / name)
    write_stream(src, 200, seed=2)
    file_runner(out / "run", src, config, **flags).run()
    lines = (out / "run/predictions.jsonl").read_text().splitlines()
    (out / "predictions_after.jsonl").write_text("\n".join(lines[400:]) + "\n")
    shutil.rmtree(out / "run")


if __name__ == "__main__":  # pytest's doctest collection imports it: nothing to do then
    main()
