"""The service layer: create, read, list and delete DICOM app registrations.

HTTP-free: it takes validated requests and a Caller, talks to Azure through the adapters and raises Problems.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from . import manifest as mf
from .adapters.errors import ConflictError, UpstreamError
from .adapters.graph import GraphClient
from .adapters.rbac import RbacClient
from .adapters.vault import VaultClient
from .credentials import Credentials
from .dicom import client_config
from .kinds import MANAGED_ACCESS_ROLES, MANAGED_DELEGATED_SCOPE, OSS_ACCESS_ROLES, OSS_DELEGATED_SCOPE, PLANS
from .manifest import Caller, Resource
from .problems import (
    Conflict,
    NotFound,
    NotReady,
    ProvisioningFailed,
    UpstreamFailure,
    UpstreamUnavailable,
    ValidationProblem,
)
from .policy import ADMIN, READ, check_request, check_requester
from .saga import Saga, StepFailed, eventually
from .settings import ManagedTarget, OssTarget, Settings

log = logging.getLogger("registrations.service")



def _lag_404(exc: UpstreamError) -> bool:
    return exc.status == 404


def _lag_new_principal(exc: UpstreamError) -> bool:
    """Graph or ARM has not seen a principal or app this request just created."""
    return exc.status == 404 or (exc.status == 400 and exc.code in (
        "Request_BadRequest", "Request_ResourceNotFound", "PrincipalNotFound"))


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
        self._first_party: dict[str, Resource] = {}
        self.credentials = Credentials(settings, graph=graph, vault=vault, rbac=rbac, clock=clock, sleep=sleep)

    # ---------------------------------------------------------------------------------------- create
    def create(self, request: Any, caller: Caller) -> tuple[dict, bool]:
        """Provision a registration. Returns (registration, created); a replay of the same request returns
        the existing registration with created=False and changes nothing."""
        target = self._target_for(request)
        check_request(self.settings, request)
        unique = mf.unique_name(self.settings.name_prefix, request.name)
        deadline = time.monotonic() + self.settings.provisioning_deadline_seconds
        # One create per name at a time in this process: concurrent replays wait and then see the result.
        with self._name_lock(unique):
            existing_future = self._executor.submit(self.graph.get_application, unique)
            own_future = None if ADMIN in caller.roles else self._executor.submit(self._count_own, caller)
            resource = self._call(lambda: self._resource_for(request, target))
            existing = self._call(existing_future.result)
            if existing is not None:
                self._check_replay(request, existing, caller)
                if mf.tag_values(existing).get("state") == "ready":
                    return self._view(existing), False
            else:
                check_requester(self.settings, request, caller, lambda: self._call(own_future.result))
            return self._provision(request, caller, target, resource, unique, existing, deadline), True

    def _name_lock(self, unique: str) -> threading.Lock:
        """Serialises creates, rotations and deletes of one name in this process, so concurrent replays
        wait for the first and then see its result. Other instances converge through the idempotent steps."""
        with self._locks_guard:
            lock = self._locks.get(unique)
            if lock is None:
                lock = self._locks[unique] = threading.Lock()
            return lock

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

    def _provision(self, request, caller, target, resource, unique, existing, deadline) -> dict:
        plan = PLANS[request.type]
        saga = Saga(self._executor)
        fresh = existing is None
        try:
            if fresh:
                manifest = mf.build_manifest(request, caller, tenant_id=self.settings.tenant_id, unique=unique,
                                             resource=resource)
                created, app = saga.run(
                    "create application",
                    lambda: self.graph.upsert_application(unique, manifest),
                    undo=lambda result: result[0] and self.graph.delete_application(result[1]["id"]),
                )
                if not created:  # another instance created it between our read and our write
                    app = eventually(lambda: self._must_get(unique), lagging=_lag_404, deadline=deadline,
                                     sleep=self._sleep)
                    fresh = False
            else:
                app = existing
                # Finishing an earlier, interrupted attempt: if this one fails too, remove the remains.
                saga.run("adopt application", lambda: app, undo=lambda a: self._teardown(request.name, a))

            sp_chain = lambda: self._service_principal_and_grant(  # noqa: E731
                saga, request, target, resource, app, fresh, deadline)
            chains = [("service principal", sp_chain, None)]
            if plan.has_secret:
                chains.append(("credential", lambda: self.credentials.provision(saga, request, app, fresh, deadline),
                               None))
            results = saga.run_parallel(*chains)
            sp, secret = results[0], (results[1] if plan.has_secret else None)
            tags = mf.tags_for(request, caller, state="ready", sp_id=sp["id"])
            saga.run("mark ready", lambda: eventually(
                lambda: self.graph.update_application(app["id"], {"tags": tags}),
                lagging=_lag_404, deadline=deadline, sleep=self._sleep))
        except StepFailed as failure:
            left = saga.rollback()
            raise self._failure(failure, saga, left) from failure.cause
        app = dict(app, tags=tags)
        return self._view(app, sp_id=sp["id"], secret=secret)

    def _failure(self, failure: StepFailed, saga: Saga, left: list[str]) -> ProvisioningFailed:
        cause = failure.cause
        upstream = None
        if isinstance(cause, UpstreamError):
            upstream = {"service": cause.service, "operation": cause.operation, "status": cause.status,
                        "code": cause.code}
        log.warning("provisioning failed at step %s (%s); undone: %s; left: %s", failure.step,
                    upstream or type(cause).__name__, saga.completed, left)
        detail = f"step '{failure.step}' failed"
        if upstream:
            detail += f" ({upstream['service']} {upstream['operation']}: {upstream['status']} {upstream['code']})"
        detail += "; every completed step was undone" if not left else f"; could not undo {', '.join(left)}"
        problem = ProvisioningFailed(detail, failedStep=failure.step, undoneSteps=saga.completed, upstream=upstream)
        if isinstance(cause, UpstreamError) and cause.status in (429, 503):
            problem.status = 503
            problem.headers["Retry-After"] = "10"
        return problem

    def _must_get(self, unique: str) -> dict:
        app = self.graph.get_application(unique)
        if app is None:
            raise UpstreamError("graph", "getApplication", 404, "Request_ResourceNotFound", "not visible yet")
        return app

    # ----------------------------------------------------------------- service principal and grants
    def _service_principal_and_grant(self, saga, request, target, resource, app, fresh, deadline) -> dict:
        sp_tags = [mf.TAG_MARK] + ([f"dicom-resource:{request.name}"] if request.type == "resource" else [])

        def create_sp() -> dict:
            if not fresh:
                found = self.graph.get_service_principal(app["appId"])
                if found:
                    return found
            try:
                return self.graph.create_service_principal(app["appId"], sp_tags)
            except ConflictError:  # an earlier attempt's create went through after all
                return self._must_sp(app["appId"])

        sp = saga.run("create service principal",
                      lambda: eventually(create_sp, lagging=_lag_new_principal, deadline=deadline, sleep=self._sleep),
                      undo=lambda created: self.graph.delete_service_principal(created["id"]))
        grant = PLANS[request.type].grant_for(target.kind)
        if grant == "azure-role":
            role = MANAGED_ACCESS_ROLES[request.access]
            saga.run("assign Azure role", lambda: eventually(
                lambda: self.rbac.assign(target.resourceId, role, sp["id"]),
                lagging=_lag_new_principal, deadline=deadline, sleep=self._sleep),
                undo=self.rbac.delete)
        elif grant == "app-role":
            role_id = resource.role_ids[OSS_ACCESS_ROLES[request.access]]
            saga.run("assign app role", lambda: eventually(
                lambda: self._ensure_app_role(resource.sp_id, sp["id"], role_id, fresh),
                lagging=_lag_new_principal, deadline=deadline, sleep=self._sleep),
                undo=lambda a: self.graph.delete_app_role_assignment(resource.sp_id, a["id"]))
        elif grant == "delegated" and self.settings.grant_admin_consent:
            scope = resource.scope[0]
            saga.run("grant admin consent", lambda: eventually(
                lambda: self._ensure_consent(sp["id"], resource.sp_id, scope, fresh),
                lagging=_lag_new_principal, deadline=deadline, sleep=self._sleep),
                undo=lambda g: self.graph.delete_grant(g["id"]))
        return sp

    def _must_sp(self, app_id: str) -> dict:
        sp = self.graph.get_service_principal(app_id)
        if sp is None:
            raise UpstreamError("graph", "getServicePrincipal", 404, "Request_ResourceNotFound", "not visible yet")
        return sp

    def _ensure_app_role(self, resource_sp_id: str, sp_id: str, role_id: str, fresh: bool) -> dict:
        if not fresh:
            for assignment in self.graph.list_app_role_assignments(sp_id):
                if assignment.get("resourceId") == resource_sp_id and assignment.get("appRoleId") == role_id:
                    return assignment
        return self.graph.assign_app_role(resource_sp_id, sp_id, role_id)

    def _ensure_consent(self, sp_id: str, resource_sp_id: str, scope: str, fresh: bool) -> dict:
        if not fresh:
            for grant in self.graph.list_grants(sp_id):
                if grant.get("resourceId") == resource_sp_id and grant.get("consentType") == "AllPrincipals":
                    return grant
        return self.graph.grant_delegated(sp_id, resource_sp_id, scope)

    # ----------------------------------------------------------------------------------- resources
    def _resource_for(self, request: Any, target: ManagedTarget | OssTarget) -> Resource | None:
        """The DICOM resource's service principal, for grants and requiredResourceAccess."""
        if request.type == "resource":
            return None
        if isinstance(target, ManagedTarget):
            return self._managed_resource(target)
        if target.resourceAppId:
            sp = self.graph.get_service_principal(target.resourceAppId)
        else:
            sp = self.graph.find_service_principal_by_tag(f"dicom-resource:{target.resourceRegistration}")
        if sp is None:
            raise NotReady(
                f"DICOM service {request.dicomService!r} needs its resource registration "
                f"{target.resourceRegistration or target.resourceAppId!r}; create it first with type 'resource'"
            )
        return self._resource_from_sp(sp, OSS_DELEGATED_SCOPE)

    def _managed_resource(self, target: ManagedTarget) -> Resource:
        cached = self._first_party.get(target.audience)
        if cached is None:
            sp = self.graph.find_service_principal(target.audience)
            if sp is None:
                raise NotReady(f"the tenant has no service principal for {target.audience}; "
                               "register the Azure Health Data Services resource provider first")
            cached = self._first_party[target.audience] = self._resource_from_sp(sp, MANAGED_DELEGATED_SCOPE)
        return cached

    @staticmethod
    def _resource_from_sp(sp: dict, scope_value: str) -> Resource:
        scopes = {s["value"]: s["id"] for s in sp.get("oauth2PermissionScopes") or []}
        roles = {r["value"]: r["id"] for r in sp.get("appRoles") or []}
        scope = (scope_value, scopes[scope_value]) if scope_value in scopes else None
        return Resource(app_id=sp["appId"], sp_id=sp["id"], scope=scope, role_ids=roles)

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
        with self._name_lock(unique):
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
        return list(self._executor.map(action, items))

    def registration_name(self, app: dict) -> str:
        prefix = self.settings.name_prefix + "-"
        unique = app.get("uniqueName") or ""
        return unique[len(prefix):] if unique.startswith(prefix) else unique

    # ----------------------------------------------------------------------------------- deleting
    def delete(self, name: str, caller: Caller) -> dict:
        unique = mf.unique_name(self.settings.name_prefix, name)
        with self._name_lock(unique):
            app = self._visible_app(name, caller)
            if mf.tag_values(app).get("type") == "resource":
                self._refuse_if_in_use(name, app)
            removed = self._call(lambda: self._teardown(name, app))
        return {"name": name, "removed": removed}

    def remove_remains(self, name: str, app: dict) -> list[dict]:
        """Tear down what an interrupted create left behind (the sweep's repair)."""
        with self._name_lock(mf.unique_name(self.settings.name_prefix, name)):
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
        for found in self._executor.map(lambda job: job(), jobs):
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
