"""Entra's HTTP surface on the login origin: discovery, JWKS, token, authorize with its sign-in pages, and
logout ("OpenID Connect on the Microsoft identity platform", "OAuth 2.0 authorization code flow", "client
credentials flow"); CORS where a browser calls it (docs/local-tenant.md, "Fidelity: the browser")."""
from __future__ import annotations

from urllib.parse import urlencode

import jwt
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ..web import Req, ServiceSpec, empty, json_response, routes as routes_table
from . import exceptions as ex, signin as pages
from .clients import registered_redirect

SPEC = ServiceSpec("entra", ex.OAuthError, ex.render, ex.from_fault)


def _tenant(req: Req) -> str:
    tenant = req.path_params["tenant"]
    if tenant.lower() not in (req.core.tenant_id, "local.test", "organizations", "common"):
        raise ex.EntraError(90002, "invalid_tenant", f"Tenant '{tenant}' not found. Check to make sure you have "
                            "the correct tenant ID and are signing into the correct cloud.")
    return req.core.tenant_id


def discovery(req: Req) -> JSONResponse:
    tid, host = _tenant(req), req.core.authority_host
    base = f"{host}/{tid}"
    return json_response({
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": req.core.issuer.issuer_v2,
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{req.core.graph_endpoint}/oidc/userinfo",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "http_logout_supported": True, "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
                             "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
                             "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net", "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }, headers=PUBLIC_CORS)


def jwks(req: Req) -> JSONResponse:
    """Each key names the issuer that signs with it: the tenant's v2 issuer, or for the tenant-independent
    document the `{tenantid}` template ("Access tokens", validate the signing key issuer)."""
    if "tenant" in req.path_params:
        _tenant(req)
        issuer = req.core.issuer.issuer_v2
    else:
        issuer = f"{req.core.authority_host}/{{tenantid}}/v2.0"
    return json_response(req.core.signing_keys.jwks(issuer), headers=PUBLIC_CORS)


def token(req: Req) -> JSONResponse:
    """Answered cross-origin (the SPA flow runs in the browser); a browser redeeming what another platform was
    issued is refused in grants (AADSTS9002326), and that answer is readable by the page too."""
    _tenant(req)
    origin = req.headers.get("origin")
    cors = {"Access-Control-Allow-Origin": origin} if origin else {}
    try:
        result = req.core.grants.token(req.form(), req.headers.get("authorization"), origin)
    except ex.OAuthError as err:
        err.headers = {**err.headers, **cors}
        raise
    # Token responses must not be cached (RFC 6749 5.1).
    return json_response(result, headers={"Cache-Control": "no-store", "Pragma": "no-cache", **cors})


def preflight(req: Req) -> Response:
    """A CORS preflight for discovery, keys or the token endpoint: Entra allows any origin there, so that a SPA
    registered at any origin reaches it ("Single-page application: App registration", CORS)."""
    if "tenant" in req.path_params:
        _tenant(req)
    origin = req.headers.get("origin")
    if not origin:
        return empty(204)
    return empty(204, headers={"Access-Control-Allow-Origin": origin,
                               "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                               "Access-Control-Allow-Headers": req.headers.get("access-control-request-headers", ""),
                               "Access-Control-Max-Age": "86400"})


# -- the sign-in pages (signin.py) ---------------------------------------------------------------------------
def _wants_page(req: Req) -> bool:
    return "text/html" in req.headers.get("accept", "")


def _error(req: Req, err: ex.EntraError) -> Response:
    """Entra shows its errors at /authorize on a page; a client that does not ask for HTML gets the JSON."""
    if _wants_page(req):
        return HTMLResponse(pages.error_page(err), status_code=err.status)
    raise err


def _html(body: str, cookie: str | None = None, status: int = 200) -> HTMLResponse:
    response = HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
    return _with_cookie(response, cookie)


def _with_cookie(response: Response, cookie: str | None) -> Response:
    if cookie:
        response.set_cookie(pages.COOKIE, cookie, max_age=pages.SESSION_LIFETIME, path="/", secure=True,
                            httponly=True, samesite="none")
    return response


def _signed_in(req: Req, params: dict[str, str], user: dict, flow: str, cookie: str | None = None) -> Response:
    """The user is known: a code for the client, a consent prompt, or the page of what stops them."""
    grants, tenant = req.core.grants, req.path_params["tenant"]
    try:
        missing = grants.missing_consent(params, user)
        if missing is not None and params.get("prompt") != "none" and grants.directory.may_sign_in(
                user, missing["client_sp"]):
            if missing["admin_only"]:
                raise ex.admin_consent_required(missing["app"])
            return _html(pages.consent_page(tenant, flow, missing), cookie)
        location = grants.finish(params, user)
    except ex.EntraError as err:
        return _with_cookie(_error(req, err), cookie)
    return _with_cookie(RedirectResponse(location, status_code=302), cookie)


def authorize(req: Req) -> Response:
    _tenant(req)
    params = dict(req.query)
    try:
        refused = req.core.grants.begin(params)
    except ex.EntraError as err:
        return _error(req, err)
    if refused:
        return RedirectResponse(refused, status_code=302)
    signin = req.core.signin
    user = signin.session_user(req.raw.cookies.get(pages.COOKIE))
    prompt = params.get("prompt")
    if prompt == "none":
        if user is None:
            return RedirectResponse(req.core.grants.error_redirect(params, ex.login_required()), status_code=302)
        return _signed_in(req, params, user, signin.new_flow(params))
    hint = params.get("login_hint") or ""
    if user is not None and prompt not in ("login", "select_account") and (not hint or hint.lower() == user[
            "userPrincipalName"].lower()):
        return _signed_in(req, params, user, signin.new_flow(params))  # single sign-on
    accounts = [user] if user is not None and prompt != "login" else []
    return _html(pages.account_page(req.path_params["tenant"], signin.new_flow(params), hint=hint, accounts=accounts))


def login(req: Req) -> Response:
    """The account and password forms post here (Entra's own sign-in form posts to /{tenant}/login)."""
    _tenant(req)
    form, signin, tenant = req.form(), req.core.signin, req.path_params["tenant"]
    try:
        params = signin.flow(form.get("flow"))
    except ex.EntraError as err:
        return _error(req, err)
    flow = form["flow"]
    chosen = form.get("account")
    if chosen:  # a tile of an account signed in in this browser: no password again
        user = signin.session_user(req.raw.cookies.get(pages.COOKIE))
        if user is not None and user["userPrincipalName"].lower() == chosen.lower():
            return _signed_in(req, params, user, flow)
        return _html(pages.account_page(tenant, flow, hint=chosen))
    login_name = (form.get("login") or "").strip()
    if "passwd" not in form:
        if req.core.graph.user(login_name) is None:
            return _html(pages.account_page(tenant, flow, hint=login_name, error="This username may be "
                                            "incorrect. Make sure you typed it correctly. (AADSTS50034)"))
        return _html(pages.password_page(tenant, flow, login_name))
    try:
        user = signin.check_password(login_name, form["passwd"])
    except ex.EntraError as err:
        if _wants_page(req):
            return _html(pages.password_page(tenant, flow, login_name, error="Your account or password is "
                                             f"incorrect. (AADSTS{err.code})"), status=400)
        raise
    return _signed_in(req, params, user, flow, signin.start_session(user))


def consent(req: Req) -> Response:
    _tenant(req)
    form, signin = req.form(), req.core.signin
    try:
        params = signin.flow(form.get("flow"))
        user = signin.session_user(req.raw.cookies.get(pages.COOKIE))
        if user is None:
            raise ex.login_required()
        if form.get("accept") != "true":
            return RedirectResponse(req.core.grants.error_redirect(params, ex.declined_consent()), status_code=302)
        req.core.grants.consent(params, user)
    except ex.EntraError as err:
        return _error(req, err)
    return _signed_in(req, params, user, form["flow"])


def logout(req: Req) -> Response:
    """End the browser's session ("Send a sign-out request": GET or POST, `post_logout_redirect_uri`). The
    browser goes back only to a URI registered on the application the request names (by `client_id` or an
    `id_token_hint` the tenant issued); anything else stays on the signed-out page: stricter than kind."""
    _tenant(req)
    params = {**dict(req.query), **(req.form() if req.method == "POST" else {})}
    req.core.signin.end_session(req.raw.cookies.get(pages.COOKIE))
    target, note = params.get("post_logout_redirect_uri"), ""
    if target:
        app = _logout_app(req, params)
        if app is not None and registered_redirect(app, target):
            state = params.get("state")
            location = target + (("&" if "?" in target else "?") + urlencode({"state": state}) if state else "")
            response: Response = RedirectResponse(location, status_code=302)
            response.delete_cookie(pages.COOKIE, path="/", secure=True, httponly=True, samesite="none")
            return response
        note = (f"AADSTS50011: The post_logout_redirect_uri '{target}' is not a redirect URI registered for the "
                "application, so the browser was not sent there.")
    response = _html(pages.signed_out_page(note))
    response.delete_cookie(pages.COOKIE, path="/", secure=True, httponly=True, samesite="none")
    return response


def _logout_app(req: Req, params: dict[str, str]) -> dict | None:
    client_id = params.get("client_id")
    if not client_id and params.get("id_token_hint"):
        try:  # an id token this tenant signed, expired or not
            claims = req.core.signing_keys.verify(params["id_token_hint"])
        except jwt.InvalidTokenError:
            claims = {}
        client_id = claims.get("aud") if isinstance(claims.get("aud"), str) else None
    return req.core.graph.app_by_app_id(client_id) if client_id else None


PUBLIC_CORS = {"Access-Control-Allow-Origin": "*"}


def unknown(req: Req, allowed: list[str]) -> ex.EntraError:
    """The token endpoint asked with GET answers AADSTS900561 as Entra does; a path Entra does not have (it
    shows an HTML page there) answers AADSTS9002313 in the JSON shape clients parse."""
    allowed = [m for m in allowed if m != "OPTIONS"]  # the CORS preflight is not a method a client calls
    if allowed:
        return ex.EntraError(900561, "invalid_request", f"The endpoint only accepts {', '.join(allowed)} "
                             f"requests. Received a {req.method} request.", status=405)
    return ex.EntraError(9002313, "invalid_request", "Invalid request. Request is malformed or invalid.",
                         status=404)


def routes(core) -> list:
    return routes_table(core, SPEC, [
        ("/{tenant}/v2.0/.well-known/openid-configuration", ["GET"], "entra.discovery", discovery),
        ("/{tenant}/discovery/v2.0/keys", ["GET"], "entra.keys", jwks),
        ("/discovery/v2.0/keys", ["GET"], "entra.keys", jwks),
        ("/{tenant}/oauth2/v2.0/token", ["POST"], "entra.token", token),
        ("/{tenant}/v2.0/.well-known/openid-configuration", ["OPTIONS"], "entra.preflight", preflight),
        ("/{tenant}/discovery/v2.0/keys", ["OPTIONS"], "entra.preflight", preflight),
        ("/discovery/v2.0/keys", ["OPTIONS"], "entra.preflight", preflight),
        ("/{tenant}/oauth2/v2.0/token", ["OPTIONS"], "entra.preflight", preflight),
        ("/{tenant}/oauth2/v2.0/authorize", ["GET"], "entra.authorize", authorize),
        ("/{tenant}/login", ["POST"], "entra.login", login),
        ("/{tenant}/consent", ["POST"], "entra.consent", consent),
        ("/{tenant}/oauth2/v2.0/logout", ["GET", "POST"], "entra.logout", logout),
    ])
