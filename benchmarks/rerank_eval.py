"""The re-ranker on the benchmark of record's held-out conversations, in one command.

    python benchmarks/rerank_eval.py --reranker runs/rr-tcl --reranker runs/rr-plain

Held-out = the student's split (`RerankConfig` defaults: 4 conversations per domain, seed 13),
never used for training or any choice. Rows: the first stage alone (the shipped student on the
raw conversation, exact search over the corpus encoded by its base), and each re-ranker over the
first stage's top `--depth` (default 20): MRR@10, nDCG@3, R@10, with paired t-tests against the
first stage (ranx `compare`) and 95% bootstrap intervals of MRR@10. Then the rerank stage's
CPU latency on one core (the process pinned to it; ONNX Runtime, as the README serves it;
p50/p95 over the held-out turns) at depths 10/20/50, with the quality at each depth: the
depth-vs-quality-vs-latency row, plotted; and PyTorch against ONNX Runtime at `--depth`,
interleaved turn by turn.

Writes benchmarks/results/rerank_eval.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mtrag-pooled"
METRICS = ["mrr@10", "ndcg@3", "recall@10"]


def bootstrap(values: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n)]
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--reranker", type=Path, action="append", default=[],
                    help="re-ranker folder (repeat to compare)")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--depths", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--vectors", type=Path, action="append", default=[],
                    help="passage-vectors files to start from (e.g. a training run's "
                         "passage_vectors-*.safetensors): only passages missing from them are "
                         "embedded")
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG from the JSON")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "rerank_eval")
    args = ap.parse_args(argv)
    if args.replot:  # redraw the figure from the JSON of an earlier run
        res = json.loads(args.out.with_suffix(".json").read_text())
        plot(res["tuning"], args.out.with_suffix(".png"), baseline=res["rows"][0]["mrr@10"])
        return 0
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2

    import torch
    from heldout import first_stage
    from one_core import pin_to_one_core
    from ranx import Qrels, Run, compare

    from convsparse.evaluation.metrics import compute_metrics, latency_summary, per_query_metric
    from convsparse.reranking import load_reranker
    from convsparse.reranking.reranker import DEFAULT_FOLDER

    depth_max = max([args.depth, *args.depths])
    held = first_stage(args.data, args.out.parent, depth_max)
    col, heldout, texts, first = held.collection, held.heldout, held.texts, held.labels
    turns, ids = held.turns, held.ids
    runs = {"first stage (shipped student)": {
        lab.task_id: dict(zip(lab.candidates, lab.first_stage)) for lab in first}}

    shared_vectors = Path(tempfile.mkdtemp()) / "vectors.safetensors"

    def precompute(rr) -> None:
        """Passage vectors exist before a query, as after `convsparse rerank vectors`; the
        re-rankers compared share the bi-encoder, so each passage is embedded once."""
        if rr.semantic is None:
            return
        for seed in [*args.vectors, shared_vectors]:
            if seed.exists():
                try:
                    rr.semantic.merge_vectors(seed)
                except ValueError:  # another bi-encoder
                    pass
        rr.semantic.add(sorted({texts[d] for lab in first for d in lab.candidates[:depth_max]}),
                        progress=True)
        rr.semantic.save_vectors(shared_vectors)

    def timed_score(rr, lab, depth: int) -> tuple[np.ndarray, float]:
        texts_d = [texts[d] for d in lab.candidates[:depth]]
        t = time.perf_counter()
        s = rr.score(turns[lab.task_id], lab.query, texts_d, lab.first_stage[:depth])
        return s, (time.perf_counter() - t) * 1000

    def cold(rr, depth: int, turns_n: int = 10) -> dict:
        """The rerank stage when none of the candidates has a stored vector yet."""
        from convsparse.reranking.semantic import PassageVectors

        warm = rr.semantic
        rr.semantic = PassageVectors(warm.model, views=warm.views, view_length=warm.view_length,
                                      window=warm.window, stride=warm.stride)
        rr.semantic.session = warm.session
        try:
            return latency_summary([timed_score(rr, lab, depth)[1] for lab in first[:turns_n]])
        finally:
            rr.semantic = warm

    def reranked(rr, depth: int) -> tuple[dict, list[float]]:
        """Turns in order, as a chat app calls: a conversation's next turn finds some of its
        passages' word pieces cached, but no earlier run's (another depth) are kept."""
        run, times = {}, []
        timed_score(rr, first[0], depth)  # warm-up: the first call pays for lazy initialisation
        rr.pieces.cache_clear()
        for lab in first:
            s, ms = timed_score(rr, lab, depth)
            times.append(ms)
            top = float(s.max()) + 1.0
            head = {d: float(v) - top + 1e6 for d, v in zip(lab.candidates[:depth], s)}
            rest = dict(zip(lab.candidates[depth:], lab.first_stage[depth:]))
            run[lab.task_id] = {**rest, **head}
        return run, times

    def runtimes_side_by_side(label: str, path: Path, depth: int) -> dict:
        """PyTorch and ONNX Runtime, turn by turn interleaved (this machine is noisy)."""
        both = {rt: load_reranker(path, runtime=rt) for rt in ("torch", "onnx")}
        times: dict[str, list[float]] = {rt: [] for rt in both}
        for rr in both.values():
            precompute(rr)
            timed_score(rr, first[0], depth)
            rr.pieces.cache_clear()
        for lab in first:
            for rt, rr in both.items():
                times[rt].append(timed_score(rr, lab, depth)[1])
        ratio = float(np.median(np.array(times["torch"]) / np.array(times["onnx"])))
        return {"reranker": label, "depth": depth, "torch_ms": latency_summary(times["torch"]),
                "onnx_ms": latency_summary(times["onnx"]), "median_ratio_torch_over_onnx": ratio}

    for path in args.reranker:  # on every core this process has: embedding passages is bulk work
        precompute(load_reranker(path, runtime="onnx"))  # the export embeds faster than PyTorch
    # the budget is one CPU core: PyTorch and ONNX Runtime (whose thread pools are sized by
    # the CPUs a process may use, when a session is made) see exactly one from here on
    pin_to_one_core()
    torch.set_num_threads(1)
    tuning, cold_runs, runtimes = [], [], []
    for path in args.reranker:
        rr = load_reranker(path, runtime="onnx")  # the serving path the README recommends
        precompute(rr)
        label = ("shipped" if path.resolve() == DEFAULT_FOLDER.resolve() else
                 path.parent.name if path.name == "reranker" else path.name)  # <run>/reranker
        name = f"+ re-ranker {'with' if rr.term_control else 'without'} TCL ({label})"
        if rr.semantic is not None:
            cold_runs.append({"reranker": label, "depth": args.depth,
                              "latency_ms": cold(rr, args.depth)})
        for depth in sorted(set([args.depth, *args.depths])):
            run, times = reranked(rr, depth)
            if depth == args.depth:
                runs[name] = run
            tuning.append({"reranker": label, "term_control": rr.term_control, "depth": depth,
                           **compute_metrics(col.qrels, run, METRICS, query_ids=ids),
                           "latency_ms": latency_summary(times)})
            print(f"{name} depth {depth}: MRR@10 {tuning[-1]['mrr@10']:.3f} "
                  f"p50 {tuning[-1]['latency_ms']['p50']:.1f} ms", flush=True)
        runtimes.append(runtimes_side_by_side(label, path, args.depth))

    # the data's README: govt's pool is tiny and easy, so report with and without it
    domains = {t.id: t.fields.get("domain") or "none" for t in heldout}
    groups = {f"domain {d}": [q for q in ids if domains[q] == d] for d in sorted(set(domains.values()))}
    groups["without govt"] = [q for q in ids if domains[q] != "govt"]
    rows = []
    for name, run in runs.items():
        per = per_query_metric(col.qrels, run, "mrr@10")
        rows.append({"system": name, **compute_metrics(col.qrels, run, METRICS, query_ids=ids),
                     "mrr@10_ci95": bootstrap(np.array([per.get(q, 0.0) for q in ids])),
                     "by_group": {g: {"turns": len(qs), **compute_metrics(
                         col.qrels, run, ["mrr@10", "ndcg@3"], query_ids=qs)}
                         for g, qs in groups.items()}})
    qrels = Qrels({q: dict(col.qrels[q]) for q in ids})
    report = compare(qrels, [Run({q: dict(r[q]) for q in ids}, name=n) for n, r in runs.items()],
                     metrics=METRICS, stat_test="student", max_p=0.05)
    first_name = next(iter(runs))
    pvalues = report.to_dict()
    for row in rows[1:]:
        row["p_vs_first_stage"] = {m: float(pvalues[row["system"]]["comparisons"][first_name][m])
                                   for m in METRICS}
    result = {"heldout_turns": len(ids), "depth": args.depth, "rows": rows, "tuning": tuning,
              "ranx_report": str(report), "threads": 1, "cold": cold_runs,
              "runtimes": runtimes}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    if tuning:
        plot(tuning, args.out.with_suffix(".png"), baseline=rows[0]["mrr@10"])
    print(markdown(result))
    return 0


def markdown(res: dict) -> str:
    lines = [f"# Re-ranker on {res['heldout_turns']} held-out MTRAG turns (depth {res['depth']})", "",
             "| system | MRR@10 [95% CI] | nDCG@3 | R@10 |", "|---|---:|---:|---:|"]
    for r in res["rows"]:
        lo, hi = r["mrr@10_ci95"]
        lines.append(f"| {r['system']} | {r['mrr@10']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{r['ndcg@3']:.3f} | {r['recall@10']:.3f} |")
    groups = list(res["rows"][0].get("by_group", {}))
    if groups:
        turns = {g: res["rows"][0]["by_group"][g]["turns"] for g in groups}
        lines += ["", "MRR@10 / nDCG@3 by domain, and without govt (its pool is tiny and easy):",
                  "", "| system | " + " | ".join(f"{g} ({turns[g]})" for g in groups) + " |",
                  "|---|" + "---:|" * len(groups)]
        for r in res["rows"]:
            cells = [f"{r['by_group'][g]['mrr@10']:.3f} / {r['by_group'][g]['ndcg@3']:.3f}"
                     for g in groups]
            lines.append(f"| {r['system']} | " + " | ".join(cells) + " |")
    lines += ["", "Paired t-tests against the first stage (ranx `compare`):", ""]
    for r in res["rows"][1:]:
        p = r["p_vs_first_stage"]
        lines.append(f"- {r['system']}: " + ", ".join(f"{m} p = {p[m]:.3g}" for m in METRICS))
    lines += ["", "```", res["ranx_report"], "```", "",
              "| re-ranker | TCL | depth | MRR@10 | nDCG@3 | R@10 | p50 ms | p95 ms |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for t in res["tuning"]:
        lines.append(f"| {t['reranker']} | {'yes' if t['term_control'] else 'no'} | {t['depth']} | "
                     f"{t['mrr@10']:.3f} | {t['ndcg@3']:.3f} | {t['recall@10']:.3f} | "
                     f"{t['latency_ms']['p50']:.1f} | {t['latency_ms']['p95']:.1f} |")
    lines += ["", "Latency: the rerank stage alone (`Reranker.score`: tokenizing, features, "
              "the conversation's bi-encoder views, forward) with ONNX Runtime "
              "(`load_reranker(..., runtime=\"onnx\")`), the process pinned to one CPU core, "
              "per turn, with the candidates' passage vectors stored beforehand (as after "
              "`convsparse rerank vectors`)."]
    for r in res.get("runtimes", []):
        lines.append(f"- {r['reranker']}, depth {r['depth']}, PyTorch vs ONNX Runtime "
                     f"interleaved turn by turn: p50 {r['torch_ms']['p50']:.1f} vs "
                     f"{r['onnx_ms']['p50']:.1f} ms, p95 {r['torch_ms']['p95']:.1f} vs "
                     f"{r['onnx_ms']['p95']:.1f} ms, median per-turn ratio "
                     f"{r['median_ratio_torch_over_onnx']:.2f}x.")
    for c in res.get("cold", []):
        lines.append(f"- {c['reranker']}, depth {c['depth']}, no passage vector stored yet "
                     f"(first 10 turns): p50 {c['latency_ms']['p50']:.0f} ms, "
                     f"p95 {c['latency_ms']['p95']:.0f} ms.")
    return "\n".join(lines) + "\n"


def plot(tuning: list[dict], path: Path, *, baseline: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name in dict.fromkeys(t["reranker"] for t in tuning):
        pts = [t for t in tuning if t["reranker"] == name]
        xs, ys = [p["latency_ms"]["p50"] for p in pts], [p["mrr@10"] for p in pts]
        ax.plot(xs, ys, marker="o", label=name)
        for p, x, y in zip(pts, xs, ys):
            ax.annotate(f"depth {p['depth']}", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    ax.axvline(50, color="red", linestyle="--", linewidth=1, label="50 ms budget")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle=":", linewidth=1, label="first stage alone")
    ax.set_xlabel("rerank stage latency p50 (ms, one CPU core)")
    ax.set_ylabel("MRR@10 (held-out)")
    ax.set_title("Re-ranking depth: quality vs latency", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
