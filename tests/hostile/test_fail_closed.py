"""Fail-closed self-service (issue 17): what a caller holding only Registrations.Request tried, each refused
before anything is written. Every test here failed on the main branch before the fix it names."""

from __future__ import annotations

import time

from tests.support import objects_named, service


def nothing_made(tenant, name: str) -> bool:
    return not any(objects_named(tenant, name).values())


# ------------------------------------------------------------------------ principals a request names
def test_a_secret_reader_that_does_not_exist_is_a_422_within_a_second_and_writes_nothing(as_, tenant):
    """Before: retried as replication lag for the whole time budget, then a 502 after a dozen ARM writes."""
    missing = "0b944de3-e0fc-4774-a49a-b135213725ef"
    before = tenant.stats()
    started = time.monotonic()
    response = as_["requester"].post("/registrations", json=service(
        "fc-ghost-reader", secretReaders=[tenant.seed.reader_client.object_id, missing]))
    elapsed = time.monotonic() - started
    assert response.status_code == 422, response.text
    assert elapsed < 1.0, elapsed
    problem = response.json()
    assert problem["type"].endswith(":validation") and missing in problem["detail"]
    assert [e["loc"] for e in problem["errors"]] == [["secretReaders", 1]]
    assert nothing_made(tenant, "fc-ghost-reader")
    assert writes_between(before, tenant.stats()) == []


def writes_between(before: dict, after: dict) -> list[str]:
    """Operations of the local tenant called in between that change something (reads and tokens left out)."""
    reads = ("get", "list", "token", "authorize", "discovery", "keys")
    return sorted(op for op, n in after["calls"].items() if n != before["calls"].get(op, 0)
                  and not op.split(".", 1)[1].startswith(reads))


def test_a_secret_reader_must_be_a_principal_not_an_application(as_, tenant):
    app_object_id = tenant.seed.reader_client.app_object_id  # an application's object id, not its principal's
    response = as_["requester"].post("/registrations", json=service("fc-app-reader", secretReaders=[app_object_id]))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["msg"].startswith(f"{app_object_id} is of type application")
    assert nothing_made(tenant, "fc-app-reader")
