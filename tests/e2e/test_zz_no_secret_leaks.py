"""Runs after the other end-to-end tests: no secret value made during the session appears in any log line
or any API response body."""

from __future__ import annotations

from tests.support import CAPTURED
from tests.e2e.test_types import secret_client


def test_no_secret_value_in_any_log_line_or_response_body(api, tenant):
    # Make sure this module alone still exercises create, read, config and delete.
    api.post("/registrations", json={"type": "service", "name": "leak-check", "displayName": "Leak check",
                                     "dicomService": "managed", "access": "reader"})
    api.get("/registrations/leak-check/config", params={"format": "env"})
    client = secret_client(tenant)
    values = {client.get_secret(p.name).value for p in client.list_properties_of_secrets()}
    api.delete("/registrations/leak-check")
    values = {v for v in values if v and len(v) >= 16}
    assert values, "the session made no secrets to look for"
    haystack = "\n".join(CAPTURED)
    assert len(CAPTURED) > 50
    leaked = [v[:4] + "…" for v in values if v in haystack]
    assert leaked == [], f"secret values found in logs or responses: {leaked}"
