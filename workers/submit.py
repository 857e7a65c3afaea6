"""Submit an ingestion job to the Celery workers (`--via celery`): the queue's front door.

The job runs the ingestion engine's two stages apart (`convsparse.integration.ingestion`): this
process reads the source into chunks (`read_chunks`), a worker encodes and writes each one
(`write_chunk`, in `workers.tasks.ingest_chunk`). `run_ingest_job(source, index=...,
options=JobOptions(...))`:

1. reads the source with `convsparse.sources.read_records`; rejected records go straight to the job's
   dead-letter report (they never reach a worker);
2. cuts the valid records into chunks of at most `Batching.chunk_size` documents and
   `max_chunk_chars` characters (a few MB per message: pass small batches through the broker,
   not megabytes); chunk ids are their position in the source, so the same source always gives
   the same chunks;
3. keeps at most `max_in_flight` chunks queued or running (backpressure: a 100M-document
   file never floods Redis), polling the per-chunk done markers workers write;
4. asks a worker, before anything is queued, what it writes the index into (backend, data
   location, the index's creation id, encoder fingerprint: `workers.target`); the job id is
   derived from the source path, size, mtime, index, chunk size and that target unless given,
   so a re-run after `index delete`, a re-created index or workers on another data dir is a new
   job. A re-run skips only chunks done without failures into the same target; chunks that
   failed documents are run again. Since document ids are the source ids, anything replayed
   overwrites instead of duplicating;
5. resubmits a chunk at once when the worker that started it stops beating (a SIGKILLed or
   lost worker: no waiting for the visibility timeout), and resubmits every chunk in flight
   when the job makes no progress for `JobTimeouts.stall_s` (a message lost with a Redis that
   restarted without its AOF), at most `max_resubmits` times, then reports it and its document
   ids as missing (`JobStatus.missing_chunks` / `missing_ids`);
6. while nothing finishes it says, every `JobTimeouts.report_every_s`, which chunks it waits
   for (queued, running on which worker for how long, worker lost) and until when before it
   resubmits.

The in-process path is `convsparse.integration.ingestion.ingest` (same engine, same report).

Retries, one layer per transport: Redis calls (job state) ride on the redis-py `Retry` of
`workers.jobs.redis_client` (capped exponential backoff, about 80 s); publishing a chunk rides on
kombu's publish retry (`PUBLISH_RETRY_POLICY`); a chunk that fails on a worker is retried by
Celery (`workers.tasks.ingest_chunk`). Nothing here wraps those in a loop of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from convsparse.integration.ingest_options import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CHUNK_CHARS,
    IngestOptions,
    SourceOptions,
)
from convsparse.integration.ingestion import Chunk, read_chunks
from convsparse.progress import progress_bar
from convsparse.redaction import mask_secrets
from convsparse.sources import RecordError, is_path_source
from convsparse.workers.jobs import JobStatus, JobStore
from convsparse.workers.target import IngestTarget

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobTimeouts:
    """How long the submitter waits, and how often it looks (seconds).

    `stall_s`: no chunk finished for this long, so every chunk in flight is resubmitted (None:
    ``CONVSPARSE_INGEST_STALL_TIMEOUT_S``, else the visibility timeout plus three restore sweeps
    plus 30 s); `target_s`: for a worker to say what it writes the index into (None:
    `stall_s`); `worker_s`: for a worker of the ingest queue to answer (`check_workers`);
    `follow_s`: stop following the job after this long (it goes on; None: to its end);
    `poll_s`: between looks at the done markers; `report_every_s`: between "waiting for"
    lines while nothing finishes."""

    stall_s: float | None = None
    target_s: float | None = None
    worker_s: float = 2.0
    follow_s: float | None = None
    poll_s: float = 0.05
    report_every_s: float = 10.0


@dataclass(frozen=True)
class JobOptions(IngestOptions):
    """`IngestOptions` (how to read the source, how to batch it) plus what only the queue
    needs: its `timeouts`, how many times a stalled chunk is resubmitted (`max_resubmits`)
    before it is reported missing, and whether a worker must answer before anything is queued
    (`require_worker`; without it nothing asks what the workers write into, and the workers
    check each chunk's done marker themselves)."""

    timeouts: JobTimeouts = field(default_factory=JobTimeouts)
    max_resubmits: int = 2
    require_worker: bool = True


def default_job_id(source: Any, index: str, chunk_size: int, target: str | None = None) -> str:
    """Deterministic for a file (path, size, mtime, index, chunk size and the key of what the
    workers write into, `IngestTarget.key`; "?" when no worker said); random for iterables."""
    if not is_path_source(source):
        return "job-" + uuid.uuid4().hex[:16]
    path = Path(source).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{index}|{chunk_size}|{target or '?'}"
    return "job-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def ask_target(capp, index: str, *, timeout_s: float, say=None) -> IngestTarget | None:
    """What the ingest workers write `index` into (created for their encoder if missing), asked
    of one of them through the ingest queue; None when none answers within `timeout_s`.
    Raises `FingerprintMismatchError` for another encoder's index, and `BackendError` (or
    `InvalidIndexNameError`) when the worker cannot open it."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from convsparse.errors import BackendError, FingerprintMismatchError, InvalidIndexNameError
    from convsparse.workers.app import INGEST_QUEUE, TARGET_TASK

    result = capp.send_task(TARGET_TASK, args=[index], queue=INGEST_QUEUE, expires=timeout_s,
                            retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    try:
        try:
            answer = result.get(timeout=min(2.0, timeout_s))
        except CeleryTimeout:
            if say is not None and timeout_s > 2.0:
                say(f"waiting up to {timeout_s:.0f} s for an ingest worker to check index "
                    f"{index!r} (the workers are busy with queued chunks)")
            try:
                answer = result.get(timeout=max(0.0, timeout_s - 2.0))
            except CeleryTimeout:
                return None
    finally:
        try:
            result.forget()
        except Exception:  # best effort: results also expire
            pass
    error = answer.get("error")
    if error and error.get("type") == "FingerprintMismatchError":
        raise FingerprintMismatchError(error["index"], error["index_fingerprint"],
                                       error["fingerprint"], writing=True)
    if error and error.get("type") == "InvalidIndexNameError":
        raise InvalidIndexNameError(error.get("message", ""))
    if error:
        raise BackendError(f"the ingest worker cannot open index {index!r}: "
                           f"{error.get('type')}: {error.get('message')}")
    return IngestTarget.from_dict(answer["target"])


def check_redis(url: str, *, timeout_s: float = 2.0) -> None:
    """Raise `WorkerUnavailableError` within `timeout_s` when Redis at `url` does not answer
    (instead of the job-state client's minute of retries)."""
    import redis

    from convsparse.errors import WorkerUnavailableError

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except redis.AuthenticationError as e:  # it answered: not "unreachable", and no start hint
        raise WorkerUnavailableError(redis_auth_message(url, e)) from None
    except redis.ResponseError as e:
        if "NOAUTH" not in str(e) and "WRONGPASS" not in str(e):
            raise
        raise WorkerUnavailableError(redis_auth_message(url, e)) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise WorkerUnavailableError(
            f"Redis at {url} is unreachable ({e}); start it with `redis-server "
            f"--maxmemory-policy noeviction --appendonly yes`, or point CONVSPARSE_REDIS_URL at it"
        ) from None
    finally:
        client.close()


def redis_auth_message(url: str, error: BaseException) -> str:
    """Redis answered and refused the credentials of `url` (one line, the password masked)."""
    from convsparse.redaction import mask_url, url_password

    given = "a password" if url_password(url) else "no password"
    return (f"Redis at {mask_url(url)} refused the login ({given} given: {error}); put the right "
            "password in CONVSPARSE_REDIS_URL (redis://:PASSWORD@HOST:PORT/DB, or "
            "redis://USER:PASSWORD@... with an ACL user)")


def check_workers(capp, *, queue: str | None = None, timeout_s: float = 2.0) -> list[str]:
    """Names of Celery workers consuming `queue` (default: the ingest queue), asked with
    Celery's remote control (`inspect().active_queues()`); raise `WorkerUnavailableError` with
    the command to start one when there are none.

    The first answer is enough when its worker consumes `queue` (then only that name comes
    back): a broadcast without a reply limit always waits out `timeout_s`, which was 2 s added
    to every job (a quarter of a 256-document job's time in the encode benchmark). Otherwise
    (no answer, or the first from a worker of other queues) every worker is asked once more
    and may take `timeout_s` to answer, so a missing worker is reported after 2 x `timeout_s`."""
    from convsparse.errors import WorkerUnavailableError
    from convsparse.workers.app import INGEST_QUEUE

    queue = queue or INGEST_QUEUE

    def consuming(replies: dict) -> list[str]:
        return sorted(w for w, queues in replies.items()
                      if any(q.get("name") == queue for q in queues or ()))

    replies = capp.control.inspect(timeout=timeout_s, limit=1).active_queues() or {}
    names = consuming(replies)
    if not names:  # ask them all (a late or lost first answer is not taken as "no worker")
        replies = {**replies, **(capp.control.inspect(timeout=timeout_s).active_queues() or {})}
        names = consuming(replies)
    if not names:
        seen = f" ({len(replies)} worker(s) answered, none consuming it)" if replies else ""
        raise WorkerUnavailableError(
            f"no Celery worker consumes the {queue!r} queue on {capp.conf.broker_url}{seen}; "
            f"start one with `convsparse worker -Q ingest,query` (same CONVSPARSE_REDIS_URL), "
            f"or ingest in this process with --via local"
        )
    return names


#: kombu's publish retry for `send_task` (the Celery transport's one retry layer): rides out a
#: Redis restart of up to about two minutes.
PUBLISH_RETRY_POLICY = {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5,
                        "interval_max": 5.0}


class _Timeout(Exception):
    pass


@dataclass
class _InFlight:
    """A chunk sent and not done yet."""

    chunk: Chunk
    sent: float = 0.0  # monotonic time of the last send
    resubmits: int = 0
    lost_attempt: int | None = None  # the attempt whose lost worker was already handled


def run_ingest_job(
    source: str | Path | Iterable[Any], *, index: str, options: JobOptions | None = None,
    settings=None, job_id: str | None = None, wait: bool = True, progress: bool = True,
    total: int | None = None, redo_chunks: Iterable[str] = (), celery_app=None,
) -> JobStatus:
    """Run an ingestion job through the Celery workers and wait for it; returns its status.

    Before anything is queued, Redis must answer and (`options.require_worker`) a worker must
    consume the ingest queue (`check_workers`), else `WorkerUnavailableError` with the command
    to start one; then one worker is asked what it writes the index into (`ask_target`, waiting
    at most `JobTimeouts.target_s`). `wait=False` queues every chunk and returns the "running"
    status at once (follow it with `convsparse jobs status`); `JobTimeouts.follow_s` stops
    following after that many seconds (the job goes on). A job whose index belongs to another
    encoder is stopped and raises `FingerprintMismatchError` (the workers write nothing).
    Re-running with the same source (or `job_id`) skips chunks already done without failures
    into the same target (an index deleted or re-created since, or workers on another backend,
    redo everything); `redo_chunks` forces some to run again. The returned status has `state`
    "finished", or "incomplete" with `missing_chunks` / `missing_ids`. `total` sizes the
    progress bar.

    `Batching.chunk_size` (documents per task) and `batch_size` (documents per forward pass)
    default to `WorkerSettings.ingest_chunk_size` / `ingest_batch_size`
    (``CONVSPARSE_INGEST_*``)."""
    from convsparse.workers.app import make_app

    options = options or JobOptions()
    settings = _worker_settings(settings)
    options = replace(options, batching=replace(
        options.batching, chunk_size=options.batching.chunk_size or settings.ingest_chunk_size,
        batch_size=options.batching.batch_size or settings.ingest_batch_size))
    capp = celery_app or make_app(settings)
    check_redis(settings.redis_url)
    if options.require_worker:
        check_workers(capp, timeout_s=options.timeouts.worker_s)
    follow_s = options.timeouts.follow_s
    job = IngestJob(JobStore.from_url(settings.redis_url), index=index, options=options,
                    settings=settings, capp=capp, wait=wait, progress=progress,
                    deadline=time.monotonic() + follow_s if follow_s is not None else None)
    job.start(source, job_id=job_id, redo_chunks=redo_chunks, total=total)
    return job.run(source)


def _worker_settings(settings):
    from convsparse.workers.app import WorkerSettings

    settings = settings or WorkerSettings()
    if not isinstance(settings, WorkerSettings):  # plain Settings: add the queue knobs
        settings = WorkerSettings(**settings.model_dump())
    return settings


class IngestJob:
    """The submitter's side of one job: what it planned, what is in flight, what it saw done.
    `start` opens the job in Redis, `run` queues its chunks and follows them to the end."""

    def __init__(self, store: JobStore, *, index: str, options: JobOptions, settings, capp,
                 wait: bool, progress: bool, deadline: float | None):
        timeouts = options.timeouts
        self.store, self.index, self.options, self.settings, self.capp = (
            store, index, options, settings, capp)
        self.wait, self.progress, self.deadline = wait, progress, deadline
        self.max_in_flight = options.batching.max_in_flight if wait else 1 << 62
        self.stall_s = timeouts.stall_s if timeouts.stall_s is not None else (
            settings.ingest_stall_timeout_s or (settings.visibility_timeout_s
                                                + 3 * settings.unacked_restore_interval_s + 30))
        self.lease_s = float(settings.submitter_lease_s)
        self.heartbeat_s = float(getattr(settings, "worker_heartbeat_s", 10.0))
        self.job_id = ""
        self.meta: dict[str, Any] = {}
        self.target: IngestTarget | None = None
        self.plan: dict[str, list[str]] = {}
        self.read_errors: list[RecordError] = []
        self.in_flight: dict[str, _InFlight] = {}
        self.markers: dict[str, bytes] = {}  # done markers seen, re-written if Redis lost them
        self.already: set[str] = set()  # chunks done before this run, into the same target
        self.redo: set[str] = set()
        self.records_read = self.submitted = 0
        now = time.monotonic()
        self.last_progress = self.last_lost_check = self.last_report = now
        self.lease_at = 0.0
        self.bar: Any = None

    # ------------------------------------------------------------------ opening the job
    def start(self, source: Any, *, job_id: str | None, redo_chunks: Iterable[str],
              total: int | None) -> None:
        """Ask a worker what it writes into, name the job and open it in Redis (forgetting
        the done markers not to trust: chunks with failures, or written into another target)."""
        if self.options.require_worker:
            self.target = self.ask_target()
        batching, src = self.options.batching, self.options.source
        self.job_id = job_id or default_job_id(source, self.index, batching.chunk_size,
                                               self.target.key if self.target else None)
        self.meta = {
            "index": self.index, "source": str(Path(source).resolve()) if is_path_source(source)
            else "<iterable>", "chunk_size": str(batching.chunk_size), "id_field": src.id_field,
            "text_field": src.text_field, "fields": list(src.fields) if src.fields is not None
            else None, "max_text_chars": str(src.max_text_chars),
            "max_chunk_chars": str(batching.max_chunk_chars),
            "batch_size": str(batching.batch_size), **({"format": src.format} if src.format else {}),
            "target": json.dumps(self.target.to_dict() if self.target else None),
        }
        self.store.start(self.job_id, self.meta, lease_s=self.lease_s)
        self.redo = set(redo_chunks) | self.untrusted_chunks()
        if self.redo:
            self.store.forget_chunks(self.job_id, self.redo)
        self.already = self.store.done_chunks(self.job_id)
        self.bar = progress_bar(desc=f"ingest {self.index}", unit="doc", total=total,
                                enabled=self.progress)
        if self.progress:
            self.bar.write(f"job {self.job_id}: {self.meta['source']} -> index {self.index!r} "
                           f"(follow it with `convsparse jobs status {self.job_id}`)")

    def ask_target(self) -> IngestTarget | None:
        timeout_s = self.options.timeouts.target_s
        target = ask_target(self.capp, self.index, say=logger.info if not self.progress else
                            (lambda m: print(m, file=sys.stderr, flush=True)),
                            timeout_s=self.stall_s if timeout_s is None else timeout_s)
        if target is None:
            logger.warning("no ingest worker said what it writes index %r into: done markers "
                           "are checked by the workers chunk by chunk", self.index)
        return target

    def untrusted_chunks(self) -> set[str]:
        """Done markers not to trust: chunks done with failures, or into another target
        (without a known target, the workers check each chunk's marker themselves)."""
        key = self.target.key if self.target else None
        return {chunk_id for chunk_id, result in self.store.chunk_results(self.job_id).items()
                if int(result.get("failed", 0)) or (key and result.get("target") != key)}

    # ------------------------------------------------------------------ running it
    def run(self, source: Any) -> JobStatus:
        """Queue every chunk of `source` and (`wait`) follow the job to its end."""
        try:
            self.submit(source)
            if not self.wait:
                self.store.release_lease(self.job_id)  # nobody follows it now: `jobs status` says so
                return self.store.status(self.job_id)
            self.wait_for_room(0)
            self.raise_job_error()  # a last chunk may have recorded it after the last poll
        except _Timeout:
            self.store.release_lease(self.job_id)
            return self.store.status(self.job_id)  # still running; the caller says how to follow it
        except Exception as e:  # the job says why it stopped instead of staying "running"
            self.record_stop(e)
            raise
        finally:
            self.bar.close()
        return self.finalize()

    def submit(self, source: Any) -> None:
        """The read stage: plan and send each chunk, at most `max_in_flight` at once."""
        for item in read_chunks(source, self.options):
            if isinstance(item, RecordError):
                self.record_read_error(item)
                continue
            self.records_read += len(item.records)
            self.submitted += len(item.records)
            self.plan[item.id] = item.ids
            self.store.plan_chunk(self.job_id, item.id, item.ids)
            if item.id in self.already and item.id not in self.redo:
                self.bar.update(len(item.records))
                continue
            self.wait_for_room(self.max_in_flight - 1)
            self.in_flight[item.id] = _InFlight(item)
            self.send(item.id)
        # Re-write everything the submitter knows (idempotent), in case Redis lost it.
        self.store.record_read_errors(self.job_id, self.read_errors)
        self.finish_planning()

    def record_read_error(self, error: RecordError) -> None:
        self.records_read += 1
        self.read_errors.append(error)
        if len(self.read_errors) % 100 == 0:
            self.store.record_read_errors(self.job_id, self.read_errors[-100:])

    def finish_planning(self) -> None:
        self.store.finish_planning(self.job_id, chunks_total=len(self.plan),
                                   records_read=self.records_read, submitted=self.submitted)

    def send(self, chunk_id: str) -> None:
        from convsparse.workers.app import INGEST_QUEUE, INGEST_TASK

        entry = self.in_flight[chunk_id]
        self.capp.send_task(
            INGEST_TASK, args=[self.job_id, chunk_id, entry.chunk.to_message(), self.index,
                               self.options.batching.batch_size],
            kwargs={"target": self.target.to_dict()} if self.target else {},
            queue=INGEST_QUEUE, retry=True, retry_policy=PUBLISH_RETRY_POLICY)
        self.store.mark_sent(self.job_id, [chunk_id])
        entry.sent = time.monotonic()
        self.renew_lease()

    def renew_lease(self) -> None:
        now = time.monotonic()
        if now - self.lease_at >= self.lease_s / 6:
            self.store.renew_lease(self.job_id, self.lease_s)
            self.lease_at = now

    def wait_for_room(self, limit: int) -> None:
        while len(self.in_flight) > limit:
            self.poll()
            if len(self.in_flight) > limit:
                time.sleep(self.options.timeouts.poll_s)

    # ------------------------------------------------------------------ following it
    def poll(self) -> None:
        """One look at the job: done chunks, lost workers, a stall, a job-level error."""
        self.renew_lease()
        if not self.in_flight:
            return
        self.raise_job_error()
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _Timeout
        done = self.collect_done()
        now = time.monotonic()
        if self.in_flight:
            self.check_lost_workers(now)
        if done:
            self.last_progress = now
        elif self.in_flight and now - self.last_progress <= self.stall_s:
            self.report_wait(now)
        elif now - self.last_progress > self.stall_s:
            self.resubmit_stalled()
            self.last_progress = now

    def collect_done(self) -> dict[str, bytes]:
        done = self.store.chunk_markers(self.job_id, list(self.in_flight))
        self.markers.update(done)
        for chunk_id in done:
            self.bar.update(len(self.in_flight.pop(chunk_id).chunk.records))
        return done

    def check_lost_workers(self, now: float) -> None:
        """Resubmit the chunks whose worker stopped beating (SIGKILL, OOM, a lost host)."""
        if now - self.last_lost_check < max(0.5, self.heartbeat_s):
            return
        self.last_lost_check = now
        for w in self.store.waiting(self.job_id, list(self.in_flight)):
            entry = self.in_flight.get(w.chunk)
            if w.state != "worker lost" or entry is None or entry.lost_attempt == w.attempt:
                continue
            entry.lost_attempt = w.attempt
            self.say(f"job {self.job_id}: worker {w.worker} stopped beating (no heartbeat for "
                     f"{3 * self.heartbeat_s:.0f} s) {w.age_s:.0f} s into chunk {w.chunk} "
                     f"(attempt {w.attempt}): resubmitting it now instead of waiting for the "
                     f"visibility timeout ({self.settings.visibility_timeout_s} s)")
            self.send(w.chunk)

    def resubmit_stalled(self) -> None:
        """Nothing finished for `stall_s`: resubmit every chunk in flight, or give it up."""
        for chunk_id, entry in list(self.in_flight.items()):
            if entry.resubmits >= self.options.max_resubmits:
                logger.error("chunk %s of job %s never finished; giving up", chunk_id, self.job_id)
                self.in_flight.pop(chunk_id)
                continue
            entry.resubmits += 1
            logger.warning("job %s made no progress for %.0fs: resubmitting chunk %s",
                           self.job_id, self.stall_s, chunk_id)
            self.send(chunk_id)

    def report_wait(self, now: float) -> None:
        """Say what the job waits for, and until when, while nothing finishes."""
        every = self.options.timeouts.report_every_s
        if now - self.last_progress < every or now - self.last_report < every:
            return
        self.last_report = now
        waits = self.store.waiting(self.job_id, list(self.in_flight))
        parts = []
        for w in waits[:5]:
            age = w.age_s
            if age is None:  # Redis lost the send time: this process knows it
                entry = self.in_flight.get(w.chunk)
                age = now - (entry.sent if entry is not None else now)
            if w.state == "queued":
                parts.append(f"{w.chunk} queued for {age:.0f} s (no worker took it yet)")
            else:
                parts.append(f"{w.chunk} {w.state} on {w.worker} for {age:.0f} s "
                             f"(attempt {w.attempt})")
        more = f" and {len(waits) - 5} more" if len(waits) > 5 else ""
        until = datetime.now(timezone.utc).timestamp() + (
            self.stall_s - (now - self.last_progress))
        at = datetime.fromtimestamp(until, timezone.utc).strftime("%H:%M:%S UTC")
        self.say(f"job {self.job_id}: no chunk finished for {now - self.last_progress:.0f} s; "
                 f"waiting for {'; '.join(parts)}{more}. A chunk whose worker dies is "
                 f"resubmitted within {3 * self.heartbeat_s:.0f} s; if nothing finishes, every "
                 f"chunk in flight is resubmitted at {at}.")

    def say(self, message: str) -> None:
        logger.info(message)
        if self.progress:
            self.bar.write(message)

    def raise_job_error(self) -> None:
        """A worker recorded a permanent job-level error: stop and raise it."""
        from convsparse.errors import FingerprintMismatchError, WorkerUnavailableError

        error = self.store.job_error(self.job_id)
        if error and error.get("type") == "FingerprintMismatchError":
            raise FingerprintMismatchError(error["index"], error["index_fingerprint"],
                                           error["fingerprint"], writing=True)
        if error:
            raise WorkerUnavailableError(f"job {self.job_id} failed: {error.get('message')}")

    # ------------------------------------------------------------------ ending it
    def record_stop(self, error: Exception) -> None:
        """The submitter stops on `error`: the job says why instead of staying "running"."""
        try:
            if self.store.job_error(self.job_id) is None:
                self.store.fail_job(self.job_id, {
                    "type": type(error).__name__,
                    "message": f"the submitter stopped: {type(error).__name__}: {error}"})
            self.store.release_lease(self.job_id)
        except Exception:  # Redis itself is what failed: the lease lapses on its own
            pass

    def finalize(self) -> JobStatus:
        """Re-write everything this process knows (a Redis that restarted without its AOF lost
        it), then mark the job finished or incomplete."""
        store, job_id = self.store, self.job_id
        store.start(job_id, self.meta, lease_s=self.lease_s)
        for chunk_id, ids in self.plan.items():
            store.plan_chunk(job_id, chunk_id, ids)
        store.record_read_errors(job_id, self.read_errors)
        store.restore_markers(job_id, self.markers)
        self.finish_planning()
        status = store.status(job_id)
        store.set_meta(job_id, state="finished" if status.finished else "incomplete")
        store.release_lease(job_id)
        return store.status(job_id)


def retry_job(job_id: str, *, settings=None, failed: bool = False, progress: bool = True,
              options: JobOptions | None = None, **kwargs: Any) -> JobStatus:
    """Re-run a job from its stored source: unfinished chunks and the chunks that
    dead-lettered documents (e.g. after fixing a backend outage; `failed` is kept for older
    callers and changes nothing). The source and batching options are the job's own;
    `options` gives the rest (timeouts)."""
    from convsparse.workers.app import WorkerSettings

    settings = settings or WorkerSettings()
    store = JobStore.from_url(settings.redis_url)
    meta = store.meta(job_id)
    if not meta:
        from convsparse.errors import JobNotFoundError

        raise JobNotFoundError(f"job {job_id!r} is unknown to {mask_secrets(settings.redis_url)}; "
                               "`convsparse jobs status JOB_ID` shows a job that exists")
    source = meta.get("source", "<iterable>")
    if source == "<iterable>":
        from convsparse.errors import UsageError

        raise UsageError(f"job {job_id!r} read a Python iterable: call run_ingest_job(iterable, "
                         f"job_id={job_id!r}, ...) again to resume it")
    redo: set[str] = set()
    if failed:
        redo = {c for c, r in store.chunk_results(job_id).items() if int(r.get("failed", 0))}
    options = options or JobOptions()
    options = replace(options, source=_stored_source(meta), batching=replace(
        options.batching, chunk_size=int(meta.get("chunk_size", DEFAULT_CHUNK_SIZE)),
        max_chunk_chars=int(meta.get("max_chunk_chars", DEFAULT_MAX_CHUNK_CHARS)),
        batch_size=int(meta.get("batch_size", 32))))
    return run_ingest_job(source, index=meta["index"], options=options, settings=settings,
                          job_id=job_id, redo_chunks=redo, progress=progress, **kwargs)


def _stored_source(meta: dict[str, str]) -> SourceOptions:
    """The `SourceOptions` a job recorded in its meta."""
    from convsparse.documents import DEFAULT_MAX_TEXT_CHARS

    fields = json.loads(meta["fields"]) if meta.get("fields") not in (None, "null") else None
    return SourceOptions(
        id_field=meta.get("id_field", "id"), text_field=meta.get("text_field", "text"),
        fields=tuple(fields) if fields is not None else None,
        max_text_chars=int(meta.get("max_text_chars", DEFAULT_MAX_TEXT_CHARS)),
        format=meta.get("format") or None)


__all__ = ["PUBLISH_RETRY_POLICY", "IngestJob", "JobOptions", "JobTimeouts", "ask_target",
           "check_redis", "check_workers", "default_job_id", "redis_auth_message", "retry_job",
           "run_ingest_job"]
