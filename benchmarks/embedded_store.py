"""Embedded backend before vs after the SQLite store of record (issue 13), one run, one machine.

    python benchmarks/embedded_store.py                      # 20k docs, 5 interleaved repeats
    python benchmarks/embedded_store.py --docs 50000 --repeats 7

"Before" is the format-1 `integration/embedded.py` (snapshot + JSON-lines log) taken from git
(`--before-ref`, default 0a505cc, the last commit with it); "after" is the installed one.

Ingest: a fresh index, `upsert` in batches of 64 (the Celery chunk size) of precomputed SPLADE-
like term maps (~120 terms from a Zipfian 30k vocabulary, a 300-character text field), so the
numbers are the backend's own cost (encoding, identical in both, is left out). Four variants:
before (default: no fsync), before with ``durable=True`` (fsync per append), after (default:
``synchronous=FULL``, the WAL fsynced per batch) and after with ``durable=False``
(``synchronous=NORMAL``: no fsync per commit). The fsync cost is after-default vs after-NORMAL.

Search: both backends hold the same index (built by upserts, then reopened); the full
`EmbeddedBackend.search` call (change check + kernel + hit building) is timed on 40-term and
250-term queries, k=10, `--search-repeats` times (interleaved); reported are the medians and the
paired change (after/before within a repeat). Also the cold open (new object, first search).

Repeats are interleaved (before, after, before, after...) and medians reported. Results:
benchmarks/results/embedded_store.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from git_before import module_at  # noqa: E402

from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.embedded import EmbeddedBackend
from convsparse.termmap import TermMap

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BATCH = 64


def load_before(ref: str):
    return module_at(ref, "integration/embedded.py", "embedded_before").EmbeddedBackend


def make_docs(n: int, seed: int = 0, vocab: int = 30_000, terms: int = 120):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    tokens = np.array([f"tok{i}" for i in range(vocab)])
    docs = []
    for i in range(n):
        ids = np.unique(rng.choice(vocab, size=int(terms * 1.35), p=p))
        w = rng.lognormal(0.0, 0.6, size=len(ids)).astype(np.float32) + 0.01
        docs.append(IndexedDocument(f"d{i:07d}", TermMap(dict(zip(tokens[ids].tolist(), w.tolist()))),
                                    {"title": f"Doc {i}", "text": "lorem ipsum dolor " * 17}))
    return docs, tokens, p


def make_queries(n: int, n_terms: int, tokens, p, seed: int) -> list[TermMap]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = np.unique(rng.choice(len(tokens), size=n_terms, replace=False, p=p))
        w = (1.0 / np.log2(2 + ids)).astype(np.float32)  # rarer terms weigh more... less here
        out.append(TermMap(dict(zip(tokens[ids].tolist(), (w * 3.0).tolist()))))
    return out


def ingest(cls, root: Path, docs, **kw) -> float:
    be = cls(root, **kw)
    be.create_index("bench", fingerprint="fp")
    start = time.perf_counter()
    for i in range(0, len(docs), BATCH):
        list(be.upsert("bench", docs[i:i + BATCH]))
    elapsed = time.perf_counter() - start
    assert be.count("bench") == len(docs)
    return len(docs) / elapsed


def search_ms(be, queries, clock=time.thread_time) -> float:
    """Median per-query time. CPU time of this thread by default: on a machine shared with
    other jobs, wall time mostly measures the scheduler (a search does no I/O)."""
    times = []
    for q in queries:
        t = clock()
        be.search("bench", q, k=10)
        times.append((clock() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--search-repeats", type=int, default=15)
    ap.add_argument("--before-ref", default="0a505cc")
    ap.add_argument("--out", default="embedded_store")
    args = ap.parse_args()

    Before = load_before(args.before_ref)
    docs, tokens, p = make_docs(args.docs)
    variants = {
        "before (no fsync, the old default)": (Before, {}),
        "before, durable=True (fsync per append)": (Before, {"durable": True}),
        "after (synchronous=FULL, the default)": (EmbeddedBackend, {}),
        "after, durable=False (synchronous=NORMAL)": (EmbeddedBackend, {"durable": False}),
    }
    ingest_rates: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        for r in range(args.repeats):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                cls, kw = variants[name]
                root = Path(tmp) / f"ingest-{r}-{abs(hash(name))}"
                ingest_rates[name].append(ingest(cls, root, docs, **kw))
                print(f"repeat {r}: {name}: {ingest_rates[name][-1]:,.0f} docs/s", flush=True)

        # search: the same documents in both formats
        roots = {"before": Path(tmp) / "search-before", "after": Path(tmp) / "search-after"}
        ingest(Before, roots["before"], docs)
        ingest(EmbeddedBackend, roots["after"], docs)
        q40 = make_queries(args.queries, 40, tokens, p, seed=1)
        q250 = make_queries(args.queries, 250, tokens, p, seed=2)
        opened = {"before": [], "after": []}
        search: dict[str, dict[str, list[float]]] = {k: {"40": [], "250": [], "40 wall": []} for k in roots}
        classes = {"before": Before, "after": EmbeddedBackend}
        for r in range(args.search_repeats):
            for name in (["before", "after"] if r % 2 == 0 else ["after", "before"]):
                t = time.perf_counter()
                be = classes[name](roots[name])
                be.search("bench", q40[0], k=10)
                opened[name].append(time.perf_counter() - t)
                for q in q40[:10]:  # warm-up
                    be.search("bench", q, k=10)
                search[name]["40"].append(search_ms(be, q40))
                search[name]["250"].append(search_ms(be, q250))
                search[name]["40 wall"].append(search_ms(be, q40, clock=time.perf_counter))
                print(f"repeat {r}: search {name}: 40 terms {search[name]['40'][-1]:.3f} ms, "
                      f"250 terms {search[name]['250'][-1]:.3f} ms", flush=True)
        sizes = {k: sum(f.stat().st_size for f in (v / "bench").iterdir()) for k, v in roots.items()}

    med = statistics.median
    ing = {k: med(v) for k, v in ingest_rates.items()}
    names = list(variants)
    result = {
        "docs": args.docs, "batch": BATCH, "repeats": args.repeats, "queries": args.queries,
        "before_ref": args.before_ref, "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                                                   "platform": platform.platform()},
        "ingest_docs_per_s": {k: {"median": ing[k], "runs": v} for k, v in ingest_rates.items()},
        "ingest_after_vs_before_default": ing[names[2]] / ing[names[0]] - 1.0,
        "ingest_after_vs_before_durable": ing[names[2]] / ing[names[1]] - 1.0,
        "fsync_cost_after": 1.0 - ing[names[2]] / ing[names[3]],
        "fsync_cost_before": 1.0 - ing[names[1]] / ing[names[0]],
        "search_ms_p50": {k: {t: {"median": med(v), "runs": v} for t, v in d.items()} for k, d in search.items()},
        # paired: after/before within each repeat (the two ran back to back), then the median
        "search_paired_ratio": {t: med([a / b for a, b in zip(search["after"][t], search["before"][t])])
                                for t in ("40", "250", "40 wall")},
        "open_and_first_search_s": {k: med(v) for k, v in opened.items()},
        "index_bytes": sizes,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2))
    s = result["search_ms_p50"]
    lines = [
        f"# Embedded backend: format 1 (before, {args.before_ref}) vs the SQLite store (after)",
        "",
        f"{args.docs:,} documents (~120 terms, Zipfian 30k vocabulary), upserts in batches of {BATCH}; "
        f"{args.repeats} interleaved repeats, medians; {os.cpu_count()} CPUs, {platform.platform()}.",
        "",
        "| ingest variant | docs/s (median) |",
        "|---|---:|",
        *[f"| {k} | {ing[k]:,.0f} |" for k in names],
        "",
        f"- after (default, durable) vs before (default, not durable): "
        f"{result['ingest_after_vs_before_default']:+.1%}",
        f"- after (default) vs before with durable=True (same guarantee): "
        f"{result['ingest_after_vs_before_durable']:+.1%}",
        f"- what fsync costs: after {result['fsync_cost_after']:.1%} of ingest throughput "
        f"(FULL vs NORMAL), before {result['fsync_cost_before']:.1%} (durable=True vs False)",
        "",
        f"| search (full call, k=10; {args.search_repeats} interleaved repeats of {args.queries} queries) "
        "| before p50 ms | after p50 ms | change of medians | paired change (median of after/before per repeat) |",
        "|---|---:|---:|---:|---:|",
        *[f"| {t}-term queries | {s['before'][t]['median']:.3f} | {s['after'][t]['median']:.3f} | "
          f"{s['after'][t]['median'] / s['before'][t]['median'] - 1:+.1%} | "
          f"{result['search_paired_ratio'][t] - 1:+.1%} |" for t in ("40", "250", "40 wall")],
        "",
        "Search times are this thread's CPU time per query (the machine is shared; a search does no "
        "I/O), the `40 wall` row the wall-clock time of the same 40-term queries.",
        "",
        f"Open + first search: before {result['open_and_first_search_s']['before']:.2f} s, "
        f"after {result['open_and_first_search_s']['after']:.2f} s. "
        f"On disk: before {sizes['before'] / 1e6:.1f} MB, after {sizes['after'] / 1e6:.1f} MB.",
    ]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
