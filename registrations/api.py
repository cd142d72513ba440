"""Request handling behind the HTTP functions: parse, authorize, call the service, render.

Imported on the first request, not at worker start, so the function app's cold start pays for
azure-functions alone.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlencode, urlsplit

import azure.functions as func
from pydantic import TypeAdapter, ValidationError

from . import manifest as mf
from . import wiring
from .dicom import FORMATS, render
from .manifest import Caller
from .models import NAME_PATTERN, RegistrationRequest
from .problems import (
    PROBLEM_CONTENT_TYPE,
    Conflict,
    Forbidden,
    MalformedRequest,
    Misconfigured,
    NotFound,
    PayloadTooLarge,
    Problem,
    ValidationProblem,
)
from .policy import ADMIN, READ, REQUEST

log = logging.getLogger("registrations.api")
audit = logging.getLogger("registrations.audit")

MAX_BODY_BYTES = 64 * 1024
MAX_PAGE = 100
_REQUEST = TypeAdapter(RegistrationRequest)
_NAME = re.compile(NAME_PATTERN)
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# A caller's correlation id is echoed in a response header and written to logs, so only a plain one is kept.
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# Setting names as the settings module spells them in its problems (values are quoted there, or numbers);
# the anonymous health check names a bad setting and never repeats its value.
_SETTING_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")

# The registration a write is about, for its audit record: the route's name, or a create's validated body.
_AUDITED_NAME: ContextVar[str | None] = ContextVar("audited_registration", default=None)

# What each operation needs. Registrations.Request callers also only ever see their own registrations.
ROLES_FOR = {
    "create": (ADMIN, REQUEST),
    "read": (ADMIN, READ, REQUEST),
    "delete": (ADMIN, REQUEST),
    "rotate": (ADMIN, REQUEST),
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers=headers or {})


def problem_response(problem: Problem, instance: str | None = None) -> func.HttpResponse:
    headers = dict(problem.headers)
    if problem.status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return func.HttpResponse(json.dumps(problem.to_dict(instance)), status_code=problem.status,
                             mimetype=PROBLEM_CONTENT_TYPE, headers=headers)


def handle(req: func.HttpRequest, operation: Callable[[func.HttpRequest, Caller], func.HttpResponse],
           needs: str) -> func.HttpResponse:
    """The one place where errors become problem+json."""
    correlation = req.headers.get("x-correlation-id") or req.headers.get("x-ms-client-tracking-id") or ""
    if not _CORRELATION_ID.match(correlation):
        correlation = str(uuid.uuid4())
    instance = urlsplit(req.url).path
    caller: Caller | None = None
    audited = _AUDITED_NAME.set(req.route_params.get("name"))
    try:
        runtime = wiring.runtime()
        caller = runtime.authenticator.caller(req.headers)
        _require(caller, needs)
        _known_query(req, QUERY.get(operation, ()))
        response = operation(req, caller)
    except Problem as problem:
        response = problem_response(problem, instance)
    except Exception:
        log.exception("unhandled error in %s %s (correlation %s)", req.method, instance, correlation)
        response = problem_response(Problem(f"an unexpected error occurred; correlation id {correlation}"),
                                    instance)
    finally:
        name = _AUDITED_NAME.get()
        _AUDITED_NAME.reset(audited)
    _audit(req, needs, response, correlation, caller, name)
    response.headers["x-correlation-id"] = correlation
    return response


def _require(caller: Caller, needs: str) -> None:
    allowed = ROLES_FOR[needs]
    if not caller.roles.intersection(allowed):
        raise Forbidden(f"this needs one of the app roles {', '.join(allowed)} on the registrations API",
                        requiredRoles=list(allowed))


def _audit(req: func.HttpRequest, needs: str, response: func.HttpResponse, correlation: str,
           caller: Caller | None, name: str | None) -> None:
    """One record per write, whatever its end. ``event`` is registration.create, .rotate or .delete;
    ``outcome`` is succeeded, replayed (an idempotent replay that changed nothing), refused (4xx) or
    failed (5xx); ``status`` is the HTTP status."""
    if needs == "read":
        return
    status = response.status_code
    if status >= 500:
        outcome = "failed"
    elif status >= 400:
        outcome = "refused"
    elif response.headers.get("Idempotent-Replayed") == "true":
        outcome = "replayed"
    else:
        outcome = "succeeded"
    audit.info(json.dumps({
        "event": f"registration.{needs}", "outcome": outcome, "status": status, "method": req.method,
        "registration": name, "correlationId": correlation,
        "caller": None if caller is None else {"oid": caller.object_id, "appid": caller.app_id,
                                               "name": caller.name},
    }))


def _known_query(req: func.HttpRequest, allowed: tuple[str, ...]) -> None:
    """A parameter the operation does not read is refused, not ignored: a caller who misspells a filter
    must not get every registration. `code` is the function key, which the platform accepts in the query."""
    unknown = set(req.params) - set(allowed) - {"code"}
    if unknown:
        raise ValidationProblem(f"unknown query parameters: {', '.join(sorted(unknown))}",
                                errors=[{"loc": ["query", p], "msg": "unknown"} for p in sorted(unknown)])


def _body(req: func.HttpRequest) -> Any:
    """JSON as RFC 8259 defines it for interchange: UTF-8, unique keys, no NaN or Infinity. A repeated key
    is refused because parsers disagree on which copy wins (the first, the last, an error)."""
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    content_type = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json":
        raise MalformedRequest("send the body as application/json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"the body is not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise MalformedRequest("the body nests too deeply to be read") from None
    except ValueError:
        raise MalformedRequest("the body is not valid JSON") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body = dict(pairs)
    if len(body) != len(pairs):
        repeated = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise MalformedRequest(f"the body has the duplicate key {repeated[:60]!r}; send each key once")
    return body


def _no_constant(name: str) -> Any:
    raise MalformedRequest(f"the body contains {name}, which is not JSON; send a number or null")


def _validation_problem(exc: ValidationError) -> ValidationProblem:
    errors = [
        {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    first = errors[0]
    where = ".".join(first["loc"]) or "body"
    return ValidationProblem(f"{where}: {first['msg']}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1
                                                           else ""), errors=errors)


def _name(req: func.HttpRequest) -> str:
    name = req.route_params.get("name", "")
    if not _NAME.match(name) or not 3 <= len(name) <= 40:
        raise NotFound(f"no registration named {name[:60]!r}")
    return name


def _location(req: func.HttpRequest, name: str) -> str:
    base = req.url.split("?")[0]
    return f"{base.split('/registrations')[0]}/registrations/{name}"


# --------------------------------------------------------------------------------------- operations
def create(req: func.HttpRequest, caller: Caller) -> func.HttpResponse:
    _idempotency_key(req)
    try:
        request = _REQUEST.validate_python(_body(req))
    except ValidationError as exc:
        raise _validation_problem(exc) from None
    _AUDITED_NAME.set(request.name)
    registration, created = wiring.runtime().service.create(request, caller)
    return _made(registration, created, _location(req, request.name))


def _made(body: Any, created: bool, location: str) -> func.HttpResponse:
    """201 for what this call made; 200 with Idempotent-Replayed for a replay that made nothing."""
    headers = {"Location": location}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(body, 201 if created else 200, headers)


def get(req: func.HttpRequest, caller: Caller) -> func.HttpResponse:
    return json_response(wiring.runtime().service.get(_name(req), caller))


def config(req: func.HttpRequest, caller: Caller) -> func.HttpResponse:
    fmt = req.params.get("format", "json")
    if fmt not in FORMATS:
        raise ValidationProblem(f"format must be one of {', '.join(FORMATS)}",
                                errors=[{"loc": ["query", "format"], "msg": "unknown format"}])
    body, content_type = render(wiring.runtime().service.config(_name(req), caller), fmt)
    return func.HttpResponse(body, status_code=200, mimetype=content_type.split(";")[0], charset="utf-8")


def verification(req: func.HttpRequest, caller: Caller) -> func.HttpResponse:
    """200 when the credential gets a DICOM token (or the configuration checks pass); 202 while Entra ID is
    still propagating, with Retry-After and Location back here, which is how Logic Apps poll."""
    result = wiring.runtime().verifier.verify(_name(req), caller)
    if result.pending:
        return json_response(result.body, 202, {"Retry-After": str(result.retry_after), "Location": req.url})
    return json_response(result.body)


def list_(req: func.HttpRequest, caller: Caller) -> func.HttpResponse:
    params = req.params
    kind = params.get("type")
    if kind not in (None, "confidential", "public", "service", "resource"):
        raise ValidationProblem("type must be confidential, public, service or resource",
                                errors=[{"loc": ["query", "type"], "msg": "unknown type"}])
    try:
        top = int(params.get("top", "50"))
    except ValueError:
        top = 0
    if not 1 <= top <= MAX_PAGE:
        raise ValidationProblem(f"top must be a whole number from 1 to {MAX_PAGE}",
                                errors=[{"loc": ["query", "top"], "msg": "out of range"}])
    after = params.get("after")
    items = wiring.runtime().service.list(caller, type=kind, target=params.get("dicomService"))
    if after:
        items = [item for item in items if item["name"] > after]
    page, more = items[:top], len(items) > top
    body: dict[str, Any] = {"value": page}
    if more:
        query = {k: v for k, v in {"type": kind, "dicomService": params.get("dicomService"), "top": str(top),
                                   "after": page[-1]["name"]}.items() if v}
        body["nextLink"] = f"{req.url.split('?')[0]}?{urlencode(query)}"
    return json_response(body)


def _idempotency_key(req: func.HttpRequest) -> str | None:
    key = req.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise ValidationProblem("Idempotency-Key must be 1-128 characters of letters, digits and ._:-",
                                errors=[{"loc": ["header", "Idempotency-Key"], "msg": "invalid"}])
    return key


def rotate(req: func.HttpRequest, caller: Caller) -> func.HttpResponse:
    if req.get_body():
        raise ValidationProblem("rotation takes no body", errors=[{"loc": ["body"], "msg": "must be empty"}])
    body, rotated = wiring.runtime().service.rotate(_name(req), caller, idempotency_key=_idempotency_key(req))
    return _made(body, rotated, req.url.split("?")[0])


def credentials(req: func.HttpRequest, caller: Caller) -> func.HttpResponse:
    return json_response(wiring.runtime().service.list_credentials(_name(req), caller))


def expiring(req: func.HttpRequest, caller: Caller) -> func.HttpResponse:
    from datetime import timedelta

    from . import sweep

    try:
        days = int(req.params.get("days", "30"))
    except ValueError:
        days = -1
    if not 1 <= days <= 730:
        raise ValidationProblem("days must be a whole number from 1 to 730",
                                errors=[{"loc": ["query", "days"], "msg": "out of range"}])
    service = wiring.runtime().service
    items = [item for item in sweep.expiring(service, now=service.now(), within=timedelta(days=days))
             if service.may_see_requester(item["requestedBy"], caller)]
    return json_response({"days": days, "value": items})


def sweep() -> dict:
    """The timer's work; returns the report (also logged)."""
    from . import sweep as sweeper

    return sweeper.run(wiring.runtime().service)


def delete(req: func.HttpRequest, caller: Caller) -> func.HttpResponse:
    service = wiring.runtime().service
    name = _name(req)
    try:
        return json_response(service.delete(name, caller))
    except Conflict as conflict:
        if "dependents" not in conflict.extensions or ADMIN in caller.roles:
            raise
        raise _dependents_visible_to(conflict, service, name, caller) from None


def _dependents_visible_to(conflict: Conflict, service: Any, name: str, caller: Caller) -> Conflict:
    """A requester learns the names of the dependents it may see and only how many others there are: the
    names of other requesters' registrations are theirs."""
    requesters = {service.registration_name(app): mf.tag_values(app).get("requester")
                  for app in service.owned_registrations()}
    dependents = conflict.extensions["dependents"]
    visible = [d for d in dependents if service.may_see_requester(requesters.get(d), caller)]
    others = len(dependents) - len(visible)
    users = ", ".join(visible + ([f"{others} registration(s) of other requesters"] if others else []))
    return Conflict(f"resource registration {name!r} is used by {users}; those must be deleted first",
                    dependents=visible, otherDependents=others)


# The query parameters each operation reads (as the OpenAPI table declares them); handle() refuses others.
QUERY: dict[Callable[..., func.HttpResponse], tuple[str, ...]] = {
    list_: ("type", "dicomService", "top", "after"),
    config: ("format",),
    expiring: ("days",),
}


def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness plus a settings check; never calls Azure, so probes stay cheap. Anonymous, so it tells no
    configuration: a bad setting is named, its value only logged."""
    try:
        wiring.runtime()
    except Problem as problem:
        log.error("health check: %s", problem.detail)
        names = sorted(set(_SETTING_NAME.findall(_QUOTED.sub("", problem.detail))))
        return problem_response(Misconfigured(
            f"app settings are missing or invalid{': ' + ', '.join(names) if names else ''}; "
            "the function app's log says what is wrong", settings=names), urlsplit(req.url).path)
    return json_response({"status": "ok"})
