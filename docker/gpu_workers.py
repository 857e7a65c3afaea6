"""Print a compose override with one solo Celery worker per GPU (GPU 1..N-1; GPU 0 is
`worker-gpu` in docker-compose.yml).

    python docker/gpu_workers.py 4 > docker/docker-compose.gpus.yml
    docker compose -f docker/docker-compose.yml -f docker/docker-compose.gpus.yml up -d

Each service is a copy of `worker-gpu` (read from docker-compose.yml next to this script) that
pins its own GPU with `device_ids` (compose's `--scale` cannot give replicas different devices,
and `extends` would merge the device lists). Pass `--queues query` to dedicate the extra GPUs to
low-latency query encoding.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parent / "docker-compose.yml"


def override(n_gpus: int, queues: str = "ingest,query", compose: Path = COMPOSE) -> dict:
    base = yaml.safe_load(compose.read_text())["services"]["worker-gpu"]
    services = {}
    for gpu in range(1, n_gpus):
        service = copy.deepcopy(base)
        service.pop("build", None)  # reuse the image worker-gpu builds
        service["command"] = [
            "celery", "-A", "convsparse.workers.app", "worker", "--pool=solo", "-Q", queues,
            "--concurrency=1", "--loglevel=info", "--without-gossip", "--without-mingle",
            f"--hostname=gpu{gpu}@%h"]
        service["deploy"] = {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "device_ids": [str(gpu)], "capabilities": ["gpu"]}]}}}
        service["depends_on"] = {**base.get("depends_on", {}),
                                 "worker-gpu": {"condition": "service_started"}}
        services[f"worker-gpu{gpu}"] = service
    return {"services": services}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("gpus", type=int, help="number of GPUs on the host")
    p.add_argument("--queues", default="ingest,query")
    args = p.parse_args()
    print(yaml.safe_dump(override(args.gpus, args.queues), sort_keys=False), end="")


if __name__ == "__main__":
    main()
