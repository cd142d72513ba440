"""Graph routes for service principals, app role assignments, delegated permission grants, owned objects."""
from __future__ import annotations

from starlette.responses import Response

from ..web import Req
from .backend_principals import SPS
from .http import address, caller, collection, entity, no_content, routes_for
from .responses_applications import _json


def create_sp(req: Req) -> Response:
    return entity(req, req.core.graph.principals.create(caller(req), _json(req)),
                  "servicePrincipals/$entity", 201)


def get_sp(req: Req) -> Response:
    return entity(req, req.core.graph.principals.get(caller(req), address(req)), "servicePrincipals/$entity")


def list_sps(req: Req) -> Response:
    return collection(req, req.core.graph.principals.list(caller(req)), "servicePrincipals")


def delete_sp(req: Req) -> Response:
    req.core.graph.principals.delete(caller(req), address(req))
    return no_content(req)


def _sp_id(req: Req) -> str:
    kind, value = address(req)
    if kind == "id":
        return value
    return req.core.graph.require(SPS, kind, value)["id"]


def create_assignment(req: Req) -> Response:
    sp_id = _sp_id(req)
    body = req.core.graph.principals.create_assignment(caller(req), sp_id, _json(req))
    return entity(req, body, f"servicePrincipals('{sp_id}')/appRoleAssignedTo/$entity", 201)


def list_assigned_to(req: Req) -> Response:
    sp_id = _sp_id(req)
    items = req.core.graph.principals.list_assigned_to(caller(req), sp_id)
    return collection(req, items, f"servicePrincipals('{sp_id}')/appRoleAssignedTo")


def list_assignments_of(req: Req) -> Response:
    sp_id = _sp_id(req)
    items = req.core.graph.principals.list_assignments_of(caller(req), sp_id)
    return collection(req, items, f"servicePrincipals('{sp_id}')/appRoleAssignments")


def delete_assignment(req: Req) -> Response:
    req.core.graph.principals.delete_assignment(caller(req), _sp_id(req), req.path_params["assignment"])
    return no_content(req)


def owned_objects(req: Req) -> Response:
    return collection(req, req.core.graph.principals.owned_objects(caller(req), _sp_id(req)), "directoryObjects")


def create_grant(req: Req) -> Response:
    return entity(req, req.core.graph.principals.create_grant(caller(req), _json(req)), "oauth2PermissionGrants/$entity",
                  201)


def list_grants(req: Req) -> Response:
    return collection(req, req.core.graph.principals.list_grants(caller(req)), "oauth2PermissionGrants")


def get_grant(req: Req) -> Response:
    return entity(req, req.core.graph.principals.get_grant(caller(req), req.path_params["grant"]),
                  "oauth2PermissionGrants/$entity")


def update_grant(req: Req) -> Response:
    req.core.graph.principals.update_grant(caller(req), req.path_params["grant"], _json(req))
    return no_content(req)


def delete_grant(req: Req) -> Response:
    req.core.graph.principals.delete_grant(caller(req), req.path_params["grant"])
    return no_content(req)


def routes(core) -> list:
    assigned = "/servicePrincipals/{ref}/appRoleAssignedTo"
    return routes_for(core, [
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
        ("/oauth2PermissionGrants", ["POST"], "graph.createOAuth2PermissionGrant", create_grant),
        ("/oauth2PermissionGrants", ["GET"], "graph.listOAuth2PermissionGrants", list_grants),
        ("/oauth2PermissionGrants/{grant}", ["GET"], "graph.listOAuth2PermissionGrants", get_grant),
        ("/oauth2PermissionGrants/{grant}", ["PATCH"], "graph.updateOAuth2PermissionGrant", update_grant),
        ("/oauth2PermissionGrants/{grant}", ["DELETE"], "graph.deleteOAuth2PermissionGrant", delete_grant),
    ])
