"""The admin API's OpenAPI document, made to say exactly what the app answers.

FastAPI derives most of the document from the routes; :func:`build_document` finishes it with what the
routes cannot say themselves, once, for every operation:

- the ``X-Admin-Key`` header as the ``AdminKey`` apiKey security scheme, required by every operation under
  ``/api/proxy/admin`` (they answer 401 without it or with a wrong one, 503 when no key is configured);
- the answers the app's middleware and error handlers give any operation: 400 (an invalid
  ``Content-Length`` or a body that is not JSON), 413 (a body over 64 KiB), 503 (Redis or the broker
  unavailable) on guarded operations, 422 where FastAPI validates parameters;
- one error body for every 4xx/5xx, :data:`ERROR_SCHEMA` (``{"error", "reason", ...}``);
- request bodies a route parses itself (``openapi_extra={"x-body": ...}``, see :func:`json_body`), so the
  schema admits exactly what the handler accepts;
- per-deployment bounds (``WARM_POOL_MAX_SIZE``): a router module's optional ``document(doc, settings)``.

Schemathesis checks the result against the running app (``tests/integration/test_admin_openapi.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from vastkeep.core.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

#: A JSON object of the document, as FastAPI builds it.
JsonObject = dict[str, object]

SCHEME = "AdminKey"
GUARDED_PREFIX = "/api/proxy/admin"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: JsonObject = {
    "type": "object", "title": "Error", "required": ["error", "reason"], "additionalProperties": True,
    "properties": {
        "error": {"type": "string", "description": "a short code (not_found, unauthorized...) or error type"},
        "reason": {"type": "string", "description": "what went wrong, for a person; never echoes a secret"},
        "problems": {"type": "array", "items": {"type": "object"},
                     "description": "422: each invalid parameter (loc, msg, type)"},
        "retryAfterS": {"type": "integer", "description": "409/503 of a lease request: when to try again"},
        "field": {"type": "string", "description": "the input field at fault"},
    },
}
#: a Vast.ai contract id as the routes accept it (checked with ``re.fullmatch``: no trailing newline)
INSTANCE_ID_PATTERN = r"^[0-9]{1,20}$"
COMMON = {
    400: "malformed request: an invalid Content-Length, or a body that is not JSON",
    413: "request body over 64 KiB",
}
GUARDED = {
    401: "missing or wrong X-Admin-Key",
    503: "unavailable: Redis, the broker or the state store cannot be reached, or ADMIN_API_KEY is not set",
}
VALIDATION = "invalid parameter or body (the reason names it; the value is never echoed)"


def decimal_at_most(limit: int, max_digits: int) -> str:
    """A regex (no anchors) for decimals of 1..``max_digits`` digits (leading zeros allowed) <= ``limit``.

    Schemas need it where a handler bounds a number it reads as text (a stream id's parts): a pattern is the
    only way JSON Schema can say "at most 2**64-1" about a string.
    """
    top = str(limit).rjust(max_digits, "0")
    if len(top) > max_digits:
        raise ValueError("limit has more digits than max_digits")
    choices = [f"[0-9]{{1,{max_digits - 1}}}"] if max_digits > 1 else []
    for i, digit in enumerate(top):  # same prefix as the limit, a smaller digit here, anything after
        if digit != "0":
            low = "0" if digit == "1" else f"[0-{int(digit) - 1}]"
            rest = max_digits - i - 1
            choices.append(top[:i] + low + (f"[0-9]{{{rest}}}" if rest else ""))
    choices.append(top)
    return "(?:" + "|".join(choices) + ")"


def json_body(schema: Mapping[str, object], *, required: bool = True, description: str = "") -> JsonObject:
    """``openapi_extra`` for a route that reads its JSON body itself: ``schema`` is what it accepts."""
    body: JsonObject = {"required": required, "content": {"application/json": {"schema": schema}}}
    if description:
        body["description"] = description
    return {"x-body": body}


def _object(parent: JsonObject, key: str) -> JsonObject:
    """``parent[key]`` as a JSON object, made empty when absent (``setdefault`` for a typed tree)."""
    child = parent.setdefault(key, {})
    if not isinstance(child, dict):
        raise TypeError(f"{key} is not a JSON object in the OpenAPI document")
    return child


def build_document(app: FastAPI, settings: Settings, router_modules: Iterable[str]) -> JsonObject:
    """The finished document (cached on the app, as FastAPI's own ``openapi()`` does)."""
    from fastapi.openapi.utils import get_openapi  # noqa: PLC0415

    doc: JsonObject = get_openapi(title=app.title, version=app.version, description=app.description,
                                  routes=app.routes)
    components = _object(doc, "components")
    schemas = _object(components, "schemas")
    schemas["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = {SCHEME: {
        "type": "apiKey", "in": "header", "name": "X-Admin-Key",
        "description": "ADMIN_API_KEY; compared in constant time"}}
    for path, operations in _object(doc, "paths").items():
        if isinstance(operations, dict):
            for operation in operations.values():
                if isinstance(operation, dict):
                    _finish(path, operation)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for module_name in router_modules:
        hook = getattr(importlib.import_module(f"vastkeep.admin.{module_name}"), "document", None)
        if hook is not None:
            hook(doc, settings)
    return doc


def _finish(path: str, operation: JsonObject) -> None:
    body = operation.pop("x-body", None)
    if body is not None:
        operation["requestBody"] = body
    responses = _object(operation, "responses")
    extra = dict(COMMON)
    if path.startswith(GUARDED_PREFIX):
        operation["security"] = [{SCHEME: []}]
        extra.update(GUARDED)
    for status, description in extra.items():
        responses.setdefault(str(status), {"description": description})
    for code, response in responses.items():
        if int(code) < 400 or not isinstance(response, dict):
            continue
        if code == "422":
            response["description"] = VALIDATION
        content = response.setdefault("content", {})
        if not content or "HTTPValidationError" in str(content):
            response["content"] = {"application/json": {"schema": ERROR_REF}}


__all__ = ["ERROR_SCHEMA", "INSTANCE_ID_PATTERN", "SCHEME", "JsonObject", "build_document", "decimal_at_most",
           "json_body"]
