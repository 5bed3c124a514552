"""The ``X-Admin-Key`` guard of the admin API.

The key is compared with :func:`hmac.compare_digest` (constant time, so response timing leaks
nothing about how much of a guess was right). Every refusal is a JSON 401 with a reason, never a
500; when no ``ADMIN_API_KEY`` is configured the guarded endpoints answer 503 "admin key not
configured" rather than being open. The key itself never appears in a response or a log line.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import HTTPException, Request

from vastkeep.core.redact import redact_path
from vastkeep.core.settings import Secret

HEADER = "X-Admin-Key"
MAX_KEY_BYTES = 1024
log = logging.getLogger("vastkeep.admin")


def key_matches(presented: str | None, expected: Secret | None) -> bool:
    """Constant-time comparison of the presented key against the configured one."""
    if presented is None or expected is None:
        return False
    try:
        given = presented.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if len(given) > MAX_KEY_BYTES:
        return False
    return hmac.compare_digest(given, expected.reveal().encode("utf-8"))


def require_admin_key(request: Request) -> None:
    """FastAPI dependency for every ``/api/proxy/admin/...`` route."""
    expected: Secret | None = getattr(request.app.state, "admin_key", None)
    if expected is None:
        raise HTTPException(status_code=503, detail="admin key not configured: set ADMIN_API_KEY")
    presented = request.headers.get(HEADER)
    if not presented:
        raise HTTPException(status_code=401, detail=f"missing {HEADER} header",
                            headers={"WWW-Authenticate": HEADER})
    if not key_matches(presented, expected):
        client = request.client.host if request.client else "?"
        log.warning("admin API: wrong %s from %s for %s", HEADER, client, redact_path(request.url.path))
        raise HTTPException(status_code=401, detail=f"invalid {HEADER}", headers={"WWW-Authenticate": HEADER})
