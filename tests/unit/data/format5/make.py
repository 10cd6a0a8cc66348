"""Made with main (format 5) at b52ff14: a state dir after 400 records, and main's predictions
for the 200 records after them."""
import json, shutil, sqlite3, sys
from pathlib import Path
from adaptd.runner import RunnerConfig
from tests.unit.file_runs import file_runner
from tests.unit.test_runner_restart import write_stream
out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
src = out / "in.jsonl"
write_stream(src, 400, seed=1, rare="r")
config = RunnerConfig(batch_size=16, poll_timeout_s=0.01, checkpoint_every_records=50)
FLAGS = {"model": "linear", "learner.standardize": False, "learner.standardize_target": False,
         "learner.max_keys": 3}
file_runner(out / "run", src, config, **FLAGS).run()
db = sqlite3.connect(out / "run/state/state.db")
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print(db.execute("SELECT key, evicted, checkpoint, length(value) FROM keys").fetchall())
print(db.execute("SELECT * FROM evictions").fetchall())
db.close()
(out / "state").mkdir()
for name in ("state.db", "meta.pt"):
    shutil.copy(out / "run/state" / name, out / "state" / name)
write_stream(src, 200, seed=2)
file_runner(out / "run", src, config, **FLAGS).run()
lines = (out / "run/predictions.jsonl").read_text().splitlines()
(out / "predictions_after.jsonl").write_text("\n".join(lines[400:]) + "\n")
shutil.rmtree(out / "run")
