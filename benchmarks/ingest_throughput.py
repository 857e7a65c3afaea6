"""Ingestion throughput: Celery + Redis workers versus the in-process path, same machine and model.

    python benchmarks/ingest_throughput.py                       # MiniLM-sized lexical student
    python benchmarks/ingest_throughput.py --model tiny --docs 1000 --repeats 3
    python benchmarks/ingest_throughput.py --model /path/to/student

One run starts its own `redis-server` (noeviction, no persistence) on a free port and one
`celery worker --pool=solo` subprocess, then alternates, `--repeats` times, a fresh-index ingest
of the same generated corpus (a) in process (`ingest`: read -> chunks -> write_chunk) and
(b) through the queue (`run_ingest_job`: read -> chunks -> Redis -> worker -> write_chunk ->
job state), both into an embedded backend, with the same options (`JobOptions`: chunk size,
batch size) and torch thread count. Reported: median documents/s of each path and the queue's cost
(1 - queue / in-process). Goal: <= 15%. Results go to benchmarks/results/ingest_throughput.{json,md}.

`--vectors` compares instead the cost of the re-ranker's passage vectors: alternating, fresh
in-process ingests with term maps only and with term maps + vectors (the built-in MiniLM
bi-encoder, 128-piece windows every 96, written in the same batch), then one Celery run with
vectors (the worker's path embeds them too; checked: every document has its vectors). Reported:
median documents/s of each and the slowdown (term maps only / with vectors). `--max-words`
lengthens the generated passages (MTRAG's median passage is about 220 word pieces).
Results go to benchmarks/results/ingest_throughput_<model>_vectors.{json,md}.

The worker does the encoding while the submitter only reads, chunks and polls, so on a machine
with spare cores the queue path can even be faster; the default uses one torch thread on both
sides so the comparison measures the queue overhead, not a core count difference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = ("paris france capital river seine tower museum art history war peace music opera jazz "
         "guitar piano science physics atom energy light star planet moon ocean fish whale coral "
         "forest tree bird wolf bear mountain snow winter summer rain cloud storm train station "
         "city village bread cheese wine coffee tea election parliament law court judge market "
         "price bank money trade ship harbour island desert camel oasis").split()


def corpus(n: int, seed: int = 0, max_words: int = 120) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"d{i:06d}", "title": f"Doc {i}",
             "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, max_words)))}
            for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(kind: str, out: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' tiny model
    from tiny_masked_lm import build_tiny_masked_lm

    if kind == "tiny":
        return build_tiny_masked_lm(out)
    if kind == "minilm-size":  # MiniLM-L6 compute: 6 layers, hidden 384, 256 positions
        return build_tiny_masked_lm(out, hidden_size=384, layers=6, max_position_embeddings=256)
    if kind == "shipped":  # the default student (CONVSPARSE_MODEL unset)
        return Path("")
    return Path(kind)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="minilm-size", help="tiny | minilm-size | PATH")
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-in-flight", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads, both paths")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--vectors", action="store_true",
                   help="compare ingest with and without the re-ranker's passage vectors")
    p.add_argument("--max-words", type=int, default=120, help="longest generated passage")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from convsparse.compose import load_encoder
    from convsparse.integration.ingest_options import Batching
    from convsparse.integration.ingestion import ingest
    from convsparse.workers.app import WorkerSettings
    from convsparse.workers.submit import JobOptions, JobTimeouts, run_ingest_job

    tmp = Path(tempfile.mkdtemp(prefix="convsparse-bench-"))
    redis_proc = worker = None
    try:
        model_dir = build_model(args.model, tmp / "model")
        source = tmp / "corpus.jsonl"
        with source.open("w") as f:
            for row in corpus(args.docs, max_words=args.max_words):
                f.write(json.dumps(row) + "\n")
        port = free_port()
        redis_proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
             "--appendonly", "no", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        data_dir = tmp / "data"
        model_name = "" if str(model_dir) in ("", ".") else str(model_dir)
        settings = WorkerSettings(redis_url=url, result_url=url, model=model_name,
                                  runtime="torch", device="cpu", backend="embedded",
                                  data_dir=data_dir)
        env = dict(os.environ, CONVSPARSE_REDIS_URL=url, CONVSPARSE_RESULT_URL=url,
                   CONVSPARSE_MODEL=model_name, CONVSPARSE_RUNTIME="torch",
                   CONVSPARSE_DEVICE="cpu", CONVSPARSE_BACKEND="embedded",
                   CONVSPARSE_DATA_DIR=str(data_dir), CONVSPARSE_TORCH_THREADS=str(args.threads),
                   OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
        log = (tmp / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "convsparse.workers.app", "worker",
             "--pool=solo", "-Q", "ingest", "--concurrency=1", "--loglevel=warning",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        from convsparse.integration.backends.embedded import EmbeddedBackend

        encoder = load_encoder(settings)
        local_backend = EmbeddedBackend(tmp / "local")
        # Warm-up (also waits for the worker to be up): one small job each way.
        warm = tmp / "warm.jsonl"
        warm.write_text("\n".join(json.dumps(r) for r in corpus(32, seed=9)) + "\n")
        ingest(warm, encoder=encoder, backend=local_backend, index="warm")
        # the worker may still be starting on a loaded machine: wait for it here
        run_ingest_job(warm, index="warm", settings=settings, progress=False,
                       options=JobOptions(timeouts=JobTimeouts(worker_s=180.0)))
        # one set of options for both paths: the in-process run reads them as IngestOptions
        options = JobOptions(batching=Batching(batch_size=args.batch_size,
                                               chunk_size=args.chunk_size,
                                               max_in_flight=args.max_in_flight))
        if args.vectors:
            return _vectors(args, source, encoder, settings, tmp, options)

        local_runs, queue_runs = [], []
        for r in range(args.repeats):
            index = f"local{r}"
            t0 = time.perf_counter()
            rep = ingest(source, encoder=encoder, backend=local_backend, index=index,
                         options=options)
            local_runs.append(args.docs / (time.perf_counter() - t0))
            assert rep.indexed == args.docs, rep

            index = f"queue{r}"
            t0 = time.perf_counter()
            status = run_ingest_job(source, index=index, settings=settings, options=options,
                                    progress=False, job_id=f"bench-{index}-{time.time_ns()}")
            queue_runs.append(args.docs / (time.perf_counter() - t0))
            assert status.finished and status.indexed == args.docs, status
            print(f"repeat {r}: in-process {local_runs[-1]:.1f} docs/s, "
                  f"celery {queue_runs[-1]:.1f} docs/s", flush=True)

        local_med = statistics.median(local_runs)
        queue_med = statistics.median(queue_runs)
        cost = 1.0 - queue_med / local_med
        result = {
            "benchmark": "ingest_throughput", "model": args.model,
            "encoder_fingerprint": encoder.fingerprint, "docs": args.docs,
            "repeats": args.repeats, "chunk_size": args.chunk_size,
            "batch_size": args.batch_size, "max_in_flight": args.max_in_flight,
            "torch_threads": args.threads, "in_process_docs_s": local_runs,
            "celery_docs_s": queue_runs, "in_process_median_docs_s": local_med,
            "celery_median_docs_s": queue_med, "queue_cost": cost,
            "goal_queue_cost_max": 0.15, "goal_met": cost <= 0.15,
            "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                        "platform": platform.platform()},
        }
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"ingest_throughput_{args.model}" if args.model in ("tiny", "minilm-size") \
            else "ingest_throughput_custom"
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        md = [
            f"# Ingest throughput ({args.model}, {args.docs} docs, {args.repeats} repeats, "
            f"{args.threads} torch thread(s), chunk {args.chunk_size}, batch {args.batch_size})",
            "",
            "| path | median docs/s | runs (docs/s) |",
            "|---|---:|---|",
            f"| in-process (`--via local`) | {local_med:.1f} | "
            f"{', '.join(f'{x:.1f}' for x in local_runs)} |",
            f"| Celery + Redis, 1 solo worker (`--via celery`) | {queue_med:.1f} | "
            f"{', '.join(f'{x:.1f}' for x in queue_runs)} |",
            "",
            f"Queue cost: {cost * 100:.1f}% of in-process throughput "
            f"(goal <= 15%: {'met' if cost <= 0.15 else 'NOT met'}).",
            "",
        ]
        (args.out / f"{stem}.md").write_text("\n".join(md))
        print("\n".join(md))
        return result
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _vectors(args, source: Path, encoder, settings, tmp: Path, options) -> dict:
    """In process without and with passage vectors, alternating; then Celery with them."""
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.integration.ingestion import ensure_index, ingest
    from convsparse.integration.vectors import load_embedder
    from convsparse.sources import read_documents
    from convsparse.workers.submit import run_ingest_job

    embedder = load_embedder()
    embedder.embed(["warm-up passage"])
    backend = EmbeddedBackend(tmp / "vectors")
    runs: dict[str, list[float]] = {"term maps only": [], "term maps + vectors": []}
    for r in range(args.repeats):
        for label, vectors in (("term maps only", False), ("term maps + vectors", True)):
            index = f"{'v' if vectors else 't'}{r}"
            ensure_index(backend, index, encoder, vectors=vectors)
            t0 = time.perf_counter()
            rep = ingest(source, encoder=encoder, backend=backend, index=index, options=options)
            runs[label].append(args.docs / (time.perf_counter() - t0))
            assert rep.indexed == args.docs, rep
            assert (backend.vector_spec(index) is not None) == vectors
            print(f"repeat {r}: {label} {runs[label][-1]:.1f} docs/s", flush=True)
    # the two models' stages back to back on the same passages, round after round: a ratio a
    # load change during the run (other processes on the machine) cannot skew the way it can
    # skew whole runs minutes apart
    texts = [r.encoded_text for r in read_documents(source)[:64]]
    stage_ratios, encode_s, embed_s = [], [], []
    for _ in range(args.repeats * 2):
        t0 = time.perf_counter()
        encoder.encode_documents(texts, batch_size=args.batch_size)
        t1 = time.perf_counter()
        embedder.embed(texts, batch_size=args.batch_size)
        t2 = time.perf_counter()
        encode_s.append(t1 - t0)
        embed_s.append(t2 - t1)
        stage_ratios.append((t2 - t1) / (t1 - t0))
    stage_ratio = statistics.median(stage_ratios)
    queue_backend = EmbeddedBackend(settings.data_dir)
    ensure_index(queue_backend, "queue-vectors", encoder, vectors=True)
    t0 = time.perf_counter()
    status = run_ingest_job(source, index="queue-vectors", settings=settings, options=options,
                            progress=False, job_id=f"bench-vectors-{time.time_ns()}")
    celery = args.docs / (time.perf_counter() - t0)
    assert status.finished and status.indexed == args.docs, status
    ids = [f"d{i:06d}" for i in range(args.docs)]
    assert len(queue_backend.passage_vectors("queue-vectors", ids)) == args.docs
    plain, withv = (statistics.median(runs[k]) for k in ("term maps only", "term maps + vectors"))
    slowdown = plain / withv
    pieces = [len(embedder.semantic.model.tokenizer(r.text, verbose=False)["input_ids"])
              for r in read_documents(source)]
    result = {
        "benchmark": "ingest_throughput_vectors", "model": args.model,
        "encoder_fingerprint": encoder.fingerprint, "vectors": embedder.spec.to_dict(),
        "docs": args.docs, "repeats": args.repeats, "chunk_size": args.chunk_size,
        "batch_size": args.batch_size, "torch_threads": args.threads,
        "passage_pieces_median": statistics.median(pieces),
        "passages_over_one_window": sum(p > (embedder.spec.window or 10**9) for p in pieces),
        "runs_docs_s": runs, "term_maps_only_median_docs_s": plain,
        "with_vectors_median_docs_s": withv, "celery_with_vectors_docs_s": celery,
        "slowdown": slowdown, "goal_slowdown_max": 3.0, "goal_met": slowdown <= 3.0,
        "stage_texts": len(texts), "encode_s": encode_s, "embed_s": embed_s,
        "embed_over_encode_median": stage_ratio,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"ingest_throughput_{args.model}_vectors"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"# Ingest throughput with and without passage vectors ({args.model} student, "
        f"{args.docs} docs of median {statistics.median(pieces):.0f} word pieces, "
        f"{args.repeats} repeats, {args.threads} torch thread(s), CPU)",
        "",
        "| path | median docs/s | runs (docs/s) |",
        "|---|---:|---|",
        *(f"| in-process, {k} | {statistics.median(v):.1f} | "
          f"{', '.join(f'{x:.1f}' for x in v)} |" for k, v in runs.items()),
        f"| Celery + Redis, 1 solo worker, term maps + vectors | {celery:.1f} | {celery:.1f} |",
        "",
        f"Vectors ({embedder.spec.describe()}) make ingest {slowdown:.2f}x slower "
        f"(goal <= 3x: {'met' if slowdown <= 3.0 else 'NOT met'}).",
        "",
        f"Stages back to back on the same {len(texts)} passages, {len(stage_ratios)} rounds: "
        f"term maps {statistics.median(encode_s) / len(texts) * 1000:.0f} ms/passage, vectors "
        f"{statistics.median(embed_s) / len(texts) * 1000:.0f} ms/passage; vectors / term "
        f"maps = {stage_ratio:.2f} (median of the rounds' ratios), so ingest with vectors "
        f"costs about {1 + stage_ratio:.2f}x the encoding of term maps alone.",
        "",
    ]
    (args.out / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
