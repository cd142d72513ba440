"""The tenant's app management policy, as it limits the credentials this API adds.

Entra refuses a credential that outlives the tenant default app management policy (`passwordLifetime` for
secrets, `asymmetricKeyLifetime` for certificates) with 400 `CredentialInvalidLifetimeAsPerAppPolicy`. So the
limit is read first (`GET /policies/defaultAppManagementPolicy`, application permission Policy.Read.All, the
least privileged one Microsoft documents) and a requested lifetime beyond it is a 422 that names it; where the
lifetime was not asked for (the default, a rotation, the sweep) it is shortened to the limit. Without the
permission the policy cannot be read, and Graph's refusal itself becomes the 422 (without the number).
Federated credentials have no lifetime and no restriction in the v1.0 policy.

The policy is an administrator's tenant-wide setting that changes rarely: it is kept for CACHE_SECONDS per
worker (a create then costs no read of it), so a change reaches this API within five minutes; a credential
Graph refuses in between still becomes the 422.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from datetime import datetime

from .adapters.errors import UpstreamError
from .adapters.graph import GraphClient
from .problems import ValidationProblem
from .saga import scoped, submit
from .times import parse_time

RESTRICTIONS = {"secret": ("passwordCredentials", "passwordLifetime"),
                "certificate": ("keyCredentials", "asymmetricKeyLifetime")}
# Graph's refusals of a credential by the policy (error.code).
REFUSALS = ("CredentialInvalidLifetimeAsPerAppPolicy", "CredentialTypeNotAllowedAsPerAppPolicy")
# The policy as read once for the work in progress (a create), started beside that work's first reads.
_read_ahead: ContextVar[Future[dict | None] | None] = ContextVar("policy_read_ahead", default=None)
CACHE_SECONDS = 300.0
_DURATION = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def max_days(duration: str | None) -> int | None:
    """Whole days an ISO 8601 `maxLifetime` allows (P90D -> 90, PT36H -> 1); None when unreadable."""
    m = _DURATION.match(duration or "")
    if m is None or duration in ("P", "PT"):
        return None
    w, d, h, mins, s = (float(x or 0) for x in m.groups())
    return int((w * 604800 + d * 86400 + h * 3600 + mins * 60 + s) // 86400)


class CredentialPolicy:
    def __init__(self, graph: GraphClient) -> None:
        self._graph = graph
        self._lock = threading.Lock()
        self._kept: tuple[float, dict | None] | None = None  # (when read, the policy)

    def read_ahead(self, executor: Executor) -> AbstractContextManager[None]:
        """Within the block the policy is read once, starting now, so its round trip overlaps the block's
        other reads instead of standing before the first credential write; not at all while it is kept."""
        if self._fresh() is not None:
            return nullcontext()
        return scoped(_read_ahead, submit(executor, self._fetch))

    def _fresh(self) -> tuple[float, dict | None] | None:
        with self._lock:
            kept = self._kept
        return kept if kept is not None and time.monotonic() - kept[0] < CACHE_SECONDS else None

    def _fetch(self) -> dict | None:
        policy = self._graph.get_default_app_management_policy()
        with self._lock:
            self._kept = (time.monotonic(), policy)
        return policy

    def _read(self) -> dict | None:
        ahead = _read_ahead.get()
        if ahead is not None:
            return ahead.result()
        kept = self._fresh()
        return kept[1] if kept is not None else self._fetch()

    def limit_days(self, kind: str, *, created: datetime | None) -> int | None:
        """The longest lifetime in days the tenant allows for a credential of `kind` on an app created at
        `created` (None: one being created now), or None when there is no limit or it cannot be read."""
        if kind not in RESTRICTIONS:
            return None
        policy = self._read()
        if not policy or not policy.get("isEnabled"):
            return None
        collection, restriction_type = RESTRICTIONS[kind]
        for r in (policy.get("applicationRestrictions") or {}).get(collection) or []:
            if r.get("restrictionType") != restriction_type or r.get("state", "enabled") != "enabled":
                continue
            after = parse_time(r.get("restrictForAppsCreatedAfterDateTime"))
            if after is None or created is None or created >= after:
                return max_days(r.get("maxLifetime"))
        return None

    def check_requested(self, kind: str, days: int | None, field: list[str]) -> None:
        """A lifetime the caller asked for that the policy does not allow: 422 naming the limit."""
        limit = self.limit_days(kind, created=None) if days else None
        if limit is not None and days > limit:
            raise ValidationProblem(
                f"credential.lifetimeDays is {days}; this tenant's app management policy allows a {kind} at most "
                f"{limit} days: ask for {limit} or fewer",
                errors=[{"loc": field, "msg": f"longer than the tenant's policy allows ({limit} days)"}],
                maxLifetimeDays=limit)

    def allowed(self, kind: str, days: int, *, created: datetime | None) -> int:
        """`days`, shortened to the policy's limit (for lifetimes nobody asked for explicitly)."""
        limit = self.limit_days(kind, created=created)
        return days if limit is None else max(1, min(days, limit))


def refused(exc: BaseException) -> ValidationProblem | None:
    """Graph's own refusal of a credential by the policy (when the policy could not be read first)."""
    if isinstance(exc, UpstreamError) and exc.status == 400 and exc.code in REFUSALS:
        return ValidationProblem(
            "the tenant's app management policy refuses this credential "
            f"({exc.code}): ask for a shorter credential.lifetimeDays, or grant this API's identity "
            "Policy.Read.All so it can name the limit",
            errors=[{"loc": ["credential", "lifetimeDays"], "msg": "refused by the tenant's policy"}],
            upstream=exc.summary())
    return None
