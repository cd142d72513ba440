"""Key Vault secrets through the SDK's SecretClient. Values go in; only references come out, except to the
verifier, which signs in with a value and drops it (``get_value``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError

from .. import saga
from ..saga import create_once
from ._rest import budget_options, make_retry_policy, parse_retry_after, transport_for
from .errors import ConflictError, NotFoundError, UpstreamError, never


@dataclass(frozen=True)
class StoredSecret:
    id: str  # https://{vault}/secrets/{name}/{version}
    name: str
    version: str
    expires_on: datetime | None
    tags: dict[str, str]
    created_on: datetime | None = None
    enabled: bool = True


def _props(props: Any) -> StoredSecret:
    return StoredSecret(props.id, props.name, props.version, props.expires_on, dict(props.tags or {}),
                        props.created_on, bool(props.enabled))


POLL_SECONDS = 30.0


def _within(operation: str) -> dict[str, Any]:
    """Keep one SecretClient call within the request's budget (its retries are the same budgeted policy)."""
    return budget_options("keyvault", operation)


def _poll_seconds() -> float:
    """How long to wait for a long-running delete or recover: at most POLL_SECONDS, and never past the budget."""
    left = saga.remaining()
    return POLL_SECONDS if left is None else max(0.0, min(POLL_SECONDS, left))


@contextmanager
def _answered(operation: str) -> Iterator[None]:
    """Every failure of a SecretClient call becomes an UpstreamError: an answer by its status and code, a call
    that got no answer (the vault or the token endpoint unreachable, a timeout, a credential that could not
    get a token) with no status, which the API answers 503 (retry later), never 500."""
    try:
        yield
    except HttpResponseError as exc:
        raise _translate(operation, exc) from exc
    except AzureError as exc:
        raise UpstreamError("keyvault", operation, None, type(exc).__name__, "the call got no answer") from exc


def _translate(operation: str, exc: HttpResponseError) -> UpstreamError:
    code = getattr(getattr(exc, "error", None), "code", None)
    message = getattr(getattr(exc, "error", None), "message", None) or ""
    cls = (NotFoundError if isinstance(exc, ResourceNotFoundError)
           else ConflictError if isinstance(exc, ResourceExistsError) or exc.status_code == 409
           else UpstreamError)
    error = cls("keyvault", operation, exc.status_code, code, message)
    headers = getattr(exc.response, "headers", None) or {}
    error.retry_after = parse_retry_after(headers.get("Retry-After"))
    return error


class VaultClient:
    def __init__(self, vault_url: str, credential: Any, *, verify: str | bool, development: bool) -> None:
        from azure.keyvault.secrets import SecretClient

        self.vault_url = vault_url
        self._client = SecretClient(
            vault_url,
            credential,
            transport=transport_for(vault_url, verify),
            connection_verify=verify,
            retry_policy=make_retry_policy("keyvault"),
            # The local tenant's vault is not at *.vault.azure.net; in Azure the check stays on.
            verify_challenge_resource=not development,
        )

    def set_secret(self, name: str, value: str, *, expires_on: datetime, content_type: str,
                   tags: dict[str, str]) -> tuple[StoredSecret, bool]:
        """Write the value as a new version. Returns (stored, recovered): `recovered` says the name was
        soft-deleted (a registration of the same name was deleted) and came back with its history, every
        older version of which is disabled here so a deleted registration's values stay unusable.

        A PUT is not retried blindly (a retry after a lost answer would write a second version): after an
        ambiguous failure the newest version is read first, and the value is only written again if that
        version is not ours.
        """
        def put() -> StoredSecret:
            with _answered("setSecret"):
                secret = self._client.set_secret(name, value, expires_on=expires_on, content_type=content_type,
                                                 tags=tags, enabled=True, retry_total=0, **_within("setSecret"))
            return _props(secret.properties)

        def ours() -> StoredSecret | None:
            latest = self.get_properties(name)
            return latest if latest is not None and latest.tags == tags else None

        try:
            return create_once(put, ours, lagging=never), False
        except ConflictError:
            # The name is soft-deleted (Key Vault answers 409 ObjectIsDeletedButRecoverable): recover it.
            self._recover(name)
        stored = create_once(put, ours, lagging=never)
        for version in self.list_versions(name):
            if version.version != stored.version and version.enabled:
                self.disable_version(name, version.version)
        return stored, True

    def _recover(self, name: str) -> None:
        with _answered("recoverDeletedSecret"):
            self._client.begin_recover_deleted_secret(name, **_within("recoverDeletedSecret")).wait(
                timeout=_poll_seconds())

    def get_properties(self, name: str) -> StoredSecret | None:
        """The newest version's properties, or None. Reads the value over the wire but never keeps it."""
        with _answered("getSecret"):
            try:
                return _props(self._client.get_secret(name, **_within("getSecret")).properties)
            except ResourceNotFoundError:
                return None

    def list_versions(self, name: str) -> list[StoredSecret]:
        """Every version of a secret, oldest first (no values)."""
        with _answered("listSecretVersions"):
            try:
                versions = [_props(p) for p in self._client.list_properties_of_secret_versions(
                    name, **_within("listSecretVersions"))]
            except ResourceNotFoundError:
                return []
        return sorted(versions, key=lambda v: (v.created_on is None, v.created_on or datetime.min))

    def list_managed(self, marker: str) -> list[StoredSecret]:
        """Secrets carrying the tag ``managedBy=marker`` (newest version's properties, no values)."""
        with _answered("listSecrets"):
            return [_props(p) for p in self._client.list_properties_of_secrets(**_within("listSecrets"))
                    if (p.tags or {}).get("managedBy") == marker]

    def disable_version(self, name: str, version: str) -> None:
        """A superseded value whose credential Entra no longer accepts: keep it for audit, never serve it."""
        with _answered("updateSecret"):
            try:
                self._client.update_secret_properties(name, version, enabled=False, **_within("updateSecret"))
            except ResourceNotFoundError:
                pass

    def get_value(self, name: str) -> str:
        """The current value of a secret. Only for proving that it works: never log it, never return it.

        :raises NotFoundError: there is no such secret (or it is soft-deleted).
        """
        with _answered("getSecret"):
            value = self._client.get_secret(name, **_within("getSecret")).value
        if value is None:
            raise NotFoundError("keyvault", "getSecret", 200, None, "the secret has no value")
        return value

    def delete_secret(self, name: str, *, purge: bool = False) -> bool:
        """Soft-delete (and optionally purge) a secret. True if there was one."""
        with _answered("deleteSecret"):
            try:
                self._client.begin_delete_secret(name, **_within("deleteSecret")).wait(timeout=_poll_seconds())
            except ResourceNotFoundError:
                return False
        if purge:
            with _answered("purgeDeletedSecret"):
                try:
                    self._client.purge_deleted_secret(name, **_within("purgeDeletedSecret"))
                except ResourceNotFoundError:
                    pass
                except HttpResponseError as exc:
                    # Purge protection or no purge right: a soft-deleted secret is still unreachable by clients.
                    if exc.status_code not in (403, 409):
                        raise
        return True

    def secret_uri(self, name: str) -> str:
        return f"{self.vault_url}/secrets/{name}"
