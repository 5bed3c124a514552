"""When a planned fault may strike (pure): never two causes in one figure.

- :func:`struck`: instances a fault still holds (or killed) are not struck again.
- :func:`hidden_by`: a process fault waits while an instance fault that process must notice is unobserved,
  or while another between-machines fault holds (the plan keeps them apart; a deferred one may slip);
  an instance fault waits while the process that must notice it is down or back for less than
  :data:`OBSERVER_SETTLE_S`, and a ComfyUI fault until every keepalive shard runs again
  (:func:`shards_running`).

Inputs are the injections so far (epoch seconds) and what the observer read; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from vastkeep.core.backoff import RESTART_GATE_S
from vastkeep.soak import counters as judge
from vastkeep.soak.between import HOSTB_FAMILIES
from vastkeep.soak.injector import Injection
from vastkeep.soak.plan import FAMILIES, INSTANCE, PROCESS, FaultStep, Signal

KEEPALIVE_WORKER = "worker-keepalive"
OBSERVER_SETTLE_S = 30.0  # supervision sees a stale daemon after 10 s and restarts it after 10 s more
SAME_CHILD_GAP_S = 10.0  # a child back from one fault serves this long before the next one on it

Shards = Mapping[str, float | None]

#: The children that do an observer's work: the keepalive shards are spread over both hosts, so a ComfyUI
#: fault on an instance whose shard host B held went unseen while host B was cut (a crash struck 0.1 s
#: after a cut, 30-minute run seed 120697433).
WATCHERS: dict[str, tuple[str, ...]] = {KEEPALIVE_WORKER: (KEEPALIVE_WORKER, "hostb-keepalive")}


#: The children that move host B's shards away (beat sends the sweep, host A's keepalive worker takes them):
#: a host B fault's figure is that move.
MOVERS = ("beat", KEEPALIVE_WORKER)


#: Faults struck under a client's work, and the children that work needs: a crash under a prompt waits while
#: the admin API is down (no client gets a lease then, so no prompt runs: CI's short form, seed 20261207).
NEEDS_CLIENTS: dict[str, tuple[str, ...]] = {"comfy-crash": ("api",)}


def handed_over_lately(held: Sequence[str], handovers: Mapping[str, float | None] | None, now: float) -> bool:
    """True while a shard host B holds was handed over to it less than ``RESTART_GATE_S`` (60 s) ago, or
    when that is unknown. Supervision moves a shard whose holder vanished at once, but a second vanish within
    60 s is a crash loop by design and backs off (36 s in a 30-minute run: host A's keepalive worker killed,
    its shard handed to host B, host B paused 6 s later; the move came after the pause). A host B fault
    then measures the backoff, not the move."""
    if handovers is None:
        return True
    return any(now - float(handovers.get(n) or 0.0) < RESTART_GATE_S for n in held)


def watchers(observer: str | None) -> set[str]:
    """The children whose fault keeps ``observer``'s work from being done."""
    return set(WATCHERS.get(observer, (observer,))) if observer else set()


def shards_running(shards: Shards | None, granted_after: float) -> bool:
    """True when every keepalive shard is held by a grant taken after ``granted_after`` (0: any grant)."""
    if not shards:
        return False
    return all(at is not None and at >= granted_after for at in shards.values())


def struck(injections: Sequence[Injection], now: float) -> set[str]:
    """Instances a fault still holds (or killed): never struck twice at once (one cause per figure)."""
    out = set[str]()
    for record in injections:
        fam = FAMILIES[record["family"]]
        if fam.target != INSTANCE or not record.get("injected"):
            continue
        if not fam.restorable:
            out.add(str(record["target"]))
            continue
        undone = record.get("restored_at") if fam.hold_s[1] > 0 else record["at"]
        if undone is None or now < float(undone) + judge.RECOVERY_GRACE_S:
            out.add(str(record["target"]))
    return out


def hidden_by(
    step: FaultStep,
    injections: Sequence[Injection],
    now: float,
    events: Sequence[judge.Record],
    shards: Callable[[], Shards | None],
) -> bool:
    """True while ``step`` and an earlier fault would blur each other's figures (the module's rules). For the
    keepalive worker the shards themselves must run again: a grant taken after a kill, any grant after a stop
    (supervision restarts them from beat's sweep, so a beat that is down too keeps them down well past the
    settle time, and a crash struck then measured the restart, not the detection)."""
    fam = FAMILIES[step.family]
    if step.family in NEEDS_CLIENTS and any(
        record.get("injected") and set(NEEDS_CLIENTS[step.family]) & set(FAMILIES[record["family"]].stops)
        and (record.get("back_at") is None or now < float(record["back_at"]) + SAME_CHILD_GAP_S)
        for record in injections
    ):
        return True
    if fam.target == INSTANCE and fam.observer:
        shards_since = 0.0
        for record in injections:
            rfam = FAMILIES[record["family"]]
            if record.get("injected") and watchers(fam.observer) & set(rfam.stops):
                back = record.get("back_at")
                if back is None or now < float(back) + OBSERVER_SETTLE_S:
                    return True
                if rfam.signal == Signal.KILL:
                    shards_since = max(shards_since, float(record["at"]))
        if fam.observer == KEEPALIVE_WORKER:
            return not shards_running(shards(), shards_since)
        return False
    if fam.target != PROCESS:
        return False
    for record in injections:
        rfam = FAMILIES[record["family"]]
        back = record.get("back_at")
        if not record.get("injected"):
            continue
        # a restart of every process waits for all of them, and they wait for it
        if (fam.together or rfam.together) and set(fam.stops) & set(rfam.stops) \
                and (back is None or now < float(back) + OBSERVER_SETTLE_S):
            return True
        # one fault at a time on a child: two deferred steps released together never overlap on it (two
        # pause-holder steps struck 1 s apart in a 30-minute run; the first SIGCONT ended both)
        if fam.process is not None and rfam.process == fam.process \
                and (back is None or now < float(back) + SAME_CHILD_GAP_S):
            return True
        # one between-machines fault at a time (a Redis restart struck 14 s into a host cut, 30-minute run)
        if fam.between and rfam.between and (back is None or now < float(back) + SAME_CHILD_GAP_S):
            return True
        # host B's shards move through beat's sweep to host A's keepalive worker: a fault on either waits
        # while a host B fault holds with its move unseen, and a host B fault waits while either is down or
        # back for less than 10 s (a kill-beat 16 s into a pause, a kill-keepalive 15 s into one: moved only
        # after SIGCONT; with the 30 s observer settle, the short form's cut waited past its window)
        if step.family in HOSTB_FAMILIES and set(rfam.stops) & set(MOVERS) \
                and (back is None or now < float(back) + SAME_CHILD_GAP_S):
            return True
        if record["family"] in HOSTB_FAMILIES and set(fam.stops) & set(MOVERS) \
                and back is None and not record.get("moved_at"):
            return True
    for record in injections:
        rfam = FAMILIES[record["family"]]
        if not record.get("injected") or not watchers(rfam.observer) & set(fam.stops):
            continue
        end = float(record["at"]) + (rfam.hold_s[1] or 0.0) + judge.RECOVERY_GRACE_S
        if now < end and not _settled(record, events):
            return True
    return False


def _settled(record: Injection, events: Sequence[judge.Record]) -> bool:
    """An instance fault was seen; a crash under a prompt, also failed over (a control-plane restart struck
    2 s after one, while the endpoint moved the lease: two faults in one figure, seed 120697433)."""
    if judge.observe_instance_fault(record, events) is None:
        return False
    if not record.get("under_prompt"):
        return True
    target, at = str(record.get("target")), float(record["at"])
    for ev in events:
        data = ev.get("data")
        if ev.get("kind") == "failover-done" and judge.num(ev.get("ts") or 0) >= at - 0.5 \
                and isinstance(data, Mapping) and str(data.get("instance_id")) == target:
            return True
    return False


__all__ = ["KEEPALIVE_WORKER", "MOVERS", "NEEDS_CLIENTS", "OBSERVER_SETTLE_S", "WATCHERS",
           "handed_over_lately", "hidden_by", "shards_running", "struck", "watchers"]
