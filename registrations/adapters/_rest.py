"""A JSON REST client on azure-core's pipeline, shared by the Graph and ARM adapters.

One retry policy for every remote call: 408/429/5xx are retried with exponential backoff, ``Retry-After`` is
honoured (capped, so a hostile or confused server cannot park a request), and the whole call gives up before
the Functions host or a Logic Apps caller would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

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

from .. import logs, saga
from .errors import CONCURRENCY_STATUSES, CONCURRENCY_VIOLATION, ConflictError, NotFoundError, UpstreamError

log = logging.getLogger("registrations.upstream")

RETRY_AFTER_CAP_SECONDS = 30.0


class BudgetedRetryPolicy(RetryPolicy):
    """azure-core's retries (408/429/5xx, Retry-After honoured), within the request's time budget.

    azure-core sleeps the whole Retry-After and only then looks at its timeout, so a throttled call would
    outlive the budget and end as a timeout that has lost Azure's Retry-After. Here a retry whose wait does not
    fit in what is left of the budget is not made: the throttled answer goes back to the adapter, which raises
    it with its Retry-After for the caller to relay. Waits go through the one sleeping seam (saga.sleep).
    """

    def get_retry_after(self, response):  # type: ignore[override]
        delay = super().get_retry_after(response)
        return None if delay is None else min(delay, RETRY_AFTER_CAP_SECONDS)

    def __init__(self, service: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service

    def is_retry(self, settings, response):  # type: ignore[override]
        if response.http_response.status_code == 429:
            logs.count("throttled", service=self.service)
        if not (super().is_retry(settings, response) or settings["total"] and _concurrency_violation(response)):
            return False
        left = saga.remaining()
        # The wait sleep() will take once increment() has added this answer to the history.
        counted = {**settings, "history": [*settings["history"], response]}
        return left is None or self._wait(counted, response) < left

    def sleep(self, settings, transport, response=None):  # type: ignore[override]
        wait = self._wait(settings, response)
        if wait > 0:
            saga.sleep(wait)

    def _wait(self, settings: dict[str, Any], response: Any) -> float:
        """What azure-core would wait: the answer's Retry-After (capped), else its exponential backoff."""
        return (self.get_retry_after(response) if response else None) or self.get_backoff_time(settings)


def _concurrency_violation(response: Any) -> bool:
    """Directory_ConcurrencyViolation (409 or 503): another write on the same object was in flight or had just
    been made, and this one did nothing ("wait briefly and retry"), so a call the pipeline may repeat is
    repeated, as for 429 (azure-core itself repeats no POST on a 503)."""
    http = response.http_response
    if http.status_code not in CONCURRENCY_STATUSES:
        return False
    try:
        return error_code(json.loads(http.text() or "null"))[0] == CONCURRENCY_VIOLATION
    except ValueError:
        return False


# Codes of a 401 that refuses the bearer token itself (Graph: InvalidAuthenticationToken; ARM: that or
# ExpiredAuthenticationToken), e.g. one the service sees as expired or revoked while our cache still holds it.
REFUSED_TOKEN_CODES = ("InvalidAuthenticationToken", "ExpiredAuthenticationToken")


class RefreshingBearerPolicy(BearerTokenCredentialPolicy):
    """azure-core's bearer policy, plus: when the service refuses the token (401 with one of
    REFUSED_TOKEN_CODES), a fresh token is fetched once and the call repeated.

    azure-core drops its own cached token on a 401 but asks again only for a claims challenge in
    WWW-Authenticate, and the credential would hand back the token it caches (msal serves a cached token
    until five minutes before its expiry). Asking with a claims request is what makes msal fetch a new one,
    as it does for a continuous access evaluation challenge."""

    def send(self, request):  # type: ignore[override]
        response = super().send(request)
        http = response.http_response
        if http.status_code != 401 or request.context.get("token_refreshed"):
            return response
        try:
            code, _, _ = error_code(json.loads(http.text() or "null"))
        except ValueError:
            code = None
        if code not in REFUSED_TOKEN_CODES:
            return response
        request.context["token_refreshed"] = True
        log.info("the service refused the cached token (%s): fetching a fresh one and repeating the call once", code)
        self.authorize_request(request, *self._scopes, claims=_FRESH_TOKEN_CLAIMS)
        return self.next.send(request)


# A claims request any token issued now satisfies (OpenID Connect claims parameter, as Entra's own claims
# challenges are written): it only makes the credential bypass its cache.
_FRESH_TOKEN_CLAIMS = json.dumps({"access_token": {"nbf": {"essential": True, "value": "1"}}})


def make_retry_policy(service: str, *, total: int = 10, timeout: float = 45.0) -> BudgetedRetryPolicy:
    # azure-core stops at whichever of retry_total and retry_status runs out first, and retry_status
    # defaults to 3: under Graph throttling that gives up after a few seconds. The time budget (timeout, or
    # the request's budget) is what really ends the retries.
    return BudgetedRetryPolicy(
        service, retry_total=total, retry_status=total, retry_backoff_factor=0.5, retry_backoff_max=16, timeout=timeout
    )


def budget_options(service: str, operation: str) -> dict[str, Any]:
    """Per-call pipeline options that keep one call within the request's budget: the retry policy's `timeout`
    bounds all attempts together, `read_timeout` one. Raises when the budget is already spent."""
    left = saga.remaining()
    if left is None:
        return {}
    if left <= 0.5:
        raise UpstreamError(service, operation, None, "Timeout", "the request's time budget ran out")
    return {"timeout": left, "read_timeout": min(left, 60)}


def error_code(body: Any) -> tuple[str | None, str, tuple[str, ...]]:
    """Graph, ARM and Key Vault all answer ``{"error": {"code", "message"}}``; Graph and ARM may add
    ``details: [{"code", ...}]`` that say more than the top-level code."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        details = tuple(str(d.get("code")) for d in err.get("details") or [] if isinstance(d, dict) and d.get("code"))
        return err.get("code"), str(err.get("message") or ""), details
    return None, "", ()


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (capped), or None when absent or not a number of seconds."""
    try:
        return min(float(value), RETRY_AFTER_CAP_SECONDS) if value else None
    except ValueError:
        return None


def transport_for(endpoint: str, verify: str | bool, *, pool_size: int = 32) -> RequestsTransport:
    """azure-core's requests transport for one service's origin. The environment's proxy settings for that
    origin are read once, here: left to requests, every call would read them (and .netrc) again. Its CA
    bundle (REQUESTS_CA_BUNDLE) does not override ours either way: azure-core passes `connection_verify`
    with every request."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(endpoint))
    session.trust_env = False
    session.mount("https://", HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size))
    return RequestsTransport(session=session, session_owner=False, connection_verify=verify)


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
        self.service = service
        self.endpoint = endpoint.rstrip("/")
        self._verify = verify
        self._pipeline = Pipeline(
            transport=transport_for(self.endpoint, verify, pool_size=pool_size),
            policies=[
                HeadersPolicy({"Accept": "application/json"}),
                UserAgentPolicy(base_user_agent="dicom-registrations/0.1"),
                make_retry_policy(service),
                RefreshingBearerPolicy(credential, scope),
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
        url = self._url(operation, path)
        request = HttpRequest(method, url, params=params, headers=dict(headers or {}))
        if body is not None:
            request.set_json_body(body)
        options: dict[str, Any] = {} if retry else {"retry_total": 0}
        options.update(budget_options(self.service, operation))
        try:
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
        code, message, details = error_code(parsed)
        cls = NotFoundError if status == 404 else ConflictError if status == 409 else UpstreamError
        error = cls(self.service, operation, status, code, message, details)
        error.retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise error

    def pages(self, operation: str, path: str, params: dict[str, str] | None = None, *,
              link: str = "nextLink") -> Iterator[Any]:
        """Every item of a paged list (`value`), following the service's next link on its own origin."""
        url: str | None = path
        while url:
            _, body, _ = self.call(operation, "GET", url, params=params)
            if not isinstance(body, dict):
                raise UpstreamError(self.service, operation, 200, None, "the answer had no value list")
            yield from body.get("value", [])
            url, params = body.get(link), None  # the next link carries every parameter

    def _url(self, operation: str, path: str) -> str:
        """A path on this service, or a link it gave us (nextLink): a link to any other origin would carry
        our bearer token there, so it is refused."""
        if path.startswith("/"):
            return f"{self.endpoint}{path}"
        link, own = urlsplit(path), urlsplit(self.endpoint)
        if (link.scheme.lower(), (link.hostname or "").lower(), link.port) != (
                own.scheme.lower(), (own.hostname or "").lower(), own.port):
            raise UpstreamError(self.service, operation, None, "UnexpectedLink", "a link left the service's origin")
        return path
