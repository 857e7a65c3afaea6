"""The whole warm chat turn on one CPU core: encode + search + re-rank, at re-rank depths.

    python benchmarks/chat_turn.py                       # the shipped re-ranker ("default")
    python benchmarks/chat_turn.py --reranker runs/rr/reranker --vectors runs/rr/passage_vectors-w128s96.safetensors

What a chat app does per user turn: `ConversationalSearch.search(conversation, k=10)` over an
embedded index of the benchmark of record's corpus (`../shared/data/mtrag-pooled`, every
passage), the shipped student in ONNX Runtime encoding the raw conversation, and the
re-ranker in ONNX Runtime (`load_reranker(..., runtime="onnx")`) re-ranking the first
`depth` hits, for every held-out turn (the split's defaults: 4 conversations per domain,
seed 13; never trained on). The passages' bi-encoder vectors are stored beforehand, as an
index holding them gives them (`--vectors` files are read first; the rest are embedded once,
on every core, before timing). The process is then pinned to one core (sessions made after
that use one thread), one warm-up turn runs per setting, and the settings (no re-rank, then
each depth) are interleaved turn by turn, so a noisy neighbour hits them alike.

Reported per setting: p50/p95 of the whole turn (``total_ms``) and of each stage (encode,
search, re-rank), and the end-to-end MRR@10 / nDCG@3 of the returned top 10 on the held-out
judgments. Wall-clock times on a shared machine include waiting for the core, so the CPU time
the process spent on the turn (``cpu_ms``, `time.process_time`: every thread; ONNX Runtime runs
in the caller's thread with one core) and on the re-rank stage (``rerank_cpu_ms``) are reported
too: what a quiet core's wall clock would show, within cache effects.
Settings: no re-rank; each depth with the defaults (conversations in int8 on both models:
the student's shipped query graph and the bi-encoder's, built where the onnx package is
installed); depth 20 as the core install runs it (no onnx: the bi-encoder's views in
float32); depth 20 with float32 conversations throughout (``query_precision="fp32"``).
Goals (issue 31): re-rank stage <= 25 ms p50 at depth 20, whole turn <= 60 ms p50.

Writes benchmarks/results/chat_turn.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mtrag-pooled"
STAGES = ("encode_ms", "search_ms", "rerank_ms", "total_ms", "cpu_ms", "rerank_cpu_ms")


class CpuTimed:
    """A re-ranker that records the CPU time of each `rerank` call."""

    def __init__(self, reranker):
        self.reranker, self.last_ms = reranker, None

    def rerank(self, conversation, query, hits):
        t = time.process_time()
        try:
            return self.reranker.rerank(conversation, query, hits)
        finally:
            self.last_ms = (time.process_time() - t) * 1000


def build_index(col, data_dir: Path, index: str) -> None:
    """The corpus in an embedded index, its term maps from the student's base (the document
    encoder; the same fingerprint), read from `encode_corpus`'s cache when a training run or
    `rerank_eval.py` made it."""
    from convsparse.encoders.loading import load_student
    from convsparse.evaluation.harness import _write_doc_cache, index_corpus
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.settings import get_settings
    from convsparse.termmap import TermMap
    from convsparse.training.anchored import encode_corpus

    backend = EmbeddedBackend(data_dir)
    if index in backend.list_indices():
        return
    base = load_student("splade-tiny", runtime="torch", device="cpu")
    ids = list(col.corpus)
    docs = encode_corpus(base, [col.corpus[d].encoded_text for d in ids],
                         cache=get_settings().cache_dir / "corpus")
    vocab = base.vocabulary
    maps = [TermMap({vocab[j]: float(v) for j, v in zip(docs.indices[docs.indptr[i]:docs.indptr[i + 1]],
                                                        docs.data[docs.indptr[i]:docs.indptr[i + 1]])})
            for i in range(len(ids))]
    cache = data_dir / "doc_term_maps.jsonl"
    _write_doc_cache(cache, base.fingerprint, ids, maps)
    # no vectors in the index: the candidates' are stored in the re-ranker beforehand (main)
    index_corpus(col, encoder=base, backend=backend, index=index, cache=cache, vectors=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--reranker", default="default", help="re-ranker folder (default: the shipped one)")
    ap.add_argument("--vectors", type=Path, action="append", default=[],
                    help="passage-vectors files to start from")
    ap.add_argument("--depths", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--index-dir", type=Path,
                    default=Path(tempfile.gettempdir()) / "convsparse-chat-turn-index")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "chat_turn")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2

    from heldout import heldout_turns
    from one_core import pin_to_one_core

    from convsparse.benchmark_collections import load_collection
    from convsparse.encoders.loading import load_student
    from convsparse.evaluation.metrics import compute_metrics, latency_summary
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.integration.client import ConversationalSearch
    from convsparse.reranking import load_reranker

    col = load_collection(args.data)
    heldout = heldout_turns(col, args.data, args.out.parent)
    index = "mtrag"
    build_index(col, args.index_dir, index)
    backend = EmbeddedBackend(args.index_dir)

    # passage vectors before any query, on every core: bulk work, not the turn's
    # kept beside the index (a cache like it): a rerun embeds only passages new to it
    vectors = args.index_dir / f"vectors-{Path(str(args.reranker)).name}.safetensors"
    bulk = load_reranker(args.reranker, runtime="onnx")
    if bulk.semantic is not None:
        for seed in [*args.vectors, *([vectors] if vectors.is_file() else [])]:
            bulk.semantic.merge_vectors(seed)
        first = ConversationalSearch(index, encoder=load_student(None, runtime="onnx", device="cpu"),
                                     backend=backend)
        from convsparse.documents import document_text

        wanted = {}
        for t in heldout:
            for h in first.search(list(t.turns), k=max(args.depths)).hits:
                wanted[h.id] = document_text(h.fields.get("title"), h.fields["text"])
        bulk.semantic.add(sorted(wanted.values()), progress=True)
        bulk.semantic.save_vectors(vectors)
    del bulk

    # the budget: one core; ONNX Runtime sizes its pools by the CPUs a process may use
    pin_to_one_core()
    # the default (int8 conversations on both models, where the onnx package can build the
    # bi-encoder's), the core install (no onnx: the bi-encoder's views in float32), and
    # float32 conversations throughout (query_precision="fp32")
    encoders = {p: load_student(None, runtime="onnx", device="cpu", query_precision=p)
                for p in ("int8", "fp32")}
    #: name -> (depth or None, the student's query precision, the re-ranker's)
    settings = {"no re-rank": (None, "int8", "int8"),
                **{f"depth {d}": (d, "int8", "int8") for d in args.depths},
                "depth 20, core install (views float32)": (20, "int8", "fp32"),
                "depth 20, float32 conversations": (20, "fp32", "fp32")}

    def reranker(precision: str):
        rr = load_reranker(args.reranker, runtime="onnx", query_precision=precision)
        if rr.semantic is not None:
            rr.semantic.merge_vectors(vectors)
        return rr

    # one re-ranker per setting: each keeps its own cache of tokenized passages (a chat's next
    # turn meets many of the same passages), which another setting's turn must not warm
    timed = {name: CpuTimed(reranker(views)) for name, (d, _, views) in settings.items() if d}
    clients = {name: ConversationalSearch(index, encoder=encoders[student], backend=backend,
                                          reranker=timed.get(name), rerank_depth=d or 20)
               for name, (d, student, _) in settings.items()}
    for client in clients.values():  # warm-up: lazy initialisation, first-use caches
        client.search(list(heldout[0].turns), k=10)
    times: dict[str, dict[str, list[float]]] = {n: {s: [] for s in STAGES} for n in clients}
    runs: dict[str, dict[str, dict[str, float]]] = {n: {} for n in clients}
    statuses: dict[str, dict[str, int]] = {n: {} for n in clients}
    start = time.time()
    for t in heldout:
        for name, client in clients.items():
            clock = timed.get(name)
            if clock is not None:
                clock.last_ms = None
            cpu = time.process_time()
            res = client.search(list(t.turns), k=10)
            res.timings["cpu_ms"] = (time.process_time() - cpu) * 1000
            if clock is not None and clock.last_ms is not None:
                res.timings["rerank_cpu_ms"] = clock.last_ms
            for s in STAGES:
                if s in res.timings:
                    times[name][s].append(res.timings[s])
            runs[name][t.id] = {h.id: float(len(res.hits) - i) for i, h in enumerate(res.hits)}
            statuses[name][res.rerank] = statuses[name].get(res.rerank, 0) + 1
    ids = [t.id for t in heldout]
    rows = []
    for name in clients:
        depth, student, views = settings[name]
        semantic = timed[name].reranker.semantic if name in timed else None
        rows.append({"setting": name, "depth": depth, "student_queries": student,
                     "bi_encoder_views": "int8" if semantic is not None
                     and semantic.query_session is not None else "fp32",
                     "turns": len(ids),
                     **compute_metrics(col.qrels, runs[name], ["mrr@10", "ndcg@3"], query_ids=ids),
                     "rerank_status": statuses[name],
                     **{s: latency_summary(v) for s, v in times[name].items() if v}})
    load = os.getloadavg()
    result = {"heldout_turns": len(ids), "k": 10, "threads": 1, "runtime": "onnx",
              "reranker": str(args.reranker), "corpus": len(col.corpus), "rows": rows,
              "seconds": round(time.time() - start, 1),
              "loadavg_1_5_15": [round(x, 2) for x in load], "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(res: dict) -> str:
    lines = [f"# The warm chat turn on one CPU core ({res['heldout_turns']} held-out MTRAG turns, "
             f"{res['corpus']} passages, ONNX Runtime, k={res['k']})", "",
             "| setting | conversations: student / bi-encoder views | MRR@10 | nDCG@3 | "
             "turn p50 / p95 ms | turn CPU p50 / p95 ms | encode p50 | "
             "search p50 | re-rank p50 / p95 ms | re-rank CPU p50 / p95 ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def pair(r: dict, key: str) -> str:
        return f"{r[key]['p50']:.1f} / {r[key]['p95']:.1f}" if key in r else "–"

    for r in res["rows"]:
        lines.append(
            f"| {r['setting']} | {r.get('student_queries', '?')} / "
            f"{r.get('bi_encoder_views', '?') if r['depth'] else '–'} | "
            f"{r['mrr@10']:.3f} | {r['ndcg@3']:.3f} | {pair(r, 'total_ms')} | "
            f"{pair(r, 'cpu_ms')} | {r['encode_ms']['p50']:.1f} | {r['search_ms']['p50']:.1f} | "
            f"{pair(r, 'rerank_ms')} | {pair(r, 'rerank_cpu_ms')} |")
    lines += ["", "`ConversationalSearch.search(conversation, k=10)` per held-out turn, the settings "
              "interleaved turn by turn, the process pinned to one core, the candidates' passage "
              "vectors stored beforehand. Re-rank statuses: "
              + "; ".join(f"{r['setting']}: {r['rerank_status']}" for r in res["rows"]) + ".",
              f"Machine load average during the run (1/5/15 min): {res['loadavg_1_5_15']} on "
              f"{res['cpus']} CPUs (shared with other jobs: latencies are upper bounds)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
