"""Fail-closed self-service (issue 17): what a caller holding only Registrations.Request tried, each refused
before anything is written. Every test here failed on the main branch before the fix it names."""

from __future__ import annotations

import base64
import json
import time

import jwt

from tests.support import (api_client, claims, confidential_app, create, easy_auth_principal,
                           follow_authorize, objects_named, secret_client, service, settings_override)


def nothing_made(tenant, name: str) -> bool:
    return not any(objects_named(tenant, name).values())


# ------------------------------------------------------------------------ principals a request names
def test_a_secret_reader_that_does_not_exist_is_a_422_at_once_and_writes_nothing(as_, tenant):
    """Before: retried as replication lag for the whole time budget, then a 502 after a dozen ARM writes."""
    missing = "0b944de3-e0fc-4774-a49a-b135213725ef"
    before = tenant.stats()
    started = time.monotonic()
    response = as_["requester"].post("/registrations", json=service(
        "fc-ghost-reader", secretReaders=[tenant.seed.reader_client.object_id, missing]))
    elapsed = time.monotonic() - started
    after = tenant.stats()
    assert response.status_code == 422, response.text
    # Looked up once, not waited out as replication lag: the tenant saw one lookup, and the answer came long
    # before the 60 s budget (the bound leaves room for a busy machine).
    assert after["calls"]["graph.getByIds"] - before["calls"].get("graph.getByIds", 0) == 1, after["calls"]
    assert elapsed < 10, elapsed
    problem = response.json()
    assert problem["type"].endswith(":validation") and missing in problem["detail"]
    assert [e["loc"] for e in problem["errors"]] == [["secretReaders", 1]]
    assert nothing_made(tenant, "fc-ghost-reader")
    assert writes_between(before, after) == []


def writes_between(before: dict, after: dict) -> list[str]:
    """Operations of the local tenant called in between that change something (reads and tokens left out)."""
    reads = ("get", "list", "token", "authorize", "discovery", "keys")
    return sorted(op for op, n in after["calls"].items() if n != before["calls"].get(op, 0)
                  and not op.split(".", 1)[1].startswith(reads))


def test_a_change_naming_a_secret_reader_that_does_not_exist_is_a_422(as_, tenant):
    body = service("fc-put-reader")
    create(as_["requester"], body)
    try:
        missing = "5d6059b6-368d-45f8-91e1-8e07d485f1d0"
        answer = as_["requester"].put("/registrations/fc-put-reader", json={**body, "secretReaders": [missing]})
        assert answer.status_code == 422 and missing in answer.json()["detail"], answer.text
        assert not [r for r in tenant.state()["roleAssignments"] if r["properties"]["principalId"] == missing]
    finally:
        as_["requester"].delete("/registrations/fc-put-reader")


def test_a_secret_reader_must_be_a_principal_not_an_application(as_, tenant):
    app_object_id = tenant.seed.reader_client.app_object_id  # an application's object id, not its principal's
    response = as_["requester"].post("/registrations", json=service("fc-app-reader", secretReaders=[app_object_id]))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["msg"].startswith(f"{app_object_id} is of type application")
    assert nothing_made(tenant, "fc-app-reader")


def refused_by_policy(response) -> dict:
    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["type"].endswith(":policy"), problem
    return problem


def invalid(response) -> dict:
    assert response.status_code == 422, response.text
    return response.json()


# ----------------------------------------------------------------------------------- defaults that refuse
def test_requesters_get_reader_only_when_requester_access_is_unset(as_, tenant):
    """Before: REQUESTER_ACCESS unset ({}) let a requester ask for admin (DICOM Data Owner)."""
    for access in ("admin", "writer"):
        problem = refused_by_policy(as_["requester"].post("/registrations", json=service(
            f"fc-{access}", access=access)))
        assert problem["allowedAccess"] == ["reader"] and "REQUESTER_ACCESS" in problem["detail"]
        assert nothing_made(tenant, f"fc-{access}")


def test_a_requesters_delegated_client_needs_allowed_redirect_hosts(as_, tenant):
    """Before: with ALLOWED_REDIRECT_HOSTS unset, a requester could point a client anywhere."""
    bodies = [
        {"type": "public", "name": "fc-spa", "displayName": "SPA", "dicomService": "managed", "platform": "spa",
         "redirectUris": ["https://evil.example.net/cb"]},
        {"type": "confidential", "name": "fc-web", "displayName": "Web", "dicomService": "managed",
         "redirectUris": ["https://evil.example.net/signin-oidc"]},
    ]
    for body in bodies:
        problem = refused_by_policy(as_["requester"].post("/registrations", json=body))
        assert problem["setting"] == "ALLOWED_REDIRECT_HOSTS" and "ALLOWED_REDIRECT_HOSTS" in problem["detail"]
        assert nothing_made(tenant, body["name"])


def test_custom_schemes_only_in_documented_native_forms_or_when_allowed(as_, api, tenant):
    """Before: `com.evil.app://evil.com/cb` and `msal{any}://` passed even with ALLOWED_REDIRECT_HOSTS set."""
    def mobile(name: str, uri: str) -> dict:
        return {"type": "public", "name": name, "displayName": "App", "dicomService": "managed",
                "platform": "mobile", "redirectUris": [uri]}

    with settings_override(ALLOWED_REDIRECT_HOSTS="viewer.contoso.org"):
        problem = refused_by_policy(as_["requester"].post("/registrations", json=mobile(
            "fc-scheme", "com.evil.app://evil.com/cb")))
        assert "ALLOWED_REDIRECT_SCHEMES" in problem["detail"] and problem["allowedRedirectSchemes"] == []
        # msal{client id}://auth names an application id the request cannot own yet: refused for everyone.
        invalid(as_["requester"].post("/registrations", json=mobile(
            "fc-msal", "msalb4c8f9e1-6ac8-4b39-a3c1-0c1c4c8d9e2f://auth")))
        invalid(api.post("/registrations", json=mobile("fc-msal", "msal1234://auth")))
        assert nothing_made(tenant, "fc-scheme") and nothing_made(tenant, "fc-msal")
    # Admins are bound too: an unknown custom scheme is refused until ALLOWED_REDIRECT_SCHEMES names it.
    refused_by_policy(api.post("/registrations", json=mobile("fc-scheme", "com.contoso.viewer://cb")))
    with settings_override(ALLOWED_REDIRECT_SCHEMES="com.contoso.viewer"):
        made = create(api, mobile("fc-scheme", "com.contoso.viewer://cb"))
        assert made["redirectUris"] == ["com.contoso.viewer://cb"]
    api.delete("/registrations/fc-scheme")
    # The documented forms need no setting.
    for name, uri in [("fc-ios", "msauth.com.contoso.viewer://auth"),
                      ("fc-android", "msauth://com.contoso.viewer/Xo8WBi6jzSxKDVR4drqm84yr9iU%3D")]:
        assert create(api, mobile(name, uri))["redirectUris"] == [uri]
        api.delete(f"/registrations/{name}")


# ------------------------------------------------------------------------------------------------ input
def test_schemes_and_hosts_are_normalised_before_any_azure_call(as_, api, tenant):
    """Before: `HTTPS://EVIL.COM` and `http://LOCALHOST` passed validation, then failed at Graph (502)."""
    made = create(api, {"type": "public", "name": "fc-case", "displayName": "Viewer", "dicomService": "managed",
                        "platform": "spa", "redirectUris": ["HTTPS://Viewer.Example.ORG/Auth", "http://LOCALHOST:8400/cb"]})
    assert made["redirectUris"] == ["https://viewer.example.org/Auth", "http://localhost:8400/cb"]
    api.delete("/registrations/fc-case")
    # The allowed-hosts check sees the normalised host, and two spellings of one URI are one URI.
    with settings_override(ALLOWED_REDIRECT_HOSTS="viewer.contoso.org"):
        problem = refused_by_policy(as_["requester"].post("/registrations", json={
            "type": "public", "name": "fc-case", "displayName": "V", "dicomService": "managed", "platform": "spa",
            "redirectUris": ["HTTPS://EVIL.COM/cb"]}))
        assert "'evil.com'" in problem["detail"]
    dup = invalid(api.post("/registrations", json={
        "type": "public", "name": "fc-case", "displayName": "V", "dicomService": "managed", "platform": "spa",
        "redirectUris": ["https://viewer.example.org/a", "HTTPS://VIEWER.example.org/a"]}))
    assert "unique" in dup["detail"]
    assert nothing_made(tenant, "fc-case")


def test_booleans_and_numbers_are_not_coerced(api, tenant):
    """Before: `"autoRotate": "true"`, `"lifetimeDays": "30"` and `"lifetimeDays": true` were taken."""
    for extra, where in [({"autoRotate": "true"}, "autoRotate"), ({"autoRotate": 1}, "autoRotate"),
                         ({"credential": {"kind": "secret", "lifetimeDays": "30"}}, "lifetimeDays"),
                         ({"credential": {"kind": "secret", "lifetimeDays": True}}, "lifetimeDays"),
                         ({"credential": {"kind": "secret", "lifetimeDays": 30.0}}, "lifetimeDays")]:
        problem = invalid(api.post("/registrations", json=service("fc-strict", **extra)))
        assert any(where in map(str, e["loc"]) for e in problem["errors"]), problem
    assert nothing_made(tenant, "fc-strict")


def test_json_bodies_must_be_utf8(api, tenant):
    """Before: a body labelled `charset=latin-1` was accepted (and read as UTF-8)."""
    body = json.dumps(service("fc-latin", displayName="Caf\u00e9")).encode("latin-1")
    for content_type in ("application/json; charset=latin-1", "application/json;charset=\"ISO-8859-1\""):
        answer = api.post("/registrations", content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 400 and "UTF-8" in answer.json()["detail"], answer.text
    ok = api.post("/registrations", content=json.dumps(service("fc-latin")).encode(),
                  headers={"Content-Type": "application/json; charset=UTF-8"})
    assert ok.status_code == 201, ok.text
    api.delete("/registrations/fc-latin")


# ------------------------------------------------------------------------------------------------ names
def test_a_name_a_dicom_service_reserves_is_for_its_resource_registration_only(as_, api, tenant):
    """Before: a requester could take `dicom-oss-api` (the oss target's resourceRegistration), after which
    every create for that target failed until an administrator removed it."""
    before = objects_named(tenant, "dicom-oss-api")  # an earlier test may have made the real one
    problem = refused_by_policy(as_["requester"].post("/registrations", json=service("dicom-oss-api")))
    assert "reserved" in problem["detail"] and "'oss'" in problem["detail"]
    refused_by_policy(api.post("/registrations", json=service("dicom-oss-api")))  # admins: as type resource only
    assert objects_named(tenant, "dicom-oss-api") == before


# ---------------------------------------------------------------------------------------------- consent
def test_a_requesters_client_gets_no_admin_consent_so_a_users_code_never_becomes_a_token(as_, tenant):
    """Before: a requester's confidential client got tenant-wide consent for Dicom.ReadWrite, so any user who
    followed its authorize link sent a code to the requester's URI, redeemed as a DICOM token with no prompt."""
    redirect = "https://portal.contoso.org/signin-oidc"
    with settings_override(ALLOWED_REDIRECT_HOSTS="portal.contoso.org"):
        made = create(as_["requester"], {"type": "confidential", "name": "fc-phish", "displayName": "Portal",
                                         "dicomService": "managed", "redirectUris": [redirect],
                                         # the seeded user may sign in: what stops the code is consent alone
                                         "signInGroups": [tenant.seed.group.object_id]})
    try:
        config = made["config"]
        sp_id = made["servicePrincipalId"]
        assert not [g for g in tenant.state()["oauth2PermissionGrants"] if g["clientId"] == sp_id]
        secret = secret_client(tenant).get_secret(config["clientSecret"]["keyVaultSecretName"]).value
        app = confidential_app(tenant, config["clientId"], secret)
        flow = app.initiate_auth_code_flow(config["scopes"], redirect_uri=redirect)
        # The user meets a consent prompt naming the app (a person decides; nothing is granted silently),
        # and without their own consent no code comes back.
        asked = tenant.sign_in(flow["auth_uri"])
        assert asked.page == "consent" and "Portal" in asked.html and asked.landing is None
        answer = follow_authorize(tenant, flow["auth_uri"], consent=False)
        assert "code" not in answer and answer["error"] == "consent_required", answer
        assert "AADSTS65004" in answer["error_description"]
        result = app.acquire_token_by_auth_code_flow(flow, answer)
        assert "access_token" not in result, result
    finally:
        as_["requester"].delete("/registrations/fc-phish")


# ----------------------------------------------------------------------------------------------- claims
def test_a_token_with_a_malformed_claim_is_a_401_never_a_500(host, tenant, tokens):
    """Before: a token whose `iss` was a list (or `kid` a list, `roles` a string) made the API answer 500. The
    tokens are signed with the tenant's own key, so only their shape is wrong."""
    valid = claims(tokens["reader"])
    keys = tenant._core.signing_keys  # test harness: mint what Entra never would, with the tenant's own key

    def sign(payload: dict, kid=None) -> str:
        """RS256 by hand: PyJWT itself refuses to encode a list `iss` or `kid`."""
        def part(value: dict) -> bytes:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")
        header = {"typ": "JWT", "alg": "RS256", "kid": kid or keys.current_kid}
        signed = part(header) + b"." + part(payload)
        rsa = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
        signature = rsa.sign(signed, rsa.prepare_key(keys._private(keys.current_kid)))
        return (signed + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()

    forged = [sign({**valid, **change}) for change in (
        {"iss": [valid["iss"]]}, {"roles": "Registrations.Admin"}, {"roles": [["Registrations.Admin"]]},
        {"oid": 42}, {"tid": [valid["tid"]]}, {"azp": {"id": "x"}})] + [sign(valid, kid=[keys.current_kid])]
    for token in forged:
        with api_client(host, token) as client:
            answer = client.get("/registrations")
        assert answer.status_code == 401, (claims(token), answer.status_code, answer.text)
        assert answer.json()["type"].endswith(":unauthenticated")
    with api_client(host, sign(valid)) as client:  # the same token, well formed, is taken
        assert client.get("/registrations").status_code == 200


def test_an_easy_auth_principal_of_odd_shape_or_for_another_audience_is_a_401(host, tenant):
    """Before: a role claim whose value was a list gave a 500, and the principal's audience was never
    compared with the API's."""
    oid = "11111111-2222-3333-4444-555555555555"

    def header(principal: dict) -> dict[str, str]:
        return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode()}

    base = json.loads(base64.b64decode(easy_auth_principal(oid, ["Registrations.Read"])))
    odd = [dict(base, claims=base["claims"] + [{"typ": "roles", "val": ["Registrations.Admin"]}]),
           dict(base, claims={"typ": "roles", "val": "Registrations.Admin"}), dict(base, role_typ=["roles"]),
           [base]]
    with settings_override(WEBSITE_AUTH_ENABLED="True"), api_client(host, None) as client:
        for principal in odd:
            answer = client.get("/registrations", headers=header(principal))
            assert answer.status_code == 401, (principal, answer.text)
        elsewhere = easy_auth_principal(oid, ["Registrations.Read"], aud="api://another-app")
        assert client.get("/registrations", headers={"X-MS-CLIENT-PRINCIPAL": elsewhere}).status_code == 401
        ours = easy_auth_principal(oid, ["Registrations.Read"], aud=tenant.seed.api.app_id)
        assert client.get("/registrations", headers={"X-MS-CLIENT-PRINCIPAL": ours}).status_code == 200


def test_a_delegated_client_signs_in_only_the_groups_it_names(as_, tenant):
    """Every public and confidential client's service principal requires assignment; the groups a request
    names (checked to be groups first) are assigned, so even a consented client reaches only their members."""
    redirect = "https://portal.contoso.org/signin-oidc"

    def portal(name: str, **extra) -> dict:
        return {"type": "confidential", "name": name, "displayName": "Portal", "dicomService": "managed",
                "redirectUris": [redirect], **extra}

    group, user = tenant.seed.group.object_id, tenant.seed.user.object_id
    with settings_override(ALLOWED_REDIRECT_HOSTS="portal.contoso.org", REQUESTER_ADMIN_CONSENT="true"):
        wrong = invalid(as_["requester"].post("/registrations", json=portal("fc-groups", signInGroups=[user])))
        assert wrong["errors"][0]["loc"] == ["signInGroups", 0] and "user" in wrong["errors"][0]["msg"]
        invalid(as_["requester"].post("/registrations", json=portal(
            "fc-groups", signInGroups=["84b80893-8749-40a3-97b7-68513b600544"])))
        assert nothing_made(tenant, "fc-groups")
        members = create(as_["requester"], portal("fc-groups", signInGroups=[group]))
        nobody = create(as_["requester"], portal("fc-nobody"))
    try:
        assert members["signInGroups"] == [group]
        principals = {s["id"]: s for s in tenant.state()["servicePrincipals"]}
        assert principals[members["servicePrincipalId"]]["appRoleAssignmentRequired"] is True
        assert principals[nobody["servicePrincipalId"]]["appRoleAssignmentRequired"] is True

        def sign_in(made: dict):
            config = made["config"]
            secret = secret_client(tenant).get_secret(config["clientSecret"]["keyVaultSecretName"]).value
            app = confidential_app(tenant, config["clientId"], secret)
            return app, app.initiate_auth_code_flow(config["scopes"], redirect_uri=redirect)

        app, flow = sign_in(members)  # the seeded user is the group's member
        result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(tenant, flow["auth_uri"]))
        assert "access_token" in result, result
        assert claims(result["access_token"])["oid"] == user

        _, flow = sign_in(nobody)  # consented, but nobody is assigned: Entra shows AADSTS50105, sends no code
        stopped = tenant.sign_in(flow["auth_uri"])
        assert stopped.page == "error" and stopped.error_code == 50105 and stopped.landing is None, stopped
    finally:
        for name in ("fc-groups", "fc-nobody"):
            as_["requester"].delete(f"/registrations/{name}")
