"""Pure functions that build OpenSearch query and search bodies from term maps.

Two query forms score a document by the dot product of the query's term map with the stored
`rank_features` (both apply the same Lucene FeatureField linear function):

- `rank_feature_query`: a `bool` with one `should` clause per query term,
  `{"rank_feature": {"field": "terms.<name>", "linear": {}, "boost": weight}}`. `linear` is always
  sent, because a `rank_feature` query without a function defaults to `saturation`. Core
  OpenSearch, no plugin needed.
- `neural_sparse_query`: `{"neural_sparse": {"terms": {"query_tokens": {name: weight}}}}` (the
  neural-search plugin, 2.14+). Each weight must be in (0, 64].
- `neural_sparse_query(..., raw_names=True)` and `neural_sparse_text_query` (an index that ML
  Commons fills through an ingest pipeline, `integration/backends/mlcommons_pipeline.py`): the
  server stores raw token names, so `query_tokens` are sent unescaped, or `query_text` +
  `model_id` lets the server encode a one-turn query. `check_server_encoded_query` refuses a
  body that could not match such an index (`rank_feature` clauses, escaped names).
- `neural_sparse_ann_query` (a `sparse_vector` field, OpenSearch 3.3+): the same query with
  integer token ids as keys and `method_parameters` (`top_n`, `heap_factor`, `k`) for SEISMIC;
  the caller maps tokens to ids (`mappings.sparse_vector.TokenIds.query_vector`).

Feature names are escaped with `TermMap.to_rank_features()` in both forms (the `rank_feature`
query splits `field` at its last dot, so an unescaped "u.s" would silently never match).

Clause limit: Lucene counts every leaf clause of a query against
`indices.query.bool.max_clause_count` (1024 by default); the main query and the rescore query are
rewritten separately, and each must stay within the limit. We check both, with the conservative
rule "terms <= limit", and raise `TooManyClausesError` rather than let the server answer 400
(`too_many_clauses` / `too_many_nested_clauses`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from convsparse.errors import InvalidTermMapError, TooManyClausesError
from convsparse.integration.backends.base import check_k
from convsparse.termmap import TermMap

__all__ = [
    "DEFAULT_MAX_CLAUSE_COUNT",
    "NEURAL_SPARSE_MAX_WEIGHT",
    "QueryMode",
    "build_query",
    "check_server_encoded_query",
    "neural_sparse_ann_query",
    "neural_sparse_query",
    "neural_sparse_text_query",
    "rank_feature_query",
    "search_body",
]

#: OpenSearch's default `indices.query.bool.max_clause_count`.
DEFAULT_MAX_CLAUSE_COUNT = 1024
#: The neural-search plugin rejects `query_tokens` weights above this (and <= 0).
NEURAL_SPARSE_MAX_WEIGHT = 64.0

QueryMode = Literal["rank_feature", "neural_sparse"]


def _as_term_map(query: Mapping[str, float]) -> TermMap:
    """Validate (NaN, inf, zero, negative and subnormal weights raise) before anything is built."""
    return query if isinstance(query, TermMap) else TermMap(query)


def _check_clauses(n_terms: int, max_clause_count: int | None) -> None:
    if max_clause_count is not None and n_terms > max_clause_count:
        raise TooManyClausesError(n_terms, max_clause_count)


def rank_feature_query(
    term_map: Mapping[str, float],
    field: str = "terms",
    *,
    max_clause_count: int | None = DEFAULT_MAX_CLAUSE_COUNT,
) -> dict[str, Any]:
    """`bool.should` of one linear `rank_feature` clause per term, boost = query weight.

    Score of a document = sum over shared terms of weight x quantized(document value), i.e.
    the dot product up to FeatureField's 9-bit storage precision.
    """
    tm = _as_term_map(term_map)
    if not tm:
        raise InvalidTermMapError("the query term map is empty (nothing to search for)")
    _check_clauses(len(tm), max_clause_count)
    clauses = [
        {"rank_feature": {"field": f"{field}.{name}", "linear": {}, "boost": weight}}
        for name, weight in tm.to_rank_features().items()
    ]
    return {"bool": {"should": clauses}}


def _query_tokens(tokens: Mapping[str, float], clip: bool) -> dict[str, float]:
    """`query_tokens` within the plugin's (0, 64] weight range (capped only with `clip`)."""
    out: dict[str, float] = {}
    for name, weight in tokens.items():
        if weight > NEURAL_SPARSE_MAX_WEIGHT:
            if not clip:
                raise InvalidTermMapError(
                    f"weight {weight} is above neural_sparse's limit of {NEURAL_SPARSE_MAX_WEIGHT:g}; "
                    "use query_mode='rank_feature', scale the query, or pass clip=True",
                    token=name,
                )
            weight = NEURAL_SPARSE_MAX_WEIGHT
        out[name] = weight
    return out


def neural_sparse_query(
    term_map: Mapping[str, float],
    field: str = "terms",
    *,
    max_clause_count: int | None = DEFAULT_MAX_CLAUSE_COUNT,
    clip: bool = False,
    raw_names: bool = False,
) -> dict[str, Any]:
    """`neural_sparse` with precomputed `query_tokens`: escaped names, as convsparse writes
    them, or with `raw_names` the token strings themselves, as ML Commons writes them.

    The plugin rejects weights outside (0, 64]; a larger weight raises `InvalidTermMapError`
    unless `clip=True`, which caps it at 64 (this changes scores, so it is opt-in).
    """
    tm = _as_term_map(term_map)
    if not tm:
        raise InvalidTermMapError("the query term map is empty (nothing to search for)")
    _check_clauses(len(tm), max_clause_count)
    names = dict(tm.items()) if raw_names else tm.to_rank_features()
    return {"neural_sparse": {field: {"query_tokens": _query_tokens(names, clip)}}}


def neural_sparse_text_query(text: str, model_id: str, field: str = "terms") -> dict[str, Any]:
    """`neural_sparse` with `query_text` + `model_id`: the cluster's model encodes the text
    (one turn: the conversational query side stays in the client)."""
    if not text or not text.strip():
        raise InvalidTermMapError("the query text is empty (nothing to search for)")
    if not model_id:
        raise ValueError("model_id is empty: name the ML Commons model that encodes the query")
    return {"neural_sparse": {field: {"query_text": text, "model_id": model_id}}}


#: What `escape_token` writes; raw vocabularies hold neither.
_ESCAPES = ("%2E", "%25")


def check_server_encoded_query(query: Mapping[str, Any], *, index: str = "") -> None:
    """Raise `ValueError` if `query` (a query container) cannot match an index that ML Commons
    fills: a `rank_feature` clause (it splits its field at the last dot, and the index's names
    are raw) or `query_tokens` with escaped names ("%2E", "%25")."""
    where = f"index {index!r}" if index else "an ML-Commons-encoded index"

    def visit(node: Any) -> None:
        if isinstance(node, Mapping):
            if "rank_feature" in node:
                raise ValueError(f"{where} holds raw token names from ML Commons: a rank_feature "
                                 "query cannot match them; search it with neural_sparse "
                                 "(OpenSearchBackend does so for such an index)")
            tokens = node.get("query_tokens")
            if isinstance(tokens, Mapping):
                escaped = [t for t in tokens if any(e in str(t) for e in _ESCAPES)]
                if escaped:
                    raise ValueError(f"{where} holds raw token names from ML Commons, but the "
                                     f"query's tokens are escaped ({escaped[:3]}); send the term "
                                     "map's own names (TermMap keys, not to_rank_features())")
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(query)


def neural_sparse_ann_query(
    query_tokens: Mapping[str, float],
    field: str = "terms",
    *,
    method_parameters: Mapping[str, Any] | None,
    max_clause_count: int | None = DEFAULT_MAX_CLAUSE_COUNT,
    clip: bool = False,
) -> dict[str, Any]:
    """`neural_sparse` on a `sparse_vector` field: `query_tokens` keyed by token id (decimal
    strings, as the field requires).

    With `method_parameters` (`SeismicQueryOptions.method_parameters`) it is the approximate
    SEISMIC search on segments of at least `approximate_threshold` documents. Without them the
    neural-search plugin (3.3) builds the exact query: one linear FeatureField clause per token,
    the same dot product as on `rank_features`, which is what a rescore needs (it must score
    every document of the window, not only those an approximate search reaches). Segments
    below the threshold always run the exact query, so the clause limit applies to both."""
    if not query_tokens:
        raise InvalidTermMapError("the query term map is empty (nothing to search for)")
    bad = [name for name in query_tokens if not (isinstance(name, str) and name.isdecimal())]
    if bad:
        raise ValueError(f"sparse_vector query tokens must be token ids (decimal strings), not {bad[:3]}")
    checked = _as_term_map(query_tokens)  # the same weight checks as every term map
    _check_clauses(len(checked), max_clause_count)
    body: dict[str, Any] = {"query_tokens": _query_tokens(checked, clip)}
    if method_parameters is not None:
        body["method_parameters"] = dict(method_parameters)
    return {"neural_sparse": {field: body}}


def build_query(
    term_map: Mapping[str, float],
    field: str = "terms",
    *,
    mode: QueryMode = "rank_feature",
    max_clause_count: int | None = DEFAULT_MAX_CLAUSE_COUNT,
) -> dict[str, Any]:
    """The query container for `mode` ("rank_feature" or "neural_sparse")."""
    if mode == "rank_feature":
        return rank_feature_query(term_map, field, max_clause_count=max_clause_count)
    if mode == "neural_sparse":
        return neural_sparse_query(term_map, field, max_clause_count=max_clause_count)
    raise ValueError(f"unknown query mode {mode!r}; use 'rank_feature' or 'neural_sparse'")


def search_body(
    query: Mapping[str, Any],
    k: int = 10,
    *,
    rescore: Mapping[str, Any] | None = None,
    rescore_window: int = 0,
    source_fields: Sequence[str] | None = None,
    exclude_fields: Sequence[str] = ("terms",),
) -> dict[str, Any]:
    """A `_search` body: top `k` by `query`, optionally rescoring the top `rescore_window`.

    `query` and `rescore` are query containers (e.g. from `rank_feature_query`). The rescorer
    uses `query_weight: 0` and `rescore_query_weight: 1`, so a rescored hit's score is exactly the
    rescore query's score (the full query's dot product). The window is `rescore_window` (`k` if
    0); hits below it keep their first-phase scores and order, as in `Backend.search`. `_source`
    returns `source_fields` (all fields if None) minus `exclude_fields` (the term map by default:
    it is large and not needed for display).
    """
    check_k(k)
    if rescore is not None and rescore_window:
        check_k(rescore_window, "rescore_window")
    # track_total_hits=False lets Lucene skip non-competitive documents (block-max WAND over the
    # FeatureField impacts) instead of counting every match; we never report a total.
    body: dict[str, Any] = {"size": k, "query": dict(query), "track_total_hits": False}
    if rescore is not None:
        if rescore_window < 0:
            raise ValueError("rescore_window must be >= 0")
        body["rescore"] = {
            "window_size": rescore_window or k,
            "query": {
                "rescore_query": dict(rescore),
                "query_weight": 0.0,
                "rescore_query_weight": 1.0,
            },
        }
    source: dict[str, Any] = {}
    if source_fields is not None:
        source["includes"] = list(source_fields)
    if exclude_fields:
        source["excludes"] = list(exclude_fields)
    if source:
        body["_source"] = source
    return body
