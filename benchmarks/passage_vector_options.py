"""Cheaper ways to embed passage vectors at ingest, side by side (speed; int8 also its drift).

    python benchmarks/passage_vector_options.py [--passages 64] [--max-words 300]

On the generated passages of `ingest_throughput.py` (same lengths as its `--vectors` run), one
thread, median of 3 rounds, ms per passage:
- the shipped cut: whole passage + 128-piece windows every 96 (PyTorch, sentence-transformers);
- the whole passage only (the lower bound: no windows);
- windows only for passages longer than the bi-encoder reads (256 pieces);
- the same work (whole + windows) in ONNX Runtime, fp32 and int8 (dynamic quantization of the
  export), texts sorted by length as sentence-transformers sorts them; for int8, the cosine
  of its vectors with fp32's (1.0 = the same vectors).
Only speed and drift: what the two windowing choices and int8 do to ranking quality needs a
re-ranker trained on such vectors and the held-out split (`benchmarks/rerank_eval.py`).
Results: benchmarks/results/passage_vector_options.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--passages", type=int, default=64)
    p.add_argument("--max-words", type=int, default=300)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ingest_throughput import corpus

    from convsparse.integration.vectors import load_embedder
    from convsparse.reranking.semantic import export_bi_encoder

    torch.set_num_threads(1)
    texts = [f"{r['title']}\n{r['text']}" for r in corpus(args.passages, max_words=args.max_words)]
    sem = load_embedder().semantic
    tok = sem.model.tokenizer

    def ms(fn) -> float:
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        return statistics.median(runs) / len(texts) * 1000

    def n_pieces(t: str) -> int:
        return len(tok(t, verbose=False)["input_ids"])

    long = [t for t in texts if n_pieces(t) > 256]
    windows = [w for t in texts for w in sem.window_texts(t) if len(sem.window_texts(t)) > 1]
    rows = {
        "PyTorch, whole + 128-piece windows (shipped)": ms(lambda: sem.embed_passages(texts)),
        "PyTorch, whole passage only": ms(lambda: sem._encode(texts)),
        f"PyTorch, windows only past 256 pieces ({len(long)}/{len(texts)} passages)": ms(
            lambda: sem._encode(texts + [w for t in long for w in sem.window_texts(t)])),
    }
    every = sorted([*texts, *windows], key=len, reverse=True)
    tmp = Path(tempfile.mkdtemp())
    export_bi_encoder(sem.model, tmp / "fp32.onnx")
    quantize_dynamic(str(tmp / "fp32.onnx"), str(tmp / "int8.onnx"), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1

    def session(name: str):
        return ort.InferenceSession(str(tmp / name), options, providers=["CPUExecutionProvider"])

    def embed(sess) -> np.ndarray:
        out = []
        for s in range(0, len(every), 32):
            enc = tok(every[s:s + 32], padding=True, truncation=True, max_length=256,
                      return_tensors="np")
            mask = enc["attention_mask"].astype(np.int64)
            tv = sess.run(["token_embeddings"], {"input_ids": enc["input_ids"].astype(np.int64),
                                                 "attention_mask": mask})[0]
            pooled = (tv * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        return np.concatenate(out)

    fp32, int8 = session("fp32.onnx"), session("int8.onnx")
    rows["ONNX Runtime fp32, whole + windows"] = ms(lambda: embed(fp32))
    rows["ONNX Runtime int8 (dynamic), whole + windows"] = ms(lambda: embed(int8))
    cos = (embed(fp32) * embed(int8)).sum(1)
    result = {"benchmark": "passage_vector_options", "passages": len(texts),
              "median_pieces": statistics.median(map(n_pieces, texts)), "ms_per_passage": rows,
              "int8_cosine_with_fp32": {"min": float(cos.min()), "median": float(np.median(cos))}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "passage_vector_options.json").write_text(json.dumps(result, indent=2) + "\n")
    base = rows["PyTorch, whole + 128-piece windows (shipped)"]
    md = [f"# Passage vectors: cheaper options ({len(texts)} passages of median "
          f"{result['median_pieces']:.0f} word pieces, one thread, CPU)", "",
          "| option | ms/passage | vs shipped |", "|---|---:|---:|",
          *(f"| {k} | {v:.1f} | {v / base:.2f} |" for k, v in rows.items()), "",
          f"int8 vectors against fp32: cosine min {cos.min():.3f}, median {np.median(cos):.3f} "
          "(quality on the held-out split not measured).", ""]
    (args.out / "passage_vector_options.md").write_text("\n".join(md))
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
