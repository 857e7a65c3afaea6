"""Real Redis servers and real `celery worker` subprocesses for the workers tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REDIS = shutil.which("redis-server")
#: Short visibility timeout so a SIGKILLed worker's chunk comes back within seconds
#: (it must still exceed the longest test task: a chunk takes well under a second).
VISIBILITY_TIMEOUT_S = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server process on a free port; `restart()` keeps the port (and, with
    `appendonly=True`, the data)."""

    def __init__(self, workdir: Path, *, appendonly: bool = False):
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--maxmemory-policy", "noeviction", "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else \
            ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, pause_s: float = 0.5) -> None:
        self.stop()
        time.sleep(pause_s)
        self.start()


class WorkerProcess:
    """`celery -A convsparse.workers.app worker --pool=solo -Q ingest,query` in a subprocess."""

    def __init__(self, env: dict[str, str], log: Path, name: str = "w", queues: str = "ingest,query"):
        self.env = env
        self.log = log
        self.name = name
        self.queues = queues
        self.proc: subprocess.Popen | None = None
        self._n = 0

    def start(self, wait: bool = True) -> None:
        self._n += 1
        self._fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "convsparse.workers.app", "worker",
             "--pool=solo", "-Q", self.queues, "--concurrency=1", "--loglevel=info",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             f"--hostname={self.name}{self._n}@%h"],
            env=self.env, stdout=self._fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 300.0) -> None:  # a loaded 2-core machine is slow
        deadline = time.monotonic() + timeout
        marker = f"{self.name}{self._n}@".encode()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log.read_text()[-3000:]}")
            text = self.log.read_bytes()
            if marker in text and b"ready." in text.split(marker)[-1]:
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
        if getattr(self, "_fh", None):
            self._fh.close()


def worker_env(redis_url: str, model_dir: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "CONVSPARSE_REDIS_URL": redis_url,
        "CONVSPARSE_RESULT_URL": redis_url,
        "CONVSPARSE_MODEL": str(model_dir),
        "CONVSPARSE_RUNTIME": "torch",
        "CONVSPARSE_DEVICE": "cpu",
        "CONVSPARSE_BACKEND": "embedded",
        "CONVSPARSE_DATA_DIR": str(data_dir),
        "CONVSPARSE_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        "CONVSPARSE_UNACKED_RESTORE_INTERVAL_S": "1",
        "CONVSPARSE_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    })
    env.update(extra)
    return env


def settings_for(redis_url: str, model_dir: Path, data_dir: Path):
    from convsparse.workers.app import WorkerSettings

    return WorkerSettings(
        redis_url=redis_url, result_url=redis_url, model=str(model_dir), runtime="torch",
        device="cpu", backend="embedded", data_dir=data_dir,
        visibility_timeout_s=VISIBILITY_TIMEOUT_S, unacked_restore_interval_s=1,
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if REDIS is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


_next_db = iter(range(1, 16))


@pytest.fixture
def redis_db(redis_server):
    """A fresh Redis database number (isolates queues and job state between tests)."""
    return redis_server.url(next(_next_db))


@pytest.fixture(scope="session")
def session_worker(redis_server, tiny_model_dir, tmp_path_factory):
    """One worker shared by the fast end-to-end tests (database 0, its own data dir)."""
    data_dir = tmp_path_factory.mktemp("worker-data")
    url = redis_server.url(0)
    worker = WorkerProcess(worker_env(url, tiny_model_dir, data_dir),
                           tmp_path_factory.mktemp("logs") / "session-worker.log", name="sess")
    worker.start()
    worker.settings = settings_for(url, tiny_model_dir, data_dir)
    yield worker
    worker.stop()


def make_corpus(n: int, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    words = ("paris france capital river seine tower museum art history war peace music "
             "opera jazz guitar piano science physics atom energy light star planet moon "
             "ocean fish whale coral forest tree bird wolf bear mountain snow winter summer "
             "rain cloud storm train station city village bread cheese wine coffee tea").split()
    return [{"id": f"doc-{i:04d}", "title": f"Title {i}",
             "text": " ".join(rng.choice(words) for _ in range(rng.randint(8, 40)))}
            for i in range(n)]


def write_jsonl(path: Path, rows) -> Path:
    import json

    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    """`predicate()`'s first truthy value, polled until `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not reached")


def fail_fast(chunk_size: int, **source):
    """Job options that give up on a chunk after 30 s without progress instead of the
    production hour; `source`: `SourceOptions` fields."""
    from convsparse.integration.ingest_options import Batching, SourceOptions
    from convsparse.workers.submit import JobOptions, JobTimeouts

    return JobOptions(SourceOptions(**source), Batching(chunk_size=chunk_size),
                      JobTimeouts(stall_s=30), max_resubmits=0)


@pytest.fixture
def helpers():
    """The helper functions above (tests cannot import conftest under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(make_corpus=make_corpus, write_jsonl=write_jsonl,
                           settings_for=settings_for, worker_env=worker_env,
                           wait_for=wait_for, fail_fast=fail_fast)


@pytest.fixture
def make_worker(tmp_path):
    """Factory for worker subprocesses; every one started is stopped at the end."""
    started: list[WorkerProcess] = []

    def factory(env: dict[str, str], name: str = "w", queues: str = "ingest,query") -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"{name}.log", name=name, queues=queues)
        started.append(worker)
        return worker

    yield factory
    for worker in started:  # the test is over: no need for a warm shutdown
        worker.kill()
        worker.stop()


@pytest.fixture
def make_redis(tmp_path):
    """Factory for extra Redis servers (e.g. one to restart); all stopped at the end."""
    if REDIS is None:
        pytest.skip("redis-server is not installed")
    started: list[RedisServer] = []

    def factory(*, appendonly: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", appendonly=appendonly)
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
