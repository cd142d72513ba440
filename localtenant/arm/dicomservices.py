"""Microsoft.HealthcareApis/workspaces/dicomservices: the DICOM service resource as ARM holds it. No HTTP.

Only what the local DICOM front and its clients read: `properties.corsConfiguration` ({origins, headers,
methods, maxAge, allowCredentials}; "Configure cross-origin resource sharing" in the DICOM service docs) and
`properties.authenticationConfiguration` ({authority, audiences}), with the `etag` ARM returns. Control-plane
permissions come from the assigned role's `resources` actions (roles.py).

A PUT replaces the resource (DICOM Services - Create Or Update) as a long-running operation
(azure-rest-api-specs, healthcare-apis 2024-03-31: `x-ms-long-running-operation`, no If-Match parameter): it
answers 202 with `provisioningState` `Accepted` and an `Azure-AsyncOperation` URL; the resource reads
`Updating` (with its old properties: the data plane keeps the old CORS) until the operation ends
`dicomServiceUpdateMs` later on the tenant clock, then `Succeeded` with the new ones. A PUT while one is in
flight is 409. `If-Match` is not a declared parameter, so it is ignored: it guards nothing.
"""
from __future__ import annotations

import re
import uuid
from typing import Any

from ..graph.objects import iso_precise

from .backend import ArmBackend
from .exceptions import ArmError, authorization_failed

TABLE = "dicomServices"
OPERATIONS = "dicomServiceOperations"
TYPE = "Microsoft.HealthcareApis/workspaces/dicomservices"
ID = re.compile(r"(?i)^/subscriptions/[^/]+/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.HealthcareApis/"
                r"workspaces/(?P<ws>[^/]+)/dicomservices/(?P<name>[^/]+)$")
ORIGIN = re.compile(r"^https?://[^\s/?#*]+$")
METHODS = {"DELETE", "GET", "HEAD", "MERGE", "OPTIONS", "PATCH", "POST", "PUT"}
CORS_KEYS = {"origins", "headers", "methods", "maxAge", "allowCredentials"}


def empty_cors() -> dict[str, Any]:
    return {"origins": [], "headers": [], "methods": [], "maxAge": None, "allowCredentials": False}


class DicomServices:
    def __init__(self, arm: ArmBackend) -> None:
        self.arm, self.store = arm, arm.store

    def _require(self, oid: str | None, resource_id: str, action: str) -> None:
        if oid is not None and not self.arm.has(oid, resource_id, lambda r: action in r.get("resources", ())):
            raise authorization_failed(oid, f"{TYPE}/{action}", resource_id)

    def find(self, resource_id: str) -> dict[str, Any] | None:
        found = self.store.get(TABLE, resource_id.rstrip("/").lower())
        return self._settle(found) if found is not None else None

    def _settle(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Ends the resource's operation if its time has come: the new properties apply, a new etag."""
        op = resource.get("_operation")
        if op and op["until"] <= self.arm.directory.now():
            resource["properties"] = resource.pop("_pending")
            resource["etag"] = f'"{uuid.uuid4()}"'
            resource.pop("_operation")
            self.store.put(TABLE, resource["_key"], resource)
            self.store.put(OPERATIONS, op["id"], {**op, "status": "Succeeded"})
        return resource

    def get(self, oid: str | None, resource_id: str) -> dict[str, Any]:
        self._require(oid, resource_id, "read")
        found = self.find(resource_id)
        if found is None:
            m = ID.match(resource_id)
            raise ArmError(404, "ResourceNotFound", f"The Resource '{TYPE}/{m['ws'] if m else '?'}/"
                           f"{m['name'] if m else '?'}' under resource group '{m['rg'] if m else '?'}' was not "
                           "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
        return found

    def put(self, oid: str | None, resource_id: str, body: Any, *, duration: float | None = None
            ) -> tuple[dict, dict | None]:
        """(the resource as the answer shows it, the operation or None when it completed at once: a seed)."""
        m = ID.match(resource_id.rstrip("/"))
        if m is None:
            raise ArmError(400, "InvalidResourceId", f"'{resource_id}' is not a DICOM service resource id.")
        self._require(oid, resource_id, "write")
        if not isinstance(body, dict) or not isinstance(body.get("properties", {}), dict):
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                           "deserialized: properties must be an object.")
        existing = self.find(resource_id)
        if existing is not None and existing.get("_operation"):
            raise ArmError(409, "Conflict", "The DICOM service is being updated (provisioningState Updating): "
                           "wait for the running operation to finish, then send the update again.")
        props = body.get("properties") or {}
        cors = cors_configuration(props.get("corsConfiguration"))
        key = resource_id.rstrip("/").lower()
        properties = {"provisioningState": "Succeeded", "corsConfiguration": cors,
                      "privateEndpointConnections": [], "publicNetworkAccess": "Enabled"}
        resource = {
            "id": f"/subscriptions/{resource_id.split('/')[2]}/resourceGroups/{m['rg']}/providers/"
                  f"Microsoft.HealthcareApis/workspaces/{m['ws']}/dicomservices/{m['name']}",
            "name": f"{m['ws']}/{m['name']}", "type": TYPE,
            "location": body.get("location") or (existing or {}).get("location") or "local",
            "tags": body.get("tags") if isinstance(body.get("tags"), dict) else {},
            "etag": (existing or {}).get("etag") or f'"{uuid.uuid4()}"', "_key": key,
            "properties": (existing or {}).get("properties") or {**properties, "corsConfiguration": empty_cors()},
        }
        now = self.arm.directory.now()
        wait = self.arm.directory.settings["dicomServiceUpdateMs"] / 1000.0 if duration is None else duration
        op = {"id": str(uuid.uuid4()), "resource": key, "status": "Requested", "startTime": iso_precise(now),
              "until": now + wait}
        resource["_pending"], resource["_operation"] = properties, op
        self.store.put(OPERATIONS, op["id"], op)
        self.store.put(TABLE, key, resource)
        self._settle(resource)
        if not resource.get("_operation"):
            return resource, None
        state = "Accepted" if existing is not None else "Creating"
        return {**resource, "properties": {**properties, "provisioningState": state}}, op

    def operation(self, oid: str | None, operation_id: str) -> dict[str, Any]:
        """The Azure-AsyncOperation status ("Operation Results - Get": id, name, status, startTime, endTime)."""
        op = self.store.get(OPERATIONS, operation_id)
        if op is None:
            raise ArmError(404, "NotFound", f"The operation '{operation_id}' was not found.")
        self._require(oid, op["resource"], "read")
        resource = self.store.get(TABLE, op["resource"])
        if resource is not None:
            self._settle(resource)
        op = self.store.get(OPERATIONS, operation_id)
        return op

    def state(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The resource as a GET shows it: Updating while an operation runs."""
        if resource.get("_operation"):
            return {**resource, "properties": {**resource["properties"], "provisioningState": "Updating"}}
        return resource

    @staticmethod
    def view(resource: dict[str, Any], *, authority: str, service_url: str | None) -> dict[str, Any]:
        """The resource as ARM answers it: the authority and service URL are the tenant's current ones."""
        out = {k: v for k, v in resource.items() if not k.startswith("_")}
        out["properties"] = dict(resource["properties"])
        out["properties"]["authenticationConfiguration"] = {
            "authority": authority, "audiences": ["https://dicom.healthcareapis.azure.com",
                                                  "https://dicom.healthcareapis.azure.com/"]}
        out["properties"]["serviceUrl"] = service_url
        return out

    def cors(self, resource_id: str) -> dict[str, Any]:
        """The CORS configuration the data plane applies: the last completed one."""
        found = self.find(resource_id)
        return (found or {}).get("properties", {}).get("corsConfiguration") or empty_cors()


def cors_configuration(value: Any) -> dict[str, Any]:
    """A corsConfiguration as the portal's rules have it: origins are scheme://host[:port] or "*", methods
    HTTP verbs, maxAge 0-86400 seconds, and allowCredentials is refused together with the "*" origin."""
    if value is None:
        return empty_cors()
    def bad(detail: str) -> ArmError:
        return ArmError(400, "InvalidCorsConfiguration", f"properties.corsConfiguration is invalid: {detail}.")
    if not isinstance(value, dict) or set(value) - CORS_KEYS:
        raise bad(f"it is an object with only {', '.join(sorted(CORS_KEYS))}")
    out = empty_cors()
    for key in ("origins", "headers", "methods"):
        items = value.get(key) or []
        if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
            raise bad(f"{key} must be a list of non-empty strings")
        out[key] = list(dict.fromkeys(items))
    for origin in out["origins"]:
        if origin != "*" and not ORIGIN.match(origin):
            raise bad(f"origin {origin!r} is not scheme://host[:port] or *")
    for method in out["methods"]:
        if method != "*" and method.upper() not in METHODS:
            raise bad(f"method {method!r} is not an HTTP method")
    max_age = value.get("maxAge")
    if max_age is not None and (not isinstance(max_age, int) or isinstance(max_age, bool) or not 0 <= max_age <= 86400):
        raise bad("maxAge is a whole number of seconds between 0 and 86400")
    out["maxAge"] = max_age
    credentials = value.get("allowCredentials", False)
    if not isinstance(credentials, bool):
        raise bad("allowCredentials is true or false")
    if credentials and "*" in out["origins"]:
        raise bad("allowCredentials cannot be set when origins has *")
    out["allowCredentials"] = credentials
    return out
