"""OAuth 2.0 error responses (RFC 6749 section 5.2): an `error` code, a description, HTTP 400 or 401."""
from __future__ import annotations


class OAuthError(Exception):
    def __init__(self, error: str, description: str, *, status: int = 400,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status
        self.headers = headers or {}
