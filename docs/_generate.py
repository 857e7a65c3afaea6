"""mkdocs hooks: the pages generated from the code and the results, at build time.

A page asks for generated content with a marker comment on a line of its own:

- ``<!-- generated: cli -->``: every command's ``--help`` (the typer app itself);
- ``<!-- generated: settings -->``: every `Settings` field, its variable, type, default and doc;
- ``<!-- generated: benchmarks -->``: every ``benchmarks/results/*.md``, each with its date,
  commit and machine (from its JSON where recorded, else from git: when the file last changed).

The nav lists the fixed pages and then every page under ``guides/``, so a guide added by
anyone appears without editing mkdocs.yml.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = re.compile(r"^<!-- generated: (\w+) -->$", re.M)
#: guides first in this order (the users' order); any other guide follows, alphabetically
GUIDE_ORDER = ["chat-app.md", "reranking.md", "bulk-ingestion.md", "tuning.md", "opensearch.md",
               "elasticsearch.md", "training.md"]


#: where the package is laid out as the wheel lays it out, for mkdocstrings to read statically
#: (pyproject's package-dir maps top-level folders onto `convsparse.*`; griffe reads folders)
STAGE = ROOT / "build" / "docs-src"


def stage_package() -> Path:
    """``build/docs-src/convsparse``: links to the core's files and to each mapped folder."""
    import shutil

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(STAGE, ignore_errors=True)
    package = STAGE / "convsparse"
    package.mkdir(parents=True)
    for item in (ROOT / mapping["convsparse"]).iterdir():
        if item.suffix in (".py", ".typed"):
            (package / item.name).symlink_to(item)
    for name, folder in mapping.items():
        if name.count(".") == 1:
            (package / name.split(".", 1)[1]).symlink_to(ROOT / folder, target_is_directory=True)
    return STAGE


def on_startup(command: str, dirty: bool) -> None:
    # before any plugin's on_config: mkdocstrings drops `paths` that do not exist yet
    stage_package()


def on_config(config: Any) -> Any:
    guides_dir = Path(config["docs_dir"]) / "guides"
    names = sorted(p.name for p in guides_dir.glob("*.md"))
    ordered = [n for n in GUIDE_ORDER if n in names] + [n for n in names if n not in GUIDE_ORDER]
    for section in config["nav"] or []:
        if isinstance(section, dict) and "Guides" in section:
            section["Guides"] = [f"guides/{n}" for n in ordered]
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)


def cli_reference() -> str:
    import typer
    from typer.testing import CliRunner

    from convsparse.cli import app

    runner = CliRunner()
    out = []

    def walk(cmd: Any, path: list[str]) -> None:
        result = runner.invoke(app, [*path, "--help"], terminal_width=100, env={"NO_COLOR": "1", "TERM": "dumb"})
        title = " ".join(["convsparse", *path])
        out.append(f"## `{title}`\n\n```text\n{result.output.rstrip()}\n```\n")
        if hasattr(cmd, "list_commands"):  # a group (typer's own click: duck-typed)
            ctx = cmd.context_class(cmd)
            for name in sorted(cmd.list_commands(ctx)):
                walk(cmd.get_command(ctx, name), [*path, name])

    walk(typer.main.get_command(app), [])
    return "\n".join(out)


def settings_reference() -> str:
    from convsparse.settings import Settings

    source = (ROOT / "convsparse" / "settings.py").read_text(encoding="utf-8")
    lines = source.splitlines()
    comments: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc, i = [], node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#:"):
                doc.insert(0, lines[i].strip()[2:].strip())
                i -= 1
            comments[node.target.id] = " ".join(doc)
    rows = ["| setting | variable | type | default | what |", "|---|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        kind = str(field.annotation).replace("typing.", "").replace("pathlib.", "").replace("|", "\\|")
        kind = re.sub(r"<class '(\w+)'>", r"\1", kind)
        default = field.default
        shown = "(your home)/" + Path(default).relative_to(Path.home()).as_posix() \
            if isinstance(default, Path) and Path.home() in Path(default).parents else repr(default)
        what = (field.description or comments.get(name, "")).replace("|", "\\|")
        rows.append(f"| `{name}` | `CONVSPARSE_{name.upper()}` | `{kind}` | `{shown}` | {what} |")
    return "\n".join(rows) + "\n"


def _git_last_change(path: Path) -> tuple[str, str]:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ad %h", "--date=short",
                              "--", str(path)], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    return (out[0], out[1]) if len(out) == 2 else ("not recorded", "not recorded")


def _machine(meta: dict) -> str:
    found = []
    for key in ("machine", "cpu", "cpus", "cpu_count", "device", "device_label", "threads", "platform"):
        value = meta.get(key)
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items() if k in ("cpu", "cpus", "platform", "gpu"))
        if value not in (None, "", {}):
            found.append(f"{key} {value}")
    return "; ".join(found) or "not recorded"


def _demote(md: str) -> str:
    md = re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + 2) + " ", md, flags=re.M)
    # images and links relative to benchmarks/results/ are not pages of the site: name the file
    md = re.sub(r"!\[([^\]]*)\]\((?!https?:)([^)]+)\)", r"(figure: `benchmarks/results/\2`)", md)
    return re.sub(r"\[([^\]]+)\]\((?!https?:|#)([^)]+)\)", r"\1 (`\2`)", md)


def benchmarks_page() -> str:
    out = []
    for md in sorted(RESULTS.glob("*.md")):
        meta_path = md.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
        except ValueError:
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        git_date, git_commit = _git_last_change(md)
        date = meta.get("date") or f"{git_date} (committed)"
        commit = meta.get("commit") or f"{git_commit} (the commit that wrote the file)"
        out.append(f"## {md.stem}\n\n*Date: {date} · commit: {commit} · machine: {_machine(meta)} · "
                   f"source: `benchmarks/results/{md.name}`*\n\n{_demote(md.read_text(encoding='utf-8'))}\n")
    return "\n".join(out)


GENERATORS = {"cli": cli_reference, "settings": settings_reference, "benchmarks": benchmarks_page}


def fence_doctests(text: str) -> str:
    """Docstring examples (``>>>`` lines, their continuations and output, up to a blank line)
    as fenced ``pycon`` blocks, so the site shows them as code, not as quoted prose."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith(">>>"):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
                i += 1
            out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"]
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


try:
    import griffe

    class DoctestFences(griffe.Extension):
        """The griffe extension mkdocs.yml names: `fence_doctests` on every docstring."""

        def on_instance(self, *, node: Any, obj: Any, agent: Any, **kwargs: Any) -> None:
            if obj.docstring is not None:
                obj.docstring.value = fence_doctests(obj.docstring.value)
except ImportError:  # griffe comes with the docs extra; the hooks above need none of it
    pass
