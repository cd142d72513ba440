"""Redirect URI rules, per platform.

Entra accepts more than is safe; these rules follow Microsoft's redirect URI restrictions and tighten them:
https only (http just for ``localhost``), no wildcards, no fragments, no user info, no IP literals, no query,
at most 256 characters each. Native (mobile/desktop) apps may also use a private-use custom scheme
(RFC 8252 section 7.1), never a scheme a browser would execute; which custom schemes a deployment takes is
policy (`native_form` below, and ALLOWED_REDIRECT_SCHEMES in service.check_request).

Schemes and hosts are case-insensitive (RFC 3986 section 6.2.2.1): a URI is normalised to lower case in both
before anything compares or sends it, so `HTTPS://EXAMPLE.ORG/cb` is `https://example.org/cb` everywhere.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import SplitResult, urlsplit

Platform = Literal["web", "spa", "publicClient"]

MAX_URI_LENGTH = 256
MAX_URIS = 20
_CUSTOM_SCHEME = re.compile(r"^[a-z][a-z0-9+-]*(\.[a-z0-9+-]+)+$|^msauth$")
_FORBIDDEN_SCHEMES = {"javascript", "data", "file", "vbscript", "about", "blob", "ftp", "ws", "wss"}
# The custom-scheme forms Microsoft documents for native apps (see native_form).
_IOS = re.compile(r"^msauth\.[a-z0-9-]+(\.[a-z0-9-]+)+://auth$")
_ANDROID = re.compile(r"^msauth://[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+/[A-Za-z0-9%_-]{20,64}$")
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")


def _normalised(parts: SplitResult) -> str:
    """The URI with its scheme and host in lower case (path and the rest as sent)."""
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port is not None else "")
    return parts._replace(scheme=parts.scheme.lower(), netloc=host).geturl()


def native_form(uri: str) -> str | None:
    """Which documented native-app form a custom-scheme URI has: `ios` for `msauth.{bundle id}://auth`
    (MSAL for iOS and macOS; Graph's publicClientApplication.redirectUris), `android` for
    `msauth://{package name}/{URL-encoded signature hash}` (MSAL for Android, brokered sign-in); None for
    anything else. `msal{client id}://auth` is documented too, but names the client id, which a request
    cannot know before the application exists: another app's id would be borrowing its identity."""
    if _IOS.match(uri):
        return "ios"
    if _ANDROID.match(uri):
        return "android"
    return None


def check_redirect_uri(uri: str, platform: Platform) -> str:
    """Return the URI, normalised, if it is acceptable for the platform; raise ValueError saying why not."""
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
            return _normalised(parts)
        if scheme == "http":
            raise ValueError("http is allowed only for http://localhost; use https")
        # The last label must start with a letter: that rules out every IPv4 spelling (dotted, hex, octal).
        if not _HOST.match(host) or not re.match(r"[a-z]", host.rsplit(".", 1)[-1]):
            raise ValueError("the host must be a DNS name (no IP literals)")
        if port == 0:
            raise ValueError("port 0 is not a valid port")
        return _normalised(parts)
    if platform != "publicClient":
        raise ValueError("must be https (or http://localhost)")
    if not _CUSTOM_SCHEME.match(scheme):
        raise ValueError("a custom scheme must be msauth.{bundle id}://auth, msauth://{package}/{signature hash} "
                         "or a reverse-DNS scheme the deployment allows (com.example.app://...)")
    return _normalised(parts)


def check_redirect_uris(uris: list[str], platform: Platform) -> list[str]:
    if len(uris) > MAX_URIS:
        raise ValueError(f"at most {MAX_URIS} redirect URIs")
    normalised = []
    for index, uri in enumerate(uris):
        try:
            normalised.append(check_redirect_uri(uri, platform))
        except ValueError as exc:
            raise ValueError(f"redirectUris[{index}] {uri[:80]!r}: {exc}") from None
    if len(set(normalised)) != len(normalised):
        raise ValueError("redirect URIs must be unique (schemes and hosts compare case-insensitively)")
    return normalised
