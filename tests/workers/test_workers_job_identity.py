"""Issue 29 item 1 through a real Redis and real `celery worker` subprocesses: a job's done
markers are only true of what they were written into (the index's creation id, the backend and
its data location, the encoder). A re-ingest after `index delete`, into a re-created index, or
by workers on another data dir indexes the documents again; a re-run after a failure does the
failed work again instead of replaying the old outcome."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from convsparse.cli import app
from convsparse.errors import FingerprintMismatchError
from convsparse.integration.backends.embedded import EmbeddedBackend
from convsparse.workers.jobs import JobStore
from convsparse.workers.submit import run_ingest_job


def cli(args, env):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    return result.exit_code, result.output


@pytest.fixture
def env_of(helpers, tiny_model_dir):
    def make(settings):
        return helpers.worker_env(settings.redis_url, tiny_model_dir, settings.data_dir)
    return make


def test_reingest_after_index_delete_indexes_again(session_worker, helpers, env_of, tmp_path):
    settings = session_worker.settings
    env = env_of(settings)
    source = helpers.write_jsonl(tmp_path / "a30.jsonl", helpers.make_corpus(30, seed=11))
    code, out = cli(["ingest", source, "--index", "cel0", "--via", "celery"], env)
    assert code == 0 and "indexed 30" in out, out
    code, out = cli(["index", "delete", "cel0"], env)
    assert code == 0, out
    code, out = cli(["ingest", source, "--index", "cel0", "--via", "celery"], env)
    assert code == 0 and "indexed 30" in out, out
    assert EmbeddedBackend(settings.data_dir).count("cel0") == 30  # not "does not exist"


def test_reingest_into_recreated_index_indexes_again(session_worker, helpers, tmp_path):
    settings = session_worker.settings
    source = helpers.write_jsonl(tmp_path / "b.jsonl", helpers.make_corpus(24, seed=12))
    first = run_ingest_job(source, index="recreated", settings=settings,
                           options=helpers.fail_fast(8), progress=False)
    assert first.state == "finished" and first.indexed == 24
    backend = EmbeddedBackend(settings.data_dir)
    info = backend.describe_index("recreated")
    old_id = info.extra.get("creation_id")
    backend.delete_index("recreated")
    backend.create_index("recreated", fingerprint=info.fingerprint, vocabulary=info.vocabulary)
    again = run_ingest_job(source, index="recreated", settings=settings,
                           options=helpers.fail_fast(8), progress=False)
    assert again.state == "finished" and again.indexed == 24 and again.job_id != first.job_id
    assert EmbeddedBackend(settings.data_dir).count("recreated") == 24
    assert EmbeddedBackend(settings.data_dir).describe_index("recreated").extra["creation_id"] \
        not in (None, old_id)
    target = json.loads(again.meta["target"])
    assert target["index"] == "recreated" and target["creation_id"] not in (None, old_id)


def test_workers_on_another_data_dir_index_again(redis_db, make_worker, helpers, tiny_model_dir,
                                                 tmp_path):
    source = helpers.write_jsonl(tmp_path / "c.jsonl", helpers.make_corpus(20, seed=13))
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    worker = make_worker(helpers.worker_env(redis_db, tiny_model_dir, first_dir), "first")
    worker.start()
    settings = helpers.settings_for(redis_db, tiny_model_dir, first_dir)
    first = run_ingest_job(source, index="moved", settings=settings,
                           options=helpers.fail_fast(10), progress=False)
    assert first.state == "finished" and EmbeddedBackend(first_dir).count("moved") == 20
    worker.stop()
    # The workers now point at another folder (the submitter's settings did not change).
    make_worker(helpers.worker_env(redis_db, tiny_model_dir, second_dir), "second").start()
    again = run_ingest_job(source, index="moved", settings=settings,
                           options=helpers.fail_fast(10), progress=False)
    assert again.state == "finished" and again.indexed == 20 and again.job_id != first.job_id
    assert EmbeddedBackend(second_dir).count("moved") == 20
    assert json.loads(again.meta["target"])["location"] == str(second_dir.resolve())


def test_rerun_after_a_failure_does_the_failed_work(session_worker, helpers, tmp_path):
    """Two failures: chunks that dead-lettered documents (a backend outage, simulated by
    rewriting their done markers as a worker writes them after its retries), and a job stopped
    by another encoder's index, fixed by deleting it."""
    settings = session_worker.settings
    store = JobStore.from_url(settings.redis_url)
    source = helpers.write_jsonl(tmp_path / "d.jsonl", helpers.make_corpus(20, seed=14))
    first = run_ingest_job(source, index="outage", settings=settings,
                           options=helpers.fail_fast(10), progress=False)
    assert first.state == "finished" and first.failed == 0
    marker = json.loads(store.r.hget(store.key(first.job_id, "chunks"), "0000001"))
    lost = store.plan(first.job_id)["0000001"]
    list(EmbeddedBackend(settings.data_dir).delete_documents("outage", lost))
    store.r.hset(store.key(first.job_id, "dead"), mapping={f"doc:{i}": json.dumps(
        {"id": i, "position": None, "chunk": "0000001", "reason": "BackendError: cluster down"})
        for i in lost})
    store.r.hset(store.key(first.job_id, "chunks"), "0000001",
                 json.dumps({**marker, "indexed": 0, "failed": len(lost), "attempt": 4}))
    attempts = int(store.r.hget(store.key(first.job_id, "attempts"), "0000001"))
    again = run_ingest_job(source, index="outage", settings=settings,
                           options=helpers.fail_fast(10), progress=False)
    assert again.job_id == first.job_id
    assert again.state == "finished" and again.indexed == 20 and again.failed == 0, again
    assert not again.dead_letter
    assert int(store.r.hget(store.key(first.job_id, "attempts"), "0000001")) == attempts + 1
    assert int(store.r.hget(store.key(first.job_id, "attempts"), "0000000")) == 1  # skipped
    assert EmbeddedBackend(settings.data_dir).count("outage") == 20

    # Another encoder's index: refused before anything is queued; deleting it fixes the job.
    EmbeddedBackend(settings.data_dir).create_index("fixme", fingerprint="fp-other")
    with pytest.raises(FingerprintMismatchError):
        run_ingest_job(source, index="fixme", settings=settings,
                       options=helpers.fail_fast(10), progress=False)
    EmbeddedBackend(settings.data_dir).delete_index("fixme")
    fixed = run_ingest_job(source, index="fixme", settings=settings,
                           options=helpers.fail_fast(10), progress=False)
    assert fixed.state == "finished" and fixed.indexed == 20 and fixed.failed == 0
    assert EmbeddedBackend(settings.data_dir).count("fixme") == 20


def test_fixed_input_after_failed_records_is_indexed(session_worker, helpers, tmp_path):
    settings = session_worker.settings
    rows = helpers.make_corpus(12, seed=15)
    broken = [dict(r) for r in rows]
    broken[3]["text"] = "   "
    broken[7] = {"title": "no id", "text": "lost"}
    source = helpers.write_jsonl(tmp_path / "e.jsonl", broken)
    first = run_ingest_job(source, index="fixinput", settings=settings,
                           options=helpers.fail_fast(5), progress=False)
    assert (first.indexed, first.failed) == (10, 2)
    helpers.write_jsonl(source, rows)  # the same file, fixed
    fixed = run_ingest_job(source, index="fixinput", settings=settings,
                           options=helpers.fail_fast(5), progress=False)
    assert (fixed.state, fixed.indexed, fixed.failed) == ("finished", 12, 0)
    assert EmbeddedBackend(settings.data_dir).count("fixinput") == 12


def test_worker_refuses_a_chunk_for_an_index_recreated_under_the_job(session_worker, helpers,
                                                                      tmp_path):
    """A chunk whose job expects one index and finds another (deleted and created again while
    the job ran) is refused: the job fails with the reason instead of reporting a success."""
    from convsparse.workers.app import INGEST_QUEUE, INGEST_TASK, make_app
    from convsparse.workers.submit import ask_target

    settings = session_worker.settings
    capp = make_app(settings)
    target = ask_target(capp, "moving", timeout_s=30)
    backend = EmbeddedBackend(settings.data_dir)
    info = backend.describe_index("moving")
    backend.delete_index("moving")
    backend.create_index("moving", fingerprint=info.fingerprint, vocabulary=info.vocabulary)
    store = JobStore.from_url(settings.redis_url)
    store.start("job-moving", {"index": "moving"})
    capp.send_task(INGEST_TASK, args=["job-moving", "0000000",
                                      [{"id": "a", "text": "octopus", "fields": {}}], "moving", 8],
                   kwargs={"target": target.to_dict()}, queue=INGEST_QUEUE)
    import time

    deadline = time.monotonic() + 30
    while store.job_error("job-moving") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    error = store.job_error("job-moving")
    assert error is not None and "deleted and created again" in error["message"], error
    assert EmbeddedBackend(settings.data_dir).count("moving") == 0
