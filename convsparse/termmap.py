"""The term-map contract: token -> positive weight, and its OpenSearch forms.

A `TermMap` is what every encoder emits and every backend consumes. Weights must be finite
and at least Float.MIN_NORMAL, because Lucene's FeatureField rejects anything else at index
time (a 400 for the whole document). Checking here means an invalid weight is never sent.

Feature-name escaping (`escape_token` / `unescape_token`): the `rank_feature` query splits its
`field` at the *last* dot, so a token containing "." would silently never match. We therefore
percent-encode exactly two characters in every feature name, on both index and query side:
"%" -> "%25" (so the escape is reversible) and "." -> "%2E". Every other character is kept
verbatim; `neural_sparse` gets the same escaped names so both query forms hit the same features.
"""

from __future__ import annotations

import gc
import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import numpy as np

from convsparse.errors import InvalidTermMapError

#: Java's Float.MIN_NORMAL: the smallest value FeatureField accepts.
FLOAT_MIN_NORMAL = 1.1754943508222875e-38
#: Lucene's maximum term length in UTF-8 bytes.
MAX_TOKEN_BYTES = 32766

T = TypeVar("T")


def feature_value_codes(values: np.ndarray) -> np.ndarray:
    """What Lucene's FeatureField stores of each weight: the float32's bits >>> 15 (its top 9
    significant bits, truncated), as uint32 codes."""
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32) >> np.uint32(15)


def quantize_feature_values(values: np.ndarray) -> np.ndarray:
    """The value a `rank_features` field indexes and scores for each weight (see
    `feature_value_codes`)."""
    return (feature_value_codes(values) << np.uint32(15)).view(np.float32)


def escape_token(token: str) -> str:
    """Feature name for `token`: "%" -> "%25", "." -> "%2E" (see module docstring)."""
    return token.replace("%", "%25").replace(".", "%2E")


def unescape_token(name: str) -> str:
    """Inverse of `escape_token`."""
    return name.replace("%2E", ".").replace("%2e", ".").replace("%25", "%")


def check_weight(token: str, weight: float, *, record_id: str | None = None) -> float:
    """Return `weight` as a float, or raise `InvalidTermMapError` saying why it is invalid."""
    if not isinstance(token, str) or not token:
        raise InvalidTermMapError("tokens must be non-empty strings", record_id=record_id, token=token)
    if len(token.encode("utf-8")) > MAX_TOKEN_BYTES:
        raise InvalidTermMapError(
            f"token is longer than Lucene's {MAX_TOKEN_BYTES}-byte term limit",
            record_id=record_id, token=token[:40],
        )
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise InvalidTermMapError(
            f"weight {weight!r} is not a number", record_id=record_id, token=token
        ) from None
    if not math.isfinite(value):
        raise InvalidTermMapError(
            f"weight {value} is not finite (OpenSearch: 'featureValue must be finite')",
            record_id=record_id, token=token,
        )
    if value < FLOAT_MIN_NORMAL:
        raise InvalidTermMapError(
            f"weight {value!r} is not a positive normal float (must be >= {FLOAT_MIN_NORMAL:.3e}); "
            "drop zero/negative terms before indexing",
            record_id=record_id, token=token,
        )
    return value


class TermMap(Mapping[str, float]):
    """An immutable, validated map token -> weight.

    >>> tm = TermMap({"paris": 1.5, "u.s": 0.25})
    >>> tm.to_rank_features()
    {'paris': 1.5, 'u%2Es': 0.25}
    >>> TermMap.from_rank_features(tm.to_rank_features()) == tm
    True
    """

    __slots__ = ("_weights",)

    def __init__(
        self, weights: Mapping[str, float] | Iterable[tuple[str, float]] = (), *,
        record_id: str | None = None,
    ):
        items = weights.items() if isinstance(weights, Mapping) else weights
        checked: dict[str, float] = {}
        for token, weight in items:
            if token in checked:
                raise InvalidTermMapError("token appears twice", record_id=record_id, token=token)
            checked[token] = check_weight(token, weight, record_id=record_id)
        self._weights = checked

    @classmethod
    def from_scores(
        cls, tokens: Iterable[str], scores: Iterable[float], *, record_id: str | None = None
    ) -> TermMap:
        """Build from encoder output: non-positive and subnormal scores are dropped (they are
        the zeros of log(1+ReLU)); NaN/inf still raise, because they mean a broken model."""
        kept = []
        for token, score in zip(tokens, scores):
            s = float(score)
            if math.isnan(s) or math.isinf(s):
                raise InvalidTermMapError(
                    f"encoder produced {s} (broken model or input)", record_id=record_id, token=token
                )
            if s >= FLOAT_MIN_NORMAL:
                kept.append((token, s))
        return cls(kept, record_id=record_id)

    @classmethod
    def from_rank_features(cls, features: Mapping[str, float]) -> TermMap:
        return cls({unescape_token(k): v for k, v in features.items()})

    @classmethod
    def from_token_ids(cls, ids: Mapping[int, float], vocabulary: list[str]) -> TermMap:
        return cls({vocabulary[i]: w for i, w in ids.items()})

    # Mapping protocol
    def __getitem__(self, token: str) -> float:
        return self._weights[token]

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TermMap):
            return self._weights == other._weights
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._weights.items()))

    def __repr__(self) -> str:
        top = ", ".join(f"{t!r}: {w:.3g}" for t, w in self.top(5))
        more = f", ... ({len(self)} terms)" if len(self) > 5 else ""
        return f"TermMap({{{top}{more}}})"

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        """Terms by descending weight (ties broken by token, so the order is stable)."""
        ranked = sorted(self._weights.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked if k is None else ranked[:k]

    def to_dict(self) -> dict[str, float]:
        return dict(self._weights)

    def tokens_and_weights(self) -> tuple[list[str], list[float]]:
        """(tokens, weights) as two parallel lists (what a backend's write log stores)."""
        return list(self._weights), list(self._weights.values())

    def to_rank_features(self) -> dict[str, float]:
        """The object stored in a `rank_features` field (escaped feature names)."""
        return {escape_token(t): w for t, w in self._weights.items()}

    def to_token_ids(self, vocabulary: Mapping[str, int]) -> dict[int, float]:
        """Integer token ids -> weight, the form `sparse_vector`/SEISMIC indexes need."""
        out: dict[int, float] = {}
        for token, weight in self._weights.items():
            try:
                out[vocabulary[token]] = weight
            except KeyError:
                raise InvalidTermMapError(
                    "token is not in the encoder's vocabulary", token=token
                ) from None
        return out

    def dot(self, other: Mapping[str, float]) -> float:
        small, big = (self, other) if len(self) <= len(other) else (other, self)
        return float(sum(w * big.get(t, 0.0) for t, w in small.items()))

    def total(self) -> float:
        return float(sum(self._weights.values()))


@dataclass(frozen=True)
class TermMapBatch:
    """Term maps from one encoder, tagged with its fingerprint so an index can refuse a
    query built by a different encoder."""

    term_maps: list[TermMap]
    fingerprint: str
    ids: list[str] | None = field(default=None)
    #: The CSR arrays the term maps are views of, when the batch came from `from_csr`.
    csr: CsrRows | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.ids is not None and len(self.ids) != len(self.term_maps):
            raise ValueError("ids and term_maps differ in length")

    def __len__(self) -> int:
        return len(self.term_maps)

    def __iter__(self) -> Iterator[TermMap]:
        return iter(self.term_maps)

    def __getitem__(self, i: int) -> TermMap:
        return self.term_maps[i]

    @classmethod
    def from_csr(
        cls, rows: CsrRows, vocabulary: Vocabulary | Sequence[str], fingerprint: str,
        ids: Sequence[str] | None = None, *, checked: bool = False,
    ) -> TermMapBatch:
        """A batch whose term maps are lazy views of `rows` (CSR arrays over `vocabulary`).

        Validated once for the whole batch, vectorised, with the same rules and errors as
        `TermMap.from_scores`: a non-finite weight raises `InvalidTermMapError` naming the
        record and token, weights below Float.MIN_NORMAL are dropped, and a token that is not
        a valid feature name raises (``checked=True``: `rows` come from `CsrRows.validated`
        already). No per-document dict is built until a term map is read."""
        vocab = vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary(vocabulary)
        if ids is not None and len(ids) != rows.n_rows:
            raise ValueError("ids and rows differ in length")
        if not checked:
            rows = rows.validated(vocab, ids)
        lists = _CsrLists(rows, vocab)
        maps: list[TermMap] = [
            CsrTermMap(vocab, rows.indices[a:b], rows.values[a:b], lists, a)
            for a, b in zip(rows.indptr[:-1].tolist(), rows.indptr[1:].tolist())
        ]
        return cls(maps, fingerprint, list(ids) if ids is not None else None, csr=rows)

    def rank_features(self) -> list[dict[str, float]]:
        """Every term map's `to_rank_features()` (the `rank_features` objects of a bulk body).
        A CSR-backed batch gathers the escaped names and weights once for the whole batch."""
        if self.csr is None:
            return [tm.to_rank_features() for tm in self.term_maps]
        if not self.term_maps:
            return []
        first = self.term_maps[0]
        assert isinstance(first, CsrTermMap) and first._lists is not None  # a CSR batch's views
        names, weights = first._lists.escaped_and_weights()
        bounds = self.csr.indptr.tolist()
        # Thousands of fresh dicts would trigger cyclic-GC passes that find nothing to free
        # (dicts of str -> float hold no cycles): pause the collector while building them.
        paused = gc.isenabled()
        gc.disable()
        try:
            return [dict(zip(names[a:b], weights[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
        finally:
            if paused:
                gc.enable()


def term_map_from_vector(
    vector: np.ndarray, vocabulary: list[str], *, record_id: str | None = None
) -> TermMap:
    """Vocabulary-sized activation vector -> TermMap of its non-zero entries."""
    nz = np.flatnonzero(vector)
    return TermMap.from_scores((vocabulary[i] for i in nz), vector[nz].tolist(), record_id=record_id)


# --------------------------------------------------------------------------- the CSR form


class Vocabulary:
    """Token id -> token, plus the per-vocabulary arrays the CSR path needs, computed once:
    the tokens as a numpy object array (fancy-indexable), their escaped feature names, which
    ids are valid feature names at all, and each token's rank in string order (the tie-break
    of `TermMap.top`)."""

    def __init__(self, tokens: Sequence[str]):
        self.tokens = list(tokens)
        self.array = np.empty(len(self.tokens), dtype=object)
        self.array[:] = self.tokens

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def escaped(self) -> np.ndarray:
        out = np.empty(len(self.tokens), dtype=object)
        out[:] = [escape_token(t) if isinstance(t, str) else t for t in self.tokens]
        return out

    @cached_property
    def invalid_reason(self) -> dict[int, str]:
        """Ids whose token `TermMap` would reject, with the reason."""
        bad: dict[int, str] = {}
        for i, t in enumerate(self.tokens):
            if not isinstance(t, str) or not t:
                bad[i] = "tokens must be non-empty strings"
            elif len(t) * 4 > MAX_TOKEN_BYTES and len(t.encode("utf-8")) > MAX_TOKEN_BYTES:
                bad[i] = f"token is longer than Lucene's {MAX_TOKEN_BYTES}-byte term limit"
        return bad

    @cached_property
    def valid(self) -> np.ndarray:
        ok = np.ones(len(self.tokens), dtype=bool)
        ok[list(self.invalid_reason)] = False
        return ok

    @cached_property
    def rank(self) -> np.ndarray:
        """rank[i] = position of token i in string order (ties by id, which cannot matter for
        the unique tokens of a real vocabulary)."""
        order = sorted(range(len(self.tokens)), key=lambda i: (str(self.tokens[i]), i))
        rank = np.empty(len(self.tokens), dtype=np.int64)
        rank[np.asarray(order, dtype=np.int64)] = np.arange(len(self.tokens), dtype=np.int64)
        return rank


@dataclass(frozen=True)
class CsrRows:
    """Documents x vocabulary weights as CSR arrays: row i's token ids are
    ``indices[indptr[i]:indptr[i+1]]`` (ascending) and its weights the same slice of
    ``values`` (float32). What crosses from the device to the host: never a dense row."""

    indptr: np.ndarray  # int64, n_rows + 1
    indices: np.ndarray  # int32
    values: np.ndarray  # float32

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row_of_entries(self) -> np.ndarray:
        """The row index of every stored entry."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.counts())

    @classmethod
    def empty(cls, n_rows: int = 0) -> CsrRows:
        return cls(np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))

    @classmethod
    def from_dense(cls, dense: np.ndarray) -> CsrRows:
        """CSR of a dense (n, vocab) matrix's non-zero entries (vectorised)."""
        dense = np.asarray(dense)
        rows, cols = np.nonzero(dense)
        indptr = np.zeros(dense.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
        return cls(indptr, cols.astype(np.int32), dense[rows, cols].astype(np.float32, copy=False))

    @classmethod
    def from_counts(cls, counts: np.ndarray, indices: np.ndarray, values: np.ndarray) -> CsrRows:
        indptr = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, np.asarray(indices, dtype=np.int32),
                   np.asarray(values, dtype=np.float32))

    @classmethod
    def concat(cls, parts: Sequence[CsrRows]) -> CsrRows:
        if not parts:
            return cls.empty()
        counts = np.concatenate([p.counts() for p in parts])
        return cls.from_counts(counts, np.concatenate([p.indices for p in parts]),
                               np.concatenate([p.values for p in parts]))

    def take_rows(self, rows: np.ndarray) -> CsrRows:
        """The rows `rows` (in that order), vectorised."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.counts()[rows]
        starts = self.indptr[:-1][rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        gather = np.repeat(starts - indptr[:-1], counts) + np.arange(indptr[-1], dtype=np.int64)
        return CsrRows(indptr, self.indices[gather], self.values[gather])

    def select(self, keep: np.ndarray) -> CsrRows:
        """Only the entries where `keep` (a bool per entry) holds."""
        if keep.all():
            return self
        counts = np.bincount(self.row_of_entries()[keep], minlength=self.n_rows)
        return CsrRows.from_counts(counts, self.indices[keep], self.values[keep])

    def validated(self, vocabulary: Vocabulary, ids: Sequence[str] | None = None) -> CsrRows:
        """These rows as `TermMap.from_scores` would accept them: raise for non-finite weights
        and invalid tokens (naming the record and token), drop weights < Float.MIN_NORMAL."""

        values = self.values
        finite = np.isfinite(values)
        if not finite.all():
            pos = int(np.flatnonzero(~finite)[0])
            raise InvalidTermMapError(
                f"encoder produced {float(values[pos])} (broken model or input)",
                record_id=_record_of(self, pos, ids),
                token=vocabulary.tokens[int(self.indices[pos])],
            )
        rows = self.select(values >= FLOAT_MIN_NORMAL)
        if len(rows.indices) and (rows.indices.min() < 0 or rows.indices.max() >= len(vocabulary)):
            raise ValueError("CSR token ids fall outside the vocabulary")
        ok = vocabulary.valid[rows.indices]
        if not ok.all():
            pos = int(np.flatnonzero(~ok)[0])
            tid = int(rows.indices[pos])
            raise InvalidTermMapError(vocabulary.invalid_reason[tid],
                                      record_id=_record_of(rows, pos, ids),
                                      token=vocabulary.tokens[tid])
        return rows


def _record_of(rows: CsrRows, pos: int, ids: Sequence[str] | None) -> str | None:
    """The record id of the row holding entry `pos`."""
    row = int(np.searchsorted(rows.indptr, pos, side="right") - 1)
    return ids[row] if ids is not None else None


class _CsrLists:
    """What a batch's term maps share: the batch's escaped feature names and weights as two
    Python lists, built on first use (one `tolist` per batch instead of a numpy gather and two
    `tolist` calls per document, which cost more than the document's own dict), and the forms
    a backend derives from blocks of the batch's rows (`derived`)."""

    __slots__ = ("_rows", "_vocab", "_lists", "_blocks", "_derived")

    #: Rows per block of `derived`: enough that the per-block numpy calls are amortised, few
    #: enough that a block's pieces stay in cache (a bulk body's `bytes.join` over 1,024 rows
    #: was 2.3x slower a term than over 64: `benchmarks/results/encode_throughput.md`).
    ROWS_PER_BLOCK = 64

    def __init__(self, rows: CsrRows, vocabulary: Vocabulary):
        self._rows, self._vocab = rows, vocabulary
        self._lists: tuple[list[str], list[float]] | None = None
        self._blocks: list[int] | None = None
        self._derived: dict[str, tuple[int, object]] = {}

    def escaped_and_weights(self) -> tuple[list[str], list[float]]:
        if self._lists is None:
            self._lists = (self._vocab.escaped[self._rows.indices].tolist(),
                           self._rows.values.tolist())
        return self._lists

    def derived(self, key: str, entry: int, build: Callable[[CsrRows, Vocabulary], T]) -> tuple[T, int]:
        """`build(rows, vocabulary)` over the block of rows that holds the non-empty row
        starting at CSR entry `entry`, with the block's first entry (subtract it from entry
        positions). Built once per block and shared by its term maps; only the latest block of
        each `key` is kept, so memory stays bounded whatever the batch's size, and reading a
        batch in order builds each block once."""
        if self._blocks is None:
            self._blocks = self._rows.indptr[::self.ROWS_PER_BLOCK].tolist()
        # the last block starting at or before `entry`: a non-empty row's own block, even where
        # blocks of empty rows start at the same entry
        block = bisect_right(self._blocks, entry) - 1
        kept = self._derived.get(key)
        if kept is None or kept[0] != block:
            lo = block * self.ROWS_PER_BLOCK
            hi = min(lo + self.ROWS_PER_BLOCK, self._rows.n_rows)
            bounds = self._rows.indptr[lo:hi + 1]
            e0, e1 = int(bounds[0]), int(bounds[-1])
            part = CsrRows(bounds - e0, self._rows.indices[e0:e1], self._rows.values[e0:e1])
            kept = self._derived[key] = (block, build(part, self._vocab))
        return kept[1], self._blocks[block]  # type: ignore[return-value]


class CsrTermMap(TermMap):
    """A `TermMap` that is a view of one CSR row: already validated (by
    `TermMapBatch.from_csr`), and its dict is only built when something reads it. The forms a
    backend needs (`to_rank_features`, `tokens_and_weights`) come straight from the arrays
    (`rank_features` from lists its batch builds once, when it has them)."""

    __slots__ = ("_vocab", "_idx", "_val", "_lists", "_start")

    def __init__(self, vocabulary: Vocabulary, indices: np.ndarray, values: np.ndarray,
                 lists: _CsrLists | None = None, start: int = 0):
        self._vocab, self._idx, self._val = vocabulary, indices, values
        self._lists, self._start = lists, start

    def __getattr__(self, name: str) -> dict[str, float]:
        if name == "_weights":  # first read: materialise the dict into the inherited slot
            weights = dict(zip(self._vocab.array[self._idx].tolist(), self._val.tolist()))
            self._weights = weights
            return weights
        raise AttributeError(name)

    def __len__(self) -> int:
        return len(self._idx)

    def __reduce__(self) -> tuple[type[TermMap], tuple[dict[str, float]]]:  # pickles (and copies) as a plain TermMap
        return (TermMap, (self.to_dict(),))

    def tokens_and_weights(self) -> tuple[list[str], list[float]]:
        return self._vocab.array[self._idx].tolist(), self._val.tolist()

    def csr_row(self) -> tuple[Vocabulary, np.ndarray, np.ndarray]:
        """This row as its batch holds it: the vocabulary, the token ids and the weights (views
        of the batch's arrays, not copies), for a backend that translates a whole batch at once."""
        return self._vocab, self._idx, self._val

    def to_rank_features(self) -> dict[str, float]:
        if self._lists is None:
            return dict(zip(self._vocab.escaped[self._idx].tolist(), self._val.tolist()))
        names, weights = self._lists.escaped_and_weights()
        a, b = self._start, self._start + len(self._idx)
        return dict(zip(names[a:b], weights[a:b]))

    def total(self) -> float:
        return float(sum(self._val.tolist()))

    def batch_derived(
        self, key: str, build: Callable[[CsrRows, Vocabulary], T]
    ) -> tuple[T, int, int] | None:
        """A form `build(rows, vocabulary)` makes for a block of this view's batch at once
        (see `_CsrLists.derived`), with this row's entries [start, stop) in it; None for an
        empty row or a view outside a batch."""
        if self._lists is None or not len(self._idx):
            return None
        form, first = self._lists.derived(key, self._start, build)
        return form, self._start - first, self._start - first + len(self._idx)
