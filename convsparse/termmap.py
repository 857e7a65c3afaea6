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

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from convsparse.errors import InvalidTermMapError

#: Java's Float.MIN_NORMAL: the smallest value FeatureField accepts.
FLOAT_MIN_NORMAL = 1.1754943508222875e-38
#: Lucene's maximum term length in UTF-8 bytes.
MAX_TOKEN_BYTES = 32766


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

    def __post_init__(self) -> None:
        if self.ids is not None and len(self.ids) != len(self.term_maps):
            raise ValueError("ids and term_maps differ in length")

    def __len__(self) -> int:
        return len(self.term_maps)

    def __iter__(self) -> Iterator[TermMap]:
        return iter(self.term_maps)

    def __getitem__(self, i: int) -> TermMap:
        return self.term_maps[i]


def term_map_from_vector(
    vector: np.ndarray, vocabulary: list[str], *, record_id: str | None = None
) -> TermMap:
    """Vocabulary-sized activation vector -> TermMap of its non-zero entries."""
    nz = np.flatnonzero(vector)
    return TermMap.from_scores((vocabulary[i] for i in nz), vector[nz].tolist(), record_id=record_id)
