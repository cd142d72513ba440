"""Client credentials with unmodified msal: secret and certificate, tokens verified against the JWKS."""
from __future__ import annotations

import base64

import jwt
import msal
import pytest
from cryptography.hazmat.primitives import hashes, serialization

from localtenant_helpers import Graph, claims, client_session, client_token, self_signed_cert


def _cca(lt, client_id: str, credential) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(client_id, client_credential=credential, authority=lt.authority,
                                              instance_discovery=False, http_client=client_session(lt))


def _verify(lt, http, token: str, audience: str, issuer: str) -> dict:
    jwks = jwt.PyJWKClient(f"{lt.authority}/discovery/v2.0/keys")
    jwks.fetch_data = lambda: http.get(f"{lt.authority}/discovery/v2.0/keys").json()  # our CA, not the env's
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer)


def test_discovery_document_names_local_endpoints(lt, http):
    doc = http.get(f"{lt.authority}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{lt.authority}/v2.0"
    assert doc["token_endpoint"] == f"{lt.authority}/oauth2/v2.0/token"
    assert doc["authorization_endpoint"] == f"{lt.authority}/oauth2/v2.0/authorize"
    assert doc["jwks_uri"] == f"{lt.authority}/discovery/v2.0/keys"


def test_keys_are_published_as_entra_publishes_them(lt, http):
    """kty, use, kid, x5t (the SHA-1 thumbprint of x5c's certificate), n, e, x5c and issuer; no alg."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    for url, issuer in ((f"{lt.authority}/discovery/v2.0/keys", f"{lt.authority}/v2.0"),
                        (f"{lt.authority_host}/discovery/v2.0/keys", f"{lt.authority_host}/{{tenantid}}/v2.0")):
        keys = http.get(url).json()["keys"]
        assert keys
        for key in keys:
            assert set(key) == {"kty", "use", "kid", "x5t", "n", "e", "x5c", "issuer"}
            assert (key["kty"], key["use"], key["issuer"]) == ("RSA", "sig", issuer)
            der = base64.b64decode(key["x5c"][0])
            thumb = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
            assert key["kid"] == key["x5t"] == thumb
            public = x509.load_der_x509_certificate(der).public_key()
            assert isinstance(public, rsa.RSAPublicKey)
            assert jwt.PyJWK(key).key.public_numbers() == public.public_numbers()


def test_secret_gives_v2_token_with_roles_for_the_api(lt, http):
    seed = lt.seed
    result = _cca(lt, seed.admin_client.app_id, seed.admin_client.secret).acquire_token_for_client(
        [f"{seed.api.identifier_uri}/.default"])
    assert "access_token" in result, result
    c = _verify(lt, http, result["access_token"], seed.api.app_id, f"{lt.authority}/v2.0")
    assert c["ver"] == "2.0" and c["azp"] == seed.admin_client.app_id and c["azpacr"] == "1"
    assert c["roles"] == ["Registrations.Admin"] and c["oid"] == seed.admin_client.object_id
    assert c["tid"] == lt.tenant_id and c["sub"] == c["oid"] and c["exp"] > c["iat"]


def test_first_party_resource_gets_v1_token(lt, http):
    seed = lt.seed
    result = _cca(lt, seed.reader_client.app_id, seed.reader_client.secret).acquire_token_for_client(
        ["https://vault.azure.net/.default"])
    c = _verify(lt, http, result["access_token"], "https://vault.azure.net",
                f"https://sts.windows.net/{lt.tenant_id}/")
    assert c["ver"] == "1.0" and c["appid"] == seed.reader_client.app_id and "roles" not in c


def test_certificate_assertion_with_msal(lt, http, graph):
    app, sp = graph.app_with_sp("cert-client")
    cert, key_pem = self_signed_cert()
    der = cert.public_bytes(serialization.Encoding.DER)
    r = graph("PATCH", f"/applications/{app['id']}", {"keyCredentials": [
        {"type": "AsymmetricX509Cert", "usage": "Verify", "key": base64.b64encode(der).decode()}]})
    assert r.status_code == 204, r.text
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    # msal signs RS256 with x5t when given a SHA-1 thumbprint, PS256 with x5t#S256 when given the certificate.
    for cred in ({"private_key": key_pem, "thumbprint": cert.fingerprint(hashes.SHA1()).hex()},
                 {"private_key": key_pem, "public_certificate": pem}):
        result = _cca(lt, app["appId"], cred).acquire_token_for_client(["https://graph.microsoft.com/.default"])
        assert "access_token" in result, result
        c = _verify(lt, http, result["access_token"], "https://graph.microsoft.com",
                    f"https://sts.windows.net/{lt.tenant_id}/")
        assert c["appidacr"] == "2" and c["oid"] == sp["id"]


def test_unregistered_certificate_is_refused(lt, graph):
    app, _ = graph.app_with_sp("cert-client-2")
    cert, key_pem = self_signed_cert()
    cred = {"private_key": key_pem, "thumbprint": cert.fingerprint(hashes.SHA1()).hex()}
    result = _cca(lt, app["appId"], cred).acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert result["error_codes"] == [700027]


@pytest.mark.parametrize("case, code, error", [
    ("bad secret", 7000215, "invalid_client"),
    ("unknown app", 700016, "unauthorized_client"),
    ("unknown resource", 500011, "invalid_resource"),
    ("no secret", 7000218, "invalid_client"),
    ("no scope", 70011, "invalid_scope"),
    ("not .default", 1002012, "invalid_scope"),
])
def test_client_credentials_errors(lt, http, case, code, error):
    seed = lt.seed.admin_client
    client, secret, scope = seed.app_id, seed.secret, "https://graph.microsoft.com/.default"
    if case == "bad secret":
        secret = "not-the-secret"
    elif case == "unknown app":
        client = "11111111-2222-3333-4444-555555555555"
    elif case == "unknown resource":
        scope = "api://nobody-registered-this/.default"
    elif case == "no secret":
        secret = ""
    elif case == "no scope":
        scope = ""
    elif case == "not .default":
        scope = "https://graph.microsoft.com/User.Read"
    r = client_token(lt, http, client, secret, scope)
    body = r.json()
    assert r.status_code in (400, 401)
    assert body["error"] == error and body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}:")
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)


def test_expired_secret(lt, http, graph):
    app, _ = graph.app_with_sp("short-lived")
    cred = graph.secret(app["id"], displayName="short", endDateTime="2000-01-01T00:00:00Z",
                        startDateTime="1999-01-01T00:00:00Z")
    body = client_token(lt, http, app["appId"], cred["secretText"], "https://graph.microsoft.com/.default").json()
    assert body["error_codes"] == [7000222]


def test_new_secret_works_and_clock_expires_it(lt, http, graph):
    app, _ = graph.app_with_sp("clocked")
    cred = graph.secret(app["id"], displayName="soon", endDateTime="2999-01-01T00:00:00Z")
    r = client_token(lt, http, app["appId"], cred["secretText"], "https://graph.microsoft.com/.default")
    assert r.status_code == 200 and claims(r.json()["access_token"])["idtyp"] == "app"
    lt.advance_clock(1000 * 365 * 86400)
    r = client_token(lt, http, app["appId"], cred["secretText"], "https://graph.microsoft.com/.default")
    assert r.json()["error_codes"] == [7000222]


def test_public_client_sending_secret(lt, http, graph):
    app, _ = graph.app_with_sp("native", {"isFallbackPublicClient": True})
    r = client_token(lt, http, app["appId"], "anything", "https://graph.microsoft.com/.default")
    assert r.json()["error_codes"] == [700025]


def test_rotated_key_keeps_old_tokens_valid(lt, http):
    seed = lt.seed.admin_client
    old = client_token(lt, http, seed.app_id, seed.secret, "https://graph.microsoft.com/.default").json()
    kid = lt.rotate_signing_key()
    new = client_token(lt, http, seed.app_id, seed.secret, "https://graph.microsoft.com/.default").json()
    assert jwt.get_unverified_header(new["access_token"])["kid"] == kid
    kids = {k["kid"] for k in http.get(f"{lt.authority}/discovery/v2.0/keys").json()["keys"]}
    assert jwt.get_unverified_header(old["access_token"])["kid"] in kids and kid in kids
    for token in (old, new):
        assert Graph(lt, http, token["access_token"])("GET", "/applications").status_code in (200, 403)
