"""Run the benchmark suite: every learner on every stream and seed, in one process.

Each stream is materialised once per seed and handed to every learner in turn, so all learners
see the same records in the same order and their records/s are measured in the same run under
the same conditions. adaptd's meta-state for a stream comes from meta-training on that
stream's held-out data (other seeds; for the real stream, an earlier period) before any
evaluation. Learners run one after another, never in parallel, so that timings do not compete
for the two cores.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from adaptd.bench.learners import LearnerSpec, Unsupported, learner_specs
from adaptd.bench.measures import Scores, hindsight_losses, score, structure
from adaptd.bench.streams import Stream, StreamData, suite_streams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuiteConfig:
    """How big a run is.

    Args:
        quick: the smoke-test suite (one stream per family, short streams, one seed).
        n: records per evaluation stream (synthetic).
        real_n: most records of a real stream (each is one recorded history).
        seeds: evaluation seeds of the seeded (synthetic) streams.
        meta_streams: held-out streams meta-training sees per stream family.
        meta_n: records per meta-training stream.
    """

    quick: bool
    n: int
    real_n: int
    seeds: tuple[int, ...]
    meta_streams: int
    meta_n: int

    @classmethod
    def preset(cls, quick: bool) -> SuiteConfig:
        if quick:
            return cls(quick=True, n=1_500, real_n=1_000, seeds=(0,), meta_streams=1,
                       meta_n=3_000)
        return cls(quick=False, n=10_000, real_n=20_000, seeds=(0, 1, 2), meta_streams=3,
                   meta_n=10_000)


@dataclass
class RunResult:
    """One learner on one stream and seed: its scores, or the error that stopped it, or why
    it cannot take the stream at all (``unable``: not a failure)."""

    stream: str
    seed: int
    learner: str
    scores: Scores | None
    error: str | None = None
    unable: str | None = None


@dataclass
class StreamInfo:
    """Facts about a stream's evaluation data, averaged over seeds where they differ."""

    stream: Stream
    records: int
    keys: int
    changes: float
    noise_floor: float
    meta_trained: bool
    meta_error: str | None = None


@dataclass
class SuiteResult:
    config: SuiteConfig
    learners: list[LearnerSpec]
    streams: list[StreamInfo] = field(default_factory=list)
    runs: list[RunResult] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failures(self) -> list[RunResult]:
        return [r for r in self.runs if r.error is not None]

    @property
    def unable(self) -> list[RunResult]:
        return [r for r in self.runs if r.unable is not None]


class Progress:
    """A one-line progress bar on a console stream (stderr), redrawn in place on a terminal.

    Called from the suite's thread between learners; never blocks beyond a write.
    """

    def __init__(self, total: int, out: TextIO | None = None, width: int = 30) -> None:
        self.total = max(1, total)
        self.done = 0
        self.out = out if out is not None else sys.stderr
        self.width = width
        self.start = time.monotonic()
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())

    def show(self, label: str) -> None:
        """Redraw with ``label`` as the step now running."""
        filled = self.width * self.done // self.total
        elapsed = time.monotonic() - self.start
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
            f"{elapsed:5.0f}s  {label}"
        )
        if self.tty:
            self.out.write("\r" + line[:120].ljust(120))
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def advance(self) -> None:
        self.done += 1

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


MetaTrainer = Callable[[Stream, list[StreamData], Path], Path]


def run_suite(
    config: SuiteConfig,
    workdir: Path,
    learner_names: list[str] | None = None,
    stream_filter: Callable[[Stream], bool] | None = None,
    progress_out: TextIO | None = None,
) -> SuiteResult:
    """Run the suite; ``workdir`` receives the meta-state files. Blocks until done."""
    from adaptd.bench.meta import meta_train_stream

    started = time.perf_counter()
    specs = learner_specs(learner_names)
    streams = [s for s in suite_streams(config.quick) if stream_filter is None or stream_filter(s)]
    result = SuiteResult(config=config, learners=specs, machine=machine_info())
    steps = sum(len(_seeds(s, config)) * len(_specs_for(s, specs)) + 1 for s in streams)
    progress = Progress(steps, progress_out)
    warmed = False
    for stream in streams:
        meta_file: Path | None = None
        meta_error: str | None = None
        if stream.meta_trained and any(spec.uses_meta for spec in specs):
            progress.show(f"{stream.name}: meta-training")
            try:
                meta_data = [
                    stream.load_meta(i, config.meta_n) for i in range(config.meta_streams)
                ]
                meta_file = meta_train_stream(stream, meta_data, workdir)
            except Exception as exc:  # noqa: BLE001 -- reported; the meta variants run without it
                meta_error = f"{type(exc).__name__}: {exc}"
                log.error("meta-training on %s failed:\n%s", stream.name, traceback.format_exc())
        progress.advance()
        infos = []
        for seed in _seeds(stream, config):
            data = stream.load(seed, config.n if stream.seeded else config.real_n)
            struct = structure(data)
            comparator = hindsight_losses(stream.task, stream.basis, data, struct.segment)
            infos.append((len(data), struct.n_keys, len(struct.change_positions), comparator.mean()))
            if not warmed:
                _warm_up(specs, stream, data, meta_file)
                warmed = True
            for spec in _specs_for(stream, specs):
                progress.show(f"{stream.name} seed {seed}: {spec.name}")
                result.runs.append(
                    _run_one(spec, stream, seed, data, struct, comparator, meta_file)
                )
                progress.advance()
        result.streams.append(
            StreamInfo(
                stream=stream,
                records=infos[0][0],
                keys=infos[0][1],
                changes=sum(i[2] for i in infos) / len(infos),
                noise_floor=sum(i[3] for i in infos) / len(infos),
                meta_trained=meta_file is not None,
                meta_error=meta_error,
            )
        )
    progress.show("done")
    progress.close()
    result.seconds = time.perf_counter() - started
    return result


#: Records each learner runs untimed before the first timed run.
WARM_UP_RECORDS = 200


def _warm_up(specs: list[LearnerSpec], stream: Stream, data: StreamData,
             meta_file: Path | None) -> None:
    """Run every learner once on a short prefix, untimed: lazy imports and first-call caches
    would otherwise be charged to whichever learner happens to run first."""
    head = data.head(WARM_UP_RECORDS)
    for spec in _specs_for(stream, specs):
        try:
            spec.build(stream, meta_file).run(head)
        except Exception:  # the timed run reports the error
            log.debug("warm-up of %s failed", spec.name, exc_info=True)


def _specs_for(stream: Stream, specs: list[LearnerSpec]) -> list[LearnerSpec]:
    """The learners that run on ``stream`` (the variant grid: only the real streams)."""
    return [s for s in specs if s.runs_on(stream)]


def _seeds(stream: Stream, config: SuiteConfig) -> tuple[int, ...]:
    # The real stream has one history: more seeds would only repeat it.
    return config.seeds if stream.seeded else config.seeds[:1]


def _run_one(
    spec: LearnerSpec,
    stream: Stream,
    seed: int,
    data: StreamData,
    struct: Any,
    comparator: Any,
    meta_file: Path | None,
) -> RunResult:
    try:
        trace = spec.build(stream, meta_file).run(data)
        scores = score(
            stream.task, data, struct, comparator, trace.y_pred, trace.alarms, trace.seconds
        )
    except Unsupported as exc:
        return RunResult(stream.name, seed, spec.name, None, unable=str(exc))
    except Exception as exc:  # noqa: BLE001 -- one failure must not hide the other results
        log.error("%s on %s seed %d failed:\n%s", spec.name, stream.name, seed,
                  traceback.format_exc())
        return RunResult(stream.name, seed, spec.name, None, f"{type(exc).__name__}: {exc}")
    if not math.isfinite(scores.mean_loss):
        log.warning("%s on %s seed %d: non-finite mean loss", spec.name, stream.name, seed)
    return RunResult(stream.name, seed, spec.name, scores)


def machine_info() -> dict[str, str]:
    """What the numbers were measured on: CPU, cores, OS, Python and library versions."""
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    for dist in ("adaptd", "torch", "numpy", "river", "vowpalwabbit"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "not installed"
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    # Other processes on the machine skew records/s; the load at the start says how much.
    info["load average at start"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return info
