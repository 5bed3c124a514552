"""How a call to Vast.ai is spelled and how its answer is read: endpoint names (what Vast.ai rate-limits),
the hidden key, the answer → error mapping, ids, tolerant lists, and the rent whose outcome is unknown.

:class:`vastkeep.providers.vast.VastClient` is the API surface; this module is the wire under it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

import requests

from vastkeep.core.errors import (
    AuthError,
    InvalidRequest,
    MalformedResponse,
    NotFound,
    RentOutcomeUnknown,
)
from vastkeep.providers.vast_models import as_int

log = logging.getLogger("vastkeep.providers")

NO_SUCH_INSTANCE = "no_such_instance"
PROVIDER_TEXT_CHARS = 300
_Parsed = TypeVar("_Parsed")


def redirect_guard(url_guard: Callable[[str], object]) -> Callable[..., None]:
    """A requests response hook that runs ``url_guard`` on a redirect's target before it is followed."""

    def hook(response: requests.Response, *args: object, **kwargs: object) -> None:
        if response.is_redirect:
            url_guard(requests.compat.urljoin(response.url, response.headers.get("location", "")))

    return hook


class CallPacer(Protocol):
    """Keeps one key under Vast.ai's minimum gap per endpoint (``state.KeyPacer``: shared by all workers)."""

    def gap_s(self, endpoint: str) -> float: ...
    def wait_turn(self, endpoint: str) -> float: ...
    def learn(self, endpoint: str, threshold_s: float | None) -> float: ...


_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


def endpoint_name(method: str, path: str) -> str:
    """What Vast.ai rate-limits: method + route, ``PUT /asks/617/`` → ``PUT /asks/{id}`` (no end slash)."""
    return f"{method.upper()} {_ID_SEGMENT.sub('/{id}', path).rstrip('/') or '/'}"


class Revealable(Protocol):
    def reveal(self) -> str: ...


class HiddenKey:
    """Holds the key so that ``repr``/``vars`` of the client never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


def provider_text(body: object, response: requests.Response, redact: Callable[[str], str]) -> str:
    """The provider's own explanation (error/msg/message, else the body start), redacted."""
    parts: list[str] = []
    if isinstance(body, dict):
        for name in ("error", "msg", "message"):
            value = body.get(name)
            if isinstance(value, str | int | float) and str(value).strip():
                parts.append(str(value).strip())
    elif response.status_code >= 400:
        parts.append(response.text.strip())
    return redact(": ".join(parts))[:PROVIDER_TEXT_CHARS]


def answer_body(response: requests.Response, method: str, where: str, ctx: Mapping[str, object],
                redact: Callable[[str], str]) -> dict[str, object]:
    """A read answer → its JSON object, or the error it means (401/403 auth, 404 or ``no_such_instance``
    not found, other 4xx or ``success: false`` refused, a body that is not a JSON object malformed)."""
    status = response.status_code
    body, parsed = _decode(response)
    text = provider_text(body, response, redact)
    data: dict[str, object] = {"url": where, "method": method, "status": status, **ctx}
    if status in (401, 403):
        raise AuthError(f"Vast.ai rejected the API key (HTTP {status}) on {method} {where}", **data)
    provider_error = body.get("error") if isinstance(body, dict) else None
    if status == 404 or provider_error == NO_SUCH_INSTANCE:
        raise NotFound(f"Vast.ai: not found on {method} {where}{_suffix(text)}", **data)
    if status >= 400:
        raise InvalidRequest(f"Vast.ai refused {method} {where} (HTTP {status}){_suffix(text)}",
                             provider_error=_plain(provider_error), **data)
    if not parsed or not isinstance(body, dict):
        raise MalformedResponse(f"Vast.ai answered {method} {where} with a body that is not JSON", **data)
    if body.get("success") is False:
        raise InvalidRequest(f"Vast.ai refused {method} {where}{_suffix(text)}",
                             provider_error=_plain(provider_error), **data)
    return body


def _decode(response: requests.Response) -> tuple[object, bool]:
    """(body, parsed): an empty body is ``{}``; a body that is not JSON is ``(None, False)``."""
    if not response.content or not response.content.strip():
        return {}, True
    try:
        return response.json(), True
    except ValueError:
        return None, False


def outcome_unknown(offer_id: int, label: str | None, why: str, **data: object) -> RentOutcomeUnknown:
    """The permanent error for a rent whose answer was unreadable (Vast.ai may have rented)."""
    look = (f"look for label {label!r} with list_instances()" if label is not None
            else "look for a new instance with list_instances() (rent with a label to find it)")
    log.error("rent of offer %d: outcome unknown (%s)", offer_id, why)
    return RentOutcomeUnknown(
        f"Vast.ai may have rented offer {offer_id}, but {why}; {look} before renting again",
        offer_id=offer_id, label=label, reason=why, **data)


def _suffix(text: str) -> str:
    return f": {text}" if text else ""


def _plain(value: object) -> str | None:
    return value if isinstance(value, str) else None


def check_id(value: object, what: str = "instance") -> int:
    ident = as_int(value)
    if ident is None or ident <= 0:
        raise InvalidRequest(f"not a valid {what} id: {value!r}"[:120])
    return ident


def parse_many(records: list[object], parse: Callable[[object], _Parsed], what: str) -> list[_Parsed]:
    """Parse every record; one bad record is logged and skipped, never fatal for the whole list."""
    out: list[_Parsed] = []
    for record in records:
        try:
            out.append(parse(record))
        except MalformedResponse as exc:
            log.warning("skipping a Vast.ai %s record: %s", what, exc.message)
    return out


__all__ = ["NO_SUCH_INSTANCE", "CallPacer", "HiddenKey", "Revealable", "answer_body", "check_id",
           "endpoint_name", "outcome_unknown", "parse_many", "provider_text", "redirect_guard"]
