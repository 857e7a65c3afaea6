"""Comparison table and pruning sweep on the real MTRAG data, in one command.

    python benchmarks/evaluate_real.py                 # ../shared/data/mtrag, default student
    python benchmarks/evaluate_real.py --model PATH    # another student folder
    python benchmarks/evaluate_real.py --bm25-only     # no model needed

Writes benchmarks/results/evaluation_mtrag.{json,md} and tuning_mtrag.{json,md,png}.
CPU friendly: the 1,488 passages are encoded once into a temporary embedded index, queries are
encoded in batches, torch uses --threads threads (default 1: the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mtrag"


def _find_split(args) -> Path | None:
    """The distillation split (F writes split.json next to the trained student)."""
    candidates = [args.split] if args.split else []
    if args.model:
        candidates.append(Path(args.model) / "split.json")
    candidates.append(REPO / "convsparse" / "models" / "student" / "split.json")
    return next((c for c in candidates if c is not None and c.is_file()), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--model", default=None, help="student folder/hub id (default: load_student())")
    ap.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bm25-only", action="store_true")
    ap.add_argument("--tune-limit", type=int, default=120,
                    help="judged turns used in the pruning sweep")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=10, help="recall@k cut-off of the sweep")
    ap.add_argument("--max-recall-drop", type=float, default=0.02)
    ap.add_argument("--budget-ms", type=float, default=None)
    ap.add_argument("--name", default="mtrag", help="file name suffix")
    ap.add_argument("--split", type=Path, default=None,
                    help="split.json of the distilled student ({'heldout': [task ids]}); "
                         "default: next to the model")
    args = ap.parse_args(argv)

    if not args.data.is_dir():
        print(f"no data at {args.data}; pass --data", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)

    from convsparse.benchmark_collections import load_collection
    from convsparse.evaluation.harness import compare, index_corpus, tasks_for
    from convsparse.evaluation.tuning import PruningTuner

    t_start = time.perf_counter()
    col = load_collection(args.data)
    print(col)
    encoder = None
    note = None
    if not args.bm25_only:
        try:
            from convsparse.encoders.loading import load_student
        except ImportError:
            load_student = None
        if load_student is not None:
            encoder = load_student(args.model, runtime=args.runtime, device="cpu")
        elif args.model:
            from convsparse.encoders.student import SpladeStudent

            encoder = SpladeStudent.from_pretrained(args.model, device="cpu")
        else:
            note = ("convsparse.encoders.loading.load_student is not available in this build and "
                    "no --model was given: student rows omitted")
            print(note, file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)

    if encoder is None:
        report = compare(col)
        if note:
            report.notes.append(note)
        js, md = report.save(args.out / f"evaluation_{args.name}")
        print(report.to_markdown())
        print(f"wrote {js}, {md} in {time.perf_counter() - t_start:.0f}s")
        return 0

    from convsparse.integration.backends.embedded import EmbeddedBackend

    with tempfile.TemporaryDirectory(prefix="convsparse-eval-") as tmp:
        backend = EmbeddedBackend(Path(tmp))
        t0 = time.perf_counter()
        from convsparse.settings import get_settings

        cache = (get_settings().cache_dir / "eval-docs"
                 / f"{args.name}-{encoder.fingerprint[:24]}.jsonl")
        doc_stats = index_corpus(col, encoder=encoder, backend=backend, index=args.name,
                                 progress=True, cache=cache, batch_size=16)
        print(f"indexed {doc_stats.count} passages in {time.perf_counter() - t0:.0f}s "
              f"({doc_stats.average_terms:.0f} terms per passage)")
        report = compare(col, encoder=encoder, backend=backend, index=args.name,
                         doc_stats=doc_stats, reindex=False,
                         student_name=f"student ({Path(str(getattr(encoder, 'source', '') or 'default')).name})")
        split = _find_split(args)
        if split is not None:
            import json

            held = set(json.loads(split.read_text())["heldout"])
            sub = col.subset(held)
            if sub.conversations:
                ho = compare(sub, encoder=encoder, backend=backend, index=args.name,
                             doc_stats=doc_stats, reindex=False, student_name="student",
                             all_turns=False)
                for r in ho.results:
                    r.system = f"{r.system} [held-out]"
                report.results += ho.results
                report.notes.append(f"[held-out] rows: the {len(sub.conversations)} turns of "
                                    f"the conversations the student never saw in training "
                                    f"({split})")
        report.config["index_seconds"] = round(time.perf_counter() - t0, 1)
        report.config["threads"] = args.threads
        js, md = report.save(args.out / f"evaluation_{args.name}")
        print(report.to_markdown())
        print(f"wrote {js}, {md}")

        tasks = tasks_for(col, "raw")[: args.tune_limit]
        tuner = PruningTuner(backend, args.name, encoder, tasks, qrels=col.qrels, k=args.k,
                             warmup=1, repeats=args.repeats, doc_stats=doc_stats,
                             query_maps=report.query_maps.get("raw"))
        result = tuner.run(progress=lambda label: print(f"  swept {label}", flush=True))
        rec = result.recommend(budget_ms=args.budget_ms, max_recall_drop=args.max_recall_drop)
        paths = result.save(args.out / f"tuning_{args.name}", rec)
        print(result.to_markdown(rec))
        print("wrote " + ", ".join(str(p) for p in paths))
    print(f"done in {time.perf_counter() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
