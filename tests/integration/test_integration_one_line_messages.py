"""Issue 29 items 9 and 10 (in process): usage errors are one line naming the command, exit 2
(not typer's five-line box); a conversation is bounded by `MAX_CONVERSATION_CHARS` with a
one-line error in the client and the CLI; a write error's hint is read from the error's errno,
not from its text, which holds the path (an index named `full` on a read-only disk is not told
to free disk space)."""

from __future__ import annotations

import errno
import json
import time

import pytest
from typer.testing import CliRunner

from convsparse.cli import app
from convsparse.errors import InvalidConversationError
from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.embedded import EmbeddedBackend, IndexWriteError, faults
from convsparse.termmap import TermMap


def cli(args, env=None):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env or {})
    return result.exit_code, result.output


@pytest.mark.parametrize("args, expect", [
    (["search", "--index", "x", "-c", "hi", "-k", "0"],
     "error: convsparse search: Invalid value for '--k' / '-k':"),
    (["jobs", "status"], "error: convsparse jobs status: Missing argument 'job_id'."),
    (["jobs", "status", "--bogus", "x"], "error: convsparse jobs status: No such option: --bogus"),
    (["encode", "--top", "0", "x"], "error: convsparse encode: Invalid value for '--top'"),
    (["--bogus"], "error: convsparse: No such option: --bogus"),
])
def test_usage_errors_are_one_line_exit_2(args, expect):
    code, out = cli(args)
    assert code == 2, out
    assert len(out.strip().splitlines()) == 1 and out.startswith(expect), out
    assert "╭" not in out and out.rstrip().endswith("--help`)"), out


def test_group_without_command_still_shows_its_help():
    code, out = cli(["jobs"])
    assert "status" in out and "retry" in out and "error:" not in out


def test_conversation_over_the_limit_is_one_line_in_cli_and_client(tiny_model_dir, tmp_path):
    from convsparse.integration.client import ConversationalSearch

    huge = [{"role": "user", "text": "w " * (6 * 1024 * 1024)}]  # a 12 MB turn
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(huge), encoding="utf-8")
    env = {"CONVSPARSE_MODEL": str(tiny_model_dir), "CONVSPARSE_RUNTIME": "torch",
           "CONVSPARSE_DEVICE": "cpu", "CONVSPARSE_DATA_DIR": str(tmp_path / "data")}
    start = time.perf_counter()
    code, out = cli(["search", "--index", "docs", "-c", f"@{path}"], env)
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert "too long: 12,582,912 characters in its turns, above the limit of 100,000" in out, out
    assert time.perf_counter() - start < 10

    backend = EmbeddedBackend(tmp_path / "data")
    backend.create_index("docs", fingerprint="fp")
    searcher = ConversationalSearch("docs", backend=backend, encoder=_NeverCalled())
    with pytest.raises(InvalidConversationError, match="MAX_CONVERSATION_CHARS"):
        searcher.search(huge)
    with pytest.raises(InvalidConversationError, match="too long"):
        searcher.search("x" * 100_001)  # MAX_CONVERSATION_CHARS + 1


class _NeverCalled:
    """An encoder the size check must stop before (any encode call fails the test)."""

    fingerprint = "fp"
    vocabulary_name = "none"

    def encode_conversation(self, conversation):
        raise AssertionError("the conversation reached the encoder")


def test_write_error_hint_reads_the_errno_not_the_path(tmp_path):
    backend = EmbeddedBackend(tmp_path / "full")  # a folder, and an index, named "full"
    backend.create_index("full", fingerprint="fp")
    target = str(tmp_path / "full" / "full" / "index.sqlite")

    def read_only(step):
        if step.startswith("write"):
            raise OSError(errno.EROFS, "Read-only file system", target)

    faults.fault_hook = read_only
    try:
        with pytest.raises(IndexWriteError) as e:
            list(backend.upsert("full", [IndexedDocument("a", TermMap({"paris": 1.0}), {})]))
    finally:
        faults.fault_hook = None
    message = str(e.value)
    assert "read-only" in message and "free disk space" not in message, message
