"""`GET /msi/token?api-version=2019-08-01&resource=...` with `X-IDENTITY-HEADER`, as in "Managed identities
for App Service and Azure Functions", REST endpoint reference. msal (used by azure-identity 1.27) sends
exactly these, plus `Metadata: true`, and reads access_token, expires_on (epoch seconds), resource,
token_type. Errors are `{"statusCode", "message", "correlationId"}`.
"""
from __future__ import annotations

import uuid

from starlette.responses import JSONResponse

from ..runtime import InjectedFault
from ..web import Req, ServiceSpec, json_response, routes as routes_table


class IdentityError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _render(err: IdentityError, req: Req) -> JSONResponse:
    return JSONResponse({"statusCode": err.status, "message": err.message, "correlationId": str(uuid.uuid4())},
                        status_code=err.status, headers=err.headers)


def _fault(fault: InjectedFault) -> IdentityError:
    return IdentityError(fault.status, "Injected failure.",
                         {"Retry-After": str(fault.retry_after)} if fault.retry_after else None)


SPEC = ServiceSpec("identity", IdentityError, _render, _fault)


def token(req: Req) -> JSONResponse:
    core = req.core
    if req.headers.get("x-identity-header") != core.identity_header:
        raise IdentityError(401, "The X-IDENTITY-HEADER header is missing or does not match.")
    if req.query.get("api-version") != "2019-08-01":
        raise IdentityError(400, "The api-version is missing or not supported; use 2019-08-01.")
    resource = req.query.get("resource")
    if not resource:
        raise IdentityError(400, "The resource parameter is required.")
    product = core.graph.find("servicePrincipals", "id", core.seed.product.object_id)
    for key in ("client_id", "object_id", "principal_id", "mi_res_id"):
        wanted = req.query.get(key)
        if wanted and wanted not in (product["appId"], product["id"], core.seed.product.resource_id):
            raise IdentityError(400, f"No managed identity with {key} '{wanted}' is assigned to this app.")
    found = core.graph.resolve_resource(resource)
    if found is None:
        raise IdentityError(400, f"AADSTS500011: The resource principal named {resource} was not found in the "
                                 f"tenant named {core.tenant_id}.")
    target, audience = found
    app = core.graph.app_by_app_id(target["appId"])
    version = 2 if app is not None and app["api"].get("requestedAccessTokenVersion") == 2 else 1
    access, lifetime = core.issuer.access_token(
        resource=target, audience=audience, version=version, client_app_id=product["appId"], acr="2",
        subject=product, roles=core.graph.role_values(product["id"], target), scopes=[],
        extra={"xms_mirid": core.seed.product.resource_id})
    return json_response({"access_token": access, "expires_on": str(int(core.clock.now()) + lifetime),
                          "resource": resource, "token_type": "Bearer", "client_id": product["appId"]})


def unknown(req: Req, allowed: list[str]) -> IdentityError:
    if allowed:
        return IdentityError(405, f"The requested method {req.method} is not allowed; use {', '.join(allowed)}.")
    return IdentityError(404, f"The requested path {req.raw.url.path} was not found.")


def routes(core) -> list:
    return routes_table(core, SPEC, [("/msi/token", ["GET"], "identity.token", token)])
