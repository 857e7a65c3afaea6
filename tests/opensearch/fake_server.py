"""A tiny scripted OpenSearch stand-in on 127.0.0.1 for failure-injection tests.

It speaks just enough of the REST API for `OpenSearchBackend` (create/get-mapping/delete index,
`_bulk`, `_refresh`, `_count`, `_search`, `_cluster/settings`) through a real opensearch-py client,
and answers with the documented response shapes (`BulkResponse`/`ResponseItem` of
spec/schemas/_core.bulk.yaml; bulk answers HTTP 200 with `errors: true` and per-item errors).

Failure injection:
- `item_rules[source_id]`: a list of statuses the item gets on successive attempts (e.g.
  `[429, 429]` = rejected twice, then stored; `[400]` = mapper_parsing_exception, ...);
- `request_script`: what the next `_bulk` requests get: `None` (normal), an int status for the
  whole request (e.g. 429), or "drop" (the connection is closed without an answer);
- `max_content_length`: bulk bodies above it get a whole-request 413.
Search scores follow Lucene's FeatureField linear function: boost x value truncated to 9
significant bits, so tests can check score parity.

OpenSearch 3.3's `sparse_vector` field (neural sparse ANN): creating one needs `version` >= 3.3
(older answers 400 "No handler for type [sparse_vector]") and `index.sparse: true`; its document
keys must be integer token ids (item 400 otherwise); a `neural_sparse` query with
`method_parameters` keeps its `top_n` heaviest tokens and returns at most `k` documents, and as
a rescore query it scores only the documents in its own top `k` (others get 0); without
`method_parameters` it is the exact FeatureField query, as the plugin builds it. Scores are the
FeatureField ones: the server's documented behaviour below `approximate_threshold` documents per
segment, which every test index is.

`FakeOpenSearch(engine="elasticsearch")` (or `FakeElasticsearch(...)`) answers as Elasticsearch
does where it differs, for the official elasticsearch-py client:
- every response carries `X-Elastic-Product: Elasticsearch` (the client refuses a 2xx without
  it; `product_header=False` leaves it out), and `GET /` answers the server `version`;
- an `Accept`/`Content-Type` with `compatible-with=N` outside [major - 1, major] of `version` is a
  400 `media_type_header_exception` (a 9.x client against an 8.x server);
- the `sparse_vector` query (`query_vector`, linear FeatureField scores as `rank_feature`) and its
  token pruning: with `prune: true`, a token is dropped when its document frequency is above
  `tokens_freq_ratio_threshold` x the field's average and its weight below
  `tokens_weight_threshold` x the query's largest weight (the documented rule; defaults 5 and
  0.4); `only_score_pruned_tokens` keeps the dropped ones instead;
- a `sparse_vector` document with a dot in a feature name is an item 400, as on the server.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import socket
import struct
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ITEM_ERRORS = {
    400: {"type": "mapper_parsing_exception", "reason": "failed to parse field [terms] of type [rank_features]",
          "caused_by": {"type": "illegal_argument_exception",
                        "reason": "[rank_features] fields do not support indexing multiple values "
                                  "for the same rank feature [terms.x] in the same document"}},
    409: {"type": "version_conflict_engine_exception",
          "reason": "[doc]: version conflict, current version [2] is higher or equal to the one provided [1]"},
    429: {"type": "es_rejected_execution_exception",
          "reason": "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
                    "replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1, "
                    "max_coordinating_and_primary_bytes=1]"},
}


def quantize(value: float) -> float:
    """Lucene FeatureField storage: keep the top 9 significant bits of the float (bits >>> 15)."""
    bits = struct.unpack(">i", struct.pack(">f", value))[0]
    return struct.unpack(">f", struct.pack(">i", (bits >> 15) << 15))[0]


def _error(status: int, kind: str, reason: str) -> tuple[int, dict[str, Any]]:
    cause = {"type": kind, "reason": reason}
    return status, {"error": {"root_cause": [cause], **cause}, "status": status}


class FakeOpenSearch:
    quantize = staticmethod(quantize)

    def __init__(self, validator: Any = None, ssl_context: Any = None, *, engine: str = "opensearch",
                 version: str | None = None, product_header: bool = True):
        if engine not in ("opensearch", "elasticsearch"):
            raise ValueError(f"unknown engine {engine!r}")
        self.engine = engine
        self.version = version or ("2.19.1" if engine == "opensearch" else "9.1.0")
        self.product_header = product_header
        self.validator = validator
        self.indices: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.bulk_sizes: list[int] = []  # byte size of each _bulk body received
        self.headers: list[dict[str, str]] = []
        self.validation_errors: list[str] = []
        self.item_rules: dict[str, list[int]] = {}
        self.request_script: list[Any] = []
        self.max_content_length: int | None = None
        self.max_clause_count: int | str = 1024
        self.cluster_settings_status = 200
        self.attempts: dict[str, int] = defaultdict(int)  # bulk item attempts per source id
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        scheme = "http"
        if ssl_context is not None:  # TLS: the handshake happens in accept()
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeOpenSearch:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ helpers for tests
    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p, _ in self.requests if method is None or m == method]

    def bulk_requests(self) -> list[list[dict[str, Any]]]:
        return [b for m, p, b in self.requests if p.endswith("/_bulk")]

    def docs(self, index: str) -> dict[str, dict[str, Any]]:
        return self.indices[index]["docs"]

    def _check(self, kind: str, body: Any, mapping: Any = None) -> None:
        if self.validator is None:
            return
        try:
            if kind == "index":
                self.validator.validate_index_body(body)
            elif kind == "search":
                self.validator.validate_search_body(body)
            elif kind == "bulk":
                self.validator.validate_bulk_lines(body, mapping)
            elif kind == "bulk_response":
                self.validator.validate_bulk_response(body)
            elif kind == "put_mapping":
                self.validator.validate_put_mapping(body)
        except Exception as exc:  # noqa: BLE001  (recorded, asserted empty by the tests)
            self.validation_errors.append(f"{kind}: {exc}")

    # ------------------------------------------------------------------ request handling
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per request

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                    raw = gzip.decompress(raw)
                return raw

            def _handle(self, method: str) -> None:
                raw = self._body()
                url = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.headers.append(headers)
                answer = fake.compatibility(headers) or fake.route(method, url.path, parse_qs(url.query), raw)
                if answer == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, payload = answer
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if fake.engine == "elasticsearch" and fake.product_header:
                    self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

            def do_HEAD(self) -> None:
                self._handle("HEAD")

        return Handler

    def compatibility(self, headers: dict[str, str]) -> Any:
        """Elasticsearch's REST API compatibility check (None: the request may proceed)."""
        if self.engine != "elasticsearch":
            return None
        major = int(self.version.split(".")[0])
        for name in ("accept", "content-type"):
            found = re.search(r"compatible-with=(\d+)", headers.get(name, ""))
            if found and not major - 1 <= int(found.group(1)) <= major:
                return _error(400, "media_type_header_exception",
                              f"Invalid media-type value on headers [Accept, Content-Type]: "
                              f"compatible-with={found.group(1)} is not supported by {self.version}")
        return None

    def route(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> Any:
        parts = [p for p in path.split("/") if p]
        with self.lock:
            if not parts and method in ("GET", "HEAD"):
                self.requests.append((method, path, None))
                distribution = {} if self.engine == "elasticsearch" else {"distribution": "opensearch"}
                return 200, {"name": "fake", "cluster_name": "fake", "cluster_uuid": "x",
                             "version": {"number": self.version, **distribution},
                             "tagline": "You Know, for Search"}
            if parts and parts[-1] == "_bulk":
                lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
                self.requests.append((method, path, lines))
                self.bulk_sizes.append(len(raw))  # the body as sent (gunzipped)
                return self._bulk(lines, len(raw))
            body = json.loads(raw) if raw else None
            self.requests.append((method, path, body))
            if parts == ["_cluster", "settings"]:
                if self.cluster_settings_status != 200:
                    return _error(self.cluster_settings_status, "security_exception", "no permissions")
                return 200, {"persistent": {}, "transient": {},
                             "defaults": {"indices.query.bool.max_clause_count": str(self.max_clause_count)}}
            if len(parts) == 1 and method == "PUT":
                return self._create(parts[0], body)
            if parts == ["*", "_mapping"] and method == "GET":
                return 200, {name: {"mappings": ix["mappings"]} for name, ix in self.indices.items()}
            if not parts or parts[0] not in self.indices:
                name = parts[0] if parts else ""
                return _error(404, "index_not_found_exception", f"no such index [{name}]")
            index = self.indices[parts[0]]
            rest = parts[1:]
            if not rest and method == "DELETE":
                del self.indices[parts[0]]
                return 200, {"acknowledged": True}
            if rest == ["_mapping"] and method in ("PUT", "POST"):
                self._check("put_mapping", body)
                mappings = index["mappings"]
                for key, prop in body.get("properties", {}).items():
                    if key in mappings["properties"] and mappings["properties"][key] != prop:
                        return _error(400, "illegal_argument_exception",
                                      f"mapper [{key}] cannot be changed")
                    mappings["properties"][key] = prop
                if "_meta" in body:
                    mappings["_meta"] = body["_meta"]  # a put replaces the whole _meta
                return 200, {"acknowledged": True}
            if rest == ["_mapping"]:
                return 200, {parts[0]: {"mappings": index["mappings"]}}
            if rest == ["_refresh"]:
                return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
            if rest == ["_settings"]:
                index["settings"].update(body["index"])
                return 200, {"acknowledged": True}
            if rest == ["_count"]:
                return 200, {"count": len(index["docs"])}
            if rest == ["_search"]:
                self._check("search", body)
                return self._search(index, body)
            return _error(400, "illegal_argument_exception", f"unsupported {method} {path}")

    def _version(self) -> tuple[int, ...]:
        return tuple(int(p) if p.isdigit() else 0 for p in self.version.split("-")[0].split("."))

    def _create(self, name: str, body: dict[str, Any]) -> Any:
        self._check("index", body)
        if name in self.indices:
            return _error(400, "resource_already_exists_exception", f"index [{name}] already exists")
        sparse = [key for key, prop in body["mappings"]["properties"].items()
                  if prop.get("type") == "sparse_vector" and "method" in prop]
        if sparse and self.engine == "opensearch":
            if self._version() < (3, 3):
                return _error(400, "mapper_parsing_exception",
                              f"No handler for type [sparse_vector] declared on field [{sparse[0]}]")
            if body["settings"]["index"].get("sparse") is not True:
                return _error(400, "illegal_argument_exception",
                              f"field [{sparse[0]}] of type [sparse_vector] needs index.sparse: true")
        self.indices[name] = {"mappings": body["mappings"], "settings": dict(body["settings"]["index"]),
                              "docs": {}}
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def _bulk(self, lines: list[dict[str, Any]], size: int) -> Any:
        if self.request_script:
            step = self.request_script.pop(0)
            if step == "drop":
                return "drop"
            if step == "drop_after":  # stored, but the answer is lost: the client must replay
                self._bulk(lines, size)
                return "drop"
            if isinstance(step, int):
                if step == 429:
                    return _error(429, "es_rejected_execution_exception", "rejected execution of bulk request")
                return _error(step, "status_exception", f"scripted status {step}")
        if self.max_content_length is not None and size > self.max_content_length:
            return 413, None
        items = []
        i = 0
        while i < len(lines):
            action = lines[i]
            op, meta = next(iter(action.items()))
            index_name = meta["_index"]
            source = lines[i + 1] if op in ("index", "create", "update") else None
            i += 2 if source is not None else 1
            index = self.indices.get(index_name)
            if index is not None:
                self._check("bulk", [action] + ([source] if source is not None else []), index["mappings"])
            source_id = source["id"] if source and op != "update" else meta["_id"]
            self.attempts[source_id] += 1
            rule = self.item_rules.get(source_id)
            status = rule.pop(0) if rule else None
            item: dict[str, Any] = {"_index": index_name, "_id": meta["_id"]}
            if status is None and op == "update" and index is not None:
                doc = index["docs"].get(meta["_id"])
                if doc is None:
                    status = 404
                    item["error"] = {"type": "document_missing_exception",
                                     "reason": f"[{meta['_id']}]: document missing"}
                else:
                    merged = {**doc, **source["doc"]}
                    self._check("bulk", [{"index": meta}, merged], index["mappings"])
                    source = merged
            if status is None and index is not None and source is not None and op != "update":
                for key, prop in index["mappings"]["properties"].items():
                    if prop.get("type") == "sparse_vector" and "method" in prop:  # OpenSearch's
                        bad = [n for n in (source.get(key) or {}) if not n.isdecimal()]
                        if bad:
                            status = 400
                            item["error"] = {"type": "mapper_parsing_exception",
                                             "reason": f"failed to parse field [{key}] of type [sparse_vector]",
                                             "caused_by": {"type": "number_format_exception",
                                                           "reason": f"For input string: \"{bad[0]}\""}}
                            break
                        continue
                    dotted = [n for n in (source.get(key) or {}) if "." in n] \
                        if prop.get("type") == "sparse_vector" else []
                    if dotted:
                        status = 400
                        item["error"] = {"type": "document_parsing_exception",
                                         "reason": f"[1:2] failed to parse field [{key}] of type [sparse_vector]",
                                         "caused_by": {"type": "illegal_argument_exception",
                                                       "reason": "[sparse_vector] fields do not support dots in "
                                                                 f"feature names but found [{dotted[0]}]"}}
                        break
            if status is None and index is None:
                status = 404
                item["error"] = {"type": "index_not_found_exception", "reason": f"no such index [{index_name}]"}
            if status is not None:
                item["status"] = status
                item.setdefault("error", ITEM_ERRORS.get(status, {"type": "exception", "reason": "scripted"}))
            elif op == "delete":
                existed = index["docs"].pop(meta["_id"], None) is not None
                item.update(status=200 if existed else 404, result="deleted" if existed else "not_found",
                            _version=1, _seq_no=0, _primary_term=1,
                            _shards={"total": 1, "successful": 1, "failed": 0})
            else:
                existed = meta["_id"] in index["docs"]
                index["docs"][meta["_id"]] = source
                item.update(status=200 if existed else 201, result="updated" if existed else "created",
                            _version=1, _seq_no=0, _primary_term=1,
                            _shards={"total": 1, "successful": 1, "failed": 0})
            items.append({op: item})
        response = {"took": 3, "errors": any(next(iter(it.values()))["status"] >= 300 for it in items),
                    "items": items}
        self._check("bulk_response", response)
        return 200, response

    # ------------------------------------------------------------------ search emulation
    @staticmethod
    def _query_terms(query: dict[str, Any]) -> tuple[str, dict[str, float]]:
        if "bool" in query:
            terms: dict[str, float] = {}
            field = ""
            for clause in query["bool"]["should"]:
                rf = clause["rank_feature"]
                assert "linear" in rf, "rank_feature without linear defaults to saturation"
                field, name = rf["field"].rsplit(".", 1)
                terms[name] = rf.get("boost", 1.0)
            return field, terms
        if "sparse_vector" in query:
            spec = query["sparse_vector"]
            return spec["field"], dict(spec["query_vector"])
        (field, spec), = query["neural_sparse"].items()
        tokens = dict(spec["query_tokens"])
        top_n = (spec.get("method_parameters") or {}).get("top_n")
        if top_n is not None:  # SEISMIC keeps the top_n heaviest query tokens
            tokens = dict(sorted(tokens.items(), key=lambda kv: -kv[1])[:top_n])
        return field, tokens

    @staticmethod
    def _ann_k(query: dict[str, Any]) -> int | None:
        """`method_parameters.k` of a neural sparse ANN query (None for any other query)."""
        spec = next(iter(query.get("neural_sparse", {}).values()), None)
        return ((spec or {}).get("method_parameters") or {}).get("k")

    @staticmethod
    def _pruned(query: dict[str, Any], index: dict[str, Any]) -> dict[str, Any]:
        """A `sparse_vector` query with `prune: true`, reduced to the tokens the server keeps."""
        spec = query.get("sparse_vector")
        if not spec or not spec.get("prune"):
            return query
        config = spec.get("pruning_config") or {}
        ratio = config.get("tokens_freq_ratio_threshold", 5)
        weight_threshold = config.get("tokens_weight_threshold", 0.4)
        only_pruned = config.get("only_score_pruned_tokens", False)
        field, vector = spec["field"], spec["query_vector"]
        docs = list(index["docs"].values())
        freq: dict[str, int] = defaultdict(int)
        for doc in docs:
            for name in doc.get(field, {}):
                freq[name] += 1
        average = sum(freq.values()) / len(freq) if freq else 0.0
        best = max(vector.values())
        dropped = {t for t, w in vector.items()
                   if average and freq.get(t, 0) > ratio * average and w < weight_threshold * best}
        keep = {t: w for t, w in vector.items() if (t in dropped) == only_pruned}
        return {"sparse_vector": {**spec, "query_vector": keep}}

    def _score(self, doc: dict[str, Any], query: dict[str, Any]) -> float:
        field, terms = self._query_terms(query)
        features = doc.get(field, {})
        return sum(w * quantize(features[t]) for t, w in terms.items() if t in features)

    @staticmethod
    def _source(doc: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        includes, excludes = spec.get("includes"), set(spec.get("excludes", []))
        return {k: v for k, v in doc.items()
                if k not in excludes and (includes is None or k in includes)}

    def _listing(self, index: dict[str, Any], body: dict[str, Any]) -> Any:
        """`ids` and `match_all` queries (score 1), sorted by `sort` with `search_after`; a
        `function_score` with `random_score` over `match_all`, in a seeded shuffled order."""
        query = body["query"]
        docs = sorted(index["docs"].items())
        if "function_score" in query:
            seed = query["function_score"]["random_score"].get("seed", 0)
            docs.sort(key=lambda item: hashlib.sha256(f"{seed}:{item[0]}".encode()).digest())
        if "ids" in query:
            wanted = set(query["ids"]["values"])
            docs = [(i, d) for i, d in docs if i in wanted]
        hits = [{"_index": "x", "_id": i, "_score": 1.0,
                 "_source": self._source(d, body.get("_source", {}))} for i, d in docs]
        for field in body.get("sort", []):  # field names, ascending
            hits = [{**h, "sort": [index["docs"][h["_id"]][field]]} for h in hits]
            hits.sort(key=lambda h: h["sort"])
            if "search_after" in body:
                hits = [h for h in hits if h["sort"] > body["search_after"]]
        hits = hits[:body.get("size", 10)]
        return 200, {"took": 1, "timed_out": False,
                     "_shards": {"total": 1, "successful": 1, "failed": 0},
                     "hits": {"max_score": 1.0, "hits": hits}}

    def _search(self, index: dict[str, Any], body: dict[str, Any]) -> Any:
        if {"ids", "match_all", "function_score"} & set(body["query"]):
            return self._listing(index, body)
        query = self._pruned(body["query"], index)
        scored = [(self._score(doc, query), doc_id, doc) for doc_id, doc in index["docs"].items()]
        scored = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))
        if self._ann_k(query) is not None:  # the ANN query returns its top k, no more
            scored = scored[: self._ann_k(query)]
        if "rescore" in body:
            window = body["rescore"]["window_size"]
            rq = dict(body["rescore"]["query"])
            rq["rescore_query"] = self._pruned(rq["rescore_query"], index)
            reach = None  # the documents an approximate rescore query reaches: its own top k
            if self._ann_k(rq["rescore_query"]) is not None:
                ranked = sorted(((self._score(d, rq["rescore_query"]), i) for i, d in index["docs"].items()),
                                key=lambda s: (-s[0], s[1]))
                reach = {i for sc, i in ranked[: self._ann_k(rq["rescore_query"])] if sc > 0}

            def rescored(doc_id: str, doc: dict[str, Any]) -> float:
                if reach is not None and doc_id not in reach:
                    return 0.0
                return self._score(doc, rq["rescore_query"])

            head = [(rq["query_weight"] * s + rq["rescore_query_weight"] * rescored(doc_id, doc),
                     doc_id, doc) for s, doc_id, doc in scored[:window]]
            scored = sorted(head, key=lambda s: (-s[0], s[1])) + scored[window:]
        hits = [{"_index": "x", "_id": doc_id, "_score": score,
                 "_source": self._source(doc, body.get("_source", {}))}
                for score, doc_id, doc in scored[: body["size"]]]
        return 200, {"took": 1, "timed_out": False, "_shards": {"total": 1, "successful": 1, "failed": 0},
                     "hits": {"total": {"value": len(scored), "relation": "eq"},
                              "max_score": hits[0]["_score"] if hits else None, "hits": hits}}


def FakeElasticsearch(validator: Any = None, ssl_context: Any = None, **options: Any) -> FakeOpenSearch:  # noqa: N802
    """The scripted server answering as Elasticsearch (see the module docstring)."""
    return FakeOpenSearch(validator, ssl_context, engine="elasticsearch", **options)
