"""A typed Python client generated from the OpenAPI 3.0 document the API serves, with openapi-python-client
(pinned in requirements-dev.txt), drives the whole API against the local host: create, replay, get, list with
paging, the configuration in every format, rotation, verification through its 202s, delete and the problem
answers. The client is used as its README says (an AuthenticatedClient with the bearer token; the function
key as one of the client's headers, since the generator applies no apiKey scheme); nothing in the document or
the client is patched. A missing generator fails, never skips."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from registrations.kinds import PLANS
from registrations.views import FORMATS
from tests.support import FUNCTION_KEY

PACKAGE = "dicom_registrations_client"
# The generator runs ruff over its output by default; the test does not need formatted code.
CONFIG = "post_hooks: []\n"


@pytest.fixture(scope="module")
def generated(host, tmp_path_factory) -> Iterator[ModuleType]:
    work = tmp_path_factory.mktemp("generated")
    document = httpx.get(f"{host.url}/api/openapi3.json", trust_env=False).json()
    (work / "openapi3.json").write_text(json.dumps(document))
    (work / "config.yaml").write_text(CONFIG)
    done = subprocess.run([sys.executable, "-m", "openapi_python_client", "generate", "--path", "openapi3.json",
                           "--meta", "none", "--output-path", PACKAGE, "--config", "config.yaml"],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Unsupported" not in done.stdout + done.stderr and "Unable to" not in done.stdout + done.stderr, \
        done.stdout + done.stderr
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def op(generated: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{generated.__name__}.api.registrations.{name}")


def models(generated: ModuleType) -> Any:
    return importlib.import_module(f"{generated.__name__}.models")


@pytest.fixture(scope="module")
def client(generated, host, admin_token):
    client_module = importlib.import_module(f"{generated.__name__}.client")
    with client_module.AuthenticatedClient(base_url=f"{host.url}/api", token=admin_token,
                                           headers={"x-functions-key": FUNCTION_KEY},
                                           raise_on_unexpected_status=True) as authenticated:
        yield authenticated


def problem_type(parsed: Any) -> str:
    return parsed.type_.value


def test_create_replay_get_list_config_rotate_verify_delete(generated, client, tenant):
    m = models(generated)
    body = m.ServiceRequest.from_dict({"type": "service", "name": "gen-service", "displayName": "Generated client",
                                       "dicomService": "managed", "access": "reader"})
    created = op(generated, "create_registration").sync_detailed(client=client, body=body, idempotency_key="gen-1")
    assert created.status_code == 201, created.content
    registration = created.parsed
    assert isinstance(registration, m.Registration)
    assert registration.access.value == "reader" and registration.platform is None

    replay = op(generated, "create_registration").sync_detailed(client=client, body=body, idempotency_key="gen-1")
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.parsed.app_id == registration.app_id

    # A confidential client: access is null, platform is set (the answers that crashed an earlier client).
    web = m.ConfidentialRequest.from_dict({"type": "confidential", "name": "gen-web", "displayName": "Generated web",
                                           "dicomService": "managed",
                                           "redirectUris": ["https://portal.contoso.org/signin-oidc"]})
    confidential = op(generated, "create_registration").sync(client=client, body=web)
    assert isinstance(confidential, m.Registration) and confidential.access is None
    assert confidential.platform.value == "web"

    got = op(generated, "get_registration").sync(name="gen-service", client=client)
    assert isinstance(got, m.Registration) and got.app_id == registration.app_id

    # Paging: one registration a page, following the cursor the page exposes.
    seen, after = [], None
    for _ in range(50):
        page = op(generated, "list_registrations").sync(client=client, top=1,
                                                        **({"after": after} if after else {}))
        assert isinstance(page, m.RegistrationList) and len(page.value) <= 1
        seen += [item.name for item in page.value]
        if not isinstance(page.next_after, str):
            break
        assert page.next_link.endswith(f"after={page.next_after}") or "after=" in page.next_link
        after = page.next_after
    assert {"gen-service", "gen-web"} <= set(seen) and seen == sorted(seen) and len(seen) >= 2

    for fmt_name, fmt in FORMATS.items():
        module = op(generated, "get_registration_config_as_" + fmt_name.replace("-", "_"))
        answer = module.sync_detailed(name="gen-service", client=client)
        if fmt_name not in PLANS["service"].formats:  # ohif is for SPA clients: a 422 naming those that apply
            assert answer.status_code == 422, (fmt_name, answer.content)
            continue
        assert answer.status_code == 200, (fmt_name, answer.content)
        assert answer.headers["content-type"].split(";")[0] == fmt.content_type.split(";")[0]
        if fmt.is_json:
            assert answer.parsed.to_dict(), fmt_name
        else:
            assert isinstance(answer.parsed, str) and registration.app_id in answer.parsed

    rotate = op(generated, "rotate_credential")
    rotated = rotate.sync_detailed(name="gen-service", client=client, idempotency_key="gen-rotate-1")
    assert rotated.status_code == 201 and isinstance(rotated.parsed, m.CredentialList)
    again = rotate.sync_detailed(name="gen-service", client=client, idempotency_key="gen-rotate-1")
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    listed = op(generated, "list_credentials").sync(name="gen-service", client=client)
    assert isinstance(listed, m.CredentialList)

    deleted = op(generated, "delete_registration").sync(name="gen-web", client=client)
    assert isinstance(deleted, m.DeletionReport)
    assert {item.kind for item in deleted.removed} >= {"application", "servicePrincipal"}
    gone = op(generated, "get_registration").sync_detailed(name="gen-web", client=client)
    assert gone.status_code == 404 and isinstance(gone.parsed, m.ProblemDetails)
    assert problem_type(gone.parsed).endswith(":not-found")
    assert isinstance(op(generated, "delete_registration").sync(name="gen-service", client=client),
                      m.DeletionReport)


@pytest.mark.slow(7)
def test_verification_answers_202_then_200_through_the_client(generated, client, tenant):
    m = models(generated)
    tenant.set_faults({"replicationDelayMs": 3000})
    try:
        body = m.ServiceRequest.from_dict({"type": "service", "name": "gen-verify", "displayName": "Generated verify",
                                           "dicomService": "managed", "access": "reader"})
        assert op(generated, "create_registration").sync_detailed(client=client, body=body).status_code == 201
        verify, statuses = op(generated, "verify_registration"), []
        deadline = time.monotonic() + 120
        while True:
            answer = verify.sync_detailed(name="gen-verify", client=client)
            statuses.append(answer.status_code)
            if answer.status_code != 202:
                break
            assert isinstance(answer.parsed, m.VerificationPending)
            assert answer.headers["location"].endswith("/registrations/gen-verify/verification")
            assert time.monotonic() < deadline, statuses
            time.sleep(min(float(answer.headers["retry-after"]), 1.0))
    finally:
        tenant.set_faults({})
    assert statuses[0] == 202 and statuses[-1] == 200, statuses
    assert isinstance(answer.parsed, m.VerificationReport)
    op(generated, "delete_registration").sync(name="gen-verify", client=client)


def test_problem_answers_parse_as_problem_details(generated, client, host):
    m = models(generated)
    client_module = importlib.import_module(f"{generated.__name__}.client")
    bad = m.ServiceRequest.from_dict({"type": "service", "name": "Not_A_Name", "displayName": "x",
                                      "dicomService": "managed", "access": "reader"})
    invalid = op(generated, "create_registration").sync_detailed(client=client, body=bad)
    assert invalid.status_code == 422 and problem_type(invalid.parsed).endswith(":validation")
    assert invalid.parsed.errors  # where the request is wrong

    with client_module.AuthenticatedClient(base_url=f"{host.url}/api", token="not.a.token",
                                           headers={"x-functions-key": FUNCTION_KEY},
                                           raise_on_unexpected_status=True) as wrong_token:
        refused = op(generated, "list_registrations").sync_detailed(client=wrong_token)
    assert refused.status_code == 401 and problem_type(refused.parsed).endswith(":unauthenticated")

    # The host itself refuses a call without the function key, with RFC 7807's about:blank type.
    with client_module.AuthenticatedClient(base_url=f"{host.url}/api", token="any",
                                           raise_on_unexpected_status=True) as no_key:
        keyless = op(generated, "list_registrations").sync_detailed(client=no_key)
    assert keyless.status_code == 401 and problem_type(keyless.parsed) == "about:blank"

    missing = op(generated, "get_registration_config_as_json").sync_detailed(name="no-such-one", client=client)
    assert missing.status_code == 404 and isinstance(missing.parsed, m.ProblemDetails)
