"""Translation between Starlette and azure-functions HTTP objects, and the host's own error bodies."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
from starlette.requests import Request
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(Exception):
    """The request body exceeded the host's limit; answered 413 before the function runs."""


def problem(status: int, title: str, detail: str | None = None, **headers: str) -> Response:
    """An RFC 7807 body. Details are fixed strings chosen here, never text from an exception."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing early by Content-Length and again while streaming (chunked uploads)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


# Headers App Service authentication (Easy Auth) sets for the app; "External requests aren't allowed to set
# these headers, so they're present only if App Service sets them" (learn.microsoft.com, App Service: "Work
# with user identities in Azure App Service authentication").
PLATFORM_IDENTITY_HEADERS = ("x-ms-client-principal", "x-ms-token-")


def is_platform_identity_header(name: str) -> bool:
    return name.lower().startswith(PLATFORM_IDENTITY_HEADERS)


def to_function_request(request: Request, body: bytes, route_params: dict[str, str], *,
                        keep_identity_headers: bool = False) -> func.HttpRequest:
    """Repeated headers are joined as HTTP allows (RFC 9110 5.3); repeated query keys keep the last value.
    Client-sent Easy Auth identity headers are dropped, as App Service drops them, unless
    `keep_identity_headers` (local Easy Auth: the caller stands in for the platform)."""
    headers: dict[str, str] = {}
    for key, value in request.headers.items():
        if not keep_identity_headers and is_platform_identity_header(key):
            continue
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=headers,
        params=dict(request.query_params),
        route_params=route_params,
        body=body,
    )


def to_starlette_response(result: Any) -> Response:
    """Functions may return an HttpResponse, or a str/bytes the host wraps as a 200, or None for 204."""
    if result is None:
        return Response(status_code=204)
    if isinstance(result, (str, bytes)):
        result = func.HttpResponse(result)
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function returned {type(result).__name__}, not an HttpResponse")
    headers = dict(result.headers.items())
    if not any(key.lower() == "content-type" for key in headers):
        headers["Content-Type"] = _content_type(result.mimetype, result.charset)
    return Response(result.get_body(), status_code=result.status_code, headers=headers)


def _content_type(mimetype: str, charset: str) -> str:
    # A charset parameter means something only for text types; JSON is UTF-8 by definition (RFC 8259).
    return f"{mimetype}; charset={charset}" if mimetype.startswith("text/") else mimetype
