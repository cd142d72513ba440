"""Small helpers for talking to the local tenant with plain HTTP in tests."""
from __future__ import annotations

import datetime as dt
import ssl
from typing import Any

import httpx
import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def client_session(lt) -> requests.Session:
    """REQUESTS_CA_BUNDLE would override `verify`; a session that ignores the environment keeps our CA."""
    s = requests.Session()
    s.trust_env = False
    s.verify = lt.ca_file
    return s


def mi_token(lt, http, resource: str) -> str:
    r = http.get(lt.identity_endpoint, params={"api-version": "2019-08-01", "resource": resource},
                 headers={"X-IDENTITY-HEADER": lt.identity_header})
    r.raise_for_status()
    return r.json()["access_token"]


def client_token(lt, http, client_id: str, secret: str, scope: str) -> requests.Response:
    return http.post(f"{lt.authority}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": scope})


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def graph_client(lt, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{lt.graph_endpoint}/v1.0", verify=ssl.create_default_context(cafile=lt.ca_file),
                        trust_env=False, headers={"Authorization": f"Bearer {token}"})


def identity_token(lt) -> str:
    with httpx.Client(trust_env=False) as client:
        answer = client.get(lt.identity_endpoint, headers={"X-IDENTITY-HEADER": lt.identity_header},
                            params={"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"})
    return answer.json()["access_token"]


def ref(object_id: str) -> dict:
    return {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{object_id}"}


class Graph:
    """Graph v1.0 over requests with a bearer token (the product identity's unless another is given)."""

    def __init__(self, lt, http, token: str | None = None) -> None:
        self.lt, self.http = lt, http
        self.token = token or mi_token(lt, http, "https://graph.microsoft.com")

    def __call__(self, method: str, path: str, body: Any = None, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return self.http.request(method, f"{self.lt.graph_endpoint}/v1.0{path}", json=body, headers=headers, **kw)

    def upsert(self, unique: str, body: dict[str, Any] | None = None) -> requests.Response:
        return self("PATCH", f"/applications(uniqueName='{unique}')", {"displayName": unique, **(body or {})},
                    headers={"Prefer": "create-if-missing"})

    def app_with_sp(self, unique: str, body: dict[str, Any] | None = None) -> tuple[dict, dict]:
        app = self.upsert(unique, body).json()
        sp = self("POST", "/servicePrincipals", {"appId": app["appId"]})
        assert sp.status_code == 201, sp.text
        return app, sp.json()

    def secret(self, app_object_id: str, **cred) -> dict[str, Any]:
        r = self("POST", f"/applications/{app_object_id}/addPassword", {"passwordCredential": cred})
        assert r.status_code == 200, r.text
        return r.json()


def self_signed_cert(name: str = "local-client", days: int = 30):
    """A certificate and its RSA key, as a client would create for certificate credentials."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=days)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert, key_pem
