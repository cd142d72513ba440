"""Reading an OpenAPI document the way a client does: find operations, follow references, check bodies."""

from __future__ import annotations

import copy
import typing
from typing import Any

import jsonschema
from pydantic import BaseModel

from registrations.openapi import Deployment, build_document

METHODS = ("get", "put", "post", "delete", "patch")


def document(version: str = "2.0", host: str = "dicom-registrations.example.org") -> dict[str, Any]:
    return build_document(version, Deployment(host, "/api", "https", "https://login.example.org/tenant",
                                              "api://dicom-registrations"))


def operations(doc: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (method, path template, operation)."""
    return {op["operationId"]: (method, path, op)
            for path, item in doc["paths"].items() for method, op in item.items() if method in METHODS}


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def objects(doc: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object schema a value described by `schema` may be (through refs, allOf/oneOf/anyOf, arrays)."""
    schema = resolve(doc, schema)
    if schema.get("type") == "array" and "items" in schema:
        return objects(doc, schema["items"])
    found = [schema] if "properties" in schema else []
    for keyword in ("allOf", "oneOf", "anyOf"):
        for member in schema.get(keyword, []):
            found += objects(doc, member)
    return found


def properties_at(doc: dict[str, Any], schema: dict[str, Any], path: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    for obj in objects(doc, schema):
        if not path:
            found |= set(obj["properties"])
        elif path[0] in obj["properties"]:
            found |= properties_at(doc, obj["properties"][path[0]], path[1:])
    return found


def model_fields(annotation: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], type, set[str]]]:
    """(field path, model, its field names) for every pydantic model reachable from `annotation`."""
    found = []
    for model in _models_in(annotation):
        found.append((path, model, set(model.model_fields)))
        for name, info in model.model_fields.items():
            found += model_fields(info.annotation, path + (name,))
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _nullable(node: Any) -> Any:
    """Swagger 2.0's x-nullable as plain JSON Schema, for validating real bodies."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items()}
    if out.pop("x-nullable", False):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def check_body(doc: dict[str, Any], schema: dict[str, Any], body: Any) -> None:
    """Raises jsonschema.ValidationError when `body` does not match the documented 2.0 schema."""
    root = {"definitions": _nullable(copy.deepcopy(doc.get("definitions", {}))), "allOf": [_nullable(schema)]}
    jsonschema.Draft4Validator(root).validate(body)
