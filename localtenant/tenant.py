"""`LocalTenant`: the Python API tests, devhost and bench use (docs/local-tenant.md, "Python API")."""
from __future__ import annotations

import json
import shutil
import uuid
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette

from . import seed as seeding
from .admin import responses as admin
from .arm import responses as arm
from .core import AttrDict, TenantCore
from .dicom import responses as dicom
from .dicom.orthanc import Orthanc
from .entra import responses as entra
from .entra.clients import FEDERATED_ISSUER
from .graph import responses as graph
from .identity import responses as identity
from .keyvault import responses as keyvault
from .server import Servers, bind, require_loopback
from . import storage
from .store import private_file
from .web import fallback
from .tls import make_ca, make_server_cert

if TYPE_CHECKING:
    from .person import SignInResult

ORIGINS = ("login", "graph", "vault", "arm", "identity", "dicom", "dicom_oss")  # base_port + 1 ... + 7, in order


class LocalTenant:
    def __init__(self, core: TenantCore, servers: Servers, files: Path, temporary: bool) -> None:
        self._core, self._servers, self._files, self._temporary = core, servers, files, temporary
        self.tenant_id = core.tenant_id
        self.ca_file = str(files / "ca.pem")
        self.authority_host = core.authority_host
        self.authority = f"{core.authority_host}/{core.tenant_id}"
        self.graph_endpoint = core.graph_endpoint
        self.vault_url = core.vault_url
        self.arm_endpoint = core.arm_endpoint
        self.identity_endpoint = core.identity_endpoint
        self.identity_header = core.identity_header
        self.federated_issuer = FEDERATED_ISSUER
        self.dicom_url = core.dicom_url
        self.dicom_oss_url = core.dicom_oss_url
        # The function app's storage account (Azurite), where the registry keeps its table: a temporary tenant
        # has a table of its own in the process's shared Azurite, one with a state file its own Azurite.
        self.storage = storage.for_tenant(None if temporary else files / "azurite")
        self.registry_table = f"registry{uuid.uuid4().hex[:16]}" if temporary else "registrations"
        core.on_reset.append(self._clear_registry)  # POST /_admin/reset too, not only reset()

    # -- lifecycle -----------------------------------------------------------------------------------------
    @classmethod
    def start(cls, state_path: str | Path | None = None, *, base_port: int | None = None,
              host: str = "127.0.0.1", faults: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None, bare: bool = False) -> "LocalTenant":
        """Starts every origin in a background thread and returns once all accept connections. With
        `state_path` state lives in that SQLite file and ca.pem/tenant.json are written beside it; with
        `base_port` the origins use base_port+1..+7, else ephemeral ports. `faults` and `settings` are set as
        `set_faults` and `set_settings` set them (a `reset()` clears both). `bare` seeds no grant for the
        product and no API registration, for `python -m registrations.setup` to make (docs/local-tenant.md)."""
        require_loopback(host)
        temporary = state_path is None
        files = Path(tempfile.mkdtemp(prefix="localtenant-")) if temporary else Path(state_path).resolve().parent
        files.mkdir(parents=True, exist_ok=True)
        core = TenantCore(state_path, bare=bare)
        core.orthanc = Orthanc(files / "orthanc")
        tls = core.store.get("meta", "tls")
        if tls is None:
            ca_pem, ca_key = make_ca()
            tls = core.store.put("meta", "tls", {"ca": ca_pem.decode(), "key": ca_key.decode()})
        material = make_server_cert(tls["ca"].encode(), tls["key"].encode())
        (files / "ca.pem").write_bytes(material.ca_pem)
        (files / "server.pem").write_bytes(material.server_pem)
        key_file = private_file(files / "server-key.pem", material.server_key_pem)
        sockets = {name: bind(host, base_port + i + 1 if base_port else 0) for i, name in enumerate(ORIGINS)}
        core.bind(**{name: s.getsockname()[1] for name, s in sockets.items()})
        if faults:
            core.faults.set(faults)
        if settings:
            core.settings.set(settings)
        servers = Servers()
        route_sets = {"login": admin.routes(core) + entra.routes(core),
                      "graph": graph.routes(core),
                      "vault": keyvault.routes(core), "arm": arm.routes(core), "identity": identity.routes(core),
                      "dicom": dicom.routes(core, "managed"), "dicom_oss": dicom.routes(core, "oss")}
        # Whatever no route takes answers in that origin's service's own JSON error shape.
        for name, module in (("login", entra), ("graph", graph), ("vault", keyvault), ("arm", arm),
                             ("identity", identity)):
            route_sets[name].append(fallback(core, module.SPEC, route_sets[name], module.unknown))
        for name, sock in sockets.items():
            tls_files = (None, None) if name == "identity" else (str(files / "server.pem"), str(key_file))
            servers.add(Starlette(routes=route_sets[name]), sock, certfile=tls_files[0], keyfile=tls_files[1])
        servers.start()
        lt = cls(core, servers, files, temporary)
        # Seeded client secrets and the identity header: owner-only, like the state file.
        private_file(files / "tenant.json", json.dumps(lt.describe(), indent=2).encode())
        return lt

    def stop(self) -> None:
        self._servers.stop()
        self._core.orthanc.stop()
        self._core.store.close()
        if self._temporary:
            shutil.rmtree(self._files, ignore_errors=True)

    def __enter__(self) -> "LocalTenant":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what clients need ---------------------------------------------------------------------------------
    @property
    def seed(self) -> AttrDict:
        return self._core.seed

    def app_settings(self) -> dict[str, str]:
        return {**self._core.app_settings(self.ca_file), **self.registry_settings()}

    def registry_settings(self) -> dict[str, str]:
        """Where the function app's registry lives locally: Azurite's table endpoint, by a connection string
        with Azurite's development account (accepted in Development only), and this tenant's table."""
        return {"REGISTRY_CONNECTION_STRING": self.storage.connection_string(), "REGISTRY_TABLE": self.registry_table}

    def registry_rows(self) -> list[dict[str, Any]]:
        """Every row of this tenant's registry table (tests look at what the API recorded)."""
        from azure.data.tables import TableClient

        with TableClient.from_connection_string(self.storage.connection_string(), self.registry_table) as table:
            try:
                return [dict(entity) for entity in table.list_entities()]
            except Exception as exc:  # the table is made on the API's first write
                if getattr(exc, "status_code", None) == 404:
                    return []
                raise

    def describe(self) -> dict[str, Any]:
        """What tenant.json holds: endpoints, CA, seed and app settings, for other processes."""
        return {"tenant_id": self.tenant_id, "ca_file": self.ca_file, "authority_host": self.authority_host,
                "authority": self.authority, "graph_endpoint": self.graph_endpoint, "vault_url": self.vault_url,
                "arm_endpoint": self.arm_endpoint, "identity_endpoint": self.identity_endpoint,
                "dicom_url": self.dicom_url, "dicom_oss_url": self.dicom_oss_url,
                "identity_header": self.identity_header, "federated_issuer": self.federated_issuer,
                "subscription_id": seeding.SUBSCRIPTION_ID, "seed": dict(self.seed),
                "app_settings": self.app_settings()}

    # -- admin ---------------------------------------------------------------------------------------------
    def set_faults(self, faults: dict[str, Any]) -> dict[str, Any]:
        return self._core.faults.set(faults)

    def faults(self) -> dict[str, Any]:
        return self._core.faults.get()

    def set_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Directory settings (runtime.DirectorySettings), same shape as PUT /_admin/settings."""
        return self._core.settings.set(settings)

    def settings(self) -> dict[str, Any]:
        return self._core.settings.get()

    def state(self) -> dict[str, Any]:
        return self._core.state()

    def stats(self) -> dict[str, Any]:
        return self._core.stats.snapshot()

    def issued(self) -> dict[str, list[str]]:
        """Secret values set in Key Vault, addPassword secretTexts and access tokens, since start (not reset):
        for leak checks. Python API only."""
        return self._core.issued.snapshot()

    def reset(self) -> None:
        """Back to the seed: state, faults, directory settings, stats and clock; the registry's rows go too."""
        self._core.reset()

    def _clear_registry(self) -> None:
        from azure.data.tables import TableClient

        with TableClient.from_connection_string(self.storage.connection_string(), self.registry_table) as table:
            for row in self.registry_rows():
                table.delete_entity(row["PartitionKey"], row["RowKey"])

    def set_app_management_policy(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The tenant default app management policy, as Graph's `GET /policies/defaultAppManagementPolicy`
        shows it; the properties given replace the stored ones. `reset()` disables it again."""
        return self._core.graph.policies.set_default(changes)

    def advance_clock(self, seconds: float) -> None:
        self._core.clock.advance(seconds)

    def federated_assertion(self, subject: str, audience: str = "api://AzureADTokenExchange") -> str:
        return self._core.federated_assertion(subject, audience)

    def rotate_signing_key(self) -> str:
        return self._core.rotate_signing_key()

    def sign_in(self, auth_uri: str, *, user: str | None = None, password: str | None = None,
                consent: bool | None = None, client: Any = None) -> "SignInResult":
        """A person follows `auth_uri` through the sign-in pages over HTTPS (localtenant/person.py): the
        seeded user with its password unless told otherwise."""
        from .person import sign_in
        seeded = self.seed.user
        return sign_in(auth_uri, ca_file=str(self.ca_file), user=user or seeded.upn,
                       password=password if password is not None else seeded.password, consent=consent,
                       client=client)

    def configure_oss_dicom(self, *, audience: str, authority: str, roles: dict[str, Any],
                            cors: dict[str, Any] | None = None) -> None:
        """Configure the open-source DICOM server as its operator would: DicomServer:Security:Authentication
        Audience and Authority, and its roles.json (checked as the server checks it at start)."""
        self._core.configure_oss_dicom({"audience": audience, "authority": authority, "roles": roles,
                                        "cors": cors})

    def sign_token(self, claims: dict[str, Any]) -> str:
        """A JWT with exactly these claims, signed with the tenant's current key: for tests of a token
        validator (expired, wrong audience, wrong tenant...) with a signature that does verify."""
        return self._core.signing_keys.sign(claims)
