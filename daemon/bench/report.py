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


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e7:
        return f"{value:.{digits - 1}e}"
    # ``g`` keeps `digits` significant digits and switches to an exponent below 1e-4.
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


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
             "scores": None if r.scores is None else {
                 k: v for k, v in asdict(r.scores).items() if k != "regret_curve"}}
            for r in result.runs
        ],
    }


def render(result: SuiteResult, agg: dict[tuple[str, str], Scores],
           plots: dict[str, str]) -> list[str]:
    """The report's markdown lines."""
    cfg = result.config
    names = [spec.name for spec in result.learners]
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
            name, _fmt(mine.mean_loss), _fmt(mine.regret), peer[0], _fmt(peer[1].mean_loss),
            _fmt(peer[1].regret), _fmt(mine.mean_loss / peer[1].mean_loss, 3),
            _fmt(speed, 2),
        ])
    lines = [
        "## Headline",
        "",
        ("adaptd against the best peer library on each stream (lowest mean prequential loss "
        "among river and Vowpal Wabbit). Loss is MSE, or log loss for `sea`; regret is "
        "against the per-segment hindsight fit. A loss ratio above 1 means adaptd loses."),
        "",
    ]
    lines += _table(
        ["stream", "adaptd loss", "adaptd regret", "best peer", "peer loss", "peer regret",
         "loss ratio adaptd/peer", f"adaptd rec/s ÷ {REFERENCE_LEARNER}"],
        rows,
    )
    lines += ["Throughput, records/s ÷ " + REFERENCE_LEARNER + "'s on the same stream, "
              "geometric mean over streams: "
              + ", ".join(f"{k} {_fmt(v, 2)}" for k, v in ratios.items()), ""]
    return lines


def _losses_section(result: SuiteResult, agg: dict[tuple[str, str], Scores]) -> list[str]:
    """Plain sentences: every stream where adaptd is beaten, and by whom, by how much."""
    lines = ["## Where adaptd loses", ""]
    found = False
    for info in result.streams:
        name = info.stream.name
        mine = agg.get((name, ADAPTD))
        if mine is None:
            lines.append(f"- **{name}**: adaptd produced no result (see Failures).")
            found = True
            continue
        better = sorted(
            (agg[(name, spec.name)].mean_loss, spec.name)
            for spec in result.learners
            if spec.name != ADAPTD and spec.name != "adaptd-oracle"
            and (name, spec.name) in agg and agg[(name, spec.name)].mean_loss < mine.mean_loss
        )
        if better:
            found = True
            parts = [f"{who} {_fmt(loss)} (adaptd's loss is {_fmt(mine.mean_loss / loss, 3)}× "
                     "that)" for loss, who in better]
            lines.append(f"- **{name}**: adaptd's mean loss is {_fmt(mine.mean_loss)}; beaten "
                         "by " + "; ".join(parts) + ".")
    slower = []
    for info in result.streams:
        mine = agg.get((info.stream.name, ADAPTD))
        ref = agg.get((info.stream.name, REFERENCE_LEARNER))
        if mine and ref and mine.records_per_s < ref.records_per_s:
            slower.append(f"{info.stream.name} ({info.stream.model} model: "
                          f"{_fmt(mine.records_per_s / ref.records_per_s, 2)}×)")
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
         str(i.keys), _fmt(i.changes), _fmt(i.noise_floor), "yes" if i.meta_trained else "no"]
        for i in result.streams
    ]
    return ["## Streams", ""] + _table(
        ["stream", "what", "task", "adaptd model", "records", "keys", "true changes",
         "noise floor (hindsight loss)", "meta-trained"],
        rows,
    )


def _grid(agg: dict[tuple[str, str], Scores], names: list[str], streams: list[str],
          attr: str, digits: int = 3) -> list[list[str]]:
    rows = []
    for stream in streams:
        row = [stream]
        for name in names:
            s = agg.get((stream, name))
            row.append(_fmt(getattr(s, attr), digits) if s is not None else "failed")
        rows.append(row)
    return rows


def _loss_tables(result: SuiteResult, agg: dict[tuple[str, str], Scores], names: list[str],
                 streams: list[str]) -> list[str]:
    lines = ["## Mean prequential loss", "",
             ("MSE for regression, log loss (probabilities clipped to "
             f"[{PROB_CLIP:g}, 1−{PROB_CLIP:g}]) for classification. Lowest per row in bold."), ""]
    rows = _grid(agg, names, streams, "mean_loss")
    for row, stream in zip(rows, streams, strict=True):
        losses = {n: agg[(stream, n)].mean_loss for n in names if (stream, n) in agg}
        if losses:
            best = min(losses, key=lambda n: losses[n])
            i = names.index(best) + 1
            row[i] = f"**{row[i]}**"
    lines += _table(["stream", *names], rows)
    classification = [i.stream.name for i in result.streams if i.stream.task == "classification"]
    if classification:
        lines += ["### Accuracy (classification streams)", ""]
        lines += _table(["stream", *names], _grid(agg, names, classification, "accuracy"))
    lines += ["## Cumulative regret against the per-segment hindsight fit", ""]
    lines += _table(["stream", *names], _grid(agg, names, streams, "regret"))
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
            f"{_fmt(a)} / {_fmt(b)}" for a, b in
            zip(mine.loss_by_since_change, peer[1].loss_by_since_change, strict=True)])
    lines += _table(["stream", "best peer", *labels], rows)
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
            row.append("failed" if s is None else
                       f"{_fmt(s.recover_median)} ({_fmt(s.recovered_share, 2)})")
        rows.append(row)
    lines += _table(["stream", *names], rows)
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
            rows.append([stream, name, _fmt(s.detector_delay), _fmt(s.missed_per_10k) +
                         f" ({_fmt(s.missed_share, 2)})", _fmt(s.false_alarms_per_10k)])
    lines += _table(["stream", "learner", "mean delay", "missed / 10k", "false alarms / 10k"],
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
                row.append("failed")
                continue
            ratio = f" ({_fmt(s.records_per_s / ref.records_per_s, 2)}×)" if ref else ""
            row.append(f"{s.records_per_s:,.0f}{ratio}")
        rows.append(row)
    rows.append(["**geometric mean ratio**"] + [f"**{_fmt(ratios.get(n), 2)}×**" for n in names])
    return lines + _table(["stream", *names], rows)


def _learners_section(result: SuiteResult) -> list[str]:
    lines = ["## Learners", ""]
    lines += [f"- `{spec.name}` ({spec.group}): {spec.description}" for spec in result.learners]
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# plots


def write_plots(result: SuiteResult, agg: dict[tuple[str, str], Scores],
                out_dir: Path) -> dict[str, str]:
    """Draw the four figures; returns plot key → file name (relative to ``out_dir``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [spec.name for spec in result.learners]
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    streams = result.streams
    written: dict[str, str] = {}

    fig, axes = _subplots(plt, len(streams))
    for ax, info in zip(axes, streams, strict=False):
        n = info.records
        for name in names:
            s = agg.get((info.stream.name, name))
            if s is None or not s.regret_curve:
                continue
            step = n / len(s.regret_curve)
            xs = [(i + 1) * step for i in range(len(s.regret_curve))]
            ax.plot(xs, s.regret_curve, label=name, color=colors[name],
                    lw=2.2 if name == ADAPTD else 1.2)
        ax.set_title(info.stream.name, fontsize=9)
        ax.set_xlabel("records", fontsize=8)
        ax.set_ylabel("cumulative regret", fontsize=8)
        ax.tick_params(labelsize=7)
    _finish(fig, axes, len(streams), out_dir / PLOTS["regret"], plt)
    written["regret"] = PLOTS["regret"]

    labels = _bucket_labels()
    changing = [i for i in streams]
    fig, axes = _subplots(plt, len(changing))
    for ax, info in zip(axes, changing, strict=False):
        for name in names:
            s = agg.get((info.stream.name, name))
            if s is None:
                continue
            pts = [(i, v) for i, v in enumerate(s.loss_by_since_change) if v is not None and v > 0]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name,
                        color=colors[name], lw=2.2 if name == ADAPTD else 1.2)
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(info.stream.name, fontsize=9)
        ax.set_xlabel("samples since change", fontsize=8)
        ax.set_ylabel("mean loss", fontsize=8)
        ax.tick_params(labelsize=7)
    _finish(fig, axes, len(changing), out_dir / PLOTS["since_change"], plt)
    written["since_change"] = PLOTS["since_change"]

    ratios = throughput_ratios(result, agg)
    rates = []
    for name in names:
        vals = [agg[(i.stream.name, name)].records_per_s for i in streams
                if (i.stream.name, name) in agg]
        rates.append(math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else 0.0)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    ax.barh(names, rates, color=[colors[n] for n in names])
    for y, (name, rate) in enumerate(zip(names, rates, strict=True)):
        ax.text(rate, y, f" {rate:,.0f}/s ({_fmt(ratios.get(name), 2)}×)", va="center",
                fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel(f"records per second (log); ratio to {REFERENCE_LEARNER}")
    ax.set_title("Throughput, geometric mean over streams")
    ax.set_xlim(right=max(rates) * 20 if any(rates) else 1)
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS["throughput"], dpi=110)
    plt.close(fig)
    written["throughput"] = PLOTS["throughput"]

    detecting = [n for n in names if any(
        (i.stream.name, n) in agg and agg[(i.stream.name, n)].false_alarms_per_10k is not None
        for i in streams)]
    with_changes = [i for i in streams if i.changes > 0]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(with_changes) + 2), 4))
    width = 0.8 / max(1, len(detecting))
    for j, name in enumerate(detecting):
        xs, ys = [], []
        for k, info in enumerate(with_changes):
            s = agg.get((info.stream.name, name))
            if s is not None and s.detector_delay is not None:
                xs.append(k + j * width)
                ys.append(s.detector_delay)
        if xs:
            ax.bar(xs, ys, width=width, label=name, color=colors[name])
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(with_changes))],
                  [i.stream.name for i in with_changes], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean detection delay (records)")
    ax.set_title("Detector delay after a true change")
    if detecting:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS["detector"], dpi=110)
    plt.close(fig)
    written["detector"] = PLOTS["detector"]
    return written


def _subplots(plt: Any, count: int) -> tuple[Any, list[Any]]:
    cols = min(3, max(1, count))
    rows = max(1, math.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.1 * rows + 0.8), squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _finish(fig: Any, axes: list[Any], used: int, path: Path, plt: Any) -> None:
    for ax in axes[used:]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels() if used else ([], [])
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
