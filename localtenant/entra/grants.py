"""The token endpoint's grants and the authorize endpoint, without HTTP.

- client_credentials (RFC 6749 4.4): scope must be `{resource}/.default`; `roles` come from the client
  service principal's app role assignments on the resource.
- authorization_code (RFC 6749 4.1) with PKCE (RFC 7636, S256 only); codes live ten minutes and redeem once.
  SPA codes must be redeemed cross-origin, so the request must carry Origin (AADSTS9002327); a code or refresh
  token of any other platform redeemed cross-origin (with Origin) is AADSTS9002326.
- refresh_token (RFC 6749 6) for every client that asks for offline_access, public ones too ("Refresh tokens in
  the Microsoft identity platform"): 24 hours for a code redeemed at a `spa` redirect URI (tokens refreshed
  from it keep that end, and must be redeemed cross-origin too), 90 days otherwise; each use returns a new
  refresh token and retires the old one.
Delegated `scp` is what the client asked for and was consented (oauth2PermissionGrants); `.default` means
every consented scope. Missing consent is AADSTS65001.
"""
from __future__ import annotations

import json
import re
import secrets
from typing import Any
from urllib.parse import urlencode

from ..oauth import client_auth, pkce
from . import exceptions as ex
from .clients import ClientAuthenticator, is_public, registered_on, registered_redirect
from .tokens import TokenIssuer

OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}
# Entra also names a resource by its bare appId: "{appId}/.default", "{appId}/user_impersonation".
_APP_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
GRAPH = "https://graph.microsoft.com"
CODE_LIFETIME = 600
REFRESH_LIFETIME = 90 * 24 * 3600
SPA_REFRESH_LIFETIME = 24 * 3600
CODES, REFRESH = "authCodes", "refreshTokens"


def capabilities(form: dict[str, str]) -> dict[str, Any]:
    """Client capabilities from the `claims` request parameter, e.g. CP1 for continuous access evaluation
    ("Claims challenges, claims requests and client capabilities"): echoed as the `xms_cc` claim."""
    try:
        values = json.loads(form.get("claims") or "{}").get("access_token", {}).get("xms_cc", {}).get("values")
    except (ValueError, AttributeError):
        raise ex.EntraError(90014, "invalid_request", "The claims parameter is not valid JSON.") from None
    return {"xms_cc": values} if values else {}


def split_scopes(scope: str | None) -> tuple[str, list[str], set[str]]:
    """(resource identifier, scope values on it, OIDC scopes). All resource scopes must name one resource."""
    if not scope or not scope.strip():
        raise ex.invalid_scope("''")
    oidc, resources, values = set(), set(), []
    for item in scope.split():
        if item in OIDC_SCOPES:
            oidc.add(item)
            continue
        resource, sep, value = item.rpartition("/")
        if not sep or not resource or ("://" not in item and not _APP_ID.match(resource)):
            resource, value = GRAPH, item  # a bare scope such as User.Read means Microsoft Graph
        resources.add(resource.lower().rstrip("/"))
        values.append(value)
        first = resource
    if len(resources) != 1:
        raise ex.invalid_scope(scope, " Scopes must name exactly one resource.")
    return first, values, oidc


class Grants:
    def __init__(self, core, clients: ClientAuthenticator, issuer: TokenIssuer) -> None:
        self.core, self.clients, self.issuer = core, clients, issuer
        self.directory = core.graph

    # -- shared --------------------------------------------------------------------------------------------
    def _resource(self, identifier: str) -> tuple[dict[str, Any], str, int]:
        found = self.directory.resolve_resource(identifier)
        if found is None:
            raise ex.unknown_resource(identifier, self.directory.tenant_id)
        resource, audience = found
        app = self.directory.app_by_app_id(resource["appId"])
        version = 2 if app is not None and (app["api"] or {}).get("requestedAccessTokenVersion") == 2 else 1
        return resource, audience, version

    def _client_sp(self, app: dict[str, Any]) -> dict[str, Any]:
        sp = self.directory.sp_by_app_id(app["appId"])
        if sp is None:
            raise ex.EntraError(7000229, "invalid_client", f"The client application {app['appId']} is missing "
                                f"service principal in the tenant {self.directory.tenant_id}.")
        return sp

    def _delegated_scopes(self, app, client_sp, resource, user, values: list[str]) -> list[str]:
        offered = {s["value"] for s in resource.get("oauth2PermissionScopes", []) if s.get("isEnabled", True)}
        unknown = [v for v in values if v != ".default" and v not in offered]
        if unknown:
            raise ex.invalid_scope(" ".join(unknown))
        granted = self.directory.granted_scopes(client_sp["id"], resource["id"], user["id"]) & offered
        # A client the API pre-authorized (its api.preAuthorizedApplications) needs no consent for those scopes.
        resource_app = self.directory.app_by_app_id(resource["appId"])
        ids = {s["id"]: s["value"] for s in resource.get("oauth2PermissionScopes", []) if s.get("isEnabled", True)}
        for entry in ((resource_app or {}).get("api") or {}).get("preAuthorizedApplications") or []:
            if entry.get("appId") == app["appId"]:
                granted |= {ids[i] for i in entry.get("delegatedPermissionIds") or [] if i in ids}
        wanted = granted if ".default" in values else set(values)
        if not wanted or not wanted <= granted:
            raise ex.consent_required(app["appId"], app["displayName"])
        return sorted(wanted)

    def _user_tokens(self, app, acr: str, user, scope: str, nonce: str | None, public: bool, *,
                     spa_until: float | None = None) -> dict[str, Any]:
        """Tokens for a user. `spa_until`: the code was redeemed at a spa redirect URI and its refresh tokens
        end then (24 hours after that redemption, carried over by every refresh)."""
        identifier, values, oidc = split_scopes(scope)
        resource, audience, version = self._resource(identifier)
        client_sp = self._client_sp(app)
        if not self.directory.may_sign_in(user, client_sp):  # an assignment removed since the code was issued
            raise ex.user_not_assigned(app, user)
        scopes = self._delegated_scopes(app, client_sp, resource, user, values)
        token, lifetime = self.issuer.access_token(
            resource=resource, audience=audience, version=version, client_app_id=app["appId"], acr=acr,
            subject=user, roles=self.directory.role_values(user["id"], resource), scopes=scopes)
        prefix = audience.rstrip("/") if version == 1 else (identifier.rstrip("/"))
        out = {"token_type": "Bearer", "scope": " ".join([f"{prefix}/{s}" for s in scopes] + sorted(oidc)),
               "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}
        if "openid" in oidc:
            out["id_token"] = self.issuer.id_token(user=user, client_app_id=app["appId"], nonce=nonce)
        out["client_info"] = self.issuer.client_info(user)
        if "offline_access" in oidc:
            rt = secrets.token_urlsafe(48)
            self.core.store.put(REFRESH, rt, {
                "client_id": app["appId"], "user_id": user["id"], "scope": scope, "public": public,
                "spa": spa_until is not None,
                "exp": spa_until if spa_until is not None else self.directory.now() + REFRESH_LIFETIME})
            out["refresh_token"] = rt
        return out

    # -- token endpoint ------------------------------------------------------------------------------------
    def token(self, form: dict[str, str], authorization: str | None, origin: str | None) -> dict[str, Any]:
        grant = form.get("grant_type")
        cred = client_auth.from_request(form, authorization)
        if grant == "client_credentials":
            return self._client_credentials(form, cred)
        if grant == "authorization_code":
            return self._authorization_code(form, cred, origin)
        if grant == "refresh_token":
            return self._refresh(form, cred, origin)
        if not grant:
            raise ex.missing_parameter("grant_type")
        raise ex.EntraError(70003, "unsupported_grant_type", f"The app requested an unsupported grant type "
                            f"'{grant}'.")

    def _client_credentials(self, form, cred) -> dict[str, Any]:
        app = self.clients.app(cred.client_id)
        acr = self.clients.authenticate(app, cred, public=is_public(app, None))
        if acr == "0":  # a public client has no credential to prove itself with
            raise ex.confidential_without_secret()
        identifier, values, _ = split_scopes(form.get("scope"))
        if values != [".default"]:
            raise ex.EntraError(1002012, "invalid_scope", f"The provided value for scope {form.get('scope')} is "
                                "not valid. Client credential flows must have a scope value with /.default "
                                "suffixed to the resource identifier (application ID URI).")
        resource, audience, version = self._resource(identifier)
        client_sp = self._client_sp(app)
        token, lifetime = self.issuer.access_token(
            resource=resource, audience=audience, version=version, client_app_id=app["appId"], acr=acr,
            subject=client_sp, roles=self.directory.role_values(client_sp["id"], resource), scopes=[],
            extra=capabilities(form))
        return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                "access_token": token}

    def _authorization_code(self, form, cred, origin) -> dict[str, Any]:
        code = form.get("code")
        if not code:
            raise ex.missing_parameter("code")
        record = self.core.store.get(CODES, code)
        if record is None:
            raise ex.EntraError(70000, "invalid_grant", "The provided value for the 'code' parameter is not "
                                "valid.")
        if record.get("redeemed"):
            raise ex.EntraError(54005, "invalid_grant", "OAuth2 Authorization code was already redeemed, please "
                                "retry with a new valid code or use an existing refresh token.")
        if record["exp"] <= self.directory.now():
            raise ex.EntraError(70008, "invalid_grant", "The provided authorization code or refresh token has "
                                "expired due to inactivity.")
        if record["client_id"] != cred.client_id:
            raise ex.EntraError(70000, "invalid_grant", "The code was not issued to this client.")
        if form.get("redirect_uri") != record["redirect_uri"]:
            raise ex.EntraError(500112, "invalid_grant", "The reply address does not match the reply address "
                                "provided when requesting Authorization code.")
        app = self.clients.app(cred.client_id)
        public = is_public(app, record["redirect_uri"])
        spa = registered_on(app, "spa", record["redirect_uri"])
        if spa and not origin:
            raise ex.spa_without_origin()
        if origin and not spa:
            raise ex.cross_origin_not_spa(origin)
        acr = self.clients.authenticate(app, cred, public=public)
        if record.get("challenge"):
            if not pkce.verifier_matches(form.get("code_verifier") or "", record["challenge"]):
                raise ex.pkce_mismatch()
        record["redeemed"] = True
        self.core.store.put(CODES, code, record)
        user = self.directory.user(record["user_id"])
        return self._user_tokens(app, acr, user, form.get("scope") or record["scope"], record.get("nonce"),
                                 public, spa_until=self.directory.now() + SPA_REFRESH_LIFETIME if spa else None)

    def _refresh(self, form, cred, origin) -> dict[str, Any]:
        rt = form.get("refresh_token")
        if not rt:
            raise ex.missing_parameter("refresh_token")
        app = self.clients.app(cred.client_id)
        record = self.core.store.get(REFRESH, rt)
        if record is None or record["client_id"] != app["appId"]:
            raise ex.EntraError(9002313, "invalid_grant", "Invalid request. Request is malformed or invalid.")
        if record.get("spa") and not origin:
            raise ex.spa_without_origin()
        if origin and not record.get("spa"):
            raise ex.cross_origin_not_spa(origin)
        acr = self.clients.authenticate(app, cred, public=bool(record.get("public")))
        if record["exp"] <= self.directory.now():
            raise ex.EntraError(70008, "invalid_grant", "The provided authorization code or refresh token has "
                                "expired due to inactivity.")
        self.core.store.delete(REFRESH, rt)
        user = self.directory.user(record["user_id"])
        return self._user_tokens(app, acr, user, form.get("scope") or record["scope"], None,
                                 bool(record.get("public")), spa_until=record["exp"] if record.get("spa") else None)

    # -- authorize endpoint --------------------------------------------------------------------------------
    def begin(self, params: dict[str, str]) -> str | None:
        """Check an authorization request before anyone signs in. Errors before the redirect URI is trusted
        raise (Entra shows them on its own page); errors the client should see come back as the redirect URL
        carrying error and error_description; None means: sign the user in, then `finish`."""
        app = self.clients.app(params.get("client_id"))
        redirect = params.get("redirect_uri")
        if not redirect or not registered_redirect(app, redirect):
            raise ex.redirect_mismatch(redirect or "", app["appId"])
        try:
            if params.get("response_type") != "code":
                raise ex.EntraError(900144, "unsupported_response_type", "The response_type must be 'code'.")
            challenge = params.get("code_challenge")
            if challenge:
                method = params.get("code_challenge_method") or "plain"  # RFC 7636 4.3 default
                if method != "S256":
                    raise ex.pkce_method_refused(method)
                if len(challenge) != 43:
                    raise ex.EntraError(501491, "invalid_request", "Invalid size of Code_Challenge parameter.")
            elif registered_on(app, "spa", redirect):
                raise ex.EntraError(9002325, "invalid_request", "Proof Key for Code Exchange is required for "
                                    "cross-origin authorization code redemption.")
            identifier, values, _ = split_scopes(params.get("scope"))
            resource, _, _ = self._resource(identifier)
            offered = {s["value"] for s in resource.get("oauth2PermissionScopes", []) if s.get("isEnabled", True)}
            unknown = [v for v in values if v != ".default" and v not in offered]
            if unknown:
                raise ex.invalid_scope(" ".join(unknown))
        except ex.EntraError as err:
            return self.error_redirect(params, err)
        return None

    def error_redirect(self, params: dict[str, str], err: ex.EntraError) -> str:
        error = "consent_required" if err.code == 65001 else err.error  # what authorize redirects with
        query = {"error": error, "error_description": f"AADSTS{err.code}: {err.description}"}
        state = params.get("state")
        return _with_query(params["redirect_uri"], {**query, **({"state": state} if state else {})})

    def missing_consent(self, params: dict[str, str], user: dict[str, Any]) -> dict[str, Any] | None:
        """What the user would consent to (app, resource, scopes, whether a user may), or None when consented."""
        app = self.clients.app(params.get("client_id"))
        identifier, values, _ = split_scopes(params.get("scope"))
        resource, _, _ = self._resource(identifier)
        client_sp = self._client_sp(app)
        try:
            self._delegated_scopes(app, client_sp, resource, user, values)
            return None
        except ex.EntraError:
            pass
        offered = {s["value"]: s for s in resource.get("oauth2PermissionScopes", []) if s.get("isEnabled", True)}
        granted = self.directory.granted_scopes(client_sp["id"], resource["id"], user["id"])
        wanted = [v for v in values if v != ".default" and v not in granted]
        return {"app": app, "client_sp": client_sp, "resource": resource, "scopes": wanted,
                "admin_only": not wanted or any(offered[v].get("type") == "Admin" for v in wanted)}

    def consent(self, params: dict[str, str], user: dict[str, Any]) -> None:
        """The user accepted the consent prompt: a Principal grant for the scopes asked for ("User and admin
        consent": the user consents for themself only)."""
        missing = self.missing_consent(params, user)
        if missing is None:
            return
        if missing["admin_only"]:
            raise ex.admin_consent_required(missing["app"])
        self.directory.consent_for_user(missing["client_sp"]["id"], missing["resource"]["id"], user["id"],
                                        missing["scopes"])

    def finish(self, params: dict[str, str], user: dict[str, Any]) -> str:
        """The redirect URL once `user` has signed in: a code, or the error the client should see. An
        unassigned user raises AADSTS50105 (Entra shows it on its page, it does not redirect)."""
        app = self.clients.app(params.get("client_id"))
        if not self.directory.may_sign_in(user, self._client_sp(app)):
            raise ex.user_not_assigned(app, user)
        try:
            identifier, values, _ = split_scopes(params.get("scope"))
            resource, _, _ = self._resource(identifier)
            self._delegated_scopes(app, self._client_sp(app), resource, user, values)
        except ex.EntraError as err:
            return self.error_redirect(params, err)
        code = secrets.token_urlsafe(48)
        self.core.store.put(CODES, code, {
            "client_id": app["appId"], "redirect_uri": params["redirect_uri"], "scope": params.get("scope"),
            "user_id": user["id"], "challenge": params.get("code_challenge"), "nonce": params.get("nonce"),
            "exp": self.directory.now() + CODE_LIFETIME})
        state = params.get("state")
        return _with_query(params["redirect_uri"], {"code": code, **({"state": state} if state else {})})


def _with_query(uri: str, params: dict[str, str]) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)
