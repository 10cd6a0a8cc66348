"""The shipped conformance suite over every built-in connector (cases in ``conftest.py``)."""

from __future__ import annotations

import pytest

from adaptd.connectors.conformance import CaseContext, ConnectorCase, ConnectorConformance
from adaptd.connectors.registry import BUILTINS
from tests.connectors.conftest import CASES


@pytest.mark.parametrize("scheme", sorted(BUILTINS))
def test_every_builtin_connector_has_a_conformance_case(scheme: str) -> None:
    assert scheme in {case.scheme for case in CASES.values()}, (
        f"add a conformance case for the built-in {scheme!r} to tests/connectors/conftest.py")


class TestBuiltinConformance(ConnectorConformance):
    @pytest.fixture(params=sorted(CASES))
    def connector_case(self, request: pytest.FixtureRequest, conformance_context: CaseContext) -> ConnectorCase:
        return CASES[request.param]
