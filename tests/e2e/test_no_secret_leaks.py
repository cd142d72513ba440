"""No secret made during the session, and no access token, appears in any log line or any API response body.
Runs after every other test: it is marked after_everything_else, which tests/conftest.py orders last.

The haystack (tests.support.CAPTURED) is what the session's logging handler formatted — every record of every
logger, at DEBUG — plus the body of every response the API clients received. Request headers are not in it:
test clients send bearer tokens in Authorization headers, and those are neither logs nor response bodies
(azure-core's HTTP logging policy prints the header as REDACTED)."""

from __future__ import annotations

import json
import re

import pytest
from azure.core.exceptions import HttpResponseError

from tests.support import ACQUIRED_TOKENS, CAPTURED, secret_client

pytestmark = pytest.mark.after_everything_else

MIN_LENGTH = 16  # shorter values (names, "true", ids of a few characters) would match by chance
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
B64URL_RUN = re.compile(r"[A-Za-z0-9_-]{40,}")
PEM_BODY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\s*(.*?)\s*-----END [A-Z ]*PRIVATE KEY-----", re.S)


def readable_secret_values(client) -> set[str]:
    """Every version's value that Key Vault will still give: live secrets' versions (a disabled version
    answers 403 and is skipped). Deleted secrets' values cannot be read back; the tenant's record has them."""
    values = set()
    for props in client.list_properties_of_secrets():
        for version in client.list_properties_of_secret_versions(props.name):
            try:
                values.add(client.get_secret(props.name, version.version).value)
            except HttpResponseError as e:
                assert e.status_code == 403, e  # disabled
    return {v for v in values if v}


def needles(value: str) -> set[str]:
    """The value as written, JSON-escaped, and for a PEM each middle line of its private key block (a log that
    prints the key reflowed or escaped still carries whole base64 lines)."""
    found = {value, json.dumps(value)[1:-1]}
    for body in PEM_BODY.findall(value):
        lines = [line.strip() for line in body.splitlines() if len(line.strip()) >= 40]
        found.update(lines[1:-1] or lines)
    return {n for n in found if len(n) >= MIN_LENGTH}


def test_no_secret_value_or_token_in_any_log_line_or_response_body(api, tenant):
    # Make sure this module alone still exercises create, read, config and delete.
    api.post("/registrations", json={"type": "service", "name": "leak-check", "displayName": "Leak check",
                                     "dicomService": "managed", "access": "reader"})
    api.get("/registrations/leak-check/config/env")
    readable = readable_secret_values(secret_client(tenant))
    api.delete("/registrations/leak-check")

    issued = tenant.issued()
    assert readable <= set(issued["secretValues"]), "the tenant's record misses values Key Vault gives"
    seeded = {c.secret for c in (tenant.seed.admin_client, tenant.seed.requester_client,
                                 tenant.seed.requester_client_b, tenant.seed.reader_client)}
    values = {v for v in set(issued["secretValues"]) | set(issued["passwords"]) | seeded if len(v) >= MIN_LENGTH}
    tokens = set(issued["accessTokens"]) | set(ACQUIRED_TOKENS)
    assert values and issued["passwords"], "the session made no secrets to look for"
    assert tokens and ACQUIRED_TOKENS, "the session acquired no tokens to look for"

    assert len(CAPTURED) > 50
    haystack = "\n".join(CAPTURED)
    assert not re.search(r"Bearer\s+eyJ", haystack), "a bearer token (request header?) is in the haystack"

    leaked = sorted(v[:4] + "…" for v in values if any(n in haystack for n in needles(v)))
    assert leaked == [], f"secret values found in logs or responses: {leaked}"

    found = leaked_tokens(tokens, haystack)
    assert found == [], f"{len(found)} access tokens (or their payloads/signatures) found in logs or responses: " \
                        f"{sorted(x[:12] + '…' for x in found)}"


def test_the_search_finds_what_it_looks_for():
    """The matchers themselves, on made-up text: escaped values, reflowed PEM keys, cut tokens."""
    pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(f"{c * 64}" for c in "ABCD") + "\n-----END PRIVATE KEY-----\n"
    logged = "log: " + json.dumps({"cert": pem})
    assert any(n in logged for n in needles(pem))
    assert any(n in "reflowed " + "C" * 64 for n in needles(pem))
    quoted = 'p"w\\d-0123456789abcdef'
    assert any(n in "body " + json.dumps({"v": quoted}) for n in needles(quoted))
    token = "eyJhbGciOiJSUzI1NiJ9." + "eyJzdWIiOiJ4In0" * 4 + "." + "s1g_-" * 20
    assert leaked_tokens({token}, f"Authorization header was {token}!") == [token]
    assert leaked_tokens({token}, f"cut: {token[:-10]} end") == [token]  # its payload is still whole
    assert leaked_tokens({token}, "nothing here " + "s1g_-" * 5) == []


def leaked_tokens(tokens: set[str], haystack: str) -> list[str]:
    """Tokens found whole, or by a whole payload or signature segment (a token cut short or split still shows
    one): every JWT-shaped string and every long base64url run in the haystack, matched against them."""
    jwts = set(JWT.findall(haystack))
    runs = set(B64URL_RUN.findall(haystack))
    return [t for t in tokens if any(t in j for j in jwts)
            or any(len(part) >= 40 and part in runs for part in t.split(".")[1:])]
