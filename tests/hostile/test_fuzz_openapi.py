"""Property-based fuzzing (schemathesis) of every operation in the OpenAPI 3.0 document the local host
serves: no 5xx, and every answer is one the document describes. The short form of `python -m bench.hostile`;
on a tenant of its own, and everything it creates is deleted again."""

from __future__ import annotations

import httpx
import pytest

from bench._harness import audit, recorded
from bench.hostile import KNOWN, delete_all_but, ensure_known, fuzz, names
from tests.support import FUNCTION_KEY, api_token, settings_override

EXAMPLES = 12  # per operation and mode (positive, negative); the bench runs many more


@pytest.fixture(scope="module")
def own_tenant(host):
    from localtenant import LocalTenant

    with LocalTenant.start() as lt, settings_override(**lt.app_settings()):
        headers = {"x-functions-key": FUNCTION_KEY,
                   "Authorization": f"Bearer {api_token(lt, lt.seed.admin_client)}"}
        yield lt, f"{host.url}/api", headers


@pytest.mark.slow(25)
def test_every_operation_answers_as_documented_and_leaves_nothing_behind(own_tenant):
    lt, base, headers = own_tenant
    with httpx.Client(base_url=base, headers=headers, trust_env=False, timeout=120) as client:
        before = names(client)
        try:
            report = fuzz(base, headers, examples=EXAMPLES, known=KNOWN,
                          before_operation=lambda: ensure_known(client))
        finally:
            delete_all_but(client, before)
    assert report.server_errors == 0 and report.nonconforming == 0, report.explain()
    assert report.requests >= 9 * EXAMPLES
    # Aimed requests got past the refusals: reads and creates succeeded, rotations and deletes too.
    assert report.statuses[200] and report.statuses[201], report.statuses
    left = audit(lt.state(), records=recorded(lt))
    assert left["apps"] == 0 and left["orphans"] == 0, left
