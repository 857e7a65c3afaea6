"""The public surface: every name in `convsparse.__all__` resolves, and every error is a
`ConvsparseError`."""

from __future__ import annotations

import inspect

import convsparse
from convsparse import errors


def test_every_public_name_resolves():
    for name in convsparse.__all__:
        assert getattr(convsparse, name) is not None, name


def test_every_error_class_is_a_convsparse_error():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, Exception) and c.__module__ == errors.__name__]
    assert len(classes) >= 11
    for cls in classes:
        assert issubclass(cls, convsparse.ConvsparseError), cls
        assert cls.__name__ in errors.__doc__, f"{cls.__name__} missing from the tree"


#: The public surface, written out: adding or removing a public name is a decision, made here
#: and in `convsparse/__init__.py` together (and recorded in CHANGELOG.md).
PUBLIC = {
    "Backend", "BackendError", "ConversationalSearch", "ConvsparseError", "EmbeddedBackend",
    "EmptyQueryError", "Encoder", "FingerprintMismatchError", "Hit", "IndexExistsError",
    "IndexNotFoundError", "IndexReport", "InvalidCollectionError", "InvalidConversationError",
    "InvalidDocumentError", "InvalidIndexNameError", "InvalidTermMapError", "OpenSearchBackend",
    "PruningPolicy", "SearchResult", "Settings", "SourceRecord", "TermMap", "TooManyClausesError",
    "UnsupportedModelError", "UsageError", "WorkerUnavailableError", "document_text",
    "load_collection", "load_encoder", "load_student", "open_backend", "sample_collection",
}


def test_all_is_exactly_the_public_surface():
    import subprocess
    import sys

    assert set(convsparse.__all__) == PUBLIC and len(convsparse.__all__) == len(PUBLIC)
    assert set(convsparse._LAZY) == PUBLIC  # every lazy name is public, and only those
    for name in PUBLIC:
        assert getattr(convsparse, name).__module__.startswith("convsparse."), name
    # what a fresh `import convsparse` offers, modules aside, is `__all__`; star-import gives it
    code = ("import types, convsparse\n"
            "print(sorted(n for n in dir(convsparse) if not n.startswith('_') and n != 'annotations'"
            " and not isinstance(getattr(convsparse, n), types.ModuleType)))\n"
            "ns = {}\nexec('from convsparse import *', ns)\n"
            "print(sorted(n for n in ns if n != '__builtins__'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    listed, starred = out.stdout.strip().splitlines()
    assert listed == starred == repr(sorted(PUBLIC))


def test_version_is_defined_once():
    """pyproject.toml's `version` is the only one: the package reads it from its metadata."""
    import re
    from importlib.metadata import version
    from pathlib import Path

    assert convsparse.__version__ == version("convsparse")
    root = Path(convsparse.__file__).parents[1]
    for path in Path(convsparse.__file__).parent.rglob("*.py"):
        assert not re.search(r"^__version__\s*=", path.read_text(encoding="utf-8"), re.M), path
    if (root / "pyproject.toml").exists():  # a checkout
        assert re.search(rf'^version = "{re.escape(convsparse.__version__)}"$',
                         (root / "pyproject.toml").read_text(encoding="utf-8"), re.M)
