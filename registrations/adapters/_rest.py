"""A JSON REST client on azure-core's pipeline, shared by the Graph and ARM adapters.

One retry policy for every remote call: 408/429/5xx are retried with exponential backoff, ``Retry-After`` is
honoured (capped, so a hostile or confused server cannot park a request), and the whole call gives up before
the Functions host or a Logic Apps caller would.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.core.pipeline import Pipeline
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HeadersPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest

from .errors import ConflictError, NotFoundError, UpstreamError

log = logging.getLogger("registrations.upstream")

RETRY_AFTER_CAP_SECONDS = 30.0


class CappedRetryPolicy(RetryPolicy):
    def get_retry_after(self, response):  # type: ignore[override]
        delay = super().get_retry_after(response)
        return None if delay is None else min(delay, RETRY_AFTER_CAP_SECONDS)


def make_retry_policy(*, total: int = 6, timeout: float = 45.0) -> CappedRetryPolicy:
    return CappedRetryPolicy(
        retry_total=total, retry_backoff_factor=0.5, retry_backoff_max=16, timeout=timeout
    )


def error_code(body: Any) -> tuple[str | None, str]:
    """Graph, ARM and Key Vault all answer ``{"error": {"code", "message"}}``."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return err.get("code"), str(err.get("message") or "")
    return None, ""


class RestClient:
    def __init__(
        self,
        service: str,
        endpoint: str,
        credential: TokenCredential,
        scope: str,
        *,
        verify: str | bool = True,
        pool_size: int = 32,
    ) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.service = service
        self.endpoint = endpoint.rstrip("/")
        session = requests.Session()
        # REQUESTS_CA_BUNDLE in the environment must not override the CA we were told to use.
        session.trust_env = False
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        session.mount("https://", adapter)
        self._verify = verify
        self._pipeline = Pipeline(
            transport=RequestsTransport(session=session, session_owner=False, connection_verify=verify),
            policies=[
                HeadersPolicy({"Accept": "application/json"}),
                UserAgentPolicy(base_user_agent="dicom-registrations/0.1"),
                make_retry_policy(),
                BearerTokenCredentialPolicy(credential, scope),
            ],
        )

    def call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        ok_missing: bool = False,
        retry: bool = True,
    ) -> tuple[int, Any, dict[str, str]]:
        """Send one request; return (status, parsed body or None, headers).

        With ``ok_missing`` a 404 returns ``(404, None, headers)`` instead of raising NotFoundError.
        """
        if path.startswith("https://") and not path.startswith(self.endpoint + "/"):
            # A next link pointing elsewhere would receive our bearer token: refuse it.
            raise UpstreamError(self.service, operation, None, "UnexpectedLink", "a link left the service's origin")
        url = path if path.startswith("https://") else f"{self.endpoint}{path}"
        request = HttpRequest(method, url, params=params, headers=dict(headers or {}))
        if body is not None:
            request.set_json_body(body)
        try:
            options: dict[str, Any] = {} if retry else {"retry_total": 0}
            response = self._pipeline.run(request, connection_verify=self._verify, **options).http_response
        except AzureError as exc:
            raise UpstreamError(self.service, operation, None, type(exc).__name__, "the call did not complete") from exc
        status = response.status_code
        text = response.text() if response.content else ""
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        log.debug("%s %s -> %s", self.service, operation, status)
        if status < 400:
            return status, parsed, dict(response.headers)
        if status == 404 and ok_missing:
            return status, None, dict(response.headers)
        code, message = error_code(parsed)
        cls = NotFoundError if status == 404 else ConflictError if status == 409 else UpstreamError
        raise cls(self.service, operation, status, code, message)
