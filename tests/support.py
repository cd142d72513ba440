"""Test support shared by every suite (kept out of conftest.py so that it is imported once, as one module)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

FUNCTION_KEY = "e2e-function-key"
MASTER_KEY = "e2e-master-key"

# Every log record and every API response body of the session, for the no-secret-leak check.
CAPTURED: list[str] = []
# Every response the API clients received: (method, path, status, content type, body), for the check that
# each body is what the response models (and so the OpenAPI document) promise.
RESPONSES: list[tuple[str, str, int, str, str]] = []
# Every access token the test clients acquired (the local tenant records the ones it issues, the function
# app's own included; this also has those of other tenants a test starts), for the same check.
ACQUIRED_TOKENS: list[str] = []


class CaptureAll(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            CAPTURED.append(self.format(record))
        except Exception:  # a record that cannot be formatted is still looked at raw
            CAPTURED.append(repr(record.__dict__))


def api_client(host, token: str | None) -> httpx.Client:
    """An HTTP client for the function app on the local host; every response body is kept in CAPTURED."""
    headers = {"x-functions-key": FUNCTION_KEY}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def keep_body(response: httpx.Response) -> None:
        response.read()
        CAPTURED.append(response.text)
        RESPONSES.append((response.request.method, response.request.url.path, response.status_code,
                          response.headers.get("content-type", "").split(";")[0], response.text))

    return httpx.Client(base_url=f"{host.url}/api", headers=headers, timeout=120, trust_env=False,
                        event_hooks={"response": [keep_body]})


def api_token(tenant, client) -> str:
    from tests.clients import client_credentials_token

    token = client_credentials_token(tenant, client.app_id, client.secret,
                                     f"{tenant.seed.api.identifier_uri}/.default")
    ACQUIRED_TOKENS.append(token)
    return token


@contextmanager
def settings_override(**values: str | None) -> Iterator[None]:
    """Run the function app with some settings changed (None removes one); the runtime is rebuilt."""
    from registrations import wiring

    saved = {key: os.environ.get(key) for key in values}

    def apply(changes: dict[str, str | None]) -> None:
        for key, value in changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        wiring.reset()

    apply(values)
    try:
        yield
    finally:
        apply(saved)
