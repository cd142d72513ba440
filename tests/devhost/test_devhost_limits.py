"""What keeps the host local and quiet: body limit, loopback only, keys never in the log."""

import json
import time

import httpx
import pytest

import devhost
from devhost_sample import FUNCTION_KEY, MASTER_KEY, build_sample_host


def test_a_body_over_the_limit_is_413_problem():
    with devhost.start_in_thread(build_sample_host(max_body_bytes=1024)) as server:
        with httpx.Client(base_url=server.url, trust_env=False) as http:
            key = {"x-functions-key": FUNCTION_KEY}
            assert http.post("/api/registrations", content=b"x" * 1024, headers=key).status_code == 201
            response = http.post("/api/registrations", content=b"x" * 1025, headers=key)
            assert response.status_code == 413
            assert response.headers["content-type"] == "application/problem+json"
            # Without Content-Length (chunked), the limit holds while streaming.
            chunked = http.post("/api/registrations", content=iter([b"x" * 1000, b"x" * 1000]), headers=key)
            assert chunked.status_code == 413


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_only_loopback_addresses_may_be_bound(host):
    with pytest.raises(devhost.LoopbackOnlyError, match="loopback only"):
        devhost.start_in_thread(build_sample_host(), host=host)
    with pytest.raises(devhost.LoopbackOnlyError):
        devhost.serve(build_sample_host(), host=host)


def test_route_prefix_comes_from_host_json(tmp_path):
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": "v1"}}}))
    with devhost.start_in_thread(build_sample_host(host_json_path=host_json)) as server:
        assert httpx.get(f"{server.url}/v1/health", trust_env=False).status_code == 200
        assert httpx.get(f"{server.url}/api/health", trust_env=False).status_code == 404


def test_an_explicit_empty_prefix_serves_at_the_root():
    with devhost.start_in_thread(build_sample_host(route_prefix="")) as server:
        assert httpx.get(f"{server.url}/health", trust_env=False).status_code == 200


def test_the_key_in_the_query_string_never_reaches_any_log_line(client, caplog):
    caplog.set_level("DEBUG")
    for key in (FUNCTION_KEY, MASTER_KEY, "wrong-key"):
        client.get("/api/registrations/x", params={"code": key})
        client.get("/api/boom", params={"code": key})
        client.get("/api/nowhere", params={"code": key})
        client.post("/admin/functions/sweep", params={"code": key})
    client.get("/api/health")  # the last line, so the ones above have all been written

    def logged() -> str:
        # httpx and httpcore are the test's own client, which logs the URL it was given; the host is under test.
        host_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
        return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in host_records)

    # The host writes a request's line once its answer is sent, so the client may read the answer first.
    deadline = time.monotonic() + 10
    while "/api/health" not in logged() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = logged()
    assert "/api/health" in text
    assert "code=" not in text
    assert FUNCTION_KEY not in text and MASTER_KEY not in text
