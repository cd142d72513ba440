"""Two instances of the function app (two processes, so no shared lock) on one tenant: the same create sent
to both at once converges on one registration, and neither undoes the other's work."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from bench._harness import HostProcess, admin_token
from localtenant import LocalTenant
from tests.support import ca_context, settings_override, wait_for


@pytest.fixture(scope="module")
def two_hosts():
    with LocalTenant.start() as lt:
        lt.set_faults({"latencyMs": 80})  # every call slow enough that the two creates overlap
        # App-only reads may show an updated property's previous value (Entra's eventual consistency): nothing
        # the instances coordinate through may depend on reading Graph back.
        lt.set_settings({"staleReadsMs": 30_000})
        with HostProcess(lt) as first, HostProcess(lt) as second:
            yield lt, first, second


def create_until_done(host: HostProcess, token: str, body: dict) -> list[int]:
    return until_done(host, token, "POST", "/registrations", json=body)


def recorded(lt, name: str) -> dict:
    """The registration's registry row: ready, with no lease left, is what "finished" means."""
    [row] = [r for r in lt.registry_rows() if r["RowKey"] == f"reg:{name}"]
    return row


def until_done(host: HostProcess, token: str, method: str, path: str, **request) -> list[int]:
    """Like a Logic Apps HTTP action: retry a 503 after its Retry-After, until an answer that is not 503."""
    statuses = []
    with httpx.Client(base_url=host.api, trust_env=False, timeout=120,
                      headers={"x-functions-key": host.function_key, "Authorization": f"Bearer {token}"}) as c:
        for _ in range(20):
            response = c.request(method, path, **request)
            statuses.append(response.status_code)
            if response.status_code != 503:
                return statuses
            time.sleep(min(float(response.headers.get("retry-after", "1")), 3))
    return statuses


@pytest.mark.slow(6)
def test_the_same_create_on_two_instances_makes_one_registration(two_hosts):
    lt, first, second = two_hosts
    token = admin_token(lt)
    for round_ in range(3):
        name = f"two-hosts-{round_}"
        body = {"type": "service", "name": name, "displayName": "Two hosts", "dicomService": "managed",
                "access": "reader"}
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(lambda host: create_until_done(host, token, body), [first, second]))
        finals = sorted(statuses[-1] for statuses in outcomes)
        # One instance creates; the other backs off (503 + Retry-After) while the lease is live, then
        # replays the finished registration.
        assert finals == [200, 201], outcomes

        state = lt.state()
        apps = [a for a in state["applications"] if a.get("uniqueName") == f"dicomreg-{name}"]
        assert len(apps) == 1
        app = apps[0]
        row = recorded(lt, name)
        assert row["state"] == "ready" and not row["lease_holder"] and row["app_object_id"] == app["id"]
        sps = [s for s in state["servicePrincipals"] if s["appId"] == app["appId"]]
        assert len(sps) == 1
        assert len(app["passwordCredentials"]) == 1
        versions = [v for s in state["secrets"] if s["name"] == f"dicomreg--{name}--secret" and not s["deleted"]
                    for v in s["versions"] if v.get("attributes", {}).get("enabled", True)]
        assert len(versions) == 1
        roles = [r for r in state["roleAssignments"] if r["properties"]["principalId"] == sps[0]["id"]]
        assert len(roles) == 1


@pytest.mark.slow(11)
def test_a_throttled_duplicate_never_undoes_a_finished_create(two_hosts):
    """The same create on both instances; an application write that comes second would be throttled (429)
    four times. The registry row is insert-only, so only one instance ever writes to Graph: the other is told
    to retry (503) and ends replaying the finished registration, and the sweep, standing two hours later,
    finds nothing to repair."""
    lt, first, second = two_hosts
    token = admin_token(lt)
    name = "two-hosts-throttled"
    body = {"type": "service", "name": name, "displayName": "Two hosts", "dicomService": "managed",
            "access": "reader"}
    for host in (first, second):  # warm: each instance has its runtime and tokens before the race
        with httpx.Client(base_url=host.api, trust_env=False, timeout=60, headers={
                "x-functions-key": host.function_key, "Authorization": f"Bearer {token}"}) as c:
            assert c.get("/registrations").status_code == 200
    # Every call slow enough that both instances read "no such application" before either creates it.
    lt.set_faults({"latencyMs": 300, "failures": [
        {"operation": "graph.createApplication", "nth": 2, "status": 429, "times": 4}]})
    creates_before = lt.stats()["calls"].get("graph.createApplication", 0)
    try:
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(lambda host: create_until_done(host, token, body), [first, second]))
    finally:
        lt.set_faults({"latencyMs": 80})
    assert sorted(statuses[-1] for statuses in outcomes) == [200, 201], outcomes
    # One application write: the other instance never reached Graph.
    assert lt.stats()["calls"]["graph.createApplication"] - creates_before == 1

    [app] = [a for a in lt.state()["applications"] if a.get("uniqueName") == f"dicomreg-{name}"]
    row = recorded(lt, name)
    assert row["state"] == "ready" and not row["lease_holder"] and row["app_object_id"] == app["id"]
    with settings_override(**lt.app_settings()):
        from registrations import sweep, wiring

        report = sweep.run(wiring.runtime().service, now=datetime.now(timezone.utc) + timedelta(hours=2))
    assert report["repaired"] == [] and report["removed"] == [], report
    [still] = [a for a in lt.state()["applications"] if a.get("uniqueName") == f"dicomreg-{name}"]
    assert still["id"] == app["id"] and recorded(lt, name)["state"] == "ready"


def test_one_registration_changed_on_two_instances_at_once_ends_consistent(two_hosts):
    """The change's lease: one instance changes, the other backs off (503) and then changes what is left."""
    lt, first, second = two_hosts
    token = admin_token(lt)
    body = {"type": "service", "name": "two-hosts-change", "displayName": "Two hosts", "dicomService": "managed",
            "access": "reader"}
    assert create_until_done(first, token, body)[-1] == 201
    assert until_done(second, token, "GET", "/registrations/two-hosts-change")[-1] == 200  # both warm

    def change(host: HostProcess, display_name: str) -> list[int]:
        return until_done(host, token, "PATCH", "/registrations/two-hosts-change",
                          content=json.dumps({"displayName": display_name, "access": "writer"}),
                          headers={"Content-Type": "application/merge-patch+json"})

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(change, [first, second], ["From first", "From second"]))
    assert [statuses[-1] for statuses in outcomes] == [200, 200], outcomes
    [app] = [a for a in lt.state()["applications"] if a.get("uniqueName") == "dicomreg-two-hosts-change"]
    row = recorded(lt, "two-hosts-change")
    assert not row["lease_holder"] and "dicom-access:writer" in json.loads(row["tags"])
    assert "dicom-access:writer" in app["tags"] and app["displayName"] in ("From first", "From second")
    sp_id = row["sp_id"]
    roles = [r["properties"]["roleDefinitionId"].rsplit("/", 1)[-1] for r in lt.state()["roleAssignments"]
             if r["properties"]["principalId"] == sp_id]
    assert roles == ["58a3b984-7adf-4c20-983a-32417c86fbc8"]  # DICOM Data Owner, and nothing else
    lt.advance_clock(31)  # past the stale reads: Entra now shows what both changes wrote
    with httpx.Client(base_url=first.api, trust_env=False, timeout=120,
                      headers={"x-functions-key": first.function_key, "Authorization": f"Bearer {token}"}) as c:
        assert c.get("/registrations/two-hosts-change", params={"drift": "live"}).json()["drift"] == []


@pytest.fixture(scope="module")
def limited_hosts():
    """Two instances whose requesters may hold 3 registrations each."""
    with LocalTenant.start() as lt:
        lt.set_faults({"latencyMs": 40})  # slow enough that twenty creates overlap
        lt.set_settings({"staleReadsMs": 30_000})  # Graph's lists may lag: the count must not depend on them
        saved = os.environ.get("MAX_REGISTRATIONS_PER_REQUESTER")
        os.environ["MAX_REGISTRATIONS_PER_REQUESTER"] = "3"
        try:
            with HostProcess(lt) as first, HostProcess(lt) as second:
                yield lt, first, second
        finally:
            if saved is None:
                os.environ.pop("MAX_REGISTRATIONS_PER_REQUESTER", None)
            else:
                os.environ["MAX_REGISTRATIONS_PER_REQUESTER"] = saved


def test_the_per_requester_limit_holds_across_instances(limited_hosts):
    """Before: the limit was checked under a per-name lock in one process, so 10 concurrent creates with
    different names by one requester made 6 with a limit of 3. Now: 20 at once, over two processes, with
    stale reads on: the requester's count is a conditional write on its registry row, so exactly 3."""
    lt, first, second = limited_hosts
    seed = lt.seed.requester_client
    token = httpx.post(f"{lt.authority}/oauth2/v2.0/token", verify=ca_context(lt.ca_file), trust_env=False,
                       timeout=30, data={
        "grant_type": "client_credentials", "client_id": seed.app_id, "client_secret": seed.secret,
        "scope": f"{lt.seed.api.identifier_uri}/.default"}).json()["access_token"]

    def create(index: int) -> list[int]:
        body = {"type": "service", "name": f"limit-{index}", "displayName": "Limited", "dicomService": "managed",
                "access": "reader"}
        return create_until_done((first, second)[index % 2], token, body)

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(create, range(20)))
    finals = [statuses[-1] for statuses in outcomes]
    assert finals.count(201) == 3 and set(finals) == {201, 403}, outcomes

    state = lt.state()
    apps = [a for a in state["applications"] if (a.get("uniqueName") or "").startswith("dicomreg-limit-")]
    assert len(apps) == finals.count(201)
    assert all(recorded(lt, a["uniqueName"].removeprefix("dicomreg-"))["state"] == "ready" for a in apps)
    # No orphan: nothing of a refused create is left (service principals, secrets, role assignments).
    app_ids = {a["appId"] for a in apps}
    sps = [s for s in state["servicePrincipals"] if s["appId"] not in app_ids and "dicom-registration" in s["tags"]]
    assert sps == []
    kept = {f"dicomreg--{a['uniqueName'].removeprefix('dicomreg-')}--secret" for a in apps}
    assert [s["name"] for s in state["secrets"] if s["name"].startswith("dicomreg--limit-") and not s["deleted"]
            and s["name"] not in kept] == []
    principals = {s["id"] for s in state["servicePrincipals"]}
    assert [r for r in state["roleAssignments"] if r["properties"]["principalId"] not in principals] == []


def test_a_change_in_progress_on_one_instance_makes_the_other_wait(two_hosts):
    """The lease is a conditional write on the registry row, which stale reads cannot fool: while the first
    instance is inside a change (held at its role assignment), a change of the same registration on the other
    instance does not proceed (503, in-progress, Retry-After); it goes through once the first is done."""
    lt, first, second = two_hosts
    token = admin_token(lt)
    name = "two-hosts-lease"
    body = {"type": "service", "name": name, "displayName": "Two hosts", "dicomService": "managed",
            "access": "reader"}
    assert create_until_done(first, token, body)[-1] == 201
    lt.set_faults({"latencyMs": 80, "failures": [
        {"operation": "arm.createRoleAssignment", "nth": 1, "status": 503, "times": None}]})
    before = lt.stats()["calls"].get("arm.createRoleAssignment", 0)
    answers: list[httpx.Response] = []

    def change_on_first() -> None:
        with httpx.Client(base_url=first.api, trust_env=False, timeout=120, headers={
                "x-functions-key": first.function_key, "Authorization": f"Bearer {token}"}) as c:
            answers.append(c.patch(f"/registrations/{name}", content=json.dumps({"access": "writer"}),
                                   headers={"Content-Type": "application/merge-patch+json"}))

    holder = threading.Thread(target=change_on_first, daemon=True)
    holder.start()
    try:
        wait_for(lambda: lt.stats()["calls"].get("arm.createRoleAssignment", 0) > before, 60,
                 "the first change to reach its role assignment", interval=0.05)
        with httpx.Client(base_url=second.api, trust_env=False, timeout=120, headers={
                "x-functions-key": second.function_key, "Authorization": f"Bearer {token}"}) as c:
            refused = c.patch(f"/registrations/{name}", content=json.dumps({"displayName": "From second"}),
                              headers={"Content-Type": "application/merge-patch+json"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["type"].endswith(":in-progress") and int(refused.headers["retry-after"]) >= 1
    finally:
        lt.set_faults({"latencyMs": 80})
        holder.join(timeout=120)
    assert [a.status_code for a in answers] == [200], [a.text for a in answers]
    after = until_done(second, token, "PATCH", f"/registrations/{name}",
                       content=json.dumps({"displayName": "From second"}),
                       headers={"Content-Type": "application/merge-patch+json"})
    assert after[-1] == 200, after
    row = recorded(lt, name)
    assert not row["lease_holder"] and "dicom-access:writer" in json.loads(row["tags"])
    assert json.loads(row["fields"])["displayName"] == "From second"
