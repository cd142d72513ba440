"""The DICOM service resource over ARM REST (Microsoft.HealthcareApis/workspaces/dicomservices, api-version
2024-03-31): read it; write it back as the long-running operation it is (`x-ms-long-running-operation`, 200/201
/202, no If-Match parameter declared), then wait for it to end.

The wait reads the resource's own `provisioningState` (ARM RPC: a resource's provisioning state ends in
Succeeded, Failed or Canceled), not the Azure-AsyncOperation URL: that lives at subscription scope, where a role
held on the DICOM service alone (`dicomservices/read`, `/write`: the least the CORS merge needs) may not reach.
"""

from __future__ import annotations

from urllib.parse import quote

from .. import saga
from ._rest import RestClient
from .errors import UpstreamError

API_VERSION = "2024-03-31"
TERMINAL = ("Succeeded", "Failed", "Canceled")
RUNNING = "OperationRunning"  # what the wait says while the update runs (never a code ARM sends)


class DicomServiceClient:
    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    def get(self, resource_id: str) -> dict:
        """The resource as ARM holds it now."""
        _, body, _ = self._rest.call("getDicomService", "GET", quote(resource_id),
                                     params={"api-version": API_VERSION})
        return body if isinstance(body, dict) else {}

    def put(self, resource_id: str, resource: dict) -> None:
        """Replace the resource and wait until the update has ended (its new configuration applies only then).
        :raises ConflictError: another update of the service is still running (409): wait and try again.
        :raises UpstreamError: the update failed or was canceled, or the time budget ran out."""
        self._rest.call("putDicomService", "PUT", quote(resource_id), body=resource,
                        params={"api-version": API_VERSION})

        def ended() -> None:
            state = (self.get(resource_id).get("properties") or {}).get("provisioningState")
            if state == "Succeeded":
                return
            if state in TERMINAL:
                raise UpstreamError("arm", "putDicomService", 200, state, f"the update ended {state}")
            raise UpstreamError("arm", "putDicomService", 202, RUNNING, f"the update is {state}")
        saga.eventually(ended, lagging=lambda exc: exc.code == RUNNING)
