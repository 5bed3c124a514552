"""The proxy's figures, served as Prometheus text on its own ``/metrics``.

Counters live in the one proxy process (no Redis round trip per request): requests by way in and status,
upstream errors by kind, bytes each way, websockets open and messages relayed, uploads spooled.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ProxyMetrics:
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (route, status)
    upstream_errors: Counter[str] = field(default_factory=Counter)  # kind
    bytes: Counter[str] = field(default_factory=Counter)  # "up" (client → instance) | "down"
    ws_messages: Counter[str] = field(default_factory=Counter)  # "up" | "down"
    websockets_open: int = 0
    websockets_total: int = 0
    uploads_spooled: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # auth | concurrency | too-large
    failovers: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, outcome)
    prompts_resubmitted: int = 0
    failover_seconds: list[float] = field(default_factory=list)  # detection + switch of each move

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str, rows: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {value:g}" for labels, value in rows)

        family("vastkeep_proxy_requests_total", "counter", "HTTP requests answered, by way in and status",
               [(f'{{route="{r}",status="{s}"}}', n) for (r, s), n in sorted(self.requests.items())])
        family("vastkeep_proxy_upstream_errors_total", "counter",
               "upstream calls that failed (connect, timeout, reset, refused address, none ready)",
               [(f'{{kind="{k}"}}', n) for k, n in sorted(self.upstream_errors.items())])
        family("vastkeep_proxy_bytes_total", "counter", "body bytes relayed (up: to the instance)",
               [(f'{{direction="{d}"}}', self.bytes[d]) for d in ("up", "down")])
        family("vastkeep_proxy_websocket_messages_total", "counter", "websocket messages relayed",
               [(f'{{direction="{d}"}}', self.ws_messages[d]) for d in ("up", "down")])
        family("vastkeep_proxy_websockets_open", "gauge", "websockets relayed right now",
               [("", self.websockets_open)])
        family("vastkeep_proxy_websockets_total", "counter", "websockets relayed since start",
               [("", self.websockets_total)])
        family("vastkeep_proxy_uploads_spooled_total", "counter", "uploads spooled to disk",
               [("", self.uploads_spooled)])
        family("vastkeep_proxy_rejected_total", "counter", "requests refused before any upstream call",
               [(f'{{reason="{k}"}}', n) for k, n in sorted(self.rejected.items())])
        family("vastkeep_proxy_failovers_total", "counter",
               "leases moved off a lost instance (moved), with none to move to (failed), or ended meanwhile",
               [(f'{{reason="{r}",outcome="{o}"}}', n) for (r, o), n in sorted(self.failovers.items())])
        family("vastkeep_proxy_prompts_resubmitted_total", "counter",
               "prompts in flight re-submitted to the new instance after a failover",
               [("", self.prompts_resubmitted)])
        family("vastkeep_proxy_failover_seconds", "summary", "detection + switch of each failover",
               [("_count", len(self.failover_seconds)), ("_sum", round(sum(self.failover_seconds), 6))])
        return "\n".join(out) + "\n"


__all__ = ["ProxyMetrics"]
