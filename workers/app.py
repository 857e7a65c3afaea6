"""The one Celery app: configuration, queues, and the per-process encoder and backend.

Run a worker with (one `--pool=solo` process per GPU, see docker/README in the project README)::

    convsparse worker                      # = celery -A convsparse.workers.app worker --pool=solo -Q ingest,query
    CUDA_VISIBLE_DEVICES=1 convsparse worker --queues query

Configuration comes from `WorkerSettings` (`CONVSPARSE_*` environment variables): the Redis
broker (`CONVSPARSE_REDIS_URL`), result backend (`CONVSPARSE_RESULT_URL`, default the broker),
the student (`CONVSPARSE_MODEL`, `CONVSPARSE_RUNTIME`, `CONVSPARSE_DEVICE`) and the search backend
(`CONVSPARSE_BACKEND`, `CONVSPARSE_DATA_DIR`, `CONVSPARSE_OPENSEARCH_URL`...).

Delivery guarantees (see shared/docs facts 13-18):

- JSON only (no pickle) for tasks and results;
- `task_acks_late` + `task_reject_on_worker_lost` + prefetch 1: a message is acknowledged only
  after its task ran, so a crashed worker's chunk is redelivered, never lost; tasks are
  idempotent (deterministic document ids, per-chunk result markers) so a replay overwrites;
- `visibility_timeout` (default 10 min, must exceed the longest task) set in
  `broker_transport_options`, `result_backend_transport_options` and the app config, because
  the shortest one wins; `unacked_restore_interval`/`unacked_restore_throttle` decide how soon
  after the visibility timeout a SIGKILLed worker's message is restored;
- a lost worker is noticed before that: every process running tasks refreshes a heartbeat key
  in Redis (`worker_heartbeat_s`); the submitter resubmits a chunk whose worker's heartbeat
  stopped (`JobStore.lost_chunks`), and a redelivered chunk that is already done is skipped;
- a chunk is acknowledged only after its task returned, and the task returns only after the
  backend's write is durable (the embedded store commits with ``synchronous=FULL``);
- the model is loaded once per worker process, lazily or at `worker_process_init` (prefork
  children) / `worker_ready` (solo), never in a prefork parent (CUDA would break the children).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue
from pydantic import Field

from convsparse.compose import load_encoder, open_backend
from convsparse.settings import Settings

logger = logging.getLogger(__name__)

INGEST_QUEUE = "ingest"
QUERY_QUEUE = "query"
INGEST_TASK = "convsparse.ingest_chunk"
QUERY_TASK = "convsparse.encode_query"
#: Asked once before a job starts: what the workers write the index into (`workers.target`).
TARGET_TASK = "convsparse.ingest_target"


class WorkerSettings(Settings):
    """`Settings` plus the queue knobs only workers and submitters need."""

    #: How often (s) a worker sweeps for unacked messages older than the visibility timeout.
    unacked_restore_interval_s: int = 10
    #: Result keys (query answers) expire after this many seconds.
    result_expires_s: int = 3600
    #: Load the encoder when the worker process starts (else on the first task).
    worker_preload: bool = True
    #: Every process running tasks refreshes a Redis key this often; a chunk whose worker
    #: missed three beats is resubmitted by the submitter (long before the visibility timeout).
    worker_heartbeat_s: float = 10.0
    #: Testing/debugging only: sleep this long in every ingest task (a slow GPU batch), so
    #: crash tests can kill a worker mid-task deterministically.
    task_delay_s: float = 0.0
    #: Documents per ingest task (one broker message, one redelivery unit). A GPU worker wants
    #: units of several device batches, so the model never waits on the broker and the
    #: per-task overhead is amortised; a crash redelivers at most one such unit.
    ingest_chunk_size: int = Field(default=1024, ge=1)
    #: Documents per forward pass inside a task (the device batch).
    ingest_batch_size: int = Field(default=128, ge=1)
    #: Seconds without a finished chunk before a submitter resubmits what is in flight (None:
    #: the visibility timeout plus three restore sweeps plus 30 s).
    ingest_stall_timeout_s: float | None = Field(default=None, gt=0)
    #: A submitter renews a lease key this often-ish (every sixth of it); when it lapses,
    #: `jobs status` says no submitter follows the job (crashed, killed, or `--no-wait`).
    submitter_lease_s: float = Field(default=30.0, gt=0)


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """The Celery configuration for `settings` (a plain dict, easy to test and print)."""
    vt = int(settings.visibility_timeout_s)
    transport = {
        "visibility_timeout": vt,
        "unacked_restore_interval": int(settings.unacked_restore_interval_s),
        # Scan Redis on every sweep: the sweep period is then unacked_restore_interval alone.
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
    }
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.result_url or settings.redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # One direct exchange per queue, so a query is never routed into the ingest queue.
        "task_queues": (
            Queue(INGEST_QUEUE, Exchange(INGEST_QUEUE, type="direct"), routing_key=INGEST_QUEUE),
            Queue(QUERY_QUEUE, Exchange(QUERY_QUEUE, type="direct"), routing_key=QUERY_QUEUE),
        ),
        "task_default_queue": INGEST_QUEUE,
        "task_default_exchange": INGEST_QUEUE,
        "task_default_routing_key": INGEST_QUEUE,
        "task_routes": {INGEST_TASK: {"queue": INGEST_QUEUE}, TARGET_TASK: {"queue": INGEST_QUEUE},
                        QUERY_TASK: {"queue": QUERY_QUEUE}},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": dict(transport),
        "result_backend_transport_options": {"visibility_timeout": vt},
        "visibility_timeout": vt,
        "result_expires": int(settings.result_expires_s),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_track_started": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "timezone": "UTC",
    }


def make_app(settings: WorkerSettings | None = None) -> Celery:
    settings = settings or WorkerSettings()
    celery_app = Celery("convsparse")
    celery_app.conf.update(celery_config(settings))
    return celery_app


app = make_app()

# Broker URLs carry passwords: no log line of a worker or submitter may show one.
from convsparse.redaction import install_log_masking  # noqa: E402

install_log_masking()


# ---------------------------------------------------------------- per-process resources

_lock = threading.RLock()
_resources: dict[str, Any] = {}


def worker_settings() -> WorkerSettings:
    """The settings of this worker process (re-read from the environment once)."""
    with _lock:
        if "settings" not in _resources:
            _resources["settings"] = WorkerSettings()
        return _resources["settings"]


def get_encoder():
    """This process's encoder, loaded once."""
    settings = worker_settings()
    with _lock:
        if "encoder" not in _resources:
            threads = os.environ.get("CONVSPARSE_TORCH_THREADS")
            if threads:
                import torch

                torch.set_num_threads(int(threads))
            _resources["encoder"] = load_encoder(settings)
            logger.info("convsparse worker loaded encoder %s", _resources["encoder"].fingerprint)
        return _resources["encoder"]


def get_backend():
    """This process's search backend (opened once; embedded reopen picks up other writes)."""
    settings = worker_settings()
    with _lock:
        if "backend" not in _resources:
            _resources["backend"] = open_backend(settings)
        return _resources["backend"]


def get_redis():
    """A redis-py client on the broker Redis, for job state."""
    with _lock:
        if "redis" not in _resources:
            from convsparse.workers.jobs import redis_client

            _resources["redis"] = redis_client(worker_settings().redis_url)
        return _resources["redis"]


def _preload() -> None:
    if worker_settings().worker_preload:
        get_encoder()


@signals.worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    # prefork child: the safe place to initialise CUDA.
    _resources.clear()
    _preload()


@signals.worker_ready.connect
def _on_worker_ready(sender=None, **_: Any) -> None:
    pool_cls = getattr(getattr(sender, "controller", None), "pool_cls", None)
    name = getattr(pool_cls, "__module__", "") + getattr(pool_cls, "__name__", "")
    if "prefork" not in name:  # solo / threads: tasks run in this process
        _preload()


# Register the tasks on the app (import at the end: tasks import `app`).
from convsparse.workers import tasks as _tasks  # noqa: E402,F401
