"""The registry: the API's own record of every registration, in Azure Table Storage, written by the API alone.

Entra ID holds the objects, but anyone who co-owns an application can write its tags and owners, and an
app-only read right after a write may show the old value. So nothing read from Entra decides whether an object
is ours, who asked for it, what it should look like or who is working on it: this record does. One partition
holds it all, so every read is strongly consistent and several rows can change in one transaction:

| row | key | what |
|---|---|---|
| registration | ``reg:{name}`` | requester, type, target, state, the Entra ids the API created or adopted (application object id, appId, service principal id), the desired state as last applied (``tags``), the lease of the request working on it, the create's attempt nonce |
| requester | ``req:{object id}`` | how many registrations that requester holds (the per-requester limit, exact under any lag) |
| idempotency | ``idem:{hash of caller and key}`` | an Idempotency-Key's first request (its hash and name) and, once answered, the answer; kept 24 h |

Every write is conditional: an insert fails when the row exists, an update or delete when its ETag changed
(adapters/tables.py). A registration row is inserted before the application is created, with the desired state
and the nonce the create's application carries, so an application holding the name that does not carry that
nonce is never taken for ours; until the create records the Entra ids, the application is the one holding the
name with that nonce. The row is removed only after everything the API made for it is gone.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from .adapters.tables import Exists, Stale, TableStore

PARTITION = "registry"
REGISTRATION, REQUESTER, IDEMPOTENCY = "reg:", "req:", "idem:"
# How long an Idempotency-Key's answer is kept (the IETF draft "The Idempotency-Key HTTP Header Field" leaves
# it to the resource; a day covers Logic Apps' retries many times over).
IDEMPOTENCY_SECONDS = 24 * 3600
# How often a write that lost a race on the requester's count reads again (each loser sees a newer count).
COUNT_ATTEMPTS = 50
# How many requesters' counters a process keeps (about 200 bytes each).
KNOWN_COUNTERS = 10_000
_UNKNOWN: Any = object()

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
    attempt: str = ""  # the nonce the create's application carries (its dicom-create label)
    lease_holder: str = ""  # the request working on the registration now, until lease_until (epoch seconds)
    lease_until: float = 0.0
    app_object_id: str = ""
    app_id: str = ""
    sp_id: str = ""
    tags: tuple[str, ...] = ()  # the desired state as last applied, in the tag vocabulary of manifest.py
    fields: str = ""  # JSON: the application's own fields as last applied (displayName, notes, redirectUris)
    credential: str = ""  # JSON: the current stored credential (kind, keyId, endDateTime), for the reports
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
        # Each requester's counter row as this process last wrote it: a hint that saves reserve() a read, never
        # trusted on its own (the transaction's If-Match decides).
        self._counters: dict[str, dict | None] = {}

    def table(self) -> TableStore:
        """The table, made on first use."""
        self._store.ensure_table()
        return self._store

    # ---------------------------------------------------------------------------------------- reads
    def get(self, name: str) -> Record | None:
        row = self.table().get(PARTITION, REGISTRATION + name)
        return Record.from_row(row) if row else None

    def records(self, *, requester: str | None = None, type_: str | None = None) -> list[Record]:
        """Every registration (by name), or those of one requester or type: one query, paged by the service."""
        found = [Record.from_row(row) for row in self.table().query(PARTITION, prefix=REGISTRATION)]
        return [r for r in found if (requester is None or r.requester == requester)
                and (type_ is None or r.type == type_)]

    def by_app_id(self, app_id: str) -> Record | None:
        return next((r for r in self.records() if r.app_id and r.app_id.lower() == app_id.lower()), None)

    def count(self, requester: str) -> int:
        row = self.table().get(PARTITION, REQUESTER + requester)
        return int(row["count"]) if row else 0

    # --------------------------------------------------------------------------------------- writes
    def reserve(self, record: Record, *, limit: int | None = None) -> Record:
        """Insert the registration row (insert-only: Exists when the name is recorded already) and count it
        for its requester in the same transaction; with `limit`, Limit when the requester holds that many.

        One round trip when this process knows the requester's counter: the transaction replaces it on the ETag
        last seen, so a counter another instance moved since makes it Stale and it is read again (the count
        stays exact; the known counter only saves the read). A Limit reached on a known counter is read again
        before it is believed."""
        store = self.table()
        record = replace(record, created_at=record.created_at or self._clock().isoformat())
        counter, known = self._counters.get(record.requester, _UNKNOWN), True
        for _ in range(COUNT_ATTEMPTS):
            if counter is _UNKNOWN:
                counter, known = store.get(PARTITION, REQUESTER + record.requester), False
            count = int(counter["count"]) if counter else 0
            if limit is not None and count >= limit:
                if known:
                    counter = _UNKNOWN
                    continue
                raise Limit(record.requester)
            counted = self._count_op(record.requester, counter, +1)
            try:
                etags = store.transact([("insert", record.to_row(), None), counted])
            except Stale:
                if self.get(record.name) is not None:
                    raise Exists(record.name) from None
                counter = _UNKNOWN  # another registration of this requester was counted first: count again
                continue
            self._remember(record.requester, dict(counted[1], etag=etags[1]))
            return replace(record, etag=etags[0])
        raise Stale(record.name)

    def save(self, record: Record) -> Record:
        """Replace the row if nobody wrote it since `record` was read (Stale otherwise); returns it anew."""
        etag = self.table().replace(record.to_row(), record.etag)
        return replace(record, etag=etag)

    def forget(self, record: Record) -> None:
        """Remove the row (if unchanged since read: Stale otherwise) and uncount it, in one transaction."""
        store = self.table()
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
                etags = store.transact(ops)
            except Stale:
                continue
            if counter is not None:
                self._remember(record.requester, dict(ops[1][1], etag=etags[1]))
            return
        raise Stale(record.name)

    def _remember(self, requester: str, counter: dict) -> None:
        """Keep the requester's counter as last written (bounded: a process that met many requesters starts
        over)."""
        if len(self._counters) >= KNOWN_COUNTERS:
            self._counters.clear()
        self._counters[requester] = counter

    @staticmethod
    def _count_op(requester: str, counter: dict | None, delta: int) -> tuple[str, dict, str | None]:
        count = max(0, (int(counter["count"]) if counter else 0) + delta)
        row = {"PartitionKey": PARTITION, "RowKey": REQUESTER + requester, "count": count}
        return ("replace", row, counter["etag"]) if counter else ("insert", row, None)


@dataclass(frozen=True)
class Idempotent:
    """An Idempotency-Key's record: the request it first came with and, once that was answered, the answer."""

    key: str  # the row key (a hash of the caller and the key: the key itself is the caller's)
    request_hash: str
    name: str
    until: float  # epoch seconds: kept until then
    answer: str = ""  # JSON, empty while the first request is still running
    etag: str = ""

    def to_row(self) -> dict[str, Any]:
        return {"PartitionKey": PARTITION, "RowKey": self.key, "requestHash": self.request_hash, "name": self.name,
                "until": self.until, "answer": self.answer}


def idempotency_row_key(caller: str, key: str) -> str:
    return IDEMPOTENCY + hashlib.sha256(f"{caller}\n{key}".encode()).hexdigest()[:40]


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Idempotency:
    """Idempotency-Key records in the registry's partition: the first request with a key claims it
    (insert-only), its answer is recorded, and every later request with that key gets that answer."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def find(self, caller: str, key: str, now: float) -> Idempotent | None:
        row = self._registry.table().get(PARTITION, idempotency_row_key(caller, key))
        if row is None or float(row["until"]) <= now:
            return None
        return Idempotent(row["RowKey"], row["requestHash"], row["name"], float(row["until"]), row.get("answer") or "",
                          row["etag"])

    def claim(self, caller: str, key: str, hashed: str, name: str, now: float) -> Idempotent:
        """Claim the key for this request (Exists when someone holds it; an expired record is taken over)."""
        store = self._registry.table()
        wanted = Idempotent(idempotency_row_key(caller, key), hashed, name, now + IDEMPOTENCY_SECONDS)
        row = store.get(PARTITION, wanted.key)
        if row is None:
            return replace(wanted, etag=store.insert(wanted.to_row()))
        if float(row["until"]) > now:
            raise Exists(wanted.key)
        try:
            return replace(wanted, etag=store.replace(wanted.to_row(), row["etag"]))
        except Stale:
            raise Exists(wanted.key) from None

    def answer(self, claimed: Idempotent, answer: dict[str, Any]) -> None:
        self._registry.table().replace(replace(claimed, answer=json.dumps(answer)).to_row(), claimed.etag)

    def release(self, claimed: Idempotent) -> None:
        """The first request failed: the key is free for its retry."""
        self._registry.table().delete(PARTITION, claimed.key, claimed.etag)

    def purge(self, now: float) -> int:
        """Remove the records kept past their time (the sweep's housekeeping: an expired key is claimed afresh
        anyway, so this only keeps the partition from growing with every key ever sent). One claimed again
        meanwhile has a new ETag and stays. Returns how many went."""
        store = self._registry.table()
        gone = 0
        for row in store.query(PARTITION, prefix=IDEMPOTENCY):
            if float(row["until"]) > now:
                continue
            try:
                store.delete(PARTITION, row["RowKey"], row["etag"])
            except Stale:
                continue
            gone += 1
        return gone
