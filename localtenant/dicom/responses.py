"""The HTTPS front of a DICOM service: DICOMweb under `/v2/` (QIDO-RS, WADO-RS, STOW-RS), checked like the
real service before it reaches Orthanc.

- No token, or one the service does not accept (signature, issuer, audience, tenant, lifetime): 401 with
  `WWW-Authenticate: Bearer` (plus `error="invalid_token"` for a bad one) and no body, as ASP.NET Core's JWT
  bearer handler answers for the DICOM server (microsoft/dicom-server issue 876; the conformance statement's
  "401 (Unauthorized): the client isn't authenticated").
- A valid token without the data action: 403 with the text `Authorization failed.` (dicom-server's
  ExceptionHandlingMiddleware maps UnauthorizedDicomActionException to 403 with DicomCoreResource.Forbidden).
- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) needs no token and answers 204,
  with CORS headers only when the corsConfiguration allows it (ASP.NET Core's CORS middleware; aspnet/Mvc
  issue 2542); an allowed origin's actual responses carry `Access-Control-Allow-Origin`.
Everything else is forwarded to Orthanc's DICOMweb root, and Orthanc's own URLs in its answers are rewritten
to the front's `/v2/`.
"""
from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..entra.tokens import InvalidToken
from ..runtime import InjectedFault
from . import access
from .orthanc import OrthancMissing

if TYPE_CHECKING:
    from ..core import TenantCore

MANAGED_AUDIENCE = "https://dicom.healthcareapis.azure.com"
# The service's authenticationConfiguration.audiences (DicomServices_Get example): compared as they are, no case
# folding, no slash trimming.
MANAGED_AUDIENCES = (MANAGED_AUDIENCE, MANAGED_AUDIENCE + "/")
# QIDO-RS `limit` (conformance statement v2, "Supported search parameters"): 1 to 200, 100 when not given.
SEARCH_LIMIT, DEFAULT_SEARCH_LIMIT = range(1, 201), 100
DELEGATED_SCOPES = {"Dicom.ReadWrite", "user_impersonation"}
FORWARDED_REQUEST_HEADERS = ("accept", "content-type")
FORWARDED_RESPONSE_HEADERS = ("content-type", "location", "warning")
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]
MAX_BODY = 64 * 1024 * 1024
# What DICOMweb paths hold: resource names, UIDs (digits and dots), frame lists; nothing that could climb out
# of Orthanc's DICOMweb root ("..", encoded characters, backslashes).
DICOMWEB_PATH = re.compile(r"[A-Za-z0-9.,_/-]*")


class Front:
    """`kind` "managed" (Azure RBAC on the DICOM service resource) or "oss" (roles.json)."""

    def __init__(self, core: "TenantCore", kind: str) -> None:
        self.core, self.kind = core, kind
        self._client: httpx.AsyncClient | None = None

    # -- what the service accepts --------------------------------------------------------------------------
    def _cors(self) -> dict[str, Any]:
        if self.kind == "managed":
            return self.core.dicom_services.cors(self.core.seed.dicom_resource_id)
        from ..arm.dicomservices import empty_cors
        return (self.core.oss_dicom() or {}).get("cors") or empty_cors()

    def _authenticate(self, token: str) -> dict[str, Any]:
        """One issuer form and an exact audience list: the managed service's authority is
        `https://login.microsoftonline.com/{tenant}` (v1 metadata, issuer `https://sts.windows.net/{tenant}/`)
        with its two audiences; the open-source server's is its configured Authority and Audience."""
        if self.kind == "managed":
            claims = self.core.issuer.validate(token, {MANAGED_AUDIENCE})
            issuer, audiences = self.core.issuer.issuer_v1, MANAGED_AUDIENCES
        else:
            config = self.core.oss_dicom()
            if config is None:
                raise InvalidToken("the open-source DICOM server has no Audience and Authority configured")
            claims = self.core.issuer.validate(token, {config["audience"]})
            issuer, audiences = config["authority"].rstrip("/"), (config["audience"],)
        if claims.get("iss") != issuer:
            raise InvalidToken(f"The issuer '{claims.get('iss')}' is invalid")
        if claims.get("aud") not in audiences:
            raise InvalidToken(f"The audience '{claims.get('aud')}' is invalid")
        if claims.get("tid") != self.core.tenant_id:
            raise InvalidToken("The token was issued for another tenant")
        return claims

    def _authorized(self, claims: dict[str, Any], action: str) -> bool:
        scopes = set(str(claims.get("scp") or "").split())
        if scopes and not scopes & DELEGATED_SCOPES:  # a user's token must carry the service's scope
            return False
        if self.kind == "managed":
            return access.managed_allows(self.core.arm, claims["oid"], self.core.seed.dicom_resource_id, action)
        config = self.core.oss_dicom() or {}
        return access.oss_allows(config.get("roles") or {}, list(claims.get("roles") or []), action)

    # -- HTTP ------------------------------------------------------------------------------------------------
    async def endpoint(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        cors = self._cors()
        if request.method == "OPTIONS" and origin and "access-control-request-method" in request.headers:
            self.core.stats.count("dicom.preflight")
            headers = access.preflight(cors, origin, request.headers["access-control-request-method"],
                                       request.headers.get("access-control-request-headers", ""))
            return Response(status_code=204, headers=headers or {})
        action = access.action_for(request.method)
        name = "dicom.search" if action == "read" and _is_search(request.url.path) else {
            "read": "dicom.retrieve", "write": "dicom.store", "delete": "dicom.delete"}.get(action, "dicom.other")
        self.core.stats.count(name)
        answer = await self.core.faults.delayed("dicom", lambda: self._answer(request, action, name))
        if access.allowed_origin(cors, origin):
            answer.headers.update(access.cors_headers(cors, origin or ""))
        return answer

    async def _answer(self, request: Request, action: str, name: str) -> Response:
        try:
            self.core.faults.check("dicom", name)
        except InjectedFault as fault:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            return PlainTextResponse("Injected failure.", status_code=fault.status, headers=headers)
        if not action:
            return PlainTextResponse("The requested method is not supported.", status_code=405)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            with self.core.store.lock:
                claims = self._authenticate(token.strip())
                allowed = self._authorized(claims, action)
        except InvalidToken as e:
            description = str(e).replace('"', "'")
            return Response(status_code=401, headers={
                "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'})
        if not allowed:
            return PlainTextResponse("Authorization failed.", status_code=403)
        return await self._forward(request)

    async def _forward(self, request: Request) -> Response:
        try:
            base = await asyncio.to_thread(self.core.orthanc.ensure)
        except OrthancMissing as e:
            return PlainTextResponse(str(e), status_code=503)
        body = await request.body()
        if len(body) > MAX_BODY:
            return PlainTextResponse("The request is too large.", status_code=413)
        if self._client is None:
            # No kept-alive connections: Orthanc closes an idle one after a second, and a request sent on it
            # just then fails. A new loopback connection per request costs little.
            self._client = httpx.AsyncClient(timeout=60, trust_env=False,
                                             limits=httpx.Limits(max_keepalive_connections=0))
        path = request.url.path[len("/v2/"):]
        if not DICOMWEB_PATH.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
            return PlainTextResponse("The requested resource was not found.", status_code=404)
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_REQUEST_HEADERS}
        params = list(request.query_params.multi_items())
        if request.method in ("GET", "HEAD") and _is_search(path):
            limits = [v for k, v in params if k == "limit"]
            if len(limits) > 1 or limits and not (limits[0].isdigit() and int(limits[0]) in SEARCH_LIMIT):
                return PlainTextResponse("The query parameter 'limit' must be an integer from 1 to 200.",
                                         status_code=400)
            if not limits:  # Orthanc answers every match; the service answers 100
                params.append(("limit", str(DEFAULT_SEARCH_LIMIT)))
        try:
            upstream = await self._client.request(request.method, f"{base}/dicom-web/{path}",
                                                  params=params,
                                                  content=body, headers=headers, auth=self.core.orthanc.auth)
        except httpx.HTTPError:
            return PlainTextResponse("The server is currently unable to receive requests. Please retry your "
                                     "request.", status_code=503)
        content = upstream.content
        front = f"{request.url.scheme}://{request.url.netloc}/v2/"
        if content and upstream.headers.get("content-type", "").startswith(("application/dicom+json",
                                                                            "application/json")):
            content = content.replace(f"{base}/dicom-web/".encode(), front.encode())
        return Response(content, status_code=upstream.status_code,
                        headers={k: upstream.headers[k] for k in FORWARDED_RESPONSE_HEADERS if k in upstream.headers})


def _is_search(path: str) -> bool:
    """QIDO-RS paths end in studies, series or instances (a collection); WADO-RS paths name an object."""
    return path.rstrip("/").rsplit("/", 1)[-1] in ("studies", "series", "instances")


def routes(core: "TenantCore", kind: str) -> list[Route]:
    front = Front(core, kind)
    return [Route("/v2/{path:path}", front.endpoint, methods=METHODS)]
