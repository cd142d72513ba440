"""Platform policy for creates: which access a requester may ask for on which DICOM service, how many
registrations one requester may hold, and which hosts redirect URIs may point at."""

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


def check_request(settings: Settings, request: Any) -> None:
    """Rules for everyone, admins included."""
    credential = getattr(request, "credential", None)
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
