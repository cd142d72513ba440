"""State as plain dicts per table, with an optional SQLite file written through on every change.

Backends never hold state of their own: they read and write tables here, so `reset()` and a restart of
`python -m localtenant --state FILE` see one consistent picture.
"""
from __future__ import annotations

import copy
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator


def private_file(path: str | Path, data: bytes | None = None) -> Path:
    """Make `path` readable and writable by its owner only (0600), created so from the start, and tightened if
    it already existed; write `data` when given. Seeded client secrets, the signing key and the CA key live in
    these files."""
    path = Path(path)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if data is not None else 0), 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        if data is not None:
            os.write(descriptor, data)
    finally:
        os.close(descriptor)
    return path


class Store:
    def __init__(self, path: str | Path | None = None):
        self.lock = threading.RLock()
        self._tables: dict[str, dict[str, dict[str, Any]]] = {}
        self._db: sqlite3.Connection | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # SQLite gives its -wal and -shm files the database file's permissions.
            for existing in (Path(path), Path(f"{path}-wal"), Path(f"{path}-shm")):
                if existing == Path(path) or existing.exists():
                    private_file(existing)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS objects (tbl TEXT, key TEXT, value TEXT, "
                             "PRIMARY KEY (tbl, key))")
            for tbl, key, value in self._db.execute("SELECT tbl, key, value FROM objects"):
                self._tables.setdefault(tbl, {})[key] = json.loads(value)

    @property
    def empty(self) -> bool:
        return not any(self._tables.values())

    def table(self, name: str) -> dict[str, dict[str, Any]]:
        return self._tables.setdefault(name, {})

    def get(self, table: str, key: str) -> dict[str, Any] | None:
        return self.table(table).get(key)

    def values(self, table: str) -> Iterator[dict[str, Any]]:
        return iter(list(self.table(table).values()))

    def put(self, table: str, key: str, value: dict[str, Any]) -> dict[str, Any]:
        """Stores `value` (the caller keeps mutating the same dict and calls put again after each change)."""
        self.table(table)[key] = value
        if self._db is not None:
            self._db.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?)", (table, key, json.dumps(value)))
        return value

    def delete(self, table: str, key: str) -> dict[str, Any] | None:
        value = self.table(table).pop(key, None)
        if self._db is not None:
            self._db.execute("DELETE FROM objects WHERE tbl = ? AND key = ?", (table, key))
        return value

    def clear(self, *, keep: tuple[str, ...] = ()) -> None:
        for name in list(self._tables):
            if name not in keep:
                self._tables.pop(name)
                if self._db is not None:
                    self._db.execute("DELETE FROM objects WHERE tbl = ?", (name,))

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        return copy.deepcopy(self._tables)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
