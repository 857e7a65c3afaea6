"""Single-query search latency: the embedded backend vs the other candidates, and vs pruning.

    python benchmarks/search_latency.py                 # 100k docs (~3 min on 2 cores)
    python benchmarks/search_latency.py --docs 1000000  # 1M docs (needs ~8 GB RAM, long)

Synthetic SPLADE-like collection: a Zipfian vocabulary of 30k tokens, ~120 distinct terms per
document (log-normal weights), queries of ~40 (one question) and ~250 terms (a whole
conversation) whose weights fall with the token's frequency, as a trained SPLADE's do.

Part 1, exact candidates (and pyseismic-lsr, approximate), same queries, one process:
  - embedded: `EmbeddedBackend.search` (the shipped backend, full call incl. id lookup)
  - scipy_csc_slice: docs x terms CSC, X[:, q_terms] @ q_weights (the embedded kernel, raw)
  - numpy_postings_bincount: gather the postings with numpy + np.bincount (first version)
  - scipy_inverted_spmv: q (1 x terms CSR) @ inverted index (terms x docs CSR)
  - scipy_csr_matvec: docs x terms CSR @ dense q (touches every posting)
  - python_dict_postings: dict term -> (doc ids, weights) lists, accumulated in a dict
  - seismic: pyseismic-lsr (approximate: recall@10 vs exact reported)
Part 2: latency and recall@10/@100 (vs the unpruned exact top-k) per `PruningPolicy`,
and two-phase (pruned retrieval of 1000 candidates, rescored with the full query).

Writes benchmarks/results/search_latency[_<docs>].json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from convsparse.integration.backends.embedded import EmbeddedBackend
from convsparse.pruning import PruningPolicy
from convsparse.termmap import TermMap

RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------- data
def zipf_probs(vocab: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, vocab + 1) ** s
    return p / p.sum()


def make_collection(n_docs: int, vocab: int, terms: int, seed: int, s: float = 1.0,
                    chunk: int = 50_000) -> sp.csr_matrix:
    """docs x vocab CSR, ~`terms` distinct Zipfian terms per doc, log-normal weights."""
    rng = np.random.default_rng(seed)
    p = zipf_probs(vocab, s)
    cdf = np.cumsum(p)
    parts = []
    draws = int(terms * 1.35)  # duplicates of head terms are merged: ~terms distinct remain
    for start in range(0, n_docs, chunk):
        n = min(chunk, n_docs - start)
        cols = np.searchsorted(cdf, rng.random(n * draws)).astype(np.int32)
        cols = np.minimum(cols, vocab - 1)
        rows = np.repeat(np.arange(n, dtype=np.int32), draws)
        m = sp.csr_matrix((np.ones(n * draws, np.float32), (rows, cols)), shape=(n, vocab))
        m.sum_duplicates()
        m.data = rng.lognormal(-0.3, 0.6, size=m.nnz).astype(np.float32) + 1e-3
        parts.append(m)
    return sp.vstack(parts, format="csr")


def make_queries(n: int, length: int, vocab: int, seed: int, df: np.ndarray) -> list[dict[int, float]]:
    """Queries of ~`length` distinct terms; weight ~ idf x log-normal noise (SPLADE-like)."""
    rng = np.random.default_rng(seed)
    p = zipf_probs(vocab, 0.8)  # queries reach further into the tail than documents
    idf = np.log((df.max() + 1) / (df + 1)) + 0.1
    out = []
    for _ in range(n):
        terms = rng.choice(vocab, size=length, replace=False, p=p)
        w = rng.lognormal(-1.2, 1.1, size=length) * idf[terms] / idf.mean()
        out.append({int(t): float(x) for t, x in zip(terms, w) if x > 1e-6})
    return out


# ---------------------------------------------------------------------- candidates
def topk(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class Candidates:
    def __init__(self, X: sp.csr_matrix, root: Path, with_seismic: bool, with_python: bool):
        self.X = X
        self.n_docs, self.vocab = X.shape
        self.terms = [f"t{i}" for i in range(self.vocab)]
        self.ids = [f"d{i}" for i in range(self.n_docs)]
        t = time.perf_counter()
        self.backend = EmbeddedBackend(root)
        self.backend.load_matrix("bench", self.ids, X, self.terms, fingerprint="synthetic")
        self.backend.search("bench", TermMap({"t0": 1.0}), 10)  # load + build the inverted view
        self.build_s = {"embedded": time.perf_counter() - t}
        t = time.perf_counter()
        self.inv = X.T.tocsr()
        self.build_s["scipy_inverted"] = time.perf_counter() - t
        t = time.perf_counter()
        self.csc = X.tocsc()
        self.build_s["scipy_csc"] = time.perf_counter() - t
        self.py = None
        if with_python:
            t = time.perf_counter()
            self.py = [(self.inv.indices[self.inv.indptr[i]:self.inv.indptr[i + 1]].tolist(),
                        self.inv.data[self.inv.indptr[i]:self.inv.indptr[i + 1]].tolist())
                       for i in range(self.vocab)]
            self.build_s["python_dict"] = time.perf_counter() - t
        self.seismic = None
        if with_seismic:
            try:
                import seismic
            except ImportError:
                print("pyseismic-lsr not installed: skipping")
            else:
                t = time.perf_counter()
                st = seismic.get_seismic_string()
                ds = seismic.SeismicDataset()
                terms = np.array(self.terms, dtype=st)
                for i in range(self.n_docs):
                    a, b = X.indptr[i], X.indptr[i + 1]
                    ds.add_document(self.ids[i], terms[X.indices[a:b]], X.data[a:b])
                self.seismic = seismic.SeismicIndex.build_from_dataset(ds, num_threads=1)
                self.seismic_terms = terms
                self.build_s["seismic"] = time.perf_counter() - t

    # each returns the top-k row numbers
    def embedded(self, q, k, tm):
        return [int(h.id[1:]) for h in self.backend.search("bench", tm, k)]

    def numpy_postings_bincount(self, q, k, tm):
        cols = np.fromiter(q.keys(), np.int64)
        vals = np.fromiter(q.values(), np.float64)
        inv = self.inv
        starts, lengths = inv.indptr[cols], inv.indptr[cols + 1] - inv.indptr[cols]
        offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        pos = np.arange(int(lengths.sum())) + offsets
        scores = np.bincount(inv.indices[pos], weights=inv.data[pos] * np.repeat(vals, lengths),
                             minlength=self.n_docs)
        return topk(scores, k)

    def scipy_inverted_spmv(self, q, k, tm):
        cols = np.fromiter(q.keys(), np.int32)
        vals = np.fromiter(q.values(), np.float32)
        qv = sp.csr_matrix((vals, cols, np.array([0, len(cols)])), shape=(1, self.vocab))
        r = qv @ self.inv
        best = topk(r.data, k)
        return r.indices[best]

    def scipy_csc_slice(self, q, k, tm):
        cols = np.fromiter(q.keys(), np.int64)
        vals = np.fromiter(q.values(), np.float32)
        scores = self.csc[:, cols] @ vals
        return topk(np.asarray(scores).ravel(), k)

    def scipy_csr_matvec(self, q, k, tm):
        dense = np.zeros(self.vocab, np.float32)
        dense[np.fromiter(q.keys(), np.int64)] = np.fromiter(q.values(), np.float32)
        return topk(self.X @ dense, k)

    def python_dict_postings(self, q, k, tm):
        acc: dict[int, float] = defaultdict(float)
        for t, w in q.items():
            docs, ws = self.py[t]
            for d, x in zip(docs, ws):
                acc[d] += w * x
        best = sorted(acc.items(), key=lambda kv: -kv[1])[:k]
        return [d for d, _ in best]

    def seismic_search(self, q, k, tm, query_cut=None, heap_factor=0.9):
        comps = self.seismic_terms[np.fromiter(q.keys(), np.int64)]
        vals = np.fromiter(q.values(), np.float32)
        res = self.seismic.search(query_id="q", query_components=comps, query_values=vals, k=k,
                                  query_cut=query_cut or len(q), heap_factor=heap_factor)
        return [int(doc[1:]) for _, _, doc in res]


def timed(fn, queries, tms, k):
    lat, out = [], []
    fn(queries[0], k, tms[0])  # warm-up
    for q, tm in zip(queries, tms):
        t = time.perf_counter()
        out.append(fn(q, k, tm))
        lat.append((time.perf_counter() - t) * 1000)
    return np.asarray(lat), out


def recall(got, truth, depth):
    return float(np.mean([len(set(list(g)[:depth]) & set(list(t)[:depth])) / max(1, min(depth, len(t)))
                          for g, t in zip(got, truth)]))


def stats(lat):
    return {"p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p95_ms": round(float(np.percentile(lat, 95)), 3),
            "mean_ms": round(float(lat.mean()), 3)}


def add_collection_arguments(ap: argparse.ArgumentParser) -> None:
    """The synthetic collection and query options every search benchmark shares."""
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--vocab", type=int, default=30_000)
    ap.add_argument("--terms", type=int, default=120)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--lengths", type=int, nargs="+", default=[40, 250])


# ---------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_collection_arguments(ap)
    ap.add_argument("--no-seismic", action="store_true")
    ap.add_argument("--python-queries", type=int, default=10,
                    help="queries for the slow pure-Python candidate (0=skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(1)
    except ImportError:
        pass
    t0 = time.perf_counter()
    X = make_collection(args.docs, args.vocab, args.terms, args.seed)
    gen_s = time.perf_counter() - t0
    df = np.bincount(X.indices, minlength=args.vocab)
    print(f"collection: {X.shape[0]} docs, {X.nnz / X.shape[0]:.1f} terms/doc, generated in {gen_s:.1f}s")

    with tempfile.TemporaryDirectory(prefix="convsparse-bench-") as tmp:
        c = Candidates(X, Path(tmp), with_seismic=not args.no_seismic, with_python=args.python_queries > 0)
        print("build seconds:", {k: round(v, 1) for k, v in c.build_s.items()})
        report = {
            "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                       "terms_per_doc": round(X.nnz / X.shape[0], 1),
                       "machine": platform.processor() or platform.machine(),
                       "cpus": os.cpu_count(), "threads": 1, "python": platform.python_version()},
            "build_s": {k: round(v, 2) for k, v in c.build_s.items()},
            "candidates": [], "pruning": [],
        }
        for length in args.lengths:
            queries = make_queries(args.queries, length, args.vocab, args.seed + length, df)
            tms = [TermMap({f"t{t}": w for t, w in q.items()}) for q in queries]
            mean_len = float(np.mean([len(q) for q in queries]))
            flops = float(np.mean([sum(df[t] for t in q) / args.docs for q in queries]))
            # ground truth: exact top-100 of the unpruned query
            _, truth = timed(c.numpy_postings_bincount, queries, tms, 100)
            fns = [("embedded", c.embedded, "exact"),
                   ("numpy_postings_bincount", c.numpy_postings_bincount, "exact"),
                   ("scipy_inverted_spmv", c.scipy_inverted_spmv, "exact"),
                   ("scipy_csc_slice", c.scipy_csc_slice, "exact"),
                   ("scipy_csr_matvec", c.scipy_csr_matvec, "exact")]
            if c.py is not None:
                fns.append(("python_dict_postings", c.python_dict_postings, "exact"))
            if c.seismic is not None:
                fns.append(("seismic (heap_factor=0.9)", c.seismic_search, "approximate"))
            for name, fn, kind in fns:
                n = args.python_queries if name == "python_dict_postings" else len(queries)
                lat, got = timed(fn, queries[:n], tms[:n], 10)
                row = {"candidate": name, "kind": kind, "query_terms": round(mean_len, 1),
                       "queries": n, **stats(lat), "recall@10": round(recall(got, truth[:n], 10), 4)}
                report["candidates"].append(row)
                print(row)
            # pruning sweep on the embedded backend
            policies = [("none", PruningPolicy()), ("top_k=100", PruningPolicy(top_k=100)),
                        ("top_k=64", PruningPolicy(top_k=64)), ("top_k=32", PruningPolicy(top_k=32)),
                        ("max_ratio=0.05", PruningPolicy(max_ratio=0.05)),
                        ("max_ratio=0.1", PruningPolicy(max_ratio=0.1)),
                        ("max_ratio=0.2", PruningPolicy(max_ratio=0.2)),
                        ("alpha_mass=0.95", PruningPolicy(alpha_mass=0.95)),
                        ("alpha_mass=0.9", PruningPolicy(alpha_mass=0.9)),
                        ("alpha_mass=0.8", PruningPolicy(alpha_mass=0.8))]
            base_p50 = None
            for label, policy in policies:
                for rescore in (0, 1000):
                    if rescore and policy.is_noop:
                        continue
                    pruned = [policy.apply(tm) for tm in tms]
                    lat, got = [], []
                    c.backend.search("bench", pruned[0], 100)
                    for tm, full in zip(pruned, tms):
                        t = time.perf_counter()
                        hits = c.backend.search("bench", tm, 100, rescore=full if rescore else None,
                                                rescore_window=rescore)
                        lat.append((time.perf_counter() - t) * 1000)
                        got.append([int(h.id[1:]) for h in hits])
                    lat = np.asarray(lat)
                    st = stats(lat)
                    if base_p50 is None:
                        base_p50 = st["p50_ms"]
                    q_flops = float(np.mean([sum(df[int(t[1:])] for t in p) / args.docs for p in pruned]))
                    row = {"query_terms": round(mean_len, 1), "policy": label,
                           "rescore_window": rescore,
                           "terms_kept": round(float(np.mean([len(p) for p in pruned])), 1),
                           "flops": round(q_flops, 2), **st,
                           "speedup_p50": round(base_p50 / st["p50_ms"], 2),
                           "recall@10": round(recall(got, truth, 10), 4),
                           "recall@100": round(recall(got, truth, 100), 4)}
                    report["pruning"].append(row)
                    print(row)
            report.setdefault("query_flops_unpruned", {})[str(length)] = round(flops, 2)

    suffix = "" if args.docs == 100_000 else f"_{args.docs}"
    out = args.out or RESULTS / f"search_latency{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(to_markdown(report), encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.md')}")


def to_markdown(r: dict) -> str:
    cfg = r["config"]
    lines = [(f"# Search latency ({cfg['docs']:,} docs, {cfg['terms_per_doc']} terms/doc, "
              f"vocab {cfg['vocab']:,}, {cfg['cpus']} CPUs, 1 thread)"), "",
             "## Candidates (k=10, single query)", "",
             "| candidate | kind | query terms | p50 ms | p95 ms | recall@10 |", "|---|---|---:|---:|---:|---:|"]
    for c in r["candidates"]:
        lines.append(f"| {c['candidate']} | {c['kind']} | {c['query_terms']} | {c['p50_ms']} | "
                     f"{c['p95_ms']} | {c['recall@10']} |")
    lines += ["", "Build seconds: " + ", ".join(f"{k} {v}" for k, v in r["build_s"].items()), "",
              "## Pruning (embedded backend, k=100; recall vs the unpruned exact top-k)", "",
              "| query terms | policy | rescore | terms kept | FLOPS | p50 ms | p95 ms | speedup | R@10 | R@100 |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in r["pruning"]:
        lines.append(f"| {p['query_terms']} | {p['policy']} | {p['rescore_window']} | {p['terms_kept']} | "
                     f"{p['flops']} | {p['p50_ms']} | {p['p95_ms']} | {p['speedup_p50']}x | "
                     f"{p['recall@10']} | {p['recall@100']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
