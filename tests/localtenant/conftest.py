"""One local tenant for the whole suite (started once, about 0.2 s), reset to the seed after every test."""
from __future__ import annotations

import pytest
import requests

from localtenant import LocalTenant

from localtenant_helpers import Graph, client_session


@pytest.fixture(scope="session")
def lt():
    with LocalTenant.start() as tenant:
        yield tenant


# These tests call Graph by hand, often with credential writes back to back on one application; the product
# retries Entra's refusal of those (Directory_ConcurrencyViolation within credentialWriteWindowMs) and its tests
# keep the default. A test of the window itself sets it (test_app_policy_and_concurrency.py).
CALM = {"credentialWriteWindowMs": 0}


@pytest.fixture(autouse=True)
def _fresh(lt):
    lt.set_settings(CALM)
    yield
    lt.reset()


@pytest.fixture(scope="session")
def http(lt) -> requests.Session:
    return client_session(lt)


@pytest.fixture
def graph(lt, http) -> Graph:
    """Graph as the product's managed identity (Application.ReadWrite.OwnedBy and friends)."""
    return Graph(lt, http)
