"""Authorization code + PKCE with unmodified msal, refresh tokens, and the errors users hit."""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import msal
import pytest

from localtenant_helpers import claims, client_session
from localtenant.oauth.pkce import s256

DICOM = "https://dicom.healthcareapis.azure.com"
REDIRECT = "http://localhost:8400"
SPA = "https://spa.local.test/callback"
WEB = "https://web.local.test/callback"
VERIFIER = "v" * 43


@pytest.fixture
def client_app(lt, graph):
    """A client with public, SPA and web redirect URIs and admin consent for Dicom.ReadWrite."""
    app, sp = graph.app_with_sp("viewer", {"publicClient": {"redirectUris": [REDIRECT]},
                                           "spa": {"redirectUris": [SPA]}, "web": {"redirectUris": [WEB]}})
    r = graph("POST", "/oauth2PermissionGrants", {"clientId": sp["id"], "consentType": "AllPrincipals",
                                                  "resourceId": lt.seed.first_party.dicom.object_id,
                                                  "scope": "Dicom.ReadWrite"})
    assert r.status_code == 201, r.text
    return app


def _follow(lt, url: str) -> dict:
    """The seeded user signs in on the pages (account, password) and lands back at the redirect URI."""
    return lt.sign_in(url).query


def _authorize(lt, http, app, redirect, **extra) -> dict:
    params = {"client_id": app["appId"], "response_type": "code", "redirect_uri": redirect, "state": "s1",
              "scope": f"{DICOM}/Dicom.ReadWrite offline_access openid", "code_challenge": s256(VERIFIER),
              "code_challenge_method": "S256", **extra}
    req = http.prepare_request(__import__("requests").Request("GET", f"{lt.authority}/oauth2/v2.0/authorize",
                                                              params=params))
    return _follow(lt, req.url)


def _redeem(lt, http, app, code, redirect, verifier=VERIFIER, **extra):
    return http.post(f"{lt.authority}/oauth2/v2.0/token", data={
        "grant_type": "authorization_code", "client_id": app["appId"], "code": code, "redirect_uri": redirect,
        "code_verifier": verifier, **extra.pop("form", {})}, **extra)


def test_msal_public_client_pkce(lt, http, client_app):
    pca = msal.PublicClientApplication(client_app["appId"], authority=lt.authority, instance_discovery=False,
                                       http_client=client_session(lt))
    flow = pca.initiate_auth_code_flow([f"{DICOM}/Dicom.ReadWrite"], redirect_uri=REDIRECT,
                                       login_hint="dicom.user@local.test")
    response = _follow(lt, flow["auth_uri"])
    result = pca.acquire_token_by_auth_code_flow(flow, response)
    assert "access_token" in result, result
    c = claims(result["access_token"])
    assert c["aud"] == DICOM and c["scp"] == "Dicom.ReadWrite" and c["oid"] == lt.seed.user.object_id
    assert c["appid"] == client_app["appId"] and c["appidacr"] == "0"
    assert result["id_token_claims"]["preferred_username"] == "dicom.user@local.test"


def test_confidential_web_client_refreshes(lt, http, graph, client_app):
    secret = graph.secret(client_app["id"])["secretText"]
    code = _authorize(lt, http, client_app, WEB)["code"]
    r = _redeem(lt, http, client_app, code, WEB, form={"client_secret": secret})
    assert r.status_code == 200, r.text
    rt = r.json()["refresh_token"]
    r = http.post(f"{lt.authority}/oauth2/v2.0/token", data={
        "grant_type": "refresh_token", "client_id": client_app["appId"], "client_secret": secret,
        "refresh_token": rt})
    assert r.status_code == 200 and claims(r.json()["access_token"])["scp"] == "Dicom.ReadWrite"
    r = _redeem(lt, http, client_app, code, WEB, form={"client_secret": secret})
    assert r.json()["error_codes"] == [54005]  # a code redeems once


def test_pkce_verifier_mismatch(lt, http, client_app):
    code = _authorize(lt, http, client_app, REDIRECT)["code"]
    r = _redeem(lt, http, client_app, code, REDIRECT, verifier="w" * 43)
    assert r.json()["error_codes"] == [501481] and r.json()["error"] == "invalid_grant"


def test_plain_pkce_refused(lt, http, client_app):
    q = _authorize(lt, http, client_app, REDIRECT, code_challenge=VERIFIER, code_challenge_method="plain")
    assert q["error"] == "invalid_request" and q["state"] == "s1" and "code" not in q


def test_redirect_uri_mismatch(lt, http, client_app):
    r = http.get(f"{lt.authority}/oauth2/v2.0/authorize", params={
        "client_id": client_app["appId"], "response_type": "code", "redirect_uri": "https://evil.test/cb",
        "scope": f"{DICOM}/Dicom.ReadWrite"}, allow_redirects=False)
    assert r.status_code == 400 and r.json()["error_codes"] == [50011]


def test_spa_code_needs_origin(lt, http, client_app):
    code = _authorize(lt, http, client_app, SPA)["code"]
    assert _redeem(lt, http, client_app, code, SPA).json()["error_codes"] == [9002327]
    code = _authorize(lt, http, client_app, SPA)["code"]
    r = _redeem(lt, http, client_app, code, SPA, headers={"Origin": "https://spa.local.test"})
    assert r.status_code == 200 and "refresh_token" in r.json()


def _refresh(lt, http, app, rt, **extra):
    return http.post(f"{lt.authority}/oauth2/v2.0/token", data={
        "grant_type": "refresh_token", "client_id": app["appId"], "refresh_token": rt}, **extra)


def test_spa_refresh_token_lives_24_hours_from_the_code(lt, http, client_app):
    """Entra gives SPAs refresh tokens that end 24 hours after the code was redeemed; tokens refreshed from
    one carry that end over, and are redeemed cross-origin too."""
    origin = {"Origin": "https://spa.local.test"}
    code = _authorize(lt, http, client_app, SPA)["code"]
    rt = _redeem(lt, http, client_app, code, SPA, headers=origin).json()["refresh_token"]
    assert _refresh(lt, http, client_app, rt).json()["error_codes"] == [9002327]
    lt.advance_clock(23 * 3600)
    r = _refresh(lt, http, client_app, rt, headers=origin)
    assert r.status_code == 200, r.text
    lt.advance_clock(3600 + 5)
    assert _refresh(lt, http, client_app, r.json()["refresh_token"], headers=origin).json()["error_codes"] == [70008]


def test_native_public_client_refreshes_for_90_days(lt, http, client_app):
    code = _authorize(lt, http, client_app, REDIRECT)["code"]
    rt = _redeem(lt, http, client_app, code, REDIRECT).json()["refresh_token"]
    lt.advance_clock(89 * 86400)
    r = _refresh(lt, http, client_app, rt)
    assert r.status_code == 200 and claims(r.json()["access_token"])["appidacr"] == "0"
    assert _refresh(lt, http, client_app, rt).json()["error_codes"] == [9002313]  # a used one is retired


def test_localhost_redirect_port_is_ignored(lt, http, client_app):
    """http://localhost:8400 is registered; Entra ignores a loopback redirect URI's port, not its path or
    scheme, and not any other host's port."""
    other = "http://localhost:51234"
    code = _authorize(lt, http, client_app, other)["code"]
    r = _redeem(lt, http, client_app, code, other)
    assert r.status_code == 200 and claims(r.json()["access_token"])["appidacr"] == "0"
    for wrong in ("http://localhost:51234/other", "https://localhost:51234", "https://web.local.test:8443/callback"):
        r = http.get(f"{lt.authority}/oauth2/v2.0/authorize", params={
            "client_id": client_app["appId"], "response_type": "code", "redirect_uri": wrong,
            "scope": f"{DICOM}/Dicom.ReadWrite"}, allow_redirects=False)
        assert r.status_code == 400 and r.json()["error_codes"] == [50011], wrong


def _authorize_url(lt, http, app, redirect, **extra) -> str:
    params = {"client_id": app["appId"], "response_type": "code", "redirect_uri": redirect, "state": "s1",
              "scope": f"{DICOM}/Dicom.ReadWrite offline_access openid", "code_challenge": s256(VERIFIER),
              "code_challenge_method": "S256", **extra}
    return http.prepare_request(__import__("requests").Request("GET", f"{lt.authority}/oauth2/v2.0/authorize",
                                                               params=params)).url


def test_consent_missing_asks_the_user_and_a_cancel_sends_no_code(lt, http, graph):
    app, sp = graph.app_with_sp("unconsented", {"publicClient": {"redirectUris": [REDIRECT]}})
    url = _authorize_url(lt, http, app, REDIRECT)
    asked = lt.sign_in(url)
    assert asked.page == "consent" and "data-scope='Dicom.ReadWrite'" in asked.html and asked.landing is None
    q = lt.sign_in(url, consent=False).query
    assert q["error"] == "consent_required" and q["error_description"].startswith("AADSTS65004") and "code" not in q
    assert not [g for g in lt.state()["oauth2PermissionGrants"] if g["clientId"] == sp["id"]]
    # prompt=none never shows the prompt: consent_required, as before
    import ssl

    import httpx
    with httpx.Client(verify=ssl.create_default_context(cafile=str(lt.ca_file)), trust_env=False) as browser:
        assert lt.sign_in(url, client=browser).page == "consent"  # signed in now, consent still missing
        answer = browser.get(url + "&prompt=none")
    silent = {k: v[0] for k, v in parse_qs(urlparse(answer.headers["location"]).query).items()}
    assert silent["error"] == "consent_required" and silent["error_description"].startswith("AADSTS65001")


def test_a_user_who_accepts_consents_for_themself_only(lt, http, graph):
    app, sp = graph.app_with_sp("consent-me", {"publicClient": {"redirectUris": [REDIRECT]}})
    code = lt.sign_in(_authorize_url(lt, http, app, REDIRECT), consent=True).query["code"]
    r = _redeem(lt, http, app, code, REDIRECT)
    assert r.status_code == 200 and claims(r.json()["access_token"])["scp"] == "Dicom.ReadWrite", r.text
    grants = [g for g in lt.state()["oauth2PermissionGrants"] if g["clientId"] == sp["id"]]
    assert [(g["consentType"], g["principalId"], g["scope"]) for g in grants] == [
        ("Principal", lt.seed.user.object_id, "Dicom.ReadWrite")]


def test_public_client_sending_secret_on_redeem(lt, http, client_app):
    code = _authorize(lt, http, client_app, REDIRECT)["code"]
    r = _redeem(lt, http, client_app, code, REDIRECT, form={"client_secret": "x"})
    assert r.json()["error_codes"] == [700025]


def test_confidential_redeem_without_secret(lt, http, client_app):
    code = _authorize(lt, http, client_app, WEB)["code"]
    assert _redeem(lt, http, client_app, code, WEB).json()["error_codes"] == [7000218]


def test_invalid_scope(lt, http, client_app):
    q = _authorize(lt, http, client_app, REDIRECT, scope=f"{DICOM}/Nope.Nothing")
    assert q["error_description"].startswith("AADSTS70011")
