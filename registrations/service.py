"""The service layer: create, read, list, rotate and delete DICOM app registrations, and the rules for each.

HTTP-free: it takes validated requests and a Caller, talks to Azure through the adapters and raises Problems.
What a registration looks like is in ``views``, how one is made in ``provision``, how one is removed in
``teardown``; this module decides who may do and see what (the policy below), serialises work on one name
under one time budget, and checks replays.
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import replace
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError

from . import manifest as mf
from .adapters.errors import UpstreamError
from .adapters.graph import GraphClient
from .adapters.vault import StoredSecret, VaultClient
from .change import APP_FIELDS, FIXED, Changer, adopted_document, desired_document, fixed_problem
from .credentials import MANAGED_BY, Credentials
from .kinds import PLANS
from .manifest import ADMIN, READ, REQUESTED_FOR, Caller
from .models import AdoptRequest, FederatedCredential, ListQuery, RegistrationRequest, Request
from .problems import (
    Conflict,
    Forbidden,
    NotFound,
    PolicyViolation,
    InProgress,
    PreconditionFailed,
    RotationFailed,
    ValidationProblem,
    retry_later,
    upstream_problem,
)
from .credential_policy import refused
from .provision import Provisioner, current_credential, step_problem
from .quota import ObjectQuota
from .registry import Exists, Idempotency, Limit, Record, Registry, Stale, new_attempt, request_hash
from .redirects import native_form
from .saga import StepFailed, budget, map_concurrently, submit
from .settings import ManagedTarget, OssTarget, Settings
from .teardown import Teardown, dependents
from .times import parse_time
from .views import RegistrationViews, config_of, federated_reference

T = TypeVar("T")
_REQUEST: TypeAdapter[Request] = TypeAdapter(RegistrationRequest)

# The audience Entra expects in a federated credential's tokens for workload identity federation
# (learn.microsoft.com: "Workload identity federation", federatedIdentityCredential.audiences).
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
# What a requester may ask for on a DICOM service REQUESTER_ACCESS does not name (it is unset: every one).
DEFAULT_REQUESTER_ACCESS = ("reader",)


class RegistrationService:
    def __init__(self, settings: Settings, *, graph: GraphClient, vault: VaultClient, credentials: Credentials,
                 provisioner: Provisioner, teardown: Teardown, changer: Changer, quota: ObjectQuota,
                 views: RegistrationViews, registry: Registry,
                 executor: Executor, owner_id: Callable[[], str], clock: Callable[[], datetime],
                 graph_permissions: Callable[[], frozenset[str]]) -> None:
        self.settings = settings
        self._registry = registry
        self._idempotency = Idempotency(registry)
        self._graph, self._vault = graph, vault
        self._credentials, self._provisioner, self._teardown, self._views = credentials, provisioner, teardown, views
        self._changer = changer
        self._quota = quota
        self._executor = executor
        self._owner_id = owner_id
        self._clock = clock
        self._graph_permissions = graph_permissions
        # One lock per registration name, alive only while someone holds or waits for it.
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._locks_guard = threading.Lock()

    def now(self) -> datetime:
        """The injected clock: what every "now" of this service, its leases and its reports is."""
        return self._clock()

    # ---------------------------------------------------------------------------------------- create
    def create(self, request: Request, caller: Caller, *, idempotency_key: str | None = None) -> tuple[dict, bool]:
        """Provision a registration. Returns (registration, created); a replay of the same request returns
        the existing registration with created=False and changes nothing. With an Idempotency-Key, a request
        that comes again with that key (whatever its body) gets the first one's answer, as a replay."""
        if idempotency_key is None:
            return self._create(request, caller)
        now = self.now().timestamp()
        first = _upstream(lambda: self._idempotency.find(caller.object_id, idempotency_key, now))
        if first is not None and first.answer:
            return json.loads(first.answer), False
        hashed = request_hash(request.model_dump(mode="json"))
        try:
            claimed = _upstream(lambda: self._idempotency.claim(caller.object_id, idempotency_key, hashed,
                                                                request.name, now))
        except Exists:
            holder = _upstream(lambda: self._idempotency.find(caller.object_id, idempotency_key, now))
            if holder is not None and holder.answer:
                return json.loads(holder.answer), False
            if holder is not None and holder.name == request.name:  # the same create, running: idempotent by name
                return self._create(request, caller)
            raise retry_later(InProgress("another request with this Idempotency-Key is running; retry shortly"),
                              None) from None
        try:
            view, created = self._create(request, caller)
        except BaseException:
            with suppress(Exception):
                self._idempotency.release(claimed)
            raise
        with suppress(Exception):  # the registration is made; a lost record only makes the key replay by name
            self._idempotency.answer(claimed, view)
        return view, created

    def _create(self, request: Request, caller: Caller) -> tuple[dict, bool]:
        requester = ADMIN not in caller.roles
        if requester:  # README: a request outside the policy is refused before anything else is looked at
            check_requester(self.settings, request)
        target = self._target_for(request)
        check_request(self.settings, request)
        check_permissions(request, self._graph_permissions, fields=None)
        # One create per name at a time in this process: concurrent replays wait and then see the result.
        with self.locked(request.name), self._credentials.read_policy_ahead(request, self._executor):
            # The first round trip, all at once: the name reserved in the registry (sent first: the slowest to
            # build), what the identity owns (the quota's count), the principals the request names and the DICOM
            # resource.
            claim_future = submit(self._executor, self._claim, request, caller, requester)
            owned_future = submit(self._executor, self._quota.owned) if self._quota.limited else None
            named = named_principals(request, caller)
            found_future = submit(self._executor, self._graph.object_types, [oid for _, oid, _ in named]) \
                if named else None
            resource_future = submit(self._executor, self._provisioner.resource_for, request, target)
            record, fresh = claim_future.result()
            try:
                existing = None
                if not fresh and record.state == "deleting":  # a DELETE that stopped half-way: finish it
                    self._finish_delete_of(record, self._recorded_app(record))
                    record, fresh = self._claim(request, caller, requester)
                if not fresh:
                    existing = self._recorded_app(record)
                    self._check_replay(request, record, existing, caller)
                    if record.state == "ready" and existing is not None:
                        return self._views.view(existing), False
                    self._provisioner.check_lease(record)
                resource = _upstream(resource_future.result)
                if found_future is not None:
                    check_principals(named, _upstream(found_future.result))
                _upstream(lambda: self._credentials.check_policy(request))
                if fresh and owned_future is not None:
                    _upstream(lambda: self._quota.check(owned_future.result()))
                if not fresh:  # an earlier attempt ended before finishing: resume it, under this request's lease
                    record = _upstream(lambda: self._provisioner.lease(record, self._provisioner.new_lease()))
            except BaseException:
                if fresh:
                    self._provisioner.give_back(record)
                raise
            app, sp, credential = self._provisioner.run(request, caller, target, resource, existing, record=record)
            if request.owners:
                app = self._owners_after_create(request, caller, app)
        return self._views.view(app, sp_id=sp["id"], credential=credential), True

    def _claim(self, request: Request, caller: Caller, requester: bool) -> tuple[Record, bool]:
        """Reserve the name before anything is looked at or made: the registration's row inserted (insert-only)
        with the desired state and the create's nonce, counted for its requester in the same transaction (the
        per-requester limit is exact however many instances create at once), under this request's lease.
        Returns (that row, True); when a row holds the name already, (that row, False): a replay, another
        request's create, or an earlier attempt to resume. A request refused after its reservation gives it
        back."""
        wanted = Record(name=request.name, requester=caller.object_id, type=request.type,
                        target=request.dicomService, attempt=new_attempt(),
                        lease_holder=self._provisioner.new_lease(),
                        lease_until=self.now().timestamp() + self._provisioner.lease_seconds,
                        tags=tuple(mf.tags_for(request, caller, state="provisioning")),
                        fields=mf.applied_fields(request))
        limit = self.settings.max_registrations_per_requester if requester else None
        try:
            return _upstream(lambda: self._registry.reserve(wanted, limit=limit)), True
        except (Exists, Limit) as taken:
            record = _upstream(lambda: self._registry.get(request.name))
            if record is not None:
                return record, False
            if isinstance(taken, Limit):
                raise limit_reached(self.settings.max_registrations_per_requester) from None
            raise retry_later(InProgress(f"another request is creating {request.name!r}; retry shortly"),
                              None) from None

    def _recorded_app(self, record: Record) -> dict | None:
        """The application the registry recorded for this registration, as Graph has it (found by its object
        id, never by name or tag), with the recorded desired state in place of whatever its tags say now
        (those stay readable as `labels`). None when nothing was made yet, or it is gone."""
        if not record.app_object_id:
            return None
        app = _upstream(lambda: self._graph.get_application_by_id(record.app_object_id))
        return None if app is None else as_recorded(app, record)

    def _owners_after_create(self, request: Request, caller: Caller, app: dict) -> dict:
        """Owners are a change of the registration just made; if that fails, the create is undone too."""
        try:
            return self._changer.run(app, request, ["owners"], caller)
        except Exception:
            _upstream(lambda: self._teardown.remove(request.name, app))
            raise

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Work on one registration under its lock and one time budget (every write, and the sweep's work on
        each registration). Concurrent replays in this process wait for the first and then see its result;
        other instances converge through the idempotent steps and the provisioning lease."""
        unique = mf.unique_name(self.settings.name_prefix, name)
        with self._locks_guard:
            lock = self._locks.get(unique)
            if lock is None:
                lock = self._locks[unique] = threading.Lock()
        with budget(self.settings.provisioning_deadline_seconds), lock:
            yield

    def _target_for(self, request: Request) -> ManagedTarget | OssTarget:
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
        if plan.exposes_api and isinstance(target, OssTarget):
            if target.resourceAppId or target.resourceRegistration != request.name:
                expected = target.resourceRegistration or f"app {target.resourceAppId}"
                raise ValidationProblem(
                    f"DICOM service {request.dicomService!r} is configured to use resource {expected}, "
                    f"not {request.name!r}",
                    errors=[{"loc": ["name"], "msg": "does not match the target's resourceRegistration"}],
                )
        return target

    def _check_replay(self, request: Request, record: Record, app: dict | None, caller: Caller) -> None:
        if record.requester != caller.object_id and ADMIN not in caller.roles:
            raise Conflict(f"a registration named {request.name!r} already exists")
        if app is None:
            differing = [f for f, mine, theirs in (("type", request.type, record.type),
                                                   ("dicomService", request.dicomService, record.target))
                         if mine != theirs]
        else:
            differing = mf.differing_fields(request, app, self.settings.tenant_id)
        if differing:
            raise Conflict(
                f"a registration named {request.name!r} exists with different {', '.join(differing)}; "
                "use another name or delete it first",
                differingFields=differing,
            )

    # ------------------------------------------------------------------------------------ reading
    def get(self, name: str, caller: Caller, *, live: bool = False) -> dict:
        """One registration: the registry's record and one read of its application (a federated one's
        credential is a second). Drift of the application's own fields comes from that read; `live` adds the
        DICOM role, the secret's readers and the owners, which cost calls to Azure."""
        app = self._visible_app(name, caller)
        fic = self._federated(app, name)
        view = self._views.view(app, credential=federated_reference(fic) if fic else None)
        if view["state"] == "ready":
            view["drift"] = _upstream(lambda: self._changer.drift(app, self._recorded(app, name, fic), live=live))
        return view

    def _federated(self, app: dict, name: str) -> dict | None:
        """The app's federated identity credential (what Entra trusts lives there, not on the app): one more
        read, for federated registrations only."""
        if mf.tag_values(app).get("credential") != "federated":
            return None
        wanted = f"{self.settings.name_prefix}-{name}"
        return next((fic for fic in _upstream(lambda: self._graph.list_federated_credentials(app["id"]))
                     if fic.get("name") == wanted), None)

    def _recorded(self, app: dict, name: str, fic: dict | None) -> Request:
        """The registration as this API keeps it, as a request. An edit in the portal can make the app's own
        fields (displayName, notes, redirect URIs) invalid as a request: those are compared by fingerprint
        anyway, so the rest (type, access, readers) is read with neutral values in their place."""
        doc = desired_document(app, name, fic)
        try:
            return _REQUEST.validate_python(doc)
        except ValidationError:
            neutral = {"displayName": name, "notes": None,
                       "redirectUris": ["https://localhost/"] if "redirectUris" in doc else None}
            return _REQUEST.validate_python({**doc, **{k: v for k, v in neutral.items() if k in doc or k == "displayName"}})

    # ------------------------------------------------------------------------------------ changing
    def put(self, name: str, request: Request, caller: Caller, *, if_match: str | None) -> tuple[dict, str]:
        """Converge on the whole desired state. Returns (registration, outcome): created (201), changed or
        unchanged (200)."""
        if request.name != name:
            raise fixed_problem(["name"])
        record = _upstream(lambda: self._registry.get(name))
        if record is None or record.state != "ready" or not self.may_see_requester(record.requester, caller):
            # Absent (for this caller): a create, which answers for a name someone else holds as it always does.
            precondition(None, if_match, name)
            view, created = self.create(request, caller)
            return view, "created" if created else "unchanged"
        return self._change(name, caller, if_match, lambda _current: request)

    def patch(self, name: str, caller: Caller, merged: Callable[[dict], Request], *,
              if_match: str | None) -> tuple[dict, str]:
        """Converge on the current desired state with a merge patch applied (`merged` applies and validates)."""
        return self._change(name, caller, if_match, merged)

    def adopt(self, name: str, adopt: AdoptRequest, caller: Caller,
              parse: Callable[[dict], Request]) -> tuple[dict, bool]:
        """Bring the application `adopt.appId` (made elsewhere) under management as `name`. Returns
        (registration, adopted); adopting the same application under the same name again is a replay."""
        with self.locked(name):
            record = _upstream(lambda: self._registry.get(name))
            app = _upstream(lambda: self._graph.get_application_by_app_id(adopt.appId))
            if app is None:
                raise NotFound(f"no application with appId {adopt.appId} in this tenant")
            if record is not None:
                if record.app_id.lower() == app["appId"].lower() and record.state == "ready":
                    return self._views.view(as_recorded(app, record)), False
                raise Conflict(f"the name {name!r} is taken by another registration; adopt under another name")
            other = _upstream(lambda: self._registry.by_app_id(adopt.appId))
            if other is not None:
                raise Conflict(f"application {adopt.appId} is already a registration of this API ({other.name!r})")
            holder = _upstream(lambda: self._graph.get_application(mf.unique_name(self.settings.name_prefix, name)))
            if holder is not None:
                raise Conflict(f"the name {name!r} is taken by another application (object id {holder['id']}); "
                               "adopt under another name")
            if app.get("uniqueName"):  # immutable once set, and not this name's
                raise Conflict(f"application {adopt.appId} has the uniqueName {app['uniqueName']!r}, which cannot "
                               f"change; adopt it under the name {app['uniqueName'].removeprefix(self.settings.name_prefix + '-')!r} "
                               "if that is one, or leave it unmanaged")
            owners = self._changer.owners_of(app) if self.settings.manage_owners else []
            wanted = parse(adopted_document(app, name, adopt.type, adopt.dicomService, adopt.access, owners=owners))
            self._target_for(wanted)
            check_request(self.settings, wanted)
            reserved, fresh = self._claim(wanted, caller, requester=False)
            if not fresh:
                raise retry_later(InProgress(f"another request is creating {name!r}; retry shortly"), None)
            try:
                adopted, made = self._changer.adopt(app, wanted, caller)
            except BaseException:
                _upstream(lambda: self._registry.forget(reserved))
                raise
            tags = mf.tags_for(wanted, caller, state="ready", sp_id=mf.tag_values(adopted).get("sp"))
            recorded = _upstream(lambda: self._registry.save(replace(
                reserved, state="ready", app_object_id=app["id"], app_id=app["appId"],
                sp_id=mf.tag_values(adopted).get("sp", ""), tags=tuple(tags), fields=mf.applied_fields(wanted),
                adopted=True, made=tuple(made),
                lease_holder="", lease_until=0.0)))
        return self._views.view(as_recorded(adopted, recorded)), True

    def _change(self, name: str, caller: Caller, if_match: str | None,
                wanted_of: Callable[[dict], Request]) -> tuple[dict, str]:
        with self.locked(name):
            app = self._visible_app(name, caller)
            precondition(app, if_match, name)
            if mf.tag_values(app).get("state") != "ready":
                raise Conflict(f"registration {name!r} is still being provisioned; retry the create first")
            wanted = wanted_of(desired_document(app, name, self._federated(app, name)))
            if wanted.name != name:
                raise fixed_problem(["name"])
            differing = mf.differing_fields(wanted, app, self.settings.tenant_id)
            fixed = [field for field in differing if field in FIXED]
            if fixed:
                raise fixed_problem(fixed)
            self._target_for(wanted)
            check_request(self.settings, wanted)
            check_permissions(wanted, self._graph_permissions, fields=differing)
            if ADMIN not in caller.roles:
                check_requester(self.settings, wanted)  # not a new registration: no count
            stored = mf.stored_fields(app)
            named = [(loc, oid, types) for loc, oid, types in named_principals(wanted)
                     if oid not in stored[str(loc[0])]]  # only the principals this change adds
            if named:
                check_principals(named, _upstream(lambda: self._graph.object_types([oid for _, oid, _ in named])))
            drifted = [d["field"] for d in _upstream(lambda: self._changer.drift(app, wanted))
                       if d["field"] not in APP_FIELDS]
            fields = differing + [field for field in drifted if field not in differing]
            if "credential.lifetimeDays" in fields:  # the lifetime of rotations to come: within the tenant's policy
                _upstream(lambda: self._credentials.check_policy(wanted))
            if not fields:
                view = self._views.view(app)
                view["changed"] = []
                return view, "unchanged"
            changed = _upstream(lambda: self._changer.run(app, wanted, fields, caller))
        view = self._views.view(changed)
        view["changed"] = fields
        return view, "changed"

    def config(self, name: str, caller: Caller) -> dict:
        return config_of(self.get(name, caller), name)

    def list_registrations(self, caller: Caller, query: ListQuery) -> tuple[list[dict], bool]:
        """One page of the registrations the caller may see, by name, after `query.after`; and whether more
        follow."""
        views = []
        for app in self.owned_registrations():
            tags = mf.tag_values(app)
            if not self._may_see(app, caller):
                continue
            if (query.type and tags.get("type") != query.type) or \
                    (query.dicomService and tags.get("target") != query.dicomService):
                continue
            view = self._views.view(app, with_config=False)
            if query.after is None or view["name"] > query.after:
                views.append(view)
        views.sort(key=lambda v: v["name"])
        return views[:query.top], len(views) > query.top

    def list_credentials(self, name: str, caller: Caller) -> dict:
        app = self._visible_app(name, caller)
        return {"name": name, "credentials": _upstream(lambda: self._credentials.describe(app, name))}

    def expiring(self, caller: Caller, days: int) -> list[dict]:
        """Current credentials the caller may see that end within `days`, soonest first."""
        from . import sweep

        found = _upstream(lambda: sweep.expiring(self, now=self.now(), within=timedelta(days=days)))
        return [item for item in found if self.may_see_requester(item["requestedBy"], caller)]

    def capacity(self, caller: Caller) -> dict:
        """How much of the identity's directory object quota is used (quota.py); administrators only."""
        if ADMIN not in caller.roles:
            raise Forbidden(f"the capacity report is for {ADMIN}", requiredRoles=[ADMIN])
        usage = _upstream(self._quota.usage)
        return usage.report()

    def owned_registrations(self) -> list[dict]:
        """Every registration the registry records, as its application (the registry's desired state in place
        of its tags): one registry query and one paged list of what the identity owns; an application missing
        from that list (its owner removed, or not listed yet) is read by its recorded id."""
        records = [r for r in _upstream(self._registry.records) if r.app_object_id]
        if not records:
            return []
        owned = {a["id"]: a for a in _upstream(lambda: list(self._graph.list_owned_applications(self._owner_id())))}
        apps = []
        for record in records:
            app = owned.get(record.app_object_id) or _upstream(
                lambda: self._graph.get_application_by_id(record.app_object_id))
            if app is not None:
                apps.append(as_recorded(app, record))
        return apps

    def registered_app(self, name: str) -> dict | None:
        """The registration's application as recorded (no caller check: for one who passed it already)."""
        record = _upstream(lambda: self._registry.get(name))
        return None if record is None else self._recorded_app(record)

    def _visible_app(self, name: str, caller: Caller) -> dict:
        record = _upstream(lambda: self._registry.get(name))
        app = self._recorded_app(record) \
            if record is not None and self.may_see_requester(record.requester, caller) else None
        if app is None:
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

    # -------------------------------------------------------------------------------- credentials
    def rotate(self, name: str, caller: Caller, *, idempotency_key: str | None) -> tuple[dict, bool]:
        with self.locked(name):
            app = self._visible_app(name, caller)
            if mf.tag_values(app).get("state") != "ready":
                raise Conflict(f"registration {name!r} is still being provisioned; retry the create first")
            try:
                credentials, rotated = _upstream(
                    lambda: self._credentials.rotate(app, name, idempotency_key=idempotency_key))
                self._record_current(name, credentials)
            except StepFailed as failure:
                if (policy := refused(failure.cause)) is not None:
                    raise policy from failure.cause
                if isinstance(failure.cause, UpstreamError):
                    raise upstream_problem(failure.cause) from failure.cause
                raise step_problem(RotationFailed, failure, "rotation") from failure.cause
        return {"name": name, "credentials": credentials}, rotated

    # ----------------------------------------------------------------------------------- deleting
    def delete(self, name: str, caller: Caller, *, if_match: str | None = None) -> dict:
        """Journaled: the row says `deleting` before the first removal and goes only after the last, so a retry
        (or the sweep) that finds it so finishes the removal, purge from deleted items included."""
        with self.locked(name):
            record = _upstream(lambda: self._registry.get(name))
            if record is None or not self.may_see_requester(record.requester, caller):
                raise NotFound(f"no registration named {name!r}")
            app = self._recorded_app(record)
            if record.state != "deleting":
                if app is None and record.state == "ready" and not record.app_object_id:
                    raise NotFound(f"no registration named {name!r}")
                precondition(app, if_match, name)
                plan = PLANS.get(record.type)
                if app is not None and plan is not None and plan.exposes_api:
                    self._refuse_if_in_use(name, app, caller)
                leased = _upstream(lambda: self._provisioner.lease(record, self._provisioner.new_lease()))
                record = _upstream(lambda: self._registry.save(replace(leased, state="deleting")))
            else:
                record = _upstream(lambda: self._provisioner.lease(record, self._provisioner.new_lease()))
            removed = self._removing(record, app)
        return {"name": name, "removed": removed}

    def _finish_delete_of(self, record: Record, app: dict | None) -> None:
        """Finish a journaled delete found by another request (under its lease). Returns None: the name is
        free again."""
        self._removing(_upstream(lambda: self._provisioner.lease(record, self._provisioner.new_lease())), app)
        return None

    def _removing(self, record: Record, app: dict | None) -> list[dict]:
        """finish_delete under the lease `record` holds; if it fails the lease goes (the row stays
        `deleting`), so a retry or the sweep finishes it at once."""
        try:
            return _upstream(lambda: self.finish_delete(record, app))
        except BaseException:
            try:
                current = self._registry.get(record.name)
                if current is not None and current.lease_holder == record.lease_holder:
                    self._registry.save(replace(current, lease_holder="", lease_until=0.0))
            except Exception:  # the lease runs out by itself
                pass
            raise

    def finish_delete(self, record: Record, app: dict | None) -> list[dict]:
        """Remove everything recorded for a registration that is `deleting` (or a create that never finished),
        then its row. Safe to repeat: what is gone already counts as removed. A create that ended before it
        recorded its application's ids: its application is the one holding the name that carries the create's
        nonce (nothing else can)."""
        if not record.app_object_id:
            found = self._graph.get_application(mf.unique_name(self.settings.name_prefix, record.name))
            mark = mf.create_mark(record.attempt) if record.attempt else None
            if found is not None and mark in (found.get("tags") or []):
                record = replace(record, app_object_id=found["id"], app_id=found["appId"])
                app = as_recorded(found, record)
        removed = self._teardown.remove(record.name, app or remains(record)) if record.app_object_id else []
        self._registry.forget(record)
        return removed

    def _refuse_if_in_use(self, name: str, app: dict, caller: Caller) -> None:
        """Deleting a resource registration would break every client that calls it: say which ones. A
        requester learns the names of those it may see and only how many others there are."""
        users = sorted(dependents(app, self.owned_registrations()), key=self.registration_name)
        if not users:
            return
        visible = [self.registration_name(u) for u in users if self._may_see(u, caller)]
        others = len(users) - len(visible)
        listed = ", ".join(visible + ([f"{others} registration(s) of other requesters"] if others else []))
        raise Conflict(f"resource registration {name!r} is used by {listed}; those must be deleted first",
                       dependents=visible, **({"otherDependents": others} if ADMIN not in caller.roles else {}))

    # ------------------------------------------------------------------------------- for the sweep
    # What the daily sweep (sweep.SweepableService) may do, and nothing more. Upstream errors stay raw here:
    # the sweep reports each registration's failure by its type and goes on with the next.
    def registration_name(self, app: dict) -> str:
        return mf.registration_name(self.settings.name_prefix, app)

    def map_concurrently(self, action: Callable[[Any], T], items: list) -> list[T]:
        return map_concurrently(self._executor, action, items)

    def map_bounded(self, action: Callable[[Any], T], items: list, *, limit: int) -> list[T]:
        """map_concurrently on a pool of its own of `limit` workers (the sweep: its work on each item uses the
        shared executor for its own parallel steps, which a full shared pool would starve)."""
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="sweep") as pool:
            return map_concurrently(pool, action, items)

    def describe_credentials(self, app: dict, name: str, *, now: datetime) -> list[dict]:
        return self._credentials.describe(app, name, now=now)

    def rotate_credential(self, app: dict, name: str, *, idempotency_key: str, now: datetime) -> bool:
        """Rotate as the sweep does; True when a credential was added (not a replay)."""
        credentials, rotated = self._credentials.rotate(app, name, idempotency_key=idempotency_key, now=now)
        self._record_current(name, credentials)
        return rotated

    def _record_current(self, name: str, credentials: list[dict]) -> None:
        """Keep the current credential's kind, keyId and end on the registry row (the reports read it)."""
        current = next((c for c in credentials if c.get("state") in ("active", "expiring")), None)
        record = self._registry.get(name)
        if record is not None and current is not None:
            with suppress(Stale):  # someone wrote the row since: the next rotation or the sweep records it
                self._registry.save(replace(record, credential=current_credential(current)))

    def recorded_credentials(self) -> list[tuple[str, dict]]:
        """(registration, current credential) as the registry keeps them, for every registration that has
        one recorded (the expiring report's one read)."""
        return [(r.name, {**json.loads(r.credential), "type": r.type, "requestedBy": r.requester,
                          "autoRotate": "dicom-autorotate:true" in r.tags})
                for r in self._registry.records() if r.state == "ready" and r.credential]

    def unrecorded_registrations(self) -> list[dict]:
        """Registrations with a stored credential the registry has no current credential for (made before it
        kept them): the expiring report describes those from Key Vault."""
        names = {r.name for r in self._registry.records() if r.state == "ready" and not r.credential
                 and any(t in r.tags for t in ("dicom-credential:secret", "dicom-credential:certificate"))}
        return [app for app in self.owned_registrations() if self.registration_name(app) in names] if names else []

    def refreshed(self, app: dict) -> dict:
        """The application as Graph has it now (after a rotation changed its credentials)."""
        fresh = self._graph.get_application_by_id(app["id"])
        return dict(fresh, tags=app["tags"], labels=list(fresh.get("tags") or [])) if fresh else app

    def finish_unfinished(self, now: datetime, *, stale: timedelta) -> list[dict]:
        """The sweep's part of the journal: finish every delete that stopped half-way and remove every create
        that died before it recorded its application (each once no lease on it is live). Returns what it
        repaired."""
        repaired = []
        moment = now.timestamp()
        for record in self._registry.records():
            if record.leased(moment) > 0:
                continue
            if record.state == "deleting":
                with self.locked(record.name):
                    self.finish_delete(record, self._recorded_app(record))
                repaired.append({"kind": "unfinishedDelete", "registration": record.name})
            elif record.state == "ready" and record.lease_holder:
                with self.locked(record.name):
                    self._finish_change(record)
                repaired.append({"kind": "unfinishedChange", "registration": record.name})
            elif record.state == "provisioning" and not record.app_object_id and \
                    now - (parse_time(record.created_at) or now) > stale:
                with self.locked(record.name):
                    self.finish_delete(record, None)  # finds the application by the create's nonce
                repaired.append({"kind": "staleProvisioning", "registration": record.name})
        return repaired

    def _finish_change(self, record: Record) -> None:
        """A change that died half-way (its lease ran out on a ready row): put Entra back to the desired state
        the registry recorded (the change's last step records the new one, so it never got there); the change
        saga takes and clears the lease."""
        app = self._recorded_app(record)
        if app is None:
            self._registry.save(replace(record, lease_holder="", lease_until=0.0))
            return
        wanted = self._recorded(app, record.name, self._federated(app, record.name))
        fields = mf.differing_fields(wanted, app, self.settings.tenant_id)
        fields += [d["field"] for d in self._changer.drift(app, wanted)
                   if d["field"] not in APP_FIELDS and d["field"] not in fields]
        if not fields:
            self._registry.save(replace(record, lease_holder="", lease_until=0.0))
            return
        self._changer.run(app, wanted, fields, Caller(object_id=record.requester, name="sweep"))

    def purge_expired_keys(self, now: datetime) -> int:
        """Idempotency-Key records past their 24 hours, removed (the sweep's housekeeping)."""
        return self._idempotency.purge(now.timestamp())

    def leased(self, name: str, now: datetime) -> bool:
        """Whether a request holds the lease on this registration now."""
        record = self._registry.get(name)
        return record is not None and record.leased(now.timestamp()) > 0

    def retire_credentials(self, app: dict, name: str, *, now: datetime) -> list[dict]:
        return self._credentials.retire(app, name, now=now)

    def remove_remains(self, name: str, app: dict) -> list[dict]:
        """Tear down what an interrupted create left behind, and its row (call it within locked())."""
        record = self._registry.get(name)
        if record is None or record.app_object_id != app["id"]:
            return []
        return self.finish_delete(record, app)

    def drift(self, app: dict, name: str) -> list[dict]:
        """Where Entra ID or Azure differ from what this API last applied (as GET shows it)."""
        return self._changer.drift(app, self._recorded(app, name, self._federated(app, name)))

    def remove_ungranted(self, app: dict, name: str, fields: list[str]) -> None:
        """The sweep's repair: take away DICOM roles, secret readers and owners this API did not grant, as a
        change saga that grants nothing (call it within locked())."""
        recorded = self._recorded(app, name, self._federated(app, name))
        self._changer.run(app, recorded, fields, Caller(object_id="", name="sweep"), only_remove=True)

    def managed_secrets(self) -> list[StoredSecret]:
        """Every Key Vault secret this API wrote (newest version's properties, no values)."""
        return self._vault.list_managed(MANAGED_BY)

    def delete_orphaned_secret(self, secret_name: str) -> bool:
        """Soft-delete (recoverable) a secret whose application is gone."""
        return self._vault.delete_secret(secret_name)


def as_recorded(app: dict, record: Record) -> dict:
    """The application with the registry's record in place of its tags: everything downstream (views,
    teardown, drift, the sweep) reads the desired state and the ids the API recorded, never what a co-owner
    wrote into the tags. The tags as Graph has them stay readable as `labels` (kept through changes)."""
    tags = list(record.tags) or [mf.TAG_MARK]
    if record.sp_id and not any(t.startswith("dicom-sp:") for t in tags):
        tags.append(f"dicom-sp:{record.sp_id}")
    desired = json.loads(record.fields) if record.fields else {}
    return dict(app, tags=tags, labels=list(app.get("tags") or []), adopted=record.adopted, desired=desired)


def remains(record: Record) -> dict:
    """What teardown needs of an application that is gone already (deleted, maybe not purged)."""
    return {"id": record.app_object_id, "appId": record.app_id, "tags": list(record.tags),
            "createdDateTime": record.created_at or None}


def precondition(app: dict | None, if_match: str | None, name: str) -> None:
    """If-Match (RFC 9110 13.1.1): `*` matches any current registration, a list of entity tags matches when
    the current one is among them (strong comparison, so a weak W/ tag never matches). Without the header
    the caller takes its chances (Logic Apps' HTTP action sends none)."""
    if if_match is None:
        return
    tags = {tag.strip() for tag in if_match.split(",")}
    if app is None:
        raise PreconditionFailed(f"If-Match names a state of {name!r}, which does not exist; leave If-Match out "
                                 "to create it")
    if "*" not in tags and mf.entity_tag(app) not in tags:
        raise PreconditionFailed(f"registration {name!r} changed since that ETag was read; GET it again, then "
                                 "send the change with its new ETag as If-Match")


def _upstream(action: Callable[[], T]) -> T:
    """Run adapter calls outside a saga: an upstream failure becomes a 502/503 problem."""
    try:
        return action()
    except UpstreamError as exc:
        raise upstream_problem(exc) from exc


# --------------------------------------------------------------------------------------- the policy
# Which access a requester may ask for on which DICOM service, how many registrations one requester may hold,
# which hosts redirect URIs may point at, which issuers federated credentials may trust, and what only
# administrators may create. Everything here reads the request and the settings only, so it runs before
# the first write.
def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """`contoso.org` allows exactly that host; `*.contoso.org` allows any subdomain (not the apex)."""
    host = host.lower()
    for pattern in patterns:
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
            return True
        if host == pattern:
            return True
    return False


# Fields whose writes need a tenant-wide Graph application permission beyond what the API always holds: asked
# for without it, the request is refused before anything is written (not a 502 half way through).
NEEDS_PERMISSION = {
    "signInGroups": ("AppRoleAssignment.ReadWrite.All", "assigning groups to the client's service principal"),
    "owners": ("Application.ReadWrite.All", "adding owners (Application.ReadWrite.OwnedBy is not enough)"),
}


def check_permissions(request: Request, held: Callable[[], frozenset[str]], *, fields: list[str] | None) -> None:
    """A request that names `signInGroups` or `owners` (on a change: changes them) while the API's identity
    lacks the Graph permission their writes need is a 422 saying which and how to get it."""
    for field, (permission, why) in NEEDS_PERMISSION.items():
        if getattr(request, field) and (fields is None or field in fields) and permission not in held():
            raise ValidationProblem(
                f"{field} needs the Microsoft Graph application permission {permission} on the API's identity "
                f"({why}), which it does not hold; leave {field} out, or ask an administrator to grant it (python -m "
                "registrations.setup grants it with --sign-in-groups, or with MANAGE_OWNERS for owners)",
                errors=[{"loc": [field], "msg": f"needs {permission} on the API's identity"}],
                missingPermission=permission)


def check_request(settings: Settings, request: Request) -> None:
    """Rules for everyone, admins included."""
    credential = request.credential
    if isinstance(credential, FederatedCredential) and settings.allowed_federated_issuers \
            and credential.issuer not in settings.allowed_federated_issuers:
        raise PolicyViolation(
            f"credential.issuer {credential.issuer!r} is not in the allowed federated issuers",
            allowedFederatedIssuers=list(settings.allowed_federated_issuers),
        )
    if request.secretReaders and not settings.key_vault_resource_id:
        raise ValidationProblem(
            "secretReaders needs KEY_VAULT_RESOURCE_ID (the ARM id of the vault), which is not set; "
            "leave secretReaders out or ask an administrator",
            errors=[{"loc": ["secretReaders"], "msg": "not available on this deployment"}],
        )
    if request.owners and not settings.manage_owners:
        raise ValidationProblem(
            "owners needs MANAGE_OWNERS, which is not set: adding an owner needs Application.ReadWrite.All on "
            "the API's identity (Application.ReadWrite.OwnedBy is not enough); leave owners out or ask an "
            "administrator",
            errors=[{"loc": ["owners"], "msg": "not available on this deployment"}],
        )
    # Entra's app ID URI policy also accepts api://{appId} and verified domains; neither can be checked
    # before the application exists, so a custom URI must use the tenant form.
    if request.identifierUri and not request.identifierUri.startswith(f"api://{settings.tenant_id}/"):
        raise ValidationProblem(
            f"identifierUri must start with api://{settings.tenant_id}/ (or be left out for the default)",
            errors=[{"loc": ["identifierUri"], "msg": "not in this tenant's api:// form"}],
        )
    lifetime = credential.lifetimeDays if credential else None
    if lifetime and lifetime > settings.secret_max_lifetime_days:
        raise ValidationProblem(
            f"credential.lifetimeDays is {lifetime}; the longest allowed is {settings.secret_max_lifetime_days}",
            errors=[{"loc": ["credential", "lifetimeDays"], "msg": "longer than allowed"}],
        )
    # Redirect URIs arrive normalised (scheme and host in lower case: redirects.check_redirect_uri).
    for index, uri in enumerate(request.redirectUris):
        parts = urlsplit(uri)
        if parts.scheme in ("http", "https"):
            if settings.allowed_redirect_hosts and not host_allowed(parts.hostname or "",
                                                                    settings.allowed_redirect_hosts):
                raise PolicyViolation(
                    f"redirectUris[{index}]: host {parts.hostname!r} is not in the allowed redirect hosts",
                    allowedRedirectHosts=list(settings.allowed_redirect_hosts),
                )
        elif native_form(uri) is None and parts.scheme not in settings.allowed_redirect_schemes:
            raise PolicyViolation(
                f"redirectUris[{index}]: the custom scheme {parts.scheme!r} is neither a documented native-app form "
                "(msauth.{bundle id}://auth, msauth://{package}/{signature hash}) nor in ALLOWED_REDIRECT_SCHEMES; "
                "use one of those forms or ask an administrator to allow the scheme",
                allowedRedirectSchemes=list(settings.allowed_redirect_schemes),
            )
    reserved = reserved_names(settings)
    if request.name in reserved and not PLANS[request.type].exposes_api:
        raise PolicyViolation(
            f"the name {request.name!r} is reserved for the resource registration of DICOM service "
            f"{reserved[request.name]!r} (DICOM_SERVICES names it); choose another name")


def reserved_names(settings: Settings) -> dict[str, str]:
    """Names a DICOM service's settings give its resource registration, with that service's name: only that
    registration (type resource, made by an administrator) may take them."""
    return {target.resourceRegistration: name for name, target in settings.dicom_services.items()
            if isinstance(target, OssTarget) and target.resourceRegistration}


# Directory objects a request names, by where it names them: each must exist, and be of a type that field
# takes, before anything is written (an unknown id would otherwise look like replication lag until the time
# budget ran out). Types as Graph's getByIds gives them.
SECRET_READER_TYPES = frozenset({"user", "group", "servicePrincipal"})
# Graph: "owners ... users or service principals" (not groups) of an application or service principal.
OWNER_TYPES = frozenset({"user", "servicePrincipal"})
SIGN_IN_GROUP_TYPES = frozenset({"group"})
# Who can hold Registrations.Request and call with a token of their own: a person, or a workload's principal.
REQUESTER_TYPES = frozenset({"user", "servicePrincipal"})
NamedPrincipal = tuple[list[str | int], str, frozenset[str]]


def named_principals(request: Request, caller: Caller | None = None) -> list[NamedPrincipal]:
    """(location in the request, object id, the types it may be) for every principal the request names; on a
    create a broker asks for, the person it names in Requested-For too (the registration becomes theirs)."""
    named: list[NamedPrincipal] = (
        [(["secretReaders", index], oid, SECRET_READER_TYPES) for index, oid in enumerate(request.secretReaders)]
        + [(["owners", index], oid, OWNER_TYPES) for index, oid in enumerate(request.owners)]
        + [(["signInGroups", index], oid, SIGN_IN_GROUP_TYPES)
           for index, oid in enumerate(request.signInGroups)])
    if caller is not None and caller.broker:
        named.append((["header", REQUESTED_FOR], caller.object_id, REQUESTER_TYPES))
    return named


def check_principals(named: list[NamedPrincipal], found: dict[str, str]) -> None:
    """A 422 naming each principal that does not exist (`found`: GraphClient.object_types) or is of a type
    its field does not take."""
    errors = []
    for loc, oid, types in named:
        kind = found.get(oid.lower())
        if kind is None:
            errors.append({"loc": loc, "msg": f"no directory object {oid} in this tenant"})
        elif kind not in types:
            errors.append({"loc": loc, "msg": f"{oid} is of type {kind}; expected {', '.join(sorted(types))}"})
    if errors:
        raise ValidationProblem(
            "the request names principals that do not exist in this tenant or cannot be used there: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
            + "; check the object ids (the object id of the user, group or service principal, not an appId)",
            errors=errors)


def check_requester(settings: Settings, request: Request) -> None:
    """What callers that hold Registrations.Request and not Registrations.Admin may ask for."""
    plan = PLANS[request.type]
    if plan.admin_only:
        raise PolicyViolation(f"{request.type} registrations ({plan.summary}) are created by administrators "
                              "(Registrations.Admin); ask an administrator")
    credential = request.credential
    if isinstance(credential, FederatedCredential):
        if not settings.allowed_federated_issuers:
            raise PolicyViolation("requesters may not create federated credentials until an administrator sets "
                                  "ALLOWED_FEDERATED_ISSUERS; use a secret or certificate, or ask an administrator")
        if credential.audience != TOKEN_EXCHANGE_AUDIENCE:
            raise PolicyViolation(f"a federated credential's audience must be {TOKEN_EXCHANGE_AUDIENCE!r}",
                                  allowedAudiences=[TOKEN_EXCHANGE_AUDIENCE])
    if plan.signs_in_users and not settings.allowed_redirect_hosts:
        raise PolicyViolation(
            f"requesters may create {request.type} clients (users sign in through them) only once an administrator "
            "sets ALLOWED_REDIRECT_HOSTS, the hosts their redirect URIs may use; ask an administrator",
            setting="ALLOWED_REDIRECT_HOSTS",
        )
    allowed = settings.requester_access.get(request.dicomService, DEFAULT_REQUESTER_ACCESS)
    if request.access and request.access not in allowed:
        raise PolicyViolation(
            f"requesters may ask for {', '.join(allowed) or 'no access'} on {request.dicomService!r}, "
            f"not {request.access!r}; ask an administrator (REQUESTER_ACCESS opens more)",
            allowedAccess=list(allowed),
        )


def check_requester_count(settings: Settings, count: int) -> None:
    """How many registrations such a caller may hold (checked for a new one only)."""
    if count >= settings.max_registrations_per_requester:
        raise limit_reached(settings.max_registrations_per_requester)


def limit_reached(limit: int) -> PolicyViolation:
    return PolicyViolation(f"this requester already holds {limit} registrations, the most allowed "
                           "(MAX_REGISTRATIONS_PER_REQUESTER); delete one first", limit=limit)
