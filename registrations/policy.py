"""Platform policy for creates: which access a requester may ask for on which DICOM service, how many
registrations one requester may hold, which hosts redirect URIs may point at, which issuers federated
credentials may trust, and what only administrators may create.

Everything here reads the request and the settings only, so it runs before the first write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .manifest import Caller
from .problems import PolicyViolation, ValidationProblem
from .settings import Settings

ADMIN, REQUEST, READ = "Registrations.Admin", "Registrations.Request", "Registrations.Read"


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """`contoso.org` allows exactly that host; `*.contoso.org` allows any subdomain (not the apex)."""
    host = host.lower()
    for pattern in patterns:
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
            return True
        if host == pattern:
            return True
    return False


# The audience Entra expects in a federated credential's tokens for workload identity federation
# (learn.microsoft.com: "Workload identity federation", federatedIdentityCredential.audiences).
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


def check_request(settings: Settings, request: Any) -> None:
    """Rules for everyone, admins included."""
    credential = getattr(request, "credential", None)
    if getattr(credential, "kind", None) == "federated" and settings.allowed_federated_issuers \
            and credential.issuer not in settings.allowed_federated_issuers:
        raise PolicyViolation(
            f"credential.issuer {credential.issuer!r} is not in the allowed federated issuers",
            allowedFederatedIssuers=list(settings.allowed_federated_issuers),
        )
    if getattr(request, "secretReaders", None) and not settings.key_vault_resource_id:
        raise ValidationProblem(
            "secretReaders needs KEY_VAULT_RESOURCE_ID (the ARM id of the vault), which is not set; "
            "leave secretReaders out or ask an administrator",
            errors=[{"loc": [request.type, "secretReaders"], "msg": "not available on this deployment"}],
        )
    identifier_uri = getattr(request, "identifierUri", None)
    # Entra's app ID URI policy also accepts api://{appId} and verified domains; neither can be checked
    # before the application exists, so a custom URI must use the tenant form.
    if identifier_uri and not identifier_uri.startswith(f"api://{settings.tenant_id}/"):
        raise ValidationProblem(
            f"identifierUri must start with api://{settings.tenant_id}/ (or be left out for the default)",
            errors=[{"loc": [request.type, "identifierUri"], "msg": "not in this tenant's api:// form"}],
        )
    lifetime = getattr(credential, "lifetimeDays", None)
    if lifetime and lifetime > settings.secret_max_lifetime_days:
        raise ValidationProblem(
            f"credential.lifetimeDays is {lifetime}; the longest allowed is {settings.secret_max_lifetime_days}",
            errors=[{"loc": [request.type, "credential", "lifetimeDays"], "msg": "longer than allowed"}],
        )
    if settings.allowed_redirect_hosts:
        for index, uri in enumerate(getattr(request, "redirectUris", None) or []):
            parts = urlsplit(uri)
            if parts.scheme in ("http", "https") and not host_allowed(parts.hostname or "",
                                                                      settings.allowed_redirect_hosts):
                raise PolicyViolation(
                    f"redirectUris[{index}]: host {parts.hostname!r} is not in the allowed redirect hosts",
                    allowedRedirectHosts=list(settings.allowed_redirect_hosts),
                )


def check_requester(settings: Settings, request: Any, caller: Caller, count_own: Callable[[], int]) -> None:
    """Rules for callers that hold Registrations.Request and not Registrations.Admin."""
    if ADMIN in caller.roles:
        return
    if request.type == "resource":
        raise PolicyViolation("resource registrations (the API of a DICOM server) are created by administrators "
                              "(Registrations.Admin); ask an administrator")
    credential = getattr(request, "credential", None)
    if getattr(credential, "kind", None) == "federated":
        if not settings.allowed_federated_issuers:
            raise PolicyViolation("requesters may not create federated credentials until an administrator sets "
                                  "ALLOWED_FEDERATED_ISSUERS; use a secret or certificate, or ask an administrator")
        if credential.audience != TOKEN_EXCHANGE_AUDIENCE:
            raise PolicyViolation(f"a federated credential's audience must be {TOKEN_EXCHANGE_AUDIENCE!r}",
                                  allowedAudiences=[TOKEN_EXCHANGE_AUDIENCE])
    allowed = settings.requester_access.get(request.dicomService)
    access = getattr(request, "access", None)
    if access and allowed is not None and access not in allowed:
        raise PolicyViolation(
            f"requesters may ask for {', '.join(allowed) or 'no access'} on {request.dicomService!r}, "
            f"not {access!r}; ask an administrator",
            allowedAccess=list(allowed),
        )
    if count_own() >= settings.max_registrations_per_requester:
        raise PolicyViolation(
            f"this requester already holds {settings.max_registrations_per_requester} registrations, the most "
            "allowed; delete one first",
            limit=settings.max_registrations_per_requester,
        )
