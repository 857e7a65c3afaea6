"""Issue 29 item 2 through a real Redis and a real `celery worker`: a record that cannot be
read, parsed or checked is that record's dead letter; the job finishes (it never stays
`running`), every other record is indexed and the counts add up. The record generator is the
in-process fuzz test's (tests/integration/test_integration_record_faults.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from convsparse.integration.backends.embedded import EmbeddedBackend
from convsparse.workers.submit import run_ingest_job

_spec = importlib.util.spec_from_file_location(
    "record_faults", Path(__file__).parents[1] / "integration" / "test_integration_record_faults.py")
_faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_faults)
record_lines, fuzz_file = _faults.record_lines, _faults.fuzz_file
DEEP_LINE, MAX_TEXT, EVERY_KIND = _faults.DEEP_LINE, _faults.MAX_TEXT, _faults.EVERY_KIND

@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(record_lines(), min_size=2, max_size=10))
@example(lines=EVERY_KIND)
def test_fuzz_celery_ingest_completes_and_counts_add_up(lines, session_worker, helpers,
                                                        tmp_path_factory):
    path, n_lines, n_valid = fuzz_file(tmp_path_factory.mktemp("cfz") / "f.jsonl", lines)
    index = f"cfz{abs(hash(path)) % 10**9}"
    status = run_ingest_job(path, index=index, settings=session_worker.settings, progress=False,
                            options=helpers.fail_fast(3, max_text_chars=MAX_TEXT))
    assert status.state == "finished", status
    assert (status.records_read, status.indexed, status.failed) == (n_lines, n_valid,
                                                                     n_lines - n_valid), status
    assert len(status.dead_letter) == n_lines - n_valid
    if n_valid:
        assert EmbeddedBackend(session_worker.settings.data_dir).count(index) == n_valid


def test_deep_record_between_valid_records_celery_cli(session_worker, helpers, tiny_model_dir,
                                                      tmp_path):
    from convsparse.cli import app

    source = tmp_path / "deep.jsonl"
    source.write_text('{"id":"a","text":"octopus hearts"}\n' + DEEP_LINE + "\n"
                      '{"id":"b","text":"squid ink"}\n', encoding="utf-8")
    env = helpers.worker_env(session_worker.settings.redis_url, tiny_model_dir,
                             session_worker.settings.data_dir)
    result = CliRunner().invoke(app, ["ingest", str(source), "--index", "deepcel", "--via",
                                      "celery", "--allow-failures"], env=env)
    out = result.output
    assert result.exit_code == 0 and "Traceback" not in out, out
    assert "finished" in out and "read 3" in out and "indexed 2" in out and "failed 1" in out, out
    assert "line 2: nested too deeply" in out, out
    assert EmbeddedBackend(session_worker.settings.data_dir).count("deepcel") == 2
