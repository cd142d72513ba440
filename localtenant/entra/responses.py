"""Entra's HTTP surface on the login origin: discovery, JWKS, token and authorize ("OpenID Connect on the
Microsoft identity platform", "OAuth 2.0 authorization code flow", "client credentials flow")."""
from __future__ import annotations

from starlette.responses import JSONResponse, RedirectResponse

from ..web import Req, ServiceSpec, json_response, routes as routes_table
from . import exceptions as ex

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
    })


def jwks(req: Req) -> JSONResponse:
    """Each key names the issuer that signs with it: the tenant's v2 issuer, or for the tenant-independent
    document the `{tenantid}` template ("Access tokens", validate the signing key issuer)."""
    if "tenant" in req.path_params:
        _tenant(req)
        issuer = req.core.issuer.issuer_v2
    else:
        issuer = f"{req.core.authority_host}/{{tenantid}}/v2.0"
    return json_response(req.core.signing_keys.jwks(issuer))


def token(req: Req) -> JSONResponse:
    _tenant(req)
    result = req.core.grants.token(req.form(), req.headers.get("authorization"), req.headers.get("origin"))
    # Token responses must not be cached (RFC 6749 5.1).
    return json_response(result, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def authorize(req: Req) -> RedirectResponse:
    _tenant(req)
    return RedirectResponse(req.core.grants.authorize(dict(req.query)), status_code=302)


def unknown(req: Req, allowed: list[str]) -> ex.EntraError:
    """The token endpoint asked with GET answers AADSTS900561 as Entra does; a path Entra does not have (it
    shows an HTML page there) answers AADSTS9002313 in the JSON shape clients parse."""
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
        ("/{tenant}/oauth2/v2.0/authorize", ["GET"], "entra.authorize", authorize),
    ])
