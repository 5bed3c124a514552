"""Layer 3, part 2: the probes themselves — TCP connect, then ``GET /system_stats`` — on raw asyncio sockets.

Why raw sockets and not an HTTP client: a pool sweep is thousands of short probes, each with a hard
deadline on connect and on the whole HTTP exchange; asyncio streams hold one fd per probe and no thread,
and the request goes to the exact IP we checked (no second DNS lookup, no redirects followed, no proxy
from the environment). Every await here sits under ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from vastkeep.core.clock import Clock
from vastkeep.core.errors import NetworkError
from vastkeep.ports.candidates import Candidate, check_address, parse_ip

# Outcomes of one candidate probe. The first six are the classification the issue names; "unreachable"
# (no route / DNS failure), "unsafe" (target refused before connecting) and "skipped" (a higher-priority
# candidate already won, so this probe was cancelled) complete the picture.
OK, REFUSED, TIMEOUT, RESET = "ok", "refused", "timeout", "reset"
HTTP_ERROR, WRONG_BODY = "http_error", "wrong_body"
UNREACHABLE, UNSAFE, SKIPPED, ERROR = "unreachable", "unsafe", "skipped", "error"

MAX_BODY_BYTES = 1 << 20  # /system_stats is a few hundred bytes; anything near 1 MiB is not ComfyUI
MAX_HEADER_LINES = 100
_UNREACHABLE_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}


@dataclass(frozen=True)
class ProbeResult:
    """What happened to one candidate. ``stage`` is where it stopped: resolve, tcp, http or done."""

    kind: str
    port: int
    address: str
    outcome: str
    stage: str
    ms: float
    tcp_ms: float | None = None
    http_status: int | None = None
    detail: str = ""

    @property
    def tcp_ok(self) -> bool:
        """The TCP connect succeeded (whatever HTTP did afterwards)."""
        return self.tcp_ms is not None

    def to_dict(self) -> dict[str, object]:
        """The small JSON shape stored in ``port_validation`` and returned by tasks."""
        out: dict[str, object] = {"kind": self.kind, "port": self.port, "outcome": self.outcome,
                               "stage": self.stage, "ms": round(self.ms, 1)}
        if self.http_status is not None:
            out["http_status"] = self.http_status
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class ProbeConfig:
    """Deadlines and the SSRF switch (PORT_TCP_TIMEOUT_MS, PORT_HTTP_TIMEOUT_MS, VASTKEEP_SIMULATED).

    ``allow_loopback`` admits 127.0.0.0/8 (the simulated cloud) and no other internal address.
    """

    tcp_timeout_s: float = 5.0
    http_timeout_s: float = 10.0
    allow_loopback: bool = False
    dns_timeout_s: float = 5.0
    path: str = "/system_stats"
    user_agent: str = "vastkeep-port-probe/1"


class _BadHttp(Exception):
    """The peer spoke, but not HTTP we can read (internal to this module)."""


async def resolve_safe(host: str, cfg: ProbeConfig, instance_id: str | None = None) -> str:
    """Resolve ``host`` once and vet the address; the probe then connects to this exact IP.

    Raises UnsafeTarget (internal address outside simulation) or NetworkError (DNS failed / timed out).
    """
    ip = parse_ip(host)
    if ip is None:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), cfg.dns_timeout_s)
        except (TimeoutError, OSError) as exc:
            raise NetworkError(f"cannot resolve {host}: {type(exc).__name__}", host=host) from None
        if not infos:
            raise NetworkError(f"cannot resolve {host}", host=host)
        ip = parse_ip(str(infos[0][4][0]))
        if ip is None:  # pragma: no cover - getaddrinfo returns literals
            raise NetworkError(f"cannot resolve {host}", host=host)
    check_address(ip, allow_loopback=cfg.allow_loopback, instance_id=instance_id)
    return str(ip)


def _ms(clock: Clock, start: float) -> float:
    return (clock.monotonic() - start) * 1000.0


async def _read_http(reader: asyncio.StreamReader) -> tuple[int, bytes | None]:
    """Read one response: (status, body). Body is None for a non-2xx status (not needed, not read)."""
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("connection closed without a response")
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise _BadHttp("not an HTTP response")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise _BadHttp("too many headers")
    if not 200 <= status < 300:
        return status, None
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, await _read_chunked(reader)
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise _BadHttp("bad Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise _BadHttp("body too large")
        return status, await reader.readexactly(length)
    body = await reader.read(MAX_BODY_BYTES + 1)
    while body and len(body) <= MAX_BODY_BYTES:
        more = await reader.read(MAX_BODY_BYTES + 1 - len(body))
        if not more:
            break
        body += more
    if len(body) > MAX_BODY_BYTES:
        raise _BadHttp("body too large")
    return status, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size_line = (await reader.readline()).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _BadHttp("bad chunk size") from None
        if size == 0:
            return body
        if len(body) + size > MAX_BODY_BYTES:
            raise _BadHttp("body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def is_comfyui_stats(doc: object) -> bool:
    """The ComfyUI ``/system_stats`` shape: ``{"system": {...}, "devices": [...]}``."""
    return (isinstance(doc, dict) and isinstance(doc.get("system"), dict)
            and isinstance(doc.get("devices"), list))


async def probe_candidate(cand: Candidate, address: str, cfg: ProbeConfig, clock: Clock) -> ProbeResult:
    """TCP connect (``tcp_timeout_s``), then GET /system_stats (``http_timeout_s`` for the whole exchange).

    Never raises for a network outcome: every failure becomes a classified :class:`ProbeResult`.
    """
    start = clock.monotonic()

    def result(outcome: str, stage: str, detail: str = "", *, tcp_ms: float | None = None,
               http_status: int | None = None) -> ProbeResult:
        return ProbeResult(cand.kind, cand.port, address, outcome, stage, _ms(clock, start), tcp_ms=tcp_ms,
                           http_status=http_status, detail=detail)

    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, cand.port, limit=64 * 1024), cfg.tcp_timeout_s)
    except TimeoutError:
        return result(TIMEOUT, "tcp", "TCP connection timeout")
    except ConnectionRefusedError:
        return result(REFUSED, "tcp", "TCP connection refused")
    except ConnectionResetError:
        return result(RESET, "tcp", "TCP connection reset")
    except OSError as exc:
        if exc.errno in _UNREACHABLE_ERRNOS:
            return result(UNREACHABLE, "tcp", f"TCP {errno.errorcode.get(exc.errno or 0, 'unreachable')}")
        return result(ERROR, "tcp", f"TCP {type(exc).__name__}")
    tcp_ms = _ms(clock, start)
    host_header = f"[{address}]" if ":" in address else address
    request = (f"GET {cfg.path} HTTP/1.1\r\nHost: {host_header}:{cand.port}\r\n"
               f"User-Agent: {cfg.user_agent}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
               ).encode("ascii")
    try:
        async def exchange() -> tuple[int, bytes | None]:
            writer.write(request)
            await writer.drain()
            return await _read_http(reader)

        status, body = await asyncio.wait_for(exchange(), cfg.http_timeout_s)
    except TimeoutError:
        writer.transport.abort()
        return result(TIMEOUT, "http", "HTTP timeout (no response)", tcp_ms=tcp_ms)
    except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as exc:
        writer.transport.abort()
        detail = "connection closed without a response" if "without" in str(exc) else "connection reset"
        return result(RESET, "http", detail, tcp_ms=tcp_ms)
    except (_BadHttp, ValueError, asyncio.LimitOverrunError) as exc:
        writer.transport.abort()
        return result(WRONG_BODY, "http", f"invalid HTTP response: {exc}"[:120], tcp_ms=tcp_ms)
    except OSError as exc:
        writer.transport.abort()
        return result(ERROR, "http", f"HTTP {type(exc).__name__}", tcp_ms=tcp_ms)
    writer.close()
    if body is None:
        return result(HTTP_ERROR, "http", f"HTTP {status}", tcp_ms=tcp_ms, http_status=status)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return result(WRONG_BODY, "http", "response is not JSON", tcp_ms=tcp_ms, http_status=status)
    if not is_comfyui_stats(doc):
        return result(WRONG_BODY, "http", "response is not ComfyUI /system_stats", tcp_ms=tcp_ms,
                      http_status=status)
    return result(OK, "done", tcp_ms=tcp_ms, http_status=status)


async def probe_candidates(
    candidates: list[Candidate], cfg: ProbeConfig, clock: Clock,
    semaphore: asyncio.Semaphore | None = None, instance_id: str | None = None,
) -> list[ProbeResult]:
    """Probe one instance's candidates concurrently; results come back in priority order.

    The winner is decided by priority, not speed: we wait for every higher-priority candidate, and once a
    candidate passes while all better ones have failed, the lower-priority probes still running are
    cancelled (outcome "skipped"). Raises UnsafeTarget before any connection if an address is refused.
    """
    ordered = sorted(candidates, key=lambda c: c.priority)
    addresses: dict[str, str] = {}
    for cand in ordered:
        if cand.host not in addresses:
            try:
                addresses[cand.host] = await resolve_safe(cand.host, cfg, instance_id)
            except NetworkError as exc:
                return [ProbeResult(c.kind, c.port, c.host, UNREACHABLE, "resolve", 0.0, detail=exc.message)
                        for c in ordered]

    async def one(cand: Candidate) -> ProbeResult:
        try:
            if semaphore is None:
                return await probe_candidate(cand, addresses[cand.host], cfg, clock)
            async with semaphore:
                return await probe_candidate(cand, addresses[cand.host], cfg, clock)
        except Exception as exc:  # a bug must not sink the other candidates or the pool sweep
            return ProbeResult(cand.kind, cand.port, addresses[cand.host], ERROR, "tcp", 0.0,
                               detail=f"probe error: {type(exc).__name__}")

    tasks = [asyncio.ensure_future(one(c)) for c in ordered]
    try:
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            winner = _decided(tasks)
            if winner is not None:
                for t in tasks[winner + 1:]:
                    t.cancel()
                break
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for t in tasks:
            t.cancel()
    out = []
    for cand, task in zip(ordered, tasks, strict=True):
        if task.cancelled():
            out.append(ProbeResult(cand.kind, cand.port, addresses[cand.host], SKIPPED, "tcp", 0.0,
                                   detail="a higher-priority candidate passed"))
        else:
            out.append(task.result())
    return out


def _decided(tasks: Sequence[asyncio.Future[ProbeResult]]) -> int | None:
    """Index of the winning task once every better one is done and failed; None while undecided."""
    for i, t in enumerate(tasks):
        if not t.done():
            return None
        if not t.cancelled() and t.result().outcome == OK:
            return i
    return None
