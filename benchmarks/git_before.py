"""Load a module as it was at a git ref, to time "before" and "after" in one run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_at(ref: str, path: str, name: str):
    """The module at `path` (relative to the repository root) as of git `ref`, imported as
    `name`; what it imports comes from this tree."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{path}"],
                         check=True, capture_output=True, text=True).stdout
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(src)
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
