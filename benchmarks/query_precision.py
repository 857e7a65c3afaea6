"""int8 or float32 conversations: speed on one core and ranking on the dev and held-out turns.

    python benchmarks/query_precision.py

The shipped student's documents are float32 term maps (the index's fingerprint); its
conversations run either the float32 graph or the int8 query graph shipped beside it
(`encoders/query_graph.py`). Both are compared side by side:

- ranking: first-stage MRR@10 and R@100 over `../shared/data/mtrag-pooled` (exact search, the
  corpus encoded once by the base, cached), on the judged dev MTRAG turns (the decision was made
  there) and on the held-out turns (the re-ranker's split: 4 conversations per domain, seed 13;
  read once, to report), each with the paired difference, its 95% bootstrap interval and a
  paired t-test;
- speed: `encode_conversation` per dev turn in CPU milliseconds (`time.process_time`), the
  process pinned to one core, the two precisions interleaved turn by turn; per-turn ratio
  medians (the machine is shared).

Writes benchmarks/results/query_precision.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mtrag-pooled"


def per_turn(qrels, top, doc_ids, tasks) -> tuple[np.ndarray, np.ndarray]:
    """(reciprocal rank in the top 10, recall in the top 100) per task."""
    rr, recall = [], []
    for row, task in zip(top, tasks):
        relevant = {d for d, r in qrels[task.id].items() if r > 0}
        ranked = [doc_ids[j] for j in row[:100]]
        rr.append(next((1 / (k + 1) for k, d in enumerate(ranked[:10]) if d in relevant), 0.0))
        recall.append(len(relevant.intersection(ranked)) / len(relevant))
    return np.array(rr), np.array(recall)


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    from rerank_eval import bootstrap
    from scipy.stats import ttest_rel

    diff = b - a
    return {"fp32": float(a.mean()), "int8": float(b.mean()), "diff": float(diff.mean()),
            "ci95": bootstrap(diff), "p": float(ttest_rel(b, a).pvalue) if diff.any() else 1.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "query_precision")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    from one_core import pin_to_one_core

    from convsparse.benchmark_collections import load_collection
    from convsparse.encoders.loading import load_student
    from convsparse.reranking.config import RerankConfig
    from convsparse.reranking.labels import term_maps_to_csr
    from convsparse.settings import get_settings
    from convsparse.training.anchored import encode_corpus, split_tasks, top_candidates

    col = load_collection(args.data)
    split = split_tasks(col.conversations, col.qrels,
                        RerankConfig(output_dir=args.out.parent, collection=args.data))
    judged = [t for t in split.train + split.validation
              if t.fields.get("source") == "mtrag" and t.id in col.qrels]
    heldout = split.heldout
    students = {p: load_student(None, runtime="onnx", device="cpu", query_precision=p)
                for p in ("fp32", "int8")}
    doc_ids = list(col.corpus)
    docs = encode_corpus(students["fp32"].base, [col.corpus[d].encoded_text for d in doc_ids],
                         cache=get_settings().cache_dir / "corpus")
    quality = {}
    for name, tasks in (("dev", judged), ("held-out", heldout)):
        scores = {}
        for p, student in students.items():
            maps = student.encode_conversations([list(t.turns) for t in tasks]).term_maps
            top, _ = top_candidates(docs, term_maps_to_csr(maps, student.vocabulary), 100)
            scores[p] = per_turn(col.qrels, top, doc_ids, tasks)
        quality[name] = {"turns": len(tasks),
                         "mrr@10": compare(scores["fp32"][0], scores["int8"][0]),
                         "recall@100": compare(scores["fp32"][1], scores["int8"][1])}

    pin_to_one_core()  # sessions opened from here on run one thread
    students = {p: load_student(None, runtime="onnx", device="cpu", query_precision=p)
                for p in ("fp32", "int8")}
    conversations = [list(t.turns) for t in judged]
    for student in students.values():
        student.encode_conversation(conversations[0])  # warm-up
    cpu: dict[str, list[float]] = {p: [] for p in students}
    for conversation in conversations:
        for p, student in students.items():
            start = time.process_time()
            student.encode_conversation(conversation)
            cpu[p].append((time.process_time() - start) * 1000)
    ratio = np.array(cpu["int8"]) / np.array(cpu["fp32"])
    speed = {p: {"p50": float(np.median(v)), "p95": float(np.percentile(v, 95))} for p, v in cpu.items()}
    graph = students["int8"].query_base.onnx_path
    result = {"quality": quality, "encode_cpu_ms": speed, "median_ratio_int8_to_fp32": float(np.median(ratio)),
              "turns_timed": len(conversations), "int8_graph": graph.name,
              "int8_graph_mb": round(graph.stat().st_size / 1e6, 1),
              "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(res: dict) -> str:
    lines = ["# Conversations in int8 or float32 (documents float32 either way)", "",
             "| turns | metric | float32 | int8 | diff [95% CI] | p |", "|---|---|---:|---:|---|---:|"]
    for name, q in res["quality"].items():
        for metric in ("mrr@10", "recall@100"):
            m = q[metric]
            lines.append(f"| {name} ({q['turns']}) | {metric} | {m['fp32']:.4f} | {m['int8']:.4f} | "
                         f"{m['diff']:+.4f} [{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}] | {m['p']:.3f} |")
    s = res["encode_cpu_ms"]
    lines += ["", "| conversation encoding, one core | float32 | int8 | median per-turn ratio |",
              "|---|---:|---:|---:|",
              f"| CPU ms p50 / p95 ({res['turns_timed']} dev turns) | {s['fp32']['p50']:.1f} / "
              f"{s['fp32']['p95']:.1f} | {s['int8']['p50']:.1f} / {s['int8']['p95']:.1f} | "
              f"{res['median_ratio_int8_to_fp32']:.2f} |", "",
              f"First stage: exact search over the whole corpus, the shipped student. The int8 graph "
              f"(`{res['int8_graph']}`, {res['int8_graph_mb']} MB) quantizes the matrix products and "
              f"the embeddings. Load average at the end (1/5/15 min): {res['loadavg_1_5_15']} on "
              f"{res['cpus']} CPUs (shared machine: CPU time, not wall time, is reported)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
