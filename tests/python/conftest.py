"""Where the server under test listens, from the environment."""

import os

import pytest


def _address(name):
    value = os.environ.get(name, "").strip()
    for scheme in ("http://", "grpc://"):
        if value.startswith(scheme):
            value = value[len(scheme) :]
    return value.rstrip("/")


@pytest.fixture(scope="session")
def http_url():
    url = _address("INFERD_HTTP_URL")
    if not url:
        pytest.fail("INFERD_HTTP_URL (host:port of inferd's HTTP listener) is not set")
    return url


@pytest.fixture(scope="session")
def grpc_url():
    url = _address("INFERD_GRPC_URL")
    if not url:
        pytest.skip("INFERD_GRPC_URL is not set: the server under test has no gRPC listener")
    return url
