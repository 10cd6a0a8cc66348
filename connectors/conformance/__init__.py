"""The connector conformance suite, shipped as a pytest plugin.

Every connector, built in or third party, must pass the same checks of the contract in
:mod:`adaptd.connectors.base`. A connector package runs them with one test class and one
fixture that says how to build its source and sink over known content (and starts its broker,
if any)::

    # tests/test_conformance.py of the connector's package
    import pytest
    from adaptd.connectors.conformance import CaseContext, ConnectorCase, ConnectorConformance

    class TestConformance(ConnectorConformance):
        @pytest.fixture
        def connector_case(self, conformance_context: CaseContext) -> ConnectorCase:
            return ConnectorCase(scheme="myscheme", uri=..., source=..., sink=...)

and the command::

    pytest -p adaptd.connectors.conformance tests/test_conformance.py

(The plugin also loads by itself through adaptd's ``pytest11`` entry point; ``-p`` makes the
command work where plugin autoloading is off.) ``docs/connectors.md`` has a complete example.

The plugin adds one fixture, ``conformance_context`` (a :class:`CaseContext`), and the case
types below; :class:`ConnectorConformance` holds the checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The checks' asserts explain their failures only when pytest rewrites them, which it does for
# plugin modules it finds through the entry point but not in every kind of install.
pytest.register_assert_rewrite("adaptd.connectors.conformance.suite")

from adaptd.connectors.conformance.cases import (
    RECORDS,
    CaseContext,
    ConnectorCase,
    SinkCase,
    SourceCase,
    lines_content,
)
from adaptd.connectors.conformance.suite import ConnectorConformance

__all__ = [
    "RECORDS", "CaseContext", "ConnectorCase", "ConnectorConformance", "SinkCase", "SourceCase",
    "conformance_context", "lines_content",
]


@pytest.fixture
def conformance_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> CaseContext:
    """The :class:`CaseContext` handed to case factories."""
    return CaseContext(tmp_path=tmp_path, monkeypatch=monkeypatch, request=request)
