"""Distillation ablation on the held-out MTRAG conversations (CPU, tiny budget).

    python benchmarks/distill_ablation.py [--data ../shared/data] [--steps 40] [--threads 2]

Rows: the base student on the raw conversation (before distillation), the teachers on the
rewrite (student, BM25, dense MiniLM, their multi-teacher average), then the student distilled
with KLD only (w = 0), KLD + InfoNCE (w = 0.1), and KLD + InfoNCE + L1 on queries at two
strengths. Documents are encoded once by the base student and frozen (the seed's setting).
Writes benchmarks/results/distill_ablation.{json,md}; the best run's student stays in
<work-dir>/<row>/final for shipping.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/convsparse-distill-ablation"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--cast-limit", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distill_ablation")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from convsparse.evaluation.metrics import read_trec_run
    from convsparse.training.config import DistillConfig
    from convsparse.training.fusion import average_runs
    from convsparse.training.trainer import Trainer, distill, evaluate_scores

    mtrag, cast = args.data / "mtrag", args.data / "cast"
    if not (mtrag / "corpus.jsonl").exists():
        raise SystemExit(f"no data at {mtrag}; pass --data")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    common = dict(
        student=None, corpus=mtrag / "corpus.jsonl", qrels=mtrag / "qrels.tsv",
        conversations=[{"path": mtrag / "conversations.jsonl"}]
        + ([{"path": cast / "conversations.jsonl", "limit": args.cast_limit, "train_only": True}]
           if (cast / "conversations.jsonl").exists() and args.cast_limit > 0 else []),
        holdout_fraction=0.2, teachers=["student", "bm25", "dense"], teacher_runs_dir=work / "teacher_runs",
        n_negatives=16, rank_window=(10, 960), steps=args.steps, batch_size=args.batch_size,
        learning_rate=args.lr, max_length=args.max_length, warmup_steps=max(1, args.steps // 4),
        checkpoint_every=max(1, args.steps), seed=0, device="cpu", threads=args.threads, resume=False,
    )

    # 1. documents once (frozen), cached between invocations
    doc_cache = work / "doc_matrix.npz"
    probe = Trainer(DistillConfig(output_dir=work / "probe", **common))
    if doc_cache.exists():
        doc_matrix = np.load(doc_cache)["m"]
    else:
        doc_matrix = probe.doc_activations()
        np.savez_compressed(doc_cache, m=doc_matrix)
    t_docs = time.time() - t_start

    # 2. teachers on the held-out rewrites (runs cached as TREC files)
    probe.teacher_runs(probe.student, doc_matrix)
    rows: list[dict] = []
    test_ids = [t.task_id for t in probe.test]
    idx = {d: i for i, d in enumerate(probe.doc_ids)}
    runs = {}
    for name in ("student", "bm25", "dense"):
        runs[name] = read_trec_run(next((work / "teacher_runs").glob(f"{name}-*.trec")))
    runs["multi (z-avg)"] = average_runs([runs["student"], runs["bm25"], runs["dense"]])
    rewrite_ids = {t.task_id for t in probe.test if t.has_rewrite}
    for name, run in runs.items():
        scores = np.full((len(test_ids), len(idx)), -1e9, dtype=np.float32)
        for i, q in enumerate(test_ids):
            for d, s in run.get(q, {}).items():
                scores[i, idx[d]] = s
        m = evaluate_scores(scores, test_ids, probe.doc_ids, probe.qrels)
        sub = [i for i, q in enumerate(test_ids) if q in rewrite_ids]
        m["rewrite_subset"] = evaluate_scores(scores[sub], [test_ids[i] for i in sub], probe.doc_ids, probe.qrels)
        rows.append({"row": f"teacher: {name} on rewrite", "metrics": m})

    # 3. distillation variants
    variants = [
        ("KLD only (w=0)", dict(infonce_weight=0.0)),
        ("KLD + InfoNCE (w=0.1)", dict(infonce_weight=0.1)),
        ("KLD + InfoNCE + L1 q (lambda_q=1e-3)", dict(infonce_weight=0.1, lambda_q=1e-3)),
        ("KLD + InfoNCE + L1 q (lambda_q=1e-2)", dict(infonce_weight=0.1, lambda_q=1e-2)),
    ]
    def write(done: int) -> None:
        result = {
            "setup": {
                "data": "MTRAG (1,488 passages, 409 tasks; 20% of judged conversations held out by "
                        "conversation_id, seed 0) + CAsT conversations as extra train-only pairs",
                "cast_limit": args.cast_limit, "train_tasks": len(probe.train),
                "heldout_tasks": len(probe.test), "heldout_with_rewrite": len(rewrite_ids),
                "teacher": "z-score average of student, BM25 and dense MiniLM on the rewrite "
                           "(last user turn where a task has no rewrite)",
                "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                "lr": args.lr, "n_negatives": 16, "rank_window": [10, 960], "threads": args.threads,
                "device": "cpu (2 shared cores)", "doc_encoding_seconds": round(t_docs, 1),
                "total_seconds": round(time.time() - t_start, 1),
                "variants_done": f"{done}/{len(variants)}",
            },
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
        args.out.with_suffix(".md").write_text(to_markdown(result))
        print(to_markdown(result), flush=True)

    for i, (label, extra) in enumerate(variants):
        slug = f"v{i}"
        t0 = time.time()
        cfg = DistillConfig(output_dir=work / slug, **{**common, **extra})
        res = distill(cfg, doc_matrix=doc_matrix, evaluate_baselines=(i == 0))
        if i == 0:
            rows.insert(0, {"row": "base student on raw conversation (before distillation)",
                            "metrics": res.metrics["heldout_before"]})
            rows.insert(1, {"row": "base student on rewrite (teacher, full ranking)",
                            "metrics": res.metrics["heldout_before_student_on_rewrite"]})
        losses = [r["loss"] for r in res.log]
        rows.append({"row": label, "metrics": res.metrics["heldout_after"], "dir": str(res.model_dir),
                     "seconds": round(time.time() - t0, 1),
                     "loss_first10": float(np.mean(losses[:10])), "loss_last10": float(np.mean(losses[-10:]))})
        write(i + 1)



def to_markdown(result: dict) -> str:
    s = result["setup"]
    lines = [
        "# Distillation ablation (held-out MTRAG conversations, CPU)", "",
        f"{s['heldout_tasks']} held-out tasks ({s['heldout_with_rewrite']} with a rewrite), "
        f"{s['train_tasks']} training tasks; {s['steps']} steps x batch {s['batch_size']}, "
        f"max_length {s['max_length']}, lr {s['lr']}, {s['device']}; teacher: {s['teacher']}.", "",
        "| system | MRR@10 | nDCG@3 | R@100 | FLOPS | q terms | MRR@10 (rewrite subset) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        m = r["metrics"]
        def f(k, m=m):
            return f"{m[k]:.3f}" if isinstance(m.get(k), (int, float)) else "-"
        sub = m.get("rewrite_subset", {}).get("mrr@10")
        lines.append(f"| {r['row']} | {f('mrr@10')} | {f('ndcg@3')} | {f('recall@100')} | "
                     f"{f('flops')} | {m['avg_query_terms']:.0f} |" if "avg_query_terms" in m else
                     f"| {r['row']} | {f('mrr@10')} | {f('ndcg@3')} | {f('recall@100')} | - | - |")
        lines[-1] += f" {sub:.3f} |" if sub is not None else " - |"
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
