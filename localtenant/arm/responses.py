"""ARM routes: `{scope}/providers/Microsoft.Authorization/roleAssignments[/{name}]?api-version=...`
("Role Assignments - Create / Get / Delete / List For Scope", api-version 2022-04-01); role definitions at a
scope, listed with `$filter=roleName eq '..'` or `type eq 'BuiltInRole'` ("Role Definitions - List / Get",
2022-04-01; how `az role assignment create --role "<name>"` finds a role); and the subscriptions a caller can
see ("Subscriptions - List / Get", 2022-12-01; what `az login` reads)."""
from __future__ import annotations

import re

from starlette.responses import JSONResponse, Response

from ..entra.tokens import InvalidToken
from ..graph.objects import iso_precise, public
from ..web import Req, ServiceSpec, json_response, routes as routes_table
from . import exceptions as ax

SPEC = ServiceSpec("arm", ax.ArmError, ax.render, ax.from_fault)
AUDIENCES = {"https://management.azure.com/", "https://management.core.windows.net/"}
BASE = "/{scope:path}/providers/Microsoft.Authorization/roleAssignments"


def _caller(req: Req) -> str:
    api_version = req.query.get("api-version")
    if not api_version:
        raise ax.ArmError(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is "
                          "required for all requests.")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", api_version):
        raise ax.ArmError(400, "InvalidApiVersionParameter", f"The api-version '{api_version}' is invalid.")
    token = req.bearer()
    challenge = {"WWW-Authenticate": f'Bearer authorization_uri="{req.core.authority_host}/{req.core.tenant_id}", '
                                     'error="invalid_token", error_description="The access token is invalid."'}
    if token is None:
        raise ax.ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is "
                          "missing.", challenge)
    try:
        return req.core.issuer.validate(token, AUDIENCES)["oid"]
    except InvalidToken as e:
        code = "ExpiredAuthenticationToken" if "expired" in str(e) else "InvalidAuthenticationToken"
        raise ax.ArmError(401, code, f"The access token is invalid. {e}", challenge) from None


def _scope(req: Req) -> str:
    return "/" + req.path_params["scope"].strip("/")


def _view(a: dict) -> dict:
    return public(a)


def _body(req: Req):
    try:
        return req.json()
    except ValueError:
        raise ax.ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                          "deserialized.") from None


def put(req: Req) -> JSONResponse:
    oid = _caller(req)
    a = req.core.arm.put(oid, _scope(req), req.path_params["name"], _body(req))
    return json_response(_view(a), 201)


def get(req: Req) -> JSONResponse:
    return json_response(_view(req.core.arm.get(_caller(req), _scope(req), req.path_params["name"])))


def delete(req: Req) -> Response:
    a = req.core.arm.delete(_caller(req), _scope(req), req.path_params["name"])
    return json_response(_view(a)) if a else Response(status_code=204)


def list_(req: Req) -> JSONResponse:
    items = req.core.arm.list(_caller(req), _scope(req), req.query.get("$filter"))
    return json_response({"value": [_view(a) for a in items]})


def list_subscriptions(req: Req) -> JSONResponse:
    items = req.core.arm.subscriptions(_caller(req))
    return json_response({"value": items, "count": {"type": "Total", "value": len(items)}})


def get_subscription(req: Req) -> JSONResponse:
    return json_response(req.core.arm.subscription(_caller(req), req.path_params["subscription"]))


def list_role_definitions(req: Req) -> JSONResponse:
    return json_response({"value": req.core.arm.role_definitions(_caller(req), _scope(req),
                                                                 req.query.get("$filter"))})


def get_role_definition(req: Req) -> JSONResponse:
    return json_response(req.core.arm.role_definition(_caller(req), _scope(req), req.path_params["name"]))


def unknown(req: Req, allowed: list[str]) -> ax.ArmError:
    """A path ARM does not route, or a method it does not take there, in ARM's error shape."""
    if allowed:
        return ax.ArmError(405, "MethodNotAllowed", f"The requested method '{req.method}' is not allowed on "
                           f"'{req.raw.url.path}'; use {', '.join(allowed)}.")
    return ax.ArmError(404, "NotFound", f"The requested path '{req.raw.url.path}' was not found.")


DICOM_SERVICE = ("/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.HealthcareApis/"
                 "workspaces/{workspace}/dicomservices/{name}")


def _dicom_view(req: Req, resource: dict) -> dict:
    seeded = resource["id"].lower() == req.core.seed.dicom_resource_id.lower()
    return req.core.dicom_services.view(resource, authority=f"{req.core.authority_host}/{req.core.tenant_id}",
                                        service_url=req.core.dicom_url if seeded else None)


def get_dicom_service(req: Req) -> JSONResponse:
    """DICOM Services - Get."""
    services = req.core.dicom_services
    resource = services.get(_caller(req), req.raw.url.path)
    return json_response(_dicom_view(req, services.state(resource)), headers={"ETag": resource["etag"]})


def put_dicom_service(req: Req) -> JSONResponse:
    """DICOM Services - Create Or Update, a long-running operation: 202 with Azure-AsyncOperation (the ARM
    async pattern; the 2024-03-31 example's 202 carries provisioningState Accepted). If-Match is not a declared
    parameter and is ignored."""
    oid = _caller(req)
    resource, op = req.core.dicom_services.put(oid, req.raw.url.path, _body(req))
    if op is None:
        return json_response(_dicom_view(req, resource), headers={"ETag": resource["etag"]})
    status_url = (f"{req.core.arm_endpoint}/subscriptions/{req.path_params['subscription']}/providers/"
                  f"Microsoft.HealthcareApis/locations/{resource['location']}/operationresults/{op['id']}"
                  f"?api-version={req.query.get('api-version')}")
    return json_response(_dicom_view(req, resource), 202, headers={"Azure-AsyncOperation": status_url})


def get_dicom_operation(req: Req) -> JSONResponse:
    """Operation Results - Get (healthcare-apis 2024-03-31 example OperationResultsGet): `status` is
    `Requested` while it runs, then `Succeeded`."""
    op = req.core.dicom_services.operation(_caller(req), req.path_params["operation"])
    out = {"id": f"/subscriptions/{req.path_params['subscription']}/providers/Microsoft.HealthcareApis/locations/"
                 f"{req.path_params['location']}/operationresults/{op['id']}", "name": op["id"],
           "status": op["status"], "startTime": op["startTime"], "properties": {}}
    if op["status"] == "Succeeded":
        out["endTime"] = iso_precise(op["until"])
    return json_response(out)


def routes(core) -> list:
    definitions = "/{scope:path}/providers/Microsoft.Authorization/roleDefinitions"
    return routes_table(core, SPEC, [
        ("/subscriptions", ["GET"], "arm.listSubscriptions", list_subscriptions),
        ("/subscriptions/{subscription}", ["GET"], "arm.getSubscription", get_subscription),
        (definitions, ["GET"], "arm.listRoleDefinitions", list_role_definitions),
        (definitions + "/{name}", ["GET"], "arm.getRoleDefinition", get_role_definition),
        (BASE + "/{name}", ["PUT"], "arm.createRoleAssignment", put),
        (BASE + "/{name}", ["GET"], "arm.getRoleAssignment", get),
        (BASE + "/{name}", ["DELETE"], "arm.deleteRoleAssignment", delete),
        (BASE, ["GET"], "arm.listRoleAssignments", list_),
        (DICOM_SERVICE, ["GET"], "arm.getDicomService", get_dicom_service),
        (DICOM_SERVICE, ["PUT"], "arm.putDicomService", put_dicom_service),
        ("/subscriptions/{subscription}/providers/Microsoft.HealthcareApis/locations/{location}/operationresults/"
         "{operation}", ["GET"], "arm.getDicomServiceOperation", get_dicom_operation),
    ])
