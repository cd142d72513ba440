"""A small client that knows the API only through the OpenAPI 2.0 document the API serves: it walks every
operation of it against the local host and checks each answer against what the document promises."""

from __future__ import annotations

import ssl
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.openapi.spec_support import check_body, operations

ASYNC_POLL_CAP_SECONDS = 2.0


class SpecClient:
    def __init__(self, doc: dict[str, Any], *, token: str, function_key: str, scheme_host: str | None = None):
        self.doc = doc
        self.ops = operations(doc)
        base = scheme_host or f"{doc['schemes'][0]}://{doc['host']}"
        key = doc["securityDefinitions"]["functionKey"]
        assert key["in"] == "header"
        self.http = httpx.Client(base_url=base + doc["basePath"], trust_env=False, timeout=120,
                                 headers={key["name"]: function_key, "Authorization": f"Bearer {token}"})
        self.called: set[str] = set()

    def call(self, operation_id: str, *, body: Any = None, **arguments: Any) -> httpx.Response:
        method, template, op = self.ops[operation_id]
        declared = {p["name"]: p for p in op.get("parameters", []) if p["in"] != "body"}
        unknown = set(arguments) - set(declared)
        assert not unknown, f"{operation_id} has no parameters {unknown}"
        missing = [n for n, p in declared.items() if p["required"] and n not in arguments]
        assert not missing, f"{operation_id} needs {missing}"
        path, query, headers = template, {}, {}
        for name, value in arguments.items():
            where = declared[name]["in"]
            if where == "path":
                path = path.replace("{" + name + "}", quote(str(value), safe=""))
            elif where == "query":
                query[name] = value
            else:
                headers[name] = str(value)
        has_body = any(p["in"] == "body" for p in op.get("parameters", []))
        assert (body is not None) == has_body or not has_body, f"{operation_id} takes no body"
        response = self.http.request(method.upper(), path, params=query, headers=headers,
                                     json=body if body is not None else None)
        self.called.add(operation_id)
        self.check(operation_id, op, response)
        return response

    def check(self, operation_id: str, op: dict[str, Any], response: httpx.Response) -> None:
        documented = op["responses"].get(str(response.status_code))
        assert documented is not None, f"{operation_id} answered an undocumented {response.status_code}: " \
                                       f"{response.text[:300]}"
        content_type = response.headers.get("content-type", "").split(";")[0]
        produces = op.get("produces", self.doc["produces"])
        if "schema" in documented or response.status_code < 400:
            assert content_type in produces, f"{operation_id}: {content_type} not in {produces}"
        else:  # the 2.0 document describes error answers without a schema (a connector rule)
            assert content_type == "application/problem+json", f"{operation_id}: {content_type}"
        if content_type.endswith("json") and "schema" in documented:
            check_body(self.doc, documented["schema"], response.json())
        for header in documented.get("headers", {}):
            if header.lower() == "location" and response.status_code in (201, 202):
                assert response.headers.get(header), f"{operation_id} promised {header}"

    def follow(self, response: httpx.Response, operation_id: str) -> httpx.Response:
        """The async request-reply pattern: while 202, wait Retry-After and GET Location."""
        deadline = time.monotonic() + 120
        while response.status_code == 202:
            assert time.monotonic() < deadline, "still 202 after two minutes"
            time.sleep(min(float(response.headers.get("retry-after", "1")), ASYNC_POLL_CAP_SECONDS))
            response = self.http.get(response.headers["location"])
            self.check(operation_id, self.ops[operation_id][2], response)
        return response


@pytest.fixture()
def spec_client(host, admin_token):
    from tests.support import FUNCTION_KEY

    served = httpx.get(f"{host.url}/api/openapi.json", trust_env=False).json()
    client = SpecClient(served, token=admin_token, function_key=FUNCTION_KEY)
    yield client
    client.http.close()


def token_from_document(doc: dict[str, Any], tenant, client) -> str:
    """Get the bearer token the way the 3.0 document says: client credentials at its tokenUrl, its scope."""
    flow = doc["components"]["securitySchemes"]["entra"]["flows"]["clientCredentials"]
    tls = ssl.create_default_context(cafile=tenant.ca_file)
    response = httpx.post(flow["tokenUrl"], verify=tls, trust_env=False, data={
        "grant_type": "client_credentials", "client_id": client.app_id, "client_secret": client.secret,
        "scope": " ".join(flow["scopes"])})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def test_the_document_tells_a_client_how_to_get_a_token(host, tenant):
    doc = httpx.get(f"{host.url}/api/openapi.json", trust_env=False).json()
    v3 = httpx.get(f"{host.url}/api/openapi3.json", trust_env=False).json()
    token = token_from_document(v3, tenant, tenant.seed.admin_client)
    from tests.support import FUNCTION_KEY

    with SpecClient(doc, token=token, function_key=FUNCTION_KEY).http as http:
        assert http.get("/registrations", params={"top": 1}).status_code == 200


# Operations the walk knows how to drive; any other operation of the document is still called, with the
# registration's name for path parameters, and must answer something the document lists.
KNOWN = {("post", "/registrations"), ("get", "/registrations"), ("get", "/registrations/{name}"),
         ("delete", "/registrations/{name}"),
         ("get", "/registrations/{name}/verification")}


def test_walk_every_operation_create_read_verify_delete(spec_client):
    c, name = spec_client, "walk-openapi"
    by_route = {(method, path): op_id for op_id, (method, path, _op) in c.ops.items()}
    body = {"type": "service", "name": name, "displayName": "Walked by the OpenAPI client",
            "dicomService": "managed", "access": "reader"}
    created = c.call(by_route[("post", "/registrations")], body=body, **{"Idempotency-Key": "walk-1"})
    assert created.status_code == 201
    registration = created.json()
    replay = c.call(by_route[("post", "/registrations")], body=body, **{"Idempotency-Key": "walk-1"})
    assert replay.status_code == 200 and replay.json()["appId"] == registration["appId"]

    got = c.call(by_route[("get", "/registrations/{name}")], name=name)
    assert got.json()["appId"] == registration["appId"] and got.json()["config"]["clientSecret"]
    configs = [op_id for (method, path), op_id in by_route.items() if path.startswith("/registrations/{name}/config/")]
    assert configs, "the document lists no configuration"
    for op_id in configs:  # a service client has every format but the SPA viewer's (ohif: a 422 naming the others)
        assert c.call(op_id, name=name).status_code == (422 if op_id.endswith("AsOhif") else 200), op_id
    listed = c.call(by_route[("get", "/registrations")], type="service", dicomService="managed", top=100)
    assert name in {item["name"] for item in listed.json()["value"]}

    verification = by_route.get(("get", "/registrations/{name}/verification"))
    if verification:
        final = c.follow(c.call(verification, name=name), verification)
        assert final.status_code == 200, final.text

    for op_id, (method, path, op) in c.ops.items():
        if (method, path) in KNOWN or op_id in c.called:
            continue
        params = {p["name"]: name for p in op.get("parameters", []) if p["in"] == "path"}
        takes_body = any(p["in"] == "body" for p in op.get("parameters", []))
        c.call(op_id, body={} if takes_body else None, **params)

    deleted = c.call(by_route[("delete", "/registrations/{name}")], name=name)
    assert {item["kind"] for item in deleted.json()["removed"]} >= {"application", "servicePrincipal"}
    gone = c.call(by_route[("get", "/registrations/{name}")], name=name)
    assert gone.status_code == 404
    invalid = c.call(by_route[("post", "/registrations")], body={"type": "service", "name": "x"})
    assert invalid.status_code == 422

    assert c.called == set(c.ops), f"not walked: {set(c.ops) - c.called}"
