"""The service layer: create, read, list and delete DICOM app registrations.

HTTP-free: it takes validated requests and a Caller, talks to Azure through the adapters and raises Problems.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from . import manifest as mf
from .adapters.errors import UpstreamError
from .adapters.graph import GraphClient
from .adapters.rbac import RbacClient
from .adapters.vault import VaultClient
from .credentials import Credentials
from .dicom import client_config
from .kinds import PLANS
from .manifest import Caller
from .problems import (
    Conflict,
    NotFound,
    NotReady,
    UpstreamFailure,
    UpstreamUnavailable,
    ValidationProblem,
)
from .policy import ADMIN, READ, check_request, check_requester
from .deadline import budget, map_concurrently, submit
from .provision import Provisioner
from .saga import StepFailed
from .settings import ManagedTarget, OssTarget, Settings

log = logging.getLogger("registrations.service")



def upstream_problem(exc: UpstreamError) -> UpstreamFailure | UpstreamUnavailable:
    cls = UpstreamUnavailable if exc.status in (429, 503) or exc.status is None else UpstreamFailure
    return cls(
        f"{exc.service} {exc.operation} failed: {exc.status} {exc.code or ''}".strip(),
        upstream={"service": exc.service, "operation": exc.operation, "status": exc.status, "code": exc.code},
    )


class RegistrationService:
    def __init__(
        self,
        settings: Settings,
        *,
        graph: GraphClient,
        vault: VaultClient,
        rbac: RbacClient,
        owner_id: Callable[[], str],
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        executor: Executor | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.graph, self.vault, self.rbac = graph, vault, rbac
        self._owner_id = owner_id
        self._clock = clock
        self._sleep = sleep
        self._executor = executor or ThreadPoolExecutor(max_workers=16, thread_name_prefix="registrations")
        # One lock per registration name, alive only while someone holds or waits for it.
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._locks_guard = threading.Lock()
        self.credentials = Credentials(settings, graph=graph, vault=vault, rbac=rbac, clock=clock, sleep=sleep)
        self.provisioner = Provisioner(settings, graph=graph, rbac=rbac, credentials=self.credentials,
                                       executor=self._executor, teardown=self._teardown, sleep=sleep)

    # ---------------------------------------------------------------------------------------- create
    def create(self, request: Any, caller: Caller) -> tuple[dict, bool]:
        """Provision a registration. Returns (registration, created); a replay of the same request returns
        the existing registration with created=False and changes nothing."""
        target = self._target_for(request)
        check_request(self.settings, request)
        unique = mf.unique_name(self.settings.name_prefix, request.name)
        # One create per name at a time in this process: concurrent replays wait and then see the result.
        with budget(self.settings.provisioning_deadline_seconds) as deadline, self._name_lock(unique):
            existing_future = submit(self._executor, self.graph.get_application, unique)
            own_future = None if ADMIN in caller.roles else submit(self._executor, self._count_own, caller)
            resource = self._call(lambda: self.provisioner.resource_for(request, target))
            existing = self._call(existing_future.result)
            if existing is not None:
                self._check_replay(request, existing, caller)
                if mf.tag_values(existing).get("state") == "ready":
                    return self._view(existing), False
                self.provisioner.check_lease(existing)
            else:
                check_requester(self.settings, request, caller, lambda: self._call(own_future.result))
            app, sp, credential = self.provisioner.run(request, caller, target, resource, unique, existing, deadline)
        return self._view(app, sp_id=sp["id"], secret=credential), True

    def _name_lock(self, unique: str) -> threading.Lock:
        """Serialises creates, rotations and deletes of one name in this process, so concurrent replays
        wait for the first and then see its result. Other instances converge through the idempotent steps."""
        with self._locks_guard:
            lock = self._locks.get(unique)
            if lock is None:
                lock = self._locks[unique] = threading.Lock()
            return lock

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Work on one registration with the same lock and time budget a request has (the sweep)."""
        with budget(self.settings.provisioning_deadline_seconds), \
                self._name_lock(mf.unique_name(self.settings.name_prefix, name)):
            yield

    def _count_own(self, caller: Caller) -> int:
        mark = f"dicom-requester:{caller.object_id}"
        return sum(1 for app in self.graph.list_owned_applications(self._owner_id())
                   if mark in (app.get("tags") or []))

    def _target_for(self, request: Any) -> ManagedTarget | OssTarget:
        target = self.settings.target(request.dicomService)
        if target is None:
            raise ValidationProblem(
                f"unknown dicomService {request.dicomService!r}; configured: {', '.join(self.settings.dicom_services)}",
                errors=[{"loc": ["dicomService"], "msg": "not a configured DICOM service"}],
            )
        plan = PLANS[request.type]
        if target.kind not in plan.target_kinds:
            raise ValidationProblem(
                f"a {request.type} registration needs an open-source DICOM target; {request.dicomService!r} is "
                f"{target.kind} (the managed service uses Microsoft's own resource app)",
                errors=[{"loc": ["dicomService"], "msg": f"must be one of kinds {list(plan.target_kinds)}"}],
            )
        if request.type == "resource":
            if target.resourceAppId or target.resourceRegistration != request.name:
                expected = target.resourceRegistration or f"app {target.resourceAppId}"
                raise ValidationProblem(
                    f"DICOM service {request.dicomService!r} is configured to use resource {expected}, "
                    f"not {request.name!r}",
                    errors=[{"loc": ["name"], "msg": "does not match the target's resourceRegistration"}],
                )
        return target

    def _check_replay(self, request: Any, app: dict, caller: Caller) -> None:
        tags = mf.tag_values(app)
        if "type" not in tags:
            raise Conflict(f"the name {request.name!r} is taken by an application this API did not create")
        if tags.get("requester") != caller.object_id and ADMIN not in caller.roles:
            raise Conflict(f"a registration named {request.name!r} already exists")
        differing = mf.differing_fields(request, app, self.settings.tenant_id)
        if differing:
            raise Conflict(
                f"a registration named {request.name!r} exists with different {', '.join(differing)}; "
                "use another name or delete it first",
                differingFields=differing,
            )

    # ------------------------------------------------------------------------------------ reading
    def get(self, name: str, caller: Caller) -> dict:
        app = self._visible_app(name, caller)
        secret = None
        if mf.tag_values(app).get("credential") == "federated":
            # What Entra trusts lives on the federated credential, not the app: one more read, GETs only.
            wanted = f"{self.settings.name_prefix}-{name}"
            for fic in self._call(lambda: self.graph.list_federated_credentials(app["id"])):
                if fic.get("name") == wanted:
                    secret = {"kind": "federated", "keyId": fic.get("id"), "issuer": fic.get("issuer"),
                              "subject": fic.get("subject"), "audience": (fic.get("audiences") or [None])[0]}
        return self._view(app, secret=secret)

    def _visible_app(self, name: str, caller: Caller) -> dict:
        app = self._call(lambda: self.graph.get_application(mf.unique_name(self.settings.name_prefix, name)))
        if app is None or mf.TAG_MARK not in (app.get("tags") or []) or not self._may_see(app, caller):
            # The same answer for "missing" and "someone else's", so names do not leak.
            raise NotFound(f"no registration named {name!r}")
        return app

    def _may_see(self, app: dict, caller: Caller) -> bool:
        return self.may_see_requester(mf.tag_values(app).get("requester"), caller)

    @staticmethod
    def may_see_requester(requester: str | None, caller: Caller) -> bool:
        if ADMIN in caller.roles or READ in caller.roles:
            return True
        return requester == caller.object_id

    def list(self, caller: Caller, *, type: str | None = None, target: str | None = None) -> list[dict]:
        views = []
        for app in self.owned_registrations():
            tags = mf.tag_values(app)
            if not self._may_see(app, caller):
                continue
            if (type and tags.get("type") != type) or (target and tags.get("target") != target):
                continue
            views.append(self._view(app, with_config=False))
        return sorted(views, key=lambda v: v["name"])

    def _view(self, app: dict, *, sp_id: str | None = None, secret: dict | None = None,
              with_config: bool = True) -> dict:
        tags = mf.tag_values(app)
        name = self.registration_name(app)
        fields = mf.stored_fields(app)
        reg_type = fields["type"]
        kind = tags.get("credential")
        if secret is None and kind in ("secret", "certificate"):
            ours = mf.our_passwords(app) if kind == "secret" else mf.our_certificates(app)
            secret_name = mf.secret_name(self.settings.name_prefix, name, kind)
            secret = {"kind": kind, "keyVaultSecretUri": self.vault.secret_uri(secret_name),
                      "keyVaultSecretName": secret_name}
            if ours:
                newest = max(ours, key=lambda c: c.get("startDateTime") or "")
                secret.update(keyId=newest["keyId"], endDateTime=newest.get("endDateTime"))
                if kind == "certificate" and newest.get("customKeyIdentifier"):
                    # Graph keeps the certificate's SHA-1 thumbprint, base64, as customKeyIdentifier.
                    secret["thumbprint"] = base64.b64decode(newest["customKeyIdentifier"]).hex().upper()
        elif secret is None and kind == "federated":
            secret = {"kind": "federated"}
        required = app.get("requiredResourceAccess") or []
        view = {
            "name": name,
            "type": reg_type,
            "displayName": app.get("displayName"),
            "dicomService": fields["dicomService"],
            "state": tags.get("state", "provisioning"),
            "appId": app["appId"],
            "objectId": app["id"],
            "servicePrincipalId": sp_id or tags.get("sp"),
            "access": fields["access"],
            "platform": fields["platform"] or ("web" if reg_type == "confidential" else None),
            "redirectUris": fields["redirectUris"],
            "identifierUri": fields["identifierUri"],
            "credential": {k: v for k, v in (secret or {}).items() if k != "keyVaultSecretVersion"} or None,
            "autoRotate": (tags.get("autorotate") == "true") if kind else None,
            "secretReaders": mf.tag_list(app, "reader"),
            "requestedBy": tags.get("requester"),
            "notes": fields["notes"],
            "createdDateTime": app.get("createdDateTime"),
        }
        if with_config:
            target = self.settings.target(view["dicomService"])
            if target is not None:
                view["config"] = client_config(self.settings, {
                    **view, "secret": view["credential"],
                    "resourceAppId": required[0]["resourceAppId"] if required else None,
                }, target)
        return view

    def config(self, name: str, caller: Caller) -> dict:
        view = self.get(name, caller)
        if view.get("config") is None:
            raise NotReady(f"registration {name!r} names a DICOM service that is no longer configured")
        return view["config"]

    # -------------------------------------------------------------------------------- credentials
    def rotate(self, name: str, caller: Caller, *, idempotency_key: str | None) -> tuple[dict, bool]:
        unique = mf.unique_name(self.settings.name_prefix, name)
        with budget(self.settings.provisioning_deadline_seconds), self._name_lock(unique):
            app = self._visible_app(name, caller)
            if mf.tag_values(app).get("state") != "ready":
                raise Conflict(f"registration {name!r} is still being provisioned; retry the create first")
            try:
                credentials, rotated = self._call(
                    lambda: self.credentials.rotate(app, name, idempotency_key=idempotency_key))
            except StepFailed as failure:
                if isinstance(failure.cause, UpstreamError):
                    raise upstream_problem(failure.cause) from failure.cause
                raise
        return {"name": name, "credentials": credentials}, rotated

    def list_credentials(self, name: str, caller: Caller) -> dict:
        app = self._visible_app(name, caller)
        return {"name": name, "credentials": self._call(lambda: self.credentials.describe(app, name))}

    def owned_registrations(self) -> list[dict]:
        """Every application this API made (what its identity owns and tagged)."""
        return [app for app in self._call(lambda: list(self.graph.list_owned_applications(self._owner_id())))
                if mf.TAG_MARK in (app.get("tags") or [])]

    def map_concurrently(self, action: Callable[[Any], Any], items: list) -> list:
        return map_concurrently(self._executor, action, items)

    def registration_name(self, app: dict) -> str:
        prefix = self.settings.name_prefix + "-"
        unique = app.get("uniqueName") or ""
        return unique[len(prefix):] if unique.startswith(prefix) else unique

    # ----------------------------------------------------------------------------------- deleting
    def delete(self, name: str, caller: Caller) -> dict:
        unique = mf.unique_name(self.settings.name_prefix, name)
        with budget(self.settings.provisioning_deadline_seconds), self._name_lock(unique):
            app = self._visible_app(name, caller)
            if mf.tag_values(app).get("type") == "resource":
                self._refuse_if_in_use(name, app)
            removed = self._call(lambda: self._teardown(name, app))
        return {"name": name, "removed": removed}

    def remove_remains(self, name: str, app: dict) -> list[dict]:
        """Tear down what an interrupted create left behind (the sweep's repair; call it within locked())."""
        return self._teardown(name, app)

    def _refuse_if_in_use(self, name: str, app: dict) -> None:
        """Deleting a resource registration would break every client that calls it: say which ones."""
        users = sorted(self.registration_name(other) for other in self.owned_registrations()
                       if any(access.get("resourceAppId") == app["appId"]
                              for access in other.get("requiredResourceAccess") or []))
        if users:
            raise Conflict(f"resource registration {name!r} is used by {', '.join(users)}; delete those first",
                           dependents=users)

    def _teardown(self, name: str, app: dict) -> list[dict]:
        tags = mf.tag_values(app)
        sp_id = tags.get("sp") or (self.graph.get_service_principal(app["appId"]) or {}).get("id")
        target = self.settings.target(tags.get("target", ""))
        removed: list[dict] = []
        jobs: list[Callable[[], list[dict]]] = []
        if sp_id:
            if isinstance(target, ManagedTarget) and tags.get("type") == "service":
                jobs.append(lambda: self._remove_role_assignments(target.resourceId, sp_id))
            jobs.append(lambda: self._remove_app_role_assignments(sp_id))
            if self.settings.grant_admin_consent:  # listing grants needs the permission that made them
                jobs.append(lambda: self._remove_grants(sp_id))
        kind = tags.get("credential")
        if kind in ("secret", "certificate"):
            secret = mf.secret_name(self.settings.name_prefix, name, kind)

            def remove_secret() -> list[dict]:
                removed_here = self.credentials.revoke_readers(secret)
                if self.vault.delete_secret(secret):
                    removed_here.append({"kind": "keyVaultSecret", "id": secret, "note": "soft-deleted, recoverable"})
                return removed_here

            jobs.append(remove_secret)
        for found in map_concurrently(self._executor, lambda job: job(), jobs):
            removed.extend(found)
        if sp_id and self.graph.delete_service_principal(sp_id):
            removed.append({"kind": "servicePrincipal", "id": sp_id})
        if self.graph.delete_application(app["id"]):
            removed.append({"kind": "application", "id": app["appId"]})
        return removed

    def _remove_role_assignments(self, scope: str, sp_id: str) -> list[dict]:
        removed = []
        for assignment in self.rbac.list_for_principal(scope, sp_id):
            if self.rbac.delete(assignment["id"]):
                removed.append({"kind": "roleAssignment", "id": assignment["id"]})
        return removed

    def _remove_app_role_assignments(self, sp_id: str) -> list[dict]:
        removed = []
        for assignment in self.graph.list_app_role_assignments(sp_id):
            self.graph.delete_app_role_assignment(assignment["resourceId"], assignment["id"])
            removed.append({"kind": "appRoleAssignment", "id": assignment["id"]})
        return removed

    def _remove_grants(self, sp_id: str) -> list[dict]:
        removed = []
        for grant in self.graph.list_grants(sp_id):
            self.graph.delete_grant(grant["id"])
            removed.append({"kind": "oauth2PermissionGrant", "id": grant["id"]})
        return removed

    # ------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _call(action: Callable[[], Any]) -> Any:
        """Run adapter calls outside a saga: an upstream failure becomes a 502/503 problem."""
        try:
            return action()
        except UpstreamError as exc:
            raise upstream_problem(exc) from exc
