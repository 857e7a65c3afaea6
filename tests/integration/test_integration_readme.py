"""The README's command examples stay true (issue 12): every `convsparse ...` line in its bash
blocks parses against the real command tree (the command exists, every option it shows is
accepted), and the search section's examples run for real, in order, with the tiny student."""

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

README = Path(__file__).resolve().parents[2] / "README.md"


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def readme_commands(block: str | None = None) -> list[list[str]]:
    """Every `convsparse` invocation, as argv (comments dropped, `a; b` and `x && y` split,
    `[--opt a|b]` optional groups taken with their first alternative)."""
    out = []
    for text in [block] if block is not None else bash_blocks():
        for line in text.splitlines():
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


def test_readme_search_examples_run(tmp_path, tiny_model_dir, monkeypatch):
    """The bash block of "Search from Python", run as written (the tiny student via
    CONVSPARSE_MODEL; `passages.jsonl` and `conv.json` written first)."""
    block = next(b for b in bash_blocks() if "convsparse search --index docs" in b)
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

    from convsparse.training.config import RerankConfig

    blocks = re.findall(r"```yaml\n(# rerank\.yaml.*?)```", README.read_text(encoding="utf-8"),
                        flags=re.S)
    assert len(blocks) == 1
    path = tmp_path / "rerank.yaml"
    path.write_text(blocks[0], encoding="utf-8")
    cfg = RerankConfig.from_file(path)
    defaults = RerankConfig(output_dir=cfg.output_dir, collection=cfg.collection)
    shown = yaml.safe_load(blocks[0])
    for key in set(shown) - {"output_dir", "collection"}:
        assert getattr(cfg, key) == getattr(defaults, key), key
