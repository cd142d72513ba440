"""Changing a registration in place: converge it on a desired state (PUT, or PATCH merged into the current
state), and tell where Entra ID or Azure drifted from what this API last applied.

A change is a saga like a create (provision.py): it takes the same lease on the application (another instance
finding it live answers 503 and comes back), and every step has an undo, so a step that fails for good leaves
the registration as it was and names the step. The steps, in order:

| step | what | undo |
|---|---|---|
| take lease | the lease on the registration's registry row (a conditional write) | release it |
| update application | displayName, notes, redirect URIs (and an open-source client's API permission) | the old values |
| assign {access} role | the new DICOM role (Azure role or app role) | remove it |
| wait until the role is listed | the new assignment is read back before anything is taken away | — |
| remove {role} | each role the registration no longer holds | assign it again |
| grant / revoke secret reader | Key Vault Secrets User on the one secret | the opposite |
| add / remove owner | on the application and on its service principal (never the API's own identity) | the opposite |
| record desired state | the registry row: access, readers, autoRotate, lifetime, applied fingerprints; lease off (the same as tags on the application: labels for people) | — |

Raising access adds the new role before the old one goes, so a client never loses access it keeps; lowering it
removes the old role first, so a client never holds more than it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import manifest as mf
from .adapters.errors import UpstreamError, lag_404, lag_new_application, lag_new_principal
from .adapters.graph import GraphClient
from .adapters.rbac import RbacClient
from .cors import Cors, origins_of
from .credentials import Credentials
from .kinds import DICOM_DATA_OWNER, DICOM_DATA_READER, KEY_VAULT_SECRETS_USER, MANAGED_ACCESS_ROLES, PLANS
from .manifest import Caller
from .models import FederatedCredential, Request, carries
from .problems import Conflict, Forbidden, Problem, ProvisioningFailed
from .provision import Provisioner, step_problem
from .saga import Saga, StepFailed, create_once, eventually
from .registry import Record, Registry
from .settings import ManagedTarget, OssTarget, Settings

log = logging.getLogger("registrations.change")

# What cannot change in place, and what to do instead.
FIXED = {
    "type": "create a new registration of the other type (another name) and delete this one",
    "dicomService": "create a registration for the other DICOM service (another name) and delete this one",
    "platform": "a public client's platform decides its redirect URI rules; create a new registration",
    "identifierUri": "clients and the DICOM server are configured with it; create a new resource registration",
    "credential.kind": "create a new registration with the other credential kind and delete this one",
    "credential.federation": "issuer, subject and audience are what Entra trusts; create a new registration",
    "signInGroups": "who may sign in is assigned at create; an administrator assigns more users or groups to the "
                    "client's service principal (Enterprise applications), or create a new registration",
}
FIXED_NAME = "create a registration with the new name and delete this one"
APP_FIELDS = ("displayName", "notes", "redirectUris")
ACCESS_RANK = {"reader": 0, "writer": 1, "admin": 2}
ROLE_NAMES = {DICOM_DATA_READER: "DICOM Data Reader", DICOM_DATA_OWNER: "DICOM Data Owner"}


@dataclass(frozen=True)
class Roles:
    """The role a service client's access needs, the DICOM roles it holds ({role id: assignment ids}), and
    how to assign or remove one."""

    wanted: str
    held: dict[str, list[str]]
    assign: Callable[[str], str]
    unassign: Callable[[str], Any]


def fixed_problem(fields: list[str]) -> Conflict:
    what = "; ".join(f"{field}: {FIXED.get(field, FIXED_NAME)}" for field in fields)
    return Conflict(f"{', '.join(fields)} cannot be changed in place ({what})", fixedFields=fields)


def foreign_tags(tags: list[str]) -> list[str]:
    """Tags someone else put on the application (an adopted one has its own): kept through every change."""
    return [tag for tag in tags if not tag.startswith("dicom-")]


def adopted_document(app: dict, name: str, type_: str, dicom_service: str, access: str | None,
                     owners: list[str] = ()) -> dict[str, Any]:
    """The desired state of an application made elsewhere, as a create body, read from what is there: its
    owners stay owners, and the credential kind is the one it has."""
    doc: dict[str, Any] = {"type": type_, "name": name, "displayName": app.get("displayName") or name,
                           "dicomService": dicom_service}
    if carries(type_, "access"):
        doc["access"] = access
    if carries(type_, "platform"):  # a public client: a SPA or a native app, by where its redirect URIs are
        doc["platform"] = "spa" if (app.get("spa") or {}).get("redirectUris") else "mobile"
    if carries(type_, "redirectUris"):  # a client with no platform of its choice is a web app
        field = mf.PLATFORM_FIELD[doc.get("platform", "web")]
        doc["redirectUris"] = list((app.get(field) or {}).get("redirectUris") or [])
    if PLANS[type_].has_credential:
        certificates_only = app.get("keyCredentials") and not app.get("passwordCredentials")
        doc["credential"] = {"kind": "certificate" if certificates_only else "secret"}
    if owners:
        doc["owners"] = sorted(owners)
    return doc


def fixed_in(current: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The fixed fields a merge-patched document changes (checked before it is validated as a whole, so the
    answer names the field rather than what the other type would need)."""
    changed = [field for field in ("name", "type", "dicomService", "platform", "identifierUri")
               if field in wanted and wanted[field] != current.get(field)]
    kind = (wanted.get("credential") or {}).get("kind") if isinstance(wanted.get("credential"), dict) else None
    if kind is not None and kind != (current.get("credential") or {}).get("kind"):
        changed.append("credential.kind")
    return changed


def desired_document(app: dict, name: str, federated: dict | None) -> dict[str, Any]:
    """The create body that describes the registration as this API keeps it (what a PATCH is merged into).
    `federated` is the app's federated identity credential, when it has one."""
    # The application's own fields as the registry recorded them (what was last applied), not as Entra shows
    # them now: an edit in the portal is drift, not the desired state.
    fields = {**mf.stored_fields(app), **(app.get("desired") or {})}
    plan = PLANS[fields["type"]]
    doc: dict[str, Any] = {"type": fields["type"], "name": name,
                           "displayName": fields["displayName"], "dicomService": fields["dicomService"]}
    if fields["notes"] is not None:
        doc["notes"] = fields["notes"]
    for field in ("access", "platform", "redirectUris", "signInGroups"):
        if carries(fields["type"], field):
            doc[field] = fields[field]
    if plan.exposes_api:
        doc["identifierUri"] = fields["identifierUri"]
    if fields["owners"]:
        doc["owners"] = fields["owners"]
    if plan.has_credential:
        kind = fields["credential.kind"]
        if kind == "federated" and federated is not None:
            doc["credential"] = {"kind": kind, "issuer": federated.get("issuer"), "subject": federated.get("subject"),
                                 "audience": (federated.get("audiences") or [None])[0]}
        else:
            doc["credential"] = {"kind": kind}
            if fields["credential.lifetimeDays"]:
                doc["credential"]["lifetimeDays"] = fields["credential.lifetimeDays"]
            doc["autoRotate"] = fields["autoRotate"]
            doc["secretReaders"] = fields["secretReaders"]
    return doc


class Changer:
    def __init__(self, settings: Settings, *, graph: GraphClient, rbac: RbacClient, credentials: Credentials,
                 provisioner: Provisioner, owner_id: Callable[[], str], registry: Registry,
                 cors: Cors | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.owner_id = owner_id  # the API's own service principal
        self.graph, self.rbac, self.credentials, self.provisioner = graph, rbac, credentials, provisioner
        self.cors = cors

    # ----------------------------------------------------------------------------------------- drift
    def drift(self, app: dict, request: Request, *, live: bool = True) -> list[dict]:
        """Where Entra ID or Azure differ from what this API last applied: the application's own fields (by
        their recorded fingerprints, from the application read already) and, `live`, the DICOM role, the
        secret's readers and the owners (reads of Azure). Reads only."""
        found = []
        actual = mf.stored_fields(app)
        for field, recorded in mf.applied(app).items():
            if mf.fingerprint(actual[field]) != recorded:
                found.append({"field": field, "expected": f"sha256:{recorded}", "actual": actual[field]})
        if not live:
            return found
        roles = self._roles(app, request)
        if roles is not None and set(roles.held) != {roles.wanted}:
            found.append({"field": "access", "expected": [self._role_name(roles.wanted, request)],
                          "actual": sorted(self._role_name(r, request) for r in roles.held)})
        readers = self._readers(request)
        if readers is not None and set(readers) != set(request.secretReaders):
            found.append({"field": "secretReaders", "expected": sorted(request.secretReaders),
                          "actual": sorted(readers)})
        if self.settings.manage_owners:
            for collection, object_id in self._owned(app):
                owners = self._owners(collection, object_id)
                if set(owners) != set(request.owners):
                    found.append({"field": "owners", "expected": sorted(request.owners), "actual": sorted(owners)})
                    break
        return found

    def _owned(self, app: dict) -> list[tuple[str, str]]:
        """The application and its service principal, as Graph's collections name them."""
        sp_id = mf.tag_values(app).get("sp")
        return [("applications", app["id"])] + ([("servicePrincipals", sp_id)] if sp_id else [])

    def _owners(self, collection: str, object_id: str) -> list[str]:
        """Owners other than the API's own identity (which always stays one)."""
        me = self.owner_id().lower()
        return [o.lower() for o in self.graph.list_owners(collection, object_id) if o.lower() != me]

    def _owners_to(self, saga: Saga, app: dict, wanted: Request, only_remove: bool = False) -> None:
        for collection, object_id in self._owned(app):
            held = self._owners(collection, object_id)
            for owner in wanted.owners:
                if owner not in held and not only_remove:
                    saga.run(f"add owner {owner}", lambda c=collection, i=object_id, o=owner: self.graph.add_owner(c, i, o),
                             undo=lambda _, c=collection, i=object_id, o=owner: self.graph.remove_owner(c, i, o))
            for owner in held:
                if owner not in wanted.owners:
                    saga.run(f"remove owner {owner}",
                             lambda c=collection, i=object_id, o=owner: self.graph.remove_owner(c, i, o),
                             undo=lambda _, c=collection, i=object_id, o=owner: self.graph.add_owner(c, i, o))

    def _target(self, request: Request) -> ManagedTarget | OssTarget | None:
        return self.settings.target(request.dicomService)

    def _roles(self, app: dict, request: Request) -> Roles | None:
        """The DICOM role a service client's access needs and the ones it holds (None for other types)."""
        target, sp_id = self._target(request), mf.tag_values(app).get("sp")
        if not request.access or target is None or not sp_id:  # only a service client has an access level
            return None
        if isinstance(target, ManagedTarget):
            held: dict[str, list[str]] = {}
            for assignment in self.rbac.list_for_principal(target.resourceId, sp_id):
                props = assignment.get("properties") or {}
                role = (props.get("roleDefinitionId") or "").rsplit("/", 1)[-1]
                if role in ROLE_NAMES and (props.get("scope") or target.resourceId).lower() == target.resourceId.lower():
                    held.setdefault(role, []).append(assignment["id"])
            return Roles(MANAGED_ACCESS_ROLES[request.access], held,
                         assign=lambda role: eventually(lambda: self.rbac.assign(target.resourceId, role, sp_id),
                                                        lagging=lag_new_principal),
                         unassign=self.rbac.delete)
        resource = self.provisioner.resource_for(request, target)
        assert resource is not None and resource.role, "an open-source service client is granted an app role"
        held = {}
        for assignment in self.graph.list_app_role_assignments(sp_id):
            if assignment.get("resourceId") == resource.sp_id:
                held.setdefault(assignment["appRoleId"], []).append(assignment["id"])
        return Roles(resource.role[1], held,
                     assign=lambda role: create_once(
                         lambda: self.graph.assign_app_role(resource.sp_id, sp_id, role),
                         lambda: self.graph.find_app_role_assignment(sp_id, resource.sp_id, role),
                         lagging=lag_new_principal)["id"],
                     unassign=lambda assignment: self.graph.delete_app_role_assignment(resource.sp_id, assignment))

    def _role_name(self, role: str, request: Request) -> str:
        if role in ROLE_NAMES:
            return ROLE_NAMES[role]
        target = self._target(request)
        if isinstance(target, OssTarget):
            resource = self.provisioner.resource_for(request, target)
            if resource is not None and resource.role and resource.role[1] == role:
                return resource.role[0]
        return role

    def _reader_scope(self, request: Request) -> str | None:
        credential = request.credential
        if credential is None or isinstance(credential, FederatedCredential) \
                or not self.settings.key_vault_resource_id:
            return None
        return self.credentials.reader_scope(self.credentials.secret_name(request.name, credential.kind))

    def _readers(self, request: Request) -> dict[str, str] | None:
        """{principal id: assignment id} of Key Vault Secrets User on the registration's secret."""
        scope = self._reader_scope(request)
        if scope is None:
            return None
        return {(a.get("properties") or {}).get("principalId"): a["id"] for a in self.rbac.list_at_scope(scope)
                if ((a.get("properties") or {}).get("roleDefinitionId") or "").endswith(KEY_VAULT_SECRETS_USER)}

    # ---------------------------------------------------------------------------------------- change
    def run(self, app: dict, wanted: Request, fields: list[str], caller: Caller, *, only_remove: bool = False) -> dict:
        """Apply `fields` of `wanted` (the fields that differ from what Entra and Azure hold) as a saga.
        Returns the application as it now is. `only_remove` (the sweep's repair) only takes away roles,
        readers and owners this API did not grant, and grants nothing."""
        saga = Saga()
        lease = self.provisioner.new_lease()
        held: dict[str, Record] = {}
        try:
            saga.run("take lease", lambda: held.setdefault("record", self._take(wanted.name, lease)),
                     undo=lambda record: self._release(record, lease))
            changes, undo = self._app_changes(app, wanted, [] if only_remove else fields)
            if changes:
                saga.run("update application", lambda: eventually(
                    lambda: self.graph.update_application(app["id"], changes), lagging=lag_404),
                    undo=lambda _: self.graph.update_application(app["id"], undo))
            if "redirectUris" in fields and not only_remove:
                self._cors_follows(saga, app, wanted)
            if "access" in fields:
                self._swap_roles(saga, app, mf.tag_values(app).get("access"), wanted, only_remove)
            if "secretReaders" in fields:
                self._readers_to(saga, wanted, only_remove)
            if "owners" in fields:
                self._owners_to(saga, app, wanted, only_remove)
            record = held["record"]
            owner = Caller(object_id=record.requester or caller.object_id, name=caller.name)
            recorded = mf.tags_for(wanted, owner, state="ready", sp_id=record.sp_id or mf.tag_values(app).get("sp"))
            labels = foreign_tags(app.get("labels") or []) + mf.labels(recorded)
            saga.run("label desired state", lambda: eventually(
                lambda: self.graph.update_application(app["id"], {"tags": labels}), lagging=lag_404))
            # Last: once the registry holds the new desired state, the change is done.
            saga.run("record desired state", lambda: self.registry.save(replace(
                record, tags=tuple(recorded), fields=mf.applied_fields(wanted), lease_holder="", lease_until=0.0)))
        except StepFailed as failure:
            saga.abort(failure)
            if isinstance(failure.cause, Problem):  # another instance holds the lease
                raise failure.cause from None
            raise step_problem(ProvisioningFailed, failure, "change") from failure.cause
        except BaseException:  # a read between steps failed, or a problem was raised: undo what was done
            saga.rollback()
            raise
        return dict(app, tags=recorded, labels=labels,
                    **{k: v for k, v in changes.items() if k != "requiredResourceAccess"})

    # ----------------------------------------------------------------------------------------- adopt
    def adopt(self, app: dict, wanted: Request, caller: Caller) -> dict:
        """Bring an application made elsewhere under management: the API's identity becomes an owner (Graph
        decides whether it may), a service principal is made if there is none, and the uniqueName (when it
        has none) and the desired state are recorded. Its client id and credentials do not change."""
        saga = Saga()
        unique = mf.unique_name(self.settings.name_prefix, wanted.name)
        me = self.owner_id()
        try:
            saga.run("add the API as owner", lambda: self.graph.add_owner("applications", app["id"], me),
                     undo=lambda _: self.graph.remove_owner("applications", app["id"], me))
            sp = self.graph.get_service_principal(app["appId"])
            made = ["servicePrincipal"] if sp is None else []
            if sp is None:
                sp = saga.run("create service principal", lambda: create_once(
                    lambda: self.graph.create_service_principal(app["appId"], [mf.TAG_MARK]),
                    lambda: self.graph.get_service_principal(app["appId"]), lagging=lag_new_application),
                    undo=lambda made: self.graph.delete_service_principal(made["id"]))
            else:
                saga.run("add the API as owner of the service principal",
                         lambda: self.graph.add_owner("servicePrincipals", sp["id"], me),
                         undo=lambda _: self.graph.remove_owner("servicePrincipals", sp["id"], me))
            # The application's owners (the team) own its principal too, as for a create with owners; nobody
            # is removed from either.
            held = set(self._owners("servicePrincipals", sp["id"])) if wanted.owners else set()
            for owner in wanted.owners:
                if owner not in held:
                    saga.run(f"add owner {owner} to the service principal",
                             lambda o=owner: self.graph.add_owner("servicePrincipals", sp["id"], o),
                             undo=lambda _, o=owner: self.graph.remove_owner("servicePrincipals", sp["id"], o))
            tags = foreign_tags(app.get("tags") or []) + mf.tags_for(wanted, caller, state="ready", sp_id=sp["id"])
            changes: dict[str, Any] = {"tags": tags}
            if not app.get("uniqueName"):
                changes["uniqueName"] = unique
            saga.run("record desired state", lambda: eventually(
                lambda: self.graph.update_application(app["id"], changes), lagging=lag_404))
        except StepFailed as failure:
            saga.abort(failure)
            cause = failure.cause
            if isinstance(cause, UpstreamError) and cause.status == 403:
                raise Forbidden(f"Graph refused step '{failure.step}' (403): the API's identity may not manage this "
                                "application; grant it Application.ReadWrite.All (MANAGE_OWNERS) or add it as an "
                                "owner of the application first", failedStep=failure.step,
                                undoneSteps=failure.undone) from cause
            raise step_problem(ProvisioningFailed, failure, "adoption") from cause
        except BaseException:
            saga.rollback()
            raise
        return dict(app, **changes), made

    def owners_of(self, app: dict) -> list[str]:
        """The owners an application has besides the API's identity (adoption keeps them)."""
        return self._owners("applications", app["id"])

    def _take(self, name: str, lease: str) -> Record:
        """Read the registration's row afresh and take its lease with a conditional write: of two instances
        changing one registration at once, one writes first and the other is told to retry (503)."""
        record = self.registry.get(name)
        if record is None:
            raise Conflict(f"registration {name!r} is gone")
        return self.provisioner.lease(record, lease)

    def _release(self, record: Record, lease: str) -> None:
        """Undo the lease, unless another attempt's lease has replaced ours."""
        now = self.registry.get(record.name)
        if now is not None and now.lease_holder == lease:
            self.registry.save(replace(now, lease_holder="", lease_until=0.0))

    def _cors_follows(self, saga: Saga, app: dict, wanted: Request) -> None:
        """With DICOM_CORS_FOR_SPA, a browser client's new redirect origins are merged into its DICOM service's
        CORS (as a create does) and those it no longer has are removed when no other registration needs them (as
        a delete does)."""
        target = self._target(wanted)
        if self.cors is None or not self.cors.applies(PLANS[wanted.type], wanted.platform, target):
            return
        assert isinstance(target, ManagedTarget), "CORS is merged on managed DICOM services"
        new = origins_of(list(wanted.redirectUris))
        before = (app.get(mf.PLATFORM_FIELD[wanted.platform]) or {}).get("redirectUris") or []
        old = [o for o in origins_of(before) if o not in new]
        saga.run("allow the viewer's new origins in CORS", lambda: self.cors.allow(target.resourceId, new),
                 undo=lambda added: self.cors.withdraw(target.resourceId, added, leaving=app["appId"]))
        if old:
            saga.run("remove the origins nothing needs from CORS",
                     lambda: self.cors.withdraw(target.resourceId, old, leaving=app["appId"]),
                     undo=lambda gone: self.cors.allow(target.resourceId, gone))

    def _app_changes(self, app: dict, wanted: Request, fields: list[str]) -> tuple[dict, dict]:
        """The PATCH of the application's own fields, and the PATCH that puts them back."""
        changes: dict[str, Any] = {}
        undo: dict[str, Any] = {}
        if "displayName" in fields:
            changes["displayName"], undo["displayName"] = wanted.displayName, app.get("displayName")
        if "notes" in fields:
            header = (app.get("notes") or "").partition("\n\n")[0] or mf.notes_for(wanted, Caller("", "")).split("\n")[0]
            changes["notes"] = f"{header}\n\n{wanted.notes}" if wanted.notes else header
            undo["notes"] = app.get("notes")
        if "redirectUris" in fields and wanted.platform:
            field = mf.PLATFORM_FIELD[wanted.platform]
            changes[field] = {"redirectUris": list(wanted.redirectUris)}
            undo[field] = {"redirectUris": list((app.get(field) or {}).get("redirectUris") or [])}
        target = self._target(wanted)
        if "access" in fields and isinstance(target, OssTarget):
            resource = self.provisioner.resource_for(wanted, target)
            if resource is not None:
                changes["requiredResourceAccess"] = [mf.required_access(resource)]
                undo["requiredResourceAccess"] = app.get("requiredResourceAccess") or []
        return changes, undo

    def _swap_roles(self, saga: Saga, app: dict, current: str | None, wanted: Request, only_remove: bool) -> None:
        roles = self._roles(app, wanted)
        if roles is None:
            return
        lowering = only_remove or ACCESS_RANK.get(wanted.access or "", 0) < ACCESS_RANK.get(current or "", 0)
        if lowering:
            self._remove_roles(saga, roles)
        if roles.wanted not in roles.held and not only_remove:
            saga.run(f"assign {wanted.access} role", lambda: roles.assign(roles.wanted), undo=roles.unassign)
            saga.run(f"wait until the {wanted.access} role is listed", lambda: self._listed(app, wanted, roles))
        if not lowering:
            self._remove_roles(saga, roles)

    def _listed(self, app: dict, wanted: Request, roles: Roles) -> None:
        """Wait until the new assignment is listed, so the old role goes only once the new one is there."""
        def listed() -> None:
            now = self._roles(app, wanted)
            if now is None or roles.wanted not in now.held:
                raise UpstreamError("graph", "listAssignments", 404, None, "not visible yet")
        eventually(listed, lagging=lag_404)

    def _remove_roles(self, saga: Saga, roles: Roles) -> None:
        for role, assignments in roles.held.items():
            if role == roles.wanted:
                continue
            for assignment in assignments:
                saga.run(f"remove {ROLE_NAMES.get(role, 'app role')}", lambda a=assignment: roles.unassign(a),
                         undo=lambda _, r=role: roles.assign(r))

    def _readers_to(self, saga: Saga, wanted: Request, only_remove: bool = False) -> None:
        held = self._readers(wanted)
        if held is None:
            return
        credential = wanted.credential
        assert credential is not None and not isinstance(credential, FederatedCredential)
        name = self.credentials.secret_name(wanted.name, credential.kind)
        if not only_remove:
            self.credentials.grant_readers(saga, name, [r for r in wanted.secretReaders if r not in held])
        for reader, assignment in held.items():
            if reader not in wanted.secretReaders:
                saga.run(f"revoke secret reader {reader}", lambda a=assignment: self.rbac.delete(a),
                         undo=lambda _, r=reader: self.credentials.grant_readers(Saga(), name, [r]))
