"""ARM role assignments, fault injection, admin endpoints, the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from localtenant import LocalTenant
from localtenant_helpers import client_session, client_token, mi_token

OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"


def _ra(lt, http, scope, name, principal, token=None, role=OFFICER, method="PUT"):
    token = token or mi_token(lt, http, "https://management.azure.com/")
    body = {"properties": {"roleDefinitionId": f"/subscriptions/{lt.seed.subscription_id}/providers/"
                           f"Microsoft.Authorization/roleDefinitions/{role}", "principalId": principal,
                           "principalType": "ServicePrincipal"}}
    return http.request(method, f"{lt.arm_endpoint}{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
                        params={"api-version": "2022-04-01"}, headers={"Authorization": f"Bearer {token}"},
                        json=body if method == "PUT" else None)


def test_role_assignment_lifecycle(lt, http):
    scope, name, who = lt.seed.vault_resource_id + "/secrets/x", str(uuid.uuid4()), lt.seed.reader_client.object_id
    r = _ra(lt, http, scope, name, who)
    assert r.status_code == 201 and r.json()["name"] == name and r.json()["properties"]["scope"] == scope
    dup = _ra(lt, http, scope, str(uuid.uuid4()), who)
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "RoleAssignmentExists"
    assert _ra(lt, http, scope, name, who, method="GET").status_code == 200
    token = mi_token(lt, http, "https://management.azure.com/")
    listed = http.get(f"{lt.arm_endpoint}{lt.seed.vault_resource_id}/providers/Microsoft.Authorization/"
                      "roleAssignments", params={"api-version": "2022-04-01", "$filter": f"principalId eq '{who}'"},
                      headers={"Authorization": f"Bearer {token}"}).json()["value"]
    assert [a["name"] for a in listed] == [name]
    assert _ra(lt, http, scope, name, who, method="DELETE").status_code == 200
    assert _ra(lt, http, scope, name, who, method="DELETE").status_code == 204


def test_role_assignment_needs_write_permission(lt, http):
    seed = lt.seed.admin_client
    token = client_token(lt, http, seed.app_id, seed.secret, "https://management.azure.com/.default").json()
    r = _ra(lt, http, lt.seed.vault_resource_id, str(uuid.uuid4()), seed.object_id, token=token["access_token"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "AuthorizationFailed"


def test_fail_nth_call_then_recover(lt, graph):
    lt.set_faults({"failures": [{"operation": "graph.addPassword", "nth": 2, "status": 503, "times": 1}]})
    app = graph.upsert("flaky").json()
    assert graph("POST", f"/applications/{app['id']}/addPassword", {}).status_code == 200
    r = graph("POST", f"/applications/{app['id']}/addPassword", {})
    assert r.status_code == 503 and r.json()["error"]["code"] == "ServiceUnavailable"
    assert graph("POST", f"/applications/{app['id']}/addPassword", {}).status_code == 200
    assert lt.stats()["calls"]["graph.addPassword"] == 3


def test_throttle_answers_429_with_retry_after(lt, graph):
    lt.set_faults({"throttle": {"ratePerSecond": 0.5, "burst": 2, "services": ["graph"]}})
    codes = [graph("GET", "/applications") for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert int(codes[2].headers["Retry-After"]) >= 1 and codes[2].json()["error"]["code"] == "TooManyRequests"


def test_latency_overlaps(lt, http):
    import concurrent.futures as cf
    lt.set_faults({"latencyMsByService": {"entra": 300}})
    started = time.monotonic()
    with cf.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: client_session(lt).get(f"{lt.authority}/discovery/v2.0/keys"), range(4)))
    assert time.monotonic() - started < 1.0


def test_refuses_non_loopback_host():
    with pytest.raises(ValueError):
        LocalTenant.start(host="0.0.0.0")


def free_base_port() -> int:
    """A base port whose five origins (base+1 .. base+5) are free now, so parallel runs do not collide."""
    import random
    import socket

    for _ in range(50):
        base = random.randrange(20000, 60000)
        try:
            for offset in range(1, 6):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise AssertionError("no free port range")


def test_cli_keeps_state_across_restart(tmp_path: Path):
    state = tmp_path / "tenant.sqlite"
    env = {k: v for k, v in os.environ.items()}
    base = free_base_port()

    def run():
        proc = subprocess.Popen([sys.executable, "-m", "localtenant", "--state", str(state), "--base-port", str(base)],
                                cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if line.startswith("ready"):
                return proc
        raise AssertionError("the CLI did not start")

    proc = run()
    try:
        import json
        info = json.loads((tmp_path / "tenant.json").read_text())
        assert (tmp_path / "ca.pem").exists() and info["graph_endpoint"] == f"https://127.0.0.1:{base + 2}"
        s = client_session(type("LT", (), {"ca_file": info["ca_file"]}))
        tok = s.get(info["identity_endpoint"], params={"api-version": "2019-08-01",
                                                      "resource": "https://graph.microsoft.com"},
                    headers={"X-IDENTITY-HEADER": info["identity_header"]}).json()["access_token"]
        r = s.patch(f"{info['graph_endpoint']}/v1.0/applications(uniqueName='kept')", json={"displayName": "k"},
                    headers={"Authorization": f"Bearer {tok}", "Prefer": "create-if-missing"})
        assert r.status_code == 201
    finally:
        proc.terminate()
        proc.wait(10)
    proc = run()
    try:
        s = client_session(type("LT", (), {"ca_file": str(tmp_path / "ca.pem")}))
        r = s.get(f"{info['graph_endpoint']}/v1.0/applications(uniqueName='kept')",
                  headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200 and r.json()["displayName"] == "k"
    finally:
        proc.terminate()
        proc.wait(10)
