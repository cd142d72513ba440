"""Host keys and the authorization levels of the Functions host.

As in Azure: `anonymous` needs nothing; `function` accepts a function key or a host key (the master key is
a host key); `admin` accepts only the master key. A key arrives in the `x-functions-key` header or the
`code` query parameter.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from starlette.requests import Request

KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"


def _new_key() -> str:
    # Azure's generated keys are 40+ url-safe characters; 32 random bytes give the same strength.
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


@dataclass(frozen=True)
class HostKeys:
    master: str
    function: str

    @classmethod
    def generate(cls) -> HostKeys:
        return cls(master=_new_key(), function=_new_key())

    @classmethod
    def from_mapping(cls, keys: Mapping[str, str] | None) -> HostKeys:
        """Keys given by the caller; any that is missing is generated."""
        keys = keys or {}
        return cls(master=keys.get("master") or _new_key(), function=keys.get("function") or _new_key())

    @classmethod
    def load_or_create(cls, path: Path) -> HostKeys:
        """Keys that survive restarts, so a key printed yesterday still works today."""
        if path.exists():
            return cls.from_mapping(json.loads(path.read_text()))
        keys = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created owner-only from the start, not chmod-ed after a window in which others could read it.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(asdict(keys), file, indent=2)
        return keys

    def permits(self, auth_level: str, presented: str | None) -> bool:
        if auth_level == "anonymous":
            return True
        if not presented:
            return False
        accepted = [self.master] if auth_level == "admin" else [self.master, self.function]
        # Compare against every accepted key, in constant time, so timing reveals neither key nor which.
        matches = [hmac.compare_digest(presented.encode(), key.encode()) for key in accepted]
        return any(matches)


def presented_key(request: Request) -> str | None:
    return request.headers.get(KEY_HEADER) or request.query_params.get(KEY_QUERY)
