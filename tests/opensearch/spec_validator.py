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
    ],
    "schemas/_core.search.yaml": [
        "/components/schemas/Rescore",
        "/components/schemas/RescoreQuery",
    ],
    "schemas/_core.bulk.yaml": [
        "/components/schemas/OperationContainer",
        "/components/schemas/IndexOperation",
        "/components/schemas/DeleteOperation",
    ],
    "namespaces/indices.yaml": [
        "/components/requestBodies/indices.create/content/application~1json/schema",
    ],
    "namespaces/_core.yaml": [
        "/components/requestBodies/search/content/application~1json/schema",
    ],
}

INDEX_CREATE = "namespaces/indices.yaml#/components/requestBodies/indices.create/content/application~1json/schema"
SEARCH = "namespaces/_core.yaml#/components/requestBodies/search/content/application~1json/schema"
QUERY = "schemas/_common.query_dsl.yaml#/components/schemas/QueryContainer"
BULK_ACTION = "schemas/_core.bulk.yaml#/components/schemas/OperationContainer"
BULK_RESPONSE = "schemas/_core.bulk.yaml#/components/schemas/BulkResponse"


def _resolve_pointer(document: Any, pointer: str) -> Any:
    node = document
    for part in pointer.strip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


class SpecValidator:
    """Closed-schema validators for the bodies convsparse sends to OpenSearch."""

    def __init__(self, spec_dir: Path = SPEC_DIR, closed: Mapping[str, list[str]] = CLOSED):
        documents: dict[str, Any] = {}
        for folder in ("schemas", "namespaces"):
            for path in sorted((spec_dir / folder).glob("*.yaml")):
                documents[f"{folder}/{path.name}"] = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
        for name, pointers in closed.items():
            for pointer in pointers:
                schema = _resolve_pointer(documents[name], pointer)
                schema["unevaluatedProperties"] = False
        self.registry: Registry = Registry().with_resources(
            (BASE + name, Resource.from_contents(doc, default_specification=DRAFT202012))
            for name, doc in documents.items()
        )
        self._validators: dict[str, Draft202012Validator] = {}

    @classmethod
    @cache
    def load(cls) -> SpecValidator | None:
        """The shared validator, or None when the spec folder is absent."""
        if not (SPEC_DIR / "schemas").is_dir():
            return None
        return cls()

    def validator(self, ref: str) -> Draft202012Validator:
        if ref not in self._validators:
            self._validators[ref] = Draft202012Validator({"$ref": BASE + ref}, registry=self.registry)
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
        self.validate(INDEX_CREATE, body)

    def validate_search_body(self, body: Mapping[str, Any]) -> None:
        self.validate(SEARCH, body)

    def validate_query(self, query: Mapping[str, Any]) -> None:
        self.validate(QUERY, query)

    def validate_bulk_response(self, response: Mapping[str, Any]) -> None:
        self.validate(BULK_RESPONSE, response)

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
            self.validate(BULK_ACTION, action)
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
        if kind == "rank_features":
            if not isinstance(value, Mapping):
                raise ValidationError(f"rank_features field {key!r} must be an object")
            for name, weight in value.items():
                if "." in name:
                    raise ValidationError(f"feature name {name!r} contains a dot (never matches)")
                if not isinstance(weight, float | int) or not weight >= 1.1754943508222875e-38 \
                        or weight == float("inf"):
                    raise ValidationError(f"featureValue {weight!r} of {name!r} is not a positive normal float")
        elif kind in ("text", "keyword"):
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{kind} field {key!r} must be a string")
        elif kind == "object" and prop.get("enabled", True) is False and not isinstance(value, Mapping):
            raise ValidationError(f"object field {key!r} must be an object")
