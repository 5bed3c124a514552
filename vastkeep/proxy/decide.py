"""The proxy's pure decisions: which headers cross, which instance serves ``/pool``, what is an upload,
the upstream URL of a request, whether a client may start one more request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

#: RFC 9110 §7.6.1 connection-specific headers, plus what the proxy sets itself.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "proxy-connection", "host", "content-length",
})
#: Never sent upstream: the caller's credentials for *us*.
PRIVATE_REQUEST = frozenset({"x-admin-key", "x-endpoint-token", "authorization", "cookie"})
UPLOAD_TAILS = ("upload/image", "upload/mask", "api/upload/image", "api/upload/mask")


def request_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers forwarded upstream: hop-by-hop and our own credentials dropped, order and repeats kept."""
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() not in PRIVATE_REQUEST]


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers returned to the client: hop-by-hop dropped (aiohttp frames the body itself); bodies pass
    through undecoded, so ``Content-Encoding`` stays."""
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


def is_upload(method: str, tail: str) -> bool:
    """ComfyUI's upload routes: their bodies are spooled to disk (capped) so they can be replayed."""
    return method == "POST" and tail.strip("/") in UPLOAD_TAILS


def upstream_url(base: str, tail: str, query: str) -> str:
    """``base`` (``http://host:port``) + ``/tail`` + ``?query``; the tail is a path, never an authority."""
    path = "/" + tail.lstrip("/")
    return f"{base.rstrip('/')}{path}{'?' + query if query else ''}"


def split_base(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an instance's connection URL, or None when it is not plain http(s)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    return parts.scheme, parts.hostname, port


@dataclass(frozen=True)
class Candidate:
    """A ready, unleased instance ``/pool`` may send a request to."""

    instance_id: str
    url: str


def pick_instance(candidates: Iterable[Candidate], in_flight: Mapping[str, int],
                  served: Mapping[str, int]) -> Candidate | None:
    """Shortest queue: fewest requests in flight through this proxy; ties go to the one served least,
    then the lowest id (deterministic)."""
    best = None
    for c in candidates:
        rank = (in_flight.get(c.instance_id, 0), served.get(c.instance_id, 0), c.instance_id)
        if best is None or rank < best[0]:
            best = (rank, c)
    return best[1] if best else None


def may_start(in_flight: int, limit: int) -> bool:
    """One client may have at most ``limit`` HTTP requests in flight (websockets count apart)."""
    return in_flight < limit


__all__ = ["HOP_BY_HOP", "Candidate", "is_upload", "may_start", "pick_instance", "request_headers",
           "response_headers", "split_base", "upstream_url"]
