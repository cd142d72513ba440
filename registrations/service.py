"""The service layer: the entry points to create, read, list, rotate and delete DICOM app registrations.

HTTP-free: it takes validated requests and a Caller, talks to Azure through the adapters and raises Problems.
What a registration looks like is in ``views``, how one is removed in ``teardown``, how one is made in
``provision``; this module decides who may see what, serialises work on one name and checks replays.
"""

from __future__ import annotations

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
from .adapters.vault import StoredSecret, VaultClient
from .credentials import MANAGED_BY, Credentials
from .kinds import PLANS
from .manifest import Caller
from .problems import (
    Conflict,
    NotFound,
    RotationFailed,
    UpstreamFailure,
    UpstreamUnavailable,
    ValidationProblem,
)
from .policy import ADMIN, READ, check_request, check_requester
from .deadline import budget, map_concurrently, submit
from .provision import Provisioner, step_problem
from .saga import StepFailed
from .settings import ManagedTarget, OssTarget, Settings
from .teardown import Teardown
from .views import RegistrationViews, config_of, federated_reference

log = logging.getLogger("registrations.service")


def upstream_problem(exc: UpstreamError) -> UpstreamFailure | UpstreamUnavailable:
    cls = UpstreamUnavailable if exc.unavailable else UpstreamFailure
    return cls(f"{exc.service} {exc.operation} failed: {exc.status} {exc.code or ''}".strip(),
               upstream=exc.summary())


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
        self._graph, self._vault = graph, vault
        self._owner_id = owner_id
        self._clock = clock
        self._executor = executor or ThreadPoolExecutor(max_workers=16, thread_name_prefix="registrations")
        # One lock per registration name, alive only while someone holds or waits for it.
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._locks_guard = threading.Lock()
        self._credentials = Credentials(settings, graph=graph, vault=vault, rbac=rbac, clock=clock, sleep=sleep)
        self._views = RegistrationViews(settings, secret_uri=vault.secret_uri)
        self._teardown = Teardown(settings, graph=graph, rbac=rbac, vault=vault,
                                  revoke_readers=self._credentials.revoke_readers, name_of=self._views.name_of,
                                  executor=self._executor)
        self._provisioner = Provisioner(settings, graph=graph, rbac=rbac, credentials=self._credentials,
                                        executor=self._executor, teardown=self._teardown.remove, sleep=sleep)

    def now(self) -> datetime:
        """The injected clock: what every "now" of this service and its reports is."""
        return self._clock()

    # ---------------------------------------------------------------------------------------- create
    def create(self, request: Any, caller: Caller) -> tuple[dict, bool]:
        """Provision a registration. Returns (registration, created); a replay of the same request returns
        the existing registration with created=False and changes nothing."""
        target = self._target_for(request)
        check_request(self.settings, request)
        unique = mf.unique_name(self.settings.name_prefix, request.name)
        # One create per name at a time in this process: concurrent replays wait and then see the result.
        with self.locked(request.name) as deadline:
            existing_future = submit(self._executor, self._graph.get_application, unique)
            own_future = None if ADMIN in caller.roles else submit(self._executor, self._count_own, caller)
            resource = self._call(lambda: self._provisioner.resource_for(request, target))
            existing = self._call(existing_future.result)
            if existing is not None:
                self._check_replay(request, existing, caller)
                if mf.tag_values(existing).get("state") == "ready":
                    return self._views.view(existing), False
                self._provisioner.check_lease(existing)
            else:
                check_requester(self.settings, request, caller, lambda: self._call(own_future.result))
            app, sp, credential = self._provisioner.run(request, caller, target, resource, unique, existing, deadline)
        return self._views.view(app, sp_id=sp["id"], credential=credential), True

    def _name_lock(self, unique: str) -> threading.Lock:
        """Serialises creates, rotations and deletes of one name in this process, so concurrent replays
        wait for the first and then see its result. Other instances converge through the idempotent steps."""
        with self._locks_guard:
            lock = self._locks.get(unique)
            if lock is None:
                lock = self._locks[unique] = threading.Lock()
            return lock

    @contextmanager
    def locked(self, name: str) -> Iterator[float]:
        """Work on one registration under its lock and one time budget (every write, and the sweep).
        Yields the budget's deadline."""
        with budget(self.settings.provisioning_deadline_seconds) as deadline, \
                self._name_lock(mf.unique_name(self.settings.name_prefix, name)):
            yield deadline

    def _count_own(self, caller: Caller) -> int:
        mark = f"dicom-requester:{caller.object_id}"
        return sum(1 for app in self.owned_registrations() if mark in (app.get("tags") or []))

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
        credential = None
        if mf.tag_values(app).get("credential") == "federated":
            # What Entra trusts lives on the federated credential, not the app: one more read, GETs only.
            wanted = f"{self.settings.name_prefix}-{name}"
            for fic in self._call(lambda: self._graph.list_federated_credentials(app["id"])):
                if fic.get("name") == wanted:
                    credential = federated_reference(fic)
        return self._views.view(app, credential=credential)

    def _visible_app(self, name: str, caller: Caller) -> dict:
        app = self._call(lambda: self._graph.get_application(mf.unique_name(self.settings.name_prefix, name)))
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
            views.append(self._views.view(app, with_config=False))
        return sorted(views, key=lambda v: v["name"])

    def config(self, name: str, caller: Caller) -> dict:
        return config_of(self.get(name, caller), name)

    # -------------------------------------------------------------------------------- credentials
    def rotate(self, name: str, caller: Caller, *, idempotency_key: str | None) -> tuple[dict, bool]:
        with self.locked(name):
            app = self._visible_app(name, caller)
            if mf.tag_values(app).get("state") != "ready":
                raise Conflict(f"registration {name!r} is still being provisioned; retry the create first")
            try:
                credentials, rotated = self._call(
                    lambda: self._credentials.rotate(app, name, idempotency_key=idempotency_key))
            except StepFailed as failure:
                if isinstance(failure.cause, UpstreamError):
                    raise upstream_problem(failure.cause) from failure.cause
                raise step_problem(RotationFailed, failure, "rotation") from failure.cause
        return {"name": name, "credentials": credentials}, rotated

    def list_credentials(self, name: str, caller: Caller) -> dict:
        app = self._visible_app(name, caller)
        return {"name": name, "credentials": self._call(lambda: self._credentials.describe(app, name))}

    def owned_registrations(self) -> list[dict]:
        """Every application this API made (what its identity owns and tagged)."""
        return [app for app in self._call(lambda: list(self._graph.list_owned_applications(self._owner_id())))
                if mf.TAG_MARK in (app.get("tags") or [])]

    # ----------------------------------------------------------------------------------- deleting
    def delete(self, name: str, caller: Caller) -> dict:
        with self.locked(name):
            app = self._visible_app(name, caller)
            if mf.tag_values(app).get("type") == "resource":
                self._teardown.refuse_if_in_use(name, app, self.owned_registrations())
            removed = self._call(lambda: self._teardown.remove(name, app))
        return {"name": name, "removed": removed}

    # ------------------------------------------------------------------------------- for the sweep
    # What the daily sweep (sweep.SweepableService) may do, and nothing more. Upstream errors stay raw here:
    # the sweep reports each registration's failure by its type and goes on with the next.
    def registration_name(self, app: dict) -> str:
        return self._views.name_of(app)

    def map_concurrently(self, action: Callable[[Any], Any], items: list) -> list:
        return map_concurrently(self._executor, action, items)

    def describe_credentials(self, app: dict, name: str, *, now: datetime) -> list[dict]:
        return self._credentials.describe(app, name, now=now)

    def rotate_credential(self, app: dict, name: str, *, idempotency_key: str, now: datetime) -> bool:
        """Rotate as the sweep does; True when a credential was added (not a replay)."""
        return self._credentials.rotate(app, name, idempotency_key=idempotency_key, now=now)[1]

    def refreshed(self, app: dict) -> dict:
        """The application as Graph has it now (after a rotation changed its credentials)."""
        return self._graph.get_application_by_id(app["id"]) or app

    def retire_credentials(self, app: dict, name: str, *, now: datetime) -> list[dict]:
        return self._credentials.retire(app, name, now=now)

    def remove_remains(self, name: str, app: dict) -> list[dict]:
        """Tear down what an interrupted create left behind (call it within locked())."""
        return self._teardown.remove(name, app)

    def managed_secrets(self) -> list[StoredSecret]:
        """Every Key Vault secret this API wrote (newest version's properties, no values)."""
        return self._vault.list_managed(MANAGED_BY)

    def delete_orphaned_secret(self, secret_name: str) -> bool:
        """Soft-delete (recoverable) a secret whose application is gone."""
        return self._vault.delete_secret(secret_name)

    # ------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _call(action: Callable[[], Any]) -> Any:
        """Run adapter calls outside a saga: an upstream failure becomes a 502/503 problem."""
        try:
            return action()
        except UpstreamError as exc:
            raise upstream_problem(exc) from exc
