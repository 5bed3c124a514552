"""``redact_path`` and the log filter built on it: lease ids out of paths, queries and formatted records."""

from __future__ import annotations

import logging

import pytest

from vastkeep.core.redact import REDACTED_LEASE_ID, RedactFilter, redact_path

LEASE = "lse_AbCdEf0123456789_-xyz"


@pytest.mark.parametrize(("text", "expected"), [
    (f"/api/proxy/admin/warm-pool/leases/{LEASE}", f"/api/proxy/admin/warm-pool/leases/{REDACTED_LEASE_ID}"),
    (f"/admin/warm-pool/leases/{LEASE}/renew", f"/admin/warm-pool/leases/{REDACTED_LEASE_ID}/renew"),
    (f"/c/{LEASE}/prompt?x=1", f"/c/{REDACTED_LEASE_ID}/prompt?x=1"),
    (f"/x?lease={LEASE}&a=b", f"/x?lease={REDACTED_LEASE_ID}&a=b"),
    ("/x/lse%5FAbCdEf0123", f"/x/{REDACTED_LEASE_ID}"),      # percent-encoded underscore
    ("/x/lse_short", f"/x/{REDACTED_LEASE_ID}"),              # malformed ids are masked too
    ("/api/proxy/admin/instances/12345/logs", "/api/proxy/admin/instances/12345/logs"),
    ("/x/lse_", "/x/lse_"),                                    # nothing after the prefix: nothing to hide
    (REDACTED_LEASE_ID, REDACTED_LEASE_ID),                    # idempotent
])
def test_redact_path(text: str, expected: str) -> None:
    assert redact_path(text) == expected
    assert redact_path(redact_path(text)) == expected


def record(msg: str, args: tuple | None) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)


def test_filter_redacts_text_arguments_and_keeps_their_shape() -> None:
    rec = record('%s - "%s %s HTTP/%s" %d', ("127.0.0.1:1", "DELETE", f"/leases/{LEASE}", "1.1", 200))
    assert RedactFilter().filter(rec)
    assert isinstance(rec.args, tuple) and len(rec.args) == 5  # uvicorn's access formatter unpacks them
    assert rec.getMessage() == f'127.0.0.1:1 - "DELETE /leases/{REDACTED_LEASE_ID} HTTP/1.1" 200'


def test_filter_redacts_ids_inside_other_arguments_and_tracebacks() -> None:
    rec = record("failed: %s", (ValueError(f"bad {LEASE}"),))
    try:
        raise KeyError(LEASE)
    except KeyError:
        import sys

        rec.exc_info = sys.exc_info()
    RedactFilter().filter(rec)
    text = logging.Formatter().format(rec)
    assert LEASE not in text and REDACTED_LEASE_ID in text
