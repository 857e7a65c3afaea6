"""The Celery configuration and the docker compose file follow the Celery/Redis facts."""

from __future__ import annotations

from pathlib import Path

import yaml

from convsparse.workers.app import (
    INGEST_QUEUE,
    QUERY_QUEUE,
    WorkerSettings,
    celery_config,
    make_app,
)

ROOT = Path(__file__).resolve().parents[2]


def test_celery_config_is_safe_by_default():
    settings = WorkerSettings(redis_url="redis://h:1/0", visibility_timeout_s=7200)
    conf = celery_config(settings)
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["accept_content"] == conf["result_accept_content"] == ["json"]
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    # the shortest visibility timeout wins: all three carry the same value
    assert conf["broker_transport_options"]["visibility_timeout"] == 7200
    assert conf["result_backend_transport_options"]["visibility_timeout"] == 7200
    assert conf["visibility_timeout"] == 7200
    assert conf["broker_transport_options"]["unacked_restore_throttle"] == 1
    assert {q.name for q in conf["task_queues"]} == {INGEST_QUEUE, QUERY_QUEUE}
    assert conf["result_backend"] == "redis://h:1/0" and conf["result_expires"] > 0
    app = make_app(settings)
    assert app.conf.task_acks_late and app.conf.broker_url == "redis://h:1/0"


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("CONVSPARSE_REDIS_URL", "redis://env:6380/2")
    monkeypatch.setenv("CONVSPARSE_VISIBILITY_TIMEOUT_S", "42")
    conf = celery_config(WorkerSettings())
    assert conf["broker_url"] == "redis://env:6380/2"
    assert conf["broker_transport_options"]["visibility_timeout"] == 42


def test_tasks_are_registered_on_the_app():
    from convsparse.workers.app import INGEST_TASK, QUERY_TASK, app

    assert INGEST_TASK in app.tasks and QUERY_TASK in app.tasks
    assert app.tasks[INGEST_TASK].acks_late


def test_compose_file():
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    services = compose["services"]
    redis_cmd = services["redis"]["command"]
    assert "noeviction" in redis_cmd and redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] \
        == "noeviction"
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    os_env = services["opensearch"]["environment"]
    assert os_env["discovery.type"] == "single-node"
    assert os_env["DISABLE_SECURITY_PLUGIN"] == "true"
    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert devices[0]["device_ids"] == ["0"]  # one service per GPU (see gpu_workers.py)
    cpu = services["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    for worker in (gpu, cpu):
        cmd = worker["command"]
        assert "--pool=solo" in cmd and "--concurrency=1" in cmd
        assert cmd[cmd.index("-Q") + 1].split(",") == ["ingest", "query"]
        assert "convsparse.workers.app" in cmd
        env = worker["environment"]
        assert env["CONVSPARSE_REDIS_URL"].startswith("redis://redis:")
        assert env["CONVSPARSE_OPENSEARCH_URL"] == "http://opensearch:9200"
        assert int(env["CONVSPARSE_VISIBILITY_TIMEOUT_S"]) >= 600
        assert env["CONVSPARSE_BACKEND"] == "opensearch"
    assert gpu["environment"]["CONVSPARSE_DEVICE"] == "cuda"
    # the GPU path of issue 15 (bf16, sparsified on the device) is the PyTorch runtime's
    assert gpu["environment"]["CONVSPARSE_RUNTIME"] == "torch"
    assert cpu["environment"]["CONVSPARSE_RUNTIME"] == "onnx"
    dockerfile = (ROOT / "docker" / "worker.Dockerfile").read_text()
    assert "onnxruntime-gpu" in dockerfile and "--pool=solo" in dockerfile
    assert "whl/cpu" not in dockerfile  # a CPU-only torch could not run the GPU worker


def test_gpu_worker_override_pins_one_gpu_each():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_workers", ROOT / "docker" / "gpu_workers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    services = yaml.safe_load(yaml.safe_dump(module.override(4)))["services"]
    assert sorted(services) == ["worker-gpu1", "worker-gpu2", "worker-gpu3"]
    pinned = []
    for name, svc in services.items():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1 and devices[0]["driver"] == "nvidia"
        pinned += devices[0]["device_ids"]
        assert "--pool=solo" in svc["command"] and f"--hostname={name[7:]}@%h" in svc["command"]
        assert svc["environment"]["CONVSPARSE_DEVICE"] == "cuda"
    assert pinned == ["1", "2", "3"]


def test_worker_command_defaults():
    from convsparse.cli.workers import worker_argv

    argv = worker_argv()
    assert "--pool=solo" in argv and argv[argv.index("-Q") + 1] == "ingest,query"


def test_defaults_size_the_queue_to_the_work_and_ack_after_durable_writes(tmp_path):
    """Issue 13: the default visibility timeout is minutes (not an hour), a lost worker is
    noticed by its heartbeat, and the embedded backend a worker opens fsyncs every batch
    before the task returns (the chunk is acknowledged after that: acks_late)."""
    from convsparse.compose import open_backend

    settings = WorkerSettings(backend="embedded", data_dir=tmp_path)
    assert 60 <= settings.visibility_timeout_s <= 900
    assert 3 * settings.worker_heartbeat_s < settings.visibility_timeout_s / 10
    conf = celery_config(settings)
    assert conf["task_acks_late"] and conf["broker_transport_options"]["visibility_timeout"] == 600
    backend = open_backend(settings)  # what a worker opens (workers.app.get_backend)
    assert backend.durable is True
    backend.create_index("i", fingerprint="fp")
    backend.describe_index("i")
    store = backend._states["i"].store
    assert store.writer().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_ingest_units_are_gpu_sized_and_configurable(monkeypatch):
    """Issue 15: a task is a unit of several device batches; both sizes come from settings."""
    from convsparse.integration.ingest_options import DEFAULT_CHUNK_SIZE

    settings = WorkerSettings()
    assert settings.ingest_chunk_size == DEFAULT_CHUNK_SIZE == 1024
    assert settings.ingest_batch_size == 128
    monkeypatch.setenv("CONVSPARSE_INGEST_CHUNK_SIZE", "4096")
    monkeypatch.setenv("CONVSPARSE_INGEST_BATCH_SIZE", "512")
    settings = WorkerSettings()
    assert (settings.ingest_chunk_size, settings.ingest_batch_size) == (4096, 512)
