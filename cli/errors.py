"""How an exception becomes what a user sees: one line with the fix, and an exit code.

- 0: success; 1: a runtime error (an index that does not exist, another encoder's index, Redis
  or a worker not there, a full or read-only disk) or, for `ingest`, any record that failed
  (unless `--allow-failures`); 2: a usage error (an argument, option, path, file or
  conversation that cannot be used as given, or a path that needs an extra that is not
  installed: `convsparse.extras`).
- Expected errors (`ConvsparseError`, `OSError`, Redis connection errors) print one line,
  ``error: ...``, on stderr; `--debug` (or ``CONVSPARSE_DEBUG=1``) re-raises them so the
  traceback shows. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os

USAGE = 2
RUNTIME = 1


def debug_enabled() -> bool:
    return os.environ.get("CONVSPARSE_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def describe(error: BaseException) -> tuple[str, int] | None:
    """(one-line message, exit code) for an expected error; None for a bug."""
    from convsparse.errors import ConvsparseError

    if isinstance(error, ConvsparseError):
        return _one_line(str(error)), USAGE if isinstance(error, ValueError) else RUNTIME
    if isinstance(error, OSError) and not _is_redis_error(error):
        where = f" {error.filename!r}" if getattr(error, "filename", None) else ""
        what = error.strerror or str(error)
        fix = {
            errno.ENOSPC: "free some space or point CONVSPARSE_DATA_DIR / --data-dir elsewhere",
            errno.EROFS: "the file system is read-only; point CONVSPARSE_DATA_DIR / --data-dir "
                         "at a writable folder",
            errno.EACCES: "check the permissions, or use another folder",
            errno.EPERM: "check the permissions, or use another folder",
            errno.ENOENT: "check the path",
            errno.EISDIR: "pass a file, not a folder",
            errno.ENOTDIR: "check the path",
        }.get(error.errno or 0, "")
        code = USAGE if error.errno in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR) else RUNTIME
        return _one_line(f"{what}{where}" + (f"; {fix}" if fix else "")), code
    if type(error).__name__ == "ValidationError" and type(error).__module__.startswith("pydantic"):
        return _settings_error(error), USAGE
    if type(error).__name__ == "AuthenticationError" and \
            (type(error).__module__ or "").startswith("redis"):
        return _one_line(f"Redis refused the login ({error}); put the right password in "
                         "CONVSPARSE_REDIS_URL (redis://:PASSWORD@HOST:PORT/DB)"), RUNTIME
    if _is_redis_error(error):
        return _one_line(f"Redis is unreachable ({error}); start it, or point "
                         "CONVSPARSE_REDIS_URL at it"), RUNTIME
    if isinstance(error, ImportError):
        from convsparse.extras import missing_extra_message

        message = missing_extra_message(error)
        if message is not None:
            return message, USAGE
    return None


def click_error_kind(error: BaseException) -> str | None:
    """"usage" for a click usage error (bad value, missing argument, unknown option), "other"
    for any other click exception (help requested on a group without arguments...), None
    otherwise. By class name: typer may carry its own copy of click, whose classes differ."""
    names = {c.__name__ for c in type(error).__mro__}
    if "ClickException" not in names:
        return None
    return "usage" if "UsageError" in names and "NoArgsIsHelpError" not in names else "other"


def usage_error_line(error) -> str:
    """A click usage error (a bad option value, a missing argument, an unknown option) as one
    line naming the command and where its help is, instead of typer's five-line box."""
    ctx = getattr(error, "ctx", None)
    command = ctx.command_path if ctx is not None else "convsparse"
    return _one_line(f"{command}: {error.format_message()} (see `{command} --help`)")


def _settings_error(error) -> str:
    """A pydantic error about settings/options, without pydantic's wording or its URL."""
    from convsparse.redaction import mask_secrets

    parts = []
    for err in error.errors()[:3]:
        name = ".".join(str(p) for p in err.get("loc", ())) or "value"
        ctx = err.get("ctx") or {}
        if "expected" in ctx:
            reason = f"must be {ctx['expected']}"
        else:
            reason = str(ctx.get("error") or err.get("msg", "is invalid"))
        value = err.get("input")
        shown = "" if name.endswith("_url") else f" {mask_secrets(repr(value))}"  # in `reason`
        where = f"CONVSPARSE_{name.upper()}" if name.endswith("_url") else \
            f"--{name.replace('_', '-')} or CONVSPARSE_{name.upper()}"  # no --*-url options
        parts.append(f"{name}{shown}: {reason} ({where})")
    return "invalid setting " + "; ".join(parts)


def _is_redis_error(error: BaseException) -> bool:
    module = type(error).__module__ or ""
    return module.startswith(("redis", "kombu")) and "Connection" in type(error).__name__ or \
        (module.startswith("kombu") and isinstance(error, OSError))


def _one_line(message: str) -> str:
    return " ".join(message.split())


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, credentials masked and control characters escaped."""
    from rich.console import Console
    from rich.markup import escape

    from convsparse.redaction import mask_secrets
    from convsparse.terminal import printable

    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(printable(mask_secrets(message)))}", highlight=False)
