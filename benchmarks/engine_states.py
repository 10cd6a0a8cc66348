"""Bit-for-bit fingerprint of the engine at the CLI's default settings, its saved state included.

``engine_fingerprint`` pins concept reuse and standardization off (the engine as it was before
them); this one runs the learners ``adaptd run`` builds (``--model linear``, ``logistic``,
``mlp``, ``auto``; concept library, feature and target standardization on), with a few
settings changed per case (kernel off, oracle detector, baselines serial), several batch sizes
and a multi-class stream, and keeps a digest of every output column, the summary and every
leaf of ``state_dict()`` (the keys' ``last_seen`` clock readings left out).

    PYTHONPATH=. .venv/bin/python -m benchmarks.engine_states --save /tmp/before.pkl
    PYTHONPATH=. .venv/bin/python -m benchmarks.engine_states --compare /tmp/before.pkl

``r30k`` is the first 30,000 of the Kafka benchmark's 100,000 records
(``synthetic:linear-tasks?d=10&seed=7&keys=16``, as :mod:`benchmarks.kafka_throughput` makes them). Not a test (about
a minute); exits 1 when a digest differs.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from typing import Any

import numpy as np
import orjson

from adaptd.config import load_settings
from adaptd.connectors.synthetic import generate
from adaptd.learner import build_learner
from adaptd.records import Record

RECORDS = "synthetic:linear-tasks?d=10&seed=7&keys=16&n=100000"
#: (stream, model, task, batch size, settings changed from the defaults)
CASES: list[tuple[str, str, str, int, dict[str, Any]]] = [
    ("r30k", "linear", "regression", 1024, {}), ("r30k", "linear", "regression", 4096, {}),
    ("r30k", "linear", "regression", 97, {}),
    ("r30k", "linear", "regression", 1024, {"learner.kernel": False}),
    ("linmix", "linear", "regression", 500, {}),
    ("linmix", "linear", "regression", 500, {"drift.detector": "oracle"}),
    ("linmix", "linear", "regression", 300,
     {"learner.standardize_target": False, "learner.standardize": False}),
    ("linmix", "linear", "regression", 333, {"regret.baseline_thread": False}),
    ("logistic", "logistic", "classification", 512, {}),
    ("multiclass", "logistic", "classification", 400, {}),
    ("multiclass", "mlp", "classification", 400, {}),
    ("sinusoid", "mlp", "regression", 256, {}), ("sinusoid", "auto", "regression", 256, {}),
    ("r30k", "auto", "regression", 2048, {})]
FIELDS = ("y_pred", "loss", "drift", "segment", "learned", "recovered_after", "probas")


def _flat(obj: Any, path: str, out: dict[str, bytes]) -> None:
    """Every leaf of ``obj`` as bytes, by path (``last_seen``: a clock reading, left out)."""
    if path.endswith("last_seen"):
        return
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            _flat(obj[k], f"{path}/{k}", out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flat(v, f"{path}[{i}]", out)
    elif isinstance(obj, np.ndarray):
        data = pickle.dumps(obj.tolist()) if obj.dtype == object else obj.tobytes()
        out[path] = obj.dtype.str.encode() + repr(obj.shape).encode() + data
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        out[path] = bytes(obj)
    elif isinstance(obj, float):
        out[path] = np.float64(obj).tobytes()
    else:
        out[path] = repr(obj).encode()


def _records(name: str) -> list[Record]:
    if name == "r30k":
        from benchmarks.kafka_throughput import input_records

        rows = [orjson.loads(value) for value, _ in input_records(RECORDS)[:30000]]
        return [Record(x=tuple(o["x"]), y=o.get("y"), key=o["key"], task=o.get("task"))
                for o in rows]
    if name == "logistic":
        raw = generate("linear-tasks", seed=6, n=6000, d=4, hazard=0.01, keys=4)
        return [Record(x=tuple(r["x"]), y=None if i % 29 == 5 else float(r["y"] > 0),
                       key=r["key"]) for i, r in enumerate(raw)]
    if name == "multiclass":  # binary at first, then three classes (the model widens)
        raw = generate("linear-tasks", seed=7, n=5000, d=4, hazard=0.01, keys=3)
        return [Record(x=tuple(r["x"]), key=r["key"],
                       y=float(0 if r["y"] < -1 else 1 if r["y"] < 1 else 2) if i > 300
                       else float(r["y"] > 0)) for i, r in enumerate(raw)]
    if name == "sinusoid":
        raw = generate("sinusoid", seed=4, n=3000, keys=3, hazard=0.01)
        return [Record(x=tuple(r["x"]), y=None if i % 29 == 5 else r["y"], key=r["key"])
                for i, r in enumerate(raw)]
    raw = generate("linear-tasks", seed=5, n=8000, d=5, hazard=0.01, keys=5)  # linmix
    return [Record(x=tuple(r["x"]) if i != 700 else tuple(1e300 for _ in r["x"]),
                   y=None if i % 29 == 5 else r["y"], key=r["key"], task=r["task"])
            for i, r in enumerate(raw)]


def fingerprint() -> dict[str, str]:
    """A digest per case and output column, summary and state leaf."""
    parts: dict[str, list[bytes]] = {}
    streams: dict[str, list[Record]] = {}
    for name, model, task, batch, changed in CASES:
        records = streams.setdefault(name, _records(name))
        env = {"ADAPTD_" + k.upper().replace(".", "__"): str(v).lower() for k, v in
               changed.items()}
        learner = build_learner(load_settings(environ=env, flags={"model": model, "task": task}))
        tag = f"{name}/{model}/{batch}/{sorted(changed.items())}"
        for lo in range(0, len(records), batch):
            out = learner.process_many(records[lo : lo + batch])
            for field in FIELDS:
                value = getattr(out, field, None)
                if value is not None:
                    parts.setdefault(f"{tag}:{field}", []).append(np.asarray(value).tobytes())
        parts[f"{tag}:summary"] = [repr(learner.summary()).encode()]
        leaves: dict[str, bytes] = {}
        _flat(learner.state_dict(), "", leaves)
        parts.update({f"{tag}:state{k}": [v] for k, v in leaves.items()})
    return {k: hashlib.sha256(b"".join(v)).hexdigest() for k, v in parts.items()}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("--save", "--compare"):
        print("usage: python -m benchmarks.engine_states --save|--compare FILE")
        return 2
    now = fingerprint()
    if argv[0] == "--save":
        with open(argv[1], "wb") as f:
            pickle.dump(now, f)
        print(f"{len(now)} digests saved to {argv[1]}")
        return 0
    with open(argv[1], "rb") as f:
        before = pickle.load(f)
    bad = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    for k in bad[:40]:
        print("DIFFERS:", k)
    print(f"{len(now)} digests compared, {len(bad)} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
