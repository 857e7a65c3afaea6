"""The OpenSearch `sparse_vector` field (neural sparse ANN with SEISMIC, OpenSearch 3.3+).

An alternative to `rank_features` for large indices, chosen when the index is created
(`index_body(field_type="sparse_vector")`) and recorded in `_meta.field_type`. What the server
requires, from the OpenSearch 3.3 documentation ("Sparse vector" field type, "Neural sparse ANN
search"):

- the index setting `index.sparse: true` (`SPARSE_INDEX_SETTINGS`);
- the field `{"type": "sparse_vector", "method": {"name": "seismic", "parameters": {...}}}`;
  the method cannot be changed once the field exists (reindex to change it);
- token keys that are integers (token ids, sent as JSON object keys, i.e. decimal strings), both
  in documents and in `neural_sparse.query_tokens`. Term maps are keyed by token strings, so the
  index records its vocabulary (`TokenIds`, in `_meta.token_ids`) and every writer and searcher
  maps strings to ids through that record. Why in the index rather than next to the backend: an
  index is then self-describing (a worker, the CLI or a chat app can write to and search it
  with nothing but the index name), and a vocabulary mismatch is impossible rather than merely
  detected. Cost: the `_meta` grows by the token list (about 250 KB for a 30k BERT vocabulary),
  read once per `meta_cache_ttl_s` by each backend.

Segments with fewer documents than `approximate_threshold` are indexed and searched as plain
`rank_features` (exact FeatureField dot products); larger ones use SEISMIC's clustered posting
lists and byte-quantized weights (approximate scores and recall).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any

from convsparse.errors import InvalidTermMapError
from convsparse.termmap import TermMap

__all__ = [
    "SPARSE_ANN_SINCE",
    "SPARSE_INDEX_SETTINGS",
    "SeismicParameters",
    "SeismicQueryOptions",
    "TokenIds",
    "sparse_vector_property",
]

#: First OpenSearch version with the `sparse_vector` field and neural sparse ANN.
SPARSE_ANN_SINCE = (3, 3, 0)
#: Index settings a `sparse_vector` field needs (merged into `settings.index`).
SPARSE_INDEX_SETTINGS: dict[str, Any] = {"sparse": True}


def _positive(name: str, value: float | None, *, upper: float | None = None,
              upper_inclusive: bool = False) -> None:
    if value is None:
        return
    if not value > 0 or (upper is not None and (value > upper if upper_inclusive else value >= upper)):
        bound = "" if upper is None else f", {'<=' if upper_inclusive else '<'} {upper:g}"
        raise ValueError(f"{name} must be > 0{bound}, not {value!r}")


@dataclass(frozen=True)
class SeismicParameters:
    """`method.parameters` of a `sparse_vector` field (fixed when the index is created).

    Defaults are the documented server defaults, except `quantization_ceiling_search`: the
    documentation recommends 3 for bi-encoder queries (queries encoded by a model, as convsparse
    always does) instead of its default 16. Weights above a ceiling are clipped when SEISMIC
    byte-quantizes them, so raise the ceilings if your term weights run higher. Every value that
    is set is sent explicitly and recorded in `_meta`, so an index says what it was built with
    even if a later server changes its defaults. `n_postings=None` leaves it to the server
    (0.0005 x the segment's document count).
    """

    n_postings: int | None = None
    cluster_ratio: float = 0.1
    summary_prune_ratio: float = 0.4
    approximate_threshold: int = 1_000_000
    quantization_ceiling_search: float = 3.0
    quantization_ceiling_ingest: float = 3.0

    def __post_init__(self) -> None:
        if self.n_postings is not None and (isinstance(self.n_postings, bool) or int(self.n_postings) < 1):
            raise ValueError(f"n_postings must be a positive integer, not {self.n_postings!r}")
        _positive("cluster_ratio", self.cluster_ratio, upper=1.0)
        _positive("summary_prune_ratio", self.summary_prune_ratio, upper=1.0, upper_inclusive=True)
        if int(self.approximate_threshold) < 0:
            raise ValueError("approximate_threshold must be >= 0")
        _positive("quantization_ceiling_search", self.quantization_ceiling_search)
        _positive("quantization_ceiling_ingest", self.quantization_ceiling_ingest)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> SeismicParameters:
        """From a dict (settings, CLI, `_meta`); an unknown key is an error, not ignored."""
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown SEISMIC parameter(s) {sorted(unknown)}; "
                             f"known: {[f.name for f in fields(cls)]}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The `method.parameters` object (unset values left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class SeismicQueryOptions:
    """`method_parameters` of a `neural_sparse` query on a `sparse_vector` field.

    - `top_n`: SEISMIC keeps only the `top_n` heaviest query tokens. None (default) sends the
      number of tokens of the query, so the client's `PruningPolicy` stays the one place that
      prunes a query (set it to let the server prune further).
    - `heap_factor`: recall/latency trade-off (a cluster is visited when its summary score beats
      the queue's top score / heap_factor); 1.0 as in the documentation's examples.
    - `k`: how many results the approximate search returns. None (default) sends the larger of
      the search's `k` and its rescore window, so the ANN phase never returns fewer hits than
      were asked for.
    """

    top_n: int | None = None
    heap_factor: float = 1.0
    k: int | None = None

    def __post_init__(self) -> None:
        for name in ("top_n", "k"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) < 1):
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        _positive("heap_factor", self.heap_factor)

    def method_parameters(self, *, n_tokens: int, k: int) -> dict[str, Any]:
        """The object sent for a query of `n_tokens` tokens that must return `k` hits."""
        return {"top_n": int(self.top_n or n_tokens), "heap_factor": float(self.heap_factor),
                "k": int(self.k or k)}


def sparse_vector_property(parameters: SeismicParameters | None = None) -> dict[str, Any]:
    """The mapping of the term field: `sparse_vector` with the SEISMIC method."""
    method: dict[str, Any] = {"name": "seismic"}
    params = (parameters or SeismicParameters()).to_dict()
    if params:
        method["parameters"] = params
    return {"type": "sparse_vector", "method": method}


class TokenIds:
    """The token string <-> integer id table of an index's `sparse_vector` field.

    Ids are positions in the encoder's vocabulary (`encoder.vocabulary`, id order), so a term
    map maps to exactly the ids the tokenizer uses. `record()` is what `_meta.token_ids` holds;
    `from_record` checks its digest, so a hand-edited or truncated `_meta` is refused.
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if not tokens:
            raise ValueError("the token vocabulary is empty")
        ids: dict[str, int] = {}
        for i, token in enumerate(tokens):
            if not isinstance(token, str):
                raise ValueError(f"vocabulary entry {i} is not a string: {token!r}")
            ids.setdefault(token, i)  # padding slots ("") may repeat; the first id wins
        self.tokens = tokens
        self._ids = ids

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def digest(self) -> str:
        text = json.dumps(self.tokens, ensure_ascii=False, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def record(self) -> dict[str, Any]:
        return {"size": len(self.tokens), "digest": self.digest, "tokens": self.tokens}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, index: str = "?") -> TokenIds:
        try:
            table = cls(record["tokens"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"index {index!r}: _meta.token_ids is malformed ({exc})") from None
        if table.digest != record.get("digest") or len(table) != record.get("size"):
            raise ValueError(f"index {index!r}: _meta.token_ids does not match its digest "
                             "(edited or truncated); recreate the index")
        return table

    def summary(self) -> dict[str, Any]:
        """What `describe_index` shows instead of the whole token list."""
        return {"size": len(self.tokens), "digest": self.digest}

    def document_vector(self, term_map: TermMap) -> dict[str, float]:
        """The `sparse_vector` object of a document: `{"<id>": weight}`. A token outside the
        vocabulary raises `InvalidTermMapError` (the document is reported, not sent)."""
        try:
            return {str(i): w for i, w in term_map.to_token_ids(self._ids).items()}
        except InvalidTermMapError as exc:
            raise InvalidTermMapError(
                "token is not in the index's vocabulary (_meta.token_ids); the term map comes "
                "from another tokenizer", token=exc.token) from None

    def query_vector(self, term_map: TermMap) -> dict[str, float]:
        """`query_tokens` for a query: tokens outside the vocabulary are left out, which is
        exact (no stored document can hold them)."""
        return {str(self._ids[t]): w for t, w in term_map.items() if t in self._ids}
