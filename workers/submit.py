"""Submit an ingestion job to the workers (`--via celery`), or run the same pipeline locally.

`run_ingest_job(source, index=..., settings=...)`:

1. reads the source with `convsparse.sources.read_records`; rejected records go
   straight to the job's dead-letter report (they never reach a worker);
2. cuts the valid records into chunks of at most `chunk_size` documents and `max_chunk_chars`
   characters (a few MB per message: pass small batches through the broker, not megabytes);
   chunk ids are their position in the source, so the same source always gives the same chunks;
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
   when the job makes no progress for `stall_timeout_s` (a message lost with a Redis that
   restarted without its AOF), at most `max_resubmits` times, then reports it and its document
   ids as missing (`JobStatus.missing_chunks` / `missing_ids`);
6. while nothing finishes it says, every `report_every_s`, which chunks it waits for (queued,
   running on which worker for how long, worker lost) and until when before it resubmits.

`run_local_ingest` is the `--via local` path: same reader, same `encode_and_upsert`.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from convsparse.documents import DEFAULT_MAX_TEXT_CHARS
from convsparse.redaction import mask_secrets
from convsparse.sources import RecordError, is_path_source, read_records
from convsparse.workers.jobs import DeadLetter, JobStatus, JobStore
from convsparse.workers.target import IngestTarget

logger = logging.getLogger(__name__)

#: Documents per task when neither the caller nor CONVSPARSE_INGEST_CHUNK_SIZE says otherwise.
DEFAULT_CHUNK_SIZE = 1024
DEFAULT_MAX_CHUNK_CHARS = 2_000_000
DEFAULT_MAX_IN_FLIGHT = 8


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


@dataclass
class Chunk:
    id: str
    records: list[dict[str, Any]]

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]


def chunk_records(
    results: Iterable[Any], *, chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS,
) -> Iterator[Chunk | RecordError]:
    """Group valid records into `Chunk`s (in source order); pass `RecordError`s through."""
    buf: list[dict[str, Any]] = []
    chars = 0
    n = 0

    def flush() -> Chunk:
        nonlocal buf, chars, n
        chunk = Chunk(f"{n:07d}", buf)
        n += 1
        buf, chars = [], 0
        return chunk

    for item in results:
        if isinstance(item, RecordError):
            yield item
            continue
        size = len(item.text)
        if buf and (len(buf) >= chunk_size or chars + size > max_chunk_chars):
            yield flush()
        buf.append({"id": item.id, "text": item.text, "fields": dict(item.fields)})
        chars += size
    if buf:
        yield flush()


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


class _Timeout(Exception):
    pass


#: kombu's publish retry for `send_task` (the Celery transport's one retry layer): rides out a
#: Redis restart of up to about two minutes.
PUBLISH_RETRY_POLICY = {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5,
                        "interval_max": 5.0}


def run_ingest_job(
    source: str | Path | Iterable[Any], *, index: str, settings=None,
    chunk_size: int | None = None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    job_id: str | None = None, progress: bool = True, id_field: str = "id",
    text_field: str = "text", fields: list[str] | None = None,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS,
    batch_size: int | None = None, stall_timeout_s: float | None = None, max_resubmits: int = 2,
    redo_chunks: Iterable[str] = (), poll_interval_s: float = 0.05, celery_app=None,
    report_every_s: float = 10.0, target_timeout_s: float | None = None,
    require_worker: bool = True, worker_timeout_s: float = 2.0, wait: bool = True,
    timeout_s: float | None = None, total: int | None = None, format: str | None = None,
) -> JobStatus:
    """Run an ingestion job through the Celery workers and wait for it; returns its status.

    Before anything is queued, Redis must answer and (`require_worker`) a worker must consume
    the ingest queue (`check_workers`), else `WorkerUnavailableError` with the command to start
    one; then one worker is asked what it writes the index into (`ask_target`, waiting at most
    `target_timeout_s`, default `stall_timeout_s`; skipped without `require_worker`).
    `wait=False` queues every chunk and returns the "running" status at once (follow it
    with `convsparse jobs status`); `timeout_s` stops following after that many seconds (the
    job goes on). A job whose index belongs to another encoder is stopped and raises
    `FingerprintMismatchError` (the workers write nothing). Re-running with the same source (or
    `job_id`) skips chunks already done without failures into the same target (an index
    deleted or re-created since, or workers on another backend, redo everything); `redo_chunks`
    forces some to run again. The returned status has `state` "finished", or "incomplete" with
    `missing_chunks` / `missing_ids`.

    `chunk_size` (documents per task) and `batch_size` (documents per forward pass) default
    to `WorkerSettings.ingest_chunk_size` / `ingest_batch_size` (``CONVSPARSE_INGEST_*``)."""
    from tqdm.auto import tqdm

    from convsparse.errors import FingerprintMismatchError, WorkerUnavailableError
    from convsparse.workers.app import INGEST_QUEUE, INGEST_TASK, WorkerSettings, make_app

    settings = settings or WorkerSettings()
    if not isinstance(settings, WorkerSettings):  # plain Settings: add the queue knobs
        settings = WorkerSettings(**settings.model_dump())
    chunk_size = int(chunk_size or settings.ingest_chunk_size)
    batch_size = int(batch_size or settings.ingest_batch_size)
    capp = celery_app or make_app(settings)
    check_redis(settings.redis_url)
    if require_worker:
        check_workers(capp, timeout_s=worker_timeout_s)
    deadline = time.monotonic() + timeout_s if timeout_s is not None else None
    if not wait:
        max_in_flight = 1 << 62
    store = JobStore.from_url(settings.redis_url)
    if stall_timeout_s is None:
        stall_timeout_s = settings.ingest_stall_timeout_s or (
            settings.visibility_timeout_s + 3 * settings.unacked_restore_interval_s + 30)
    lease_s = float(settings.submitter_lease_s)
    target = None
    if require_worker:
        target = ask_target(capp, index, say=logger.info if not progress else
                            (lambda m: print(m, file=sys.stderr, flush=True)),
                            timeout_s=stall_timeout_s if target_timeout_s is None else target_timeout_s)
        if target is None:
            logger.warning("no ingest worker said what it writes index %r into: done markers "
                           "are checked by the workers chunk by chunk", index)
    job_id = job_id or default_job_id(source, index, chunk_size, target.key if target else None)
    meta = {
        "index": index, "source": str(Path(source).resolve()) if is_path_source(source)
        else "<iterable>", "chunk_size": str(chunk_size), "id_field": id_field,
        "text_field": text_field, "fields": fields, "max_text_chars": str(max_text_chars),
        "max_chunk_chars": str(max_chunk_chars), "batch_size": str(batch_size),
        **({"format": format} if format else {}),
        "target": json.dumps(target.to_dict() if target else None),
    }
    store.start(job_id, meta, lease_s=lease_s)
    # Trust only markers of chunks done without failures into this very target; the rest run
    # again (without a known target, the workers check each chunk's marker themselves).
    redo = set(redo_chunks)
    for chunk_id, result in store.chunk_results(job_id).items():
        if int(result.get("failed", 0)) or (target and result.get("target") != target.key):
            redo.add(chunk_id)
    if redo:
        store.forget_chunks(job_id, redo)
    already = store.done_chunks(job_id)

    plan: dict[str, list[str]] = {}
    read_errors: list[RecordError] = []
    in_flight: dict[str, dict[str, Any]] = {}
    markers: dict[str, bytes] = {}  # done markers seen, re-written if Redis lost them
    given_up: list[str] = []
    last_progress = time.monotonic()
    records_read = submitted = 0
    bar = tqdm(desc=f"ingest {index}", unit="doc", total=total, disable=not progress)
    if progress:
        bar.write(f"job {job_id}: {meta['source']} -> index {index!r} "
                  f"(follow it with `convsparse jobs status {job_id}`)")

    task_kwargs = {"target": target.to_dict()} if target else {}
    lease = {"at": 0.0}

    def renew_lease() -> None:
        now = time.monotonic()
        if now - lease["at"] >= lease_s / 6:
            store.renew_lease(job_id, lease_s)
            lease["at"] = now

    def send(chunk_id: str, records: list[dict[str, Any]]) -> None:
        capp.send_task(INGEST_TASK, args=[job_id, chunk_id, records, index, batch_size],
                       kwargs=task_kwargs, queue=INGEST_QUEUE, retry=True,
                       retry_policy=PUBLISH_RETRY_POLICY)
        store.mark_sent(job_id, [chunk_id])
        if chunk_id in in_flight:
            in_flight[chunk_id]["sent"] = time.monotonic()
        renew_lease()

    heartbeat_s = float(getattr(settings, "worker_heartbeat_s", 10.0))
    checks = {"lost": time.monotonic(), "report": time.monotonic()}

    def say(message: str) -> None:
        logger.info(message)
        if progress:
            bar.write(message)

    def check_lost_workers(now: float) -> None:
        """Resubmit the chunks whose worker stopped beating (SIGKILL, OOM, a lost host)."""
        if now - checks["lost"] < max(0.5, heartbeat_s):
            return
        checks["lost"] = now
        waits = store.waiting(job_id, list(in_flight))
        for w in waits:
            entry = in_flight.get(w.chunk)
            if w.state != "worker lost" or entry is None or entry.get("lost_attempt") == w.attempt:
                continue
            entry["lost_attempt"] = w.attempt
            say(f"job {job_id}: worker {w.worker} stopped beating (no heartbeat for "
                f"{3 * heartbeat_s:.0f} s) {w.age_s:.0f} s into chunk {w.chunk} (attempt "
                f"{w.attempt}): resubmitting it now instead of waiting for the visibility "
                f"timeout ({settings.visibility_timeout_s} s)")
            send(w.chunk, entry["records"])

    def report_wait(now: float) -> None:
        """Say what the job waits for, and until when, while nothing finishes."""
        if now - last_progress < report_every_s or now - checks["report"] < report_every_s:
            return
        checks["report"] = now
        waits = store.waiting(job_id, list(in_flight))
        parts = []
        for w in waits[:5]:
            age = w.age_s
            if age is None:  # Redis lost the send time: this process knows it
                age = now - in_flight.get(w.chunk, {}).get("sent", now)
            if w.state == "queued":
                parts.append(f"{w.chunk} queued for {age:.0f} s (no worker took it yet)")
            else:
                parts.append(f"{w.chunk} {w.state} on {w.worker} for {age:.0f} s "
                             f"(attempt {w.attempt})")
        more = f" and {len(waits) - 5} more" if len(waits) > 5 else ""
        until = datetime.now(timezone.utc).timestamp() + (stall_timeout_s - (now - last_progress))
        at = datetime.fromtimestamp(until, timezone.utc).strftime("%H:%M:%S UTC")
        say(f"job {job_id}: no chunk finished for {now - last_progress:.0f} s; waiting for "
            f"{'; '.join(parts)}{more}. A chunk whose worker dies is resubmitted within "
            f"{3 * heartbeat_s:.0f} s; if nothing finishes, every chunk in flight is resubmitted "
            f"at {at}.")

    def raise_job_error() -> None:
        """A worker recorded a permanent job-level error: stop and raise it."""
        error = store.job_error(job_id)
        if error and error.get("type") == "FingerprintMismatchError":
            raise FingerprintMismatchError(error["index"], error["index_fingerprint"],
                                           error["fingerprint"], writing=True)
        if error:
            raise WorkerUnavailableError(f"job {job_id} failed: {error.get('message')}")

    def poll() -> None:
        nonlocal last_progress
        renew_lease()
        if not in_flight:
            return
        raise_job_error()
        if deadline is not None and time.monotonic() > deadline:
            raise _Timeout
        done = store.chunk_markers(job_id, list(in_flight))
        markers.update(done)
        for chunk_id in done:
            bar.update(len(in_flight.pop(chunk_id)["records"]))
        now = time.monotonic()
        if in_flight:
            check_lost_workers(now)
        if done:
            last_progress = now
        elif in_flight and now - last_progress <= stall_timeout_s:
            report_wait(now)
        elif now - last_progress > stall_timeout_s:
            for chunk_id, entry in list(in_flight.items()):
                if entry["resubmits"] >= max_resubmits:
                    logger.error("chunk %s of job %s never finished; giving up", chunk_id, job_id)
                    given_up.append(chunk_id)
                    in_flight.pop(chunk_id)
                    continue
                entry["resubmits"] += 1
                logger.warning("job %s made no progress for %.0fs: resubmitting chunk %s",
                               job_id, stall_timeout_s, chunk_id)
                send(chunk_id, entry["records"])
            last_progress = now

    def wait_for_room(limit: int) -> None:
        while len(in_flight) > limit:
            poll()
            if len(in_flight) > limit:
                time.sleep(poll_interval_s)

    try:
        reader = read_records(source, id_field=id_field, text_field=text_field, fields=fields,
                              max_text_chars=max_text_chars, format=format)
        for item in chunk_records(reader, chunk_size=chunk_size, max_chunk_chars=max_chunk_chars):
            if isinstance(item, RecordError):
                records_read += 1
                read_errors.append(item)
                if len(read_errors) % 100 == 0:
                    store.record_read_errors(job_id, read_errors[-100:])
                continue
            records_read += len(item.records)
            submitted += len(item.records)
            plan[item.id] = item.ids
            store.plan_chunk(job_id, item.id, item.ids)
            if item.id in already and item.id not in redo:
                bar.update(len(item.records))
                continue
            wait_for_room(max_in_flight - 1)
            in_flight[item.id] = {"records": item.records, "resubmits": 0}
            send(item.id, item.records)
        # Re-write everything the submitter knows (idempotent), in case Redis lost it.
        store.record_read_errors(job_id, read_errors)
        store.finish_planning(job_id, chunks_total=len(plan), records_read=records_read,
                              submitted=submitted)
        if not wait:
            store.release_lease(job_id)  # nobody follows it now: `jobs status` says so
            return store.status(job_id)
        wait_for_room(0)
        raise_job_error()  # a last chunk may have recorded it after the last poll
    except _Timeout:
        store.release_lease(job_id)
        return store.status(job_id)  # still running; the caller says how to follow it
    except Exception as e:  # the job says why it stopped instead of staying "running"
        try:
            if store.job_error(job_id) is None:
                store.fail_job(job_id, {"type": type(e).__name__,
                                        "message": f"the submitter stopped: {type(e).__name__}: {e}"})
            store.release_lease(job_id)
        except Exception:  # Redis itself is what failed: the lease lapses on its own
            pass
        raise
    finally:
        bar.close()

    def finalize() -> JobStatus:
        store.start(job_id, meta, lease_s=lease_s)
        for chunk_id, ids in plan.items():
            store.plan_chunk(job_id, chunk_id, ids)
        store.record_read_errors(job_id, read_errors)
        store.restore_markers(job_id, markers)
        store.finish_planning(job_id, chunks_total=len(plan), records_read=records_read,
                              submitted=submitted)
        status = store.status(job_id)
        store.set_meta(job_id, state="finished" if status.finished else "incomplete")
        store.release_lease(job_id)
        return store.status(job_id)

    return finalize()


def retry_job(job_id: str, *, settings=None, failed: bool = False, progress: bool = True,
              **kwargs: Any) -> JobStatus:
    """Re-run a job from its stored source: unfinished chunks and the chunks that
    dead-lettered documents (e.g. after fixing a backend outage; `failed` is kept for older
    callers and changes nothing)."""
    import json

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
    fields = json.loads(meta["fields"]) if meta.get("fields") not in (None, "null") else None
    return run_ingest_job(
        source, index=meta["index"], settings=settings, job_id=job_id,
        chunk_size=int(meta.get("chunk_size", DEFAULT_CHUNK_SIZE)),
        id_field=meta.get("id_field", "id"), text_field=meta.get("text_field", "text"),
        fields=fields, max_text_chars=int(meta.get("max_text_chars", DEFAULT_MAX_TEXT_CHARS)),
        max_chunk_chars=int(meta.get("max_chunk_chars", DEFAULT_MAX_CHUNK_CHARS)),
        batch_size=int(meta.get("batch_size", 32)), redo_chunks=redo, progress=progress,
        format=meta.get("format") or None, **kwargs)


@dataclass
class LocalIngestReport:
    """Outcome of `run_local_ingest` (same counts and dead letters as a Celery job)."""

    index: str
    records_read: int = 0
    indexed: int = 0
    failed: int = 0
    dead_letter: list[DeadLetter] = field(default_factory=list)


def run_local_ingest(
    source: str | Path | Iterable[Any], *, index: str, encoder=None, backend=None,
    settings=None, batch_size: int = 32, progress: bool = True, id_field: str = "id",
    text_field: str = "text", fields: list[str] | None = None,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, chunk_size: int = 256,
) -> LocalIngestReport:
    """The `--via local` path: same reader and `encode_and_upsert`, in this process."""
    from tqdm.auto import tqdm

    from convsparse.compose import load_encoder, open_backend
    from convsparse.documents import SourceRecord
    from convsparse.integration.ingestion import encode_and_upsert
    from convsparse.workers.app import WorkerSettings
    from convsparse.workers.tasks import ensure_index

    settings = settings or WorkerSettings()
    encoder = encoder or load_encoder(settings)
    backend = backend or open_backend(settings)
    ensure_index(backend, index, encoder)
    report = LocalIngestReport(index)
    reader = read_records(source, id_field=id_field, text_field=text_field, fields=fields,
                          max_text_chars=max_text_chars)
    with tqdm(desc=f"ingest {index}", unit="doc", disable=not progress) as bar:
        for item in chunk_records(reader, chunk_size=chunk_size):
            if isinstance(item, RecordError):
                report.records_read += 1
                report.failed += 1
                report.dead_letter.append(DeadLetter(item.id, item.reason, item.position))
                continue
            report.records_read += len(item.records)
            # validated once, by read_records: rebuilt without a second check
            recs = [SourceRecord.model_construct(id=r["id"], text=r["text"], fields=r["fields"])
                    for r in item.records]
            for res in encode_and_upsert(recs, encoder=encoder, backend=backend, index=index,
                                         batch_size=batch_size):
                if res.ok:
                    report.indexed += 1
                else:
                    report.failed += 1
                    report.dead_letter.append(
                        DeadLetter(res.id, res.error or f"status {res.status}", chunk=item.id))
            bar.update(len(item.records))
    return report
