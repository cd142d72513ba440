"""The HTTP functions called directly, as the Azure Functions Python samples test them: build the
func.HttpRequest the host would pass, call the function, assert on the func.HttpResponse's status, headers and
body. These are the parsing and error paths, which need no host; what the host adds (function keys, routing,
header and body limits) is tested through it, in tests/devhost and tests/e2e.

The `call` fixture applies the function app's settings for the session's local tenant; tokens are real ones
from that tenant. Every answer is kept for the session-wide checks (no secret leaks, response models)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from registrations import http
from registrations.kinds import PLANS
from registrations.views import FORMATS
from tests.support import http_functions, json_of, objects_named, problem, service, settings_override

FUNCTIONS = http_functions()  # function -> (method, route, auth level)
KEYED = [function for function, (_method, _route, level) in FUNCTIONS.items() if level != "anonymous"]
NAMED = [function for function in KEYED if "{name}" in FUNCTIONS[function][1]]
JSON = {"Content-Type": "application/json"}
BASE = {"name": "valid-name", "displayName": "Valid", "dicomService": "managed"}


def label(value) -> str | None:
    """A test id for a parameter: a function by its method and route, a query by its pairs."""
    if isinstance(value, dict):
        return "&".join(f"{k}={v}" for k, v in value.items())
    if callable(value) and value in FUNCTIONS:
        return "{} {}".format(*FUNCTIONS[value][:2])
    return None


@pytest.fixture(scope="module")
def registered(call, admin_token) -> Iterator[str]:
    """An existing registration, for the functions that take a name."""
    name = "functions-direct"
    made = call(http.create_registration, token=admin_token, json_body=service(name))
    assert made.status_code in (200, 201), made.get_body()
    yield name
    assert call(http.delete_registration, name, token=admin_token).status_code == 200


def credentials(call, token: str, name: str) -> list[dict]:
    response = call(http.list_credentials, name, token=token)
    assert response.status_code == 200, response.get_body()
    return json_of(response)["credentials"]


def test_only_health_and_the_documents_are_anonymous():
    """The tests below cover every keyed function; these are the ones that need no caller."""
    anonymous = {function for function in FUNCTIONS if function not in KEYED}
    assert anonymous == {http.health, http.openapi_v2, http.openapi_v3}
    assert len(KEYED) == 13 and len(NAMED) == 9


# ------------------------------------------------------------------------------------------- the body
MALFORMED = {
    "not-json": (b"{not json", "not valid JSON"),
    "too-deep": (("[" * 100_000 + "]" * 100_000)[:60_000].encode(), "nests too deeply"),
    "not-utf8": (b'{"name": "caf\xe9"}', "not UTF-8 (invalid byte at offset 13)"),
    "duplicate-key": (b'{"name": "a-b", "name": "c-d"}', "duplicate key 'name'"),
    "nan": (b'{"notes": NaN}', "NaN"),
    "infinity": (b'{"notes": Infinity}', "Infinity"),
    "minus-infinity": (b'{"notes": -Infinity}', "-Infinity"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_body_that_is_not_interchange_json_is_400_saying_why(call, admin_token, case):
    """JSON as RFC 8259 defines it for interchange: UTF-8, unique keys, no NaN or Infinity; and nesting that
    a parser survives."""
    raw, says = MALFORMED[case]
    body = problem(call(http.create_registration, token=admin_token, headers=JSON, body=raw), 400,
                   "malformed-request")
    assert says in body["detail"], body["detail"]


def test_a_body_over_64_kib_is_413_before_it_is_read(call, admin_token, tenant):
    before = len(tenant.state()["applications"])
    huge = json.dumps({**BASE, "type": "service", "access": "reader", "notes": "x" * 70_000}).encode()
    for raw in (huge, b"\xff" * (64 * 1024 + 1)):  # too large is said before anything else is looked at
        body = problem(call(http.create_registration, token=admin_token, headers=JSON, body=raw), 413,
                       "payload-too-large")
        assert str(64 * 1024) in body["detail"] and str(len(raw)) in body["detail"]
    assert len(tenant.state()["applications"]) == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/xml"])
def test_a_body_sent_as_another_content_type_is_400(call, admin_token, tenant, content_type):
    raw = json.dumps(service("functions-content-type")).encode()
    body = problem(call(http.create_registration, token=admin_token, headers={"Content-Type": content_type},
                        body=raw), 400, "malformed-request")
    assert "application/json" in body["detail"]
    assert not objects_named(tenant, "functions-content-type")["applications"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON", None])
def test_json_with_a_charset_or_no_content_type_is_read(call, admin_token, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    raw = json.dumps({**BASE, "type": "service"}).encode()  # read, then refused for what it says
    body = problem(call(http.create_registration, token=admin_token, headers=headers, body=raw), 422,
                   "validation")
    assert any(err["loc"] == ["access"] for err in body["errors"]), body["errors"]


@pytest.mark.parametrize("body,where", [
    ({**BASE, "type": "service"}, ["access"]),
    ({**BASE, "type": "service", "access": "root"}, ["access"]),
    ({**BASE, "type": "service", "access": "reader", "extra": 1}, ["extra"]),
    ({**BASE, "type": "public", "redirectUris": ["https://a.example.org/"], "credential": {"kind": "secret"}},
     ["credential"]),
    ({**BASE, "type": "confidential", "redirectUris": ["https://*.example.org/cb"]}, ["redirectUris"]),
    ({**BASE, "type": "confidential", "redirectUris": ["http://app.example.org/cb"]}, ["redirectUris"]),
    ({**BASE, "type": "confidential", "redirectUris": ["https://app.example.org/cb#frag"]}, ["redirectUris"]),
    ({**BASE, "type": "confidential", "redirectUris": [f"https://app.example.org/{i}" for i in range(21)]},
     ["redirectUris"]),
    ({**BASE, "type": "public", "platform": "spa", "redirectUris": ["javascript://alert(1)"]}, ["redirectUris"]),
    ({**BASE, "type": "service", "access": "reader", "name": "Bad_Name"}, ["name"]),
    ({**BASE, "type": "service", "access": "reader", "name": "dicom--x"}, ["name"]),
    ({**BASE, "type": "service", "access": "reader", "credential": {"kind": "secret", "lifetimeDays": 0}},
     ["credential", "lifetimeDays"]),
    ({**BASE, "type": "nonsense"}, []),
])
def test_invalid_bodies_are_422_with_locations(call, admin_token, tenant, body, where):
    before = len(tenant.state()["applications"])
    detail = problem(call(http.create_registration, token=admin_token, json_body=body), 422, "validation")
    if where:
        assert any(err["loc"][: len(where)] == where for err in detail["errors"]), detail["errors"]
    assert len(tenant.state()["applications"]) == before


def test_unknown_target_and_wrong_target_kind(call, admin_token):
    def post(body: dict):
        return call(http.create_registration, token=admin_token, json_body=body)

    detail = problem(post({**BASE, "type": "service", "access": "reader", "dicomService": "nowhere"}), 422)
    assert "managed" in detail["detail"] and "oss" in detail["detail"]
    detail = problem(post({**BASE, "type": "resource"}), 422)
    assert "open-source" in detail["detail"]


def test_rotation_takes_no_body(call, admin_token, registered):
    before = credentials(call, admin_token, registered)
    response = call(http.rotate_credential, registered, token=admin_token, json_body={"kind": "secret"})
    body = problem(response, 422, "validation")
    assert [err["loc"] for err in body["errors"]] == [["body"]]
    assert credentials(call, admin_token, registered) == before


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "clé", "a/b", "k;1"])
@pytest.mark.parametrize("function", [http.create_registration, http.rotate_credential], ids=label)
def test_a_bad_idempotency_key_is_422_and_changes_nothing(call, admin_token, tenant, registered, function,
                                                          key):
    before = (len(tenant.state()["applications"]), credentials(call, admin_token, registered))
    if function is http.create_registration:
        response = call(function, token=admin_token, headers={"Idempotency-Key": key},
                        json_body=service("functions-bad-key"))
    else:
        response = call(function, registered, token=admin_token, headers={"Idempotency-Key": key})
    body = problem(response, 422, "validation")
    assert [err["loc"] for err in body["errors"]] == [["header", "Idempotency-Key"]]
    assert (len(tenant.state()["applications"]), credentials(call, admin_token, registered)) == before


# ------------------------------------------------------------------------------------------ the query
@pytest.mark.parametrize("function,params,unknown", [
    # A misspelt filter must not list everything.
    (http.list_registrations, {"typ": "service"}, ["typ"]),
    (http.list_registrations, {"type": "service", "skip": "10", "orderby": "name"}, ["orderby", "skip"]),
    (http.get_registration, {"format": "env"}, ["format"]),
    (http.get_registration_config, {"fromat": "env"}, ["fromat"]),
    (http.list_credentials, {"top": "1"}, ["top"]),
    (http.expiring_report, {"day": "7"}, ["day"]),
    (http.create_registration, {"dryRun": "true"}, ["dryRun"]),
], ids=label)
def test_a_query_parameter_the_function_does_not_read_is_422(call, admin_token, registered, function, params,
                                                             unknown):
    name = registered if function in NAMED else None
    body = problem(call(function, name, token=admin_token, params=params), 422, "validation")
    assert body["errors"] == [{"loc": ["query", p], "msg": "unknown"} for p in unknown]
    assert all(p in body["detail"] for p in unknown)


def test_the_function_key_in_the_query_is_no_unknown_parameter(call, admin_token):
    # The platform accepts the function key as ?code=; by the time a function runs, the host has checked it.
    response = call(http.list_registrations, token=admin_token, params={"code": "a-function-key", "top": "1"})
    assert response.status_code == 200, response.get_body()


@pytest.mark.parametrize("function,parameter,value", [
    *[(http.list_registrations, "top", v) for v in ("0", "101", "ten", "-1", "1.5", "")],
    *[(http.list_registrations, "type", v) for v in ("services", "Service", "")],
    *[(http.expiring_report, "days", v) for v in ("0", "731", "soon", "-5", "")],
], ids=label)
def test_a_bad_query_value_is_422_naming_the_parameter(call, admin_token, registered, function, parameter,
                                                       value):
    name = registered if function in NAMED else None
    body = problem(call(function, name, token=admin_token, params={parameter: value}), 422, "validation")
    assert [err["loc"] for err in body["errors"]] == [["query", parameter]]
    assert parameter in body["detail"]


@pytest.mark.parametrize("function,params", [
    (http.list_registrations, {"top": "1"}), (http.list_registrations, {"top": "100"}),
    (http.expiring_report, {"days": "1"}), (http.expiring_report, {"days": "730"}),
], ids=label)
def test_the_bounds_of_each_query_value_are_accepted(call, admin_token, registered, function, params):
    name = registered if function in NAMED else None
    response = call(function, name, token=admin_token, params=params)
    assert response.status_code == 200, response.get_body()


@pytest.mark.parametrize("fmt", PLANS["service"].formats)  # `registered` is a service client: ohif is for SPAs
def test_each_configuration_format_answers_its_one_content_type(call, admin_token, registered, fmt):
    response = call(http.get_registration_config, registered, token=admin_token, route_params={"format": fmt})
    assert response.status_code == 200, response.get_body()
    assert response.mimetype == FORMATS[fmt].content_type.split(";")[0]


@pytest.mark.parametrize("fmt", ["yaml", "ENV", "json.", "%2e%2e"])
def test_an_unknown_configuration_format_is_422_naming_the_formats(call, admin_token, registered, fmt):
    body = problem(call(http.get_registration_config, registered, token=admin_token, route_params={"format": fmt}),
                   422, "validation")
    assert [err["loc"] for err in body["errors"]] == [["path", "format"]]
    assert all(name in body["detail"] for name in FORMATS)


# ------------------------------------------------------------------------------------------ the route
def test_unknown_registration_is_404(call, admin_token):
    problem(call(http.get_registration, "does-not-exist", token=admin_token), 404)
    problem(call(http.get_registration, "NOT_A_NAME", token=admin_token), 404)
    problem(call(http.delete_registration, "does-not-exist", token=admin_token), 404)


@pytest.mark.parametrize("name", ["NOT_A_NAME", "ab", "x" * 41, "-leading", "trailing-", "a--b", "a.b", "dé"])
@pytest.mark.parametrize("function", NAMED, ids=label)
def test_a_name_that_no_registration_can_have_is_404(call, admin_token, function, name):
    body = problem(call(function, name, token=admin_token), 404, "not-found")
    assert name in body["detail"]


def test_a_problem_names_the_request_path_and_echoes_the_correlation_id(call, admin_token):
    response = call(http.get_registration, "does-not-exist", token=admin_token,
                    headers={"x-correlation-id": "run-42.step:7"})
    body = problem(response, 404, "not-found")
    assert body["instance"] == "/api/registrations/does-not-exist"
    assert response.headers["x-correlation-id"] == "run-42.step:7"


# ----------------------------------------------------------------------------------------- the caller
@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "not.a.token",
                                           "Bearer not.a.token"])
@pytest.mark.parametrize("function", KEYED, ids=label)
def test_missing_and_bad_tokens_are_401_with_a_challenge(call, function, authorization):
    name = "valid-name" if function in NAMED else None
    response = call(function, name, headers={"Authorization": authorization} if authorization else {})
    problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_an_anonymous_caller_is_refused_before_its_request_is_read(call):
    for raw in (b"{not json", b"\xff" * (64 * 1024 + 1)):
        problem(call(http.create_registration, headers=JSON, body=raw), 401, "unauthenticated")
    problem(call(http.list_registrations, params={"top": "ten", "typ": "x"}), 401, "unauthenticated")
    problem(call(http.rotate_credential, "NOT_A_NAME", body=b"{}"), 401, "unauthenticated")


WRITES = [http.create_registration, http.put_registration, http.patch_registration, http.delete_registration,
          http.rotate_credential]


@pytest.mark.parametrize("function", WRITES, ids=label)
def test_a_caller_without_the_needed_app_role_is_403_and_changes_nothing(call, tokens, tenant, registered,
                                                                        function):
    before = credentials(call, tokens["admin"], registered)
    if function is http.create_registration:
        response = call(function, token=tokens["reader"], json_body=service("functions-forbidden"))
    elif function is http.put_registration:
        response = call(function, registered, token=tokens["reader"], json_body=service(registered, access="writer"))
    elif function is http.patch_registration:
        response = call(function, registered, token=tokens["reader"],
                        headers={"Content-Type": "application/merge-patch+json"}, body=b'{"access": "writer"}')
    else:
        response = call(function, registered, token=tokens["reader"])
    body = problem(response, 403, "forbidden")
    assert set(body["requiredRoles"]) == {"Registrations.Admin", "Registrations.Request"}
    assert not objects_named(tenant, "functions-forbidden")["applications"]
    assert credentials(call, tokens["admin"], registered) == before  # not rotated, not deleted


# ----------------------------------------------------------------------------------------- health
def test_health_needs_no_token(call):
    for headers in ({}, {"Authorization": "Bearer not.a.token"}):
        response = call(http.health, headers=headers)
        assert response.status_code == 200 and response.mimetype == "application/json"
        assert json_of(response) == {"status": "ok"}


def test_health_discloses_no_configuration(call):
    assert json_of(call(http.health)) == {"status": "ok"}
    with settings_override(MAX_REGISTRATIONS_PER_REQUESTER="ninety-nine"):
        broken = call(http.health)
    assert broken.status_code == 500 and broken.mimetype == "application/problem+json"
    assert "MAX_REGISTRATIONS_PER_REQUESTER" in json_of(broken)["detail"]
    assert b"ninety-nine" not in broken.get_body()


def test_health_names_a_bad_verify_propagation_seconds_without_its_value(call):
    with settings_override(VERIFY_PROPAGATION_SECONDS="soon"):
        response = call(http.health)
    assert response.status_code == 500
    body = problem(response, 500, "misconfigured")
    assert body["settings"] == ["VERIFY_PROPAGATION_SECONDS"]
    assert b"soon" not in response.get_body()
