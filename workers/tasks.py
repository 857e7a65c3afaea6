"""Thin Celery tasks: each calls the same library function the in-process path uses.

- `ingest_chunk` -> `convsparse.integration.ingestion.write_chunk` (the ingestion engine's
  write stage, the one `ingest` runs in process) on one chunk of records, encoded as one unit
  (`WorkerSettings.ingest_chunk_size`, default 1,024 documents / at most a few MB, in device
  batches of `ingest_batch_size`), then records the per-document outcome in the job's Redis
  state (`JobStore.finish_chunk`). Idempotent: document ids are the source ids (a replay
  overwrites) and the done marker is a hash field; a chunk delivered again after it was done
  (a resubmission raced the visibility timeout) is skipped. The task returns, and so the
  message is acknowledged (acks_late), only after the backend's write is durable.
- `encode_query` -> `encoder.encode_conversation`, answering the rank_features dict and the
  encoder fingerprint so the client can check it matches its index.

Retries: a chunk that raises is retried by Celery (`self.retry`, Celery's capped exponential
backoff with full jitter, `MAX_CHUNK_RETRIES` times), then its documents are dead-lettered. Job
state goes through the redis-py client's own `Retry`; nothing else loops.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from celery.utils.time import get_exponential_backoff_interval

from convsparse.timing import elapsed_ms
from convsparse.workers.app import (
    INGEST_TASK,
    QUERY_TASK,
    TARGET_TASK,
    app,
    get_backend,
    get_encoder,
    get_redis,
    worker_settings,
)
from convsparse.workers.jobs import JobStore
from convsparse.workers.target import IngestTarget, target_of

#: Transient errors (backend down) are retried this many times before the chunk's documents
#: are dead-lettered with the error.
MAX_CHUNK_RETRIES = 3

_heartbeat: dict[str, Any] = {}
logger = logging.getLogger(__name__)


def worker_identity() -> str:
    """This process's name in job state and heartbeats (host:pid: a prefork child has its own)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def ensure_heartbeat() -> None:
    """Start (once per process) the thread that tells Redis this worker process is alive."""
    me = worker_identity()
    if _heartbeat.get("name") == me:
        return
    interval = max(0.2, float(worker_settings().worker_heartbeat_s))
    store = JobStore(get_redis())
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            try:
                store.heartbeat(me, interval)
            except Exception as e:  # Redis restarting: the next beat retries
                logger.warning("heartbeat of %s failed: %s", me, e)
            stop.wait(interval)

    store.heartbeat(me, interval)
    thread = threading.Thread(target=beat, name="convsparse-heartbeat", daemon=True)
    thread.start()
    _heartbeat.update(name=me, thread=thread, stop=stop)


def write_target(index: str, *, create: bool = True) -> IngestTarget:
    """What this worker writes `index` into now (`workers.target`), never cached: another
    process may have deleted or re-created it since. Creates the index for its encoder when
    missing and `create` (else `IndexNotFoundError`); another encoder's index raises
    `FingerprintMismatchError`."""
    from convsparse.integration.ingestion import ensure_index

    encoder = get_encoder()
    info = ensure_index(get_backend(), index, encoder, create=create)
    return target_of(worker_settings(), info, encoder.fingerprint)


def _mismatch_error(e) -> dict[str, Any]:
    return {"type": "FingerprintMismatchError", "index": e.index,
            "index_fingerprint": e.index_fingerprint, "fingerprint": e.query_fingerprint,
            "message": str(e)}


def target_changed(expected: dict[str, Any] | None, here: IngestTarget | None, index: str) -> str:
    """Why a worker refuses a chunk of a job that expects another target (one sentence)."""
    if here is None:
        what = f"index {index!r} was deleted while the job ran"
    else:
        old = IngestTarget.from_dict(expected) if expected else None
        if old is not None and (old.backend, old.location) != (here.backend, here.location):
            what = (f"this worker writes into {here.backend} at {here.location}, the job started "
                    f"on {old.backend} at {old.location} (workers must share one backend)")
        elif old is not None and old.fingerprint != here.fingerprint:
            what = (f"this worker runs encoder {here.fingerprint}, the job started with "
                    f"{old.fingerprint}")
        else:
            what = f"index {index!r} was deleted and created again while the job ran"
    return (f"{what}; the documents written before are not in this index: run the ingest again "
            "(a new job)")


def ingest_records(chunk_id: str, records: list[dict[str, Any]], index: str, *,
                   batch_size: int = 32):
    """The engine's write stage (`write_chunk`) on one chunk's records ([{id, text, fields}]),
    with this process's encoder and backend; returns the per-document `DocumentResult`s."""
    from convsparse.integration.ingestion import Chunk, write_chunk

    return write_chunk(Chunk.from_message(chunk_id, records), encoder=get_encoder(),
                       backend=get_backend(), index=index, batch_size=batch_size)


@app.task(name=TARGET_TASK, acks_late=False)
def ingest_target(index: str) -> dict[str, Any]:
    """{"target": ...} this worker writes `index` into (created for its encoder if missing), or
    {"error": {"type", "message", ...}}: asked by the submitter before a job starts."""
    from convsparse.errors import FingerprintMismatchError

    try:
        return {"target": write_target(index).to_dict()}
    except FingerprintMismatchError as e:
        return {"error": _mismatch_error(e)}
    except Exception as e:  # reported by the submitter in one line
        return {"error": {"type": type(e).__name__, "message": str(e)}}


@app.task(name=INGEST_TASK, bind=True, ignore_result=True, acks_late=True,
          reject_on_worker_lost=True, max_retries=MAX_CHUNK_RETRIES)
def ingest_chunk(self, job_id: str | None, chunk_id: str, records: list[dict[str, Any]],
                 index: str, batch_size: int = 32, target: dict[str, Any] | None = None,
                 ) -> dict[str, int]:
    """Index one chunk of records and record its outcome in the job state.

    `target` is what the job writes into (`workers.target`, asked of a worker when the job
    started; None when no worker answered): a worker that would write anywhere else (the index
    was deleted or re-created, or this worker has another backend or encoder) fails the job
    instead of writing. A done marker is trusted only when it names this worker's target."""
    from convsparse.errors import FingerprintMismatchError, IndexNotFoundError

    store = JobStore(get_redis()) if job_id else None
    if store and store.cancelled(job_id):  # `convsparse jobs cancel`: drop, write nothing
        return {"indexed": 0, "failed": 0, "cancelled": 1}
    worker = self.request.hostname or socket.gethostname()
    if store:
        ensure_heartbeat()
    here: IngestTarget | None = None
    try:
        here = write_target(index, create=target is None)
    except FingerprintMismatchError as e:  # permanent: no retry, nothing is written
        if store:  # the submitter stops the job and raises it
            store.fail_job(job_id, _mismatch_error(e))
            store.finish_chunk(job_id, chunk_id, ok_ids=[], failures=[
                (r["id"], str(e)) for r in records], worker=worker)
        return {"indexed": 0, "failed": len(records)}
    except IndexNotFoundError as e:
        if target is None:  # created, then deleted by someone else before we looked: again
            raise self.retry(exc=e, countdown=1) from e
        # deleted under a running job: refused below
    except Exception as e:
        if self.request.retries < MAX_CHUNK_RETRIES:
            raise self.retry(exc=e, countdown=get_exponential_backoff_interval(
                factor=1, retries=self.request.retries, maximum=30, full_jitter=True)) from e
        if store:
            store.finish_chunk(job_id, chunk_id, ok_ids=[], failures=[
                (r["id"], f"{type(e).__name__}: {e}") for r in records], worker=worker)
        return {"indexed": 0, "failed": len(records)}
    if target is not None and (here is None or here.key != target.get("key")):
        message = target_changed(target, here, index)
        logger.error("job %s chunk %s refused: %s", job_id, chunk_id, message)
        if store:
            store.fail_job(job_id, {"type": "TargetChanged", "message": message})
        return {"indexed": 0, "failed": 0, "refused": len(records)}
    assert here is not None
    if store and store.done_for(job_id, chunk_id, here.key):  # a second delivery of a done chunk
        logger.info("chunk %s of job %s is already done: skipped", chunk_id, job_id)
        return {"indexed": 0, "failed": 0, "skipped": 1}
    attempt = store.mark_attempt(job_id, chunk_id, worker_identity()) if store else 1
    delay = worker_settings().task_delay_s
    if delay:
        time.sleep(delay)
    try:
        results = ingest_records(chunk_id, records, index, batch_size=batch_size)
        ok_ids = [r.id for r in results if r.ok]
        failures = [(r.id, r.error or f"status {r.status}") for r in results if not r.ok]
    except FingerprintMismatchError as e:  # permanent: no retry, nothing was written
        ok_ids, failures = [], [(r["id"], str(e)) for r in records]
        if store:  # the submitter stops the job and raises it
            store.fail_job(job_id, _mismatch_error(e))
    except Exception as e:
        if self.request.retries < MAX_CHUNK_RETRIES:
            # Celery's own backoff (what retry_backoff/retry_jitter compute for autoretry_for,
            # which cannot dead-letter the chunk once the retries are spent).
            raise self.retry(exc=e, countdown=get_exponential_backoff_interval(
                factor=1, retries=self.request.retries, maximum=30, full_jitter=True)) from e
        ok_ids, failures = [], [(r["id"], f"{type(e).__name__}: {e}") for r in records]
    if store:
        store.finish_chunk(job_id, chunk_id, ok_ids=ok_ids, failures=failures,
                           attempt=attempt, worker=worker, target=here.key)
    return {"indexed": len(ok_ids), "failed": len(failures)}


@app.task(name=QUERY_TASK, acks_late=False)
def encode_query(conversation: Any) -> dict[str, Any]:
    """Encode one conversation: {"terms": rank_features dict, "fingerprint", "encode_ms"}.

    Not acks-late on purpose: a query nobody answers in time is answered locally by the
    client, so redelivering it later would be wasted work (the client also sets `expires`)."""
    start = time.perf_counter()
    encoder = get_encoder()
    term_map = encoder.encode_conversation(conversation)
    return {
        "terms": term_map.to_rank_features(),
        "fingerprint": encoder.fingerprint,
        "encode_ms": elapsed_ms(start),
        "worker": socket.gethostname(),
    }
