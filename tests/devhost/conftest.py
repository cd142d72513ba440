"""Fixtures: the sample app served for real, and a client for it."""

import httpx
import pytest

import devhost
from devhost_sample import build_sample_host


@pytest.fixture(scope="module")
def server():
    """The sample app served for real: uvicorn on a thread, on an ephemeral loopback port."""
    with devhost.start_in_thread(build_sample_host()) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as http:
        yield http
