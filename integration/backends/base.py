"""The one protocol every search backend implements, and the optional capabilities.

The client, the tuner and the workers only ever see `Backend`; OpenSearch and the embedded
in-process index are interchangeable behind it (and a test can swap in its own). What only some
backends can do is a small protocol of its own, checked with `isinstance`:

- `SupportsDocumentFrequencies`: the fraction of documents holding each term (the client's
  per-query FLOPS; embedded only, OpenSearch cannot tell cheaply);
- `SupportsIndexListing`: the names of the indices it holds (`convsparse index list`);
- `SupportsApproximateSearch`: an ANN structure built from the index, searched with
  ``search(..., approximate=...)`` (embedded only; the tuner sweeps its knobs);
- `SupportsPassageVectors`: the re-ranker's passage vectors stored with the documents
  (`convsparse.integration.vectors`; every shipped backend);
- `SupportsPassageSample`: passage texts spread over the index, from which the re-ranker's BM25
  features take the searched collection's statistics (every shipped backend).

`Hit`, what a search returns, is defined in the core (`convsparse.hits`, so the re-ranker
reads it without importing this layer) and re-exported here with the protocol.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from convsparse.document_vectors import DocumentVectors
from convsparse.errors import InvalidDocumentError, InvalidTermMapError, UsageError
from convsparse.hits import Hit
from convsparse.integration.vectors import VectorSpec
from convsparse.termmap import TermMap

__all__ = ["MAX_K", "Backend", "DocumentResult", "Hit", "IndexInfo", "IndexedDocument",
           "SupportsApproximateSearch", "SupportsDocumentFrequencies", "SupportsIndexListing",
           "SupportsPassageSample", "SupportsPassageVectors", "check_k", "indexed_document"]

#: The most hits one search returns (and the largest rescore window): OpenSearch's and
#: Elasticsearch's default ``index.max_result_window``. A bound keeps a typo (``k=10**9``) from
#: asking an ANN library for gigabytes of heap; every backend and the client check it.
MAX_K = 10_000


def check_k(k: object, what: str = "k") -> int:
    """`k` if it is an int from 1 to `MAX_K`, else `UsageError` (a `ValueError`) in one line."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise UsageError(f"{what} must be an integer from 1 to {MAX_K} (the search limit), got {k!r}")
    return k

#: `json.dumps(fields, ensure_ascii=False, allow_nan=False)`, with one encoder built once
#: rather than one per document (json.dumps builds one whenever it gets options).
_FIELDS_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class IndexedDocument:
    """A document ready for a backend: its source id, term map and stored fields.

    Checked once, when built (a non-empty string id; a `TermMap`, so finite positive normal
    weights, a mapping is converted; fields JSON can carry): backends trust what they get.
    Raises `InvalidDocumentError` / `InvalidTermMapError` naming the document."""

    id: str
    term_map: TermMap
    fields: Mapping[str, Any] = field(default_factory=dict)
    #: `fields` as JSON, made by the check itself, so a backend that stores JSON (the
    #: embedded store) does not serialise them a second time
    fields_json: str = field(init=False, repr=False, compare=False, default="{}")
    #: the re-ranker's vectors of the passage, written in the same batch as the term map
    #: (required by an index that holds vectors)
    vectors: DocumentVectors | None = field(default=None, repr=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidDocumentError("id must be a non-empty string", record_id=self.id)
        if not isinstance(self.term_map, TermMap):
            object.__setattr__(self, "term_map", TermMap(self.term_map, record_id=self.id))
        fields = {} if self.fields is None else self.fields
        try:
            text = _FIELDS_JSON.encode(dict(fields))
        except (TypeError, ValueError) as e:
            raise InvalidDocumentError(f"fields are not JSON-serialisable: {e}",
                                       record_id=self.id) from None
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "fields_json", text)


def indexed_document(doc: Any) -> IndexedDocument | DocumentResult:
    """`doc` as a checked `IndexedDocument`, or the failed result that says why. Backends call
    this on what a caller passed: an `IndexedDocument` is trusted as it is, anything shaped
    like one (id, term_map, fields) is built into one, once."""
    if isinstance(doc, IndexedDocument):
        return doc
    # unchecked until IndexedDocument checks them (and raises the errors caught below)
    doc_id: Any = getattr(doc, "id", None)
    term_map: Any = getattr(doc, "term_map", None)
    try:
        return IndexedDocument(doc_id, term_map, getattr(doc, "fields", {}),
                               vectors=getattr(doc, "vectors", None))
    except InvalidDocumentError as e:
        return DocumentResult(str(doc_id), False, 400, e.reason)
    except (InvalidTermMapError, TypeError, AttributeError) as e:
        return DocumentResult(str(doc_id), False, 400, f"invalid term map: {e}")


@dataclass(frozen=True)
class DocumentResult:
    """Per-document outcome of a bulk write: ok, or the status and reason it failed."""

    id: str
    ok: bool
    status: int = 200
    error: str | None = None


@dataclass(frozen=True)
class IndexInfo:
    name: str
    fingerprint: str
    count: int
    vocabulary: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """Index management, bulk upserts and term-map search."""

    def create_index(
        self, name: str, *, fingerprint: str, vocabulary: str | None = None, exist_ok: bool = False
    ) -> IndexInfo: ...

    def describe_index(self, name: str) -> IndexInfo: ...

    def delete_index(self, name: str, *, missing_ok: bool = False) -> None: ...

    def upsert(self, name: str, documents: Iterable[IndexedDocument], *,
               fingerprint: str | None = None) -> Iterator[DocumentResult]:
        """Write documents (same id overwrites); yields one result per input document. With
        `fingerprint` (the encoder of the term maps) different from the index's, raise
        `FingerprintMismatchError` before anything is written."""
        ...

    def delete_documents(self, name: str, ids: Iterable[str]) -> Iterator[DocumentResult]: ...

    def search(
        self, name: str, query: TermMap, k: int = 10, *,
        fingerprint: str | None = None, rescore: TermMap | None = None, rescore_window: int = 0,
    ) -> list[Hit]:
        """Top-k documents by dot product with `query`. If `rescore` is given, the top
        `rescore_window` hits are re-ranked by their dot product with `rescore` (two-phase
        search: retrieve with the pruned query, rescore with the full one). If `fingerprint`
        is given and differs from the index's, raise `FingerprintMismatchError`."""
        ...

    def count(self, name: str) -> int: ...


@runtime_checkable
class SupportsDocumentFrequencies(Protocol):
    def document_frequencies(self, name: str, tokens: Iterable[str]) -> dict[str, float]:
        """Fraction of the index's documents whose term map holds each token."""
        ...


@runtime_checkable
class SupportsPassageSample(Protocol):
    def passage_sample(self, name: str, limit: int) -> list[str]:
        """Up to `limit` passages of the index's documents (title and text, as encoded), all of
        them when it holds no more, else a sample spread over the whole index."""
        ...


@runtime_checkable
class SupportsIndexListing(Protocol):
    def list_indices(self) -> list[str]: ...


@runtime_checkable
class SupportsApproximateSearch(Protocol):
    """An approximate-search structure derived from an index (embedded: SEISMIC, see
    `convsparse.integration.backends.embedded.ann`); ``search(..., approximate=...)`` uses it."""

    def build_ann(self, name: str) -> Any:
        """(Re)build it from the index's stored documents; returns what the build covers."""
        ...

    def ann_info(self, name: str) -> Any | None:
        """What the current build covers, or None when none was built."""
        ...


@runtime_checkable
class SupportsPassageVectors(Protocol):
    """The re-ranker's passage vectors kept with the documents (`integration.vectors`).

    An index holds them once `enable_vectors` recorded their `VectorSpec`; from then on every
    upserted document must carry vectors of that spec (`IndexedDocument.vectors`), written with
    its term map, all or nothing; one without them fails alone (400)."""

    def vector_spec(self, name: str) -> VectorSpec | None:
        """The spec the index records, or None when it holds no vectors."""
        ...

    def enable_vectors(self, name: str, spec: VectorSpec, *, replace: bool = False) -> None:
        """Record `spec` in the index; another spec already there raises
        `VectorSpecMismatchError` unless `replace` (then the old vectors are dropped)."""
        ...

    def passage_vectors(self, name: str, ids: Iterable[str]) -> dict[str, DocumentVectors]:
        """The stored vectors of the documents `ids` (those that have some)."""
        ...

    def passages_to_embed(self, name: str) -> Iterator[tuple[str, str]]:
        """(id, passage text) of every document whose stored vectors are missing or were made
        from another text (the backfill's work list; re-running it resumes)."""
        ...

    def put_vectors(self, name: str, items: Iterable[tuple[str, DocumentVectors]]
                    ) -> Iterator[DocumentResult]:
        """Store vectors for existing documents (the backfill): one result per item, 404 for
        a document that is gone."""
        ...
