"""Validate request bodies against the official OpenSearch API specification, closed.

The specification (`<repo>/../shared/opensearch-api-spec/spec`, see its SOURCE.md) is multi-file
OpenAPI 3.1 YAML. Every `schemas/*.yaml` and `namespaces/*.yaml` is registered in a
`referencing.Registry` under `file:///spec/<folder>/<file>`, so their relative `$ref`s resolve
without a bundler (jsonschema, Draft 2020-12).

The spec is permissive: no schema forbids unknown keys, so a misspelt key ("linaer") would pass.
`SpecValidator` closes the query, mapping, search and bulk-action schemas that our bodies use by
adding `unevaluatedProperties: false` to them. (`additionalProperties: false` cannot be used:
these schemas are compositions, `allOf: [QueryBase, {...}]`, and `additionalProperties` only sees
the properties declared next to it, so it would reject `boost` from QueryBase;
`unevaluatedProperties` sees through `allOf`/`$ref`.) Aggregation and settings schemas are left
open, as the facts file says, because closing them would reject valid bodies.

The specification predates OpenSearch 3.3's `sparse_vector` field and the `method_parameters` of
`neural_sparse`. `schemas/opensearch_sparse_ann.json` (next to this file) describes both, closed,
from the documentation; `SpecValidator` registers it and accepts its `SparseVectorProperty` as
one more mapping property and its `NeuralSparseAnnQuery` as the other form of a `neural_sparse`
query, so the bodies of a sparse_vector index are validated like every other body.
`sparse_ann_schema()` validates a body against one of its definitions directly.

Reuse from another test folder:
    spec_validator = importlib.import_module("tests.opensearch.spec_validator")  # python -m pytest
or load this file with `importlib.util.spec_from_file_location`. `SpecValidator.load()` returns
None when the spec folder is absent (skip the test then).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

#: `<repo>/../shared/opensearch-api-spec/spec`
SPEC_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "opensearch-api-spec" / "spec"
BASE = "file:///spec/"
#: libyaml when available (about 10x faster on the ~150 spec files)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Schemas closed with `unevaluatedProperties: false`, per file (JSON pointers into the file).
CLOSED: dict[str, list[str]] = {
    "schemas/_common.query_dsl.yaml": [
        "/components/schemas/QueryContainer",
        "/components/schemas/BoolQuery",
        "/components/schemas/RankFeatureQuery",
        "/components/schemas/RankFeatureFunctionLinear",
        "/components/schemas/NeuralSparseQuery",
    ],
    "schemas/_common.mapping.yaml": [
        "/components/schemas/TypeMapping",
        "/components/schemas/KeywordProperty",
        "/components/schemas/TextProperty",
        "/components/schemas/ObjectProperty",
        "/components/schemas/RankFeaturesProperty",
        "/components/schemas/BinaryProperty",
    ],
    "schemas/_core.search.yaml": [
        "/components/schemas/Rescore",
        "/components/schemas/RescoreQuery",
    ],
    "schemas/_core.bulk.yaml": [
        "/components/schemas/OperationContainer",
        "/components/schemas/IndexOperation",
        "/components/schemas/DeleteOperation",
        "/components/schemas/UpdateOperation",
    ],
    "namespaces/indices.yaml": [
        "/components/requestBodies/indices.create/content/application~1json/schema",
        "/components/requestBodies/indices.put_mapping/content/application~1json/schema",
    ],
    "namespaces/_core.yaml": [
        "/components/requestBodies/search/content/application~1json/schema",
    ],
}

#: The closed schema of the neural sparse ANN bodies (OpenSearch 3.3+), see the module docstring.
SPARSE_ANN_FILE = Path(__file__).resolve().parent / "schemas" / "opensearch_sparse_ann.json"
SPARSE_ANN = "opensearch_sparse_ann.json"

INDEX_CREATE = "namespaces/indices.yaml#/components/requestBodies/indices.create/content/application~1json/schema"
SEARCH = "namespaces/_core.yaml#/components/requestBodies/search/content/application~1json/schema"
QUERY = "schemas/_common.query_dsl.yaml#/components/schemas/QueryContainer"
BULK_ACTION = "schemas/_core.bulk.yaml#/components/schemas/OperationContainer"
BULK_RESPONSE = "schemas/_core.bulk.yaml#/components/schemas/BulkResponse"
PUT_MAPPING = ("namespaces/indices.yaml#/components/requestBodies/indices.put_mapping/content/"
               "application~1json/schema")


def _resolve_pointer(document: Any, pointer: str) -> Any:
    node = document
    for part in pointer.strip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def sparse_ann_schema() -> dict[str, Any]:
    """The closed neural sparse ANN schema (`schemas/opensearch_sparse_ann.json`)."""
    import json

    return json.loads(SPARSE_ANN_FILE.read_text(encoding="utf-8"))


def sparse_ann_validator(definition: str) -> Draft202012Validator:
    """A validator for one `$defs` entry of the sparse ANN schema (e.g. "SparseVectorProperty")."""
    schema = sparse_ann_schema()
    if definition not in schema["$defs"]:
        raise KeyError(f"no {definition!r} in {SPARSE_ANN_FILE.name}")
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    return Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/{definition}"}, registry=registry)


def _add_sparse_ann(documents: dict[str, Any]) -> None:
    """Register the sparse ANN schema and let the spec accept its two bodies (in place)."""
    documents[SPARSE_ANN] = sparse_ann_schema()
    ann = BASE + SPARSE_ANN + "#/$defs/"
    mapping = documents["schemas/_common.mapping.yaml"]["components"]["schemas"]
    mapping["Property"]["oneOf"].append({"$ref": ann + "SparseVectorProperty"})
    query = documents["schemas/_common.query_dsl.yaml"]["components"]["schemas"]
    neural_sparse = query["QueryContainer"]["properties"]["neural_sparse"]
    neural_sparse["additionalProperties"] = {"anyOf": [
        neural_sparse["additionalProperties"], {"$ref": ann + "NeuralSparseAnnQuery"}]}


class SpecValidator:
    """Closed-schema validators for the bodies convsparse sends to OpenSearch."""

    INDEX_CREATE = INDEX_CREATE
    SEARCH = SEARCH
    QUERY = QUERY
    BULK_ACTION = BULK_ACTION
    BULK_RESPONSE = BULK_RESPONSE
    PUT_MAPPING = PUT_MAPPING
    base = BASE

    def __init__(self, spec_dir: Path = SPEC_DIR, closed: Mapping[str, list[str]] = CLOSED):
        documents: dict[str, Any] = {}
        for folder in ("schemas", "namespaces"):
            for path in sorted((spec_dir / folder).glob("*.yaml")):
                documents[f"{folder}/{path.name}"] = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
        for name, pointers in closed.items():
            for pointer in pointers:
                schema = _resolve_pointer(documents[name], pointer)
                schema["unevaluatedProperties"] = False
        _add_sparse_ann(documents)
        self._patch_documents(documents)
        self.registry: Registry = Registry().with_resources(
            (BASE + name, Resource.from_contents(doc, default_specification=DRAFT202012))
            for name, doc in documents.items()
        )
        self._validators: dict[str, Draft202012Validator] = {}

    def _patch_documents(self, documents: dict[str, Any]) -> None:
        """Local patches where the spec lags the server (a subclass's, e.g. ML Commons' in
        `mlcommons_spec.py`); applied in place before the registry is built."""

    @classmethod
    @cache
    def load(cls) -> SpecValidator | None:
        """The shared validator, or None when the spec folder is absent."""
        if not (SPEC_DIR / "schemas").is_dir():
            return None
        return cls()

    def validator(self, ref: str) -> Draft202012Validator:
        if ref not in self._validators:
            self._validators[ref] = Draft202012Validator({"$ref": self.base + ref}, registry=self.registry)
        return self._validators[ref]

    def errors(self, ref: str, instance: Any) -> list[ValidationError]:
        return list(self.validator(ref).iter_errors(instance))

    def validate(self, ref: str, instance: Any) -> None:
        """Raise the most relevant `ValidationError` if `instance` does not match `ref`."""
        errors = self.errors(ref, instance)
        if errors:
            from jsonschema.exceptions import best_match

            raise best_match(errors)

    # Named checks for the bodies we send
    def validate_index_body(self, body: Mapping[str, Any]) -> None:
        self.validate(self.INDEX_CREATE, body)

    def validate_search_body(self, body: Mapping[str, Any]) -> None:
        self.validate(self.SEARCH, body)

    def validate_query(self, query: Mapping[str, Any]) -> None:
        self.validate(self.QUERY, query)

    def validate_bulk_response(self, response: Mapping[str, Any]) -> None:
        self.validate(self.BULK_RESPONSE, response)

    def validate_put_mapping(self, body: Mapping[str, Any]) -> None:
        self.validate(self.PUT_MAPPING, body)

    def validate_bulk_lines(
        self, lines: Iterable[Mapping[str, Any]], mapping: Mapping[str, Any] | None = None
    ) -> int:
        """Validate an NDJSON bulk body (already parsed): action lines against the closed
        `OperationContainer`; source lines (after index/create) against `mapping`'s strict
        properties when given. Returns the number of actions."""
        lines = list(lines)
        i = n = 0
        while i < len(lines):
            action = lines[i]
            self.validate(self.BULK_ACTION, action)
            n += 1
            op = next(iter(action))
            if op in ("index", "create", "update"):
                if i + 1 >= len(lines):
                    raise ValidationError(f"bulk {op} action without a source line")
                if mapping is not None and op != "update":
                    check_strict_document(lines[i + 1], mapping)
                i += 2
            else:
                i += 1
        return n


def check_strict_document(source: Mapping[str, Any], mapping: Mapping[str, Any]) -> None:
    """What `"dynamic": "strict"` and `rank_features` enforce on one document source."""
    properties = mapping["properties"]
    for key, value in source.items():
        if key not in properties:
            raise ValidationError(f"strict mapping: field {key!r} is not mapped")
        prop = properties[key]
        kind = prop.get("type", "object")
        if kind in ("rank_features", "sparse_vector"):
            if not isinstance(value, Mapping):
                raise ValidationError(f"{kind} field {key!r} must be an object")
            if kind == "sparse_vector" and "method" in prop:  # OpenSearch's: keys are token ids
                errors = list(sparse_ann_validator("TokenIdVector").iter_errors(value))
                if errors:
                    raise ValidationError(f"sparse_vector field {key!r}: {errors[0].message}")
            for name, weight in value.items():
                if "." in name:
                    raise ValidationError(f"feature name {name!r} contains a dot (never matches)")
                if not isinstance(weight, float | int) or not weight >= 1.1754943508222875e-38 \
                        or weight == float("inf"):
                    raise ValidationError(f"featureValue {weight!r} of {name!r} is not a positive normal float")
        elif kind == "binary":  # base64, as the server decodes it
            import base64
            import binascii

            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise ValidationError(f"binary field {key!r} is not base64: {exc}") from None
        elif kind in ("text", "keyword"):
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{kind} field {key!r} must be a string")
        elif kind == "object" and prop.get("enabled", True) is False and not isinstance(value, Mapping):
            raise ValidationError(f"object field {key!r} must be an object")


# ---------------------------------------------------------------------------- Elasticsearch
#: `<repo>/../shared/elasticsearch-api-spec/elasticsearch-serverless-openapi.json`
ES_SPEC_FILE = (Path(__file__).resolve().parents[2] / ".." / "shared" / "elasticsearch-api-spec"
                / "elasticsearch-serverless-openapi.json")
ES_BASE = "file:///es/"
_ES_SCHEMAS = "/components/schemas/"
#: Schemas closed with `unevaluatedProperties: false` (JSON pointers into the one document).
ES_CLOSED = [
    *(_ES_SCHEMAS + name for name in (
        "_types.query_dsl.QueryContainer", "_types.query_dsl.BoolQuery",
        "_types.query_dsl.RankFeatureQuery", "_types.query_dsl.RankFeatureFunctionLinear",
        "_types.query_dsl.SparseVectorQuery", "_types.TokenPruningConfig",
        "_types.mapping.TypeMapping", "_types.mapping.KeywordProperty", "_types.mapping.TextProperty",
        "_types.mapping.ObjectProperty", "_types.mapping.RankFeaturesProperty",
        "_types.mapping.BinaryProperty", "_global.bulk.UpdateOperation",
        "_types.mapping.SparseVectorProperty", "_types.mapping.SparseVectorIndexOptions",
        "_global.search._types.Rescore", "_global.search._types.RescoreQuery",
        "_global.bulk.OperationContainer", "_global.bulk.IndexOperation",
        "_global.bulk.DeleteOperation")),
    "/paths/~1{index}/put/requestBody/content/application~1json/schema",
    "/components/requestBodies/search/content/application~1json/schema",
    "/components/requestBodies/indices.put_mapping/content/application~1json/schema",
]


def _exactly_one_variant(node: Any) -> None:
    """The generated OpenAPI writes a "one of these keys" variant that sits beside other keys
    (`Rescore`: window_size + one of query/learning_to_rank/script; `SparseVectorQuery`: field
    + one of query_vector/inference_id) as an `allOf` member with `minProperties: 1,
    maxProperties: 1`. JSON Schema applies those to the whole object, so every valid body
    would fail; rewrite such a member as "exactly one of its properties is present"."""
    if isinstance(node, dict):
        members = node.get("allOf")
        if isinstance(members, list) and len(members) > 1:
            for member in members:
                if (isinstance(member, dict) and member.get("maxProperties") == 1
                        and isinstance(member.get("properties"), dict)):
                    member.pop("maxProperties")
                    member.pop("minProperties", None)
                    member["oneOf"] = [{"required": [key]} for key in member["properties"]]
        for value in node.values():
            _exactly_one_variant(value)
    elif isinstance(node, list):
        for value in node:
            _exactly_one_variant(value)


def _generator_artifacts(schemas: dict[str, Any]) -> None:
    """Two more places where the generated JSON says less than the TypeScript source:
    `_types.Metadata` (`_meta`) is `Dictionary<string, UserDefinedValue>`, any JSON value, but is
    generated as "values are objects"; TypeScript unions of string types are generated as
    `oneOf`, whose members overlap (`Id | null`: string or nullable string; `Duration`: "-1" or
    "0" or any string; `FieldValue`: long | double | string | boolean | null, so number twice
    and string twice), so a valid value matches several and fails `oneOf`. Restore what the
    source says: `_meta` values are any JSON, and such unions are `anyOf`."""
    schemas["_types.Metadata"]["additionalProperties"] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            members = node.get("oneOf")
            primitive = isinstance(members, list) and len(members) > 1 and all(
                isinstance(m, dict) and "type" in m and set(m) <= {"type", "nullable", "description"}
                for m in members)
            if primitive and len({m["type"] for m in members}) < len(members) or (
                    isinstance(members, list) and len(members) > 1 and all(
                        isinstance(m, dict) and m.get("type") == "string" for m in members)):
                node["anyOf"] = node.pop("oneOf")
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schemas)


class ElasticsearchSpecValidator(SpecValidator):
    """The same closed-schema checks against Elastic's published OpenAPI document (one JSON
    file with internal `#/components/...` refs; see the folder's SOURCE.md). It is the
    serverless variant: it has no `number_of_shards`/`number_of_replicas` settings, which is
    harmless because settings schemas stay open (as for OpenSearch)."""

    INDEX_CREATE = "openapi.json#/paths/~1{index}/put/requestBody/content/application~1json/schema"
    SEARCH = "openapi.json#/components/requestBodies/search/content/application~1json/schema"
    QUERY = "openapi.json#/components/schemas/_types.query_dsl.QueryContainer"
    BULK_ACTION = "openapi.json#/components/schemas/_global.bulk.OperationContainer"
    BULK_RESPONSE = ("openapi.json#/components/responses/bulk-200/content/application~1json/schema")
    PUT_MAPPING = ("openapi.json#/components/requestBodies/indices.put_mapping/content/"
                   "application~1json/schema")
    base = ES_BASE

    def __init__(self, spec_file: Path = ES_SPEC_FILE, closed: Iterable[str] = ES_CLOSED):
        import json

        document = json.loads(spec_file.read_text(encoding="utf-8"))
        _exactly_one_variant(document["components"]["schemas"])
        _generator_artifacts(document["components"]["schemas"])
        for pointer in closed:
            _resolve_pointer(document, pointer)["unevaluatedProperties"] = False
        self.registry = Registry().with_resource(
            ES_BASE + "openapi.json", Resource.from_contents(document, default_specification=DRAFT202012))
        self._validators = {}

    @classmethod
    @cache
    def load(cls) -> ElasticsearchSpecValidator | None:  # type: ignore[override]
        """The shared validator, or None when the spec file is absent."""
        if not ES_SPEC_FILE.is_file():
            return None
        return cls()
