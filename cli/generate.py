"""The LLM command group: `convsparse rewrite` (standalone rewrites the teachers read) and
`convsparse augment` (G2R data-level variants). The generator comes from `CONVSPARSE_LLM_*`
with these options on top, through `convsparse.compose.load_generator`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from convsparse.cli.options import Device, fail, settings_from

LlmBackend = Annotated[str | None, typer.Option(
    "--llm-backend", help="endpoint (OpenAI-compatible server) or local (HF folder) "
    "(default: CONVSPARSE_LLM_BACKEND, else endpoint).")]
LlmModel = Annotated[str | None, typer.Option(
    "--llm-model", help="served model name, or a local HF folder (default: CONVSPARSE_LLM_MODEL).")]
LlmUrl = Annotated[str | None, typer.Option(
    "--llm-base-url", help="e.g. http://localhost:8000/v1 (vLLM), http://localhost:11434/v1 (Ollama) "
    "(default: CONVSPARSE_LLM_BASE_URL). The API key is CONVSPARSE_LLM_API_KEY.")]
Concurrency = Annotated[int | None, typer.Option(
    "--concurrency", help="requests in flight at most (default: CONVSPARSE_LLM_CONCURRENCY, 8).")]
Cache = Annotated[Path | None, typer.Option(
    "--cache", help="generation cache (JSONL; default <out>.cache.jsonl): re-runs and resumes are free.")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="no progress bar")]


def _generator(llm_backend, llm_model, llm_base_url, concurrency, device):
    from convsparse.compose import load_generator

    try:
        return load_generator(settings_from(llm_backend=llm_backend, llm_model=llm_model,
                                            llm_base_url=llm_base_url, llm_concurrency=concurrency,
                                            device=device))
    except (ValueError, OSError) as e:
        raise fail(str(e), 2) from None


def _finish(report, what: str) -> None:
    typer.echo(json.dumps(report.as_dict(), indent=2))
    if report.failures:
        for f in report.failures[:10]:
            typer.echo(f"  {f['id']}: {f['reason']}", err=True)
        raise fail(f"{len(report.failures)} of {report.total} {what} failed (listed in "
                   f"{report.failures_path}); the others are written. Run the same command again "
                   "to retry only those: finished ones come from the cache.")


def rewrite(
    conversations: Path = typer.Argument(..., help="conversations file (JSONL tasks or CAsT topics)"),
    out: Path = typer.Option(..., "--out", "-o", help="output JSONL: every task with its `rewrite`"),
    prompt: Path | None = typer.Option(None, "--prompt", help="prompt template file ({history}, "
                                       "{question}); default: prompts.DEFAULT_REWRITE_PROMPT"),
    only_missing: bool = typer.Option(False, "--only-missing", help="keep rewrites already present"),
    cache: Cache = None, llm_backend: LlmBackend = None, llm_model: LlmModel = None,
    llm_base_url: LlmUrl = None, concurrency: Concurrency = None, device: Device = None,
    no_progress: NoProgress = False,
) -> None:
    """Rewrite every user turn into a standalone question with an LLM; the output is a
    conversations file for `convsparse distill`."""
    from convsparse.training.generators.prompts import DEFAULT_REWRITE_PROMPT
    from convsparse.training.generators.rewrite import rewrite_conversations

    template = prompt.read_text(encoding="utf-8") if prompt else DEFAULT_REWRITE_PROMPT
    gen = _generator(llm_backend, llm_model, llm_base_url, concurrency, device)
    try:
        report = rewrite_conversations(conversations, out, gen, template=template, cache=cache,
                                       only_missing=only_missing, progress=not no_progress)
    except (ValueError, OSError) as e:  # a broken template, an unreadable conversations file
        raise fail(str(e), 2) from None
    finally:
        gen.close()
    _finish(report, "turns")


def augment(
    conversations: Path = typer.Argument(..., help="training conversations (JSONL tasks or CAsT topics)"),
    out: Path = typer.Option(..., "--out", "-o", help="output JSONL: sources and their variants"),
    n: int = typer.Option(2, "-n", min=1, help="variants per task and kind"),
    kind: list[str] = typer.Option(["question"], "--kind", help="question and/or response"),
    variants_only: bool = typer.Option(False, "--variants-only", help="leave the source tasks out"),
    cache: Cache = None, llm_backend: LlmBackend = None, llm_model: LlmModel = None,
    llm_base_url: LlmUrl = None, concurrency: Concurrency = None, device: Device = None,
    no_progress: NoProgress = False,
) -> None:
    """G2R data-level augmentation: N generated variants per training conversation, each with
    its `source_id`; list the output in a distill config with a `weight`."""
    from convsparse.training.generators.augment import augment_conversations

    gen = _generator(llm_backend, llm_model, llm_base_url, concurrency, device)
    try:
        report = augment_conversations(conversations, out, gen, n=n, kinds=tuple(kind),
                                       include_sources=not variants_only, cache=cache,
                                       progress=not no_progress)
    except ValueError as e:
        raise fail(str(e), 2) from None
    finally:
        gen.close()
    _finish(report, "variants")


def register(app: typer.Typer) -> None:
    app.command("rewrite")(rewrite)
    app.command("augment")(augment)
