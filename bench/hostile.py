"""Hostile input: property-based fuzzing of every operation in the OpenAPI 3.0 document the host serves, and
hand-picked hostile requests.

The fuzzer is schemathesis over `GET /api/openapi3.json`, with a valid admin token and the function key on
every request (the document's security schemes are taken out of what schemathesis sees, so it never
swaps the credentials for junk: the platform, not this API, answers a bad function key). Each operation
gets valid requests (positive) and invalid ones (negative). Positive requests are aimed, half the time, at
registrations that exist and at DICOM services the settings name, so they get past a 404 or a 422. Every
answer is checked: no 5xx, a documented status code, a documented content type, a body and headers that
match the document, and a negative request is refused with a 4xx. Generation is derandomized, so a run is
repeatable. Everything the run creates is deleted at the end.

The hand-picked cases (`CASES`) are requests a fuzzer rarely builds: bodies at and past the size limits,
deep nesting, invalid UTF-8, duplicate keys, confusable and invisible characters, dangerous redirect URIs,
names that break Key Vault or Graph naming, header and path tricks. Each must get a 4xx problem+json that
says what is wrong, and create nothing.

`python -m bench.hostile [--hostile-examples 200]`
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench._harness import HostProcess, Result, admin_token, audit, local_tenant, recorded, standalone

PROBLEM = "application/problem+json"
GOAL = "no 5xx, every response conforms, nothing created"

# Registrations positive requests aim at (made before each operation's turn; a DELETE may remove one).
KNOWN = {
    "dicom-oss-api": {"type": "resource", "displayName": "Fuzz OSS API", "dicomService": "oss"},
    "fuzz-service": {"type": "service", "displayName": "Fuzz daemon", "dicomService": "managed",
                     "access": "reader"},
    "fuzz-oss-writer": {"type": "service", "displayName": "Fuzz OSS writer", "dicomService": "oss",
                        "access": "writer", "credential": {"kind": "certificate"}},
    "fuzz-web": {"type": "confidential", "displayName": "Fuzz portal", "dicomService": "managed",
                 "redirectUris": ["https://fuzz-web.example.org/signin-oidc"]},
    "fuzz-spa": {"type": "public", "displayName": "Fuzz viewer", "dicomService": "managed", "platform": "spa",
                 "redirectUris": ["https://fuzz-spa.example.org/auth"]},
}
TARGETS = ("managed", "oss")


# ------------------------------------------------------------------------------------------ fuzzing
@dataclass
class FuzzReport:
    requests: int = 0
    server_errors: int = 0
    nonconforming: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # one example per operation and kind of failure
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.server_errors == 0 and self.nonconforming == 0

    def figure(self) -> str:
        return f"{self.requests} requests, {self.server_errors} 5xx, {self.nonconforming} non-conforming"

    def explain(self, limit: int = 8) -> str:
        shown = list(self.failures.items())[:limit]
        return "\n\n".join(f"--- {key}\n{text}" for key, text in shown)


def load_schema(api_base: str, headers: dict[str, str]) -> Any:
    """The document the host serves, minus its security: the harness sends valid credentials itself."""
    import schemathesis

    document = httpx.get(f"{api_base}/openapi3.json", trust_env=False, timeout=30).raise_for_status().json()
    document.pop("security", None)
    document.get("components", {}).pop("securitySchemes", None)
    for path in document["paths"].values():
        for operation in path.values():
            operation.pop("security", None)
    schema = schemathesis.openapi.from_dict(document, config=schemathesis.Config.from_dict({"headers": headers}))
    schema.config.update(base_url=api_base)
    return schema


def fuzz(api_base: str, headers: dict[str, str], *, examples: int, known: Iterable[str] = (),
         targets: Iterable[str] = TARGETS, before_operation: Any = None) -> FuzzReport:
    """Every operation, `examples` positive and `examples` negative requests each."""
    import requests
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    report = FuzzReport()
    started = time.monotonic()
    schema = load_schema(api_base, headers)
    session = requests.Session()
    session.trust_env = False  # loopback only: never a proxy from the environment
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if before_operation is not None:
                before_operation()
            try:
                _property(operation, mode, examples, session, report, sorted(known), sorted(targets))()
            except Unsatisfiable:  # nothing to make invalid (an operation without parameters or body)
                pass
    report.seconds = time.monotonic() - started
    return report


def _property(operation: Any, mode: Any, examples: int, session: Any, report: FuzzReport, known: list[str],
              targets: list[str]) -> Any:
    """The property for one operation and mode: every answer conforms; failures are counted, not raised,
    so one run reports every kind of failure it met."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    positive = mode == GenerationMode.POSITIVE
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_headers_conformance, response_schema_conformance] + ([] if positive else
                                                                             [negative_data_rejection])

    # Headers that frame the HTTP message are the HTTP server's to refuse, before any app runs (a malformed
    # Content-Length is a 400 from Azure's front end as from uvicorn): the hand-picked wire cases (CASES) test
    # framing. Schemathesis may add one to a request among its made-up headers; it is left off.
    framing = {"content-length", "transfer-encoding", "host", "connection", "expect", "te", "trailer", "upgrade"}

    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def exercise(case: Any, data: Any) -> None:
        if positive:
            _aim(case, data, known, targets)
        for name in [h for h in case.headers or {} if h.lower() in framing]:
            del case.headers[name]
        response = case.call(session=session, timeout=60)
        report.requests += 1
        report.statuses[response.status_code] += 1
        if response.status_code >= 500:
            report.server_errors += 1
        try:
            case.validate_response(response, checks=checks)
        except (AssertionError, BaseExceptionGroup) as failure:
            report.nonconforming += 1
            kinds = getattr(failure, "exceptions", (failure,))
            key = f"{operation.label} ({mode.value}): " + ", ".join(
                sorted({getattr(f, "title", type(f).__name__) for f in kinds}))
            report.failures.setdefault(key, str(failure)[:3000])

    return exercise


def _aim(case: Any, data: Any, known: list[str], targets: list[str]) -> None:
    """Half the time, point a valid request at something that exists, so it reaches past 404 and 422."""
    from hypothesis import strategies as st

    if known and "name" in (case.path_parameters or {}) and data.draw(st.booleans(), label="known name"):
        case.path_parameters["name"] = data.draw(st.sampled_from(known), label="name")
    if targets and isinstance(case.body, dict) and "dicomService" in case.body \
            and data.draw(st.booleans(), label="real target"):
        case.body["dicomService"] = data.draw(st.sampled_from(targets), label="target")
    if targets and "dicomService" in (case.query or {}) and data.draw(st.booleans(), label="real filter"):
        case.query["dicomService"] = data.draw(st.sampled_from(targets), label="filter")


def ensure_known(client: httpx.Client) -> None:
    """Each KNOWN registration exists as written: PUT creates it when a case deleted it and changes it back
    when a case (a PATCH or PUT) changed it."""
    for name, body in KNOWN.items():
        response = client.put(f"/registrations/{name}", json={"name": name, **body})
        if response.status_code not in (200, 201):
            raise RuntimeError(f"could not make {name}: {response.status_code} {response.text[:300]}")


def names(client: httpx.Client) -> set[str]:
    found: set[str] = set()
    url: str | None = "/registrations?top=100"
    while url:
        body = client.get(url).raise_for_status().json()
        found |= {item["name"] for item in body["value"]}
        url = body.get("nextLink")
    return found


def delete_all_but(client: httpx.Client, keep: set[str]) -> int:
    """Delete every registration not in `keep`; clients before the resource registrations they use."""
    doomed = names(client) - keep
    resources = {n for n in doomed if client.get(f"/registrations/{n}").json().get("type") == "resource"}
    for name in sorted(doomed - resources) + sorted(resources):
        response = client.delete(f"/registrations/{name}")
        if response.status_code not in (200, 404):
            raise RuntimeError(f"could not delete {name}: {response.status_code} {response.text[:300]}")
    return len(doomed)


# ------------------------------------------------------------------------------------ hand-picked
@dataclass(frozen=True)
class Hostile:
    """One hostile request. `says` must appear in the problem's detail (case-insensitive). `wire` marks a
    request the HTTP server itself refuses before any function runs: a 4xx, its body the server's own."""

    id: str
    body: Any = None
    content: bytes | None = None
    method: str = "POST"
    path: str = "/registrations"
    headers: dict[str, str] = field(default_factory=dict)
    status: tuple[int, ...] = (422,)
    says: str = ""
    wire: bytes | None = None

    def payload(self) -> bytes | None:
        if self.content is not None:
            return self.content
        return None if self.body is None else json.dumps(self.body).encode()


def _service(**extra: Any) -> dict[str, Any]:
    return {"type": "service", "name": "hostile-probe", "displayName": "Hostile probe", "dicomService": "managed",
            "access": "reader", **extra}


def _web(*uris: str, **extra: Any) -> dict[str, Any]:
    return {"type": "confidential", "name": "hostile-web", "displayName": "Hostile web",
            "dicomService": "managed", "redirectUris": list(uris), **extra}


def _spa(*uris: str) -> dict[str, Any]:
    return {"type": "public", "platform": "spa", "name": "hostile-spa", "displayName": "Hostile SPA",
            "dicomService": "managed", "redirectUris": list(uris)}


def _padded(total: int) -> bytes:
    """A valid service body of exactly `total` bytes (the padding is in notes)."""
    empty = json.dumps(_service(notes="")).encode()
    return json.dumps(_service(notes="x" * (total - len(empty)))).encode()


def _nested(depth: int) -> bytes:
    return b'{"notes": ' + b"[" * depth + b"]" * depth + b"}"


def _raw_request(idempotency_key: bytes) -> bytes:
    body = json.dumps(_service(name="hostile-crlf")).encode()
    return (b"POST {base}/registrations HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            b"{auth}Idempotency-Key: " + idempotency_key + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n" + body)


CASES: list[Hostile] = [
    # sizes and shapes of the body
    Hostile("body-one-byte-over-64KiB", content=_padded(64 * 1024 + 1), status=(413,), says="65536"),
    Hostile("body-exactly-64KiB-is-read", content=_padded(64 * 1024), says="notes"),  # read, then notes too long
    Hostile("body-5MB", content=_padded(5 * 1024 * 1024), status=(413,), says="limit"),
    Hostile("json-nested-100000-deep", content=b"[" * 100_000 + b"]" * 100_000, status=(413,), says="limit"),
    Hostile("json-nested-20000-deep-under-the-size-limit", content=_nested(20_000), status=(400,),
            says="deep"),
    Hostile("invalid-utf8", content=json.dumps(_service()).encode().replace(b"Hostile", b"Host\xff\xfeile"),
            status=(400,), says="utf-8"),
    Hostile("utf16-body", content=json.dumps(_service()).encode("utf-16"), status=(400,), says="utf-8"),
    Hostile("duplicate-keys", content=b'{"type": "service", "name": "hostile-dup", "name": "victim", '
                                      b'"displayName": "d", "dicomService": "managed", "access": "reader"}',
            status=(400,), says="duplicate"),
    Hostile("duplicate-keys-nested", content=b'{"type": "service", "name": "hostile-dup", "displayName": "d", '
                                             b'"dicomService": "managed", "access": "reader", '
                                             b'"credential": {"kind": "secret", "kind": "federated"}}',
            status=(400,), says="duplicate"),
    Hostile("nan-literal", content=b'{"type": "service", "name": "hostile-nan", "displayName": "d", '
                                   b'"dicomService": "managed", "access": "reader", '
                                   b'"credential": {"kind": "secret", "lifetimeDays": NaN}}',
            status=(400,), says="nan"),
    Hostile("proto-key", body=_service(__proto__={"isAdmin": True}), says="__proto__"),
    Hostile("constructor-prototype-key", body=_service(credential={"kind": "secret",
                                                                   "constructor": {"prototype": {}}}),
            says="constructor"),
    Hostile("body-is-an-array", body=[_service()], says="body"),
    Hostile("not-json-content-type", content=json.dumps(_service()).encode(),
            headers={"Content-Type": "text/plain"}, status=(400,), says="application/json"),
    # names: confusables, Key Vault and Graph limits
    Hostile("name-cyrillic-a", body=_service(name="p\u0430cs-router"), says="name"),
    Hostile("name-fullwidth-digits", body=_service(name="app-\uff11\uff12\uff13"), says="name"),
    Hostile("name-41-chars", body=_service(name="a" * 41), says="name"),
    Hostile("name-double-hyphen-key-vault-separator", body=_service(name="evil--secret"), says="name"),
    Hostile("name-uppercase", body=_service(name="PacsRouter"), says="name"),
    Hostile("name-leading-hyphen", body=_service(name="-router"), says="name"),
    Hostile("name-trailing-hyphen", body=_service(name="router-"), says="name"),
    Hostile("name-null-byte", body=_service(name="router\x00x"), says="name"),
    Hostile("name-not-a-string", body=_service(name=["router"]), says="name"),
    # display names: invisible and direction-changing characters
    Hostile("displayname-rtl-override", body=_service(displayName="Invoice \u202egnp.exe"), says="displayName"),
    Hostile("displayname-rtl-isolate", body=_service(displayName="Viewer \u2067admin\u2069"), says="displayName"),
    Hostile("displayname-zero-width-space", body=_service(displayName="Ad\u200bmin"), says="displayName"),
    Hostile("displayname-zero-width-joiner", body=_service(displayName="Ad\u200dmin"), says="displayName"),
    Hostile("displayname-right-to-left-mark", body=_service(displayName="Admin\u200f"), says="displayName"),
    Hostile("displayname-null-byte", body=_service(displayName="Admin\x00"), says="displayName"),
    Hostile("displayname-lone-surrogate", content=json.dumps(_service()).encode().replace(
        b'"Hostile probe"', b'"Hostile \\ud800 probe"'), says="displayName"),
    Hostile("notes-line-separator", body=_service(notes="line\u2028break"), says="notes"),
    # redirect URIs
    Hostile("redirect-wildcard", body=_web("https://*.contoso.org/signin"), says="wildcard"),
    Hostile("redirect-javascript", body=_spa("javascript:alert(document.cookie)"), says="redirect"),
    Hostile("redirect-data", body=_web("data:text/html,<script>alert(1)</script>"), says="redirect"),
    Hostile("redirect-fragment", body=_web("https://portal.contoso.org/cb#access_token="), says="fragment"),
    Hostile("redirect-userinfo", body=_web("https://user@portal.contoso.org/cb"), says="user info"),
    Hostile("redirect-userinfo-localhost-trick", body=_web("http://localhost@evil.example/cb"),
            says="user info"),
    Hostile("redirect-backslash-userinfo", body=_web("https://portal.contoso.org\\@evil.example/cb"),
            says="redirect"),
    Hostile("redirect-ipv4", body=_web("https://10.0.0.1/cb"), says="ip literal"),
    Hostile("redirect-ipv6", body=_web("https://[::1]/cb"), says="ip literal"),
    Hostile("redirect-decimal-ip", body=_web("https://2130706433/cb"), says="ip literal"),
    Hostile("redirect-decimal-ip-http", body=_web("http://2130706433/cb"), says="http"),
    Hostile("redirect-http-not-localhost", body=_web("http://portal.contoso.org/cb"), says="http"),
    Hostile("redirect-http-localhost-lookalike", body=_web("http://localhost.evil.example/cb"), says="http"),
    Hostile("redirect-idn-homoglyph", body=_web("https://\u0430pple.example/cb"), says="ascii"),
    Hostile("redirect-300-uris", body=_web(*[f"https://app{i}.contoso.org/cb" for i in range(300)]),
            says="redirectUris"),
    Hostile("redirect-2000-chars", body=_web("https://portal.contoso.org/" + "a" * 2000), says="256"),
    Hostile("redirect-query", body=_web("https://portal.contoso.org/cb?next=https://evil.example"),
            says="query"),
    Hostile("redirect-port-zero", body=_web("https://portal.contoso.org:0/cb"), says="port"),
    Hostile("redirect-leading-space", body=_web(" https://portal.contoso.org/cb"), says="space"),
    Hostile("redirect-duplicates", body=_web("https://a.contoso.org/cb", "https://a.contoso.org/cb"),
            says="unique"),
    # query parameters, headers
    Hostile("unknown-query-parameter-on-create", path="/registrations?isAdmin=true", body=_service(),
            says="isAdmin"),
    Hostile("unknown-query-parameter-on-read", method="GET", path="/registrations/fuzz-service?debug=1",
            says="debug"),
    Hostile("top-huge", method="GET", path="/registrations?top=99999999999999999999999", says="top"),
    Hostile("idempotency-key-encoded-crlf", body=_service(),
            headers={"Idempotency-Key": "abc%0D%0AX-Injected:%20yes"}, says="idempotency-key"),
    Hostile("idempotency-key-8KB", body=_service(), headers={"Idempotency-Key": "k" * 8192},
            says="idempotency-key"),
    Hostile("idempotency-key-latin1", body=_service(), headers={"Idempotency-Key": "cl\u00e9"},
            says="idempotency-key"),
    Hostile("idempotency-key-raw-cr", wire=_raw_request(b"abc\rX-Injected: yes"), status=(400,)),
    Hostile("idempotency-key-raw-nul", wire=_raw_request(b"abc\x00def"), status=(400,)),
    Hostile("header-64KB", body=_service(), headers={"X-Padding": "p" * 65536}, status=(431,),
            says="limit"),
    # the {name} path parameter
    Hostile("path-dot-dot-encoded-slash", method="GET", path="/registrations/..%2F..%2Fhealth", status=(404,),
            says="no registration"),
    Hostile("path-encoded-slash-to-another-route", method="DELETE", path="/registrations/fuzz-service%2Fconfig",
            status=(404,), says="no registration"),
    Hostile("path-encoded-dots", method="GET", path="/registrations/%2e%2e", status=(404,),
            says="no registration"),
    Hostile("path-null-byte", method="DELETE", path="/registrations/fuzz%00service", status=(404,),
            says="no registration"),
    Hostile("path-encoded-newline", method="GET", path="/registrations/fuzz%0Aservice", status=(404,),
            says="no registration"),
    Hostile("path-cyrillic-name", method="DELETE", path="/registrations/fuzz-s%D0%B5rvice", status=(404,),
            says="no registration"),
    Hostile("path-overlong-name", method="GET", path="/registrations/" + "a" * 4000, status=(404,),
            says="no registration"),
    # changes in place: PUT is a create body under the route's name, PATCH a JSON merge patch
    Hostile("put-rtl-override", method="PUT", path="/registrations/hostile-probe",
            body=_service(displayName="Invoice \u202egnp.exe"), says="displayName"),
    Hostile("put-name-differs-from-the-route", method="PUT", path="/registrations/hostile-victim", body=_service(),
            status=(409,), says="name"),
    Hostile("put-if-match-not-an-entity-tag", method="PUT", path="/registrations/hostile-probe", body=_service(),
            headers={"If-Match": "abc, \"def"}, status=(400,), says="If-Match"),
    Hostile("patch-as-plain-json", method="PATCH", path="/registrations/hostile-probe", body={"access": "admin"},
            status=(415,), says="merge-patch"),
    Hostile("patch-duplicate-keys", method="PATCH", path="/registrations/hostile-probe",
            content=b'{"access": "reader", "access": "admin"}',
            headers={"Content-Type": "application/merge-patch+json"}, status=(400,), says="duplicate"),
    Hostile("adopt-appid-not-a-guid", path="/registrations/hostile-probe/adopt",
            body={"appId": "00000000-0000-0000-0000-00000000000Z'", "type": "service", "dicomService": "managed",
                  "access": "reader"}, says="appId"),
    Hostile("adopt-with-a-credential", path="/registrations/hostile-probe/adopt",
            body={"appId": "00000000-0000-0000-0000-000000000001", "type": "confidential", "dicomService": "managed",
                  "credential": {"kind": "secret"}}, says="credential"),
    Hostile("patch-not-an-object", method="PATCH", path="/registrations/hostile-probe", body=["access"],
            headers={"Content-Type": "application/merge-patch+json"}, says="object"),
]


@dataclass
class Answer:
    status: int
    content_type: str
    text: str
    headers: dict[str, str]

    def problem(self) -> dict[str, Any] | None:
        if self.content_type != PROBLEM:
            return None
        try:
            return json.loads(self.text)
        except ValueError:
            return None


def send(case: Hostile, api_base: str, headers: dict[str, str]) -> Answer:
    if case.wire is not None:
        return _send_wire(case.wire, api_base, headers)
    request_headers = {**headers, "Content-Type": "application/json", **case.headers}
    with httpx.Client(trust_env=False, timeout=60) as client:
        response = client.request(case.method, api_base + case.path, content=case.payload(),
                                  headers={k: v.encode("latin-1") if not v.isascii() else v
                                           for k, v in request_headers.items()})
    return Answer(response.status_code, response.headers.get("content-type", "").split(";")[0],
                  response.text, dict(response.headers))


def _send_wire(template: bytes, api_base: str, headers: dict[str, str]) -> Answer:
    """A request written byte for byte: header values no HTTP client library will send."""
    url = urlsplit(api_base)
    auth = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
    raw = template.replace(b"{base}", url.path.encode()).replace(b"{host}", url.netloc.encode()) \
        .replace(b"{auth}", auth)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    found = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return Answer(status, found.get("content-type", "").split(";")[0], body.decode("latin-1"), found)


def judge(case: Hostile, answer: Answer) -> str | None:
    """None when the answer is the right refusal; else what is wrong with it."""
    if answer.status not in case.status:
        return f"{case.id}: {answer.status} (wanted {case.status}): {answer.text[:300]}"
    if "x-injected" in {k.lower() for k in answer.headers}:
        return f"{case.id}: a header was injected into the response"
    if case.wire is not None:
        return None  # the HTTP server refused it; no function ran
    problem = answer.problem()
    if problem is None:
        return f"{case.id}: {answer.content_type or 'no content type'}, not {PROBLEM}: {answer.text[:200]}"
    if problem.get("status") != answer.status or not problem.get("title") or not problem.get("detail"):
        return f"{case.id}: the problem lacks status, title or detail: {problem}"
    if case.says.lower() not in problem["detail"].lower():
        return f"{case.id}: the detail does not mention {case.says!r}: {problem['detail']!r}"
    return None


def run_cases(api_base: str, headers: dict[str, str], cases: Iterable[Hostile] = CASES) -> tuple[int, list[str]]:
    wrong = []
    count = 0
    for case in cases:
        count += 1
        verdict = judge(case, send(case, api_base, headers))
        if verdict:
            wrong.append(verdict)
    return count, wrong


# ------------------------------------------------------------------------------------------- bench
def run(options: argparse.Namespace) -> list[Result]:
    with local_tenant() as lt, HostProcess(lt) as host:
        headers = {"x-functions-key": host.function_key, "Authorization": f"Bearer {admin_token(lt)}"}
        with httpx.Client(base_url=host.api, headers=headers, trust_env=False, timeout=120) as client:
            before = names(client)
            ensure_known(client)
            cases, wrong = run_cases(host.api, headers)
            created_by_cases = names(client) - before - set(KNOWN)
            report = fuzz(host.api, headers, examples=options.hostile_examples, known=KNOWN,
                          before_operation=lambda: ensure_known(client))
            delete_all_but(client, before)
        left = audit(lt.state(), records=recorded(lt))
    for line in wrong[:10]:
        print(f"  hand-picked: {line}", file=sys.stderr)
    for key in list(report.failures)[:10]:
        print(f"  fuzz: {key}", file=sys.stderr)
    if report.failures:
        print(report.explain(3), file=sys.stderr)
    figure = (f"{report.requests + cases} requests, {report.server_errors} 5xx, "
              f"{report.nonconforming + len(wrong)} non-conforming")
    ok = report.ok and not wrong and not created_by_cases and left["orphans"] == 0 and left["apps"] == 0
    details = (f"fuzz {report.requests} in {report.seconds:.0f} s ({options.hostile_examples} examples per "
               f"operation and mode), {cases} hand-picked, {len(created_by_cases)} created by hand-picked, "
               f"{left['orphans']} orphans")
    return [Result("hostile input", figure, GOAL, ok), Result("hostile input detail", details)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hostile-examples", type=int, default=200,
                        help="generated requests per operation and mode (positive, negative)")


if __name__ == "__main__":
    sys.exit(standalone(__doc__, add_arguments, run))
