"""Reading a response body under a total deadline and a size cap, and the short reasons a call fails for.

A socket read timeout alone lets a server that drips bytes hold a caller forever, and a body without a
size cap lets it fill memory: :func:`read_body` bounds both. :class:`FailureReason` names what went wrong in
an error's data, short and free of secrets. :mod:`vastkeep.providers.http` retries around this.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from enum import StrEnum

import requests
from urllib3.exceptions import DecodeError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error

from vastkeep.core.clock import Clock
from vastkeep.core.errors import MalformedResponse, NetworkError

BODY_EXCERPT_CHARS = 200
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # a big Vast.ai instance list fits; a runaway body does not


class FailureReason(StrEnum):
    """Why a call failed, as ``reason`` in the error's data: short, fixed and free of secrets."""

    DEADLINE_EXCEEDED = "deadline exceeded"
    CONNECT_TIMEOUT = "connect timeout"
    READ_TIMEOUT = "read timeout"
    CONNECTION_REFUSED = "connection refused"
    CONNECTION_ERROR = "connection error"
    BODY_TOO_LARGE = "body too large"
    UNDECODABLE_BODY = "undecodable body"
    NOT_PINNED = "not pinned"
    NO_INSTANCES_LIST = "no instances list"


DEADLINE_EXCEEDED = FailureReason.DEADLINE_EXCEEDED
_READ_CHUNK = 65536
def body_excerpt(response: requests.Response, redact: Callable[[str], str] | None) -> str:
    """The first characters of a response body, passed through ``redact``; empty without a redactor.

    Call it on a response whose body was read by :func:`read_body` (``request_with_retry`` does), or
    ``.text`` would read an unbounded body.
    """
    if redact is None:
        return ""
    try:
        text = response.text[:BODY_EXCERPT_CHARS]
    except Exception:  # noqa: BLE001 - a body we cannot decode is simply not shown
        return ""
    return redact(text).strip()


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket a streamed response reads from, when urllib3 exposes it (else None)."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def read_body(response: requests.Response, *, deadline: float, clock: Clock,
              limit_bytes: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
    """The whole body of a ``stream=True`` response, read within a total deadline and a size cap.

    requests' read timeout bounds each socket read, not the body: a server that drips one byte a
    second never trips a 2 s read timeout and holds the caller for as long as it likes. Here every
    step is one socket read (``read1``) whose timeout is cut to what is left of ``deadline`` (a
    ``clock.monotonic()`` value), and the running size is checked after each read (decoded bytes,
    so a compressed bomb is caught too). On success the body is also what ``response.content`` /
    ``.json()`` / ``.text`` return. Raises ``NetworkError`` (``reason`` = ``deadline exceeded``,
    ``read timeout`` or ``connection error``) or ``MalformedResponse`` (``reason`` = ``body too
    large`` / ``undecodable body``), without URL or secrets; the caller adds where it happened.
    """
    declared = (response.headers.get("Content-Length") or "").strip()
    if declared.isdigit() and int(declared) > limit_bytes:
        raise MalformedResponse(f"the body is larger than {limit_bytes} bytes",
                                reason=FailureReason.BODY_TOO_LARGE)
    raw = response.raw
    sock = _socket_of(response)
    original = sock.gettimeout() if sock is not None else None
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                raise NetworkError("the body did not arrive before the deadline", reason=DEADLINE_EXCEEDED)
            if sock is not None:
                sock.settimeout(remaining if original is None else min(original, remaining))
            try:
                chunk = raw.read1(_READ_CHUNK, decode_content=True)
            except ReadTimeoutError:
                if deadline - clock.monotonic() <= 0:
                    raise NetworkError("the body did not arrive before the deadline",
                                       reason=DEADLINE_EXCEEDED) from None
                raise NetworkError("the body stalled past the read timeout",
                                   reason=FailureReason.READ_TIMEOUT) from None
            except DecodeError:
                raise MalformedResponse("the body could not be decoded",
                                        reason=FailureReason.UNDECODABLE_BODY) from None
            except (Urllib3Error, OSError):
                raise NetworkError("the connection broke while reading the body",
                                   reason=FailureReason.CONNECTION_ERROR) from None
            if not chunk:
                break
            size += len(chunk)
            if size > limit_bytes:
                raise MalformedResponse(f"the body is larger than {limit_bytes} bytes",
                                        reason=FailureReason.BODY_TOO_LARGE)
            chunks.append(chunk)
    finally:
        if sock is not None:
            with contextlib.suppress(OSError):  # the socket may be closed by now
                sock.settimeout(original)
    body = b"".join(chunks)
    # What requests' own .content does after reading: .json()/.text now use this body.
    response._content = body
    response._content_consumed = True  # type: ignore[attr-defined]  # requests keeps this flag private
    return body


__all__ = ["BODY_EXCERPT_CHARS", "DEADLINE_EXCEEDED", "DEFAULT_MAX_BODY_BYTES", "FailureReason",
           "body_excerpt", "read_body"]
