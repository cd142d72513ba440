"""HTTP plumbing shared by every emulated service: one wrapper per operation that counts the call, applies
injected latency and faults, reads the body, runs the (synchronous) handler under the state lock and turns
the service's own exceptions into its error shape through that service's single serializer."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from .runtime import InjectedFault

if TYPE_CHECKING:
    from .core import TenantCore

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class Req:
    """What a handler needs from a request, with the body already read."""

    def __init__(self, request: Request, body: bytes, core: "TenantCore") -> None:
        self.raw, self.body, self.core = request, body, core
        self.method = request.method
        self.path_params: dict[str, str] = dict(request.path_params)
        self.query = request.query_params
        self.headers = request.headers
        self.url = str(request.url)
        self.request_id = str(uuid.uuid4())
        self.client_host = request.client.host if request.client else ""
        self.arrived = core.clock.now()  # before any injected latency: two calls in flight at once overlap

    def json(self) -> Any:
        """The JSON body, or raises ValueError (services turn it into their 400)."""
        if not self.body:
            raise ValueError("the request body is empty")
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))

    def bearer(self) -> str | None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@dataclass(frozen=True)
class ServiceSpec:
    """How one service speaks errors: its exception base class, the serializer for it and the error it
    answers for an injected fault."""
    name: str
    error_type: type[Exception]
    render: Callable[[Any, Req], Response]
    fault: Callable[[InjectedFault], Exception]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def empty(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, headers=headers)


def operation(core: "TenantCore", spec: ServiceSpec, path: str, methods: list[str], name: str,
              handler: Callable[[Req], Response]) -> Route:
    async def endpoint(request: Request) -> Response:
        core.stats.count(name)
        req = Req(request, await request.body(), core)
        return await core.faults.delayed(spec.name, lambda: handled(req))

    async def handled(req: Req) -> Response:
        lost: InjectedFault | None = None
        try:
            lost = core.faults.check(spec.name, name)
            with core.store.lock:
                answer = handler(req)
        except InjectedFault as fault:
            return spec.render(spec.fault(fault), req)
        except spec.error_type as err:
            answer = spec.render(err, req)
        if lost is not None:
            # "when": "after": the work above is committed; only its answer is replaced, whatever it was.
            return spec.render(spec.fault(lost), req)
        return answer

    return Route(path, endpoint, methods=methods, name=name)


def routes(core: "TenantCore", spec: ServiceSpec, rows: list[tuple[str, list[str], str, Callable]]) -> list[Route]:
    """Routes from (path, methods, operation name, handler) rows."""
    return [operation(core, spec, path, methods, name, handler) for path, methods, name, handler in rows]


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def fallback(core: "TenantCore", spec: ServiceSpec, known: list[Route],
             error: Callable[[Req, list[str]], Exception]) -> Route:
    """The last route of an origin: a request no other route takes answers in the service's own JSON error
    shape (Starlette would answer plain text, which no Azure client parses). `error` gets the request and the
    methods the path does allow (empty: the path is unknown)."""
    async def endpoint(request: Request) -> Response:
        req = Req(request, b"", core)
        allowed = sorted({m for r in known if r.matches(request.scope)[0] is Match.PARTIAL for m in r.methods or ()})
        return spec.render(error(req, allowed), req)

    return Route("/{path:path}", endpoint, methods=METHODS, name=f"{spec.name}.unknownRoute")
