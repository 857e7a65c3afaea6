"""Cheaper passage vectors, their quality: the shipped re-ranker on the held-out split when the
candidates' vectors are made the cheaper ways `passage_vector_options.py` timed, in one command.

    python benchmarks/passage_vector_options_quality.py --vectors runs/rrstats_vectors.safetensors

Ingest with vectors costs about 4x term maps alone on a CPU (issue 31 asks for at most 3x), and
`passage_vector_options.md` timed two cheaper ways to make them (ms per passage, one thread):
windows only where a passage is longer than the bi-encoder reads (256 word pieces; the shipped
recipe also windows passages of 129-256 pieces) and int8 dynamic quantization of the
bi-encoder. Neither needs another re-ranker to try: the shipped one reads whatever vectors the
index holds (a passage with one window reads its whole vector there, as short passages always
have). So each option re-embeds the held-out turns' candidates (the first stage's top
`--depth`), the conversation side stays the shipped float32 export, and the shipped re-ranker
scores them. Reported: MRR@10 and nDCG@3 per option, the paired difference from the shipped
vectors with a 95% bootstrap interval and a paired t-test, and the median cosine of each
option's passage vectors with the shipped ones.

Writes benchmarks/results/passage_vector_options_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mtrag-pooled"
METRICS = ["mrr@10", "ndcg@3"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--vectors", type=Path, default=None,
                    help="the shipped vectors of the candidates, to start from and save to")
    ap.add_argument("--out", type=Path,
                    default=REPO / "benchmarks" / "results" / "passage_vector_options_quality")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2

    from heldout import first_stage
    from scipy.stats import ttest_rel

    from convsparse.encoders.onnx_runtime import quantize_int8
    from convsparse.encoders.onnx_session import inference_session, providers_for
    from convsparse.evaluation.metrics import compute_metrics, per_query_metric
    from convsparse.reranking import load_reranker
    from convsparse.reranking.reranker import use_builtin_export
    from convsparse.reranking.semantic import PassageVectors, builtin_dir
    from convsparse.reranking.shipped_bi_encoder import SHIPPED_DIR, float32_weights

    held = first_stage(args.data, args.out.parent, args.depth)
    texts = held.texts
    candidates = sorted({texts[d] for lab in held.labels for d in lab.candidates})
    tmp = Path(tempfile.mkdtemp())
    int8 = quantize_int8(float32_weights(SHIPPED_DIR / "model.onnx", tmp / "fp32.onnx"),
                         tmp / "int8.onnx")

    def vectors(option: str) -> Path:
        """The candidates' vectors made the `option` way, in a vectors file."""
        path = tmp / f"{option}.safetensors"
        if option == "shipped" and args.vectors is not None:
            path = args.vectors
            if path.is_file():
                return path
        rr = load_reranker("default", runtime="onnx")
        pv = rr.semantic
        maker = PassageVectors(builtin="minilm", source=builtin_dir("minilm"), window=pv.window,
                               stride=pv.stride, views=pv.views, view_length=pv.view_length)
        use_builtin_export(maker)
        if "int8" in option:
            maker.session = inference_session(int8, providers_for("cpu"))
        if "past 256" in option:
            cut = maker.window_texts

            def window_texts(text: str) -> list[str]:
                pieces = maker.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
                return [text] if len(pieces) <= maker.max_seq_length else cut(text)

            maker.window_texts = window_texts  # type: ignore[method-assign]
        maker.add(candidates, progress=True)
        maker.save_vectors(path)
        return path

    options = ["shipped", "windows past 256 only", "int8", "int8, windows past 256 only"]
    files = {o: vectors(o) for o in options}
    runs, cosines = {}, {}
    reference = None
    for option in options:
        rr = load_reranker("default", runtime="onnx")
        rr.semantic.merge_vectors(files[option])
        run = {}
        for lab in held.labels:
            s = rr.score(held.turns[lab.task_id], lab.query, [texts[d] for d in lab.candidates],
                         lab.first_stage)
            run[lab.task_id] = {d: float(v) for d, v in zip(lab.candidates, s)}
        runs[option] = run
        got = np.asarray(rr.semantic.store.get(_keys(candidates))[0], np.float32)
        if reference is None:
            reference = got
        cosines[option] = float(np.median((got * reference).sum(1)))
    ids = held.ids
    qrels = held.collection.qrels
    rows = []
    rng = np.random.default_rng(0)
    base = runs["shipped"]
    for option, run in runs.items():
        row = {"option": option, **compute_metrics(qrels, run, METRICS, query_ids=ids),
               "median_cosine_with_shipped": cosines[option]}
        for m in METRICS:
            pa, pb = per_query_metric(qrels, base, m), per_query_metric(qrels, run, m)
            d = np.array([pb.get(q, 0.0) - pa.get(q, 0.0) for q in ids])
            boot = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(2000)]
            row[f"{m}_difference"] = {
                "mean": float(d.mean()), "ci95": [float(np.percentile(boot, 2.5)),
                                                  float(np.percentile(boot, 97.5))],
                "p": float(ttest_rel([pb.get(q, 0.0) for q in ids],
                                     [pa.get(q, 0.0) for q in ids]).pvalue) if d.any() else 1.0}
        rows.append(row)
    result = {"heldout_turns": len(ids), "depth": args.depth, "candidates": len(candidates),
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Cheaper passage vectors: the shipped re-ranker on {len(ids)} held-out MTRAG turns "
             f"(depth {args.depth}, {len(candidates):,} candidate passages)", "",
             "| passage vectors | MRR@10 | diff [95% CI], p | nDCG@3 | diff [95% CI], p | "
             "median cosine with shipped |", "|---|---:|---|---:|---|---:|"]
    for r in rows:
        cells = []
        for m in METRICS:
            d = r[f"{m}_difference"]
            cells += [f"{r[m]:.3f}", f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, "
                      f"{d['ci95'][1]:+.4f}], p {d['p']:.3f}"]
        lines.append(f"| {r['option']} | " + " | ".join(cells)
                     + f" | {r['median_cosine_with_shipped']:.4f} |")
    lines += ["", "Speed of each option: `passage_vector_options.md` (ms per passage, one thread).",
              ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _keys(texts):
    from convsparse.document_vectors import text_key

    return [text_key(t) for t in texts]


if __name__ == "__main__":
    raise SystemExit(main())
