"""`mask_secrets`: the one place credentials are taken out of messages and log lines.

Masks the password of every URL (``redis://:pw@host``, ``https://user:pw@host``) and every
secret value set in the environment (``CONVSPARSE_*PASSWORD*``, ``*_SECRET*``, ``*_TOKEN*``,
``*_KEY*``) or passed in. Used by every error the CLI prints and, through `MaskingFilter`, by
every log record of the ``convsparse`` loggers.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]+)@")
_SECRET_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|(?:^|_)KEY$|_KEY_|PASSWD", re.IGNORECASE)


def _env_secrets() -> list[str]:
    out = []
    for name, value in os.environ.items():
        if name.startswith("CONVSPARSE_") and value and len(value) >= 4:
            if _SECRET_ENV.search(name):
                out.append(value)
            for m in _URL_PASSWORD.finditer(value):  # e.g. CONVSPARSE_REDIS_URL
                out.append(m.group("pw"))
    return out


def mask_secrets(text: object, secrets: Iterable[str | None] = ()) -> str:
    """`text` with URL passwords and known secret values replaced by ``***``."""
    s = str(text)
    s = _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", s)
    values = [v for v in (*secrets, *_env_secrets()) if v and len(v) >= 4]
    for value in sorted(set(values), key=len, reverse=True):
        s = s.replace(value, MASK)
    return s


class MaskingFilter(logging.Filter):
    """Masks secrets in a log record's message (and its arguments) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = mask_secrets(text)
            record.exc_info = None
        return True


_installed: dict[str, bool] = {}


def install_log_masking() -> None:
    """Mask secrets in every log record this process creates, whichever logger or handler
    (a log-record factory: handlers Celery sets up later are covered too). Idempotent."""
    if _installed.get("factory"):
        return
    previous = logging.getLogRecordFactory()
    masking = MaskingFilter()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        masking.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed["factory"] = True


__all__ = ["MASK", "MaskingFilter", "install_log_masking", "mask_secrets"]
