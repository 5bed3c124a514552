"""The seeded fault plan: which fault, when, for how long, on what (pure).

A plan is a list of :class:`FaultStep`, made by :func:`build_plan` from a seed alone, so ``--seed`` replays a
run's faults in the same order at the same offsets (the targets are picked at injection time among the
instances then ready, by the step's ``pick`` fraction, so they replay as closely as the pool allows).

Every family of :data:`FAMILIES` appears at least once when the run is long enough (the short form's
guarantee); the rest of the time is filled with families drawn at random. Families that strike the same
process are spaced so a restart's back-off (10 s, then 20 s) does not turn one kill into a crash loop. At run
time the runner also holds back a fault on a process while an instance fault that process must notice
(``observer``) is still unobserved in its window, so one fault never hides another.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from enum import StrEnum


class Target(StrEnum):
    """What a fault strikes: one instance, the cloud's API, or a stack process."""

    INSTANCE = "instance"
    API = "api"
    PROCESS = "process"


class Signal(StrEnum):
    """How a process fault strikes: ``kill -9`` (the watchdog restarts it), ``SIGTERM`` (a clean stop, then
    the watchdog restarts it: Redis restarted on its AOF), ``SIGSTOP`` then ``SIGCONT``, or ``CUT``: the Redis
    link of the second worker host black-holed, then restored (no signal; :mod:`vastkeep.soak.hostb`)."""

    KILL = "kill"
    TERM = "term"
    STOP = "stop"
    CUT = "cut"


INSTANCE, API, PROCESS = Target.INSTANCE, Target.API, Target.PROCESS


@dataclass(frozen=True)
class Family:
    """One kind of fault: where it comes from, what it strikes, how long it holds, what shows it was seen."""

    name: str
    target: Target
    hold_s: tuple[float, float]  # how long before it is undone (0, 0 = never undone: the system must replace)
    observed_by: tuple[str, ...] = ()  # event kinds on the target instance that count as "observed"
    restorable: bool = True
    process: str | None = None  # stack child id for process faults
    signal: Signal | None = None
    observer: str | None = None  # the stack child whose work notices this instance fault
    affects: tuple[str, ...] = ()  # children a process fault stops besides ``process`` (Redis: all of them)
    full_only: bool = False  # too long for the short form's 4 minutes: only in a run of 10 minutes or more
    together: bool = False  # a process fault that strikes ``process`` and every child of ``affects`` at once
    between: bool = False  # a between-machines fault: never planned while another one holds (one lane)

    @property
    def stops(self) -> tuple[str, ...]:
        """Every stack child this fault keeps from working while it holds."""
        return (*((self.process,) if self.process else ()), *self.affects)


_COMFY_SEEN = ("ping-failure", "connection-lost", "instance-status", "instance-replaced", "lease-broken")
_HOST_SEEN = ("instance-status", "instance-replaced", "instance-destroyed", "lease-broken")
_SSH_SEEN = ("ssh-backoff", "ssh-connected", "ssh-fallback-started")
#: Every child that needs Redis, and the second worker host's (a Redis fault stops them all).
_NEEDS_REDIS = ("worker-control", "worker-keepalive", "worker-ssh", "beat", "api", "hostb-control",
                "hostb-keepalive")
_CONTROL_PLANE = ("worker-keepalive", "worker-ssh", "beat", "api", "hostb-control", "hostb-keepalive")
_PROCS = (
    ("control", "worker-control"),
    ("keepalive", "worker-keepalive"),
    ("ssh", "worker-ssh"),
    ("beat", "beat"),
    ("api", "api"),
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # struck under a client's prompt when one runs (between execution_start and execution_success): the
        # endpoint fails the lease over and the prompt finishes on another instance (docs/proxy.md)
        Family("comfy-crash", INSTANCE, (10, 40), (*_COMFY_SEEN, "failover-done"),
               observer="worker-keepalive"),
        Family("comfy-hang", INSTANCE, (35, 50), _COMFY_SEEN, observer="worker-keepalive"),
        Family("comfy-slow", INSTANCE, (35, 50), _COMFY_SEEN, observer="worker-keepalive"),
        Family("host-offline", INSTANCE, (0, 0), _HOST_SEEN, restorable=False),
        Family("host-exited", INSTANCE, (0, 0), _HOST_SEEN, restorable=False),
        Family("outbid", INSTANCE, (0, 0), _HOST_SEEN, restorable=False),
        Family("destroyed-outside", INSTANCE, (0, 0), _HOST_SEEN, restorable=False),
        Family("ssh-drop", INSTANCE, (0, 0), _SSH_SEEN, observer="worker-ssh"),
        Family("ssh-blackhole", INSTANCE, (40, 60), _SSH_SEEN, observer="worker-ssh"),
        Family("api-slow", API, (0, 0)),
        Family("api-429", API, (0, 0)),
        Family("api-5xx", API, (0, 0)),
        Family("api-empty", API, (0, 0)),
        Family("api-malformed", API, (0, 0)),
        *(Family(f"kill-{kind}", PROCESS, (0, 0), process=cid, signal=Signal.KILL) for kind, cid in _PROCS),
        *(Family(f"stop-{kind}", PROCESS, (4, 12), process=cid, signal=Signal.STOP) for kind, cid in _PROCS),
        # between machines (issue 20): Redis restarted on its AOF (the supervisor starts it again after its
        # 10 s back-off), Redis unreachable for 60 s (frozen: connections hang, as behind a dead switch), the
        # second worker host cut off from Redis past its leases, a lease holder paused past its lease TTL
        Family("redis-restart", PROCESS, (0, 0), process="redis", signal=Signal.TERM, affects=_NEEDS_REDIS,
               between=True),
        Family("redis-away", PROCESS, (60, 60), process="redis", signal=Signal.STOP, affects=_NEEDS_REDIS,
               full_only=True, between=True),
        # cut past the lease TTL (15 s), the stale heartbeat (10 s) and the sweep's first restart step (10 s)
        Family("host-cut", PROCESS, (40, 50), process="hostb-keepalive", signal=Signal.CUT,
               affects=("hostb-control",), between=True),
        # paused past its lease TTL and long enough for another host to take the shard over (as the cut)
        Family("pause-holder", PROCESS, (35, 45), process="hostb-keepalive", signal=Signal.STOP,
               full_only=True, between=True),
        # a control-plane restart: every vastkeep process of both hosts killed at once and started again by
        # its supervisor, while Redis (the state) and the cloud with its live instances stay up
        Family("control-plane-restart", PROCESS, (0, 0), process="worker-control", signal=Signal.KILL,
               affects=_CONTROL_PLANE, full_only=True, together=True, between=True),
    )
}

# Holds: a hang or a slow answer lasts past one ComfyUI keepalive interval (30 s) plus its 5 s timeout, an SSH
# black hole past the dead-peer rule (3 missed keepalives of 10 s), so a ping or a keepalive meets each one.

#: The mean gap between faults at most (a long run repeats every family instead of spreading one of each).
MAX_GAP_S = 15.0

#: Two faults on the same process child at least this far apart (a restart waits 10 s, a second one 20 s).
PROCESS_SPACING_S = 45.0


@dataclass(frozen=True)
class FaultStep:
    """One planned fault: at ``at_s`` after the workload started, ``family``, undone after ``hold_s``."""

    at_s: float
    family: str
    hold_s: float
    pick: float = 0.0  # which target among those eligible then (a fraction, replayable)
    params: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _params(family: Family, rng: random.Random) -> dict[str, float]:
    name = family.name
    if name == "comfy-slow":
        return {"delay_s": round(rng.uniform(8.0, 12.0), 1)}  # beyond the 5 s ping timeout
    if name == "api-slow":
        return {"delay_s": 10.0, "count": 2}
    if name in ("api-429", "api-5xx"):
        return {
            "count": rng.randint(2, 5),
            **({"status": rng.choice([500, 502, 503])} if name == "api-5xx" else {}),
        }
    if name in ("api-empty", "api-malformed"):
        return {"count": rng.randint(1, 3)}
    return {}


def build_plan(
    seed: int,
    start_s: float,
    end_s: float,
    families: tuple[str, ...] | None = None,
    fill: bool = True,
    *,
    full: bool = True,
) -> list[FaultStep]:
    """Steps from ``start_s`` to ``end_s`` (seconds after the workload starts), sorted by time.

    Each family of ``families`` (default every one) once in a seeded order over the window; with ``fill``,
    more random steps keep the first pass's mean gap for the rest of the window (a full form's long tail).
    Process faults on one child are kept :data:`PROCESS_SPACING_S` apart by pushing later steps back.
    ``full=False`` (the short form) leaves out the families too long for it (``full_only``).
    """
    if end_s <= start_s:
        raise ValueError("the fault window is empty")
    names = list(families or (n for n, f in FAMILIES.items() if full or not f.full_only))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown fault families: {unknown}")
    rng = random.Random(seed)
    order = _comfy_first(_ssh_after_a_replacement(names[:], rng))
    window = end_s - start_s
    gap = min(window / max(1, len(order)), MAX_GAP_S)
    first_pass_s = min(window, max(gap, 6.0) * len(order))
    gap = first_pass_s / len(order)
    times = [start_s + i * gap + rng.uniform(0, gap * 0.5) for i in range(len(order))]
    if fill:
        t = start_s + first_pass_s
        while t + gap < end_s:
            t += gap * rng.uniform(0.6, 1.4)
            if t < end_s:
                times.append(t)
                order.append(rng.choice(names))
    steps = []
    for at, name in zip(times, order, strict=True):
        fam = FAMILIES[name]
        hold = round(rng.uniform(*fam.hold_s), 1) if fam.hold_s[1] > 0 else 0.0
        steps.append(FaultStep(round(at, 1), name, hold, round(rng.random(), 4), _params(fam, rng)))
    return _space_processes(sorted(steps, key=lambda s: s.at_s), start_s, end_s)


#: Families after which a new instance provisions (the pool replaces the one they killed): its SSH log
#: collector runs then, and an SSH fault needs a running collector to strike.
_REPLACED = ("destroyed-outside", "host-offline", "host-exited", "outbid")


def _ssh_after_a_replacement(order: list[str], rng: random.Random) -> list[str]:
    """A seeded shuffle in which the SSH families come right after the first family that gets an instance
    replaced: collectors run only while an instance provisions, so an SSH fault planned where none runs waited
    for one and, late in a short run, found none (the short form with 26 families, seed 20261207)."""
    rng.shuffle(order)
    ssh = [n for n in order if n.startswith("ssh-")]
    first = next((i for i, n in enumerate(order) if n in _REPLACED), None)
    if not ssh or first is None:
        return order
    rest = [n for n in order if not n.startswith("ssh-")]
    at = rest.index(order[first]) + 1
    return rest[:at] + ssh + rest[at:]


def _comfy_first(order: list[str]) -> list[str]:
    """The first pass with the ComfyUI families first, then the host cut: a ComfyUI fault waits until its
    keepalive workers have settled from any fault of theirs (30 s, and their shards held again), so planned
    after a few process faults it was pushed past the short form's window (CI, seed 20261207); struck first,
    at a settled start, each is seen before the process faults that must wait for it."""
    comfy = [n for n in order if FAMILIES[n].observer == "worker-keepalive"]
    cut = [n for n in order if n == "host-cut"]
    return comfy + cut + [n for n in order if n not in comfy and n not in cut]


#: The lane of the between-machines faults: one at a time (a Redis restart struck 14 s into a host cut ended
#: the cut's figure: no move was seen; 30-minute run, seed 1793532032).
BETWEEN_LANE = "between-machines"
LANE_SETTLE_S = 25.0  # after one is undone, the processes reconnect and the shards are held again
SETTLED_START_S = 30.0  # a step pushed out of its place takes one after this much of the window, if any


def spacing_s(hold_s: float) -> float:
    """How far a process fault keeps the next one on its child: :data:`PROCESS_SPACING_S`, or its hold plus
    30 s when that is longer (a 60 s Redis outage, a 35 s cut), so the child settles between two faults."""
    return max(PROCESS_SPACING_S, hold_s + 30.0)


def _space_processes(steps: list[FaultStep], start_s: float, end_s: float) -> list[FaultStep]:
    """Keep faults on one process child :func:`spacing_s` apart, and the between-machines faults
    (:data:`BETWEEN_LANE`) their hold plus :data:`LANE_SETTLE_S` apart: a step too close to the one before
    is pushed back to the first free place; when that leaves the window, it takes the first free place from
    the window's start. A step that is undone after ``hold_s`` ends within the window too: the workload's end
    undoes every fault still held, and a host cut restored 15 s after it struck never moved a shard (the
    short form, seed 20261207)."""
    taken: dict[str, list[tuple[float, float]]] = {}  # lane -> (from, to) of its faults so far
    out = []
    for step in steps:
        fam = FAMILIES[step.family]
        gaps = {**({fam.process: spacing_s(step.hold_s)} if fam.process else {}),
                **({BETWEEN_LANE: step.hold_s + LANE_SETTLE_S} if fam.between else {})}
        last = max(start_s, end_s - step.hold_s)  # the latest start that is undone within the window

        def fits(when: float) -> bool:
            return all(when >= b or when + gap <= a  # noqa: B023 - used in this turn only
                       for lane, gap in gaps.items() for a, b in taken.get(lane, ()))  # noqa: B023

        at = min(step.at_s, last)
        if not fits(at):
            later = sorted(b for lane in gaps for _, b in taken.get(lane, ()) if b > at)
            steps_5s = [start_s + 5.0 * k for k in range(int((last - start_s) / 5.0) + 1)]
            # the window's first SETTLED_START_S are the ComfyUI faults' (a stop-api pushed there left no
            # prompt running for the crash to strike under: CI's short form, seed 20261207), then the rest
            scan = sorted(steps_5s, key=lambda t: t < start_s + SETTLED_START_S)
            at = next((t for t in (*later, *scan) if t <= last and fits(t)), end_s + 1)
            if at > last:
                continue  # no room left for it in this run: it is left out of the plan
        for lane, gap in gaps.items():
            taken.setdefault(lane, []).append((at, at + gap))
        out.append(FaultStep(round(at, 1), step.family, step.hold_s, step.pick, step.params))
    return sorted(out, key=lambda s: s.at_s)


def pick_target(candidates: list[str], pick: float) -> str | None:
    """The step's target among ``candidates`` (sorted first, so the same pool picks the same one)."""
    if not candidates:
        return None
    ordered = sorted(candidates)
    return ordered[min(len(ordered) - 1, int(pick * len(ordered)))]


__all__ = [
    "API",
    "BETWEEN_LANE",
    "FAMILIES",
    "INSTANCE",
    "PROCESS",
    "PROCESS_SPACING_S",
    "Family",
    "FaultStep",
    "Signal",
    "Target",
    "build_plan",
    "pick_target",
    "spacing_s",
]
