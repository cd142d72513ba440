"""The north star: the self-service path end to end, from an empty local tenant, with its figures.

An operator runs setup once on a bare tenant (as docs/deploying.md says, under make run's 3 s replication
delay); a person signs in at the sample approval workflow's trigger (its Entra ID policy from
infra/app/logicapp.bicep) and asks for a study writer that their workload will use, naming the workload in
secretReaders; the approver clicks Approve; the workflow creates and verifies the registration as a broker
for that person and mails them the settings; the person fetches the dicomweb-client script with their own
token; the workload runs it with its own identity and stores and reads back a study in the DICOM service.

It prints wall time, the software's own share (time inside API calls), the manual steps people took and the
secrets people saw (the goal: none). `make north-star` runs this alone, printing the figures."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from localtenant import LocalTenant
from tests.openapi.workflow_engine import Engine, Run, authorize_trigger, bicep_trigger_policies
from tests.support import FUNCTION_KEY, claims, client_credentials_token, follow_authorize, public_app, \
    secret_client, settings_override

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "logic-apps" / "workflow.json"
REPLICATION_DELAY_MS = 3000  # what make run uses: Entra shows a new object to every reader after seconds


class Figures:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.api_seconds = 0.0
        self.manual: list[str] = []
        self.seen_by_people: list[str] = []  # everything a person was shown: mails, the approval, printed output

    def timed(self, response: httpx.Response) -> httpx.Response:
        self.api_seconds += response.elapsed.total_seconds()
        return response


def operator_setup(lt: LocalTenant, figures: Figures) -> dict[str, str]:
    """The operator's one command: setup as docs/deploying.md gives it, signed in as an administrator."""
    settings = {k: v for k, v in lt.app_settings().items() if not k.startswith("IDENTITY_")}
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **settings,
           "AZURE_CLIENT_ID": lt.seed.operator.app_id, "AZURE_CLIENT_SECRET": lt.seed.operator.secret}
    seed = lt.seed
    command = ["--principal-id", seed.product.object_id, "--admin", seed.admin_client.object_id,
               "--broker", seed.broker_client.object_id, "--requester", seed.user.object_id,
               "--front-end", seed.portal_client.app_id]
    figures.manual.append("operator: python -m registrations.setup " + " ".join(
        arg if arg.startswith("--") else "…" for arg in command))
    done = subprocess.run([sys.executable, "-m", "registrations.setup", *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    figures.seen_by_people.append(done.stdout)
    printed = dict(line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("API_"))
    assert set(printed) == {"API_CLIENT_ID", "API_AUDIENCE"}, done.stdout
    return printed


def person_signs_in(lt: LocalTenant, audience: str) -> str:
    """The requester signs in through the front end (pre-authorized by setup: no consent prompt)."""
    portal = lt.seed.portal_client
    app = public_app(lt, portal.app_id)
    flow = app.initiate_auth_code_flow([f"{audience}/user_impersonation"], redirect_uri=portal.redirect_uri)
    result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(lt, flow["auth_uri"]))
    assert "access_token" in result, result
    return result["access_token"]


def with_role(get_token, role: str, *, within: float = 30.0) -> str:
    deadline = time.monotonic() + within
    while True:
        token = get_token()
        if role in claims(token).get("roles", []):
            return token
        assert time.monotonic() < deadline, f"no token with {role} within {within} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def empty_tenant(host):
    with LocalTenant.start(bare=True, faults={"replicationDelayMs": REPLICATION_DELAY_MS}) as lt:
        yield lt


@pytest.mark.slow(20)
def test_the_north_star(empty_tenant, host, tmp_path, record_property):
    lt, figures = empty_tenant, Figures()
    printed = operator_setup(lt, figures)
    # The deployment's policy (a setting, not a step): requesters may ask for writers on the managed service.
    with settings_override(**lt.app_settings(), **printed, REQUESTER_ACCESS='{"managed": ["reader", "writer"]}'):
        # Entra shows the new app role assignments to its token issuer after seconds (the replication delay):
        # a token asked for at once may not carry the role yet, so each caller's first token is awaited.
        person = with_role(lambda: person_signs_in(lt, printed["API_AUDIENCE"]), "Registrations.Request")
        workload = lt.seed.reader_client  # the workload's own identity (its managed identity in Azure)
        request = {"name": "north-star-writer", "type": "service", "dicomService": "managed", "access": "writer",
                   "displayName": "Study writer", "secretReaders": [workload.object_id]}
        figures.manual.append("requester: sends the request, signed in")

        # The workflow, as deployed: its trigger's policy, its identity a broker.
        jwks = httpx.get(f"{lt.authority}/discovery/v2.0/keys", trust_env=False,
                         verify=ssl.create_default_context(cafile=lt.ca_file)).json()
        policies = bicep_trigger_policies((ROOT / "infra" / "app" / "logicapp.bicep").read_text(), {
            "${environment().authentication.loginEndpoint}": lt.authority_host + "/",
            "${tenant().tenantId}": lt.tenant_id, "apiClientId": printed["API_CLIENT_ID"]})
        authorize_trigger(policies, f"Bearer {person}", jwks)
        broker_token = with_role(lambda: client_credentials_token(
            lt, lt.seed.broker_client.app_id, lt.seed.broker_client.secret, f"{printed['API_AUDIENCE']}/.default"),
            "Registrations.Broker")

        def approver(inputs: dict) -> str:
            figures.manual.append("approver: clicks Approve")
            figures.seen_by_people.append(json.dumps(inputs))
            return "Approve"

        engine = Engine(http=httpx.Client(trust_env=False, timeout=120), token=lambda audience: broker_token,
                        approval=approver, sleep=lambda seconds: time.sleep(min(seconds, 1.0)))
        sample = json.loads(SAMPLE.read_text())
        definition = sample["definition"]
        run = engine.run(definition, Run(
            trigger_body=request, trigger_headers={"Authorization": f"Bearer {person}"},
            parameters={"apiBase": f"{host.url}/api", "apiAudience": printed["API_AUDIENCE"],
                        "functionKey": FUNCTION_KEY, "approverEmail": "approvers@contoso.org",
                        "$connections": sample["parameters"]["$connections"]["value"]}))
        figures.api_seconds += engine.api_seconds
        assert run.outputs["Wait_for_verification"].get("statusCode") == 200, (
            run.outputs["Create_registration"].get("body"), engine.sent)
        mails = [inputs for name, inputs in engine.connector_calls if name != "Ask_approver"]
        figures.seen_by_people += [json.dumps(mail) for mail in mails]
        (ready,) = [mail["body"] for mail in mails if mail["body"]["Subject"].endswith("is ready and verified")]

        # The person fetches the script the mail points at, with their own token.
        own = {"Authorization": f"Bearer {person}", "x-functions-key": FUNCTION_KEY}
        script = figures.timed(httpx.get(f"{host.url}/api/registrations/north-star-writer/config/dicomweb-client",
                                         headers=own, trust_env=False, timeout=60))
        assert script.status_code == 200, script.text
        figures.seen_by_people.append(script.text)
        (tmp_path / "study_writer.py").write_text(script.json()["python"])

        # The workload runs it with its own identity (EnvironmentCredential here; its managed identity in Azure).
        from pydicom.data import get_testdata_file

        environment = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                       "AZURE_TENANT_ID": lt.tenant_id, "AZURE_AUTHORITY_HOST": lt.authority_host,
                       "AZURE_CLIENT_ID": workload.app_id, "AZURE_CLIENT_SECRET": workload.secret,
                       "REQUESTS_CA_BUNDLE": lt.ca_file}
        stored = subprocess.run([sys.executable, "study_writer.py", get_testdata_file("CT_small.dcm")],
                                cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
        assert stored.returncode == 0, stored.stdout + stored.stderr
        assert "stored and read back" in stored.stdout and "same pixels: True" in stored.stdout, stored.stdout

        secret = secret_client(lt).get_secret("dicomreg--north-star-writer--secret").value
        seen = "\n".join(figures.seen_by_people)
        secrets_seen = sum(value in seen for value in (secret, workload.secret, FUNCTION_KEY, broker_token, person))
        assert run.outputs["Create_registration"]["body"]["requestedBy"] == lt.seed.user.object_id
        assert "DICOM_CLIENT_ID=" in ready["Body"]
    wall = time.monotonic() - figures.started
    line = (f"north star: wall {wall:.1f} s; the software's own share (inside API calls) "
            f"{figures.api_seconds:.1f} s ({figures.api_seconds / wall:.0%}); manual steps {len(figures.manual)}: "
            + "; ".join(figures.manual) + f"; secrets seen by a person: {secrets_seen}")
    # Printed at the end of the run's summary (tests/conftest.py), from a parallel worker too.
    record_property("figures", line)
    assert secrets_seen == 0
    assert [step.split(":")[0] for step in figures.manual] == ["operator", "requester", "approver"]
