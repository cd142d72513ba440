"""`python -m registrations.setup --import`: registrations made before the registry (tags only) are imported
only when the API's identity alone owns them; the rest are listed for an administrator to adopt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from localtenant import LocalTenant
from tests.support import api_client, api_token, ca_context, user_graph_token

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lt():
    with LocalTenant.start() as tenant:
        yield tenant


def graph(lt, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{lt.graph_endpoint}/v1.0", verify=ca_context(lt.ca_file), trust_env=False,
                        headers={"Authorization": f"Bearer {token}"})


def identity_token(lt) -> str:
    return httpx.get(lt.identity_endpoint, params={"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"},
                     headers={"X-IDENTITY-HEADER": lt.identity_header}, trust_env=False).json()["access_token"]


def old_tags(lt, sp_hint: str) -> list[str]:
    """Tags as the API wrote them before the registry (including a service principal id to find)."""
    return ["dicom-registration", "dicom-type:service", "dicom-target:managed",
            f"dicom-requester:{lt.seed.admin_client.object_id}", "dicom-state:ready", "dicom-access:reader",
            "dicom-credential:secret", f"dicom-sp:{sp_hint}"]


def made_by(client: httpx.Client, lt, name: str, sp_hint: str) -> dict:
    made = client.post("/applications", json={"displayName": name, "uniqueName": f"dicomreg-{name}",
                                              "tags": old_tags(lt, sp_hint)})
    assert made.status_code == 201, made.text
    return made.json()


def run_import(lt, *extra: str) -> str:
    """The command line, signed in as the function app's own identity (DefaultAzureCredential finds the
    managed identity endpoint), as from the app's console: it reads Graph and writes the registry."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **lt.app_settings()}
    done = subprocess.run([sys.executable, "-m", "registrations.setup", "--principal-id", lt.seed.product.object_id,
                           "--import", *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_only_what_the_identity_alone_owns_is_imported_and_the_rest_is_listed(lt, host):
    product = lt.seed.product.object_id
    with graph(lt, identity_token(lt)) as api_identity:
        other = made_by(api_identity, lt, "old-other", "00000000-0000-0000-0000-000000000000")
        other_sp = api_identity.post("/servicePrincipals", json={"appId": other["appId"]}).json()
        solo = made_by(api_identity, lt, "old-solo", other_sp["id"])  # its dicom-sp tag names another principal
        solo_sp = api_identity.post("/servicePrincipals", json={"appId": solo["appId"]})
        assert solo_sp.status_code == 201, solo_sp.text
        solo_sp = solo_sp.json()
    with graph(lt, user_graph_token(lt, lt.seed.member.upn)) as member:  # a squatter's look-alike
        shared = made_by(member, lt, "old-shared", "00000000-0000-0000-0000-000000000000")
        added = member.post(f"/applications/{shared['id']}/owners/$ref",
                            json={"@odata.id": f"{lt.graph_endpoint}/v1.0/directoryObjects/{product}"})
        assert added.status_code == 204, added.text

    plan = run_import(lt, "--what-if")
    assert "would import old-solo" in plan and "old-shared" in plan
    assert not [r for r in lt.registry_rows() if r["RowKey"].startswith("reg:old-")]

    out = run_import(lt)
    assert "import old-solo" in out and "import old-other" in out
    assert "left for an administrator to adopt: old-shared" in out and lt.seed.member.object_id in out
    rows = {r["RowKey"].removeprefix("reg:"): r for r in lt.registry_rows() if r["RowKey"].startswith("reg:old-")}
    assert set(rows) == {"old-solo", "old-other"}
    assert rows["old-solo"]["sp_id"] == solo_sp["id"]  # found by appId, not by the tag
    again = run_import(lt)
    assert "0 imported, 2 recorded already, 1 left to adopt" in again  # run twice, the second writes nothing

    from tests.support import settings_override

    with settings_override(**lt.app_settings()), api_client(host, api_token(lt, lt.seed.admin_client)) as api:
        got = api.get("/registrations/old-solo")
        assert got.status_code == 200 and got.json()["servicePrincipalId"] == solo_sp["id"], got.text
        assert api.get("/registrations/old-shared").status_code == 404
