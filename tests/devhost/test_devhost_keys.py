"""Auth levels and host keys, and the admin API that invokes non-HTTP functions."""

import json

import pytest

from devhost_sample import FUNCTION_KEY, MASTER_KEY
from devhost import HostKeys

ROUTE = "/api/registrations/web-viewer"


def test_function_level_needs_a_key(client):
    response = client.get(ROUTE)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert FUNCTION_KEY not in response.text and MASTER_KEY not in response.text


@pytest.mark.parametrize("key", [FUNCTION_KEY, MASTER_KEY])
def test_function_level_accepts_function_or_master_key_in_header_or_query(client, key):
    assert client.get(ROUTE, headers={"x-functions-key": key}).status_code == 200
    assert client.get(ROUTE, params={"code": key}).status_code == 200


def test_a_wrong_key_is_refused_in_header_and_query(client):
    assert client.get(ROUTE, headers={"x-functions-key": FUNCTION_KEY + "x"}).status_code == 401
    assert client.get(ROUTE, params={"code": "nope"}).status_code == 401


def test_admin_level_needs_the_master_key(client):
    assert client.get("/api/admin-only", headers={"x-functions-key": FUNCTION_KEY}).status_code == 401
    assert client.get("/api/admin-only", params={"code": MASTER_KEY}).status_code == 200


def test_admin_api_lists_functions_for_the_master_key_only(client):
    assert client.get("/admin/functions", headers={"x-functions-key": FUNCTION_KEY}).status_code == 401
    listed = client.get("/admin/functions", headers={"x-functions-key": MASTER_KEY}).json()
    by_name = {function["name"]: function for function in listed}
    assert by_name["sweep"]["trigger"] == "timerTrigger"
    assert by_name["sweep"]["schedule"] == "0 */5 * * * *"
    assert by_name["get_registration"]["route"] == "registrations/{name}"
    assert by_name["get_registration"]["authLevel"] == "function"


def test_admin_api_invokes_a_timer_as_not_past_due(client, server):
    master = {"x-functions-key": MASTER_KEY}
    assert client.post("/admin/functions/sweep", json={"input": ""}).status_code == 401
    assert client.post("/admin/functions/sweep", json={"input": ""}, headers=master).status_code == 202
    assert server.app.state.sample_app.timer_calls == [False]
    assert client.post("/admin/functions/nothing", headers=master).status_code == 404
    assert client.post("/admin/functions/health", headers=master).status_code == 404  # HTTP: call it directly
    assert client.get("/admin/functions/sweep", headers=master).status_code == 405


def test_generated_keys_differ_and_persisted_keys_survive_a_restart(tmp_path):
    assert HostKeys.generate() != HostKeys.generate()
    path = tmp_path / ".local" / "host-keys.json"
    first = HostKeys.load_or_create(path)
    assert HostKeys.load_or_create(path) == first
    assert json.loads(path.read_text()) == {"master": first.master, "function": first.function}
    assert path.stat().st_mode & 0o077 == 0


def test_keys_given_partly_are_completed():
    keys = HostKeys.from_mapping({"function": "given"})
    assert keys.function == "given" and len(keys.master) >= 40
