"""The Logic Apps sample: the connector file is the generated document, the workflow calls only real
operations with real fields, and a simulated run of it against the local host ends with the configuration."""

from __future__ import annotations

import base64
import json
import re
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter

from registrations.models import RegistrationRequest
from registrations.openapi import Deployment, build_document
from tests.openapi.spec_support import operations, resolve
from tests.openapi.workflow_engine import (SECURED, TIMED_OUT, Engine, Expression, Run, TriggerRefused,
                                         authorize_trigger, bicep_trigger_policies)
from tests.support import (FUNCTION_KEY, api_token, follow_authorize, objects_named, path_regex, public_app,
                           secret_client, settings_override)

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "logic-apps"
CONNECTOR_ARGS = ["--version", "2.0", "--host", "dicom-registrations.azurewebsites.net",
                  "--tenant", "contoso.onmicrosoft.com", "--audience", "api://dicom-registrations"]
CONNECTOR = Deployment("dicom-registrations.azurewebsites.net", "/api", "https",
                       "https://login.microsoftonline.com/contoso.onmicrosoft.com", "api://dicom-registrations")
WDL_SCHEMA = "https://schema.management.azure.com/providers/Microsoft.Logic/schemas/2016-06-01/workflowdefinition.json#"
VERIFICATION = ("get", "/registrations/{name}/verification")

STANDARD = SAMPLE / "standard"
LOGIC_BICEP = SAMPLE.parents[1] / "infra" / "app" / "logicapp.bicep"
BROKER_HEADER = "Requested-For"

# What a requester sends to the trigger (the person comes from their token, never from here).
TRIGGERS = {
    "service": {"name": "la-pacs-router", "type": "service", "dicomService": "managed", "access": "reader"},
    "confidential": {"name": "la-portal", "type": "confidential", "dicomService": "managed",
                     "redirectUris": ["https://portal.contoso.org/signin-oidc"]},
    "public": {"name": "la-viewer", "type": "public", "dicomService": "managed", "displayName": "Viewer",
               "redirectUris": ["https://viewer.contoso.org/"]},
}
# A person's claims, for reading the workflow statically (the runs below use a real token).
PERSON = {"oid": "2f0c7a4e-8b1d-4c3e-9a5f-6d7e8f9a0b1c", "preferred_username": "ana@contoso.org"}


def unsigned_token(claims: dict[str, Any]) -> str:
    encode = lambda part: base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{encode({'alg': 'none'})}.{encode(claims)}.x"


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
WORKFLOWS = ["workflow.json", "change-redirect-uris.json"]


def standard_workflow(folder: str) -> dict[str, Any]:
    return json.loads((STANDARD / folder / "workflow.json").read_text())


STANDARD_OF = {"workflow.json": "dicom-access-request", "change-redirect-uris.json": "dicom-change-redirect-uris"}


@pytest.mark.parametrize("file", WORKFLOWS)
def test_workflow_definition_has_the_shape_the_designer_loads(file):
    """A checker of the parts of the workflow definition language the samples use."""
    wf = workflow(file)
    definition = wf["definition"]
    assert definition["$schema"] == WDL_SCHEMA and definition["contentVersion"] == "1.0.0.0"
    assert set(definition) <= {"$schema", "contentVersion", "parameters", "triggers", "actions", "outputs"}
    (trigger,) = definition["triggers"].values()
    assert (trigger["type"], trigger["kind"], trigger["inputs"]["method"]) == ("Request", "Http", "POST")
    # The requester is the caller the trigger authenticated: the token reaches the run, no field names them.
    assert trigger["operationOptions"] == "IncludeAuthorizationHeadersInOutputs"
    assert not {"requesterEmail", "requester", "requestedBy"} & set(trigger["inputs"]["schema"]["properties"])
    declared = set(definition["parameters"])
    for name, spec in definition["parameters"].items():
        assert spec["type"] in ("String", "SecureString", "Int", "Bool", "Array", "Object", "SecureObject"), name
        assert name == "$connections" or "defaultValue" not in spec or name == "approverEmail", \
            f"{name}: a default that differs from the deployment's value imports a workflow that calls the wrong place"
    used = set(re.findall(r"parameters\('([^']+)'\)", json.dumps(definition)))
    assert used <= declared, used - declared
    function_key = definition["parameters"]["functionKey"]
    assert function_key["type"] == "SecureString" and "defaultValue" not in function_key
    # The deployment supplies it from a secure template parameter (never a literal key in the file).
    assert wf["parameters"]["functionKey"] == {"value": "[parameters('functionKey')]"}

    def check(actions: dict[str, Any]) -> None:
        for name, action in actions.items():
            assert re.fullmatch(r"[A-Za-z0-9_]+", name), name
            assert action["type"] in ("Http", "Response", "If", "ApiConnection", "ApiConnectionWebhook", "Compose"), name
            for dep, statuses in action.get("runAfter", {}).items():
                assert dep in actions, f"{name} runs after unknown {dep}"
                assert set(statuses) <= {"Succeeded", "Failed", "Skipped", "TimedOut"}
            if action["type"] == "If":
                assert "expression" in action
                check(action.get("actions", {}))
                check(action.get("else", {}).get("actions", {}))
            if action["type"].startswith("ApiConnection"):
                assert action["inputs"]["host"]["connection"]["name"].startswith("@parameters('$connections')")
            if action["type"] == "ApiConnectionWebhook":
                assert re.fullmatch(r"P(\d+D)?(T\d+[HMS])?", action["limit"]["timeout"]), "an approval waits for ever"
            if action["type"] == "Http":
                inputs = action["inputs"]
                assert inputs["method"] in ("GET", "POST", "PATCH", "DELETE") and inputs["uri"]
                assert inputs["authentication"]["type"] == "ManagedServiceIdentity"
                assert inputs["authentication"]["audience"] == "@parameters('apiAudience')"
                assert inputs["retryPolicy"]["type"] == "exponential" and inputs["retryPolicy"]["count"] == 4
                # Every call is the requester's (the workflow's identity is a broker and nothing else).
                assert inputs["headers"][BROKER_HEADER] == "@{outputs('Requester')?['oid']}", name
                # The function key and the bearer token ride in the inputs: hidden from the run history.
                assert "inputs" in action["runtimeConfiguration"]["secureData"]["properties"], name

    check(definition["actions"])
    approval = all_actions(definition["actions"])["Ask_approver"]
    assert approval["type"] == "ApiConnectionWebhook" and approval["inputs"]["path"] == "/approvalmail/$subscriptions"
    timed_out = [n for n, a in definition["actions"].items() if a.get("runAfter", {}).get("Ask_approver") == ["TimedOut"]]
    assert timed_out, "nobody is told when the approval times out"
    assert wf["parameters"]["$connections"]["value"]["office365"]["id"].endswith("/managedApis/office365")


@pytest.mark.parametrize("file", WORKFLOWS)
def test_the_standard_variant_is_the_same_workflow_in_standard_files(file):
    """Logic Apps Standard: one folder per workflow (workflow.json with its kind), connections.json for the
    managed connection (referenced by name), parameters.json (from app settings) and host.json."""
    standard = standard_workflow(STANDARD_OF[file])
    assert standard["kind"] in ("Stateful", "Stateless") and set(standard) == {"definition", "kind"}
    assert standard["kind"] == "Stateful"  # an approval waits for days: only stateful workflows may
    consumption = workflow(file)["definition"]
    expected = json.loads(json.dumps({k: v for k, v in consumption.items() if k != "parameters"}).replace(
        '"connection": {"name": "@parameters(\'$connections\')[\'office365\'][\'connectionId\']"}',
        '"connection": {"referenceName": "office365"}'))
    assert standard["definition"] == expected, "the Standard workflow drifted from the Consumption one"
    connections = json.loads((STANDARD / "connections.json").read_text())["managedApiConnections"]
    referenced = set(re.findall(r'"referenceName": "([^"]+)"', json.dumps(standard)))
    assert referenced == set(connections) == {"office365"}
    office365 = connections["office365"]
    assert office365["api"]["id"].endswith("/managedApis/office365")
    assert office365["authentication"] == {"type": "ManagedServiceIdentity"}
    parameters = json.loads((STANDARD / "parameters.json").read_text())
    used = set(re.findall(r"parameters\('([^']+)'\)", json.dumps(standard)))
    assert used == set(parameters), used ^ set(parameters)
    # Values come from app settings (a secret one as a Key Vault reference there), never a literal.
    assert all(re.fullmatch(r"@appsetting\('[A-Z0-9_]+'\)", p["value"]) for p in parameters.values())
    host = json.loads((STANDARD / "host.json").read_text())
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle.Workflows"


@pytest.mark.parametrize("file", WORKFLOWS)
def test_every_expression_in_the_workflow_reads(file):
    texts = re.findall(r'"(@[^"]*)"', json.dumps(workflow(file)["definition"]))
    for text in texts:
        for expression in (re.findall(r"@\{([^}]*)\}", text) if text.startswith("@{") or "@{" in text
                           else [text[1:]]):
            Expression(expression, {}).tokens  # tokenizes: no character the language does not have


def composed(trigger: dict[str, Any], claims: dict[str, Any] = PERSON, file: str = "workflow.json") -> Run:
    """The workflow's Compose actions (the requester from the token, the body the approver sees) evaluated."""
    definition = workflow(file)["definition"]
    composes = {n: a for n, a in definition["actions"].items() if a["type"] == "Compose"}
    run = Run(trigger_body=trigger, parameters={"approverEmail": "approvers@contoso.org"},
              trigger_headers={"Authorization": f"Bearer {unsigned_token(claims)}"})
    Engine(http=None, token=None, approval=None, sleep=None)._actions(composes, run)
    return run


@pytest.mark.parametrize("action_name", sorted(http_actions()))
def test_http_action_calls_a_real_operation_with_real_fields(action_name):
    doc = build_document("2.0", CONNECTOR)
    key_header = doc["securityDefinitions"]["functionKey"]["name"]
    inputs = http_actions()[action_name]["inputs"]
    found = operation_for(doc, inputs["method"], inputs["uri"])
    if found is None and "body" not in inputs:
        # An HTTP action may call any operation: the 3.0 document also has the text/plain `env` format, which
        # the 2.0 one (for connectors, JSON only) leaves out.
        doc = build_document("3.0", CONNECTOR)
        found = operation_for(doc, inputs["method"], inputs["uri"])
    assert found is not None, f"{action_name}: {inputs['method']} {inputs['uri']} is no operation of the API"
    _template, op = found
    parameters = {p["name"].lower(): p for p in op.get("parameters", [])}
    for header in inputs.get("headers", {}):
        assert header.lower() in ("content-type", key_header) or (
            header.lower() in parameters and parameters[header.lower()]["in"] == "header"), (action_name, header)
    if "body" not in inputs:
        assert not any(p["in"] == "body" for p in op.get("parameters", []))
        return
    body_schema = resolve(doc, next(p["schema"] for p in op["parameters"] if p["in"] == "body"))
    for kind, trigger in TRIGGERS.items():
        run = composed(trigger)
        body = run.value(inputs["body"])
        assert set(body) <= set(body_schema["properties"]), (kind, set(body) - set(body_schema["properties"]))
        TypeAdapter(RegistrationRequest).validate_python(body)  # what the API itself will accept


# ------------------------------------------------------------------------------------- running it
@pytest.fixture(scope="module")
def person(tenant) -> dict[str, str]:
    """The requester: the local user, signed in through the portal client for the API (delegated token, v2),
    as they call the workflow's trigger and, later, the API itself."""
    portal = tenant.seed.portal_client
    app = public_app(tenant, portal.app_id)
    flow = app.initiate_auth_code_flow([f"{tenant.seed.api.identifier_uri}/user_impersonation"],
                                       redirect_uri=portal.redirect_uri)
    result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(tenant, flow["auth_uri"]))
    assert "access_token" in result, result
    return {"token": result["access_token"], "oid": tenant.seed.user.object_id, "upn": tenant.seed.user.upn}


def trigger_policies(tenant) -> dict[str, list[dict[str, str]]]:
    """The workflow's Entra ID authorization policies as infra/app/logicapp.bicep deploys them, for the local
    tenant."""
    return bicep_trigger_policies(LOGIC_BICEP.read_text(), {
        "${environment().authentication.loginEndpoint}": tenant.authority_host + "/",
        "${tenant().tenantId}": tenant.tenant_id, "apiClientId": tenant.seed.api.app_id})


def triggered(tenant, trigger: dict[str, Any], authorization: str | None, **run_args) -> Run:
    """A call of the trigger: refused (TriggerRefused) unless a policy admits its token; else the run."""
    jwks = httpx.get(f"{tenant.authority}/discovery/v2.0/keys", verify=ssl.create_default_context(cafile=tenant.ca_file),
                     trust_env=False).json()
    authorize_trigger(trigger_policies(tenant), authorization, jwks)
    return Run(trigger_body=trigger, trigger_headers={"Authorization": authorization}, **run_args)


def engine_for(host, tenant, waits_hook=None) -> Engine:
    tokens: dict[str, str] = {}

    def managed_identity(audience: str) -> str:
        # The Logic App's identity holds Registrations.Broker only; the seeded broker client stands in for it.
        assert audience == tenant.seed.api.identifier_uri
        if audience not in tokens:
            tokens[audience] = api_token(tenant, tenant.seed.broker_client)
        return tokens[audience]

    return Engine(http=httpx.Client(trust_env=False, timeout=120), token=managed_identity,
                  approval=lambda inputs: "Approve", sleep=waits_hook or (lambda seconds: None))


def parameters_for(host, tenant) -> dict[str, Any]:
    return {"apiBase": f"{host.url}/api", "apiAudience": tenant.seed.api.identifier_uri,
            "functionKey": FUNCTION_KEY, "approverEmail": "approvers@contoso.org",
            "$connections": workflow()["parameters"]["$connections"]["value"]}


def play(host, tenant, person, trigger, *, engine=None, file="workflow.json", definition=None) -> tuple[Engine, Run]:
    engine = engine or engine_for(host, tenant)
    run = triggered(tenant, trigger, f"Bearer {person['token']}", parameters=parameters_for(host, tenant))
    engine.run(definition or workflow(file)["definition"], run)
    return engine, run


def mail(engine: Engine, action: str) -> dict[str, Any]:
    (inputs,) = [inputs for name, inputs in engine.connector_calls if name == action]
    return inputs["body"]


def test_the_trigger_admits_only_a_token_for_the_api_from_this_tenant(tenant, person):
    trigger = TRIGGERS["service"]
    assert triggered(tenant, trigger, f"Bearer {person['token']}", parameters={}).trigger_body == trigger
    graph_token = api_token(tenant, tenant.seed.requester_client).split(".")
    forged = ".".join([graph_token[0], unsigned_token(PERSON).split(".")[1], graph_token[2]])
    for authorization in (None, "Bearer ", f"Bearer {unsigned_token(PERSON)}", f"Bearer {forged}",
                          f"Bearer {tenant.federated_assertion('repo:x')}"):
        with pytest.raises(TriggerRefused):
            triggered(tenant, trigger, authorization, parameters={})


def test_nothing_the_approver_did_not_see_reaches_the_api_and_the_requester_owns_the_result(
        host, tenant, person, as_):
    """The trigger body carries fields the approval does not show (a secret reader of the caller's choosing,
    owners, a credential, a redirect URI on a service client, a requester of its own): the API gets exactly the
    body the approver saw, the registration is the signed-in person's, and that person's own token (not the
    Logic App's) reads, rotates and deletes it."""
    workload = tenant.seed.reader_client.object_id
    smuggled = {"secretReaders": [workload], "owners": [tenant.seed.admin_client.object_id],
                "credential": {"kind": "certificate"}, "redirectUris": ["https://evil.example.net/cb"],
                "requesterEmail": "mallory@evil.example.net", "requestedBy": tenant.seed.admin_client.object_id,
                "notes": "approved already", "autoRotate": True, "identifierUri": "api://evil"}
    trigger = {**TRIGGERS["service"], "name": "la-run-approved", **smuggled}
    engine, run = play(host, tenant, person, trigger)
    approval = mail(engine, "Ask_approver")["Message"]
    shown = json.loads(approval["Body"].split("and nothing else: ", 1)[1])
    (create,) = [request for name, request in engine.requests if name == "Create_registration"]
    sent = json.loads(create.content)
    assert sent == shown  # the approver saw every field that was sent
    assert set(sent) == {"type", "name", "displayName", "dicomService", "access", "secretReaders", "notes"}
    assert sent["secretReaders"] == [workload]  # shown, so approved: the workload that will read the secret
    for field in ("owners", "credential", "redirectUris", "requesterEmail", "requestedBy", "autoRotate",
                  "identifierUri"):
        assert field not in sent and field not in json.dumps(shown), field
    assert person["upn"] in approval["Body"] and person["oid"] in approval["Body"]
    assert create.headers[BROKER_HEADER] == person["oid"]
    assert run.outputs["Create_registration"]["statusCode"] == 201
    made = run.outputs["Create_registration"]["body"]
    assert made["requestedBy"] == person["oid"] and made["credential"]["kind"] == "secret"

    done = mail(engine, "Send_configuration")
    assert done["To"] == person["upn"]
    assert "DICOM_CLIENT_ID=" in done["Body"] and "config/dicomweb-client" in done["Body"]
    secret = secret_client(tenant).get_secret("dicomreg--la-run-approved--secret").value
    assert secret not in json.dumps(engine.connector_calls) and secret not in json.dumps(run.outputs)
    assert_run_history_hides_the_key_and_token(run, tenant)

    own = {"Authorization": f"Bearer {person['token']}", "x-functions-key": FUNCTION_KEY}
    url = f"{host.url}/api/registrations/la-run-approved"
    with httpx.Client(trust_env=False, timeout=120) as http:
        broker = {"Authorization": f"Bearer {api_token(tenant, tenant.seed.broker_client)}",
                  "x-functions-key": FUNCTION_KEY}
        assert http.get(url, headers=broker).status_code == 403  # in its own name the Logic App may do nothing
        assert as_["requester"].get("/registrations/la-run-approved").status_code == 404  # another requester
        assert http.get(url, headers=own).json()["requestedBy"] == person["oid"]
        rotated = http.post(f"{url}/credentials", headers={**own, "Idempotency-Key": "la-rotate-1"})
        assert rotated.status_code == 201, rotated.text
        gone = http.delete(url, headers=own)
        assert gone.status_code == 200, gone.text
        assert http.get(url, headers=own).status_code == 404


def test_a_refused_request_ends_in_the_failure_branch_with_the_api_s_problem(host, tenant, person):
    # REQUESTER_ACCESS is unset: a requester may ask for reader access only; the approver approved admin.
    engine, run = play(host, tenant, person, {**TRIGGERS["service"], "name": "la-run-refused", "access": "admin"})
    assert run.outputs["Create_registration"]["statusCode"] == 403
    problem = run.outputs["Create_registration"]["body"]
    told = mail(engine, "Tell_failure")
    assert told["To"] == person["upn"]
    assert problem["title"] in told["Body"] and problem["detail"] in told["Body"]
    assert "reader" in problem["detail"]
    assert [name for name, _ in engine.connector_calls] == ["Ask_approver", "Tell_failure"]
    assert objects_named(tenant, "la-run-refused")["applications"] == []


def test_an_unanswered_approval_times_out_and_the_requester_is_told(host, tenant, person):
    engine = engine_for(host, tenant)
    engine.approval = lambda inputs: TIMED_OUT
    play(host, tenant, person, {**TRIGGERS["service"], "name": "la-run-timeout"}, engine=engine)
    assert engine.sent == []
    assert [name for name, _ in engine.connector_calls] == ["Ask_approver", "Tell_timed_out"]
    assert mail(engine, "Tell_timed_out")["To"] == person["upn"]


@pytest.mark.slow(10)
def test_simulated_run_retries_a_503_and_ends_with_the_configuration(host, tenant, person):
    trigger = dict(TRIGGERS["service"], name="la-run-service")
    # Graph unavailable for longer than the API's own retries: the API answers 503, Logic Apps retries.
    tenant.set_faults({"failures": [{"operation": "graph.listOwnedObjects", "nth": 1, "status": 503, "times": None}]})
    waits: list[float] = []

    def outage_ends_while_logic_apps_waits(seconds: float) -> None:
        waits.append(seconds)
        tenant.set_faults({})

    try:
        engine, run = play(host, tenant, person, trigger, engine=engine_for(host, tenant, outage_ends_while_logic_apps_waits))
    finally:
        tenant.set_faults({})
    creates = [s for s in engine.sent if s[0] == "Create_registration"]
    assert [status for *_, status in creates] == [503, 201], creates
    assert waits[0] == 7.0  # the first exponential step of the policy in the workflow
    assert run.outputs["Wait_for_verification"]["status"] == "Succeeded"

    found = objects_named(tenant, "la-run-service")
    assert (len(found["applications"]), len(found["passwords"])) == (1, 1)

    config = run.outputs["Create_registration"]["body"]["config"]
    assert config["clientSecret"]["keyVaultSecretUri"] in mail(engine, "Send_configuration")["Body"]
    secret = secret_client(tenant).get_secret("dicomreg--la-run-service--secret").value
    assert secret not in json.dumps(run.outputs) and secret not in json.dumps(engine.connector_calls)
    assert run.outputs["Acknowledge"]["body"]["status"] == "awaiting approval"
    assert {"Create_registration", "Wait_for_verification", "Get_settings"} <= set(run.history)
    assert_run_history_hides_the_key_and_token(run, tenant)


def assert_run_history_hides_the_key_and_token(run: Run, tenant) -> None:
    history = json.dumps(run.history)
    assert run.history, "no HTTP action ran"
    assert FUNCTION_KEY not in history and "Bearer " not in history
    assert all(entry["inputs"] == SECURED for entry in run.history.values())
    assert all(entry["outputs"] != SECURED for entry in run.history.values())  # outputs stay readable


def test_without_secure_inputs_the_run_history_would_show_the_key(host, tenant, person):
    """The check above can fail: the same run with secureData removed shows the key and the token."""
    definition = workflow()["definition"]
    for action in all_actions(definition["actions"]).values():
        action.pop("runtimeConfiguration", None)
    _, run = play(host, tenant, person, dict(TRIGGERS["service"], name="la-run-unsecured"), definition=definition)
    history = json.dumps(run.history)
    assert FUNCTION_KEY in history and "Bearer " in history
    with pytest.raises(AssertionError):
        assert_run_history_hides_the_key_and_token(run, tenant)


def test_simulated_run_of_a_rejected_request_calls_nothing(host, tenant, person):
    engine = engine_for(host, tenant)
    engine.approval = lambda inputs: "Reject"
    play(host, tenant, person, dict(TRIGGERS["public"], name="la-run-rejected"), engine=engine)
    assert engine.sent == []
    assert [name for name, _ in engine.connector_calls] == ["Ask_approver", "Send_rejection"]


@pytest.mark.slow(8)
def test_simulated_run_polls_verification_until_the_credential_works(host, tenant, person):
    doc = httpx.get(f"{host.url}/api/openapi.json", trust_env=False).json()
    assert VERIFICATION in {(m, p) for m, p, _ in operations(doc).values()}, "the document has no verification"
    tenant.set_faults({"replicationDelayMs": 3000})
    engine = engine_for(host, tenant, lambda seconds: __import__("time").sleep(min(seconds, 1.0)))
    try:
        _, run = play(host, tenant, person, dict(TRIGGERS["service"], name="la-run-verify"), engine=engine)
    finally:
        tenant.set_faults({})
    statuses = [status for name, _m, _u, status in engine.sent if name == "Wait_for_verification"]
    assert statuses[-1] == 200 and 202 in statuses, statuses
    assert run.outputs["Wait_for_verification"]["statusCode"] == 200


def test_the_standard_variant_runs_the_same_way(host, tenant, person):
    engine, run = play(host, tenant, person, dict(TRIGGERS["service"], name="la-run-standard"),
                       definition=standard_workflow("dicom-access-request")["definition"])
    assert run.outputs["Create_registration"]["body"]["requestedBy"] == person["oid"]
    assert mail(engine, "Send_configuration")["To"] == person["upn"]
    own = {"Authorization": f"Bearer {person['token']}", "x-functions-key": FUNCTION_KEY}
    gone = httpx.delete(f"{host.url}/api/registrations/la-run-standard", headers=own, trust_env=False, timeout=120)
    assert gone.status_code == 200, gone.text


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


def test_simulated_change_run_reads_the_etag_and_keeps_the_client_id(host, tenant, person):
    # A requester makes public and confidential clients only once ALLOWED_REDIRECT_HOSTS is set.
    with settings_override(ALLOWED_REDIRECT_HOSTS="portal.contoso.org,portal-next.contoso.org"):
        simulated_change_run(host, tenant, person)


def simulated_change_run(host, tenant, person) -> None:
    own = {"Authorization": f"Bearer {person['token']}", "x-functions-key": FUNCTION_KEY}
    made = httpx.post(f"{host.url}/api/registrations", headers=own, trust_env=False, timeout=120, json={
        "type": "confidential", "name": "la-change", "displayName": "Portal", "dicomService": "managed",
        "redirectUris": ["https://portal.contoso.org/signin-oidc"]})
    assert made.status_code == 201, made.text
    new = ["https://portal-next.contoso.org/signin-oidc"]
    engine, run = play(host, tenant, person, {"name": "la-change", "redirectUris": new}, file=CHANGE)
    assert [(name, method, status) for name, method, _url, status in engine.sent] == [
        ("Read_registration", "GET", 200), ("Change_redirect_URIs", "PATCH", 200)]
    changed = run.outputs["Change_redirect_URIs"]["body"]
    assert changed["changed"] == ["redirectUris"] and changed["redirectUris"] == new
    assert changed["appId"] == made.json()["appId"]
    confirmation = mail(engine, "Send_confirmation")
    assert new[0] in confirmation["Body"] and confirmation["To"] == person["upn"]
    assert set(run.history) == {"Read_registration", "Change_redirect_URIs"}
    assert_run_history_hides_the_key_and_token(run, tenant)
    assert workflow(CHANGE)["parameters"]["functionKey"] == {"value": "[parameters('functionKey')]"}
    # Someone else's registration: the API answers 404 to the broker acting for this person, and they are told.
    other = {"Authorization": f"Bearer {api_token(tenant, tenant.seed.requester_client)}", "x-functions-key": FUNCTION_KEY}
    theirs = httpx.post(f"{host.url}/api/registrations", headers=other, trust_env=False, timeout=120, json={
        "type": "confidential", "name": "la-change-other", "displayName": "Other", "dicomService": "managed",
        "redirectUris": ["https://portal.contoso.org/signin-oidc"]})
    assert theirs.status_code == 201, theirs.text
    engine, run = play(host, tenant, person, {"name": "la-change-other", "redirectUris": new}, file=CHANGE)
    assert run.outputs["Read_registration"]["statusCode"] == 404
    assert run.outputs["Read_registration"]["body"]["detail"] in mail(engine, "Tell_failure")["Body"]
    for name, headers in (("la-change", own), ("la-change-other", other)):
        gone = httpx.delete(f"{host.url}/api/registrations/{name}", headers=headers, trust_env=False, timeout=120)
        assert gone.status_code == 200, gone.text
