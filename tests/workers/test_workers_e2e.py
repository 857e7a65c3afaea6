"""End to end through a real Redis and a real `celery worker` subprocess."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from convsparse.integration.ingest_options import Batching, IngestOptions
from convsparse.integration.ingestion import ingest
from convsparse.workers.jobs import JobStore
from convsparse.workers.submit import JobOptions, JobTimeouts, run_ingest_job


def stored_term_maps(backend, index: str, ids) -> dict:
    """id -> stored TermMap for `ids`; the count check proves there is nothing else."""
    assert backend.count(index) == len(ids)
    return {i: backend.get_document(index, i)[0] for i in ids}


@pytest.fixture(scope="module")
def local_encoder(tiny_model_dir):
    from convsparse.compose import load_encoder
    from convsparse.workers.app import WorkerSettings

    return load_encoder(WorkerSettings(model=str(tiny_model_dir), runtime="torch", device="cpu"))


def test_ingest_through_worker_equals_in_process(session_worker, helpers, local_encoder, tmp_path):
    from convsparse.integration.backends.embedded import EmbeddedBackend

    settings = session_worker.settings
    corpus = helpers.make_corpus(200)
    source = helpers.write_jsonl(tmp_path / "corpus.jsonl", corpus)
    options = replace(helpers.fail_fast(16), batching=Batching(chunk_size=16, max_in_flight=4))
    status = run_ingest_job(source, index="e2e", settings=settings, options=options,
                            progress=False)
    assert status.state == "finished", status
    assert (status.records_read, status.submitted, status.indexed, status.failed) == (200, 200, 200, 0)
    assert status.chunks_total == status.chunks_done == 13 and not status.missing_chunks

    ids = [d["id"] for d in corpus]
    remote = stored_term_maps(EmbeddedBackend(settings.data_dir), "e2e", ids)  # each id, once
    local_backend = EmbeddedBackend(tmp_path / "local")
    # Same chunks -> same padded batches -> bit-identical activations (padding alone moves
    # weights by ~1e-6, so the in-process run uses the job's chunk and batch sizes).
    report = ingest(source, encoder=local_encoder, backend=local_backend, index="e2e",
                    options=IngestOptions(batching=Batching(chunk_size=16,
                                                            batch_size=settings.ingest_batch_size)))
    assert (report.records_read, report.indexed, report.failed) == (200, 200, 0)
    local = stored_term_maps(local_backend, "e2e", ids)
    assert local == remote  # same term maps as the in-process path
    assert EmbeddedBackend(settings.data_dir).describe_index("e2e").fingerprint == \
        local_encoder.fingerprint

    # Re-running the job skips every finished chunk (no task runs again).
    store = JobStore.from_url(settings.redis_url)
    attempts_before = store.r.hgetall(store.key(status.job_id, "attempts"))
    again = run_ingest_job(source, index="e2e", settings=settings, options=helpers.fail_fast(16),
                           progress=False)
    assert again.job_id == status.job_id and again.state == "finished" and again.indexed == 200
    assert store.r.hgetall(store.key(status.job_id, "attempts")) == attempts_before
    assert EmbeddedBackend(settings.data_dir).count("e2e") == 200


def test_bad_records_go_to_dead_letter(session_worker, helpers, tmp_path):
    from convsparse.integration.backends.embedded import EmbeddedBackend

    settings = session_worker.settings
    good = helpers.make_corpus(30, seed=3)
    lines = [json.dumps(d).encode() for d in good[:10]]
    lines += [
        json.dumps({"id": "empty", "text": "  \t "}).encode(),
        b'{"id": "broken", "text": "never closed"',
        json.dumps({"title": "no id", "text": "orphan text"}).encode(),
        json.dumps({"id": good[0]["id"], "text": "a second doc-0000"}).encode(),
        json.dumps({"id": "huge", "text": "w " * (5 * 1024 * 1024)}).encode(),  # 10 MB
        b'{"id": "bad-utf8", "text": "\xff\xfe not utf-8"}',
    ]
    lines += [json.dumps(d).encode() for d in good[10:]]
    source = tmp_path / "bad.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")

    status = run_ingest_job(source, index="dirty", settings=settings,
                            options=helpers.fail_fast(8), progress=False)
    assert status.state == "finished"
    assert status.indexed == 30 and status.failed == 6 and status.records_read == 36
    reasons = {(d.position, d.id): d.reason for d in status.dead_letter}
    assert reasons[(11, "empty")] == "empty text"
    assert reasons[(12, "broken")].startswith("line 12: not valid JSON")  # the id is kept
    assert reasons[(13, None)] == "missing id field 'id'"
    assert reasons[(14, "doc-0000")].startswith("duplicate id")
    assert reasons[(15, "huge")].startswith("text too long")
    assert reasons[(16, "bad-utf8")].startswith("invalid UTF-8")
    assert EmbeddedBackend(settings.data_dir).count("dirty") == 30

    from typer.testing import CliRunner

    from convsparse.cli import app

    result = CliRunner().invoke(app, ["jobs", "status", status.job_id, "--json"],
                                env={"CONVSPARSE_REDIS_URL": settings.redis_url})
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["state"] == "finished" and len(shown["dead_letter"]) == 6


def test_remote_encoder_answers_via_worker_and_falls_back(
    session_worker, redis_db, helpers, local_encoder, tiny_model_dir, tmp_path
):
    from convsparse.workers.remote import RemoteEncoder

    conversation = [{"role": "user", "text": "which river runs through paris?"},
                    {"role": "assistant", "text": "the seine"},
                    {"role": "user", "text": "and is there a museum of art on it?"}]
    expected = local_encoder.encode_conversation(conversation)

    remote = RemoteEncoder(session_worker.settings, fallback=local_encoder, timeout_s=20)
    assert remote.encode_conversation(conversation) == expected
    assert remote.last_path == "remote" and remote.last_latency_ms > 0
    assert remote.fingerprint == local_encoder.fingerprint

    # No worker listens on this database: time out, answer locally, then skip the wait.
    lonely = RemoteEncoder(helpers.settings_for(redis_db, tiny_model_dir, tmp_path),
                           fallback=local_encoder, timeout_s=1.0)
    assert lonely.encode_conversation(conversation) == expected
    assert lonely.last_path == "local" and lonely.last_latency_ms >= 900
    assert "remote encoding failed" in lonely.last_error
    lonely.encode_conversation(conversation)
    assert lonely.last_path == "local" and lonely.last_latency_ms < 900  # cooldown: no wait
    assert lonely.last_error is None

    # A worker running another encoder is refused.
    other = RemoteEncoder(session_worker.settings, fallback=local_encoder, timeout_s=20,
                          fingerprint="sha256:0000000000000000")
    other.encode_conversation(conversation)
    assert other.last_path == "local" and "differs" in other.last_error


def test_job_without_worker_reports_missing_then_retry_finishes(
    redis_db, make_worker, helpers, tiny_model_dir, tmp_path
):
    from typer.testing import CliRunner

    from convsparse.cli import app
    from convsparse.integration.backends.embedded import EmbeddedBackend

    data = tmp_path / "data"
    settings = helpers.settings_for(redis_db, tiny_model_dir, data)
    corpus = helpers.make_corpus(40, seed=5)
    source = helpers.write_jsonl(tmp_path / "c.jsonl", corpus)
    # Nobody consumes this database: the job gives up and says exactly what is missing.
    status = run_ingest_job(source, index="later", settings=settings, progress=False,
                            options=JobOptions(batching=Batching(chunk_size=10),
                                               timeouts=JobTimeouts(stall_s=1.0),
                                               max_resubmits=0, require_worker=False))
    assert status.state == "incomplete" and status.indexed == 0
    assert status.missing_chunks == ["0000000", "0000001", "0000002", "0000003"]
    assert status.missing_ids == [d["id"] for d in corpus]

    env = helpers.worker_env(redis_db, tiny_model_dir, data)
    make_worker(env, "retry").start()
    runner = CliRunner()
    result = runner.invoke(app, ["jobs", "retry", status.job_id, "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    assert "finished" in result.output
    final = JobStore.from_url(redis_db).status(status.job_id)
    assert final.state == "finished" and final.indexed == 40 and not final.missing_ids
    assert EmbeddedBackend(data).count("later") == 40  # queued + retried chunks: no duplicates

    unknown = runner.invoke(app, ["jobs", "status", "job-nope"], env=env)
    assert unknown.exit_code == 1 and "unknown" in unknown.output
