"""ARM errors, shape `{"error": {"code", "message"}}` ("Azure Resource Manager error response")."""
from __future__ import annotations

from starlette.responses import JSONResponse

from ..runtime import InjectedFault


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def authorization_failed(oid: str, action: str, scope: str) -> ArmError:
    return ArmError(403, "AuthorizationFailed", f"The client '{oid}' with object id '{oid}' does not have "
                    f"authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. "
                    "If access was recently granted, please refresh your credentials.")


def from_fault(fault: InjectedFault) -> ArmError:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
    if fault.status == 429:
        return ArmError(429, "TooManyRequests", "The request is being throttled.", headers)
    return ArmError(fault.status, "InternalServerError" if fault.status < 503 else "ServiceUnavailable",
                    "Injected failure.", headers)


def render(err: ArmError, req) -> JSONResponse:
    return JSONResponse({"error": {"code": err.code, "message": err.message}}, status_code=err.status,
                        headers={"x-ms-request-id": req.request_id, **err.headers})
