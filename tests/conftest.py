"""Shared fixtures: one local tenant and the function app on the project's local host, per test session."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import httpx
import pytest

from tests import parallel
from tests.support import (
    FUNCTION_KEY,
    MASTER_KEY,
    CaptureAll,
    api_client,
    api_token,
    call_function,
    settings_override,
)

# Session-wide checks look at what every other test of the session did (the log lines and response bodies in
# tests.support.CAPTURED and RESPONSES), so they must run last. They say so with this marker rather than by a
# file name that sorts last: pytest_collection_modifyitems below moves every marked test after the unmarked
# ones, keeping each group's own order. That holds for any selection of files, in any order on the command
# line, and after any plugin that reorders tests (the hook runs last: trylast).
AFTER_EVERYTHING_ELSE = "after_everything_else"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{AFTER_EVERYTHING_ELSE}: a session-wide check; runs after every other selected test "
                   "(tests/conftest.py moves it)")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [item for item in items if item.get_closest_marker(AFTER_EVERYTHING_ELSE)]
    if last:
        items[:] = [item for item in items if not item.get_closest_marker(AFTER_EVERYTHING_ELSE)] + last
    slow = {item.nodeid: slow_seconds(item) for item in items if item.get_closest_marker("slow")}
    parallel.tell_controller(config, last=[item.nodeid for item in last], slow=slow)


def slow_seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("slow")
    seconds = marker.args[0] if len(marker.args) == 1 and not marker.kwargs else None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise pytest.UsageError(f"{item.nodeid}: slow takes the seconds the test runs: @pytest.mark.slow(20)")
    return float(seconds)


# Under pytest-xdist (`make test` runs the suite on parallel workers) each worker is a session of its own, so the
# marked tests run on every worker, after everything else that worker ran; tests marked slow start first
# (tests/parallel.py says how).
@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    node.workerinput[parallel.WORKERINPUT_KEY] = str(parallel.marks_file(node.config))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "load":
        raise pytest.UsageError(f"--dist {config.getvalue('dist')} would run the {AFTER_EVERYTHING_ELSE} checks "
                                "once, beside other tests: use the default (load) distribution")
    return parallel.Scheduler(config, log, parallel.marks_file(config))


def pytest_terminal_summary(terminalreporter) -> None:
    """Figures a test records (record_property("figures", …): the north star's), at the end of the run, whichever
    worker ran it."""
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        for name, value in getattr(report, "user_properties", []):
            if name == "figures" and report.when == "call":
                terminalreporter.write_line(value)


def pytest_unconfigure(config: pytest.Config) -> None:
    parallel.forget_marks_file(config)


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
