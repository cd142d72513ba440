"""Entra as it really behaves (issue 24, docs/local-tenant.md "Directory settings"): the product against each
behaviour of the local tenant that is on by default. Each test names one change to the tenant that would make it
fail (the behaviour removed), as the connector-rule tests do."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support import create, objects_named, service, settings_override, user_graph_token


def graph_as(tenant, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{tenant.graph_endpoint}/v1.0", verify=tenant.ca_file, trust_env=False,
                        headers={"Authorization": f"Bearer {token}"})


@contextlib.contextmanager
def directory(tenant, **settings) -> Iterator[None]:
    """Directory settings for one test, back to the defaults after it (the tenant is shared by the session)."""
    tenant.set_settings(settings)
    try:
        yield
    finally:
        tenant.set_settings({})
        tenant.set_faults({})


@pytest.mark.parametrize("status", [409, 503])
def test_a_credential_write_right_after_another_is_refused_and_retried(api, tenant, status):
    """Two rotations in a row: the second one's addPassword reaches Graph within the credential write window
    after the first one's, and Entra refuses it with Directory_ConcurrencyViolation (as 409, and as 503 as
    azure-cli issue 23081 shows on addPassword). It did nothing, so the product repeats it after a pause and the
    rotation succeeds with one new password.
    Mutation: in `Applications._credential_write` compare `arrived < last[1]` (no window) and addPassword is
    called three times, not four."""
    with directory(tenant, credentialWriteWindowMs=2500, concurrencyViolationStatuses=[status]):
        name = f"busy-twice-{status}"
        create(api, service(name))
        before = tenant.stats()["calls"].get("graph.addPassword", 0)
        first = api.post(f"/registrations/{name}/credentials", headers={"Idempotency-Key": f"{name}-1"})
        second = api.post(f"/registrations/{name}/credentials", headers={"Idempotency-Key": f"{name}-2"})
        calls = tenant.stats()["calls"].get("graph.addPassword", 0) - before
    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    assert calls >= 3  # the second rotation's first addPassword was refused, then repeated
    app = objects_named(tenant, name)["applications"][0]
    assert len(app["passwordCredentials"]) == 3  # the create's and one per rotation


@pytest.mark.parametrize("status", [400, 409])
def test_a_name_held_in_deleted_items_is_taken_in_either_shape(api, tenant, status):
    """A member user registered `dicomreg-{name}` and deleted it: it sits in deleted items for 30 days, keeping
    its uniqueName. The API's create meets the name taken, answered as 400 Request_BadRequest (as evidenced) or
    409 Request_MultipleObjectsWithSameKeyValue (as Graph answers other alternate keys), and either way answers
    409 naming the deleted holder, with nothing made.
    Mutation: drop the `self.deleted.holding(...)` half of `Applications._require_free_name` and the create
    succeeds (201) over the deleted holder's name."""
    name = f"held-deleted-{status}"
    with directory(tenant, uniqueNameConflictStatus=status), \
            graph_as(tenant, user_graph_token(tenant, tenant.seed.member.upn)) as member:
        held = member.post("/applications", json={"displayName": name, "uniqueName": f"dicomreg-{name}"})
        assert held.status_code == 201, held.text
        assert member.delete(f"/applications/{held.json()['id']}").status_code == 204
        response = api.post("/registrations", json=service(name))
    assert response.status_code == 409, response.text
    assert held.json()["id"] in response.text
    assert objects_named(tenant, name)["applications"] == []


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("call", ["rotate", "create", "credentials"])
def test_a_vault_that_does_not_answer_is_a_503_never_a_500(api, tenant, call):
    """Key Vault unreachable (nothing listens where it should be; the chaos run met it with the tenant down, on a
    rotation's version listing): every call that needs it answers 503 with Retry-After, never a 500: a read or a
    rotation as upstream-unavailable, a create as provisioning-failed naming the step it was undone from; a
    create or rotation undoes what it made. (The local tenant's part here is only to be absent.)"""
    name = f"vault-down-{call}"
    if call != "create":
        create(api, service(name))
    with settings_override(KEY_VAULT_URL=f"https://127.0.0.1:{_closed_port()}"):
        if call == "create":
            response = api.post("/registrations", json=service(name))
        elif call == "rotate":
            response = api.post(f"/registrations/{name}/credentials", headers={"Idempotency-Key": name})
        else:
            response = api.get(f"/registrations/{name}/credentials")
    assert response.status_code == 503, response.text
    kind = "provisioning-failed" if call == "create" else "upstream-unavailable"
    assert response.json()["type"].endswith(f":{kind}"), response.text
    assert response.json()["upstream"]["service"] == "keyvault" and response.json()["upstream"]["status"] is None
    assert response.headers["Retry-After"].isdigit()
    made = objects_named(tenant, name)
    assert len(made["passwords"]) == (0 if call == "create" else 1)
