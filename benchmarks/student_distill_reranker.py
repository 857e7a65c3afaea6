"""Does distilling the re-ranker into the first stage's query side help? 5-fold cross-validation
by conversation over the dev side of mtrag-pooled, in one command.

    python benchmarks/student_distill_reranker.py --reranker runs/rr/reranker --cache runs/distil

The teacher (`convsparse.training.teachers.reranker`): the re-ranker's scores over the shipped
first stage's top `--depth` (50) for every non-held-out MTRAG turn, generated once through the
re-ranker's label path and cached (`<cache>/labels-d<depth>.jsonl`, with the passage vectors it
embedded). Give it a re-ranker trained WITHOUT the held-out conversations (the recipe's
defaults: holdout_per_domain 4, seed 13); it did see the dev turns' judgments, which is why it
only labels, and only training folds' labels are ever trained on.

Cross-validation as `student_gate_cv.py`: the 274 judged dev turns (38 conversations; the
held-out ones excluded and never read) in 5 folds by conversation; each fold's gate trains on
the other folds' labelled turns only (the teacher exists for MTRAG turns), and every dev turn
is scored by a gate that never saw its conversation. Epoch 0 is the untrained gate, i.e. the
shipped first stage. Losses are the anchored recipe's (`GateObjective`): KL over the teacher's
candidates at a temperature, InfoNCE on judged positives, FLOPS. The teacher's scores are
divided by `teacher_scale` before the shared temperature, so the re-ranker's score range meets
the student's dot products. Reported per variant and epoch: pooled MRR@10 and R@100, and for
the best epoch by MRR@10 paired t-tests over turns against epoch 0 (the best epoch is chosen on
the same turns: an optimistic figure, which only matters if a variant looks better).
Writes benchmarks/results/student_distill_reranker.{json,md,png}.

`--extra mtrag-un,cast` adds train-only turns, labelled by the same teacher at the same depth
and cached per source (`<cache>/labels-<source>-d<depth>.jsonl`; the MTRAG file is unchanged):
the mtrag-pooled tasks of source "mtrag-un" (judged: KL and InfoNCE) and the TREC CAsT turns
of `--cast` (no qrels: searched over the same corpus, KL only; `--cast-conversations N` labels
a seeded subset of N conversations instead of all). They are never scored. Fifteen MTRAG-UN
tasks open with the first question of an MTRAG conversation (the same conversation under
another id, `continued_mtrag_conversation`): those continuing a held-out conversation are
dropped, the others train only in the folds where that conversation is not tested. Writes
..._extra.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
#: the train-only sources `--extra` can add
EXTRA_SOURCES = ("mtrag-un", "cast")


def make_labels(args, col, tasks, docs, log, source: str = "mtrag", teacher: dict | None = None):
    """The re-ranker teacher's labels for `tasks` (of `source`), cached under `args.cache`:
    ``labels-d<depth>.jsonl`` for MTRAG, ``labels-<source>-d<depth>.jsonl`` for the others.
    `teacher`: a dict the loaded re-ranker and first stage are kept in between sources."""
    from convsparse.encoders.loading import load_student
    from convsparse.reranking.labels import read_labels, write_labels
    from convsparse.reranking.reranker import load_reranker
    from convsparse.training.teachers.reranker import reranker_labels

    stem = f"labels-d{args.depth}" if source == "mtrag" else f"labels-{source}-d{args.depth}"
    path = args.cache / f"{stem}.jsonl"
    if path.exists():
        labels = {lab.task_id: lab for lab in read_labels(path)}
        if all(t.id in labels for t in tasks):
            return labels, json.loads((args.cache / f"{stem}-cost.json").read_text())
    teacher = {} if teacher is None else teacher
    vectors = args.cache / "passage_vectors-w128s96.safetensors"
    t0 = time.time()
    if not teacher:
        teacher["reranker"] = load_reranker(args.reranker, runtime="torch")  # as the cached labels were made
        for f in (vectors, *args.vectors):
            if f.is_file():
                teacher["reranker"].semantic.merge_vectors(f)
        teacher["first_stage"] = load_student(runtime="torch", device="cpu")
    rr = teacher["reranker"]
    stored = len(rr.semantic.store)
    t1 = time.time()
    texts = {d: p.encoded_text for d, p in col.corpus.items()}
    labels = reranker_labels(tasks, texts, reranker=rr, first_stage=teacher["first_stage"],
                             depth=args.depth, documents=docs, qrels=col.qrels, progress=True)
    t2 = time.time()
    rr.semantic.save_vectors(vectors)
    write_labels(labels, path)
    cost = {"source": source, "turns": len(tasks), "depth": args.depth,
            "passages_embedded": len(rr.semantic.store) - stored,
            "seconds_loading": round(t1 - t0, 1), "seconds_labelling": round(t2 - t1, 1)}
    (args.cache / f"{stem}-cost.json").write_text(json.dumps(cost) + "\n")
    log(f"labels: {cost}")
    return {lab.task_id: lab for lab in labels}, cost


def continued_mtrag_conversation(tasks, mtrag_tasks) -> dict[str, str]:
    """{task id: MTRAG conversation id} for each of `tasks` whose first user question opens an
    MTRAG conversation: mtrag-pooled holds some conversations twice, as MTRAG turns and as an
    MTRAG-UN task under another id (often with the same questions up to its last)."""
    def opening(t) -> str:
        return next(x.text for x in t.turns if x.role == "user").strip().lower()

    opens = {opening(t): t.conversation_id or t.id for t in mtrag_tasks}
    return {t.id: opens[opening(t)] for t in tasks if opening(t) in opens}


def extra_tasks(args, col, held_out: set[str], mtrag_conversations: set[str], log):
    """The train-only tasks of `args.extra` by source, {task id: the dev MTRAG conversation it
    continues}, and how many tasks of each source were dropped: MTRAG-UN tasks continuing a
    held-out conversation (only the held-out conversations' opening questions are read, to
    find them)."""
    from convsparse.benchmark_collections import load_conversations

    wanted = [s for s in args.extra.split(",") if s]
    unknown = set(wanted) - set(EXTRA_SOURCES)
    if unknown:
        raise SystemExit(f"--extra: unknown source(s) {sorted(unknown)}; known: {EXTRA_SOURCES}")
    out, continued, dropped = {}, {}, {}
    if "mtrag-un" in wanted:
        un = [t for t in col.conversations if t.fields.get("source") == "mtrag-un"]
        every_mtrag = [t for t in col.conversations if t.fields.get("source") == "mtrag"]
        cont = continued_mtrag_conversation(un, every_mtrag)
        out["mtrag-un"] = [t for t in un if cont.get(t.id) not in held_out]
        dropped["mtrag-un"] = len(un) - len(out["mtrag-un"])
        continued = {q: c for q, c in cont.items() if c in mtrag_conversations}
        log(f"mtrag-un: {len(un)} tasks, {len(cont)} continue an MTRAG conversation, "
            f"{dropped['mtrag-un']} of them a held-out one (dropped)")
    if "cast" in wanted:
        cast = load_conversations(args.cast)
        if args.cast_conversations:
            convs = sorted({t.conversation_id or t.id for t in cast})
            keep = set(random.Random(args.seed).sample(convs, min(args.cast_conversations, len(convs))))
            cast = [t for t in cast if (t.conversation_id or t.id) in keep]
        out["cast"] = cast
    return out, continued, dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA / "mtrag-pooled")
    ap.add_argument("--reranker", type=Path, required=True,
                    help="a re-ranker folder trained without the held-out conversations")
    ap.add_argument("--vectors", type=Path, nargs="*", default=[],
                    help="passage-vector files (`save_vectors`) to start from")
    ap.add_argument("--cache", type=Path, required=True, help="labels and vectors go here")
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--labels-only", action="store_true")
    ap.add_argument("--heldout", action="store_true",
                    help="instead of cross-validation: train each gate variant on every labelled "
                         "turn for --epochs epochs, then score the held-out turns once (the only "
                         "read of them); writes ..._heldout")
    ap.add_argument("--variants", default="", help="comma-separated indices of the variants to run (default all)")
    ap.add_argument("--extra", default="",
                    help=f"comma-separated train-only sources to label and add ({', '.join(EXTRA_SOURCES)})")
    ap.add_argument("--cast", type=Path, default=DATA / "cast" / "conversations.jsonl")
    ap.add_argument("--cast-conversations", type=int, default=0,
                    help="label only this many CAsT conversations, drawn with --seed (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="draws the CAsT subset")
    ap.add_argument("--out", type=Path, default=None,
                    help="default benchmarks/results/student_distill_reranker (depth 50) or "
                         "..._d<depth>")
    args = ap.parse_args(argv)
    if args.out is None:
        name = ("student_distill_reranker" + ("" if args.depth == 50 else f"_d{args.depth}")
                + ("_extra" if args.extra else "") + ("_heldout" if args.heldout else ""))
        args.out = REPO / "benchmarks" / "results" / name
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    args.cache.mkdir(parents=True, exist_ok=True)

    import scipy.sparse as sp
    import torch
    from scipy.stats import ttest_rel
    from student_gate_cv import rich_gate_class

    from convsparse.benchmark_collections import load_collection
    from convsparse.encoders.anchored import AnchoredGate
    from convsparse.encoders.loading import load_student, shipped_student_dir
    from convsparse.evaluation.metrics import per_query_metric
    from convsparse.settings import get_settings
    from convsparse.training.anchored import (
        AnchoredExample,
        _dense,
        encode_corpus,
        search_matrix,
        split_tasks,
        view_matrices,
    )
    from convsparse.training.config import AnchoredConfig

    torch.set_num_threads(args.threads)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:5.0f}s] {msg}", flush=True)

    base = load_student("splade-tiny", runtime="torch", device="cpu")
    col = load_collection(args.data)
    doc_ids = list(col.corpus)
    docs = encode_corpus(base, [col.corpus[d].encoded_text for d in doc_ids],
                         cache=get_settings().cache_dir / "corpus", progress=False)
    cfg0 = AnchoredConfig(output_dir=args.out, collection=args.data, progress=False)

    def cid(t):
        return t.conversation_id or t.id

    held = {cid(t) for t in split_tasks(col.conversations, col.qrels, cfg0).heldout}
    mtrag = [t for t in col.conversations
             if t.fields.get("source") == cfg0.heldout_source and cid(t) not in held]
    teacher: dict = {}
    labels, cost = make_labels(args, col, mtrag, docs, log, teacher=teacher)
    extras, continued, dropped = extra_tasks(args, col, held, {cid(t) for t in mtrag}, log)
    extra_cost = {}
    for source, tasks in extras.items():
        got, extra_cost[source] = make_labels(args, col, tasks, docs, log, source, teacher)
        labels.update(got)
    if args.labels_only:
        return 0
    dev = [t for t in mtrag if t.id in col.qrels]  # as student_gate_cv.py
    dev_ids = [t.id for t in dev]
    row_of = {d: i for i, d in enumerate(doc_ids)}
    # every training turn: the MTRAG ones first (their rows are the dev rows), then the extras
    trained = mtrag + [t for tasks in extras.values() for t in tasks]

    def fold_key(t):
        """The conversation whose fold decides when `t` trains (an MTRAG-UN task continuing a
        dev conversation goes with it; other extras have none and always train)."""
        return continued.get(t.id, cid(t))

    current, history = view_matrices(base, trained)
    n_docs = docs.shape[0]
    df = np.asarray((docs > 0).sum(0)).ravel()
    idf = torch.tensor(np.log((n_docs + 1) / (df + 1)) / np.log(n_docs + 1), dtype=torch.float32)
    log(f"{len(dev)} dev turns, {len({cid(t) for t in dev})} conversations, "
        f"{len(mtrag)} labelled MTRAG turns, extra: "
        + ", ".join(f"{s} {len(ts)}" for s, ts in extras.items()))

    def examples(depth: int, scale: float) -> list[AnchoredExample]:
        out = []
        for i, t in enumerate(trained):
            lab = labels[t.id]
            pos = np.array([row_of[d] for d, r in col.qrels.get(t.id, {}).items()
                            if r > 0 and d in row_of], dtype=np.int64)
            out.append(AnchoredExample(
                t.id, current[i], sp.vstack([h[i] for h in history]).tocsr(),
                np.array([row_of[d] for d in lab.candidates[:depth]], dtype=np.int64),
                np.asarray(lab.teacher[:depth], dtype=np.float32) / scale, None, pos))
        return out

    dev_rows = [mtrag.index(t) for t in dev]

    def per_turn(gate, rows):
        ids = [trained[i].id for i in rows]
        gate.rows = rows
        with torch.no_grad():
            q = gate(_dense([current[rows]]),
                     torch.stack([_dense([h[rows]]) for h in history], 1)).numpy()
        run = search_matrix(docs, q, doc_ids, ids)
        qrels = {i: col.qrels[i] for i in ids}
        return (per_query_metric(qrels, run, "mrr@10"), per_query_metric(qrels, run, "recall@100"))

    # the teacher itself on the dev turns (in-sample for the re-ranker: it trained on them)
    teacher_run = {t.id: {d: s for d, s in zip(labels[t.id].candidates, labels[t.id].teacher)}
                   for t in dev}
    first_run = {t.id: dict(zip(labels[t.id].candidates, labels[t.id].first_stage)) for t in dev}
    reference = {}
    for name, run in ((f"first stage, top {args.depth} (the shipped student)", first_run),
                      ("re-ranker over them (the teacher; it trained on these turns)", teacher_run)):
        reference[name] = {m: float(np.mean(list(per_query_metric(col.qrels, run, m).values())))
                           for m in ("mrr@10", "recall@100")}
    log(f"reference: {reference}")
    scores = np.concatenate([np.asarray(labels[t.id].teacher) for t in mtrag])
    firsts = np.concatenate([np.asarray(labels[t.id].first_stage) for t in mtrag])
    log(f"teacher score std within a turn {np.mean([np.std(labels[t.id].teacher) for t in mtrag]):.3f}, "
        f"student {np.mean([np.std(labels[t.id].first_stage) for t in mtrag]):.3f}; "
        f"overall teacher range {scores.min():.2f}..{scores.max():.2f}, student {firsts.min():.2f}..{firsts.max():.2f}")
    # the teacher's within-turn spread matched to the first stage's: one scale for all turns
    scale = float(np.mean([np.std(labels[t.id].teacher) for t in mtrag])
                  / np.mean([np.std(labels[t.id].first_stage) for t in mtrag]))
    # kept from the MTRAG turns for every source (the teacher's scale is the re-ranker's, and
    # the MTRAG examples stay those of the run without extras); each source's own, for the record
    spread = {s: float(np.mean([np.std(labels[t.id].teacher) for t in ts])
                       / np.mean([np.std(labels[t.id].first_stage) for t in ts]))
              for s, ts in extras.items()}
    if spread:
        log(f"teacher/first-stage spread by source: MTRAG {scale:.3f}, "
            + ", ".join(f"{s} {v:.3f}" for s, v in spread.items()))

    rich = rich_gate_class()

    def shipped_gate():
        return AnchoredGate.load(shipped_student_dir())[0]

    from convsparse.encoders.anchored import AnchoredStudent
    from convsparse.encoders.student import pad_batch

    question_ids = base.tokenize_documents(
        [v.current for v in AnchoredStudent(base, AnchoredGate()).views([list(t.turns) for t in trained])])
    row_of_task = {t.id: i for i, t in enumerate(trained)}

    class QuestionEncoder(torch.nn.Module):
        """The shipped gate (frozen) over a trainable copy of SPLADE-tiny for the current
        question; the history views and the documents stay the frozen base's. `rows` names the
        turns of the next call (the loop sets it)."""

        def __init__(self):
            super().__init__()
            self.encoder = copy.deepcopy(base.model).eval()  # eval: no dropout
            self.gate = shipped_gate().requires_grad_(False)
            self.rows: list[int] = []

        def forward(self, current, history):
            ids, mask = pad_batch([question_ids[r] for r in self.rows], base.tokenizer.pad_token_id or 0)
            return self.gate(self.encoder(torch.from_numpy(ids), torch.from_numpy(mask)), history)

    kl_nce = {"kl_weight": 1.0, "infonce_weight": 0.1}
    variants = [  # most telling first: rows are written as each one finishes
        ("shipped gate, KL (T=1) + InfoNCE", shipped_gate, {**kl_nce, "learning_rate": 0.03}, args.depth),
        ("per-term MLP gate, KL (T=1) + InfoNCE", lambda: rich(idf),
         {**kl_nce, "learning_rate": 0.01}, args.depth),
        ("per-term MLP gate, KL only (T=1)", lambda: rich(idf),
         {"kl_weight": 1.0, "infonce_weight": 0.0, "learning_rate": 0.003}, args.depth),
        ("shipped gate, KL (T=3) + InfoNCE + FLOPS", shipped_gate,
         {**kl_nce, "kl_temperature": 3.0, "flops_weight": 1e-4, "learning_rate": 0.03}, args.depth),
        ("shipped gate, KL (T=1) + InfoNCE, teacher depth 20", shipped_gate,
         {**kl_nce, "learning_rate": 0.03}, 20),
    ]
    if args.depth <= 20:
        variants = variants[:-1]
    variants.append(("SPLADE-tiny question encoder (trainable) + shipped gate, KL (T=1) + InfoNCE",
                     QuestionEncoder, {**kl_nce, "learning_rate": 3e-5}, args.depth))
    variants.append(("SPLADE-tiny question encoder (trainable) + shipped gate, KL only (T=1)",
                     QuestionEncoder, {"kl_weight": 1.0, "infonce_weight": 0.0, "learning_rate": 3e-5},
                     args.depth))
    wanted = [v for v in args.variants.split(",") if v]
    if wanted:
        variants = [v for i, v in enumerate(variants) if str(i) in wanted]
    if args.heldout:
        held_tasks = [t for t in split_tasks(col.conversations, col.qrels, cfg0).heldout
                      if t.id in col.qrels]
        return heldout_table(args, col, docs, doc_ids, base, held_tasks,
                             [v for v in variants if v[1] is not QuestionEncoder],
                             examples, scale, cost, row_of_task, cfg0, log,
                             extra_summary(extras, extra_cost, spread, dropped))
    convs = sorted({cid(t) for t in dev})
    random.Random(0).shuffle(convs)
    fold_of = {c: i % args.folds for i, c in enumerate(convs)}
    cache_ex = {}
    rows_out = []
    for name, make, update, depth in variants:
        cfg = cfg0.model_copy(update=update)
        if depth not in cache_ex:
            cache_ex[depth] = examples(depth, scale)
        mrr = [{} for _ in range(args.epochs + 1)]
        rec = [{} for _ in range(args.epochs + 1)]
        for k in range(args.folds):
            rows = [r for r in dev_rows if fold_of[cid(trained[r])] == k]
            train = [e for e, t in zip(cache_ex[depth], trained) if fold_of.get(fold_key(t), -1) != k]
            torch.manual_seed(0)
            gate = make()
            m, r = per_turn(gate, rows)
            mrr[0].update(m)
            rec[0].update(r)

            def after_epoch(epoch, gate=gate, rows=rows, mrr=mrr, rec=rec):
                m, r = per_turn(gate, rows)
                mrr[epoch + 1].update(m)
                rec[epoch + 1].update(r)

            train_gate(gate, train, cfg, docs, row_of_task, args.epochs, after_epoch)
        mrr_means = [float(np.mean([pe[q] for q in dev_ids])) for pe in mrr]
        rec_means = [float(np.mean([pe[q] for q in dev_ids])) for pe in rec]
        best = int(np.argmax(mrr_means[1:])) + 1
        last = args.epochs

        def p(series, e):
            return float(ttest_rel([series[e][q] for q in dev_ids], [series[0][q] for q in dev_ids]).pvalue)

        rows_out.append({"variant": name, "teacher_depth": depth, "config": update,
                         "mrr@10_by_epoch": mrr_means, "recall@100_by_epoch": rec_means,
                         "best_epoch": best, "p_mrr_best": p(mrr, best), "p_recall_best": p(rec, best),
                         "p_mrr_last": p(mrr, last), "p_recall_last": p(rec, last)})
        log(f"{name}: MRR " + " ".join(f"{x:.3f}" for m in [mrr_means] for x in m)
            + " | R@100 " + " ".join(f"{x:.3f}" for x in rec_means)
            + f" (best {best}, p {rows_out[-1]['p_mrr_best']:.3f}/{rows_out[-1]['p_recall_best']:.3f})")
        write(args, {"dev_turns": len(dev), "labelled_turns": len(mtrag), "folds": args.folds,
                     "epochs": args.epochs, "depth": args.depth, "teacher_scale": scale,
                     "teacher_cost": cost, "reference": reference, "rows": rows_out,
                     **({"extra": extra_summary(extras, extra_cost, spread, dropped, fold_of,
                                                fold_key, args.folds),
                         "mtrag_trained_per_fold": [sum(fold_of.get(cid(t), -1) != k for t in mtrag)
                                                    for k in range(args.folds)]}
                        if extras else {}),
                     "seconds": round(time.time() - t0)})
    return 0


def extra_summary(extras, costs, spread, dropped, fold_of=None, fold_key=None,
                  folds: int = 0) -> dict:
    """Per extra source: its turns, how many were dropped (they continue a held-out
    conversation) or continue a dev conversation, how many trained in each fold, its own
    teacher spread, and its labelling cost."""
    out = {}
    for source, tasks in extras.items():
        entry = {"turns": len(tasks), "dropped": dropped.get(source, 0),
                 "teacher_spread": spread[source], "cost": costs[source]}
        if fold_of is not None:
            keys = [fold_of.get(fold_key(t), -1) for t in tasks]
            entry["continuing_a_dev_conversation"] = sum(k >= 0 for k in keys)
            entry["trained_per_fold"] = [sum(x != k for x in keys) for k in range(folds)]
        out[source] = entry
    return out


def _span(counts: list[int]) -> str:
    return f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"


def extra_lines(extra: dict, mtrag_per_fold: list[int] | None = None) -> list[str]:
    """The markdown sentences on the extra sources (`extra_summary`) and, in cross-validation,
    the MTRAG turns of a fold's training set."""
    if not extra:
        return []
    parts = []
    for source, e in extra.items():
        c = e["cost"]
        per_fold = e.get("trained_per_fold")
        notes = [f"{_span(per_fold)} in a fold's training set"] if per_fold else []
        if e.get("continuing_a_dev_conversation"):
            notes.append(f"{e['continuing_a_dev_conversation']} continue a dev conversation "
                         "and train only in the folds that do not test it")
        if e.get("dropped"):
            notes.append(f"{e['dropped']} more continue a held-out conversation and were dropped")
        parts.append(
            f"{source} {e['turns']} turns" + (f" ({'; '.join(notes)})" if notes else "")
            + f", labelled in {c['seconds_labelling']:.0f} s with {c['passages_embedded']} "
            f"passages newly embedded (the teacher's spread over the first stage's: "
            f"{e['teacher_spread']:.3f})")
    head = (f"Turns in a fold's training set: MTRAG {_span(mtrag_per_fold)}, then train-only "
            "turns (never scored, the same teacher and depth): " if mtrag_per_fold else
            "Train-only turns added (the same teacher and depth): ")
    return ["", head + "; ".join(parts) + "."]


def train_gate(gate, train, cfg, docs, row_of_task, epochs: int, after_epoch=None) -> None:
    """`epochs` passes of the anchored recipe's objective (`GateObjective`) over the examples
    `train` (shuffled each epoch, seed 0), FLOPS weight warmed up over the first third of the
    steps; `after_epoch(epoch)` after each pass."""
    import torch

    from convsparse.training.anchored import GateObjective
    from convsparse.training.losses import quadratic_warmup

    rng = random.Random(0)
    objective = GateObjective(cfg)
    opt = torch.optim.Adam(gate.parameters(), lr=cfg.learning_rate)
    steps = epochs * ((len(train) + cfg.batch_size - 1) // cfg.batch_size)
    step = 0
    for epoch in range(epochs):
        rng.shuffle(train)
        for s in range(0, len(train), cfg.batch_size):
            step += 1
            batch = train[s:s + cfg.batch_size]
            gate.rows = [row_of_task[e.task_id] for e in batch]
            loss = objective(gate, batch, docs,
                             quadratic_warmup(cfg.flops_weight, step, max(1, steps // 3)), rng)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if after_epoch is not None:
            after_epoch(epoch)


def heldout_table(args, col, docs, doc_ids, base, held_tasks, variants, examples, scale, cost,
                  row_of_task, cfg0, log, extra: dict | None = None) -> int:
    """Each gate variant trained on every labelled (non-held-out) turn for `args.epochs`
    epochs, then the held-out turns scored once against the untrained (shipped) gate: MRR@10
    and R@100, the paired difference with a 95% bootstrap interval and a paired t-test."""
    import torch
    from scipy.stats import ttest_rel

    from convsparse.evaluation.metrics import per_query_metric
    from convsparse.training.anchored import _dense, search_matrix, view_matrices

    current, history = view_matrices(base, held_tasks)
    ids = [t.id for t in held_tasks]
    qrels = {i: col.qrels[i] for i in ids}
    rng_boot = np.random.default_rng(0)

    def scores(gate):
        with torch.no_grad():
            q = gate(_dense([current]), torch.stack([_dense([h]) for h in history], 1)).numpy()
        run = search_matrix(docs, q, doc_ids, ids)
        return {m: per_query_metric(qrels, run, m) for m in ("mrr@10", "recall@100")}

    def compare(before, after):
        out = {}
        for m in before:
            x = np.array([before[m].get(q, 0.0) for q in ids])
            y = np.array([after[m].get(q, 0.0) for q in ids])
            d = y - x
            boot = [d[rng_boot.integers(0, len(d), len(d))].mean() for _ in range(2000)]
            out[m] = {"shipped": float(x.mean()), "trained": float(y.mean()),
                      "difference": float(d.mean()),
                      "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                      "p": float(ttest_rel(y, x).pvalue) if d.any() else 1.0}
        return out

    rows = []
    for name, make, update, depth in variants:
        cfg = cfg0.model_copy(update=update)
        train = list(examples(depth, scale))
        torch.manual_seed(0)
        gate = make()
        before = scores(gate)
        train_gate(gate, train, cfg, docs, row_of_task, args.epochs)
        rows.append({"variant": name, "teacher_depth": depth, "config": update,
                     **compare(before, scores(gate))})
        log(f"{name}: {rows[-1]}")
    result = {"heldout_turns": len(ids), "train_turns": len(row_of_task), "epochs": args.epochs,
              "depth": args.depth, "teacher_scale": scale, "teacher_cost": cost, "rows": rows,
              **({"extra": extra} if extra else {})}
    n_extra = sum(e["turns"] for e in (extra or {}).values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Distilling the re-ranker into the first stage: the held-out split "
             f"({len(ids)} judged MTRAG turns never trained on)", "",
             f"Each gate variant trained for {args.epochs} epoch(s) on all "
             f"{len(row_of_task) - n_extra} labelled non-held-out MTRAG turns"
             + (f" and {n_extra} train-only turns ({', '.join(extra)})" if extra else "")
             + " (teacher: the shipped re-ranker's scores over "
             f"the first stage's top {args.depth}), then compared with the untrained gate (the "
             "shipped first stage) on the held-out turns: paired difference, 95% bootstrap "
             "interval, paired t-test.", "",
             "| variant | MRR@10 shipped | trained | diff [95% CI] | p | R@100 shipped | trained "
             "| diff [95% CI] | p |", "|---|---:|---:|---|---:|---:|---:|---|---:|"]
    for r in rows:
        a, b = r["mrr@10"], r["recall@100"]
        lines.append(
            f"| {r['variant']} | {a['shipped']:.3f} | {a['trained']:.3f} | {a['difference']:+.3f} "
            f"[{a['ci95'][0]:+.3f}, {a['ci95'][1]:+.3f}] | {a['p']:.3f} | {b['shipped']:.3f} | "
            f"{b['trained']:.3f} | {b['difference']:+.3f} [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}] "
            f"| {b['p']:.3f} |")
    lines += extra_lines(extra or {})
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def write(args, result: dict) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    Path(f"{args.out}.md").write_text(markdown(result) + "\n")
    try:
        plot(result, Path(f"{args.out}.png"))
    except ImportError:
        pass


def markdown(res: dict) -> str:
    e = res["epochs"]
    out = [f"# Distilling the re-ranker into the first stage's query side: {res['folds']}-fold "
           f"cross-validation by conversation ({res['dev_turns']} dev turns of mtrag-pooled; "
           "held-out conversations never read)", "",
           f"Teacher: the re-ranker's scores over the shipped first stage's top {res['depth']} "
           f"({res['labelled_turns']} MTRAG turns labelled; its scores divided by "
           f"{res['teacher_scale']:.3f} to match the first stage's spread). Each dev turn is "
           "scored by a gate trained without its conversation; epoch 0 = the untrained gate "
           "(the shipped first stage). p: paired t-test over the dev turns against epoch 0, at "
           "the best epoch by MRR@10 (chosen on these turns: optimistic) and at the last epoch.",
           "", f"| reference (dev turns) | MRR@10 | R@{res['depth']} (its whole list) |", "|---|---:|---:|"]
    for name, m in res["reference"].items():
        out.append(f"| {name} | {m['mrr@10']:.3f} | {m['recall@100']:.3f} |")
    out += ["", "| variant | MRR@10 epoch 0 | best (epoch) | last | p best / last | "
            "R@100 epoch 0 | at best | last | p best / last |", "|---|" + "---:|" * 8]
    for r in res["rows"]:
        m, rc, b = r["mrr@10_by_epoch"], r["recall@100_by_epoch"], r["best_epoch"]
        out.append(f"| {r['variant']} | {m[0]:.3f} | {m[b]:.3f} ({b}) | {m[e]:.3f} | "
                   f"{r['p_mrr_best']:.3f} / {r['p_mrr_last']:.3f} | {rc[0]:.3f} | {rc[b]:.3f} | "
                   f"{rc[e]:.3f} | {r['p_recall_best']:.3f} / {r['p_recall_last']:.3f} |")
    for metric, key in (("MRR@10", "mrr@10_by_epoch"), ("R@100", "recall@100_by_epoch")):
        out += ["", f"{metric} by epoch:", "",
                "| variant | " + " | ".join(f"{i}" for i in range(e + 1)) + " |", "|---|" + "---:|" * (e + 1)]
        out += [f"| {r['variant']} | " + " | ".join(f"{x:.3f}" for x in r[key]) + " |" for r in res["rows"]]
    c = res["teacher_cost"]
    out += ["", f"Teacher cost: {c['turns']} turns at depth {c['depth']} labelled in "
            f"{c['seconds_labelling']:.0f} s ({c['passages_embedded']} passages newly embedded), "
            f"under CPU contention at the lowest priority. Whole run: {res['seconds']} s."]
    out += extra_lines(res.get("extra", {}), res.get("mtrag_trained_per_fold"))
    return "\n".join(out)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in res["rows"]:
        for ax, key in zip(axes, ("mrr@10_by_epoch", "recall@100_by_epoch")):
            ax.plot(range(len(r[key])), r[key], marker="o", label=r["variant"])
    for ax, title in zip(axes, ("MRR@10", "R@100")):
        ax.set_title(f"{title}, 5-fold CV by conversation")
        ax.set_xlabel("epoch (0 = shipped first stage)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
