"""The registry: the API's own record of every registration, in Azure Table Storage, written by the API alone.

Entra ID holds the objects, but anyone who co-owns an application can write its tags and owners, and an
app-only read right after a write may show the old value. So nothing read from Entra decides whether an object
is ours, who asked for it, what it should look like or who is working on it: this record does. One partition
holds it all, so every read is strongly consistent and several rows can change in one transaction:

| row | key | what |
|---|---|---|
| registration | ``reg:{name}`` | requester, type, target, state, the Entra ids the API created or adopted (application object id, appId, service principal id), the desired state as last applied (``tags``), the lease of the request working on it, the create's attempt nonce |
| requester | ``req:{object id}`` | how many registrations that requester holds (the per-requester limit, exact under any lag) |

Every write is conditional: an insert fails when the row exists, an update or delete when its ETag changed
(adapters/tables.py). A registration row is inserted before the application is created (with the nonce the
create's application carries), so an application holding the name that does not carry that nonce is never
taken for ours; it is updated with the ids as soon as they exist and removed only after everything the API made
for it is gone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from .adapters.tables import Exists, Stale, TableStore

PARTITION = "registry"
REGISTRATION, REQUESTER = "reg:", "req:"
# How often a write that lost a race on the requester's count reads again (each loser sees a newer count).
COUNT_ATTEMPTS = 50

__all__ = ["Exists", "Limit", "Record", "Registry", "Stale"]


class Limit(Exception):
    """The requester already holds as many registrations as allowed."""


@dataclass(frozen=True)
class Record:
    name: str
    requester: str
    type: str
    target: str
    state: str = "provisioning"  # provisioning, ready, deleting
    attempt: str = ""  # the nonce the create's application carries (its dicom-lease tag)
    lease_holder: str = ""  # the request working on the registration now, until lease_until (epoch seconds)
    lease_until: float = 0.0
    app_object_id: str = ""
    app_id: str = ""
    sp_id: str = ""
    tags: tuple[str, ...] = ()  # the desired state as last applied, in the tag vocabulary of manifest.py
    adopted: bool = False  # made elsewhere: the application is not the API's to delete
    made: tuple[str, ...] = ()  # what the API made for an adopted registration (servicePrincipal)
    created_at: str = ""
    etag: str = field(default="", compare=False)

    def leased(self, now: float) -> float:
        """Seconds left on another request's lease (0 when there is none)."""
        return max(0.0, self.lease_until - now) if self.lease_holder else 0.0

    def to_row(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("etag")
        data["tags"] = json.dumps(list(self.tags))
        data["made"] = json.dumps(list(self.made))
        return {"PartitionKey": PARTITION, "RowKey": REGISTRATION + self.name, **data}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Record":
        names = set(cls.__dataclass_fields__) - {"etag", "tags", "made"}
        values = {k: row[k] for k in names if k in row}
        return cls(**values, tags=tuple(json.loads(row.get("tags") or "[]")),
                   made=tuple(json.loads(row.get("made") or "[]")), etag=row["etag"])


def new_attempt() -> str:
    return uuid.uuid4().hex[:12]


class Registry:
    def __init__(self, store: TableStore, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    def _ready(self) -> TableStore:
        self._store.ensure_table()
        return self._store

    # ---------------------------------------------------------------------------------------- reads
    def get(self, name: str) -> Record | None:
        row = self._ready().get(PARTITION, REGISTRATION + name)
        return Record.from_row(row) if row else None

    def records(self, *, requester: str | None = None, type_: str | None = None) -> list[Record]:
        """Every registration (by name), or those of one requester or type: one query, paged by the service."""
        found = [Record.from_row(row) for row in self._ready().query(PARTITION, prefix=REGISTRATION)]
        return [r for r in found if (requester is None or r.requester == requester)
                and (type_ is None or r.type == type_)]

    def by_app_id(self, app_id: str) -> Record | None:
        return next((r for r in self.records() if r.app_id and r.app_id.lower() == app_id.lower()), None)

    def count(self, requester: str) -> int:
        row = self._ready().get(PARTITION, REQUESTER + requester)
        return int(row["count"]) if row else 0

    # --------------------------------------------------------------------------------------- writes
    def reserve(self, record: Record, *, limit: int | None = None) -> Record:
        """Insert the registration row (insert-only: Exists when the name is recorded already) and count it
        for its requester in the same transaction; with `limit`, Limit when the requester holds that many."""
        store = self._ready()
        record = replace(record, created_at=record.created_at or self._clock().isoformat())
        for _ in range(COUNT_ATTEMPTS):
            counter = store.get(PARTITION, REQUESTER + record.requester)
            count = int(counter["count"]) if counter else 0
            if limit is not None and count >= limit:
                raise Limit(record.requester)
            try:
                store.transact([("insert", record.to_row(), None), self._count_op(record.requester, counter, +1)])
            except Stale:
                if self.get(record.name) is not None:
                    raise Exists(record.name) from None
                continue  # another registration of this requester was counted first: count again
            found = self.get(record.name)
            assert found is not None, "a committed insert is read back in its partition"
            return found
        raise Stale(record.name)

    def save(self, record: Record) -> Record:
        """Replace the row if nobody wrote it since `record` was read (Stale otherwise); returns it anew."""
        etag = self._ready().replace(record.to_row(), record.etag)
        return replace(record, etag=etag)

    def forget(self, record: Record) -> None:
        """Remove the row (if unchanged since read: Stale otherwise) and uncount it, in one transaction."""
        store = self._ready()
        for _ in range(COUNT_ATTEMPTS):
            counter = store.get(PARTITION, REQUESTER + record.requester)
            current = self.get(record.name)
            if current is None:
                return
            if current.etag != record.etag:
                raise Stale(record.name)
            ops = [("delete", record.to_row(), record.etag)]
            if counter is not None:
                ops.append(self._count_op(record.requester, counter, -1))
            try:
                store.transact(ops)
            except Stale:
                continue
            return
        raise Stale(record.name)

    @staticmethod
    def _count_op(requester: str, counter: dict | None, delta: int) -> tuple[str, dict, str | None]:
        count = max(0, (int(counter["count"]) if counter else 0) + delta)
        row = {"PartitionKey": PARTITION, "RowKey": REQUESTER + requester, "count": count}
        return ("replace", row, counter["etag"]) if counter else ("insert", row, None)
