"""The local DICOM services: Orthanc behind an HTTPS front that checks tokens, data actions and CORS as Azure
Health Data Services (managed) and the open-source DICOM server check them, with unmodified clients (msal,
dicomweb-client, requests) and instances made with pydicom. Orthanc must be installed: without it these tests
fail (the front answers 503 saying how to install it), they never skip."""

from __future__ import annotations

import time
import uuid
from urllib.parse import quote

import pytest
import requests

from tests.support import (MANAGED_AUDIENCE, ca_session, client_credentials_token, dicom_instance, dicomweb,
                           settings_override)

DICOM_DATA_OWNER = "58a3b984-7adf-4c20-983a-32417c86fbc8"
DICOM_DATA_READER = "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a"
API_VERSION = "2024-03-31"


@pytest.fixture(scope="module")
def lt():
    from localtenant import LocalTenant

    with LocalTenant.start() as tenant:
        yield tenant


def arm(lt, method: str, path: str, **kwargs) -> requests.Response:
    """ARM as the product's managed identity (RBAC Administrator on the group, CORS editor on the service)."""
    from azure.identity import ManagedIdentityCredential

    with settings_override(IDENTITY_ENDPOINT=lt.identity_endpoint, IDENTITY_HEADER=lt.identity_header):
        token = ManagedIdentityCredential().get_token("https://management.azure.com/.default").token
    session = ca_session(lt.ca_file, {"Authorization": f"Bearer {token}"})
    return session.request(method, f"{lt.arm_endpoint}{path}", params={"api-version": API_VERSION}, **kwargs)


def grant(lt, principal_id: str, role: str) -> str:
    assignment = f"{lt.seed.dicom_resource_id}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
    response = arm(lt, "PUT", assignment, json={"properties": {
        "roleDefinitionId": f"/subscriptions/{lt.seed.subscription_id}/providers/Microsoft.Authorization/"
                            f"roleDefinitions/{role}", "principalId": principal_id,
        "principalType": "ServicePrincipal"}})
    assert response.status_code == 201, response.text
    return assignment


def managed_token(lt, client) -> str:
    return client_credentials_token(lt, client.app_id, client.secret, f"{MANAGED_AUDIENCE}/.default")


def test_no_token_and_bad_tokens_are_401_with_a_bearer_challenge_and_no_body(lt):
    base = f"{lt.dicom_url}/v2"
    with ca_session(lt.ca_file) as http:
        bare = http.get(f"{base}/studies")
        assert bare.status_code == 401 and bare.headers["WWW-Authenticate"] == "Bearer" and bare.content == b""
        now = int(time.time())
        forged = {"iss": f"https://sts.windows.net/{lt.tenant_id}/", "tid": lt.tenant_id, "oid": str(uuid.uuid4()),
                  "iat": now, "nbf": now, "exp": now + 600, "ver": "1.0"}
        for claims, says in [({**forged, "aud": "https://graph.microsoft.com"}, "audience"),
                             ({**forged, "aud": MANAGED_AUDIENCE, "exp": now - 10}, "expired"),
                             ({**forged, "aud": MANAGED_AUDIENCE, "tid": str(uuid.uuid4())}, "tenant")]:
            response = http.get(f"{base}/studies", headers={"Authorization": f"Bearer {lt.sign_token(claims)}"})
            assert response.status_code == 401 and response.content == b""
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer error="invalid_token"') and says in challenge.lower(), challenge
        tampered = lt.sign_token({**forged, "aud": MANAGED_AUDIENCE})[:-4] + "AAAA"
        assert http.get(f"{base}/studies", headers={"Authorization": f"Bearer {tampered}"}).status_code == 401


def test_data_actions_follow_azure_rbac_on_the_service_with_the_replication_delay(lt):
    client = lt.seed.admin_client  # any service principal with a secret: it holds no DICOM role yet
    token = managed_token(lt, client)
    ds = dicom_instance()
    dicom = dicomweb(f"{lt.dicom_url}/v2", token, lt.ca_file)
    with pytest.raises(requests.HTTPError) as refused:
        dicom.search_for_studies(limit=1)
    assert refused.value.response.status_code == 403 and refused.value.response.text == "Authorization failed."

    lt.set_faults({"replicationDelayMs": 1500})
    try:
        reader = grant(lt, client.object_id, DICOM_DATA_READER)
        with pytest.raises(requests.HTTPError) as not_yet:
            dicom.search_for_studies(limit=1)
        assert not_yet.value.response.status_code == 403  # the assignment has not applied yet
        lt.advance_clock(1.6)  # replication delays run on the tenant's clock (reset after the test)
    finally:
        lt.set_faults({})
    assert isinstance(dicom.search_for_studies(limit=1), list)
    with pytest.raises(requests.HTTPError) as no_store:
        dicom.store_instances([ds])
    assert no_store.value.response.status_code == 403

    grant(lt, client.object_id, DICOM_DATA_OWNER)
    dicom.store_instances([ds])
    found = dicom.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
    assert [study["0020000D"]["Value"][0] for study in found] == [ds.StudyInstanceUID]
    got = dicom.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert got.SOPInstanceUID == ds.SOPInstanceUID and got.PixelData == ds.PixelData
    assert arm(lt, "DELETE", reader).status_code == 200


def test_cors_follows_the_service_resource_written_through_arm(lt):
    path = lt.seed.dicom_resource_id
    before = arm(lt, "GET", path)
    assert before.status_code == 200, before.text
    resource = before.json()
    assert resource["properties"]["corsConfiguration"]["origins"] == []
    assert resource["properties"]["serviceUrl"] == lt.dicom_url

    preflight = {"Origin": "https://viewer.example.org", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}
    with ca_session(lt.ca_file) as http:
        closed = http.options(f"{lt.dicom_url}/v2/studies", headers=preflight)
        assert closed.status_code == 204 and "Access-Control-Allow-Origin" not in closed.headers

        # allowCredentials together with the * origin is refused, as the portal refuses it
        wild = {**resource, "properties": {"corsConfiguration": {"origins": ["*"], "allowCredentials": True}}}
        assert arm(lt, "PUT", path, json=wild).json()["error"]["code"] == "InvalidCorsConfiguration"

        resource["properties"]["corsConfiguration"] = {"origins": ["https://viewer.example.org"],
                                                       "headers": ["authorization", "content-type"],
                                                       "methods": ["GET", "POST", "OPTIONS"], "maxAge": 600,
                                                       "allowCredentials": False}
        written = arm(lt, "PUT", path, json=resource)
        assert written.status_code == 202, written.text
        assert written.json()["properties"]["provisioningState"] == "Accepted"
        operation = written.headers["Azure-AsyncOperation"]
        assert operation.startswith(f"{lt.arm_endpoint}/subscriptions/{lt.seed.subscription_id}/providers/"
                                    "Microsoft.HealthcareApis/locations/")
        operation = operation[len(lt.arm_endpoint):].split("?")[0]
        opened = http.options(f"{lt.dicom_url}/v2/studies", headers=preflight)
        assert "Access-Control-Allow-Origin" not in opened.headers  # not before the operation completes
        assert arm(lt, "GET", path).json()["properties"]["provisioningState"] == "Updating"
        busy = arm(lt, "PUT", path, json=resource)
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "Conflict"
        assert arm(lt, "GET", operation).json()["status"] == "Requested"
        lt.advance_clock(lt.settings()["dicomServiceUpdateMs"] / 1000)
        done = arm(lt, "GET", operation)
        assert done.json()["status"] == "Succeeded", done.text
        assert arm(lt, "GET", path).json()["properties"]["provisioningState"] == "Succeeded"

        opened = http.options(f"{lt.dicom_url}/v2/studies", headers=preflight)
        assert opened.status_code == 204
        assert opened.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
        assert opened.headers["Access-Control-Max-Age"] == "600"
        other = http.options(f"{lt.dicom_url}/v2/studies", headers={**preflight, "Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
        # an actual (refused) request from the allowed origin still carries the header, so the SPA can read 401
        actual = http.get(f"{lt.dicom_url}/v2/studies", headers={"Origin": "https://viewer.example.org"})
        assert actual.status_code == 401 and actual.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"


def test_a_reader_without_write_rights_cannot_edit_cors(lt):
    session = ca_session(lt.ca_file, {"Authorization": "Bearer " + client_credentials_token(
        lt, lt.seed.reader_client.app_id, lt.seed.reader_client.secret, "https://management.azure.com/.default")})
    response = session.put(f"{lt.arm_endpoint}{quote(lt.seed.dicom_resource_id)}", params={"api-version": API_VERSION},
                           json={"properties": {"corsConfiguration": {"origins": ["https://x.example"]}}})
    assert response.status_code == 403 and response.json()["error"]["code"] == "AuthorizationFailed"


def test_open_source_server_checks_its_audience_issuer_and_roles_json(lt):
    resource_app = str(uuid.uuid4())
    roles = {"roles": [{"name": "globalReader", "dataActions": ["read"], "notDataActions": [], "scopes": ["/"]},
                       {"name": "globalWriter", "dataActions": ["read", "write"], "notDataActions": [],
                        "scopes": ["/"]}]}
    with pytest.raises(ValueError):
        lt.configure_oss_dicom(audience=resource_app, authority=f"{lt.authority}/v2.0",
                               roles={"roles": [{"name": "x", "dataActions": ["everything"]}]})
    lt.configure_oss_dicom(audience=resource_app, authority=f"{lt.authority}/v2.0", roles=roles)
    now = int(time.time())
    claims = {"aud": resource_app, "iss": f"{lt.authority}/v2.0", "tid": lt.tenant_id, "oid": str(uuid.uuid4()),
              "iat": now, "nbf": now, "exp": now + 600, "ver": "2.0"}
    base = f"{lt.dicom_oss_url}/v2"
    reader = dicomweb(base, lt.sign_token({**claims, "roles": ["globalReader"]}), lt.ca_file)
    writer = dicomweb(base, lt.sign_token({**claims, "roles": ["globalWriter"]}), lt.ca_file)
    ds = dicom_instance()
    writer.store_instances([ds])
    assert reader.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
    with pytest.raises(requests.HTTPError) as refused:
        reader.store_instances([dicom_instance()])
    assert refused.value.response.status_code == 403
    with ca_session(lt.ca_file) as http:
        v1 = http.get(f"{base}/studies", headers={"Authorization": "Bearer " + lt.sign_token(
            {**claims, "iss": f"https://sts.windows.net/{lt.tenant_id}/", "roles": ["globalReader"]})})
        assert v1.status_code == 401  # the configured Authority is the v2 issuer
        managed = http.get(f"{base}/studies", headers={"Authorization": "Bearer " + lt.sign_token(
            {**claims, "aud": MANAGED_AUDIENCE, "roles": ["globalReader"]})})
        assert managed.status_code == 401


def test_orthanc_is_installed():
    """CI installs it (.ci/install-orthanc): a machine without it fails here, with what to do, not skips."""
    from localtenant.dicom import orthanc

    try:
        orthanc.locate()
    except orthanc.OrthancMissing as missing:
        pytest.fail(str(missing))


def test_a_path_cannot_leave_the_dicomweb_root(lt):
    """Orthanc's own REST API sits beside its DICOMweb root: a token that may read DICOM data must not reach it."""
    grant(lt, lt.seed.requester_client.object_id, DICOM_DATA_READER)
    token = managed_token(lt, lt.seed.requester_client)
    with ca_session(lt.ca_file, {"Authorization": f"Bearer {token}"}) as http:
        assert http.get(f"{lt.dicom_url}/v2/studies").status_code == 200
        for path in ("/v2/../system", "/v2/%2e%2e/system", "/v2/studies/..%2f..%2fsystem", "/v2/a\\..\\system"):
            response = http.get(f"{lt.dicom_url}{path}")
            assert response.status_code == 404 and "Orthanc" not in response.text, (path, response.text)


def test_the_managed_service_takes_one_issuer_and_its_exact_audiences(lt):
    """The service's authenticationConfiguration names one authority (v1 issuer `https://sts.windows.net/{tid}/`)
    and two audiences, compared as written. Mutation: in `Front._authenticate` accept `issuer_v2` too, or compare
    audiences with `.lower().rstrip("/")`, and the v2-issued or re-cased token gets through (200, not 401)."""
    grant(lt, lt.seed.reader_client.object_id, DICOM_DATA_READER)
    now = int(time.time())
    claims = {"iss": f"https://sts.windows.net/{lt.tenant_id}/", "tid": lt.tenant_id,
              "oid": lt.seed.reader_client.object_id, "iat": now, "nbf": now, "exp": now + 600, "ver": "1.0"}
    cases = [({**claims, "aud": MANAGED_AUDIENCE}, 200), ({**claims, "aud": MANAGED_AUDIENCE + "/"}, 200),
             ({**claims, "aud": MANAGED_AUDIENCE.upper()}, 401),
             ({**claims, "aud": MANAGED_AUDIENCE, "iss": f"{lt.authority}/v2.0", "ver": "2.0"}, 401)]
    with ca_session(lt.ca_file) as http:
        for token_claims, status in cases:
            response = http.get(f"{lt.dicom_url}/v2/studies",
                                headers={"Authorization": f"Bearer {lt.sign_token(token_claims)}"})
            assert response.status_code == status, (token_claims, response.headers.get("WWW-Authenticate"))


def test_qido_limit_is_1_to_200_and_100_when_not_given(lt):
    """Conformance statement v2, "Supported search parameters": `limit` 1 >= x <= 200, defaulted to 100 (Orthanc
    itself takes any limit and answers every match without one). Mutation: drop the limit check in
    `Front._forward` and `limit=201` is answered 200 by Orthanc."""
    grant(lt, lt.seed.requester_client.object_id, DICOM_DATA_OWNER)
    token = managed_token(lt, lt.seed.requester_client)
    with ca_session(lt.ca_file, {"Authorization": f"Bearer {token}"}) as http:
        for limit in ("0", "201", "-1", "abc", "1.5"):
            refused = http.get(f"{lt.dicom_url}/v2/studies", params={"limit": limit})
            assert refused.status_code == 400, (limit, refused.text)
        for limit in ("1", "200"):
            assert http.get(f"{lt.dicom_url}/v2/studies", params={"limit": limit}).status_code in (200, 204)
        assert http.get(f"{lt.dicom_url}/v2/series", params=[("limit", "5"), ("limit", "6")]).status_code == 400
