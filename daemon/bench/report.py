"""Write a suite's results as ``report.md`` plus PNG plots (matplotlib, Agg backend).

Scores are averaged over seeds per (stream, learner); curves show the first seed. The
headline compares adaptd with the best *peer* (another library) on each stream, and the
report lists in words every stream where adaptd loses, and by how much.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from adaptd.bench.learners import REFERENCE_LEARNER
from adaptd.bench.markdown import fmt, table
from adaptd.bench.measures import (
    PROB_CLIP,
    RECOVERY_FACTOR,
    RECOVERY_WINDOW,
    SINCE_CHANGE_EDGES,
    Scores,
)
from adaptd.bench.measures import __doc__ as MEASURES_DOC
from adaptd.bench.suite import SuiteResult

ADAPTD = "adaptd"
PLOTS = {
    "regret": "regret.png",
    "since_change": "loss_since_change.png",
    "throughput": "throughput.png",
    "detector": "detector_delay.png",
}


def aggregate(result: SuiteResult) -> dict[tuple[str, str], Scores]:
    """Mean scores over seeds per (stream, learner); ``None`` fields stay ``None`` if all are.

    Lists (curves, buckets) are taken from the first seed that ran.
    """
    grouped: dict[tuple[str, str], list[Scores]] = {}
    for run in result.runs:
        if run.scores is not None:
            grouped.setdefault((run.stream, run.learner), []).append(run.scores)
    out = {}
    for key, runs in grouped.items():
        values: dict[str, Any] = {}
        for f in fields(Scores):
            items = [getattr(s, f.name) for s in runs]
            if f.name in ("regret_curve",):
                values[f.name] = items[0]
            elif f.name == "loss_by_since_change":
                values[f.name] = [_mean(col) for col in zip(*items, strict=True)]
            else:
                values[f.name] = _mean(items)
        out[key] = Scores(**values)
    return out


def _mean(items: Iterable[float | None]) -> float | None:
    present = [v for v in items if v is not None]
    return sum(present) / len(present) if present else None


def main_names(result: SuiteResult) -> list[str]:
    """The learners of the main tables and plots: all but the variant grid (own table)."""
    return [spec.name for spec in result.learners if spec.group != "variant"]


def best_peer(result: SuiteResult, agg: dict[tuple[str, str], Scores], stream: str
              ) -> tuple[str, Scores] | None:
    """The peer (another library) with the lowest mean loss on ``stream``."""
    peers = [
        (spec.name, agg[(stream, spec.name)])
        for spec in result.learners
        if spec.group == "peer" and (stream, spec.name) in agg
    ]
    return min(peers, key=lambda p: p[1].mean_loss) if peers else None


def throughput_ratios(result: SuiteResult, agg: dict[tuple[str, str], Scores]
                      ) -> dict[str, float | None]:
    """Per learner, the geometric mean over streams of records/s ÷ river-linear's records/s."""
    out: dict[str, float | None] = {}
    for spec in result.learners:
        if spec.group == "variant":
            continue
        logs = []
        for info in result.streams:
            mine = agg.get((info.stream.name, spec.name))
            ref = agg.get((info.stream.name, REFERENCE_LEARNER))
            if mine and ref and mine.records_per_s > 0 and ref.records_per_s > 0:
                logs.append(math.log(mine.records_per_s / ref.records_per_s))
        out[spec.name] = math.exp(sum(logs) / len(logs)) if logs else None
    return out


def write_report(result: SuiteResult, out_dir: Path) -> Path:
    """Write ``report.md``, the PNGs and ``results.json`` into ``out_dir``; the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    from adaptd.bench.plots import write_plots

    agg = aggregate(result)
    plots = write_plots(result, agg, out_dir)
    lines = render(result, agg, plots)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out_dir / "results.json").write_text(json.dumps(to_json(result), indent=1) + "\n")
    return path


def to_json(result: SuiteResult) -> dict[str, Any]:
    """Every run's scores (per seed), the stream facts and the machine, as plain data."""
    return {
        "config": asdict(result.config),
        "machine": result.machine,
        "seconds": result.seconds,
        "streams": [
            {"name": i.stream.name, "records": i.records, "keys": i.keys, "changes": i.changes,
             "noise_floor": i.noise_floor, "meta_trained": i.meta_trained}
            for i in result.streams
        ],
        "runs": [
            {"stream": r.stream, "seed": r.seed, "learner": r.learner, "error": r.error,
             "unable": r.unable,
             "scores": None if r.scores is None else {
                 k: v for k, v in asdict(r.scores).items() if k != "regret_curve"}}
            for r in result.runs
        ],
    }


def render(result: SuiteResult, agg: dict[tuple[str, str], Scores],
           plots: dict[str, str]) -> list[str]:
    """The report's markdown lines."""
    from adaptd.bench.real_report import real_section

    cfg = result.config
    names = main_names(result)
    streams = [info.stream.name for info in result.streams]
    ratios = throughput_ratios(result, agg)
    lines = [
        f"# adaptd bench — {'quick' if cfg.quick else 'full'} suite",
        "",
        (f"{len(streams)} streams × {len(names)} learners, {cfg.n:,} records per stream, "
        f"evaluation seeds {list(cfg.seeds)} (the real stream has one history), "
        f"meta-training on {cfg.meta_streams} held-out stream(s) of {cfg.meta_n:,} records each. "
        f"Total wall time {result.seconds:.0f} s. Generated by `adaptd bench"
        f"{' --quick' if cfg.quick else ''}`."),
        "",
        "**Machine**: " + ", ".join(f"{k} {v}" for k, v in result.machine.items()),
        "",
    ]
    lines += _headline(result, agg, ratios)
    lines += _losses_section(result, agg)
    lines += real_section(result, agg)
    lines += _streams_section(result)
    lines += _loss_tables(result, agg, names, streams)
    lines += _recovery_tables(result, agg, streams)
    lines += _throughput_table(result, agg, names, streams, ratios)
    lines += ["## Plots", ""]
    captions = {
        "regret": "Cumulative regret against the per-segment hindsight fit (first seed).",
        "since_change": "Mean loss by samples since the last true change (log scale).",
        "throughput": f"Records per second, geometric mean over streams; ratio to "
                      f"{REFERENCE_LEARNER} in the label.",
        "detector": "Detector mean delay in records of the key (learners with a detector).",
    }
    for key, file in plots.items():
        lines += [f"![{captions[key]}]({file})", "", f"*{captions[key]}*", ""]
    lines += _learners_section(result)
    lines += ["## Definitions", "", (MEASURES_DOC or "").strip(), ""]
    if result.unable:
        lines += ["## Unable", "", "Learners that cannot take a stream at all (not failures):", ""]
        lines += sorted({f"- {r.learner} on {r.stream}: {r.unable}" for r in result.unable})
        lines.append("")
    if result.failures:
        lines += ["## Failures", ""]
        lines += [f"- {r.learner} on {r.stream} seed {r.seed}: `{r.error}`" for r in
                  result.failures]
        lines.append("")
    for info in result.streams:
        if info.meta_error:
            lines.append(f"- meta-training on {info.stream.name} failed: `{info.meta_error}`; "
                         "adaptd ran from its random init there.")
    return lines


def _headline(result: SuiteResult, agg: dict[tuple[str, str], Scores],
              ratios: dict[str, float | None]) -> list[str]:
    rows = []
    for info in result.streams:
        name = info.stream.name
        mine = agg.get((name, ADAPTD))
        peer = best_peer(result, agg, name)
        ref = agg.get((name, REFERENCE_LEARNER))
        if mine is None or peer is None:
            continue
        speed = (mine.records_per_s / ref.records_per_s) if ref else None
        rows.append([
            name, fmt(mine.mean_loss), fmt(mine.regret), peer[0], fmt(peer[1].mean_loss),
            fmt(peer[1].regret), fmt(mine.mean_loss / peer[1].mean_loss, 3),
            fmt(speed, 2),
        ])
    lines = [
        "## Headline",
        "",
        ("adaptd against the best peer library on each stream (lowest mean prequential loss "
        "among river and Vowpal Wabbit). Loss is MSE for regression, log loss for "
        "classification; regret is against the per-segment hindsight fit. A loss ratio above "
        "1 means adaptd loses. Streams adaptd cannot run are listed under Unable."),
        "",
    ]
    lines += table(
        ["stream", "adaptd loss", "adaptd regret", "best peer", "peer loss", "peer regret",
         "loss ratio adaptd/peer", f"adaptd rec/s ÷ {REFERENCE_LEARNER}"],
        rows,
    )
    lines += ["Throughput, records/s ÷ " + REFERENCE_LEARNER + "'s on the same stream, "
              "geometric mean over streams: "
              + ", ".join(f"{k} {fmt(v, 2)}" for k, v in ratios.items()), ""]
    return lines


def _losses_section(result: SuiteResult, agg: dict[tuple[str, str], Scores]) -> list[str]:
    """Plain sentences: every stream where adaptd is beaten, and by whom, by how much."""
    lines = ["## Where adaptd loses", ""]
    found = False
    for info in result.streams:
        name = info.stream.name
        mine = agg.get((name, ADAPTD))
        if mine is None:
            why = absent(result, name, ADAPTD)
            lines.append(f"- **{name}**: adaptd produced no result ({why}: see "
                         f"{'Unable' if why == 'unable' else 'Failures'}).")
            found = True
            continue
        better = sorted(
            (agg[(name, spec.name)].mean_loss, spec.name)
            for spec in result.learners
            if spec.name != ADAPTD and spec.name != "adaptd-oracle" and spec.group != "variant"
            and (name, spec.name) in agg and agg[(name, spec.name)].mean_loss < mine.mean_loss
        )
        if better:
            found = True
            parts = [f"{who} {fmt(loss)} (adaptd's loss is {fmt(mine.mean_loss / loss, 3)}× "
                     "that)" for loss, who in better]
            lines.append(f"- **{name}**: adaptd's mean loss is {fmt(mine.mean_loss)}; beaten "
                         "by " + "; ".join(parts) + ".")
    slower = []
    for info in result.streams:
        mine = agg.get((info.stream.name, ADAPTD))
        ref = agg.get((info.stream.name, REFERENCE_LEARNER))
        if mine and ref and mine.records_per_s < ref.records_per_s:
            slower.append(f"{info.stream.name} ({info.stream.model} model: "
                          f"{fmt(mine.records_per_s / ref.records_per_s, 2)}×)")
    if slower:
        found = True
        lines.append(f"- **Speed**: adaptd has fewer records/s than {REFERENCE_LEARNER} (a "
                     "linear model) on " + ", ".join(slower) + ".")
    if not found:
        lines.append("- Nowhere in this run: adaptd has the lowest mean loss on every stream "
                     "(the oracle variant aside).")
    return lines + [""]


def _streams_section(result: SuiteResult) -> list[str]:
    rows = [
        [i.stream.name, i.stream.note, i.stream.task, i.stream.model, f"{i.records:,}",
         str(i.keys), fmt(i.changes), fmt(i.noise_floor), "yes" if i.meta_trained else "no"]
        for i in result.streams
    ]
    return ["## Streams", ""] + table(
        ["stream", "what", "task", "adaptd model", "records", "keys", "true changes",
         "noise floor (hindsight loss)", "meta-trained"],
        rows,
    )


def absent(result: SuiteResult, stream: str, learner: str) -> str:
    """The cell of a learner without scores on a stream: why there are none."""
    for run in result.runs:
        if run.stream == stream and run.learner == learner:
            return "unable" if run.unable is not None else "failed"
    return "–"


def _grid(result: SuiteResult, agg: dict[tuple[str, str], Scores], names: list[str],
          streams: list[str], attr: str, digits: int = 3) -> list[list[str]]:
    rows = []
    for stream in streams:
        row = [stream]
        for name in names:
            s = agg.get((stream, name))
            row.append(fmt(getattr(s, attr), digits) if s is not None
                       else absent(result, stream, name))
        rows.append(row)
    return rows


def _loss_tables(result: SuiteResult, agg: dict[tuple[str, str], Scores], names: list[str],
                 streams: list[str]) -> list[str]:
    lines = ["## Mean prequential loss", "",
             ("MSE for regression, log loss (probabilities clipped to "
             f"[{PROB_CLIP:g}, 1−{PROB_CLIP:g}]) for classification. Lowest per row in bold."), ""]
    rows = _grid(result, agg, names, streams, "mean_loss")
    for row, stream in zip(rows, streams, strict=True):
        losses = {n: agg[(stream, n)].mean_loss for n in names if (stream, n) in agg}
        if losses:
            best = min(losses, key=lambda n: losses[n])
            i = names.index(best) + 1
            row[i] = f"**{row[i]}**"
    lines += table(["stream", *names], rows)
    classification = [i.stream.name for i in result.streams if i.stream.task == "classification"]
    if classification:
        lines += ["### Accuracy (classification streams)", ""]
        lines += table(["stream", *names], _grid(result, agg, names, classification, "accuracy"))
    lines += ["## Cumulative regret against the per-segment hindsight fit", ""]
    lines += table(["stream", *names], _grid(result, agg, names, streams, "regret"))
    labels = _bucket_labels()
    lines += ["## Loss by samples since the last change", "",
              ("Mean loss of adaptd / best peer in each bucket of samples since the key's last "
              "true change (a key's first record counts as a change)."), ""]
    rows = []
    for info in result.streams:
        mine = agg.get((info.stream.name, ADAPTD))
        peer = best_peer(result, agg, info.stream.name)
        if mine is None or peer is None:
            continue
        rows.append([info.stream.name, peer[0]] + [
            f"{fmt(a)} / {fmt(b)}" for a, b in
            zip(mine.loss_by_since_change, peer[1].loss_by_since_change, strict=True)])
    lines += table(["stream", "best peer", *labels], rows)
    return lines


def _bucket_labels() -> list[str]:
    edges = list(SINCE_CHANGE_EDGES)
    return [f"[{a},{b})" for a, b in itertools.pairwise(edges)] + [f"≥{edges[-1]}"]


def _recovery_tables(result: SuiteResult, agg: dict[tuple[str, str], Scores],
                     streams: list[str]) -> list[str]:
    names = [spec.name for spec in result.learners]
    with_changes = [i.stream.name for i in result.streams if i.changes > 0]
    lines = [
        "## Samples to recover after a change", "",
        (f"Median over true changes of the first k at which the {RECOVERY_WINDOW}-sample running "
        f"excess loss falls below {RECOVERY_FACTOR:g}× the noise floor (censored at the segment's "
        "length), and in brackets the share of changes recovered from before the next one."), "",
    ]
    rows = []
    for stream in with_changes:
        row = [stream]
        for name in names:
            s = agg.get((stream, name))
            row.append(absent(result, stream, name) if s is None else
                       f"{fmt(s.recover_median)} ({fmt(s.recovered_share, 2)})")
        rows.append(row)
    lines += table(["stream", *names], rows)
    detecting = [spec.name for spec in result.learners
                 if any((st, spec.name) in agg and agg[(st, spec.name)].detector_delay is not None
                        or (st, spec.name) in agg
                        and agg[(st, spec.name)].false_alarms_per_10k is not None
                        for st in streams)]
    lines += ["## Drift detection", "",
              ("Learners that report their alarms. Delay in records of the key; missed changes "
              "and false alarms per 10,000 records (missed share in brackets)."), ""]
    rows = []
    for stream in streams:
        for name in detecting:
            s = agg.get((stream, name))
            if s is None or s.false_alarms_per_10k is None:
                continue
            rows.append([stream, name, fmt(s.detector_delay), fmt(s.missed_per_10k) +
                         f" ({fmt(s.missed_share, 2)})", fmt(s.false_alarms_per_10k)])
    lines += table(["stream", "learner", "mean delay", "missed / 10k", "false alarms / 10k"],
                    rows)
    return lines


def _throughput_table(result: SuiteResult, agg: dict[tuple[str, str], Scores],
                      names: list[str], streams: list[str],
                      ratios: dict[str, float | None]) -> list[str]:
    lines = ["## Throughput", "",
             (f"Records per second (predict + learn, input pre-converted), and ÷ "
             f"{REFERENCE_LEARNER}'s on the same stream in the same run."), ""]
    rows = []
    for stream in streams:
        ref = agg.get((stream, REFERENCE_LEARNER))
        row = [stream]
        for name in names:
            s = agg.get((stream, name))
            if s is None:
                row.append(absent(result, stream, name))
                continue
            ratio = f" ({fmt(s.records_per_s / ref.records_per_s, 2)}×)" if ref else ""
            row.append(f"{s.records_per_s:,.0f}{ratio}")
        rows.append(row)
    rows.append(["**geometric mean ratio**"] + [f"**{fmt(ratios.get(n), 2)}×**" for n in names])
    return lines + table(["stream", *names], rows)


def _learners_section(result: SuiteResult) -> list[str]:
    lines = ["## Learners", ""]
    lines += [f"- `{spec.name}` ({spec.group}): {spec.description}" for spec in result.learners]
    return lines + [""]
