"""The OpenAPI 3.0 dialect of the served document.

BentoML serves /docs.json as OpenAPI 3.0.2 and merges in FastAPI's paths and components, but
pydantic writes JSON Schema 2020-12 (OpenAPI 3.1): a number in `exclusiveMinimum`, which 3.0
(JSON Schema draft 4) reads as a boolean, `const`, and `{"type": "null"}` for optional values.
Read as 3.0, such a schema is wrong (a generator cannot use `gt=0`, a validator misreads it).
Every model at the HTTP edge therefore derives from `ApiModel`, whose schema is rewritten into
the 3.0 spelling, and the flag document (serving/config/flags.py, a model of its own) is served
as `FlagDocument`, its schema rewritten the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, RootModel

from serving.config.flags import FlagConfig

_NULL = {"type": "null"}
_DATA = {"default", "enum", "const", "example", "examples"}
_NAMED = {"properties", "patternProperties", "$defs", "definitions"}


def openapi_30(node: Any) -> Any:
    """A JSON Schema (2020-12, as pydantic writes it) in the OpenAPI 3.0 spelling: `const` as a
    one-value enum, null as `nullable`, and exclusive bounds as inclusive ones (integers) or an
    inclusive bound that excludes its own value (`minimum: 0, not: {enum: [0]}`): FastAPI's
    document model reads `exclusiveMinimum` as a number, so 3.0's boolean form cannot be used."""
    if isinstance(node, list):
        return [openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in _DATA:  # values, not schemas
            out[key] = value
        elif key in _NAMED and isinstance(value, dict):  # names -> schemas
            out[key] = {name: openapi_30(schema) for name, schema in value.items()}
        else:
            out[key] = openapi_30(value)
    excluded = []
    for exclusive, bound, step in (
        ("exclusiveMinimum", "minimum", 1),
        ("exclusiveMaximum", "maximum", -1),
    ):
        value = out.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            del out[exclusive]
            if out.get("type") == "integer":
                out[bound] = value + step  # gt=0 on an integer is minimum 1
            else:
                out[bound] = value
                excluded.append(value)
    if excluded:
        out["not"] = {"enum": excluded}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    options = out.get("anyOf")
    if isinstance(options, list) and _NULL in options:
        rest = [option for option in options if option != _NULL]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" in rest[0]:
            out["allOf"] = rest  # a $ref's siblings are ignored in 3.0: nullable goes beside it
        elif len(rest) == 1:
            out = {**rest[0], **out}
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    return out


def _rewrite(schema: dict[str, Any], _: type) -> None:
    converted = openapi_30(schema)
    schema.clear()
    schema.update(converted)


class ApiModel(BaseModel):
    """Base of the request and response bodies: their schemas are written in the 3.0 dialect."""

    model_config = ConfigDict(json_schema_extra=_rewrite)


def _inlined(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inlined(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**_inlined(target, defs), **_inlined(siblings, defs)}
    return {key: _inlined(value, defs) for key, value in node.items() if key != "$defs"}


def flag_config_schema() -> dict[str, Any]:
    """FlagConfig's schema in its JSON/YAML spelling (`in`, `from`), inlined, in the 3.0 dialect."""
    schema = FlagConfig.model_json_schema(by_alias=True)
    return openapi_30(_inlined(schema, schema.get("$defs", {})))


def _flag_document_schema(schema: dict[str, Any], _: type) -> None:
    schema.clear()
    schema.update(flag_config_schema())


class FlagDocument(RootModel[dict[str, Any]]):
    """The flag configuration document (serving/config/flags.py `FlagConfig`), as GET and PUT
    /api/admin/flags carry it. At run time the core validates it (FlagConfig) and renders it
    (`dump_flag_config`); this model only names its schema in the OpenAPI document."""

    model_config = ConfigDict(json_schema_extra=_flag_document_schema)
