"""Request and response models: the API's one source of truth (validation and the OpenAPI document)."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from .redirects import check_redirect_uris

# A slug: lower-case letters, digits and single hyphens. It is the idempotency handle, part of the
# application's uniqueName and of the Key Vault secret name (where "--" separates parts), so it is kept short.
NAME_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
# What an Idempotency-Key header may hold (create and rotate).
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
TARGET_PATTERN = r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$"

Access = Literal["reader", "writer", "admin"]
RegistrationType = Literal["confidential", "public", "service", "resource"]
Platform = Literal["web", "spa", "mobile"]


# Unicode categories refused in free text: controls (Cc), format characters (Cf: every bidi override and
# isolate, zero-width space and joiners, marks, BOM), lone surrogates (Cs, which JSON's \ud800 escape
# can carry and UTF-8 cannot), private use (Co) and the line and paragraph separators (Zl, Zp).
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _printable(value: str) -> str:
    if any(unicodedata.category(c) in _INVISIBLE for c in value):
        raise ValueError("must not contain control, bidi, zero-width, surrogate or private-use characters")
    if value != value.strip():
        raise ValueError("must not start or end with white space")
    return value


class _Strict(BaseModel):
    # strict: JSON types as sent (no "true" for true, no "30" or true for 30, no 1 for a string).
    model_config = ConfigDict(extra="forbid", strict=True)


class SecretCredential(_Strict):
    """A client secret made by Entra (addPassword) and stored in Key Vault; the API never returns it."""

    kind: Literal["secret"] = "secret"
    lifetimeDays: int | None = Field(
        default=None, ge=1, le=730,
        description="Days until the secret expires. Default and maximum come from the service's settings.",
    )


class CertificateCredential(_Strict):
    """A self-signed certificate made here: the public part goes to Entra, key and certificate (PEM) to Key
    Vault. The client authenticates with a signed client assertion."""

    kind: Literal["certificate"]
    lifetimeDays: int | None = Field(default=None, ge=1, le=730)


class FederatedCredential(_Strict):
    """No secret at all: Entra trusts tokens that another issuer (Kubernetes, GitHub, a managed identity)
    gives the workload, matched on issuer and subject."""

    kind: Literal["federated"]
    lifetimeDays: ClassVar[None] = None  # nothing expires here: Entra trusts the issuer's short-lived tokens
    issuer: str = Field(max_length=600, pattern=r"^https://[^\s/?#]+(/[^\s?#]*)?$")
    subject: str = Field(min_length=1, max_length=600)
    audience: str = Field(default="api://AzureADTokenExchange", min_length=1, max_length=600)

    @field_validator("subject", "audience")
    @classmethod
    def _printable_text(cls, value: str) -> str:
        return _printable(value)


ConfidentialCredential = Annotated[SecretCredential | CertificateCredential, Field(discriminator="kind")]
ServiceCredential = Annotated[SecretCredential | CertificateCredential | FederatedCredential,
                              Field(discriminator="kind")]
PRINCIPAL_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class _RegistrationRequest(_Strict):
    """What every type carries. Each type then declares every other attribute a registration can have: a
    field when the type takes it, a ClassVar with its fixed value when it does not (not a field, so not in the
    schema, and refused as an unknown member when sent). So code reads `request.access` on any type, typed."""

    name: str = Field(pattern=NAME_PATTERN, min_length=3, max_length=40, description="Slug naming the registration; the idempotency handle.")
    displayName: str = Field(min_length=1, max_length=120)
    dicomService: str = Field(pattern=TARGET_PATTERN, description="A DICOM service named in the settings.")
    notes: str | None = Field(default=None, max_length=500)
    owners: list[Annotated[str, Field(pattern=PRINCIPAL_ID)]] = Field(
        default_factory=list, max_length=10,
        description="Object ids of users or service principals who become owners of the application and its "
                    "service principal (the API's own identity stays one). Needs MANAGE_OWNERS.",
    )

    @field_validator("owners")
    @classmethod
    def _unique_owners(cls, value: list[str]) -> list[str]:
        if len({v.lower() for v in value}) != len(value):
            raise ValueError("owners must be unique")
        return [v.lower() for v in value]

    @field_validator("displayName", "notes")
    @classmethod
    def _printable_text(cls, value: str | None) -> str | None:
        return value if value is None else _printable(value)


class _WithCredential(_RegistrationRequest):
    credential: SecretCredential | CertificateCredential | FederatedCredential  # each type narrows it
    autoRotate: bool = Field(default=False, description="Rotate the secret or certificate before it expires.")
    secretReaders: list[Annotated[str, Field(pattern=PRINCIPAL_ID)]] = Field(
        default_factory=list, max_length=10,
        description="Object ids of principals that may read this one secret (Key Vault Secrets User on it).",
    )

    @field_validator("credential", mode="before")
    @classmethod
    def _secret_by_default(cls, value: Any) -> Any:
        """README: `secret` is the default kind, so a credential that names no kind is a secret."""
        if isinstance(value, dict) and "kind" not in value:
            return {**value, "kind": "secret"}
        return value

    @model_validator(mode="after")
    def _secretless_has_nothing_to_share(self) -> _WithCredential:
        if self.credential.kind == "federated" and (self.autoRotate or self.secretReaders):
            raise ValueError("a federated credential has no secret: autoRotate and secretReaders do not apply")
        if len(set(self.secretReaders)) != len(self.secretReaders):
            raise ValueError("secretReaders must be unique")
        return self


def _distinct(value: list[str]) -> list[str]:
    if len({v.lower() for v in value}) != len(value):
        raise ValueError("must not name an object twice")
    return value


GroupIds = Annotated[list[Annotated[str, Field(pattern=PRINCIPAL_ID)]], AfterValidator(_distinct)]


def _sign_in_groups() -> Any:
    return Field(
        default_factory=list, max_length=10,
        description="Object ids of security groups whose members may sign in through this client: its service "
                    "principal requires assignment, and each group is assigned to it. Empty: nobody until an "
                    "administrator assigns users or groups.")


class ConfidentialRequest(_WithCredential):
    """A web app: authorization code flow with a client secret, web reply URLs, refresh tokens."""

    type: Literal["confidential"]
    redirectUris: list[str] = Field(min_length=1, max_length=20)
    signInGroups: GroupIds = _sign_in_groups()
    credential: ConfidentialCredential = Field(default_factory=SecretCredential)
    access: ClassVar[None] = None
    platform: ClassVar[Literal["web"]] = "web"
    identifierUri: ClassVar[None] = None

    @field_validator("redirectUris")
    @classmethod
    def _uris(cls, value: list[str]) -> list[str]:
        return check_redirect_uris(value, "web")


class PublicRequest(_RegistrationRequest):
    """A SPA or mobile/desktop app that cannot keep a secret: authorization code + PKCE."""

    type: Literal["public"]
    platform: Literal["spa", "mobile"] = "spa"
    redirectUris: list[str] = Field(min_length=1, max_length=20)
    signInGroups: GroupIds = _sign_in_groups()
    access: ClassVar[None] = None
    credential: ClassVar[None] = None
    autoRotate: ClassVar[bool] = False
    secretReaders: ClassVar[tuple[str, ...]] = ()
    identifierUri: ClassVar[None] = None

    @field_validator("redirectUris")
    @classmethod
    def _uris(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # A field validator (platform is declared first, so it is read already): an error's loc is
        # redirectUris here as on a confidential client.
        return check_redirect_uris(value, "publicClient" if info.data.get("platform") == "mobile" else "spa")


class ServiceRequest(_WithCredential):
    """A daemon (ingestion job, PACS router): client credentials straight at the token endpoint."""

    type: Literal["service"]
    access: Access
    credential: ServiceCredential = Field(default_factory=SecretCredential)
    platform: ClassVar[None] = None
    redirectUris: ClassVar[tuple[str, ...]] = ()
    signInGroups: ClassVar[tuple[str, ...]] = ()
    identifierUri: ClassVar[None] = None


class ResourceRequest(_RegistrationRequest):
    """The API registration an open-source DICOM server validates tokens against."""

    type: Literal["resource"]
    identifierUri: str | None = Field(
        default=None, max_length=120, pattern=r"^api://[A-Za-z0-9][A-Za-z0-9._/-]*[A-Za-z0-9]$",
        description="Defaults to api://{tenantId}/{name}.",
    )
    access: ClassVar[None] = None
    platform: ClassVar[None] = None
    redirectUris: ClassVar[tuple[str, ...]] = ()
    signInGroups: ClassVar[tuple[str, ...]] = ()
    credential: ClassVar[None] = None
    autoRotate: ClassVar[bool] = False
    secretReaders: ClassVar[tuple[str, ...]] = ()


class AdoptRequest(_Strict):
    """An application made elsewhere, to bring under management under the route's name. Its client id,
    redirect URIs and credentials stay as they are; what is there becomes the recorded desired state."""

    appId: str = Field(pattern=PRINCIPAL_ID, description="The application (client) id of the app to adopt.")
    type: Literal["confidential", "public", "service"]
    dicomService: str = Field(pattern=TARGET_PATTERN, description="A DICOM service named in the settings.")
    access: Access | None = Field(default=None, description="Service clients: the access it should have.")

    @model_validator(mode="after")
    def _access_for_services(self) -> AdoptRequest:
        # The kinds whose create request carries an access level (ServiceRequest) take one here too.
        takes_access = sorted(t for t in REQUEST_MODEL_BY_TYPE if carries(t, "access"))
        if (self.type in takes_access) != (self.access is not None):
            raise ValueError(f"access is given for {' and '.join(takes_access)} clients, and only for them")
        return self


class PatchCredential(_Strict):
    lifetimeDays: int | None = Field(default=None, ge=1, le=730,
                                     description="Days the next rotated secret or certificate lives.")


class RegistrationPatch(_Strict):
    """A JSON merge patch (RFC 7396) of a registration: members replace, null removes. It is merged into the
    registration as a create body describes it and the result is checked like a create. type, dicomService,
    name, platform, identifierUri and the credential's kind cannot change in place (409)."""

    displayName: str | None = Field(default=None, min_length=1, max_length=120)
    notes: str | None = Field(default=None, max_length=500, description="null removes the notes.")
    redirectUris: list[str] | None = Field(default=None, min_length=1, max_length=20,
                                           description="The whole new list (confidential and public clients).")
    access: Access | None = Field(default=None, description="Service clients: the new role is in place "
                                                            "before the old one goes (unless access is lowered).")
    secretReaders: list[Annotated[str, Field(pattern=PRINCIPAL_ID)]] | None = Field(default=None, max_length=10)
    autoRotate: bool | None = None
    credential: PatchCredential | None = None
    owners: list[Annotated[str, Field(pattern=PRINCIPAL_ID)]] | None = Field(default=None, max_length=10)


# A validated request of any type (for signatures), and the same union as the body parser reads it.
Request = ConfidentialRequest | PublicRequest | ServiceRequest | ResourceRequest
RegistrationRequest = Annotated[Request, Field(discriminator="type")]


REQUEST_MODELS: tuple[type[_RegistrationRequest], ...] = (ConfidentialRequest, PublicRequest, ServiceRequest,
                                                         ResourceRequest)
CREDENTIAL_MODELS: tuple[type[_Strict], ...] = (SecretCredential, CertificateCredential, FederatedCredential)


def _tag(model: type[BaseModel], field: str) -> str:
    return model.model_fields[field].annotation.__args__[0]  # type: ignore[union-attr]


REQUEST_MODEL_BY_TYPE: dict[str, type[_RegistrationRequest]] = {_tag(m, "type"): m for m in REQUEST_MODELS}


def carries(request_type: str, field: str) -> bool:
    """Whether a create request of this type has the field (a ClassVar stand-in, like a confidential client's
    fixed platform, does not count): what a kind's request carries is its model."""
    return field in REQUEST_MODEL_BY_TYPE[request_type].model_fields


# The values that pick a union's member. pydantic names the member in an error's loc
# (["service", "credential", "secret", "lifetimeDays"]); the API's errors leave them out, so one field has
# one path whatever the type ("credential.lifetimeDays", "redirectUris").
UNION_TAGS = frozenset([_tag(m, "type") for m in REQUEST_MODELS] + [_tag(m, "kind") for m in CREDENTIAL_MODELS])


def where_it_goes(field: str, request_type: Any, *, in_credential: bool) -> str | None:
    """A hint for a field sent where it does not belong: inside or outside `credential`, or on another type.
    Read off the models, so a field added to one of them is placed by the hint too."""
    request_fields = {f: [_tag(m, "type") for m in REQUEST_MODELS if f in m.model_fields]
                      for m in REQUEST_MODELS for f in m.model_fields}
    credential_kinds = {f: [_tag(m, "kind") for m in CREDENTIAL_MODELS if f in m.model_fields]
                        for m in CREDENTIAL_MODELS for f in m.model_fields}
    if in_credential:
        if field in request_fields:
            return f"{field} is a field of the registration itself: send it beside credential, not inside it"
        return None
    if field in credential_kinds and field not in request_fields:
        return (f"{field} belongs inside credential: {{\"credential\": {{\"{field}\": …}}}} "
                f"(credential kinds {', '.join(credential_kinds[field])})")
    owners = request_fields.get(field)
    if owners and request_type not in owners:
        return f"{field} applies to type {', '.join(owners)} only, not to {request_type}"
    return None


class _Response(BaseModel):
    """A response body: the document promises these fields and no others (a free-form member such as a
    registration's config says so itself)."""

    model_config = ConfigDict(extra="forbid")


class SecretReference(_Response):
    """Where the secret or certificate lives (the value itself is only ever in Key Vault), or, for a
    federated credential, what Entra trusts."""

    kind: Literal["secret", "certificate", "federated"] = "secret"
    keyVaultSecretUri: str | None = None
    keyVaultSecretName: str | None = None
    keyId: str | None = None
    endDateTime: str | None = None
    thumbprint: str | None = None
    issuer: str | None = None
    subject: str | None = None
    audience: str | None = None


class Drift(_Response):
    """One difference between what this API last applied and what Entra ID or Azure hold now."""

    field: str
    expected: Any = Field(description="What was applied: the value, or for free text its fingerprint "
                                      "(sha256: and 8 hex digits).")
    actual: Any


class Registration(_Response):
    name: str
    type: RegistrationType
    displayName: str
    dicomService: str
    state: Literal["ready", "provisioning"]
    appId: str
    objectId: str
    servicePrincipalId: str | None = None
    access: Access | None = None
    platform: Platform | None = None
    redirectUris: list[str] = []
    identifierUri: str | None = None
    credential: SecretReference | None = None
    autoRotate: bool | None = None
    secretReaders: list[str] = []
    owners: list[str] = []
    signInGroups: list[str] = []
    requestedBy: str | None = None
    notes: str | None = None
    createdDateTime: str | None = None
    etag: str | None = Field(default=None, description="The registration's entity tag, as the ETag header "
                                                       "carries it: send it as If-Match to change or delete "
                                                       "exactly this state.")
    changed: list[str] | None = Field(default=None, description="What a PUT or PATCH changed (empty: nothing).")
    drift: list[Drift] | None = Field(default=None, description="Where Entra ID or Azure differ from what this "
                                                                "API last applied; a PUT of the same body repairs "
                                                                "it.")
    config: dict[str, Any] | None = Field(
        default=None, description="The client configuration, as GET /registrations/{name}/config answers it; "
                                  "its members depend on the type and the credential kind.")


class RegistrationList(_Response):
    value: list[Registration]
    nextLink: str | None = Field(default=None, description="The URL of the next page; absent on the last page.")
    nextAfter: str | None = Field(default=None, description="The cursor of the next page: send it as the after "
                                                            "parameter. Absent on the last page.")


class RemovedObject(_Response):
    kind: str = Field(description="application, servicePrincipal, roleAssignment, appRoleAssignment, "
                                  "oauth2PermissionGrant, keyVaultSecret or corsOrigin")
    id: str
    note: str | None = None


class DeletionReport(_Response):
    name: str
    removed: list[RemovedObject]


class CredentialState(_Response):
    """One credential this API added to a registration. Never its value or hint."""

    keyId: str
    kind: Literal["secret", "certificate"]
    state: Literal["active", "expiring", "superseded", "unreachable"]
    startDateTime: str | None = None
    endDateTime: str | None = None
    supersededDateTime: str | None = None
    removeAfter: str | None = Field(default=None, description="When the sweep removes a superseded credential.")
    keyVaultSecretVersion: str | None = None


class CredentialList(_Response):
    name: str
    credentials: list[CredentialState]


class ExpiringCredential(_Response):
    name: str
    type: RegistrationType | None = None
    kind: Literal["secret", "certificate"]
    keyId: str
    endDateTime: str | None = None
    daysLeft: float
    autoRotate: bool
    requestedBy: str | None = None


class ExpiringReport(_Response):
    days: int
    value: list[ExpiringCredential]


class CapacityReport(_Response):
    """The API identity's directory object quota (each registration takes two objects). Without a limit
    (DIRECTORY_OBJECT_QUOTA=0) limit, free and registrationsThatFit are null."""

    limit: int | None
    used: int = Field(description="Objects the identity owns plus its applications and service principals in "
                                  "deleted items.")
    owned: int
    deleted: int
    free: int | None
    registrationsThatFit: int | None


class VerificationCheck(_Response):
    name: str = Field(description="What was checked, e.g. token, Azure role assignment, admin consent.")
    ok: bool
    detail: str


class VerificationReport(_Response):
    """The credential got a DICOM token (never returned), or, without a credential, the configuration checks
    passed."""

    status: Literal["verified"]
    audience: str | None = Field(default=None,
                                 description="The token's aud (clients with a secret or certificate).")
    roles: list[str] | None = Field(default=None, description="App roles in the token.")
    scopes: list[str] | None = Field(default=None, description="Delegated scopes in the token (scp).")
    tokenVersion: str | None = Field(default=None, description="The token's ver: 1.0 or 2.0.")
    expiresOn: str | None = Field(default=None, description="When the token expires (UTC).")
    dataPlane: Literal["ok", "skipped"] | None = Field(
        default=None, description="Service clients: ok when a QIDO-RS search at the DICOM service with the "
                                  "token succeeded; skipped when VERIFY_DATA_PLANE is false.")
    checks: list[VerificationCheck]


class VerificationPending(_Response):
    """Entra ID has not yet propagated the registration; poll Location after Retry-After."""

    status: Literal["pending"]
    reason: str


# ---------------------------------------------------------------------------------- query parameters
def _whole_number(value: Any) -> Any:
    """A query value is text: only plain digits are a number (no sign, space, underscore or decimal point)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("whole_number", "must be a whole number, written with digits only")
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]


class _Query(BaseModel):
    """The query parameters an operation reads; any other is refused, not ignored (a caller who misspells a
    filter must not get every registration). openapi.py documents the same models. `visibility` is what the
    Logic Apps designer shows."""

    model_config = ConfigDict(extra="forbid")


class ListQuery(_Query):
    type: RegistrationType | None = Field(default=None, title="Type", description="Only registrations of this type.")
    dicomService: str | None = Field(default=None, title="DICOM service",
                                     description="Only registrations for this DICOM service.")
    top: WholeNumber = Field(default=50, ge=1, le=100, title="Page size", description="Page size.",
                             json_schema_extra={"visibility": "advanced"})
    after: str | None = Field(default=None, title="After",
                              description="Continue after this name (a page's nextAfter; nextLink carries it too).",
                              json_schema_extra={"visibility": "advanced"})


class ExpiringQuery(_Query):
    days: WholeNumber = Field(default=30, ge=1, le=730, title="Days", description="The window, in days.")


class GetQuery(_Query):
    drift: Literal["live"] | None = Field(
        default=None, title="Drift",
        description="live: also compare the DICOM role, the secret's readers and the owners with what this API last "
                    "applied (one to three more calls to Azure); without it drift covers the application's own fields, "
                    "what the one read of it shows.",
        json_schema_extra={"visibility": "advanced"})


class NoQuery(_Query):
    """An operation that reads no query parameter."""
