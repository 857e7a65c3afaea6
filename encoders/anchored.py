"""The anchored student: the current question's term map plus a learned, gated expansion from
the conversation's history.

Why this shape. On `mtrag-pooled` (dev conversations, documents encoded by the untrained
SPLADE-tiny base; MRR@10), the same encoder fed different conversation formats gives:
the whole conversation newest first .240, user turns only .294, the current question plus the
previous answer .266, the current question alone .418, and the current question's term map plus
0.15 x the term map of a short context (question, first 40 words of the previous answer, earlier
questions) .459 (`benchmarks/results/student_ablation.md` has every row). Feeding the history
into one pass drowns the question; adding it as a second, down-weighted vector helps. So the
current question stays in charge: its term map passes unchanged, and each history view v
(context, previous answer, earlier questions) adds, term by term,

    q_j = cur_j + sum_v softplus(a_v) * sigmoid(theta_v . phi_j + b_v) * v_j

(The shipped gate is the dev-chosen summed-views setting, cur + 0.15 context + 0.05 earlier
questions, written with saturated sigmoids: distilled gates did not beat it on the dev
conversations; `benchmarks/results/student_ablation.md`.)

where phi_j are per-term features (the term's weight in the current question and in each view,
whether the current question has it, a constant). The gate is what is learned (distilled from
a teacher reading the annotators' search queries or the rewrite, see
`convsparse.training.anchored`); the encoder itself is the frozen base shared with the
documents, so the document index never changes when the query side is retrained and the
fingerprint of an anchored student is its base's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convsparse.conversation import ConversationLike, Turn, parse_conversation
from convsparse.termmap import TermMapBatch, term_map_from_vector

#: the history views, in the order the gate's parameters are stored
VIEWS: tuple[str, ...] = ("context", "previous_answer", "earlier_questions")
#: words of the previous answer a view keeps (its opening names what it is about)
ANSWER_WORDS = 40
GATE_FILE = "anchored.json"

if TYPE_CHECKING:
    from convsparse.encoders.anchored_gate import AnchoredGate


def is_anchored_folder(path: str | Path) -> bool:
    """A folder holding an anchored student (its gate file)."""
    return (Path(path) / GATE_FILE).is_file()


@dataclass(frozen=True)
class ConversationViews:
    """The texts an anchored student encodes for one conversation ('' = view absent)."""

    current: str
    context: str
    previous_answer: str
    earlier_questions: str

    @classmethod
    def from_turns(cls, turns: Sequence[Turn], sep: str = " [SEP] ") -> ConversationViews:
        current = turns[-1].text
        earlier = [t.text for t in reversed(turns[:-1]) if t.role == "user"]
        answer = next((t.text for t in reversed(turns[:-1]) if t.role == "assistant"), "")
        answer = " ".join(answer.split()[:ANSWER_WORDS])
        context = sep.join(p for p in [current, answer, *earlier] if p)
        return cls(current, context, answer, sep.join(earlier))

    @classmethod
    def parse(cls, conversation: ConversationLike, *, record_id: str | None = None,
              sep: str = " [SEP] ") -> ConversationViews:
        return cls.from_turns(parse_conversation(conversation, record_id=record_id), sep)

    def texts(self) -> list[str]:
        return [self.current, *(getattr(self, v) for v in VIEWS)]


@dataclass(frozen=True)
class GateWeights:
    """The gate's parameters as arrays, and the gate itself in numpy: what serving runs (no
    torch). `AnchoredGate` (`encoders/anchored_gate.py`) is the trainable PyTorch form of the
    same formula; both read and write the same `anchored.json`."""

    theta: np.ndarray  # (n_views, n_features)
    bias: np.ndarray   # (n_views,)
    alpha: np.ndarray  # (n_views,)

    @classmethod
    def from_dict(cls, d: dict) -> GateWeights:
        check_gate_dict(d)
        return cls(*(np.asarray(d[k], dtype=np.float32) for k in ("theta", "bias", "alpha")))

    @classmethod
    def load(cls, folder: str | Path) -> tuple[GateWeights, str]:
        """(gate, base reference) from a folder's `anchored.json`."""
        d = read_gate_file(folder)
        return cls.from_dict(d), str(d.get("base") or "splade-tiny")

    def __call__(self, current: np.ndarray, views: np.ndarray) -> np.ndarray:
        """`current` (batch, vocab), `views` (batch, n_views, vocab) -> (batch, vocab).

        Only the terms some view holds are gated: a term with no history gets ``current +
        gate * 0``, i.e. `current`, so the few hundred held terms are computed instead of the
        whole vocabulary (9 ms of a one-core chat turn before)."""
        out = np.array(current, dtype=np.float32)
        rows, terms = np.nonzero((views != 0).any(axis=1))                    # held terms
        if rows.size == 0:
            return out
        cur = out[rows, terms]                                                # (k,)
        history = views[rows, :, terms].astype(np.float32, copy=False)        # (k, n)
        phi = np.column_stack([cur, history, (cur > 0).astype(np.float32),
                               np.ones_like(cur)])                            # (k, F)
        gate = _sigmoid(phi @ self.theta.T + self.bias)                      # (k, n)
        weight = np.logaddexp(0.0, self.alpha).astype(np.float32)           # softplus, (n,)
        out[rows, terms] = cur + (gate * weight * history).sum(-1)
        return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # the logistic as torch computes it: a saturated gate's tiny weights stay tiny, not 0
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32, copy=False)


def check_gate_dict(d: dict) -> None:
    if d.get("format") != 1 or tuple(d.get("views", ())) != VIEWS:
        raise ValueError(f"{GATE_FILE}: unsupported gate format {d.get('format')!r} / views "
                         f"{d.get('views')!r}; expected format 1 with views {list(VIEWS)}")


def read_gate_file(folder: str | Path) -> dict:
    return json.loads((Path(folder) / GATE_FILE).read_text(encoding="utf-8"))


def __getattr__(name: str) -> object:
    # AnchoredGate is a torch module: imported only when asked for (training, tests)
    if name == "AnchoredGate":
        from convsparse.encoders.anchored_gate import AnchoredGate

        return AnchoredGate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class AnchoredStudent:
    """An `Encoder`: documents through the base student; conversations as the current question
    plus the gated history expansion. Runs on either runtime of the base (PyTorch or ONNX
    Runtime), since the gate is a few element-wise operations on its output."""

    runtime_suffix = "+anchored"

    def __init__(self, base: Any, gate: GateWeights | AnchoredGate, *, source: str = "",
                 query_base: Any = None):
        self.base = base
        #: what the conversation views run through: `base`, or `base` on its int8 query graph
        #: (`encoders/query_graph.py`); documents always run through `base`
        self.query_base = query_base if query_base is not None else base
        # a trainable gate (training) runs in torch; a loaded one in numpy
        self.gate = gate if isinstance(gate, GateWeights) else gate.eval()
        self.source = source

    # the index contract is the document side's: same base, same term space
    @property
    def fingerprint(self) -> str:
        return self.base.fingerprint

    @property
    def vocabulary_name(self) -> str:
        return self.base.vocabulary_name

    @property
    def vocabulary(self) -> list[str]:
        return self.base.vocabulary

    @property
    def tokenizer(self):
        return self.base.tokenizer

    @property
    def max_length(self) -> int:
        return self.base.max_length

    @property
    def runtime(self) -> str:
        return self.base.runtime + self.runtime_suffix

    @property
    def query_precision(self) -> str:
        """'int8' when conversations run the int8 query graph, else 'fp32'."""
        return "fp32" if self.query_base is self.base else "int8"

    @property
    def document_pruning(self):
        return self.base.document_pruning

    def encode_documents(self, texts, *, ids=None, batch_size: int = 32, progress: bool = False):
        return self.base.encode_documents(texts, ids=ids, batch_size=batch_size, progress=progress)

    def view_activations(self, views: Sequence[ConversationViews], *, batch_size: int = 32
                         ) -> tuple[np.ndarray, np.ndarray]:
        """(current (n, vocab), history (n, n_views, vocab)) activations of the base."""
        texts = [t for v in views for t in v.texts()]
        present = [i for i, t in enumerate(texts) if t.strip()]
        rows = self.query_base.tokenize_documents([texts[i] for i in present])
        dense = np.zeros((len(texts), len(self.vocabulary)), dtype=np.float32)
        if present:
            dense[present] = self.query_base.activations_for_ids(rows, batch_size=batch_size)
        per = dense.reshape(len(views), 1 + len(VIEWS), -1)
        return per[:, 0], per[:, 1:]

    def combine(self, current: np.ndarray, history: np.ndarray) -> np.ndarray:
        if isinstance(self.gate, GateWeights):
            return self.gate(current, history)
        import torch

        with torch.inference_mode():
            return self.gate(torch.from_numpy(current), torch.from_numpy(history)).numpy()

    def views(self, conversations: Sequence[ConversationLike], ids: Sequence[str] | None = None
              ) -> list[ConversationViews]:
        sep = f" {self.tokenizer.sep_token} " if self.tokenizer.sep_token else " "
        return [ConversationViews.parse(c, record_id=ids[i] if ids is not None else str(i), sep=sep)
                for i, c in enumerate(conversations)]

    def encode_conversations(self, conversations, *, ids=None, batch_size: int = 32,
                             progress: bool = False):
        views = self.views(list(conversations), ids)
        current, history = self.view_activations(views, batch_size=batch_size)
        vectors = self.combine(current, history)
        maps = [term_map_from_vector(v, self.vocabulary, record_id=ids[i] if ids is not None else None)
                for i, v in enumerate(vectors)]
        return TermMapBatch(maps, self.fingerprint, list(ids) if ids is not None else None)

    def encode_conversation(self, conversation):
        return self.encode_conversations([conversation], batch_size=8)[0]

    def encode_texts(self, texts, *, batch_size: int = 32):
        return self.base.encode_texts(texts, batch_size=batch_size)
