"""System tasks: a ping to prove the round-trip, and the scheduled heartbeat."""

from __future__ import annotations

from tasks.base import VastkeepTask
from vastkeep.state.heartbeats import write_heartbeat
from worker import wiring
from worker.app import app
from worker.limits import limits_for

BEAT_PROCESS = "beat"


@app.task(name="vastkeep.system.ping", bind=True, base=VastkeepTask,
          **limits_for("vastkeep.system.ping", wiring.settings()))
def ping(self: VastkeepTask) -> dict[str, object]:
    """Answer with the worker's name: proves broker → worker → result backend works."""
    return {"pong": True, "worker": self.request.hostname}


@app.task(name="vastkeep.system.heartbeat", bind=True, base=VastkeepTask, ignore_result=True,
          **limits_for("vastkeep.system.heartbeat", wiring.settings()))
def heartbeat(self: VastkeepTask) -> dict[str, object]:
    """Beat → broker → worker → Redis end to end: records the ``beat`` heartbeat (who ran it, when).

    Idempotent: it overwrites one key with a TTL. Worker liveness itself is written by the worker's
    own heartbeat bootstep, so this one only says "the schedule is flowing".
    """
    res = wiring.resources()
    record = write_heartbeat(res.redis, res.keys, res.clock, BEAT_PROCESS, kind="beat",
                             worker=str(self.request.hostname or "?"))
    return {"ok": True, "process": BEAT_PROCESS, "worker": record["worker"], "at": record["at"]}
