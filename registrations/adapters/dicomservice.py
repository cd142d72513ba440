"""The DICOM service resource over ARM REST (Microsoft.HealthcareApis/workspaces/dicomservices, api-version
2024-03-31): read it with its etag, write it back only if nobody changed it since (If-Match)."""

from __future__ import annotations

from urllib.parse import quote

from ._rest import RestClient

API_VERSION = "2024-03-31"


class DicomServiceClient:
    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    def get(self, resource_id: str) -> tuple[dict, str | None]:
        """The resource and its etag."""
        _, body, headers = self._rest.call("getDicomService", "GET", quote(resource_id),
                                           params={"api-version": API_VERSION})
        body = body if isinstance(body, dict) else {}
        etag = body.get("etag") or next((v for k, v in headers.items() if k.lower() == "etag"), None)
        return body, etag

    def put(self, resource_id: str, resource: dict, etag: str | None) -> None:
        """Replace the resource; with an etag, a 412 when it changed since it was read."""
        self._rest.call("putDicomService", "PUT", quote(resource_id), body=resource,
                        headers={"If-Match": etag} if etag else None, params={"api-version": API_VERSION})
