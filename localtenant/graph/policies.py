"""The tenant default app management policy (Graph v1.0 `tenantAppManagementPolicy`, read at
`GET /policies/defaultAppManagementPolicy`) and its enforcement on credential writes. No HTTP.

Shape and defaults from the "Get tenantAppManagementPolicy" example and the resource pages
(`passwordCredentialConfiguration`, `keyCredentialConfiguration`): disabled and empty by default; each
restriction has a `restrictionType`, a `maxLifetime` (ISO 8601 duration) for the lifetime types, a
`restrictForAppsCreatedAfterDateTime` (null: every application) and a `state` (`enabled` unless said).
A refused write is 400 `CredentialInvalidLifetimeAsPerAppPolicy` "Credential lifetime exceeds the max value
allowed as per assigned policy '{id}'." with `details: [{code: InvalidKeyEndDate, message: <same>, target:
EndDate}]` (the full body as OfficeDev/microsoft-365-agents-toolkit issue 10998 quotes it; the code:
Microsoft's Teams Toolkit matches it; KelvinTegelaar/CIPP-API PR 1970), or `CredentialTypeNotAllowedAsPerAppPolicy` for a
`passwordAddition` block. The v1.0 configuration has no restriction for federated identity credentials, so
those are never refused by it.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from .backend import GraphBackend
from .exceptions import GraphError, bad_request
from .objects import iso, parse_iso

TABLE = "policies"
DEFAULT_ID = "00000000-0000-0000-0000-000000000000"
PASSWORD_TYPES = {"passwordAddition", "passwordLifetime", "symmetricKeyAddition", "symmetricKeyLifetime",
                  "customPasswordAddition"}
KEY_TYPES = {"asymmetricKeyLifetime", "trustedCertificateAuthority"}
LIFETIME_TYPES = {"passwordLifetime", "symmetricKeyLifetime", "asymmetricKeyLifetime"}
# Days, hours, minutes, seconds (and weeks): years and months have no fixed length, so they are refused.
_DURATION = re.compile(r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?"
                       r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


def duration_seconds(text: Any) -> float:
    m = _DURATION.match(text) if isinstance(text, str) else None
    if m is None or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"maxLifetime must be an ISO 8601 duration in weeks, days, hours, minutes and seconds "
                         f"(for example P90D), not {text!r}")
    parts = {k: float(v or 0) for k, v in m.groupdict().items()}
    return parts["w"] * 604800 + parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


URI_RESTRICTIONS = ("nonDefaultUriAddition", "uriAdditionWithoutUniqueTenantIdentifier")
URI_RESTRICTION_KEYS = {"state", "restrictForAppsCreatedAfterDateTime", "excludeAppsReceivingV2Tokens", "excludeSaml"}


def _uri_restrictions(value: Any, where: str) -> dict[str, Any]:
    """applicationRestrictions.identifierUris (identifierUriConfiguration): each of its two restrictions an
    identifierUriRestriction (state, restrictForAppsCreatedAfterDateTime, excludeAppsReceivingV2Tokens,
    excludeSaml)."""
    if not isinstance(value, dict) or set(value) - set(URI_RESTRICTIONS):
        raise ValueError(f"{where} takes {' and '.join(URI_RESTRICTIONS)} only")
    out: dict[str, Any] = {}
    for name, r in value.items():
        if not isinstance(r, dict) or set(r) - URI_RESTRICTION_KEYS:
            raise ValueError(f"{where}.{name} takes {sorted(URI_RESTRICTION_KEYS)} only")
        if r.get("state", "enabled") not in ("enabled", "disabled"):
            raise ValueError(f"{where}.{name}: state must be enabled or disabled")
        for flag in ("excludeAppsReceivingV2Tokens", "excludeSaml"):
            if not isinstance(r.get(flag, False), bool):
                raise ValueError(f"{where}.{name}: {flag} must be true or false")
        after = r.get("restrictForAppsCreatedAfterDateTime")
        try:
            after = _normal(after) if after is not None else None
        except GraphError:
            raise ValueError(f"{where}.{name}: restrictForAppsCreatedAfterDateTime must be an ISO 8601 time") from None
        out[name] = {"state": r.get("state", "enabled"), "restrictForAppsCreatedAfterDateTime": after,
                     "excludeAppsReceivingV2Tokens": r.get("excludeAppsReceivingV2Tokens", False),
                     "excludeSaml": r.get("excludeSaml", False)}
    return out


def default_policy() -> dict[str, Any]:
    return {"id": DEFAULT_ID, "displayName": "Default app management tenant policy",
            "description": "Default tenant policy that enforces app management restrictions on applications and "
                           "service principals. To apply policy to targeted resources, create a new policy under "
                           "appManagementPolicies collection.",
            "isEnabled": False,
            "applicationRestrictions": {"passwordCredentials": [], "keyCredentials": []},
            "servicePrincipalRestrictions": {"passwordCredentials": [], "keyCredentials": []}}


def _restrictions(value: Any, allowed: set[str], where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list")
    out, seen = [], set()
    for r in value:
        if not isinstance(r, dict) or r.get("restrictionType") not in allowed:
            raise ValueError(f"{where}: restrictionType must be one of {sorted(allowed)}")
        unknown = set(r) - {"restrictionType", "maxLifetime", "restrictForAppsCreatedAfterDateTime", "state",
                            "certificateBasedApplicationConfigurationIds"}
        if unknown:
            raise ValueError(f"{where}: unknown properties {sorted(unknown)}")
        if r["restrictionType"] in seen:
            raise ValueError(f"{where}: each restrictionType can be used only once per policy")
        seen.add(r["restrictionType"])
        if r["restrictionType"] in LIFETIME_TYPES:
            duration_seconds(r.get("maxLifetime"))
        if r.get("restrictForAppsCreatedAfterDateTime") is not None:
            try:
                r = {**r, "restrictForAppsCreatedAfterDateTime": _normal(r["restrictForAppsCreatedAfterDateTime"])}
            except GraphError:
                raise ValueError(f"{where}: restrictForAppsCreatedAfterDateTime must be an ISO 8601 time") from None
        if r.get("state", "enabled") not in ("enabled", "disabled"):
            raise ValueError(f"{where}: state must be enabled or disabled")
        out.append({"restrictionType": r["restrictionType"], "maxLifetime": r.get("maxLifetime"),
                    "restrictForAppsCreatedAfterDateTime": r.get("restrictForAppsCreatedAfterDateTime"),
                    "state": r.get("state", "enabled"), **({"certificateBasedApplicationConfigurationIds":
                    r["certificateBasedApplicationConfigurationIds"]} if "certificateBasedApplicationConfigurationIds"
                    in r else {})})
    return out


class Policies:
    def __init__(self, backend: GraphBackend) -> None:
        self.backend = backend

    def default(self) -> dict[str, Any]:
        stored = self.backend.store.get(TABLE, DEFAULT_ID)
        return copy.deepcopy(stored) if stored is not None else default_policy()

    def set_default(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The admin endpoint's write: the properties given replace the stored ones (Graph's PATCH of this
        policy works the same way); checked as strictly as Graph checks them."""
        if not isinstance(changes, dict):
            raise ValueError("the policy must be a JSON object")
        unknown = set(changes) - {"displayName", "description", "isEnabled", "applicationRestrictions",
                                  "servicePrincipalRestrictions"}
        if unknown:
            raise ValueError(f"unknown policy properties {sorted(unknown)}")
        policy = self.default()
        for side in ("applicationRestrictions", "servicePrincipalRestrictions"):
            if side in changes:
                given = changes[side] or {}
                takes = {"passwordCredentials", "keyCredentials"} | (
                    {"identifierUris"} if side == "applicationRestrictions" else set())
                if set(given) - takes:
                    raise ValueError(f"{side} takes {', '.join(sorted(takes))} only")
                policy[side] = {
                    "passwordCredentials": _restrictions(given.get("passwordCredentials", []), PASSWORD_TYPES,
                                                         f"{side}.passwordCredentials"),
                    "keyCredentials": _restrictions(given.get("keyCredentials", []), KEY_TYPES,
                                                    f"{side}.keyCredentials")}
                if "identifierUris" in given:  # shown only once set, as the documented example has it
                    policy[side]["identifierUris"] = _uri_restrictions(given["identifierUris"],
                                                                       f"{side}.identifierUris")
        for key in ("displayName", "description", "isEnabled"):
            if key in changes:
                policy[key] = changes[key]
        if not isinstance(policy["isEnabled"], bool):
            raise ValueError("isEnabled must be true or false")
        with self.backend.store.lock:
            self.backend.store.put(TABLE, DEFAULT_ID, policy)
        return self.default()

    # -- enforcement ---------------------------------------------------------------------------------------
    def _active(self, app: dict[str, Any], collection: str) -> dict[str, dict[str, Any]]:
        policy = self.default()
        if not policy["isEnabled"]:
            return {}
        created = app.get("createdDateTime") or ""
        out = {}
        for r in policy["applicationRestrictions"][collection]:
            after = r.get("restrictForAppsCreatedAfterDateTime")
            if r.get("state", "enabled") == "enabled" and (not after or created >= after):
                out[r["restrictionType"]] = r
        return out

    def check_password(self, app: dict[str, Any], lifetime_seconds: float) -> None:
        active = self._active(app, "passwordCredentials")
        if "passwordAddition" in active:
            raise bad_request(f"Password credentials are not allowed as per assigned policy {DEFAULT_ID}.",
                              code="CredentialTypeNotAllowedAsPerAppPolicy")
        self._check_lifetime(active.get("passwordLifetime"), lifetime_seconds)

    def check_identifier_uris(self, app: dict[str, Any], uris: list[str]) -> None:
        """New identifier URIs on an application, against applicationRestrictions.identifierUris ("Restrictions
        on identifier URIs of Microsoft Entra applications"; identifierUriConfiguration): with
        nonDefaultUriAddition only api://{appId} or api://{tenantId}/{appId}; with
        uriAdditionWithoutUniqueTenantIdentifier only URIs holding the tenant id or the appId as a whole host
        or path segment (the local tenant has no verified domain). URIs the application has already are not
        new; an application receiving v2 tokens is exempt when the restriction says so."""
        policy = self.default()
        rules = policy["applicationRestrictions"].get("identifierUris") or {}
        added = [u for u in uris if u.lower() not in {x.lower() for x in app.get("identifierUris") or []}]
        if not policy["isEnabled"] or not rules or not added:
            return
        created = app.get("createdDateTime") or ""
        v2 = (app.get("api") or {}).get("requestedAccessTokenVersion") == 2
        tenant, app_id = self.backend.tenant_id.lower(), str(app.get("appId", "")).lower()
        for uri in added:
            segments = [p for p in re.split(r"[/:]+", uri.lower().split("://", 1)[-1]) if p]
            for name in URI_RESTRICTIONS:
                r = rules.get(name)
                if r is None or r["state"] != "enabled" or (r["excludeAppsReceivingV2Tokens"] and v2):
                    continue
                after = r["restrictForAppsCreatedAfterDateTime"]
                if after and created < after:
                    continue
                if name == "nonDefaultUriAddition":
                    allowed = uri.lower() in (f"api://{app_id}", f"api://{tenant}/{app_id}")
                else:
                    allowed = tenant in segments or app_id in segments
                if not allowed:
                    message = (f"The identifier URI '{uri}' is not allowed by the app management policy "
                               f"'{policy['id']}' ({name}).")
                    raise bad_request(message, details=[{"code": name, "message": message,
                                                         "target": "identifierUris"}])

    def check_key(self, app: dict[str, Any], lifetime_seconds: float) -> None:
        self._check_lifetime(self._active(app, "keyCredentials").get("asymmetricKeyLifetime"), lifetime_seconds)

    @staticmethod
    def _check_lifetime(restriction: dict[str, Any] | None, lifetime_seconds: float) -> None:
        if restriction is not None and lifetime_seconds > duration_seconds(restriction["maxLifetime"]):
            message = f"Credential lifetime exceeds the max value allowed as per assigned policy '{DEFAULT_ID}'."
            raise bad_request(message, code="CredentialInvalidLifetimeAsPerAppPolicy",
                              details=[{"code": "InvalidKeyEndDate", "message": message, "target": "EndDate"}])


def _normal(value: str) -> str:
    """restrictForAppsCreatedAfterDateTime in the form createdDateTime uses (seconds, Z), for comparing."""
    return iso(parse_iso(value, "restrictForAppsCreatedAfterDateTime"))
