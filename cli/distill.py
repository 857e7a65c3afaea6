"""The training command group: `convsparse distill CONFIG`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def distill(
    config: Path = typer.Argument(..., help="YAML or JSON DistillConfig"),
    steps: int | None = typer.Option(None, help="override the config's stage-2 steps "
                                     "(epochs for recipe: anchored)"),
    no_resume: bool = typer.Option(False, "--no-resume", help="ignore an existing checkpoint"),
) -> None:
    """Distil a student from teachers on rewrites. `recipe: anchored` trains the shipped kind (a
    gated history expansion over a frozen base); the default recipe fine-tunes a whole masked-LM
    (KL + InfoNCE + L1/FLOPS)."""
    from convsparse.training.config import AnchoredConfig, load_config

    try:
        cfg = load_config(config)
    except ValueError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    if isinstance(cfg, AnchoredConfig):
        from convsparse.training.anchored import distill_anchored

        if steps is not None:
            cfg = cfg.model_copy(update={"epochs": steps})
        result = distill_anchored(cfg, log=typer.echo)
        typer.echo(f"student written to {result.model_dir} (load_student({str(result.model_dir)!r}))")
        return
    from convsparse.training.trainer import distill as run_distill

    updates = {}
    if steps is not None:
        updates["steps"] = steps
    if no_resume:
        updates["resume"] = False
    cfg = cfg.model_copy(update=updates)
    result = run_distill(cfg)
    typer.echo(f"student written to {result.model_dir}")
    after = result.metrics.get("heldout_after") or {}
    if after:
        typer.echo(json.dumps({"heldout_after": after}, indent=2))


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
