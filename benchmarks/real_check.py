"""adaptd's engine on the bench's real streams under given settings, for an engine change that
must not cost them (the MLP work of issues 11 and 13).

Each stream runs through the bench's own adaptd learner (:class:`adaptd.bench.engine.AdaptdLearner`,
built from settings as ``adaptd run`` builds it, batches of 256), with ``--task`` and the given
``--model`` (``auto``, the default, and ``mlp``) plus ``--set`` settings. Real streams are
deterministic: a rerun gives the same numbers. Prints accuracy (classification) or MSE.

    PYTHONPATH=. .venv/bin/python benchmarks/real_check.py --model auto mlp [--set learner.window=3]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from adaptd.bench.engine import AdaptdLearner
from adaptd.bench.streams import real_streams


def score(task: str, y: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy (a class column or index per record) or MSE."""
    if task == "regression":
        return float(np.mean((y_pred - y) ** 2))
    pred = y_pred.argmax(axis=1) if y_pred.ndim == 2 else (y_pred >= 0.5).astype(float)
    return float(np.mean(pred == y))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", default=["auto", "mlp"])
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = p.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.set)
    print(f"settings: {extra or 'defaults'}")
    for stream in real_streams(quick=False):
        data = stream.load(0, 10**9)
        cells = []
        for model in args.model:
            flags = {"model": model, "task": stream.task, **extra}
            trace = AdaptdLearner(flags, reports_alarms=False).run(data)
            y = np.array([r.y for r in data.records], dtype=float)
            cells.append(f"{model} {score(stream.task, y, trace.y_pred):.4g}")
        print(f"  {stream.name:22s} " + "  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
