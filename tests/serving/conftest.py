"""Fixtures of the serving tests; the session's exported repository and server are in tests/serving/fixtures.py."""

from __future__ import annotations

import pytest

from tests.serving.helpers import url_of


@pytest.fixture(params=("http", "grpc"))
def client(request, triton_server):
    """A ContentSafetyClient of the session server, once per protocol (no retries: errors surface at once)."""
    from serving.client import ContentSafetyClient

    with ContentSafetyClient(
        url_of(triton_server, request.param), protocol=request.param, retries=0
    ) as client:
        yield client
