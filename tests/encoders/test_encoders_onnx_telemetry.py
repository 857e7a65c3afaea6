"""ONNX Runtime's telemetry stays off (issue 29 item 11): importing it wrote a device id and an
event database under the user's home cache in every process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("onnxruntime")

CODE = textwrap.dedent("""
    from convsparse.encoders.onnx_runtime import providers_for
    print(providers_for("cpu"))
""")


def run_with_home(home, extra_env=None) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), **(extra_env or {}))
    proc = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()}


def test_loading_onnxruntime_writes_nothing_under_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert run_with_home(home) == set()


def test_a_user_who_opts_in_keeps_their_choice(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    written = run_with_home(home, {"ORT_DISABLE_TELEMETRY": "0"})
    assert any("onnxruntime" in p for p in written)  # what the library does when allowed
