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


@pytest.fixture(autouse=True)
def _fresh(lt):
    yield
    lt.reset()


@pytest.fixture(scope="session")
def http(lt) -> requests.Session:
    return client_session(lt)


@pytest.fixture
def graph(lt, http) -> Graph:
    """Graph as the product's managed identity (Application.ReadWrite.OwnedBy and friends)."""
    return Graph(lt, http)
