"""ARM role assignments, fault injection, admin endpoints, the CLI."""
from __future__ import annotations

import contextlib
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


RBAC_ADMIN, SECRETS_USER = "f58310d9-a9f6-439a-9e8d-f62e7b41a168", "4633458b-17de-408a-b874-0445c86b69e6"
# Microsoft's "Constrain roles" example (Azure RBAC, "Examples to delegate Azure role assignment management
# with conditions"), for Key Vault Secrets User.
CONSTRAIN_TO_SECRETS_USER = (
    "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR "
    f"(@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{SECRETS_USER}}}))"
    " AND ((!(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})) OR "
    f"(@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{SECRETS_USER}}}))")


def _delegate(lt, http, client, condition):
    """Give `client` Role Based Access Control Administrator on the vault with `condition`; its ARM token."""
    token = mi_token(lt, http, "https://management.azure.com/")
    body = {"properties": {"roleDefinitionId": f"/subscriptions/{lt.seed.subscription_id}/providers/"
                           f"Microsoft.Authorization/roleDefinitions/{RBAC_ADMIN}", "principalId": client.object_id,
                           "principalType": "ServicePrincipal", "condition": condition, "conditionVersion": "2.0"}}
    r = http.put(f"{lt.arm_endpoint}{lt.seed.vault_resource_id}/providers/Microsoft.Authorization/roleAssignments/"
                 f"{uuid.uuid4()}", params={"api-version": "2022-04-01"}, json=body,
                 headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201 and r.json()["properties"]["condition"] == condition
    return client_token(lt, http, client.app_id, client.secret, "https://management.azure.com/.default").json()[
        "access_token"]


def test_a_condition_limits_which_roles_a_delegate_may_assign_and_remove(lt, http):
    token = _delegate(lt, http, lt.seed.requester_client, CONSTRAIN_TO_SECRETS_USER)
    scope, who = lt.seed.vault_resource_id + "/secrets/y", lt.seed.reader_client.object_id
    allowed = str(uuid.uuid4())
    assert _ra(lt, http, scope, allowed, who, token=token, role=SECRETS_USER).status_code == 201
    refused = _ra(lt, http, scope, str(uuid.uuid4()), who, token=token, role=OFFICER)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "AuthorizationFailed"
    officer = str(uuid.uuid4())
    assert _ra(lt, http, scope, officer, who, role=OFFICER).status_code == 201  # made by the product
    assert _ra(lt, http, scope, officer, who, token=token, method="DELETE").status_code == 403
    assert _ra(lt, http, scope, allowed, who, token=token, method="DELETE").status_code == 200


def test_a_condition_the_tenant_does_not_understand_allows_nothing(lt, http):
    token = _delegate(lt, http, lt.seed.requester_client,
                      "@Request[Microsoft.Authorization/roleAssignments:PrincipalType] StringEqualsIgnoreCase 'User'")
    r = _ra(lt, http, lt.seed.vault_resource_id, str(uuid.uuid4()), lt.seed.reader_client.object_id, token=token,
            role=SECRETS_USER)
    assert r.status_code == 403


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


def test_one_named_call_is_throttled_for_as_long_as_the_failure_says(lt, graph):
    lt.set_faults({"failures": [{"operation": "graph.addPassword", "nth": 1, "status": 429, "retryAfter": 20}]})
    app = graph.upsert("throttled-once").json()  # other calls go through
    r = graph("POST", f"/applications/{app['id']}/addPassword", {})
    assert r.status_code == 429 and r.headers["Retry-After"] == "20", r.headers
    assert r.json()["error"]["code"] == "TooManyRequests"
    assert graph("POST", f"/applications/{app['id']}/addPassword", {}).status_code == 200
    for bad in ({"status": 429, "retryAfter": 0}, {"status": 429, "retryAfter": "20"},
                {"status": 500, "retryAfter": 5}):
        with pytest.raises(ValueError):
            lt.set_faults({"failures": [{"operation": "graph.addPassword", "nth": 1, **bad}]})


def test_latency_overlaps(lt, http):
    import concurrent.futures as cf
    lt.set_faults({"latencyMsByService": {"entra": 1000}})
    started = time.monotonic()
    with cf.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: client_session(lt).get(f"{lt.authority}/discovery/v2.0/keys"), range(4)))
    # One after the other they would take 4 s; together about 1 s (the rest is room for a busy machine).
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("whole", [False, True])
def test_latency_is_waited_before_the_handler_or_includes_it(lt, graph, whole):
    """By default a delayed call waits, then is handled; with latencyIncludesHandling it is handled at once
    and answered the latency after it arrived (the critical-path benchmark's model). Breaks if the knob is
    ignored or the handling moves."""
    import concurrent.futures as cf
    name = f"latency-model-{whole}"
    lt.set_faults({"latencyMs": 400, "latencyIncludesHandling": whole})
    started = time.monotonic()
    with cf.ThreadPoolExecutor(1) as pool:
        sent = pool.submit(graph, "POST", "/applications", {"displayName": name})
        seen = None
        while not sent.done():
            if seen is None and any(a["displayName"] == name for a in lt.state()["applications"]):
                seen = time.monotonic() - started
            cf.wait([sent], timeout=0.01)  # look again in 10 ms, or stop once the answer is in
        answered = time.monotonic() - started
    lt.set_faults({})
    assert sent.result().status_code == 201 and answered >= 0.4
    if whole:
        assert seen is not None and seen < answered - 0.2, (seen, answered)
    else:
        assert seen is None or seen >= 0.4, (seen, answered)
    with pytest.raises(ValueError):
        lt.set_faults({"latencyIncludesHandling": "true"})


def test_the_admin_reset_clears_the_registry_as_the_python_one_does(lt, http):
    """POST /_admin/reset (what a `make run` user has) puts the registry's rows back to none with the rest of the
    tenant, as reset() does: otherwise the API would find rows for applications the reset removed. Breaks if the
    HTTP reset leaves Azurite alone."""
    from azure.core.exceptions import ResourceExistsError
    from azure.data.tables import TableClient

    with TableClient.from_connection_string(lt.storage.connection_string(), lt.registry_table) as table:
        with contextlib.suppress(ResourceExistsError):  # made already
            table.create_table()
        table.create_entity({"PartitionKey": "registry", "RowKey": "reg:left-behind", "state": "ready"})
    assert [r["RowKey"] for r in lt.registry_rows()] == ["reg:left-behind"]
    assert http.post(f"{lt.authority_host}/_admin/reset").status_code == 204
    assert lt.registry_rows() == []


def test_refuses_non_loopback_host():
    with pytest.raises(ValueError):
        LocalTenant.start(host="0.0.0.0")


def free_base_port() -> int:
    """A base port whose seven origins (base+1 .. base+7) are free now, so parallel runs do not collide."""
    import random
    import socket

    for _ in range(50):
        base = random.randrange(20000, 60000)
        try:
            for offset in range(1, 8):
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


def test_a_bare_state_file_is_reopened_bare_or_not_at_all(tmp_path: Path):
    state = tmp_path / "tenant.sqlite"
    with LocalTenant.start(state, bare=True) as lt:
        assert "operator" in lt.seed and "api" not in lt.seed and "API_CLIENT_ID" not in lt.app_settings()
    with LocalTenant.start(state, bare=True) as lt:  # the same way: fine, and still bare after a reset
        lt.reset()
        assert "api" not in lt.seed
    done = subprocess.run([sys.executable, "-m", "localtenant", "--state", str(state), "--base-port",
                           str(free_base_port())], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "started with bare=True" in done.stderr
