"""The `_bulk` request body as NDJSON bytes, each document serialised once, with orjson.

Why bytes built here and not action dicts handed to the clients' `helpers.streaming_bulk`: the
helper serialises every action with the client's `json.dumps` serializer, and the writer had
to serialise each source once more to know its size; for term maps of a few hundred weights
that was most of the host's time per document (`benchmarks/results/encode_throughput.md`, host
stage). Here each document's lines are serialised once, their length is the chunk size, and a
chunk goes out as one pre-serialised body, which opensearch-py (`bulk(body=bytes)`) and
elasticsearch-py (`bulk(operations=bytes)`) send as it is.

The JSON is the same as the standard library's (same keys in the same order, the same string
values, every weight the same float64 value: orjson writes a shortest round-trip form, as
`float.__repr__` does, though not always spelt alike: `1e-5` or `0.00001` for `1e-05`); anything
orjson refuses (non-string keys in stored fields, integers beyond 64 bits) falls back to
`json.dumps`.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["delete_line", "dumps", "index_lines", "items_outcome"]


def dumps(obj: Any) -> bytes:
    """`obj` as compact UTF-8 JSON (what `json.dumps(obj, ensure_ascii=False)` means)."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:  # e.g. {1: "x"}, 2**70: json writes those as before
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def index_lines(index: str, doc_id: str, source: dict[str, Any]) -> bytes:
    """The action and source lines of one `index` operation, newline-terminated."""
    return b'{"index":{"_index":%b,"_id":%b}}\n%b\n' % (dumps(index), dumps(doc_id), dumps(source))


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
