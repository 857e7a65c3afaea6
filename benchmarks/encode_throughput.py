"""Bulk encoding throughput (issue 15): every stage from the model alone to a Celery worker, for
both students, in one run with interleaved repeats (each repeat runs every row once, in a
rotated order, so machine noise hits all rows alike) and medians.

    python benchmarks/encode_throughput.py --device cpu      # the CPU rows (what is in results/)
    python benchmarks/encode_throughput.py --device cuda     # the GPU run: one command
    python benchmarks/encode_throughput.py --device cuda --compile --chunk-size 256,1024,4096

(``--device auto``, the default, is CUDA when present.)

Models: the shipped default's document encoder (`load_student()` is an anchored student whose
documents go through its base, SPLADE-tiny: BertForMaskedLM, 2 layers, hidden 128) and, for a
model several times larger, the MiniLM-L6 base (`--second minilm`, 6 layers, hidden 384; its
masked-LM head is untrained, so its term counts are not a trained student's). Documents: the first
`--documents` MTRAG passages of ``../shared/data/mtrag-pooled/corpus.jsonl`` (title + text, as
indexed), max_length 256; read in place, never copied.

Rows (documents/s; "in-process" = the `encode_documents` of the bulk path):
- model only: forward + SPLADE pooling of pre-tokenized, length-sorted, pre-padded batches
  (inputs already on the device; nothing crosses back);
- end to end -> term maps: `encode_documents(texts)` (tokenize in the prefetch thread, forward,
  sparsify on the device, CSR to the host, validate, TermMapBatch of lazy views);
- legacy end to end: the pre-issue path (dense (n, vocab) float32 rows on the host, one
  TermMap per document in Python), for the speed-up;
- end to end -> embedded backend: `encode_and_upsert` of the records into an EmbeddedBackend;
- Celery worker: `run_ingest_job` through Redis and one `--pool=solo` worker (same model,
  device, dtype, threads) into an EmbeddedBackend, one row per `--chunk-size` (a comma list
  sweeps the task size: on a GPU, the smallest chunk whose row stays >= 85% of in-process is
  the one that keeps the device busy);
- sentence-transformers `SparseEncoder` on the same weights: `encode_document` + `decode`
  to dicts (the peer row);
- ONNX Runtime on CPU: plain export, + transformer optimizer, + int8 dynamic quantization
  (end to end -> term maps; `--onnx-model-only` adds their model-only rows);
- host stage (no model, one core): the CSR arrays the device hands over for these documents
  (unpruned, and with ingest pruning top_k=128: the device's superset), tiled to
  `--host-documents` -> validated (and exactly pruned) TermMapBatch -> the NDJSON lines the
  OpenSearch/Elasticsearch bulk writer sends (weights spelt at stored precision); the
  embedded-backend write of those term maps; the same two at `BEFORE` (the commit before the
  array paths, loaded with `module_at`), the bulk lines at `EXACT_WEIGHTS` (the last commit
  that sent exact float64 weights), and the legacy host stage (dense row -> TermMap -> pruning)
  for comparison. Each row also reports documents per CPU second of the measuring thread (the
  other jobs' share of a shared core left out) and, for bulk lines, their mean bytes.
  `--host-only` re-measures only these rows (`--host-keep` keeps some models' rows).

Writes encode_throughput.json and encode_throughput.md to `--out` (a CUDA run writes
encode_throughput_cuda.*; CPU rows of a CUDA machine are not re-measured unless --device cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from git_before import module_at  # noqa: E402

#: The commit before the host stage's array paths (bulk bodies, embedded writes): the "before" rows.
BEFORE = "6f8d60c"
#: The last commit whose bulk bodies carried exact float64 weights (dict per term map + orjson).
EXACT_WEIGHTS = "33f64a3"
CORPUS = ROOT.parent / "shared" / "data" / "mtrag-pooled" / "corpus.jsonl"
if not CORPUS.exists():
    CORPUS = Path("/work/shared/data/mtrag-pooled/corpus.jsonl")


def load_passages(n: int) -> list[tuple[str, str]]:
    """(id, text-to-encode) of the first `n` passages (`document_text`: the one rule), read by
    the one document reader."""
    from itertools import islice

    from convsparse.sources import read_documents

    return [(r.id, r.encoded_text) for r in islice(read_documents(CORPUS), n)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------- rows
def model_only_row(student, rows, batch_size: int) -> Callable[[], float]:
    """forward + pooling on pre-padded batches already on the device; returns seconds."""
    from convsparse.encoders.student import length_batches, pad_batch

    pad = student.tokenizer.pad_token_id or 0
    batches = []
    for idx in length_batches([len(r) for r in rows], batch_size):
        ids, mask = pad_batch([rows[i] for i in idx], pad)
        batches.append((torch.from_numpy(ids).to(student.device),
                        torch.from_numpy(mask).to(student.device)))

    def run() -> float:
        sync(student.device)
        t = time.perf_counter()
        with torch.inference_mode():
            for ids, mask in batches:
                student.pooled(ids, mask)
        sync(student.device)
        return time.perf_counter() - t
    return run


def onnx_model_only_row(student, rows, batch_size: int) -> Callable[[], float]:
    from convsparse.encoders.student import length_batches, pad_batch

    pad = student.tokenizer.pad_token_id or 0
    batches = [pad_batch([rows[i] for i in idx], pad)
               for idx in length_batches([len(r) for r in rows], batch_size)]

    def run() -> float:
        t = time.perf_counter()
        for ids, mask in batches:
            student.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return time.perf_counter() - t
    return run


def timed(fn: Callable[[], object], device: str = "cpu") -> Callable[[], float]:
    def run() -> float:
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t
    return run


def st_sparse_encoder(model_dir: str, device: str, max_length: int, dtype: torch.dtype):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling

    mlm = MLMTransformer(model_dir, max_seq_length=max_length)
    model = SparseEncoder(modules=[mlm, SpladePooling(pooling_strategy="max",
                                                      activation_function="relu")], device=device)
    if dtype != torch.float32:
        model.to(dtype)
    return model


def st_row(model, texts, batch_size: int, device: str) -> Callable[[], float]:
    def fn():
        emb = model.encode_document(texts, batch_size=batch_size, convert_to_tensor=True)
        decoded = model.decode(emb)
        return [dict(d) for d in decoded]
    return timed(fn, device)


class CeleryRig:
    """redis-server + one `celery worker --pool=solo` subprocess running `model_dir`."""

    def __init__(self, tmp: Path, model_dir: str, device: str, dtype: str, threads: int):
        from convsparse.workers.app import WorkerSettings

        port = free_port()
        self.redis = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
             "--appendonly", "no", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        data = tmp / f"celery-data-{Path(model_dir).name}"
        self.settings = WorkerSettings(redis_url=url, result_url=url, model=model_dir,
                                       runtime="torch", device=device, backend="embedded",
                                       data_dir=data)
        env = dict(os.environ, CONVSPARSE_REDIS_URL=url, CONVSPARSE_RESULT_URL=url,
                   CONVSPARSE_MODEL=model_dir, CONVSPARSE_RUNTIME="torch",
                   CONVSPARSE_DEVICE=device, CONVSPARSE_BACKEND="embedded",
                   CONVSPARSE_DATA_DIR=str(data), CONVSPARSE_TORCH_THREADS=str(threads),
                   CONVSPARSE_DTYPE=dtype)
        self.log = (tmp / f"worker-{Path(model_dir).name}.log").open("wb")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "convsparse.workers.app", "worker",
             "--pool=solo", "-Q", "ingest", "--concurrency=1", "--loglevel=warning",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.n = 0

    def row(self, source: Path, n_docs: int, chunk_size: int, batch_size: int):
        from convsparse.integration.ingest_options import Batching
        from convsparse.workers.submit import JobOptions, run_ingest_job

        def run() -> float:
            self.n += 1
            t = time.perf_counter()
            options = JobOptions(batching=Batching(batch_size=batch_size, chunk_size=chunk_size,
                                                   max_in_flight=4))
            status = run_ingest_job(source, index=f"bench{self.n}", settings=self.settings,
                                    options=options, progress=False,
                                    job_id=f"bench-{self.n}-{time.time_ns()}")
            dt = time.perf_counter() - t
            assert status.finished and status.indexed == n_docs, status
            return dt
        return run

    def close(self) -> None:
        if self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        self.redis.terminate()
        self.redis.wait()


# ---------------------------------------------------------------------------- host stage
def host_stage(student, raw, device_pruned, ids, n_rows: int, repeats: int) -> list[dict]:
    """Host-only rows (one core, no model). Inputs are what the device hands over for these
    documents: `raw` (every weight >= Float.MIN_NORMAL) and `device_pruned` (the device's
    top_k=128 superset), tiled to `n_rows` documents."""
    from convsparse.integration.backends.base import IndexedDocument
    from convsparse.integration.backends.bulk import EngineBackendBase
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.pruning import PruningPolicy
    from convsparse.termmap import TermMapBatch, term_map_from_vector

    def tile(csr):
        reps = -(-n_rows // csr.n_rows)
        return csr.take_rows(np.tile(np.arange(csr.n_rows), reps)[:n_rows])

    big_raw, big_dev = tile(raw), tile(device_pruned)
    big_ids = [f"{ids[i % len(ids)]}#{i}" for i in range(n_rows)]
    vocab = student.token_vocabulary
    pruning = PruningPolicy(top_k=128)
    _ = vocab.escaped, vocab.rank, vocab.valid  # per-vocabulary arrays, built once per encoder

    def to_batch(rows, p):
        row_ids = big_ids[:rows.n_rows]
        rows = rows.validated(vocab, row_ids)  # what _batch_from_csr does
        rows = p.apply_csr(rows, vocab) if p is not None else rows
        return TermMapBatch.from_csr(rows, vocab, "fp", row_ids, checked=True)

    writer = EngineBackendBase()  # _prepare_index needs no client: it makes the lines a chunk sends
    old_writer = module_at(BEFORE, "integration/backends/bulk.py", "bulk_before").BulkWriter()
    exact_writer = module_at(EXACT_WEIGHTS, "integration/backends/bulk.py", "bulk_exact").BulkWriter()
    body_bytes: dict[int, float] = {}  # mean NDJSON bytes a document, by row function
    from opensearchpy.helpers.actions import expand_action
    from opensearchpy.serializer import JSONSerializer
    dumps = JSONSerializer().dumps

    def bodies_before(batch):  # what the writer and streaming_bulk did per document before
        for pos, (i, tm) in enumerate(zip(batch.ids, batch)):
            entry = old_writer._prepare_index("idx", pos, IndexedDocument(i, tm, {}), "fp", "terms")
            action, source = expand_action(entry.action)
            dumps(action), dumps(source)

    def termmaps(rows, p, bodies: str | None):
        def run():
            t = time.perf_counter()
            c = time.thread_time()
            batch = to_batch(rows, p)
            if bodies in ("ndjson", "exact"):
                w = writer if bodies == "ndjson" else exact_writer
                lines = [w._prepare_index("idx", pos, IndexedDocument(i, tm, {}), "fp", "terms").lines
                         for pos, (i, tm) in enumerate(zip(batch.ids, batch))]
                body_bytes[id(run)] = sum(map(len, lines)) / len(lines)
            elif bodies == "before":
                bodies_before(batch)
            return time.perf_counter() - t, time.thread_time() - c
        return run

    emb_n = min(n_rows, 8192)
    tmp = Path(tempfile.mkdtemp(prefix="convsparse-host-"))
    backends = {"after": EmbeddedBackend(tmp / "after"),
                "before": module_at(BEFORE, "integration/backends/embedded.py",
                                    "embedded_before").EmbeddedBackend(tmp / "before")}
    emb_batch = to_batch(big_dev.take_rows(np.arange(emb_n)), pruning)
    count = [0]

    def embedded(which: str):
        def run():
            backend = backends[which]
            count[0] += 1
            name = f"h{count[0]}"
            backend.create_index(name, fingerprint="fp")
            docs = [IndexedDocument(i, tm, {}) for i, tm in zip(emb_batch.ids, emb_batch)]
            t = time.perf_counter()
            c = time.thread_time()
            for _ in backend.upsert(name, docs):
                pass
            dt = time.perf_counter() - t, time.thread_time() - c
            backend.delete_index(name)
            return dt
        return run

    legacy_n = min(512, raw.n_rows)
    dense = np.zeros((legacy_n, len(vocab)), dtype=np.float32)
    sub = raw.take_rows(np.arange(legacy_n))
    dense[sub.row_of_entries(), sub.indices] = sub.values

    def legacy():
        t = time.perf_counter()
        c = time.thread_time()
        for i, v in enumerate(dense):
            tm = term_map_from_vector(v, student.vocabulary, record_id=big_ids[i])
            pruning.apply(tm).to_rank_features()
        return time.perf_counter() - t, time.thread_time() - c

    cases = [
        ("CSR -> validated term maps (lazy views)", n_rows, termmaps(big_raw, None, None)),
        ("device top_k=128 CSR -> exact pruning -> term maps", n_rows,
         termmaps(big_dev, pruning, None)),
        ("CSR -> term maps -> bulk bodies (NDJSON lines as sent, no pruning)", n_rows,
         termmaps(big_raw, None, "ndjson")),
        ("device top_k=128 CSR -> pruned term maps -> bulk bodies (NDJSON lines as sent)", n_rows,
         termmaps(big_dev, pruning, "ndjson")),
        (f"stop 21 ({EXACT_WEIGHTS}): top_k=128 -> bulk bodies with exact float64 weights "
         "(a dict per term map, orjson)", n_rows, termmaps(big_dev, pruning, "exact")),
        (f"before ({BEFORE}): top_k=128 -> bulk bodies (action dicts, json sizes, client "
         "serializer)", n_rows, termmaps(big_dev, pruning, "before")),
        ("embedded-backend write of top_k=128 term maps (SQLite store)", emb_n, embedded("after")),
        (f"before ({BEFORE}): embedded-backend write of top_k=128 term maps", emb_n,
         embedded("before")),
        ("legacy: dense row -> TermMap -> pruning -> rank_features", legacy_n, legacy),
    ]
    runs = {name: [] for name, _, _ in cases}
    cpu = {name: [] for name, _, _ in cases}
    for r in range(repeats):
        order = cases[r % len(cases):] + cases[:r % len(cases)]
        for name, n, fn in order:
            wall, on_cpu = fn()
            runs[name].append(n / wall)
            cpu[name].append(n / on_cpu)
            print(f"[host] repeat {r + 1} {name}: {n / wall:,.0f} docs/s "
                  f"({n / on_cpu:,.0f} per CPU second)", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    terms_in = {id(big_raw): float(np.mean(np.diff(big_raw.indptr))),
                id(big_dev): float(np.mean(np.diff(big_dev.indptr)))}
    return [{"row": name, "device": "host (1 core)", "documents": n,
             "docs_per_s": statistics.median(runs[name]), "docs_per_s_runs": runs[name],
             "docs_per_cpu_s": statistics.median(cpu[name]),
             "mean_terms_raw": terms_in[id(big_raw)], "mean_terms_device_pruned":
             terms_in[id(big_dev)], "mean_body_bytes": body_bytes.get(id(fn))}
            for name, n, fn in cases]


# -------------------------------------------------------------------------------- driver
def run_rows(rows: list[tuple[str, int, Callable[[], float]]], repeats: int, tag: str,
             warmups: list[Callable[[], object]]) -> list[dict]:
    for fn in warmups:  # allocator, ORT arena, cuBLAS heuristics, the Celery worker's model load
        fn()
    runs = {name: [] for name, _, _ in rows}
    for r in range(repeats):
        order = rows[r % len(rows):] + rows[:r % len(rows)]
        for name, n, fn in order:
            runs[name].append(n / fn())
            print(f"[{tag}] repeat {r + 1} {name}: {runs[name][-1]:.1f} docs/s", flush=True)
    return [{"row": name, "documents": n, "docs_per_s": statistics.median(runs[name]),
             "docs_per_s_runs": runs[name]} for name, n, _ in rows]


def host_only(label: str, path: str | None, device: str, args) -> list[dict]:
    """Only the host rows of one model (`--host-only`)."""
    from convsparse.encoders.loading import load_student
    from convsparse.pruning import PruningPolicy

    passages = load_passages(args.documents)
    ids, texts = [p[0] for p in passages], [p[1] for p in passages]
    student = load_student(path, runtime="torch", device=device, dtype=args.dtype,
                           max_length=args.max_length)
    student = getattr(student, "base", student)  # an anchored student encodes documents by its base
    bs = args.batch_size
    batch = student.encode_documents(texts, ids=ids, batch_size=bs)
    device_pruned = student._encode_groups(
        student._tokenized_groups(texts), len(texts), batch_size=bs,
        pruning=PruningPolicy(top_k=128), progress=False, desc="")
    return host_stage(student, batch.csr, device_pruned, ids, args.host_documents, args.repeats)


def bench_model(label: str, path: str | None, device: str, args, tmp: Path) -> dict:
    from convsparse.documents import SourceRecord
    from convsparse.encoders.loading import load_student
    from convsparse.encoders.onnx_runtime import OnnxStudent
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.integration.ingestion import encode_and_upsert

    passages = load_passages(args.documents)
    ids, texts = [p[0] for p in passages], [p[1] for p in passages]
    student = load_student(path, runtime="torch", device=device, dtype=args.dtype,
                           max_length=args.max_length)
    student = getattr(student, "base", student)  # an anchored student encodes documents by its base
    model_dir = str(student.source)
    token_rows = student.tokenize_documents(texts)
    bs = args.batch_size
    rows: list[tuple[str, int, Callable[[], float]]] = []
    n = len(texts)
    w = min(n, bs)  # warm-up size: one batch
    warmups: list[Callable[[], object]] = [
        lambda: student.encode_documents(texts[:w], batch_size=bs),
        lambda: student.activations_for_ids(token_rows[:w], batch_size=bs)]
    rows.append(("model only (forward + pooling)", n, model_only_row(student, token_rows, bs)))
    compile_s = None
    if args.compile:
        compiled = load_student(path, runtime="torch", device=device, dtype=args.dtype,
                                max_length=args.max_length, compile=True)
        compiled = getattr(compiled, "base", compiled)
        warmups.append(lambda: None)
        t = time.perf_counter()
        model_only_row(compiled, token_rows[:bs], bs)()  # first call compiles
        compile_s = time.perf_counter() - t
        rows.append(("model only, torch.compile(dynamic=True)", n,
                     model_only_row(compiled, token_rows, bs)))
    rows.append(("end to end -> term maps (encode_documents)", n,
                 timed(lambda: student.encode_documents(texts, ids=ids, batch_size=bs), device)))
    rows.append(("legacy end to end (dense rows on the host)", n, timed(
        lambda: student._to_batch(student.activations_for_ids(
            student.tokenize_documents(texts), batch_size=bs), ids, None), device)))
    backend = EmbeddedBackend(tmp / f"emb-{label}")
    count = [0]

    def embedded():
        count[0] += 1
        name = f"e{count[0]}"
        backend.create_index(name, fingerprint=student.fingerprint)
        recs = [SourceRecord(id=i, text=t) for i, t in zip(ids, texts)]
        t0 = time.perf_counter()
        ok = sum(r.ok for r in encode_and_upsert(recs, encoder=student, backend=backend,
                                                 index=name, batch_size=bs, flush_size=n))
        dt = time.perf_counter() - t0
        assert ok == n
        backend.delete_index(name)
        return dt
    rows.append(("end to end -> embedded backend (encode_and_upsert)", n, embedded))
    rig = None
    if not args.no_celery:
        source = tmp / f"corpus-{label}.jsonl"
        with source.open("w") as f:
            for i, t in zip(ids, texts):
                f.write(json.dumps({"id": i, "text": t}) + "\n")
        warm = tmp / f"warm-{label}.jsonl"
        warm.write_text("".join(json.dumps({"id": f"w{i}", "text": t}) + "\n"
                                for i, t in enumerate(texts[:w])))
        rig = CeleryRig(tmp, model_dir, device, args.dtype, args.threads)
        warmups.append(rig.row(warm, w, args.chunk_sizes[0], bs))
        for chunk in args.chunk_sizes:
            rows.append((f"Celery worker (chunk {chunk}) -> embedded backend", n,
                         rig.row(source, n, chunk, bs)))
    if not args.no_st:
        st = st_sparse_encoder(model_dir, device, student.max_length, student.dtype)
        warmups.append(st_row(st, texts[:w], bs, device))
        rows.append(("sentence-transformers SparseEncoder encode_document + decode", n,
                     st_row(st, texts, bs, device)))
    onnx_info = {}
    if device == "cpu" and not args.no_onnx:
        cpu32 = student
        for name, kw in (("ONNX Runtime", {}), ("ONNX Runtime + optimizer", {"optimize": True}),
                         ("ONNX Runtime + optimizer + int8", {"int8": True})):
            t = time.perf_counter()
            ort = OnnxStudent.from_torch(cpu32, device="cpu", intra_op_threads=args.threads, **kw)
            onnx_info[name] = {"prepare_s": time.perf_counter() - t, "path": ort.onnx_path.name}
            warmups.append(lambda o=ort: o.encode_documents(texts[:w], batch_size=bs))
            if args.onnx_model_only:
                rows.append((f"{name}: model only", n, onnx_model_only_row(ort, token_rows, bs)))
            rows.append((f"{name}: end to end -> term maps", n,
                         timed(lambda o=ort: o.encode_documents(texts, ids=ids, batch_size=bs))))
    try:
        results = run_rows(rows, args.repeats, f"{label}/{device}", warmups)
    finally:
        if rig is not None:
            rig.close()
    for r in results:
        r["device"] = device if device == "cpu" else torch.cuda.get_device_name(0)
    from convsparse.pruning import PruningPolicy

    batch = student.encode_documents(texts, ids=ids, batch_size=bs)
    device_pruned = student._encode_groups(  # what the device hands over with top_k=128
        student._tokenized_groups(texts), n, batch_size=bs, pruning=PruningPolicy(top_k=128),
        progress=False, desc="")
    host = host_stage(student, batch.csr, device_pruned, ids, args.host_documents,
                      args.repeats) if args.host_documents else []
    mlm = student.model.mlm
    return {
        "model": label, "path": model_dir, "fingerprint": student.fingerprint,
        "parameters_m": sum(p.numel() for p in mlm.parameters()) / 1e6,
        "layers": getattr(mlm.config, "num_hidden_layers", None),
        "hidden": getattr(mlm.config, "hidden_size", None), "dtype": str(student.dtype),
        "documents": n, "mean_tokens": float(np.mean([len(r) for r in token_rows])),
        "mean_terms_per_doc": float(np.mean(np.diff(batch.csr.indptr))),
        "compile_s": compile_s, "onnx": onnx_info, "rows": results, "host_rows": host,
    }


def markdown(result: dict) -> str:
    out = [f"# Bulk encoding throughput ({result['device_label']})", "",
           f"{result['threads']} torch/ORT threads, batch {result['batch_size']}, max_length "
           f"{result['max_length']}, {result['repeats']} interleaved repeats (medians), MTRAG "
           f"passages from mtrag-pooled. CPU: {result['cpu']} ({result['cpu_count']} cores, "
           f"shared). torch {result['torch']}, onnxruntime {result['onnxruntime']}.", ""]
    for m in result["models"]:
        ref = next(r for r in m["rows"] if r["row"].startswith("model only"))["docs_per_s"]
        e2e = next(r for r in m["rows"] if r["row"].startswith("end to end -> term"))["docs_per_s"]
        out += [f"## {m['model']} ({m['parameters_m']:.1f} M parameters, {m['layers']} layers, "
                f"hidden {m['hidden']}, {m['dtype']}; {m['documents']} documents, "
                f"{m['mean_tokens']:.0f} tokens and {m['mean_terms_per_doc']:.0f} terms each "
                "on average)", "",
                "| row | device | documents/s | vs model only | vs end to end |",
                "|---|---|---:|---:|---:|"]
        for r in m["rows"]:
            out.append(f"| {r['row']} | {r['device']} | {r['docs_per_s']:,.1f} | "
                       f"{r['docs_per_s'] / ref:.2f}x | {r['docs_per_s'] / e2e:.2f}x |")
        if m["compile_s"] is not None:
            out.append(f"\ntorch.compile: first call (compile) {m['compile_s']:.1f} s.")
        if m["onnx"]:
            out.append("\nONNX preparation (export / optimize / quantize, cached afterwards): " +
                       ", ".join(f"{k} {v['prepare_s']:.1f} s" for k, v in m["onnx"].items()) + ".")
        if m["host_rows"]:
            when = m.get("host_rows_measured") or result.get("host_rows_remeasured")
            first = m["host_rows"][0]
            out += ["", "Host stage alone (goal >= 50,000 documents/s on one core"
                    + (f"; re-measured {when}" if when else "") + "): "
                    f"{first['mean_terms_raw']:.0f} terms/document unpruned, "
                    f"{first['mean_terms_device_pruned']:.0f} after the device's top_k=128.",
                    "", "| host stage (no model, one core) | documents | documents/s | "
                    "per CPU second | bytes a document |", "|---|---:|---:|---:|---:|"]
            for r in m["host_rows"]:
                per_cpu, size = r.get("docs_per_cpu_s"), r.get("mean_body_bytes")
                out.append(f"| {r['row']} | {r['documents']:,} | {r['docs_per_s']:,.0f} | "
                           + (f"{per_cpu:,.0f} | " if per_cpu else "| ")
                           + (f"{size:,.0f} |" if size else "|"))
        out.append("")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto (cuda when present)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--student", default=None, help="default: the shipped student")
    ap.add_argument("--second", default="minilm",
                    help="a second model to measure: base name or folder ('' skips)")
    ap.add_argument("--documents", type=int, default=None, help="default: 256 on CPU, 8192 on CUDA")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 32 on CPU, 256 on CUDA")
    ap.add_argument("--chunk-size", default="1024",
                    help="Celery chunk size, or a comma list to sweep (e.g. 256,1024,4096)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--dtype", default="auto", help="auto = bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--compile", action="store_true", help="add torch.compile model-only rows")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="default: the CPUs we may use")
    ap.add_argument("--host-documents", type=int, default=20480, help="0 skips the host rows")
    ap.add_argument("--no-celery", action="store_true")
    ap.add_argument("--no-st", action="store_true")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--onnx-model-only", action="store_true", help="also ONNX model-only rows")
    ap.add_argument("--host-only", action="store_true",
                    help="re-measure only the host rows of the existing result file")
    ap.add_argument("--host-keep", default="",
                    help="with --host-only: models (label prefixes, comma list) whose host rows "
                         "are kept as they are")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device.startswith("cuda")
    args.documents = args.documents or (8192 if cuda else 256)
    args.batch_size = args.batch_size or (256 if cuda else 32)
    args.chunk_sizes = [int(c) for c in str(args.chunk_size).split(",") if c.strip()]
    args.threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(args.threads)
    models = [("shipped default (SPLADE-tiny documents)", args.student)]
    if args.second:
        models.append((f"{args.second} base" if args.second == "minilm" else args.second,
                       args.second))
    stem = "encode_throughput_cuda" if cuda else "encode_throughput"
    if args.host_only:  # re-measure the host rows of an existing result, keep the rest
        result = json.loads((args.out / f"{stem}.json").read_text())
        keep = [k.strip() for k in args.host_keep.split(",") if k.strip()]
        for m, (label, path) in zip(result["models"], models):
            if any(m["model"].startswith(k) for k in keep):
                continue
            m["host_rows"] = host_only(label, path, device, args)
            m["host_rows_measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{stem}.md").write_text(markdown(result))
        print(markdown(result))
        return
    tmp = Path(tempfile.mkdtemp(prefix="convsparse-encode-bench-"))
    try:
        results = []
        for label, path in models:
            results.append(bench_model(label, path, device, args, tmp))
            partial = args.out / f".{stem}.partial.json"  # a crash later keeps this model's rows
            args.out.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "benchmark": "encode_throughput", "device_label": torch.cuda.get_device_name(0) if cuda
        else "CPU", "device": device, "threads": args.threads, "batch_size": args.batch_size,
        "max_length": args.max_length, "repeats": args.repeats, "chunk_sizes": args.chunk_sizes,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
        "python": platform.python_version(), "models": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
