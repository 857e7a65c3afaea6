"""The workers command group: `convsparse worker`, `jobs status`, `jobs retry`, `jobs cancel`.

`convsparse ingest SOURCE --index NAME --via celery` (cli/index.py) calls
`convsparse.workers.submit.run_ingest_job`.
"""

from __future__ import annotations

import json

import typer


def print_status(status, *, as_json: bool = False, limit: int = 20) -> None:
    """Print a job's status. Ids and reasons come from documents and errors: control
    characters are escaped and credentials masked."""
    from convsparse.redaction import mask_secrets
    from convsparse.terminal import printable

    def show(value) -> str:
        return printable(mask_secrets(value))

    if as_json:  # json.dumps escapes control characters itself
        typer.echo(mask_secrets(json.dumps(status.to_dict(), indent=2, default=str)))
        return
    typer.echo(f"job {status.job_id}: {status.state}")
    if status.state == "unknown":
        return
    typer.echo(f"  index {show(status.index)}  source {show(status.source)}")
    typer.echo(f"  read {status.records_read}  submitted {status.submitted}  "
               f"indexed {status.indexed}  failed {status.failed}")
    typer.echo(f"  chunks {status.chunks_done}/{status.chunks_total} done")
    if status.redelivered_chunks:
        typer.echo(f"  redelivered chunks: {status.redelivered_chunks}")
    if status.missing_chunks:
        typer.echo(f"  missing chunks ({len(status.missing_chunks)}): "
                   f"{', '.join(status.missing_chunks[:limit])}")
        typer.echo(f"  missing ids ({len(status.missing_ids)}): "
                   f"{show(', '.join(status.missing_ids[:limit]))}")
    if status.state == "abandoned":
        typer.echo(f"  its submitter stopped before queueing every chunk (no lease renewed); "
                   f"`convsparse jobs retry {status.job_id}` resumes it")
    resubmits = ("the submitter resubmits it" if status.submitter_alive else
                 f"no submitter follows the job: `convsparse jobs retry {status.job_id}` "
                 "resubmits it")
    for w in status.waiting[:limit]:
        who = f" on {w.worker}" if w.worker else ""
        note = {"queued": "no worker took it yet", "running": f"attempt {w.attempt}",
                "worker lost": f"attempt {w.attempt}; its worker stopped beating: "
                               f"{resubmits}"}[w.state]
        since = (f"for {w.age_s:.0f} s" if w.age_s is not None else
                 "since a time Redis no longer knows")
        typer.echo(f"  chunk {w.chunk}: {w.state}{who} {since} ({note})")
    if status.dead_letter:
        typer.echo(f"  dead letter ({len(status.dead_letter)}):")
        for d in status.dead_letter[:limit]:
            where = f"position {d.position}" if d.position is not None else f"chunk {d.chunk}"
            rid = show(d.id) if d.id is not None else "-"
            typer.echo(f"    {rid:<24} {where:<16} {show(d.reason)}")
        if len(status.dead_letter) > limit:
            typer.echo(f"    ... {len(status.dead_letter) - limit} more (--json for all)")


def _store():
    """The job store on CONVSPARSE_REDIS_URL, after a 2-second check that Redis answers."""
    from convsparse.workers.app import WorkerSettings
    from convsparse.workers.jobs import JobStore
    from convsparse.workers.submit import check_redis

    url = WorkerSettings().redis_url
    check_redis(url)
    return JobStore.from_url(url)


def jobs_cancel(job_id: str = typer.Argument(..., help="Job id printed by `convsparse ingest`.")) -> None:
    """Cancel a job and delete its keys: workers skip its chunks still queued (a tombstone
    key stays a week). Documents already indexed stay; `index delete` removes them."""
    store = _store()
    status = store.status(job_id)
    existed = store.cancel(job_id)
    if not existed:
        typer.echo(f"job {job_id} is unknown; nothing to cancel (a tombstone is set anyway)")
        raise typer.Exit(1)
    typer.echo(f"cancelled job {job_id} ({status.state}: {status.indexed} indexed, "
               f"{status.chunks_done}/{status.chunks_total} chunks done); its keys are deleted")


def jobs_status(
    job_id: str = typer.Argument(..., help="Job id printed by `convsparse ingest --via celery`."),
    as_json: bool = typer.Option(False, "--json", help="Print the full status as JSON."),
) -> None:
    """Counts, missing chunks and the dead-letter report (id, reason) of a job."""
    status = _store().status(job_id)
    print_status(status, as_json=as_json)
    if status.state == "unknown":
        raise typer.Exit(1)


def jobs_retry(
    job_id: str = typer.Argument(...),
    failed: bool = typer.Option(False, "--failed",
                                help="Kept for older scripts: chunks whose documents were "
                                     "dead-lettered are always re-run."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Re-run a job from its source: chunks done without failures (into the same index) are
    skipped, the rest are resubmitted. Exit 0 when it finishes; 1 when chunks are still
    missing or documents failed."""
    from convsparse.workers.submit import retry_job

    _store()
    status = retry_job(job_id, failed=failed, progress=progress)
    print_status(status)
    if not status.finished:
        typer.echo(f"job {job_id} is {status.state}: {len(status.missing_chunks)} chunk(s) "
                   f"({len(status.missing_ids)} documents) never finished; check the workers "
                   f"(`convsparse worker`) and run `convsparse jobs retry {job_id}` again",
                   err=True)
        raise typer.Exit(1)
    if status.failed:
        typer.echo(f"{status.failed} record(s) failed (reasons above)", err=True)
        raise typer.Exit(1)


def worker_argv(queues: str = "ingest,query", pool: str = "solo", concurrency: int = 1,
                loglevel: str = "info", hostname: str | None = None) -> list[str]:
    argv = ["worker", f"--pool={pool}", "-Q", queues, f"--concurrency={concurrency}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    return argv


def worker(
    queues: str = typer.Option("ingest,query", "--queues", "-Q",
                               help="Queues to consume: ingest (GPU batches), query."),
    pool: str = typer.Option("solo", help="solo = one process per GPU (CUDA-safe); "
                                          "prefork for CPU-only workers."),
    concurrency: int = typer.Option(1, help="Processes (prefork only)."),
    loglevel: str = typer.Option("info"),
    hostname: str | None = typer.Option(None, help="Worker name, e.g. gpu0@%h."),
) -> None:
    """Start a Celery worker (`celery -A convsparse.workers.app worker --pool=solo ...`).

    Run one per GPU, each with its own CUDA_VISIBLE_DEVICES."""
    from convsparse.workers.app import app as celery_app

    celery_app.worker_main(worker_argv(queues, pool, concurrency, loglevel, hostname))


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Inspect, retry or cancel ingestion jobs (state kept in Redis).",
                        no_args_is_help=True)
    group.command("status")(jobs_status)
    group.command("retry")(jobs_retry)
    group.command("cancel")(jobs_cancel)
    app.add_typer(group, name="jobs")
    app.command("worker")(worker)
