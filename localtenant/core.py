"""Everything one tenant is made of, wired together: state, clock, faults, keys and the service backends.
The HTTP apps (the `routes` of each service, served by tenant.py) and the Python API (tenant.py) both
talk to this object."""
from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from . import seed as seeding
from .arm import roles
from .arm.backend import TABLE as ROLE_ASSIGNMENTS, ArmBackend
from .arm.dicomservices import DicomServices
from .dicom.access import validate_roles
from .entra.clients import FEDERATED_ISSUER, ClientAuthenticator
from .entra.grants import Grants
from .entra.signin import SignIn
from .entra.tokens import TokenIssuer
from .graph.backend_deleted import DELETED
from .graph.directory import Directory
from .graph.objects import APPS, ASSIGNMENTS, GRANTS, GROUPS, SPS, USERS, public, render_application
from .keyvault.backend import TABLE as SECRETS, KeyVaultBackend
from .oauth.keys import SigningKeys
from .runtime import Clock, DirectorySettings, Faults, Issued, Stats
from .store import Store

META = "meta"
KEEP_ON_RESET = (META, "signingKeys", "externalKeys")


class AttrDict(dict):
    """A dict whose keys read as attributes too (`lt.seed.product.app_id` or `lt.seed["product"]`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        return AttrDict(value) if isinstance(value, dict) and not isinstance(value, AttrDict) else value


class TenantCore:
    def __init__(self, state_path=None, *, bare: bool = False) -> None:
        self.store = Store(state_path)
        self.clock, self.faults, self.stats, self.issued = Clock(), Faults(), Stats(), Issued()
        self.settings = DirectorySettings()
        self.tenant_id = seeding.TENANT_ID
        self.signing_keys = SigningKeys(self.store, "signingKeys")
        self.external_keys = SigningKeys(self.store, "externalKeys")
        self.graph = Directory(self.store, self.clock, self.faults, self.tenant_id, self.issued, self.settings)
        self.arm = ArmBackend(self.graph, seeding.SUBSCRIPTION_ID)
        self.dicom_services = DicomServices(self.arm)
        self.orthanc: Any = None  # set by LocalTenant.start: the Orthanc process the DICOM fronts forward to
        # What else goes back to the seed on reset() (LocalTenant adds the registry's rows, which Azurite keeps).
        self.on_reset: list[Callable[[], None]] = []
        self.keyvault = KeyVaultBackend(self.store, self.clock, self.issued)
        self.authority_host = self.graph_endpoint = self.vault_url = self.arm_endpoint = ""
        self.identity_endpoint = self.dicom_url = self.dicom_oss_url = ""
        with self.store.lock:
            self.signing_keys.ensure()
            self.external_keys.ensure()
            if self.store.get(META, "seed") is None:
                self.store.put(META, "bare", {"value": bare})
                self._seed()
            elif bool((self.store.get(META, "bare") or {}).get("value")) != bare:
                raise ValueError("this state file holds a tenant started with bare="
                                 f"{not bare}; start it the same way or use another file")
            self.seed = AttrDict(self.store.get(META, "seed")["value"])
            self.identity_header = self.store.get(META, "identity")["value"]

    def _seed(self) -> None:
        if self.store.get(META, "identity") is None:
            self.store.put(META, "identity", {"value": secrets.token_urlsafe(24)})
        bare = bool(self.store.get(META, "bare")["value"])
        data = seeding.build(self.store, self.clock.now(), bare=bare)
        if bare:
            self.arm.put(None, seeding.RG_ID, seeding._id("ra/operator/rg"), {"properties": {
                "roleDefinitionId": roles.OWNER, "principalId": data["operator"]["object_id"],
                "principalType": "ServicePrincipal"}})
        else:
            product = data["product"]["object_id"]
            self.arm.put(None, seeding.VAULT_RESOURCE_ID, seeding._id("ra/product/vault"), {"properties": {
                "roleDefinitionId": roles.SECRETS_OFFICER, "principalId": product,
                "principalType": "ServicePrincipal"}})
            self.arm.put(None, seeding.RG_ID, seeding._id("ra/product/rg"), {"properties": {
                "roleDefinitionId": roles.RBAC_ADMIN, "principalId": product, "principalType": "ServicePrincipal"}})
        # The DICOM service resource: no CORS origins until someone configures them. The product may edit its
        # CORS configuration (the least role that can). Nobody holds a DICOM data role on it yet.
        self.dicom_services.put(None, seeding.DICOM_RESOURCE_ID, {"location": "local", "properties": {}}, duration=0)
        if not bare:
            self.arm.put(None, seeding.DICOM_RESOURCE_ID, seeding._id("ra/product/dicom-cors"), {"properties": {
                "roleDefinitionId": roles.CORS_EDITOR, "principalId": data["product"]["object_id"],
                "principalType": "ServicePrincipal"}})
        self.store.put(META, "seed", {"value": data})

    @property
    def seed_user_id(self) -> str:
        return self.seed["user"]["object_id"]

    def bind(self, *, login: int, graph: int, vault: int, arm: int, identity: int, dicom: int,
             dicom_oss: int) -> None:
        """Endpoints are known once sockets are bound; tokens and ids embed them."""
        self.authority_host = f"https://127.0.0.1:{login}"
        self.graph_endpoint = f"https://127.0.0.1:{graph}"
        self.vault_url = f"https://127.0.0.1:{vault}"
        self.arm_endpoint = f"https://127.0.0.1:{arm}"
        self.identity_endpoint = f"http://127.0.0.1:{identity}/msi/token"
        self.dicom_url = f"https://127.0.0.1:{dicom}"
        self.dicom_oss_url = f"https://127.0.0.1:{dicom_oss}"
        self.issuer = TokenIssuer(self.signing_keys, self.clock, self.tenant_id, self.authority_host, self.issued,
                                  self.settings)
        self.grants = Grants(self, ClientAuthenticator(self.graph, self.external_keys, self.authority_host),
                             self.issuer)
        self.signin = SignIn(self)

    # -- admin operations ----------------------------------------------------------------------------------
    def reset(self) -> None:
        with self.store.lock:
            self.store.clear(keep=KEEP_ON_RESET)
            self.store.delete(META, "seed")
            self._seed()
            self.seed = AttrDict(self.store.get(META, "seed")["value"])
            self.faults.set({})
            self.settings.set({})
            self.stats.clear()
            self.clock.offset = 0.0
        for hook in self.on_reset:
            hook()

    def oss_dicom(self) -> dict[str, Any] | None:
        """The open-source DICOM server's configuration (audience, authority, roles, cors), or None."""
        found = self.store.get(META, "dicomOss")
        return found["value"] if found else None

    def configure_oss_dicom(self, config: dict[str, Any]) -> None:
        from .arm.dicomservices import cors_configuration
        from .arm.exceptions import ArmError
        if not isinstance(config.get("audience"), str) or not config["audience"]:
            raise ValueError("audience is the resource app's appId or identifier URI")
        if not isinstance(config.get("authority"), str) or not config["authority"].startswith("https://"):
            raise ValueError("authority is the issuer tokens must carry, an https URL")
        try:
            cors = cors_configuration(config.get("cors"))
        except ArmError as e:
            raise ValueError(e.message) from None
        value = {"audience": config["audience"], "authority": config["authority"],
                 "roles": validate_roles(config.get("roles")), "cors": cors}
        with self.store.lock:
            self.store.put(META, "dicomOss", {"value": value})

    def rotate_signing_key(self) -> str:
        with self.store.lock:
            return self.signing_keys.rotate()

    def federated_assertion(self, subject: str, audience: str = "api://AzureADTokenExchange",
                            lifetime: int = 600) -> str:
        now = int(self.clock.now())
        with self.store.lock:
            return self.external_keys.sign({"iss": FEDERATED_ISSUER, "sub": subject, "aud": audience,
                                             "iat": now, "nbf": now, "exp": now + lifetime,
                                             "jti": secrets.token_hex(8)})

    def state(self) -> dict[str, Any]:
        """Every object, without secret values, password hashes or private keys."""
        with self.store.lock:
            apps = []
            for a in self.store.values(APPS):
                view = render_application(a)
                view["owners"] = list(a["_owners"])
                view["federatedIdentityCredentials"] = [public(f) for f in a["_fics"]]
                apps.append(view)
            sps = [{**self.graph.sp_view(s), "owners": list(s["_owners"])} for s in self.store.values(SPS)]
            deleted = [self.graph.deleted.render(d) for d in self.store.values(DELETED)]
            secrets_ = [{"name": e["name"], "deleted": e["deleted"],
                         "versions": [public(v) for v in e["versions"]]}
                        for e in self.store.values(SECRETS)]
            return json.loads(json.dumps({
                "tenantId": self.tenant_id, "applications": apps, "servicePrincipals": sps,
                "users": [public(u) for u in self.store.values(USERS)],
                "groups": [{**public(g), "members": list(g["_members"])} for g in self.store.values(GROUPS)],
                "appRoleAssignments": [public(x) for x in self.store.values(ASSIGNMENTS)],
                "oauth2PermissionGrants": [public(x) for x in self.store.values(GRANTS)],
                "roleAssignments": [public(x) for x in self.store.values(ROLE_ASSIGNMENTS)],
                "deletedItems": deleted,
                "secrets": secrets_, "clockOffsetSeconds": self.clock.offset,
            }))

    def app_settings(self, ca_file: str) -> dict[str, str]:
        dicom = {"managed": {"kind": "managed", "url": self.dicom_url, "resourceId": seeding.DICOM_RESOURCE_ID},
                 "oss": {"kind": "oss", "url": self.dicom_oss_url,
                         "resourceRegistration": "dicom-oss-api"}}
        return {"AZURE_FUNCTIONS_ENVIRONMENT": "Development", "AZURE_TENANT_ID": self.tenant_id,
                "AZURE_AUTHORITY_HOST": self.authority_host, "GRAPH_ENDPOINT": self.graph_endpoint,
                "ARM_ENDPOINT": self.arm_endpoint, "KEY_VAULT_URL": self.vault_url,
                "KEY_VAULT_RESOURCE_ID": seeding.VAULT_RESOURCE_ID, "IDENTITY_ENDPOINT": self.identity_endpoint,
                "IDENTITY_HEADER": self.identity_header, "TLS_CA_FILE": ca_file,
                "DICOM_SERVICES": json.dumps(dicom),
                # A bare tenant has no API registration until setup makes one (and prints these two).
                **({"API_CLIENT_ID": self.seed["api"]["app_id"], "API_AUDIENCE": self.seed["api"]["identifier_uri"]}
                   if "api" in self.seed else {})}
