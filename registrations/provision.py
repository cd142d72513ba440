"""The create path: resolve the DICOM resource, then make the application, its service principal, its grant
and its credential as a saga, and record the registration ready.

The registry row (registry.py) is the intent record. The create reserves it before anything else (insert-only,
with a fresh attempt nonce and the lease of this request), then creates the application create-only (POST with
its uniqueName and the nonce among its labels, so a create never writes to an application it did not make),
records its ids, and records the registration ready (its desired state, the principal's id, the current
credential) once everything is made: three Graph writes for a service client (application, principal,
password), none of them a read-back. Another attempt (a Logic Apps retry landing on another instance while the
first still runs) finds the row leased and is told to come back later (503 + Retry-After); once the lease has
expired, the first attempt has certainly ended (its remote calls stop within the request's budget and its undo
within its own, both before the lease ends), so the next attempt takes the lease and finishes or removes what
the row records.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from . import manifest as mf
from .adapters.errors import (UpstreamError, got_no_answer, lag_404, lag_new_application, lag_new_principal,
                              name_taken, never, quota_exceeded)
from .adapters.graph import GraphClient
from .adapters.rbac import RbacClient
from .cors import Cors, origins_of
from .saga import ROLLBACK_SECONDS, Saga, StepFailed, create_once, eventually
from .credential_policy import refused
from .credentials import Credentials
from .kinds import MANAGED_ACCESS_ROLES, MANAGED_DELEGATED_SCOPE, OSS_ACCESS_ROLES, OSS_DELEGATED_SCOPE, PLANS
from .manifest import ADMIN, Caller, Resource
from .models import Request
from . import quota
from .problems import (Conflict, InProgress, NotReady, Problem, ProvisioningFailed, QuotaExceeded, ValidationProblem,
                       retry_later)
from .settings import ManagedTarget, OssTarget, Settings
from .registry import Record, Registry, Stale
from .teardown import Teardown

log = logging.getLogger("registrations.provision")
P = TypeVar("P", bound=Problem)

LEASE_MARGIN_SECONDS = 30.0
# The default access role: "00000000-0000-0000-0000-000000000000" assigns a principal to an app that
# defines no app roles (Graph appRoleAssignment resource, appRoleId).
DEFAULT_ACCESS_ROLE = "00000000-0000-0000-0000-000000000000"


class Provisioner:
    def __init__(self, settings: Settings, *, graph: GraphClient, rbac: RbacClient, credentials: Credentials,
                 teardown: Teardown, executor: Executor, clock: Callable[[], datetime], registry: Registry,
                 cors: Cors | None = None) -> None:
        self.settings = settings
        self.graph, self.rbac, self.credentials, self.teardown = graph, rbac, credentials, teardown
        self.registry = registry
        self.cors = cors
        self._executor = executor
        self._clock = clock
        self._first_party: dict[str, Resource] = {}

    @property
    def lease_seconds(self) -> float:
        return self.settings.provisioning_deadline_seconds + ROLLBACK_SECONDS + LEASE_MARGIN_SECONDS

    # --------------------------------------------------------------------------------------- leases
    def check_lease(self, record: Record) -> None:
        """Raise InProgress while another request's lease on this registration (in the registry) is live."""
        left = record.leased(self._clock().timestamp())
        if left > 0:
            raise retry_later(InProgress(f"another request is working on this registration; retry in "
                                         f"{int(left) + 1} s"), left)

    def lease(self, record: Record, holder: str) -> Record:
        """Take the lease on the registration row with a conditional write: of two requests taking it at once
        one writes first and the other finds the row changed (503, retry later)."""
        self.check_lease(record)
        try:
            return self.registry.save(replace(record, lease_holder=holder,
                                              lease_until=self._clock().timestamp() + self.lease_seconds))
        except Stale:
            raise retry_later(InProgress("another request is working on this registration; retry shortly"),
                              None) from None

    def _create_application(self, unique: str, manifest: dict, attempt: str) -> tuple[dict, bool]:
        """Create-only: POST /applications with the uniqueName, never a write to an application that is there.
        A taken name is the answer "it exists" (Graph says so with 400 Request_BadRequest), so read who holds
        it: our own lost 201, or the application of an earlier attempt at this create that ended before it
        recorded the application, carries the attempt nonce the registry recorded before the POST (nobody else
        can know it before the name is ours); anything else holding the name, live or in deleted items, is a 409
        naming it, and nothing is written to it. Returns (application, whether this call made it)."""
        holder: dict = {}

        def find() -> dict | None:
            holder["app"] = self.graph.get_application(unique)
            return holder["app"]

        try:
            app = create_once(lambda: self.graph.create_application(manifest), find, lagging=never,
                              exists=name_taken)
        except UpstreamError as exc:
            if not name_taken(exc) or holder.get("app") is not None:
                raise
            deleted = self.graph.find_deleted_application(unique)
            if deleted is None:
                raise  # a bad request of another kind: nobody holds the name
            raise Conflict(f"the name is held by a deleted application this API has no record of (object id "
                           f"{deleted['id']}, appId {deleted.get('appId')}); an administrator can restore or "
                           "permanently delete it, or use another name", holder=_holder(deleted)) from exc
        if mf.create_mark(attempt) not in (app.get("tags") or []):
            raise Conflict(f"the name is held by an application this API has no record of (object id {app['id']}, "
                           f"appId {app.get('appId')}); nothing was written to it; use another name, or an "
                           "administrator adopts it", holder=_holder(app))
        return app, holder.get("app") is not app

    def _needs_identifier_uri(self, request: Request, app: dict) -> bool:
        """An API registration without a requested identifier URI gets the default, which names the appId and
        so can only be written once the application exists."""
        return PLANS[request.type].exposes_api and not request.identifierUri and not app.get("identifierUris")

    def _default_identifier_uri(self, app: dict) -> None:
        uris = [mf.default_identifier_uri(self.settings.tenant_id, app["appId"])]
        eventually(lambda: self.graph.update_application(app["id"], {"identifierUris": uris}), lagging=lag_404)
        app["identifierUris"] = uris

    def new_lease(self) -> str:
        return uuid.uuid4().hex[:12]

    # ------------------------------------------------------------------------------------- the saga
    def run(self, request: Request, caller: Caller, target: ManagedTarget | OssTarget, resource: Resource | None,
            existing: dict | None, *, record: Record) -> tuple[dict, dict, dict | None]:
        """Returns (application with its final tags, service principal, credential reference). `record` is the
        registration's row, reserved (or leased again, to resume) by this request: each step is recorded there
        as it completes, and the row is forgotten when the create is undone."""
        saga = Saga(self._executor)
        unique = mf.unique_name(self.settings.name_prefix, request.name)
        owner = Caller(object_id=record.requester, name=caller.name)
        state = {"record": record}

        def save(**changes) -> Record:
            state["record"] = self.registry.save(replace(state["record"], **changes))
            return state["record"]

        try:
            if existing is None:
                manifest = mf.build_manifest(request, owner, tenant_id=self.settings.tenant_id, unique=unique,
                                             resource=resource)
                # The nonce by which a lost 201 is recognised as this create's.
                manifest["tags"].append(mf.create_mark(record.attempt))
                # Made now, it goes alone if the create is undone; found (made by an earlier attempt that ended
                # before recording it), everything that attempt made goes too, as when resuming.
                app, fresh = saga.run("create application",
                                      lambda: self._create_application(unique, manifest, record.attempt),
                                      undo=lambda made: self._undo_application(request.name, record, *made))
            else:
                app = existing
                # The earlier attempt is over (its lease expired): if this one fails too, remove it all.
                saga.run("resume application", lambda: app, undo=lambda _: self.teardown.remove(request.name, app))
                fresh = False

            # Everything that needs only the application, at once, its ids recorded beside. Until they are, the
            # row (holding the desired state since the reservation) finds the application by its uniqueName and
            # the nonce it carries, so a create that dies half-way is resumed or removed whole.
            consent = self.admin_consent_for(caller)
            chains = [("service principal", lambda: self._principal_and_grant(
                saga, request, target, resource, app, fresh, consent=consent), None)]
            if PLANS[request.type].has_credential:
                chains.append(("credential", lambda: self.credentials.provision(saga, request, app, fresh), None))
            if not state["record"].app_object_id:
                chains.append(("record application", lambda: save(app_object_id=app["id"], app_id=app["appId"]),
                               None))
            if self._needs_identifier_uri(request, app):
                chains.append(("set the identifier URI", lambda: self._default_identifier_uri(app), None))
            results = saga.run_parallel(*chains)
            sp, credential = results[0], (results[1] if PLANS[request.type].has_credential else None)
            if self.cors is not None and self.cors.applies(PLANS[request.type], request.platform, target):
                assert isinstance(target, ManagedTarget), "CORS is merged on managed DICOM services"
                origins = origins_of(request.redirectUris)
                saga.run("allow the viewer's origins in CORS", lambda: self.cors.allow(target.resourceId, origins),
                         undo=lambda added: self.cors.withdraw(target.resourceId, added, leaving=app["appId"]))
            ready = mf.tags_for(request, owner, state="ready", sp_id=sp["id"])
            saga.run("record ready", lambda: save(state="ready", sp_id=sp["id"], tags=tuple(ready), lease_holder="",
                                                  lease_until=0.0, app_object_id=app["id"], app_id=app["appId"],
                                                  fields=mf.applied_fields(request),
                                                  credential=current_credential(credential)))
        except StepFailed as failure:
            saga.abort(failure)
            self._forget(state["record"], failure)
            if isinstance(failure.cause, Problem):  # a step that decided the request cannot go on says why
                raise failure.cause from failure
            raise step_problem(ProvisioningFailed, failure, "provisioning") from failure.cause
        return dict(app, tags=ready, labels=list(app.get("labels", app.get("tags")) or [])), sp, credential

    def _undo_application(self, name: str, record: Record, app: dict, made: bool) -> None:
        if made:
            self.teardown.delete_for_good("application", app["id"])
        else:
            self.teardown.remove(name, dict(app, tags=list(record.tags) or app.get("tags") or []))

    def _forget(self, record: Record, failure: StepFailed) -> None:
        """A create undone: its row goes too, unless something could not be undone (the sweep finds it by
        the row and finishes the removal)."""
        if not failure.failed_undo:
            self.give_back(record)

    def give_back(self, record: Record) -> None:
        """Forget the row of a create that made nothing (or undid it all): the name and the requester's count are
        free again. If that fails the row stays, leased until its lease runs out; the sweep removes it then."""
        try:
            self.registry.forget(record)
        except Exception:
            log.warning("could not forget the registry row of %s", record.name, exc_info=True)

    # ----------------------------------------------------------------- service principal and grants
    def admin_consent_for(self, caller: Caller) -> bool:
        """Whether a delegated client this caller makes gets tenant-wide consent for the DICOM scope: an
        administrator's does (GRANT_ADMIN_CONSENT); a requester's only when REQUESTER_ADMIN_CONSENT says so, as
        otherwise a requester could pre-consent a client that sends any user's code wherever it likes."""
        return self.settings.grant_admin_consent and (ADMIN in caller.roles or self.settings.requester_admin_consent)

    def _principal_and_grant(self, saga: Saga, request: Request, target: ManagedTarget | OssTarget,
                             resource: Resource | None, app: dict, fresh: bool, *, consent: bool) -> dict:
        plan = PLANS[request.type]
        tags = [mf.TAG_MARK] + ([f"dicom-resource:{request.name}"] if plan.exposes_api else [])
        # A client users sign in through reaches only the users assigned to it (directly or through a group),
        # so a client made for one team cannot be used to phish everyone else.
        sp = saga.run("create service principal", lambda: create_once(
            lambda: self.graph.create_service_principal(app["appId"], tags,
                                                        assignment_required=plan.signs_in_users),
            lambda: self.graph.get_service_principal(app["appId"]), lagging=lag_new_application, look_first=not fresh),
            undo=lambda made: self.teardown.delete_for_good("servicePrincipal", made["id"]))
        for group in request.signInGroups:
            self._allow_sign_in(saga, sp, group, fresh)
        grant = plan.grant_for(target.kind)
        if grant == "azure-role":
            assert isinstance(target, ManagedTarget) and request.access, "an Azure role is for managed services"
            role = MANAGED_ACCESS_ROLES[request.access]
            # A PUT with a name derived from (scope, role, principal): retrying it is safe.
            saga.run("assign Azure role", lambda: eventually(
                lambda: self.rbac.assign(target.resourceId, role, sp["id"]), lagging=lag_new_principal),
                undo=self.rbac.delete)
        elif grant == "app-role":
            assert resource is not None and resource.role, "resource_for found the app role"
            role_id = resource.role[1]

            saga.run("assign app role", lambda: create_once(
                lambda: self.graph.assign_app_role(resource.sp_id, sp["id"], role_id),
                lambda: self.graph.find_app_role_assignment(sp["id"], resource.sp_id, role_id),
                lagging=lag_new_principal, look_first=not fresh),
                undo=lambda a: self.graph.delete_app_role_assignment(resource.sp_id, a["id"]))
        elif grant == "delegated" and consent:
            assert resource is not None and resource.scope, "resource_for found the delegated scope"
            scope = resource.scope[0]

            def find_grant() -> dict | None:
                return next((g for g in self.graph.list_grants(sp["id"])
                             if g.get("resourceId") == resource.sp_id and g.get("consentType") == "AllPrincipals"),
                            None)

            saga.run("grant admin consent", lambda: create_once(
                lambda: self.graph.grant_delegated(sp["id"], resource.sp_id, scope), find_grant,
                lagging=lag_new_principal, look_first=not fresh),
                undo=lambda g: self.graph.delete_grant(g["id"]))
        return sp

    def _allow_sign_in(self, saga: Saga, sp: dict, group: str, fresh: bool) -> None:
        """Assign a group to the client's own service principal with the default access role (Graph:
        appRoleAssignment, appRoleId all zeros when the app defines no roles), so its members may sign in."""
        def find() -> dict | None:
            return next((a for a in self.graph.list_assigned_to(sp["id"])
                         if a.get("principalId") == group and a.get("appRoleId") == DEFAULT_ACCESS_ROLE), None)

        saga.run(f"allow sign-in for group {group}", lambda: create_once(
            lambda: self.graph.assign_app_role(sp["id"], group, DEFAULT_ACCESS_ROLE), find,
            lagging=lag_new_principal, look_first=not fresh),
            undo=lambda a: self.graph.delete_app_role_assignment(sp["id"], a["id"]))

    # ------------------------------------------------------------------------------------ resources
    def resource_for(self, request: Request, target: ManagedTarget | OssTarget) -> Resource | None:
        """The DICOM resource's service principal and the one scope or app role this client is granted;
        None where no Graph grant is involved (resource registrations, managed service clients: Azure RBAC)."""
        grant = PLANS[request.type].grant_for(target.kind)
        if grant not in ("delegated", "app-role"):
            return None
        if isinstance(target, ManagedTarget):
            return self._managed(target)
        sp = resource_principal(self.graph, target, self.registry)
        if sp is None:
            raise NotReady(
                f"DICOM service {request.dicomService!r} needs its resource registration "
                f"{target.resourceRegistration or target.resourceAppId!r}; create it first with type 'resource' (one "
                "created just now takes Entra ID a few seconds to show: retry when its verification answers 200)")
        if grant == "app-role":
            assert request.access, "clients granted an app role ask for access"
            value = OSS_ACCESS_ROLES[request.access]
            role = _find(sp, "appRoles", value)
            if role is None:
                raise NotReady(f"the resource app of {request.dicomService!r} defines no app role {value!r}")
            return Resource(app_id=sp["appId"], sp_id=sp["id"], role=role)
        scope = _find(sp, "oauth2PermissionScopes", OSS_DELEGATED_SCOPE)
        if scope is None:
            raise NotReady(f"the resource app of {request.dicomService!r} exposes no {OSS_DELEGATED_SCOPE!r} scope")
        return Resource(app_id=sp["appId"], sp_id=sp["id"], scope=scope)

    def _managed(self, target: ManagedTarget) -> Resource:
        """Microsoft's first-party DICOM service principal, found by its servicePrincipalNames (cached: it
        never changes). Older tenants expose `user_impersonation` instead of `Dicom.ReadWrite`."""
        cached = self._first_party.get(target.audience)
        if cached is None:
            sp = resource_principal(self.graph, target, self.registry)
            if sp is None:
                raise NotReady(f"the tenant has no service principal for {target.audience}; "
                               "register the Azure Health Data Services resource provider first")
            scope = _find(sp, "oauth2PermissionScopes", MANAGED_DELEGATED_SCOPE) or _find(
                sp, "oauth2PermissionScopes", OSS_DELEGATED_SCOPE)
            if scope is None:
                raise NotReady(f"the service principal of {target.audience} exposes no delegated DICOM scope")
            cached = self._first_party[target.audience] = Resource(app_id=sp["appId"], sp_id=sp["id"], scope=scope)
        return cached


def step_problem(cls: type[P], failure: StepFailed, activity: str) -> P | ValidationProblem | QuotaExceeded:
    """The problem for a saga that failed at one step and was rolled back (Saga.abort): it names the step,
    what was undone and, when an Azure service failed, its code; a throttled or unavailable one is a 503."""
    cause = failure.cause
    upstream = cause.summary() if isinstance(cause, UpstreamError) else None
    log.warning("%s failed at step %s (%s); undone: %s; left: %s", activity, failure.step,
                upstream or type(cause).__name__, failure.undone, failure.failed_undo)
    if (policy := refused(cause)) is not None:  # the tenant's credential policy: the caller's to fix, not a 502
        return policy
    if (limit := quota.entra_limit(cause)) is not None:  # owners, assignments, object size: the caller's to fix
        return limit
    if isinstance(cause, UpstreamError) and quota_exceeded(cause):  # Graph counts what this API cannot see
        return quota.exceeded(None, f"Graph refused step '{failure.step}'")
    detail = f"step '{failure.step}' failed"
    if upstream:
        detail += f" ({upstream['service']} {upstream['operation']}: {upstream['status']} {upstream['code']})"
    detail += ("; every completed step was undone" if not failure.failed_undo
               else f"; could not undo {', '.join(failure.failed_undo)} (the daily sweep removes the rest)")
    problem = cls(detail, failedStep=failure.step, undoneSteps=failure.undone, upstream=upstream)
    if isinstance(cause, UpstreamError) and cause.unavailable or got_no_answer(cause):
        problem.status = 503
        retry_later(problem, cause.retry_after)
    return problem


def resource_principal(graph: GraphClient, target: ManagedTarget | OssTarget, registry: Registry) -> dict | None:
    """The service principal of the DICOM resource clients ask tokens for: Microsoft's first-party one (by
    its servicePrincipalNames) or the open-source server's resource app (by appId: given, or as the registry
    recorded it for the resource registration; never by a tag someone could copy)."""
    if isinstance(target, ManagedTarget):
        return graph.find_service_principal(target.audience)
    if target.resourceAppId:
        return graph.get_service_principal(target.resourceAppId)
    record = registry.get(target.resourceRegistration or "")
    if record is None or record.state != "ready" or not record.app_id:
        return None
    return graph.get_service_principal(record.app_id)


def current_credential(reference: dict | None) -> str:
    """What the registry keeps of a registration's current stored credential (the expiring report reads it
    there, not from Key Vault): kind, keyId and end; empty for none or a federated one."""
    if not reference or reference.get("kind") not in mf.STORED_KINDS or not reference.get("keyId"):
        return ""
    return json.dumps({k: reference.get(k) for k in ("kind", "keyId", "endDateTime")}, sort_keys=True)


def _holder(app: dict) -> dict:
    """Who holds a name: what a 409 says about it."""
    return {"objectId": app.get("id"), "appId": app.get("appId"), "displayName": app.get("displayName")}


def _find(sp: dict, collection: str, value: str) -> tuple[str, str] | None:
    for item in sp.get(collection) or []:
        if item.get("value") == value and item.get("isEnabled", True):
            return value, item["id"]
    return None
