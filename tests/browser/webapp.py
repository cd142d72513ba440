"""A confidential web app written the way msal's web-app pattern goes (Flask): sign the user in with the
authorization code flow (`initiate_auth_code_flow`, then `acquire_token_by_auth_code_flow` at the redirect
URI) using the registration's `confidential` config and its Key Vault secret, then search the DICOM service
(QIDO-RS) as that user. Only `http` differs from a deployment: a requests session that trusts the local CA."""
from __future__ import annotations

import html
import secrets
from typing import Any

import flask
import msal
import requests


def make_app(config: dict[str, Any], secret: str, *, http: requests.Session) -> flask.Flask:
    app = flask.Flask(__name__)
    app.secret_key = secrets.token_bytes(32)
    tokens: dict[str, dict] = {}  # the signed-in users' token results, server side, by session id
    msal_app = msal.ConfidentialClientApplication(
        config["clientId"], client_credential=secret, authority=config["authority"],
        instance_discovery=config["authority"].startswith("https://login.microsoftonline.com"), http_client=http)
    redirect_uri = config["redirectUris"][0]

    @app.route("/")
    def index():
        result = tokens.get(flask.session.get("sid", ""))
        if result is None:
            flow = msal_app.initiate_auth_code_flow(config["scopes"], redirect_uri=redirect_uri)
            flask.session["flow"] = flow
            return flask.redirect(flow["auth_uri"])
        answer = http.get(f"{config['dicomService']['baseUrl']}/studies", params={"limit": 10},
                          headers={"Authorization": f"Bearer {result['access_token']}",
                                   "Accept": "application/dicom+json"})
        if answer.status_code != 200:
            return f"<p id='error'>QIDO-RS answered {answer.status_code}</p>", 502
        names = [s.get("00100010", {}).get("Value", [{}])[0].get("Alphabetic", "") for s in answer.json()]
        user = result["id_token_claims"]["preferred_username"]
        return (f"<!DOCTYPE html><html><head><link rel='icon' href='data:,'><title>Studies</title></head><body>"
                f"<p id='user'>Signed in as {html.escape(user)}</p><ul id='studies'>"
                + "".join(f"<li>{html.escape(n)}</li>" for n in names) + "</ul></body></html>")

    @app.route("/signin-oidc")
    def authorized():
        result = msal_app.acquire_token_by_auth_code_flow(flask.session.pop("flow", {}), flask.request.args)
        if "access_token" not in result:
            return f"<p id='error'>{html.escape(str(result.get('error_description')))}</p>", 400
        sid = secrets.token_urlsafe(16)
        tokens[sid] = result
        flask.session["sid"] = sid
        return flask.redirect("/")

    return app
