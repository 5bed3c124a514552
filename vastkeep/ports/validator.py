"""Layer 3: port validation — classify the probes, pick the connection URL, validate one instance or a pool.

A port the Vast API reports is not a port that works (firewalls, ComfyUI still starting, a mapping to
nothing). So an instance becomes "ready" only after a candidate passed TCP connect *and* answered
``GET /system_stats`` with ComfyUI's shape; the winner is the best candidate by the guide's priority,
not the fastest. Candidate derivation and the SSRF guard live in :mod:`vastkeep.ports.candidates`, the
sockets in :mod:`vastkeep.ports.probe`; this module holds the pure decision (:func:`classify_probe`) and
the sync API the tasks call (asyncio inside, so a whole pool is one event loop with a bounded semaphore).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import UnsafeTarget
from vastkeep.core.limits import effective_probe_concurrency
from vastkeep.core.settings import Settings
from vastkeep.ports.candidates import KINDS, Candidate, derive_candidates
from vastkeep.ports.probe import OK, SKIPPED, TIMEOUT, UNSAFE, ProbeConfig, ProbeResult, probe_candidates
from vastkeep.state.store import InstanceRecord

log = logging.getLogger("vastkeep.ports")

FIREWALL_ERROR = "All ports blocked - firewall detected"
#: A candidate that validated before now times out: ComfyUI hung (its accept queue fills, then TCP times
#: out) or the host is unreachable. Not a firewall: the port worked, so nothing blocks it.
HANG_ERROR = "Validated port stopped answering - ComfyUI hung or host unreachable (not a firewall)"
NO_CANDIDATES_ERROR = "No ComfyUI port reported by the provider"
T = TypeVar("T")


@dataclass(frozen=True)
class PortValidation:
    """The verdict for one instance: the winning candidate and URL, or why none passed."""

    success: bool
    port: int | None = None
    kind: str | None = None
    connection_url: str | None = None
    error: str | None = None
    firewall: bool = False
    candidates: tuple[ProbeResult, ...] = ()
    hang: bool = False

    def to_dict(self) -> dict[str, object]:
        """Small JSON: what the store's ``port_validation`` and the task results hold."""
        return {"success": self.success, "port": self.port, "kind": self.kind,
                "connection_url": self.connection_url, "error": self.error, "firewall": self.firewall,
                "hang": self.hang, "candidates": [r.to_dict() for r in self.candidates]}


def _priority(r: ProbeResult) -> int:
    return KINDS.index(r.kind) if r.kind in KINDS else len(KINDS)


def classify_probe(results: Iterable[ProbeResult], known_good: Iterable[str] = ()) -> PortValidation:
    """Pure: per-candidate probe results → one verdict.

    - The first passing candidate *in priority order* wins (``http://address:port``).
    - Every candidate timed out and one of them is ``known_good`` (``address:port`` that validated before)
      → a hang, not a firewall (:data:`HANG_ERROR`, ``hang=True``).
    - Two or more candidates, every one timed out at TCP → the guide's firewall error.
    - Otherwise the error names each failure (one candidate: just its reason, as the guide logs it).
    A TCP success never counts as a pass: only outcome "ok" (HTTP 2xx with ComfyUI's shape) does.
    """
    ordered = tuple(sorted(results, key=_priority))
    for r in ordered:
        if r.outcome == OK:
            host = f"[{r.address}]" if ":" in r.address else r.address
            return PortValidation(True, r.port, r.kind, f"http://{host}:{r.port}", None, False, ordered)
    if not ordered:
        return PortValidation(False, error=NO_CANDIDATES_ERROR)
    failed = [r for r in ordered if r.outcome != SKIPPED]
    good = set(known_good)
    if (good and failed and all(r.outcome == TIMEOUT for r in failed)
            and any(f"{r.address}:{r.port}" in good for r in failed)):
        return PortValidation(False, error=HANG_ERROR, candidates=ordered, hang=True)
    if len(failed) >= 2 and all(r.outcome == TIMEOUT and r.stage == "tcp" for r in failed):
        return PortValidation(False, error=FIREWALL_ERROR, firewall=True, candidates=ordered)
    if len(failed) == 1:
        error = failed[0].detail or failed[0].outcome
    else:
        error = "; ".join(f"{r.kind} {r.port}: {r.detail or r.outcome}" for r in failed)
    return PortValidation(False, error=error, candidates=ordered)


def unsafe_validation(candidates: list[Candidate], exc: UnsafeTarget) -> PortValidation:
    """The verdict recorded when the SSRF guard refused the instance's address (nothing was probed)."""
    results = tuple(ProbeResult(c.kind, c.port, c.host, UNSAFE, "resolve", 0.0, detail=exc.message)
                    for c in candidates)
    return PortValidation(False, error=f"Unsafe target refused: {exc.data.get('reason', exc.message)}",
                          candidates=results)


def log_validation(pv: PortValidation, instance_id: str | None = None, logger: logging.Logger = log) -> None:
    """The guide's exact lines (log alerts match them); the instance id rides in ``extra``.

    An instance for which the provider has reported no ComfyUI port (nor, often, an address) yet is
    still provisioning: nothing was probed and nothing failed, so it gets an INFO line in other words,
    never the guide's alert line, which would page on every rental.
    """
    extra = {"instance_id": instance_id}
    if pv.success:
        logger.info("✅ Port %s (%s) validated and accessible", pv.port, pv.kind, extra=extra)
    elif pv.error == NO_CANDIDATES_ERROR and not pv.candidates:
        logger.info("⏳ No ComfyUI port reported by the provider yet; nothing to probe (instance %s)",
                    instance_id if instance_id is not None else "?", extra=extra)
    else:
        logger.warning("⚠️  Port validation failed: %s", pv.error, extra=extra)


def run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code, even when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]


class PortValidator:
    """Probes candidates with the configured deadlines; ``concurrency`` bounds sockets open at once."""

    def __init__(self, config: ProbeConfig | None = None, *, concurrency: int = 200,
                 clock: Clock = SYSTEM_CLOCK, logger: logging.Logger = log) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.config = config or ProbeConfig()
        self.concurrency = concurrency
        self.clock = clock
        self.logger = logger

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> PortValidator:
        """PORT_TCP_TIMEOUT_MS, PORT_HTTP_TIMEOUT_MS, PORT_PROBE_CONCURRENCY, VASTKEEP_SIMULATED.

        The probe bound is capped below this process's open-file limit (a warning names
        PORT_PROBE_CONCURRENCY when it is): a probe past the limit would fail with EMFILE, not measure.
        """
        cfg = ProbeConfig(tcp_timeout_s=settings.port_tcp_timeout_ms / 1000,
                          http_timeout_s=settings.port_http_timeout_ms / 1000,
                          allow_loopback=bool(settings.vastkeep_simulated))
        return cls(cfg, concurrency=effective_probe_concurrency(settings.port_probe_concurrency), clock=clock)

    async def validate_async(self, candidates: list[Candidate], instance_id: str | None = None,
                             semaphore: asyncio.Semaphore | None = None,
                             known_good: Iterable[str] = ()) -> PortValidation:
        """Probe one instance's candidates; raises UnsafeTarget (before any connect) for a refused address."""
        sem = semaphore or asyncio.Semaphore(self.concurrency)
        results = await probe_candidates(candidates, self.config, self.clock, sem, instance_id)
        pv = classify_probe(results, known_good)
        log_validation(pv, instance_id, self.logger)
        return pv

    def validate(self, candidates: list[Candidate], instance_id: str | None = None,
                 known_good: Iterable[str] = ()) -> PortValidation:
        """Sync :meth:`validate_async`."""
        return run_sync(self.validate_async(candidates, instance_id, known_good=known_good))

    async def validate_many_async(self, targets: Mapping[str, list[Candidate]],
                                  known_good: Mapping[str, Iterable[str]] | None = None, *,
                                  on_verdict: Callable[[str, PortValidation], None] | None = None,
                                  deadline_s: float | None = None) -> dict[str, PortValidation]:
        """Every instance at once, at most ``concurrency`` sockets open; a refused target fails alone.

        ``on_verdict(instance_id, verdict)`` runs as each verdict arrives (so a caller can record it at once
        and an interrupted sweep keeps what it learned); an exception from it stops everything and is
        raised. With ``deadline_s`` probing stops then: unfinished instances are cancelled (their sockets
        closed) and left out of the result. Instances start in ``targets`` order.
        """
        sem = asyncio.Semaphore(self.concurrency)
        good = known_good or {}
        verdicts: dict[str, PortValidation] = {}

        async def one(iid: str, cands: list[Candidate]) -> None:
            try:
                pv = await self.validate_async(cands, iid, sem, known_good=good.get(iid, ()))
            except UnsafeTarget as exc:
                pv = unsafe_validation(cands, exc)
                log_validation(pv, iid, self.logger)
            if on_verdict is not None:
                on_verdict(iid, pv)
            verdicts[iid] = pv

        tasks = [asyncio.create_task(one(i, c)) for i, c in targets.items()]
        if not tasks:
            return {}
        try:
            done, _ = await asyncio.wait(tasks, timeout=deadline_s, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {i: verdicts[i] for i in targets if i in verdicts}

    def validate_many(self, targets: Mapping[str, list[Candidate]],
                      known_good: Mapping[str, Iterable[str]] | None = None, *,
                      on_verdict: Callable[[str, PortValidation], None] | None = None,
                      deadline_s: float | None = None) -> dict[str, PortValidation]:
        """Sync :meth:`validate_many_async`."""
        return run_sync(self.validate_many_async(targets, known_good, on_verdict=on_verdict,
                                                 deadline_s=deadline_s))


def known_good(record: InstanceRecord) -> tuple[str, ...]:
    """``address:port`` of the record's last validated URL (what a hang is told apart by), if any."""
    url = record.connection_url
    if not url:
        return ()
    parts = urlsplit(url)
    host = (parts.hostname or "").strip("[]")
    return (f"{host}:{parts.port}",) if host and parts.port else ()


class Addressed(Protocol):
    """Anything carrying the provider's address fields (``InstanceRecord``, ``providers.Instance``)."""

    @property
    def public_ip(self) -> str | None: ...
    @property
    def ports(self) -> Mapping[str, int]: ...


def candidates_for(record: Addressed) -> list[Candidate]:
    """Candidates from a record's or a provider row's ``public_ip`` and ``ports``."""
    return derive_candidates(record.public_ip, record.ports)
