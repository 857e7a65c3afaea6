"""Which approximate-search library the embedded backend uses: pyseismic-lsr vs bmp (issue 18).

    python benchmarks/ann_library_choice.py                 # 100k docs
    python benchmarks/ann_library_choice.py --docs 20000    # quick look

Same synthetic SPLADE-like collection and queries as `benchmarks/search_latency.py` (Zipfian 30k
vocabulary, ~120 terms/doc; queries of 40 and 250 terms). For each library: build time, then
single-query p50/p95 latency and recall@10 against the exact top 10 (scipy, float weights)
at a few query-time settings. bmp stores 8-bit impacts, so document weights are quantized to
0..255 (scaled by the collection's maximum) as its paper does; seismic takes float32.
Both run with one search thread. Writes benchmarks/results/ann_library_choice.{json,md}.
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
from search_latency import add_collection_arguments, make_collection, make_queries, recall, stats, topk  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def seismic_build(X, threads: int):
    import seismic

    t = time.perf_counter()
    ds = seismic.SeismicDataset()
    ds.add_documents_by_id([str(i) for i in range(X.shape[0])], X.indices.astype(np.int64),
                           X.data.astype(np.float32), X.indptr.astype(np.int64))
    index = seismic.SeismicIndex.build_from_dataset(ds, num_threads=threads)
    build_s = time.perf_counter() - t
    st = seismic.get_seismic_string()

    def search(q: dict[int, float], k: int, query_cut: int, heap_factor: float):
        comps = np.array([str(t) for t in q], dtype=st)
        vals = np.fromiter(q.values(), np.float32)
        res = index.search("q", comps, vals, k, query_cut, heap_factor)
        return [int(d) for _, _, d in res]

    settings = [{"query_cut": c, "heap_factor": h} for c, h in
                ((10, 0.7), (20, 0.8), (20, 0.9), (40, 0.9), (40, 1.0))]
    return build_s, search, settings


def bmp_build(X, root: Path):
    import bmp

    t = time.perf_counter()
    scale = 255.0 / float(X.data.max())
    path = str(root / "bmp.index")
    ix = bmp.Indexer(path, bsize=32, compress_range=False)
    for i in range(X.shape[0]):
        a, b = X.indptr[i], X.indptr[i + 1]
        w = np.maximum(1, np.rint(X.data[a:b] * scale)).astype(int)
        ix.add_document(str(i), {str(c): int(v) for c, v in zip(X.indices[a:b].tolist(), w.tolist())})
    ix.finish()
    searcher = bmp.Searcher(path)
    build_s = time.perf_counter() - t

    def search(q: dict[int, float], k: int, alpha: float, beta: float):
        ids, _ = searcher.search({str(t): float(w) for t, w in q.items()}, k=k, alpha=alpha, beta=beta)
        return [int(d) for d in ids]

    settings = [{"alpha": a, "beta": b} for a, b in ((1.0, 1.0), (0.9, 0.9), (0.8, 0.8), (0.6, 0.6))]
    return build_s, search, settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_collection_arguments(ap)
    ap.add_argument("--build-threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    X = make_collection(args.docs, args.vocab, args.terms, args.seed)
    X.sort_indices()
    df = np.bincount(X.indices, minlength=args.vocab)
    csc = X.tocsc()
    report = {"config": {**vars(args), "terms_per_doc": round(X.nnz / X.shape[0], 1),
                         "cpus": os.cpu_count(), "python": platform.python_version()},
              "build_s": {}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="convsparse-annlib-") as tmp:
        libs = {"pyseismic-lsr": lambda: seismic_build(X, args.build_threads),
                "bmp": lambda: bmp_build(X, Path(tmp))}
        for lib, make in libs.items():
            build_s, search, settings = make()
            report["build_s"][lib] = round(build_s, 2)
            print(lib, "build", round(build_s, 1), "s", flush=True)
            for length in args.lengths:
                queries = make_queries(args.queries, length, args.vocab, args.seed + length, df)
                truth = []
                for q in queries:
                    cols = np.fromiter(q.keys(), np.int64)
                    scores = np.asarray(csc[:, cols] @ np.fromiter(q.values(), np.float64)).ravel()
                    truth.append(topk(scores, 10).tolist())
                for s in settings:
                    search(queries[0], 10, **s)  # warm-up
                    lat, got = [], []
                    for q in queries:
                        t = time.perf_counter()
                        got.append(search(q, 10, **s))
                        lat.append((time.perf_counter() - t) * 1000)
                    row = {"library": lib, "query_terms": length, "setting": s,
                           **stats(np.asarray(lat)), "recall@10": round(recall(got, truth, 10), 4)}
                    report["rows"].append(row)
                    print(row, flush=True)
    out = RESULTS / ("ann_library_choice.json" if args.docs == 100_000
                     else f"ann_library_choice_{args.docs}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [f"# ANN library choice ({args.docs:,} docs, {report['config']['terms_per_doc']} terms/doc, "
             f"vocab {args.vocab:,}, 1 search thread)", "",
             "Build seconds (" + f"{args.build_threads} thread(s)): "
             + ", ".join(f"{k} {v}" for k, v in report["build_s"].items()), "",
             "| library | query terms | setting | p50 ms | p95 ms | recall@10 vs exact |",
             "|---|---:|---|---:|---:|---:|"]
    for r in report["rows"]:
        setting = ", ".join(f"{k}={v}" for k, v in r["setting"].items())
        lines.append(f"| {r['library']} | {r['query_terms']} | {setting} | {r['p50_ms']} | {r['p95_ms']} | "
                     f"{r['recall@10']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("wrote", out)


if __name__ == "__main__":
    main()
