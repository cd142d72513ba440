"""End to end with a real DICOMweb server (Orthanc behind the local DICOM service fronts): a registration's
returned configuration, and nothing else, gets an msal token that dicomweb-client uses to store a pydicom-made
instance (STOW-RS), find it (QIDO-RS) and read back the same bytes (WADO-RS); the service refuses what the
registration's role does not allow."""

from __future__ import annotations

import io
import json
import uuid

import pydicom
import pytest
import requests

from tests.support import (allow_origin as _allow_origin, arm_call as _arm, arm_put as _arm_put, confidential_app,
                           create, deploy_oss_dicom, dicom_instance, dicomweb, secret_client, service,
                           settings_override, until_done)

DICOM_DATA_READER = "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a"


def token_for(tenant, config: dict) -> str:
    """What a daemon does with its configuration: the secret from Key Vault, msal's client credentials."""
    secret = secret_client(tenant).get_secret(config["clientSecret"]["keyVaultSecretName"]).value
    result = confidential_app(tenant, config["clientId"], secret).acquire_token_for_client(config["scopes"])
    assert "access_token" in result, result
    return result["access_token"]


def part10(ds) -> bytes:
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds)
    return out.getvalue()


def test_a_managed_writer_stores_finds_and_reads_back_the_same_bytes_and_a_reader_only_reads(api, tenant):
    writer = create(api, service("dicom-e2e-writer", access="writer"))["config"]
    reader = create(api, service("dicom-e2e-reader", access="reader"))["config"]
    base = writer["dicomService"]["baseUrl"]
    ds = dicom_instance("E2E^WRITER")

    stored = dicomweb(base, token_for(tenant, writer), tenant.ca_file)
    stored.store_instances([ds])
    found = stored.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
    assert [study["0020000D"]["Value"][0] for study in found] == [ds.StudyInstanceUID]
    got = stored.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert part10(got) == part10(ds)

    reading = dicomweb(reader["dicomService"]["baseUrl"], token_for(tenant, reader), tenant.ca_file)
    assert reading.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
    with pytest.raises(requests.HTTPError) as refused:
        reading.store_instances([dicom_instance("E2E^READER")])
    assert refused.value.response.status_code == 403


def test_a_removed_role_assignment_is_refused_by_the_service_and_by_verification(api, tenant):
    reg = create(api, service("dicom-e2e-removed", access="reader"))
    token = token_for(tenant, reg["config"])
    client = dicomweb(reg["config"]["dicomService"]["baseUrl"], token, tenant.ca_file)
    assert isinstance(client.search_for_studies(limit=1), list)
    verified = api.get("/registrations/dicom-e2e-removed/verification")
    assert verified.status_code == 200 and verified.json()["dataPlane"] == "ok", verified.text

    assignment = next(a for a in tenant.state()["roleAssignments"]
                      if a["properties"]["principalId"] == reg["servicePrincipalId"])
    _arm_delete(tenant, assignment["id"])
    with pytest.raises(requests.HTTPError) as refused:
        client.search_for_studies(limit=1)  # the same, still valid token
    assert refused.value.response.status_code == 403

    # young: the role may still be propagating, so "not yet"; later: a problem naming the missing role
    pending = api.get("/registrations/dicom-e2e-removed/verification")
    assert pending.status_code == 202 and "refuses the token's search (403)" in pending.json()["reason"]
    with settings_override(VERIFY_PROPAGATION_SECONDS="0"):
        problem = api.get("/registrations/dicom-e2e-removed/verification")
    assert problem.status_code == 409, problem.text
    data_plane = next(c for c in problem.json()["checks"] if c["name"] == "data plane")
    assert not data_plane["ok"] and "DICOM Data Reader" in data_plane["detail"] \
        and DICOM_DATA_READER in data_plane["detail"]


def test_the_data_plane_check_can_be_turned_off_where_the_service_is_unreachable(api, tenant):
    import json
    import socket

    create(api, service("dicom-e2e-unreachable", access="reader"))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    targets = json.loads(tenant.app_settings()["DICOM_SERVICES"])
    targets["managed"]["url"] = f"https://127.0.0.1:{port}"
    with settings_override(DICOM_SERVICES=json.dumps(targets)):
        unreachable = api.get("/registrations/dicom-e2e-unreachable/verification")
        assert unreachable.status_code == 503, unreachable.text
        assert unreachable.json()["upstream"]["service"] == "dicom"
        with settings_override(VERIFY_DATA_PLANE="false"):
            skipped = api.get("/registrations/dicom-e2e-unreachable/verification")
    assert skipped.status_code == 200 and skipped.json()["dataPlane"] == "skipped", skipped.text
    assert "data plane" not in {c["name"] for c in skipped.json()["checks"]}


def test_open_source_writer_and_reader_work_through_their_app_roles(api, tenant):
    made = api.post("/registrations", json={"type": "resource", "name": "dicom-oss-api",
                                            "displayName": "DICOM OSS API", "dicomService": "oss"})
    assert made.status_code in (200, 201), made.text  # another module may have made it already
    deploy_oss_dicom(tenant, made.json())
    writer = create(api, service("dicom-e2e-oss-writer", "oss", access="writer"))["config"]
    reader = create(api, service("dicom-e2e-oss-reader", "oss", access="reader"))["config"]
    ds = dicom_instance("E2E^OSS")
    writing = dicomweb(writer["dicomService"]["baseUrl"], token_for(tenant, writer), tenant.ca_file)
    writing.store_instances([ds])
    reading = dicomweb(reader["dicomService"]["baseUrl"], token_for(tenant, reader), tenant.ca_file)
    got = reading.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert part10(got) == part10(ds)
    with pytest.raises(requests.HTTPError) as refused:
        reading.store_instances([dicom_instance("E2E^OSS^READER")])
    assert refused.value.response.status_code == 403
    for name in ("dicom-e2e-oss-writer", "dicom-e2e-oss-reader"):
        verified = api.get(f"/registrations/{name}/verification")
        assert verified.status_code == 200 and verified.json()["dataPlane"] == "ok", verified.text


def _arm_delete(tenant, assignment_id: str) -> None:
    response = _arm(tenant, "DELETE", assignment_id)
    assert response.status_code == 200, response.text


def test_a_service_clients_dicomweb_client_configuration_stores_and_reads_back(api, tenant):
    """The dicomweb-client format names everything the snippet needs; used as it says (msal for the token, the
    Key Vault secret, DICOMwebClient with a session carrying it), it stores and reads back an instance."""
    create(api, service("dicom-e2e-snippet", access="writer"))
    response = api.get("/registrations/dicom-e2e-snippet/config/dicomweb-client")
    assert response.status_code == 200, response.text
    settings = response.json()
    snippet = settings["python"]
    compile(snippet, "snippet.py", "exec")  # valid Python
    for value in (settings["url"], settings["clientId"], settings["authority"], *settings["tokenScopes"]):
        assert repr(value) in snippet or value in snippet
    assert "acquire_token_for_client" in snippet and "DICOMwebClient(url=" in snippet
    name = next(line.split(".get_secret(")[1].split(")")[0].strip("'\"") for line in snippet.splitlines()
                if ".get_secret(" in line)
    secret = secret_client(tenant).get_secret(name).value
    result = confidential_app(tenant, settings["clientId"], secret).acquire_token_for_client(settings["tokenScopes"])
    client = dicomweb(settings["url"], result["access_token"], tenant.ca_file)
    ds = dicom_instance("E2E^SNIPPET")
    client.store_instances([ds])
    assert part10(client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)) == part10(ds)


def test_a_spa_gets_an_ohif_configuration_whose_values_get_a_token_the_service_accepts(api, tenant):
    import msal

    from tests.support import ca_session, follow_authorize

    viewer = "https://viewer.example.org"
    create(api, {"type": "public", "name": "dicom-e2e-viewer", "displayName": "Viewer", "dicomService": "managed",
                 "platform": "spa", "redirectUris": [f"{viewer}/callback"],
                 "signInGroups": [tenant.seed.group.object_id]})  # the seeded user's group may sign in
    response = api.get("/registrations/dicom-e2e-viewer/config/ohif")
    assert response.status_code == 200, response.text
    ohif = response.json()
    oidc, source = ohif["oidc"][0], ohif["dataSources"][0]["configuration"]
    assert oidc["response_type"] == "code" and oidc["scope"].split()[:2] == ["openid", "offline_access"]
    assert oidc["revokeAccessTokenOnSignout"] is False and oidc["loadUserInfo"] is False
    assert "post_logout_redirect_uri" not in oidc  # only one redirect URI: nothing else is registered to return to
    assert source["qidoRoot"] == source["wadoRoot"] and source["qidoRoot"].endswith("/v2")
    assert ohif["defaultDataSourceName"] == ohif["dataSources"][0]["sourceName"]

    # As in Azure, the signed-in user needs a DICOM role on the service, and the service must allow the
    # viewer's origin in its CORS configuration.
    _arm_put(tenant, f"{tenant.seed.dicom_resource_id}/providers/Microsoft.Authorization/roleAssignments/"
                     f"{uuid.uuid4()}", {"properties": {
                         "roleDefinitionId": f"/subscriptions/{tenant.seed.subscription_id}/providers/"
                                             f"Microsoft.Authorization/roleDefinitions/{DICOM_DATA_READER}",
                         "principalId": tenant.seed.user.object_id, "principalType": "User"}})
    _allow_origin(tenant, ohif["corsOrigin"])

    # msal's PKCE flow (what oidc-client-ts does in the viewer), with only the OHIF values
    authority = oidc["authority"].rstrip("/").removesuffix("/v2.0")
    browser = ca_session(tenant.ca_file, {"Origin": viewer})
    app = msal.PublicClientApplication(oidc["client_id"], authority=authority, instance_discovery=False,
                                       http_client=browser, token_cache=msal.TokenCache())
    flow = app.initiate_auth_code_flow(scopes=[s for s in oidc["scope"].split() if s not in ("openid", "offline_access")],
                                       redirect_uri=oidc["redirect_uri"])  # msal adds the OIDC scopes itself
    assert "code_challenge_method=S256" in flow["auth_uri"]
    result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(tenant, flow["auth_uri"]))
    assert "access_token" in result, result
    client = dicomweb(source["qidoRoot"], result["access_token"], tenant.ca_file, Origin=viewer)
    assert isinstance(client.search_for_studies(limit=1), list)

    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    with ca_session(tenant.ca_file) as http:
        ours = http.options(f"{source['qidoRoot']}/studies", headers={**preflight, "Origin": viewer})
        other = http.options(f"{source['qidoRoot']}/studies", headers={**preflight, "Origin": "https://evil.example"})
    assert ours.status_code == 204 and ours.headers["Access-Control-Allow-Origin"] == viewer
    assert "Access-Control-Allow-Origin" not in other.headers


def test_formats_that_do_not_apply_say_which_do(api):
    create(api, service("dicom-e2e-noohif", access="reader"))
    response = api.get("/registrations/dicom-e2e-noohif/config/ohif")
    assert response.status_code == 422, response.text
    assert "ohif" in response.json()["detail"]


def test_the_readme_tour_ends_by_storing_and_reading_back_a_study_with_the_returned_script(api, tenant, tmp_path):
    """The tour's last step, literally: the dicomweb-client format's script, run in a fresh process with the
    environment `make run` prints (the local managed identity reads the secret; the local CA is trusted), stores
    pydicom's bundled CT_small.dcm and reads it back."""
    import os
    import subprocess
    import sys

    import certifi
    from pydicom.data import get_testdata_file

    create(api, service("study-writer", access="writer"))
    assert api.get("/registrations/study-writer/verification").status_code == 200
    script = tmp_path / "study_writer.py"
    script.write_text(api.get("/registrations/study-writer/config/dicomweb-client").json()["python"])
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_text(open(certifi.where()).read() + open(tenant.ca_file).read())
    env = {**os.environ, "IDENTITY_ENDPOINT": tenant.identity_endpoint, "IDENTITY_HEADER": tenant.identity_header,
           "REQUESTS_CA_BUNDLE": str(bundle)}
    study = get_testdata_file("CT_small.dcm")
    run = subprocess.run([sys.executable, str(script), study], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    sop = pydicom.dcmread(study).SOPInstanceUID
    assert f"stored and read back {sop} same pixels: True" in run.stdout


def test_a_federated_clients_script_reads_a_fresh_assertion_whenever_msal_asks(api, tenant, tmp_path):
    """The dicomweb-client format's script for a federated credential: msal gets a function that reads the
    workload's token file (AKS renews it there), not a token read once, which would expire; run with the file
    in AZURE_FEDERATED_TOKEN_FILE, it searches the DICOM service."""
    import os
    import subprocess
    import sys

    import certifi

    subject = "system:serviceaccount:imaging:federated-script"
    create(api, service("dicom-e2e-federated", credential={"kind": "federated", "issuer": tenant.federated_issuer,
                                                          "subject": subject}))
    assert api.get("/registrations/dicom-e2e-federated/verification").status_code == 200
    script = tmp_path / "federated.py"
    script.write_text(api.get("/registrations/dicom-e2e-federated/config/dicomweb-client").json()["python"])
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(tenant.federated_assertion(subject))
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_text(open(certifi.where()).read() + open(tenant.ca_file).read())
    env = {**os.environ, "AZURE_FEDERATED_TOKEN_FILE": str(token_file), "REQUESTS_CA_BUNDLE": str(bundle)}
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "DeprecationWarning" not in run.stderr, run.stderr[-2000:]  # msal's, for an assertion read once


def test_spa_origins_are_merged_into_the_service_cors_and_leave_when_no_registration_needs_them(api, tenant):
    """DICOM_CORS_FOR_SPA: a SPA registration on the managed service adds its origin to the service's CORS
    configuration (merged: what an operator set stays); deleting one removes the origin only when no other
    registration needs it."""
    def spa(name: str, uri: str) -> dict:
        return {"type": "public", "name": name, "displayName": name, "dicomService": "managed", "platform": "spa",
                "redirectUris": [uri]}

    def origins() -> set[str]:
        resource = _arm(tenant, "GET", tenant.seed.dicom_resource_id, "2024-03-31")
        return set(resource.json()["properties"]["corsConfiguration"]["origins"])

    operator, a, b = "https://ops.example.org", "https://a.example.org", "https://b.example.org"
    _allow_origin(tenant, operator)
    with settings_override(DICOM_CORS_FOR_SPA="true"):
        create(api, spa("cors-a", f"{a}/callback"))
        create(api, spa("cors-a-too", f"{a}/other"))
        create(api, spa("cors-b", f"{b}/callback"))
        assert {operator, a, b} <= origins()
        first = api.delete("/registrations/cors-a")
        assert first.status_code == 200 and "corsOrigin" not in first.text and a in origins()  # cors-a-too
        last = api.delete("/registrations/cors-a-too")
        assert {"kind": "corsOrigin", "id": a} in last.json()["removed"], last.text
        assert a not in origins() and {operator, b} <= origins()
        preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
        from tests.support import ca_session
        with ca_session(tenant.ca_file) as http:
            url = f"{tenant.dicom_url}/v2/studies"
            assert http.options(url, headers={**preflight, "Origin": b}).headers["Access-Control-Allow-Origin"] == b
            assert "Access-Control-Allow-Origin" not in http.options(url, headers={**preflight, "Origin": a}).headers
        assert api.delete("/registrations/cors-b").status_code == 200


def test_cors_follows_a_change_of_a_spas_redirect_uris(api, tenant):
    """Issue 23, "CORS follows a change": with DICOM_CORS_FOR_SPA, a PATCH (or PUT) of a SPA's redirect URIs
    merges the new origins into the DICOM service's CORS and removes those nothing else needs, as create and
    delete do; each change is answered only once the service's update (a long-running ARM operation) is done,
    so the viewer at its new origin passes the preflight at once.
    Mutation: make `DicomServices.put` apply the new properties at once and answer 200 without an operation,
    then a second PUT before the first finished is never refused; the test's check of the tenant's 409 while an
    update runs fails."""
    def spa(name: str, *uris: str) -> dict:
        return {"type": "public", "name": name, "displayName": name, "dicomService": "managed", "platform": "spa",
                "redirectUris": list(uris)}

    def origins() -> set[str]:
        resource = _arm(tenant, "GET", tenant.seed.dicom_resource_id, "2024-03-31")
        return set(resource.json()["properties"]["corsConfiguration"]["origins"])

    from tests.support import ca_session

    a, b, c = "https://change-a.example.org", "https://change-b.example.org", "https://change-c.example.org"
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    with settings_override(DICOM_CORS_FOR_SPA="true"), ca_session(tenant.ca_file) as http:
        create(api, spa("cors-change", f"{a}/callback"))
        create(api, spa("cors-change-keeps-c", f"{c}/callback"))
        assert {a, c} <= origins()
        moved = api.patch("/registrations/cors-change", content=json.dumps({"redirectUris": [f"{b}/callback"]}),
                          headers={"Content-Type": "application/merge-patch+json"})
        assert moved.status_code == 200, moved.text
        assert b in origins() and a not in origins() and c in origins()
        url = f"{tenant.dicom_url}/v2/studies"
        assert http.options(url, headers={**preflight, "Origin": b}).headers["Access-Control-Allow-Origin"] == b
        # A move onto an origin another registration needs removes nothing that one needs.
        body = {**spa("cors-change", f"{c}/viewer"), "displayName": "cors-change"}
        put = api.put("/registrations/cors-change", json=body)
        assert put.status_code == 200, put.text
        assert b not in origins() and c in origins()
        # The service is updated as a long-running operation: a PUT while one runs is refused with 409.
        resource = _arm(tenant, "GET", tenant.seed.dicom_resource_id, "2024-03-31").json()
        first = _arm(tenant, "PUT", tenant.seed.dicom_resource_id, "2024-03-31", json=resource)
        second = _arm(tenant, "PUT", tenant.seed.dicom_resource_id, "2024-03-31", json=resource)
        assert (first.status_code, second.status_code) == (202, 409), (first.text, second.text)
        until_done(tenant, first.headers["Azure-AsyncOperation"])
        for name in ("cors-change", "cors-change-keeps-c"):
            assert api.delete(f"/registrations/{name}").status_code == 200
