"""Graph request plumbing shared by the route modules: the caller from the bearer token, object addressing
(`/applications/{id}` or `/applications(uniqueName='..')`), @odata.context and collection responses."""
from __future__ import annotations

import re
from typing import Any, Callable

from starlette.responses import JSONResponse, Response

from ..entra.tokens import InvalidToken
from ..web import Req, ServiceSpec, operation
from . import exceptions as gx
from . import odata
from .backend import Caller

SPEC = ServiceSpec("graph", gx.GraphError, gx.render, gx.from_fault)
AUDIENCES = {"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"}
_KEY = re.compile(r"^(?P<prop>uniqueName|appId|id)='(?P<value>(?:[^']|'')*)'$|^'(?P<bare>[^']*)'$")


def caller(req: Req) -> Caller:
    token = req.bearer()
    if token is None:
        raise gx.unauthenticated("Access token is empty.")
    try:
        claims = req.core.issuer.validate(token, AUDIENCES)
    except InvalidToken as e:
        raise gx.unauthenticated(str(e)) from None
    return Caller(oid=claims["oid"], roles=set(claims.get("roles", [])))


def address(req: Req) -> tuple[str, str]:
    if "id" in req.path_params:
        return "id", req.path_params["id"]
    m = _KEY.match(req.path_params["key"])
    if m is None:
        raise gx.bad_request(f"Invalid key predicate '{req.path_params['key']}'.")
    if m.group("bare") is not None:
        return "id", m.group("bare")
    return m.group("prop"), m.group("value").replace("''", "'")


def context(req: Req, fragment: str) -> str:
    return f"{req.core.graph_endpoint}/v1.0/$metadata#{fragment}"


def headers(req: Req) -> dict[str, str]:
    return {"request-id": req.request_id,
            "client-request-id": req.headers.get("client-request-id") or req.request_id}


def entity(req: Req, body: dict[str, Any], fragment: str, status: int = 200) -> JSONResponse:
    fields = odata.select_fields(req.query)
    ctx = fragment if not fields else fragment.replace("/$entity", f"({','.join(fields)})/$entity")
    return JSONResponse({"@odata.context": context(req, ctx), **odata.select(body, fields)}, status_code=status,
                        headers=headers(req))


def collection(req: Req, items: list[dict[str, Any]], fragment: str) -> JSONResponse:
    items = [o for o in items if odata.parse_filter(req.query.get("$filter"))(o)]
    fields = odata.select_fields(req.query)
    ctx = fragment if not fields else f"{fragment}({','.join(fields)})"
    base = req.url.split("?", 1)[0]
    return JSONResponse(odata.page(items, req.query, base, context(req, ctx)), headers=headers(req))


def no_content(req: Req) -> Response:
    return Response(status_code=204, headers=headers(req))


def routes_for(core, table: list[tuple[str, list[str], str | tuple[str, str], Callable]]) -> list:
    """Routes for (path, methods, operation, handler); a path with `{ref}` is served both as `/{id}` and as
    `({key})`, Graph's alternate-key form. Each is also served with a trailing slash, which Graph accepts
    (the "Create federatedIdentityCredential" example posts to `.../federatedIdentityCredentials/`), where
    Starlette would otherwise answer a redirect."""
    out = []
    for path, methods, name, handler in table:
        names = name if isinstance(name, tuple) else (name, name)  # (by id, by alternate key)
        variants = [path.replace("/{ref}", "/{id}"), path.replace("/{ref}", "({key})")] if "{ref}" in path \
            else [path]
        out += [operation(core, SPEC, "/v1.0" + p + slash, methods, n, handler)
                for p, n in zip(variants, names) for slash in ("", "/")]
    return out
