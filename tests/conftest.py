"""Shared fixtures: one local tenant and the function app on the project's local host, per test session."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import httpx
import pytest

# The hooks that order the session-wide checks last and deal the slow tests first, on one process or on
# parallel workers, live in tests/parallel.py (a light module: a run of its own imports them without this
# file's fixtures); pytest finds them here.
from tests.parallel import (  # noqa: F401
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_configure_node,
    pytest_unconfigure,
    pytest_xdist_make_scheduler,
)
from tests.support import (
    FUNCTION_KEY,
    MASTER_KEY,
    CaptureAll,
    api_client,
    api_token,
    call_function,
    settings_override,
)


def pytest_terminal_summary(terminalreporter) -> None:
    """Figures a test records (record_property("figures", …): the north star's), at the end of the run, whichever
    worker ran it."""
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        for name, value in getattr(report, "user_properties", []):
            if name == "figures" and report.when == "call":
                terminalreporter.write_line(value)


@pytest.fixture(scope="session", autouse=True)
def capture_every_log_line() -> Iterator[None]:
    handler = CaptureAll(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture(scope="session")
def tenant() -> Iterator[Any]:
    from localtenant import LocalTenant

    with LocalTenant.start() as lt:
        yield lt


@pytest.fixture(scope="session")
def app_settings(tenant) -> Iterator[dict[str, str]]:
    """The function app's settings for the local tenant, applied to this process (the host runs in it)."""
    settings = tenant.app_settings()
    with settings_override(**settings):
        yield settings


@pytest.fixture(scope="session")
def host(app_settings) -> Iterator[Any]:
    import devhost
    import function_app

    app = devhost.build_app(function_app.app, keys={"master": MASTER_KEY, "function": FUNCTION_KEY})
    with devhost.start_in_thread(app) as server:
        yield server


@pytest.fixture(scope="session")
def call(app_settings) -> Callable[..., func.HttpResponse]:
    """Calls one of registrations.http's functions in this process (tests.support.call_function): no host, so
    no function key; the function app's settings for the local tenant are applied."""
    return call_function


@pytest.fixture(scope="session")
def admin_token(tenant) -> str:
    return api_token(tenant, tenant.seed.admin_client)


@pytest.fixture(scope="session")
def api(host, admin_token) -> Iterator[httpx.Client]:
    """The API as the seeded admin client sees it."""
    with api_client(host, admin_token) as client:
        yield client


@pytest.fixture(scope="module")
def tokens(tenant) -> dict[str, str]:
    """A token for each seeded caller: admin, requester, requester_b (another requester) and reader."""
    seed = tenant.seed
    return {role: api_token(tenant, getattr(seed, client)) for role, client in [
        ("admin", "admin_client"), ("requester", "requester_client"), ("requester_b", "requester_client_b"),
        ("reader", "reader_client")]}


@pytest.fixture(scope="module")
def as_(host, tokens) -> Iterator[dict[str, httpx.Client]]:
    """The API as each seeded caller sees it, by the names `tokens` gives them."""
    clients = {role: api_client(host, token) for role, token in tokens.items()}
    yield clients
    for client in clients.values():
        client.close()
