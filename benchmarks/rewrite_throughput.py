"""Rewrite throughput of the two generator paths (issue 10), in one run:

- endpoint: `EndpointGenerator` against the scripted local OpenAI-compatible server
  (`convsparse.training.generators.fake_endpoint`), which answers after a fixed service time
  (default 50 ms, standing in for an LLM's latency), at several concurrency limits: requests/s
  and the most requests the server saw in flight (it must equal the limit). A 0 ms row measures
  the client's own overhead. Then the whole `rewrite_conversations` pipeline (prompt rendering,
  cache writes, output file) cold and re-run warm from the cache.
- local: `LocalGenerator` on a tiny randomly initialised GPT-2 (2 layers, 32 dims, word-level
  vocabulary built here; no download) at batch 1 and 8, greedy, 16 new tokens: prompts/s; and
  `score` (mean log-likelihood of a passage) calls/s.

    python benchmarks/rewrite_throughput.py --out benchmarks/results

Writes rewrite_throughput.json and rewrite_throughput.md. No LLM quality is measured (none runs
here): these are the pipeline's own costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from convsparse.training.generators.endpoint import EndpointGenerator
from convsparse.training.generators.fake_endpoint import FakeChatServer, Script
from convsparse.training.generators.local import LocalGenerator
from convsparse.training.generators.rewrite import rewrite_conversations

WORDS = ("user assistant system : what about it ? the cat sat on mat where do guinea pigs sleep "
         "eat rewrite question conversation so far current none standalone a an of to is").split()


def endpoint_rows(n: int, service_ms: float, limits: list[int]) -> list[dict]:
    rows = []
    for delay, levels in ((service_ms, limits), (0.0, [max(limits)])):
        with FakeChatServer(lambda c, d=delay: Script(answer="a standalone question", delay_s=d / 1000)) as srv:
            for c in levels:
                srv.max_in_flight = 0
                prompts = [[{"role": "user", "content": f"question {i} at {c}/{delay}"}] for i in range(n)]
                with EndpointGenerator(srv.base_url, "bench", concurrency=c, timeout_s=30) as gen:
                    gen.generate(prompts[:c])  # connections up
                    t = time.perf_counter()
                    out = gen.generate(prompts)
                    dt = time.perf_counter() - t
                assert all(isinstance(o, str) for o in out)
                rows.append({"path": "endpoint", "service_ms": delay, "concurrency": c, "requests": n,
                             "requests_per_s": round(n / dt, 1), "max_in_flight": srv.max_in_flight,
                             "ideal_requests_per_s": round(c * 1000 / delay, 1) if delay else None})
    return rows


def pipeline_rows(n: int, service_ms: float, concurrency: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            FakeChatServer(lambda c: Script(answer="a standalone question", delay_s=service_ms / 1000)) as srv:
        src = Path(tmp) / "convs.jsonl"
        src.write_text("".join(json.dumps({"id": f"t{i}", "turns": [
            {"role": "user", "text": f"tell me about topic {i}"}, {"role": "assistant", "text": "sure"},
            {"role": "user", "text": "and how does it work?"}]}) + "\n" for i in range(n)))
        with EndpointGenerator(srv.base_url, "bench", concurrency=concurrency) as gen:
            for label in ("cold", "warm (cache)"):
                t = time.perf_counter()
                rep = rewrite_conversations(src, Path(tmp) / "out.jsonl", gen, progress=False)
                dt = time.perf_counter() - t
                rows.append({"path": f"rewrite pipeline, {label}", "service_ms": service_ms,
                             "concurrency": concurrency, "turns": n, "turns_per_s": round(n / dt, 1),
                             "generated": rep.generated, "cached": rep.cached})
    return rows


def tiny_generator(batch_size: int) -> LocalGenerator:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", *dict.fromkeys(WORDS)])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=32, n_layer=2, n_head=2,
                                       eos_token_id=2, bos_token_id=2, pad_token_id=0))
    return LocalGenerator(model, tok, name="tiny-gpt2", device="cpu", batch_size=batch_size, max_new_tokens=16)


def local_rows(n: int) -> list[dict]:
    from convsparse.conversation import Turn
    from convsparse.training.generators.prompts import DEFAULT_REWRITE_PROMPT, render

    turns = [Turn(role="user", text="where do guinea pigs sleep ?"), Turn(role="assistant", text="in the wild"),
             Turn(role="user", text="what about it ?")]
    prompts = [render(DEFAULT_REWRITE_PROMPT, turns)] * n
    rows = []
    for bs in (1, 8):
        gen = tiny_generator(bs)
        gen.generate(prompts[:bs])
        t = time.perf_counter()
        gen.generate(prompts)
        dt = time.perf_counter() - t
        rows.append({"path": "local tiny GPT-2 generate", "batch_size": bs, "prompts": n,
                     "prompts_per_s": round(n / dt, 1)})
    gen = tiny_generator(8)
    t = time.perf_counter()
    gen.score(prompts[:n // 2], ["the cat sat on the mat"] * (n // 2))
    rows.append({"path": "local tiny GPT-2 score", "batch_size": 1, "prompts": n // 2,
                 "prompts_per_s": round((n // 2) / (time.perf_counter() - t), 1)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--service-ms", type=float, default=50.0)
    ap.add_argument("--limits", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    ap.add_argument("--local-prompts", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads, "python": platform.python_version()},
        "endpoint": endpoint_rows(args.requests, args.service_ms, args.limits),
        "pipeline": pipeline_rows(args.requests, args.service_ms, 8),
        "local": local_rows(args.local_prompts),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rewrite_throughput.json").write_text(json.dumps(result, indent=2))
    md = ["# Rewrite throughput", "",
          f"{result['machine']}. Endpoint = the scripted local server answering after a fixed service "
          "time; local = a tiny random GPT-2 (pipeline cost, not LLM speed).", "",
          "| path | service ms | concurrency | requests/s | ideal | max in flight |", "|---|---|---|---|---|---|"]
    md += [f"| endpoint | {r['service_ms']:.0f} | {r['concurrency']} | {r['requests_per_s']} | "
           f"{r['ideal_requests_per_s'] or '-'} | {r['max_in_flight']} |" for r in result["endpoint"]]
    md += ["", "| pipeline | concurrency | turns/s | generated | cached |", "|---|---|---|---|---|"]
    md += [f"| {r['path']} | {r['concurrency']} | {r['turns_per_s']} | {r['generated']} | {r['cached']} |"
           for r in result["pipeline"]]
    md += ["", "| local | batch | prompts/s |", "|---|---|---|"]
    md += [f"| {r['path']} | {r['batch_size']} | {r['prompts_per_s']} |" for r in result["local"]]
    (args.out / "rewrite_throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
