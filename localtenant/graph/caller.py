"""The principal behind a Graph token, and what its permissions let it do. No HTTP."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .exceptions import forbidden

READ_WRITE_ALL = "Application.ReadWrite.All"
OWNED_BY = "Application.ReadWrite.OwnedBy"
READ_ALL = "Application.Read.All"
DIRECTORY_READ_ALL = "Directory.Read.All"


@dataclass
class Caller:
    """The principal behind a Graph token: its object id and the Graph app roles the token carries."""
    oid: str
    roles: set[str] = field(default_factory=set)
    arrived: float | None = None  # when the request reached the tenant (its clock), before injected latency
    scopes: set[str] = field(default_factory=set)  # a user's (delegated) token: its `scp`
    delegated: bool = False  # a user signed in through a client, rather than an application on its own
    app_id: str | None = None  # the client application the token was issued to (appid / azp)

    @property
    def app_only(self) -> bool:
        return not self.delegated

    def require(self, *any_of: str) -> None:
        if not self.roles & set(any_of):
            raise forbidden()

    def require_read_all(self, *or_any_of: str) -> None:
        """Application.Read.All or Application.ReadWrite.All (or one of `or_any_of`)."""
        self.require(*or_any_of, READ_ALL, READ_WRITE_ALL)

    def require_create(self, *, users_may_register: bool = True) -> None:
        """An application with Application.ReadWrite.All or OwnedBy; a user through a client consented for
        Application.ReadWrite.All while "Users can register applications" is on (Entra's default)."""
        if self.delegated and READ_WRITE_ALL in self.scopes and users_may_register:
            return
        self.require(READ_WRITE_ALL, OWNED_BY)

    def owns(self, obj: dict[str, Any]) -> bool:
        return self.oid in obj.get("_owners", [])

    def require_write(self, obj: dict[str, Any]) -> None:
        # Application.ReadWrite.OwnedBy: "cannot update any apps that it is not an owner of". A user with no
        # directory role (delegated Application.ReadWrite.All) may update what they own, nothing else.
        if self.delegated:
            if READ_WRITE_ALL in self.scopes and self.owns(obj):
                return
            raise forbidden()
        if READ_WRITE_ALL in self.roles or OWNED_BY in self.roles and self.owns(obj):
            return
        raise forbidden()

    def require_owner_change(self, obj: dict[str, Any]) -> None:
        """Adding or removing an owner: Application.ReadWrite.All for an application (OwnedBy "isn't
        sufficient"); for a user, delegated Application.ReadWrite.All and Directory.Read.All, and being an
        owner of the object ("An owner can also add or remove other owners")."""
        if self.delegated:
            if {READ_WRITE_ALL, DIRECTORY_READ_ALL} <= self.scopes and self.owns(obj):
                return
            raise forbidden()
        self.require(READ_WRITE_ALL)

    def may_read(self, obj: dict[str, Any]) -> bool:
        if self.delegated:  # members read the directory's applications by default
            return bool(self.scopes & {READ_WRITE_ALL, READ_ALL, DIRECTORY_READ_ALL})
        return bool(self.roles & {READ_WRITE_ALL, READ_ALL}) or (OWNED_BY in self.roles and self.owns(obj))

    def require_read(self, obj: dict[str, Any]) -> None:
        if not self.may_read(obj):
            raise forbidden()
