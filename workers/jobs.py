"""Ingestion job state in Redis: counts, per-chunk done markers and the dead-letter report.

Every write is idempotent, so a redelivered chunk (worker crash, visibility timeout) or a
replayed job never double counts:

- ``convsparse:job:{id}``           hash: index, source, chunk_size, created, planned, ...
- ``convsparse:job:{id}:plan``      hash chunk id -> JSON list of the document ids it carries
- ``convsparse:job:{id}:chunks``    hash chunk id -> JSON {indexed, failed, attempt, worker,
                                    target} (the done marker; counts are sums over it, never
                                    INCRs; `target` is the key of what it was written into,
                                    `workers.target.IngestTarget`)
- ``convsparse:job:{id}:dead``      hash key -> JSON {id, position, chunk, reason}; key is
                                    ``doc:<id>`` for a document a worker failed, ``pos:<n>``
                                    for a record the reader rejected
- ``convsparse:job:{id}:attempts``  hash chunk id -> how many times a worker started it
- ``convsparse:job:{id}:running``   hash chunk id -> JSON {worker, attempt, started} of the
                                    latest start (stays after the chunk is done)
- ``convsparse:job:{id}:sent``      hash chunk id -> when the submitter last sent it
- ``convsparse:worker:{name}``      a worker process's heartbeat (expires after 3 beats)
- ``convsparse:job:{id}:cancelled`` tombstone left by `JobStore.cancel` (workers skip the job)
- ``convsparse:job:{id}:submitter`` the submitter's lease (expires `SUBMITTER_LEASE_S` after
                                    its last renewal: no key, no submitter following the job)

Keys live until `JobStore.delete` (or `expire_s` after the job finishes, if set): Redis must
run with ``maxmemory-policy noeviction`` (an evicted key would silently lose state).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from convsparse.integration.ingest_report import DeadLetter, IndexReport

PREFIX = "convsparse:job:"
WORKER_PREFIX = "convsparse:worker:"
#: A submitter renews its lease every poll; a lease this old means it is gone (crashed,
#: killed, or it returned with wait=False).
SUBMITTER_LEASE_S = 30.0


@dataclass(frozen=True)
class ChunkWait:
    """A chunk the job is waiting for: who runs it (if anyone) and for how long."""

    chunk: str
    state: str  # "queued" (sent, no worker started it) | "running" | "worker lost"
    age_s: float | None  # since it was sent (queued) or started; None: Redis lost when
    worker: str | None = None
    attempt: int = 0


@dataclass(kw_only=True)
class JobStatus(IndexReport):
    """A snapshot of one job, as `convsparse jobs status` prints it: the job's `IndexReport`
    (records read, indexed and failed, summed over the chunks' done markers, and the dead
    letters) and what the job itself is doing."""

    job_id: str
    source: str | None
    #: "running" | "finished" | "incomplete" | "failed" | "unknown", or "abandoned": its
    #: submitter stopped before it queued every chunk (`convsparse jobs retry` resumes it)
    state: str
    submitted: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    missing_chunks: list[str] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)
    dead_letter: list[DeadLetter] = field(default_factory=list)
    redelivered_chunks: dict[str, int] = field(default_factory=dict)
    waiting: list[ChunkWait] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    #: a submitter is following the job (its lease is fresh): it resubmits lost chunks
    submitter_alive: bool = False

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["dead_letter"] = [asdict(d) for d in self.dead_letter]
        out["waiting"] = [asdict(w) for w in self.waiting]
        return out


def _elapsed_s(meta: dict[str, str], chunks: dict[str, dict[str, Any]], state: str) -> float:
    """Seconds from the job's creation to its last done chunk (to now while it runs)."""
    created = float(meta.get("created", 0) or 0)
    last = max((float(c.get("at", 0) or 0) for c in chunks.values()), default=0.0)
    end = last if state != "running" and last else time.time()
    return round(max(0.0, end - created), 3) if created else 0.0


def redis_client(url: str, *, retries: int = 20):
    """A redis-py client that rides out a Redis restart: connection errors are retried with
    capped exponential backoff (0.2 s doubling to 5 s; 20 retries is about 80 s)."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=5.0, base=0.2), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
    )


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class JobStore:
    """Job state on a redis-py client (the broker's Redis, `WorkerSettings.redis_url`)."""

    def __init__(self, client):
        self.r = client

    @classmethod
    def from_url(cls, url: str, *, retries: int = 20) -> JobStore:
        return cls(redis_client(url, retries=retries))

    # keys
    @staticmethod
    def key(job_id: str, part: str = "") -> str:
        return f"{PREFIX}{job_id}" + (f":{part}" if part else "")

    def keys(self, job_id: str) -> list[str]:
        return [self.key(job_id, p) for p in ("", "plan", "chunks", "dead", "attempts", "running",
                                              "sent", "submitter")]

    # submitter side
    def start(self, job_id: str, meta: dict[str, Any], *, lease_s: float = SUBMITTER_LEASE_S) -> None:
        k = self.key(job_id)
        self.r.hsetnx(k, "created", f"{time.time():.3f}")
        self.r.hset(k, mapping={name: json.dumps(v) if not isinstance(v, str) else v
                                for name, v in meta.items()})
        self.r.hset(k, mapping={"planned": "0", "state": "running"})
        self.r.hdel(k, "error")  # a re-run starts clean: an old run's error is not this one's
        self.renew_lease(job_id, lease_s)

    def renew_lease(self, job_id: str, lease_s: float = SUBMITTER_LEASE_S) -> None:
        """The submitter is alive and following `job_id` (see `SUBMITTER_LEASE_S`)."""
        self.r.set(self.key(job_id, "submitter"), f"{time.time():.3f}",
                   px=max(1, int(lease_s * 1000)))

    def release_lease(self, job_id: str) -> None:
        self.r.delete(self.key(job_id, "submitter"))

    def submitter_alive(self, job_id: str) -> bool:
        return bool(self.r.exists(self.key(job_id, "submitter")))

    def exists(self, job_id: str) -> bool:
        return bool(self.r.exists(self.key(job_id)))

    def meta(self, job_id: str) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in self.r.hgetall(self.key(job_id)).items()}

    def set_meta(self, job_id: str, **values: Any) -> None:
        self.r.hset(self.key(job_id), mapping={k: str(v) for k, v in values.items()})

    def plan_chunk(self, job_id: str, chunk_id: str, ids: list[str]) -> None:
        self.r.hset(self.key(job_id, "plan"), chunk_id, json.dumps(ids))

    def record_read_errors(self, job_id: str, errors: Iterable[Any]) -> None:
        mapping = {}
        for e in errors:
            mapping[f"pos:{e.position}"] = json.dumps(
                {"id": e.id, "position": e.position, "chunk": None, "reason": e.reason,
                 "unit": e.unit})
        if mapping:
            self.r.hset(self.key(job_id, "dead"), mapping=mapping)

    def finish_planning(self, job_id: str, *, chunks_total: int, records_read: int,
                        submitted: int) -> None:
        self.r.hset(self.key(job_id), mapping={
            "planned": "1", "chunks_total": str(chunks_total), "records_read": str(records_read),
            "submitted": str(submitted)})

    def done_chunks(self, job_id: str, chunk_ids: Iterable[str] | None = None) -> set[str]:
        k = self.key(job_id, "chunks")
        if chunk_ids is None:
            return {_s(c) for c in self.r.hkeys(k)}
        ids = list(chunk_ids)
        if not ids:
            return set()
        return {c for c, v in zip(ids, self.r.hmget(k, ids)) if v is not None}

    def done_for(self, job_id: str, chunk_id: str, target: str) -> bool:
        """`chunk_id` is done and its marker names `target` (a marker of another target, or of
        none, is not done there)."""
        raw = self.r.hget(self.key(job_id, "chunks"), chunk_id)
        return raw is not None and json.loads(raw).get("target") == target

    def chunk_markers(self, job_id: str, chunk_ids: Iterable[str]) -> dict[str, bytes]:
        """Raw done markers of the given chunks that are done."""
        ids = list(chunk_ids)
        if not ids:
            return {}
        return {c: v for c, v in zip(ids, self.r.hmget(self.key(job_id, "chunks"), ids))
                if v is not None}

    def restore_markers(self, job_id: str, markers: dict[str, bytes]) -> None:
        """Put back done markers a Redis without persistence lost (never overwrites)."""
        k = self.key(job_id, "chunks")
        pipe = self.r.pipeline()
        for chunk_id, raw in markers.items():
            pipe.hsetnx(k, chunk_id, raw)
        pipe.execute()

    def forget_chunks(self, job_id: str, chunk_ids: Iterable[str]) -> None:
        ids = list(chunk_ids)
        if ids:
            self.r.hdel(self.key(job_id, "chunks"), *ids)

    def chunk_results(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {_s(k): json.loads(v) for k, v in self.r.hgetall(self.key(job_id, "chunks")).items()}

    def plan(self, job_id: str) -> dict[str, list[str]]:
        return {_s(k): json.loads(v) for k, v in self.r.hgetall(self.key(job_id, "plan")).items()}

    def mark_sent(self, job_id: str, chunk_ids: Iterable[str]) -> None:
        now = f"{time.time():.3f}"
        ids = list(chunk_ids)
        if ids:
            self.r.hset(self.key(job_id, "sent"), mapping={c: now for c in ids})

    # worker side
    def mark_attempt(self, job_id: str, chunk_id: str, worker: str = "") -> int:
        attempt = int(self.r.hincrby(self.key(job_id, "attempts"), chunk_id, 1))
        self.r.hset(self.key(job_id, "running"), chunk_id, json.dumps(
            {"worker": worker, "attempt": attempt, "started": round(time.time(), 3)}))
        return attempt

    def heartbeat(self, worker: str, interval_s: float) -> None:
        """A worker process is alive (the key expires after three missed beats)."""
        self.r.set(WORKER_PREFIX + worker, f"{time.time():.3f}",
                   px=max(1, int(3 * interval_s * 1000)))

    def workers_alive(self, workers: Iterable[str]) -> dict[str, bool]:
        names = sorted(set(workers))
        if not names:
            return {}
        return {w: v is not None
                for w, v in zip(names, self.r.mget([WORKER_PREFIX + w for w in names]))}

    def waiting(self, job_id: str, chunk_ids: Iterable[str]) -> list[ChunkWait]:
        """What the job waits for: each of `chunk_ids` (not done) as queued, running or lost."""
        ids = sorted(chunk_ids)
        if not ids:
            return []
        now = time.time()
        running = dict(zip(ids, self.r.hmget(self.key(job_id, "running"), ids)))
        sent = dict(zip(ids, self.r.hmget(self.key(job_id, "sent"), ids)))
        started = {c: json.loads(v) for c, v in running.items() if v is not None}
        alive = self.workers_alive(r["worker"] for r in started.values() if r.get("worker"))
        out = []
        for c in ids:
            sent_at = float(sent[c]) if sent[c] is not None else None
            r = started.get(c)
            if r is not None and (sent_at is None or r["started"] >= sent_at - 1.0):
                state = "running" if alive.get(r.get("worker"), False) else "worker lost"
                out.append(ChunkWait(c, state, max(0.0, now - r["started"]), r.get("worker"),
                                     int(r.get("attempt", 0))))
            else:
                out.append(ChunkWait(c, "queued", max(0.0, now - sent_at) if sent_at else None,
                                     None, int(r.get("attempt", 0)) if r else 0))
        return out

    def finish_chunk(
        self, job_id: str, chunk_id: str, *, ok_ids: list[str],
        failures: list[tuple[str, str]], attempt: int = 1, worker: str = "",
        target: str | None = None,
    ) -> None:
        """Record a chunk's outcome atomically: clear stale dead letters of now-indexed ids,
        add this chunk's failures, then set the done marker (last, so done implies reported)."""
        pipe = self.r.pipeline(transaction=True)
        dead = self.key(job_id, "dead")
        if ok_ids:
            pipe.hdel(dead, *[f"doc:{i}" for i in ok_ids])
        if failures:
            pipe.hset(dead, mapping={
                f"doc:{i}": json.dumps({"id": i, "position": None, "chunk": chunk_id, "reason": r})
                for i, r in failures})
        pipe.hset(self.key(job_id, "chunks"), chunk_id, json.dumps({
            "indexed": len(ok_ids), "failed": len(failures), "attempt": attempt,
            "worker": worker, "at": round(time.time(), 3), "target": target}))
        pipe.execute()

    # reading
    def dead_letter(self, job_id: str) -> list[DeadLetter]:
        out = []
        for raw in self.r.hvals(self.key(job_id, "dead")):
            d = json.loads(raw)
            out.append(DeadLetter(id=d.get("id"), reason=d["reason"], position=d.get("position"),
                                  chunk=d.get("chunk"), unit=d.get("unit")))
        out.sort(key=lambda d: (d.position is None, d.position or 0, d.id or ""))
        return out

    def status(self, job_id: str) -> JobStatus:
        meta = self.meta(job_id)
        if not meta:
            return JobStatus(index=None, job_id=job_id, source=None, state="unknown")
        chunks = self.chunk_results(job_id)
        plan = self.plan(job_id)
        dead = self.dead_letter(job_id)
        attempts = {_s(k): int(v) for k, v in self.r.hgetall(self.key(job_id, "attempts")).items()}
        missing = sorted(c for c in plan if c not in chunks)
        missing_ids = [i for c in missing for i in plan[c]]
        planned = meta.get("planned") == "1"
        total = int(meta.get("chunks_total", len(plan)) or 0)
        alive = self.submitter_alive(job_id)
        if meta.get("state") == "failed":
            state = "failed"
        elif planned and not missing and len(chunks) >= total:
            state = "finished"
        elif meta.get("state") == "incomplete":
            state = "incomplete"
        elif not planned and not alive:  # nobody is reading the source or queueing chunks
            state = "abandoned"
        else:
            state = "running"
        read_errors = sum(1 for d in dead if d.chunk is None)
        return JobStatus(
            job_id=job_id, index=meta.get("index"), source=meta.get("source"), state=state,
            records_read=int(meta.get("records_read", 0) or 0),
            submitted=int(meta.get("submitted", sum(len(v) for v in plan.values())) or 0),
            indexed=sum(int(c.get("indexed", 0)) for c in chunks.values()),
            failed=read_errors + sum(int(c.get("failed", 0)) for c in chunks.values()),
            chunks_total=total, chunks_done=len(chunks), missing_chunks=missing,
            missing_ids=missing_ids, dead_letter=dead,
            redelivered_chunks={c: n for c, n in attempts.items() if n > 1},
            waiting=[] if state == "finished" else self.waiting(
                job_id, [c for c in self._sent_ids(job_id) if c not in chunks]),
            meta=meta, submitter_alive=alive, elapsed_s=_elapsed_s(meta, chunks, state),
        )

    def _sent_ids(self, job_id: str) -> list[str]:
        return [_s(c) for c in self.r.hkeys(self.key(job_id, "sent"))]

    def delete(self, job_id: str) -> None:
        self.r.delete(*self.keys(job_id))

    # job-level outcomes
    def fail_job(self, job_id: str, error: dict[str, Any]) -> None:
        """Record a permanent job-level error (e.g. the index belongs to another encoder):
        the submitter stops and reports it instead of waiting for the rest."""
        self.r.hset(self.key(job_id), mapping={"error": json.dumps(error), "state": "failed"})

    def job_error(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.key(job_id), "error")
        return json.loads(raw) if raw else None

    def cancel(self, job_id: str, *, tombstone_s: int = 7 * 24 * 3600) -> bool:
        """Delete a job's keys and leave a tombstone (``convsparse:job:{id}:cancelled``, kept
        `tombstone_s`) so a worker that still receives one of its chunks skips it instead of
        writing documents and re-creating keys. True if the job existed."""
        existed = self.exists(job_id)
        self.r.set(self.key(job_id, "cancelled"), "1", ex=tombstone_s)
        self.delete(job_id)
        return existed

    def cancelled(self, job_id: str) -> bool:
        return bool(self.r.exists(self.key(job_id, "cancelled")))

    def expire(self, job_id: str, seconds: int) -> None:
        for k in self.keys(job_id):
            self.r.expire(k, seconds)
