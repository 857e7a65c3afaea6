"""Does distilling the anchored student's gate help at all? 5-fold cross-validation by
conversation over the dev side of mtrag-pooled, in one command.

    python benchmarks/student_gate_cv.py            # ../shared/data/mtrag-pooled, 6 epochs

Why this exists: `student_ablation.py` picks a student on 8 validation conversations (58 turns),
which proved too noisy to choose among gates. Here every one of the 274 dev turns (38
conversations; the 16 held-out conversations are excluded and never read) is scored by a gate
trained without its conversation: each fold trains on the other dev conversations plus every
training-side turn that is not a dev turn (MTRAG-UN, TREC CAsT), exactly the student recipe's
data, and MRR@10 is pooled over the folds after every epoch (epoch 0 = the untrained gate,
i.e. the shipped summed-views setting). A paired t-test compares the best epoch with epoch 0.

Gates: the shipped `AnchoredGate` (per view: a scale and a sigmoid of the term's weights) and
a richer per-term gate (a small MLP over the term's weights in the question and each view,
its inverse document frequency in the corpus and whether the question has it, that may also
re-weight the question's own terms), each started at the shipped setting. Losses as in
`convsparse.training.anchored`. Writes benchmarks/results/student_gate_cv.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
#: the shipped gate's view weights (context, previous answer, earlier questions): where the
#: per-term gate starts
SHIPPED = (0.15, 0.0, 0.05)


def rich_gate_class():
    import torch
    from torch import nn

    class RichGate(nn.Module):
        """q_j = 2 sigmoid(u_0) cur_j + sum_v softplus(a_v) sigmoid(u_v) view_v,j, u = MLP(phi_j)."""

        def __init__(self, idf: torch.Tensor, hidden: int = 16):
            super().__init__()
            self.idf = idf
            self.mlp = nn.Sequential(nn.Linear(9, hidden), nn.Tanh(), nn.Linear(hidden, 4))
            nn.init.zeros_(self.mlp[2].weight)
            with torch.no_grad():  # start at the shipped setting: u_0 = 0, view gates ~ 1
                self.mlp[2].bias.copy_(torch.tensor([0.0, 4.0, 4.0, 4.0]))
            open_gate = float(torch.sigmoid(torch.tensor(4.0)))
            self.alpha = nn.Parameter(torch.tensor(
                [float(np.log(np.expm1(max(w, 0.005) / open_gate))) for w in SHIPPED]))

        def forward(self, current, history):
            mask = (current > 0) | (history > 0).any(1)
            b, j = mask.nonzero(as_tuple=True)
            c, h = current[b, j], history[b, :, j]
            lc = torch.log1p(c)
            phi = torch.stack([lc, *torch.log1p(h).unbind(1), (c > 0).float(), self.idf[j],
                               (h > 0).float().mean(1), lc * self.idf[j], torch.ones_like(c)], 1)
            u = self.mlp(phi)
            value = c * 2 * torch.sigmoid(u[:, 0]) + (
                nn.functional.softplus(self.alpha) * torch.sigmoid(u[:, 1:]) * h).sum(1)
            q = torch.zeros_like(current)
            q[b, j] = value
            return q

    return RichGate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA / "mtrag-pooled")
    ap.add_argument("--cast", type=Path, default=DATA / "cast" / "conversations.jsonl")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "student_gate_cv")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2

    import torch
    from scipy.stats import ttest_rel

    from convsparse.benchmark_collections import load_collection
    from convsparse.encoders.anchored import AnchoredGate
    from convsparse.encoders.loading import load_student, shipped_student_dir
    from convsparse.evaluation.metrics import per_query_metric
    from convsparse.settings import get_settings
    from convsparse.training.anchored import (
        GateObjective,
        _dense,
        build_examples,
        encode_corpus,
        extra_training_tasks,
        search_matrix,
        split_tasks,
        view_matrices,
    )
    from convsparse.training.config import AnchoredConfig, ConversationSource
    from convsparse.training.losses import quadratic_warmup

    torch.set_num_threads(args.threads)
    t0 = time.time()
    base = load_student("splade-tiny", runtime="torch", device="cpu")
    col = load_collection(args.data)
    doc_ids = list(col.corpus)
    docs = encode_corpus(base, [col.corpus[d].encoded_text for d in doc_ids],
                         cache=get_settings().cache_dir / "corpus")
    cfg0 = AnchoredConfig(output_dir=args.out, collection=args.data, progress=False,
                           extra_conversations=[ConversationSource(path=args.cast, train_only=True)]
                           if args.cast.is_file() else [])

    def cid(t):
        return t.conversation_id or t.id

    held = {cid(t) for t in split_tasks(col.conversations, col.qrels, cfg0).heldout}
    dev = [t for t in col.conversations if t.fields.get("source") == cfg0.heldout_source
           and cid(t) not in held and t.id in col.qrels]
    training_side = [t for t in col.conversations if cid(t) not in held]
    training_side += extra_training_tasks(cfg0)
    conversation_of = {t.id: cid(t) for t in training_side}
    dev_ids = [t.id for t in dev]
    examples = {teacher: build_examples(base, docs, doc_ids, training_side, col.qrels,
                                        cfg0.model_copy(update={"teacher": teacher}))
                for teacher in ("search_queries", "rewrite")}
    current, history = view_matrices(base, dev)
    n_docs = docs.shape[0]
    df = np.asarray((docs > 0).sum(0)).ravel()
    idf = torch.tensor(np.log((n_docs + 1) / (df + 1)) / np.log(n_docs + 1), dtype=torch.float32)
    print(f"{len(dev)} dev turns, {len({cid(t) for t in dev})} conversations, "
          f"{len(examples['search_queries'])} training turns; {time.time() - t0:.0f}s", flush=True)

    def reciprocal_ranks(gate, rows):
        ids = [dev_ids[i] for i in rows]
        with torch.no_grad():
            q = gate(_dense([current[rows]]),
                     torch.stack([_dense([h[rows]]) for h in history], 1)).numpy()
        return per_query_metric({i: col.qrels[i] for i in ids},
                                search_matrix(docs, q, doc_ids, ids), "mrr@10")

    rich = rich_gate_class()

    def shipped_gate():
        return AnchoredGate.load(shipped_student_dir())[0]

    variants = [
        ("shipped gate, KLD + InfoNCE (search-query teacher)", shipped_gate, {}, "search_queries"),
        ("per-term MLP gate, KLD + InfoNCE (search-query teacher)", lambda: rich(idf),
         {"learning_rate": 0.01}, "search_queries"),
        ("per-term MLP gate, InfoNCE only", lambda: rich(idf),
         {"kl_weight": 0.0, "infonce_weight": 1.0, "learning_rate": 0.003}, "search_queries"),
        ("per-term MLP gate, KLD only (rewrite teacher)", lambda: rich(idf),
         {"infonce_weight": 0.0, "learning_rate": 0.002}, "rewrite"),
    ]
    convs = sorted({cid(t) for t in dev})
    random.Random(0).shuffle(convs)
    fold_of = {c: i % args.folds for i, c in enumerate(convs)}
    rows_out = []
    for name, make, update, teacher in variants:
        cfg = cfg0.model_copy(update={**update, "teacher": teacher})
        per_epoch: list[dict[str, float]] = [{} for _ in range(args.epochs + 1)]
        for k in range(args.folds):
            rows = [i for i, t in enumerate(dev) if fold_of[cid(t)] == k]
            train = [e for e in examples[teacher] if fold_of.get(conversation_of[e.task_id], -1) != k]
            torch.manual_seed(0)
            rng = random.Random(0)
            gate = make()
            objective = GateObjective(cfg)
            opt = torch.optim.Adam(gate.parameters(), lr=cfg.learning_rate)
            per_epoch[0].update(reciprocal_ranks(gate, rows))
            steps = args.epochs * ((len(train) + cfg.batch_size - 1) // cfg.batch_size)
            step = 0
            for epoch in range(args.epochs):
                rng.shuffle(train)
                for s in range(0, len(train), cfg.batch_size):
                    step += 1
                    loss = objective(gate, train[s:s + cfg.batch_size], docs,
                                     quadratic_warmup(cfg.flops_weight, step, max(1, steps // 3)), rng)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                per_epoch[epoch + 1].update(reciprocal_ranks(gate, rows))
        means = [float(np.mean([pe[q] for q in dev_ids])) for pe in per_epoch]
        best = int(np.argmax(means[1:])) + 1
        p = float(ttest_rel([per_epoch[best][q] for q in dev_ids],
                            [per_epoch[0][q] for q in dev_ids]).pvalue)
        rows_out.append({"gate": name, "teacher": teacher, "mrr@10_by_epoch": means,
                         "best_epoch": best, "p_best_vs_untrained": p,
                         "config": {k: v for k, v in update.items()}})
        print(f"{name}: " + " ".join(f"{m:.3f}" for m in means) + f" (best epoch {best}, p = {p:.3f})"
              f"; {time.time() - t0:.0f}s", flush=True)
    result = {"dev_turns": len(dev), "folds": args.folds, "epochs": args.epochs,
              "training_turns": len(examples["search_queries"]), "rows": rows_out,
              "seconds": round(time.time() - t0)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    Path(f"{args.out}.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0


def markdown(res: dict) -> str:
    epochs = res["epochs"]
    out = [f"# Distilling the anchored gate: {res['folds']}-fold cross-validation by conversation "
           f"({res['dev_turns']} dev turns of mtrag-pooled; held-out conversations never read)", "",
           "Pooled MRR@10 of each dev turn, scored by a gate trained without its conversation; "
           "epoch 0 is the untrained gate (the shipped summed-views setting). p: paired t-test, "
           "best epoch against epoch 0.", "",
           "| gate, losses | " + " | ".join(f"epoch {e}" for e in range(epochs + 1)) + " | p |",
           "|---|" + "---:|" * (epochs + 2)]
    for r in res["rows"]:
        out.append(f"| {r['gate']} | " + " | ".join(f"{m:.3f}" for m in r["mrr@10_by_epoch"])
                   + f" | {r['p_best_vs_untrained']:.3f} |")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
