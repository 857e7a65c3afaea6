"""BM25 with ``bm25s`` (English stopwords, default k1/b): the one BM25 of the project, used by
the evaluation baselines and by the distillation BM25 teacher."""

from __future__ import annotations

from collections.abc import Mapping

from convsparse.evaluation.flops import TermStats


class BM25:
    """BM25 over `corpus` ({doc_id: text}, the text as `convsparse.documents.document_text`
    gives it)."""

    def __init__(self, corpus: Mapping[str, str], *, stopwords: str | None = "en"):
        import bm25s

        self._bm25s = bm25s
        self.stopwords = stopwords
        self.ids = list(corpus)
        tokens = bm25s.tokenize([corpus[i] for i in self.ids], stopwords=stopwords,
                                show_progress=False)
        self.retriever = bm25s.BM25()
        self.retriever.index(tokens, show_progress=False)
        inverse = {i: t for t, i in tokens.vocab.items()}
        #: which analysed terms each document holds (for FLOPS and term counts)
        self.doc_stats = TermStats.from_term_maps({inverse[i] for i in d} for d in tokens.ids)

    def search(self, text: str, k: int) -> dict[str, float]:
        """The top-k documents with a positive score, best first."""
        q = self._bm25s.tokenize([text], stopwords=self.stopwords, show_progress=False)
        if not q.ids or not q.ids[0]:
            return {}
        k = min(k, len(self.ids))
        docs, scores = self.retriever.retrieve(q, k=k, show_progress=False, n_threads=1)
        return {self.ids[int(d)]: float(s) for d, s in zip(docs[0], scores[0]) if s > 0}

    def query_terms(self, text: str) -> set[str]:
        q = self._bm25s.tokenize([text], stopwords=self.stopwords, show_progress=False,
                                 return_ids=False)
        return set(q[0]) if q else set()


__all__ = ["BM25"]
