"""``vastkeep soak``: run the stack as its clients use it, break it at random (seeded), count what a
client saw.

The run: start the stack (:class:`~vastkeep.soak.stackrun.SoakStack`), wait for the pool to warm, start
the client programs (:mod:`~vastkeep.soak.clientprocs`), then follow the seeded plan — inject each fault at
its offset when :mod:`~vastkeep.soak.rules` lets it strike, undo it after its hold, kill a client while it
holds now and then — while the :class:`~vastkeep.soak.observe.Observer` samples every source and
:mod:`~vastkeep.soak.tracking` notes when each struck process serves again. When the time is up: stop the
clients, let the system settle, read the end-of-run sources, judge (:mod:`vastkeep.soak.counters`,
:mod:`vastkeep.soak.finish`), report (:mod:`vastkeep.soak.report`) and stop the stack.
"""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Callable, Mapping

from vastkeep.core.clock import SYSTEM_CLOCK, iso
from vastkeep.soak import between, finish, rules
from vastkeep.soak import counters as judge
from vastkeep.soak.clientprocs import CLIENT_KILL_EVERY_S, CLIENT_PROGRAM, ClientProcs, read_lines
from vastkeep.soak.injector import NO_TARGET, Injection, Injector
from vastkeep.soak.observe import SAMPLE_S, Observer
from vastkeep.soak.plan import FAMILIES, FaultStep, Signal, build_plan
from vastkeep.soak.report import Report, build_report
from vastkeep.soak.stackrun import SoakStack
from vastkeep.soak.tracking import track_processes

WARMUP_MAX_S = 150.0
SETTLE_S = 20.0
FINISH_S = 30.0  # end-of-run reads and the stack's stop
DEFER_S = 3.0  # a step with nothing to strike (or that would blur another) is tried again this much later
REDIS_SETTLE_S = 30.0  # after Redis is back, a process that was going to exit over it has done so
FULL_FORM_MIN = 10.0  # from this many minutes on, the plan also has the families too long for the short form


class SoakRun:
    """One soak: ``run() -> report`` (a dict; ``report["ok"]`` is the verdict)."""

    def __init__(
        self,
        *,
        minutes: float,
        seed: int,
        pool_size: int = 10,
        clients: int = 4,
        environ: dict[str, str] | None = None,
        say: Callable[[str], None] = print,
        keep: bool = False,
    ) -> None:
        self.minutes, self.seed, self.pool_size, self.n_clients = minutes, seed, pool_size, clients
        self.environ = dict(os.environ if environ is None else environ)
        self.say = say
        self.clock = SYSTEM_CLOCK
        self.rng = random.Random(f"{seed}:workload")
        self.stack = SoakStack(self.environ, pool_size, keep=keep)
        self.injections: list[Injection] = []
        self.notes: list[str] = []

    # ── the run ─────────────────────────────────────────────────────────────
    def run(self) -> Report:
        from vastkeep.sim.control import SimControl  # noqa: PLC0415

        started_at = iso(self.clock.now()) or ""
        self.say(
            f"vastkeep soak: seed {self.seed}, {self.minutes} min, pool {self.pool_size}, "
            f"{self.n_clients} clients; folder {self.stack.dir}"
        )
        self.out_dir = self.stack.dir / "soak"
        self.out_dir.mkdir()
        t_start = self.clock.monotonic()
        self.stack.start()
        self.stack.start_hostb()
        info = self.stack.endpoints
        self.clients = ClientProcs(self.out_dir, {
            "PATH": self.environ.get("PATH", "/usr/bin:/bin"),
            "SOAK_ADMIN_URL": info.admin_api_url,
            "SOAK_ADMIN_KEY": info.admin_api_key,
            "SOAK_BROKER_URL": info.redis_url,
            "SOAK_SEED": str(self.seed),
        }, self.clock, self.rng)
        try:
            control = SimControl(info.sim_control_url, info.sim_control_token)
            obs = Observer(info.redis_url, info.admin_api_url, info.admin_api_key, control)
            self.obs = obs
            warm_s = self._warm_up(obs)
            spent_s = self.clock.monotonic() - t_start  # start-up and warm-up count against the minutes
            work_s = max(30.0, self.minutes * 60.0 - spent_s - SETTLE_S - FINISH_S)
            plan = build_plan(self.seed, 5.0, max(10.0, work_s - 20.0), full=self.minutes >= FULL_FORM_MIN)
            self.say(f"pool warm after {warm_s:.0f} s; workload {work_s:.0f} s, {len(plan)} faults planned")
            self._workload(obs, Injector(control, self.stack, self.clock), plan, work_s)
            return self._finish(obs, plan, started_at, warm_s)
        finally:
            self.clients.kill_all()
            self.stack.stop()

    def _warm_up(self, obs: Observer) -> float:
        t0 = self.clock.monotonic()
        while self.clock.monotonic() - t0 < WARMUP_MAX_S:
            obs.sample()
            ready, _ = obs.ready_and_leased()
            if len(ready) >= max(1, self.pool_size * 8 // 10):
                break
            self.clock.sleep(SAMPLE_S)
        else:
            self.notes.append(
                f"the pool had fewer than 80% of {self.pool_size} ready after {WARMUP_MAX_S:.0f} s"
            )
        return self.clock.monotonic() - t0

    def _workload(self, obs: Observer, inj: Injector, plan: list[FaultStep], work_s: float) -> None:
        t0m, t0 = self.clock.monotonic(), self.clock.now()
        until = t0 + work_s
        for i in range(self.n_clients):
            self.clients.start(f"c{i}", until)
        serial, next_kill = self.n_clients, CLIENT_KILL_EVERY_S * (0.5 + self.rng.random())
        pending = list(plan)
        undo: list[tuple[float, Injection]] = []
        while (elapsed := self.clock.monotonic() - t0m) < work_s:
            redis_down = self._redis_down()
            if not redis_down:  # every read would wait out its timeout: sample once Redis is back
                obs.sample()
            # nor strike while it is away: choosing a target reads Redis, and the reads' timeouts made a 60 s
            # outage's SIGCONT come 23-25 s late in the first 30-minute run
            while pending and pending[0].at_s <= elapsed and not redis_down:
                step = pending.pop(0)
                record = self._strike(step, obs, inj, elapsed, work_s)
                if record is None:  # not now: tried again shortly
                    pending.append(FaultStep(round(elapsed + DEFER_S, 1), step.family, step.hold_s, step.pick,
                                             step.params))
                    pending.sort(key=lambda s: s.at_s)
                    continue
                if record["injected"] and step.hold_s > 0:
                    undo.append((elapsed + step.hold_s, record))
            for due, record in [u for u in undo if u[0] <= elapsed]:
                undo.remove((due, record))
                inj.undo(record)
            self._track()
            if elapsed >= next_kill and elapsed < work_s - 20:
                self.clients.kill_a_holder(until, serial)
                serial += 1
                next_kill = elapsed + CLIENT_KILL_EVERY_S * (0.5 + self.rng.random())
            self.clock.sleep(SAMPLE_S / 2)
        for _due, record in undo:
            inj.undo(record)
        self.clients.wait()

    def _strike(
        self, step: FaultStep, obs: Observer, inj: Injector, elapsed: float, work_s: float
    ) -> Injection | None:
        """Inject ``step`` now, or None when it must wait (it would blur another fault's figure, or there is
        nothing to strike yet) and there is still time to try again."""
        may_defer = elapsed + DEFER_S < work_s - 15
        now = self.clock.now()
        hidden = rules.hidden_by(step, self.injections, now, obs.events, obs.keepalive_shards)
        hostb_pids: set[int] = set()
        if step.family in between.HOSTB_FAMILIES:  # only while host B holds a shard: something to move
            hostb_pids = between.pids_of_group(self.stack.pids().get("hostb-keepalive"))
            held_now = between.hostb_shards(obs.shard_owners(), hostb_pids)
            hidden = hidden or not held_now or rules.handed_over_lately(held_now, obs.last_handovers(), now)
        if hidden and may_defer:
            return None
        if hidden and any(r["family"] == step.family and r.get("injected") for r in self.injections):
            # too late to wait, and its family has its figure: striking now would blur two figures (three
            # host cuts held back by a Redis outage struck at once, 12 s before the end, in a 30-minute run)
            skipped: Injection = {"family": step.family, "planned_at_s": step.at_s, "hold_s": step.hold_s,
                                  "injected": False, "target": None, "at": now,
                                  "error": "skipped: no time left to strike it apart from another fault"}
            self.injections.append(skipped)
            self.say(f"  +{elapsed:6.1f}s {step.family:<18} NOT INJECTED: {skipped['error']}")
            return skipped
        busy = rules.struck(self.injections, now)
        if step.family == "comfy-crash" and may_defer and not [i for i in obs.free() if i not in busy]:
            return None  # the failover needs an instance to move to: struck with none, it measures the pool
        ready, leased = obs.ready_and_leased()
        ready, leased = [i for i in ready if i not in busy], [i for i in leased if i not in busy]
        collecting = [i for i in obs.collecting() if i not in busy] if step.family.startswith("ssh-") else []
        held = between.hostb_shards(obs.shard_owners(), hostb_pids) if hostb_pids else []
        record = inj.apply(step, ready, leased, collecting)
        if record.get("error") == NO_TARGET and may_defer:
            return None
        if held:
            record["hostb_shards"] = held
        if step.family == "comfy-crash":  # where the failover can move the lease (none: it waits for a rent)
            spare_ids = [i for i in obs.free() if i != record.get("target")]
            record["spares"], record["spare_ids"] = len(spare_ids), spare_ids
        if step.family in between.REDIS_FAMILIES:  # every process must reconnect by itself: none restarted
            record["restarts_all"] = {cid: judge.whole(st.get("restartCount") or 0)
                                      for cid, st in self.stack.status().items()}
        self.injections.append(record)
        self.say(
            f"  +{elapsed:6.1f}s {step.family:<18} {record.get('target') or ''} "
            f"{'' if record['injected'] else 'NOT INJECTED: ' + str(record.get('error'))}"
            f"{' (under a prompt)' if record.get('under_prompt') else ''}"
        )
        return record

    def _redis_down(self) -> bool:
        return any(
            r.get("injected") and r["family"] in between.REDIS_FAMILIES and not r.get("back_at")
            for r in self.injections
        )

    def _track(self) -> None:
        """When each struck process serves again; for host B faults, when its shards moved, and the
        renewals refused once it was back."""
        track_processes(self.injections, self.stack.status, self.stack.home / "logs", self.clock,
                        self.obs.api_answers, self.obs.redis_answers)
        now = self.clock.now()
        for record in self.injections:  # a child restarted over a Redis fault, noticed as it happens
            back = record.get("back_at")
            if record["family"] not in between.REDIS_FAMILIES or not record.get("injected") \
                    or (back and now > float(back) + REDIS_SETTLE_S):
                continue
            since = float(record["at"]) - 60  # a child's own fault struck before now explains its restart
            own = [str(r["target"]) for r in self.injections
                   if r is not record and r.get("injected") and since <= float(r["at"]) <= now]
            seen = between.exited_children(record.get("restarts_all") or {}, self.stack.status(), own)
            record["exited"] = sorted({*(record.get("exited") or []), *seen})
        shards: Mapping[str, float | None] | None = None
        for record in self.injections:
            if record["family"] not in between.HOSTB_FAMILIES or not record.get("injected"):
                continue
            restored = record.get("restored_at")
            late = restored is not None and now > float(restored) + judge.RECOVERY_GRACE_S
            if not record.get("moved_at") and not late and not self._redis_down():  # (late: not its move)
                shards = shards if shards is not None else self.obs.keepalive_shards()
                hostb = between.pids_of_group(self.stack.pids().get("hostb-keepalive"))
                if between.moved(record, shards) and between.stolen(record, self.obs.shard_owners(), hostb):
                    record["moved_at"] = self.clock.now()
            if record.get("restored_at"):
                record["refused"] = between.count_refusals(  # this fault's: until its return plus 40 s
                    self.stack.home / "logs" / "hostb-keepalive.log", float(record["at"]),
                    float(record["restored_at"]) + judge.RECOVERY_GRACE_S)

    # ── judging ─────────────────────────────────────────────────────────────
    def _finish(self, obs: Observer, plan: list[FaultStep], started_at: str, warm_s: float) -> Report:
        for _ in range(int(SETTLE_S / SAMPLE_S)):
            obs.sample()
            self._track()
            self.clock.sleep(SAMPLE_S)
        finish.observe_faults(self.injections, obs)
        for record in self.injections:  # a host B fault is observed when its shards moved to another host
            if record["family"] in between.HOSTB_FAMILIES and record.get("injected"):
                moved_at = record.get("moved_at")
                record["observed_s"] = (float(moved_at) - float(record["at"])) if moved_at else None
        lines = read_lines(self.out_dir / "clients.jsonl")
        breaks = obs.breaks()
        first_break = {k: min(v) for k, v in breaks.items()}
        clients = judge.judge_clients(lines, self.injections, broken=first_break, comfy_lost=obs.comfy_lost())
        holds = judge.lease_holds(lines, breaks, obs.moves(), obs.released())
        must_never = dict(finish.must_never(obs, self.stack, self.clock, lines, holds))
        must_never[judge.MustNever.GRANTED_WHILE_REDIS_AWAY] = between.granted_while_away(
            between.redis_away_windows(self.injections), lines, obs.ledger)
        must_never[judge.MustNever.EXITED_ON_REDIS_FAULT] = [
            {"family": r["family"], "child": c} for r in self.injections for c in r.get("exited") or []]
        restarts = [
            {
                "process": r["target"],
                "down_s": (float(r["back_at"]) - float(r["at"])) if r.get("back_at") else None,
            }
            for r in self.injections
            if r.get("injected") and FAMILIES[r["family"]].signal in (Signal.KILL, Signal.TERM)
        ]
        polling = {state: judge.summary(v) for state, v in obs.polling_intervals().items()}
        families = judge.family_table(self.injections, [s.family for s in plan])
        if obs.errors:
            self.notes.append(
                "sources unreadable for a moment: " + ", ".join(f"{k} x{v}" for k, v in obs.errors.items())
            )
        kinds, logical = finish.event_counts(obs)
        self.notes.extend(finish.detection_notes(families))
        report = build_report(
            seed=self.seed,
            minutes=self.minutes,
            started_at=started_at,
            machine=machine(),
            plan=[s.to_dict() for s in plan],
            families=families,
            clients=clients,
            must_never=must_never,
            restarts=restarts,
            polling=polling,
            notes=self.notes,
        )
        report["warmupS"] = round(warm_s, 1)
        report["injections"] = self.injections
        report["clientKills"] = self.clients.kills
        report["eventCounts"] = kinds
        report["logicalDaemonRestarts"] = logical
        report["betweenMachines"] = between.summary_rows(self.injections)
        report["folder"] = str(self.stack.dir)
        if not report["ok"]:
            self.stack.keep = True  # the logs stay for whoever reads the failure
        return report


def machine() -> dict[str, object]:
    return {
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


__all__ = ["CLIENT_PROGRAM", "SoakRun", "machine", "read_lines"]
