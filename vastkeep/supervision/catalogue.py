"""Layer 6: which logical daemons should be running, and how each one is named.

A daemon's ``id`` is the name it beats its heartbeat under (:mod:`vastkeep.state.heartbeats`), its
``lease`` the fenced lease it holds while it runs, its ``name`` the guide-style display name of the log
lines (``[Watchdog] Registered process: LogCollector-12345``). The wanted set is:

- every keepalive shard ``0..COMFYUI_KEEPALIVE_SHARDS-1`` (``keepalive-shard-N``, Layer 4);
- the poll dispatcher (``poll-dispatcher``, Layer 5);
- an SSH log collector per instance that wants one (``ssh-collector:<id>``, Layer 1: provisioning
  instances, and ready ones with ``SSH_COLLECT_WHILE_READY``), when ``SSH_KEY_PATH`` is set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vastkeep import keepalive, polling, ssh

if TYPE_CHECKING:
    from vastkeep.core.settings import Settings
    from vastkeep.state import InstanceRecord

KEEPALIVE_SHARD = "keepalive-shard"
POLL_DISPATCHER = "poll-dispatcher"
SSH_COLLECTOR = "ssh-collector"


@dataclass(frozen=True)
class DaemonSpec:
    """One wanted daemon: its id (= heartbeat name), display name, kind, start argument and lease name."""

    id: str
    name: str
    kind: str
    arg: str | int | None = None
    lease: str | None = None


def keepalive_shard(n: int) -> DaemonSpec:
    return DaemonSpec(keepalive.daemon_name(n), f"KeepaliveShard-{int(n)}", KEEPALIVE_SHARD, int(n),
                      keepalive.lease_name(n))


def poll_dispatcher() -> DaemonSpec:
    return DaemonSpec(polling.DISPATCH_LEASE, "PollDispatcher", POLL_DISPATCHER, None, polling.DISPATCH_LEASE)


def ssh_collector(instance_id: str | int) -> DaemonSpec:
    iid = str(instance_id)
    return DaemonSpec(ssh.heartbeat_name(iid), f"LogCollector-{iid}", SSH_COLLECTOR, iid, ssh.lease_name(iid))


def wanted_daemons(settings: Settings, records: Iterable[InstanceRecord]) -> list[DaemonSpec]:
    """Every daemon that should run now, from the settings and the instance records."""
    out = [keepalive_shard(n) for n in range(int(settings.comfyui_keepalive_shards))]
    out.append(poll_dispatcher())
    if settings.ssh_key_path is not None:
        while_ready = bool(settings.ssh_collect_while_ready)
        out += [ssh_collector(r.instance_id) for r in records if ssh.wants_collector(r.status, while_ready)]
    return out


__all__ = ["KEEPALIVE_SHARD", "POLL_DISPATCHER", "SSH_COLLECTOR", "DaemonSpec", "keepalive_shard",
           "poll_dispatcher", "ssh_collector", "wanted_daemons"]
