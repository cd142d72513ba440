"""The directory Graph serves: the backend (state, time, lookups) with its parts, each handed the siblings it
uses. The one module that knows them all; nothing in the package imports it."""
from __future__ import annotations

from ..runtime import Clock, DirectorySettings, Faults, Issued
from ..store import Store
from .backend import GraphBackend
from .backend_applications import Applications
from .backend_deleted import DeletedItems
from .backend_owners import Owners
from .backend_principals import Principals
from .policies import Policies


class Directory(GraphBackend):
    def __init__(self, store: Store, clock: Clock, faults: Faults, tenant_id: str,
                 issued: Issued | None = None, settings: DirectorySettings | None = None) -> None:
        super().__init__(store, clock, faults, tenant_id, issued, settings)
        self.policies = Policies(self)
        self.deleted = DeletedItems(self)
        self.owners = Owners(self)
        self.principals = Principals(self, deleted=self.deleted)
        self.applications = Applications(self, deleted=self.deleted, principals=self.principals,
                                         policies=self.policies)
