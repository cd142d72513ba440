"""The DICOM service's data plane: one QIDO-RS search with a registration's own token, to prove its role works
at the service (not just in Entra ID or ARM). DICOMweb (PS3.18) QIDO-RS `GET {base}/studies?limit=1`; the
token is the registration's, never the function's, so the call carries it as a header of its own."""

from __future__ import annotations

import threading
from typing import Any

from azure.core.exceptions import AzureError
from azure.core.pipeline import Pipeline
from azure.core.pipeline.policies import HeadersPolicy, UserAgentPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest

from ._rest import budget_options, make_retry_policy, transport_for
from .errors import UpstreamError

# What the search's answer means for the registration; anything else (5xx after retries, no answer) raises.
ANSWERS = (200, 204, 401, 403)


class DicomWebClient:
    def __init__(self, *, verify: str | bool = True) -> None:
        self._verify = verify
        self._lock = threading.Lock()
        self._transports: dict[str, RequestsTransport] = {}

    def _pipeline(self, base_url: str) -> Pipeline:
        origin = "/".join(base_url.split("/", 3)[:3])
        with self._lock:
            transport = self._transports.get(origin)
            if transport is None:
                transport = self._transports[origin] = transport_for(origin, self._verify, pool_size=8)
        return Pipeline(transport=transport, policies=[
            HeadersPolicy({"Accept": "application/dicom+json"}),
            UserAgentPolicy(base_user_agent="dicom-registrations/0.1"),
            make_retry_policy("dicom", total=3, timeout=20.0),
        ])

    def search_studies(self, base_url: str, token: str) -> int:
        """The status of `GET {base_url}/studies?limit=1` with `token`: 200 (or 204, no studies) when the
        service lets the token search, 401 when it does not accept the token, 403 when the token's principal
        lacks the read data action."""
        request = HttpRequest("GET", f"{base_url.rstrip('/')}/studies", params={"limit": "1"},
                              headers={"Authorization": f"Bearer {token}"})
        options: dict[str, Any] = budget_options("dicom", "searchStudies")
        try:
            response = self._pipeline(base_url).run(request, connection_verify=self._verify, **options).http_response
        except AzureError as exc:
            raise UpstreamError("dicom", "searchStudies", None, type(exc).__name__, "the call did not complete") \
                from exc
        if response.status_code not in ANSWERS:
            raise UpstreamError("dicom", "searchStudies", response.status_code, None, "the DICOM service failed")
        return response.status_code
