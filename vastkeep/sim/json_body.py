"""Reading a route's JSON body the one way every simulated API does: none is ``{}``, and a body that is not
JSON is a 400 in the calling API's own error shape (Vast.ai's ``success``/``error``/``msg``, the control API's
``error``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web


async def json_object(request: web.Request, error: Callable[[str], dict[str, object]], *,
                      strict: bool) -> dict[str, Any]:
    """The body as a dict; ``strict``: a body that is JSON but not an object is a 400 too (else ``{}``)."""
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except (json.JSONDecodeError, ValueError) as exc:
        raise web.HTTPBadRequest(text=json.dumps(error("body is not JSON")),
                                 content_type="application/json") from exc
    if isinstance(data, dict):
        return data
    if strict:
        raise web.HTTPBadRequest(text=json.dumps(error("body must be an object")),
                                 content_type="application/json")
    return {}


__all__ = ["json_object"]
