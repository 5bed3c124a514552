"""Redaction of capabilities in request paths, for every log line, error and event that names a path.

A client lease id (``lse_...``, :func:`vastkeep.pool.leasing.new_lease_id`) is its holder's capability to
renew and release the lease, and it travels in URLs (``/api/proxy/admin/warm-pool/leases/{leaseId}``,
the ComfyUI endpoint's ``/c/{leaseId}/...``). Anything that logs, raises or emits a path passes it through
:func:`redact_path` first: every lease id becomes ``lse_<redacted>``, wherever it stands (a segment, a
query value) and however it is spelt (``lse_`` or percent-encoded ``lse%5F``). More is masked, never less:
any run of id characters after the prefix goes, whether or not it is a well-formed id.

The same rule holds for URLs that may carry a password (``REDIS_URL``, ``VAST_API_URL``):
:func:`redact_url` masks it in anything shown or logged, :func:`redact_bad_url` masks every userinfo of a
value that failed to parse (an error message cannot know where a mangled password ends).
"""

from __future__ import annotations

import logging
import re

LEASE_ID_PREFIX = "lse_"
REDACTED_LEASE_ID = "lse_<redacted>"
_LEASE_ID_IN_TEXT = re.compile(r"lse(?:_|%5[fF])[A-Za-z0-9_%-]+")
HTTP_SCHEMES = ("http", "https")
_QUERY_PASSWORD_RE = re.compile(r"(?i)([?&](?:password|pass|pwd)=)[^&#]*")


def redact_path(path: str) -> str:
    """``path`` (and query, or any text) with every lease id replaced by ``lse_<redacted>``."""
    return _LEASE_ID_IN_TEXT.sub(REDACTED_LEASE_ID, str(path))


def redact_url(url: str | None) -> str | None:
    """The URL with any password replaced by ``***`` (safe to log or show).

    A password may hold ``/``, ``@``, ``:``, ``?`` or ``#`` (typed raw instead of percent-encoded), so
    the userinfo is taken as everything up to the *last* ``@``, not up to the first ``/``. When in doubt
    more is masked, never less: ``user:`` stays, the rest up to that ``@`` becomes ``***``. A user name
    alone (``redis://user@h``) is no secret; a ``password=`` query value (unix sockets) is masked too.
    """
    if not url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        userinfo, tail = rest[:at], rest[at:]
        user, colon, _password = userinfo.partition(":")
        if colon and not any(c in user for c in "/?#"):
            rest = f"{user}:***{tail}"  # user:password@ (the password may contain anything)
        elif not colon and any(c in userinfo for c in "/?#") and scheme.lower() not in HTTP_SCHEMES:
            rest = f"***{tail}"  # redis://pa/ss@h: a password typed without 'user:' and not encoded
    rest = _QUERY_PASSWORD_RE.sub(lambda m: m.group(1) + "***", rest)
    return f"{scheme}{sep}{rest}"


def redact_bad_url(raw: str) -> str:
    """A URL for an error message: a value that failed to parse may be mangled in any way, so everything
    before its last ``@`` (user name included) is masked: ``scheme://***@host...``."""
    scheme, sep, rest = raw.strip().partition("://")
    if not sep:
        scheme, rest = "", raw.strip()
    at = rest.rfind("@")
    if at >= 0:
        rest = "***" + rest[at:]
    return redact_url(f"{scheme}{sep}{rest}") or ""


class RedactFilter(logging.Filter):
    """A handler filter that passes each record's final text through :func:`redact_path`.

    Put on a process's log handlers (the admin API's root and uvicorn handlers), it also covers lines the
    project does not write itself, such as uvicorn's access log (``"DELETE /.../leases/lse_... HTTP/1.1"``)
    and a traceback's text. The record is rewritten in place: the message and each text argument redacted
    (formatters such as uvicorn's access formatter unpack the arguments), the whole message only when an
    id hides elsewhere.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_path(record.msg)
        if isinstance(record.args, tuple):  # text arguments redacted one by one: formatters may unpack them
            record.args = tuple(redact_path(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact_path(v) if isinstance(v, str) else v for k, v in record.args.items()}
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the handler's to report, as before
            text = None
        if text is not None and redact_path(text) != text:  # an id inside a non-text argument
            record.msg, record.args = redact_path(text), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_path(record.exc_text)
        return True


def install_redaction(*loggers: logging.Logger) -> None:
    """One :class:`RedactFilter` on every handler of the root logger and of ``loggers`` (idempotent)."""
    for logger in (logging.root, *loggers):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactFilter) for f in handler.filters):
                handler.addFilter(RedactFilter())


__all__ = [
    "HTTP_SCHEMES", "LEASE_ID_PREFIX", "REDACTED_LEASE_ID", "RedactFilter", "install_redaction",
    "redact_bad_url", "redact_path", "redact_url",
]
