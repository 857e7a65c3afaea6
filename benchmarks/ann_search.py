"""Embedded backend: exact vs two-phase vs approximate (SEISMIC) search, one run (issue 18).

    python benchmarks/ann_search.py                  # 100k docs
    python benchmarks/ann_search.py --docs 1000000   # the issue's target size (long build)

The collection and queries are `benchmarks/search_latency.py`'s (Zipfian 30k vocabulary,
~120 terms/doc, log-normal weights; queries of 40 and 250 terms). The index is loaded into an
`EmbeddedBackend`, then `build_ann` (one build thread, timed). Timed, per query length, k=10:

- exact: `search(q)` of this tree, and of ``--before-ref`` (default: main) for the same queries,
  interleaved query by query (who goes first alternates: the second run finds the postings in
  cache), so the change to `search` is measured, not the machine's mood;
- two-phase: `search(pruned, rescore=q, rescore_window=1000)` with ``max_ratio=0.1``, both trees;
- ANN at several (query_cut, heap_factor) settings: `search(q, approximate=AnnQuery(...))`;
- ANN again after 1% more documents were written since the build (searched exactly, merged).

Recall@10 is against the exact top 10 of the full query. Latencies are wall-clock p50/p95 over
the queries after one warm-up; the machine is shared, so compare rows of one run. Results:
benchmarks/results/ann_search[_<docs>].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from git_before import module_at  # noqa: E402
from search_latency import add_collection_arguments, make_collection, make_queries, recall, stats  # noqa: E402

from convsparse.integration.backends.base import IndexedDocument  # noqa: E402
from convsparse.integration.backends.embedded import AnnQuery, EmbeddedBackend  # noqa: E402
from convsparse.pruning import PruningPolicy  # noqa: E402
from convsparse.termmap import TermMap  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SETTINGS = [AnnQuery(5, 0.9), AnnQuery(10, 1.0), AnnQuery(10, 0.9), AnnQuery(20, 0.9), AnnQuery(20, 0.7),
            AnnQuery(40, 0.9)]
TWO_PHASE = PruningPolicy(max_ratio=0.1)


def load_before(ref: str):
    """`EmbeddedBackend` as of git `ref` (its helper modules are this tree's, unchanged by it)."""
    return module_at(ref, "integration/backends/embedded.py", "embedded_before").EmbeddedBackend


def timed(fn, items) -> tuple[np.ndarray, list]:
    fn(items[0])  # warm-up
    lat, out = [], []
    for x in items:
        t = time.perf_counter()
        out.append(fn(x))
        lat.append((time.perf_counter() - t) * 1000)
    return np.asarray(lat), out


def recall10(got: list[list[str]], truth: list[list[str]]) -> float:
    return round(recall(got, truth, 10), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_collection_arguments(ap)
    ap.add_argument("--build-threads", type=int, default=1)
    ap.add_argument("--before-ref", default="main")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(1)
    except ImportError:
        pass

    X = make_collection(args.docs, args.vocab, args.terms, args.seed)
    df = np.bincount(X.indices, minlength=args.vocab)
    terms = [f"t{i}" for i in range(args.vocab)]
    report: dict = {"config": {**vars(args), "terms_per_doc": round(X.nnz / X.shape[0], 1),
                               "cpus": os.cpu_count(), "python": platform.python_version(),
                               "machine": platform.machine()}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="convsparse-ann-") as tmp:
        be = EmbeddedBackend(tmp, durable=False)
        t = time.perf_counter()
        be.load_matrix("bench", [f"d{i}" for i in range(args.docs)], X, terms, fingerprint="synthetic")
        load_s = time.perf_counter() - t
        info = be.build_ann("bench", threads=args.build_threads)
        report["build"] = {"load_s": round(load_s, 2), "ann_build_s": info.build_seconds,
                           "ann_params": info.to_dict()["build"]}
        print("build", report["build"], flush=True)
        before = load_before(args.before_ref)(tmp, durable=False)

        def row(length, method, lat, got, truth, **extra):
            r = {"query_terms": length, "method": method, **extra, **stats(lat),
                 "recall@10": recall10(got, truth)}
            report["rows"].append(r)
            print(r, flush=True)

        ann_last = {}
        for length in args.lengths:
            qs = [TermMap({terms[t]: w for t, w in q.items()})
                  for q in make_queries(args.queries, length, args.vocab, args.seed + length, df)]
            pruned = [TWO_PHASE.apply(q) for q in qs]
            # exact and two-phase, this tree vs before, interleaved query by query
            lat = {k: [] for k in ("exact", "exact_before", "two", "two_before")}
            truth, two_got = [], []
            for b in (be, before):  # warm both (loads the index, builds the inverted view)
                b.search("bench", qs[0], k=10)
            for i, (q, p) in enumerate(zip(qs, pruned)):
                runs = [("exact", be, {}), ("exact_before", before, {}),
                        ("two", be, {"rescore": q, "rescore_window": 1000}),
                        ("two_before", before, {"rescore": q, "rescore_window": 1000})]
                if i % 2:  # the second run of a query finds its postings in cache: alternate who goes first
                    runs = [runs[1], runs[0], runs[3], runs[2]]
                for key, b, kw in runs:
                    t = time.perf_counter()
                    hits = b.search("bench", p if kw else q, k=10, **kw)
                    lat[key].append((time.perf_counter() - t) * 1000)
                    if key == "exact":
                        truth.append([h.id for h in hits])
                    elif key == "two":
                        two_got.append([h.id for h in hits])
            row(length, "exact", np.asarray(lat["exact"]), truth, truth)
            row(length, f"exact ({args.before_ref})", np.asarray(lat["exact_before"]), truth, truth)
            row(length, "two-phase max_ratio=0.1, rescore 1000", np.asarray(lat["two"]), two_got, truth)
            row(length, f"two-phase ({args.before_ref})", np.asarray(lat["two_before"]), two_got, truth)
            for s in SETTINGS:
                lat_a, got = timed(lambda q, s=s: [h.id for h in be.search("bench", q, k=10, approximate=s)], qs)
                row(length, "ann", lat_a, got, truth, query_cut=s.query_cut, heap_factor=s.heap_factor)
            ann_last[length] = (qs, truth)
        # 1% written since the build: found at once by an exact search of those rows, merged
        extra = make_collection(max(1, args.docs // 100), args.vocab, args.terms, args.seed + 99)
        docs = [IndexedDocument(f"new{i}", TermMap({terms[c]: float(v) for c, v in zip(
            extra.indices[extra.indptr[i]:extra.indptr[i + 1]], extra.data[extra.indptr[i]:extra.indptr[i + 1]])}))
            for i in range(extra.shape[0])]
        for i in range(0, len(docs), 1000):
            list(be.upsert("bench", docs[i:i + 1000]))
        for length, (qs, _) in ann_last.items():
            truth = [[h.id for h in be.search("bench", q, k=10)] for q in qs]
            s = AnnQuery()
            lat_a, got = timed(lambda q, s=s: [h.id for h in be.search("bench", q, k=10, approximate=s)], qs)
            row(length, f"ann + {len(docs)} docs written since the build", lat_a, got, truth,
                query_cut=s.query_cut, heap_factor=s.heap_factor)

    suffix = "" if args.docs == 100_000 else f"_{args.docs}"
    out = RESULTS / f"ann_search{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(to_markdown(report), encoding="utf-8")
    print("wrote", out, "and", out.with_suffix(".md"))


def to_markdown(r: dict) -> str:
    c, b = r["config"], r["build"]
    lines = [f"# Embedded search: exact, two-phase, ANN ({c['docs']:,} docs, {c['terms_per_doc']} terms/doc, "
             f"vocab {c['vocab']:,}, {c['cpus']} CPUs shared, 1 search thread, k=10)", "",
             f"Load {b['load_s']} s; ANN build {b['ann_build_s']} s on {c['build_threads']} thread(s) "
             f"({', '.join(f'{k}={v}' for k, v in b['ann_params'].items() if k != 'threads')}).", "",
             "| query terms | method | query_cut | heap_factor | p50 ms | p95 ms | recall@10 vs exact |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['query_terms']} | {x['method']} | {x.get('query_cut', '')} | "
                     f"{x.get('heap_factor', '')} | {x['p50_ms']} | {x['p95_ms']} | {x['recall@10']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
