"""Microsoft's documented rules for custom connectors, each as a check over an OpenAPI 2.0 document.

Every rule names the page it comes from. Each passes on the document the API serves, on the one it builds and
on samples/logic-apps/connector, and fails on a copy with that one rule broken (so a check that cannot fail
would show). The checks walk every operation, so operations added later are held to the same rules.

Pages (learn.microsoft.com/connectors/custom-connectors/…):
  DEFINE   define-openapi-definition: OpenAPI 2.0 only, under 1 MB; "If there are multiple security
           definitions, the custom connector picks the top security definition. Custom connector creation
           doesn't support client credentials (for example, application and password) in OAuth security
           definition."
  STRINGS  connector-string-guidance: title at most 30 characters and neither title nor description says
           "API"; an operation's summary has no "/", at most 80 characters, does not end with a
           non-alphanumeric character; x-ms-summary at most 80 characters.
  CODING   coding-standards: operationId in Pascal case, no hyphens or underscores.
  VALIDATOR certification-swagger-validator-rules: the Swagger Validator's errors (a GET takes no body or form
           data; path parameters are required and say how they are URL-encoded; connectionId is reserved;
           only success answers carry a schema; allowed MIME types; info.contact; summary and description
           differ; every operation has a visibility).
  EXTENSIONS openapi-extensions: x-ms-visibility is important, advanced or internal; x-ms-url-encoding is
           single or double.
The apiProperties.json rules are the published schema's (microsoft/PowerPlatformConnectors,
schemas/paconn-apiProperties.schema.json), restated below for the parts the sample uses.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from registrations.openapi import Deployment, build_document
from tests.openapi.spec_support import operations

CONNECTOR = Path(__file__).resolve().parents[2] / "samples" / "logic-apps" / "connector"
DOCS = "https://learn.microsoft.com/connectors/custom-connectors/"
VISIBILITIES = {"important", "advanced", "internal"}
# The validator lists the media types a connector may declare; the strictest reading that fits this API.
ALLOWED_MEDIA_TYPES = {"application/json"}


def _ops(doc: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [(op_id, method, path, op) for op_id, (method, path, op) in operations(doc).items()]


def _params(op: dict[str, Any]) -> list[dict[str, Any]]:
    return op.get("parameters", [])


def _properties(node: Any, where: str = "#") -> list[tuple[str, str, dict[str, Any]]]:
    """Every schema property in the document: (where, name, schema)."""
    found = []
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items() if isinstance(node.get("properties"), dict) else []:
            if isinstance(sub, dict):
                found.append((where, name, sub))
        for key, value in node.items():
            found += _properties(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _properties(value, f"{where}/{i}")
    return found


# ------------------------------------------------------------------------------------------- the rules
@dataclass(frozen=True)
class Rule:
    name: str
    source: str
    check: Callable[[dict[str, Any]], list[str]]  # the violations
    # Breaks the rule in a copy of a document that obeys it, the way a careless change would.
    breaks: Callable[[dict[str, Any]], None]


def first_op(doc: dict[str, Any], *, method: str | None = None, with_path_param: bool = False) -> dict[str, Any]:
    for _op_id, op_method, path, op in _ops(doc):
        if (method is None or op_method == method) and (not with_path_param or "{" in path):
            return op
    raise AssertionError("no such operation to break")


def _version(doc):
    return [] if doc.get("swagger") == "2.0" and "openapi" not in doc else ["not OpenAPI 2.0"]


def _size(doc):
    return [] if len(json.dumps(doc).encode()) < 1024 * 1024 else ["1 MB or more"]


def _top_security(doc):
    problems = []
    definitions = doc.get("securityDefinitions", {})
    for name, scheme in definitions.items():
        if scheme.get("type") == "oauth2" and scheme.get("flow") in ("application", "password"):
            problems.append(f"{name}: OAuth flow {scheme['flow']} (client credentials) is not supported")
    top = next(iter(definitions.values()), None)
    if top is None or top.get("type") != "oauth2" or top.get("flow") != "accessCode":
        problems.append("the top security definition (the one a connector uses) is not the authorization code flow")
    return problems


def _media_types(doc):
    problems = [f"document: {t}" for key in ("produces", "consumes") for t in doc.get(key, [])
                if t not in ALLOWED_MEDIA_TYPES]
    for op_id, _method, _path, op in _ops(doc):
        problems += [f"{op_id}: {t}" for key in ("produces", "consumes") for t in op.get(key, [])
                     if t not in ALLOWED_MEDIA_TYPES]
    return problems


def _one_response_schema(doc):
    problems = []
    for op_id, _method, _path, op in _ops(doc):
        with_schema = [status for status, response in op["responses"].items() if "schema" in response]
        if len(with_schema) > 1:
            problems.append(f"{op_id}: schemas on {with_schema}")
        problems += [f"{op_id}: schema on {s}" for s in with_schema if not s.startswith("2")]
    return problems


def _path_parameters(doc):
    problems = []
    for op_id, _method, path, op in _ops(doc):
        for param in _params(op):
            if param["in"] != "path":
                continue
            if param.get("required") is not True:
                problems.append(f"{op_id}: path parameter {param['name']} is not required")
            if param.get("x-ms-url-encoding") not in ("single", "double"):
                problems.append(f"{op_id}: path parameter {param['name']} has no x-ms-url-encoding")
        declared = {p["name"] for p in _params(op) if p["in"] == "path"}
        if set(re.findall(r"{([^}]+)}", path)) != declared:
            problems.append(f"{op_id}: path {path} and its parameters {sorted(declared)} differ")
    return problems


def _visibility(doc):
    return [f"{op_id}: x-ms-visibility {op.get('x-ms-visibility')!r}" for op_id, _m, _p, op in _ops(doc)
            if op.get("x-ms-visibility") not in VISIBILITIES] + \
        [f"{op_id}: parameter {p['name']} x-ms-visibility {p['x-ms-visibility']!r}" for op_id, _m, _p, op in _ops(doc)
         for p in _params(op) if "x-ms-visibility" in p and p["x-ms-visibility"] not in VISIBILITIES]


def _summaries(doc):
    problems = []
    for op_id, _method, _path, op in _ops(doc):
        summary = op.get("summary", "")
        if not summary or len(summary) > 80 or "/" in summary or not summary[-1].isalnum() \
                or not re.fullmatch(r"[A-Za-z0-9 ()]+", summary):
            problems.append(f"{op_id}: summary {summary!r}")
        if summary and op.get("description", "").strip() == summary:
            problems.append(f"{op_id}: description repeats the summary")
        if not op.get("description"):
            problems.append(f"{op_id}: no description")
    return problems


def _operation_ids(doc):
    ids = [op_id for op_id, *_ in _ops(doc)]
    problems = [f"{op_id}: not Pascal case" for op_id in ids if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", op_id)]
    return problems + ([] if len(ids) == len(set(ids)) else ["operationId used twice"])


def _info(doc):
    info = doc.get("info", {})
    problems = [] if (info.get("contact") or {}).get("name") else ["info.contact has no name"]
    if len(info.get("title", "")) > 30:
        problems.append("title longer than 30 characters")
    problems += [f"info.{key} says API" for key in ("title", "description") if re.search(r"\bAPI\b", info.get(key, ""))]
    return problems


def _x_ms_summary(doc):
    problems = [f"{op_id}: parameter {p['name']} x-ms-summary {p.get('x-ms-summary')!r}"
                for op_id, _m, _p, op in _ops(doc) for p in _params(op)
                if not p.get("x-ms-summary") or len(p["x-ms-summary"]) > 80]
    return problems + [f"{where}: property {name} x-ms-summary {sub.get('x-ms-summary')!r}"
                       for where, name, sub in _properties(doc.get("definitions", {}), "#/definitions")
                       if not sub.get("x-ms-summary") or len(sub["x-ms-summary"]) > 80]


def _fetch_body(doc):
    return [f"{op_id}: GET with a {p['in']} parameter" for op_id, method, _p, op in _ops(doc) if method == "get"
            for p in _params(op) if p["in"] in ("body", "formData")]


def _reserved(doc):
    return [f"{op_id}: parameter connectionId" for op_id, _m, _p, op in _ops(doc)
            for p in _params(op) if p["name"].lower() == "connectionid"]


def _add_client_credentials(doc):
    doc["securityDefinitions"] = {"entraApplication": {"type": "oauth2", "flow": "application",
                                                       "tokenUrl": "https://login.example/token", "scopes": {}},
                                  **doc["securityDefinitions"]}


RULES = [
    Rule("openapi-2.0", DOCS + "define-openapi-definition", _version,
         lambda d: (d.pop("swagger"), d.update(openapi="3.0.3"))),
    Rule("under-1-mb", DOCS + "define-openapi-definition", _size,
         lambda d: d["info"].update(description="x" * 1024 * 1024)),
    Rule("top-security-definition-is-authorization-code", DOCS + "define-openapi-definition", _top_security,
         _add_client_credentials),
    Rule("allowed-media-types", DOCS + "certification-swagger-validator-rules", _media_types,
         lambda d: first_op(d)["produces"].append("application/problem+json")),
    Rule("one-response-schema-on-success", DOCS + "certification-swagger-validator-rules", _one_response_schema,
         lambda d: first_op(d)["responses"]["401"].update(schema={"type": "object"})),
    Rule("path-parameters-required-and-url-encoded", DOCS + "openapi-extensions", _path_parameters,
         lambda d: next(p for p in _params(first_op(d, with_path_param=True))
                        if p["in"] == "path").pop("x-ms-url-encoding")),
    Rule("every-operation-has-a-visibility", DOCS + "openapi-extensions", _visibility,
         lambda d: first_op(d).pop("x-ms-visibility")),
    Rule("summary-strings", DOCS + "connector-string-guidance", _summaries,
         lambda d: first_op(d, method="get").update(summary="Get the OpenAPI 2.0 document.")),
    Rule("operation-id-pascal-case", DOCS + "coding-standards", _operation_ids,
         lambda d: first_op(d).update(operationId="get_registration")),
    Rule("info-contact-and-title", DOCS + "certification-swagger-validator-rules", _info,
         lambda d: d["info"].pop("contact")),
    Rule("x-ms-summary-everywhere", DOCS + "connector-string-guidance", _x_ms_summary,
         lambda d: next(p for _i, _m, _p, op in _ops(d) for p in _params(op)).pop("x-ms-summary")),
    Rule("no-body-in-get", DOCS + "certification-swagger-validator-rules", _fetch_body,
         lambda d: first_op(d, method="get").setdefault("parameters", []).append(
             {"name": "body", "in": "body", "schema": {"type": "object"}})),
    Rule("connection-id-is-reserved", DOCS + "certification-swagger-validator-rules", _reserved,
         lambda d: first_op(d).setdefault("parameters", []).append(
             {"name": "connectionId", "in": "query", "type": "string", "x-ms-summary": "Connection"})),
]
RULE_IDS = [rule.name for rule in RULES]


# --------------------------------------------------------------------------------- the documents checked
def built() -> dict[str, Any]:
    return build_document("2.0", Deployment("dicom-registrations.example.org", "/api", "https",
                                            "https://login.example.org/tenant", "api://dicom-registrations"))


def connector() -> dict[str, Any]:
    return json.loads((CONNECTOR / "apiDefinition.swagger.json").read_text())


@pytest.fixture(scope="module")
def served(host) -> dict[str, Any]:
    return httpx.get(f"{host.url}/api/openapi.json", trust_env=False).json()


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_the_served_document_obeys(served, rule):
    assert rule.check(served) == [], f"{rule.name} ({rule.source})"


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("make", [built, connector], ids=["built", "connector"])
def test_the_document_obeys(make, rule):
    assert rule.check(make()) == [], f"{rule.name} ({rule.source})"


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_a_copy_with_the_rule_broken_fails_it(rule):
    broken = copy.deepcopy(connector())
    rule.breaks(broken)
    assert rule.check(broken), f"breaking {rule.name} went unnoticed"


# ------------------------------------------------------------------------------- apiProperties.json
def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": list(required)}


_STRING = {"type": "string"}
_CUSTOM_PARAMETER = _closed({"value": _STRING}, ("value",))
# The parts of the published apiProperties schema that the sample uses, restated: closed objects where the
# schema closes them, and its enums.
API_PROPERTIES = _closed({
    "$schema": _STRING,
    "properties": _closed({
        "iconBrandColor": _STRING, "publisher": _STRING, "stackOwner": _STRING,
        "capabilities": {"type": "array", "items": _STRING},
        "connectionParameters": {"type": "object", "additionalProperties": False, "patternProperties": {
            "^[0-9a-zA-Z_]+$": _closed({
                "type": {"enum": ["oauthSetting"]},
                "uiDefinition": {"type": "object"},
                "oAuthSettings": _closed({
                    "identityProvider": {"enum": ["oauth2", "oauth2generic", "aad", "aadcertificate", "facebook"]},
                    "clientId": {"type": ["string", "null"]}, "clientSecret": {"type": ["string", "null"]},
                    "redirectMode": {"enum": ["Global", "Direct", "GlobalPerConnector"]},
                    "redirectUrl": {"type": "string", "format": "uri"},
                    "scopes": {"type": "array", "items": _STRING},
                    "properties": {"type": "object", "required": ["IsFirstParty"],
                                   "properties": {"IsFirstParty": {"enum": ["True", "False"]}}},
                    "additionalParameters": {"type": "object"},
                    # identityProvider aad: resourceUri required; loginUri and tenantId the only others.
                    "customParameters": _closed({"resourceUri": _CUSTOM_PARAMETER, "loginUri": _CUSTOM_PARAMETER,
                                                 "tenantId": _CUSTOM_PARAMETER}, ("resourceUri",)),
                }, ("identityProvider",)),
            }, ("type",)),
        }},
        "policyTemplateInstances": {"type": "array", "items": _closed({
            "templateId": {"enum": ["setheader", "SetHeader", "setHeader"]},
            "title": _STRING,
            "parameters": _closed({
                "x-ms-apimTemplate-operationName": {"type": "array", "items": _STRING},
                "x-ms-apimTemplate-policySection": {"enum": ["Request", "Response", "Failure"]},
                "x-ms-apimTemplateParameter.name": _STRING,
                "x-ms-apimTemplateParameter.value": _STRING,
                "x-ms-apimTemplateParameter.existsAction": {"enum": ["override", "skip", "append"]},
            }, ("x-ms-apimTemplateParameter.name", "x-ms-apimTemplateParameter.value")),
        }, ("templateId",))},
    }, ("iconBrandColor",)),
}, ("properties",))


def api_properties() -> dict[str, Any]:
    return json.loads((CONNECTOR / "apiProperties.json").read_text())


def test_api_properties_fit_the_published_schema():
    jsonschema.validate(api_properties(), API_PROPERTIES)


@pytest.mark.parametrize("breakage", [
    lambda p: p["properties"]["connectionParameters"]["token"]["oAuthSettings"]["customParameters"].update(
        enableOnbehalfOfLogin={"value": "false"}),
    lambda p: p["properties"]["connectionParameters"]["token"]["oAuthSettings"].update(redirectMode="PerConnector"),
    lambda p: p["properties"]["connectionParameters"]["token"]["oAuthSettings"]["customParameters"].pop("resourceUri"),
    lambda p: p["properties"]["policyTemplateInstances"][0]["parameters"].pop("x-ms-apimTemplateParameter.value"),
    lambda p: p["properties"].pop("iconBrandColor"),
], ids=["unknown-custom-parameter", "unknown-redirect-mode", "no-resource-uri", "setheader-without-value",
        "no-brand-color"])
def test_a_properties_file_the_published_schema_rejects_is_refused(breakage):
    broken = api_properties()
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, API_PROPERTIES)


def test_the_connection_signs_in_with_the_connectors_own_app_for_this_api():
    """Authorization code flow of the connector's own app registration (identityProvider aad, a client id of
    its own, a per-connector redirect), for the API's audience and the scopes the document names; the
    function key rides in a setheader policy under the header the document names."""
    doc = connector()
    oauth = api_properties()["properties"]["connectionParameters"]["token"]["oAuthSettings"]
    top_name, top = next(iter(doc["securityDefinitions"].items()))
    assert (oauth["identityProvider"], oauth["redirectMode"]) == ("aad", "GlobalPerConnector")
    assert oauth["scopes"] == list(top["scopes"])
    audience = list(top["scopes"])[0].removesuffix("/.default")
    assert oauth["customParameters"]["resourceUri"]["value"] == audience
    assert oauth["properties"]["AzureActiveDirectoryResourceId"] == audience
    assert oauth["clientId"] and "clientSecret" not in oauth  # a secret is entered in the portal, never in git
    key = doc["securityDefinitions"]["functionKey"]
    (policy,) = api_properties()["properties"]["policyTemplateInstances"]
    assert (policy["templateId"], policy["parameters"]["x-ms-apimTemplateParameter.name"]) == ("setheader", key["name"])
    assert policy["parameters"]["x-ms-apimTemplate-policySection"] == "Request"
    assert top_name != "functionKey"
