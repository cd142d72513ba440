"""The owners of applications and service principals: list, add ($ref), remove. No HTTP.

Graph v1.0 reference ("application: List owners", "Add owner", "Remove owner"; the servicePrincipal pages
say the same): owners are users or service principals (not groups); adding one is
`POST .../owners/$ref` with `{"@odata.id": ".../directoryObjects/{id}"}` → 204, and
"Application.ReadWrite.OwnedBy isn't sufficient to add another owner. Consent also to
Application.ReadWrite.All", so adding and removing need Application.ReadWrite.All here (stricter than kind:
the remove page is read the same way). A user (delegated Application.ReadWrite.All and Directory.Read.All) may
add and remove owners of what they own ("An owner can also add or remove other owners", "Assign enterprise
application owners"); `Caller.require_owner_change`. An owner already there is 400 Request_BadRequest "One or more added
object references already exist for the following modified properties: 'owners'." (the message public
scripts that call Graph match on); removing one that is not an owner is 404.
"""
from __future__ import annotations

import re
from typing import Any

from .backend import DIRECTORY_TYPES, GraphBackend
from .caller import Caller
from .exceptions import bad_request, links_exceeded, not_found
from .objects import APPS, GROUPS, SPS, USERS

OWNER_TYPES = {USERS: "user", SPS: "servicePrincipal"}
_REF = re.compile(r"/(?:directoryObjects|users|servicePrincipals)/([0-9a-fA-F-]{36})$")


class Owners:
    def __init__(self, backend: GraphBackend) -> None:
        self.backend = backend

    def _object(self, caller: Caller, table: str, addr: tuple[str, str]) -> dict[str, Any]:
        obj = self.backend.require(table, addr[0], addr[1])
        if table == APPS:
            caller.require_read(obj)
        elif caller.oid != obj["id"]:
            caller.require_read_all()
        return obj

    def list(self, caller: Caller, table: str, addr: tuple[str, str]) -> list[dict[str, Any]]:
        out = []
        for owner_id in self._object(caller, table, addr)["_owners"]:
            for owner_table, type_name in OWNER_TYPES.items():
                found = self.backend.find(owner_table, "id", owner_id)
                if found is not None:
                    render = DIRECTORY_TYPES[type_name.lower()][1]
                    out.append({"@odata.type": f"#microsoft.graph.{type_name}", **render(self.backend, found)})
        return out

    def add(self, caller: Caller, table: str, addr: tuple[str, str], body: Any) -> None:
        obj = self._writable(caller, table, addr)
        ref = body.get("@odata.id") if isinstance(body, dict) else None
        match = _REF.search(ref) if isinstance(ref, str) else None
        if match is None or set(body) != {"@odata.id"}:
            raise bad_request("Invalid object identifier in '@odata.id'.")
        owner_id = match.group(1).lower()
        if not any(self.backend.find(t, "id", owner_id) for t in OWNER_TYPES):
            if self.backend.find(GROUPS, "id", owner_id) is not None:
                raise bad_request("Only users and service principals can be owners of this object.")
            raise not_found(owner_id)
        if owner_id in (o.lower() for o in obj["_owners"]):
            raise bad_request("One or more added object references already exist for the following modified "
                              "properties: 'owners'.")
        limit = self.backend.settings["ownersPerObject"]
        if len(obj["_owners"]) >= limit:  # Entra service limits: 100 owners per object
            raise links_exceeded("owners of this object", limit)
        obj["_owners"].append(owner_id)
        self.backend.save(table, obj)

    def remove(self, caller: Caller, table: str, addr: tuple[str, str], owner_id: str) -> None:
        obj = self._writable(caller, table, addr)
        kept = [o for o in obj["_owners"] if o.lower() != owner_id.lower()]
        if len(kept) == len(obj["_owners"]):
            raise not_found(owner_id)
        obj["_owners"] = kept
        self.backend.save(table, obj)

    def _writable(self, caller: Caller, table: str, addr: tuple[str, str]) -> dict[str, Any]:
        obj = self.backend.require(table, addr[0], addr[1])
        caller.require_owner_change(obj)
        return obj
