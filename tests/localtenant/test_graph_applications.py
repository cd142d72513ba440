"""Graph applications: upsert by uniqueName, CRUD, passwords, keyCredentials, validation, owners."""
from __future__ import annotations

from localtenant_helpers import Graph, client_token


def test_upsert_creates_then_updates(graph):
    r = graph.upsert("reg-one", {"tags": ["dicom-registration"]})
    assert r.status_code == 201
    app = r.json()
    assert app["@odata.context"].endswith("/v1.0/$metadata#applications/$entity")
    assert app["uniqueName"] == "reg-one" and app["tags"] == ["dicom-registration"]
    assert app["signInAudience"] == "AzureADMyOrg" and app["passwordCredentials"] == []
    r = graph.upsert("reg-one", {"notes": "requested by x"})
    assert r.status_code == 204 and r.content == b""
    assert graph("GET", f"/applications/{app['id']}").json()["notes"] == "requested by x"


def test_upsert_without_prefer_is_404(graph):
    r = graph("PATCH", "/applications(uniqueName='missing')", {"displayName": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "Request_ResourceNotFound"


def test_add_password_returns_secret_once_and_it_works(lt, http, graph):
    app, _ = graph.app_with_sp("with-secret")
    cred = graph.secret(app["id"], displayName="first")
    assert cred["hint"] == cred["secretText"][:3] and len(cred["secretText"]) == 40
    assert set(cred) >= {"keyId", "hint", "secretText", "startDateTime", "endDateTime", "displayName"}
    listed = graph("GET", f"/applications/{app['id']}").json()["passwordCredentials"]
    assert listed[0]["secretText"] is None and listed[0]["keyId"] == cred["keyId"]
    r = client_token(lt, http, app["appId"], cred["secretText"], "https://graph.microsoft.com/.default")
    assert r.status_code == 200, r.text
    assert graph("POST", f"/applications/{app['id']}/removePassword", {"keyId": cred["keyId"]}).status_code == 204
    r = client_token(lt, http, app["appId"], cred["secretText"], "https://graph.microsoft.com/.default")
    assert r.json()["error_codes"] == [7000215]


def test_password_on_patch_is_rejected(graph):
    r = graph.upsert("no-pw", {"passwordCredentials": [{"displayName": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest"
    r = graph.upsert("no-pw", {"colour": "blue"})
    assert r.status_code == 400 and "does not exist" in r.json()["error"]["message"]


def test_service_principal_create_get_by_app_id(graph):
    app, sp = graph.app_with_sp("has-sp")
    assert sp["appId"] == app["appId"] and sp["displayName"] == "has-sp"
    r = graph("GET", f"/servicePrincipals(appId='{app['appId']}')")
    assert r.status_code == 200 and r.json()["id"] == sp["id"]


def test_other_owner_cannot_modify(lt, http, graph):
    app = graph.upsert("theirs").json()
    seed = lt.seed.admin_client  # an app with no Graph roles
    token = client_token(lt, http, seed.app_id, seed.secret, "https://graph.microsoft.com/.default").json()
    other = Graph(lt, http, token["access_token"])
    r = other("PATCH", f"/applications/{app['id']}", {"notes": "mine now"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "Authorization_RequestDenied"
    inner = other("GET", "/applications/x", headers={"client-request-id": "abc"}).json()["error"]["innerError"]
    assert inner["client-request-id"] == "abc" and inner["request-id"] and inner["date"]


# The v1.0 application resource's JSON representation (learn.microsoft.com/graph/api/resources/application),
# without `logo` (a stream, which Graph never puts in the JSON).
APPLICATION_PROPERTIES = {
    "addIns", "api", "appId", "applicationTemplateId", "appRoles", "authenticationBehaviors", "certification",
    "createdByAppId", "createdDateTime", "deletedDateTime", "disabledByMicrosoftStatus", "displayName",
    "groupMembershipClaims", "id", "identifierUris", "info", "isDeviceOnlyAuthSupported", "isFallbackPublicClient",
    "keyCredentials", "managerApplications", "nativeAuthenticationApisEnabled", "notes",
    "oauth2RequiredPostResponse", "optionalClaims", "parentalControlSettings", "passwordCredentials",
    "publicClient", "publisherDomain", "requestSignatureVerification", "requiredResourceAccess",
    "servicePrincipalLockConfiguration", "serviceManagementReference", "signInAudience", "spa", "tags",
    "tokenEncryptionKeyId", "uniqueName", "verifiedPublisher", "web",
}


def test_an_application_carries_every_property_of_the_v1_resource(lt, graph):
    """Mutation: drop `"certification": None` (or any key) from APP_DEFAULTS and the GET lacks it."""
    app = graph.upsert("every-property").json()
    got = graph("GET", f"/applications/{app['id']}").json()
    assert APPLICATION_PROPERTIES <= set(got), sorted(APPLICATION_PROPERTIES - set(got))
    assert got["verifiedPublisher"] == {"displayName": None, "verifiedPublisherId": None, "addedDateTime": None}
    assert got["disabledByMicrosoftStatus"] is None and got["certification"] is None
    assert got["createdByAppId"] == lt.seed.product.app_id  # the client that created it
    refused = graph("PATCH", f"/applications/{app['id']}", {"verifiedPublisher": {"displayName": "me"}})
    assert refused.status_code == 400  # read-only: set by "Set verified publisher" only
