"""The `_bulk` request body as NDJSON bytes, each document serialised once, with orjson.

Why bytes built here and not action dicts handed to the clients' `helpers.streaming_bulk`: the
helper serialises every action with the client's `json.dumps` serializer, and the writer had
to serialise each source once more to know its size; for term maps of a few hundred weights
that was most of the host's time per document (`benchmarks/results/encode_throughput.md`, host
stage). Here each document's lines are serialised once, their length is the chunk size, and a
chunk goes out as one pre-serialised body, which opensearch-py (`bulk(body=bytes)`) and
elasticsearch-py (`bulk(operations=bytes)`) send as it is.

The stored fields are the JSON of the standard library (same keys in the same order, the same
string values; numbers spelt as orjson spells them, in a shortest round-trip form, `1e-5` or
`0.00001` for `1e-05`); anything orjson refuses (non-string keys in stored fields, integers beyond
64 bits) falls back to `json.dumps`.

The term field (`rank_features_json`) is sent at the precision the engine keeps: Lucene's
FeatureField, under both engines' `rank_features` (and Elasticsearch's `sparse_vector`), indexes
only a weight's top 9 significant bits (`termmap.feature_value_codes`: the float32's bits
>>> 15, truncated). Each weight is written as the shortest decimal that the engine stores as the
same value (`0.0414` for 0.04138655, which is stored as 0.0413818359375), so what is indexed and
every score are unchanged (the tests parse every spelling back the way the engine does, and the
parity tests score against real Lucene), while the JSON is about half as long. The few thousand
distinct stored values a corpus has are spelt once each, from a table, and the names once per
vocabulary, so a block of documents' term objects is one `bytes.join`: that keeps this host
stage above issue 15's documents/s goal on one core, where formatting exact weights term by
term in CPython costs several times as much (`benchmarks/results/encode_throughput.md`).
`_source` therefore shows the weights at stored
precision, which is also what a search scores with.
"""

from __future__ import annotations

import json
import threading
import weakref
from decimal import ROUND_CEILING, Context, Decimal
from typing import Any

import numpy as np
import orjson

from convsparse.termmap import CsrRows, CsrTermMap, TermMap, Vocabulary, feature_value_codes

__all__ = ["delete_line", "dumps", "index_lines", "items_outcome", "rank_features_json",
           "stored_value_text"]


def dumps(obj: Any) -> bytes:
    """`obj` as compact UTF-8 JSON (what `json.dumps(obj, ensure_ascii=False)` means)."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:  # e.g. {1: "x"}, 2**70: json writes those as before
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def index_lines(
    index: str, doc_id: str, source: dict[str, Any], raw: tuple[str, bytes] | None = None
) -> bytes:
    """The action and source lines of one `index` operation, newline-terminated. `raw`, a
    field name and its value as JSON bytes already (a term map's `rank_features_json`), is
    appended to `source` as it is."""
    body = dumps(source)
    if raw is not None:
        body = b"%b%b%b:%b}" % (body[:-1], b"," if len(body) > 2 else b"", dumps(raw[0]), raw[1])
    return b'{"index":{"_index":%b,"_id":%b}}\n%b\n' % (dumps(index), dumps(doc_id), body)


# ------------------------------------------------------------------ the term field, as JSON
def stored_value_text(code: int) -> bytes:
    """The shortest JSON number that FeatureField stores as code `code` (a float32's
    `bits >>> 15`): the shortest decimal in [lowest, highest] float32 of the code, which parses
    (to float32 directly, or by way of a double) to a float32 of the same code."""
    lowest = np.array([code << 15], dtype=np.uint32).view(np.float32)[0]
    highest = np.array([(code << 15) | 0x7FFF], dtype=np.uint32).view(np.float32)[0]
    low, high = Decimal(float(lowest)), Decimal(float(highest))
    for digits in range(1, 10):  # 9 significant digits spell any float32 exactly
        d = Context(prec=digits, rounding=ROUND_CEILING).plus(low)
        if d <= high:
            return orjson.dumps(float(d))
    return orjson.dumps(float(lowest))  # not reached


class _ValueText:
    """The JSON text for each stored FeatureField value (and the same closing an object, with
    "}"), indexed by the value's `bits >>> 15` (65,536 codes for a non-negative float32),
    filled on first use."""

    def __init__(self) -> None:
        self.text = np.empty(1 << 16, dtype=object)
        self.closing = np.empty(1 << 16, dtype=object)
        self.length = np.zeros(1 << 16, dtype=np.int64)
        self._lock = threading.Lock()

    def codes(self, values: np.ndarray) -> np.ndarray:
        codes = feature_value_codes(values).astype(np.intp)
        unseen = np.unique(codes[self.length[codes] == 0])
        if len(unseen):
            with self._lock:  # length last: a reader that sees it sees the texts too
                texts = [stored_value_text(c) for c in unseen.tolist()]
                self.text[unseen] = texts
                self.closing[unseen] = [t + b"}" for t in texts]
                self.length[unseen] = [len(t) for t in texts]
        return codes


_VALUES = _ValueText()
#: Per vocabulary: each token's `"name":` (escaped feature name as a JSON string) opening an
#: object (`{` before it) or following a pair (`,` before it), and that piece's length.
_KEYS: weakref.WeakKeyDictionary[Vocabulary, tuple[np.ndarray, np.ndarray, np.ndarray]] = (
    weakref.WeakKeyDictionary())


def _key_pieces(vocabulary: Vocabulary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pieces = _KEYS.get(vocabulary)
    if pieces is None:
        names = [orjson.dumps(n) + b":" if isinstance(n, str) else b"" for n in vocabulary.escaped]
        opening, following = np.empty(len(names), object), np.empty(len(names), object)
        opening[:] = [b"{" + n for n in names]
        following[:] = [b"," + n for n in names]
        length = np.fromiter(map(len, opening), dtype=np.int64, count=len(names))
        pieces = _KEYS[vocabulary] = (opening, following, length)
    return pieces


def _block_json(rows: CsrRows, vocabulary: Vocabulary) -> tuple[bytes, dict[int, int]]:
    """The term objects of a block of rows, concatenated, and the byte offset of each row's
    first entry (the row from entry `a` to entry `b` is `buf[at[a]:at[b]]`, braces included;
    an empty row is not in `buf`)."""
    opening, following, key_length = _key_pieces(vocabulary)
    idx = rows.indices
    codes = _VALUES.codes(rows.values)
    counts = rows.counts()
    firsts = rows.indptr[:-1][counts > 0]
    lasts = rows.indptr[1:][counts > 0] - 1
    # two pieces a pair, `"name":` and the value, "{" opening a row's first, "}" closing its last
    pieces = np.empty(2 * len(idx), dtype=object)
    pieces[0::2] = following[idx]
    pieces[2 * firsts] = opening[idx[firsts]]
    pieces[1::2] = _VALUES.text[codes]
    pieces[2 * lasts + 1] = _VALUES.closing[codes[lasts]]
    lengths = key_length[idx] + _VALUES.length[codes]
    lengths[lasts] += 1  # the closing braces
    at = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lengths, out=at[1:])
    bounds = rows.indptr
    return b"".join(pieces.tolist()), dict(zip(bounds.tolist(), at[bounds].tolist()))


def rank_features_json(term_map: TermMap) -> bytes:
    """`term_map` as the JSON object of a `rank_features` field: escaped feature names, each
    weight spelt as the shortest number FeatureField stores as the same value (see the module
    docstring). A CSR view builds its block of the batch at once."""
    if isinstance(term_map, CsrTermMap):
        shared = term_map.batch_derived("rank_features_json", _block_json)
        if shared is not None:
            (buf, at), start, stop = shared
            return buf[at[start]:at[stop]]
    names = [orjson.dumps(n) for n in term_map.to_rank_features()]
    if not names:
        return b"{}"
    codes = _VALUES.codes(np.fromiter(term_map.values(), dtype=np.float32, count=len(names)))
    return b"{%b}" % b",".join(b"%b:%b" % pair for pair in zip(names, _VALUES.text[codes].tolist()))


def delete_line(index: str, doc_id: str) -> bytes:
    return b'{"delete":{"_index":%b,"_id":%b}}\n' % (dumps(index), dumps(doc_id))


def items_outcome(body: Any) -> list[tuple[bool, dict[str, Any]]]:
    """What `streaming_bulk(raise_on_error=False)` yields for a parsed bulk response: one
    `(ok, {op_type: item})` per item, in request order, ok for a 2xx item status."""
    out = []
    for item in body.get("items") or ():
        op_type, info = next(iter(item.items()))
        out.append((200 <= info.get("status", 500) < 300, {op_type: info}))
    return out
