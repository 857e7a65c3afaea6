"""The tuner's plot: latency (x) versus recall@k vs unpruned (y), every point labelled, the Pareto
frontier marked. Reads a `TuningResult`, never changes it; `plotted_points` is what it draws."""

from __future__ import annotations

from pathlib import Path

from convsparse.evaluation.tuning.result import KINDS, TuningPoint, TuningResult, pareto_frontier

_COLORS = {"none": "black", "top_k": "tab:blue", "max_ratio": "tab:orange",
           "min_weight": "tab:green", "alpha_mass": "tab:purple", "ann": "tab:brown"}
_SHORT = {"top_k": "k", "max_ratio": "ratio", "min_weight": "w", "alpha_mass": "mass"}


def _drawn(result: TuningResult) -> list[tuple[str, list[TuningPoint]]]:
    """The points the plot draws, grouped by kind in drawing order (re-rank points are not
    plotted: the axis is recall vs the unpruned results, which re-ranking changes on purpose)."""
    ok = [p for p in result.points if p.ok]
    groups = [(kind, [p for p in ok if p.kind == kind]) for kind in ("none", *KINDS, "ann")]
    return [(kind, pts) for kind, pts in groups if pts]


def plotted_points(result: TuningResult) -> list[tuple[str, float, float]]:
    """(label, latency, recall vs unpruned) of every point `plot_tuning` draws, in drawing order."""
    stat = result.latency_stat
    return [(p.label, float(p.latency_ms[stat]), float(p.recall_vs_unpruned))
            for _, pts in _drawn(result) for p in pts]


def plot_tuning(result: TuningResult, path: str | Path, *, title: str | None = None) -> Path:
    """Write the PNG of `result` to `path` (folders made) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stat = result.latency_stat
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    for kind, pts in _drawn(result):
        ax.scatter([p.latency_ms[stat] for p in pts], [p.recall_vs_unpruned for p in pts],
                   s=36, color=_COLORS[kind], label=kind if kind != "none" else "unpruned",
                   zorder=3)
        for p in pts:
            ax.annotate(_short_label(p), (p.latency_ms[stat], p.recall_vs_unpruned),
                        textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=_COLORS[kind])
    front = pareto_frontier([p for p in result.points if p.ok], latency=stat)
    if front:
        ax.step([p.latency_ms[stat] for p in front], [p.recall_vs_unpruned for p in front],
                where="post", color="red", linewidth=1, alpha=0.7, zorder=2)
        ax.scatter([p.latency_ms[stat] for p in front], [p.recall_vs_unpruned for p in front],
                   s=140, facecolors="none", edgecolors="red", linewidths=1.2,
                   label="Pareto frontier", zorder=4)
    ax.set_xlabel(f"search latency {stat} (ms)")
    ax.set_ylabel(f"recall@{result.k} vs unpruned results")
    ax.set_title(title or f"Query pruning: latency vs recall ({result.n_queries} conversations, "
                          f"{result.backend})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _short_label(p: TuningPoint) -> str:
    if p.ann is not None:
        return f"ann {p.ann.query_cut}/{p.ann.heap_factor:g}"
    return "unpruned" if p.kind == "none" else f"{_SHORT[p.kind]}={p.label.split('=')[-1]}"


__all__ = ["plot_tuning", "plotted_points"]
