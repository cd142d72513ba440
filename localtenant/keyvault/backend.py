"""Secrets with versions, soft delete, recover and purge; no HTTP ("About Azure Key Vault secrets",
"Azure Key Vault soft-delete overview"). Values are stored under `_value` so no state dump shows them."""
from __future__ import annotations

import re
import uuid
from typing import Any

from ..runtime import Clock, Issued
from ..store import Store
from .exceptions import KeyVaultError, bad_parameter, not_found

TABLE = "secrets"
NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
RECOVERABLE_DAYS = 90


class KeyVaultBackend:
    def __init__(self, store: Store, clock: Clock, issued: Issued | None = None) -> None:
        self.store, self.clock, self.issued = store, clock, issued or Issued()

    def _now(self) -> int:
        return int(self.clock.now())

    @staticmethod
    def check_name(name: str) -> None:
        if not NAME.match(name):
            raise bad_parameter(f"The request URI contains an invalid name: {name}")

    def entry(self, name: str, *, deleted: bool = False) -> dict[str, Any]:
        self.check_name(name)
        entry = self.store.get(TABLE, name.lower())
        if entry is None or bool(entry["deleted"]) != deleted:
            raise not_found(name, "deleted" if deleted else "secret")
        return entry

    def _version(self, entry: dict[str, Any], version: str | None) -> dict[str, Any]:
        if not version:
            return entry["versions"][-1]
        for v in entry["versions"]:
            if v["version"] == version.lower():
                return v
        raise not_found(f"{entry['name']}/{version}")

    def set(self, name: str, body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        self.check_name(name)
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise bad_parameter("The parameter 'value' is required and must be a string.")
        attributes = self._attributes(body.get("attributes"))
        entry = self.store.get(TABLE, name.lower())
        if entry is not None and entry["deleted"]:
            raise KeyVaultError(409, "Conflict", f"Secret {name} is currently in a deleted but recoverable state, "
                                "and its name cannot be reused; in this state, the secret can only be recovered or "
                                "purged.", inner="ObjectIsDeletedButRecoverable")
        if entry is None:
            entry = {"name": name, "versions": [], "deleted": None}
        now = self._now()
        version = {"version": uuid.uuid4().hex, "_value": body["value"], "contentType": body.get("contentType"),
                   "tags": self._tags(body.get("tags")), "managed": None,
                   "attributes": {"enabled": True, **attributes, "created": now, "updated": now,
                                  "recoveryLevel": "Recoverable+Purgeable",
                                  "recoverableDays": RECOVERABLE_DAYS}}
        entry["versions"].append(version)
        self.store.put(TABLE, name.lower(), entry)
        self.issued.add("secretValues", body["value"])
        return entry, version

    @staticmethod
    def _attributes(attrs: Any) -> dict[str, Any]:
        if attrs is None:
            return {}
        if not isinstance(attrs, dict) or set(attrs) - {"enabled", "nbf", "exp", "created", "updated",
                                                         "recoveryLevel", "recoverableDays"}:
            raise bad_parameter("The parameter 'attributes' is invalid.")
        out = {}
        if "enabled" in attrs and attrs["enabled"] is not None:
            if not isinstance(attrs["enabled"], bool):
                raise bad_parameter("Property 'enabled' must be a boolean.")
            out["enabled"] = attrs["enabled"]
        for key in ("nbf", "exp"):
            if attrs.get(key) is not None:
                if not isinstance(attrs[key], int):
                    raise bad_parameter(f"Property '{key}' must be an integer (seconds since 1970-01-01 UTC).")
                out[key] = attrs[key]
        return out

    @staticmethod
    def _tags(tags: Any) -> dict[str, str] | None:
        if tags is None:
            return None
        # Key Vault allows up to 15 tags, names up to 512 characters and values up to 256.
        if not isinstance(tags, dict) or len(tags) > 15 or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 512 and len(v) <= 256
                for k, v in tags.items()):
            raise bad_parameter("Tags must be at most 15 string pairs (names <= 512, values <= 256 characters).")
        return tags

    def get(self, name: str, version: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        entry = self.entry(name)
        v = self._version(entry, version)
        if not v["attributes"]["enabled"]:
            raise KeyVaultError(403, "Forbidden", "Operation get is not allowed on a disabled secret.",
                                inner="SecretDisabled")
        return entry, v

    def update(self, name: str, version: str | None, body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        entry = self.entry(name)
        v = self._version(entry, version)
        if not isinstance(body, dict) or set(body) - {"contentType", "attributes", "tags"}:
            raise bad_parameter("Only contentType, attributes and tags can be updated.")
        if "contentType" in body:
            v["contentType"] = body["contentType"]
        if "tags" in body:
            v["tags"] = self._tags(body["tags"])
        v["attributes"].update(self._attributes(body.get("attributes")), updated=self._now())
        self.store.put(TABLE, name.lower(), entry)
        return entry, v

    def list(self, *, deleted: bool = False) -> list[dict[str, Any]]:
        return sorted((e for e in self.store.values(TABLE) if bool(e["deleted"]) == deleted),
                      key=lambda e: e["name"].lower())

    def delete(self, name: str) -> dict[str, Any]:
        entry = self.entry(name)
        now = self._now()
        entry["deleted"] = {"deletedDate": now, "scheduledPurgeDate": now + RECOVERABLE_DAYS * 86400}
        self.store.put(TABLE, name.lower(), entry)
        return entry

    def get_deleted(self, name: str) -> dict[str, Any]:
        return self.entry(name, deleted=True)

    def recover(self, name: str) -> dict[str, Any]:
        entry = self.entry(name, deleted=True)
        entry["deleted"] = None
        self.store.put(TABLE, name.lower(), entry)
        return entry

    def purge(self, name: str) -> None:
        self.entry(name, deleted=True)
        self.store.delete(TABLE, name.lower())
