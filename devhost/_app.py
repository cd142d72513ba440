"""The ASGI application: the FunctionApp's HTTP functions under the route prefix, plus the admin API.

Every request goes through one dispatcher so that 404, 405, 401 and 413 have the same problem+json shape
whether the path belongs to a function or to the admin API.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import unquote

import azure.functions as func
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devhost._functions import FunctionEntry, LocalTimerRequest, index_functions, invoke
from devhost._http import (
    DEFAULT_MAX_BODY_BYTES,
    BodyTooLarge,
    is_platform_identity_header,
    problem,
    read_body,
    to_function_request,
    to_starlette_response,
)
from devhost._keys import HostKeys, presented_key
from devhost._routing import Match, RouteTable, compile_template

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOST_JSON = PROJECT_ROOT / "host.json"
DEFAULT_ROUTE_PREFIX = "api"
MAX_HEADER_BYTES = 32 * 1024  # Kestrel's MaxRequestHeadersTotalSize, which the Functions host keeps

log = logging.getLogger("devhost")
access_log = logging.getLogger("devhost.access")

Handler = Callable[[Request, Match[Any]], Awaitable[Response]]


def read_route_prefix(host_json_path: Path) -> str:
    """`extensions.http.routePrefix` from host.json; `api` when the file or the setting is absent."""
    try:
        host_json = json.loads(Path(host_json_path).read_text())
    except FileNotFoundError:
        return DEFAULT_ROUTE_PREFIX
    prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix")
    return DEFAULT_ROUTE_PREFIX if prefix is None else prefix


def api_base_url(server_url: str, route_prefix: str) -> str:
    """Where the functions live: `http://127.0.0.1:7071/api`, or the bare origin for an empty prefix."""
    return f"{server_url}/{route_prefix.strip('/')}".rstrip("/")


def build_app(
    function_app: func.FunctionApp,
    *,
    route_prefix: str | None = None,
    keys: HostKeys | Mapping[str, str] | None = None,
    host_json_path: Path = DEFAULT_HOST_JSON,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Starlette:
    """A Starlette app serving `function_app` as the Functions host would. `app.state.keys` holds the keys."""
    prefix = read_route_prefix(host_json_path) if route_prefix is None else route_prefix
    host_keys = keys if isinstance(keys, HostKeys) else HostKeys.from_mapping(keys)
    functions = index_functions(function_app)

    table: RouteTable[tuple[str, Handler]] = RouteTable()
    for entry in functions:
        if entry.is_http:
            target = (entry.auth_level("function"), partial(_serve_http, entry, max_body_bytes))
            table.add(compile_template(prefix, entry.route), entry.methods, target)
    # The real host's admin API for functions; it needs the master key whatever the app's defaults.
    background = {entry.name.lower(): entry for entry in functions if not entry.is_http}
    listing = partial(_list_functions, functions)
    invoking = partial(_invoke_background, background, max_body_bytes)
    table.add(compile_template("admin", "functions"), frozenset({"GET"}), ("admin", listing))
    table.add(compile_template("admin", "functions/{name}"), frozenset({"POST"}), ("admin", invoking))

    async def dispatch(request: Request) -> Response:
        if sum(len(k) + len(v) for k, v in request.scope["headers"]) > MAX_HEADER_BYTES:
            return problem(431, "Request Header Fields Too Large", f"The limit is {MAX_HEADER_BYTES} bytes.")
        match = table.match(request.method, routing_path(request.scope))
        if match.method_not_allowed:
            allow = ", ".join(sorted(match.allowed_methods))
            return problem(405, "Method Not Allowed", Allow=allow)
        if match.target is None:
            return problem(404, "Not Found", "No function serves this path.")
        level, handler = match.target
        if not host_keys.permits(level, presented_key(request)):
            return problem(401, "Unauthorized", "A valid key is required.")
        try:
            return await handler(request, match)
        except BodyTooLarge:
            return problem(413, "Content Too Large", f"The limit is {max_body_bytes} bytes.")

    # An ASGI callable rather than a function endpoint: Starlette then accepts every method and leaves the
    # 405 decision (and its problem+json body) to the table above.
    endpoint = _AsgiEndpoint(dispatch)
    app = Starlette(routes=[Route("/{path:path}", endpoint)])
    app.router.default = endpoint  # a path Starlette's own pattern cannot match (a decoded %0A) comes here too
    app.add_middleware(_AccessLog)
    app.state.keys = host_keys
    app.state.route_prefix = prefix
    app.state.functions = functions
    return app


def routing_path(scope: Scope) -> str:
    """The path as Kestrel routes it: percent-decoded except %2F, which stays inside its segment, so
    `registrations/a%2Fconfig` is the name `a%2Fconfig`, never the route `registrations/{name}/config`."""
    raw = scope.get("raw_path")
    if not raw:
        return scope["path"]
    return unquote(re.sub(r"%2[Ff]", "%252F", raw.decode("latin-1")), errors="replace")


async def _serve_http(
    entry: FunctionEntry, max_body_bytes: int, request: Request, match: Match[Any]
) -> Response:
    request.scope["devhost.function"] = entry.name
    body = await read_body(request, max_body_bytes)
    # Local Easy Auth is asked for the way the platform says Easy Auth is on: WEBSITE_AUTH_ENABLED=True. Then
    # the caller plays App Service and its principal headers pass; otherwise they are dropped, as in Azure.
    easy_auth = os.environ.get("WEBSITE_AUTH_ENABLED", "").lower() == "true"
    if not easy_auth and any(is_platform_identity_header(name) for name in request.headers.keys()):
        log.warning("suspicious request: dropped client-sent X-MS-CLIENT-PRINCIPAL/X-MS-TOKEN headers, as App "
                    "Service does (set WEBSITE_AUTH_ENABLED=True to stand in for Easy Auth locally)")
    function_request = to_function_request(request, body, match.route_params, keep_identity_headers=easy_auth)
    return await _guarded(entry, function_request, to_starlette_response)


async def _list_functions(functions: list[FunctionEntry], request: Request, match: Match[Any]) -> Response:
    return JSONResponse([entry.describe() for entry in functions])


async def _invoke_background(
    background: dict[str, FunctionEntry], max_body_bytes: int, request: Request, match: Match[Any]
) -> Response:
    entry = background.get(match.route_params["name"].lower())
    if entry is None:
        return problem(404, "Not Found", "No non-HTTP function has that name.")
    request.scope["devhost.function"] = entry.name
    trigger_value = _background_trigger_value(entry, await read_body(request, max_body_bytes))
    # The real host answers 202 and runs the function later; running it first lets a caller see
    # locally whether it failed, which is what a developer invoking it by hand wants to know.
    return await _guarded(entry, trigger_value, lambda _: Response(status_code=202))


def _background_trigger_value(entry: FunctionEntry, body: bytes) -> Any:
    """Timers get a timer request; other triggers get the `input` string of `{"input": ...}`, as in Azure."""
    if entry.trigger_type.lower() == "timertrigger":
        return LocalTimerRequest()
    try:
        return (json.loads(body) if body else {}).get("input", "")
    except (ValueError, AttributeError):
        return ""


async def _guarded(entry: FunctionEntry, trigger_value: Any, render: Callable[[Any], Response]) -> Response:
    """Run the function; a failure is logged with its traceback and answered 500 without its text."""
    try:
        return render(await invoke(entry, trigger_value))
    except Exception:
        log.exception("function %s failed", entry.name)
        return problem(500, "Internal Server Error", f"Function '{entry.name}' failed; see the host log.")


class _AsgiEndpoint:
    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


class _AccessLog:
    """One JSON line per request: at INFO for what the host answered itself (a missing key, no such route),
    at DEBUG for what a function answered. The query string is never logged: `code=` may carry a key."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            line = {
                "event": "request",
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "durationMs": round((time.perf_counter() - started) * 1000, 1),
                "function": scope.get("devhost.function"),
            }
            # A request a function handled is the function app's to log (the product writes one line per
            # request); the host's own line then waits for DEBUG, so `make run` shows one line per request.
            (access_log.debug if line["function"] else access_log.info)(json.dumps(line))
