"""Client credentials: made at create, rotated with overlap, described, retired, shared with named readers.

Three kinds. A **secret** is minted by Entra (addPassword) and written straight to Key Vault. A
**certificate** is made here; its public part goes to the app's keyCredentials and key + certificate (PEM)
to Key Vault. A **federated** credential is secretless: Entra trusts another issuer's tokens for a subject.

Rotation adds a new credential and a new version of the same Key Vault secret, so clients that read the
secret by its unversioned URI pick the new value up; the previous credential keeps working for an overlap
period and is then removed by the sweep. A credential's state follows from Entra (the credentials on the
app) and Key Vault (which version holds which keyId), so nothing else needs to be stored.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta, timezone
from typing import TypeVar

from . import manifest as mf
from .adapters.errors import UpstreamError, lag_404, lag_new_reader, never
from .adapters.graph import GraphClient
from .adapters.rbac import RbacClient
from .adapters.vault import StoredSecret, VaultClient
from .saga import ROLLBACK_SECONDS, Saga, StepFailed, create_once, eventually, pause
from .certificates import make_certificate
from .credential_policy import CredentialPolicy
from .kinds import KEY_VAULT_SECRETS_USER
from .models import FederatedCredential, Request
from .problems import Conflict, InProgress, Misconfigured, retry_later
from .settings import Settings
from .times import iso, parse_time

MANAGED_BY = "dicom-registrations"
TWIN_POLL_SECONDS = 1.0
T = TypeVar("T")


class TwinInFlight(Exception):
    """Another attempt of the same rotation (same Idempotency-Key, another instance) added its credential
    while this one was being refused or waiting: this one must not add a second."""
UNREACHABLE_GRACE = timedelta(hours=1)
CONTENT_TYPES = {"secret": "text/plain; kind=client-secret", "certificate": "application/x-pem-file"}


def _with(app: dict, kind: str, made: dict, label: str, now: datetime) -> dict:
    """The app as Graph will show it once the credential just added has replicated (a read right after the
    write may not show it yet)."""
    field = mf.CREDENTIAL_FIELD[kind]
    if any(c.get("keyId") == made["keyId"] for c in app.get(field) or []):
        return app
    display = label if kind == "secret" else f"{mf.CERT_NAME} {label.removeprefix(mf.PASSWORD_NAME).strip()}"
    added = {"keyId": made["keyId"], "displayName": display, "startDateTime": iso(now),
             "endDateTime": made.get("endDateTime")}
    return dict(app, **{field: [*(app.get(field) or []), added]})


def _issued(version: StoredSecret) -> datetime:
    return (parse_time(version.tags.get("issuedAt")) or version.created_on
            or datetime.min.replace(tzinfo=timezone.utc))


def _read_again(exc: UpstreamError) -> bool:
    """A whole-collection write that failed in a way a fresh read and a new write can mend: lag (404), or a
    transient failure (which may have landed: the read shows it)."""
    return lag_404(exc) or exc.transient


def rotation_label(idempotency_key: str | None) -> str:
    """The displayName suffix of a rotated credential: the hash of the caller's Idempotency-Key, so a replay
    finds the credential its first attempt made; a random one without a key."""
    token = hashlib.sha256(idempotency_key.encode()).hexdigest()[:12] if idempotency_key else uuid.uuid4().hex[:12]
    return f"{mf.PASSWORD_NAME} {token}"


class Credentials:
    def __init__(self, settings: Settings, *, graph: GraphClient, vault: VaultClient, rbac: RbacClient,
                 clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.graph, self.vault, self.rbac = graph, vault, rbac
        self._clock = clock
        self.policy = CredentialPolicy(graph)

    @property
    def overlap(self) -> timedelta:
        return timedelta(days=self.settings.rotation_overlap_days)

    @property
    def expiring_window(self) -> timedelta:
        return timedelta(days=self.settings.expiry_warning_days)

    def secret_name(self, name: str, kind: str) -> str:
        return mf.secret_name(self.settings.name_prefix, name, kind)

    def lifetime(self, app: dict, kind: str) -> int:
        """A rotation's lifetime: the one the registration was created with, within the tenant's policy now."""
        lifetime = mf.tag_values(app).get("lifetime")
        days = int(lifetime) if lifetime else self.settings.secret_lifetime_days
        return self.policy.allowed(kind, days, created=parse_time(app.get("createdDateTime")))

    def read_policy_ahead(self, request: Request, executor: Executor) -> AbstractContextManager[None]:
        """For a create that will write a secret or certificate: the tenant's policy read once, from now."""
        credential = request.credential
        if credential is None or credential.kind not in mf.STORED_KINDS:
            return nullcontext()
        return self.policy.read_ahead(executor)

    def check_policy(self, request: Request) -> None:
        """Before anything is written: a lifetime asked for beyond the tenant's app management policy is a
        422 naming the limit."""
        credential = request.credential
        if credential is not None and credential.kind in mf.STORED_KINDS and credential.lifetimeDays:
            self.policy.check_requested(credential.kind, credential.lifetimeDays,
                                        ["credential", "lifetimeDays"])

    # ------------------------------------------------------------------------------------- at create
    def provision(self, saga: Saga, request: Request, app: dict, fresh: bool) -> dict:
        credential = request.credential
        assert credential is not None, "only types with a credential provision one"
        if isinstance(credential, FederatedCredential):
            return self._federated(saga, request.name, credential, app, fresh)
        name = self.secret_name(request.name, credential.kind)
        # An explicit lifetime was checked against the policy (check_policy); the default is shortened to it.
        days = credential.lifetimeDays or self.policy.allowed(credential.kind, self.settings.secret_lifetime_days,
                                                              created=None)
        kept = None if fresh else self._kept(app, name, credential.kind)
        if kept is None:
            add = self._add_password if credential.kind == "secret" else self._add_certificate
            kept = add(saga, app, name, request.name, days, mf.PASSWORD_NAME)
        self.grant_readers(saga, name, request.secretReaders)
        return kept

    def _kept(self, app: dict, name: str, kind: str) -> dict | None:
        """Resuming a create: keep the credential if its value reached Key Vault; otherwise remove every one
        this API added (their values are lost, so nobody could ever use them)."""
        ours = mf.our_credentials(app, kind)
        stored = self.vault.get_properties(name)
        for cred in ours:
            if stored and stored.tags.get("keyId") == cred["keyId"] and stored.tags.get("appId") == app["appId"]:
                return self._reference(kind, name, cred["keyId"], cred.get("endDateTime"), stored)
        self._remove(app, kind, {cred["keyId"] for cred in ours})
        return None

    def _reference(self, kind: str, name: str, key_id: str, end: str | None, stored: StoredSecret | None,
                   thumbprint: str | None = None) -> dict:
        reference = {"kind": kind, "keyVaultSecretUri": self.vault.secret_uri(name), "keyVaultSecretName": name,
                     "keyId": key_id, "endDateTime": end}
        if stored is not None:
            reference["keyVaultSecretVersion"] = stored.version
        thumbprint = thumbprint or (stored.tags.get("thumbprint") if stored else None)
        if thumbprint:
            reference["thumbprint"] = thumbprint
        return reference

    def _store(self, saga: Saga, app: dict, name: str, registration: str, kind: str, value: str, end: datetime,
               key_id: str, label: str, extra_tags: dict[str, str] | None = None,
               now: datetime | None = None) -> StoredSecret:
        # issuedAt orders versions made within one second (Key Vault's created time has whole seconds).
        tags = {"registration": registration, "appId": app["appId"], "keyId": key_id, "managedBy": MANAGED_BY,
                "kind": kind, "label": label, "issuedAt": (now or self._clock()).isoformat(timespec="microseconds"),
                **(extra_tags or {})}
        stored, _ = saga.run(
            "store credential in Key Vault",
            lambda: self.vault.set_secret(name, value, expires_on=end, content_type=CONTENT_TYPES[kind], tags=tags),
            undo=lambda result: self._unstore(name, label, *result),
        )
        return stored

    def _unstore(self, name: str, label: str, stored: StoredSecret, recovered: bool) -> None:
        """Undo a write to Key Vault. A rotation's new version cannot be deleted alone: disable it. A create's
        secret is deleted, and purged when it had no history (nothing is left); a recovered one keeps its
        history, soft-deleted."""
        if label != mf.PASSWORD_NAME:
            self.vault.disable_version(name, stored.version)
        else:
            self.vault.delete_secret(name, purge=not recovered)

    def _add_password(self, saga: Saga, app: dict, name: str, registration: str, days: int, label: str,
                      now: datetime | None = None, twins: bool = False) -> dict:
        end = (now or self._clock()) + timedelta(days=days)
        # addPassword is not idempotent and its answer is the only copy of the secret text: after an ambiguous
        # failure, a password the failed call may have added anyway is removed (nobody could use it) and
        # another is minted. With `twins` (a rotation under an Idempotency-Key) a repeat first looks for a
        # twin attempt's password.
        def add() -> dict:
            return self.graph.add_password(app["id"], label, iso(end))

        password = saga.run("add password", lambda: create_once(
            self._twin_guard(add, app, "secret", label) if twins else add,
            lambda: self._discard_password(app, label), lagging=lag_404, exists=never),
            undo=lambda pw: self.graph.remove_password(app["id"], pw["keyId"]))
        # The secret text goes straight from Graph's answer into Key Vault and is then dropped. Key Vault's
        # expiry is the end Entra gave the password (a tenant's lifetime policy may have shortened it).
        secret_text = password.pop("secretText")
        if twins:
            self._yield_to_twin(app, "secret", label, password["keyId"])
        end = parse_time(password.get("endDateTime")) or end
        stored = self._store(saga, app, name, registration, "secret", secret_text, end, password["keyId"], label,
                             now=now)
        del secret_text
        return self._reference("secret", name, password["keyId"], password.get("endDateTime") or iso(end), stored)

    def _discard_password(self, app: dict, label: str) -> None:
        current = self.graph.get_application_by_id(app["id"]) or {}
        for password in current.get("passwordCredentials") or []:
            if password.get("displayName") == label:
                self.graph.remove_password(app["id"], password["keyId"])

    def _add_certificate(self, saga: Saga, app: dict, name: str, registration: str, days: int, label: str,
                         now: datetime | None = None, twins: bool = False) -> dict:
        cert = make_certificate(f"{mf.CERT_NAME.removeprefix('CN=')} {registration}", start=now or self._clock(),
                                days=days)
        key_id = str(uuid.uuid4())
        key_credential = {
            "keyId": key_id, "type": "AsymmetricX509Cert", "usage": "Verify", "key": cert.der_b64,
            "displayName": f"{mf.CERT_NAME} {label.removeprefix(mf.PASSWORD_NAME).strip()}".strip(),
            "startDateTime": iso(cert.start), "endDateTime": iso(cert.end),
        }
        def add() -> None:
            self._write_certificates(app, keep=lambda _: True, add=key_credential)

        saga.run("add certificate", lambda: eventually(
            self._twin_guard(add, app, "certificate", label) if twins else add, lagging=_read_again),
            undo=lambda _: self._set_certificates(app, keep=lambda c: c["keyId"] != key_id, add=None))
        if twins:
            self._yield_to_twin(app, "certificate", label, key_id)
        stored = self._store(saga, app, name, registration, "certificate", cert.pem, cert.end, key_id, label,
                             {"thumbprint": cert.thumbprint}, now=now)
        if twins:
            # keyCredentials are written whole: a twin's write that read the collection before ours landed
            # replaces ours. Then ours is gone, the twin's stays, and this attempt yields (its version undone).
            self._yield_to_twin(app, "certificate", label, key_id)
        return self._reference("certificate", name, key_id, iso(cert.end), stored, cert.thumbprint)

    def _set_certificates(self, app: dict, *, keep: Callable[[dict], bool], add: dict | None) -> None:
        """`_write_certificates` until it is done: a refusal that did nothing (a concurrency violation,
        throttling) or lag is met with a fresh read and a new write."""
        eventually(lambda: self._write_certificates(app, keep=keep, add=add), lagging=_read_again)

    def _write_certificates(self, app: dict, *, keep: Callable[[dict], bool], add: dict | None) -> None:
        """keyCredentials can only be replaced as a whole, and only a read that selects them returns their
        keys: read, filter, append, write back once. The write is never repeated as it was (the pipeline does
        not retry it): after a Directory_ConcurrencyViolation another writer may have changed the collection,
        so the caller reads again (a blind repeat replaced a twin rotation's certificate)."""
        current = self.graph.get_application_by_id(app["id"], select="keyCredentials") or {}
        if current == {}:
            raise UpstreamError("graph", "getApplication", 404, "Request_ResourceNotFound", "not visible yet")
        kept = [c for c in current.get("keyCredentials") or [] if keep(c)]
        if add and add["keyId"] not in {c.get("keyId") for c in kept}:  # a lost answer's write is there already
            kept.append(add)
        self.graph.update_application(app["id"], {"keyCredentials": kept}, retry=False)

    def _federated(self, saga: Saga, registration: str, credential: FederatedCredential, app: dict,
                   fresh: bool) -> dict:
        body = {"name": f"{self.settings.name_prefix}-{registration}", "issuer": credential.issuer,
                "subject": credential.subject, "audiences": [credential.audience],
                "description": "Made by the DICOM registrations API"}

        def find() -> dict | None:
            return next((c for c in self.graph.list_federated_credentials(app["id"]) if c.get("name") == body["name"]),
                        None)

        created = saga.run("add federated credential", lambda: create_once(
            lambda: self.graph.create_federated_credential(app["id"], body), find, lagging=lag_404,
            look_first=not fresh))
        return {"kind": "federated", "keyId": created.get("id"), "issuer": credential.issuer,
                "subject": credential.subject, "audience": credential.audience}

    # ------------------------------------------------------------------------------------ readers
    def reader_scope(self, secret_name: str) -> str:
        if not self.settings.key_vault_resource_id:
            raise Misconfigured("secretReaders needs KEY_VAULT_RESOURCE_ID (the ARM id of the vault)")
        return f"{self.settings.key_vault_resource_id}/secrets/{secret_name}"

    def grant_readers(self, saga: Saga, secret_name: str, readers: Sequence[str]) -> None:
        """Key Vault Secrets User on this one secret, for each named principal."""
        for reader in readers:
            scope = self.reader_scope(secret_name)
            saga.run(f"grant secret reader {reader}", lambda: eventually(
                lambda: self.rbac.assign(scope, KEY_VAULT_SECRETS_USER, reader, principal_type=None),
                lagging=lag_new_reader),
                undo=self.rbac.delete)

    def revoke_readers(self, secret_name: str) -> list[dict]:
        if not self.settings.key_vault_resource_id:
            return []
        removed = []
        for assignment in self.rbac.list_at_scope(self.reader_scope(secret_name)):
            if self.rbac.delete(assignment["id"]):
                removed.append({"kind": "roleAssignment", "id": assignment["id"]})
        return removed

    # ----------------------------------------------------------------------------------- rotation
    def rotate(self, app: dict, registration: str, *, idempotency_key: str | None,
               now: datetime | None = None) -> tuple[list[dict], bool]:
        """Add a new credential (a new Key Vault version); the previous one stays valid through the overlap.
        Returns (credentials, rotated); a replay under the same Idempotency-Key rotates nothing."""
        kind = mf.tag_values(app).get("credential")
        if kind not in mf.STORED_KINDS:
            raise Conflict(f"registration {registration!r} has no secret or certificate to rotate"
                           + (" (its federated credential is secretless)" if kind == "federated" else ""))
        name = self.secret_name(registration, kind)
        label = rotation_label(idempotency_key)
        if idempotency_key:
            state = self._replay_state(app, name, kind, label)
            if state == "replayed":
                return self.describe(app, registration), False
            if state == "in-flight":
                return self._await_twin(app, registration, name, kind, label)
        saga = Saga()  # steps here run one after another
        add = self._add_password if kind == "secret" else self._add_certificate
        try:
            made = add(saga, app, name, registration, self.lifetime(app, kind), label, now=now,
                       twins=bool(idempotency_key))
        except StepFailed as failure:
            if isinstance(failure.cause, TwinInFlight):
                saga.rollback()
                return self._await_twin(app, registration, name, kind, label)
            raise saga.abort(failure)
        except TwinInFlight:
            saga.rollback()  # removes the credential this attempt added
            return self._await_twin(app, registration, name, kind, label)
        except Exception:
            saga.rollback()
            raise
        fresh = self.graph.get_application_by_id(app["id"]) or app
        return self.describe(_with(fresh, kind, made, label, now or self._clock()), registration, now=now), True

    @staticmethod
    def _matching(app: dict, kind: str, label: str) -> list[dict]:
        """This API's credentials on the app made under `label` (a rotation's Idempotency-Key)."""
        return [c for c in mf.our_credentials(app, kind)
                if (c.get("displayName") or "").endswith(label.split(" ")[-1])]

    def _replay_state(self, app: dict, name: str, kind: str, label: str) -> str | None:
        """"replayed": an attempt under this Idempotency-Key finished (its value is in Key Vault);
        "in-flight": another attempt (a retry landing on another instance) added its credential and may still
        be storing it; None: nothing of one, or only what an attempt that can no longer be running left."""
        matching = self._matching(app, kind, label)
        if not matching:
            return None
        stored = {v.tags.get("keyId") for v in self.vault.list_versions(name)}
        if any(c["keyId"] in stored for c in matching):
            return "replayed"
        now = self._clock()
        if any((parse_time(c.get("startDateTime")) or now) > now - self.in_flight_for for c in matching):
            return "in-flight"
        # An attempt added the credential but its value never reached Key Vault: unusable, remove it.
        self._remove(app, kind, {c["keyId"] for c in matching})
        return None

    @property
    def in_flight_for(self) -> timedelta:
        """How long another attempt may still be working: its time budget and its rollback's."""
        return timedelta(seconds=self.settings.provisioning_deadline_seconds + ROLLBACK_SECONDS)

    def _await_twin(self, app: dict, registration: str, name: str, kind: str, label: str) -> tuple[list[dict], bool]:
        """Another attempt of this rotation (same Idempotency-Key) made its credential first: wait, within the
        budget, until its value is in Key Vault and answer as a replay; never add a second one."""
        while pause(TWIN_POLL_SECONDS):
            fresh = self.graph.get_application_by_id(app["id"]) or app
            state = self._replay_state(fresh, name, kind, label)
            if state == "replayed":
                return self.describe(fresh, registration), False
            if state is None:  # it gave up and undid its credential: a retry of this request adds one
                break
        raise retry_later(InProgress("a rotation with this Idempotency-Key is under way on another instance; "
                                     "retry after Retry-After to get its result"), TWIN_POLL_SECONDS * 2)

    def _yield_to_twin(self, app: dict, kind: str, label: str, key_id: str) -> None:
        """After adding a rotation's credential, before its value is stored: if a twin attempt (same
        Idempotency-Key, another instance) added one too, the first in the app's collection keeps going and
        the other yields (raises TwinInFlight; its own is undone). A certificate write that replaced the
        collection over a twin's (keyCredentials are written whole) finds its own gone and yields too."""
        matching = self._matching(self.graph.get_application_by_id(app["id"]) or {}, kind, label)
        if matching and matching[0]["keyId"] != key_id:
            raise TwinInFlight()

    def _twin_guard(self, action: Callable[[], T], app: dict, kind: str, label: str) -> Callable[[], T]:
        """`action`, except that when it is repeated (after a concurrency violation or lag: its own attempt
        did nothing) it first looks for the credential a twin attempt of this rotation made meanwhile."""
        attempts = 0

        def guarded() -> T:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and self._matching(self.graph.get_application_by_id(app["id"]) or {}, kind, label):
                raise TwinInFlight()
            return action()
        return guarded

    def _remove(self, app: dict, kind: str, key_ids: set[str]) -> None:
        """Take credentials off the app: passwords one by one, certificates in one write of the rest."""
        if not key_ids:
            return
        if kind == "secret":
            for key_id in key_ids:
                self.graph.remove_password(app["id"], key_id)
        else:
            self._set_certificates(app, keep=lambda c: c["keyId"] not in key_ids, add=None)

    # ------------------------------------------------------------------------------------ states
    def describe(self, app: dict, registration: str, *, now: datetime | None = None) -> list[dict]:
        """Every credential this API added to the app, newest first, with its state: active, expiring,
        superseded (still valid until removeAfter) or unreachable (its value is not in Key Vault)."""
        kind = mf.tag_values(app).get("credential")
        if kind not in mf.STORED_KINDS:
            return []
        now = now or self._clock()
        versions = [v for v in self.vault.list_versions(self.secret_name(registration, kind)) if v.enabled]
        by_key = {v.tags.get("keyId"): v for v in versions}
        ours = mf.our_credentials(app, kind)
        live = sorted((by_key[c["keyId"]] for c in ours if c["keyId"] in by_key), key=_issued)
        newest = live[-1] if live else None
        described = []
        for cred in ours:
            end = parse_time(cred.get("endDateTime"))
            entry = {"keyId": cred["keyId"], "kind": kind, "startDateTime": cred.get("startDateTime"),
                     "endDateTime": cred.get("endDateTime")}
            version = by_key.get(cred["keyId"])
            if version is None:
                entry["state"] = "unreachable"
            elif version is newest:
                entry["state"] = "expiring" if end and end - now <= self.expiring_window else "active"
                entry["keyVaultSecretVersion"] = version.version
            else:
                superseded = _issued(live[live.index(version) + 1])
                entry.update(state="superseded", supersededDateTime=iso(superseded),
                             removeAfter=iso(superseded + self.overlap), keyVaultSecretVersion=version.version)
            described.append(entry)
        order = {"active": 0, "expiring": 0, "superseded": 1, "unreachable": 2}
        return sorted(described, key=lambda e: (order[e["state"]], e.get("startDateTime") or ""), reverse=False)

    def retire(self, app: dict, registration: str, *, now: datetime) -> list[dict]:
        """Remove superseded credentials whose overlap has ended, and unreachable ones; disable their Key
        Vault versions. Returns what was removed."""
        kind = mf.tag_values(app).get("credential")
        removed = []
        done = [c for c in self.describe(app, registration, now=now)
                if (c["state"] == "superseded" and parse_time(c["removeAfter"]) <= now)
                # An unreachable credential may be one a create or rotation is storing right now: only old
                # ones are certainly abandoned.
                or (c["state"] == "unreachable"
                    and (parse_time(c.get("startDateTime")) or now) < now - UNREACHABLE_GRACE)]
        self._remove(app, kind, {c["keyId"] for c in done})
        name = self.secret_name(registration, kind)
        for cred in done:
            if cred.get("keyVaultSecretVersion"):
                self.vault.disable_version(name, cred["keyVaultSecretVersion"])
            removed.append({"registration": registration, "keyId": cred["keyId"], "state": cred["state"]})
        return removed
