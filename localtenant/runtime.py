"""The tenant's clock, call statistics and fault injection (docs/local-tenant.md, "Fault injection").

Faults are kept in memory only: a restart or `reset()` starts with none.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

SERVICES = ("entra", "identity", "graph", "keyvault", "arm", "dicom")


class Clock:
    """Wall time plus an offset that `advance_clock` moves forward; token lifetimes, secret expiry and
    replication delays are all measured on it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds


class Stats:
    def __init__(self) -> None:
        self._calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, operation: str) -> None:
        with self._lock:
            self._calls[operation] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": dict(sorted(self._calls.items())), "total": sum(self._calls.values())}

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()


def _whole(minimum: int, *, nullable: bool = False):
    def check(name: str, value: Any) -> Any:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be a whole number >= {minimum}" + (", or null for no limit"
                                                                                 if nullable else ""))
        return value
    return check


def _one_of(*allowed: Any):
    def check(name: str, value: Any) -> Any:
        if not any(type(value) is type(a) and value == a for a in allowed):  # no coercion: 1 is not True
            raise ValueError(f"{name} must be one of {list(allowed)}")
        return value
    return check


def _statuses(*allowed: int):
    def check(name: str, value: Any) -> Any:
        if not isinstance(value, list) or not value or not all(
                type(v) is int and v in allowed for v in value):
            raise ValueError(f"{name} must be a non-empty list of statuses among {list(allowed)}")
        return list(value)
    return check


class DirectorySettings:
    """How the directory behaves where Entra has a setting, or where its documented behaviour varies, and a test
    may want to choose (`PUT /_admin/settings`, `lt.set_settings`; docs/local-tenant.md, "Directory settings").
    Omitted keys take the defaults (Entra's, realistic behaviour on); `reset()` restores them all.

    - `directoryObjectQuota`: how many directory objects one principal without a directory role may create
      (Entra's service limits: 250); `null` lifts it, as a role with `microsoft.directory/applications/create`
      does.
    - `staleReadsMs`: for this long after an application or service principal is updated, app-only reads of it
      show the previous value of each property that changed (0: off, read-your-writes for everyone).
    - `usersCanRegisterApplications`: "Users can register applications" (default user permissions; on by
      default): a member user may create applications through Graph with a delegated token.
    - `accessTokenLifetimeSeconds`: how long the access tokens the token endpoint issues live (Entra's
      default is about an hour; "Configurable token lifetimes" lets a policy set 10 minutes to a day). Locally
      any whole number of seconds from 1, so a test sees a client renew its token in seconds.
    - `credentialWriteWindowMs`: a credential write on an application that arrives within this long after the
      previous one was made is refused as Directory_ConcurrencyViolation (as is one that overlaps it).
    - `concurrencyViolationStatuses`: the statuses Directory_ConcurrencyViolation comes with, in turn (409,
      503).
    - `uniqueNameConflictStatus`: how a uniqueName another application holds is refused: 400
      Request_BadRequest or 409 Request_MultipleObjectsWithSameKeyValue.
    - `dicomServiceUpdateMs`: how long a PUT of a DICOM service resource (a long-running operation) runs.
    - `tenantObjectQuota`, `ownersPerObject`, `appRoleAssignmentsPerPrincipal`, `objectSizeLimitBytes`: Entra's
      limits on directory objects in the tenant (50,000 without a verified domain), owners of one object (100),
      app role assignments one principal holds (1,500) and the size of one object.
    """

    SPEC: dict[str, tuple[Any, Any]] = {
        "directoryObjectQuota": (250, _whole(0, nullable=True)),
        "staleReadsMs": (0, _whole(0)),
        "usersCanRegisterApplications": (True, _one_of(True, False)),
        "accessTokenLifetimeSeconds": (3600, _whole(1)),
        "credentialWriteWindowMs": (500, _whole(0)),
        "concurrencyViolationStatuses": ([409, 503], _statuses(409, 503)),
        "uniqueNameConflictStatus": (400, _one_of(400, 409)),
        "dicomServiceUpdateMs": (1000, _whole(0)),
        "tenantObjectQuota": (50_000, _whole(0, nullable=True)),
        "ownersPerObject": (100, _whole(0)),
        "appRoleAssignmentsPerPrincipal": (1500, _whole(0)),
        "objectSizeLimitBytes": (500_000, _whole(0)),
    }
    DEFAULTS: dict[str, Any] = {key: default for key, (default, _) in SPEC.items()}

    def __init__(self) -> None:
        self.set({})

    def set(self, config: dict[str, Any]) -> dict[str, Any]:
        config = dict(config or {})
        unknown = set(config) - set(self.SPEC)
        if unknown:
            raise ValueError(f"unknown directory settings: {sorted(unknown)}")
        self._values = {key: check(key, config[key]) if key in config else default
                        for key, (default, check) in self.SPEC.items()}
        return self.get()

    def get(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, list) else v for k, v in self._values.items()}

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    @property
    def object_quota(self) -> int | None:
        return self._values["directoryObjectQuota"]

    @property
    def access_token_lifetime(self) -> int:
        return self._values["accessTokenLifetimeSeconds"]


WHEN = ("before", "after")
FAILURE_KEYS = {"operation", "nth", "status", "times", "when", "code", "retryAfter"}


class Issued:
    """Every secret value the tenant was given or handed out since it started — Key Vault secret values,
    addPassword secretTexts, access tokens — for tests that look for leaks (tests/e2e/test_no_secret_leaks).
    In memory only, never in state dumps or over HTTP; kept across `reset()`; the newest `limit` of each kind."""

    KINDS = ("secretValues", "passwords", "accessTokens")

    def __init__(self, limit: int = 20_000) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, deque[str]] = {kind: deque(maxlen=limit) for kind in self.KINDS}

    def add(self, kind: str, value: str) -> None:
        with self._lock:
            self._seen[kind].append(value)

    def snapshot(self) -> dict[str, list[str]]:
        with self._lock:
            return {kind: list(values) for kind, values in self._seen.items()}


@dataclass
class InjectedFault(Exception):
    """An injected error; each service renders it in its own error shape. Raised before the handler runs
    (`when` "before": nothing was done), or returned by `Faults.check` for the wrapper to answer after the
    handler has run and its work is committed (`when` "after": the answer was lost on the way back)."""
    status: int
    retry_after: int | None = None
    when: str = "before"
    code: str | None = None  # the service's error code to answer with, instead of the one for the status


class _Bucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, time.monotonic()

    def take(self) -> int | None:
        """None when a token was available, else the whole seconds to wait (at least 1)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return max(1, math.ceil((1 - self.tokens) / self.rate)) if self.rate > 0 else 60


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.set({})

    def set(self, config: dict[str, Any]) -> dict[str, Any]:
        config = dict(config or {})
        unknown = set(config) - {"latencyMs", "latencyMsByService", "latencyIncludesHandling", "throttle",
                                 "replicationDelayMs", "failures"}
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        by_service = dict(config.get("latencyMsByService") or {})
        if set(by_service) - set(SERVICES):
            raise ValueError(f"latencyMsByService keys must be among {SERVICES}")
        failures = []
        for f in config.get("failures") or []:
            if not {"operation", "nth", "status"} <= set(f) or int(f["nth"]) < 1:
                raise ValueError("a failure needs operation, nth (>= 1) and status")
            if set(f) - FAILURE_KEYS:
                raise ValueError(f"unknown failure settings: {sorted(set(f) - FAILURE_KEYS)}")
            when = f.get("when") or "before"
            if when not in WHEN:
                raise ValueError(f"a failure's when must be one of {WHEN}")
            if f.get("code") is not None and not isinstance(f["code"], str):
                raise ValueError("a failure's code must be a string")
            retry_after = f.get("retryAfter")
            if retry_after is not None and (type(retry_after) is not int or retry_after < 1
                                            or int(f["status"]) not in (429, 503)):
                raise ValueError("a failure's retryAfter is whole seconds (>= 1), for a 429 or 503")
            failures.append({"operation": f["operation"], "nth": int(f["nth"]), "status": int(f["status"]),
                             "times": None if f.get("times", 1) is None else int(f.get("times", 1)),
                             "when": when, "code": f.get("code"), "retryAfter": retry_after, "seen": 0})
        whole = config.get("latencyIncludesHandling", False)
        if type(whole) is not bool:
            raise ValueError("latencyIncludesHandling is true or false")
        throttle = config.get("throttle")
        with self._lock:
            self._config = {
                "latencyMs": float(config.get("latencyMs") or 0),
                "latencyIncludesHandling": whole,
                "latencyMsByService": {s: float(by_service.get(s) or 0) for s in SERVICES},
                "throttle": dict(throttle) if throttle else None,
                "replicationDelayMs": float(config.get("replicationDelayMs") or 0),
                "failures": failures,
            }
            self._buckets = {}
            if throttle:
                for service in throttle.get("services") or SERVICES:
                    self._buckets[service] = _Bucket(float(throttle.get("ratePerSecond", 10)),
                                                      float(throttle.get("burst", 10)))
        return self.get()

    def get(self) -> dict[str, Any]:
        with self._lock:
            out = dict(self._config)
            out["failures"] = [{k: v for k, v in f.items() if k != "seen"} for f in self._config["failures"]]
            return out

    @property
    def replication_delay(self) -> float:
        return self._config["replicationDelayMs"] / 1000.0

    @property
    def latency_includes_handling(self) -> bool:
        return self._config["latencyIncludesHandling"]

    def latency(self, service: str) -> float:
        c = self._config
        return (c["latencyMs"] + c["latencyMsByService"].get(service, 0)) / 1000.0

    async def delayed(self, service: str, answer: Callable[[], Awaitable[T]]) -> T:
        """Answer a call of `service` with the injected latency: by default the call waits it out first and
        then is handled (the handling comes on top); with `latencyIncludesHandling` it is handled at once and
        answered that long after it arrived (the handling inside: a benchmark timing the caller's own cost).
        Either way the wait is on the event loop, so concurrent calls overlap as in Azure."""
        delay = self.latency(service)
        if not delay:
            return await answer()
        if not self.latency_includes_handling:
            await asyncio.sleep(delay)
            return await answer()
        arrived = time.monotonic()
        result = await answer()
        await asyncio.sleep(max(0.0, arrived + delay - time.monotonic()))
        return result

    def check(self, service: str, operation: str) -> InjectedFault | None:
        """Raises InjectedFault when this call is throttled or is a call a `"when": "before"` failure names;
        returns the fault for a call an `"after"` failure names (the caller runs the handler, then answers
        the fault); None otherwise. As before, the first entry that fires ends the look."""
        with self._lock:
            bucket = self._buckets.get(service)
            if bucket is not None:
                wait = bucket.take()
                if wait is not None:
                    raise InjectedFault(429, wait)
            for f in self._config["failures"]:
                if f["operation"] != operation:
                    continue
                f["seen"] += 1
                last = None if f["times"] is None else f["nth"] + f["times"] - 1
                if f["seen"] >= f["nth"] and (last is None or f["seen"] <= last):
                    fault = InjectedFault(f["status"], (f["retryAfter"] or 1) if f["status"] in (429, 503) else None,
                                          f["when"], f["code"])
                    if fault.when == "before":
                        raise fault
                    return fault
        return None
