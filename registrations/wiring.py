"""Builds every collaborator once per worker process, on first use (never at import: cold start), and hands
each the ones it needs: the adapters, one executor, one clock. Tests build a runtime with their own clock
(``build(settings, clock=...)`` and ``use``) instead of patching."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from . import logs
from .auth import Authenticator
from .problems import Misconfigured
from .registry import Registry
from .service import RegistrationService
from .settings import ARM_SCOPE, GRAPH_SCOPE, Settings, load
from .verification import Verifier, token_claims


@dataclass
class Runtime:
    settings: Settings
    service: RegistrationService
    authenticator: Authenticator
    verifier: Verifier
    executor: ThreadPoolExecutor

    def close(self) -> None:
        """Let the worker threads go (a rebuilt runtime has its own); work under way finishes."""
        self.executor.shutdown(wait=False)


_lock = threading.Lock()
_runtime: Runtime | None = None


def _credential(settings: Settings):
    """Managed identity in Azure (and against the local tenant, which serves the same endpoint);
    DefaultAzureCredential elsewhere, for a developer pointing at a real tenant with `az login`."""
    if os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT"):
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID") or None)
    return default_credential(settings)


def default_credential(settings: Settings):
    """DefaultAzureCredential for the settings' authority: a developer's `az login`, a pipeline's service
    principal (AZURE_CLIENT_ID and AZURE_CLIENT_SECRET), and `python -m registrations.setup`. Against the
    local tenant (Development with TLS_CA_FILE) it trusts that CA and skips Microsoft's instance discovery,
    which only knows Microsoft's authorities."""
    from azure.identity import DefaultAzureCredential

    local = {"connection_verify": settings.tls_ca_file, "disable_instance_discovery": True} \
        if settings.development and settings.tls_ca_file else {}
    return DefaultAzureCredential(authority=settings.authority_host, **local)


def _own_object_id(credential) -> str:
    """The object id of our own service principal: the `oid` of our Graph token. Saves a Graph call and a
    setting; the token came to us over TLS from our own identity endpoint, so reading it unverified is fine."""
    return token_claims(credential.get_token(GRAPH_SCOPE).token)["oid"]


def _own_graph_permissions(credential) -> frozenset[str]:
    """The Graph application permissions our identity holds: the `roles` of our Graph token (cached by the
    credential, so no call). A permission granted since shows with the identity's next token."""
    return frozenset(token_claims(credential.get_token(GRAPH_SCOPE).token).get("roles") or [])


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def build(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Runtime:
    from .adapters._rest import RestClient
    from .adapters.dicomservice import DicomServiceClient
    from .adapters.dicomweb import DicomWebClient
    from .cors import Cors
    from .adapters.graph import GraphClient
    from .adapters.rbac import RbacClient
    from .adapters.vault import VaultClient
    from .change import Changer
    from .credentials import Credentials
    from .provision import Provisioner
    from .quota import ObjectQuota
    from .teardown import Teardown
    from .views import RegistrationViews

    logs.configure()
    credential = _credential(settings)
    verify = settings.connection_verify
    graph = GraphClient(RestClient("graph", settings.graph_endpoint, credential, GRAPH_SCOPE, verify=verify))
    arm = RestClient("arm", settings.arm_endpoint, credential, ARM_SCOPE, verify=verify)
    rbac = RbacClient(arm)
    vault = VaultClient(settings.key_vault_url, credential, verify=verify, development=settings.development)
    executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="registrations")
    registry = Registry(registry_store(settings, credential), clock)
    owner: dict[str, str] = {}

    def owner_id() -> str:
        if "id" not in owner:
            owner["id"] = _own_object_id(credential)
        return owner["id"]

    # Which registrations of this API need an origin: what its identity owns (read when one is deleted).
    cors = Cors(settings, DicomServiceClient(arm), lambda: list(graph.list_owned_applications(owner_id()))) \
        if settings.cors_for_spa else None
    credentials = Credentials(settings, graph=graph, vault=vault, rbac=rbac, clock=clock)
    teardown = Teardown(settings, graph=graph, rbac=rbac, vault=vault, credentials=credentials, executor=executor,
                        clock=clock, cors=cors)
    quota = ObjectQuota(settings, graph=graph, owner_id=owner_id)
    provisioner = Provisioner(settings, graph=graph, rbac=rbac, credentials=credentials, teardown=teardown, cors=cors,
                              executor=executor, clock=clock, registry=registry)
    service = RegistrationService(settings, graph=graph, vault=vault, credentials=credentials,
                                  provisioner=provisioner, teardown=teardown, quota=quota,
                                  changer=Changer(settings, graph=graph, rbac=rbac, credentials=credentials,
                                                  provisioner=provisioner, owner_id=owner_id, registry=registry,
                                                  cors=cors),
                                  views=RegistrationViews(settings, secret_uri=vault.secret_uri), registry=registry,
                                  executor=executor, owner_id=owner_id, clock=clock,
                                  graph_permissions=lambda: _own_graph_permissions(credential))
    verifier = Verifier(settings, service=service, graph=graph, vault=vault, rbac=rbac,
                        dicomweb=DicomWebClient(verify=verify), clock=clock, registry=registry)
    easy_auth = os.environ.get("WEBSITE_AUTH_ENABLED", "").lower() == "true"
    return Runtime(settings, service, Authenticator(settings, easy_auth=easy_auth), verifier, executor)


def registry_store(settings: Settings, credential):
    """The registry's table: the storage account's table endpoint with the app's identity (in Azure), or
    Azurite by its connection string (Development on loopback only: settings checks it). Neither is a
    misconfiguration, never a silent fallback."""
    from .adapters.tables import TableStore

    if settings.registry_connection_string:
        return TableStore.from_connection_string(settings.registry_connection_string, settings.registry_table)
    if settings.registry_endpoint:
        return TableStore.from_endpoint(settings.registry_endpoint, settings.registry_table, credential)
    raise Misconfigured("the registry needs AzureWebJobsStorage__tableServiceUri (the function app's storage "
                        "account, https://{account}.table.core.windows.net, with Storage Table Data Contributor "
                        "for the app's identity)")


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
        previous, _runtime = _runtime, None
    if previous is not None:
        previous.close()


@contextmanager
def use(built: Runtime) -> Iterator[Runtime]:
    """Serve requests with `built` (a runtime with a test's own clock, say) within the block."""
    global _runtime
    with _lock:
        previous, _runtime = _runtime, built
    try:
        yield built
    finally:
        with _lock:
            _runtime = previous
        built.close()
