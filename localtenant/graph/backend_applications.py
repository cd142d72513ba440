"""Application objects and their credentials: upsert by uniqueName, CRUD, addPassword/removePassword,
keyCredentials by PATCH, federated identity credentials. No HTTP. Shapes in objects.py.
"""
from __future__ import annotations

import copy
import json
from typing import Any

from . import validation
from .backend import GraphBackend
from .backend_deleted import DeletedItems
from .backend_principals import Principals
from .caller import Caller
from .exceptions import bad_request, concurrency_violation, conflict, name_taken, not_found, too_large
from .objects import (APPS, Address, merge, new_application, new_fic, new_key_credential, new_password,
                      parse_iso, public)
from .policies import Policies


class Applications:
    """/applications and what hangs off one; state, visibility and lookups are the composing backend's."""

    def __init__(self, backend: GraphBackend, *, deleted: DeletedItems, principals: Principals,
                 policies: Policies) -> None:
        self.backend, self.deleted, self.principals, self.policies = backend, deleted, principals, policies

    def _app(self, addr: Address, *, for_write: bool = False) -> dict[str, Any]:
        # Writes addressed by uniqueName see a replicating object at once; everything else waits.
        return self.backend.require(APPS, addr[0], addr[1], any_visibility=for_write and addr[0] == "uniqueName")

    def _writable(self, caller: Caller, addr: Address) -> dict[str, Any]:
        app = self._app(addr, for_write=True)
        caller.require_write(app)
        return app

    def _credential_write(self, caller: Caller, app: dict[str, Any]) -> None:
        """Credential writes on one application do not come close together: one that arrived while another was
        still in flight (arrived before that one was answered), or within `credentialWriteWindowMs` after it,
        is Directory_ConcurrencyViolation (409 or 503, `concurrencyViolationStatuses` in turn) and changes
        nothing. Called before the write; it records this one's span, saved with the app."""
        b = self.backend
        now, last = b.now(), app.get("_credentialWrite")
        arrived = caller.arrived if caller.arrived is not None else now
        window = b.settings["credentialWriteWindowMs"] / 1000.0
        if last and last[0] <= arrived < last[1] + window:
            raise concurrency_violation(b.violation_status())
        app["_credentialWrite"] = [arrived, now]

    def get(self, caller: Caller, addr: Address) -> dict[str, Any]:
        app = self._app(addr)
        caller.require_read(app)
        return self.backend.replica(caller, app)

    def list(self, caller: Caller) -> list[dict[str, Any]]:
        return [self.backend.replica(caller, a) for a in self.backend.objects(APPS) if caller.may_read(a)]

    def create(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        caller.require_create(users_may_register=self.backend.settings["usersCanRegisterApplications"])
        validation.check_application(body, creating=True)
        b = self.backend
        self._require_free_name(body.get("uniqueName"))
        self.deleted.require_quota(caller)
        app = new_application(now=b.now(), visible_at=b.visible_at(), owner=caller.oid, tenant_id=b.tenant_id)
        app["createdByAppId"] = caller.app_id
        self._apply(app, body)
        return b.save(APPS, app)

    def _require_free_name(self, name: str | None) -> None:
        """A name is taken by a live application or by one in deleted items (for its 30 days): 400
        Request_BadRequest as msgraph-bicep-types issue 137 and byte5ai/omadia issue 916 show it, or 409
        Request_MultipleObjectsWithSameKeyValue as Graph answers other alternate keys (`uniqueNameConflictStatus`)."""
        b = self.backend
        if name and (b.find(APPS, "uniqueName", name, any_visibility=True) or self.deleted.holding("uniqueName", name)):
            raise name_taken("uniqueName", b.settings["uniqueNameConflictStatus"])

    def upsert(self, caller: Caller, unique_name: str, body: dict[str, Any],
               *, create_if_missing: bool) -> tuple[dict[str, Any], bool]:
        """PATCH /applications(uniqueName='..'): (app, created). Without `Prefer: create-if-missing` a
        missing app is a 404 (Graph "Upsert application" page)."""
        app = self.backend.find(APPS, "uniqueName", unique_name, any_visibility=True)
        if app is not None:
            self.update(caller, ("uniqueName", unique_name), body)
            return app, False
        if not create_if_missing:
            raise not_found(unique_name)
        if body.get("uniqueName") not in (None, unique_name):
            raise bad_request("The uniqueName in the body does not match the key.")
        return self.create(caller, {**body, "uniqueName": unique_name}), True

    def update(self, caller: Caller, addr: Address, body: dict[str, Any]) -> dict[str, Any]:
        app = self._writable(caller, addr)
        validation.check_application(body, creating=False)
        if "uniqueName" in body and body["uniqueName"] != app["uniqueName"]:
            if app["uniqueName"]:
                raise bad_request("Property 'uniqueName' is immutable once set.")
            self._require_free_name(body["uniqueName"])  # "can be updated only if null": a compare-and-set
        self._apply(app, body, caller)
        return self.backend.save(APPS, app)

    def _apply(self, app: dict[str, Any], body: dict[str, Any], writer: Caller | None = None) -> None:
        """Checks the body against the application and the policies, then merges it in. With `writer` (an
        update), a body carrying keyCredentials is a credential write."""
        if "appRoles" in body:
            validation.check_enabled_entitlements_kept(app["appRoles"], body["appRoles"], "appRoles")
        new_scopes = (body.get("api") or {}).get("oauth2PermissionScopes")
        if new_scopes is not None:
            validation.check_enabled_entitlements_kept(app["api"]["oauth2PermissionScopes"], new_scopes,
                                                       "oauth2PermissionScopes")
        if "identifierUris" in body:
            self.policies.check_identifier_uris({**app, "api": {**app["api"], **(body.get("api") or {})}},
                                                        list(body["identifierUris"] or []))
        for uri in body.get("identifierUris") or []:
            other = next((a for a in self.backend.store.values(APPS) if a["id"] != app["id"]
                          and uri.lower() in (u.lower() for u in a["identifierUris"])), None)
            if other is not None or self.deleted.holding("identifierUris", uri):
                raise bad_request("Another object with the same value for property identifierUris already exists.")
        patch = dict(body)
        if "keyCredentials" in patch:
            existing = {k["keyId"]: k for k in app["keyCredentials"]}
            patch["keyCredentials"] = [new_key_credential(k, existing, visible_at=self.backend.visible_at())
                                       for k in body["keyCredentials"]]
            for key in patch["keyCredentials"]:
                if key["keyId"] not in existing:  # a key kept as it was is not written again
                    self.policies.check_key(app, parse_iso(key["endDateTime"], "endDateTime")
                                                    - parse_iso(key["startDateTime"], "startDateTime"))
            if writer is not None:
                self._credential_write(writer, app)
        self._require_size(app, patch)
        merge(app, patch)

    def _require_size(self, app: dict[str, Any], patch: dict[str, Any]) -> None:
        """The object as it would be written stays under `objectSizeLimitBytes` (its JSON, keys included)."""
        after = copy.deepcopy(public(app))
        merge(after, patch)
        if len(json.dumps(after)) > self.backend.settings["objectSizeLimitBytes"]:
            raise too_large()

    def delete(self, caller: Caller, addr: Address) -> None:
        """Into deleted items for 30 days (backend_deleted.py), with its service principal."""
        app = self._writable(caller, addr)
        self.deleted.soft_delete("application", app)
        sp = self.backend.sp_by_app_id(app["appId"], any_visibility=True)
        if sp is not None:  # deleting an application deletes its service principal
            self.principals.remove(sp)

    # -- passwords -----------------------------------------------------------------------------------------
    def add_password(self, caller: Caller, addr: Address, body: Any) -> dict[str, Any]:
        app = self._writable(caller, addr)
        if not isinstance(body, dict) or set(body) - {"passwordCredential"}:
            raise bad_request("Invalid request body for addPassword.")
        spec = body.get("passwordCredential") or {}
        if set(spec) - {"displayName", "startDateTime", "endDateTime", "customKeyIdentifier"}:
            raise bad_request("Property does not exist as a declared property of resource 'PasswordCredential'.")
        cred, secret = new_password(spec, now=self.backend.now(), visible_at=self.backend.visible_at())
        self.policies.check_password(app, parse_iso(cred["endDateTime"], "endDateTime")
                                             - parse_iso(cred["startDateTime"], "startDateTime"))
        self._require_size(app, {"passwordCredentials": [*app["passwordCredentials"], public(cred)]})
        self._credential_write(caller, app)
        app["passwordCredentials"].append(cred)
        self.backend.save(APPS, app)
        self.backend.issued.add("passwords", secret)
        return {**public(cred), "secretText": secret}

    def remove_password(self, caller: Caller, addr: Address, body: Any) -> None:
        app = self._writable(caller, addr)
        key_id = body.get("keyId") if isinstance(body, dict) else None
        if not key_id:
            raise bad_request("Property 'keyId' is required and cannot be null or empty.")
        self._credential_write(caller, app)
        kept = [p for p in app["passwordCredentials"] if p["keyId"] != key_id]
        if len(kept) == len(app["passwordCredentials"]):
            raise not_found(key_id)
        app["passwordCredentials"] = kept
        self.backend.save(APPS, app)

    # -- federated identity credentials --------------------------------------------------------------------
    def create_fic(self, caller: Caller, addr: Address, body: Any) -> dict[str, Any]:
        app = self._writable(caller, addr)
        fic = new_fic(body, visible_at=self.backend.visible_at())
        self._credential_write(caller, app)
        if any(f["name"].lower() == fic["name"].lower() for f in app["_fics"]):
            raise conflict("FederatedIdentityCredential with name " + fic["name"] + " already exists.")
        if any(f["issuer"] == fic["issuer"] and f["subject"] == fic["subject"] for f in app["_fics"]):
            raise bad_request("The combination of issuer and subject must be unique for the application. Issuer "
                              f"{fic['issuer']} and Subject: {fic['subject']} already exist. paramName: "
                              f"FederatedIdentityCredential.Subject, paramValue: {fic['subject']}, objectType: "
                              "Microsoft.Online.DirectoryServices.Application",
                              code="InvalidFederatedIdentityCredentialValue")
        app["_fics"].append(fic)
        self.backend.save(APPS, app)
        return {**public(fic), "_appObjectId": app["id"]}

    def list_fics(self, caller: Caller, addr: Address) -> list[dict[str, Any]]:
        app = self.get(caller, addr)
        return [public(f) for f in app["_fics"] if self.backend.visible(f)]

    def delete_fic(self, caller: Caller, addr: Address, key: str) -> None:
        app = self._writable(caller, addr)
        self._credential_write(caller, app)
        kept = [f for f in app["_fics"] if key not in (f["id"], f["name"]) or not self.backend.visible(f)]
        if len(kept) == len(app["_fics"]):
            raise not_found(key)
        app["_fics"] = kept
        self.backend.save(APPS, app)
