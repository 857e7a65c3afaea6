"""Cross-validation of re-ranker recipes on the dev conversations, side by side, in one command.

    python benchmarks/rerank_cv.py --config rerank.yaml \
        --variant recipe --variant "no windows:semantic_window=null"

The held-out conversations are never read: the turns are the recipe's training and validation
labels (`make_labels`, generated into the config's `output_dir` when missing, as
`convsparse rerank train` does). They are dealt into `--folds` folds by conversation, MTRAG
and MTRAG-UN conversations separately so every fold has both. Each variant (the config with
some keys changed: ``name:key=value,key=value``, values read as YAML) trains one re-ranker a
fold with the training loop of `convsparse rerank train` (a fixed `epochs`, the last kept)
and scores the fold it did not see. Reported: MRR@10 and nDCG@3 of the pooled folds, on the
MTRAG turns (the benchmark's own) and on all judged turns; each fold's MRR@10 gain over the
first stage on the MTRAG turns; and a paired t-test (ranx) of each variant against the first.

Writes benchmarks/results/rerank_cv.{json,md} (``--out`` to change).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
METRICS = ["mrr@10", "ndcg@3"]


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, changes = text.partition(":")
    updates = {}
    for pair in filter(None, changes.split(",")):
        key, eq, value = pair.partition("=")
        if not eq:
            raise SystemExit(f"variant {text!r}: {pair!r} is not key=value")
        updates[key.strip()] = yaml.safe_load(value)
    return name.strip(), updates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, required=True, help="a RerankConfig YAML")
    ap.add_argument("--variant", action="append", default=[],
                    help="name[:key=value,...] (repeat; default: the config as it is)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fold-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "rerank_cv")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from ranx import Qrels, Run, compare

    from convsparse.evaluation.metrics import compute_metrics, per_query_metric
    from convsparse.reranking.config import RerankConfig
    from convsparse.reranking.training import (
        load_vector_cache,
        make_labels,
        make_optimizer,
        prepare,
        reranker_for,
        train_epoch,
    )

    base_cfg = RerankConfig.from_file(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_labels, val_labels, col, conversations = make_labels(base_cfg)
    labels = [*train_labels, *val_labels]
    texts = {d: p.encoded_text for d, p in col.corpus.items()}
    tasks = {t.id: t for t in col.conversations}

    def conversation(task_id: str) -> str:
        return tasks[task_id].conversation_id or task_id

    fold_of: dict[str, int] = {}
    def source(task_id: str) -> str:  # as the split reads it: no source = the benchmark's own
        return str(tasks[task_id].fields.get("source", base_cfg.heldout_source))

    for name in sorted({source(lab.task_id) for lab in labels}):
        ids = sorted({conversation(lab.task_id) for lab in labels if source(lab.task_id) == name})
        random.Random(args.fold_seed).shuffle(ids)
        fold_of.update({c: i % args.folds for i, c in enumerate(ids)})
    judged = [lab.task_id for lab in labels if lab.task_id in col.qrels]
    mtrag = [q for q in judged if source(q) == base_cfg.heldout_source]
    first = {lab.task_id: dict(zip(lab.candidates, lab.first_stage)) for lab in labels}

    def fold_gains(run: dict) -> list[float]:
        per_run = per_query_metric(col.qrels, run, "mrr@10")
        per_first = per_query_metric(col.qrels, first, "mrr@10")
        gains = [[per_run.get(q, 0.0) - per_first.get(q, 0.0) for q in mtrag
                  if fold_of[conversation(q)] == f] for f in range(args.folds)]
        return [float(np.mean(g)) if g else None for g in gains]  # None: no MTRAG turn there

    runs = {"first stage": first}
    rows = []
    variants = [parse_variant(v) for v in args.variant] or [("config", {})]
    for name, updates in variants:
        cfg = RerankConfig.model_validate({**base_cfg.model_dump(), **updates,
                                           "progress": False})
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        reranker = reranker_for(cfg, texts.values())
        if reranker.semantic is not None:
            cache = load_vector_cache(cfg.output_dir, reranker.semantic)
        prepared = prepare(reranker, labels, texts, conversations, cfg.depth, progress=True)
        if reranker.semantic is not None:
            reranker.semantic.save_vectors(cache)
        run: dict[str, dict[str, float]] = {}
        for fold in range(args.folds):
            model = copy.deepcopy(reranker.model)  # the same start in every fold
            opt = make_optimizer(model, cfg)
            rng = random.Random(cfg.seed)
            train = [ex for ex in prepared if fold_of[conversation(ex.label.task_id)] != fold]
            for _ in range(cfg.epochs):
                train_epoch(model, opt, train, cfg, rng)
            model.eval()
            with torch.inference_mode():
                for ex in prepared:
                    if fold_of[conversation(ex.label.task_id)] == fold:
                        scores = model(**ex.inputs).tolist()
                        run[ex.label.task_id] = dict(zip(ex.label.candidates, scores))
            print(f"{name}: fold {fold + 1}/{args.folds} done", file=sys.stderr, flush=True)
        runs[name] = run
        rows.append({"variant": name, "changes": updates,
                     "mtrag": compute_metrics(col.qrels, run, METRICS, query_ids=mtrag),
                     "all": compute_metrics(col.qrels, run, METRICS, query_ids=judged),
                     "mrr@10_gain_by_fold": fold_gains(run)})
        print(json.dumps(rows[-1]), flush=True)

    qrels = Qrels({q: dict(col.qrels[q]) for q in mtrag})
    report = compare(qrels, [Run({q: dict(r[q]) for q in mtrag}, name=n) for n, r in runs.items()],
                     metrics=METRICS, stat_test="student", max_p=0.05)
    pvalues = report.to_dict()
    reference = rows[0]["variant"]
    for row in rows[1:]:
        row["p_vs_" + reference] = {m: float(pvalues[row["variant"]]["comparisons"][reference][m])
                                    for m in METRICS}
    result = {"folds": args.folds, "fold_seed": args.fold_seed, "mtrag_turns": len(mtrag),
              "judged_turns": len(judged), "config": str(args.config),
              "first_stage": {"mtrag": compute_metrics(col.qrels, first, METRICS, query_ids=mtrag),
                              "all": compute_metrics(col.qrels, first, METRICS, query_ids=judged)},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"# Re-ranker cross-validation on the dev conversations ({args.folds} folds by "
             f"conversation, fold seed {args.fold_seed})", "",
             f"{len(mtrag)} MTRAG turns, {len(judged)} judged turns in all; the first stage "
             f"scores {result['first_stage']['mtrag']['mrr@10']:.3f} / "
             f"{result['first_stage']['mtrag']['ndcg@3']:.3f} (MRR@10 / nDCG@3) on the MTRAG "
             "turns. p: paired t-test on the MTRAG turns against the first variant.", "",
             "| variant | MTRAG MRR@10 | MTRAG nDCG@3 | all MRR@10 | all nDCG@3 | "
             "gain by fold (MRR@10) | p (MRR@10 / nDCG@3) |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for row in rows:
        p = row.get("p_vs_" + reference)
        lines.append(
            f"| {row['variant']} | {row['mtrag']['mrr@10']:.3f} | {row['mtrag']['ndcg@3']:.3f} | "
            f"{row['all']['mrr@10']:.3f} | {row['all']['ndcg@3']:.3f} | "
            + ", ".join("-" if g is None else f"{g:+.3f}" for g in row["mrr@10_gain_by_fold"])
            + " | "
            + (f"{p['mrr@10']:.3f} / {p['ndcg@3']:.3f}" if p else "") + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
