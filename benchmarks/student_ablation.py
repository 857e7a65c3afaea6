"""The student's ablation table on the benchmark of record, in one command.

    python benchmarks/student_ablation.py                      # ../shared/data/mtrag-pooled
    python benchmarks/student_ablation.py --epochs 6 --seeds 0 1 2 --ship convsparse/models/student

Everything is measured on held-out MTRAG conversations (4 per domain, drawn with seed 13, never
used for training or for any choice); choices (the untrained summed-views weights, the best
teacher, the epoch) are made on the training side. Rows: BM25 on the last turn / rewrite; the
untrained SPLADE-tiny base on each conversation format (whole, user turns, last turn, last turn +
previous answer) and the summed-views family with its weights chosen on dev; the teachers;
the anchored student distilled with KL, + InfoNCE, + the term-space loss, + FLOPS at two
strengths, several seeds, and with the rewrite teacher. Paired t-tests (ranx `compare`) of the
students against the best untrained baseline and BM25 on the rewrite; 95% bootstrap intervals.

The corpus is encoded once and cached under $CONVSPARSE_CACHE_DIR/corpus (10.6k passages:
about 10 minutes on one free CPU core). Writes benchmarks/results/student_ablation.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA / "mtrag-pooled")
    ap.add_argument("--cast", type=Path, default=DATA / "cast" / "conversations.jsonl")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "student_ablation")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ship", type=Path, default=None,
                    help="write the chosen student (best validation MRR@10) to this folder")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2

    import scipy.sparse as sp
    import torch
    from ranx import Qrels, Run, compare

    from convsparse.benchmark_collections import load_collection
    from convsparse.encoders.loading import load_student
    from convsparse.evaluation.bm25 import BM25
    from convsparse.evaluation.flops import TermStats, flops
    from convsparse.evaluation.metrics import compute_metrics, per_query_metric
    from convsparse.training.anchored import (
        build_examples,
        encode_corpus,
        encode_texts_csr,
        extra_training_tasks,
        search_matrix,
        split_tasks,
        teacher_text,
        train_gate,
        view_matrices,
    )
    from convsparse.training.config import AnchoredConfig, ConversationSource
    from convsparse.training.fusion import average_runs

    torch.set_num_threads(args.threads)
    t0 = time.time()
    metrics = ["mrr@10", "ndcg@3", "recall@100"]
    base = load_student("splade-tiny", runtime="torch", device="cpu")
    col = load_collection(args.data)
    doc_ids = list(col.corpus)
    docs = encode_corpus(base, [col.corpus[d].encoded_text for d in doc_ids],
                         cache=_cache_dir() / "corpus")
    doc_stats = TermStats.from_sparse(docs)
    cfg0 = AnchoredConfig(output_dir=args.out, collection=args.data, epochs=args.epochs,
                           progress=False,
                           extra_conversations=[ConversationSource(path=args.cast, train_only=True)]
                           if args.cast.is_file() else [])
    split = split_tasks(col.conversations, col.qrels, cfg0)
    own = [t for t in col.conversations if t.fields.get("source") == cfg0.heldout_source]
    heldout_convs = {t.conversation_id for t in split.heldout}
    dev = [t for t in own if t.conversation_id not in heldout_convs and t.id in col.qrels]
    test = split.heldout
    evaluated = dev + test
    print(f"{len(dev)} dev turns, {len(test)} held-out turns; corpus ready {time.time() - t0:.0f}s",
          flush=True)

    # --- query views of every evaluated turn, encoded once
    def turns_text(t, users_only=False):
        newest = [t.turns[-1]] + [x for x in reversed(t.turns[:-1]) if not users_only or x.role == "user"]
        return " [SEP] ".join(x.text for x in newest)

    def last_prev(t):
        prev = next((x.text for x in reversed(t.turns[:-1]) if x.role == "assistant"), "")
        return t.turns[-1].text + (" [SEP] " + prev if prev else "")

    ids = [t.id for t in evaluated]
    fmt_views = {
        "whole conversation, newest first": encode_texts_csr(base, [turns_text(t) for t in evaluated]),
        "user turns, newest first": encode_texts_csr(base, [turns_text(t, True) for t in evaluated]),
        "last user turn": None,
        "last turn + previous answer": encode_texts_csr(base, [last_prev(t) for t in evaluated]),
    }
    current, history = view_matrices(base, evaluated)
    fmt_views["last user turn"] = current
    dev_ids, test_ids = [t.id for t in dev], [t.id for t in test]

    rows: list[dict] = []
    runs: dict[str, dict] = {}

    def add(name, kind, run, queries=None, chosen_on="-"):
        runs[name] = run
        row = {"system": name, "kind": kind, "chosen_on": chosen_on,
               "dev": compute_metrics(col.qrels, run, metrics, query_ids=dev_ids),
               "heldout": compute_metrics(col.qrels, run, metrics, query_ids=test_ids),
               "heldout_no_govt": compute_metrics(col.qrels, run, metrics, query_ids=[
                   t.id for t in test if t.fields.get("domain") != "govt"]),
               "per_domain": {d: compute_metrics(col.qrels, run, metrics, query_ids=[
                   t.id for t in test if t.fields.get("domain") == d])
                   for d in sorted({t.fields.get("domain") for t in test})}}
        if queries is not None:
            qm = queries[[ids.index(i) for i in test_ids]]
            qm = sp.csr_matrix(qm) if not sp.issparse(qm) else qm
            stats = TermStats.from_sparse(qm)
            row["flops"], row["query_terms"] = flops(stats, doc_stats), stats.average_terms
        rows.append(row)
        h = row["heldout"]
        print(f"{name:58s} dev MRR {row['dev']['mrr@10']:.3f} | held-out MRR {h['mrr@10']:.3f} "
              f"nDCG@3 {h['ndcg@3']:.3f} R@100 {h['recall@100']:.3f}", flush=True)
        return row

    def dense(m):
        return m.toarray() if sp.issparse(m) else m

    # --- BM25 baselines
    bm25 = BM25({d: col.corpus[d].encoded_text for d in doc_ids})
    add("BM25, last user turn", "baseline", {t.id: bm25.search(t.turns[-1].text, 100) for t in evaluated})
    add("BM25, LLM rewrite", "teacher", {t.id: bm25.search(t.rewrite or t.turns[-1].text, 100)
                                         for t in evaluated})
    # --- untrained formats
    for name, m in fmt_views.items():
        add(f"SPLADE-tiny untrained, {name}", "baseline", search_matrix(docs, dense(m), doc_ids, ids), m)
    # --- summed-views family: weights chosen on dev MRR@10
    grid = list(itertools.product([0, 0.05, 0.1, 0.15, 0.2, 0.3], [0, 0.05, 0.1], [0, 0.05, 0.1, 0.2]))
    dev_idx = [ids.index(i) for i in dev_ids]
    best = None
    for w in grid:
        q = current[dev_idx] + sum(wi * h[dev_idx] for wi, h in zip(w, history))
        score = compute_metrics(col.qrels, search_matrix(docs, dense(q), doc_ids, dev_ids),
                                ["mrr@10"], query_ids=dev_ids)["mrr@10"]
        if best is None or score > best[0]:
            best = (score, w)
    w = best[1]
    q = current + sum(wi * h for wi, h in zip(w, history))
    add(f"SPLADE-tiny untrained, summed views {w} (context, answer, earlier questions)",
        "best untrained", search_matrix(docs, dense(q), doc_ids, ids), q, chosen_on="dev grid")
    best_untrained = rows[-1]["system"]
    # --- teachers (on the rewrite / the annotators' search queries)
    for teacher in ("rewrite", "search_queries"):
        texts = [teacher_text(t, teacher) or t.turns[-1].text for t in evaluated]
        m = encode_texts_csr(base, texts)
        add(f"teacher: SPLADE-tiny on the {teacher.replace('_', ' ')}", "teacher",
            search_matrix(docs, dense(m), doc_ids, ids), m)
    fused = average_runs([runs["BM25, LLM rewrite"], runs["teacher: SPLADE-tiny on the rewrite"],
                          runs["teacher: SPLADE-tiny on the search queries"]])
    add("teacher: z-averaged fusion of the three", "teacher", fused)

    # --- the anchored student: precompute once per teacher, train each variant
    extra = extra_training_tasks(cfg0)
    train = split.train + extra
    val_ids = [t.id for t in split.validation]
    val_cur, val_hist = view_matrices(base, split.validation)

    def gate_q(gate, cur, hist):
        with torch.no_grad():
            return gate(torch.from_numpy(dense(cur).astype(np.float32)),
                        torch.stack([torch.from_numpy(dense(h).astype(np.float32)) for h in hist], 1)
                        ).numpy()

    def validate(gate):
        run = search_matrix(docs, gate_q(gate, val_cur, val_hist), doc_ids, val_ids)
        return compute_metrics(col.qrels, run, ["mrr@10"], query_ids=val_ids)["mrr@10"]

    examples = {}
    variants = [
        ("KLD", dict(infonce_weight=0.0)),
        ("KLD + InfoNCE", {}),
        ("KLD + InfoNCE + term", dict(term_weight=0.02)),
        ("KLD + InfoNCE + term + FLOPS 0.3", dict(term_weight=0.02, flops_weight=0.3)),
        ("KLD + InfoNCE + term + FLOPS 3", dict(term_weight=0.02, flops_weight=3.0)),
        ("KLD + InfoNCE, rewrite teacher", dict(teacher="rewrite")),
    ]
    students = []
    for label, over in variants:
        seeds = args.seeds if label == "KLD + InfoNCE" else args.seeds[:1]
        for seed in seeds:
            cfg = cfg0.model_copy(update={**over, "seed": seed})
            if cfg.teacher not in examples:
                examples[cfg.teacher] = build_examples(base, docs, doc_ids, train, col.qrels, cfg)
            gate, hist = train_gate(examples[cfg.teacher], docs, cfg, validate, log=lambda s: None)
            q = gate_q(gate, current, history)
            row = add(f"anchored student: {label}, seed {seed}", "student",
                      search_matrix(docs, q, doc_ids, ids), sp.csr_matrix(q))
            row["validation_mrr@10"] = max(hist)
            row["config"] = {k: v for k, v in json.loads(cfg.model_dump_json()).items()
                             if k not in ("output_dir", "collection", "extra_conversations")}
            students.append((max(hist), row["system"], gate, cfg))

    # --- significance and intervals on the held-out part
    qrels = Qrels({q: col.qrels[q] for q in test_ids})

    def ranx_run(name):
        r = Run({q: runs[name][q] or {"-": 0.0} for q in test_ids})
        r.name = name
        return r

    chosen = max(students, key=lambda s: s[0])
    contenders = [best_untrained, "BM25, LLM rewrite", "teacher: SPLADE-tiny on the rewrite"]
    report = compare(qrels, [ranx_run(n) for n in contenders + [chosen[1]]], metrics=metrics,
                     stat_test="student", max_p=0.05)
    pvalues = {m: {n: float(report.comparisons[chosen[1], n][m]["p_value"]) for n in contenders}
               for m in metrics}
    rng = np.random.default_rng(0)
    intervals = {}
    for m in metrics:
        per = np.array(list(per_query_metric(qrels_dict(col.qrels, test_ids), runs[chosen[1]], m).values()))
        boots = [per[rng.integers(0, len(per), len(per))].mean() for _ in range(2000)]
        intervals[m] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]

    if args.ship is not None:
        args.ship.mkdir(parents=True, exist_ok=True)
        chosen[2].save(args.ship, base="splade-tiny")
    result = {"rows": rows, "chosen": chosen[1], "chosen_by": "validation MRR@10 (training side)",
              "p_values_vs": pvalues, "bootstrap_95": intervals, "best_untrained": best_untrained,
              "heldout_turns": len(test_ids), "dev_turns": len(dev_ids),
              "heldout_conversations": sorted(heldout_convs), "epochs": args.epochs,
              "seconds": round(time.time() - t0)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    Path(f"{args.out}.md").write_text(markdown(result) + "\n")
    print(report)
    print(f"wrote {args.out}.json/.md in {time.time() - t0:.0f}s")
    return 0


def qrels_dict(qrels, ids):
    return {q: qrels[q] for q in ids if q in qrels}


def _cache_dir() -> Path:
    from convsparse.settings import get_settings

    return get_settings().cache_dir


def markdown(res: dict) -> str:
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    out = [f"# Student ablation on mtrag-pooled ({res['heldout_turns']} held-out MTRAG turns from "
           f"{len(res['heldout_conversations'])} conversations never used; {res['dev_turns']} dev "
           f"turns for choices)", "",
           "| system | dev MRR@10 | MRR@10 | nDCG@3 | R@100 | no-govt MRR@10 | q terms | FLOPS |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        h = r["heldout"]
        name = f"**{r['system']}**" if r["system"] == res["chosen"] else r["system"]
        out.append(f"| {name} | {f(r['dev']['mrr@10'])} | {f(h['mrr@10'])} | {f(h['ndcg@3'])} | "
                   f"{f(h['recall@100'])} | {f(r['heldout_no_govt']['mrr@10'])} | "
                   f"{f(r.get('query_terms'))} | {f(r.get('flops'))} |")
    out += ["", f"Chosen student ({res['chosen_by']}): {res['chosen']}.", "",
            "Paired t-test p-values of the chosen student against:", "",
            "| against | " + " | ".join(res["p_values_vs"]) + " |",
            "|---|" + "---:|" * len(res["p_values_vs"])]
    for n in next(iter(res["p_values_vs"].values())):
        out.append(f"| {n} | " + " | ".join(f"{res['p_values_vs'][m][n]:.4f}"
                                             for m in res["p_values_vs"]) + " |")
    out += ["", "95% bootstrap intervals of the chosen student: " + ", ".join(
        f"{m} [{lo:.3f}, {hi:.3f}]" for m, (lo, hi) in res["bootstrap_95"].items()), "",
        "Per domain (held-out MRR@10):", "", "| system | " + " | ".join(
            next(iter(res["rows"]))["per_domain"]) + " |",
        "|---|" + "---:|" * len(next(iter(res["rows"]))["per_domain"])]
    for r in res["rows"]:
        if r["kind"] in ("best untrained", "teacher") or r["system"] == res["chosen"] or \
                r["system"].startswith("BM25"):
            out.append(f"| {r['system']} | " + " | ".join(
                f(v["mrr@10"]) for v in r["per_domain"].values()) + " |")
    out += ["", "MTRAG-UN tasks are training data for the students here, so they are not "
            "reported; every figure above is on conversations no student or choice saw."]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
