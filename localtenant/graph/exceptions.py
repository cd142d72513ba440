"""Graph errors and their one serializer.

Shape from the Graph "Microsoft Graph error responses and resource types" page:
{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}, plus
`details: [{"code", "message", "target"}]` (the publicError resource) where Graph refines a generic code, e.g.
NoBackingApplicationObject under Request_BadRequest.
"""
from __future__ import annotations

import datetime as dt

from starlette.responses import JSONResponse

from ..runtime import InjectedFault


class GraphError(Exception):
    status = 400
    code = "Request_BadRequest"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.code = code or self.code
        self.headers = headers or {}
        self.details = details or []


class BadRequest(GraphError):
    pass


class NotFound(GraphError):
    status, code = 404, "Request_ResourceNotFound"

    def __init__(self, key: str) -> None:
        super().__init__(f"Resource '{key}' does not exist or one of its queried reference-property objects "
                         "are not present.")


class Unauthenticated(GraphError):
    status, code = 401, "InvalidAuthenticationToken"


class Forbidden(GraphError):
    status, code = 403, "Authorization_RequestDenied"

    def __init__(self, message: str = "Insufficient privileges to complete the operation.") -> None:
        super().__init__(message)


class Conflict(GraphError):
    status, code = 409, "Request_MultipleObjectsWithSameKeyValue"


class UnsupportedQuery(GraphError):
    code = "Request_UnsupportedQuery"


def no_backing_application(app_id: str) -> GraphError:
    """POST /servicePrincipals for an appId whose application this replica has not seen (yet)."""
    message = f"The appId '{app_id}' of the service principal does not reference a valid application object."
    return BadRequest(message, details=[{"code": "NoBackingApplicationObject", "message": message,
                                         "target": "appId"}])


def not_a_valid_reference() -> GraphError:
    """POST appRoleAssignedTo naming a principal this replica has not seen (yet)."""
    return BadRequest("Not a valid reference update.")


def from_fault(fault: InjectedFault) -> GraphError:
    if fault.status == 429:
        # Graph throttling: 429 TooManyRequests with Retry-After in seconds.
        return GraphError("Too many requests.", status=429, code="TooManyRequests",
                          headers={"Retry-After": str(fault.retry_after or 1)})
    codes = {503: "ServiceUnavailable", 500: "InternalServerError", 504: "GatewayTimeout", 502: "BadGateway"}
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
    return GraphError("Injected failure.", status=fault.status, code=codes.get(fault.status, "UnknownError"),
                      headers=headers)


def render(err: GraphError, req) -> JSONResponse:
    inner = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
             "request-id": req.request_id,
             "client-request-id": req.headers.get("client-request-id") or req.request_id}
    headers = {"request-id": req.request_id, "client-request-id": inner["client-request-id"], **err.headers}
    error = {"code": err.code, "message": err.message, "innerError": inner}
    if err.details:
        error["details"] = err.details
    return JSONResponse({"error": error}, status_code=err.status, headers=headers)
