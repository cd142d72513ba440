"""The login origin as a browser meets it: CORS on discovery, keys and the token endpoint, AADSTS9002326 for a
browser redeeming another platform's code, the sign-in pages and their session, logout, and a short access
token lifetime (docs/local-tenant.md, "Fidelity: the browser")."""
from __future__ import annotations

import ssl

import httpx
import pytest

from localtenant_helpers import claims
from localtenant.oauth.pkce import s256

DICOM = "https://dicom.healthcareapis.azure.com"
SPA = "https://viewer.local.test/callback"
WEB = "https://web.local.test/callback"
VIEWER = "https://viewer.local.test"
VERIFIER = "w" * 43


@pytest.fixture
def client_app(lt, graph):
    app, sp = graph.app_with_sp("browser-viewer", {"spa": {"redirectUris": [SPA]}, "web": {"redirectUris": [WEB]}})
    r = graph("POST", "/oauth2PermissionGrants", {"clientId": sp["id"], "consentType": "AllPrincipals",
                                                  "resourceId": lt.seed.first_party.dicom.object_id,
                                                  "scope": "Dicom.ReadWrite"})
    assert r.status_code == 201, r.text
    return app


@pytest.fixture
def browser(lt):
    with httpx.Client(verify=ssl.create_default_context(cafile=str(lt.ca_file)), trust_env=False) as client:
        yield client


def _auth_url(lt, app, redirect, **extra) -> str:
    params = {"client_id": app["appId"], "response_type": "code", "redirect_uri": redirect, "state": "s9",
              "scope": f"{DICOM}/Dicom.ReadWrite openid offline_access", "code_challenge": s256(VERIFIER),
              "code_challenge_method": "S256", **extra}
    return str(httpx.URL(f"{lt.authority}/oauth2/v2.0/authorize", params=params))


def _redeem(browser, lt, app, code, redirect, **headers):
    return browser.post(f"{lt.authority}/oauth2/v2.0/token", headers=headers, data={
        "grant_type": "authorization_code", "client_id": app["appId"], "code": code, "redirect_uri": redirect,
        "code_verifier": VERIFIER})


def test_discovery_keys_and_token_answer_a_browser_cross_origin(lt, browser, client_app):
    origin = {"Origin": VIEWER}
    for url in (f"{lt.authority}/v2.0/.well-known/openid-configuration", f"{lt.authority}/discovery/v2.0/keys"):
        assert browser.get(url, headers=origin).headers["access-control-allow-origin"] == "*"
        pre = browser.options(url, headers={**origin, "Access-Control-Request-Method": "GET"})
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == VIEWER
    token_url = f"{lt.authority}/oauth2/v2.0/token"
    pre = browser.options(token_url, headers={**origin, "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-methods"].startswith("GET, POST")
    assert pre.headers["access-control-allow-headers"] == "content-type"

    code = lt.sign_in(_auth_url(lt, client_app, SPA)).query["code"]
    r = _redeem(browser, lt, client_app, code, SPA, Origin=VIEWER)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == VIEWER
    assert "refresh_token" in r.json()


def test_a_browser_redeeming_a_web_code_gets_9002326_and_can_read_it(lt, browser, client_app):
    code = lt.sign_in(_auth_url(lt, client_app, WEB)).query["code"]
    r = _redeem(browser, lt, client_app, code, WEB, Origin=VIEWER)
    assert r.status_code == 400 and r.json()["error_codes"] == [9002326]
    assert f"Request origin: '{VIEWER}'" in r.json()["error_description"]
    assert r.headers["access-control-allow-origin"] == VIEWER


def test_the_pages_ask_for_the_account_and_password_then_keep_a_session(lt, browser, client_app):
    url = _auth_url(lt, client_app, SPA)
    page = browser.get(url, headers={"Accept": "text/html"})
    assert page.status_code == 200 and "id='i0116'" in page.text and "Pick an account" not in page.text
    wrong = lt.sign_in(url, password="not-it", client=browser)
    assert wrong.page == "signin-password" and wrong.error_code == 50126 and wrong.landing is None
    assert "ESTSAUTH" not in browser.cookies
    first = lt.sign_in(url, client=browser)
    assert first.query["state"] == "s9" and "code" in first.query and "ESTSAUTH" in browser.cookies
    # signed in: the next authorize needs no page (single sign-on), prompt=login asks again,
    # prompt=select_account offers the signed-in account as a tile
    sso = browser.get(url, headers={"Accept": "text/html"})
    assert sso.status_code == 302 and "code=" in sso.headers["location"]
    assert "id='i0116'" in browser.get(url + "&prompt=login", headers={"Accept": "text/html"}).text
    picker = browser.get(url + "&prompt=select_account", headers={"Accept": "text/html"}).text
    assert "Pick an account" in picker and "data-test-id='dicom.user@local.test'" in picker


def test_prompt_none_without_a_session_is_login_required(lt, browser, client_app):
    r = browser.get(_auth_url(lt, client_app, SPA, prompt="none"))
    assert r.status_code == 302 and "error=login_required" in r.headers["location"]
    assert "AADSTS50058" in httpx.URL(r.headers["location"]).params["error_description"]


def test_an_unassigned_user_sees_the_50105_page(lt, browser, graph):
    app = graph.upsert("browser-assigned-only", {"spa": {"redirectUris": [SPA]}}).json()
    sp = graph("POST", "/servicePrincipals", {"appId": app["appId"], "appRoleAssignmentRequired": True}).json()
    assert graph("POST", "/oauth2PermissionGrants", {
        "clientId": sp["id"], "consentType": "AllPrincipals", "resourceId": lt.seed.first_party.dicom.object_id,
        "scope": "Dicom.ReadWrite"}).status_code == 201
    stopped = lt.sign_in(_auth_url(lt, app, SPA), client=browser)
    assert stopped.page == "error" and stopped.error_code == 50105 and stopped.landing is None
    assert "block users unless they are specifically granted" in stopped.html


def test_logout_ends_the_session_and_returns_only_to_a_registered_uri(lt, browser, client_app):
    url = _auth_url(lt, client_app, SPA)
    tokens = _redeem(browser, lt, client_app, lt.sign_in(url, client=browser).query["code"], SPA,
                     Origin=VIEWER).json()
    logout = f"{lt.authority}/oauth2/v2.0/logout"
    assert browser.get(logout, params={"post_logout_redirect_uri": "https://evil.test/",
                                       "id_token_hint": tokens["id_token"]}).status_code == 200
    assert "ESTSAUTH" not in browser.cookies
    lt.sign_in(url, client=browser)
    r = browser.get(logout, params={"post_logout_redirect_uri": SPA, "id_token_hint": tokens["id_token"],
                                    "state": "bye"})
    assert r.status_code == 302 and r.headers["location"] == f"{SPA}?state=bye"
    assert "ESTSAUTH" not in browser.cookies
    # the session is gone: the next authorize shows the sign-in page again
    assert "id='i0116'" in browser.get(url, headers={"Accept": "text/html"}).text
    discovery = browser.get(f"{lt.authority}/v2.0/.well-known/openid-configuration").json()
    assert discovery["end_session_endpoint"] == logout and "revocation_endpoint" not in discovery


def test_the_access_token_lifetime_setting_makes_renewal_testable_in_seconds(lt, browser, client_app):
    lt.set_settings({"accessTokenLifetimeSeconds": 5})
    try:
        code = lt.sign_in(_auth_url(lt, client_app, SPA)).query["code"]
        r = _redeem(browser, lt, client_app, code, SPA, Origin=VIEWER).json()
        c = claims(r["access_token"])
        assert r["expires_in"] == 5 and c["exp"] - c["iat"] == 5
    finally:
        lt.set_settings({})
