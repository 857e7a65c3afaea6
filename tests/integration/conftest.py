"""Fixtures for the integration tests: an embedded backend in a temp dir, sample corpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import pytest


@pytest.fixture
def backend(tmp_path):
    from convsparse.integration.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(tmp_path / "data")


@pytest.fixture(scope="session")
def sample_corpus():
    path = resources.files("convsparse") / "sample_data" / "corpus.jsonl"
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@pytest.fixture(scope="session")
def sample_conversations():
    path = resources.files("convsparse") / "sample_data" / "conversations.jsonl"
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory, tiny_student, sample_corpus):
    """(root_dir, index name) of the sample corpus indexed with the tiny student."""
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.integration.client import ConversationalSearch

    root = tmp_path_factory.mktemp("sample-index")
    client = ConversationalSearch("sample", encoder=tiny_student, backend=EmbeddedBackend(root))
    report = client.index_documents(sample_corpus, progress=False)
    assert report.indexed == len(sample_corpus) and not report.failed
    return root, "sample"


@pytest.fixture
def read_only_view(tmp_path):
    """A context manager: a folder seen through a read-only bind mount (as root), or a copy with
    write permission removed (as another user)."""

    @contextmanager
    def view_of(src: Path):
        """`src` seen through a read-only bind mount (root), or with write permission removed."""
        view = tmp_path / "ro-view"
        view.mkdir()
        if os.geteuid() == 0:
            ok = subprocess.run(["mount", "--bind", str(src), str(view)], capture_output=True).returncode == 0
            if ok and subprocess.run(["mount", "-o", "remount,bind,ro", str(view)],
                                     capture_output=True).returncode != 0:
                subprocess.run(["umount", str(view)], capture_output=True)
                ok = False
            if not ok:
                pytest.skip("running as root (chmod does not bind) and mount is not permitted")
            try:
                yield view
            finally:
                if subprocess.run(["umount", str(view)], capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", str(view)], check=True)
            return
        view.rmdir()
        shutil.copytree(src, view)
        paths = [p for p in view.rglob("*")] + [view]
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield view
        finally:
            for p in paths:
                p.chmod(0o755 if p.is_dir() else 0o644)

    return view_of
