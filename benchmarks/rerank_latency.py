"""The rerank stage's latency of several re-rankers, side by side, on training turns.

    python benchmarks/rerank_latency.py --labels runs/rr/labels.jsonl \
        --reranker runs/rr/reranker --reranker runs/rr-whole/reranker

For comparing re-rankers' cost without reading the held-out conversations (their quality is
`rerank_eval.py`'s job): the turns are a training run's label file (`labels.jsonl`: each turn's
first-stage candidates, scores and term map; its conversations come from ``--collection``).
Each re-ranker loads in ONNX Runtime (``--runtime``), its candidates' passage vectors are
stored first (as after `convsparse rerank vectors`), then the process is pinned to one CPU
core and the re-rankers score each turn in turn, interleaved (this machine is noisy): p50 /
p95 per re-ranker and the median per-turn ratio of each to the first.

Writes benchmarks/results/rerank_latency.{json,md} (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mtrag-pooled"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--labels", type=Path, required=True, help="a training run's labels.jsonl")
    ap.add_argument("--collection", type=Path, default=DATA)
    ap.add_argument("--reranker", type=Path, action="append", required=True,
                    help="re-ranker folder (repeat to compare)")
    ap.add_argument("--turns", type=int, default=120)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--runtime", choices=["onnx", "torch"], default="onnx")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "rerank_latency")
    args = ap.parse_args(argv)
    if not args.collection.is_dir():
        print(f"no collection at {args.collection}", file=sys.stderr)
        return 2

    import numpy as np
    import torch

    from convsparse.benchmark_collections import load_collection
    from convsparse.evaluation.metrics import latency_summary
    from convsparse.reranking import load_reranker
    from convsparse.reranking.labels import read_labels

    col = load_collection(args.collection)
    texts = {d: p.encoded_text for d, p in col.corpus.items()}
    conversations = {t.id: list(t.turns) for t in col.conversations}
    labels = [lab for lab in read_labels(args.labels) if lab.task_id in conversations][:args.turns]
    if not labels:
        print(f"{args.labels}: no turn of {args.collection}", file=sys.stderr)
        return 2
    names = [p.parent.name if p.name == "reranker" else p.name for p in args.reranker]
    models = {n: load_reranker(p, runtime=args.runtime) for n, p in zip(names, args.reranker)}
    wanted = sorted({texts[d] for lab in labels for d in lab.candidates[:args.depth]})
    for rr in models.values():  # on every core this process has: embedding is bulk work
        if rr.semantic is not None:
            rr.semantic.add(wanted, progress=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from one_core import pin_to_one_core

    pin_to_one_core()  # the budget is one core
    torch.set_num_threads(1)

    def score(rr, lab) -> float:
        t = time.perf_counter()
        rr.score(conversations[lab.task_id], lab.query,
                 [texts[d] for d in lab.candidates[:args.depth]], lab.first_stage[:args.depth])
        return (time.perf_counter() - t) * 1000

    for rr in models.values():
        score(rr, labels[0])  # the first call pays for lazy initialisation
    times: dict[str, list[float]] = {n: [] for n in models}
    for lab in labels:
        for n, rr in models.items():
            times[n].append(score(rr, lab))
    first = np.array(times[names[0]])
    rows = [{"reranker": n, "path": str(p), "latency_ms": latency_summary(times[n]),
             f"median_ratio_to_{names[0]}": float(np.median(np.array(times[n]) / first))}
            for n, p in zip(names, args.reranker)]
    result = {"turns": len(labels), "depth": args.depth, "runtime": args.runtime, "threads": 1,
              "labels": str(args.labels), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"# Rerank stage latency, side by side ({len(labels)} training turns, depth "
             f"{args.depth}, {args.runtime}, one core, interleaved turn by turn)", "",
             f"| re-ranker | p50 ms | p95 ms | median per-turn ratio to {names[0]} |",
             "|---|---:|---:|---:|"]
    for row in rows:
        lat = row["latency_ms"]
        lines.append(f"| {row['reranker']} | {lat['p50']:.1f} | {lat['p95']:.1f} | "
                     f"{row[f'median_ratio_to_{names[0]}']:.3f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
