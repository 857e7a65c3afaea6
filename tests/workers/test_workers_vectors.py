"""The Celery path writes passage vectors with the term maps: a real worker (MiniLM loaded in
it) SIGKILLed mid-task, restarted, and every document ends up with the vectors of its text."""

from __future__ import annotations

import threading

import pytest

from convsparse.integration.ingest_options import Batching
from convsparse.workers.jobs import JobStore
from convsparse.workers.submit import JobOptions, JobTimeouts, run_ingest_job

pytestmark = pytest.mark.slow

CHUNK, N_DOCS = 20, 80


def test_a_killed_worker_never_leaves_a_document_without_its_vectors(
        redis_db, make_worker, helpers, tiny_model_dir, tmp_path):
    from convsparse.documents import document_text
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.integration.vectors import text_key

    data = tmp_path / "data"
    settings = helpers.settings_for(redis_db, tiny_model_dir, data)
    env = helpers.worker_env(redis_db, tiny_model_dir, data, CONVSPARSE_RERANK_VECTORS="1",
                             CONVSPARSE_TASK_DELAY_S="0.4")
    worker = make_worker(env, "vectors")
    worker.start()
    corpus = helpers.make_corpus(N_DOCS, seed=3)
    source = helpers.write_jsonl(tmp_path / "corpus.jsonl", corpus)
    box: dict = {}
    options = JobOptions(batching=Batching(chunk_size=CHUNK, max_in_flight=2),
                         timeouts=JobTimeouts(stall_s=300), max_resubmits=3)

    def submit():
        try:
            box["status"] = run_ingest_job(source, index="vec", settings=settings, options=options,
                                           progress=False)
        except BaseException as e:  # surfaced below
            box["error"] = e

    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    store = JobStore.from_url(redis_db)

    def one_done():
        jobs = [k.decode().split(":")[2] for k in store.r.keys("convsparse:job:*:attempts")]
        return next((j for j in jobs if store.done_chunks(j)), None)

    helpers.wait_for(one_done, timeout=300)
    worker.kill()  # SIGKILL, mid-job
    worker.start()
    thread.join(600)
    assert not thread.is_alive() and "error" not in box, box
    status = box["status"]
    assert status.state == "finished" and status.indexed == N_DOCS, status
    be = EmbeddedBackend(data)
    assert be.vector_spec("vec") is not None and be.count("vec") == N_DOCS
    stored = be.passage_vectors("vec", [d["id"] for d in corpus])
    assert len(stored) == N_DOCS
    for d in corpus:
        assert stored[d["id"]].key == text_key(document_text(d["title"], d["text"]))
    assert not list(be.passages_to_embed("vec"))
