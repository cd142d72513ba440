"""Entra's error shape and the AADSTS codes users meet, with one serializer.

Shape (Microsoft identity platform "error codes" page): {"error", "error_description": "AADSTSnnnn: ...",
"error_codes": [nnnn], "timestamp", "trace_id", "correlation_id"}; the description also carries the
trace and correlation ids and the timestamp.
"""
from __future__ import annotations

import datetime as dt
import uuid

from starlette.responses import JSONResponse

from ..oauth.errors import OAuthError
from ..runtime import InjectedFault


class EntraError(OAuthError):
    def __init__(self, code: int, error: str, message: str, *, status: int = 400,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(error, message, status=status, headers=headers)
        self.code = code


def invalid_client_secret(app_id: str) -> EntraError:
    return EntraError(7000215, "invalid_client", "Invalid client secret provided. Ensure the secret being sent "
                      f"in the request is the client secret value, not the client secret ID, for a secret added "
                      f"to app '{app_id}'.", status=401)


def expired_client_secret(app_id: str) -> EntraError:
    return EntraError(7000222, "invalid_client", f"The provided client secret keys for app '{app_id}' are "
                      "expired. Visit the Azure portal to create new keys for your app.", status=401)


def unknown_app(app_id: str, tenant: str) -> EntraError:
    return EntraError(700016, "unauthorized_client", f"Application with identifier '{app_id}' was not found in "
                      f"the directory '{tenant}'. This can happen if the application has not been installed by "
                      "the administrator of the tenant or consented to by any user in the tenant.")


def unknown_resource(resource: str, tenant: str) -> EntraError:
    return EntraError(500011, "invalid_resource", f"The resource principal named {resource} was not found in "
                      f"the tenant named {tenant}. This can happen if the application has not been installed by "
                      "the administrator of the tenant or consented to by any user in the tenant.")


def consent_required(app_id: str, name: str | None) -> EntraError:
    return EntraError(65001, "invalid_grant", f"The user or administrator has not consented to use the "
                      f"application with ID '{app_id}' named '{name}'. Send an interactive authorization request "
                      "for this user and resource.")


def user_not_assigned(app: dict, user: dict) -> EntraError:
    """The client's service principal requires assignment and the user holds none (nextauthjs/next-auth
    issue 5455 and microsoft/coe-starter-kit issue 4882 quote Entra's message; Entra shows it on its own page,
    it does not redirect)."""
    return EntraError(50105, "invalid_grant", f"Your administrator has configured the application "
                      f"{app.get('displayName')} ('{app['appId']}') to block users unless they are specifically "
                      f"granted ('assigned') access to the application. The signed in user "
                      f"'{user.get('userPrincipalName')}' is blocked because they are not a direct member of a group "
                      "with access, nor had access directly assigned by an administrator. Please contact your "
                      "administrator to assign access to this application.")


def pkce_mismatch() -> EntraError:
    return EntraError(501481, "invalid_grant", "The Code_Verifier does not match the code_challenge supplied in "
                      "the authorization request.")


def pkce_method_refused(method: str) -> EntraError:
    # A deliberate local restriction: Entra still accepts `plain`, RFC 7636 section 7.2 advises against it.
    return EntraError(501491, "invalid_request", f"Invalid code_challenge_method '{method}': only S256 is "
                      "accepted.")


def redirect_mismatch(uri: str, app_id: str) -> EntraError:
    return EntraError(50011, "invalid_request", f"The redirect URI '{uri}' specified in the request does not "
                      f"match the redirect URIs configured for the application '{app_id}'. Make sure the "
                      "redirect URI sent in the request matches one added to your application in the Azure "
                      "portal.")


def public_client_with_secret() -> EntraError:
    return EntraError(700025, "invalid_client", "Client is public so neither 'client_assertion' nor "
                      "'client_secret' should be presented.", status=401)


def confidential_without_secret() -> EntraError:
    return EntraError(7000218, "invalid_client", "The request body must contain the following parameter: "
                      "'client_assertion' or 'client_secret'.", status=401)


def spa_without_origin() -> EntraError:
    return EntraError(9002327, "invalid_request", "Tokens issued for the 'Single-Page Application' client-type "
                      "may only be redeemed via cross-origin requests.")


def cross_origin_not_spa(origin: str) -> EntraError:
    """A browser (Origin header) redeeming a code or refresh token issued for a web or public client platform
    ("Single-page application: App registration"; the message as public issue threads quote it)."""
    return EntraError(9002326, "invalid_request", "Cross-origin token redemption is permitted only for the "
                      f"'Single-Page Application' client-type. Request origin: '{origin}'.")


def admin_consent_required(app: dict) -> EntraError:
    """A scope only an administrator may consent to ("Need admin approval"; AADSTS90094)."""
    return EntraError(90094, "invalid_grant", f"The grant requires admin permission. {app.get('displayName')} "
                      "needs permission to access resources in your organization that only an admin can grant. "
                      "Please ask an admin to grant permission to this app before you can use it.")


def declined_consent() -> EntraError:
    """Cancel on the consent prompt: the redirect carries consent_required with AADSTS65004, as a public
    report shows it (PuzzleServer/mainpuzzleserver issue 571)."""
    return EntraError(65004, "consent_required", "User declined to consent to access the app.")


def bad_password() -> EntraError:
    return EntraError(50126, "invalid_grant", "Error validating credentials due to invalid username or password.")


def login_required() -> EntraError:
    return EntraError(50058, "login_required", "A silent sign-in request was sent but no user is signed in.")


def invalid_scope(scope: str, detail: str = "") -> EntraError:
    return EntraError(70011, "invalid_scope", f"The provided request must include a 'scope' input parameter. "
                      f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is "
                      f"not valid.{detail}")


def missing_parameter(name: str) -> EntraError:
    return EntraError(900144, "invalid_request", f"The request body must contain the following parameter: "
                      f"'{name}'.")


def from_fault(fault: InjectedFault) -> EntraError:
    if fault.status == 429:
        return EntraError(50196, "temporarily_unavailable", "The server is temporarily throttling requests.",
                          status=429, headers={"Retry-After": str(fault.retry_after or 1)})
    return EntraError(90033, "temporarily_unavailable", "A transient error has occurred. Please try again.",
                      status=fault.status, headers={"Retry-After": str(fault.retry_after or 1)})


def as_entra(err: OAuthError) -> EntraError:
    return err if isinstance(err, EntraError) else EntraError(90014, err.error, err.description,
                                                              status=err.status, headers=err.headers)


def body(err: OAuthError, req) -> dict:
    err = as_entra(err)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    trace, correlation = req.request_id, req.headers.get("client-request-id") or str(uuid.uuid4())
    description = (f"AADSTS{err.code}: {err.description}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\n"
                   f"Timestamp: {now}")
    return {"error": err.error, "error_description": description, "error_codes": [err.code], "timestamp": now,
            "trace_id": trace, "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={err.code}"}


def render(err: OAuthError, req) -> JSONResponse:
    return JSONResponse(body(err, req), status_code=err.status, headers=err.headers)
