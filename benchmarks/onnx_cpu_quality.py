"""ONNX Runtime CPU opt-ins (issue 15): speed and ranking quality of the transformer optimizer
and int8 dynamic quantization against the PyTorch fp32 student, on mtrag-pooled.

    python benchmarks/onnx_cpu_quality.py                          # the shipped student
    python benchmarks/onnx_cpu_quality.py --model /tmp/ckpt/splade-tiny --name splade-tiny

A subset, so that it runs on a shared CPU: `--conversations` judged conversation turns
(deterministic shuffle, seed 0), and a pool of `--passages` passages holding every passage
judged for those turns plus a seeded random fill from the rest of the corpus. Every variant
encodes the same pool and the same turns (raw conversations, no rewrites) with its own
runtime, into its own embedded index; metrics are the existing evaluation code's (ranx):
MRR@10 and R@100. The absolute values are those of a small pool (higher than on the full
corpus); the comparison between variants is the point. Also reported: document-encoding
documents/s in this run (sequential, one variant after the other: the interleaved speed
figures are in encode_throughput.md) and the term-map agreement with the fp32 reference.

Writes onnx_cpu_quality[_NAME].{json,md} to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mtrag-pooled"
if not DATA.exists():
    DATA = Path("/work/shared/data/mtrag-pooled")


def agreement(ref, other) -> dict[str, float]:
    """Mean top-10 token overlap and mean relative L1 difference of term maps."""
    overlap, l1 = [], []
    for a, b in zip(ref, other):
        ta, tb = {t for t, _ in a.top(10)}, {t for t, _ in b.top(10)}
        overlap.append(len(ta & tb) / max(1, len(ta)))
        keys = set(a) | set(b)
        total = sum(a.values()) or 1.0
        l1.append(sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys) / total)
    return {"top10_overlap": sum(overlap) / len(overlap), "relative_l1": sum(l1) / len(l1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="default: the shipped student")
    ap.add_argument("--name", default="", help="file name suffix")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--conversations", type=int, default=60)
    ap.add_argument("--passages", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from convsparse.benchmark_collections import Collection, load_collection
    from convsparse.encoders.loading import load_student
    from convsparse.evaluation.harness import evaluate_term_maps, temporary_backend
    from convsparse.integration.backends.base import IndexedDocument

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    col = load_collection(args.data)
    tasks = list(col.judged_conversations)
    random.Random(0).shuffle(tasks)
    tasks = sorted(tasks[:args.conversations], key=lambda t: t.id)
    judged = {p for t in tasks for p in col.qrels.get(t.id, {}) if p in col.corpus}
    rest = sorted(set(col.corpus) - judged)
    random.Random(1).shuffle(rest)
    pool = sorted(judged) + rest[:max(0, args.passages - len(judged))]
    sub = Collection({p: col.corpus[p] for p in pool}, tasks,
                     {t.id: col.qrels[t.id] for t in tasks if t.id in col.qrels}, col.name)
    texts = [col.corpus[p].encoded_text for p in pool]

    ref = load_student(args.model, runtime="torch", device="cpu")
    variants = [("PyTorch fp32 (reference)", ref)]
    prep = {}
    for name, kw in (("ONNX Runtime", {}), ("ONNX Runtime + optimizer", {"onnx_optimize": True}),
                     ("ONNX Runtime + optimizer + int8", {"onnx_int8": True})):
        t = time.perf_counter()  # the configured loader: an anchored student's base is exported
        variants.append((name, load_student(args.model, runtime="onnx", device="cpu", **kw)))
        prep[name] = time.perf_counter() - t

    rows, ref_maps = [], None
    for name, enc in variants:
        backend, tmp = temporary_backend()
        try:
            enc.encode_documents(texts[:8], batch_size=8)  # warm-up
            t = time.perf_counter()
            batch = enc.encode_documents(texts, ids=pool, batch_size=args.batch_size)
            docs_s = len(texts) / (time.perf_counter() - t)
            backend.create_index("q", fingerprint=enc.fingerprint)
            results = list(backend.upsert("q", [IndexedDocument(p, tm, {}) for p, tm in
                                                zip(pool, batch)]))
            assert all(r.ok for r in results)
            res = evaluate_term_maps(sub, "raw", encoder=enc, backend=backend, index="q", k=100,
                                     metrics=("mrr@10", "recall@100"), tasks=tasks, name=name,
                                     batch_size=args.batch_size)
        finally:
            tmp.cleanup()
        maps = list(batch)
        if ref_maps is None:
            ref_maps = maps
        row = {"variant": name, "mrr@10": res.metrics["mrr@10"],
               "recall@100": res.metrics["recall@100"], "encode_docs_per_s": docs_s,
               "avg_doc_terms": sum(len(m) for m in maps) / len(maps),
               "model_file": getattr(getattr(getattr(enc, "base", enc), "onnx_path", None), "name",
                                     None),
               "prepare_s": prep.get(name), **agreement(ref_maps, maps)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    base = rows[0]
    result = {"benchmark": "onnx_cpu_quality", "model": str(ref.source),
              "fingerprint": ref.fingerprint, "conversations": len(tasks),
              "judged_turns_with_qrels": len(sub.qrels), "passages": len(pool),
              "judged_passages": len(judged), "threads": threads,
              "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
              "rows": rows}
    model_name = Path(str(ref.source)).name
    md = [f"# ONNX Runtime CPU opt-ins: speed and ranking quality ({model_name})", "",
          f"mtrag-pooled subset: {len(tasks)} judged conversation turns (raw conversations), a "
          f"pool of {len(pool)} passages ({len(judged)} judged for those turns + a random fill); "
          f"{threads} threads on a shared {os.cpu_count()}-core CPU. Metrics from the project's "
          "evaluation code (ranx). Small pool: absolute values are above full-corpus ones; the "
          "deltas are the point. docs/s here are sequential (see encode_throughput.md for the "
          "interleaved figures).", "",
          "| variant | MRR@10 | ΔMRR@10 | R@100 | ΔR@100 | docs/s (encode) | speed-up | "
          "top-10 overlap vs fp32 | rel. L1 vs fp32 | terms/doc |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['variant']} | {r['mrr@10']:.4f} | {r['mrr@10'] - base['mrr@10']:+.4f} | "
                  f"{r['recall@100']:.4f} | {r['recall@100'] - base['recall@100']:+.4f} | "
                  f"{r['encode_docs_per_s']:.1f} | "
                  f"{r['encode_docs_per_s'] / base['encode_docs_per_s']:.2f}x | "
                  f"{r['top10_overlap']:.3f} | {r['relative_l1']:.4f} | {r['avg_doc_terms']:.0f} |")
    stem = "onnx_cpu_quality" + (f"_{args.name}" if args.name else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
