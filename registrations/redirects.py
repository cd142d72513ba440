"""Redirect URI rules, per platform.

Entra accepts more than is safe; these rules follow Microsoft's redirect URI restrictions and tighten them:
https only (http just for ``localhost``), no wildcards, no fragments, no user info, no IP literals, no query,
at most 256 characters each. Native (mobile/desktop) apps may also use a private-use custom scheme
(RFC 8252 section 7.1), never a scheme a browser would execute.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

Platform = Literal["web", "spa", "publicClient"]

MAX_URI_LENGTH = 256
MAX_URIS = 20
_CUSTOM_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*\.[a-z0-9+.-]+$|^msal[0-9a-f-]{36}$")
_FORBIDDEN_SCHEMES = {"javascript", "data", "file", "vbscript", "about", "blob", "ftp", "ws", "wss"}
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")


def check_redirect_uri(uri: str, platform: Platform) -> str:
    """Return the URI if it is acceptable for the platform; raise ValueError saying why not."""
    if len(uri) > MAX_URI_LENGTH:
        raise ValueError(f"longer than {MAX_URI_LENGTH} characters")
    if not uri.isascii() or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        raise ValueError("must be ASCII with no spaces or control characters (use punycode for IDN hosts)")
    if "*" in uri:
        raise ValueError("wildcards are not allowed")
    if "#" in uri:
        raise ValueError("fragments are not allowed")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URI ({exc})") from None
    scheme = parts.scheme.lower()
    if parts.query:
        raise ValueError("query strings are not allowed")
    if "@" in parts.netloc or parts.username is not None:
        raise ValueError("user info is not allowed")
    if scheme in _FORBIDDEN_SCHEMES:
        raise ValueError(f"the {scheme}: scheme is not allowed")
    if scheme in ("http", "https"):
        host = parts.hostname or ""
        if host == "localhost":
            return uri
        if scheme == "http":
            raise ValueError("http is allowed only for http://localhost; use https")
        # The last label must start with a letter: that rules out every IPv4 spelling (dotted, hex, octal).
        if not _HOST.match(host) or not re.match(r"[a-z]", host.rsplit(".", 1)[-1]):
            raise ValueError("the host must be a DNS name (no IP literals)")
        if port == 0:
            raise ValueError("port 0 is not a valid port")
        return uri
    if platform != "publicClient":
        raise ValueError("must be https (or http://localhost)")
    if not _CUSTOM_SCHEME.match(scheme):
        raise ValueError("a custom scheme must be reverse-DNS style (com.example.app://...) or msal{clientId}")
    return uri


def check_redirect_uris(uris: list[str], platform: Platform) -> list[str]:
    if len(uris) > MAX_URIS:
        raise ValueError(f"at most {MAX_URIS} redirect URIs")
    if len(set(uris)) != len(uris):
        raise ValueError("redirect URIs must be unique")
    for index, uri in enumerate(uris):
        try:
            check_redirect_uri(uri, platform)
        except ValueError as exc:
            raise ValueError(f"redirectUris[{index}] {uri[:80]!r}: {exc}") from None
    return uris
