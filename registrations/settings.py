"""Settings, read once from the environment (app settings in Azure, local.settings.json locally).

Defaults point at public Azure. Endpoints on loopback are accepted only when the Functions environment says
Development, so a production app can never talk to the local tenant by accident.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .problems import Misconfigured

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
ARM_SCOPE = "https://management.azure.com/.default"
MANAGED_DICOM_AUDIENCE = "https://dicom.healthcareapis.azure.com"


class _Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(pattern=r"^https://[^\s/?#]+(/[^\s?#]*)?$")
    apiVersion: str = Field(default="v2", pattern=r"^v[12]$")

    @property
    def base_url(self) -> str:
        return f"{self.url.rstrip('/')}/{self.apiVersion}"


class ManagedTarget(_Target):
    """Azure Health Data Services DICOM: Microsoft's first-party resource, data access by Azure RBAC."""

    kind: Literal["managed"]
    resourceId: str = Field(pattern=r"(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                                    r"Microsoft\.HealthcareApis/workspaces/[^/]+/dicomservices/[^/]+$")
    audience: str = MANAGED_DICOM_AUDIENCE


class OssTarget(_Target):
    """Open-source Medical Imaging Server for DICOM: its own resource app, data access by app roles."""

    kind: Literal["oss"]
    resourceRegistration: str | None = Field(default=None, pattern=r"^[a-z0-9](?:[a-z0-9-]{1,58}[a-z0-9])$")
    resourceAppId: str | None = Field(default=None, pattern=r"^[0-9a-fA-F-]{36}$")


DicomTarget = Annotated[ManagedTarget | OssTarget, Field(discriminator="kind")]
_TARGETS = TypeAdapter(dict[str, DicomTarget])
_REQUESTER_ACCESS = TypeAdapter(dict[str, list[Literal["reader", "writer", "admin"]]])


@dataclass(frozen=True)
class Settings:
    tenant_id: str
    key_vault_url: str
    dicom_services: dict[str, ManagedTarget | OssTarget]
    authority_host: str = "https://login.microsoftonline.com"
    graph_endpoint: str = "https://graph.microsoft.com"
    arm_endpoint: str = "https://management.azure.com"
    key_vault_resource_id: str | None = None
    api_client_id: str | None = None
    api_audience: str | None = None
    tls_ca_file: str | None = None
    development: bool = False
    secret_lifetime_days: int = 180
    secret_max_lifetime_days: int = 365
    grant_admin_consent: bool = True
    # The identity holds Application.ReadWrite.All, which adding owners needs (OwnedBy is not enough).
    manage_owners: bool = False
    name_prefix: str = "dicomreg"
    provisioning_deadline_seconds: float = 60.0
    # Policy for callers holding only Registrations.Request (admins are not limited by the first two).
    # A DICOM service REQUESTER_ACCESS does not name (all of them, when it is unset): reader only.
    requester_access: dict[str, tuple[str, ...]] = field(default_factory=dict)
    max_registrations_per_requester: int = 50
    # Directory objects this API's identity may create (Entra: 250 without a directory role); 0: no limit.
    directory_object_quota: int = 250
    # Empty: requesters may not create delegated (public or confidential) clients at all.
    allowed_redirect_hosts: tuple[str, ...] = ()
    # Custom schemes beyond the documented native forms (msauth.{bundle}://auth, msauth://{package}/{hash}).
    allowed_redirect_schemes: tuple[str, ...] = ()
    # Tenant-wide consent for the delegated DICOM scope on clients a requester makes (admins' get it with
    # grant_admin_consent alone): off, so a requester's client signs nobody in until an administrator consents.
    requester_admin_consent: bool = False
    # Issuers federated credentials may trust; empty: only admins may create federated credentials.
    allowed_federated_issuers: tuple[str, ...] = ()
    # Credential lifecycle.
    rotation_overlap_days: int = 7
    expiry_warning_days: int = 30
    rotate_before_days: int = 30
    # How long after a change a token refusal still counts as Entra's propagation (202, not 409).
    verify_propagation_seconds: int = 600
    # Verification searches the DICOM service with a service client's token (off where the function cannot
    # reach the service).
    verify_data_plane: bool = True
    # Public SPA registrations on a managed DICOM service add their origins to its CORS configuration.
    cors_for_spa: bool = False
    # The registry (registry.py): the storage account's table endpoint, reached with the app's managed identity
    # (AzureWebJobsStorage__tableServiceUri, as the Functions host's identity-based connections name it), and
    # its table. REGISTRY_CONNECTION_STRING is for Azurite on loopback in Development only.
    registry_endpoint: str | None = None
    registry_connection_string: str | None = field(default=None, repr=False)
    registry_table: str = "registrations"

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    @property
    def connection_verify(self) -> str | bool:
        """What azure-core and requests verify TLS with: the local CA when one is configured."""
        return self.tls_ca_file or True

    def target(self, name: str) -> ManagedTarget | OssTarget | None:
        return self.dicom_services.get(name)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Misconfigured(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise Misconfigured(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise Misconfigured(f"{name} must be true or false, got {raw!r}")


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; a Misconfigured problem names the first bad one."""
    env = dict(os.environ if env is None else env)
    missing = [n for n in ("AZURE_TENANT_ID", "KEY_VAULT_URL", "DICOM_SERVICES") if not env.get(n)]
    if missing:
        raise Misconfigured(f"missing settings: {', '.join(missing)}")
    try:
        targets = _TARGETS.validate_python(json.loads(env["DICOM_SERVICES"]))
    except (ValueError, ValidationError) as exc:
        raise Misconfigured(f"DICOM_SERVICES is not valid: {_first_error(exc)}") from None
    if not targets:
        raise Misconfigured("DICOM_SERVICES names no DICOM service")
    for name, target in targets.items():
        if isinstance(target, OssTarget) and bool(target.resourceRegistration) == bool(target.resourceAppId):
            raise Misconfigured(f"DICOM_SERVICES.{name}: give exactly one of resourceRegistration, resourceAppId")

    try:
        requester_access = _REQUESTER_ACCESS.validate_python(json.loads(env.get("REQUESTER_ACCESS") or "{}"))
    except (ValueError, ValidationError) as exc:
        raise Misconfigured(f"REQUESTER_ACCESS is not valid: {_first_error(exc)}") from None
    unknown = set(requester_access) - set(targets)
    if unknown:
        raise Misconfigured(f"REQUESTER_ACCESS names unknown DICOM services: {', '.join(sorted(unknown))}")
    hosts = tuple(h.strip().lower() for h in (env.get("ALLOWED_REDIRECT_HOSTS") or "").split(",") if h.strip())
    schemes = tuple(h.strip().lower() for h in (env.get("ALLOWED_REDIRECT_SCHEMES") or "").split(",") if h.strip())
    for scheme in schemes:
        if not re.fullmatch(r"[a-z][a-z0-9+-]*(\.[a-z0-9+-]+)+", scheme):
            raise Misconfigured("ALLOWED_REDIRECT_SCHEMES must list reverse-DNS custom schemes (com.contoso.viewer), "
                                "separated by commas")
    issuers = tuple(i.strip() for i in (env.get("ALLOWED_FEDERATED_ISSUERS") or "").split(",") if i.strip())
    for issuer in issuers:
        if not issuer.startswith("https://") or any(c.isspace() for c in issuer):
            raise Misconfigured("ALLOWED_FEDERATED_ISSUERS must list https issuer URLs, separated by commas")

    development = env.get("AZURE_FUNCTIONS_ENVIRONMENT", "Production") == "Development"
    settings = Settings(
        tenant_id=env["AZURE_TENANT_ID"],
        key_vault_url=env["KEY_VAULT_URL"].rstrip("/"),
        dicom_services=targets,
        authority_host=env.get("AZURE_AUTHORITY_HOST") or Settings.authority_host,
        graph_endpoint=(env.get("GRAPH_ENDPOINT") or Settings.graph_endpoint).rstrip("/"),
        arm_endpoint=(env.get("ARM_ENDPOINT") or Settings.arm_endpoint).rstrip("/"),
        key_vault_resource_id=env.get("KEY_VAULT_RESOURCE_ID") or None,
        api_client_id=env.get("API_CLIENT_ID") or None,
        api_audience=env.get("API_AUDIENCE") or None,
        tls_ca_file=env.get("TLS_CA_FILE") or None,
        development=development,
        secret_lifetime_days=_int(env, "SECRET_LIFETIME_DAYS", 180, 1, 730),
        secret_max_lifetime_days=_int(env, "SECRET_MAX_LIFETIME_DAYS", 365, 1, 730),
        grant_admin_consent=_bool(env, "GRANT_ADMIN_CONSENT", True),
        manage_owners=_bool(env, "MANAGE_OWNERS", False),
        name_prefix=env.get("REGISTRATION_NAME_PREFIX") or "dicomreg",
        requester_access={k: tuple(v) for k, v in requester_access.items()},
        max_registrations_per_requester=_int(env, "MAX_REGISTRATIONS_PER_REQUESTER", 50, 1, 10_000),
        directory_object_quota=_int(env, "DIRECTORY_OBJECT_QUOTA", 250, 0, 300_000),
        allowed_redirect_hosts=hosts,
        allowed_redirect_schemes=schemes,
        requester_admin_consent=_bool(env, "REQUESTER_ADMIN_CONSENT", False),
        allowed_federated_issuers=issuers,
        provisioning_deadline_seconds=float(_int(env, "PROVISIONING_DEADLINE_SECONDS", 60, 10, 200)),
        rotation_overlap_days=_int(env, "ROTATION_OVERLAP_DAYS", 7, 0, 90),
        expiry_warning_days=_int(env, "EXPIRY_WARNING_DAYS", 30, 1, 365),
        rotate_before_days=_int(env, "ROTATE_BEFORE_DAYS", 30, 1, 365),
        verify_propagation_seconds=_int(env, "VERIFY_PROPAGATION_SECONDS", 600, 0, 86_400),
        verify_data_plane=_bool(env, "VERIFY_DATA_PLANE", True),
        cors_for_spa=_bool(env, "DICOM_CORS_FOR_SPA", False),
        registry_endpoint=(env.get("AzureWebJobsStorage__tableServiceUri") or "").rstrip("/") or None,
        registry_connection_string=env.get("REGISTRY_CONNECTION_STRING") or None,
        registry_table=env.get("REGISTRY_TABLE") or "registrations",
    )
    _check_registry(settings)
    if settings.secret_lifetime_days > settings.secret_max_lifetime_days:
        raise Misconfigured("SECRET_LIFETIME_DAYS is longer than SECRET_MAX_LIFETIME_DAYS")
    endpoints = {
        "AZURE_AUTHORITY_HOST": settings.authority_host,
        "GRAPH_ENDPOINT": settings.graph_endpoint,
        "ARM_ENDPOINT": settings.arm_endpoint,
        "KEY_VAULT_URL": settings.key_vault_url,
    }
    for name, url in endpoints.items():
        if urlsplit(url).scheme != "https":
            raise Misconfigured(f"{name} must be an https URL")
        if _is_loopback(url) and not development:
            raise Misconfigured(
                f"{name} points at loopback but AZURE_FUNCTIONS_ENVIRONMENT is not Development; "
                "refusing to talk to a local tenant in production"
            )
    if settings.tls_ca_file and not development:
        raise Misconfigured("TLS_CA_FILE is for local development only")
    return settings


def _check_registry(settings: Settings) -> None:
    """The registry is the function app's own storage account with its identity; a connection string (with an
    account key) only for Azurite on loopback in Development, never as a silent fallback."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", settings.registry_table):
        raise Misconfigured("REGISTRY_TABLE must be 3 to 63 letters and digits, starting with a letter")
    if settings.registry_endpoint and urlsplit(settings.registry_endpoint).scheme != "https":
        raise Misconfigured("AzureWebJobsStorage__tableServiceUri must be an https URL "
                            "(https://{account}.table.core.windows.net)")
    if settings.registry_endpoint and _is_loopback(settings.registry_endpoint) and not settings.development:
        raise Misconfigured("AzureWebJobsStorage__tableServiceUri points at loopback but AZURE_FUNCTIONS_ENVIRONMENT "
                            "is not Development")
    if settings.registry_connection_string:
        parts = dict(p.split("=", 1) for p in settings.registry_connection_string.split(";") if "=" in p)
        if not settings.development or not _is_loopback(parts.get("TableEndpoint", "")):
            raise Misconfigured("REGISTRY_CONNECTION_STRING is for Azurite on loopback in Development only; in Azure "
                                "set AzureWebJobsStorage__tableServiceUri and grant the app's identity Storage Table "
                                "Data Contributor")
        if settings.registry_endpoint:
            raise Misconfigured("set one of AzureWebJobsStorage__tableServiceUri and REGISTRY_CONNECTION_STRING")


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)
