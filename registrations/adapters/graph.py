"""Microsoft Graph v1.0: the dozen calls this product makes, over azure-core's pipeline (no Graph SDK)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

from ._rest import RestClient
from .errors import NotFoundError, UpstreamError

# What Graph's $ref bodies name an object by (the documented form, whatever the endpoint's host).
GRAPH_DIRECTORY_OBJECTS = "https://graph.microsoft.com/v1.0/directoryObjects"


def _key(value: str) -> str:
    """An OData key literal: single quotes doubled, then URL-escaped."""
    return quote(value.replace("'", "''"), safe="")


class GraphClient:
    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    # applications ---------------------------------------------------------------------------------
    def get_application(self, unique_name: str) -> dict | None:
        _, body, _ = self._rest.call(
            "getApplication", "GET", f"/v1.0/applications(uniqueName='{_key(unique_name)}')", ok_missing=True
        )
        return body

    def get_application_by_app_id(self, app_id: str) -> dict | None:
        _, body, _ = self._rest.call("getApplication", "GET", f"/v1.0/applications(appId='{_key(app_id)}')",
                                     ok_missing=True)
        return body

    def get_application_by_id(self, object_id: str, *, select: str | None = None) -> dict | None:
        """With ``select="keyCredentials"`` Graph includes the certificates' ``key`` values, which a PATCH of
        keyCredentials must send back (it replaces the whole collection)."""
        params = {"$select": select} if select else None
        _, body, _ = self._rest.call("getApplication", "GET", f"/v1.0/applications/{object_id}", params=params,
                                     ok_missing=True)
        return body

    def create_application(self, manifest: dict) -> dict:
        """POST /applications with the manifest's uniqueName: create-only. A name another application holds,
        live or in deleted items, answers 400 Request_BadRequest (not 409) and changes nothing."""
        _, body, _ = self._rest.call(
            "createApplication", "POST", "/v1.0/applications", body=manifest,
            # Not idempotent: a retry after a lost 201 would meet its own name. The service looks first.
            retry=False,
        )
        return body

    def update_application(self, object_id: str, changes: dict, *, retry: bool = True) -> None:
        """PATCH the application. ``retry=False`` for a write computed from a read (keyCredentials are written
        whole): repeated blindly after a refusal it would replace what another writer wrote meanwhile, so the
        caller reads again and repeats it."""
        self._rest.call("updateApplication", "PATCH", f"/v1.0/applications/{object_id}", body=changes, retry=retry)

    def delete_application(self, object_id: str) -> bool:
        status, _, _ = self._rest.call(
            "deleteApplication", "DELETE", f"/v1.0/applications/{object_id}", ok_missing=True
        )
        return status != 404

    def list_owned_objects(self, owner_sp_id: str, *, page_size: int = 999,
                           select: str | None = None) -> Iterator[dict]:
        """Applications and service principals the product's own service principal owns (all it can manage
        with OwnedBy). One page holds them all: a principal may create 250 objects (999 is Graph's largest
        page). `select` ($select) names the properties wanted; "id" makes each object a few bytes."""
        return self._pages("listOwnedObjects", f"/v1.0/servicePrincipals/{owner_sp_id}/ownedObjects",
                           {"$top": str(page_size), **({"$select": select} if select else {})})

    def list_owned_applications(self, owner_sp_id: str) -> Iterator[dict]:
        return (item for item in self.list_owned_objects(owner_sp_id)
                if item.get("@odata.type") == "#microsoft.graph.application")

    # deleted items --------------------------------------------------------------------------------
    def find_deleted_application(self, unique_name: str) -> dict | None:
        """The application in deleted items that keeps this uniqueName taken (doc: directory-deleteditems-list,
        which filters as the cast type does: uniqueName supports eq)."""
        flt = f"uniqueName eq '{unique_name.replace(chr(39), chr(39) * 2)}'"
        for item in self._pages("listDeletedItems", "/v1.0/directory/deletedItems/microsoft.graph.application",
                                {"$filter": flt}):
            return item
        return None

    def list_deleted(self, kind: str, tag: str) -> list[dict]:
        """Applications or service principals (`kind`) in deleted items that carry `tag`."""
        flt = f"tags/any(t:t eq '{tag.replace(chr(39), chr(39) * 2)}')"
        return list(self._pages("listDeletedItems", f"/v1.0/directory/deletedItems/microsoft.graph.{kind}",
                                {"$filter": flt, "$top": "999"}))

    def purge_deleted(self, object_id: str, *, missing_ok: bool = True) -> bool:
        """Permanently delete an application or service principal from deleted items (doc:
        directory-deleteditems-delete; Application.ReadWrite.OwnedBy may, for what it owns): its name and its
        place in the identity's object quota come back at once. False when it was not there."""
        status, _, _ = self._rest.call(
            "permanentlyDeleteItem", "DELETE", f"/v1.0/directory/deletedItems/{object_id}", ok_missing=missing_ok
        )
        return status != 404

    def add_password(self, object_id: str, display_name: str, end: str) -> dict:
        _, body, _ = self._rest.call(
            "addPassword",
            "POST",
            f"/v1.0/applications/{object_id}/addPassword",
            body={"passwordCredential": {"displayName": display_name, "endDateTime": end}},
            retry=False,  # not idempotent: the service layer retries after checking what went through
        )
        return body

    def remove_password(self, object_id: str, key_id: str) -> None:
        try:
            self._rest.call(
                "removePassword", "POST", f"/v1.0/applications/{object_id}/removePassword", body={"keyId": key_id}
            )
        except NotFoundError:
            pass  # already gone: the app or the credential

    def create_federated_credential(self, object_id: str, credential: dict) -> dict:
        _, body, _ = self._rest.call(
            "createFederatedIdentityCredential", "POST",
            f"/v1.0/applications/{object_id}/federatedIdentityCredentials", body=credential, retry=False,
        )
        return body

    def list_federated_credentials(self, object_id: str) -> list[dict]:
        return list(self._pages("listFederatedIdentityCredentials",
                                f"/v1.0/applications/{object_id}/federatedIdentityCredentials"))

    # service principals ---------------------------------------------------------------------------
    def create_service_principal(self, app_id: str, tags: list[str], *, assignment_required: bool = False) -> dict:
        """With `assignment_required` only principals holding one of its app roles get tokens for it, and only
        users and groups assigned to it may sign in through it (AADSTS50105)."""
        fields: dict = {"appId": app_id, "tags": tags}
        if assignment_required:
            fields["appRoleAssignmentRequired"] = True
        _, body, _ = self._rest.call(
            "createServicePrincipal", "POST", "/v1.0/servicePrincipals", body=fields, retry=False
        )
        return body

    def get_service_principal(self, app_id: str) -> dict | None:
        _, body, _ = self._rest.call(
            "getServicePrincipal", "GET", f"/v1.0/servicePrincipals(appId='{_key(app_id)}')", ok_missing=True
        )
        return body

    def find_service_principal(self, service_principal_name: str) -> dict | None:
        """Look a first-party resource up by one of its servicePrincipalNames (never by a hard-coded id)."""
        return self._first_service_principal("servicePrincipalNames", service_principal_name)

    def find_service_principal_by_tag(self, tag: str) -> dict | None:
        return self._first_service_principal("tags", tag)

    def _first_service_principal(self, collection: str, value: str) -> dict | None:
        """The first service principal whose string collection holds `value` (an OData any() filter)."""
        flt = f"{collection}/any(x:x eq '{value.replace(chr(39), chr(39) * 2)}')"
        for sp in self._pages("listServicePrincipals", "/v1.0/servicePrincipals", {"$filter": flt}):
            return sp
        return None

    def delete_service_principal(self, sp_id: str) -> bool:
        status, _, _ = self._rest.call(
            "deleteServicePrincipal", "DELETE", f"/v1.0/servicePrincipals/{sp_id}", ok_missing=True
        )
        return status != 404

    # grants ---------------------------------------------------------------------------------------
    def assign_app_role(self, resource_sp_id: str, principal_id: str, app_role_id: str) -> dict:
        _, body, _ = self._rest.call(
            "createAppRoleAssignment",
            "POST",
            f"/v1.0/servicePrincipals/{resource_sp_id}/appRoleAssignedTo",
            body={"principalId": principal_id, "resourceId": resource_sp_id, "appRoleId": app_role_id},
            retry=False,  # not idempotent: the service looks for a lost answer's object before retrying
        )
        return body

    def list_assigned_to(self, resource_sp_id: str) -> list[dict]:
        """Assignments made on this service principal (who holds its roles, or may sign in to it)."""
        return list(self._pages("listAppRoleAssignments",
                                f"/v1.0/servicePrincipals/{resource_sp_id}/appRoleAssignedTo"))

    def list_app_role_assignments(self, sp_id: str) -> list[dict]:
        """App roles granted to this service principal."""
        return list(self._pages("listAppRoleAssignments", f"/v1.0/servicePrincipals/{sp_id}/appRoleAssignments"))

    def find_app_role_assignment(self, sp_id: str, resource_sp_id: str, app_role_id: str) -> dict | None:
        """This service principal's assignment of one app role of one resource, if it holds it."""
        return next((a for a in self.list_app_role_assignments(sp_id)
                     if a.get("resourceId") == resource_sp_id and a.get("appRoleId") == app_role_id), None)

    def list_app_role_assigned_to(self, resource_sp_id: str) -> list[dict]:
        """App roles of this resource granted to anyone (users, groups, service principals)."""
        return list(self._pages("listAppRoleAssignments",
                                f"/v1.0/servicePrincipals/{resource_sp_id}/appRoleAssignedTo"))

    def delete_app_role_assignment(self, resource_sp_id: str, assignment_id: str) -> None:
        self._rest.call(
            "deleteAppRoleAssignment",
            "DELETE",
            f"/v1.0/servicePrincipals/{resource_sp_id}/appRoleAssignedTo/{assignment_id}",
            ok_missing=True,
        )

    def grant_delegated(self, client_sp_id: str, resource_sp_id: str, scope: str) -> dict:
        """Admin consent for every user (consentType AllPrincipals)."""
        _, body, _ = self._rest.call(
            "createOAuth2PermissionGrant",
            "POST",
            "/v1.0/oauth2PermissionGrants",
            body={"clientId": client_sp_id, "consentType": "AllPrincipals", "resourceId": resource_sp_id,
                  "scope": scope},
            retry=False,
        )
        return body

    def list_grants(self, client_sp_id: str) -> list[dict]:
        return list(self._pages(
            "listOAuth2PermissionGrants", "/v1.0/oauth2PermissionGrants", {"$filter": f"clientId eq '{client_sp_id}'"}
        ))

    def delete_grant(self, grant_id: str) -> None:
        self._rest.call(
            "deleteOAuth2PermissionGrant", "DELETE", f"/v1.0/oauth2PermissionGrants/{grant_id}", ok_missing=True
        )

    # owners (applications and service principals) -----------------------------------------------------
    def list_owners(self, collection: str, object_id: str) -> list[str]:
        """Object ids of the owners of an application or service principal (`collection`: applications,
        servicePrincipals)."""
        return [o["id"] for o in self._pages("listOwners", f"/v1.0/{collection}/{object_id}/owners")
                if isinstance(o, dict) and "id" in o]

    def add_owner(self, collection: str, object_id: str, owner_id: str) -> None:
        """POST .../owners/$ref (needs Application.ReadWrite.All). An owner already there is done."""
        try:
            self._rest.call("addOwner", "POST", f"/v1.0/{collection}/{object_id}/owners/$ref",
                            body={"@odata.id": f"{GRAPH_DIRECTORY_OBJECTS}/{owner_id}"})
        except UpstreamError as exc:
            if exc.status != 400 or owner_id.lower() not in {o.lower() for o in self.list_owners(collection,
                                                                                                 object_id)}:
                raise

    def remove_owner(self, collection: str, object_id: str, owner_id: str) -> None:
        self._rest.call("removeOwner", "DELETE", f"/v1.0/{collection}/{object_id}/owners/{owner_id}/$ref",
                        ok_missing=True)

    # directory ----------------------------------------------------------------------------------------
    def object_types(self, object_ids: Sequence[str], *, types: Sequence[str] = ()) -> dict[str, str]:
        """Which of `object_ids` exist: each found id (lower case) with its type (`user`, `group`,
        `servicePrincipal`, `application`, ...). An id missing from the answer has no object, or not one
        Graph shows yet. One POST /directoryObjects/getByIds per 1,000 ids (its documented limit); `types`
        limits the search to those collections. Needs Directory.Read.All."""
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(i.lower() for i in object_ids))
        for start in range(0, len(unique), 1000):
            body: dict[str, list[str]] = {"ids": unique[start:start + 1000]}
            if types:
                body["types"] = list(types)
            # A read, though a POST: safe to retry.
            _, answer, _ = self._rest.call("getByIds", "POST", "/v1.0/directoryObjects/getByIds", body=body)
            for item in (answer or {}).get("value") or []:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    found[item["id"].lower()] = str(item.get("@odata.type", "")).rsplit(".", 1)[-1]
        return found

    # policies -------------------------------------------------------------------------------------
    def get_default_app_management_policy(self) -> dict | None:
        """The tenant default app management policy; None when this identity may not read it (403: it lacks
        Policy.Read.All)."""
        try:
            _, body, _ = self._rest.call("getDefaultAppManagementPolicy", "GET",
                                         "/v1.0/policies/defaultAppManagementPolicy")
        except UpstreamError as exc:
            if exc.status == 403:
                return None
            raise
        return body

    # paging ---------------------------------------------------------------------------------------
    def _pages(self, operation: str, path: str, params: dict[str, str] | None = None) -> Iterator[Any]:
        return self._rest.pages(operation, path, params, link="@odata.nextLink")
