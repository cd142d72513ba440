"""The directory object quota of this API's own identity: how much of it is used, and the refusal of a create
that cannot fit, before its first write.

Entra lets a principal without a directory role create at most 250 directory objects; its live objects and
those in deleted items count, and for 30 days after a permanent delete a quarter of each (Microsoft Entra
service limits and restrictions; "Deletion and recovery of applications FAQ", which names the error
Directory_QuotaExceeded). A registration costs two objects: its application and its service principal. This
API deletes for good (teardown.py), so what counts is what its identity owns plus what of its own sits in
deleted items after an interrupted teardown. The quarter weight of purged objects is invisible to it, so
Graph's own refusal gets the same problem (provision.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from . import manifest as mf
from .adapters.errors import UpstreamError
from .adapters.graph import GraphClient
from .problems import Conflict, Problem, QuotaExceeded, ValidationProblem
from .settings import Settings

log = logging.getLogger("registrations.quota")

OBJECTS_PER_REGISTRATION = 2  # application and service principal
WARN_SHARE = 0.8
ADVICE = ("delete registrations that are no longer needed (this API deletes for good, which frees their places, "
          "but for a quarter of each that still counts for 30 days); have an administrator permanently delete this identity's applications and service "
          "principals from deleted items; or assign the identity a directory role that lifts the limit, one "
          "with microsoft.directory/applications/create such as Application Administrator (Microsoft Entra "
          "docs: 'Remove limits on creating app registrations') and then set DIRECTORY_OBJECT_QUOTA to 0")


@dataclass(frozen=True)
class Usage:
    limit: int
    owned: int
    deleted: int | None = None  # None: not counted (far from the limit)

    @property
    def used(self) -> int:
        return self.owned + (self.deleted or 0)

    def fits(self) -> bool:
        return self.used + OBJECTS_PER_REGISTRATION <= self.limit

    def report(self) -> dict:
        """What the capacity report and the quota-exceeded problem say; limit 0 is no limit."""
        free = max(self.limit - self.used, 0) if self.limit else None
        return {"limit": self.limit or None, "used": self.used, "owned": self.owned, "deleted": self.deleted or 0,
                "free": free, "registrationsThatFit": None if free is None else free // OBJECTS_PER_REGISTRATION}


class ObjectQuota:
    def __init__(self, settings: Settings, *, graph: GraphClient, owner_id: Callable[[], str]) -> None:
        self.settings = settings
        self._graph = graph
        self._owner_id = owner_id

    @property
    def limited(self) -> bool:
        return self.settings.directory_object_quota > 0

    def owned(self) -> list[dict]:
        """Every application and service principal this API's identity owns (the count's live part), by id
        only: a create reads this beside its reservation, and whole applications would be hundreds of KB of
        JSON to parse for a number."""
        return list(self._graph.list_owned_objects(self._owner_id(), select="id"))

    def usage(self, owned: list[dict] | None = None) -> Usage:
        """Owned objects plus this API's applications and service principals in deleted items."""
        owned = self.owned() if owned is None else owned
        deleted = sum(len(self._graph.list_deleted(kind, mf.TAG_MARK)) for kind in ("application", "servicePrincipal"))
        return Usage(self.settings.directory_object_quota, len(owned), deleted)

    def check(self, owned: list[dict]) -> None:
        """Before a create's first write: refuse when a registration cannot fit; warn from 80 %. Deleted items
        are counted only near the limit (this API purges what it deletes, so they are rare)."""
        if not self.limited:
            return
        usage = Usage(self.settings.directory_object_quota, len(owned))
        if usage.used >= WARN_SHARE * usage.limit or not usage.fits():
            usage = self.usage(owned)
            log.warning("directory object quota: %d of %d used (%d owned, %d in deleted items)", usage.used,
                        usage.limit, usage.owned, usage.deleted or 0)
        if not usage.fits():
            raise exceeded(usage)


def exceeded(usage: Usage | None, cause: str | None = None) -> QuotaExceeded:
    """The problem for a create that cannot fit: counted here (`usage`), or refused by Graph (`cause`), which
    gives one code for the identity's quota and the tenant's (Entra service limits: 50,000 directory objects,
    300,000 once the tenant has a verified domain)."""
    if usage is None:
        said = f"{cause}: " if cause else ""
        detail = (f"{said}the API's identity has used up its directory object quota (Entra allows a principal "
                  "without a directory role 250, deleted objects included), or the tenant its own (50,000 "
                  "directory objects, 300,000 with a verified domain: an administrator frees or raises that one)")
        return QuotaExceeded(f"{detail}; {ADVICE}", needed=OBJECTS_PER_REGISTRATION)
    detail = (f"the API's identity has created {usage.used} of the {usage.limit} directory objects Entra allows "
              f"a principal without a directory role (objects in deleted items count); a registration needs "
              f"{OBJECTS_PER_REGISTRATION}")
    return QuotaExceeded(f"{detail}; {ADVICE}", quota=usage.report(), needed=OBJECTS_PER_REGISTRATION)


# Entra's other limits a write can meet (Microsoft Entra service limits and restrictions), told apart by the
# Graph call that met them, with what the caller can do about each.
OWNERS_LIMIT, ASSIGNMENTS_LIMIT = 100, 1500
# The identifier URI restrictions of an app management policy (identifierUriConfiguration), as Graph names them
# in an error's details, and what each allows.
IDENTIFIER_URI_RULES = {
    "nonDefaultUriAddition": "only api://{appId} or api://{tenantId}/{appId}",
    "uriAdditionWithoutUniqueTenantIdentifier": "only URIs that hold the tenant id, the appId or a verified domain",
}


def entra_limit(exc: BaseException) -> Problem | None:
    """The problem for a Graph refusal that is one of Entra's per-object limits, or None.

    - 403 Directory_QuotaExceeded on adding an owner: at most 100 owners per object;
    - Directory_QuotaExceeded on an app role assignment: at most 1,500 per principal (a sign-in group assigned
      to many applications reaches it);
    - Directory_ResourceSizeExceeded: the object would be larger than Entra stores (too many redirect URIs or
      certificates)."""
    if not isinstance(exc, UpstreamError) or exc.service != "graph":
        return None
    if exc.code == "Directory_ResourceSizeExceeded":
        return ValidationProblem(
            "Entra refused the application as too large (Directory_ResourceSizeExceeded): send fewer or shorter "
            "redirect URIs, or let superseded certificates be removed before adding more",
            errors=[{"loc": ["redirectUris"], "msg": "the application would exceed Entra's object size limit"}],
            upstream=exc.summary())
    if exc.status == 400 and set(exc.details) & set(IDENTIFIER_URI_RULES):
        rule = next(d for d in exc.details if d in IDENTIFIER_URI_RULES)
        return ValidationProblem(
            f"the tenant's app management policy refuses this identifier URI ({rule}: "
            f"{IDENTIFIER_URI_RULES[rule]}): leave identifierUri out for the default api://{{tenantId}}/{{appId}}, "
            "which every restriction allows", errors=[{"loc": ["identifierUri"], "msg": f"refused by {rule}"}],
            upstream=exc.summary())
    if exc.code != "Directory_QuotaExceeded":
        return None
    if exc.operation == "addOwner":
        return ValidationProblem(
            f"Entra allows at most {OWNERS_LIMIT} owners on an application or service principal "
            "(Directory_QuotaExceeded): name fewer owners, or have an administrator remove owners it no longer "
            "needs", errors=[{"loc": ["owners"], "msg": f"more than Entra's {OWNERS_LIMIT} owners"}],
            upstream=exc.summary())
    if exc.operation == "createAppRoleAssignment":
        return Conflict(
            f"a principal this registration assigns (a sign-in group, or its own service principal) already "
            f"holds Entra's maximum of {ASSIGNMENTS_LIMIT} app role assignments (Directory_QuotaExceeded): use "
            "another group in signInGroups, or have an administrator remove assignments it no longer needs",
            upstream=exc.summary())
    return None
