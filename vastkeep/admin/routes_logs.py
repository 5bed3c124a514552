"""Collected instance logs (Layer 1): ``GET /api/proxy/admin/instances/{id}/logs?after=&limit=&file=``.

Reads from any byte offset: ``after`` is a byte offset in the remote file (0 = the start), the answer's
``next`` is the offset to pass as ``after`` to continue (the end of the last line returned, or ``after``
itself when nothing new arrived), so a client follows a log live by polling with ``next``.
"""

from __future__ import annotations

import re

import redis
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from starlette.concurrency import run_in_threadpool

from vastkeep.admin.app import ADMIN_PREFIX, AdminContext, get_context
from vastkeep.admin.auth import require_admin_key
from vastkeep.admin.openapi import INSTANCE_ID_PATTERN
from vastkeep.ssh import MAX_READ_LINES, PROVIDER_FILE, PROVISION_LOG, LogStore

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin_key)], tags=["logs"])

_INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)
_FILE = re.compile(r"/[A-Za-z0-9_./+=-]{1,199}")  # whole string (fullmatch), and no ".." in it
#: the same rule as a JSON Schema: an absolute path of 2..200 characters without "..", or the provider log
FILE_SCHEMA = {"anyOf": [{"const": PROVIDER_FILE},
                         {"type": "string", "minLength": 2, "maxLength": 200,
                          "pattern": r"^/(?:(?:[A-Za-z0-9_/+=-]|\.[A-Za-z0-9_/+=-])+\.?|\.)$"}]}


def _logstore(ctx: AdminContext) -> LogStore:
    """A LogStore on a bytes client sharing the admin Redis settings (log lines are raw bytes)."""
    if ctx.logstore is not None:
        return ctx.logstore
    if ctx.redis is None:
        raise HTTPException(status_code=503, detail="Redis not available in this process")
    kwargs = dict(ctx.redis.connection_pool.connection_kwargs)
    kwargs["decode_responses"] = False
    pool = redis.ConnectionPool(connection_class=ctx.redis.connection_pool.connection_class, **kwargs)
    ctx.logstore = LogStore(redis.Redis(connection_pool=pool), ctx.keys)
    return ctx.logstore


@router.get("/instances/{instance_id}/logs",
            summary="Collected log lines from a byte offset ({lines: [{offset, file, text}], next})",
            responses={400: {"description": "the instance id is not a contract id, or file is not an "
                                            "absolute path without '..'"}})
async def instance_logs(instance_id: str = Path(description="a Vast.ai contract id",
                                                json_schema_extra={"pattern": INSTANCE_ID_PATTERN}),
                        after: int = Query(0, ge=0, le=2**53, description="byte offset to read from"),
                        limit: int = Query(1000, ge=1, le=MAX_READ_LINES, description="lines at most"),
                        file: str = Query(PROVISION_LOG, description="remote log file, or "
                                          "provider:container-log (the provider log-API fallback)",
                                          json_schema_extra=FILE_SCHEMA),
                        ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    if not _INSTANCE_ID.fullmatch(instance_id):
        raise HTTPException(status_code=400, detail="instance id must be a Vast.ai contract id (digits)")
    if file != PROVIDER_FILE and (not _FILE.fullmatch(file) or ".." in file):
        raise HTTPException(status_code=400,
                            detail="file must be an absolute path such as /var/log/onstart.log")
    logs = _logstore(ctx)
    lines = await run_in_threadpool(logs.read, instance_id, file, after, limit)
    return {"instanceId": instance_id, "file": file, "lines": [ln.to_dict() for ln in lines],
            "next": lines[-1].end if lines else after}
