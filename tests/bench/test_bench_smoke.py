"""Smoke test of ``adaptd bench --quick``: the real command, the real suite, a temporary dir.

It checks what the report must contain — every learner on every stream, finite numbers, the
plots — and never how long anything took (benchmarks do not gate CI on wall-clock time).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from adaptd.bench.learners import LEARNERS
from adaptd.bench.report import PLOTS
from adaptd.bench.streams import suite_streams

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "adaptd", "bench", "--quick", "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"adaptd bench failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    # The progress bar goes to stderr and ends on the last step.
    assert "done" in proc.stderr
    assert "report.md" in proc.stdout
    return out


def test_report_and_plots_are_written(quick_report: Path) -> None:
    report = (quick_report / "report.md").read_text()
    assert report.startswith("# adaptd bench — quick suite")
    for section in ("## Headline", "## Where adaptd loses", "## Throughput", "## Drift detection"):
        assert section in report
    for file in PLOTS.values():
        data = (quick_report / file).read_bytes()
        assert data.startswith(PNG_MAGIC), file
        assert f"]({file})" in report


def test_every_learner_ran_on_every_stream(quick_report: Path) -> None:
    results = json.loads((quick_report / "results.json").read_text())
    streams = [s.name for s in suite_streams(quick=True)]
    assert [s["name"] for s in results["streams"]] == streams
    assert not [r for r in results["runs"] if r["error"] is not None]
    ran = {(r["stream"], r["learner"]) for r in results["runs"]}
    # The variant grid runs on the real streams only.
    expected = {(s.name, spec.name) for s in suite_streams(quick=True) for spec in LEARNERS
                if spec.runs_on(s)}
    for stream in suite_streams(quick=True):
        assert stream.real or not any(spec.runs_on(stream) for spec in LEARNERS
                                      if spec.group == "variant")
    assert ran == expected
    report = (quick_report / "report.md").read_text()
    for spec in LEARNERS:
        assert f"`{spec.name}`" in report


def test_adaptd_is_scored_on_the_multi_class_stream(quick_report: Path) -> None:
    results = json.loads((quick_report / "results.json").read_text())
    multi = "river ImageSegments"
    runs = [r for r in results["runs"] if r["stream"] == multi]
    assert runs and not [r["learner"] for r in runs if r["unable"]]
    scored = {r["learner"]: r["scores"] for r in runs if r["scores"] is not None}
    # 7-class probabilities from adaptd (softmax) as from the peers: well above chance.
    assert scored["adaptd"]["accuracy"] > 0.5
    assert scored["river-arf"]["accuracy"] > 0.5
    assert 0 < scored["majority"]["accuracy"] < 0.3
    report = (quick_report / "report.md").read_text()
    assert "## Real streams" in report


def test_numbers_are_finite(quick_report: Path) -> None:
    results = json.loads((quick_report / "results.json").read_text())
    for run in results["runs"]:
        scores = run["scores"]
        if scores is None:
            continue
        where = f"{run['learner']} on {run['stream']}"
        for name in ("mean_loss", "regret", "records_per_s"):
            assert math.isfinite(scores[name]), f"{where}: {name} = {scores[name]}"
        assert scores["records_per_s"] > 0, where
        for name in ("accuracy", "recover_median", "detector_delay", "false_alarms_per_10k"):
            value = scores[name]
            assert value is None or math.isfinite(value), f"{where}: {name} = {value}"
        assert all(v is None or math.isfinite(v) for v in scores["loss_by_since_change"]), where
    # Learners with a detector report alarms; the peers expose none.
    by_learner = {(r["stream"], r["learner"]): r["scores"] for r in results["runs"]
                  if r["scores"] is not None}
    for stream in results["streams"]:
        if (stream["name"], "adaptd") not in by_learner:
            continue  # adaptd is unable on the multi-class stream
        assert by_learner[(stream["name"], "adaptd")]["false_alarms_per_10k"] is not None
        assert by_learner[(stream["name"], "vw")]["false_alarms_per_10k"] is None
    assert all(math.isfinite(s["noise_floor"]) and s["noise_floor"] > 0
               for s in results["streams"])


def test_real_stream_grids_list_only_learners_that_ran(quick_report: Path) -> None:
    report = (quick_report / "report.md").read_text()
    classification = report.split("### Classification")[1].split("### Regression")[0]
    regression = report.split("### Regression")[1].split("## Streams")[0]
    assert "`v:scaled`" in classification and "`v:scaled`" in regression
    # The target-standardizing variants run on regression streams only.
    assert "`v:scaled-xy`" not in classification and "`v:scaled-xy`" in regression
