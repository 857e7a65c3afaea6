"""The re-ranker's BM25 statistics: its folder's (the training collection's) against the searched
index's, on the benchmark of record's held-out conversations, in one command.

    python benchmarks/rerank_statistics.py

Held-out = the re-ranker's split (`RerankConfig` defaults), as in `rerank_eval.py`. The first
stage is the shipped student over the corpus encoded by its base; the shipped re-ranker then
re-ranks the top `--depth` twice, with the statistics in its folder and with those the client
computes from the searched index (`integration.collection_statistics`: up to 10,000 passages,
evenly spaced in ingest order, as `EmbeddedBackend.passage_sample` picks them). The data's
README allows an index per domain (as MTRAG does): a third row reads each turn's own domain's
statistics, an index that differs from the training collection (the candidates still come from
the whole corpus). MRR@10 and nDCG@3 of each, each index row's paired difference from the
folder's with its 95% bootstrap interval and a paired t-test, and the seconds the statistics
take to compute.

Writes benchmarks/results/rerank_statistics.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mtrag-pooled"
METRICS = ["mrr@10", "ndcg@3"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--vectors", type=Path, default=None,
                    help="a passage-vectors file to start from and to save to (a re-run embeds "
                         "nothing again)")
    ap.add_argument("--out", type=Path,
                    default=REPO / "benchmarks" / "results" / "rerank_statistics")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2

    from heldout import first_stage
    from scipy.stats import ttest_rel

    from convsparse.evaluation.metrics import compute_metrics, per_query_metric
    from convsparse.integration.collection_statistics import SAMPLE_SIZE
    from convsparse.reranking import load_reranker
    from convsparse.reranking.features import TermStatistics

    held = first_stage(args.data, args.out.parent, args.depth)
    col, heldout, doc_ids, texts, first = (held.collection, held.heldout, held.doc_ids,
                                           held.texts, held.labels)
    ids, turns = held.ids, held.turns

    rr = load_reranker("default", runtime="onnx")
    if args.vectors is not None and args.vectors.is_file():
        rr.semantic.merge_vectors(args.vectors)
    rr.semantic.add(sorted({texts[d] for lab in first for d in lab.candidates}), progress=True)
    if args.vectors is not None:
        rr.semantic.save_vectors(args.vectors)
    t = time.perf_counter()
    picked = np.linspace(0, len(doc_ids) - 1, min(SAMPLE_SIZE, len(doc_ids))).round().astype(int)
    index_stats = TermStatistics.from_passages(rr.tokenizer, [texts[doc_ids[i]] for i in picked])
    statistics_s = time.perf_counter() - t

    domain_of = {d: p.fields.get("domain") or "none" for d, p in col.corpus.items()}
    per_domain = {dom: TermStatistics.from_passages(
        rr.tokenizer, [texts[d] for d in doc_ids if domain_of[d] == dom])
        for dom in sorted(set(domain_of.values()))}
    turn_domain = {t.id: t.fields.get("domain") or "none" for t in heldout}

    runs: dict[str, dict[str, dict[str, float]]] = {}
    for name, stats_of in (
            ("folder (training collection)", lambda task: None),
            (f"index ({len(picked):,} of {len(doc_ids):,} passages)", lambda task: index_stats),
            ("index per domain (the turn's domain's passages)",
             lambda task: per_domain.get(turn_domain[task]))):
        run = {}
        for lab in first:
            s = rr.score(turns[lab.task_id], lab.query, [texts[d] for d in lab.candidates],
                         lab.first_stage, stats_of(lab.task_id))
            run[lab.task_id] = {d: float(v) for d, v in zip(lab.candidates, s)}
        runs[name] = run
    a = next(iter(runs.values()))
    rows = []
    for name, run in runs.items():
        rows.append({"statistics": name, **compute_metrics(col.qrels, run, METRICS, query_ids=ids)})
    diffs: dict[str, dict[str, dict]] = {}
    rng = np.random.default_rng(0)
    for name, b in list(runs.items())[1:]:
        diffs[name] = {}
        for m in METRICS:
            pa, pb = per_query_metric(col.qrels, a, m), per_query_metric(col.qrels, b, m)
            x = np.array([pa.get(q, 0.0) for q in ids])
            y = np.array([pb.get(q, 0.0) for q in ids])
            d = y - x
            boot = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(2000)]
            p = float(ttest_rel(y, x).pvalue) if d.any() else 1.0
            diffs[name][m] = {"mean": float(d.mean()),
                              "ci95": [float(np.percentile(boot, 2.5)),
                                       float(np.percentile(boot, 97.5))],
                              "p": p, "turns_changed": int((d != 0).sum())}
    idf_gap = float(np.abs(index_stats.idf - rr.statistics.idf).mean())
    result = {"heldout_turns": len(ids), "depth": args.depth, "rows": rows,
              "index_minus_folder": diffs, "statistics_seconds": statistics_s,
              "mean_abs_idf_difference": idf_gap,
              "average_length": {"folder": rr.statistics.average_length,
                                 "index": index_stats.average_length}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(res: dict) -> str:
    lines = [f"# The re-ranker's BM25 statistics on {res['heldout_turns']} held-out MTRAG turns "
             f"(depth {res['depth']})", "",
             "| statistics | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for r in res["rows"]:
        lines.append(f"| {r['statistics']} | " + " | ".join(f"{r[m]:.3f}" for m in METRICS) + " |")
    lines += ["", "| minus the folder's | metric | mean | 95% CI | paired t-test p | turns changed |",
              "|---|---|---:|---|---:|---:|"]
    for name, by_metric in res["index_minus_folder"].items():
        for m, d in by_metric.items():
            lines.append(f"| {name} | {m} | {d['mean']:+.4f} | [{d['ci95'][0]:+.4f}, "
                         f"{d['ci95'][1]:+.4f}] | {d['p']:.3f} | {d['turns_changed']} |")
    lines += ["", f"Index statistics computed in {res['statistics_seconds']:.1f} s (once per "
              f"index and process); mean |idf difference| {res['mean_abs_idf_difference']:.4f}; "
              f"average length {res['average_length']['folder']:.1f} (folder) vs "
              f"{res['average_length']['index']:.1f} (index) word pieces.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
