"""The credential sweep: what the daily timer runs (and tests and the local host call directly).

For every registration this API made: rotate the credentials of those that opted into auto-rotation when they
come within ROTATE_BEFORE_DAYS of expiry; remove superseded credentials whose overlap has ended; report what
expires soon. Then look for drift between Entra and Key Vault and repair only what is safe:

| drift | repair |
|---|---|
| a registration still `provisioning` an hour after it was created (its create never answered 201) | tear it down |
| a registry row `deleting` whose lease has run out (a DELETE that stopped half-way) | finish the delete, purge from deleted items included |
| a registry row `provisioning` with no application recorded, an hour old (a create that died before recording it) | remove the application carrying that create's nonce, if any, with all it made, and the row |
| an Idempotency-Key record past its 24 hours | remove it (housekeeping; reported as `expiredIdempotencyKeys` with a count) |
| a credential on an app whose value is not in Key Vault (nobody can use it) | remove it (retire) |
| a Key Vault secret of this API whose application is gone | soft-delete it (recoverable) |
| an app with a secret or certificate credential but no Key Vault secret | report only: rotating is the fix, and that is the owner's call |
| a DICOM role, a secret reader or an owner this API did not grant (added behind its back) | remove it: the sweep never grants, it only takes away what nobody asked the API for |
| a role, reader or owner missing, or displayName, notes, redirect URIs edited in the portal | report only (`drift`, as GET shows it): a PUT of the desired state repairs it, and that is the owner's call |
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol

from . import logs
from . import manifest as mf
from .adapters.vault import StoredSecret
from .settings import Settings
from .times import parse_time

log = logging.getLogger("registrations.sweep")
audit = logging.getLogger("registrations.audit")

STALE_PROVISIONING = timedelta(hours=1)
SWEEP_CONCURRENCY = 8


class SweepableService(Protocol):
    """All the sweep asks of the service (RegistrationService implements it): it never holds an adapter."""

    settings: Settings

    def now(self) -> datetime: ...
    def owned_registrations(self) -> list[dict]: ...
    def registration_name(self, app: dict) -> str: ...
    def locked(self, name: str) -> AbstractContextManager[None]: ...
    def map_concurrently(self, action: Callable[[Any], Any], items: list) -> list: ...
    def describe_credentials(self, app: dict, name: str, *, now: datetime) -> list[dict]: ...
    def rotate_credential(self, app: dict, name: str, *, idempotency_key: str, now: datetime) -> bool: ...
    def refreshed(self, app: dict) -> dict: ...
    def retire_credentials(self, app: dict, name: str, *, now: datetime) -> list[dict]: ...
    def remove_remains(self, name: str, app: dict) -> list[dict]: ...
    def leased(self, name: str, now: datetime) -> bool: ...
    def finish_unfinished(self, now: datetime, *, stale: timedelta) -> list[dict]: ...
    def purge_expired_keys(self, now: datetime) -> int: ...
    def drift(self, app: dict, name: str) -> list[dict]: ...
    def remove_ungranted(self, app: dict, name: str, fields: list[str]) -> None: ...
    def managed_secrets(self) -> list[StoredSecret]: ...
    def recorded_credentials(self) -> list[tuple[str, dict]]: ...
    def unrecorded_registrations(self) -> list[dict]: ...
    def map_bounded(self, action: Callable[[Any], Any], items: list, *, limit: int) -> list: ...
    def delete_orphaned_secret(self, secret_name: str) -> bool: ...


def expiring(service: SweepableService, *, now: datetime, within: timedelta,
             apps: list[dict] | None = None) -> list[dict]:
    """Current credentials (superseded ones are on their way out) ending within the window, soonest first:
    read from the registry (the current credential of each registration, one query however many there are),
    and from Key Vault only for registrations it has none recorded for (made before it kept them)."""
    recorded = dict(service.recorded_credentials())
    found = []
    for name, cred in recorded.items():
        end = parse_time(cred.get("endDateTime"))
        if end and end - now <= within:
            found.append({"name": name, "type": cred["type"], "kind": cred["kind"], "keyId": cred["keyId"],
                          "endDateTime": cred["endDateTime"], "daysLeft": round((end - now).total_seconds() / 86400, 1),
                          "autoRotate": cred["autoRotate"], "requestedBy": cred["requestedBy"]})
    apps = [a for a in (apps if apps is not None else service.unrecorded_registrations())
            if mf.tag_values(a).get("credential") in mf.STORED_KINDS and service.registration_name(a) not in recorded]

    def current(app: dict) -> list[dict]:
        tags = mf.tag_values(app)
        name = service.registration_name(app)
        found = []
        for cred in service.describe_credentials(app, name, now=now):
            end = parse_time(cred.get("endDateTime"))
            if cred["state"] in ("active", "expiring") and end and end - now <= within:
                found.append({"name": name, "type": tags.get("type"), "kind": cred["kind"], "keyId": cred["keyId"],
                              "endDateTime": cred["endDateTime"],
                              "daysLeft": round((end - now).total_seconds() / 86400, 1),
                              "autoRotate": tags.get("autorotate") == "true", "requestedBy": tags.get("requester")})
        return found

    found += [item for items in service.map_concurrently(current, apps) for item in items]
    return sorted(found, key=lambda item: item["endDateTime"] or "")


def run(service: SweepableService, *, now: datetime | None = None) -> dict[str, list]:
    """One sweep. `now` is injectable so tests can stand a week in the future without sleeping; by default
    it is the service's clock."""
    now = now or service.now()
    report: dict[str, list] = {"rotated": [], "removed": [], "expiring": [], "drift": [], "repaired": [],
                               "errors": []}
    # What the journal says was left half-done: deletes that stopped, creates that died before recording
    # their application. Finished first, so the registrations below are the live ones.
    try:
        report["repaired"].extend(service.finish_unfinished(now, stale=STALE_PROVISIONING))
        if purged := service.purge_expired_keys(now):
            report["repaired"].append({"kind": "expiredIdempotencyKeys", "count": purged})
    except Exception as exc:
        log.warning("finishing unfinished operations failed: %s", type(exc).__name__, exc_info=True)
        report["errors"].append({"registration": "*", "error": type(exc).__name__})
    apps = service.owned_registrations()

    def one(app: dict) -> None:
        name = service.registration_name(app)
        try:
            # The same lock as requests take: a rotation or delete of this name never interleaves.
            with service.locked(name):
                _sweep_one(service, app, name, now, report)
        except Exception as exc:  # one broken registration must not stop the sweep
            log.warning("sweep of %s failed: %s", name, type(exc).__name__, exc_info=True)
            report["errors"].append({"registration": name, "error": type(exc).__name__})

    # Registrations side by side, a few at a time: each costs a few sequential calls, and this many in flight
    # stays far inside Graph's and ARM's throttling budgets for one app.
    service.map_bounded(one, apps, limit=SWEEP_CONCURRENCY)
    changed = report["rotated"] or report["removed"] or report["repaired"]
    current = service.owned_registrations() if changed else apps
    window = timedelta(days=service.settings.expiry_warning_days)
    report["expiring"] = expiring(service, now=now, within=window, apps=current)
    logs.count("expiring", len(report["expiring"]))
    _orphaned_secrets(service, current, report, now=now)
    for kind, items in report.items():
        for item in items:
            audit.info(json.dumps({"event": f"sweep.{kind}", **item}))
    log.info("credential sweep: %s", {key: len(value) for key, value in report.items()})
    return report


def _sweep_one(service: SweepableService, app: dict, name: str, now: datetime,
               report: dict[str, list]) -> None:
    tags = mf.tag_values(app)
    if tags.get("state") != "ready":
        created = parse_time(app.get("createdDateTime"))
        if created and now - created > STALE_PROVISIONING and not service.leased(name, now):
            service.remove_remains(name, app)
            report["repaired"].append({"kind": "staleProvisioning", "registration": name})
        return
    _drift(service, app, name, report)
    if tags.get("credential") not in mf.STORED_KINDS:
        return
    states = service.describe_credentials(app, name, now=now)
    if not states and app.get("adopted"):
        return  # adopted with no credential of this kind: nothing is missing (rotating makes the first one)
    if all(c["state"] == "unreachable" for c in states):
        # No value in Key Vault at all: a client may still hold one it read earlier, so nothing is removed.
        report["drift"].append({"kind": "missingSecret", "registration": name})
        return
    active = [c for c in states if c["state"] in ("active", "expiring")]
    end = parse_time(active[0]["endDateTime"]) if active else None
    rotate_before = timedelta(days=service.settings.rotate_before_days)
    if tags.get("autorotate") == "true" and end and end - now <= rotate_before:
        if service.rotate_credential(app, name, idempotency_key=f"sweep-{active[0]['keyId']}", now=now):
            report["rotated"].append({"registration": name, "replaced": active[0]["keyId"]})
        app = service.refreshed(app)
    for removed in service.retire_credentials(app, name, now=now):
        if removed["state"] == "superseded":
            report["removed"].append(removed)
        else:
            report["repaired"].append({"kind": "unreachableCredential", **removed})


# Grants whose extras the sweep takes away.
REMOVABLE = ("access", "secretReaders", "owners")


def _drift(service: SweepableService, app: dict, name: str, report: dict[str, list]) -> None:
    found = service.drift(app, name)
    if not found:
        return
    report["drift"].append({"kind": "changed", "registration": name, "drift": found})
    extra = [d["field"] for d in found if d["field"] in REMOVABLE and set(d["actual"]) - set(d["expected"])]
    if extra:
        service.remove_ungranted(app, name, extra)
        report["repaired"].append({"kind": "ungrantedRemoved", "registration": name, "fields": extra})


def _orphaned_secrets(service: SweepableService, apps: list[dict], report: dict[str, list], *, now: datetime) -> None:
    app_ids = {app["appId"] for app in apps}
    for secret in service.managed_secrets():
        # A young secret may belong to a create that is running right now: leave it to a later sweep.
        young = secret.created_on is None or now - secret.created_on < STALE_PROVISIONING
        if secret.tags.get("appId") not in app_ids and not young:
            service.delete_orphaned_secret(secret.name)
            report["repaired"].append({"kind": "orphanedSecret", "secret": secret.name,
                                       "note": "soft-deleted, recoverable"})
