"""Application objects and their credentials: upsert by uniqueName, CRUD, addPassword/removePassword,
keyCredentials by PATCH, federated identity credentials. No HTTP."""
from __future__ import annotations

from typing import Any

from . import models, validation
from .directory import APPS, ASSIGNMENTS, GRANTS, SPS, Caller, Directory
from .exceptions import bad_request, conflict, not_found

Address = tuple[str, str]  # ("id" | "uniqueName" | "appId", value)


class ApplicationsBackend(Directory):
    def _app(self, addr: Address, *, for_write: bool = False) -> dict[str, Any]:
        # Writes addressed by uniqueName see a replicating object at once; everything else waits.
        return self.require(APPS, addr[0], addr[1], any_visibility=for_write and addr[0] == "uniqueName")

    def get_application(self, caller: Caller, addr: Address) -> dict[str, Any]:
        app = self._app(addr)
        caller.require_read(app)
        return app

    def list_applications(self, caller: Caller) -> list[dict[str, Any]]:
        return [a for a in self.objects(APPS) if caller.may_read(a)]

    def create_application(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        caller.require_create()
        validation.check_application(body, creating=True)
        if body.get("uniqueName") and self.find(APPS, "uniqueName", body["uniqueName"], any_visibility=True):
            raise conflict("Another object with the same value for property uniqueName already exists.",
                           status=400)
        app = models.new_application({}, now=self.now(), visible_at=self.visible_at(), owner=caller.oid,
                                     tenant_id=self.tenant_id)
        self._apply(app, body)
        return self.save(APPS, app)

    def upsert_application(self, caller: Caller, unique_name: str, body: dict[str, Any],
                           *, create_if_missing: bool) -> tuple[dict[str, Any], bool]:
        """PATCH /applications(uniqueName='..'): (app, created). Without `Prefer: create-if-missing` a
        missing app is a 404 (Graph "Upsert application" page)."""
        app = self.find(APPS, "uniqueName", unique_name, any_visibility=True)
        if app is not None:
            self.update_application(caller, ("uniqueName", unique_name), body)
            return app, False
        if not create_if_missing:
            raise not_found(unique_name)
        if body.get("uniqueName") not in (None, unique_name):
            raise bad_request("The uniqueName in the body does not match the key.")
        return self.create_application(caller, {**body, "uniqueName": unique_name}), True

    def update_application(self, caller: Caller, addr: Address, body: dict[str, Any]) -> dict[str, Any]:
        app = self._app(addr, for_write=True)
        caller.require_write(app)
        validation.check_application(body, creating=False)
        if "uniqueName" in body and body["uniqueName"] != app["uniqueName"] and app["uniqueName"]:
            raise bad_request("Property 'uniqueName' is immutable once set.")
        self._apply(app, body)
        return self.save(APPS, app)

    def _apply(self, app: dict[str, Any], body: dict[str, Any]) -> None:
        if "appRoles" in body:
            validation.check_enabled_entitlements_kept(app["appRoles"], body["appRoles"], "appRoles")
        new_scopes = (body.get("api") or {}).get("oauth2PermissionScopes")
        if new_scopes is not None:
            validation.check_enabled_entitlements_kept(app["api"]["oauth2PermissionScopes"], new_scopes,
                                                       "oauth2PermissionScopes")
        for uri in body.get("identifierUris") or []:
            other = next((a for a in self.store.values(APPS) if a["id"] != app["id"]
                          and uri.lower() in (u.lower() for u in a["identifierUris"])), None)
            if other is not None:
                raise conflict("Another object with the same value for property identifierUris already exists.",
                               status=400)
        patch = dict(body)
        if "keyCredentials" in patch:
            existing = {k["keyId"]: k for k in app["keyCredentials"]}
            patch["keyCredentials"] = [models.new_key_credential(k, existing, visible_at=self.visible_at())
                                       for k in body["keyCredentials"]]
        models.merge(app, patch)

    def delete_application(self, caller: Caller, addr: Address) -> None:
        app = self._app(addr, for_write=addr[0] == "uniqueName")
        caller.require_write(app)
        self.store.delete(APPS, app["id"])
        sp = self.find(SPS, "appId", app["appId"], any_visibility=True)
        if sp is not None:  # deleting an application deletes its service principal
            self.remove_service_principal(sp)

    def remove_service_principal(self, sp: dict[str, Any]) -> None:
        self.store.delete(SPS, sp["id"])
        for a in self.store.values(ASSIGNMENTS):
            if sp["id"] in (a["principalId"], a["resourceId"]):
                self.store.delete(ASSIGNMENTS, a["id"])
        for g in self.store.values(GRANTS):
            if sp["id"] in (g["clientId"], g["resourceId"]):
                self.store.delete(GRANTS, g["id"])

    # -- passwords -----------------------------------------------------------------------------------------
    def add_password(self, caller: Caller, addr: Address, body: Any) -> dict[str, Any]:
        app = self._app(addr, for_write=addr[0] == "uniqueName")
        caller.require_write(app)
        if not isinstance(body, dict) or set(body) - {"passwordCredential"}:
            raise bad_request("Invalid request body for addPassword.")
        spec = body.get("passwordCredential") or {}
        if set(spec) - {"displayName", "startDateTime", "endDateTime", "customKeyIdentifier"}:
            raise bad_request("Property does not exist as a declared property of resource 'PasswordCredential'.")
        cred, secret = models.new_password(spec, now=self.now(), visible_at=self.visible_at())
        app["passwordCredentials"].append(cred)
        self.save(APPS, app)
        self.issued.add("passwords", secret)
        return {**models.public(cred), "secretText": secret}

    def remove_password(self, caller: Caller, addr: Address, body: Any) -> None:
        app = self._app(addr, for_write=addr[0] == "uniqueName")
        caller.require_write(app)
        key_id = body.get("keyId") if isinstance(body, dict) else None
        if not key_id:
            raise bad_request("Property 'keyId' is required and cannot be null or empty.")
        kept = [p for p in app["passwordCredentials"] if p["keyId"] != key_id]
        if len(kept) == len(app["passwordCredentials"]):
            raise not_found(key_id)
        app["passwordCredentials"] = kept
        self.save(APPS, app)

    # -- federated identity credentials --------------------------------------------------------------------
    def create_fic(self, caller: Caller, addr: Address, body: Any) -> dict[str, Any]:
        app = self._app(addr, for_write=addr[0] == "uniqueName")
        caller.require_write(app)
        fic = models.new_fic(body, visible_at=self.visible_at())
        if any(f["name"].lower() == fic["name"].lower() for f in app["_fics"]):
            raise conflict("FederatedIdentityCredential with name " + fic["name"] + " already exists.")
        if any(f["issuer"] == fic["issuer"] and f["subject"] == fic["subject"] for f in app["_fics"]):
            raise bad_request("The combination of issuer and subject must be unique for the application. Issuer "
                              f"{fic['issuer']} and Subject: {fic['subject']} already exist. paramName: "
                              f"FederatedIdentityCredential.Subject, paramValue: {fic['subject']}, objectType: "
                              "Microsoft.Online.DirectoryServices.Application",
                              code="InvalidFederatedIdentityCredentialValue")
        app["_fics"].append(fic)
        self.save(APPS, app)
        return {**models.public(fic), "_appObjectId": app["id"]}

    def list_fics(self, caller: Caller, addr: Address) -> list[dict[str, Any]]:
        app = self.get_application(caller, addr)
        return [models.public(f) for f in app["_fics"] if self.visible(f)]

    def delete_fic(self, caller: Caller, addr: Address, key: str) -> None:
        app = self._app(addr, for_write=addr[0] == "uniqueName")
        caller.require_write(app)
        kept = [f for f in app["_fics"] if key not in (f["id"], f["name"]) or not self.visible(f)]
        if len(kept) == len(app["_fics"]):
            raise not_found(key)
        app["_fics"] = kept
        self.save(APPS, app)
