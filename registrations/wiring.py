"""Builds the service from settings, once per worker process, on first use (never at import: cold start)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from .auth import Authenticator
from .service import RegistrationService
from .settings import ARM_SCOPE, GRAPH_SCOPE, Settings, load
from .verification import Verifier, token_claims


@dataclass
class Runtime:
    settings: Settings
    service: RegistrationService
    authenticator: Authenticator
    verifier: Verifier


_lock = threading.Lock()
_runtime: Runtime | None = None


def _credential(settings: Settings):
    """Managed identity in Azure (and against the local tenant, which serves the same endpoint);
    DefaultAzureCredential elsewhere, for a developer pointing at a real tenant with `az login`."""
    if os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT"):
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID") or None)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(authority=settings.authority_host)


def _own_object_id(credential) -> str:
    """The object id of our own service principal: the `oid` of our Graph token. Saves a Graph call and a
    setting; the token came to us over TLS from our own identity endpoint, so reading it unverified is fine."""
    return token_claims(credential.get_token(GRAPH_SCOPE).token)["oid"]


def build(settings: Settings) -> Runtime:
    from .adapters._rest import RestClient
    from .adapters.graph import GraphClient
    from .adapters.rbac import RbacClient
    from .adapters.vault import VaultClient

    credential = _credential(settings)
    verify = settings.connection_verify
    graph = GraphClient(RestClient("graph", settings.graph_endpoint, credential, GRAPH_SCOPE, verify=verify))
    rbac = RbacClient(RestClient("arm", settings.arm_endpoint, credential, ARM_SCOPE, verify=verify))
    vault = VaultClient(settings.key_vault_url, credential, verify=verify, development=settings.development)
    owner: dict[str, str] = {}

    def owner_id() -> str:
        if "id" not in owner:
            owner["id"] = _own_object_id(credential)
        return owner["id"]

    service = RegistrationService(settings, graph=graph, vault=vault, rbac=rbac, owner_id=owner_id)
    easy_auth = os.environ.get("WEBSITE_AUTH_ENABLED", "").lower() == "true"
    verifier = Verifier(settings, service=service, graph=graph, vault=vault, rbac=rbac)
    return Runtime(settings, service, Authenticator(settings, easy_auth=easy_auth), verifier)


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = build(load())
    return _runtime


def reset() -> None:
    """Forget the built runtime (tests that change settings)."""
    global _runtime
    with _lock:
        _runtime = None
