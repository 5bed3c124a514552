"""Redaction of capabilities in request paths, for every log line, error and event that names a path.

A client lease id (``lse_...``, :func:`vastkeep.pool.leasing.new_lease_id`) is its holder's capability to
renew and release the lease, and it travels in URLs (``/api/proxy/admin/warm-pool/leases/{leaseId}``,
the ComfyUI endpoint's ``/c/{leaseId}/...``). Anything that logs, raises or emits a path passes it through
:func:`redact_path` first: every lease id becomes ``lse_<redacted>``, wherever it stands (a segment, a
query value) and however it is spelt (``lse_`` or percent-encoded ``lse%5F``). More is masked, never less:
any run of id characters after the prefix goes, whether or not it is a well-formed id.
"""

from __future__ import annotations

import logging
import re

LEASE_ID_PREFIX = "lse_"
REDACTED_LEASE_ID = "lse_<redacted>"
_LEASE_ID_IN_TEXT = re.compile(r"lse(?:_|%5[fF])[A-Za-z0-9_%-]+")


def redact_path(path: str) -> str:
    """``path`` (and query, or any text) with every lease id replaced by ``lse_<redacted>``."""
    return _LEASE_ID_IN_TEXT.sub(REDACTED_LEASE_ID, str(path))


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


__all__ = ["LEASE_ID_PREFIX", "REDACTED_LEASE_ID", "RedactFilter", "install_redaction", "redact_path"]
