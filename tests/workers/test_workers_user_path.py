"""Issue 12 through a real Redis and real `celery worker` subprocesses: another encoder's index
stops the job (finding 1), no worker fails fast with the command to start one (3), jobs can be
queued without waiting and cancelled (3), and exit codes count failed records (6)."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from convsparse.cli import app
from convsparse.errors import FingerprintMismatchError, WorkerUnavailableError
from convsparse.integration.ingest_options import Batching
from convsparse.workers.jobs import JobStore
from convsparse.workers.submit import JobOptions, JobTimeouts, run_ingest_job


def cli(args, env):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    return result.exit_code, result.output


def test_celery_ingest_into_another_encoders_index_is_refused(session_worker, helpers, tmp_path):
    from convsparse.integration.backends.embedded import EmbeddedBackend

    settings = session_worker.settings
    EmbeddedBackend(settings.data_dir).create_index("kitchen-fp", fingerprint="fp-other")
    source = helpers.write_jsonl(tmp_path / "c.jsonl", helpers.make_corpus(20, seed=7))
    with pytest.raises(FingerprintMismatchError) as e:
        run_ingest_job(source, index="kitchen-fp", settings=settings, progress=False,
                       options=helpers.fail_fast(5))
    message = str(e.value)
    assert "fp-other" in message and "these documents come from encoder sha256:" in message
    assert "nothing was written" in message and "query" not in message
    assert EmbeddedBackend(settings.data_dir).count("kitchen-fp") == 0


def test_celery_ingest_without_worker_fails_fast(redis_db, helpers, tiny_model_dir, tmp_path):
    settings = helpers.settings_for(redis_db, tiny_model_dir, tmp_path / "data")
    source = helpers.write_jsonl(tmp_path / "c.jsonl", helpers.make_corpus(5))
    with pytest.raises(WorkerUnavailableError) as e:
        run_ingest_job(source, index="later", settings=settings, progress=False,
                       options=JobOptions(timeouts=JobTimeouts(worker_s=1.0)))
    assert "convsparse worker -Q ingest,query" in str(e.value) and "'ingest'" in str(e.value)
    assert JobStore.from_url(redis_db).r.keys("convsparse:job:*") == []  # no job left "running"

    env = helpers.worker_env(redis_db, tiny_model_dir, tmp_path / "data")
    code, out = cli(["ingest", source, "--index", "later", "--via", "celery"], env)
    assert code == 1 and "convsparse worker" in out and "Traceback" not in out
    assert len([ln for ln in out.splitlines() if ln.startswith("error:")]) == 1


def test_worker_check_finds_the_queue_whoever_answers_first(redis_db, helpers, tiny_model_dir,
                                                            tmp_path, make_worker):
    """`check_workers` takes the first answer when its worker consumes the queue and asks
    every worker otherwise: with one worker per queue, each queue finds its own worker."""
    from convsparse.workers.app import make_app
    from convsparse.workers.submit import check_workers

    env = helpers.worker_env(redis_db, tiny_model_dir, tmp_path / "data")
    capp = make_app(helpers.settings_for(redis_db, tiny_model_dir, tmp_path / "data"))
    only_query = make_worker(env, name="qonly", queues="query")
    only_query.start()
    with pytest.raises(WorkerUnavailableError, match=r"1 worker\(s\) answered, none consuming it"):
        check_workers(capp, timeout_s=1.0)
    only_ingest = make_worker(env, name="ionly", queues="ingest")
    only_ingest.start()
    for _ in range(3):  # whichever worker answers first
        assert [n.split("@")[0] for n in check_workers(capp, timeout_s=2.0)] == ["ionly1"]
        assert [n.split("@")[0] for n in check_workers(capp, queue="query", timeout_s=2.0)] == ["qonly1"]


def test_redis_unreachable_is_one_line_fast(helpers, tiny_model_dir, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    env = helpers.worker_env(url, tiny_model_dir, tmp_path / "data")
    source = helpers.write_jsonl(tmp_path / "c.jsonl", helpers.make_corpus(3))
    for args in (["jobs", "status", "job-x"], ["ingest", source, "--index", "x", "--via", "celery"]):
        code, out = cli(args, env)
        assert code == 1 and "Redis at" in out and "unreachable" in out and "redis-server" in out, out
        assert "Traceback" not in out and len(out.strip().splitlines()) == 1


def test_celery_ingest_exits_1_when_records_fail(session_worker, helpers, tiny_model_dir, tmp_path):
    env = helpers.worker_env(session_worker.settings.redis_url, tiny_model_dir,
                             session_worker.settings.data_dir)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": ""}\n{"id": "b", "text": "  "}\n', encoding="utf-8")
    code, out = cli(["ingest", bad, "--index", "allbad", "--via", "celery"], env)
    assert code == 1 and "failed 2" in out, out
    mixed = helpers.write_jsonl(tmp_path / "mixed.jsonl", [{"id": "ok", "text": "octopus hearts"},
                                                           {"id": "empty", "text": ""}])
    code, out = cli(["ingest", mixed, "--index", "mixed", "--via", "celery"], env)
    assert code == 1 and "indexed 1" in out, out
    code, out = cli(["ingest", mixed, "--index", "mixed", "--via", "celery", "--allow-failures"], env)
    assert code == 0, out


def test_no_wait_then_cancel_cleans_keys_and_workers_skip(redis_db, make_worker, helpers,
                                                         tiny_model_dir, tmp_path):
    from convsparse.integration.backends.embedded import EmbeddedBackend

    data = tmp_path / "data"
    settings = helpers.settings_for(redis_db, tiny_model_dir, data)
    source = helpers.write_jsonl(tmp_path / "c.jsonl", helpers.make_corpus(30, seed=2))
    status = run_ingest_job(source, index="abandoned", settings=settings, progress=False,
                            options=JobOptions(batching=Batching(chunk_size=10),
                                               require_worker=False), wait=False)
    assert status.state == "running" and status.chunks_total == 3
    env = helpers.worker_env(redis_db, tiny_model_dir, data)
    code, out = cli(["jobs", "status", status.job_id], env)
    assert code == 0 and "running" in out
    code, out = cli(["jobs", "cancel", status.job_id], env)
    assert code == 0 and "cancelled" in out, out
    store = JobStore.from_url(redis_db)
    assert all(not store.r.exists(k) for k in store.keys(status.job_id))
    assert store.cancelled(status.job_id)
    code, out = cli(["jobs", "status", status.job_id], env)
    assert code == 1 and "unknown" in out
    # A worker that starts now drains the queued chunks without writing anything.
    worker = make_worker(env, "late")
    worker.start()
    deadline = time.monotonic() + 60
    while store.r.llen("ingest") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    assert store.r.llen("ingest") == 0
    assert not (data / "abandoned" / "meta.json").exists() or EmbeddedBackend(data).count("abandoned") == 0
    assert all(not store.r.exists(k) for k in store.keys(status.job_id))
    code, out = cli(["jobs", "cancel", "job-nope"], env)
    assert code == 1 and "unknown" in out
