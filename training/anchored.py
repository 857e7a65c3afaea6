"""Distil the anchored student's expansion gate (`convsparse.encoders.anchored`).

Every input is computed once with the frozen base, then only the gate's few parameters train:
per training turn the current question's term map, its history views' term maps, the teacher's
candidates with scores (its top `n_candidates` over the corpus) and the teacher's own term map.

    L = w_kl   * KL(p_teacher || p_student)        over the teacher's candidates (seed paper)
      + w_nce  * InfoNCE(positive vs every candidate of the batch)
      + w_term * ||q - t||^2                        (term space; needs no corpus)
      + lambda(step) * FLOPS(q)                     (quadratic warm-up over the first third)

The teacher is the same base reading a better query: the annotators' search queries where a
turn has them, else the rewrite (`teacher: search_queries`, chosen because it is the strongest
teacher on the dev conversations, against the rewrite:
`benchmarks/results/student_ablation.md`), or the rewrite alone (`teacher: rewrite`). Turns
without a teacher text (MTRAG-UN) give InfoNCE only; turns without judgments (TREC CAsT) give
the KL and term losses. The epoch is picked on validation conversations drawn from the training
side; the held-out conversations are never read here beyond excluding them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from convsparse.benchmark_collections import ConversationTask, load_collection, load_conversations
from convsparse.encoders.anchored import VIEWS, AnchoredGate, AnchoredStudent
from convsparse.evaluation.metrics import compute_metrics
from convsparse.progress import Say, progress_bar
from convsparse.settings import get_settings
from convsparse.training.config import AnchoredConfig, SplitConfig
from convsparse.training.data import stratified_holdout
from convsparse.training.losses import FlopsLoss, InfoNCELoss, KLDivergenceLoss, TermSpaceLoss, quadratic_warmup
from convsparse.training.seeding import seed_everything


@dataclass
class AnchoredExample:
    """One training turn, precomputed. `current` (1, vocab) and `history` (n_views, vocab) are
    CSR rows; `candidates` (document rows) and `teacher_scores` are the teacher's top list, or
    None; `teacher_vector` (1, vocab) or None; `positives` are judged relevant document rows."""

    task_id: str
    current: sp.csr_matrix
    history: sp.csr_matrix
    candidates: np.ndarray | None
    teacher_scores: np.ndarray | None
    teacher_vector: sp.csr_matrix | None
    positives: np.ndarray


@dataclass
class TaskSplit:
    """Which tasks train, pick the epoch, or are never seen."""

    train: list[ConversationTask]
    validation: list[ConversationTask]
    heldout: list[ConversationTask]


@dataclass
class AnchoredResult:
    model_dir: Path
    gate: AnchoredGate
    validation_mrr: list[float] = field(default_factory=list)
    examples: int = 0


# ---------------------------------------------------------------------------------------------
# data


def teacher_text(task: ConversationTask, teacher: str) -> str | None:
    """What the teacher reads for a turn: its search queries (joined) or its rewrite."""
    if teacher == "search_queries":
        queries = [q for q in (task.fields.get("search_queries") or []) if str(q).strip()]
        if queries:
            return " ; ".join(map(str, queries))
    return task.rewrite.strip() if task.rewrite and task.rewrite.strip() else None


def split_tasks(tasks: Sequence[ConversationTask], qrels, cfg: SplitConfig) -> TaskSplit:
    """Held-out conversations (`holdout_per_domain` per domain of the `heldout_source` tasks),
    validation conversations drawn from the rest, and everything else to train."""
    own = [t for t in tasks if t.fields.get("source", cfg.heldout_source) == cfg.heldout_source]
    pairs = [(t.conversation_id or t.id, t.fields.get("domain") or "") for t in own]
    held = stratified_holdout(pairs, cfg.holdout_per_domain, cfg.holdout_seed)
    rest = sorted({cid for cid, _ in pairs if cid not in held})
    random.Random(cfg.validation_seed).shuffle(rest)
    val = set(rest[: cfg.validation_conversations])

    def cid(t: ConversationTask) -> str:
        return t.conversation_id or t.id

    judged = {q for q, r in qrels.items() if any(v > 0 for v in r.values())}
    return TaskSplit(
        train=[t for t in tasks if cid(t) not in held and cid(t) not in val],
        validation=[t for t in own if cid(t) in val and t.id in judged],
        heldout=[t for t in own if cid(t) in held and t.id in judged],
    )


def extra_training_tasks(cfg: SplitConfig) -> list[ConversationTask]:
    """The `extra_conversations` of a recipe (each cut to its `limit`): training turns only."""
    return [t for src in cfg.extra_conversations
            for t in load_conversations(src.path)[: src.limit or None]]


def encode_texts_csr(base, texts: Sequence[str], batch_size: int = 64) -> sp.csr_matrix:
    """(n, vocab) CSR activations of the base for `texts` ('' -> an empty row), through the
    encoder's own sparse path (no dense vocabulary-sized rows on the host)."""
    n, vocab = len(texts), len(base.vocabulary)
    present = [i for i, t in enumerate(texts) if t and t.strip()]
    if not present:
        return sp.csr_matrix((n, vocab), dtype=np.float32)
    rows = base.sparse_for_ids(base.tokenize_documents([texts[i] for i in present]),
                               batch_size=batch_size)
    encoded = sp.csr_matrix((rows.values, rows.indices, rows.indptr), shape=(len(present), vocab))
    placement = sp.csr_matrix((np.ones(len(present), np.float32), (present, range(len(present)))),
                              shape=(n, len(present)))
    return (placement @ encoded).tocsr()


def encode_corpus(base, texts: Sequence[str], *, cache: Path | None = None, chunk: int = 512,
                  progress: bool = True) -> sp.csr_matrix:
    """Document activations as CSR, cached under `cache` (keyed by the base's fingerprint and
    the texts), so a sweep encodes the corpus once."""
    key = hashlib.sha256((base.fingerprint + "\x00".join(texts)).encode()).hexdigest()[:16]
    path = cache / f"documents-{key}.npz" if cache is not None else None
    if path is not None and path.exists():
        return sp.load_npz(path).tocsr()
    parts = [encode_texts_csr(base, texts[s:s + chunk])
             for s in progress_bar(range(0, len(texts), chunk), desc="encoding corpus",
                                   unit="chunk", enabled=progress)]
    matrix = sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, len(base.vocabulary)))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sp.save_npz(path, matrix)
    return matrix


def view_matrices(base, tasks: Sequence[ConversationTask], *, chunk: int = 256
                  ) -> tuple[sp.csr_matrix, list[sp.csr_matrix]]:
    """(current (n, vocab), [one (n, vocab) matrix per history view]) as CSR."""
    viewer = AnchoredStudent(base, AnchoredGate())
    views = viewer.views([list(t.turns) for t in tasks], [t.id for t in tasks])
    current = encode_texts_csr(base, [v.current for v in views])
    history = [encode_texts_csr(base, [getattr(v, name) for v in views]) for name in VIEWS]
    return current, history


def top_candidates(documents: sp.csr_matrix, queries: sp.csr_matrix, n: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and scores of each query's `n` best documents (dot product)."""
    scores = (documents @ queries.T).T.toarray()
    n = min(n, documents.shape[0])
    top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, 1)
    return top, np.take_along_axis(scores, top, 1)


def build_examples(base, documents: sp.csr_matrix, doc_ids: Sequence[str],
                   tasks: Sequence[ConversationTask], qrels, cfg: AnchoredConfig
                   ) -> list[AnchoredExample]:
    """One `AnchoredExample` per training turn that has a teacher text or a judged passage."""
    row_of = {d: i for i, d in enumerate(doc_ids)}
    current, history = view_matrices(base, tasks)
    texts = [teacher_text(t, cfg.teacher) for t in tasks]
    teacher = encode_texts_csr(base, [x or "" for x in texts])
    has = [i for i, x in enumerate(texts) if x]
    top, scores = (top_candidates(documents, teacher[has], cfg.n_candidates) if has
                   else (np.empty((0, 0), np.int64), np.empty((0, 0))))
    where = {i: j for j, i in enumerate(has)}
    examples = []
    for i, task in enumerate(tasks):
        positives = np.array([row_of[d] for d, r in qrels.get(task.id, {}).items()
                              if r > 0 and d in row_of], dtype=np.int64)
        j = where.get(i)
        if j is None and not len(positives):
            continue
        examples.append(AnchoredExample(
            task.id, current[i], sp.vstack([h[i] for h in history]).tocsr(),
            None if j is None else top[j], None if j is None else scores[j],
            None if j is None else teacher[i], positives))
    return examples


# ---------------------------------------------------------------------------------------------
# training


def _dense(rows: Sequence[sp.csr_matrix]) -> torch.Tensor:
    return torch.from_numpy(sp.vstack(rows).toarray().astype(np.float32))


def _sparse_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    sub = matrix[rows].tocoo()
    return torch.sparse_coo_tensor(np.vstack([sub.row, sub.col]), sub.data.astype(np.float32),
                                   (len(rows), matrix.shape[1]), check_invariants=False)


class GateObjective:
    """The weighted sum of the four losses for one batch of examples."""

    def __init__(self, cfg: AnchoredConfig):
        self.cfg = cfg
        self.kl = KLDivergenceLoss(cfg.kl_temperature)
        self.nce = InfoNCELoss(cfg.infonce_temperature)
        self.term = TermSpaceLoss()
        self.flops = FlopsLoss()

    def __call__(self, gate: AnchoredGate, batch: Sequence[AnchoredExample],
                 documents: sp.csr_matrix, flops_weight: float, rng: random.Random) -> torch.Tensor:
        cfg = self.cfg
        vocab = documents.shape[1]
        current = _dense([e.current for e in batch])
        history = _dense([e.history for e in batch]).reshape(len(batch), len(VIEWS), vocab)
        q = gate(current, history)
        lists = [e.candidates for e in batch if e.candidates is not None] + [e.positives for e in batch]
        union = np.unique(np.concatenate(lists)).astype(np.int64)
        col = {d: i for i, d in enumerate(union.tolist())}
        scores = torch.sparse.mm(_sparse_rows(documents, union), q.T).T          # (B, |union|)
        loss = q.new_zeros(())
        kl_rows = [i for i, e in enumerate(batch) if e.candidates is not None]
        if kl_rows and cfg.kl_weight:
            idx = torch.tensor([[col[d] for d in batch[i].candidates.tolist()] for i in kl_rows])
            teacher = torch.tensor(np.stack([batch[i].teacher_scores for i in kl_rows]),
                                   dtype=torch.float32)
            loss = loss + cfg.kl_weight * self.kl(scores[kl_rows].gather(1, idx), teacher)
        nce_rows = [i for i, e in enumerate(batch) if len(e.positives)]
        if nce_rows and cfg.infonce_weight:
            target = [col[int(rng.choice(batch[i].positives.tolist()))] for i in nce_rows]
            mask = torch.ones(len(nce_rows), len(union), dtype=torch.bool)
            for r, i in enumerate(nce_rows):  # the turn's other positives are not negatives
                mask[r, [col[d] for d in batch[i].positives.tolist()]] = False
            loss = loss + cfg.infonce_weight * self.nce(scores[nce_rows], torch.tensor(target), mask)
        term_rows = [i for i, e in enumerate(batch) if e.teacher_vector is not None]
        if term_rows and cfg.term_weight:
            teacher_maps = _dense([batch[i].teacher_vector for i in term_rows])
            loss = loss + cfg.term_weight * self.term(q[term_rows], teacher_maps)
        if flops_weight:
            loss = loss + flops_weight * self.flops(q)
        return loss


def search_matrix(documents: sp.csr_matrix, queries: np.ndarray, doc_ids: Sequence[str],
                  query_ids: Sequence[str], k: int = 100) -> dict[str, dict[str, float]]:
    """Exact dot-product top-k of dense query vectors over CSR documents, as a run."""
    scores = np.asarray((documents @ queries.T).T)
    k = min(k, len(doc_ids))
    run = {}
    for i, qid in enumerate(query_ids):
        top = np.argpartition(-scores[i], k - 1)[:k]
        run[qid] = {doc_ids[j]: float(scores[i, j]) for j in top if scores[i, j] > 0}
    return run


def train_gate(examples: Sequence[AnchoredExample], documents: sp.csr_matrix, cfg: AnchoredConfig,
               validate: Callable[[AnchoredGate], float], log: Say = print
               ) -> tuple[AnchoredGate, list[float]]:
    """Adam on the gate; keeps the epoch with the best `validate(gate)`, the untrained gate
    included (so training can never ship something worse on validation than where it began)."""
    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    gate = AnchoredGate(cfg.initial_weight)
    objective = GateObjective(cfg)
    opt = torch.optim.Adam(gate.parameters(), lr=cfg.learning_rate)
    order = list(examples)
    best = validate(gate)
    best_state, history = copy.deepcopy(gate.state_dict()), [best]
    total = cfg.epochs * ((len(order) + cfg.batch_size - 1) // cfg.batch_size)
    step = 0
    for epoch in range(cfg.epochs):
        rng.shuffle(order)
        for s in progress_bar(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch + 1}",
                              unit="batch", enabled=cfg.progress, leave=False):
            step += 1
            flops_weight = quadratic_warmup(cfg.flops_weight, step, max(1, total // 3))
            loss = objective(gate, order[s:s + cfg.batch_size], documents, flops_weight, rng)
            opt.zero_grad()
            loss.backward()
            opt.step()
        score = validate(gate)
        history.append(score)
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss.item():.3f}, validation MRR@10 {score:.4f}")
        if score > best:
            best, best_state = score, copy.deepcopy(gate.state_dict())
    gate.load_state_dict(best_state)
    return gate.eval(), history


def gate_queries(base, gate: AnchoredGate, tasks: Sequence[ConversationTask]) -> np.ndarray:
    """Dense (n, vocab) query term maps of `tasks` under `gate`."""
    current, history = view_matrices(base, tasks)
    with torch.no_grad():
        return gate(_dense([current]).reshape(len(tasks), -1),
                    torch.stack([_dense([h]) for h in history], 1)).numpy()


def distill_anchored(cfg: AnchoredConfig, *, log: Say = print,
                     documents: sp.csr_matrix | None = None) -> AnchoredResult:
    """The whole recipe: load, split, precompute, train, write `output_dir` (a student folder
    `load_student` reads: `anchored.json` naming the base, plus `training_report.json`)."""
    from convsparse.encoders.loading import load_student

    base = load_student(cfg.base, runtime="torch", device="cpu")
    collection = load_collection(cfg.collection)
    tasks = list(collection.conversations)
    split = split_tasks(tasks, collection.qrels, cfg)
    train = split.train + extra_training_tasks(cfg)
    doc_ids = list(collection.corpus)
    if documents is None:
        documents = encode_corpus(base, [collection.corpus[d].encoded_text for d in doc_ids],
                                  cache=get_settings().cache_dir / "corpus", progress=cfg.progress)
    log(f"{len(train)} training turns, {len(split.validation)} validation, "
        f"{len(split.heldout)} held out (never read)")
    examples = build_examples(base, documents, doc_ids, train, collection.qrels, cfg)
    val_ids = [t.id for t in split.validation]
    val_views = view_matrices(base, split.validation)

    def validate(gate: AnchoredGate) -> float:
        with torch.no_grad():
            q = gate(_dense([val_views[0]]), torch.stack([_dense([h]) for h in val_views[1]], 1))
        run = search_matrix(documents, q.numpy(), doc_ids, val_ids)
        return compute_metrics(collection.qrels, run, ["mrr@10"], query_ids=val_ids)["mrr@10"]

    gate, history = train_gate(examples, documents, cfg, validate, log)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    base_ref = cfg.base if not Path(cfg.base).exists() else str(Path(cfg.base).resolve())
    gate.save(cfg.output_dir, base=base_ref)
    report = {"config": json.loads(cfg.model_dump_json()), "examples": len(examples),
              "validation_mrr@10_by_epoch": history,
              "heldout_conversations": sorted({t.conversation_id or t.id for t in split.heldout}),
              "validation_conversations": sorted({t.conversation_id or t.id for t in split.validation})}
    (cfg.output_dir / "training_report.json").write_text(json.dumps(report, indent=1) + "\n")
    return AnchoredResult(cfg.output_dir, gate, history, len(examples))


__all__ = ["AnchoredExample", "AnchoredResult", "GateObjective", "TaskSplit",
           "build_examples", "distill_anchored", "encode_corpus", "encode_texts_csr",
           "extra_training_tasks", "gate_queries", "search_matrix", "split_tasks", "teacher_text",
           "top_candidates", "train_gate", "view_matrices"]
