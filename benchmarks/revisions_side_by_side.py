"""The benchmarks of record at another revision and at this checkout, alternating, in one command:
did a change that should not change behaviour keep the figures?

    python benchmarks/revisions_side_by_side.py --before c11435b
    python benchmarks/revisions_side_by_side.py --summarize DIR   # only the table, from a run

The other revision is checked out into a temporary git worktree with its own virtual
environment (the system's packages, the revision installed editable, no download). Then,
`--rounds` times, each side runs `search_latency.py --docs 100000 --no-seismic` (exact search
and pruning on a synthetic collection) and `ingest_throughput.py --model tiny --docs 1000`
(in process and through Celery + Redis), before then after, so a noisy neighbour hits both
alike. Reported: the median over rounds of each figure, and the after/before ratio.

Writes benchmarks/results/revisions_side_by_side.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEARCH = ["benchmarks/search_latency.py", "--docs", "100000", "--no-seismic",
          "--python-queries", "0"]
INGEST = ["benchmarks/ingest_throughput.py", "--model", "tiny", "--docs", "1000", "--repeats", "2"]
#: (label, pruning policy, rescore window) rows of the pruning table to compare
PRUNING = [("none", 0), ("top_k=32", 0), ("max_ratio=0.1", 0), ("max_ratio=0.1", 1000)]


def checkout(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), rev],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(where / ".venv")],
                   check=True)
    subprocess.run([str(where / ".venv/bin/python"), "-m", "pip", "install", "-q", "--no-deps",
                    "-e", str(where)], check=True, capture_output=True)
    return where / ".venv/bin/python"


def figures(out: Path, side: str, rounds: int) -> dict[str, list[float]]:
    """name -> one value per round, from the outputs in `out`."""
    got: dict[str, list[float]] = {}
    for r in range(1, rounds + 1):
        search = json.loads((out / f"sl_{side}_{r}").read_text())
        for row in search["candidates"]:
            if row["candidate"] == "embedded":
                got.setdefault(f"exact search p50 ms, {row['query_terms']:.0f} query terms",
                               []).append(row["p50_ms"])
        for row in search["pruning"]:
            if (row["policy"], row["rescore_window"]) in PRUNING:
                name = (f"pruned search p50 ms, {row['query_terms']:.0f} terms, {row['policy']}"
                        + (f", rescore {row['rescore_window']}" if row["rescore_window"] else ""))
                got.setdefault(name, []).append(row["p50_ms"])
        ingest = json.loads(next((out / f"it_{side}_{r}").glob("*.json")).read_text())
        for key, value in ingest.items():
            if key.endswith("docs_s") and isinstance(value, (int, float)):
                got.setdefault(f"ingest {key.replace('_', ' ')}", []).append(float(value))
    return got


def summarize(out: Path, rounds: int, before: str) -> dict:
    a, b = figures(out, "before", rounds), figures(out, "after", rounds)
    rows = [{"figure": k, "before": statistics.median(a[k]), "after": statistics.median(b[k]),
             "ratio": statistics.median(b[k]) / statistics.median(a[k])}
            for k in a if k in b and statistics.median(a[k])]
    return {"before": before, "rounds": rounds, "rows": rows}


def markdown(res: dict) -> str:
    lines = [f"# Benchmarks of record: {res['before']} against this checkout "
             f"({res['rounds']} alternating rounds, medians)", "",
             "| figure | before | after | after / before |", "|---|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['figure']} | {r['before']:.2f} | {r['after']:.2f} | {r['ratio']:.2f} |")
    lines += ["", "Search: lower is better; ingest (documents/s): higher is better. The machine is "
              "shared: ratios within about 10-15% of 1 are noise.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", default="HEAD~1", help="the revision to compare with")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--summarize", type=Path, default=None,
                    help="a folder of an earlier run's outputs: only write the table")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "revisions_side_by_side")
    args = ap.parse_args(argv)
    out = args.summarize or Path(tempfile.mkdtemp(prefix="side-by-side-"))
    if args.summarize is None:
        old = checkout(args.before, Path(tempfile.mkdtemp(prefix="before-")) / "tree")
        try:
            for r in range(1, args.rounds + 1):
                for side, python, cwd in (("before", old, old.parents[2]),
                                          ("after", Path(sys.executable), REPO)):
                    subprocess.run([str(python), *SEARCH, "--out", str(out / f"sl_{side}_{r}")],
                                   cwd=cwd, check=True, capture_output=True)
                    subprocess.run([str(python), *INGEST, "--out", str(out / f"it_{side}_{r}")],
                                   cwd=cwd, check=True, capture_output=True)
                    print(f"round {r}: {side} done", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(old.parents[2])], capture_output=True)
    res = summarize(out, args.rounds, args.before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
