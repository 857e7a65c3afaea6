"""`build_ann` under faults (issue 29 item 4): concurrent builds in two processes, a build
SIGKILLed before it published, orphans left behind.

The builds run in real processes. To put both builds in the window that broke them (each had
saved its file, neither had published), the child wraps seismic's ``SeismicIndex`` so that
``save`` waits, after writing the file, for the other build's file (up to 5 s); the
second build then waits one more second before publishing. Without the build lock the first
build removed the second's file and the second published an ``ann.json`` naming it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.embedded import EmbeddedBackend, ann
from convsparse.termmap import TermMap

pytest.importorskip("seismic")

N = 300
QUERY = TermMap({"common": 1.0, "t7": 2.0, "t11": 0.5})


def docs(n: int = N) -> list[IndexedDocument]:
    return [IndexedDocument(f"d{i}", TermMap({f"t{i % 53}": 1.0 + i % 5, f"u{i % 17}": 0.5, "common": 0.1}))
            for i in range(n)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ann-faults")
    be = EmbeddedBackend(root, durable=False)
    be.create_index("i", fingerprint="fp")
    list(be.upsert("i", docs()))
    be.close()
    return root


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(pristine, dst)
    return dst


BUILDER = textwrap.dedent("""
    import os, signal, sys, time
    import seismic
    from convsparse.integration.backends.embedded import EmbeddedBackend

    root, role, action = sys.argv[1], sys.argv[2], sys.argv[3]
    folder = os.path.join(root, "i")
    real = seismic.SeismicIndex

    class Saved:
        def __init__(self, index):
            self._index = index

        def save(self, path):
            self._index.save(path)
            open(os.path.join(root, f"saved-{role}"), "w").close()
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            other = os.path.join(root, "saved-" + ("b" if role == "a" else "a"))
            deadline = time.time() + 5
            while not os.path.exists(other) and time.time() < deadline:
                time.sleep(0.05)
            if role == "b":
                time.sleep(1.0)

        def __getattr__(self, name):
            return getattr(self._index, name)

    class Index:
        load = staticmethod(real.load)

        @staticmethod
        def build_from_dataset(*args, **kwargs):
            return Saved(real.build_from_dataset(*args, **kwargs))

    seismic.SeismicIndex = Index
    info = EmbeddedBackend(root).build_ann("i", threads=1)
    print(info.file, flush=True)
""")


def builder(root: Path, role: str, action: str = "build") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(root), role, action],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ann_files(root: Path) -> set[str]:
    return {p.name for p in (root / "i").glob("ann-*")}


def published(root: Path) -> str:
    return json.loads((root / "i" / "ann.json").read_text())["file"]


def test_concurrent_builds_are_serialised_and_publish_a_file_that_exists(root):
    """Issue 29 item 4: both builds exited 0 and ann.json named a file the other build removed."""
    a = builder(root, "a")
    b = builder(root, "b")
    out_a, err_a = a.communicate(timeout=180)
    out_b, err_b = b.communicate(timeout=180)
    assert a.returncode == 0 and b.returncode == 0, err_a[-2000:] + err_b[-2000:]
    file = published(root)
    assert file in (out_a.strip(), out_b.strip())
    assert ann_files(root) == {file}  # the published one, nothing else
    be = EmbeddedBackend(root)
    assert be.describe_index("i").extra["ann"]["status"] == "ready"
    assert [h.id for h in be.search("i", QUERY, k=10, approximate=True)] == \
        [h.id for h in be.search("i", QUERY, k=10)]


@pytest.mark.parametrize("first_build", [False, True])
def test_build_killed_before_publishing_leaves_an_orphan_removed_at_open(root, first_build):
    """Issue 29 items 4 and 9: a SIGKILLed build-ann left its file (299 MB in the fault run)
    until the next build; the next process that opens the index removes it."""
    be = EmbeddedBackend(root)
    old = be.build_ann("i", threads=1).file if first_build else None
    be.close()
    proc = builder(root, "a", "kill")
    proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL
    orphans = ann_files(root) - {old}
    assert len(orphans) == 1  # what the killed build left
    again = EmbeddedBackend(root)
    assert again.count("i") == N  # opening removes it
    assert ann_files(root) == ({old} if old else set())
    if old:  # the published build is untouched and still searched
        assert published(root) == old
        assert again.describe_index("i").extra["ann"]["status"] == "ready"
        assert again.search("i", QUERY, k=5, approximate=True)


def test_orphans_of_a_running_build_are_left_alone(root):
    """Cleaning at open must not remove the file of a build that runs now (not yet published)."""
    folder = root / "i"
    running = folder / "ann-0123456789ab.index.seismic"
    with ann.build_lock(folder):
        running.write_bytes(b"x" * 1000)
        (folder / ".ann.json.cafe.tmp").write_text("{")
        assert EmbeddedBackend(root).count("i") == N
        assert running.exists()
    assert EmbeddedBackend(root).count("i") == N
    assert not running.exists() and not (folder / ".ann.json.cafe.tmp").exists()


def test_next_build_removes_orphans(root):
    be = EmbeddedBackend(root)
    assert be.count("i") == N  # opened before the orphan appears
    orphan = root / "i" / "ann-00000000dead.index.seismic"
    orphan.write_bytes(b"x" * 1000)
    info = be.build_ann("i", threads=1)
    assert ann_files(root) == {info.file}


def test_killed_after_publishing_keeps_the_new_build_and_drops_the_old(root, tmp_path):
    """Killed between publishing ann.json and removing the previous file."""
    be = EmbeddedBackend(root)
    old = be.build_ann("i", threads=1).file
    code = textwrap.dedent(f"""
        import os, signal
        from convsparse.integration.backends.embedded import faults
        from convsparse.integration.backends.embedded import EmbeddedBackend

        def kill(step):
            if step == "ann:published":
                os.kill(os.getpid(), signal.SIGKILL)

        faults.fault_hook = kill
        EmbeddedBackend({str(root)!r}).build_ann("i", threads=1)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL
    new = published(root)
    assert new != old and ann_files(root) == {old, new}
    again = EmbeddedBackend(root)
    assert again.count("i") == N and ann_files(root) == {new}
    assert again.describe_index("i").extra["ann"]["status"] == "ready"


def test_read_only_open_leaves_files_alone(root, read_only_view):
    orphan = root / "i" / "ann-00000000beef.index.seismic"
    orphan.write_bytes(b"x" * 10)
    with read_only_view(root) as view:
        ro = EmbeddedBackend(view)
        assert ro.count("i") == N
        ro.close()
    assert orphan.exists() and not (root / "i" / ann.LOCK_NAME).exists()

