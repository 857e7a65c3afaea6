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
