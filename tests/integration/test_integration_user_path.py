"""Issue 12, "the user's path", through the CLI (typer's CliRunner, the tiny student): every
expected error is one line with the fix and exit 2 (usage) or 1 (runtime), reported before the
model loads; no silent wrong answers. One test (or more) per numbered finding."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from convsparse.cli import app

runner = CliRunner()
NO_MODEL = ["--model", "/does/not/exist/model"]  # loading it would fail: proves nothing loads


@pytest.fixture
def env(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVSPARSE_DEBUG", raising=False)
    return ["--model", str(tiny_model_dir)]


def run(*args, input=None):
    result = runner.invoke(app, [str(a) for a in args], input=input)
    return result.exit_code, result.output


def one_line_error(out: str) -> str:
    """The single `error:` line of `out` (and no traceback)."""
    assert "Traceback" not in out and "──────" not in out, out
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out
    return lines[0]


@pytest.fixture
def docs_index(env, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "text": "Lisbon is the capital of Portugal"}\n'
                   '{"id": "c", "text": "Octopuses have three hearts"}\n', encoding="utf-8")
    code, out = run("ingest", src, "--index", "docs", *env)
    assert code == 0, out
    return "docs"


# -- finding 2: a mistyped conversation file name is never searched as text ---------------------

def test_missing_conversation_file_is_an_error_not_a_query(docs_index, env):
    code, out = run("search", "--index", docs_index, "-c", "conv.json", *env)
    assert code == 2 and "'conv.json' is neither JSON nor an existing file" in one_line_error(out)
    code, out = run("search", "--index", docs_index, "-c", "@conv.json", *env)
    assert code == 2 and "no such file" in one_line_error(out)


def test_conversation_from_at_file_stdin_json_and_path(docs_index, env, tmp_path):
    conv = json.dumps([{"role": "user", "text": "How many hearts do octopuses have?"}])
    f = tmp_path / "conv.json"
    f.write_text(conv, encoding="utf-8")
    for value, stdin in ((conv, None), (f"@{f}", None), (str(f), None), ("-", conv),
                         ('"octopus hearts"', None)):
        code, out = run("search", "--index", docs_index, "-c", value, "--json", *env, input=stdin)
        assert code == 0, (value, out)
        data, _ = json.JSONDecoder().raw_decode(out[out.index('{"hits"'):])
        assert data["hits"][0]["id"] == "c"


# -- finding 4: one line with the fix instead of a traceback --------------------------------------

def test_json_source_names_the_cli_format_option(env, tmp_path):
    src = tmp_path / "docs.json"
    src.write_text('{"id": "a", "text": "Lisbon"}\n', encoding="utf-8")
    code, out = run("ingest", src, "--index", "docs", *NO_MODEL)
    line = one_line_error(out)
    assert code == 2 and "--format jsonl" in line and "format=" in line
    code, out = run("ingest", src, "--index", "docs", "--format", "jsonl", *env)
    assert code == 0 and "indexed 1" in out, out
    code, out = run("ingest", src, "--index", "docs", "--format", "xml", *NO_MODEL)
    assert code == 2 and "unknown format 'xml'" in one_line_error(out)


def test_latin1_and_deeply_nested_conversation_files(docs_index, env, tmp_path):
    latin = tmp_path / "latin.json"
    latin.write_bytes('[{"role": "user", "text": "caf\u00e9"}]'.encode("latin-1"))
    code, out = run("search", "--index", docs_index, "-c", latin, *NO_MODEL)
    assert code == 2 and "is not UTF-8" in one_line_error(out)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 10000 + "]" * 10000, encoding="utf-8")
    code, out = run("search", "--index", docs_index, "-c", deep, *NO_MODEL)
    assert code == 2 and "nested too deeply" in one_line_error(out)


def test_wrong_collection_path_and_missing_index_in_tune(env):
    code, out = run("evaluate", "/no/such/collection", *NO_MODEL)
    assert code == 2 and "/no/such/collection" in one_line_error(out)
    code, out = run("tune", "sample", "--index", "nope", *NO_MODEL)
    assert code == 1 and "index 'nope' does not exist" in one_line_error(out)


def test_invalid_index_name_in_ingest_and_search(env, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "text": "Lisbon"}\n', encoding="utf-8")
    code, out = run("ingest", src, "--index", "Bad Name!", *NO_MODEL)
    assert code == 2 and "invalid index name 'Bad Name!'" in one_line_error(out)
    code, out = run("search", "--index", "Bad Name!", "-c", '"x"', *NO_MODEL)
    assert code == 2 and "invalid index name" in one_line_error(out)


def test_read_only_data_dir_is_one_line(env, tmp_path):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root ignores permissions
        pytest.skip("running as root: a read-only folder is still writable")
    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "text": "Lisbon"}\n', encoding="utf-8")
    code, out = run("ingest", src, "--index", "docs", "--data-dir", ro / "sub", *env)
    assert code == 1 and "ermission denied" in one_line_error(out)


def test_disk_errors_become_one_line(monkeypatch, env, tmp_path):
    """ENOSPC / EROFS while writing: one line naming the fix, exit 1."""
    import errno

    from convsparse.integration.backends.embedded import EmbeddedBackend

    for code_, fix in ((errno.ENOSPC, "free some space"), (errno.EROFS, "read-only")):
        def full(self, name, ops, what, *_, _e=code_, **__):
            raise OSError(_e, os_strerror(_e), str(tmp_path / "data" / name / "log-0.jsonl"))

        monkeypatch.setattr(EmbeddedBackend, "_commit", full)
        src = tmp_path / "docs.jsonl"
        src.write_text('{"id": "a", "text": "Lisbon"}\n', encoding="utf-8")
        code, out = run("ingest", src, "--index", "docs", *env)
        assert code == 1 and fix in one_line_error(out), out


def os_strerror(code: int) -> str:
    import os

    return os.strerror(code)


def test_debug_shows_the_traceback(env, monkeypatch):
    result = runner.invoke(app, ["--debug", "search", "--index", "nope", "-c", "conv.json", *NO_MODEL])
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "UsageError"
    monkeypatch.setenv("CONVSPARSE_DEBUG", "1")
    result = runner.invoke(app, ["search", "--index", "nope", "-c", "conv.json", *NO_MODEL])
    assert type(result.exception).__name__ == "UsageError"


# -- finding 5: every check before the model loads; quickstart reuses its index ----------------

@pytest.mark.parametrize("args, code, message", [
    (["search", "--index", "docs", "-c", "[]"], 2, "no turns"),
    (["search", "--index", "nope", "-c", '"hello"'], 1, "index 'nope' does not exist"),
    (["search", "--index", "docs", "-c", '"x"', "--top-k", "0"], 2, "--top-k 0: must be >= 1"),
    (["ingest", "/no/such/file.jsonl", "--index", "docs"], 2, "does not exist"),
    (["index", "create", "Bad Name!"], 2, "invalid index name"),
])
def test_checks_come_before_the_model(env, args, code, message):
    run("index", "create", "docs", "--fingerprint", "fp-x")
    got, out = run(*args, *NO_MODEL)
    assert got == code and message in one_line_error(out), out


def test_quickstart_reuses_its_index(env, tmp_path):
    code, out = run("quickstart", "--data-dir", tmp_path / "qs", "-k", "1", "--conversations", "1", *env)
    assert code == 0 and "indexed 60 passages" in out, out
    code, out = run("quickstart", "--data-dir", tmp_path / "qs", "-k", "1", "--conversations", "1", *env)
    assert code == 0 and "reusing the sample index" in out and "indexed 60" not in out, out


# -- finding 6: exit codes ---------------------------------------------------------------------

def test_index_delete_missing_ok_says_nothing_was_deleted(env):
    code, out = run("index", "delete", "absent", "--missing-ok")
    assert code == 0 and "does not exist; nothing deleted" in out and "deleted index" not in out
    code, out = run("index", "delete", "absent")
    assert code == 1 and "does not exist" in one_line_error(out)


def test_exit_codes_are_in_help():
    code, out = run("--help")
    assert code == 0 and "Exit codes" in out
    code, out = run("ingest", "--help")
    assert "--allow-failures" in out and "Exit codes" in out


# -- finding 7: chat message formats -------------------------------------------------------------

def test_openai_messages_are_searched(docs_index, env):
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "name": "ana", "content": [{"type": "text", "text": "Octopuses?"}]},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "t1"}]},
                {"role": "tool", "tool_call_id": "t1", "content": "{\"weather\": \"sunny\"}"},
                {"role": "assistant", "content": "They are clever animals."},
                {"role": "user", "content": "How many hearts do they have?"}]
    for conv in (messages, {"messages": messages}):
        code, out = run("search", "--index", docs_index, "-c", json.dumps(conv), "--json", *env)
        assert code == 0, out
        data, _ = json.JSONDecoder().raw_decode(out[out.index('{"hits"'):])
        assert data["hits"][0]["id"] == "c"


def test_a_string_in_place_of_turns_is_an_error(docs_index, env):
    code, out = run("search", "--index", docs_index, "-c", '{"turns": "nope"}', *NO_MODEL)
    assert code == 2 and '"turns" must be a list of turns' in one_line_error(out)


# -- finding 8: no silent empty answers -----------------------------------------------------------

@pytest.mark.parametrize("value, message", [("inf", "must be a finite number"),
                                            ("1e300", "kept 0 of")])
def test_pruning_that_removes_every_term_is_an_error(docs_index, env, value, message):
    code, out = run("search", "--index", docs_index, "-c", '"octopus hearts"', "--min-weight", value, *env)
    assert code == 2 and message in one_line_error(out), out


@pytest.mark.parametrize("value, kind", [("null", "null"), ("42", "number"), ("true", "literal")])
def test_json_scalars_are_not_searched_as_text(docs_index, env, value, kind):
    code, out = run("search", "--index", docs_index, "-c", value, *NO_MODEL)
    assert code == 2 and kind in one_line_error(out), out


# -- finding 9: polish ----------------------------------------------------------------------------

def test_ingest_report_keeps_line_numbers_and_says_not_valid_json(env, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "text": "Lisbon"}\n{"id": "b", "text": ""}\n{"id": "x", broken\n',
                   encoding="utf-8")
    code, out = run("ingest", src, "--index", "docs", "--allow-failures", *env)
    assert code == 0, out
    assert "failed b: line 2: empty text" in out
    assert "failed x: line 3: not valid JSON" in out and "Expecting" not in out.split("not valid JSON")[0]


def test_ingest_progress_bar_has_a_total(env, tmp_path):
    from convsparse.sources import count_records

    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "text": "Lisbon"}\n\n{"id": "b", "text": "Porto"}', encoding="utf-8")
    assert count_records(src) == 3  # lines, a blank one included: an upper bound is enough
    csv = tmp_path / "docs.csv"
    csv.write_text("id,text\na,Lisbon\nb,Porto\n", encoding="utf-8")
    assert count_records(csv) == 2
    result = runner.invoke(app, ["ingest", str(src), "--index", "docs", *env])
    assert "/3" in result.output, result.output  # "2/3" or "3/3": the bar knows the total


def test_conversation_errors_have_no_pydantic_wording():
    from convsparse.conversation import parse_conversation
    from convsparse.errors import InvalidConversationError

    for bad, expected in (([{"role": "user"}], "field 'text' is missing"),
                          ([{"role": "user", "text": 3}], "field 'text' is a int, expected a string"),
                          ([{"role": "robot", "text": "hi"}], "roles allowed")):
        with pytest.raises(InvalidConversationError) as e:
            parse_conversation(bad)
        message = str(e.value)
        assert expected in message and "pydantic" not in message and "http" not in message
        assert "Field required" not in message and "Input should" not in message
        if "role" not in expected and "roles" not in expected:
            assert "roles allowed" not in message


def test_evaluate_table_is_not_cut_at_80_columns(monkeypatch, capsys):
    from convsparse.cli.evaluation import _print_table

    monkeypatch.setenv("COLUMNS", "80")
    row = {"System": "student raw", "Query view": "raw", "Turns": "12", "MRR@10": "0.5123",
           "nDCG@3": "0.4567", "R@10": "0.8123", "R@100": "0.9876", "FLOPS": "12.34",
           "Q terms": "45.6", "D terms": "123.4", "p50 ms": "1.23", "p95 ms": "4.56"}
    _print_table([row], "sample")
    out = capsys.readouterr().out
    assert "…" not in out and all(v in out for v in row.values())


def test_invalid_settings_are_one_line_without_pydantic_urls(env, monkeypatch):
    code, out = run("search", "--index", "x", "-c", '"a"', "--runtime", "bogus")
    line = one_line_error(out)
    assert code == 2 and "runtime 'bogus': must be 'torch' or 'onnx'" in line and "http" not in line
    monkeypatch.setenv("CONVSPARSE_BACKEND", "nope")
    code, out = run("index", "list")
    assert code == 2 and "CONVSPARSE_BACKEND" in one_line_error(out)
