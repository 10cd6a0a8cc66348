"""The live page at ``/`` in a real headless Chromium, against a daemon on an arriving stream.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: plain
file descriptors, no extra package), in real time, because the page's throughput comes from
the server's clock. The page writes how many samples each chart plots into ``data-points``
attributes; the test waits for them, then checks the screenshot really shows the lines.

``ADAPTD_DOCS_SCREENSHOT=1`` lets the page gather a minute of data and writes the screenshot to
``docs/live-page.png`` (the picture the README shows).
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptd.learner.ensemble import task_experts
from tests.deploy.conftest import REPO, require_tool, start_daemon, stop_daemon, stream_records
from tests.helpers import http_get, wait_for

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)
WIDTH, HEIGHT = 1400, 900
#: The stream the page watches: four keys, a task switch every ~100 records per key, so the
#: first segments close (and the hindsight regret starts) within the first seconds.
STREAM_URI = "synthetic:sinusoid?seed=5&n=60000&keys=4&hazard=0.01"
#: The lines of the weights chart: the experts of a regression task (no tree).
EXPERTS = task_experts("regression")
RECORDS_PER_S = 400
DOCS_SCREENSHOT = os.environ.get("ADAPTD_DOCS_SCREENSHOT") == "1"


class DevTools:
    """A headless Chromium and one page, driven over ``--remote-debugging-pipe``.

    Chromium reads JSON commands ending in a NUL byte on fd 3 and answers on fd 4.
    """

    def __init__(self, user_data_dir: Path, log_path: Path) -> None:
        chromium = require_tool("chromium", "chromium")
        cmd_read, self._cmd_write = os.pipe()
        self._res_read, res_write = os.pipe()
        # bash (dash takes single-digit descriptors only) moves the pipe ends to the descriptors Chromium expects, then execs it.
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["bash", "-c", f'exec "$0" "$@" 3<&{cmd_read} 4>&{res_write}', chromium,
                 *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}",
                 f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-pipe", "about:blank"],
                pass_fds=(cmd_read, res_write), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )
        os.close(cmd_read)
        os.close(res_write)
        self._buffer = b""
        self._next_id = 0
        self.session = ""

    def call(self, method: str, timeout_s: float = 30, **params: Any) -> dict[str, Any]:
        """Send one command and block until its answer; events in between are dropped."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._cmd_write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self._read(deadline, method)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise AssertionError(f"chromium {method}: {answer['error']}")
                return dict(answer["result"])

    def _read(self, deadline: float, method: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"no answer from chromium to {method}")
            ready, _, _ = select.select([self._res_read], [], [], remaining)
            if ready:
                chunk = os.read(self._res_read, 1 << 20)
                if not chunk:
                    raise AssertionError(f"chromium closed the pipe during {method}")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(raw))

    def open_page(self, url: str) -> None:
        [page] = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"],
                                 flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression,
                         returnByValue=True)["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout_s=10)
        except AssertionError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_write)
        os.close(self._res_read)


def write_paced(path: Path, values: list[bytes], stop: threading.Event) -> None:
    """Append records to ``path`` at about RECORDS_PER_S, like a stream arriving."""
    chunk = RECORDS_PER_S // 10
    with path.open("ab") as out:
        for start in range(0, len(values), chunk):
            if stop.wait(0.1):
                return
            out.write(b"\n".join(values[start:start + chunk]) + b"\n")
            out.flush()


@pytest.fixture
def live_daemon(tmp_path: Path) -> Iterator[str]:
    """adaptd following a JSONL file that a thread fills with a drifting stream in real time."""
    records = tmp_path / "records.jsonl"
    records.touch()
    stop = threading.Event()
    writer = threading.Thread(
        target=write_paced, args=(records, stream_records(STREAM_URI), stop), daemon=True)
    proc, url = start_daemon(
        ["--source", f"jsonl:{records}", "--follow", "--state-dir", str(tmp_path / "state")],
        tmp_path / "daemon.log", cwd=tmp_path,
    )
    writer.start()
    try:
        yield url
    finally:
        stop.set()
        writer.join()
        assert stop_daemon(proc) == 0


PAGE_STATE = """JSON.stringify({
  status: document.body.dataset.status,
  scrapes: +document.body.dataset.scrapes,
  drifts: +document.body.dataset.driftEvents,
  points: Object.fromEntries([...document.querySelectorAll("canvas")].map(
    c => [c.id, +c.dataset.points])),
  legend: document.getElementById("legend-regret").textContent,
  weights_legend: document.getElementById("legend-weights").textContent,
  weights_shown: !document.getElementById("section-weights").hidden,
  // Pixels of each candidate's line colour on the weights chart itself (it may be drawn below
  // the screenshot's fold).
  weight_pixels: (() => {
    const c = document.getElementById("chart-weights");
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    const out = {};
    for (const name of EXPERTS) {
      const hex = getComputedStyle(document.documentElement).getPropertyValue("--w-" + name).trim();
      const rgb = [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16));
      let n = 0;
      for (let i = 0; i < data.length; i += 4)
        if (Math.abs(data[i] - rgb[0]) + Math.abs(data[i + 1] - rgb[1]) + Math.abs(data[i + 2] - rgb[2]) < 40) n++;
      out[name] = n;
    }
    return out;
  })(),
})""".replace("EXPERTS", json.dumps(list(EXPERTS)))


def test_live_page_plots_loss_regret_drift_and_throughput(
    live_daemon: str, tmp_path: Path
) -> None:
    browser = DevTools(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        # Fewer scrapes than the window holds (two a second), so none has scrolled out yet;
        # the short window makes ten scrapes span a third of each chart, so that even a flat
        # line (the hindsight regret before its first segments close) is long enough to count.
        minutes, scrapes = (1, 110) if DOCS_SCREENSHOT else (0.25, 10)
        browser.open_page(f"{live_daemon}/?interval_s=0.5&minutes={minutes}")
        state: dict[str, Any] = {}
        deadline = time.monotonic() + 60 + scrapes / 2
        while time.monotonic() < deadline:
            state = json.loads(browser.evaluate(PAGE_STATE) or "{}")
            points = state.get("points", {})
            # The page may scrape before the first labelled record, when the regret and
            # cumulative-loss gauges do not exist yet: wait for both lines of each chart.
            if (state.get("scrapes", 0) >= scrapes and points.get("chart-rate", 0) >= 2
                    and state.get("drifts", 0) >= 1
                    and min(points.get("chart-regret", 0), points.get("chart-cumloss", 0))
                    >= 2 * (scrapes - 1)
                    and points.get("chart-weights", 0) >= len(EXPERTS) * (scrapes - 1)
                    # Weights start equal, so the lines lie on top of each other and the one
                    # drawn last hides the rest until the weights move apart: on a CPU-starved
                    # machine that takes longer than the scrapes above.
                    and min(state.get("weight_pixels", {}).values(), default=0) > 100):
                break
            time.sleep(0.5)  # the page's own scrape period: nothing to inject here
        else:
            raise AssertionError(f"the page did not fill in time: {state}")
        png = browser.screenshot()
    finally:
        browser.close()

    assert state["status"] == "ok", state
    points = state["points"]
    # Loss: one sample per scrape; regret and cumulative loss: two series each.
    assert points["chart-loss"] >= scrapes - 1, state
    assert points["chart-regret"] >= 2 * (scrapes - 1), state
    assert points["chart-cumloss"] >= 2 * (scrapes - 1), state
    assert "vs baseline" in state["legend"] and "vs hindsight" in state["legend"], state
    # --model auto (the default): one line per Hedge candidate, its weight in the legend.
    assert state["weights_shown"] and points["chart-weights"] >= len(EXPERTS) * (scrapes - 1), state
    shown = dict(re.findall(r"(linear|MLP|nearest neighbours|prior|last label)[^:]*: ([0-9.e+-]+)",
                            state["weights_legend"]))
    assert set(shown) == {"linear", "MLP", "nearest neighbours", "prior", "last label"}, state
    # Each key's weights are shares of one, and so is their mean over keys.
    assert abs(sum(float(v) for v in shown.values()) - 1) < 0.01, state
    # Every line is drawn: more than a legend swatch's worth (12x3 device pixels) of it.
    assert all(n > 100 for n in state["weight_pixels"].values()), state

    shot = tmp_path / "live-page.png"
    shot.write_bytes(png)
    assert_shows_lines(shot)
    if DOCS_SCREENSHOT:
        (REPO / "docs" / "live-page.png").write_bytes(png)


def assert_shows_lines(path: Path) -> None:
    """The screenshot has the page's size and pixels of the line colours in each chart area."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    colours = {"adaptd": (0x24, 0x63, 0xEB), "baseline": (0xE0, 0x8A, 0x00),
               "hindsight": (0x6A, 0x3F, 0xC9), "drift": (0xD6, 0x28, 0x39)}
    pixels = np.asarray(image, dtype=np.int64).reshape(-1, 3)
    counts = {name: int((np.abs(pixels - target).sum(axis=1) < 40).sum())
              for name, target in colours.items()}
    # A legend swatch is 12x3 pixels; plotted lines are far longer than a few swatches. The
    # hindsight regret is often flat and partly drawn over by the baseline's line, so its bar
    # is lower (a fresh-clone run counted 199 of its pixels), still three swatches' worth.
    assert counts["adaptd"] > 500 and counts["baseline"] > 200 and counts["hindsight"] > 108, counts


FRESH_PAGE_STATE = """JSON.stringify({
  scrapes: +document.body.dataset.scrapes,
  drifts: +document.body.dataset.driftEvents,
  span_s: +document.getElementById("chart-loss").dataset.spanS,
  rate_legend: document.getElementById("legend-rate").textContent,
  loss_legend: document.getElementById("legend-loss").textContent,
  facts: document.getElementById("facts").textContent,
  box: (r => [r.left, r.top, r.width, r.height])(
    document.getElementById("chart-loss").getBoundingClientRect()),
})"""


def test_a_fresh_page_fills_its_width_shows_throughput_at_once_and_labels_alarm_counts(
    live_daemon: str, tmp_path: Path
) -> None:
    browser = DevTools(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    seen: list[dict[str, Any]] = []
    try:
        # The default ten-minute window: the page is opened on a daemon that just started.
        browser.open_page(f"{live_daemon}/?interval_s=0.5")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            page = json.loads(browser.evaluate(FRESH_PAGE_STATE) or "{}")
            if page.get("scrapes"):  # the page has loaded and scraped once
                seen.append(page)
            if page.get("scrapes", 0) >= 12 and seen[-1].get("drifts", 0) >= 1:
                break
            time.sleep(0.1)  # sampling the page between its own scrapes
        else:
            raise AssertionError(f"the page did not fill in time: {page}")
        png = browser.screenshot()
    finally:
        browser.close()

    # Throughput: "measuring…" until two samples exist (the server's history may already hold
    # some), a number from the second scrape on (it read "–" for the first five seconds).
    assert all("–" not in s["rate_legend"] for s in seen), seen
    early = [s for s in seen if 2 <= s["scrapes"] <= 3]
    assert early and all(any(c.isdigit() for c in s["rate_legend"]) for s in early), early

    last = seen[-1]
    # The two alarm counts say what they count, and the one in view is part of the total.
    assert "drift alarms (total)" in last["facts"], last
    total = int(re.search(r"drift alarms \(total\) ([\d,]+)", last["facts"])
                .group(1).replace(",", ""))  # type: ignore[union-attr]
    in_view = int(re.search(r"drift alarms in view: ([\d,]+)", last["loss_legend"])
                  .group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 1 <= in_view <= total, last

    # The x axis spans the data there is (some seconds), not the ten-minute window...
    assert last["span_s"] < 60, last
    # ...so the loss line runs across most of its chart instead of a sliver at the right.
    shot = tmp_path / "fresh-page.png"
    shot.write_bytes(png)
    left, top, width, height = (int(v) for v in last["box"])
    plot_left, plot_width = left + 58, width - 58 - 10  # the margins draw() leaves for labels
    from PIL import Image

    chart = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int64)[
        top:top + height, plot_left:plot_left + plot_width]
    blue = np.abs(chart - np.array([0x24, 0x63, 0xEB])).sum(axis=2) < 40
    columns = np.flatnonzero(blue.any(axis=0))
    assert columns.size and (columns[-1] - columns[0]) / plot_width > 0.8, columns


def test_a_page_opened_late_draws_the_run_from_the_servers_history(
    live_daemon: str, tmp_path: Path
) -> None:
    # The daemon runs unwatched while its server samples the series (every two seconds), until
    # it has kept three samples of the loss: the page must draw those it was not open for.
    def kept_loss_samples() -> int:
        status, body = http_get(f"{live_daemon}/history")
        return sum("adaptd_prequential_loss" in h["metrics"]
                   for h in (json.loads(body) if status == 200 else []))

    wait_for(lambda: kept_loss_samples() >= 3, timeout_s=60, what="three kept loss samples")
    browser = DevTools(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        browser.open_page(f"{live_daemon}/?interval_s=5")
        state: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = json.loads(browser.evaluate(PAGE_STATE) or "{}")
            if state.get("scrapes", 0) >= 1:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the page did not scrape in time: {state}")
    finally:
        browser.close()
    # One scrape of its own, and the samples the server kept before the page was opened.
    assert state["scrapes"] == 1 and state["points"]["chart-loss"] >= 3, state
