"""Listwise distillation of the re-ranker (`RerankConfig`; `convsparse rerank train`).

    L = KL(softmax(teacher / T) || softmax(s))  over each turn's `depth` first-stage candidates
      + label_weight * -log sum_{judged relevant} softmax(s)

The teacher scores come from `labels.py` (generated once into ``<output_dir>/labels.jsonl``).
Turns without a teacher text give the label term only; turns with neither are skipped. With
``validation: train`` (the default) the validation conversations' turns train too and the
last epoch is kept: the recipe the cross-validation measured, since the 58 validation turns
cannot tell epochs apart. With ``validation: pick_epoch`` they pick the epoch by MRR@10 (the
re-ranked top `depth`, then the first stage's order) and never train. The held-out
conversations are never read. Checkpoints follow the student's conventions:
``<output_dir>/checkpoint/`` holds the re-ranker folder of the last finished epoch and
``state.pt`` (optimizer, epoch, best score; tensors and plain values only, loaded with
``weights_only=True``); a re-run with ``resume: true`` continues after it. The chosen
re-ranker is written to ``<output_dir>/reranker/``.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convsparse.progress import Say, progress_bar
from convsparse.reranking.config import RerankConfig
from convsparse.reranking.labels import RerankLabel, build_labels, read_labels, write_labels
from convsparse.reranking.reranker import Reranker, load_reranker, new_reranker
from convsparse.reranking.semantic import VECTORS_FILE, PassageVectors


@dataclass
class _Prepared:
    """A label with its model inputs computed once."""

    label: RerankLabel
    inputs: dict[str, torch.Tensor]
    teacher: torch.Tensor | None
    positives: torch.Tensor


def make_labels(cfg: RerankConfig, log: Say = print):
    """(train labels, validation labels, the collection, every labelled turn's conversation by
    task id): labels read from ``<output_dir>/labels.jsonl`` when present, else generated
    (first stage + teacher)."""
    from convsparse.benchmark_collections import load_collection
    from convsparse.encoders.loading import load_student
    from convsparse.settings import get_settings
    from convsparse.training.anchored import (
        encode_corpus,
        encode_texts_csr,
        extra_training_tasks,
        split_tasks,
        teacher_text,
    )

    col = load_collection(cfg.collection)
    split = split_tasks(col.conversations, col.qrels, cfg)
    texts = {d: p.encoded_text for d, p in col.corpus.items()}
    path = cfg.output_dir / "labels.jsonl"
    train = split.train + extra_training_tasks(cfg)
    wanted = {"train": [t for t in train if t.id in col.qrels or teacher_text(t, cfg.teacher)],
              "validation": split.validation}
    if not path.exists():
        base = load_student(cfg.base, runtime="torch", device="cpu")
        doc_ids = list(col.corpus)
        docs = encode_corpus(base, [texts[d] for d in doc_ids],
                             cache=get_settings().cache_dir / "corpus", progress=cfg.progress)
        student = load_student(cfg.first_stage, runtime="torch", device="cpu")
        tasks = wanted["train"] + wanted["validation"]
        log(f"labels: first stage and teacher over {len(tasks)} turns, depth {cfg.depth}")
        queries = student.encode_conversations([list(t.turns) for t in tasks],
                                               ids=[t.id for t in tasks]).term_maps
        teacher = encode_texts_csr(base, [teacher_text(t, cfg.teacher) or "" for t in tasks])
        labels = build_labels(tasks, queries, docs, doc_ids, base.vocabulary, depth=cfg.depth,
                              teacher_queries=teacher, qrels=col.qrels)
        write_labels(labels, path)
    by_id = {lab.task_id: lab for lab in read_labels(path)}
    pick = {name: [by_id[t.id] for t in tasks if t.id in by_id] for name, tasks in wanted.items()}
    conversations = {t.id: list(t.turns) for t in [*train, *split.validation]}
    return pick["train"], pick["validation"], col, conversations


def prepare(reranker: Reranker, labels: Sequence[RerankLabel], texts: dict[str, str],
            conversations: dict, depth: int, *, progress: bool = False) -> list[_Prepared]:
    if reranker.semantic is not None:  # embed every candidate once, in batches
        reranker.semantic.add(sorted({texts[d] for lab in labels for d in lab.candidates[:depth]}),
                              progress=progress)
    out = []
    for lab in labels:
        cands = lab.candidates[:depth]
        inputs = reranker.inputs(conversations[lab.task_id], lab.query, [texts[d] for d in cands],
                                 lab.first_stage[:depth])
        positives = set(lab.positives)
        pos = torch.tensor([d in positives for d in cands], dtype=torch.bool)
        teacher = None if lab.teacher is None else torch.tensor(lab.teacher[:depth])
        if teacher is None and not pos.any():
            continue
        out.append(_Prepared(lab, inputs, teacher, pos))
    return out


def listwise_loss(scores: torch.Tensor, ex: _Prepared, cfg: RerankConfig) -> torch.Tensor:
    logp = torch.log_softmax(scores, dim=-1)
    loss = scores.new_zeros(())
    if ex.teacher is not None:
        target = torch.softmax(ex.teacher.to(scores) / cfg.kl_temperature, dim=-1)
        loss = loss + torch.sum(target * (torch.log(target + 1e-12) - logp))
    if cfg.label_weight and ex.positives.any():
        loss = loss - cfg.label_weight * torch.logsumexp(logp[ex.positives], dim=-1)
    return loss


def rerank_run(reranker: Reranker, prepared: Sequence[_Prepared]) -> dict[str, dict[str, float]]:
    """{task id: {doc id: score}}: the re-ranked head above the rest of the first stage."""
    run = {}
    reranker.model.eval()
    with torch.inference_mode():
        for ex in prepared:
            s = reranker.model(**ex.inputs)
            head = ex.label.candidates[:len(s)]
            top = float(s.max()) + 1.0
            run[ex.label.task_id] = {d: float(v) - top for d, v in zip(head, s.tolist())}
    return run


def load_vector_cache(output_dir: Path, semantic: PassageVectors) -> Path:
    """The candidates' passage vectors outlive a run: a re-run (new settings, resume) reuses
    them. One file per window cut, so trying another cut never drops this one's windows; the
    whole-passage vectors are read from every file. Returns the file to save to."""
    for path in sorted(output_dir.glob(f"{Path(VECTORS_FILE).stem}*.safetensors")):
        semantic.merge_vectors(path)  # another cut's windows are left out
    cut = f"-w{semantic.window}s{semantic.stride}" if semantic.window is not None else ""
    return output_dir / f"{Path(VECTORS_FILE).stem}{cut}.safetensors"


def make_optimizer(model: torch.nn.Module, cfg: RerankConfig) -> torch.optim.Optimizer:
    """AdamW: the heads at ``head_learning_rate``, a cross-encoder's body at ``learning_rate``."""
    heads = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    groups = [{"params": heads, "lr": cfg.head_learning_rate}]
    if model.encoder is not None:
        groups.append({"params": list(model.encoder.parameters()), "lr": cfg.learning_rate})
    return torch.optim.AdamW(groups)


def steps_per_epoch(n_turns: int, cfg: RerankConfig) -> int:
    return -(-n_turns // cfg.batch_turns)


def train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, train: Sequence[_Prepared],
                cfg: RerankConfig, rng: random.Random, *, desc: str = "epoch",
                bar: Any = None) -> float:
    """One pass over `train` in a shuffled order, `batch_turns` turns a step; the mean loss.
    `bar`: the whole run's progress bar, advanced a step at a time (else one of its own)."""
    model.train()
    order = list(range(len(train)))
    rng.shuffle(order)
    total = 0.0
    steps = range(0, len(order), cfg.batch_turns)
    own = bar is None
    if own:
        bar = progress_bar(total=len(steps), desc=desc, unit="step", enabled=cfg.progress)
    for s in steps:
        batch = [train[i] for i in order[s:s + cfg.batch_turns]]
        loss = sum(listwise_loss(model(**ex.inputs), ex, cfg) for ex in batch) / len(batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        total += float(loss.detach()) * len(batch)
        bar.update(1)
    if own:
        bar.close()
    return total / max(1, len(train))


def reranker_for(cfg: RerankConfig, passages: Sequence[str]) -> Reranker:
    """An untrained re-ranker of `cfg`'s shape; `passages` give the BM25 statistics."""
    return new_reranker(cfg.base, term_control=cfg.term_control, cross_encoder=cfg.cross_encoder,
                        semantic=cfg.semantic, semantic_views=cfg.semantic_views,
                        semantic_view_length=cfg.semantic_view_length,
                        semantic_window=cfg.semantic_window, semantic_stride=cfg.semantic_stride,
                        max_length=cfg.max_length, query_length=cfg.query_length,
                        passages=list(passages))


def train_reranker(cfg: RerankConfig, *, log: Say = print) -> Path:
    """Train (on the validation turns too, or picking the epoch on them: ``cfg.validation``),
    write ``<output_dir>/reranker``; returns its path."""
    from convsparse.evaluation.metrics import compute_metrics
    from convsparse.training.checkpoint import load_checkpoint, save_checkpoint

    # random and torch only, not seed_everything: the shipped re-ranker was trained with these.
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    train_labels, val_labels, col, conversations = make_labels(cfg, log)
    texts = {d: p.encoded_text for d, p in col.corpus.items()}
    ck = cfg.output_dir / "checkpoint"
    start_epoch, best = 0, (-1.0, -1)
    if cfg.resume and (ck / "state.pt").exists():
        reranker = load_reranker(ck / "reranker", runtime="torch")  # trained on
        state = load_checkpoint(ck / "state.pt", "cpu")
        start_epoch, best = int(state["epoch"]) + 1, (float(state["best"]), int(state["best_epoch"]))
        log(f"resuming after epoch {start_epoch}" + (
            f" (best validation MRR@10 {best[0]:.3f})" if cfg.validation == "pick_epoch" else ""))
    else:
        reranker = reranker_for(cfg, texts.values())
        state = None
    model = reranker.model
    opt = make_optimizer(model, cfg)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    if reranker.semantic is not None:
        vector_cache = load_vector_cache(cfg.output_dir, reranker.semantic)
    pick_epoch = cfg.validation == "pick_epoch"
    if not pick_epoch:
        train_labels, val_labels = [*train_labels, *val_labels], []
    train = prepare(reranker, train_labels, texts, conversations, cfg.depth, progress=cfg.progress)
    val = prepare(reranker, val_labels, texts, conversations, cfg.depth, progress=cfg.progress)
    if reranker.semantic is not None:
        reranker.semantic.save_vectors(vector_cache)
    val_ids = [ex.label.task_id for ex in val]
    log(f"{len(train)} training turns, " + (f"{len(val)} validation turns" if pick_epoch else
                                             "the validation turns among them"))
    if start_epoch == 0 and pick_epoch:
        base_mrr = compute_metrics(col.qrels, {ex.label.task_id: dict(zip(
            ex.label.candidates, ex.label.first_stage)) for ex in val}, ["mrr@10"],
            query_ids=val_ids)["mrr@10"]
        log(f"first stage: validation MRR@10 {base_mrr:.3f}")
    rng = random.Random(cfg.seed)
    # one bar for every epoch left: its estimate is the whole training phase's
    bar = progress_bar(total=(cfg.epochs - start_epoch) * steps_per_epoch(len(train), cfg),
                       desc=f"training epochs {start_epoch + 1}-{cfg.epochs}", unit="step",
                       enabled=cfg.progress)
    for epoch in range(start_epoch, cfg.epochs):
        bar.set_postfix_str(f"epoch {epoch + 1}/{cfg.epochs}")
        loss = train_epoch(model, opt, train, cfg, rng, desc=f"epoch {epoch + 1}", bar=bar)
        said = f"epoch {epoch + 1}: loss {loss:.4f}"
        if pick_epoch:
            mrr = compute_metrics(col.qrels, rerank_run(reranker, val), ["mrr@10"],
                                  query_ids=val_ids)["mrr@10"]
            said += f", validation MRR@10 {mrr:.3f}"
            if mrr > best[0]:
                best = (mrr, epoch)
                reranker.save(cfg.output_dir / "reranker")
        else:
            best = (best[0], epoch)
        log(said)
        reranker.save(ck / "reranker")
        save_checkpoint({"optimizer": opt.state_dict(), "epoch": epoch, "best": best[0],
                         "best_epoch": best[1]}, ck / "state.pt")
    bar.close()
    if not pick_epoch:  # the last epoch (also after a resume that found every epoch done)
        reranker.save(cfg.output_dir / "reranker")
    (cfg.output_dir / "reranker" / "training.json").write_text(json.dumps({
        "best_epoch": best[1] + 1, "validation_mrr@10": best[0] if pick_epoch else None,
        "config": json.loads(cfg.model_dump_json())}, indent=1))
    shutil.rmtree(ck, ignore_errors=True)
    return cfg.output_dir / "reranker"


__all__ = ["listwise_loss", "load_vector_cache", "make_labels", "make_optimizer", "rerank_run", "reranker_for",
           "train_epoch", "train_reranker"]
