"""Distilling the conversational student (seed paper arXiv 2606.04650, after DiSCo arXiv 2410.14609).

Stage 1 (optional, `doc_stage_steps > 0`): where the student's document side is untrained (the
base student is MiniLM-L6 with a tied MLM head), train both sides on (rewrite, passage) pairs with
the same losses against the teacher (the dense MiniLM by default).
Stage 2: encode every document once with the (frozen) stage-1 model, then train the query side on
(conversation -> teacher scores on the rewrite) with
`Loss = (1-w) KL + w InfoNCE + lambda_q L1(q) [+ lambda_d FLOPS(d) when documents are trained]`.

The configuration is a `DistillConfig` (YAML or JSON). Teacher runs are computed once and cached
as TREC files under `<output_dir>/teacher_runs/`; checkpoints go to `<output_dir>/checkpoint/`
(resumed automatically), the final student to `<output_dir>/final/` (a Hugging Face masked-LM
folder that `SpladeStudent.from_pretrained` loads) with `metrics.json` on the held-out split.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convsparse.benchmark_collections import load_qrels
from convsparse.encoders.student import SpladeStudent, pad_batch, resolve_device
from convsparse.evaluation.flops import TermStats, flops
from convsparse.evaluation.metrics import compute_metrics, read_trec_run, write_trec_run
from convsparse.progress import progress_bar
from convsparse.training.candidates import CandidateBatch, sample_candidates, teacher_score
from convsparse.training.checkpoint import load_checkpoint, save_checkpoint
from convsparse.training.config import DistillConfig
from convsparse.training.data import Task, load_passage_texts, load_tasks, sample_tasks, split_tasks
from convsparse.training.fusion import average_runs
from convsparse.training.losses import DistillationLoss
from convsparse.training.seeding import seed_everything
from convsparse.training.teachers import TEACHERS, Run, TeacherInputs


def load_masked_lm(student: str | None):
    """(masked-LM, tokenizer): a folder or hub id, or the base student when None."""
    if student:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        from convsparse.encoders.quiet_loading import quiet_loading

        with quiet_loading():
            return (AutoModelForMaskedLM.from_pretrained(student, dtype=torch.float32),
                    AutoTokenizer.from_pretrained(student))
    from convsparse.encoders.base_student import build_base_masked_lm

    return build_base_masked_lm()


def evaluate_scores(scores: np.ndarray, qids: Sequence[str], doc_ids: Sequence[str],
                    qrels: dict[str, dict[str, int]], k: int = 100) -> dict[str, float]:
    """MRR@10, nDCG@3, Recall@100 (ranx, `convsparse.evaluation.metrics`) of a (queries, docs)
    score matrix."""
    run = {}
    for i, qid in enumerate(qids):
        kk = min(k, scores.shape[1])
        idx = np.argpartition(-scores[i], kk - 1)[:kk]
        run[qid] = {doc_ids[j]: float(scores[i, j]) for j in idx}
    return compute_metrics(qrels, run, ["mrr@10", "ndcg@3", "recall@100"], query_ids=qids)


class Trainer:
    """Both distillation stages on one `DistillConfig` (see the module docstring); `distill()`
    runs them in order."""

    def __init__(self, cfg: DistillConfig):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.corpus = load_passage_texts(cfg.corpus)
        self.doc_ids = list(self.corpus)
        self.doc_index = {d: i for i, d in enumerate(self.doc_ids)}
        self.qrels = load_qrels(cfg.qrels) if cfg.qrels else {}
        tasks = load_tasks(cfg.conversations, self.qrels)
        self.train, self.test = split_tasks(tasks, cfg.holdout_fraction, cfg.seed)
        (self.out / "split.json").write_text(json.dumps(
            {"train": [t.task_id for t in self.train], "heldout": [t.task_id for t in self.test]}))
        mlm, self.tokenizer = load_masked_lm(cfg.student)
        self.student = SpladeStudent(mlm, self.tokenizer, max_length=cfg.max_length, device=self.device)
        self.log: list[dict] = []

    # ---------------------------------------------------------------- teachers
    def teacher_runs(self, student: SpladeStudent, doc_matrix: np.ndarray | None) -> Run:
        cfg = self.cfg
        queries = {t.task_id: t.teacher_query for t in self.train + self.test}
        key = hashlib.sha256(json.dumps(sorted(queries.items())).encode()
                             + str(cfg.corpus).encode()).hexdigest()[:10]
        runs = []
        for name in cfg.teachers:
            base = cfg.teacher_runs_dir or (self.out / "teacher_runs")
            path = Path(base) / f"{name}-{key}.trec"
            if path.exists():
                run = read_trec_run(path)
            else:
                run = TEACHERS[name](TeacherInputs(
                    queries, self.corpus, cfg.teacher_depth, student=student, doc_matrix=doc_matrix,
                    conversations={t.task_id: t.turns for t in self.train + self.test}))
                write_trec_run(run, path, tag=name)
            runs.append(run)
        return average_runs(runs, cfg.teacher_weights) if len(runs) > 1 else runs[0]

    # ---------------------------------------------------------------- helpers
    def _candidates(self, task: Task, teacher: Run, rng: random.Random, n_neg: int):
        run_q = teacher.get(task.task_id, {})
        pos, negs = sample_candidates(run_q, task.positives, n_negatives=n_neg,
                                      rank_window=tuple(self.cfg.rank_window), rng=rng)
        cands = [pos] + negs
        return cands, [teacher_score(run_q, d) for d in cands]

    def _batch(self, batch: Sequence[Task], teacher: Run, rng: random.Random,
               n_neg: int) -> CandidateBatch:
        cands, scores = zip(*(self._candidates(t, teacher, rng, n_neg) for t in batch))
        return CandidateBatch.build([t.positives for t in batch], cands, scores,
                                    in_batch_negatives=self.cfg.in_batch_negatives)

    def _encode(self, model, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        ids, mask = pad_batch(rows, self.tokenizer.pad_token_id or 0)
        return model(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))

    def _checkpoint(self, stage: str, step: int, model, opt) -> None:
        ck = self.out / "checkpoint"
        ck.mkdir(exist_ok=True)
        # tensors and plain values only, so that resuming can load with weights_only=True
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        np_state = (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                    int(has_gauss), float(gauss))
        save_checkpoint({"stage": stage, "step": step, "model": model.state_dict(),
                         "optimizer": opt.state_dict(), "log": self.log,
                         "rng": (random.getstate(), np_state, torch.get_rng_state())},
                        ck / "state.pt")

    def _resume(self, stage: str, model, opt) -> int:
        path = self.out / "checkpoint" / "state.pt"
        if not (self.cfg.resume and path.exists()):
            return 0
        state = load_checkpoint(path, self.device)
        if state["stage"] != stage:
            return -1 if stage == "documents" else 0  # documents stage finished earlier
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        self.log = state["log"]
        random.setstate(state["rng"][0])
        name, keys, pos, has_gauss, gauss = state["rng"][1]
        np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos,
                             has_gauss, gauss))
        torch.set_rng_state(state["rng"][2])
        return int(state["step"])

    # ---------------------------------------------------------------- stage 1: documents
    def document_stage(self, teacher: Run) -> None:
        cfg = self.cfg
        model = self.student.model
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
        start = self._resume("documents", model, opt)
        if start < 0:
            ck = load_checkpoint(self.out / "checkpoint" / "documents_model.pt", self.device)
            model.load_state_dict(ck)
            return
        loss_fn = DistillationLoss(infonce_weight=cfg.infonce_weight, kl_temperature=cfg.kl_temperature,
                                   infonce_temperature=cfg.infonce_temperature, lambda_q=cfg.lambda_q,
                                   lambda_d=cfg.lambda_d, warmup_steps=cfg.warmup_steps)
        pool = [t for t in self.train if t.has_rewrite]
        rng = random.Random(cfg.seed + 1)
        model.train()
        bar = progress_bar(range(start, cfg.doc_stage_steps), desc="stage 1 (documents)", enabled=cfg.progress)
        for step in bar:
            batch = rng.sample(pool, min(cfg.doc_stage_batch_size, len(pool)))
            cb = self._batch(batch, teacher, rng, cfg.doc_stage_negatives)
            q = self._encode(model, self.student.tokenize_documents([t.teacher_query for t in batch]))
            d = self._encode(model, self.student.tokenize_documents(
                [self.corpus[x] for x in cb.documents]))
            parts = self._train_step("documents", step, loss_fn, opt, q, d, cb)
            bar.set_postfix(loss=f"{parts.total.item():.3f}")
            if (step + 1) % cfg.checkpoint_every == 0:
                self._checkpoint("documents", step + 1, model, opt)
        model.eval()
        ck = self.out / "checkpoint"
        ck.mkdir(exist_ok=True)
        save_checkpoint(model.state_dict(), ck / "documents_model.pt")
        self._checkpoint("conversations", 0, model, torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate))

    def _train_step(self, stage: str, step: int, loss_fn: DistillationLoss, opt, q: torch.Tensor,
                    d: torch.Tensor, cb: CandidateBatch):
        """One optimiser step on a batch of query maps `q` against the candidate documents `d`
        (one row per column of `cb`); both stages share it so their losses and logs cannot
        drift apart."""
        dev = self.device
        scores = q @ d.T
        parts = loss_fn(step=step + 1, query_maps=q, doc_maps=d,
                        candidate_scores=scores.gather(1, cb.candidate_columns.to(dev)),
                        teacher_scores=cb.teacher_scores.to(dev),
                        candidate_mask=cb.candidate_mask.to(dev), batch_scores=scores,
                        positive_index=cb.positive_index.to(dev),
                        batch_mask=cb.batch_mask.to(dev))
        opt.zero_grad()
        parts.total.backward()
        opt.step()
        self.log.append({"stage": stage, "step": step + 1, "loss": parts.total.item(),
                         "kl": parts.kl, "info_nce": parts.info_nce, "l1": parts.l1,
                         "flops": parts.flops})
        return parts

    # ---------------------------------------------------------------- stage 2: conversations
    def conversation_stage(self, doc_matrix: torch.Tensor, teacher: Run) -> None:
        cfg = self.cfg
        model = self.student.model
        emb = model.mlm.get_input_embeddings().weight
        emb.requires_grad_(not cfg.freeze_embeddings)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
        start = self._resume("conversations", model, opt)
        loss_fn = DistillationLoss(infonce_weight=cfg.infonce_weight, kl_temperature=cfg.kl_temperature,
                                   infonce_temperature=cfg.infonce_temperature, lambda_q=cfg.lambda_q,
                                   lambda_d=cfg.lambda_d, warmup_steps=cfg.warmup_steps)
        fmt = self.student.formatter
        rows = {t.task_id: fmt.format(t.turns, record_id=t.task_id).input_ids for t in self.train}
        rng = random.Random(cfg.seed + 2 + start)
        model.train()
        bar = progress_bar(range(start, cfg.steps), desc="stage 2 (conversations)", enabled=cfg.progress)
        for step in bar:
            batch = sample_tasks(self.train, cfg.batch_size, rng)
            cb = self._batch(batch, teacher, rng, cfg.n_negatives)
            q = self._encode(model, [rows[t.task_id] for t in batch])
            d = doc_matrix[[self.doc_index[x] for x in cb.documents]].to(self.device)
            parts = self._train_step("conversations", step, loss_fn, opt, q, d, cb)
            bar.set_postfix(loss=f"{parts.total.item():.3f}", kl=f"{parts.kl:.3f}")
            if (step + 1) % cfg.checkpoint_every == 0:
                self._checkpoint("conversations", step + 1, model, opt)
        model.eval()

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, doc_matrix: np.ndarray, *, conversation: bool = True) -> dict:
        if not self.test:
            return {}
        s = self.student
        if conversation:
            rows = [s.formatter.format(t.turns, record_id=t.task_id).input_ids for t in self.test]
        else:
            rows = s.tokenize_documents([t.teacher_query for t in self.test])
        q = s.activations_for_ids(rows)
        scores = q @ doc_matrix.T
        qids = [t.task_id for t in self.test]
        out = evaluate_scores(scores, qids, self.doc_ids, self.qrels)
        sub = [i for i, t in enumerate(self.test) if t.has_rewrite]
        if sub:
            out["rewrite_subset"] = evaluate_scores(scores[sub], [qids[i] for i in sub], self.doc_ids,
                                                    self.qrels)
            out["rewrite_subset"]["n_queries"] = len(sub)
        out["flops"] = flops(TermStats.from_activations(q), TermStats.from_activations(doc_matrix))
        out["avg_query_terms"] = float((q > 0).sum(1).mean())
        out["n_queries"] = len(self.test)
        return out

    def doc_activations(self) -> np.ndarray:
        s = self.student
        return s.activations_for_ids(s.tokenize_documents([self.corpus[d] for d in self.doc_ids]),
                                     progress=self.cfg.progress, desc="document term maps")


@dataclass
class DistillResult:
    output_dir: Path
    model_dir: Path
    metrics: dict
    log: list[dict]


def distill(config: DistillConfig | str | Path, *, doc_matrix: np.ndarray | None = None,
            evaluate_baselines: bool = True) -> DistillResult:
    """Run both stages as configured; returns where the student went and held-out metrics.
    `doc_matrix` (n_docs, vocab) reuses precomputed frozen document maps (stage 1 must be off)."""
    cfg = config if isinstance(config, DistillConfig) else DistillConfig.from_file(config)
    t0 = time.time()
    tr = Trainer(cfg)
    if cfg.doc_stage_steps > 0:
        if "student" in cfg.teachers:
            raise ValueError("stage 1 needs a teacher other than the untrained student")
        tr.document_stage(tr.teacher_runs(tr.student, None))
        doc_matrix = None
    if doc_matrix is None:
        doc_matrix = tr.doc_activations()
    teacher = tr.teacher_runs(tr.student, doc_matrix)
    before = tr.evaluate(doc_matrix) if evaluate_baselines else {}
    rewrite = tr.evaluate(doc_matrix, conversation=False) if evaluate_baselines else {}
    tr.conversation_stage(torch.from_numpy(doc_matrix), teacher)
    after = tr.evaluate(doc_matrix)
    final = tr.out / "final"
    tr.student.model.mlm.save_pretrained(final)
    tr.tokenizer.save_pretrained(final)
    metrics = {"heldout_before": before, "heldout_after": after, "heldout_before_student_on_rewrite": rewrite,
               "train_tasks": len(tr.train), "heldout_tasks": len(tr.test),
               "seconds": round(time.time() - t0, 1), "config": json.loads(cfg.model_dump_json())}
    (tr.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (tr.out / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in tr.log))
    return DistillResult(tr.out, final, metrics, tr.log)


__all__ = ["DistillResult", "Trainer", "distill", "evaluate_scores", "load_masked_lm"]
