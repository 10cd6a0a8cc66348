"""The report's PNG figures (matplotlib, Agg backend): regret curves, loss since a change,
throughput and detector delay, over the suite's main learners (the variant grid has a table)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptd.bench.learners import REFERENCE_LEARNER
from adaptd.bench.markdown import fmt
from adaptd.bench.measures import Scores
from adaptd.bench.report import ADAPTD, PLOTS, _bucket_labels, main_names, throughput_ratios
from adaptd.bench.suite import SuiteResult


@dataclass
class _Figures:
    """What every figure draws from: the aggregated scores, the learners and their colours."""

    result: SuiteResult
    agg: dict[tuple[str, str], Scores]
    names: list[str]
    colors: dict[str, Any]
    out_dir: Path
    plt: Any


def write_plots(result: SuiteResult, agg: dict[tuple[str, str], Scores],
                out_dir: Path) -> dict[str, str]:
    """Draw the four figures; returns plot key → file name (relative to ``out_dir``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = main_names(result)
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    figures = _Figures(result, agg, names, colors, out_dir, plt)
    _plot_regret(figures)
    _plot_since_change(figures)
    _plot_throughput(figures)
    _plot_detector(figures)
    return {key: PLOTS[key] for key in ("regret", "since_change", "throughput", "detector")}


def _plot_regret(f: _Figures) -> None:
    streams = f.result.streams
    fig, axes = _subplots(f.plt, len(streams))
    for ax, info in zip(axes, streams, strict=False):
        n = info.records
        for name in f.names:
            s = f.agg.get((info.stream.name, name))
            if s is None or not s.regret_curve:
                continue
            step = n / len(s.regret_curve)
            xs = [(i + 1) * step for i in range(len(s.regret_curve))]
            ax.plot(xs, s.regret_curve, label=name, color=f.colors[name],
                    lw=2.2 if name == ADAPTD else 1.2)
        _label(ax, info.stream.name, "records", "cumulative regret")
    _finish(fig, axes, len(streams), f.out_dir / PLOTS["regret"], f.plt)


def _plot_since_change(f: _Figures) -> None:
    labels = _bucket_labels()
    streams = f.result.streams
    fig, axes = _subplots(f.plt, len(streams))
    for ax, info in zip(axes, streams, strict=False):
        for name in f.names:
            s = f.agg.get((info.stream.name, name))
            if s is None:
                continue
            pts = [(i, v) for i, v in enumerate(s.loss_by_since_change) if v is not None and v > 0]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name,
                        color=f.colors[name], lw=2.2 if name == ADAPTD else 1.2)
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        _label(ax, info.stream.name, "samples since change", "mean loss")
    _finish(fig, axes, len(streams), f.out_dir / PLOTS["since_change"], f.plt)


def _plot_throughput(f: _Figures) -> None:
    streams, names, agg = f.result.streams, f.names, f.agg
    ratios = throughput_ratios(f.result, agg)
    rates = []
    for name in names:
        vals = [agg[(i.stream.name, name)].records_per_s for i in streams
                if (i.stream.name, name) in agg]
        rates.append(math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else 0.0)
    fig, ax = f.plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    ax.barh(names, rates, color=[f.colors[n] for n in names])
    for y, (name, rate) in enumerate(zip(names, rates, strict=True)):
        ax.text(rate, y, f" {rate:,.0f}/s ({fmt(ratios.get(name), 2)}×)", va="center",
                fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel(f"records per second (log); ratio to {REFERENCE_LEARNER}")
    ax.set_title("Throughput, geometric mean over streams")
    ax.set_xlim(right=max(rates) * 20 if any(rates) else 1)
    _save(fig, f.out_dir / PLOTS["throughput"], f.plt)


def _plot_detector(f: _Figures) -> None:
    streams, agg = f.result.streams, f.agg
    detecting = [n for n in f.names if any(
        (i.stream.name, n) in agg and agg[(i.stream.name, n)].false_alarms_per_10k is not None
        for i in streams)]
    with_changes = [i for i in streams if i.changes > 0]
    fig, ax = f.plt.subplots(figsize=(max(6, 1.1 * len(with_changes) + 2), 4))
    width = 0.8 / max(1, len(detecting))
    for j, name in enumerate(detecting):
        xs, ys = [], []
        for k, info in enumerate(with_changes):
            s = agg.get((info.stream.name, name))
            if s is not None and s.detector_delay is not None:
                xs.append(k + j * width)
                ys.append(s.detector_delay)
        if xs:
            ax.bar(xs, ys, width=width, label=name, color=f.colors[name])
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(with_changes))],
                  [i.stream.name for i in with_changes], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean detection delay (records)")
    ax.set_title("Detector delay after a true change")
    if detecting:
        ax.legend(fontsize=8)
    _save(fig, f.out_dir / PLOTS["detector"], f.plt)


def _save(fig: Any, path: Path, plt: Any) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


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
