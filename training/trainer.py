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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm.auto import tqdm

from convsparse.training.losses import DistillationLoss
from convsparse.encoders.student import SpladeStudent, pad_batch, resolve_device
from convsparse.training.teachers import (
    Run, average_runs, bm25_run, dense_run, read_qrels, read_trec_run, sample_candidates,
    student_run, teacher_score, write_trec_run,
)

TeacherName = Literal["bm25", "dense", "student"]


# =========================================================================== configuration
class ConversationSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path
    limit: int | None = Field(None, ge=1, description="use at most this many tasks (first ones)")
    train_only: bool = Field(False, description="never held out (e.g. CAsT: no local qrels)")


class DistillConfig(BaseModel):
    """Everything a distillation run needs; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    student: str | None = Field(None, description="masked-LM folder; None = the base student")
    corpus: Path = Field(description="JSONL {id, text}")
    conversations: list[ConversationSource] = Field(min_length=1)
    qrels: Path | None = None
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    teachers: list[TeacherName] = Field(default_factory=lambda: ["bm25", "dense"], min_length=1)
    teacher_weights: list[float] | None = None
    teacher_runs_dir: Path | None = Field(None, description="cache of TREC teacher runs; "
                                          "default <output_dir>/teacher_runs")
    teacher_depth: int = Field(1000, ge=10)
    n_negatives: int = Field(16, ge=1)
    rank_window: tuple[int, int] = (10, 960)
    in_batch_negatives: bool = True
    steps: int = Field(300, ge=0)
    doc_stage_steps: int = Field(0, ge=0)
    doc_stage_negatives: int = Field(3, ge=1)
    doc_stage_batch_size: int = Field(4, ge=1)
    freeze_documents: bool = True
    freeze_embeddings: bool = Field(True, description="keep the word embeddings (tied to the MLM "
                                    "decoder) fixed in stage 2: the vocabulary geometry stays "
                                    "shared with the frozen document side, and CPU steps are cheaper")
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(2e-5, gt=0)
    max_length: int = Field(128, ge=8)
    infonce_weight: float = Field(0.1, ge=0.0, le=1.0)
    kl_temperature: float = Field(1.0, gt=0)
    infonce_temperature: float = Field(0.08, gt=0)
    lambda_q: float = Field(0.0, ge=0)
    lambda_d: float = Field(0.0, ge=0)
    warmup_steps: int = Field(50, ge=0, description="quadratic warm-up of lambda_q / lambda_d")
    checkpoint_every: int = Field(100, ge=1)
    resume: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    progress: bool = True

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        lo, hi = self.rank_window
        if not 1 <= lo < hi:
            raise ValueError(f"rank_window must be (lo, hi) with 1 <= lo < hi, got {self.rank_window}")
        if self.teacher_weights is not None and len(self.teacher_weights) != len(self.teachers):
            raise ValueError(
                f"teacher_weights has {len(self.teacher_weights)} values for "
                f"{len(self.teachers)} teachers {self.teachers}; give one weight per teacher")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> DistillConfig:
        """Read YAML (.yaml/.yml) or JSON; relative paths are resolved against the file's folder.
        Raises ValueError with every problem listed."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of settings at the top level")
        try:
            cfg = cls.model_validate(raw)
        except ValidationError as e:
            lines = [f"  {'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                     for err in e.errors()]
            raise ValueError(f"invalid distillation config {path}:\n" + "\n".join(lines)) from None
        return cfg.resolve_paths(path.parent)

    def resolve_paths(self, base: Path) -> DistillConfig:
        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else (base / p)

        data = self.model_copy(deep=True)
        data.output_dir = fix(data.output_dir)
        data.corpus = fix(data.corpus)
        data.qrels = fix(data.qrels)
        data.teacher_runs_dir = fix(data.teacher_runs_dir)
        for src in data.conversations:
            src.path = fix(src.path)
        if data.student and not Path(data.student).is_absolute() and (base / data.student).exists():
            data.student = str(base / data.student)
        return data


# =========================================================================== data
@dataclass
class Task:
    task_id: str
    conversation_id: str
    turns: list[dict]
    teacher_query: str  # rewrite, or the last user turn when there is none
    has_rewrite: bool
    train_only: bool
    positives: list[str] = field(default_factory=list)


def _safe_id(s: str) -> str:
    return "".join("_" if c.isspace() else c for c in str(s))


def load_corpus(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                text = (r.get("title") + "\n" if r.get("title") else "") + r["text"]
                out[str(r["id"])] = text
    return out


def load_tasks(sources: Sequence[ConversationSource], qrels: dict[str, dict[str, int]]) -> list[Task]:
    tasks: list[Task] = []
    for src in sources:
        n = 0
        with src.path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                tid = _safe_id(r.get("task_id") or r.get("id"))
                turns = r["turns"]
                rewrite = (r.get("rewrite") or "").strip()
                last_user = next(t["text"] for t in reversed(turns) if t["role"] == "user")
                pos = [d for d, rel in qrels.get(tid, {}).items() if rel > 0]
                tasks.append(Task(tid, str(r.get("conversation_id") or tid), turns,
                                  rewrite or last_user, bool(rewrite), src.train_only, pos))
                n += 1
                if src.limit and n >= src.limit:
                    break
    return tasks


def split_tasks(tasks: Sequence[Task], fraction: float, seed: int) -> tuple[list[Task], list[Task]]:
    """Hold out `fraction` of the judged conversations (by conversation_id, hashed with the seed,
    so a conversation is entirely in or out). Unjudged / train_only tasks always train."""
    convs = sorted({t.conversation_id for t in tasks if t.positives and not t.train_only})
    rng = random.Random(seed)
    rng.shuffle(convs)
    held = set(convs[: round(len(convs) * fraction)])
    train = [t for t in tasks if t.conversation_id not in held]
    test = [t for t in tasks if t.conversation_id in held and t.positives]
    return train, test


# =========================================================================== student loading
def load_masked_lm(student: str | None):
    if student:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        mlm = AutoModelForMaskedLM.from_pretrained(student, dtype=torch.float32)
        return mlm, AutoTokenizer.from_pretrained(student)
    # the base student: MiniLM-L6 + tied MLM head (helper A's `base_student`)
    from convsparse.encoders.base_student import build_base_masked_lm

    return build_base_masked_lm()


# =========================================================================== evaluation
def flops_metric(q: np.ndarray, d: np.ndarray) -> float:
    """FLOPS = sum_j p_q(j) * p_d(j), p = fraction of queries / documents with term j active."""
    return float(((q > 0).mean(axis=0) * (d > 0).mean(axis=0)).sum())


def evaluate_scores(scores: np.ndarray, qids: Sequence[str], doc_ids: Sequence[str],
                    qrels: dict[str, dict[str, int]], k: int = 100) -> dict[str, float]:
    from ranx import Qrels, Run as RanxRun, evaluate

    run = {}
    for i, qid in enumerate(qids):
        kk = min(k, scores.shape[1])
        idx = np.argpartition(-scores[i], kk - 1)[:kk]
        run[qid] = {doc_ids[j]: float(scores[i, j]) for j in idx}
    q = Qrels({qid: qrels[qid] for qid in qids})
    res = evaluate(q, RanxRun(run), ["mrr@10", "ndcg@3", "recall@100"], make_comparable=True)
    return {k_: float(v) for k_, v in res.items()}


# =========================================================================== training
class _Trainer:
    def __init__(self, cfg: DistillConfig):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.corpus = load_corpus(cfg.corpus)
        self.doc_ids = list(self.corpus)
        self.doc_index = {d: i for i, d in enumerate(self.doc_ids)}
        self.qrels = read_qrels(cfg.qrels) if cfg.qrels else {}
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
                if name == "bm25":
                    run = bm25_run(queries, self.corpus, k=cfg.teacher_depth)
                elif name == "dense":
                    run = dense_run(queries, self.corpus, k=cfg.teacher_depth)
                else:
                    run = student_run(student, queries, self.corpus, k=cfg.teacher_depth,
                                      doc_matrix=doc_matrix)
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

    def _batch_tensors(self, batch: Sequence[Task], cand_lists, teacher_lists):
        """Column layout: all candidates of the batch concatenated (in-batch negatives)."""
        n = max(len(c) for c in cand_lists)
        cols = [d for c in cand_lists for d in c]
        b = len(batch)
        cand_cols = torch.zeros(b, n, dtype=torch.long)
        cand_mask = torch.zeros(b, n, dtype=torch.bool)
        teacher = torch.zeros(b, n)
        pos_index = torch.zeros(b, dtype=torch.long)
        batch_mask = torch.ones(b, len(cols), dtype=torch.bool)
        off = 0
        for i, (task, c, ts) in enumerate(zip(batch, cand_lists, teacher_lists)):
            cand_cols[i, : len(c)] = torch.arange(off, off + len(c))
            cand_mask[i, : len(c)] = True
            teacher[i, : len(ts)] = torch.tensor(ts)
            pos_index[i] = off
            banned = set(task.positives) | {c[0]}
            for j, d in enumerate(cols):  # other copies of this turn's positives are not negatives
                if d in banned and j != off:
                    batch_mask[i, j] = False
            if not self.cfg.in_batch_negatives:
                batch_mask[i, :off] = False
                batch_mask[i, off + len(c):] = False
            off += len(c)
        return cols, cand_cols, cand_mask, teacher, pos_index, batch_mask

    def _encode(self, model, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        ids, mask = pad_batch(rows, self.tokenizer.pad_token_id or 0)
        return model(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))

    def _checkpoint(self, stage: str, step: int, model, opt) -> None:
        ck = self.out / "checkpoint"
        ck.mkdir(exist_ok=True)
        torch.save({"stage": stage, "step": step, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "log": self.log,
                    "rng": (random.getstate(), np.random.get_state(), torch.get_rng_state())},
                   ck / "state.pt.tmp")
        (ck / "state.pt.tmp").replace(ck / "state.pt")

    def _resume(self, stage: str, model, opt) -> int:
        path = self.out / "checkpoint" / "state.pt"
        if not (self.cfg.resume and path.exists()):
            return 0
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["stage"] != stage:
            return -1 if stage == "documents" else 0  # documents stage finished earlier
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        self.log = state["log"]
        random.setstate(state["rng"][0])
        np.random.set_state(state["rng"][1])
        torch.set_rng_state(state["rng"][2])
        return int(state["step"])

    # ---------------------------------------------------------------- stage 1: documents
    def document_stage(self) -> None:
        cfg = self.cfg
        model = self.student.model
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
        start = self._resume("documents", model, opt)
        if start < 0:
            ck = torch.load(self.out / "checkpoint" / "documents_model.pt", map_location=self.device)
            model.load_state_dict(ck)
            return
        teacher = self._doc_teacher
        loss_fn = DistillationLoss(infonce_weight=cfg.infonce_weight, kl_temperature=cfg.kl_temperature,
                                   infonce_temperature=cfg.infonce_temperature, lambda_q=cfg.lambda_q,
                                   lambda_d=cfg.lambda_d, warmup_steps=cfg.warmup_steps)
        pool = [t for t in self.train if t.has_rewrite]
        rng = random.Random(cfg.seed + 1)
        model.train()
        bar = tqdm(range(start, cfg.doc_stage_steps), desc="stage 1 (documents)", disable=not cfg.progress)
        for step in bar:
            batch = rng.sample(pool, min(cfg.doc_stage_batch_size, len(pool)))
            cl, tl = zip(*(self._candidates(t, teacher, rng, cfg.doc_stage_negatives) for t in batch))
            cols, cc, cm, ts, pi, bm = self._batch_tensors(batch, cl, tl)
            q = self._encode(model, self.student.tokenize_documents([t.teacher_query for t in batch]))
            d = self._encode(model, self.student.tokenize_documents([self.corpus[x] for x in cols]))
            parts = self._train_step("documents", step, loss_fn, opt, q, d, cc, cm, ts, pi, bm)
            bar.set_postfix(loss=f"{parts.total.item():.3f}")
            if (step + 1) % cfg.checkpoint_every == 0:
                self._checkpoint("documents", step + 1, model, opt)
        model.eval()
        ck = self.out / "checkpoint"
        ck.mkdir(exist_ok=True)
        torch.save(model.state_dict(), ck / "documents_model.pt")
        self._checkpoint("conversations", 0, model, torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate))

    def _train_step(self, stage, step, loss_fn, opt, q, d, cc, cm, ts, pi, bm):
        """One optimiser step on a batch of query maps `q` against candidate documents `d`;
        both stages share it so their losses and logs cannot drift apart."""
        scores = q @ d.T
        parts = loss_fn(step=step + 1, query_maps=q, doc_maps=d,
                        candidate_scores=scores.gather(1, cc.to(self.device)),
                        teacher_scores=ts.to(self.device), candidate_mask=cm.to(self.device),
                        batch_scores=scores, positive_index=pi.to(self.device),
                        batch_mask=bm.to(self.device))
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
        bar = tqdm(range(start, cfg.steps), desc="stage 2 (conversations)", disable=not cfg.progress)
        for step in bar:
            batch = rng.sample(self.train, min(cfg.batch_size, len(self.train)))
            cl, tl = zip(*(self._candidates(t, teacher, rng, cfg.n_negatives) for t in batch))
            cols, cc, cm, ts, pi, bm = self._batch_tensors(batch, cl, tl)
            q = self._encode(model, [rows[t.task_id] for t in batch])
            d = doc_matrix[[self.doc_index[x] for x in cols]].to(self.device)
            parts = self._train_step("conversations", step, loss_fn, opt, q, d, cc, cm, ts, pi, bm)
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
        out["flops"] = flops_metric(q, doc_matrix)
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
    tr = _Trainer(cfg)
    if cfg.doc_stage_steps > 0:
        tr._doc_teacher = tr.teacher_runs(tr.student, None) if "student" not in cfg.teachers else None
        if tr._doc_teacher is None:
            raise ValueError("stage 1 needs a teacher other than the untrained student")
        tr.document_stage()
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

