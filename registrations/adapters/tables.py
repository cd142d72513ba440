"""Azure Table Storage (azure-data-tables): the registry's one table, every write conditional.

Table Storage is strongly consistent within a partition and every entity carries an ETag, so an insert that
finds the row already there fails (409 EntityAlreadyExists) and an update or delete with If-Match fails when
someone wrote in between (412 UpdateConditionNotSatisfied). Those two answers are raised as ``Exists`` and
``Stale``; anything else the service refuses is an UpstreamError like every other adapter's.

In Azure the client uses the function app's managed identity on the storage account's table endpoint
(``AzureWebJobsStorage__tableServiceUri``, role Storage Table Data Contributor), never a key. Locally it
talks to Azurite through a connection string that ``settings`` accepts only in Development on loopback.
Its transport is the other adapters' (``transport_for``): the environment's proxies read once, not on every
call (a function app's environment holds every app setting).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (AzureError, HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from ._rest import transport_for
from .errors import UpstreamError

SERVICE = "registry"


class Exists(Exception):
    """An insert found the row there already (someone else made it first)."""


class Stale(Exception):
    """The row changed (or went) since its ETag was read: read it again and decide again."""


def _upstream(operation: str, exc: AzureError) -> UpstreamError:
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)
    return UpstreamError(SERVICE, operation, status, code if isinstance(code, str) else None,
                         "Table Storage refused the call")


class TableStore:
    """One table: rows as plain dicts (``etag`` carries the row's ETag; keys PartitionKey and RowKey)."""

    def __init__(self, client: TableClient) -> None:
        self._client = client
        self._ensured = False

    @classmethod
    def from_connection_string(cls, connection_string: str, table: str) -> "TableStore":
        endpoint = TableServiceClient.from_connection_string(connection_string).url  # parsed, not called
        return cls(TableServiceClient.from_connection_string(
            connection_string, transport=transport_for(endpoint, True)).get_table_client(table))

    @classmethod
    def from_endpoint(cls, endpoint: str, table: str, credential: Any) -> "TableStore":
        return cls(TableServiceClient(endpoint=endpoint, credential=credential,
                                      transport=transport_for(endpoint, True)).get_table_client(table))

    def ensure_table(self) -> None:
        """Create the table when it is not there (once per process)."""
        if self._ensured:
            return
        try:
            self._client.create_table()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise _upstream("createTable", exc) from exc
        self._ensured = True

    @staticmethod
    def _row(entity: Any) -> dict:
        row = dict(entity)
        row["etag"] = entity.metadata["etag"]
        return row

    def get(self, partition: str, key: str) -> dict | None:
        try:
            return self._row(self._client.get_entity(partition, key))
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _upstream("getEntity", exc) from exc

    def insert(self, row: dict) -> str:
        """Insert-only; returns the new ETag or raises Exists."""
        try:
            made = self._client.create_entity(_entity(row))
        except ResourceExistsError as exc:
            raise Exists(row["RowKey"]) from exc
        except AzureError as exc:
            raise _upstream("insertEntity", exc) from exc
        return made["etag"]

    def replace(self, row: dict, etag: str) -> str:
        """Replace the row if it still has `etag`; returns the new ETag or raises Stale."""
        try:
            made = self._client.update_entity(_entity(row), mode=UpdateMode.REPLACE, etag=etag,
                                              match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise Stale(row["RowKey"]) from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise Stale(row["RowKey"]) from exc
            raise _upstream("updateEntity", exc) from exc
        except AzureError as exc:
            raise _upstream("updateEntity", exc) from exc
        return made["etag"]

    def delete(self, partition: str, key: str, etag: str) -> None:
        """Delete the row if it still has `etag` (gone already counts as done); raises Stale otherwise."""
        try:
            self._client.delete_entity(partition, key, etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            return
        except ResourceModifiedError as exc:
            raise Stale(key) from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise Stale(key) from exc
            raise _upstream("deleteEntity", exc) from exc
        except AzureError as exc:
            raise _upstream("deleteEntity", exc) from exc

    def transact(self, operations: list[tuple[str, dict, str | None]]) -> list[str]:
        """An entity group transaction in one partition: ("insert", row, None), ("replace", row, etag) or
        ("delete", row, etag). All or nothing; a row that exists, changed or went makes it Stale. Returns each
        operation's new ETag in order (the batch response carries them; "" for a delete), so nothing written
        needs reading back."""
        batch: list[Any] = []
        for op, row, etag in operations:
            condition = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
            if op == "insert":
                batch.append(("create", _entity(row)))
            elif op == "delete":
                batch.append(("delete", {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]}, condition))
            else:
                batch.append(("update", _entity(row), {"mode": UpdateMode.REPLACE, **condition}))
        try:
            answers = self._client.submit_transaction(batch)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise Stale("transaction") from exc
        except HttpResponseError as exc:
            if exc.status_code in (404, 409, 412):
                raise Stale("transaction") from exc
            raise _upstream("transaction", exc) from exc
        except AzureError as exc:
            raise _upstream("transaction", exc) from exc
        return [answer.get("etag") or "" for answer in answers]

    def query(self, partition: str, *, prefix: str = "", page_size: int = 1000) -> Iterator[dict]:
        """Every row of `partition` whose RowKey starts with `prefix`, in RowKey order, page by page."""
        text = "PartitionKey eq @p"
        params: dict[str, Any] = {"p": partition}
        if prefix:
            # RowKeys are compared as strings: [prefix, prefix + U+FFFF) holds exactly those that start so.
            text += " and RowKey ge @lo and RowKey lt @hi"
            params.update(lo=prefix, hi=prefix + "\uffff")
        try:
            for entity in self._client.query_entities(text, parameters=params, results_per_page=page_size):
                yield self._row(entity)
        except AzureError as exc:
            raise _upstream("queryEntities", exc) from exc


def _entity(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "etag"}
