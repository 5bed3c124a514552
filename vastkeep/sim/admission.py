"""Admitting one API request: which simulated provider it is for, whether its key is valid, which injected
fault strikes it; the request is logged without its key. Read by the route modules before a handler runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vastkeep.core.clock import Clock
from vastkeep.sim.faults import ApiFault, ApiFaults, RequestLog, TokenBook, fingerprint


@dataclass
class Admission:
    """What the core decided about one API request before its handler runs."""

    service: str | None
    entry: dict[str, Any] | None = None
    fault: ApiFault | None = None

    @property
    def authorized(self) -> bool:
        return self.entry is None or bool(self.entry["key_valid"])


def service_of(path: str) -> str | None:
    """Which simulated provider a path belongs to (``None``: not an authenticated API route)."""
    if path.startswith(("/api/v0", "/api/v1/instances")):
        return "vast"
    if path.startswith("/api/whoami"):
        return "hf"
    if path.startswith("/api/v1/me"):
        return "civitai"
    return None


class Admitting:
    """The simulator's request gate (mixed into :class:`~vastkeep.sim.core.Simulator`)."""

    clock: Clock
    tokens: TokenBook
    api_faults: ApiFaults
    requests: RequestLog

    def admit(self, method: str, path: str, query: dict[str, str], authorization: str) -> Admission:
        """Log an API request (without its key) and decide its fault and whether its key is valid."""
        service = service_of(path)
        if service is None:
            return Admission(None)
        key, how = None, "missing"
        if authorization.startswith("Bearer "):
            key, how = authorization[7:].strip(), "bearer"
        elif service == "vast" and query.get("api_key"):
            key, how = query["api_key"], "query"
        entry = self.requests.add(
            {
                "service": service,
                "method": method,
                "path": path,
                "query": {k: v for k, v in query.items() if k != "api_key"},
                "auth": how,
                "key_valid": self.tokens.check(service, key),
                "key_fingerprint": fingerprint(key) if key else None,
                "ts": self.clock.now(),
                "status": None,
            }
        )
        return Admission(service, entry, self.api_faults.take(service, path, method))


__all__ = ["Admission", "Admitting", "service_of"]
