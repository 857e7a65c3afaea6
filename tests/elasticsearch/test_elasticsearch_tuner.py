"""The pruning tuner, the ingestion driver and the evaluation harness run unchanged against the
Elasticsearch backend (through the scripted server, both field types): they only see `Backend`."""

from __future__ import annotations

import pytest

from convsparse.benchmark_collections import sample_collection
from convsparse.evaluation.harness import index_corpus
from convsparse.evaluation.tuning import PruningTuner

GRID = {"top_k": [2, 16], "max_ratio": [0.3]}


@pytest.mark.parametrize("field_type", ["rank_features", "sparse_vector"])
def test_tuner_runs_against_elasticsearch(fake, make_backend, tiny_student, field_type):
    sample = sample_collection()
    backend = make_backend(field_type=field_type, replicas=0)
    stats = index_corpus(sample, encoder=tiny_student, backend=backend, index="s")
    assert backend.count("s") == len(fake.docs("s")) > 0
    assert fake.indices["s"]["mappings"]["_meta"]["encoder_fingerprint"] == tiny_student.fingerprint
    conversations = sample.conversations[:6]
    tuner = PruningTuner(backend, "s", tiny_student, conversations, qrels=sample.qrels, k=10,
                         warmup=0, repeats=1, doc_stats=stats)
    result = tuner.run(GRID)
    assert len(result.points) == 1 + sum(len(v) for v in GRID.values())
    assert result.baseline.recall_vs_unpruned == 1.0
    by = {p.label: p for p in result.points}
    assert by["top_k=2"].avg_query_terms <= 2 < by["top_k=16"].avg_query_terms
    assert all(p.ok for p in result.points)
    searches = [b for _, p, b in fake.requests if p == "/s/_search"]
    assert len(searches) >= len(result.points) * len(conversations)
    form = "bool" if field_type == "rank_features" else "sparse_vector"
    assert all(form in body["query"] for body in searches)
    assert result.recommend(max_recall_drop=1.0)
