"""What a new user can get wrong is one line on stderr and exit 2, never a traceback.

Real processes (``python -m adaptd``), real ports, real files, a real third-party connector
installed through its entry point.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from adaptd.meta.state import MetaState, save

STREAM = "synthetic:sinusoid?seed=1&n=200"  # one feature per record


def adaptd(*args: str, cwd: Path, env_extra: dict[str, str] | None = None,
           timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "adaptd", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a run that failed as a user error should."""
    lines = [line for line in result.stderr.splitlines() if " INFO " not in line]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_metrics_port_in_use_is_named_with_what_to_do(tmp_path: Path, busy_port: int) -> None:
    result = adaptd("run", "--source", STREAM, "--state-dir", str(tmp_path / "s"),
                    "--metrics-port", str(busy_port), cwd=tmp_path)
    assert one_line_error(result) == (
        f"adaptd run: metrics port 127.0.0.1:{busy_port} is already in use; pass --metrics-port N "
        f"(0 picks a free one) or --metrics-port off")


def test_metrics_port_off_serves_nothing(tmp_path: Path) -> None:
    for i, how in enumerate((["--metrics-port", "off"], ["--set", "metrics_port=off"])):
        result = adaptd("run", "--source", STREAM, "--state-dir", str(tmp_path / f"s{i}"), *how,
                        cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "serving metrics" not in result.stderr and "200 records" in result.stderr
    result = adaptd("run", "--source", STREAM, "--state-dir", str(tmp_path / "s2"), cwd=tmp_path,
                    env_extra={"ADAPTD_METRICS_PORT": "off"})
    assert result.returncode == 0 and "serving metrics" not in result.stderr


def test_help_states_the_defaults_a_first_run_depends_on(tmp_path: Path) -> None:
    text = " ".join(adaptd("run", "--help", cwd=tmp_path).stdout.split())
    assert "(default: 9464; 0 picks a free port; off serves nothing)" in text
    assert "checkpoints and dead letters (default: ./adaptd-state)" in text


def meta_file(path: Path, n_features: int, model: str = "linear") -> Path:
    params = n_features + 1  # the linear family: one weight per feature and a bias
    state = MetaState.initial(np.zeros(params), lr=0.1, eps=1e-6, c=1.0,
                              model={"model": model, "task": "regression", "n_features": n_features})
    return save(state, path)


def test_bad_meta_files_are_one_line_naming_the_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(pickle.dumps({"a": 1}))
    cases = {
        "missing.pt": "--meta missing.pt: file does not exist; expected a meta-state file "
                      "written by adaptd meta-train --out FILE",
        "notes.txt": "--meta notes.txt: not a meta-state file written by adaptd meta-train "
                     "--out FILE",
        "junk.pkl": "--meta junk.pkl: not a meta-state file written by adaptd meta-train --out FILE",
    }
    for name, expected in cases.items():
        result = adaptd("run", "--source", STREAM, "--metrics-port", "off", "--meta", name,
                        "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
        assert one_line_error(result) == f"adaptd run: {expected}"


def test_a_meta_state_for_another_model_is_refused_at_start(tmp_path: Path) -> None:
    meta_file(tmp_path / "three.pt", n_features=3)
    result = adaptd("run", "--source", STREAM, "--metrics-port", "off", "--meta", "three.pt",
                    "--n-features", "1", "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    line = one_line_error(result)
    assert line.startswith("adaptd run: --meta three.pt: meta-state is for n_features=3, "
                           "this run has 1; pass the matching flag"), line
    result = adaptd("run", "--source", STREAM, "--metrics-port", "off", "--meta", "three.pt",
                    "--model", "mlp", "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    assert "meta-state is for model='linear', this run has 'mlp'" in one_line_error(result)


def test_a_state_dir_of_another_model_is_refused_at_start(tmp_path: Path) -> None:
    first = adaptd("run", "--source", STREAM, "--metrics-port", "off", "--state-dir", "state",
                   cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    result = adaptd("run", "--source", STREAM, "--metrics-port", "off", "--state-dir", "state",
                    "--model", "mlp", cwd=tmp_path)
    assert one_line_error(result) == (
        "adaptd run: --state-dir state holds the state of source synthetic params={'seed': '1'} "
        "stream=sinusoid, model auto/regression, 1 feature; this run is source "
        "synthetic params={'seed': '1'} stream=sinusoid, model mlp/regression, features from "
        "the first record (model differ): pass --fresh to move the old state aside and start "
        "over, or another --state-dir")


def test_records_that_do_not_fit_the_meta_state_are_dead_letters_not_a_crash(
        tmp_path: Path) -> None:
    meta_file(tmp_path / "three.pt", n_features=3)
    result = adaptd("run", "--source", STREAM, "--metrics-port", "off", "--meta", "three.pt",
                    "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "200 records, 0 predictions, 0 updates, 200 rejected" in result.stderr
    assert "n_features=3 from --meta three.pt" in result.stderr


def test_bench_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    # sys.modules[name] = None makes every import of it fail, as if it were not installed.
    code = ("import sys; sys.modules['matplotlib'] = None; from adaptd.cli import main; "
            "sys.exit(main(['bench', '--quick', '--streams', 'no-such-stream', '--out', 'r']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert one_line_error(result) == ("adaptd bench: needs the bench extra (matplotlib is not "
                                      "installed): pip install 'adaptd[bench]' (or make install)")
    assert not (tmp_path / "r").exists()


REFUSING_CONNECTOR = '''
from adaptd.connectors.base import Connector, Source


class RefusingSource(Source):
    def open(self, start_positions, listener=None):
        raise ConnectionRefusedError(111, "Connection refused")

    def poll(self, max_records, timeout_s):
        return []

    def close(self):
        pass


class RefusingConnector(Connector):
    """A third-party connector whose service is down: its sink connects when built."""

    scheme = "refuse"
    description = "always refuses"

    @classmethod
    def sink(cls, uri):
        raise ConnectionRefusedError(111, "Connection refused")

    @classmethod
    def source(cls, uri):
        return RefusingSource()


class BrokenConnector(Connector):
    """A third-party connector that cannot even build its source or sink: its client library
    raises its own error type on a URI it does not like."""

    scheme = "broken"
    description = "fails to build"

    @classmethod
    def sink(cls, uri):
        raise RuntimeError("client library: no such endpoint\\n  (more detail on a second line)")

    source = sink
'''


@pytest.fixture
def refusing_plugin(tmp_path: Path) -> dict[str, str]:
    """Installs the ``refuse:`` connector the way a package does: a module and an entry point."""
    site = tmp_path / "site"
    info = site / "refusing-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "refusing_connector.py").write_text(REFUSING_CONNECTOR)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: refusing\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[adaptd.connectors]\nrefuse = refusing_connector:RefusingConnector\n"
        "broken = refusing_connector:BrokenConnector\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def test_a_connector_that_cannot_connect_is_named(tmp_path: Path,
                                                 refusing_plugin: dict[str, str]) -> None:
    uri = "refuse://127.0.0.1:1/predictions"
    result = adaptd("run", "--source", STREAM, "--sink", uri, "--metrics-port", "off",
                    "--state-dir", str(tmp_path / "s"), cwd=tmp_path, env_extra=refusing_plugin)
    assert one_line_error(result) == (
        f"adaptd run: cannot connect to sink {uri} (connector 'refuse' of refusing): "
        f"ConnectionRefusedError: [Errno 111] Connection refused; check that its service is up "
        f"and the URI is right")
    result = adaptd("run", "--source", uri, "--metrics-port", "off",
                    "--state-dir", str(tmp_path / "s2"), cwd=tmp_path, env_extra=refusing_plugin)
    assert one_line_error(result).startswith(
        f"adaptd run: cannot connect to source {uri} (connector 'refuse' of refusing): ")


@pytest.mark.parametrize("flag", ["--source", "--sink", "--dead-letter"])
def test_a_third_party_connector_that_fails_to_build_is_named_with_its_package(
        tmp_path: Path, refusing_plugin: dict[str, str], flag: str) -> None:
    uri = "broken://somewhere/stream"
    args = {"--source": STREAM, flag: uri}
    result = adaptd("run", *(x for kv in args.items() for x in kv), "--metrics-port", "off",
                    "--state-dir", str(tmp_path / "s"), cwd=tmp_path, env_extra=refusing_plugin)
    role = "source" if flag == "--source" else "sink"
    assert one_line_error(result) == (
        f"adaptd run: cannot connect to {role} {uri} (connector 'broken' of refusing): "
        f"RuntimeError: client library: no such endpoint; check that its service is up and the "
        f"URI is right")


def test_meta_train_names_a_source_that_cannot_connect(
        tmp_path: Path, refusing_plugin: dict[str, str]) -> None:
    uri = "refuse://127.0.0.1:1/history"
    result = adaptd("meta-train", "--source", uri, "--out", "m.pt", cwd=tmp_path,
                    env_extra=refusing_plugin)
    assert one_line_error(result).startswith(
        f"adaptd meta-train: cannot connect to source {uri} (connector 'refuse' of refusing): "
        f"ConnectionRefusedError: ")


def test_unwritable_outputs_and_bad_demo_flags_are_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = adaptd("meta-train", "--source", STREAM, "--out", "a-file/meta.pt", cwd=tmp_path)
    assert one_line_error(result) == (
        "adaptd meta-train: --out a-file/meta.pt: cannot write the meta-state: "
        "File exists: 'a-file'")
    result = adaptd("bench", "--quick", "--streams", "no-such-stream", "--out", "a-file/r",
                    cwd=tmp_path)
    assert one_line_error(result) == (
        "adaptd bench: --out a-file/r: cannot create the report directory: "
        "Not a directory: 'a-file/r'")
    # The producer thread used to fail on these while the daemon waited for records forever.
    for flag in ("--partitions", "--keys"):
        result = adaptd("demo", "--records", "10", flag, "0", cwd=tmp_path, timeout_s=60)
        assert one_line_error(result) == f"adaptd demo: configuration error: {flag} must be >= 1, got 0"


def test_stdout_piped_into_a_reader_that_stops_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adaptd", "run", "--source", "synthetic:sinusoid?seed=1&n=50000",
         "--sink", "stdout:", "--metrics-port", "off", "--state-dir", "state"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # as `adaptd run ... | head -1` does
        stderr = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.splitlines()[-1] == (
        "adaptd run: stopped: stdout sink: write failed: [Errno 32] Broken pipe")
