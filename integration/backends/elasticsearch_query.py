"""Elasticsearch query bodies for term maps (plain dicts, checked against Elastic's specification
in the tests).

One builder per field type (see `convsparse.mappings.elasticsearch`); both score a document by
the dot product of the query's term map with the stored FeatureField values:

- `rank_feature_query` (`rank_features` field): `bool.should` of
  `{"rank_feature": {"field": "<field>.<name>", "linear": {}, "boost": weight}}`, the same body
  as on OpenSearch (`opensearch_query.rank_feature_query`); `linear` is always sent (the default
  function is `saturation`).
- `sparse_vector_query` (`sparse_vector` field, Elasticsearch 8.15+):
  `{"sparse_vector": {"field": ..., "query_vector": {name: weight}, "prune": bool,
  "pruning_config": {...}}}`. `prune` is always stated: indices created on recent versions can
  prune by default through the field's `index_options`, and the contract here is an exact dot
  product unless token pruning was asked for.

Both use the escaped feature names of `TermMap.to_rank_features()` and stay within the clause
limit (each query token is one Lucene clause in both forms), or raise `TooManyClausesError`.
They are built one way, as plain dicts, whatever the client's version (its `elasticsearch.dsl`
gave the same bodies and was a second builder to keep equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convsparse.errors import InvalidTermMapError, TooManyClausesError
from convsparse.integration.backends import opensearch_query
from convsparse.termmap import TermMap

__all__ = ["DEFAULT_MAX_CLAUSE_COUNT", "build_query", "rank_feature_query", "sparse_vector_query"]

#: Elasticsearch 8+ sizes the clause limit from heap and thread pool, never below 1024.
DEFAULT_MAX_CLAUSE_COUNT = 1024


def _checked(term_map: Mapping[str, float], max_clause_count: int | None) -> TermMap:
    tm = term_map if isinstance(term_map, TermMap) else TermMap(term_map)
    if not tm:
        raise InvalidTermMapError("the query term map is empty (nothing to search for)")
    if max_clause_count is not None and len(tm) > max_clause_count:
        raise TooManyClausesError(len(tm), max_clause_count)
    return tm


def rank_feature_query(
    term_map: Mapping[str, float], field: str = "terms", *,
    max_clause_count: int | None = DEFAULT_MAX_CLAUSE_COUNT,
) -> dict[str, Any]:
    """Linear `rank_feature` clauses, boost = query weight (score = sum w x quantized(value)):
    the OpenSearch body (`opensearch_query.rank_feature_query`), the same Lucene scoring."""
    tm = _checked(term_map, max_clause_count)
    return opensearch_query.rank_feature_query(tm, field, max_clause_count=None)


def sparse_vector_query(
    term_map: Mapping[str, float], field: str = "terms", *,
    prune: bool = False, pruning_config: Mapping[str, Any] | None = None,
    max_clause_count: int | None = DEFAULT_MAX_CLAUSE_COUNT,
) -> dict[str, Any]:
    """`sparse_vector` with a precomputed `query_vector`. `prune=True` lets the server drop
    query tokens by `pruning_config` (`mappings.elasticsearch.token_pruning_config`; the
    server's defaults when empty)."""
    tm = _checked(term_map, max_clause_count)
    if pruning_config and not prune:
        raise ValueError("pruning_config is only used with prune=True")
    body: dict[str, Any] = {"field": field, "query_vector": tm.to_rank_features(), "prune": bool(prune)}
    if prune and pruning_config:
        body["pruning_config"] = dict(pruning_config)
    return {"sparse_vector": body}


def build_query(
    term_map: Mapping[str, float], field: str = "terms", *, field_type: str = "rank_features",
    prune: bool = False, pruning_config: Mapping[str, Any] | None = None,
    max_clause_count: int | None = DEFAULT_MAX_CLAUSE_COUNT,
) -> dict[str, Any]:
    """The query for an index whose term field has `field_type`."""
    if field_type == "rank_features":
        if prune or pruning_config:
            raise ValueError("server-side token pruning needs field_type='sparse_vector'")
        return rank_feature_query(term_map, field, max_clause_count=max_clause_count)
    if field_type == "sparse_vector":
        return sparse_vector_query(term_map, field, prune=prune, pruning_config=pruning_config,
                                   max_clause_count=max_clause_count)
    raise ValueError(f"unknown field type {field_type!r}; use 'rank_features' or 'sparse_vector'")
