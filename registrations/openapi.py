"""The API described as OpenAPI 2.0 (for Logic Apps custom connectors) and OpenAPI 3.0, from one source.

The source is ``OPERATIONS``, one entry per HTTP function of ``registrations/http.py`` (keyed by the
function's name), plus the JSON Schema that pydantic derives from the very models the functions validate
and return. Nothing about a field is written twice: its type, limits, pattern and description come from
``models.py``; this module adds only what the Logic Apps designer shows (``x-ms-summary``,
``x-ms-visibility``) and what a model cannot say (methods, paths, parameters, status codes).

How the discriminated request union is represented
---------------------------------------------------
``POST /registrations`` takes one of four bodies told apart by ``type``. OpenAPI 3.0 says that exactly:
``oneOf`` the four models with a ``discriminator`` mapping. Swagger 2.0 has no ``oneOf``; its own
polymorphism (``discriminator`` plus ``allOf`` subtypes, with ``x-ms-discriminator-value``) is ignored by
the Logic Apps designer, which then shows only the base fields. And separate operations per type are not
possible: Swagger 2.0 allows one operation per method and path. So the 2.0 document flattens the union:
one ``RegistrationRequest`` object with every field of every variant, ``type`` as an enum, the fields that
all variants require marked required, and each other field's description saying which types use it. The
designer renders that as one card with a type picker; the API's own validation (the same pydantic union)
still rejects a field that does not belong to the chosen type with a 422. Any other union of objects (for
example credential kinds) is flattened the same way.

What differs between the two documents
--------------------------------------
The 2.0 document is for custom connectors and follows their documented rules (tests/openapi/
test_connector_rules.py cites each page): the authorization code flow as its one OAuth definition,
``application/json`` only, one response schema per operation (error answers are described, not schematised),
``x-ms-url-encoding`` on path parameters, ``x-ms-visibility`` on every operation. The 3.0 document is for
client generators: every answer has one content type and its schema (problem+json included), nullable enums
list ``null``, and each operation carries its own security requirement. In both, the configuration route's
``{format}`` segment becomes one operation per ``views.FORMATS`` entry (2.0: the JSON ones); an operation
whose body is not ``application/json`` (the merge-patch PATCH) is in the 3.0 document only.

``python -m registrations.openapi --version 2.0 --host HOST --tenant TENANT --audience URI`` prints a
document for a given deployment (the connector file in ``samples/logic-apps/connector/`` is made so).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, TypeAdapter

from .models import (
    IDEMPOTENCY_KEY_PATTERN,
    NAME_PATTERN,
    CredentialList,
    DeletionReport,
    ExpiringQuery,
    GetQuery,
    CapacityReport,
    ExpiringReport,
    ListQuery,
    AdoptRequest,
    Registration,
    RegistrationPatch,
    RegistrationList,
    RegistrationRequest,
    VerificationPending,
    VerificationReport,
)
from .manifest import REQUESTED_FOR
from .problems import ALL_PROBLEMS, PROBLEM_BASE, PROBLEM_CONTENT_TYPE
from .views import FORMATS

TITLE = "DICOM registrations"
API_VERSION = "1.0"
CONTACT = {"name": "Imaging platform team"}
JSON = "application/json"
# RFC 7807 section 4.2: the type of a problem that has no more meaning than its HTTP status. The host (the
# Functions runtime, or devhost locally) answers a missing function key, an unknown route or a too large body
# itself, with this type.
HOST_PROBLEM_TYPE = "about:blank"
_REF = "#/$defs-placeholder/"


# --------------------------------------------------------------------- models that only the document needs
class ProblemDetails(BaseModel):
    """RFC 7807 problem details. ``type`` is stable per kind of error; extension members depend on it."""

    model_config = ConfigDict(extra="allow")

    type: Literal[(*(PROBLEM_BASE + p.slug for p in ALL_PROBLEMS), HOST_PROBLEM_TYPE)]  # type: ignore[valid-type]
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
    requiredRoles: list[str] | None = None
    differingFields: list[str] | None = None
    failedStep: str | None = None
    undoneSteps: list[str] | None = None
    upstream: dict[str, Any] | None = None
    checks: list[dict[str, Any]] | None = None
    aadsts: int | None = None
    quota: dict[str, Any] | None = None
    needed: int | None = None


class HealthReport(BaseModel):
    """Anonymous, so it says only that the app is up and its settings load."""

    status: Literal["ok"]


# ------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Param:
    name: str
    location: Literal["query", "header", "path"]
    description: str
    summary: str
    type: Literal["string", "integer"] = "string"
    required: bool = False
    visibility: Literal["important", "advanced", "internal"] | None = None
    schema: dict[str, Any] = field(default_factory=dict)  # enum, default, pattern, minimum, ...


@dataclass(frozen=True)
class Reply:
    status: int
    description: str
    model: Any = None  # a pydantic model, or None for a free-form JSON object
    headers: dict[str, str] = field(default_factory=dict)  # name -> description


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # relative to the base path, with {route} parameters as in the function's route
    operation_id: str
    summary: str
    description: str
    replies: tuple[Reply, ...]
    problems: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    body: Any = None  # a pydantic model or an annotated union
    body_name: str | None = None  # definition name for a body that is not a class
    body_type: str = "application/json"  # the body's media type
    anonymous: bool = False
    # What the Logic Apps designer does with the action; every operation says it (a connector rule).
    visibility: Literal["important", "advanced", "internal"] = field(kw_only=True)
    # The path has a {format} segment: the documents list one operation per views.FORMATS entry, each with the
    # one content type it answers (the 2.0 document only the JSON ones).
    per_format: bool = False


def query_params(model: type[BaseModel]) -> tuple[Param, ...]:
    """The query parameters an operation reads, from the very model its handler validates them with."""
    params = []
    for name, prop in model.model_json_schema()["properties"].items():
        typed = next((s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"), prop)
        schema = {k: typed[k] for k in ("enum", "minimum", "maximum") if k in typed}
        if prop.get("default") is not None:
            schema["default"] = prop["default"]
        params.append(Param(name, "query", prop["description"], prop["title"],
                            type="integer" if typed.get("type") == "integer" else "string",
                            visibility=prop.get("visibility"), schema=schema))
    return tuple(params)


IDEMPOTENCY_KEY = {"pattern": IDEMPOTENCY_KEY_PATTERN}
CORRELATION = {"x-correlation-id": "Correlation id of this call (from x-correlation-id or "
                                   "x-ms-client-tracking-id when the caller sent one)."}

IF_MATCH = Param("If-Match", "header", "The registration's ETag as last read: the call is refused with 412 "
                 "when the registration changed since. Leave it out to apply the call whatever changed.",
                 "If-Match (ETag)", visibility="advanced")
REQUESTED_FOR_PARAM = Param(
    REQUESTED_FOR, "header", "Brokers only (app role Registrations.Broker, such as an approval workflow's identity): "
    "the object id of the person this call is for. The call then acts as that person with Registrations.Request: "
    "a registration it creates is theirs, and they manage it afterwards with their own token. Anyone else "
    "sending it is refused (403).", "Requested for (object id)", visibility="advanced",
    schema={"pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"})
ETAG = {"ETag": "The registration's entity tag: send it as If-Match to change exactly this state."}
CREATED = Reply(201, "Created.", Registration, {"Location": "URL of the registration.", **ETAG, **CORRELATION})
CONVERGED = Reply(200, "Changed (changed lists what), or already so (Idempotent-Replayed).", Registration,
                  {"Idempotent-Replayed": "true when nothing changed.", **ETAG, **CORRELATION})


# Problems every authenticated call can answer (422: a query parameter the operation does not declare);
# an operation adds its own.
_AUTHENTICATED = (401, 403, 422, 500, 502, 503)

# Path parameters by name: a new route that uses {name} gets the same parameter.
PATH_PARAMS = {
    "name": Param("name", "path", "The registration's name (a slug, the idempotency handle).",
                  "Registration name", required=True, visibility="important",
                  schema={"pattern": NAME_PATTERN, "minLength": 3, "maxLength": 40}),
}

OPERATIONS: dict[str, Operation] = {
    "create_registration": Operation(
        "post", "/registrations", "CreateRegistration", "Create a registration",
        "Provisions an Entra ID app registration for a DICOM service, stores its secret in Key Vault and "
        "returns the client configuration (a Key Vault reference, never the secret). Idempotent by name: "
        "a replay of the same body answers 200 with Idempotent-Replayed.",
        replies=(
            CREATED,
            Reply(200, "Already existed with this body (a replay).", Registration,
                  {"Location": "URL of the registration.", "Idempotent-Replayed": "true on a replay.",
                   **ETAG, **CORRELATION}),
        ),
        problems=(400, 409, 413, 422),
        params=(Param("Idempotency-Key", "header", "Optional. A create is idempotent by its name whatever the key: a "
                      "retry of the same body answers 200 with Idempotent-Replayed and never mints a second secret. "
                      "With a key, a request that comes again with it within 24 hours gets the first one's answer "
                      "(200, Idempotent-Replayed), whatever its body.", "Idempotency key",
                      visibility="advanced", schema=IDEMPOTENCY_KEY),),
        body=RegistrationRequest, body_name="RegistrationRequest", visibility="important",
    ),
    "list_registrations": Operation(
        "get", "/registrations", "ListRegistrations", "List registrations",
        "Registrations the caller may see (a Registrations.Request caller sees its own), by name, paged.",
        replies=(Reply(200, "A page of registrations; nextLink when there are more.", RegistrationList,
                       CORRELATION),),
        problems=(422,), params=query_params(ListQuery), visibility="important",
    ),
    "get_registration": Operation(
        "get", "/registrations/{name}", "GetRegistration", "Get a registration",
        "One registration with its client configuration.",
        replies=(Reply(200, "The registration, with drift when Entra ID or Azure differ from what this API "
                       "last applied (the application's own fields; with drift=live also roles, readers and "
                       "owners).", Registration, {**ETAG, **CORRELATION}),),
        problems=(404, 422), params=query_params(GetQuery), visibility="important",
    ),
    "put_registration": Operation(
        "put", "/registrations/{name}", "PutRegistration", "Create or change a registration",
        "The whole desired state, as a create body. Creates the registration when it is absent (201); "
        "otherwise changes what differs in place, keeping its client id and secret, and repairs drift (200, "
        "changed lists the fields); a body equal to what is there changes nothing (200, Idempotent-Replayed). "
        "type, dicomService, name, platform, identifierUri and the credential's kind cannot change (409).",
        replies=(CREATED, CONVERGED),
        problems=(400, 404, 409, 412, 413, 422), params=(IF_MATCH,),
        body=RegistrationRequest, body_name="RegistrationRequest", visibility="advanced",
    ),
    "patch_registration": Operation(
        "patch", "/registrations/{name}", "PatchRegistration", "Change a registration",
        "A JSON merge patch (RFC 7396, application/merge-patch+json) of the changeable fields: displayName, "
        "notes, redirectUris, access, secretReaders, autoRotate, credential.lifetimeDays. The client id and "
        "secret stay. A failed step undoes the change and names the step.",
        replies=(CONVERGED,),
        problems=(400, 404, 409, 412, 413, 415, 422), params=(IF_MATCH,),
        body=RegistrationPatch, body_type="application/merge-patch+json", visibility="advanced",
    ),
    "get_registration_config": Operation(
        "get", "/registrations/{name}/config/{format}", "GetRegistrationConfig", "Get the client configuration",
        "What a client needs to call its DICOM service; the secret stays in Key Vault, named by its URI.",
        replies=(Reply(200, "The configuration.", None, CORRELATION),),
        problems=(404, 409), visibility="advanced", per_format=True,
    ),
    "verify_registration": Operation(
        "get", "/registrations/{name}/verification", "VerifyRegistration", "Verify a registration",
        "Gets a DICOM token with the registration's own credential (read from Key Vault; neither it nor the "
        "token is returned) and checks the grant it needs; clients without a credential get configuration "
        "checks. While Entra ID is still propagating a new registration the answer is 202 with Retry-After "
        "and a Location to poll (the asynchronous pattern Logic Apps follow).",
        replies=(
            Reply(200, "It works.", VerificationReport, CORRELATION),
            Reply(202, "Not yet: Entra ID is still propagating the registration.", VerificationPending,
                  {"Location": "This same URL, to poll.", "Retry-After": "Seconds to wait before polling.",
                   **CORRELATION}),
        ),
        problems=(404, 409), visibility="important",
    ),
    "delete_registration": Operation(
        "delete", "/registrations/{name}", "DeleteRegistration", "Delete a registration",
        "Removes the app, its service principal, grants and role assignments, and soft-deletes its secret. "
        "A resource registration that clients still use is refused with 409: delete those clients first.",
        replies=(Reply(200, "What was removed.", DeletionReport, CORRELATION),),
        problems=(404, 409, 412), params=(IF_MATCH,), visibility="advanced",
    ),
    "adopt_registration": Operation(
        "post", "/registrations/{name}/adopt", "AdoptRegistration", "Adopt an application made elsewhere",
        "Administrators only. Brings an existing application (by appId) under management as this name without "
        "changing its client id: its uniqueName is set when it has none, what is there becomes the desired "
        "state, the API's identity is added as an owner (Graph decides whether it may: 403 otherwise), and "
        "no credential changes until the first rotation.",
        replies=(CREATED, Reply(200, "Already adopted under this name (a replay).", Registration,
                                {"Idempotent-Replayed": "true on a replay.", **ETAG, **CORRELATION})),
        problems=(400, 404, 409, 413, 422), body=AdoptRequest, visibility="advanced",
    ),
    "rotate_credential": Operation(
        "post", "/registrations/{name}/credentials", "RotateCredential", "Rotate the secret or certificate",
        "Adds a new credential as a new version of the same Key Vault secret. The previous one keeps working "
        "through the overlap period and is then removed by the daily sweep. Send an Idempotency-Key: a retried "
        "rotation then rotates once.",
        replies=(
            Reply(201, "Rotated.", CredentialList, {"Location": "URL of the credentials.", **CORRELATION}),
            Reply(200, "A replay under the same Idempotency-Key; nothing rotated.", CredentialList,
                  {"Idempotent-Replayed": "true on a replay.", **CORRELATION}),
        ),
        problems=(404, 409, 422),
        params=(Param("Idempotency-Key", "header", "Makes a retried rotation rotate once.", "Idempotency key",
                      visibility="advanced", schema=IDEMPOTENCY_KEY),),
        visibility="advanced",
    ),
    "list_credentials": Operation(
        "get", "/registrations/{name}/credentials", "ListCredentials", "List credentials",
        "The registration's secrets or certificates with their state (active, expiring, superseded); never "
        "a value.",
        replies=(Reply(200, "The credentials.", CredentialList, CORRELATION),),
        problems=(404,), visibility="advanced",
    ),
    "expiring_report": Operation(
        "get", "/reports/expiring", "GetExpiringReport", "Credentials expiring soon",
        "Current credentials that end within the given number of days, soonest first.",
        replies=(Reply(200, "The report.", ExpiringReport, CORRELATION),),
        problems=(422,), params=query_params(ExpiringQuery), visibility="advanced",
    ),
    "capacity_report": Operation(
        "get", "/reports/capacity", "GetCapacityReport", "Directory object quota",
        "How much of Entra's directory object quota the API's identity has used (250 for a principal without a "
        "directory role; each registration takes two). Administrators only.",
        replies=(Reply(200, "The report.", CapacityReport, CORRELATION),),
        problems=(), visibility="advanced",
    ),
    "health": Operation(
        "get", "/health", "GetHealth", "Check health", "Settings check; never calls Azure.",
        replies=(Reply(200, "Healthy.", HealthReport),), problems=(500,), anonymous=True,
        visibility="internal",
    ),
    "openapi_v2": Operation(
        "get", "/openapi.json", "GetOpenApiDocument", "Get the OpenAPI document",
        "This API described as OpenAPI 2.0 (Swagger), the version custom connectors import.",
        replies=(Reply(200, "The OpenAPI 2.0 document.", None),), anonymous=True, visibility="internal",
    ),
    "openapi_v3": Operation(
        "get", "/openapi3.json", "GetOpenApi3Document", "Get the OpenAPI 3 document",
        "The same API as OpenAPI 3.0, for client generators.", replies=(Reply(200, "The OpenAPI 3.0 document.", None),),
        anonymous=True, visibility="internal",
    ),
}

# Labels and designer visibility of body and response fields, by field name or "Model.field". Unlisted
# fields get a label made from their name, so the designer never shows a bare identifier.
FIELDS: dict[str, tuple[str, str | None]] = {
    "name": ("Registration name", "important"),
    "type": ("Client type", "important"),
    "displayName": ("Display name", "important"),
    "dicomService": ("DICOM service", "important"),
    "access": ("Access", "important"),
    "redirectUris": ("Redirect URIs", "important"),
    "platform": ("Platform", "advanced"),
    "credential": ("Credential", "advanced"),
    "kind": ("Credential kind", "advanced"),
    "lifetimeDays": ("Secret lifetime (days)", "advanced"),
    "identifierUri": ("Identifier URI", "advanced"),
    "autoRotate": ("Rotate automatically", "advanced"),
    "secretReaders": ("Principals that may read the secret", "advanced"),
    "issuer": ("Federated issuer", "advanced"),
    "subject": ("Federated subject", "advanced"),
    "audience": ("Federated audience", "advanced"),
    "notes": ("Notes", "advanced"),
    "appId": ("Application (client) ID", None),
    "objectId": ("Application object ID", None),
    "servicePrincipalId": ("Service principal ID", None),
    "keyVaultSecretUri": ("Key Vault secret URI", None),
    "nextLink": ("Next page", "internal"),
    "value": ("Registrations", None),
    "ProblemDetails.type": ("Problem type", None),
    "ProblemDetails.status": ("HTTP status", None),
    "HealthReport.status": ("Status", None),
}


def field_ui(name: str, owner: str | None = None) -> tuple[str, str | None]:
    """(x-ms-summary, x-ms-visibility) of a field; ``Model.field`` entries win over ``field`` ones."""
    found = FIELDS.get(f"{owner}.{name}") or FIELDS.get(name)
    if found:
        return found
    words = re.sub(r"(?<=[a-z0-9])([A-Z])", r" \1", name).split()
    return (" ".join([words[0].capitalize(), *[w.lower() for w in words[1:]]]) if words else name), None


# ------------------------------------------------------------------------------------ schema conversion
def _model_schemas(version: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """JSON Schema of every body and reply model in one pass, so shared models get one definition.
    Returns (schema by key, definitions), with references in the target version's form."""
    inputs = []
    for function, op in OPERATIONS.items():
        if op.body is not None:
            inputs.append(((function, "body"), "validation", TypeAdapter(op.body)))
        for reply in op.replies:
            if reply.model is not None:
                inputs.append(((function, reply.status), "serialization", TypeAdapter(reply.model)))
    inputs.append((("problem", 0), "serialization", TypeAdapter(ProblemDetails)))
    keyed, defs = TypeAdapter.json_schemas(inputs, ref_template=_REF + "{model}")
    by_key = {key: schema for (key, _mode), schema in keyed.items()}
    prefix = "#/definitions/" if version == "2.0" else "#/components/schemas/"
    rewrite = lambda s: json.loads(json.dumps(s).replace(_REF, prefix))  # noqa: E731
    return {key: rewrite(schema) for key, schema in by_key.items()}, rewrite(defs.get("$defs", {}))


class _Converter:
    """pydantic's JSON Schema (2020-12 dialect) → the schema object of OpenAPI 2.0 or 3.0."""

    def __init__(self, version: str, defs: dict[str, dict[str, Any]]) -> None:
        self.v2 = version == "2.0"
        self.defs = defs
        self.prefix = "#/definitions/" if self.v2 else "#/components/schemas/"

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.defs[schema["$ref"][len(self.prefix):]]
        return schema

    def convert(self, schema: Any, name: str | None = None, owner: str | None = None) -> Any:
        if not isinstance(schema, dict):
            return schema
        schema = dict(schema)
        for union in ("anyOf", "oneOf"):
            if union in schema:
                schema = self._union(schema, union)
        if "const" in schema:
            schema["enum"] = [schema.pop("const")]
        if isinstance(schema.get("description"), str):
            schema["description"] = " ".join(schema["description"].split())  # docstrings wrap lines
        if "default" in schema and schema["default"] is None:
            del schema["default"]  # "absent" says it; 2.0 cannot have a null default
        for bound, edge in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(schema.get(bound), (int, float)) and not isinstance(schema.get(bound), bool):
                schema[edge], schema[bound] = schema[bound], True
        if "examples" in schema:
            examples = schema.pop("examples")
            if isinstance(examples, list) and examples:
                schema["example"] = examples[0]
        if "$ref" in schema and len(schema) > 1:
            # Siblings of $ref are ignored in both versions. 2.0 inlines the target (the Logic Apps designer
            # then shows its fields); 3.0 keeps the reference alone inside allOf.
            ref = {"$ref": schema.pop("$ref")}
            schema = {**self.convert(self.resolve(ref)), **schema} if self.v2 else {"allOf": [ref], **schema}
        if name is not None:
            schema.pop("title", None)
            summary, visibility = field_ui(name, owner)
            schema.setdefault("x-ms-summary", summary)
            if visibility:
                schema.setdefault("x-ms-visibility", visibility)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "properties":
                out[key] = {prop: self.convert(sub, prop, schema.get("title")) for prop, sub in value.items()}
            elif key in ("items", "additionalProperties", "not"):
                out[key] = self.convert(value)
            elif key in ("allOf", "oneOf", "anyOf"):
                out[key] = [self.convert(sub) for sub in value]
            else:
                out[key] = value
        return out

    def _union(self, schema: dict[str, Any], keyword: str) -> dict[str, Any]:
        options = schema.pop(keyword)
        members = [m for m in options if m.get("type") != "null"]
        nullable = len(members) < len(options)  # pydantic writes X | None as anyOf [X, null]
        discriminator = schema.pop("discriminator", None)
        if len(members) == 1:
            merged = {**members[0], **schema}
        elif not self.v2:
            merged = {keyword: members, **schema}
            if discriminator:
                merged["discriminator"] = discriminator
        else:
            merged = {**self.flatten(members, discriminator), **schema}
        if nullable and self.v2:
            merged["x-nullable"] = True
        elif nullable:
            merged["nullable"] = True
            # OpenAPI 3.0.3 (section 4.7.25.1 as clarified by the "nullable" proposal): an enum must list null
            # itself for null to be valid, and generated clients parse the value against the enum. An enum
            # reached through $ref is inlined so that its copy can list null.
            target = self.resolve(merged) if "$ref" in merged else merged
            if "enum" in target:
                merged = {**{k: v for k, v in target.items() if k != "title"},
                          **{k: v for k, v in merged.items() if k != "$ref"},
                          "enum": [*target["enum"], None]}
        return merged

    def flatten(self, members: list[dict[str, Any]], discriminator: dict[str, Any] | None) -> dict[str, Any]:
        """One object with every member's properties (see the module docstring for why)."""
        variants = [self.resolve(m) for m in members]
        if any(v.get("type") != "object" for v in variants):
            raise ValueError("OpenAPI 2.0 cannot express a union of non-objects: "
                             f"{[v.get('title') for v in variants]}")
        tag = (discriminator or {}).get("propertyName")
        tag_values = {v["title"]: self._tag(v, tag) for v in variants} if tag else {}
        entries: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for variant in variants:
            for prop, sub in variant.get("properties", {}).items():
                entries.setdefault(prop, []).append((tag_values.get(variant["title"], variant["title"]), sub))
        properties: dict[str, Any] = {}
        notes: dict[str, str] = {}
        for prop, found in entries.items():
            if prop != tag:
                properties[prop], note = self._merge(prop, found)
                if len(found) < len(variants):
                    note = f"Only for {tag or 'variant'} {', '.join(t for t, _ in found)}. {note or ''}".strip()
                if note:
                    notes[prop] = note
        if tag:
            properties[tag] = {"type": "string", "enum": [tag_values[v["title"]] for v in variants],
                               "description": " ".join(f"{tag_values[v['title']]}: {v.get('description', '').rstrip('.')}."
                                                        for v in variants)}
        for prop, note in notes.items():
            sub = properties[prop]
            sub["description"] = f"{sub['description']} {note}" if sub.get("description") else note
        required = set.intersection(*(set(v.get("required", [])) for v in variants))
        flat: dict[str, Any] = {"type": "object", "properties": properties}
        ordered = [p for p in properties if p in required]
        if ordered:
            flat["required"] = ordered
        if all(v.get("additionalProperties") is False for v in variants):
            flat["additionalProperties"] = False
        return flat

    def _merge(self, prop: str, found: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], str | None]:
        """One schema for a field that several variants declare; a note when they allow different things."""
        first = copy.deepcopy(found[0][1])
        if all(_shape(sub) == _shape(first) for _, sub in found):
            return first, None
        unions = {variant: self._members(sub) for variant, sub in found}
        if all(u is not None for u in unions.values()):
            members: list[dict[str, Any]] = []
            discriminator = None
            allowed: list[str] = []
            for variant, (options, disc) in unions.items():  # type: ignore[misc]
                discriminator = discriminator or disc
                members += [m for m in options if m not in members]
                names = [self._tag(self.resolve(m), disc["propertyName"]) if disc else m["$ref"].split("/")[-1]
                         for m in options]
                allowed.append(f"{variant}: {', '.join(names)}")
            merged: dict[str, Any] = {"oneOf": members}
            if discriminator:
                merged["discriminator"] = discriminator
            if first.get("description"):
                merged["description"] = first["description"]
            what = discriminator["propertyName"] if discriminator else "kinds"
            return merged, f"Allowed {what} per type: {'; '.join(allowed)}."
        enums = [sub.get("enum") or ([sub["const"]] if "const" in sub else None) for _, sub in found]
        if all(enums) and len({sub.get("type") for _, sub in found}) == 1:
            values = [v for enum in enums for v in enum]  # type: ignore[union-attr]
            first.pop("const", None)
            first["enum"] = list(dict.fromkeys(values))
            return first, None
        raise ValueError(f"field {prop!r} has schemas that OpenAPI 2.0 cannot merge into one")

    @staticmethod
    def _members(sub: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None] | None:
        if set(sub) - {"title", "description", "default"} == {"$ref"}:
            return [{"$ref": sub["$ref"]}], None
        for keyword in ("oneOf", "anyOf"):
            if keyword in sub:
                options = [m for m in sub[keyword] if m.get("type") != "null"]
                if all(set(m) == {"$ref"} for m in options):
                    return options, sub.get("discriminator")
        return None

    @staticmethod
    def _tag(variant: dict[str, Any], tag: str) -> str:
        sub = variant["properties"][tag]
        return sub["const"] if "const" in sub else sub["enum"][0]


def _shape(schema: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in schema.items() if k not in ("title", "description", "default")},
                      sort_keys=True)


# ------------------------------------------------------------------------------------------ documents
@dataclass(frozen=True)
class Deployment:
    """Where the API is and whom it trusts: host and base path come from the request for the document."""

    host: str
    base_path: str = "/api"
    scheme: str = "https"
    authority: str = "https://login.microsoftonline.com/organizations"
    audience: str | None = None  # the API's identifier URI (or appId); tokens are asked for {audience}/.default

    @property
    def scopes(self) -> dict[str, str]:
        if not self.audience:
            return {}
        return {f"{self.audience.rstrip('/')}/.default": "The app roles granted to the caller on this API "
                                                         "(Registrations.Admin, .Request or .Read)."}


def _problem_text(status: int) -> str:
    titles = [p.title for p in ALL_PROBLEMS if p.status == status and p.slug != "internal"]
    if status == 503:  # a provisioning failure caused by throttling or an outage answers 503 with Retry-After
        titles.append("Provisioning failed and was rolled back (retry later)")
    return "; ".join(titles) or "Internal error"


def _problem_headers(status: int) -> dict[str, str]:
    if status == 401:
        return {"WWW-Authenticate": "Bearer challenge."}
    if status == 503:
        return {"Retry-After": "Seconds to wait before retrying."}
    return {}


def _param(param: Param, v2: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": param.name, "in": param.location, "description": param.description,
                           "required": param.required or param.location == "path",
                           "x-ms-summary": param.summary}
    if param.visibility:
        out["x-ms-visibility"] = param.visibility
    if v2:
        out.update(type=param.type, **param.schema)
        if param.location == "path":
            out["x-ms-url-encoding"] = "single"  # a connector encodes the value once, as the API decodes it
    else:
        out["schema"] = {"type": param.type, **param.schema}
    return out


def _route_params(path: str) -> list[str]:
    return re.findall(r"{([^}:]+)", path)


def _pascal(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text) if part)


def expanded(function: str, op: Operation, version: str) -> list[tuple[Operation, str | None]]:
    """The documented operations of one table entry: itself, or one per configuration format (with the
    format's content type) when its path has a {format} segment. OpenAPI 2.0 (connectors, which take
    application/json only) gets the JSON formats only, and no operation whose body is another media type."""
    if version == "2.0" and op.body is not None and op.body_type != JSON:
        return []
    if not op.per_format:
        return [(op, None)]
    found = []
    for name, fmt in FORMATS.items():
        if version == "2.0" and not fmt.is_json:
            continue
        found.append((replace(op, path=op.path.replace("{format}", name),
                              operation_id=op.operation_id + "As" + _pascal(name),
                              summary=f"{op.summary} as {fmt.title}",
                              description=f"{op.description} This one answers {fmt.title} "
                                          f"({fmt.content_type.split(';')[0]})."),
                      fmt.content_type.split(";")[0]))
    return found


class _Builder:
    def __init__(self, version: str, deployment: Deployment) -> None:
        self.version, self.v2, self.deployment = version, version == "2.0", deployment
        self.schemas, raw_defs = _model_schemas(version)
        self.converter = _Converter(version, raw_defs)
        self.defs = {name: self.converter.convert(schema) for name, schema in raw_defs.items()}
        self.prefix = self.converter.prefix

    def ref(self, name: str) -> dict[str, str]:
        return {"$ref": self.prefix + name}

    def schema_for(self, key: tuple[str, Any], name: str | None = None) -> dict[str, Any]:
        schema = self.schemas[key]
        if set(schema) == {"$ref"}:
            return schema
        converted = self.converter.convert(schema)
        if name is None:
            return converted
        converted.setdefault("title", name)
        self.defs[name] = converted
        return self.ref(name)

    def operation(self, function: str, op: Operation, content_type: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary,
                               "description": op.description, "tags": ["Registrations"],
                               "x-ms-visibility": op.visibility}
        params = [PATH_PARAMS[name] for name in _route_params(op.path)] + list(op.params) + (
            [] if op.anonymous else [REQUESTED_FOR_PARAM])
        out["parameters"] = [_param(p, self.v2) for p in params]
        if op.body is not None:
            body = self.schema_for((function, "body"), op.body_name)
            if self.v2:
                out["consumes"] = [op.body_type]
                out["parameters"].append({"name": "body", "in": "body", "required": True,
                                          "x-ms-summary": "Request", "schema": body})
            else:
                out["requestBody"] = {"required": True, "content": {op.body_type: {"schema": body}}}
        if not out["parameters"]:
            del out["parameters"]
        responses: dict[str, Any] = {}
        content_type = content_type or JSON
        for reply in op.replies:
            if content_type != JSON:
                schema = {"type": "string"}
            elif reply.model is not None:
                schema = self.schema_for((function, reply.status))
            else:
                schema = {"type": "object", "additionalProperties": True}
            # A connector takes an action's outputs from one response schema: in 2.0 the first success answer
            # has it and the others say they carry the same body or none the designer needs.
            if self.v2 and responses:
                schema = None
            responses[str(reply.status)] = self.response(reply.description, schema, content_type, reply.headers)
        problems = op.problems + (() if op.anonymous else _AUTHENTICATED)
        for status in sorted(set(problems)):
            # 2.0 (connectors): a description only, no schema on an error answer and application/json as the
            # only produced type; 3.0: the problem+json body.
            responses[str(status)] = self.response(_problem_text(status), None if self.v2 else self.ref("ProblemDetails"),
                                                   PROBLEM_CONTENT_TYPE, _problem_headers(status))
        out["responses"] = responses
        if self.v2:
            out["produces"] = [JSON]
        if op.anonymous:
            out["security"] = []
        elif not self.v2:
            out["security"] = self.requirement()  # generators apply an operation's own requirement
        return out

    def response(self, description: str, schema: dict[str, Any] | None, content_type: str,
                 headers: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {"description": description}
        if self.v2:
            if schema is not None:
                out["schema"] = schema
            if headers:
                out["headers"] = {name: {"type": "string", "description": text_}
                                  for name, text_ in headers.items()}
            return out
        out["content"] = {content_type: {"schema": schema}}
        if headers:
            out["headers"] = {name: {"description": text_, "schema": {"type": "string"}}
                              for name, text_ in headers.items()}
        return out

    def requirement(self) -> list[dict[str, list[str]]]:
        scopes = list(self.deployment.scopes)
        return [{"entraUser" if self.v2 else "entra": scopes, "functionKey": []}]

    def build(self) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        self.schema_for(("problem", 0))
        for function, op in OPERATIONS.items():
            for documented, content_type in expanded(function, op, self.version):
                paths.setdefault(documented.path, {})[documented.method] = self.operation(function, documented,
                                                                                         content_type)
        d = self.deployment
        info = {"title": TITLE, "version": API_VERSION, "contact": dict(CONTACT),
                "description": "Self-service Entra ID app registrations for DICOM services. Every secret "
                               "stays in Key Vault; responses carry references only."}
        if self.v2:
            doc: dict[str, Any] = {
                "swagger": "2.0", "info": info, "host": d.host, "basePath": d.base_path or "/",
                "schemes": [d.scheme], "consumes": [JSON], "produces": [JSON], "paths": paths,
            }
            doc["definitions"] = self.reachable(doc)
            doc["securityDefinitions"] = self.security_v2()
        else:
            doc = {"openapi": "3.0.3", "info": info,
                   "servers": [{"url": f"{d.scheme}://{d.host}{d.base_path}"}], "paths": paths}
            doc["components"] = {"schemas": self.reachable(doc), "securitySchemes": self.security_v3()}
        doc["security"] = self.requirement()
        doc["tags"] = [{"name": "Registrations", "description": "DICOM app registrations"}]
        return doc

    def reachable(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Only definitions a path uses (the 2.0 document drops the variants it flattened)."""
        seen: set[str] = set()
        pending = re.findall(re.escape(self.prefix) + r'([^"]+)"', json.dumps(doc["paths"]))
        while pending:
            name = pending.pop()
            if name not in seen:
                seen.add(name)
                pending += re.findall(re.escape(self.prefix) + r'([^"]+)"', json.dumps(self.defs[name]))
        return {name: self.defs[name] for name in sorted(seen)}

    def security_v2(self) -> dict[str, Any]:
        """A custom connector uses the first security definition and does not support OAuth client
        credentials, so the first is the authorization code flow of the connector's own app registration; the
        function key is set by the connector's setheader policy (samples/logic-apps/connector)."""
        d = self.deployment
        token_url, authorize_url = f"{d.authority}/oauth2/v2.0/token", f"{d.authority}/oauth2/v2.0/authorize"
        return {
            "entraUser": {"type": "oauth2", "flow": "accessCode", "authorizationUrl": authorize_url,
                          "tokenUrl": token_url, "scopes": d.scopes,
                          "description": "Entra ID sign-in of a user who holds an app role on this API."},
            "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                            "description": "The function key (authLevel function)."},
        }

    def security_v3(self) -> dict[str, Any]:
        d = self.deployment
        token_url, authorize_url = f"{d.authority}/oauth2/v2.0/token", f"{d.authority}/oauth2/v2.0/authorize"
        return {
            "entra": {"type": "oauth2", "description": "Entra ID (managed identity, client credentials or user); "
                                                       "sent as Authorization: Bearer.",
                      "flows": {"clientCredentials": {"tokenUrl": token_url, "scopes": d.scopes},
                                "authorizationCode": {"authorizationUrl": authorize_url, "tokenUrl": token_url,
                                                      "scopes": d.scopes}}},
            "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                            "description": "The function key (authLevel function)."},
        }


def build_document(version: str, deployment: Deployment) -> dict[str, Any]:
    if version not in ("2.0", "3.0"):
        raise ValueError("version is 2.0 or 3.0")
    return _Builder(version, deployment).build()


@lru_cache(maxsize=16)
def _serialized(version: str, deployment: Deployment) -> str:
    return json.dumps(build_document(version, deployment), indent=1)


# ------------------------------------------------------------------------------------------- serving
def respond(req: Any, version: str) -> Any:
    """The document for the host and base path this request came in on (anonymous: it holds no secret).

    In Azure the platform's ``WEBSITE_HOSTNAME`` names the app, so that is the host; elsewhere the request's
    own Host header is. A document that may follow the Host header is cached by the caller only (private):
    a shared cache keyed on the URL alone must not hand one caller's host to another."""
    import os

    import azure.functions as func

    from .problems import Misconfigured
    from .settings import load

    parts = urlsplit(req.url)
    route = OPERATIONS["openapi_v2" if version == "2.0" else "openapi_v3"].path
    base = parts.path[: -len(route)] if parts.path.endswith(route) else "/api"
    platform_host = os.environ.get("WEBSITE_HOSTNAME")
    host, scheme = (platform_host, "https") if platform_host else (parts.netloc, parts.scheme)
    try:
        settings = load()
        deployment = Deployment(host, base, scheme, settings.authority, settings.api_audience or settings.api_client_id)
    except Misconfigured:
        deployment = Deployment(host, base, scheme)
    return func.HttpResponse(_serialized(version, deployment), status_code=200, mimetype=JSON,
                             charset="utf-8", headers={"Cache-Control": "private, max-age=300"})


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Print the OpenAPI document for a deployment.")
    parser.add_argument("--version", choices=("2.0", "3.0"), default="2.0")
    parser.add_argument("--host", required=True, help="the function app's host name")
    parser.add_argument("--base-path", default="/api")
    parser.add_argument("--tenant", required=True, help="tenant id or domain")
    parser.add_argument("--authority-host", default="https://login.microsoftonline.com")
    parser.add_argument("--audience", required=True, help="the API's identifier URI (API_AUDIENCE)")
    args = parser.parse_args(argv)
    deployment = Deployment(args.host, args.base_path, "https",
                            f"{args.authority_host.rstrip('/')}/{args.tenant}", args.audience)
    print(json.dumps(build_document(args.version, deployment), indent=2))


if __name__ == "__main__":
    main()
