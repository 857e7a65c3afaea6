# convsparse Celery worker: PyTorch on CUDA (bf16, sparsified on the GPU), ONNX Runtime on CPU.
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
# PyPI's Linux torch wheels are CUDA builds (their CUDA libraries come as pip packages, about
# 3 GB): a GPU worker runs the PyTorch runtime, bfloat16, with pooling and pruning on the
# device so only CSR arrays cross to the host (CONVSPARSE_RUNTIME=torch, issue 15).
# onnxruntime-gpu serves CONVSPARSE_RUNTIME=onnx (CUDA provider, or CPU).
RUN pip install "torch==2.13.0" \
 && pip install ".[gpu,elasticsearch]" \
 && pip uninstall -y onnxruntime \
 && pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.20"

RUN useradd --create-home worker && mkdir -p /cache && chown worker /cache
USER worker
# One solo worker per GPU (CUDA must not be initialised in a prefork parent).
CMD ["celery", "-A", "convsparse.workers.app", "worker", "--pool=solo", "-Q", "ingest,query", "--concurrency=1", "--loglevel=info"]
