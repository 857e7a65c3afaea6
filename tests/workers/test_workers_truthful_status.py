"""Issue 29 item 9 (job messages that were not true), with a real Redis and real processes:
a job whose submitter was killed is reported as such (not `running` forever); a lost worker's
chunk is not said to be resubmitted when no submitter runs; a wait is never "queued for 0 s"
because Redis lost its state; `jobs retry` of a job that stays incomplete says what to do in
one line and exits 1 (not 2, a usage error)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

from typer.testing import CliRunner

from convsparse.cli import app
from convsparse.integration.ingest_options import Batching
from convsparse.workers.jobs import JobStore
from convsparse.workers.submit import JobOptions, JobTimeouts, run_ingest_job


def blind(timeouts: JobTimeouts | None = None, **options) -> JobOptions:
    """Chunks of 10, queued without asking a worker first."""
    return JobOptions(batching=Batching(chunk_size=10), timeouts=timeouts or JobTimeouts(),
                      require_worker=False, **options)


def cli(args, env):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    return result.exit_code, result.output


def test_killed_submitter_is_reported_not_running_forever(redis_db, helpers, tiny_model_dir,
                                                          tmp_path):
    data = tmp_path / "data"
    env = helpers.worker_env(redis_db, tiny_model_dir, data, CONVSPARSE_SUBMITTER_LEASE_S="1")
    source = helpers.write_jsonl(tmp_path / "c.jsonl", helpers.make_corpus(30, seed=21))
    # No worker: after its first chunk the submitter waits for room, reading the rest later.
    code = ("from convsparse.workers.submit import run_ingest_job\n"
            "from convsparse.integration.ingest_options import Batching\n"
            "from convsparse.workers.submit import JobOptions\n"
            f"run_ingest_job({str(source)!r}, index='orphan', options=JobOptions("
            "batching=Batching(chunk_size=5, max_in_flight=1), require_worker=False), "
            "progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = JobStore.from_url(redis_db)
    try:
        job = helpers.wait_for(lambda: [k.decode().split(":")[2] for k in store.r.keys("convsparse:job:*:sent")])[0]
        code_, out = cli(["jobs", "status", job], env)
        assert code_ == 0 and f"job {job}: running" in out, out
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1.5)  # the lease lapses
    code_, out = cli(["jobs", "status", job], env)
    assert f"job {job}: abandoned" in out, out
    assert f"`convsparse jobs retry {job}` resumes it" in out, out


def test_lost_worker_without_submitter_names_jobs_retry(redis_db, helpers, tiny_model_dir,
                                                         tmp_path):
    data = tmp_path / "data"
    settings = helpers.settings_for(redis_db, tiny_model_dir, data)
    env = helpers.worker_env(redis_db, tiny_model_dir, data)
    source = helpers.write_jsonl(tmp_path / "c.jsonl", helpers.make_corpus(20, seed=22))
    status = run_ingest_job(source, index="ghosted", settings=settings, progress=False,
                            options=blind(), wait=False)
    assert status.state == "running"
    store = JobStore.from_url(redis_db)
    # A worker took chunk 0 and died (its heartbeat key never exists).
    store.mark_attempt(status.job_id, "0000000", "ghost-host:4242")
    code, out = cli(["jobs", "status", status.job_id], env)
    assert code == 0 and "worker lost" in out, out
    assert "the submitter resubmits it" not in out, out
    assert (f"no submitter follows the job: `convsparse jobs retry {status.job_id}` resubmits it"
            in out), out


def test_wait_report_after_redis_lost_its_data_is_not_zero_seconds(redis_db, helpers,
                                                                   tiny_model_dir, tmp_path, caplog):
    settings = helpers.settings_for(redis_db, tiny_model_dir, tmp_path / "data")
    source = helpers.write_jsonl(tmp_path / "c.jsonl", helpers.make_corpus(20, seed=23))
    box: dict = {}

    def submit():
        box["status"] = run_ingest_job(
            source, index="amnesia", settings=settings, progress=False,
            options=blind(JobTimeouts(report_every_s=1.2, stall_s=6.0), max_resubmits=0))

    store = JobStore.from_url(redis_db)
    with caplog.at_level(logging.INFO, logger="convsparse.workers.submit"):
        thread = threading.Thread(target=submit, daemon=True)
        thread.start()
        time.sleep(2.5)
        store.r.flushdb()  # Redis restarted without its data
        flushed = len(caplog.records)
        thread.join(60)
    assert box["status"].state == "incomplete"
    after = [r.getMessage() for r in caplog.records[flushed:] if "queued for" in r.getMessage()]
    assert after, [r.getMessage() for r in caplog.records]
    ages = [int(a) for m in after for a in re.findall(r"queued for (\d+) s", m)]
    assert ages and min(ages) >= 2, after


def test_jobs_retry_of_a_job_that_stays_incomplete_exits_1_with_what_to_do(
        redis_db, make_worker, helpers, tiny_model_dir, tmp_path):
    from convsparse.workers.app import make_app

    data = tmp_path / "data"
    settings = helpers.settings_for(redis_db, tiny_model_dir, data)
    source = helpers.write_jsonl(tmp_path / "c.jsonl", helpers.make_corpus(20, seed=24))
    status = run_ingest_job(source, index="slowpoke", settings=settings, progress=False,
                            options=blind(JobTimeouts(stall_s=1.0), max_resubmits=0))
    assert status.state == "incomplete"
    make_app(settings).control.purge()  # the first run's messages: the worker starts idle
    env = helpers.worker_env(redis_db, tiny_model_dir, data, CONVSPARSE_TASK_DELAY_S="30")
    make_worker(env, "slow").start()  # answers the index check, then sleeps in every chunk
    code, out = cli(["jobs", "retry", status.job_id, "--no-progress"],
                    {**env, "CONVSPARSE_INGEST_STALL_TIMEOUT_S": "2"})
    assert code == 1, out
    lines = [ln for ln in out.splitlines() if "never finished" in ln]
    assert lines == [f"job {status.job_id} is incomplete: 2 chunk(s) (20 documents) never "
                     f"finished; check the workers (`convsparse worker`) and run `convsparse jobs "
                     f"retry {status.job_id}` again"], out
