"""Cold start: whole processes, this checkout against another, side by side.

    python benchmarks/cold_start.py --other-python python3 --other-cli convsparse

What a chat app and a shell user pay on the first question: a fresh process that imports
convsparse, loads the default student and answers one question on the sample index. Each side
builds its own sample index first (`convsparse quickstart`, its own cache folder, so the other
side's ONNX export is cached too), then the scenarios run interleaved (ours, other, ours,
other, ...; this machine is noisy), each run timed from outside: wall clock, and user + system
CPU from the kernel's accounting of the finished child (`os.wait4`). Reported: median, min,
max per side, and the median of the per-pair ratios ours/other.

Scenarios:

- ``cli_search``: ``convsparse search --index quickstart -c '"how old do octopuses get"'``
  (goal: <= 1.0 s CPU, <= 1.5 s wall on a quiet machine);
- ``api_search``: ``import convsparse`` + ``ConversationalSearch(...).search(question)``
  (goal: <= 1.0 s CPU);
- ``import``: ``import convsparse`` alone.

Writes benchmarks/results/cold_start.{json,md} (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTION = "how old do octopuses get"
GOALS = {"cli_search": {"cpu_s": 1.0, "wall_s": 1.5}, "api_search": {"cpu_s": 1.0}}


def _cli(side: dict, data: Path) -> list[str]:
    return [side["cli"], "search", "--index", "quickstart", "--data-dir", str(data), "-c",
            json.dumps(QUESTION), "-k", "3"]


def _api(side: dict, data: Path) -> list[str]:
    code = ("import convsparse\n"
            "from convsparse import ConversationalSearch, EmbeddedBackend\n"
            f"r = ConversationalSearch('quickstart', backend=EmbeddedBackend({str(data)!r}))"
            f".search({QUESTION!r}, k=3)\n"
            "assert r.hits\n")
    return [side["python"], "-c", code]


def _import(side: dict, data: Path) -> list[str]:
    return [side["python"], "-c", "import convsparse"]


SCENARIOS = {"cli_search": _cli, "api_search": _api, "import": _import}


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """One whole process: wall seconds and the kernel's user + system CPU seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}): {err[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime, "maxrss_mb": usage.ru_maxrss / 1024}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def describe_side(name: str, python: str, cli: str) -> dict:
    probe = subprocess.run([python, "-c", "import convsparse, sys; print(convsparse.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    package = Path(probe.stdout.strip()).resolve().parent
    checkout = package.parent
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {"name": name, "python": python, "cli": cli, "checkout": str(checkout),
            "commit": commit or "unknown"}


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_avg_at_start": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="this side's Python (default: this one)")
    ap.add_argument("--cli", default=str(Path(sys.executable).parent / "convsparse"),
                    help="this side's convsparse command")
    ap.add_argument("--other-python", required=True, help="the other checkout's Python")
    ap.add_argument("--other-cli", required=True, help="the other checkout's convsparse command")
    ap.add_argument("--other-name", default="main")
    ap.add_argument("--runs", type=int, default=7, help="counted runs per side and scenario")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                    help="(repeat) default: all")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cold_start")
    args = ap.parse_args(argv)
    other_cli = shutil.which(args.other_cli) or args.other_cli
    sides = [describe_side("this", args.python, args.cli),
             describe_side(args.other_name, args.other_python, other_cli)]
    scenarios = args.scenario or list(SCENARIOS)
    work = Path(tempfile.mkdtemp(prefix="cold-start-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSPARSE_")}
    base_env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        for side in sides:
            root = work / side["name"]
            side["env"] = {**base_env, "CONVSPARSE_CACHE_DIR": str(root / "cache")}
            side["data"] = root / "data"
            print(f"{side['name']}: sample index ({side['checkout']} @ {side['commit']})", file=sys.stderr)
            subprocess.run([side["cli"], "quickstart", "--data-dir", str(side["data"]),
                            "--conversations", "1"], env=side["env"], cwd=work, check=True,
                           stdout=subprocess.DEVNULL)
        rows = []
        for scenario in scenarios:
            runs: dict[str, list[dict[str, float]]] = {s["name"]: [] for s in sides}
            for i in range(args.warmup + args.runs):
                for side in sides:  # interleaved: ours, other, ours, other, ...
                    result = timed(SCENARIOS[scenario](side, side["data"]), side["env"], work)
                    if i >= args.warmup:
                        runs[side["name"]].append(result)
            row = {"scenario": scenario, "runs": args.runs, "goal": GOALS.get(scenario, {})}
            for side in sides:
                row[side["name"]] = {k: summary([r[k] for r in runs[side["name"]]])
                                     for k in ("wall_s", "cpu_s", "maxrss_mb")}
            ours, theirs = runs[sides[0]["name"]], runs[sides[1]["name"]]
            row["ratio_this_over_other"] = {
                k: statistics.median(a[k] / b[k] for a, b in zip(ours, theirs)) for k in ("wall_s", "cpu_s")}
            rows.append(row)
            print(f"{scenario}: this {row['this']['cpu_s']['median']:.2f} s CPU / "
                  f"{row['this']['wall_s']['median']:.2f} s wall; {args.other_name} "
                  f"{row[args.other_name]['cpu_s']['median']:.2f} / "
                  f"{row[args.other_name]['wall_s']['median']:.2f}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "cold_start",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": sides[0]["commit"],
        "machine": machine(),
        "sides": [{k: v for k, v in s.items() if k not in ("env", "data")} for s in sides],
        "question": QUESTION,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(report, args.other_name), encoding="utf-8")
    print(markdown(report, args.other_name))
    return 0


def markdown(report: dict, other: str) -> str:
    m = report["machine"]
    lines = [
        "# Cold start: whole processes, this checkout against " + other,
        "",
        f"{report['date']}, commit {report['commit']} against {other} "
        f"{report['sides'][1]['commit']}; {m['cpus']} CPUs ({m['cpu']}), load average at start "
        f"{m['load_avg_at_start'][0]:.1f}. `python benchmarks/cold_start.py`: each side's own "
        f"sample index (`convsparse quickstart`), runs interleaved, medians (min-max) of "
        f"{report['rows'][0]['runs'] if report['rows'] else 0} runs; CPU = user + system of the "
        "process.",
        "",
        f"| scenario | this CPU s | {other} CPU s | this wall s | {other} wall s | CPU ratio | "
        "wall ratio | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(d: dict) -> str:
        return f"{d['median']:.2f} ({d['min']:.2f}-{d['max']:.2f})"

    for row in report["rows"]:
        goal = ", ".join(f"{k.split('_')[0]} <= {v} s" for k, v in row["goal"].items()) or "-"
        lines.append(
            f"| {row['scenario']} | {cell(row['this']['cpu_s'])} | {cell(row[other]['cpu_s'])} | "
            f"{cell(row['this']['wall_s'])} | {cell(row[other]['wall_s'])} | "
            f"{row['ratio_this_over_other']['cpu_s']:.2f} | {row['ratio_this_over_other']['wall_s']:.2f} "
            f"| {goal} |")
    lines += ["", "Ratios: median over the interleaved pairs of this / " + other + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
