"""Who may call: real tokens from the local tenant, validated by the API itself; app roles per operation;
requester isolation; the Easy Auth header; policy limits."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from registrations import auth, http
from registrations.auth import JwksCache
from registrations.problems import UpstreamUnavailable
from tests.support import (
    api_client, api_token, claims, client_credentials_token, easy_auth_principal, follow_authorize, json_of, problem,
    public_app, service, settings_override,
)


def resigned(tenant, token: str, **changes) -> str:
    """The same claims as a real token, changed and signed again with the tenant's real key."""
    return tenant.sign_token({**claims(token), **changes})


def refused(call, token: str) -> dict:
    """The problem a list_registrations call with this token gets: a 401 with a challenge."""
    response = call(http.list_registrations, token=token)
    body = problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    return body


def test_expired_token(call, tenant, tokens):
    now = int(time.time())
    body = refused(call, resigned(tenant, tokens["admin"], iat=now - 7200, nbf=now - 7200, exp=now - 3600))
    assert "expired" in body["detail"].lower()


def test_token_for_another_audience(call, tenant):
    graph_token = client_credentials_token(tenant, tenant.seed.admin_client.app_id, tenant.seed.admin_client.secret,
                                           "https://graph.microsoft.com/.default")
    assert "audience" in refused(call, graph_token)["detail"].lower()


def test_token_from_another_issuer(call, tenant, tokens):
    token = resigned(tenant, tokens["admin"], iss="https://login.example.org/other/v2.0")
    assert "issu" in refused(call, token)["detail"].lower()


def test_token_from_another_tenant(call, tenant, tokens):
    assert "tenant" in refused(call, resigned(tenant, tokens["admin"], tid="00000000-0000-0000-0000-000000000001"))[
        "detail"]


def test_token_with_a_bad_signature(call, tokens):
    header, payload, signature = tokens["admin"].split(".")
    forged_payload = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_payload["roles"] = ["Registrations.Admin", "Anything.Else"]
    forged = base64.urlsafe_b64encode(json.dumps(forged_payload).encode()).rstrip(b"=").decode()
    refused(call, f"{header}.{forged}.{signature}")
    refused(call, f"{header}.{payload}.{signature[:-6]}AAAAAA")


def test_none_algorithm_is_refused(call, tokens):
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    refused(call, f"{header}.{tokens['admin'].split('.')[1]}.")


def test_a_rotated_signing_key_is_picked_up(host, tenant):
    tenant.rotate_signing_key()
    token = api_token(tenant, tenant.seed.reader_client)
    with api_client(host, token) as client:
        assert client.get("/registrations").status_code == 200


def test_a_delegated_caller_through_a_portal(host, tenant):
    portal = tenant.seed.portal_client
    app = public_app(tenant, portal.app_id)
    flow = app.initiate_auth_code_flow([f"{tenant.seed.api.identifier_uri}/user_impersonation"],
                                       redirect_uri=portal.redirect_uri)
    result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(tenant, flow["auth_uri"]))
    with api_client(host, result["access_token"]) as person:
        created = person.post("/registrations", json=service("auth-delegated"))
        assert created.status_code == 201, created.text
        assert created.json()["requestedBy"] == tenant.seed.user.object_id
        assert person.delete("/registrations/auth-delegated").status_code == 200


# (operation, role) -> allowed?
MATRIX = {
    "create": {"admin": True, "requester": True, "reader": False},
    "list": {"admin": True, "requester": True, "reader": True},
    "get": {"admin": True, "requester": True, "reader": True},
    "config": {"admin": True, "requester": True, "reader": True},
    "delete": {"admin": True, "requester": True, "reader": False},
}


@pytest.mark.parametrize("role", ["admin", "requester", "reader"])
def test_each_role_for_each_operation(as_, role):
    name = f"auth-matrix-{role}"
    # The registration belongs to the caller when the caller may create, otherwise to the admin.
    owner = as_[role] if MATRIX["create"][role] else as_["admin"]
    calls = {
        "create": lambda: as_[role].post("/registrations", json=service(name)),
        "list": lambda: as_[role].get("/registrations"),
        "get": lambda: as_[role].get(f"/registrations/{name}"),
        "config": lambda: as_[role].get(f"/registrations/{name}/config/json"),
        "delete": lambda: as_[role].delete(f"/registrations/{name}"),
    }
    if not MATRIX["create"][role]:
        assert owner.post("/registrations", json=service(name)).status_code == 201
    for operation, call in calls.items():
        response = call()
        if MATRIX[operation][role]:
            assert response.status_code in (200, 201), (operation, response.text)
        else:
            assert response.status_code == 403, (operation, response.text)
            problem = response.json()
            assert problem["type"].endswith(":forbidden")
            assert "Registrations.Admin" in problem["requiredRoles"]
    owner.delete(f"/registrations/{name}")


def test_a_caller_without_any_role_is_403(call, tenant):
    # The product's own managed identity holds no role on the API.
    from azure.identity import ManagedIdentityCredential

    token = ManagedIdentityCredential().get_token(f"{tenant.seed.api.identifier_uri}/.default").token
    response = call(http.list_registrations, token=token)
    assert response.status_code == 403
    assert set(json_of(response)["requiredRoles"]) == {"Registrations.Admin", "Registrations.Read",
                                                       "Registrations.Request"}


def test_requesters_see_only_their_own(as_, tenant):
    assert as_["requester"].post("/registrations", json=service("auth-owned-by-a")).status_code == 201
    b = as_["requester_b"]
    assert b.get("/registrations/auth-owned-by-a").status_code == 404
    assert b.get("/registrations/auth-owned-by-a/config/json").status_code == 404
    assert b.delete("/registrations/auth-owned-by-a").status_code == 404
    assert "auth-owned-by-a" not in {r["name"] for r in b.get("/registrations").json()["value"]}
    # Creating the same name as someone else is a conflict, not a takeover.
    assert b.post("/registrations", json=service("auth-owned-by-a")).status_code == 409
    for seer in ("requester", "admin", "reader"):
        assert as_[seer].get("/registrations/auth-owned-by-a").status_code == 200, seer
    listed = {r["name"]: r for r in as_["requester"].get("/registrations").json()["value"]}
    assert listed["auth-owned-by-a"]["requestedBy"] == tenant.seed.requester_client.object_id
    assert as_["requester"].delete("/registrations/auth-owned-by-a").status_code == 200


def test_a_forged_principal_header_is_ignored_without_easy_auth(host, tokens, caplog):
    forged = {"X-MS-CLIENT-PRINCIPAL": easy_auth_principal("forged-oid", ["Registrations.Admin"])}
    with caplog.at_level(logging.WARNING, logger="registrations.auth"):
        with api_client(host, None) as anonymous:
            assert anonymous.get("/registrations", headers=forged).status_code == 401
        with api_client(host, tokens["reader"]) as reader:
            # The token says Read; the header's Admin claim changes nothing.
            response = reader.post("/registrations", json=service("auth-forged"), headers=forged)
            assert response.status_code == 403
    assert any("suspicious" in record.getMessage() for record in caplog.records)


def test_the_principal_header_is_trusted_when_easy_auth_is_on(host):
    principal = {"X-MS-CLIENT-PRINCIPAL": easy_auth_principal("11111111-2222-3333-4444-555555555555",
                                                              ["Registrations.Admin"])}
    with settings_override(WEBSITE_AUTH_ENABLED="True"), api_client(host, None) as client:
        response = client.post("/registrations", json=service("auth-easy"), headers=principal)
        assert response.status_code == 201, response.text
        assert response.json()["requestedBy"] == "11111111-2222-3333-4444-555555555555"
        assert client.delete("/registrations/auth-easy", headers=principal).status_code == 200


TENANT_CLAIM = "http://schemas.microsoft.com/identity/claims/tenantid"


@pytest.mark.parametrize("auth_typ, claims", [
    ("google", {}),
    ("github", {"tid": "ignored"}),
    ("aad", {TENANT_CLAIM: "00000000-0000-0000-0000-000000000001"}),
    ("aad", {"tid": "00000000-0000-0000-0000-000000000001"}),
])
def test_easy_auth_trusts_only_entra_principals_of_this_tenant(host, auth_typ, claims):
    principal = {"X-MS-CLIENT-PRINCIPAL": easy_auth_principal("11111111-2222-3333-4444-555555555555",
                                                              ["Registrations.Admin"], auth_typ=auth_typ, **claims)}
    with settings_override(WEBSITE_AUTH_ENABLED="True"), api_client(host, None) as client:
        response = client.get("/registrations", headers=principal)
    assert response.status_code == 401, response.text


def test_easy_auth_accepts_a_principal_of_this_tenant(host, tenant):
    principal = {"X-MS-CLIENT-PRINCIPAL": easy_auth_principal("11111111-2222-3333-4444-555555555555",
                                                              ["Registrations.Read"],
                                                              **{TENANT_CLAIM: tenant.tenant_id})}
    with settings_override(WEBSITE_AUTH_ENABLED="True"), api_client(host, None) as client:
        assert client.get("/registrations", headers=principal).status_code == 200
    with settings_override(WEBSITE_AUTH_ENABLED=None), api_client(host, None) as client:
        assert client.get("/registrations", headers=principal).status_code == 401


def test_policy_limits_for_requesters(as_):
    requester, admin = as_["requester"], as_["admin"]
    with settings_override(REQUESTER_ACCESS=json.dumps({"managed": ["reader"]})):
        denied = requester.post("/registrations", json=service("auth-policy-admin", access="admin"))
        assert denied.status_code == 403 and denied.json()["type"].endswith(":policy")
        assert denied.json()["allowedAccess"] == ["reader"]
        assert admin.post("/registrations", json=service("auth-policy-admin", access="admin")).status_code == 201
        admin.delete("/registrations/auth-policy-admin")

    with settings_override(MAX_REGISTRATIONS_PER_REQUESTER="2"):
        for index in range(2):
            assert requester.post("/registrations", json=service(f"auth-quota-{index}")).status_code == 201
        over = requester.post("/registrations", json=service("auth-quota-2"))
        assert over.status_code == 403 and over.json()["limit"] == 2
        # A replay of an existing registration is not a new one.
        assert requester.post("/registrations", json=service("auth-quota-0")).status_code == 200
        for index in range(2):
            requester.delete(f"/registrations/auth-quota-{index}")

    with settings_override(ALLOWED_REDIRECT_HOSTS="*.contoso.org,localhost"):
        body = {"type": "public", "name": "auth-hosts", "displayName": "Hosts", "dicomService": "managed",
                "platform": "spa", "redirectUris": ["https://viewer.fabrikam.org/cb"]}
        refused_host = admin.post("/registrations", json=body)
        assert refused_host.status_code == 403 and "fabrikam" in refused_host.json()["detail"]
        body["redirectUris"] = ["https://viewer.contoso.org/cb", "http://localhost:3000/cb"]
        assert admin.post("/registrations", json=body).status_code == 201
        admin.delete("/registrations/auth-hosts")


def test_a_create_refused_after_it_reserved_its_name_gives_the_name_and_the_count_back(as_, tenant):
    """The name is reserved (row inserted and counted) in the create's first round trip, beside the reads that
    decide whether it may go on; a request those reads refuse leaves no row and no count behind, and the name
    is free at once. Breaks if the refusal path forgets to give the reservation back."""
    requester = as_["requester"]

    def recorded() -> tuple[set[str], int]:
        rows = tenant.registry_rows()
        return ({r["RowKey"] for r in rows if r["RowKey"].startswith("reg:")},
                sum(int(r["count"]) for r in rows if r["RowKey"].startswith("req:")))

    names, counted = recorded()
    ghost = "0badc0de-0000-4000-8000-000000000000"
    refused = requester.post("/registrations", json=service("auth-given-back", secretReaders=[ghost]))
    assert refused.status_code == 422 and ghost in refused.json()["detail"], refused.text
    assert recorded() == (names, counted)
    assert requester.post("/registrations", json=service("auth-given-back")).status_code == 201
    assert recorded() == (names | {"reg:auth-given-back"}, counted + 1)
    assert requester.delete("/registrations/auth-given-back").status_code == 200
    assert recorded() == (names, counted)


# ------------------------------------------------------------------------------------ the signing key cache
class KeySource:
    """What the authority publishes, as JwksCache sees it: kid -> key, counted fetches, optional blocking."""

    def __init__(self, *kids: str) -> None:
        self.keys = {kid: f"key-{kid}" for kid in kids}
        self.fetches = 0
        self.release: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self) -> dict:
        self.fetches += 1
        self.entered.set()
        if self.release is not None:
            assert self.release.wait(10)
        return dict(self.keys)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(source: KeySource, clock: FakeClock | None = None) -> JwksCache:
    return JwksCache(None, fetch=source, clock=clock or FakeClock())  # type: ignore[arg-type]


def test_known_kids_never_wait_for_a_refresh():
    source = KeySource("known")
    keys = cache(source)
    assert keys.key("known") == "key-known"
    source.release = threading.Event()
    source.entered.clear()
    refreshing = threading.Thread(target=keys.key, args=("rolled-over",))
    refreshing.start()
    assert source.entered.wait(5)
    started = time.monotonic()
    assert keys.key("known") == "key-known"  # while the refresh for the new kid is still on the wire
    assert time.monotonic() - started < 5  # the refresh is held for 10 s
    source.release.set()
    refreshing.join(5)


class CountingClock(FakeClock):
    """Counts its readings: JwksCache reads the clock once as a lookup starts (under its lock), so the count
    says how many lookups have looked at the cache."""

    def __init__(self) -> None:
        super().__init__()
        self.readings = 0
        self.changed = threading.Condition()

    def __call__(self) -> float:
        with self.changed:
            self.readings += 1
            self.changed.notify_all()
        return self.now


def test_one_refresh_at_a_time_serves_every_waiting_request():
    source, clock = KeySource("known"), CountingClock()
    keys = cache(source, clock)
    keys.key("known")
    source.keys["new"] = "key-new"
    source.release = threading.Event()
    before = clock.readings
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(keys.key, "new") for _ in range(8)]
        assert source.entered.wait(5)
        # Every lookup has found the refresh in flight (the fetch is held) before the keys come back.
        with clock.changed:
            assert clock.changed.wait_for(lambda: clock.readings >= before + 8, 5), clock.readings
        source.release.set()
        assert [f.result(5) for f in futures] == ["key-new"] * 8
    assert source.fetches == 2  # the first load and one refresh


def test_unknown_kids_refresh_at_most_every_five_seconds():
    source, clock = KeySource("known"), FakeClock()
    keys = cache(source, clock)
    keys.key("known")
    assert keys.key("made-up-1") is None and source.fetches == 2
    clock.now += 1
    assert keys.key("made-up-2") is None and source.fetches == 2  # too soon: not fetched again
    clock.now += 4
    source.keys["made-up-2"] = "key-2"
    assert keys.key("made-up-2") == "key-2" and source.fetches == 3


def test_a_kid_not_found_is_looked_for_again_after_five_minutes():
    source, clock = KeySource("known"), FakeClock()
    keys = cache(source, clock)
    assert keys.key("published-late") is None
    source.keys["published-late"] = "key-late"
    clock.now += 60
    assert keys.key("published-late") is None and source.fetches == 1  # remembered as missing
    clock.now += 241
    assert keys.key("published-late") == "key-late" and source.fetches == 2


def test_a_full_refresh_every_day_drops_withdrawn_keys():
    source, clock = KeySource("old", "current"), FakeClock()
    keys = cache(source, clock)
    assert keys.key("old") == "key-old"
    del source.keys["old"]
    clock.now += 23 * 3600
    assert keys.key("old") == "key-old" and source.fetches == 1
    clock.now += 3600
    assert keys.key("old") is None and keys.key("current") == "key-current" and source.fetches == 2


def test_a_failed_fetch_is_a_503_and_is_not_repeated_at_once():
    source, clock = KeySource("known"), FakeClock()
    failures = []

    def failing() -> dict:
        failures.append(1)
        raise auth._unavailable("jwks", 500, "status 500")

    keys = JwksCache(None, fetch=failing, clock=clock)  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable) as raised:
            keys.key("known")
        assert raised.value.status == 503 and raised.value.headers["Retry-After"]
    assert len(failures) == 1
    keys._fetch = source
    clock.now += 5
    assert keys.key("known") == "key-known"


def test_answers_that_are_not_a_key_set_are_upstream_unavailable():
    def answering(status: int, body: bytes):
        response = requests.Response()
        response.status_code, response._content = status, body
        return type("Session", (), {"get": lambda self, url, **kw: response})()

    for status, body in [(200, b"<html>sign-in page</html>"), (404, b"{}"), (200, b"[1, 2]")]:
        with pytest.raises(UpstreamUnavailable):
            auth._get_json(answering(status, body), "discovery", "https://login.example/x", True)

    def unreachable(url, **kw):
        raise requests.ConnectionError("refused")

    with pytest.raises(UpstreamUnavailable) as raised:
        auth._get_json(type("Session", (), {"get": staticmethod(unreachable)})(), "jwks", "https://x/keys", True)
    assert raised.value.extensions["upstream"]["operation"] == "jwks"


@pytest.mark.parametrize("operation, status", [("entra.discovery", 500), ("entra.keys", 503)])
def test_the_authority_failing_is_a_503_not_a_500(host, tenant, tokens, operation, status):
    # A fresh runtime has no keys yet, so the first call needs the authority.
    with settings_override():
        tenant.set_faults({"failures": [{"operation": operation, "nth": 1, "status": status}]})
        try:
            with api_client(host, tokens["reader"]) as client:
                response = client.get("/registrations")
        finally:
            tenant.set_faults({})
    assert response.status_code == 503, response.text
    assert response.json()["type"].endswith(":upstream-unavailable")
    assert response.headers["retry-after"]


def test_an_unreachable_authority_is_a_503(host, tokens):
    with settings_override(AZURE_AUTHORITY_HOST="https://127.0.0.1:9"), api_client(host, tokens["reader"]) as client:
        response = client.get("/registrations")
    assert response.status_code == 503, response.text
    assert response.json()["upstream"]["service"] == "entra"
