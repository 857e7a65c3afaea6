"""The README's and the docs' examples stay true (issue 12): every `convsparse ...` line in
their bash blocks parses against the real command tree (the command exists, every option it
shows is accepted), every Python block compiles, the chat-app guide's search examples run for
real, in order, with the tiny student, and the quickstart's Python runs with the shipped one."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from convsparse.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: the README and every page of the docs site
PAGES = [README, *sorted(DOCS.rglob("*.md"))]


def blocks(language: str, pages: list[Path] = PAGES) -> list[str]:
    return [b for page in pages
            for b in re.findall(rf"```{language}\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)]


def bash_blocks() -> list[str]:
    return blocks("bash")


def readme_commands(block: str | None = None) -> list[list[str]]:
    """Every `convsparse` invocation, as argv (comments dropped, `a; b` and `x && y` split,
    `[--opt a|b]` optional groups taken with their first alternative)."""
    out = []
    for text in [block] if block is not None else bash_blocks():
        for line in text.replace("\\\n", " ").splitlines():  # a `\` line continuation, as bash reads it
            line = re.sub(r"\s+#.*$", "", line).strip()
            line = re.sub(r"\[(--[^\]]*)\]", lambda m: m.group(1).split("|")[0], line)
            for part in re.split(r";|&&", line):
                words = shlex.split(part)
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words.pop(0)  # VAR=value prefixes
                if words[:1] == ["convsparse"]:
                    out.append(words[1:])
    return out


def resolve(argv: list[str]) -> tuple[click.Command, list[str]]:
    cmd = typer.main.get_command(app)
    args = list(argv)
    while isinstance(cmd, click.Group):
        name = args.pop(0)
        sub = cmd.get_command(click.Context(cmd), name)
        assert sub is not None, f"README: `convsparse {' '.join(argv)}`: no command {name!r}"
        cmd = sub
    return cmd, args


def test_readme_has_commands():
    assert len(readme_commands()) >= 25


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(argv):
    cmd, args = resolve(argv)
    try:
        cmd.make_context(cmd.name, args)
    except click.exceptions.Exit:
        pass
    except click.UsageError as e:  # unknown option, missing argument, bad choice
        pytest.fail(f"README: `convsparse {' '.join(argv)}`: {e.format_message()}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_compile(page):
    for i, block in enumerate(blocks("python", [page])):
        compile(block, f"{page.name} python block {i}", "exec")


def test_readme_search_examples_run(tmp_path, tiny_model_dir, monkeypatch):
    """The chat-app guide's command block, run as written (the tiny student via
    CONVSPARSE_MODEL; `passages.jsonl` and `conv.json` written first)."""
    block = next(b for b in blocks("bash", [DOCS / "guides" / "chat-app.md"])
                 if "convsparse index delete docs" in b)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVSPARSE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("CONVSPARSE_RUNTIME", "torch")
    rows = [{"pid": "lis-01", "body": "Lisbon is the capital of Portugal.", "title": "Lisbon"},
            {"pid": "oct-01", "body": "Octopuses have three hearts."}]
    Path("passages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    Path("passages.json").write_text("".join(json.dumps({"id": r["pid"], "text": r["body"]}) + "\n"
                                             for r in rows), encoding="utf-8")
    Path("conv.json").write_text(json.dumps([{"role": "user", "text": "Tell me about Lisbon"}]),
                                 encoding="utf-8")
    runner = CliRunner()
    ran = []
    for argv in readme_commands(block):
        if argv[0] == "quickstart":
            continue  # runs in test_integration_cli.py / test_integration_user_path.py
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, f"`convsparse {' '.join(argv)}`:\n{result.output}"
        ran.append(argv[:2])
        if argv[0] == "search":
            assert "lis-01" in result.output, result.output
    assert ["index", "delete"] in ran and ["search", "--index"] in ran


def test_readme_rerank_config_is_the_recipe_defaults(tmp_path):
    """The README's rerank.yaml loads, and what it sets is what `RerankConfig` defaults to
    (the README says the recipe it measures is these defaults)."""
    import yaml

    from convsparse.reranking.config import RerankConfig

    found = [b for b in blocks("yaml", [DOCS / "guides" / "training.md"]) if b.startswith("# rerank.yaml")]
    assert len(found) == 1
    path = tmp_path / "rerank.yaml"
    path.write_text(found[0], encoding="utf-8")
    cfg = RerankConfig.from_file(path)
    defaults = RerankConfig(output_dir=cfg.output_dir, collection=cfg.collection)
    shown = yaml.safe_load(found[0])
    for key in set(shown) - {"output_dir", "collection"}:
        assert getattr(cfg, key) == getattr(defaults, key), key


def test_quickstart_python_runs_with_the_shipped_student(tmp_path, monkeypatch):
    """docs/quickstart.md's Python block, as written, in a fresh data folder (the default
    settings: the shipped student on ONNX Runtime, the embedded backend)."""
    import contextlib
    import io

    (block,) = blocks("python", [DOCS / "quickstart.md"])
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("CONVSPARSE_MODEL", "CONVSPARSE_RUNTIME", "CONVSPARSE_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "quickstart.md", "exec"), {})
    assert out.getvalue().startswith("lis-01 "), out.getvalue()
