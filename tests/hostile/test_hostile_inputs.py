"""Hand-picked hostile requests (the table is `bench.hostile.CASES`, which `python -m bench` also runs):
each gets a 4xx problem+json whose detail says what is wrong, and nothing is created."""

from __future__ import annotations

import re

import pytest

from bench.hostile import CASES, judge, send
from tests.support import FUNCTION_KEY


def app_names(tenant) -> set[str]:
    return {app.get("uniqueName") or app["id"] for app in tenant.state()["applications"]}


@pytest.fixture(scope="module")
def headers(api) -> dict[str, str]:
    return {"x-functions-key": FUNCTION_KEY, "Authorization": api.headers["Authorization"]}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_request_is_refused_and_creates_nothing(host, tenant, api, headers, case):
    before = app_names(tenant)
    answer = send(case, f"{host.url}/api", headers)
    made = app_names(tenant) - before
    for unique_name in made:  # never leave a wrongly made registration to the suites that follow
        api.delete(f"/registrations/{unique_name.removeprefix('dicomreg-')}")
    assert not made, f"{case.id} created {made}"
    verdict = judge(case, answer)
    assert verdict is None, verdict


def test_the_table_covers_every_kind_of_hostile_input():
    ids = " ".join(case.id for case in CASES)
    for kind in ("64KiB", "5MB", "100000-deep", "utf8", "duplicate", "proto", "cyrillic", "fullwidth",
                 "rtl", "zero-width", "wildcard", "javascript", "data", "fragment", "userinfo", "ipv4", "ipv6",
                 "decimal-ip", "http-not-localhost", "300-uris", "2000-chars", "41-chars", "double-hyphen",
                 "uppercase", "leading-hyphen", "trailing-hyphen", "null-byte", "crlf", "header-64KB",
                 "unknown-query", "dot-dot", "encoded-slash"):
        assert kind in ids, kind


def test_every_operation_reads_exactly_the_query_parameters_the_document_declares():
    """The API refuses any query parameter it does not read (tests/functions calls each function with
    unknown ones); the document must declare every one it does read."""
    from registrations import api
    from registrations.openapi import OPERATIONS

    keyed = {name for name, op in OPERATIONS.items() if not op.anonymous}
    assert keyed == set(api.ENDPOINTS)
    for function in keyed:
        declared = {p.name for p in OPERATIONS[function].params if p.location == "query"}
        assert set(api.ENDPOINTS[function].query.model_fields) == declared, function


def test_only_a_plain_correlation_id_is_echoed(api):
    plain = api.get("/registrations", headers={"x-correlation-id": "run-42.step:7"})
    assert plain.headers["x-correlation-id"] == "run-42.step:7"
    odd = api.get("/registrations", headers={"x-correlation-id": "<script>alert(1)</script>" + "x" * 300})
    assert odd.status_code == 200
    assert re.fullmatch(r"[0-9a-f-]{36}", odd.headers["x-correlation-id"]), odd.headers["x-correlation-id"]
