"""One rotation retried on a second instance while the first is still at it (same Idempotency-Key, two
processes, so no shared lock), on a tenant where the two credential writes overlap: Graph refuses one with
409 Directory_ConcurrencyViolation. The rotation ends with exactly one new credential, and both answers
describe it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench._harness import HostProcess, admin_token
from localtenant import LocalTenant


@pytest.fixture(scope="module")
def two_hosts():
    with LocalTenant.start() as lt:
        with HostProcess(lt) as first, HostProcess(lt) as second:
            yield lt, first, second


def _client(host: HostProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=host.api, trust_env=False, timeout=120,
                        headers={"x-functions-key": host.function_key, "Authorization": f"Bearer {token}"})


def rotate_until_done(host: HostProcess, token: str, name: str, key: str) -> httpx.Response:
    """Like a Logic Apps HTTP action: a 503 is retried after its Retry-After."""
    with _client(host, token) as c:
        for _ in range(20):
            response = c.post(f"/registrations/{name}/credentials", headers={"Idempotency-Key": key})
            if response.status_code != 503:
                return response
            time.sleep(min(float(response.headers.get("retry-after", "1")), 3))
    return response


@pytest.mark.parametrize("kind", ["secret", "certificate"])
def test_overlapping_rotations_on_one_app_add_exactly_one_credential(two_hosts, kind):
    lt, first, second = two_hosts
    token = admin_token(lt)
    name = f"twin-rotation-{kind}"
    with _client(first, token) as c:
        made = c.post("/registrations", json={"type": "service", "name": name, "displayName": "Twins",
                                              "dicomService": "managed", "access": "reader",
                                              "credential": {"kind": kind}})
        assert made.status_code == 201, made.text
    field = "passwordCredentials" if kind == "secret" else "keyCredentials"

    def app() -> dict:
        return next(a for a in lt.state()["applications"] if a.get("uniqueName") == f"dicomreg-{name}")

    assert len(app()[field]) == 1
    lt.set_faults({"latencyMsByService": {"graph": 300}})  # slow enough that the two rotations overlap
    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda host: rotate_until_done(host, token, name, f"{name}-1"),
                                    [first, second]))
    finally:
        lt.set_faults({})
    assert sorted(a.status_code for a in answers) == [200, 201], [a.text for a in answers]
    on_app = app()[field]
    assert len(on_app) == 2  # the original and exactly one new credential
    new = on_app[-1]["keyId"]
    # Both answers name it as the active credential (the first may still list the twin's, being undone).
    for answer in answers:
        assert [c["keyId"] for c in answer.json()["credentials"] if c["state"] == "active"] == [new], answer.text
    secret = next(s for s in lt.state()["secrets"] if s["name"] == f"dicomreg--{name}--{kind}")
    assert len([v for v in secret["versions"] if v["attributes"]["enabled"]]) == 2
