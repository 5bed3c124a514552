"""What the between-machines scenarios (``tests/integration/test_judge_*.py``) share: who holds a lease,
a periodic sweep as beat sends it, and a Redis ``MONITOR`` that records what one host sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from vastkeep.keepalive import lease_name
from vastkeep.polling.flow import DISPATCH_LEASE
from vastkeep.state import Keys

SHARD0 = lease_name(0)
DISPATCHER = DISPATCH_LEASE
SCRIPTS = Path(__file__).resolve().parents[1] / "vastkeep" / "state"


def script_sha(name: str) -> str:
    """The SHA1 EVALSHA names a state script by (``leases_renew``: ``vastkeep/state/leases_renew.lua``)."""
    return hashlib.sha1((SCRIPTS / f"{name}.lua").read_bytes()).hexdigest()


def holder(r: redis.Redis, name: str) -> tuple[int | None, int]:
    """(owner pid, fence) of the lease ``name``; (None, last fence) when it is free."""
    data = r.hgetall(Keys().lease(name))
    if not data or "owner" not in data:
        return None, 0
    return int(str(data["owner"]).split(":")[-2]), int(data.get("fence") or 0)


class Sweeper:
    """Sends ``vastkeep.supervision.sweep`` every ``interval_s`` from a thread, as beat would."""

    def __init__(self, client, interval_s: float = 1.0) -> None:
        self.client, self.interval_s = client, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="judge-sweeper")

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.client.send_task("vastkeep.supervision.sweep")
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sweeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Command:
    at: float  # monotonic, in the test process
    name: str
    args: list[str]


@dataclass
class Monitor:
    """Every command Redis executes for clients from ``address`` (Redis ``MONITOR``), in a thread."""

    port: int
    address: str
    password: str | None = None
    commands: list[Command] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._conn = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0, decode_responses=True,
                                 password=self.password)
        self._thread = threading.Thread(target=self._run, daemon=True, name="judge-monitor")

    def _run(self) -> None:
        with self._conn.monitor() as mon:
            while not self._stop.is_set():
                try:
                    cmd = mon.next_command()
                except (redis.TimeoutError, redis.ConnectionError):
                    if self._stop.is_set():
                        return
                    continue
                client = str(cmd.get("client_address") or "")
                if client == self.address:
                    parts = str(cmd.get("command") or "").split(" ")
                    self.commands.append(Command(time.monotonic(), parts[0].upper(), parts[1:]))

    def start(self) -> Monitor:
        self._thread.start()
        time.sleep(0.3)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self._conn.close()

    def since(self, t: float) -> list[Command]:
        return [c for c in self.commands if c.at >= t]


@dataclass
class StaleWrites:
    """What a host that lost ``lease`` (its ``owner`` string) sent about the instance ``iid`` afterwards.

    ``fenced``: writes that carried its stale grant (lease renewals, fenced record writes), each refused by
    the scripts' owner/fence check. ``accepted``: writes it made on the strength of the lost lease with no
    fence at all (keepalive state, events about the instance, record marks, the daemon's heartbeat), which
    Redis had no way to refuse. Must be 0.
    """

    fenced: list[Command]
    accepted: list[Command]


def stale_writes(commands: list[Command], *, owner: str, iid: str, daemon: str) -> StaleWrites:
    renew, cas, beat = script_sha("leases_renew"), script_sha("store_cas"), script_sha("heartbeats_write")
    fenced, accepted = [], []
    keepalive_key = Keys().keepalive(iid)
    for c in commands:
        text = " ".join(c.args)
        sha = c.args[0] if c.name == "EVALSHA" and c.args else ""
        if sha in (renew, cas) and owner in text:
            fenced.append(c)
        elif (c.name in ("SET", "SETEX", "PSETEX") and c.args and c.args[0] == keepalive_key) \
                or (c.name == "XADD" and c.args and c.args[0] == Keys().events() and iid in text) \
                or (sha == cas and "keepalive_lost_since" in text) \
                or (sha == beat and daemon in c.args[3:4]):
            accepted.append(c)
    return StaleWrites(fenced, accepted)

