"""A newcomer's rough edges, through HTTP: what README promises about defaults, errors that say where a field
goes and which formats apply, one path per field whatever the type, a usable msal section and an honest
pending reason."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import msal
import pytest

from registrations.kinds import PLANS
from registrations.views import FORMATS
from tests.support import PROBLEM_TYPE_BASE, ca_session, create, secret_client, service, wait_for

WEB = ["https://portal.example.org/signin-oidc"]


@pytest.fixture(scope="module", autouse=True)
def delete_what_this_module_made(api):
    """So a list's first page elsewhere in the session holds what its own test made."""
    yield
    for registration in api.get("/registrations", params={"top": "100"}).json()["value"]:
        if registration["name"].startswith("newcomer-"):
            api.delete(f"/registrations/{registration['name']}")


def made(api, body: dict) -> dict:
    """Created now, or by another module of the session before (a replay)."""
    response = api.post("/registrations", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def refused(response, status: int = 422, kind: str = "validation") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == PROBLEM_TYPE_BASE + kind
    return problem


def test_a_credential_without_kind_is_a_secret(api):
    made = create(api, service("newcomer-nokind", credential={"lifetimeDays": 10}))
    assert made["credential"]["kind"] == "secret"
    ends = datetime.fromisoformat(made["credential"]["endDateTime"].replace("Z", "+00:00"))
    assert abs(ends - (datetime.now(timezone.utc) + timedelta(days=10))) < timedelta(hours=1)
    assert "clientSecret" in made["config"]


@pytest.mark.parametrize("body,field,hint", [
    (service("newcomer-misplaced", lifetimeDays=10), "lifetimeDays", 'belongs inside credential: {"credential"'),
    (service("newcomer-misplaced", issuer="https://issuer.example.org"), "issuer", "belongs inside credential"),
    ({"type": "confidential", "name": "newcomer-misplaced", "displayName": "x", "dicomService": "managed",
      "redirectUris": WEB, "access": "reader"}, "access", "applies to type service only"),
    ({"type": "public", "name": "newcomer-misplaced", "displayName": "x", "dicomService": "managed",
      "redirectUris": WEB, "credential": {"kind": "secret"}}, "credential",
     "applies to type confidential, service only"),
])
def test_a_misplaced_field_says_where_it_goes(api, body, field, hint):
    problem = refused(api.post("/registrations", json=body))
    (error,) = problem["errors"]
    assert error["loc"] == [field] and error["type"] == "extra_forbidden"
    assert hint in error["msg"] and hint in problem["detail"]


def test_a_registration_field_inside_credential_says_so(api):
    problem = refused(api.post("/registrations", json=service("newcomer-inside",
                                                              credential={"kind": "secret", "access": "reader"})))
    (error,) = problem["errors"]
    assert error["loc"] == ["credential", "access"]
    assert "beside credential, not inside it" in error["msg"]


@pytest.mark.parametrize("field,bad,loc", [
    ("redirectUris", {"redirectUris": ["ftp://viewer.example.org/cb"]}, ["redirectUris"]),
    ("redirectUris", {"redirectUris": []}, ["redirectUris"]),
    ("displayName", {"displayName": ""}, ["displayName"]),
    ("name", {"name": "Bad_Name"}, ["name"]),
])
def test_one_field_has_one_path_whatever_the_type(api, field, bad, loc):
    bodies = {
        "public": {"type": "public", "platform": "spa"},
        "mobile": {"type": "public", "platform": "mobile"},
        "confidential": {"type": "confidential"},
    }
    for kind, extra in bodies.items():
        body = {"name": "newcomer-paths", "displayName": "Paths", "dicomService": "managed",
                "redirectUris": WEB, **extra, **bad}
        problem = refused(api.post("/registrations", json=body))
        assert [error["loc"] for error in problem["errors"]] == [loc], (kind, problem["errors"])
        assert problem["detail"].startswith(".".join(loc) + ":"), problem["detail"]


def test_a_credential_field_has_the_same_path_on_service_and_confidential(api):
    for body in (service("newcomer-cpath", credential={"kind": "certificate", "lifetimeDays": 0}),
                 {"type": "confidential", "name": "newcomer-cpath", "displayName": "x", "dicomService": "managed",
                  "redirectUris": WEB, "credential": {"lifetimeDays": 0}}):
        problem = refused(api.post("/registrations", json=body))
        assert [error["loc"] for error in problem["errors"]] == [["credential", "lifetimeDays"]]
    problem = refused(api.post("/registrations", json=service("newcomer-cpath", credential={"lifetimeDays": 5000})))
    assert [error["loc"] for error in problem["errors"]] == [["credential", "lifetimeDays"]]


@pytest.fixture(scope="module")
def one_of_each(api) -> dict[str, str]:
    made(api, {"type": "resource", "name": "dicom-oss-api", "displayName": "DICOM OSS API",
               "dicomService": "oss"})
    create(api, service("newcomer-fmt-service"))
    create(api, {"type": "public", "name": "newcomer-fmt-public", "displayName": "x", "dicomService": "managed",
                 "redirectUris": ["https://viewer.example.org/cb"]})
    create(api, {"type": "confidential", "name": "newcomer-fmt-web", "displayName": "x", "dicomService": "managed",
                 "redirectUris": WEB})
    return {"resource": "dicom-oss-api", "service": "newcomer-fmt-service", "public": "newcomer-fmt-public",
            "confidential": "newcomer-fmt-web"}


def test_formats_that_do_not_apply_are_a_422_naming_those_that_do(api, one_of_each):
    every_format = tuple(FORMATS)
    for kind, name in one_of_each.items():
        formats = PLANS[kind].formats
        assert set(formats) <= set(every_format)
        for fmt in every_format:
            response = api.get(f"/registrations/{name}/config/{fmt}")
            if fmt in formats:
                assert response.status_code == 200, (kind, fmt, response.text)
                assert response.text.strip() not in ("", "{}"), (kind, fmt)
            else:
                problem = refused(response)
                assert problem["allowedFormats"] == list(formats)
                assert problem["errors"][0]["loc"] == ["path", "format"]
                assert all(f in problem["detail"] for f in formats), problem["detail"]
    refused(api.get("/registrations/dicom-oss-api/config/msal"))


def test_the_msal_section_is_usable_as_given_against_a_non_microsoft_authority(api, tenant, one_of_each):
    """Fed to msal as it is (only the CA is added), it gets a token; without instance_discovery=False msal
    would ask login.microsoftonline.com about the local host and fail offline."""
    registration = create(api, service("newcomer-msal"))
    msal_config = api.get("/registrations/newcomer-msal/config/msal").json()
    assert msal_config["kwargs"]["instance_discovery"] is False
    secret = secret_client(tenant).get_secret(registration["credential"]["keyVaultSecretName"]).value
    app = getattr(msal, msal_config["application"])(client_credential=secret, http_client=ca_session(tenant.ca_file),
                                                     **msal_config["kwargs"])
    deadline = time.monotonic() + 30
    while True:
        result = getattr(app, msal_config["acquire"])(msal_config["scopes"])
        if "access_token" in result or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "access_token" in result, result
    public = api.get(f"/registrations/{one_of_each['public']}/config/msal").json()
    assert public["kwargs"]["instance_discovery"] is False


def test_a_microsoft_authority_keeps_msal_instance_discovery():
    from registrations import views

    for host in ("login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn"):
        section = views._msal("client_credentials", "app", f"https://{host}/tenant", ["x/.default"], "secret")
        assert "instance_discovery" not in section["kwargs"]


def test_the_pending_reason_gives_the_registrations_real_age(api, tenant):
    """After a rotation the newest secret is young while the registration is not; the reason said "(0 s old)"."""
    made = create(api, service("newcomer-age"))
    # Ages are measured on real clocks: the registration must be a second old before its secret is rotated.
    born = datetime.fromisoformat(made["createdDateTime"].replace("Z", "+00:00")).timestamp()
    wait_for(lambda: time.time() >= born + 1.1, 10, "the registration to be a second old", interval=0.05)
    tenant.set_faults({"replicationDelayMs": 20000})
    try:
        rotated = api.post("/registrations/newcomer-age/credentials")
        assert rotated.status_code == 201, rotated.text
        response = api.get("/registrations/newcomer-age/verification")
    finally:
        tenant.set_faults({})
    assert response.status_code == 202, response.text
    reason = response.json()["reason"]
    created = int(reason.split("created ")[1].split(" s ago")[0])
    assert created >= 1, reason
    assert "newest secret or certificate is" in reason, reason


@pytest.mark.slow(8)
def test_an_open_source_client_is_made_under_make_runs_replication_delay(api, tenant, one_of_each):
    """make run's tenant hides new objects for 3 s; the app role assignment's look for a lost write listed
    the new service principal's assignments, got 404 and failed the create (the tour's ingest-job)."""
    tenant.set_faults({"replicationDelayMs": 3000})
    try:
        response = api.post("/registrations", json=service("newcomer-oss-writer", "oss", access="writer"))
    finally:
        tenant.set_faults({})
    assert response.status_code == 201, response.text
