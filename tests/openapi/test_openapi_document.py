"""The OpenAPI documents: valid, small, and in step with the live functions and the pydantic models."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx
import pytest
from openapi_spec_validator import validate

from registrations.models import RegistrationRequest
from registrations.openapi import OPERATIONS, PATH_PARAMS, Deployment, build_document
from registrations.views import FORMATS
from tests.openapi.spec_support import document, model_fields, operations, properties_at, resolve
from tests.support import live_http_functions


@pytest.mark.parametrize("version", ["2.0", "3.0"])
def test_document_is_valid_and_under_a_megabyte(version):
    doc = document(version)
    validate(doc)
    assert len(json.dumps(doc).encode()) < 1024 * 1024


def test_every_http_function_has_exactly_one_table_entry_and_the_same_route():
    live = live_http_functions()
    assert set(live) == set(OPERATIONS), (
        f"functions without a table entry: {sorted(set(live) - set(OPERATIONS))}; "
        f"table entries without a function: {sorted(set(OPERATIONS) - set(live))}")
    for function, (route, methods, level) in live.items():
        op = OPERATIONS[function]
        assert op.path == "/" + route, function
        assert methods == {op.method.upper()}, function
        assert (level == "anonymous") == op.anonymous, function


def test_path_parameters_are_declared_for_every_route_parameter():
    for function, op in OPERATIONS.items():
        for name in (part[1:-1] for part in op.path.split("/") if part.startswith("{")):
            if name == "format" and op.per_format:
                continue  # expanded into one operation per format
            assert name in PATH_PARAMS, f"{function}: add {name!r} to PATH_PARAMS"


@pytest.mark.parametrize("version", ["2.0", "3.0"])
def test_every_configuration_format_is_its_own_operation_with_one_content_type(version):
    doc = document(version)
    configs = {path: item["get"] for path, item in doc["paths"].items()
               if path.startswith("/registrations/{name}/config/")}
    expected = {name for name, fmt in FORMATS.items() if version == "3.0" or fmt.is_json}
    assert {path.rsplit("/", 1)[1] for path in configs} == expected
    for path, op in configs.items():
        fmt = FORMATS[path.rsplit("/", 1)[1]]
        if version == "3.0":
            for status, response in op["responses"].items():
                assert len(response["content"]) == 1, (path, status)
            assert list(op["responses"]["200"]["content"]) == [fmt.content_type.split(";")[0]]
        else:
            assert op["produces"] == ["application/json"]


def test_3_0_nullable_enums_list_null_and_operations_carry_their_security():
    doc = document("3.0")

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("nullable") and "enum" in node:
                assert None in node["enum"], where
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(doc, "#")
    registration = doc["components"]["schemas"]["Registration"]["properties"]
    assert None in registration["access"]["enum"] and None in registration["platform"]["enum"]
    anonymous = {op.operation_id for op in OPERATIONS.values() if op.anonymous}
    for op_id, (_method, _path, op) in operations(doc).items():
        assert op["security"] == ([] if op_id in anonymous else doc["security"]), op_id


@pytest.mark.parametrize("version", ["2.0", "3.0"])
def test_every_model_field_is_in_the_document(version):
    doc = document(version)
    by_id = operations(doc)
    for function, op in OPERATIONS.items():
        if op.per_format:
            continue  # free-form configuration bodies
        if op.operation_id not in by_id:
            assert version == "2.0" and op.body_type != "application/json", function  # a 3.0-only operation
            continue
        _method, _path, spec_op = by_id[op.operation_id]
        if op.body is not None:
            if version == "2.0":
                body = next(p["schema"] for p in spec_op["parameters"] if p["in"] == "body")
            else:
                body = spec_op["requestBody"]["content"][op.body_type]["schema"]
            for path, model, fields in model_fields(op.body):
                missing = fields - properties_at(doc, body, path)
                assert not missing, f"{function} body {'.'.join(path) or '(root)'} ({model.__name__}): {missing}"
        for reply in op.replies[:1] if version == "2.0" else op.replies:  # 2.0: one response schema
            if reply.model is None:
                continue
            response = spec_op["responses"][str(reply.status)]
            schema = response["schema"] if version == "2.0" else response["content"]["application/json"]["schema"]
            for path, model, fields in model_fields(reply.model):
                missing = fields - properties_at(doc, schema, path)
                assert not missing, f"{function} {reply.status} {'.'.join(path)} ({model.__name__}): {missing}"


def test_the_2_0_body_flattens_the_type_union_for_the_designer():
    doc = document("2.0")
    body = resolve(doc, doc["paths"]["/registrations"]["post"]["parameters"][-1]["schema"])
    assert "oneOf" not in json.dumps(doc) and "anyOf" not in json.dumps(doc)
    assert body["properties"]["type"]["enum"] == ["confidential", "public", "service", "resource"]
    assert set(body["required"]) == {"name", "displayName", "dicomService", "type"}
    assert "Only for type service" in body["properties"]["access"]["description"]
    for name, prop in body["properties"].items():
        assert prop.get("x-ms-summary"), name
    # every kind of credential any type accepts is offered, and the note says which type takes which
    credential = body["properties"]["credential"]
    kinds = set(credential["properties"]["kind"]["enum"])
    assert "secret" in kinds
    assert "per type" in credential["description"] or len(kinds) == 1


def test_the_3_0_body_is_a_discriminated_one_of():
    doc = document("3.0")
    body = resolve(doc, doc["paths"]["/registrations"]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert body["discriminator"]["propertyName"] == "type"
    assert set(body["discriminator"]["mapping"]) == {"confidential", "public", "service", "resource"}
    assert len(body["oneOf"]) == 4


def test_problem_responses_and_security():
    doc = document("3.0")
    for op_id, (_method, _path, op) in operations(doc).items():
        if op.get("security") == []:
            continue
        for status in ("401", "403", "500", "503"):
            content = op["responses"][status]["content"]
            assert content == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}, \
                (op_id, status)
    problem_types = resolve(doc, {"$ref": "#/components/schemas/ProblemDetails"})["properties"]["type"]["enum"]
    assert "urn:dicom-registrations:problem:validation" in problem_types
    assert "about:blank" in problem_types  # what the host itself answers (a missing key, an unknown route)
    flows = doc["components"]["securitySchemes"]["entra"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == "https://login.example.org/tenant/oauth2/v2.0/token"
    assert flows["authorizationCode"]["authorizationUrl"] == "https://login.example.org/tenant/oauth2/v2.0/authorize"
    assert list(flows["clientCredentials"]["scopes"]) == ["api://dicom-registrations/.default"]
    v2 = document("2.0")["securityDefinitions"]
    assert list(v2) == ["entraUser", "functionKey"]
    assert v2["functionKey"] == {"type": "apiKey", "in": "header", "name": "x-functions-key",
                                 "description": v2["functionKey"]["description"]}
    assert v2["entraUser"]["flow"] == "accessCode"


def test_a_union_that_2_0_cannot_merge_is_refused_loudly():
    from typing import Annotated, Literal

    from pydantic import BaseModel, Field

    from registrations import openapi

    class A(BaseModel):
        type: Literal["a"]
        size: int

    class B(BaseModel):
        type: Literal["b"]
        size: str

    converter = openapi._Converter("2.0", {})
    schema = openapi.TypeAdapter(Annotated[A | B, Field(discriminator="type")]).json_schema(
        ref_template="#/definitions/{model}")
    converter.defs = schema.pop("$defs")
    with pytest.raises(ValueError, match="size"):
        converter.convert(schema)


@pytest.mark.parametrize("route, version", [("openapi.json", "2.0"), ("openapi3.json", "3.0")])
def test_served_document_uses_the_request_host_and_needs_no_key(host, app_settings, route, version):
    with httpx.Client(trust_env=False) as anonymous:
        response = anonymous.get(f"{host.url}/api/{route}")
    assert response.status_code == 200, response.text
    served = response.json()
    netloc = urlsplit(host.url).netloc
    expected = build_document(version, Deployment(
        netloc, "/api", "http", f"{app_settings['AZURE_AUTHORITY_HOST'].rstrip('/')}/{app_settings['AZURE_TENANT_ID']}",
        app_settings.get("API_AUDIENCE") or app_settings["API_CLIENT_ID"]))
    assert served == expected
    validate(served)
    if version == "2.0":
        assert served["host"] == netloc and served["basePath"] == "/api" and served["schemes"] == ["http"]
    else:
        assert served["servers"] == [{"url": f"{host.url}/api"}]


def test_request_union_in_the_table_is_the_one_the_api_validates_with():
    from registrations import api

    assert OPERATIONS["create_registration"].body is RegistrationRequest
    assert api._REQUEST.validate_python({"type": "service", "name": "abc", "displayName": "x",
                                         "dicomService": "managed", "access": "reader"}).type == "service"
