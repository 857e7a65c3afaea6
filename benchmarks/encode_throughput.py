"""Encoding throughput: PyTorch vs ONNX Runtime, documents/s (batch 32) and single-conversation
latency, in one run, with interleaved repeats (the runtimes alternate, so machine noise hits
both alike) and medians.

    python benchmarks/encode_throughput.py --out benchmarks/results

Model: the default student (`load_student()`: the shipped student, else the MiniLM base
student: 6 layers, hidden 384, 30,522-term vocabulary). Documents: the sample corpus cycled
and cut to varied lengths (~256 documents). Both runtimes get the same thread count. GPU rows
are added when CUDA is available (PyTorch CUDA; ONNX Runtime CUDA provider when
onnxruntime-gpu is installed). Writes encode_throughput.json and encode_throughput.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

CONVERSATION = [
    {"role": "user", "text": "I want to travel to Japan next spring with my family."},
    {"role": "assistant", "text": "Spring is cherry blossom season; book hotels early, especially in Kyoto."},
    {"role": "user", "text": "Do we need visas, and how long does a passport renewal take?"},
]


def sample_documents(n: int) -> list[str]:
    path = Path(__file__).resolve().parents[1] / "convsparse" / "sample_data" / "corpus.jsonl"
    base: list[str] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                base.append(" ".join(str(rec.get(k, "")) for k in ("title", "text")).strip())
    if not base:
        words = ["solar", "panel", "energy", "grid", "battery", "passport", "visa", "travel", "museum",
                 "river", "bridge", "city", "train", "ticket", "hotel", "recipe", "bread", "oven",
                 "flour", "garden", "tomato"]
        rng = np.random.default_rng(0)
        base = [" ".join(rng.choice(words, size=60)) for _ in range(32)]
    rng = np.random.default_rng(1)
    docs = []
    for i in range(n):
        text = " ".join(base[(i + j) % len(base)] for j in range(3))
        words = text.split()
        docs.append(" ".join(words[: int(rng.integers(20, 200))]))
    return docs


def time_documents(enc, rows, batch_size: int) -> float:
    t = time.perf_counter()
    enc.activations_for_ids(rows, batch_size=batch_size)
    return len(rows) / (time.perf_counter() - t)


def time_conversation(enc, n: int) -> float:
    enc.encode_conversation(CONVERSATION)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        enc.encode_conversation(CONVERSATION)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def run_pair(name: str, encoders: dict, rows, args) -> list[dict]:
    """Interleave the runtimes for `args.repeats` rounds; medians per runtime."""
    tput = {k: [] for k in encoders}
    lat = {k: [] for k in encoders}
    for enc in encoders.values():  # warm-up (first-run allocations, ORT arena)
        enc.activations_for_ids(rows[:args.batch_size], batch_size=args.batch_size)
    for r in range(args.repeats):
        order = list(encoders) if r % 2 == 0 else list(reversed(encoders))
        for k in order:
            tput[k].append(time_documents(encoders[k], rows, args.batch_size))
            lat[k].append(time_conversation(encoders[k], args.latency_runs))
            print(f"[{name}] round {r + 1} {k}: {tput[k][-1]:.1f} docs/s, {lat[k][-1]:.1f} ms/conversation",
                  flush=True)
    out = []
    for k in encoders:
        out.append({"device": name, "runtime": k, "docs_per_s": statistics.median(tput[k]),
                    "docs_per_s_runs": tput[k], "conversation_ms": statistics.median(lat[k]),
                    "conversation_ms_runs": lat[k]})
    return out


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        (f"Model: `{result['model']}` ({result['parameters_m']:.1f} M parameters, vocabulary "
         f"{result['vocab']}); {result['documents']} documents ({result['mean_tokens']:.0f} tokens "
         f"on average), batch {result['batch_size']}, {result['threads']} threads, "
         f"{result['repeats']} interleaved repeats (medians). CPU: {result['cpu']}."),
        "",
        "| device | runtime | documents/s (batch 32) | conversation latency (ms) | throughput vs PyTorch |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        ref = next(r for r in rows if r["device"] == row["device"] and r["runtime"].startswith("pytorch"))
        lines.append(f"| {row['device']} | {row['runtime']} | {row['docs_per_s']:.1f} | "
                     f"{row['conversation_ms']:.1f} | {row['docs_per_s'] / ref['docs_per_s']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--model", default=None, help="student folder/hub id (default: load_student())")
    ap.add_argument("--documents", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency-runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="default: the CPUs this process may use")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from convsparse.encoders.loading import load_student
    from convsparse.encoders.onnx_runtime import OnnxStudent

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch_cpu = load_student(args.model, runtime="torch", device="cpu")
    onnx_cpu = OnnxStudent.from_torch(torch_cpu, device="cpu", intra_op_threads=threads)
    docs = sample_documents(args.documents)
    rows = torch_cpu.tokenize_documents(docs)
    diff = float(np.abs(torch_cpu.activations_for_ids(rows[:8]) - onnx_cpu.activations_for_ids(rows[:8])).max())

    results = run_pair("cpu", {"pytorch": torch_cpu, "onnxruntime": onnx_cpu}, rows, args)
    if torch.cuda.is_available():
        gpu = {"pytorch": load_student(args.model, runtime="torch", device="cuda"),
               "pytorch-fp16": load_student(args.model, runtime="torch", device="cuda", fp16=True)}
        ort_gpu = OnnxStudent.from_torch(torch_cpu, device="cuda")
        if ort_gpu.device == "cuda":
            gpu["onnxruntime"] = ort_gpu
            gpu["onnxruntime-fp16"] = OnnxStudent.from_torch(torch_cpu, device="cuda", fp16=True)
        results += run_pair(torch.cuda.get_device_name(0), gpu, rows, args)

    mlm = torch_cpu.model.mlm
    result = {
        "model": getattr(torch_cpu, "source", args.model),
        "fingerprint": torch_cpu.fingerprint,
        "parameters_m": sum(p.numel() for p in mlm.parameters()) / 1e6,
        "vocab": len(torch_cpu.vocabulary),
        "documents": len(rows),
        "mean_tokens": float(np.mean([len(r) for r in rows])),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "max_abs_diff_torch_vs_onnx": diff,
        "rows": results,
        "onnx_vs_torch_cpu_throughput": results[1]["docs_per_s"] / results[0]["docs_per_s"],
        "onnx_vs_torch_cpu_latency": results[0]["conversation_ms"] / results[1]["conversation_ms"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encode_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "encode_throughput.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
