"""What the Azure CLI needs from ARM beside role assignments (az login lists subscriptions; assigning a role
by name lists role definitions with a roleName filter), and every origin's answer to a route it does not
have: its service's own JSON error shape, never plain text."""
from __future__ import annotations

from localtenant_helpers import client_token, mi_token

DATA_READER = "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a"


def _arm(lt, http, path, token, **params):
    return http.get(f"{lt.arm_endpoint}{path}", params={"api-version": "2022-12-01", **params},
                    headers={"Authorization": f"Bearer {token}"})


def test_subscriptions_list_what_the_caller_holds_a_role_in(lt, http):
    token = mi_token(lt, http, "https://management.azure.com/")  # the product: roles in the resource group
    listed = _arm(lt, http, "/subscriptions", token).json()
    assert [s["subscriptionId"] for s in listed["value"]] == [lt.seed.subscription_id]
    sub = listed["value"][0]
    assert sub["id"] == f"/subscriptions/{lt.seed.subscription_id}" and sub["tenantId"] == lt.tenant_id
    assert sub["state"] == "Enabled" and listed["count"] == {"type": "Total", "value": 1}
    assert _arm(lt, http, f"/subscriptions/{lt.seed.subscription_id}", token).json() == sub

    seed = lt.seed.admin_client  # no Azure role anywhere: sees no subscription
    other = client_token(lt, http, seed.app_id, seed.secret, "https://management.azure.com/.default").json()
    assert _arm(lt, http, "/subscriptions", other["access_token"]).json()["value"] == []
    r = _arm(lt, http, f"/subscriptions/{lt.seed.subscription_id}", other["access_token"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "SubscriptionNotFound"


def test_role_definitions_by_name(lt, http):
    token = mi_token(lt, http, "https://management.azure.com/")
    path = f"{lt.seed.dicom_resource_id}/providers/Microsoft.Authorization/roleDefinitions"
    found = _arm(lt, http, path, token, **{"api-version": "2022-04-01",
                                           "$filter": "roleName eq 'DICOM Data Reader'"}).json()["value"]
    assert [(d["name"], d["properties"]["roleName"], d["properties"]["type"]) for d in found] == [
        (DATA_READER, "DICOM Data Reader", "BuiltInRole")]
    assert found[0]["id"].endswith(f"/providers/Microsoft.Authorization/roleDefinitions/{DATA_READER}")
    one = _arm(lt, http, f"{path}/{DATA_READER}", token, **{"api-version": "2022-04-01"})
    assert one.status_code == 200 and one.json() == found[0]
    assert _arm(lt, http, path, token, **{"api-version": "2022-04-01", "$filter": "roleName eq 'Nope'"}).json() == {
        "value": []}
    bad = _arm(lt, http, path, token, **{"api-version": "2022-04-01", "$filter": "startswith(roleName,'D')"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "UnsupportedQuery"


def test_unknown_routes_answer_in_each_service_shape(lt, http, graph):
    r = graph("GET", "/applicationz")
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest"
    assert r.json()["error"]["message"] == "Resource not found for the segment 'applicationz'."
    assert "innerError" in r.json()["error"]
    r = graph("PUT", "/applications", {})
    assert r.status_code == 405 and r.json()["error"]["code"] == "Request_BadRequest"

    token = mi_token(lt, http, "https://management.azure.com/")
    r = http.get(f"{lt.arm_endpoint}/nothing/here", params={"api-version": "2022-04-01"},
                 headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404 and set(r.json()["error"]) == {"code", "message"}

    r = http.get(f"{lt.vault_url}/keys/k", params={"api-version": "7.5"})
    assert r.status_code == 404 and set(r.json()["error"]) >= {"code", "message"}

    r = http.get(f"{lt.authority}/oauth2/v2.0/token")
    assert r.status_code == 405 and r.json()["error_codes"] == [900561]
    assert r.json()["error_description"].startswith("AADSTS900561: The endpoint only accepts POST requests.")
    r = http.get(f"{lt.authority}/nothing")
    assert r.status_code == 404 and r.json()["error"] == "invalid_request" and r.json()["error_codes"]
