"""Who is calling: a bearer token from Entra ID, validated here (signature via JWKS, issuer, audience, tenant,
expiry), or, only where the platform says Easy Auth is on, the principal Easy Auth forwards.

A forged ``X-MS-CLIENT-PRINCIPAL`` header is never trusted: outside Easy Auth it is ignored and a request
that carries it without a valid token is refused and logged as suspicious.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from .manifest import BROKER, REQUEST, REQUESTED_FOR, Caller
from .problems import Forbidden, Unauthenticated, UpstreamUnavailable, ValidationProblem
from .settings import Settings

log = logging.getLogger("registrations.auth")

LEEWAY_SECONDS = 120
PRINCIPAL_HEADER = "x-ms-client-principal"
# Tokens naming a kid we do not hold trigger a refresh at most this often, whoever sends them.
UNKNOWN_KID_REFRESH_SECONDS = 5.0
# A kid a refresh did not find is not looked for again for this long; a key Entra publishes a little
# later (rollover announces new keys before signing with them, but caches differ) is found after it.
MISSING_KID_TTL_SECONDS = 300.0
# Every key set is refetched after this long, so keys Entra has withdrawn stop being accepted.
FULL_REFRESH_SECONDS = 24 * 3600.0
# After a failed fetch, requests that would fetch again are answered 503 for this long instead.
FAILED_FETCH_BACKOFF_SECONDS = 5.0
FETCH_TIMEOUT_SECONDS = 10
MAX_MISSING_KIDS = 10_000
TENANT_CLAIMS = ("http://schemas.microsoft.com/identity/claims/tenantid", "tid")
_OBJECT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class _Flight:
    """One refresh in progress; requests for unknown kids wait on it instead of starting another."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: UpstreamUnavailable | None = None


class JwksCache:
    """Signing keys of the tenant, from its discovery document (OpenID Connect Discovery 1.0, `jwks_uri`).

    Lookups of known keys only take a short lock and never wait for the network. A refresh runs outside
    that lock, one at a time (single flight): when a token names a kid we do not hold (key rollover), when
    the key set is a day old, or on first use. Unknown-kid refreshes are spaced and their misses remembered
    for a while, so tokens with made-up kids cannot turn into a fetch flood against the authority.
    """

    def __init__(self, settings: Settings, *, fetch: Callable[[], dict[str, Any]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._fetch = fetch or self._fetch_from_authority
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._missing: dict[str, float] = {}  # kid -> when a refresh did not find it
        self._loaded_at = float("-inf")
        self._unknown_refresh_at = float("-inf")
        self._failure: tuple[float, UpstreamUnavailable] | None = None
        self._flight: _Flight | None = None
        self._lock = threading.Lock()

    def key(self, kid: str) -> Any:
        """The public key for ``kid``, or None when the tenant does not publish it.

        :raises UpstreamUnavailable: the keys were needed and could not be fetched.
        """
        with self._lock:
            now = self._clock()
            known = self._keys.get(kid)
            stale = now - self._loaded_at >= FULL_REFRESH_SECONDS
            if known is not None and not stale:
                return known
            flight, leader = self._flight, False
            if flight is None:
                if not self._may_fetch(kid, known, stale, now):
                    return known
                flight = self._flight = _Flight()
                leader = True
                if not stale:
                    self._unknown_refresh_at = now
            elif known is not None:
                return known  # a day-old key serves until the refresh in flight replaces it
        if leader:
            self._refresh(flight)
        elif not flight.done.wait(2 * FETCH_TIMEOUT_SECONDS + 5):
            raise UpstreamUnavailable("timed out waiting for the tenant's signing keys")
        with self._lock:
            found = self._keys.get(kid)
            if flight.error is not None:
                if found is None:
                    raise _again(flight.error)
                return found  # a refresh of a day-old set failed: keep serving it until one succeeds
            if found is None:
                if len(self._missing) >= MAX_MISSING_KIDS:
                    self._missing.clear()
                self._missing[kid] = self._clock()
            return found

    def _may_fetch(self, kid: str, known: Any, stale: bool, now: float) -> bool:
        """Whether this lookup may start a refresh (called under the lock, with no refresh in flight).
        Returns False to answer with what is cached; raises the last failure while backing off from it."""
        if self._failure is not None and now - self._failure[0] < FAILED_FETCH_BACKOFF_SECONDS:
            if known is not None:
                return False
            raise _again(self._failure[1])
        if stale:
            return True
        missed = self._missing.get(kid)
        if missed is not None and now - missed < MISSING_KID_TTL_SECONDS:
            return False
        return now - self._unknown_refresh_at >= UNKNOWN_KID_REFRESH_SECONDS

    def _refresh(self, flight: _Flight) -> None:
        keys: dict[str, Any] | None = None
        try:
            keys = self._fetch()
        except UpstreamUnavailable as problem:
            log.warning("the tenant's signing keys could not be fetched: %s", problem.detail)
            flight.error = problem
        except BaseException:  # a bug: the requests waiting on this flight must not wait for ever
            flight.error = _unavailable("discovery", None, "unexpected error")
            raise
        finally:
            with self._lock:
                now = self._clock()
                if keys is not None:
                    self._keys, self._loaded_at, self._failure = keys, now, None
                    self._missing = {kid: at for kid, at in self._missing.items()
                                     if kid not in keys and now - at < MISSING_KID_TTL_SECONDS}
                else:
                    self._failure = (now, flight.error)
                self._flight = None
            flight.done.set()

    def _fetch_from_authority(self) -> dict[str, Any]:
        """Discovery document, then its `jwks_uri`. Any failure is the authority being unavailable."""
        import requests

        session = requests.Session()
        session.trust_env = False
        discovery = f"{self._settings.authority}/v2.0/.well-known/openid-configuration"
        with session:
            jwks_uri = _get_json(session, "discovery", discovery, self._settings.connection_verify).get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
                raise _unavailable("discovery", None, "the discovery document names no https jwks_uri")
            document = _get_json(session, "jwks", jwks_uri, self._settings.connection_verify)
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise _unavailable("jwks", None, "the key set has no keys array")
        keys: dict[str, Any] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry).key
            except jwt.PyJWTError:  # a key of a type we cannot use (RFC 7517 §5: ignore it, keep the rest)
                log.info("ignoring published key %s of an unusable type", entry["kid"][:60])
        return keys


def _get_json(session: Any, operation: str, url: str, verify: str | bool) -> dict[str, Any]:
    import requests

    try:
        response = session.get(url, timeout=FETCH_TIMEOUT_SECONDS, verify=verify)
    except requests.RequestException as exc:
        raise _unavailable(operation, None, type(exc).__name__) from exc
    if response.status_code != 200:
        raise _unavailable(operation, response.status_code, f"status {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise _unavailable(operation, 200, "the answer is not JSON") from None
    if not isinstance(body, dict):
        raise _unavailable(operation, 200, "the answer is not a JSON object")
    return body


def _again(problem: UpstreamUnavailable) -> UpstreamUnavailable:
    """A fresh copy to raise in another request (re-raising one instance keeps growing its traceback)."""
    copy = UpstreamUnavailable(problem.detail, **problem.extensions)
    copy.headers.update(problem.headers)
    return copy


def _unavailable(operation: str, status: int | None, reason: str) -> UpstreamUnavailable:
    problem = UpstreamUnavailable(
        f"the tenant's signing keys could not be fetched to check the token ({operation}: {reason}); retry later",
        upstream={"service": "entra", "operation": operation, "status": status, "code": None},
    )
    problem.headers["Retry-After"] = str(int(FAILED_FETCH_BACKOFF_SECONDS))
    return problem


class Authenticator:
    def __init__(self, settings: Settings, *, easy_auth: bool = False) -> None:
        self.settings = settings
        self.easy_auth = easy_auth
        self._jwks = JwksCache(settings)
        tid = settings.tenant_id
        self.issuers = {f"{settings.authority}/v2.0", f"https://sts.windows.net/{tid}/"}
        self.audiences = [a for a in (settings.api_client_id, settings.api_audience) if a]

    def caller(self, headers: Mapping[str, str]) -> Caller:
        auth = headers.get("authorization") or ""
        has_principal = bool(headers.get(PRINCIPAL_HEADER))
        if self.easy_auth and has_principal:
            return self._from_easy_auth(headers[PRINCIPAL_HEADER])
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            if has_principal:
                log.warning("suspicious request: X-MS-CLIENT-PRINCIPAL without Easy Auth and without a token")
            raise Unauthenticated("send an Entra ID access token in the Authorization header (Bearer)")
        try:
            claims = self._validate(token.strip())
        except jwt.PyJWTError as exc:
            if has_principal:
                log.warning("suspicious request: X-MS-CLIENT-PRINCIPAL with an invalid token")
            raise Unauthenticated(f"the bearer token was refused: {exc}") from None
        return _caller_from_claims(claims)

    def _validate(self, token: str) -> dict:
        if not self.audiences:
            raise jwt.InvalidTokenError("the API's audience is not configured (API_CLIENT_ID/API_AUDIENCE)")
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "RS256":
            raise jwt.InvalidAlgorithmError("only RS256 tokens are accepted")
        if not header.get("kid") or not isinstance(header["kid"], str):
            raise jwt.InvalidKeyError("the token names no signing key (kid)")
        key = self._jwks.key(header["kid"])
        if key is None:
            raise jwt.InvalidKeyError("the token is signed with a key the tenant does not publish")
        claims = jwt.decode(
            token, key, algorithms=["RS256"], audience=self.audiences, leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "tid", "oid"]},
        )
        _check_claim_shapes(claims)
        if claims["iss"] not in self.issuers:
            raise jwt.InvalidIssuerError("the token was issued by another authority")
        if claims["tid"] != self.settings.tenant_id:
            raise jwt.InvalidTokenError("the token is from another tenant")
        return claims

    def _from_easy_auth(self, encoded: str) -> Caller:
        try:
            principal = json.loads(base64.b64decode(encoded, validate=True))
            claims: dict[str, list[str]] = {}
            for claim in principal.get("claims", []):
                if not isinstance(claim["typ"], str) or not isinstance(claim["val"], str):
                    raise TypeError("a claim's typ and val are strings")
                claims.setdefault(claim["typ"], []).append(claim["val"])
            role_typ = principal.get("role_typ", "roles")
            if not isinstance(role_typ, str) or not isinstance(principal.get("auth_typ"), str):
                raise TypeError("auth_typ and role_typ are strings")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise Unauthenticated("the Easy Auth principal could not be read") from None
        _check_easy_auth_principal(principal, claims, self.settings.tenant_id)
        # Easy Auth checks the token's audience against its own allowed audiences; when the principal carries
        # one, it must also be this API's, so a token minted for another app behind the same front door
        # is not taken here.
        audiences = claims.get("aud", [])
        if audiences and not set(audiences) & set(self.audiences):
            raise Unauthenticated("the Easy Auth principal's audience is not this API (API_CLIENT_ID/API_AUDIENCE)")
        oid = (claims.get("http://schemas.microsoft.com/identity/claims/objectidentifier")
               or claims.get("oid") or [""])[0]
        if not oid:
            raise Unauthenticated("the Easy Auth principal has no object id")
        name = (claims.get("name") or claims.get("appid") or claims.get("azp") or [oid])[0]
        return Caller(object_id=oid, name=name, roles=frozenset(claims.get(role_typ, []) + claims.get("roles", [])),
                      app_id=(claims.get("appid") or claims.get("azp") or [None])[0])


def _check_easy_auth_principal(principal: dict, claims: dict[str, list[str]], tenant_id: str) -> None:
    """Easy Auth also signs in other providers (Google, GitHub...) and, with a multi-tenant app, other
    tenants: only a Microsoft Entra principal of our own tenant is a caller."""
    if principal.get("auth_typ") != "aad":
        raise Unauthenticated("the Easy Auth principal is not from Microsoft Entra ID")
    tenants = {value for typ in TENANT_CLAIMS for value in claims.get(typ, [])}
    if tenants and tenants != {tenant_id}:
        raise Unauthenticated("the Easy Auth principal is from another tenant")


# Claims this API reads, and the JSON type each must have (RFC 7519 4.1; Entra's access token reference).
# A token that gives one another shape (an `iss` list, a `roles` string) is refused, never half-read.
_STRING_CLAIMS = ("iss", "tid", "oid", "azp", "appid", "name", "preferred_username", "upn")


def _check_claim_shapes(claims: dict) -> None:
    for name in _STRING_CLAIMS:
        if name in claims and not isinstance(claims[name], str):
            raise jwt.InvalidTokenError(f"the {name} claim is not a string")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise jwt.InvalidTokenError("the roles claim is not a list of strings")


def _caller_from_claims(claims: dict) -> Caller:
    app_id = claims.get("azp") or claims.get("appid")
    name = claims.get("name") or claims.get("preferred_username") or claims.get("upn") or app_id or claims["oid"]
    return Caller(object_id=claims["oid"], name=name, roles=frozenset(claims.get("roles") or []), app_id=app_id)


def effective_caller(caller: Caller, headers: Mapping[str, str]) -> Caller:
    """The caller a request acts as. A broker (app role Registrations.Broker: an approval workflow's identity,
    which authenticated the person at its own trigger) names the person in the Requested-For header (their
    object id); the request then acts as that person with Registrations.Request and nothing more, so the
    registration is theirs, the requester policy binds it, and the person's own token manages it afterwards.
    Only a broker may name someone: anyone else sending the header is refused, so a requester cannot claim to
    be another. A broker without the header acts as nobody (it holds no other role)."""
    named = headers.get(REQUESTED_FOR.lower())
    if named is None:
        return caller
    if BROKER not in caller.roles:
        raise Forbidden(f"only a caller with the app role {BROKER} may ask on someone's behalf "
                        f"({REQUESTED_FOR}); call in your own name without that header",
                        requiredRoles=[BROKER])
    person = named.strip().lower()
    if not _OBJECT_ID.match(person):
        raise ValidationProblem(f"{REQUESTED_FOR} must be the requester's object id (a GUID)",
                                errors=[{"loc": ["header", REQUESTED_FOR], "type": "object_id",
                                         "msg": "an Entra object id, from the oid claim of the requester's token"}])
    return Caller(object_id=person, name=f"{person} through {caller.name}", roles=frozenset({REQUEST}),
                  app_id=caller.app_id, broker=caller.object_id)
