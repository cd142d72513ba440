"""Graph routes for applications, their passwords and federated identity credentials."""
from __future__ import annotations

from starlette.responses import Response

from ..web import Req
from .backend_applications import render_application
from .exceptions import bad_request
from .http import address, caller, collection, entity, no_content, routes_for


def _json(req: Req):
    try:
        return req.json()
    except ValueError:
        raise bad_request("Empty Payload. JSON content expected.") from None


def list_applications(req: Req) -> Response:
    apps = req.core.graph.applications.list(caller(req))
    return collection(req, [render_application(a) for a in apps], "applications")


def create_application(req: Req) -> Response:
    app = req.core.graph.applications.create(caller(req), _json(req))
    return entity(req, render_application(app), "applications/$entity", 201)


def get_application(req: Req) -> Response:
    app = req.core.graph.applications.get(caller(req), address(req))
    return entity(req, render_application(app), "applications/$entity")


def patch_application(req: Req) -> Response:
    """PATCH by id updates; PATCH by uniqueName is Graph's upsert: 201 with the new object when
    `Prefer: create-if-missing` created it, 204 when it updated an existing one."""
    applications, who, addr, body = req.core.graph.applications, caller(req), address(req), _json(req)
    if addr[0] != "uniqueName":
        applications.update(who, addr, body)
        return no_content(req)
    prefer = {p.strip().lower() for p in req.headers.get("prefer", "").split(",")}
    app, created = applications.upsert(who, addr[1], body, create_if_missing="create-if-missing" in prefer)
    if created:
        return entity(req, render_application(app), "applications/$entity", 201)
    return no_content(req)


def delete_application(req: Req) -> Response:
    req.core.graph.applications.delete(caller(req), address(req))
    return no_content(req)


def add_password(req: Req) -> Response:
    cred = req.core.graph.applications.add_password(caller(req), address(req), _json(req))
    return entity(req, cred, "microsoft.graph.passwordCredential")


def remove_password(req: Req) -> Response:
    req.core.graph.applications.remove_password(caller(req), address(req), _json(req))
    return no_content(req)


def create_fic(req: Req) -> Response:
    addr = address(req)
    fic = req.core.graph.applications.create_fic(caller(req), addr, _json(req))
    app_id = fic.pop("_appObjectId")
    # The documented response also names the new object by its directory path in @odata.id.
    odata_id = (f"{req.core.graph_endpoint}/v2/{req.core.tenant_id}/directoryObjects/$/"
                f"Microsoft.DirectoryServices.Application('{app_id}')/federatedIdentityCredentials/{fic['id']}")
    return entity(req, {"@odata.id": odata_id, **fic},
                  f"applications('{app_id}')/federatedIdentityCredentials/$entity", 201)


def list_fics(req: Req) -> Response:
    addr = address(req)
    fics = req.core.graph.applications.list_fics(caller(req), addr)
    return collection(req, fics, f"applications('{addr[1]}')/federatedIdentityCredentials")


def delete_fic(req: Req) -> Response:
    req.core.graph.applications.delete_fic(caller(req), address(req), req.path_params["fic"])
    return no_content(req)


def routes(core) -> list:
    fics = "/applications/{ref}/federatedIdentityCredentials"
    return routes_for(core, [
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
    ])
