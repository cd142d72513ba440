"""A single-page viewer registered on a managed DICOM service needs the service to allow its origin (CORS):
with DICOM_CORS_FOR_SPA on, a public SPA registration adds its redirect URIs' origins to the service's
`properties.corsConfiguration` through ARM ("Configure cross-origin resource sharing" in the DICOM service
docs), with the methods and headers a viewer sends. The configuration is merged, never replaced: a read, a
merge and a write. A write to the service through ARM is a long-running operation with no If-Match
(healthcare-apis 2024-03-31), so the API serialises its own writes: one at a time per service in this process
(a lock), the write polled to its end (the new origins work only then), then read back and merged again if
another writer (another instance of this API) replaced what it wrote; a 409 (another update still running)
is waited out. Deleting a registration, or a change that drops a redirect URI, removes an origin only when no
other registration of this API needs it; origins the API did not add are never removed.

The function app's identity then needs `Microsoft.HealthcareApis/workspaces/dicomservices/read` and `/write` on
the DICOM service: no built-in role is narrower than Contributor, so a custom role with those two actions is the
least privilege (docs/deploying.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from . import manifest as mf
from .adapters.dicomservice import DicomServiceClient
from .adapters.errors import UpstreamError
from .kinds import PLANS, Plan
from .saga import eventually
from .settings import ManagedTarget, Settings

# What OHIF and dicomweb-client send from a browser: searches and retrievals (GET), stores (POST), with the
# bearer token and DICOM media types.
VIEWER_METHODS = ("GET", "POST", "OPTIONS")
VIEWER_HEADERS = ("authorization", "accept", "content-type")
# What ARM answers about the service but a PUT does not set (DICOM Services - Create Or Update, 2024-03-31).
READ_ONLY = ("provisioningState", "serviceUrl", "privateEndpointConnections", "authenticationConfiguration",
             "eventState")


def origins_of(redirect_uris: list[str]) -> list[str]:
    found: list[str] = []
    for uri in redirect_uris:
        parts = urlsplit(uri)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        if origin not in found:
            found.append(origin)
    return found


REPLACED = "CorsReplaced"  # our write was replaced by another writer's before we read it back
_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def _busy(exc: UpstreamError) -> bool:
    """Another update of the service is still running (409), or another writer replaced ours: do it again."""
    return exc.status == 409


def _serialised(resource_id: str) -> threading.Lock:
    with _locks_lock:
        return _locks.setdefault(resource_id.lower(), threading.Lock())


def _cors(resource: dict) -> dict:
    return (resource.get("properties") or {}).get("corsConfiguration") or {}


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
        origins it added, once the service applies them."""
        def attempt() -> list[str]:
            resource = self._services.get(resource_id)
            cors = _cors(resource)
            have = cors.get("origins") or []
            added = [o for o in origins if o not in have and "*" not in have]
            methods = _merged(cors.get("methods"), VIEWER_METHODS, fold=True)
            headers = _merged(cors.get("headers"), VIEWER_HEADERS, fold=True)
            if not added and methods == list(cors.get("methods") or []) and headers == list(cors.get("headers") or []):
                return []
            cors.update(origins=list(have) + added, methods=methods, headers=headers)
            self._write(resource_id, resource, cors)
            if any(o not in (_cors(self._services.get(resource_id)).get("origins") or []) for o in origins):
                raise UpstreamError("arm", "putDicomService", 409, REPLACED, "another writer replaced the origins")
            return added
        return self._one_at_a_time(resource_id, attempt)

    def withdraw(self, resource_id: str, origins: list[str], *, leaving: str) -> list[str]:
        """Removes those of `origins` that no registration of this API but `leaving` (an appId) needs;
        returns what it removed."""
        if not origins:
            return []
        still = self.needed(resource_id, excluding=leaving)

        def attempt() -> list[str]:
            resource = self._services.get(resource_id)
            cors = _cors(resource)
            gone = [o for o in cors.get("origins") or [] if o in origins and o not in still]
            if not gone:
                return []
            cors["origins"] = [o for o in cors["origins"] if o not in gone]
            self._write(resource_id, resource, cors)
            if set(gone) & set(_cors(self._services.get(resource_id)).get("origins") or []):
                raise UpstreamError("arm", "putDicomService", 409, REPLACED, "another writer restored the origins")
            return gone
        return self._one_at_a_time(resource_id, attempt)

    def _write(self, resource_id: str, resource: dict, cors: dict) -> None:
        """PUT the resource with this CORS configuration: only what a PUT takes (not the read-only parts ARM
        answers with), polled to its end."""
        body = {key: resource[key] for key in ("location", "tags", "identity") if key in resource}
        properties = {k: v for k, v in (resource.get("properties") or {}).items() if k not in READ_ONLY}
        body["properties"] = {**properties, "corsConfiguration": cors}
        self._services.put(resource_id, body)

    def _one_at_a_time(self, resource_id: str, attempt: Callable[[], list[str]]) -> list[str]:
        with _serialised(resource_id):
            return eventually(attempt, lagging=_busy)

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
