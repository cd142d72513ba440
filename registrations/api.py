"""Request handling behind the HTTP functions: parse, authorize, call the service, render.

``serve`` is the one way in: it authenticates the caller, checks the app role the operation needs, parses
the query (the same pydantic model the OpenAPI document describes), the route's name and the body, calls the
operation, turns every Problem into problem+json and logs one record per request (a write's is its audit record). The operations below
are a few lines each.

Imported on the first request, not at worker start, so the function app's cold start pays for
azure-functions alone.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode, urlsplit

import azure.functions as func
from pydantic import BaseModel, TypeAdapter, ValidationError

from . import logs
from . import sweep as sweeper
from . import wiring
from .auth import effective_caller
from .change import fixed_in, fixed_problem
from .manifest import ADMIN, READ, REQUEST, Caller
from .models import (
    IDEMPOTENCY_KEY_PATTERN,
    AdoptRequest,
    NAME_PATTERN,
    UNION_TAGS,
    ExpiringQuery,
    GetQuery,
    ListQuery,
    NoQuery,
    RegistrationRequest,
    Request,
    where_it_goes,
)
from .problems import (
    PROBLEM_CONTENT_TYPE,
    Forbidden,
    MalformedRequest,
    Misconfigured,
    NotFound,
    PayloadTooLarge,
    Problem,
    UnsupportedMediaType,
    ValidationProblem,
    unanswered_problem,
)
from .views import FORMATS, render

log = logging.getLogger("registrations.api")

MAX_BODY_BYTES = 64 * 1024
_REQUEST: TypeAdapter[Request] = TypeAdapter(RegistrationRequest)
_NAME = re.compile(NAME_PATTERN)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
# A caller's correlation id is echoed in a response header and written to logs, so only a plain one is kept.
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# Setting names as the settings module spells them in its problems (values are quoted there, or numbers);
# the anonymous health check names a bad setting and never repeats its value.
_SETTING_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
# The function key, which the platform also accepts in the query: never an operation's parameter.
_PLATFORM_QUERY = frozenset({"code"})

# What each kind of operation needs. Registrations.Request callers also only ever see their own.
ROLES_FOR = {
    "create": (ADMIN, REQUEST),
    "read": (ADMIN, READ, REQUEST),
    "change": (ADMIN, REQUEST),
    "delete": (ADMIN, REQUEST),
    "rotate": (ADMIN, REQUEST),
    "adopt": (ADMIN,),
}
MERGE_PATCH = "application/merge-patch+json"
# If-Match: `*`, or entity tags (RFC 9110 8.8.3), strong or weak, comma-separated.
_IF_MATCH = re.compile(r'^\s*(\*|(W/)?"[\x21\x23-\x7e]*"(\s*,\s*(W/)?"[\x21\x23-\x7e]*")*)\s*$')


Q = TypeVar("Q", bound=BaseModel)


@dataclass(frozen=True)
class Call(Generic[Q]):
    """One authorized request, parsed: what an operation works with."""

    req: func.HttpRequest
    runtime: wiring.Runtime
    caller: Caller
    query: Q
    idempotency_key: str | None = None
    body: Request | None = None
    if_match: str | None = None
    # What the audit record adds for this call (a change's changedFields).
    audit: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return _route_name(self.req)

    @property
    def base_url(self) -> str:
        return self.req.url.split("?")[0]


@dataclass(frozen=True)
class Endpoint:
    run: Callable[[Call[Any]], func.HttpResponse]
    needs: str  # a key of ROLES_FOR; "read" is not audited
    query: type[BaseModel] = NoQuery
    idempotency_key: bool = False  # reads the Idempotency-Key header
    body: bool = False  # a RegistrationRequest
    if_match: bool = False  # reads the If-Match header


# ----------------------------------------------------------------------------------- the one way in
def serve(req: func.HttpRequest, function: str) -> func.HttpResponse:
    """Run the operation behind the HTTP function named `function`; the one place errors become
    problem+json."""
    started = time.perf_counter()
    endpoint = ENDPOINTS[function]
    correlation = req.headers.get("x-correlation-id") or req.headers.get("x-ms-client-tracking-id") or ""
    if not _CORRELATION_ID.match(correlation):
        correlation = str(uuid.uuid4())
    instance = urlsplit(req.url).path
    caller: Caller | None = None
    audit_extra: dict[str, Any] = {}
    subject = req.route_params.get("name")  # what the audit record names: the route's, or the body's name
    try:
        runtime = wiring.runtime()
        caller = runtime.authenticator.caller(req.headers)
        caller = effective_caller(caller, req.headers)
        _require(caller, endpoint.needs)
        query = _query(req, endpoint.query)
        if "name" in req.route_params:
            _route_name(req)  # before the body: a name no registration can have is not found, whatever is sent
        key = _idempotency_key(req) if endpoint.idempotency_key else None
        body = _parse(_REQUEST, _body(req)) if endpoint.body else None
        subject = body.name if body else subject
        call = Call(req, runtime, caller, query, key, body, _if_match(req) if endpoint.if_match else None)
        response = endpoint.run(call)
        audit_extra = call.audit
    except Problem as problem:
        response = problem_response(problem, instance)
    except Exception as exc:
        if (unanswered := unanswered_problem(exc)) is not None:
            log.warning("%s %s: an Azure service did not answer (%s; correlation %s)", req.method, instance,
                        type(exc).__name__, correlation)
            response = problem_response(unanswered, instance)
        else:
            log.exception("unhandled error in %s %s (correlation %s)", req.method, instance, correlation)
            response = problem_response(Problem(f"an unexpected error occurred; correlation id {correlation}"),
                                        instance)
    _log_request(req, function, endpoint.needs, response, correlation, caller, subject, started, audit_extra)
    response.headers["x-correlation-id"] = correlation
    return response


def _route_name(req: func.HttpRequest) -> str:
    """The route's registration name; a name no registration can have is simply not found."""
    name = req.route_params.get("name", "")
    if not _NAME.match(name) or not 3 <= len(name) <= 40:
        raise NotFound(f"no registration named {name[:60]!r}")
    return name


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers=headers or {})


def problem_response(problem: Problem, instance: str | None = None) -> func.HttpResponse:
    headers = dict(problem.headers)
    if problem.status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return func.HttpResponse(json.dumps(problem.to_dict(instance)), status_code=problem.status,
                             mimetype=PROBLEM_CONTENT_TYPE, headers=headers)


def _require(caller: Caller, needs: str) -> None:
    allowed = ROLES_FOR[needs]
    if not caller.roles.intersection(allowed):
        raise Forbidden(f"this needs one of the app roles {', '.join(allowed)} on the registrations API",
                        requiredRoles=list(allowed))


def _log_request(req: func.HttpRequest, function: str, needs: str, response: func.HttpResponse,
                 correlation: str, caller: Caller | None, name: str | None, started: float,
                 extra: dict[str, Any]) -> None:
    """The request's one log record: `operation` (the function's name), `method`, `status`, `durationMs`,
    `correlationId` and the caller's `oid`, `appid` and `name`; never a secret. A write's record is its
    audit record and also says `event` (registration.create, .change, .rotate, .delete or .adopt),
    `registration` and `outcome`: succeeded, replayed (an idempotent replay that changed nothing), refused
    (4xx) or failed (5xx); a change adds `changedFields`."""
    status = response.status_code
    fields: dict[str, Any] = {
        "operation": function, "method": req.method, "status": status,
        "durationMs": round((time.perf_counter() - started) * 1000, 1), "correlationId": correlation,
        "caller": None if caller is None else {"oid": caller.object_id, "appid": caller.app_id,
                                               "name": caller.name,
                                               **({"broker": caller.broker} if caller.broker else {})},
    }
    write = needs != "read"
    if write:
        if status >= 500:
            outcome = "failed"
        elif status >= 400:
            outcome = "refused"
        elif response.headers.get("Idempotent-Replayed") == "true":
            outcome = "replayed"
        else:
            outcome = "succeeded"
        fields.update(event=f"registration.{needs}", registration=name, outcome=outcome, **extra)
        if needs == "create":
            logs.count("provisions", outcome=outcome)
    logs.request_line(fields, write=write)


def _parse(model: type[BaseModel] | TypeAdapter, data: Any, where: str | None = None) -> Any:
    """Validate with a pydantic model; a failure is a 422 naming every location (prefixed by `where`)."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [_error(err, data, where) for err in exc.errors(include_url=False, include_input=False)]
        first = ".".join(errors[0]["loc"]) or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValidationProblem(f"{first}: {errors[0]['msg']}{more}", errors=errors) from None


def _error(err: Any, data: Any, where: str | None) -> dict[str, Any]:
    """One pydantic error as the API reports it: the field's path in the body, the same for every type (no
    union tag in it), and, for a field sent where it does not belong, where it goes."""
    path = _field_path(err["loc"], data)
    message = err["msg"]
    if err["type"] == "extra_forbidden" and isinstance(data, dict) and len(path) <= 2:
        hint = where_it_goes(path[-1], data.get("type"), in_credential=path[:-1] == ["credential"])
        if hint:
            message = f"{message}: {hint}"
    return {"loc": ([where] if where else []) + path, "msg": message, "type": err["type"]}


def _field_path(loc: tuple[Any, ...], data: Any) -> list[str]:
    """pydantic's loc without the tags that picked a union member, read against the data it describes."""
    path: list[str] = []
    node = data
    for element in loc:
        if element in UNION_TAGS and not (isinstance(node, dict) and element in node):
            continue
        path.append(str(element))
        if isinstance(node, dict):
            node = node.get(element)
        elif isinstance(node, list) and isinstance(element, int) and 0 <= element < len(node):
            node = node[element]
        else:
            node = None
    return path


def _query(req: func.HttpRequest, model: type[BaseModel]) -> Any:
    """The operation's query model. A parameter it does not read is refused, not ignored: a caller who
    misspells a filter must not get every registration."""
    params = {k: v for k, v in req.params.items() if k not in _PLATFORM_QUERY}
    unknown = sorted(set(params) - set(model.model_fields))
    if unknown:
        raise ValidationProblem(f"unknown query parameters: {', '.join(unknown)}",
                                errors=[{"loc": ["query", p], "msg": "unknown"} for p in unknown])
    return _parse(model, params, "query")


def _body(req: func.HttpRequest, media_type: str = "application/json") -> Any:
    """JSON as RFC 8259 defines it for interchange: UTF-8, unique keys, no NaN or Infinity. A repeated key
    is refused because parsers disagree on which copy wins (the first, the last, an error)."""
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    media, *parameters = (req.headers.get("content-type") or "").lower().split(";")
    content_type = media.strip()
    if media_type == MERGE_PATCH and content_type != MERGE_PATCH:
        # RFC 5789 2.2: an unsupported patch document is 415, and Accept-Patch says what is supported.
        problem = UnsupportedMediaType(f"send the patch as {MERGE_PATCH} (RFC 7396 JSON merge patch)")
        problem.headers["Accept-Patch"] = MERGE_PATCH
        raise problem
    if content_type and content_type != media_type:
        raise MalformedRequest(f"send the body as {media_type}")
    # RFC 8259 section 8.1: JSON between systems is UTF-8. A body labelled otherwise is refused, not guessed at.
    charsets = {value.strip().strip('"') for name, _, value in (p.partition("=") for p in parameters)
                if name.strip() == "charset"}
    if charsets - {"utf-8", "utf8"}:
        raise MalformedRequest(f"JSON bodies must be UTF-8: send Content-Type: {media_type} (charset=utf-8 or none)")
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


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2: members of an object patch replace, null removes, objects merge recursively;
    anything else replaces the target whole."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _if_match(req: func.HttpRequest) -> str | None:
    value = req.headers.get("if-match")
    if value is not None and (len(value) > 1024 or not _IF_MATCH.match(value)):
        raise MalformedRequest('If-Match must be * or a list of entity tags in double quotes, as ETag gives them')
    return value


def _idempotency_key(req: func.HttpRequest) -> str | None:
    key = req.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise ValidationProblem("Idempotency-Key must be 1-128 characters of letters, digits and ._:-",
                                errors=[{"loc": ["header", "Idempotency-Key"], "msg": "invalid"}])
    return key


def _made(body: Any, created: bool, location: str) -> func.HttpResponse:
    """201 for what this call made; 200 with Idempotent-Replayed for a replay that made nothing."""
    headers = {"Location": location}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    if "etag" in body:  # a registration (a rotation answers with its credentials)
        headers["ETag"] = body["etag"]
    return json_response(body, 201 if created else 200, headers)


def _registration(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """A registration, with its entity tag as ETag (RFC 9110 8.8.3): the If-Match of a later change."""
    return json_response(body, status, {**(headers or {}), "ETag": body["etag"]})


def _converged(call: Call[Any], body: dict, outcome: str) -> func.HttpResponse:
    """A PUT's or PATCH's answer: 201 when it created, 200 listing what changed, 200 replay when nothing did."""
    call.audit["changedFields"] = body.get("changed") or []
    if outcome == "created":
        return _made(body, True, call.base_url)
    return _registration(body, 200, {"Idempotent-Replayed": "true"} if outcome == "unchanged" else {})


# --------------------------------------------------------------------------------------- operations
def create(call: Call[NoQuery]) -> func.HttpResponse:
    assert call.body is not None, "serve parsed the body"
    registration, created = call.runtime.service.create(call.body, call.caller,
                                                        idempotency_key=call.idempotency_key)
    return _made(registration, created, f"{call.base_url}/{registration['name']}")


def list_(call: Call[ListQuery]) -> func.HttpResponse:
    query = call.query
    page, more = call.runtime.service.list_registrations(call.caller, query)
    body: dict[str, Any] = {"value": page}
    if more:
        following = query.model_copy(update={"after": page[-1]["name"]}).model_dump(exclude_none=True)
        body["nextLink"] = f"{call.base_url}?{urlencode(following)}"
        body["nextAfter"] = following["after"]
    return json_response(body)


def get(call: Call[GetQuery]) -> func.HttpResponse:
    return _registration(call.runtime.service.get(call.name, call.caller, live=call.query.drift == "live"))


def put(call: Call[NoQuery]) -> func.HttpResponse:
    assert call.body is not None, "serve parsed the body"
    body, outcome = call.runtime.service.put(call.name, call.body, call.caller, if_match=call.if_match)
    return _converged(call, body, outcome)


def patch(call: Call[NoQuery]) -> func.HttpResponse:
    document = _body(call.req, MERGE_PATCH)
    if not isinstance(document, dict):
        raise ValidationProblem("a merge patch of a registration is a JSON object of the fields to change",
                                errors=[{"loc": ["body"], "msg": "must be an object"}])

    def merged(current: dict) -> Request:
        wanted = merge_patch(current, document)
        if fixed := fixed_in(current, wanted):
            raise fixed_problem(fixed)
        return _parse(_REQUEST, wanted)

    body, outcome = call.runtime.service.patch(call.name, call.caller, merged, if_match=call.if_match)
    return _converged(call, body, outcome)


def config(call: Call[NoQuery]) -> func.HttpResponse:
    fmt = call.req.route_params.get("format", "")
    if fmt not in FORMATS:
        raise ValidationProblem(f"no configuration format {fmt[:40]!r}; the formats are {', '.join(FORMATS)}",
                                errors=[{"loc": ["path", "format"], "msg": f"one of {', '.join(FORMATS)}"}])
    body, content_type = render(call.runtime.service.config(call.name, call.caller), fmt)
    return func.HttpResponse(body, status_code=200, mimetype=content_type.split(";")[0], charset="utf-8")


def verification(call: Call[NoQuery]) -> func.HttpResponse:
    """200 when the credential gets a DICOM token (or the configuration checks pass); 202 while Entra ID is
    still propagating, with Retry-After and Location back here, which is how Logic Apps poll."""
    result = call.runtime.verifier.verify(call.name, call.caller)
    if result.pending:
        return json_response(result.body, 202, {"Retry-After": str(result.retry_after), "Location": call.req.url})
    return json_response(result.body)


def adopt(call: Call[NoQuery]) -> func.HttpResponse:
    request = _parse(AdoptRequest, _body(call.req))
    body, adopted = call.runtime.service.adopt(call.name, request, call.caller,
                                               lambda doc: _parse(_REQUEST, doc, "adopted"))
    return _made(body, adopted, call.base_url.removesuffix("/adopt"))


def delete(call: Call[NoQuery]) -> func.HttpResponse:
    return json_response(call.runtime.service.delete(call.name, call.caller, if_match=call.if_match))


def rotate(call: Call[NoQuery]) -> func.HttpResponse:
    if call.req.get_body():
        raise ValidationProblem("rotation takes no body", errors=[{"loc": ["body"], "msg": "must be empty"}])
    body, rotated = call.runtime.service.rotate(call.name, call.caller, idempotency_key=call.idempotency_key)
    return _made(body, rotated, call.base_url)


def credentials(call: Call[NoQuery]) -> func.HttpResponse:
    return json_response(call.runtime.service.list_credentials(call.name, call.caller))


def expiring(call: Call[ExpiringQuery]) -> func.HttpResponse:
    days = call.query.days
    return json_response({"days": days, "value": call.runtime.service.expiring(call.caller, days)})


def capacity(call: Call[NoQuery]) -> func.HttpResponse:
    return json_response(call.runtime.service.capacity(call.caller))


# Keyed by the HTTP function's name in http.py, as openapi.OPERATIONS is; the query models are the ones the
# document declares.
ENDPOINTS: dict[str, Endpoint] = {
    "create_registration": Endpoint(create, "create", idempotency_key=True, body=True),
    "list_registrations": Endpoint(list_, "read", ListQuery),
    "get_registration": Endpoint(get, "read", GetQuery),
    "get_registration_config": Endpoint(config, "read"),
    "verify_registration": Endpoint(verification, "read"),
    "put_registration": Endpoint(put, "change", body=True, if_match=True),
    "patch_registration": Endpoint(patch, "change", if_match=True),
    "delete_registration": Endpoint(delete, "delete", if_match=True),
    "adopt_registration": Endpoint(adopt, "adopt"),
    "rotate_credential": Endpoint(rotate, "rotate", idempotency_key=True),
    "list_credentials": Endpoint(credentials, "read"),
    "expiring_report": Endpoint(expiring, "read", ExpiringQuery),
    "capacity_report": Endpoint(capacity, "read"),
}


# ------------------------------------------------------------------------------ outside serve()
def sweep() -> dict:
    """The timer's work; returns the report (also logged)."""
    return sweeper.run(wiring.runtime().service)


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
