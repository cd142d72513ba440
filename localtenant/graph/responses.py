"""Graph v1.0 routes for applications (with their passwords and federated identity credentials), service
principals, app role assignments, delegated permission grants, owned objects, directoryObjects/getByIds and
deleted items.

- The caller is the bearer token's principal with the Graph app roles it carries; the token's audience must
  be Graph.
- An object is addressed as `/applications/{id}` or by Graph's alternate-key form
  `/applications(uniqueName='..')`, `(appId='..')`, `('{id}')`.
- Entities carry `@odata.context`; collections honour $filter, $select and $top with @odata.nextLink
  (odata.py).
"""
from __future__ import annotations

import re
from typing import Any, Callable

from starlette.responses import JSONResponse, Response

from ..entra.tokens import InvalidToken
from ..web import Req, ServiceSpec, routes as routes_table
from . import odata
from .backend import Caller
from .objects import APPS, SPS, render_application
from .exceptions import GraphError, bad_request, from_fault, render, unauthenticated

SPEC = ServiceSpec("graph", GraphError, render, from_fault)
AUDIENCES = {"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"}
_KEY = re.compile(r"^(?P<prop>uniqueName|appId|id)='(?P<value>(?:[^']|'')*)'$|^'(?P<bare>[^']*)'$")


def _caller(req: Req) -> Caller:
    token = req.bearer()
    if token is None:
        raise unauthenticated("Access token is empty.")
    try:
        claims = req.core.issuer.validate(token, AUDIENCES)
    except InvalidToken as e:
        raise unauthenticated(str(e)) from None
    # A user's token (delegated) carries `scp`; an application's own token (app-only) carries `roles` only.
    scopes = claims.get("scp")
    return Caller(oid=claims["oid"], roles=set(claims.get("roles", [])), arrived=req.arrived,
                  scopes=set(scopes.split()) if isinstance(scopes, str) else set(), delegated="scp" in claims,
                  app_id=claims.get("appid") or claims.get("azp"))


def _address(req: Req) -> tuple[str, str]:
    if "id" in req.path_params:
        return "id", req.path_params["id"]
    m = _KEY.match(req.path_params["key"])
    if m is None:
        raise bad_request(f"Invalid key predicate '{req.path_params['key']}'.")
    if m.group("bare") is not None:
        return "id", m.group("bare")
    return m.group("prop"), m.group("value").replace("''", "'")


def _sp_id(req: Req) -> str:
    kind, value = _address(req)
    if kind == "id":
        return value
    return req.core.graph.require(SPS, kind, value)["id"]


def _body(req: Req) -> Any:
    try:
        return req.json()
    except ValueError:
        raise bad_request("Empty Payload. JSON content expected.") from None


def _context(req: Req, fragment: str) -> str:
    return f"{req.core.graph_endpoint}/v1.0/$metadata#{fragment}"


def _headers(req: Req) -> dict[str, str]:
    return {"request-id": req.request_id,
            "client-request-id": req.headers.get("client-request-id") or req.request_id}


def _entity(req: Req, body: dict[str, Any], fragment: str, status: int = 200) -> JSONResponse:
    fields = odata.select_fields(req.query)
    ctx = fragment if not fields else fragment.replace("/$entity", f"({','.join(fields)})/$entity")
    return JSONResponse({"@odata.context": _context(req, ctx), **odata.select(body, fields)}, status_code=status,
                        headers=_headers(req))


def _collection(req: Req, items: list[dict[str, Any]], fragment: str) -> JSONResponse:
    keep = odata.parse_filter(req.query.get("$filter"))
    items = [o for o in items if keep(o)]
    fields = odata.select_fields(req.query)
    ctx = fragment if not fields else f"{fragment}({','.join(fields)})"
    base = req.url.split("?", 1)[0]
    return JSONResponse(odata.page(items, req.query, base, _context(req, ctx)), headers=_headers(req))


def _no_content(req: Req) -> Response:
    return Response(status_code=204, headers=_headers(req))


# -- applications ----------------------------------------------------------------------------------------------
def list_applications(req: Req) -> Response:
    apps = req.core.graph.applications.list(_caller(req))
    return _collection(req, [render_application(a) for a in apps], "applications")


def create_application(req: Req) -> Response:
    app = req.core.graph.applications.create(_caller(req), _body(req))
    return _entity(req, render_application(app), "applications/$entity", 201)


def get_application(req: Req) -> Response:
    app = req.core.graph.applications.get(_caller(req), _address(req))
    return _entity(req, render_application(app), "applications/$entity")


def patch_application(req: Req) -> Response:
    """PATCH by id updates; PATCH by uniqueName is Graph's upsert: 201 with the new object when
    `Prefer: create-if-missing` created it, 204 when it updated an existing one."""
    applications, who, addr, body = req.core.graph.applications, _caller(req), _address(req), _body(req)
    if addr[0] != "uniqueName":
        applications.update(who, addr, body)
        return _no_content(req)
    prefer = {p.strip().lower() for p in req.headers.get("prefer", "").split(",")}
    app, created = applications.upsert(who, addr[1], body, create_if_missing="create-if-missing" in prefer)
    if created:
        return _entity(req, render_application(app), "applications/$entity", 201)
    return _no_content(req)


def delete_application(req: Req) -> Response:
    req.core.graph.applications.delete(_caller(req), _address(req))
    return _no_content(req)


def add_password(req: Req) -> Response:
    cred = req.core.graph.applications.add_password(_caller(req), _address(req), _body(req))
    return _entity(req, cred, "microsoft.graph.passwordCredential")


def remove_password(req: Req) -> Response:
    req.core.graph.applications.remove_password(_caller(req), _address(req), _body(req))
    return _no_content(req)


def create_fic(req: Req) -> Response:
    addr = _address(req)
    fic = req.core.graph.applications.create_fic(_caller(req), addr, _body(req))
    app_id = fic.pop("_appObjectId")
    # The documented response also names the new object by its directory path in @odata.id.
    odata_id = (f"{req.core.graph_endpoint}/v2/{req.core.tenant_id}/directoryObjects/$/"
                f"Microsoft.DirectoryServices.Application('{app_id}')/federatedIdentityCredentials/{fic['id']}")
    return _entity(req, {"@odata.id": odata_id, **fic},
                   f"applications('{app_id}')/federatedIdentityCredentials/$entity", 201)


def list_fics(req: Req) -> Response:
    addr = _address(req)
    fics = req.core.graph.applications.list_fics(_caller(req), addr)
    return _collection(req, fics, f"applications('{addr[1]}')/federatedIdentityCredentials")


def delete_fic(req: Req) -> Response:
    req.core.graph.applications.delete_fic(_caller(req), _address(req), req.path_params["fic"])
    return _no_content(req)


# -- deleted items ---------------------------------------------------------------------------------------------
def _deleted_list(kind: str) -> Callable[[Req], Response]:
    def handler(req: Req) -> Response:
        items = req.core.graph.deleted.list(_caller(req), kind)
        return _collection(req, items, f"directory/deletedItems/microsoft.graph.{kind}")
    return handler


def get_deleted(req: Req) -> Response:
    return _entity(req, req.core.graph.deleted.get(_caller(req), req.path_params["id"]), "directoryObjects/$entity")


def purge_deleted(req: Req) -> Response:
    req.core.graph.deleted.purge(_caller(req), req.path_params["id"])
    return _no_content(req)


def restore_deleted(req: Req) -> Response:
    return _entity(req, req.core.graph.deleted.restore(_caller(req), req.path_params["id"]),
                   "directoryObjects/$entity")


# -- service principals, assignments, grants ---------------------------------------------------------------
def create_sp(req: Req) -> Response:
    return _entity(req, req.core.graph.principals.create(_caller(req), _body(req)), "servicePrincipals/$entity",
                   201)


def get_sp(req: Req) -> Response:
    return _entity(req, req.core.graph.principals.get(_caller(req), _address(req)), "servicePrincipals/$entity")


def list_sps(req: Req) -> Response:
    return _collection(req, req.core.graph.principals.list(_caller(req)), "servicePrincipals")


def delete_sp(req: Req) -> Response:
    req.core.graph.principals.delete(_caller(req), _address(req))
    return _no_content(req)


def create_assignment(req: Req) -> Response:
    sp_id = _sp_id(req)
    body = req.core.graph.principals.create_assignment(_caller(req), sp_id, _body(req))
    return _entity(req, body, f"servicePrincipals('{sp_id}')/appRoleAssignedTo/$entity", 201)


def _assignments(req: Req, navigation: str) -> Response:
    """appRoleAssignedTo: the assignments made on this resource; appRoleAssignments: those this principal
    holds."""
    sp_id = _sp_id(req)
    principals = req.core.graph.principals
    listing = principals.list_assigned_to if navigation == "appRoleAssignedTo" else principals.list_assignments_of
    return _collection(req, listing(_caller(req), sp_id), f"servicePrincipals('{sp_id}')/{navigation}")


def list_assigned_to(req: Req) -> Response:
    return _assignments(req, "appRoleAssignedTo")


def list_assignments_of(req: Req) -> Response:
    return _assignments(req, "appRoleAssignments")


def delete_assignment(req: Req) -> Response:
    req.core.graph.principals.delete_assignment(_caller(req), _sp_id(req), req.path_params["assignment"])
    return _no_content(req)


def get_by_ids(req: Req) -> Response:
    found = req.core.graph.get_by_ids(_caller(req), _body(req))
    return JSONResponse({"@odata.context": _context(req, "directoryObjects"), "value": found},
                        headers=_headers(req))


def _owner_routes(collection: str, table: str) -> list:
    """GET owners, POST owners/$ref, DELETE owners/{id}/$ref of an application or a service principal."""
    def list_owners(req: Req) -> Response:
        return _collection(req, req.core.graph.owners.list(_caller(req), table, _address(req)), "directoryObjects")

    def add_owner(req: Req) -> Response:
        req.core.graph.owners.add(_caller(req), table, _address(req), _body(req))
        return _no_content(req)

    def remove_owner(req: Req) -> Response:
        req.core.graph.owners.remove(_caller(req), table, _address(req), req.path_params["owner"])
        return _no_content(req)

    owners = f"/{collection}/{{ref}}/owners"
    return [(owners, ["GET"], "graph.listOwners", list_owners),
            (owners + "/$ref", ["POST"], "graph.addOwner", add_owner),
            (owners + "/{owner}/$ref", ["DELETE"], "graph.removeOwner", remove_owner)]


def owned_objects(req: Req) -> Response:
    return _collection(req, req.core.graph.principals.owned_objects(_caller(req), _sp_id(req)), "directoryObjects")


def create_grant(req: Req) -> Response:
    return _entity(req, req.core.graph.principals.create_grant(_caller(req), _body(req)),
                   "oauth2PermissionGrants/$entity", 201)


def list_grants(req: Req) -> Response:
    return _collection(req, req.core.graph.principals.list_grants(_caller(req)), "oauth2PermissionGrants")


def get_grant(req: Req) -> Response:
    return _entity(req, req.core.graph.principals.get_grant(_caller(req), req.path_params["grant"]),
                   "oauth2PermissionGrants/$entity")


def update_grant(req: Req) -> Response:
    req.core.graph.principals.update_grant(_caller(req), req.path_params["grant"], _body(req))
    return _no_content(req)


def delete_grant(req: Req) -> Response:
    req.core.graph.principals.delete_grant(_caller(req), req.path_params["grant"])
    return _no_content(req)


def unknown(req: Req, allowed: list[str]) -> GraphError:
    """Graph routes by OData segment: an unknown one is 400 BadRequest "Resource not found for the segment
    '..'." (as public reports of v1.0 calls to beta-only segments show); a known resource asked with a
    method it does not take is 405."""
    if allowed:
        return GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request uri.")
    segment = req.raw.url.path.rstrip("/").rsplit("/", 1)[-1] or "/"
    return bad_request(f"Resource not found for the segment '{segment}'.", code="BadRequest")


POLICY_READERS = ("Policy.Read.All", "Policy.Read.ApplicationConfiguration",
                  "Policy.ReadWrite.ApplicationConfiguration")


def get_default_app_management_policy(req: Req) -> Response:
    """Policy.Read.All is the least privileged application permission ("Get tenantAppManagementPolicy")."""
    _caller(req).require(*POLICY_READERS)
    policy = req.core.graph.policies.default()
    odata_id = f"{req.core.graph_endpoint}/v2/{req.core.tenant_id}/defaultAppManagementPolicy/{policy['id']}"
    return _entity(req, {"@odata.id": odata_id, **policy}, "policies/defaultAppManagementPolicy/$entity")


def _rows(table: list[tuple[str, list[str], str | tuple[str, str], Callable]]) -> list:
    """A path with `{ref}` is served both as `/{id}` and as `({key})`, Graph's alternate-key form (the
    operation name may differ between the two). Each is also served with a trailing slash, which Graph
    accepts (the "Create federatedIdentityCredential" example posts to `.../federatedIdentityCredentials/`),
    where Starlette would otherwise answer a redirect."""
    out = []
    for path, methods, name, handler in table:
        names = name if isinstance(name, tuple) else (name, name)  # (by id, by alternate key)
        variants = [path.replace("/{ref}", "/{id}"), path.replace("/{ref}", "({key})")] if "{ref}" in path \
            else [path]
        out += [("/v1.0" + p + slash, methods, n, handler) for p, n in zip(variants, names) for slash in ("", "/")]
    return out


def routes(core) -> list:
    fics = "/applications/{ref}/federatedIdentityCredentials"
    assigned = "/servicePrincipals/{ref}/appRoleAssignedTo"
    deleted = "/directory/deletedItems"
    return routes_table(core, SPEC, _rows([
        ("/applications", ["GET"], "graph.listApplications", list_applications),
        ("/applications", ["POST"], "graph.createApplication", create_application),
        ("/applications/{ref}", ["GET"], "graph.getApplication", get_application),
        ("/applications/{ref}", ["PATCH"], ("graph.updateApplication", "graph.upsertApplication"),
         patch_application),
        ("/applications/{ref}", ["DELETE"], "graph.deleteApplication", delete_application),
        ("/applications/{ref}/addPassword", ["POST"], "graph.addPassword", add_password),
        ("/applications/{ref}/removePassword", ["POST"], "graph.removePassword", remove_password),
        (fics, ["POST"], "graph.createFederatedIdentityCredential", create_fic),
        (fics, ["GET"], "graph.listFederatedIdentityCredentials", list_fics),
        (fics + "/{fic}", ["DELETE"], "graph.deleteFederatedIdentityCredential", delete_fic),
        # The OData cast is part of the list route ("List deletedItems"); it must come before /{id}.
        (deleted + "/microsoft.graph.application", ["GET"], "graph.listDeletedItems", _deleted_list("application")),
        (deleted + "/microsoft.graph.servicePrincipal", ["GET"], "graph.listDeletedItems",
         _deleted_list("servicePrincipal")),
        (deleted + "/{id}", ["GET"], "graph.getDeletedItem", get_deleted),
        (deleted + "/{id}", ["DELETE"], "graph.permanentlyDeleteItem", purge_deleted),
        (deleted + "/{id}/restore", ["POST"], "graph.restoreDeletedItem", restore_deleted),
        ("/servicePrincipals", ["GET"], "graph.listServicePrincipals", list_sps),
        ("/servicePrincipals", ["POST"], "graph.createServicePrincipal", create_sp),
        ("/servicePrincipals/{ref}", ["GET"], "graph.getServicePrincipal", get_sp),
        ("/servicePrincipals/{ref}", ["DELETE"], "graph.deleteServicePrincipal", delete_sp),
        (assigned, ["POST"], "graph.createAppRoleAssignment", create_assignment),
        (assigned, ["GET"], "graph.listAppRoleAssignments", list_assigned_to),
        (assigned + "/{assignment}", ["DELETE"], "graph.deleteAppRoleAssignment", delete_assignment),
        ("/servicePrincipals/{ref}/appRoleAssignments", ["GET"], "graph.listAppRoleAssignments",
         list_assignments_of),
        ("/servicePrincipals/{ref}/ownedObjects", ["GET"], "graph.listOwnedObjects", owned_objects),
        *_owner_routes("applications", APPS),
        *_owner_routes("servicePrincipals", SPS),
        ("/directoryObjects/getByIds", ["POST"], "graph.getByIds", get_by_ids),
        ("/oauth2PermissionGrants", ["POST"], "graph.createOAuth2PermissionGrant", create_grant),
        ("/oauth2PermissionGrants", ["GET"], "graph.listOAuth2PermissionGrants", list_grants),
        ("/oauth2PermissionGrants/{grant}", ["GET"], "graph.listOAuth2PermissionGrants", get_grant),
        ("/oauth2PermissionGrants/{grant}", ["PATCH"], "graph.updateOAuth2PermissionGrant", update_grant),
        ("/oauth2PermissionGrants/{grant}", ["DELETE"], "graph.deleteOAuth2PermissionGrant", delete_grant),
        ("/policies/defaultAppManagementPolicy", ["GET"], "graph.getDefaultAppManagementPolicy",
         get_default_app_management_policy),
    ]))
