"""A single-page viewer registered on a managed DICOM service needs the service to allow its origin (CORS):
with DICOM_CORS_FOR_SPA on, a public SPA registration adds its redirect URIs' origins to the service's
`properties.corsConfiguration` through ARM ("Configure cross-origin resource sharing" in the DICOM service
docs), with the methods and headers a viewer sends. The configuration is merged, never replaced: a read, a
merge and a write guarded by the etag (a 412 means someone wrote in between: read and merge again). Deleting
a registration removes an origin only when no other registration of this API needs it; origins the API did not
add are never removed.

The function app's identity then needs `Microsoft.HealthcareApis/workspaces/dicomservices/read` and `/write` on
the DICOM service: no built-in role is narrower than Contributor, so a custom role with those two actions is the
least privilege (docs/deploying.md).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from . import manifest as mf
from .adapters.dicomservice import DicomServiceClient
from .kinds import PLANS, Plan
from .saga import eventually
from .settings import ManagedTarget, Settings

# What OHIF and dicomweb-client send from a browser: searches and retrievals (GET), stores (POST), with the
# bearer token and DICOM media types.
VIEWER_METHODS = ("GET", "POST", "OPTIONS")
VIEWER_HEADERS = ("authorization", "accept", "content-type")


def origins_of(redirect_uris: list[str]) -> list[str]:
    found: list[str] = []
    for uri in redirect_uris:
        parts = urlsplit(uri)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        if origin not in found:
            found.append(origin)
    return found


def _stale(exc) -> bool:
    """Someone wrote the resource between our read and our write."""
    return exc.status == 412


def _merged(have: list[str] | None, wanted: tuple[str, ...] | list[str], *, fold: bool) -> list[str]:
    out = list(have or [])
    seen = {v.lower() if fold else v for v in out}
    out += [v for v in wanted if (v.lower() if fold else v) not in seen and "*" not in seen]
    return out


class Cors:
    def __init__(self, settings: Settings, services: DicomServiceClient,
                 owned: Callable[[], list[dict]]) -> None:
        self.settings, self._services, self._owned = settings, services, owned

    def applies(self, plan: Plan | None, platform: str | None, target: object) -> bool:
        """Whether a registration of this kind (None: a kind this API does not know) on this platform and
        target has its origins in the service's CORS configuration."""
        return (self.settings.cors_for_spa and plan is not None and platform in plan.browser_platforms
                and isinstance(target, ManagedTarget))

    def allow(self, resource_id: str, origins: list[str]) -> list[str]:
        """Adds the origins (and a viewer's methods and headers) the service does not allow yet; returns the
        origins it added."""
        def attempt() -> list[str]:
            resource, etag = self._services.get(resource_id)
            cors = resource.setdefault("properties", {}).get("corsConfiguration") or {}
            added = [o for o in origins if o not in (cors.get("origins") or []) and "*" not in (cors.get("origins") or [])]
            methods = _merged(cors.get("methods"), VIEWER_METHODS, fold=True)
            headers = _merged(cors.get("headers"), VIEWER_HEADERS, fold=True)
            if not added and methods == list(cors.get("methods") or []) and headers == list(cors.get("headers") or []):
                return []
            cors.update(origins=list(cors.get("origins") or []) + added, methods=methods, headers=headers)
            resource["properties"]["corsConfiguration"] = cors
            self._services.put(resource_id, resource, etag)
            return added
        return eventually(attempt, lagging=_stale)

    def withdraw(self, resource_id: str, origins: list[str], *, leaving: str) -> list[str]:
        """Removes those of `origins` that no registration of this API but `leaving` (an appId) needs;
        returns what it removed."""
        if not origins:
            return []
        still = self.needed(resource_id, excluding=leaving)

        def attempt() -> list[str]:
            resource, etag = self._services.get(resource_id)
            cors = (resource.get("properties") or {}).get("corsConfiguration") or {}
            gone = [o for o in cors.get("origins") or [] if o in origins and o not in still]
            if not gone:
                return []
            cors["origins"] = [o for o in cors["origins"] if o not in gone]
            self._services.put(resource_id, resource, etag)
            return gone
        return eventually(attempt, lagging=_stale)

    def needed(self, resource_id: str, *, excluding: str) -> set[str]:
        """The origins of every SPA registration of this API (but the app `excluding`) on the DICOM service
        with this resource id."""
        names = {name for name, target in self.settings.dicom_services.items()
                 if isinstance(target, ManagedTarget) and target.resourceId.lower() == resource_id.lower()}
        needed: set[str] = set()
        for app in self._owned():
            if app.get("appId") == excluding:
                continue
            tags = mf.tag_values(app)
            plan = PLANS.get(tags.get("type", ""))
            if (mf.TAG_MARK in (app.get("tags") or []) and plan is not None and "spa" in plan.browser_platforms
                    and tags.get("target") in names):
                needed.update(origins_of((app.get("spa") or {}).get("redirectUris") or []))
        return needed
