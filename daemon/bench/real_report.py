"""The report's section on the real streams: adaptd's settings grid next to the peers.

One row per learner, one column per real stream (transposed, so the grid stays readable):
accuracy / log loss / records-per-second ratio for classification, MSE / ratio for regression.
Then, per stream, adaptd's default, its best variant and the best peer and baseline, with the
gap in accuracy points (or the MSE ratio): what the engine work has to close.
"""

from __future__ import annotations

from adaptd.bench.learners import REFERENCE_LEARNER
from adaptd.bench.markdown import fmt, table
from adaptd.bench.measures import Scores
from adaptd.bench.report import ADAPTD, absent
from adaptd.bench.suite import SuiteResult

Agg = dict[tuple[str, str], Scores]


def _quality(task: str, s: Scores) -> float:
    """Higher is better: accuracy, or minus the MSE."""
    return s.accuracy if task == "classification" and s.accuracy is not None else -s.mean_loss


def _cell(task: str, s: Scores, ref: Scores | None) -> str:
    ratio = f" / {fmt(s.records_per_s / ref.records_per_s, 2)}×" if ref else ""
    if task == "classification":
        return f"{fmt(s.accuracy)} / {fmt(s.mean_loss)}{ratio}"
    return f"{fmt(s.mean_loss)}{ratio}"


def _grid(result: SuiteResult, agg: Agg, task: str, streams: list[str]) -> list[str]:
    groups = ("adaptd", "variant", "peer", "baseline")
    ran = {(r.stream, r.learner) for r in result.runs}
    # Learners that ran on none of these streams (regression-only variants in the
    # classification grid) get no row.
    names = [spec.name for g in groups for spec in result.learners
             if spec.group == g and spec.name not in ("adaptd-oracle", "adagrad-reset")
             and any((st, spec.name) in ran for st in streams)]
    best = {st: max((_quality(task, agg[(st, n)]) for n in names if (st, n) in agg),
                    default=None) for st in streams}
    rows = []
    for name in names:
        row = [f"`{name}`"]
        for st in streams:
            s = agg.get((st, name))
            if s is None:
                row.append(absent(result, st, name))
                continue
            cell = _cell(task, s, agg.get((st, REFERENCE_LEARNER)))
            row.append(f"**{cell}**" if _quality(task, s) == best[st] else cell)
        rows.append(row)
    return table(["learner", *streams], rows)


def _best(result: SuiteResult, agg: Agg, task: str, stream: str, group: str
          ) -> tuple[str, Scores] | None:
    found = [(spec.name, agg[(stream, spec.name)]) for spec in result.learners
             if spec.group == group and (stream, spec.name) in agg]
    return max(found, key=lambda p: _quality(task, p[1])) if found else None


def _gap(task: str, mine: Scores, peer: Scores) -> str:
    if task == "classification":
        assert mine.accuracy is not None and peer.accuracy is not None
        return f"{100 * (mine.accuracy - peer.accuracy):+.1f} pts"
    return f"MSE ×{fmt(mine.mean_loss / peer.mean_loss)}"


def _summary(result: SuiteResult, agg: Agg, task: str, streams: list[str]) -> list[str]:
    rows = []
    for st in streams:
        default = agg.get((st, ADAPTD))
        variant = _best(result, agg, task, st, "variant")
        peer = _best(result, agg, task, st, "peer")
        base = _best(result, agg, task, st, "baseline")
        if peer is None:
            continue
        if default is None or variant is None:
            rows.append([st, absent(result, st, ADAPTD), "–",
                         f"{peer[0]} {_cell(task, peer[1], None)}", "–", "–",
                         f"{base[0]} {_cell(task, base[1], None)}" if base else "–"])
            continue
        rows.append([
            st, _cell(task, default, None), f"{variant[0]} {_cell(task, variant[1], None)}",
            f"{peer[0]} {_cell(task, peer[1], None)}", _gap(task, default, peer[1]),
            _gap(task, variant[1], peer[1]),
            f"{base[0]} {_cell(task, base[1], None)}" if base else "–",
        ])
    header = ["stream", "adaptd default", "best adaptd variant", "best peer",
              "default vs peer", "best variant vs peer", "best baseline"]
    return table(header, rows)


def real_section(result: SuiteResult, agg: Agg) -> list[str]:
    """The markdown lines of the real-stream section (empty when no real stream ran)."""
    lines: list[str] = []
    for task, what in (("classification", "accuracy / log loss / rec/s ÷ " + REFERENCE_LEARNER),
                       ("regression", "MSE / rec/s ÷ " + REFERENCE_LEARNER)):
        streams = [i.stream.name for i in result.streams
                   if i.stream.real and i.stream.task == task]
        if not streams:
            continue
        if not lines:
            lines = ["## Real streams: adaptd's settings next to the peers", "",
                     ("adaptd's default is `adaptd run --task T` (model `auto`, features and "
                      "targets standardized inside the engine, no `--meta`). `v:*` rows change "
                      "one or two settings (see Learners); `v:scaled*` standardize once more in "
                      "front of the engine, a diagnostic kept from before the engine did. Best "
                      "per stream in bold (accuracy, or MSE)."), ""]
        lines += [f"### {task.capitalize()}: {what}", ""]
        lines += _grid(result, agg, task, streams)
        lines += [f"#### {task.capitalize()}: where adaptd stands", ""]
        lines += _summary(result, agg, task, streams)
    return lines
