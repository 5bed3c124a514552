"""HTTP-level faults of the simulated APIs (429/5xx bursts, slow answers, ambiguous 200 bodies), the valid
keys, and a request log.

An *ambiguous answer* is a 200 whose body says nothing reliable: an empty body, ``{"instances": null}``, a
listing without the instances it should hold. Real providers send these now and then; a client must read
them as "unknown", never as "no instances" or "not found".

The request log never keeps a key: it records how the caller authenticated (``bearer`` / ``query`` /
``missing``), whether the key was valid, and a short SHA-256 fingerprint tests can compare against.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Any

SERVICES = ("vast", "hf", "civitai")
#: 200 answers whose body is not the API's JSON (an ambiguous answer, never a verdict): empty, cut short.
BAD_BODIES = {"empty": "", "malformed": '{"instances": [{"id": 1, "actual_status": "runn'}
TOO_FREQUENT = "API requests too frequent"


def fingerprint(secret: str) -> str:
    """A short, one-way tag for a key: lets tests match keys without the simulator storing them."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


@dataclass
class ApiFault:
    """One rule: for ``service`` (or ``all``), the next ``count`` requests (None = until cleared).

    ``status`` 4xx/5xx answers that error; ``status`` 200 needs a ``body`` (possibly ``""``) and answers it
    as ``application/json``: an ambiguous answer. ``path_contains`` / ``path_equals`` / ``method`` narrow
    the requests it hits (``path_equals="/api/v0/instances"`` is the listing alone, not ``show``).
    """

    service: str = "all"
    status: int | None = None
    delay_s: float = 0.0
    count: int | None = None
    path_contains: str | None = None
    body: str | None = None
    path_equals: str | None = None
    method: str | None = None
    body_kind: str | None = None  # "empty" | "malformed": a 200 whose body is not the API's JSON

    def matches(self, service: str, path: str, method: str | None = None) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.service not in ("all", service):
            return False
        if self.method is not None and method is not None and self.method != method.upper():
            return False
        if self.path_equals is not None and path.rstrip("/") != self.path_equals.rstrip("/"):
            return False
        return self.path_contains is None or self.path_contains in path

    def as_dict(self) -> dict[str, object]:
        return {
            "service": self.service,
            "status": self.status,
            "delay_s": self.delay_s,
            "count": self.count,
            "path_contains": self.path_contains,
            "path_equals": self.path_equals,
            "method": self.method,
            "body": self.body,
            "body_kind": self.body_kind,
        }


class ApiFaults:
    """The active rules; the first matching rule with remaining count applies (and is consumed)."""

    def __init__(self) -> None:
        self.rules: list[ApiFault] = []

    def add(self, spec: dict[str, Any]) -> ApiFault:
        service = spec.get("service", "all")
        if service not in (*SERVICES, "all"):
            raise ValueError(f"unknown service {service!r}")
        status = spec.get("status")
        body = spec.get("body")
        body_kind = spec.get("body_kind")
        if body_kind is not None:  # a named bad body: an empty or cut-short JSON answer with status 200
            if body_kind not in BAD_BODIES:
                raise ValueError(f"body_kind must be one of {tuple(BAD_BODIES)}")
            body = BAD_BODIES[body_kind] if body is None else body
            status = 200 if status is None else status
        if body is not None and not isinstance(body, str):
            raise ValueError("body must be a string (the raw answer; \"\" for an empty body)")
        if status is not None and int(status) == 200:
            if body is None:
                raise ValueError("status 200 needs a body (the ambiguous answer to send)")
        elif status is not None and not 400 <= int(status) <= 599:
            raise ValueError("status must be 200 (with a body) or a 4xx or 5xx code")
        method = spec.get("method")
        count = spec.get("count")
        rule = ApiFault(
            service=service,
            status=int(status) if status is not None else None,
            delay_s=float(spec.get("delay_s", 0.0)),
            count=int(count) if count is not None else None,
            path_contains=spec.get("path_contains"),
            body=body,
            path_equals=spec.get("path_equals"),
            method=str(method).upper() if method else None,
            body_kind=body_kind,
        )
        if rule.status is None and rule.delay_s <= 0:
            raise ValueError("a fault needs a status or a delay_s")
        self.rules.append(rule)
        return rule

    def take(self, service: str, path: str, method: str | None = None) -> ApiFault | None:
        for rule in self.rules:
            if rule.matches(service, path, method):
                if rule.count is not None:
                    rule.count -= 1
                return rule
        return None

    def clear(self) -> None:
        self.rules.clear()

    def active(self) -> list[dict[str, object]]:
        return [r.as_dict() for r in self.rules if r.count is None or r.count > 0]


def fault_body(status: int, service: str) -> tuple[str, str]:
    """(body, content type) a provider really sends with this status."""
    if status == 429:
        return TOO_FREQUENT, "text/plain"
    if status >= 500:
        return f"<html><body><h1>{status} Server Error</h1></body></html>", "text/html"
    if service == "hf":
        return '{"error":"Invalid credentials in Authorization header"}', "application/json"
    return '{"success": false, "error": "simulated_fault", "msg": "simulated fault"}', "application/json"


class TokenBook:
    """The keys each simulated service accepts (several allowed, so a rotation can be simulated)."""

    def __init__(self, vast: str, hf: str, civitai: str) -> None:
        self.valid: dict[str, set[str]] = {"vast": {vast}, "hf": {hf}, "civitai": {civitai}}
        self._initial = {k: set(v) for k, v in self.valid.items()}

    def set(self, service: str, keys: list[str]) -> None:
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}")
        self.valid[service] = {k for k in keys if k}

    def check(self, service: str, key: str | None) -> bool:
        return bool(key) and key in self.valid[service]

    def reset(self) -> None:
        self.valid = {k: set(v) for k, v in self._initial.items()}


class Ledger:
    """Every rent and destroy the simulated cloud performed, kept whole (the soak's source of truth for
    double rents and instances nobody knows; the request log is a bounded window)."""

    def __init__(self) -> None:
        self._items: list[dict[str, object]] = []

    def add(self, action: str, instance_id: int, ts: float, *, label: str | None = None,
            via: str = "api") -> None:
        self._items.append({"seq": len(self._items) + 1, "action": action, "instance_id": instance_id,
                            "label": label, "via": via, "ts": ts})

    def since(self, seq: int = 0) -> list[dict[str, object]]:
        return self._items[seq:]

    def clear(self) -> None:
        self._items.clear()


class RequestLog:
    """The last requests the APIs saw, without secrets (for asserting how a client authenticates)."""

    def __init__(self, maxlen: int = 2000) -> None:
        self._items: deque[tuple[int, dict[str, object]]] = deque(maxlen=maxlen)  # (seq, entry)
        self._seq = 0

    def add(self, entry: dict[str, object]) -> dict[str, object]:
        self._seq += 1
        entry["seq"] = self._seq
        self._items.append((self._seq, entry))
        return entry

    def since(self, seq: int = 0, service: str | None = None) -> list[dict[str, object]]:
        return [e for n, e in self._items if n > seq and (service is None or e["service"] == service)]

    def clear(self) -> None:
        self._items.clear()
