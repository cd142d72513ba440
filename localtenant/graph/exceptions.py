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
    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers, self.details = headers or {}, details or []


def bad_request(message: str, code: str = "Request_BadRequest",
                details: list[dict[str, str]] | None = None) -> GraphError:
    return GraphError(400, code, message, details=details)


def not_found(key: str) -> GraphError:
    return GraphError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist or one of its queried "
                      "reference-property objects are not present.")


def unauthenticated(message: str) -> GraphError:
    return GraphError(401, "InvalidAuthenticationToken", message)


def forbidden(message: str = "Insufficient privileges to complete the operation.") -> GraphError:
    return GraphError(403, "Authorization_RequestDenied", message)


def conflict(message: str, status: int = 409) -> GraphError:
    """A key another object already holds; Graph answers 400 for some properties (uniqueName,
    identifierUris) and 409 for others."""
    return GraphError(status, "Request_MultipleObjectsWithSameKeyValue", message)


def name_taken(prop: str, status: int) -> GraphError:
    """An alternate key another object (live or deleted) holds: for uniqueName Graph is evidenced answering 400
    Request_BadRequest (msgraph-bicep-types issues 137 and 202), and answers other alternate-key collisions with
    409 Request_MultipleObjectsWithSameKeyValue; `uniqueNameConflictStatus` chooses."""
    message = f"Another object with the same value for property {prop} already exists."
    return bad_request(message) if status == 400 else conflict(message)


def links_exceeded(what: str, limit: int) -> GraphError:
    """A forward-link quota: 403 Directory_QuotaExceeded (REFERENCE: the 100-owner quota answers 403); the
    message is the tenant's wording."""
    return GraphError(403, "Directory_QuotaExceeded", f"The directory object quota limit for {what} has been "
                      f"exceeded ({limit}).")


def too_large() -> GraphError:
    """An object past its size limit, as openshift/openshift-azure issue 1932 (403 on an application PATCH) and
    microsoftgraph/microsoft-graph-docs issue 21469 (600 key credentials) quote it."""
    return GraphError(403, "Directory_ResourceSizeExceeded", "The size of the object has exceeded its limit. "
                      "Please reduce the number of values and retry your request.")


def unsupported_query(message: str) -> GraphError:
    return GraphError(400, "Request_UnsupportedQuery", message)


def no_backing_application(app_id: str) -> GraphError:
    """POST /servicePrincipals for an appId whose application this replica has not seen (yet)."""
    message = f"The appId '{app_id}' of the service principal does not reference a valid application object."
    return bad_request(message, details=[{"code": "NoBackingApplicationObject", "message": message,
                                          "target": "appId"}])


def not_a_valid_reference() -> GraphError:
    """POST appRoleAssignedTo naming a principal this replica has not seen (yet)."""
    return bad_request("Not a valid reference update.")


def concurrency_violation(status: int = 409) -> GraphError:
    """A credential write on an application while another one on it is still in flight, or right after one
    (the message as nais/azurerator issue 448 quotes it, with 409; Azure/azure-cli issue 23081 shows the same
    code with 503 on addPassword; Azure/fhir-server's test scripts retry the code)."""
    return GraphError(status, "Directory_ConcurrencyViolation", "Error due to concurrent requests being made to "
                      "the tenant. Please wait briefly and retry.")


def from_fault(fault: InjectedFault) -> GraphError:
    if fault.code == "Directory_ConcurrencyViolation":
        return concurrency_violation(fault.status if fault.status in (409, 503) else 409)
    if fault.code:
        return GraphError(fault.status, fault.code, "Injected failure.")
    if fault.status == 429:
        # Graph throttling: 429 TooManyRequests with Retry-After in seconds.
        return GraphError(429, "TooManyRequests", "Too many requests.",
                          headers={"Retry-After": str(fault.retry_after or 1)})
    codes = {503: "ServiceUnavailable", 500: "InternalServerError", 504: "GatewayTimeout", 502: "BadGateway"}
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
    return GraphError(fault.status, codes.get(fault.status, "UnknownError"), "Injected failure.", headers=headers)


def render(err: GraphError, req) -> JSONResponse:
    inner = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
             "request-id": req.request_id,
             "client-request-id": req.headers.get("client-request-id") or req.request_id}
    headers = {"request-id": req.request_id, "client-request-id": inner["client-request-id"], **err.headers}
    error = {"code": err.code, "message": err.message, "innerError": inner}
    if err.details:
        error["details"] = err.details
    return JSONResponse({"error": error}, status_code=err.status, headers=headers)
