"""`python -m registrations.setup --import`: registrations made before the registry (their state only in tags)
are written to the registry, but only those nobody but the API's identity owns.

Tags and owners on an application can be written by anyone who co-owns it, so a tag-only registration that
another principal also owns may have been made or altered by that principal (a squatter, say): importing it
would trust exactly what the registry exists not to trust. Those are listed for an administrator, who adopts
the ones that are really registrations (POST /registrations/{name}/adopt records their owners). What is
imported is recorded as found: the service principal by the application's appId (never by a tag), the desired
state from the tags and the application's own fields, the requester the tags name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import manifest as mf
from .adapters.graph import GraphClient
from .registry import Exists, Record, Registry, new_attempt


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)  # in the registry already
    to_adopt: list[dict] = field(default_factory=list)  # {name, appId, objectId, owners}


def tag_only_registrations(graph: GraphClient, principal_id: str, prefix: str) -> list[dict]:
    """The applications the identity owns that carry the API's tags and its uniqueName prefix."""
    return [a for a in graph.list_owned_applications(principal_id)
            if mf.TAG_MARK in (a.get("tags") or []) and (a.get("uniqueName") or "").startswith(f"{prefix}-")]


def import_registrations(graph: GraphClient, registry: Registry, principal_id: str, prefix: str, *,
                         what_if: bool = False, say: Callable[[str], None] = print) -> ImportReport:
    report = ImportReport()
    me = principal_id.lower()
    for app in tag_only_registrations(graph, principal_id, prefix):
        name = mf.registration_name(prefix, app)
        if registry.get(name) is not None:
            report.recorded.append(name)
            continue
        others = sorted(o for o in graph.list_owners("applications", app["id"]) if o.lower() != me)
        tags = mf.tag_values(app)
        if others or tags.get("state") != "ready":
            report.to_adopt.append({"name": name, "appId": app["appId"], "objectId": app["id"], "owners": others})
            why = f"other owners {', '.join(others)}" if others else f"state {tags.get('state') or 'unknown'}"
            say(f"left for an administrator to adopt: {name} (appId {app['appId']}; {why})")
            continue
        sp = graph.get_service_principal(app["appId"])
        recorded = [t for t in app.get("tags") or [] if t.startswith("dicom-") and not t.startswith(
            ("dicom-sp:", "dicom-lease:", "dicom-create:"))] + ([f"dicom-sp:{sp['id']}"] if sp else [])
        fields = mf.stored_fields(app)
        record = Record(name=name, requester=tags.get("requester") or "", type=tags.get("type") or "",
                        target=tags.get("target") or "", state="ready", attempt=new_attempt(),
                        app_object_id=app["id"], app_id=app["appId"], sp_id=sp["id"] if sp else "",
                        tags=tuple(recorded), fields=mf.applied_fields_of(fields))
        say(("would import " if what_if else "import ") + f"{name} (appId {app['appId']})")
        if not what_if:
            try:
                registry.reserve(record)
            except Exists:
                report.recorded.append(name)
                continue
        report.imported.append(name)
    return report
