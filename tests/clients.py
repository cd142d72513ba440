"""Unmodified public clients (msal, azure-identity, SecretClient, httpx) pointed at the local tenant."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import msal
import requests


def ca_session(ca_file: str, headers: dict[str, str] | None = None) -> requests.Session:
    """A requests session for msal that trusts the local CA. REQUESTS_CA_BUNDLE in the environment would
    otherwise override msal's `verify=` (requests' merge_environment_settings), so the session ignores the
    environment."""
    session = requests.Session()
    session.trust_env = False
    session.verify = ca_file
    if headers:
        session.headers.update(headers)
    return session


def confidential_app(tenant: Any, client_id: str, credential: Any, **kwargs: Any) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id, client_credential=credential, authority=tenant.authority, instance_discovery=False,
        http_client=ca_session(tenant.ca_file), token_cache=msal.TokenCache(), **kwargs,
    )


def public_app(tenant: Any, client_id: str, *, origin: str | None = None) -> msal.PublicClientApplication:
    headers = {"Origin": origin} if origin else None
    return msal.PublicClientApplication(
        client_id, authority=tenant.authority, instance_discovery=False,
        http_client=ca_session(tenant.ca_file, headers), token_cache=msal.TokenCache(),
    )


def client_credentials_token(tenant: Any, client_id: str, secret: str, scope: str) -> str:
    result = confidential_app(tenant, client_id, secret).acquire_token_for_client([scope])
    assert "access_token" in result, result
    return result["access_token"]


def follow_authorize(tenant: Any, auth_uri: str) -> dict[str, str]:
    """Play the browser: GET the authorize URL (the local tenant signs its user in without a UI) and read
    the code and state off the redirect."""
    with httpx.Client(verify=tenant.ca_file, trust_env=False) as browser:
        response = browser.get(auth_uri, follow_redirects=False)
    assert response.status_code in (302, 303), response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return {key: values[0] for key, values in query.items()}


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})
