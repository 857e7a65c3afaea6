"""Issue 13's security findings, each a test that failed before the fix.

- credentials never appear in an error or log line (one helper, `mask_secrets`);
- a pickle planted as a distillation checkpoint is refused, not run;
- document text reaches the terminal with its control characters escaped;
- `ConversationalSearch.index_documents` enforces `max_text_chars` like the other paths.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from convsparse.cli import app
from convsparse.redaction import install_log_masking, mask_secrets
from convsparse.terminal import printable

PASSWORD = "S3cretPW-planted"
ESCAPES = "\x1b]0;pwned\x07\x1b[31mRED\x1b[0m\u202eevil"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `convsparse` entry point in a subprocess (stdout and stderr as a user sees them)."""
    return subprocess.run([sys.executable, "-c", "from convsparse.cli import app; app()", *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------- secrets
def test_mask_secrets_helper(monkeypatch):
    monkeypatch.setenv("CONVSPARSE_OPENSEARCH_PASSWORD", PASSWORD)
    text = (f"redis://:{PASSWORD}@h:6379/0 https://admin:{PASSWORD}@os:9200 "
            f"rediss://user:other-pw@h/1 and the bare value {PASSWORD}")
    masked = mask_secrets(text)
    assert PASSWORD not in masked and "other-pw" not in masked
    assert "redis://:***@h:6379/0" in masked and "https://admin:***@os:9200" in masked
    assert mask_secrets("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_log_lines_are_masked(caplog):
    install_log_masking()
    with caplog.at_level(logging.INFO):
        logging.getLogger("convsparse.workers.submit").warning(
            "cannot reach %s", f"redis://:{PASSWORD}@127.0.0.1:1/0")
        logging.getLogger("kombu.connection").error(f"lost redis://u:{PASSWORD}@h/0")
    assert caplog.records and PASSWORD not in caplog.text


@pytest.fixture
def redis_with_password(tmp_path):
    redis = shutil.which("redis-server")
    if redis is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--maxmemory-policy", "noeviction",
                             "--requirepass", PASSWORD, "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis as redis_py

    client = redis_py.Redis(port=port, password=PASSWORD)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis_py.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("args, expect", [
    (["jobs", "retry", "job-nope", "--no-progress"], "unknown to redis://:***@"),
    (["jobs", "status", "job-nope"], "job job-nope: unknown"),
    (["jobs", "status", "job-nope", "--json"], '"state": "unknown"'),
])
def test_job_commands_never_print_the_redis_password(redis_with_password, tmp_path, args, expect):
    env = dict(os.environ, CONVSPARSE_REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{redis_with_password}/0",
               CONVSPARSE_DATA_DIR=str(tmp_path))
    proc = cli(*args, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expect in out, out
    assert PASSWORD not in out, out


def test_wrong_password_and_unreachable_backends_never_print_it(redis_with_password, tmp_path):
    env = dict(os.environ, CONVSPARSE_REDIS_URL=f"redis://:wrong-{PASSWORD}@127.0.0.1:{redis_with_password}/0",
               CONVSPARSE_DATA_DIR=str(tmp_path))
    proc = cli("jobs", "status", "job-nope", env=env)
    assert proc.returncode != 0 and "error" in proc.stderr.lower()
    assert PASSWORD not in proc.stdout + proc.stderr
    env = dict(os.environ, CONVSPARSE_BACKEND="opensearch",
               CONVSPARSE_OPENSEARCH_URL=f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}",
               CONVSPARSE_OPENSEARCH_TIMEOUT_S="2")
    proc = cli("index", "describe", "docs", env=env)
    assert proc.returncode != 0
    assert PASSWORD not in proc.stdout + proc.stderr, proc.stderr[-2000:]


# ---------------------------------------------------------------------------- unsafe loads
class _Planted:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_checkpoint_pickle_is_refused(tmp_path):
    from convsparse.training.trainer import Trainer

    marker = tmp_path / "pwned"
    payload = _Planted()
    payload.marker = marker
    ck = tmp_path / "checkpoint"
    ck.mkdir()
    torch.save({"stage": "documents", "step": 3, "evil": payload}, ck / "state.pt")
    model = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(out=tmp_path, cfg=SimpleNamespace(resume=True), device="cpu", log=[])
    with pytest.raises(ValueError, match="refused to load"):
        Trainer._resume(trainer, "documents", model, torch.optim.AdamW(model.parameters()))
    assert not marker.exists()


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    import random

    import numpy as np

    from convsparse.training.trainer import Trainer

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    trainer = SimpleNamespace(out=tmp_path, cfg=SimpleNamespace(resume=True), device="cpu",
                              log=[{"stage": "documents", "step": 1, "loss": 0.5}])
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    Trainer._checkpoint(trainer, "documents", 7, model, opt)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    fresh = SimpleNamespace(out=tmp_path, cfg=SimpleNamespace(resume=True), device="cpu", log=[])
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    assert Trainer._resume(fresh, "documents", other, other_opt) == 7
    assert torch.equal(other.weight, model.weight) and fresh.log == trainer.log
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


# ---------------------------------------------------------------------------- terminal output
def test_printable_escapes_control_characters():
    out = printable(ESCAPES + "\ttab\nline")
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\n" not in out
    assert "\\x1b]0;pwned\\x07" in out and "\\u202e" in out and "\ttab" in out
    assert printable("a\nb", newlines=True) == "a\nb"


def test_search_and_ingest_output_escape_document_text(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    model = ["--model", str(tiny_model_dir)]
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"id": "evil" + ESCAPES, "title": "[bold]T" + ESCAPES,
                               "text": "octopus hearts " + ESCAPES}) + "\n"
                   + json.dumps({"id": "e2\x1b[2J", "text": ""}) + "\n", encoding="utf-8")
    res = runner.invoke(app, ["ingest", str(src), "--index", "docs", "--allow-failures", *model])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "e2\\x1b[2J" in res.output
    conv = json.dumps([{"role": "user", "text": "octopus hearts"}])
    res = runner.invoke(app, ["search", "--index", "docs", "-c", conv, *model])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "\x07" not in res.output and "\u202e" not in res.output
    assert "\\x1b" in res.output and "[bold]T" in res.output  # shown, not interpreted


# ---------------------------------------------------------------------------- max_text_chars
def test_index_documents_enforces_max_text_chars(tmp_path, tiny_student):
    from convsparse.documents import DEFAULT_MAX_TEXT_CHARS
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.integration.client import ConversationalSearch

    client = ConversationalSearch("docs", encoder=tiny_student, backend=EmbeddedBackend(tmp_path))
    report = client.index_documents([{"id": "ok", "text": "short text"},
                                     {"id": "big", "text": "word " * 30}], progress=False,
                                    max_text_chars=100)
    assert report.indexed == 1 and [r[0] for r in report.failures] == ["big"]
    assert "max_text_chars=100" in report.failures[0][1]
    huge = {"id": "huge", "text": "a" * (DEFAULT_MAX_TEXT_CHARS + 1)}
    report = client.index_documents([huge], progress=False)
    assert report.indexed == 0 and "text too long" in report.failures[0][1]
    assert client.backend.count("docs") == 1
