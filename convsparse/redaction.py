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
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://")
#: A URL with credentials inside free text: the password runs (within the line) to the first
#: ``@`` that a host follows, so one holding ``@ / # ? :`` or spaces is masked whole; it errs
#: on the side of masking too much. Known URLs (the environment's, or passed in) are masked
#: exactly (`url_password`).
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>(?:(?!://)[^\n])*?)@"
    r"(?=[^\s@/?#]+(?:[/?#\s]|$))")
_SECRET_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|(?:^|_)KEY$|_KEY_|PASSWD", re.IGNORECASE)


def url_password(url: str) -> str | None:
    """The password in `url`, whatever characters it holds (unencoded space, ``@``, ``/``,
    ``#``, ``?``, ``:``): RFC 3986 puts the userinfo before the authority's last ``@``, and
    the password after the userinfo's first ``:``. A userinfo without ``:`` is taken as a
    password for Redis URLs (``redis://TOKEN@host``), as a user name otherwise."""
    m = _SCHEME.match(url.strip())
    if not m:
        return None
    rest = url.strip()[m.end():]
    at = rest.rfind("@")
    if at < 0:
        return None
    userinfo = rest[:at]
    if ":" in userinfo:
        return userinfo.split(":", 1)[1] or None
    return userinfo or None if m.group(0).lower().startswith(("redis", "unix")) else None


def mask_url(url: str) -> str:
    """`url` with its password (`url_password`) replaced by ``***``."""
    password = url_password(url)
    if password is None:
        return url
    m = _SCHEME.match(url.strip())
    assert m is not None  # url_password found a scheme
    rest = url.strip()[m.end():]
    at = rest.rfind("@")
    user = rest[:at].split(":", 1)[0] if ":" in rest[:at] else ""
    return f"{m.group(0)}{user}:{MASK}@{rest[at + 1:]}"


def _url_secrets(value: str) -> list[str]:
    """The password of `value` (a URL) as written and percent-decoded, and the whole URL's
    userinfo-to-host span, so any text that repeats either is masked."""
    password = url_password(value)
    if not password:
        return []
    from urllib.parse import unquote

    return [password, unquote(password)]


def _env_secrets() -> list[str]:
    out = []
    for name, value in os.environ.items():
        if name.startswith("CONVSPARSE_") and value:
            if _SECRET_ENV.search(name) and len(value) >= 4:
                out.append(value)
            if "://" in value and url_password(value):  # e.g. CONVSPARSE_REDIS_URL
                out.extend((value.strip(), *_url_secrets(value)))
    return out


def mask_secrets(text: object, secrets: Iterable[str | None] = ()) -> str:
    """`text` with URL passwords and known secret values replaced by ``***``: the URLs of
    ``CONVSPARSE_*`` variables and those in `secrets` are masked whatever their passwords hold
    (spaces included); any other URL's password up to its last ``@``."""
    s = str(text)
    known = [v for v in (*secrets, *_env_secrets()) if v]
    urls = {v.strip() for v in known if _SCHEME.match(v.strip()) and url_password(v.strip())}
    for url in sorted(urls, key=len, reverse=True):  # a whole known URL first
        s = s.replace(url, mask_url(url))
    values = [p for u in urls for p in _url_secrets(u)]  # any length: it came from a URL
    values += [v for v in known if v not in urls and len(v) >= 4]
    for value in sorted(set(values), key=len, reverse=True):
        s = s.replace(value, MASK)
    s = _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", s)
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


__all__ = ["MASK", "MaskingFilter", "install_log_masking", "mask_secrets", "mask_url", "url_password"]
