"""The Logic Apps sample: the connector file is the generated document, the workflow calls only real
operations with real fields, and a simulated run of it against the local host ends with the configuration."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter

from registrations.models import RegistrationRequest
from registrations.openapi import Deployment, build_document
from tests.openapi.spec_support import operations, resolve
from tests.openapi.workflow_engine import SECURED, Engine, Expression, Run
from tests.support import FUNCTION_KEY, api_token, objects_named, path_regex, secret_client, settings_override

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "logic-apps"
CONNECTOR_ARGS = ["--version", "2.0", "--host", "dicom-registrations.azurewebsites.net",
                  "--tenant", "contoso.onmicrosoft.com", "--audience", "api://dicom-registrations"]
CONNECTOR = Deployment("dicom-registrations.azurewebsites.net", "/api", "https",
                       "https://login.microsoftonline.com/contoso.onmicrosoft.com", "api://dicom-registrations")
WDL_SCHEMA = "https://schema.management.azure.com/providers/Microsoft.Logic/schemas/2016-06-01/workflowdefinition.json#"
VERIFICATION = ("get", "/registrations/{name}/verification")

TRIGGERS = {
    "service": {"requesterEmail": "ana@contoso.org", "name": "la-pacs-router", "type": "service",
                "dicomService": "managed", "access": "reader"},
    "confidential": {"requesterEmail": "ben@contoso.org", "name": "la-portal", "type": "confidential",
                     "dicomService": "managed", "redirectUris": ["https://portal.contoso.org/signin-oidc"]},
    "public": {"requesterEmail": "cy@contoso.org", "name": "la-viewer", "type": "public",
               "dicomService": "managed", "displayName": "Viewer", "redirectUris": ["https://viewer.contoso.org/"]},
}


def workflow(file: str = "workflow.json") -> dict[str, Any]:
    return json.loads((SAMPLE / file).read_text())


def all_actions(actions: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for name, action in actions.items():
        found[name] = action
        found.update(all_actions(action.get("actions", {})))
        found.update(all_actions(action.get("else", {}).get("actions", {})))
    return found


def http_actions(file: str = "workflow.json") -> dict[str, dict[str, Any]]:
    return {n: a for n, a in all_actions(workflow(file)["definition"]["actions"]).items() if a["type"] == "Http"}


def operation_for(doc: dict[str, Any], method: str, uri_template: str) -> tuple[str, dict[str, Any]] | None:
    """The spec operation an HTTP action's uri addresses: `@{parameters('apiBase')}` is the base path and
    any other `@{…}` fills one path segment."""
    assert uri_template.startswith("@{parameters('apiBase')}/"), uri_template
    path = re.sub(r"@\{[^}]*\}", "x", uri_template[len("@{parameters('apiBase')}"):])
    for op_id, (op_method, template, op) in operations(doc).items():
        if op_method == method.lower() and path_regex(template).match(path):
            return template, op
    return None


# ------------------------------------------------------------------------------------- the connector
def test_connector_definition_is_the_generated_document():
    committed = json.loads((SAMPLE / "connector" / "apiDefinition.swagger.json").read_text())
    assert committed == build_document("2.0", CONNECTOR), (
        "the connector is out of date; regenerate it with: .venv/bin/python -m registrations.openapi "
        + " ".join(CONNECTOR_ARGS) + " > samples/logic-apps/connector/apiDefinition.swagger.json")


def test_connector_properties_match_the_document():
    props = json.loads((SAMPLE / "connector" / "apiProperties.json").read_text())["properties"]
    oauth = props["connectionParameters"]["token"]["oAuthSettings"]
    assert oauth["identityProvider"] == "aad"
    assert oauth["properties"]["AzureActiveDirectoryResourceId"] == CONNECTOR.audience
    assert oauth["scopes"] == list(CONNECTOR.scopes)
    key = build_document("2.0", CONNECTOR)["securityDefinitions"]["functionKey"]["name"]
    headers = [p["parameters"]["x-ms-apimTemplateParameter.name"] for p in props["policyTemplateInstances"]
               if p["templateId"] == "setheader"]
    assert headers == [key]


# ---------------------------------------------------------------------- the workflow, read statically
def test_workflow_definition_has_the_shape_the_designer_loads():
    """A checker of the parts of the workflow definition language the sample uses."""
    wf = workflow()
    definition = wf["definition"]
    assert definition["$schema"] == WDL_SCHEMA and definition["contentVersion"] == "1.0.0.0"
    assert set(definition) <= {"$schema", "contentVersion", "parameters", "triggers", "actions", "outputs"}
    (trigger,) = definition["triggers"].values()
    assert (trigger["type"], trigger["kind"], trigger["inputs"]["method"]) == ("Request", "Http", "POST")
    assert {"requesterEmail", "name", "type", "dicomService", "access", "redirectUris"} <= \
        set(trigger["inputs"]["schema"]["properties"])
    declared = set(definition["parameters"])
    for name, spec in definition["parameters"].items():
        assert spec["type"] in ("String", "SecureString", "Int", "Bool", "Array", "Object", "SecureObject"), name
    used = set(re.findall(r"parameters\('([^']+)'\)", json.dumps(definition)))
    assert used <= declared, used - declared
    function_key = definition["parameters"]["functionKey"]
    assert function_key["type"] == "SecureString" and "defaultValue" not in function_key
    # The deployment supplies it from a secure template parameter (never a literal key in the file).
    assert wf["parameters"]["functionKey"] == {"value": "[parameters('functionKey')]"}

    def check(actions: dict[str, Any]) -> None:
        for name, action in actions.items():
            assert re.fullmatch(r"[A-Za-z0-9_]+", name), name
            assert action["type"] in ("Http", "Response", "If", "ApiConnection", "ApiConnectionWebhook"), name
            for dep, statuses in action.get("runAfter", {}).items():
                assert dep in actions, f"{name} runs after unknown {dep}"
                assert set(statuses) <= {"Succeeded", "Failed", "Skipped", "TimedOut"}
            if action["type"] == "If":
                assert "expression" in action
                check(action.get("actions", {}))
                check(action.get("else", {}).get("actions", {}))
            if action["type"].startswith("ApiConnection"):
                assert action["inputs"]["host"]["connection"]["name"].startswith("@parameters('$connections')")
            if action["type"] == "Http":
                inputs = action["inputs"]
                assert inputs["method"] in ("GET", "POST", "DELETE") and inputs["uri"]
                assert inputs["authentication"]["type"] == "ManagedServiceIdentity"
                assert inputs["authentication"]["audience"] == "@parameters('apiAudience')"
                assert inputs["retryPolicy"]["type"] == "exponential" and inputs["retryPolicy"]["count"] == 4
                # The function key and the bearer token ride in the inputs: hidden from the run history.
                assert "inputs" in action["runtimeConfiguration"]["secureData"]["properties"], name

    check(definition["actions"])
    approval = all_actions(definition["actions"])["Ask_approver"]
    assert approval["type"] == "ApiConnectionWebhook" and approval["inputs"]["path"] == "/approvalmail/$subscriptions"
    assert wf["parameters"]["$connections"]["value"]["office365"]["id"].endswith("/managedApis/office365")


def test_every_expression_in_the_workflow_reads():
    texts = re.findall(r'"(@[^"]*)"', json.dumps(workflow()["definition"]))
    for text in texts:
        for expression in (re.findall(r"@\{([^}]*)\}", text) if text.startswith("@{") or "@{" in text
                           else [text[1:]]):
            Expression(expression, {}).tokens  # tokenizes: no character the language does not have


@pytest.mark.parametrize("action_name", sorted(http_actions()))
def test_http_action_calls_a_real_operation_with_real_fields(action_name):
    doc = build_document("2.0", CONNECTOR)
    inputs = http_actions()[action_name]["inputs"]
    found = operation_for(doc, inputs["method"], inputs["uri"])
    assert found is not None, f"{action_name}: {inputs['method']} {inputs['uri']} is no operation of the API"
    _template, op = found
    parameters = {p["name"].lower(): p for p in op.get("parameters", [])}
    key_header = doc["securityDefinitions"]["functionKey"]["name"]
    for header in inputs.get("headers", {}):
        assert header.lower() in ("content-type", key_header) or (
            header.lower() in parameters and parameters[header.lower()]["in"] == "header"), (action_name, header)
    if "body" not in inputs:
        assert not any(p["in"] == "body" for p in op.get("parameters", []))
        return
    body_schema = resolve(doc, next(p["schema"] for p in op["parameters"] if p["in"] == "body"))
    for kind, trigger in TRIGGERS.items():
        run = Run(trigger_body=trigger, parameters={"approverEmail": "approvers@contoso.org"})
        body = run.value(inputs["body"])
        assert set(body) <= set(body_schema["properties"]), (kind, set(body) - set(body_schema["properties"]))
        TypeAdapter(RegistrationRequest).validate_python(body)  # what the API itself will accept


# ------------------------------------------------------------------------------------- running it
def engine_for(host, tenant, waits_hook=None) -> Engine:
    tokens: dict[str, str] = {}

    def managed_identity(audience: str) -> str:
        # The Logic App's identity holds Registrations.Request; the seeded requester client stands in for it.
        assert audience == tenant.seed.api.identifier_uri
        if audience not in tokens:
            tokens[audience] = api_token(tenant, tenant.seed.requester_client)
        return tokens[audience]

    return Engine(http=httpx.Client(trust_env=False, timeout=120), token=managed_identity,
                  approval=lambda inputs: "Approve", sleep=waits_hook or (lambda seconds: None))


def parameters_for(host, tenant) -> dict[str, Any]:
    return {"apiBase": f"{host.url}/api", "apiAudience": tenant.seed.api.identifier_uri,
            "functionKey": FUNCTION_KEY, "approverEmail": "approvers@contoso.org",
            "$connections": workflow()["parameters"]["$connections"]["value"]}


@pytest.mark.slow(10)
def test_simulated_run_retries_a_503_and_ends_with_the_configuration(host, tenant):
    trigger = dict(TRIGGERS["service"], name="la-run-service")
    # Graph unavailable for longer than the API's own retries: the API answers 503, Logic Apps retries.
    tenant.set_faults({"failures": [{"operation": "graph.listOwnedObjects", "nth": 1, "status": 503, "times": None}]})
    waits: list[float] = []

    def outage_ends_while_logic_apps_waits(seconds: float) -> None:
        waits.append(seconds)
        tenant.set_faults({})

    engine = engine_for(host, tenant, outage_ends_while_logic_apps_waits)
    try:
        run = engine.run(workflow()["definition"], Run(trigger_body=trigger, parameters=parameters_for(host, tenant)))
    finally:
        tenant.set_faults({})
    creates = [s for s in engine.sent if s[0] == "Create_registration"]
    assert [status for *_, status in creates] == [503, 201], creates
    assert waits[0] == 7.0  # the first exponential step of the policy in the workflow
    assert run.outputs["Create_registration"]["statusCode"] == 201
    assert run.outputs["Wait_for_verification"]["status"] == "Succeeded"

    found = objects_named(tenant, "la-run-service")
    assert (len(found["applications"]), len(found["passwords"])) == (1, 1)

    (mail_name, mail), = [c for c in engine.connector_calls if c[0] == "Send_configuration"]
    assert mail["body"]["To"] == "ana@contoso.org"
    config = run.outputs["Create_registration"]["body"]["config"]
    assert json.dumps(config) in mail["body"]["Body"]
    assert config["clientSecret"]["keyVaultSecretUri"].startswith(tenant.vault_url)
    assert "@Microsoft.KeyVault(SecretUri=" in config["clientSecret"]["appSettingReference"]
    secret = secret_client(tenant).get_secret("dicomreg--la-run-service--secret").value
    assert secret not in json.dumps(run.outputs) and secret not in mail["body"]["Body"]
    assert run.outputs["Acknowledge"]["body"]["status"] == "awaiting approval"
    assert {"Create_registration", "Wait_for_verification"} <= set(run.history)
    assert_run_history_hides_the_key_and_token(run, tenant)


def assert_run_history_hides_the_key_and_token(run: Run, tenant) -> None:
    history = json.dumps(run.history)
    assert run.history, "no HTTP action ran"
    assert FUNCTION_KEY not in history and "Bearer " not in history
    assert all(entry["inputs"] == SECURED for entry in run.history.values())
    assert all(entry["outputs"] != SECURED for entry in run.history.values())  # outputs stay readable


def test_without_secure_inputs_the_run_history_would_show_the_key(host, tenant):
    """The check above can fail: the same run with secureData removed shows the key and the token."""
    definition = workflow()["definition"]
    for action in all_actions(definition["actions"]).values():
        action.pop("runtimeConfiguration", None)
    run = engine_for(host, tenant).run(definition, Run(
        trigger_body=dict(TRIGGERS["service"], name="la-run-unsecured"), parameters=parameters_for(host, tenant)))
    history = json.dumps(run.history)
    assert FUNCTION_KEY in history and "Bearer " in history
    with pytest.raises(AssertionError):
        assert_run_history_hides_the_key_and_token(run, tenant)


def test_simulated_run_of_a_rejected_request_calls_nothing(host, tenant):
    engine = engine_for(host, tenant)
    engine.approval = lambda inputs: "Reject"
    trigger = dict(TRIGGERS["public"], name="la-run-rejected")
    engine.run(workflow()["definition"], Run(trigger_body=trigger, parameters=parameters_for(host, tenant)))
    assert engine.sent == []
    assert [name for name, _ in engine.connector_calls] == ["Ask_approver", "Send_rejection"]


@pytest.mark.slow(8)
def test_simulated_run_polls_verification_until_the_credential_works(host, tenant):
    doc = httpx.get(f"{host.url}/api/openapi.json", trust_env=False).json()
    assert VERIFICATION in {(m, p) for m, p, _ in operations(doc).values()}, "the document has no verification"
    tenant.set_faults({"replicationDelayMs": 3000})
    engine = engine_for(host, tenant, lambda seconds: __import__("time").sleep(min(seconds, 1.0)))
    try:
        run = engine.run(workflow()["definition"], Run(
            trigger_body=dict(TRIGGERS["service"], name="la-run-verify"), parameters=parameters_for(host, tenant)))
    finally:
        tenant.set_faults({})
    statuses = [status for name, _m, _u, status in engine.sent if name == "Wait_for_verification"]
    assert statuses[-1] == 200 and 202 in statuses, statuses
    assert run.outputs["Wait_for_verification"]["statusCode"] == 200


def test_engine_follows_202_location_and_retry_after_to_the_final_answer():
    """The engine's async pattern on its own, against a stand-in server."""
    answers = iter([httpx.Response(202, headers={"Location": "https://api.test/op/1", "Retry-After": "3"}),
                    httpx.Response(503),
                    httpx.Response(202, headers={"Location": "https://api.test/op/1", "Retry-After": "2"}),
                    httpx.Response(200, json={"verified": True})])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url} {request.headers.get('authorization')}")
        return next(answers)

    waits: list[float] = []
    engine = Engine(http=httpx.Client(transport=httpx.MockTransport(handler)), token=lambda audience: "t",
                    approval=lambda inputs: "Approve", sleep=waits.append)
    response = engine._http("Probe", {"method": "GET", "uri": "https://api.test/start",
                                      "authentication": {"type": "ManagedServiceIdentity", "audience": "api://x"}})
    assert response.status_code == 200 and response.json() == {"verified": True}
    assert waits == [3.0, 7.0, 2.0]
    assert seen[1:] == ["GET https://api.test/op/1 Bearer t"] * 3


# ------------------------------------------------------------------- the "change redirect URIs" sample
CHANGE = "change-redirect-uris.json"


@pytest.mark.parametrize("action_name", sorted(http_actions(CHANGE)))
def test_change_sample_calls_real_operations_with_declared_headers_and_fields(action_name):
    # HTTP actions may call any operation: the 3.0 document has them all (the 2.0 one, for connectors, leaves
    # out the merge-patch PATCH).
    doc = build_document("3.0", CONNECTOR)
    action = http_actions(CHANGE)[action_name]
    inputs = action["inputs"]
    found = operation_for(doc, inputs["method"], inputs["uri"])
    assert found is not None, f"{action_name}: {inputs['method']} {inputs['uri']} is no operation of the API"
    _template, op = found
    parameters = {p["name"].lower(): p for p in op.get("parameters", [])}
    content = op.get("requestBody", {}).get("content", {})
    for header, value in inputs.get("headers", {}).items():
        if header.lower() == "content-type":
            assert value in content, (action_name, value)
        else:
            assert header.lower() == "x-functions-key" or parameters[header.lower()]["in"] == "header"
    if "body" in inputs:
        content_type = inputs["headers"].get("Content-Type", "application/json")
        schema = resolve(doc, content[content_type]["schema"])
        assert set(inputs["body"]) <= set(schema["properties"]), action_name
    assert "inputs" in action["runtimeConfiguration"]["secureData"]["properties"], action_name


def test_simulated_change_run_reads_the_etag_and_keeps_the_client_id(host, tenant):
    # A requester makes public and confidential clients only once ALLOWED_REDIRECT_HOSTS is set.
    with settings_override(ALLOWED_REDIRECT_HOSTS="portal.contoso.org,portal-next.contoso.org"):
        simulated_change_run(host, tenant)


def simulated_change_run(host, tenant) -> None:
    requester = {"Authorization": f"Bearer {api_token(tenant, tenant.seed.requester_client)}",
                 "x-functions-key": FUNCTION_KEY}
    made = httpx.post(f"{host.url}/api/registrations", headers=requester, trust_env=False, timeout=120, json={
        "type": "confidential", "name": "la-change", "displayName": "Portal", "dicomService": "managed",
        "redirectUris": ["https://portal.contoso.org/signin-oidc"]})
    assert made.status_code == 201, made.text
    new = ["https://portal-next.contoso.org/signin-oidc"]
    engine = engine_for(host, tenant)
    run = engine.run(workflow(CHANGE)["definition"], Run(
        trigger_body={"requesterEmail": "ben@contoso.org", "name": "la-change", "redirectUris": new},
        parameters=parameters_for(host, tenant)))
    assert [(name, method, status) for name, method, _url, status in engine.sent] == [
        ("Read_registration", "GET", 200), ("Change_redirect_URIs", "PATCH", 200)]
    changed = run.outputs["Change_redirect_URIs"]["body"]
    assert changed["changed"] == ["redirectUris"] and changed["redirectUris"] == new
    assert changed["appId"] == made.json()["appId"]
    (_, mail), = [c for c in engine.connector_calls if c[0] == "Send_confirmation"]
    assert new[0] in mail["body"]["Body"]
    assert set(run.history) == {"Read_registration", "Change_redirect_URIs"}
    assert_run_history_hides_the_key_and_token(run, tenant)
    assert workflow(CHANGE)["parameters"]["functionKey"] == {"value": "[parameters('functionKey')]"}
    gone = httpx.delete(f"{host.url}/api/registrations/la-change", headers=requester, trust_env=False, timeout=120)
    assert gone.status_code == 200
