"""Does a registration really work? Sign in with its credential and look at what Entra ID hands back.

HTTP-free, like the service layer: it takes a name and a Caller, talks to Azure through the adapters and msal,
and returns a Verification or raises a Problem.

- A registration with a client secret or certificate gets a DICOM token through msal's client credentials
  flow, with the secret or the certificate's PEM read from Key Vault (never logged, never returned), and then
  the grant it needs is checked: the app role in the token (open-source server) or the Azure role
  assignment on the service (managed).
- A service client's token then makes one QIDO-RS search at the DICOM service (`GET {base}/studies?limit=1`,
  unless VERIFY_DATA_PLANE is false): the role has to work where it matters, not only exist in ARM or Graph.
- Public clients, resource registrations and secretless credentials get configuration checks instead.
- Entra ID and Azure RBAC are eventually consistent: a new secret is refused with AADSTS7000215 for seconds
  to minutes (a few seconds is common), an app or principal can be unknown
  (AADSTS700016) and role assignments take minutes to apply. While the registration is younger than the
  propagation window, such a failure is "not yet" (202 and a Retry-After), not "broken".
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import manifest as mf
from .adapters.dicomweb import DicomWebClient
from .adapters.errors import NotFoundError, UpstreamError
from .adapters.graph import GraphClient
from .adapters.rbac import RbacClient
from .adapters.vault import VaultClient
from .certificates import msal_client_credential
from .views import scopes_for
from .kinds import (
    DICOM_DATA_OWNER,
    DICOM_DATA_READER,
    MANAGED_ACCESS_ROLES,
    MANAGED_DELEGATED_SCOPE,
    OSS_ACCESS_ROLES,
    OSS_DELEGATED_SCOPE,
    PLANS,
    oss_role_grants,
)
from .manifest import Caller
from .problems import UpstreamUnavailable, VerificationFailed, upstream_problem
from .provision import resource_principal
from .registry import Registry
from .service import RegistrationService
from .settings import ManagedTarget, OssTarget, Settings
from .times import iso_from_epoch, parse_time

log = logging.getLogger("registrations.verification")

RETRY_AFTER_SECONDS = 5
# AADSTS codes that mean "Entra ID has not seen this yet" right after a change: invalid client secret, app not
# found in the directory, client app without its service principal.
PROPAGATION_CODES = frozenset({7000215, 700016, 7000229})
EXPIRED_SECRET = 7000222
# What Entra answers when the stored value matches no credential it knows (yet): an invalid client secret,
# or a client assertion signed by a certificate that is not (yet) in the app's keyCredentials.
NOT_ACCEPTED = {"secret": 7000215, "certificate": 700027}
CREDENTIAL_LABEL = {"secret": "client secret", "certificate": "client certificate"}
_ROLE_NAMES = {DICOM_DATA_OWNER: "DICOM Data Owner", DICOM_DATA_READER: "DICOM Data Reader"}
_AADSTS = re.compile(r"AADSTS(\d+)")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    # A failure that Entra's or ARM's replication lag explains while the registration is young.
    propagating: bool = False
    aadsts: int | None = None  # the token endpoint's error code, when that is what failed

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Verification:
    """The answer: ``body`` for the caller; ``retry_after`` is set when the answer is "not yet" (202)."""

    body: dict[str, Any]
    retry_after: int | None = None

    @property
    def pending(self) -> bool:
        return self.retry_after is not None


@dataclass
class TokenResult:
    """What the token endpoint said: claims of the access token (the token itself is dropped) or an error."""

    claims: dict[str, Any] = field(default_factory=dict)
    code: int | None = None
    error: str | None = None
    # The access token itself, for the one data-plane call; never logged, never in an answer.
    token: str | None = field(default=None, repr=False)


# (client_id, msal client_credential: a secret or {"private_key", "thumbprint"}, scopes) -> TokenResult
AcquireToken = Callable[[str, str | dict[str, str], list[str]], TokenResult]


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: it came to us over TLS from the authority just now, and we only
    report what it says; resource servers verify it."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class MsalTokenClient:
    """Client credentials through msal, as the registration's own client would do it."""

    def __init__(self, authority: str, *, verify: str | bool, timeout: float = 30.0) -> None:
        import requests

        self._authority = authority
        self._timeout = timeout
        self._session = requests.Session()
        # REQUESTS_CA_BUNDLE in the environment would override `verify` (requests' merge_environment_settings).
        self._session.trust_env = False
        self._session.verify = verify

    def __call__(self, client_id: str, credential: str | dict[str, str], scopes: list[str]) -> TokenResult:
        import msal  # lazily: the worker's cold start does not pay for it

        app = msal.ConfidentialClientApplication(
            client_id, client_credential=credential, authority=self._authority, instance_discovery=False,
            http_client=self._session, token_cache=msal.TokenCache(), timeout=self._timeout,
        )
        result = app.acquire_token_for_client(scopes)
        if "access_token" in result:
            return TokenResult(claims=token_claims(result["access_token"]), token=result["access_token"])
        codes = result.get("error_codes") or [int(m) for m in _AADSTS.findall(result.get("error_description") or "")]
        return TokenResult(code=int(codes[0]) if codes else None, error=result.get("error") or "unknown_error")


class Verifier:
    def __init__(
        self,
        settings: Settings,
        *,
        service: RegistrationService,
        graph: GraphClient,
        vault: VaultClient,
        rbac: RbacClient,
        dicomweb: DicomWebClient | None = None,
        acquire_token: AcquireToken | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        retry_after: int = RETRY_AFTER_SECONDS,
        registry: Registry,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.service, self.graph, self.vault, self.rbac = service, graph, vault, rbac
        self.dicomweb = dicomweb or DicomWebClient(verify=settings.connection_verify)
        self._acquire = acquire_token or MsalTokenClient(settings.authority, verify=settings.connection_verify)
        self._clock = clock
        self.propagation_seconds = settings.verify_propagation_seconds
        self.retry_after = retry_after

    def verify(self, name: str, caller: Caller) -> Verification:
        view = self.service.get(name, caller)  # 404 for names the caller may not see
        try:
            return self._verify(name, view)
        except UpstreamError as exc:  # Graph, Key Vault or ARM failed after their own retries
            raise upstream_problem(exc) from exc

    def _verify(self, name: str, view: dict) -> Verification:
        app = self.service.registered_app(name)
        if app is None:  # deleted between the two reads
            raise VerificationFailed(f"registration {name!r} disappeared while it was being verified")
        age = self._age(app)
        young = age < self.propagation_seconds
        target = self.settings.target(view["dicomService"] or "")
        token: dict[str, Any] = {}
        if view["state"] != "ready":
            checks = [Check("provisioning state", False, f"the registration is {view['state']}, not ready",
                            propagating=True)]
        elif target is None:
            checks = [Check("DICOM service", False,
                            f"DICOM service {view['dicomService']!r} is no longer configured")]
        else:
            checks, token = self._checks(view, app, target, young)
        failed = [check for check in checks if not check.ok]
        if failed and young and all(check.propagating for check in failed):
            return Verification({
                "status": "pending",
                "reason": f"Entra ID or Azure is still propagating this registration ({self._how_old(app)}): "
                          + "; ".join(check.detail for check in failed),
            }, retry_after=self.retry_after)
        if failed:
            codes = {"aadsts": check.aadsts for check in failed if check.aadsts}
            raise VerificationFailed("; ".join(check.detail for check in failed),
                                     checks=[check.to_dict() for check in checks], **codes)
        return Verification({"status": "verified", **token, "checks": [check.to_dict() for check in checks]})

    # ------------------------------------------------------------------------------------ what to check
    def _checks(self, view: dict, app: dict, target: ManagedTarget | OssTarget,
                young: bool) -> tuple[list[Check], dict[str, Any]]:
        """The checks that apply to this registration, and what its token says (when it has one)."""
        plan = PLANS[view["type"]]
        if plan.exposes_api:
            return self._resource_checks(app), {}
        resource = resource_principal(self.graph, target, self.registry)
        if resource is None:
            return [Check("DICOM resource", False, self._missing_resource(target))], {}
        kind = mf.tag_values(app).get("credential") or "secret"
        token: dict[str, Any] = {}
        roles: list[str] | None = None  # the token's, when there is a token to look at
        access_token: str | None = None  # the token itself, for the data-plane call only
        if plan.has_credential and kind in mf.STORED_KINDS:
            check, token, access_token = self._token_check(view, kind, target, resource, young)
            if not check.ok:
                return [check], {}
            checks, sp_id, roles = [check], view.get("servicePrincipalId"), token["roles"]
        else:
            sp = self.graph.get_service_principal(app["appId"])
            checks = [Check("service principal", sp is not None, "the service principal exists" if sp else
                            f"no service principal for appId {app['appId']}", propagating=True)]
            if sp is None:
                return checks, {}
            sp_id = sp["id"]
        if plan.grant_for(target.kind) in ("app-role", "azure-role"):  # granted to the app itself
            checks.append(self._grant_check(view, target, resource, sp_id, roles=roles))
            if access_token is not None and plan.app_only:
                if self.settings.verify_data_plane:
                    checks.append(self._data_plane_check(view, target, access_token))
                token["dataPlane"] = "ok" if self.settings.verify_data_plane else "skipped"
        else:
            checks += self._delegated_checks(view, app, target, resource, sp_id)
        return checks, token

    def _token_check(self, view: dict, kind: str, target, resource: dict,
                     young: bool) -> tuple[Check, dict[str, Any], str | None]:
        """Client credentials with the secret or certificate from Key Vault; on success, what the token says
        and the token (for the data-plane call)."""
        label = CREDENTIAL_LABEL[kind]
        secret_name = (view.get("credential") or {}).get("keyVaultSecretName") \
            or mf.secret_name(self.settings.name_prefix, view["name"], kind)
        try:
            stored = self.vault.get_value(secret_name)
        except NotFoundError:
            return Check(label, False, f"the Key Vault secret {secret_name} does not exist"), {}, None
        try:
            credential = stored if kind == "secret" else msal_client_credential(stored)
        except ValueError:  # cryptography's message names what it could not parse, never the key
            return Check(label, False, f"the Key Vault secret {secret_name} holds no readable certificate"), {}, None
        finally:
            del stored
        # Client credentials, whatever the type: `.default` of the DICOM resource.
        scopes = scopes_for(target, resource["appId"], app_only=True)
        try:
            result = self._acquire(view["appId"], credential, scopes)
        except Exception as exc:  # a network failure; its text may name URLs but never the credential
            log.warning("token request for %s did not complete: %s", view["name"], type(exc).__name__)
            raise UpstreamUnavailable("the Entra ID token endpoint could not be reached",
                                      upstream={"service": "entra", "operation": "token", "status": None,
                                                "code": type(exc).__name__}) from None
        finally:
            del credential
        if result.code is None and result.error is None:
            claims = result.claims
            scp = claims.get("scp")
            summary = {"audience": claims.get("aud"), "roles": list(claims.get("roles") or []),
                       "scopes": scp.split() if isinstance(scp, str) else [], "tokenVersion": claims.get("ver"),
                       "expiresOn": iso_from_epoch(claims.get("exp"))}
            return (Check("token", True, f"got a token for {claims.get('aud')} with the stored {label}"), summary,
                    result.token)
        return self._refusal(result, kind, young), {}, None

    @staticmethod
    def _refusal(result: TokenResult, kind: str, young: bool) -> Check:
        """What a token endpoint error means for this registration (matched on AADSTS codes, not text)."""
        code = f"AADSTS{result.code}" if result.code else result.error
        label = CREDENTIAL_LABEL[kind]
        if result.code == EXPIRED_SECRET:
            return Check("client secret", False, f"the client secret has expired ({code}); rotate the credential",
                         aadsts=result.code)
        if result.code == NOT_ACCEPTED[kind]:
            if young:
                detail = f"Entra ID does not accept the new {label} yet ({code})"
            elif kind == "secret":
                detail = (f"the stored secret is not accepted ({code}): the value in Key Vault matches no current "
                          "credential of the app; rotate the credential")
            else:  # Entra gives one code for an unknown and an expired certificate
                detail = (f"the stored certificate is not accepted ({code}): it matches no current certificate "
                          "of the app or has expired; rotate the credential")
            return Check(label, False, detail, propagating=True, aadsts=result.code)
        if result.code in PROPAGATION_CODES:
            return Check("token", False, "Entra ID does not know the application or its service principal "
                                         f"({code})", propagating=True, aadsts=result.code)
        return Check("token", False, f"Entra ID refused the token request: {code} ({result.error})",
                     aadsts=result.code)

    def _grant_check(self, view: dict, target, resource: dict, sp_id: str | None, *,
                     roles: list[str] | None) -> Check:
        """Service clients: the app role (open-source server) or the Azure role on the service (managed)."""
        access = view.get("access") or "reader"
        if isinstance(target, ManagedTarget):
            role_id = MANAGED_ACCESS_ROLES[access]
            role = f"{_ROLE_NAMES.get(role_id, 'role')} ({role_id})"
            found = sp_id and any(
                str((a.get("properties") or {}).get("roleDefinitionId", "")).lower().endswith("/" + role_id)
                for a in self.rbac.list_for_principal(target.resourceId, sp_id))
            return Check("Azure role assignment", bool(found),
                         f"the service principal holds {role} on the DICOM service" if found else
                         f"the service principal has no Azure role assignment {role} on {target.resourceId}",
                         propagating=True)
        role = OSS_ACCESS_ROLES[access]
        if roles is None:  # no token to look at: read the assignments instead
            role_id = {r.get("value"): r.get("id") for r in resource.get("appRoles") or []}.get(role)
            held = bool(sp_id) and any(a.get("resourceId") == resource["id"] and a.get("appRoleId") == role_id
                                       for a in self.graph.list_app_role_assignments(sp_id))
        else:  # a role the server's roles.json (returned with the resource registration) grants this access
            held = any(oss_role_grants(r, access) for r in roles)
        where = "the token carries" if roles is not None else "the service principal holds"
        return Check("app role", held,
                     f"{where} the app role {role}, which the server's roles.json grants {access} access" if held else
                     f"the app role {role} is missing: the service principal has no assignment of {role} on the "
                     f"DICOM resource app {resource['appId']}", propagating=True)

    def _data_plane_check(self, view: dict, target: ManagedTarget | OssTarget, access_token: str) -> Check:
        """One QIDO-RS search with the registration's own token. A 403 while the registration is young is
        Azure RBAC (or the server's role mapping) still propagating; later it names the role that is missing."""
        base = target.base_url
        status = self.dicomweb.search_studies(base, access_token)
        if status in (200, 204):
            return Check("data plane", True, f"QIDO-RS GET {base}/studies?limit=1 answered {status}")
        if status == 401:
            return Check("data plane", False, f"the DICOM service at {base} does not accept the token (401): it "
                                              "expects another audience, issuer or tenant; check the DICOM target's "
                                              "url and, for an open-source server, its Audience and Authority")
        access = view.get("access") or "reader"
        if isinstance(target, ManagedTarget):
            role_id = MANAGED_ACCESS_ROLES[access]
            role = f"the Azure role {_ROLE_NAMES.get(role_id, 'role')} ({role_id}) on {target.resourceId}"
        else:
            role = f"the app role {OSS_ACCESS_ROLES[access]} in the server's roles.json"
        return Check("data plane", False, f"the DICOM service at {base} refuses the token's search (403): "
                                          f"{role} is missing or has not applied yet", propagating=True)

    def _delegated_checks(self, view: dict, app: dict, target, resource: dict, sp_id: str | None) -> list[Check]:
        """Public and confidential clients: redirect URIs, the declared permission and admin consent."""
        checks = [self._redirect_check(view, app)]
        scope_value = MANAGED_DELEGATED_SCOPE if isinstance(target, ManagedTarget) else OSS_DELEGATED_SCOPE
        scope_id = {s.get("value"): s.get("id") for s in resource.get("oauth2PermissionScopes") or []}.get(scope_value)
        declared = any(
            entry.get("resourceAppId") == resource["appId"]
            and any(a.get("id") == scope_id and a.get("type") == "Scope" for a in entry.get("resourceAccess") or [])
            for entry in app.get("requiredResourceAccess") or [])
        checks.append(Check("requiredResourceAccess", declared,
                            f"the app declares the delegated permission {scope_value} on {resource['appId']}"
                            if declared else
                            f"the app's requiredResourceAccess does not name {scope_value} on the DICOM "
                            f"resource {resource['appId']}"))
        if self.settings.grant_admin_consent:
            consented = any(
                grant.get("resourceId") == resource["id"] and grant.get("consentType") == "AllPrincipals"
                and scope_value in (grant.get("scope") or "").split()
                for grant in (self.graph.list_grants(sp_id) if sp_id else []))
            checks.append(Check("admin consent", consented,
                                f"tenant-wide consent to {scope_value} is granted" if consented else
                                f"no tenant-wide admin consent (oauth2PermissionGrant) to {scope_value} on the "
                                "DICOM resource; a requester's client gets it from an administrator (or with "
                                "REQUESTER_ADMIN_CONSENT)", propagating=True))
        return checks

    @staticmethod
    def _redirect_check(view: dict, app: dict) -> Check:
        platform = view.get("platform") or "web"
        fields = mf.PLATFORM_FIELD
        uris = set((app.get(fields[platform]) or {}).get("redirectUris") or [])
        elsewhere = {uri for other, name in fields.items() if other != platform
                     for uri in (app.get(name) or {}).get("redirectUris") or []}
        if not uris:
            return Check("redirect URIs", False, f"no redirect URI is registered on the {platform} platform")
        if uris & elsewhere:
            return Check("redirect URIs", False, f"{', '.join(sorted(uris & elsewhere))} is also registered on "
                                                 f"another platform than {platform}")
        return Check("redirect URIs", True, f"{len(uris)} redirect URI(s) on the {platform} platform")

    def _resource_checks(self, app: dict) -> list[Check]:
        """The open-source server's API registration: what its clients and the server rely on."""
        sp = self.graph.get_service_principal(app["appId"])
        roles = {r.get("value") for r in app.get("appRoles") or []
                 if r.get("isEnabled") and "Application" in (r.get("allowedMemberTypes") or [])}
        scopes = {s.get("value") for s in (app.get("api") or {}).get("oauth2PermissionScopes") or []
                  if s.get("isEnabled")}
        missing_roles = sorted(set(OSS_ACCESS_ROLES.values()) - roles)
        return [
            Check("service principal", sp is not None, "the service principal exists" if sp else
                  f"no service principal for appId {app['appId']}", propagating=True),
            Check("identifier URI", bool(app.get("identifierUris")),
                  f"identifier URI {(app.get('identifierUris') or ['none'])[0]}"),
            Check("app roles", not missing_roles, "globalReader, globalWriter and globalAdmin are defined"
                  if not missing_roles else f"app roles missing or disabled: {', '.join(missing_roles)}"),
            Check("delegated scope", OSS_DELEGATED_SCOPE in scopes, f"{OSS_DELEGATED_SCOPE} is defined"
                  if OSS_DELEGATED_SCOPE in scopes else f"the {OSS_DELEGATED_SCOPE} scope is missing or disabled"),
        ]

    # ------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _missing_resource(target: ManagedTarget | OssTarget) -> str:
        if isinstance(target, ManagedTarget):
            return f"the tenant has no service principal for {target.audience}"
        return f"the DICOM service's resource registration {target.resourceRegistration or target.resourceAppId!r} " \
               "does not exist"

    def _how_old(self, app: dict) -> str:
        """The registration's own age, and the newest credential's when that is what propagates now."""
        created = self._seconds_since([parse_time(app.get("createdDateTime"))])
        newest = self._seconds_since([parse_time(c.get("startDateTime"))
                                      for c in mf.our_passwords(app) + mf.our_certificates(app)])
        said = f"created {max(int(created), 0)} s ago" if created != float("inf") else "created at an unknown time"
        if newest < created:
            said += f"; its newest secret or certificate is {max(int(newest), 0)} s old"
        return said

    def _seconds_since(self, moments: list[datetime | None]) -> float:
        known = [moment for moment in moments if moment is not None]
        return (self._clock() - max(known)).total_seconds() if known else float("inf")

    def _age(self, app: dict) -> float:
        """Seconds since the newest change that Entra ID must propagate: the app's creation or its newest
        password or certificate. Unknown times count as old, so they never turn a failure into "not yet"."""
        return self._seconds_since([parse_time(app.get("createdDateTime"))] + [
            parse_time(c.get("startDateTime")) for c in mf.our_passwords(app) + mf.our_certificates(app)])
