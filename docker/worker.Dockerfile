# convsparse Celery worker with ONNX Runtime's CUDA provider.
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t convsparse-worker .
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip curl \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY . /app
# CPU torch wheels keep the image small: the GPU path is ONNX Runtime (onnxruntime-gpu, CUDA 12).
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[gpu,elasticsearch]" \
 && pip uninstall -y onnxruntime \
 && pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.20"

RUN useradd --create-home worker && mkdir -p /cache && chown worker /cache
USER worker
# One solo worker per GPU (CUDA must not be initialised in a prefork parent).
CMD ["celery", "-A", "convsparse.workers.app", "worker", "--pool=solo", "-Q", "ingest,query", "--concurrency=1", "--loglevel=info"]
