"""``vastkeep soak``: run the stack as its clients use it, break it at random (seeded), count what a
client saw.

The run: start the stack (:class:`~vastkeep.soak.stackrun.SoakStack`), wait for the pool to warm, start
the client programs (``client_workload``, by file path, no vastkeep inside), then follow the seeded plan —
inject each fault at its offset, undo it after its hold, kill a client while it holds now and then — while
the :class:`~vastkeep.soak.observe.Observer` samples every source. When the time is up: stop the clients,
let the system settle, read the end-of-run sources, judge (:mod:`vastkeep.soak.counters`), report
(:mod:`vastkeep.soak.report`) and stop the stack.
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from vastkeep.core.clock import SYSTEM_CLOCK, iso
from vastkeep.soak import counters as judge
from vastkeep.soak.injector import NO_TARGET, Injection, Injector
from vastkeep.soak.observe import SAMPLE_S, Observer
from vastkeep.soak.plan import API, FAMILIES, INSTANCE, PROCESS, FaultStep, Signal, build_plan
from vastkeep.soak.report import Report, build_report
from vastkeep.soak.stackrun import SoakStack

CLIENT_PROGRAM = Path(__file__).with_name("client_workload")
WARMUP_MAX_S = 150.0
SETTLE_S = 20.0
FINISH_S = 30.0  # end-of-run reads and the stack's stop
CLIENT_KILL_EVERY_S = 45.0
GUIDE_BOUNDS_S = {"comfy-crash": 2.0}  # the guide's figures; every other family: 150 s
DEFER_S = 3.0  # a step with nothing to strike (or that would blur another) is tried again this much later
KEEPALIVE_WORKER = "worker-keepalive"
OBSERVER_SETTLE_S = 30.0  # supervision sees a stale daemon after 10 s and restarts it after 10 s more


def shards_running(shards: Mapping[str, float | None] | None, granted_after: float) -> bool:
    """True when every keepalive shard is held by a grant taken after ``granted_after`` (0: any grant)."""
    if not shards:
        return False
    return all(at is not None and at >= granted_after for at in shards.values())


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
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.injections: list[Injection] = []
        self.client_kills: list[dict[str, object]] = []
        self.notes: list[str] = []

    # ── clients ─────────────────────────────────────────────────────────────
    def _start_client(self, name: str, until: float) -> None:
        info = self.stack.endpoints
        env = {
            "PATH": self.environ.get("PATH", "/usr/bin:/bin"),
            "SOAK_ADMIN_URL": info.admin_api_url,
            "SOAK_ADMIN_KEY": info.admin_api_key,
            "SOAK_BROKER_URL": info.redis_url,
            "SOAK_CLIENT": name,
            "SOAK_SEED": str(self.seed),
            "SOAK_UNTIL": repr(until),
            "SOAK_OUT": str(self.out_dir / "clients.jsonl"),
            "PYTHONUNBUFFERED": "1",
        }
        log = open(self.out_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child's own stdout/stderr
        self.procs[name] = subprocess.Popen(
            [sys.executable, str(CLIENT_PROGRAM)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def _kill_a_holder(self, until: float, serial: int) -> None:
        """SIGKILL one live client (its lease, if it holds one, must expire on its own) and start another."""
        live = sorted(n for n, p in self.procs.items() if p.poll() is None)
        if not live:
            return
        last: dict[str, str] = {}
        for line in read_lines(self.out_dir / "clients.jsonl"):
            last[str(line.get("client"))] = str(line.get("op"))
        holding = [n for n in live if last.get(n) in ("grant", "url-ok", "url-fail", "renew")]
        name = self.rng.choice(holding or live)
        self.procs[name].kill()
        self.procs[name].wait(timeout=10)
        self.client_kills.append({"client": name, "t": self.clock.now(), "holding": name in holding})
        self._start_client(f"c{serial}", until)

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
        try:
            info = self.stack.endpoints
            control = SimControl(info.sim_control_url, info.sim_control_token)
            obs = Observer(info.redis_url, info.admin_api_url, info.admin_api_key, control)
            self.obs = obs
            warm_s = self._warm_up(obs)
            spent_s = self.clock.monotonic() - t_start  # start-up and warm-up count against the minutes
            work_s = max(30.0, self.minutes * 60.0 - spent_s - SETTLE_S - FINISH_S)
            plan = build_plan(self.seed, 5.0, max(10.0, work_s - 20.0))
            self.say(f"pool warm after {warm_s:.0f} s; workload {work_s:.0f} s, {len(plan)} faults planned")
            self._workload(obs, Injector(control, self.stack, self.clock), plan, work_s)
            return self._finish(obs, plan, started_at, warm_s)
        finally:
            for p in self.procs.values():
                if p.poll() is None:
                    p.kill()
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
            self._start_client(f"c{i}", until)
        serial, next_kill = self.n_clients, CLIENT_KILL_EVERY_S * (0.5 + self.rng.random())
        pending = list(plan)
        undo: list[tuple[float, Injection]] = []
        while (elapsed := self.clock.monotonic() - t0m) < work_s:
            obs.sample()
            while pending and pending[0].at_s <= elapsed:
                step = pending.pop(0)
                if self._hidden_by(step, obs) and elapsed + DEFER_S < work_s - 15:
                    pending.append(
                        FaultStep(
                            round(elapsed + DEFER_S, 1), step.family, step.hold_s, step.pick, step.params
                        )
                    )
                    pending.sort(key=lambda s: s.at_s)
                    continue
                busy = self._struck()
                ready, leased = obs.ready_and_leased()
                ready, leased = [i for i in ready if i not in busy], [i for i in leased if i not in busy]
                collecting = (
                    [i for i in obs.collecting() if i not in busy] if step.family.startswith("ssh-") else []
                )
                record = inj.apply(step, ready, leased, collecting)
                if record.get("error") == NO_TARGET and elapsed + DEFER_S < work_s - 15:
                    # nothing to strike now (the pool is refilling, no collector runs): try again shortly
                    pending.append(
                        FaultStep(
                            round(elapsed + DEFER_S, 1), step.family, step.hold_s, step.pick, step.params
                        )
                    )
                    pending.sort(key=lambda s: s.at_s)
                    continue
                self.injections.append(record)
                self.say(
                    f"  +{elapsed:6.1f}s {step.family:<18} {record.get('target') or ''} "
                    f"{'' if record['injected'] else 'NOT INJECTED: ' + str(record.get('error'))}"
                    f"{' (under a prompt)' if record.get('under_prompt') else ''}"
                )
                if record["injected"] and step.hold_s > 0:
                    undo.append((elapsed + step.hold_s, record))
            for due, record in [u for u in undo if u[0] <= elapsed]:
                undo.remove((due, record))
                inj.undo(record)
            self._track_processes()
            if elapsed >= next_kill and elapsed < work_s - 20:
                self._kill_a_holder(until, serial)
                serial += 1
                next_kill = elapsed + CLIENT_KILL_EVERY_S * (0.5 + self.rng.random())
            self.clock.sleep(SAMPLE_S / 2)
        for _due, record in undo:
            inj.undo(record)
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)

    def _struck(self) -> set[str]:
        """Instances a fault still holds (or killed): never struck twice at once (one cause per figure)."""
        now, out = self.clock.now(), set[str]()
        for record in self.injections:
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

    def _hidden_by(self, step: FaultStep, obs: Observer) -> bool:
        """True while ``step`` and an earlier fault would blur each other's figures: a process fault while an
        instance fault its process has to notice is unobserved; an instance fault while the process that must
        notice it is down, or back for less than :data:`OBSERVER_SETTLE_S` (its logical daemons, such as the
        keepalive shards, restart through supervision after it). For the keepalive worker the shards
        themselves must run again: a grant taken after a kill, any grant after a stop (supervision restarts
        them from beat's sweep, so a beat that is down too keeps them down well past the settle time, and a
        crash struck then measured the restart, not the detection)."""
        fam = FAMILIES[step.family]
        now = self.clock.now()
        if fam.target == INSTANCE and fam.observer:
            shards_since = 0.0
            for record in self.injections:
                rfam = FAMILIES[record["family"]]
                if record.get("injected") and rfam.process == fam.observer:
                    back = record.get("back_at")
                    if back is None or now < float(back) + OBSERVER_SETTLE_S:
                        return True
                    if rfam.signal == Signal.KILL:
                        shards_since = max(shards_since, float(record["at"]))
            if fam.observer == KEEPALIVE_WORKER:
                return not shards_running(obs.keepalive_shards(), shards_since)
            return False
        if fam.target != PROCESS:
            return False
        for record in self.injections:
            rfam = FAMILIES[record["family"]]
            if not record.get("injected") or rfam.observer != fam.process:
                continue
            end = float(record["at"]) + (rfam.hold_s[1] or 0.0) + judge.RECOVERY_GRACE_S
            if now < end and judge.observe_instance_fault(record, obs.events) is None:
                return True
        return False

    def _track_processes(self) -> None:
        """Fill ``respawned_at`` and ``back_at`` of process faults. Back means serving again, not spawned: the
        API answers ``/health``; a worker logged ``<name>@<host> ready.``; beat logged ``beat: Starting...``
        (after a kill); a stopped process is back at ``SIGCONT`` (the API: once ``/health`` answers)."""
        status: Mapping[str, Mapping[str, object]] | None = None
        for record in self.injections:
            fam = FAMILIES[record["family"]]
            if fam.target != PROCESS or not record.get("injected") or record.get("back_at"):
                continue
            status = status or self.stack.status()
            child = status.get(fam.process or "") or {}
            if fam.signal == Signal.KILL and not record.get("respawned_at"):
                if child.get("status") == "running" and child.get("pid") not in (None, record["pid"]):
                    record["respawned_at"] = self.clock.now()
                continue
            if fam.signal == Signal.STOP:
                if not record.get("restored_at") or child.get("pid") != record["pid"]:
                    continue
                record["respawned_at"] = record["restored_at"]
                if fam.process != "api":
                    record["back_at"] = record["restored_at"]
                    continue
            # after a kill every line is the new process's (the old one is dead): from the kill on, since the
            # runner may notice the new pid seconds after it started logging under load
            since = float(record["at"]) if fam.signal == Signal.KILL else float(record["respawned_at"])
            if fam.process == "api":
                if self.obs.api_answers():
                    record["back_at"] = self.clock.now()
            else:
                process = fam.process or ""
                marker = "beat: Starting..." if process == "beat" else f"{process.split('-')[-1]}@"
                seen = log_mark_after(
                    self.stack.home / "logs" / f"{process}.log",
                    marker,
                    since,
                    need="" if process == "beat" else " ready.",
                )
                if seen is not None:
                    record["back_at"] = seen

    # ── judging ─────────────────────────────────────────────────────────────
    def _observe(self, obs: Observer) -> None:
        for record in self.injections:
            if not record.get("injected"):
                continue
            fam = FAMILIES[record["family"]]
            if fam.target == INSTANCE:
                record["observed_s"] = judge.observe_instance_fault(record, obs.events)
            elif fam.target == API:
                later = [r for r in obs.requests if judge.num(r.get("ts") or 0) >= record["at"] - 0.5]
                record["observed_s"] = judge.observe_api_fault(record, later)
            elif record.get("back_at"):
                record["observed_s"] = max(0.0, float(record["back_at"]) - float(record["at"]))

    def _finish(self, obs: Observer, plan: list[FaultStep], started_at: str, warm_s: float) -> Report:
        for _ in range(int(SETTLE_S / SAMPLE_S)):
            obs.sample()
            self._track_processes()
            self.clock.sleep(SAMPLE_S)
        self._observe(obs)
        lines = read_lines(self.out_dir / "clients.jsonl")
        breaks = obs.breaks()
        first_break = {k: min(v) for k, v in breaks.items()}
        clients = judge.judge_clients(lines, self.injections, broken=first_break, comfy_lost=obs.comfy_lost())
        holds = judge.lease_holds(lines, breaks)
        must_never = self._must_never(obs, lines, holds)
        restarts = [
            {
                "process": r["target"],
                "down_s": (float(r["back_at"]) - float(r["at"])) if r.get("back_at") else None,
            }
            for r in self.injections
            if r.get("injected") and FAMILIES[r["family"]].signal == Signal.KILL
        ]
        polling = {state: judge.summary(v) for state, v in obs.polling_intervals().items()}
        families = judge.family_table(self.injections, [s.family for s in plan])
        if obs.errors:
            self.notes.append(
                "sources unreadable for a moment: " + ", ".join(f"{k} x{v}" for k, v in obs.errors.items())
            )
        kinds: dict[str, int] = {}
        logical: dict[str, int] = {}
        for ev in obs.events:
            kinds[ev["kind"]] = kinds.get(ev["kind"], 0) + 1
            if ev["kind"] in ("process-restarted", "process-failed"):
                name = str(ev["data"].get("name") or ev["data"].get("id"))
                logical[f"{ev['kind']}:{name}"] = logical.get(f"{ev['kind']}:{name}", 0) + 1
        for name, row in sorted(families.items()):
            bound = GUIDE_BOUNDS_S.get(name, judge.DETECTION_BOUND_S)
            detection = row.get("detection")
            worst = detection["max"] if detection else None
            if FAMILIES[name].target == INSTANCE and worst is not None and worst > bound:
                self.notes.append(f"{name}: detection max {worst:.1f} s is above the guide's {bound:g} s")
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
        report["clientKills"] = self.client_kills
        report["eventCounts"] = kinds
        report["logicalDaemonRestarts"] = logical
        report["folder"] = str(self.stack.dir)
        if not report["ok"]:
            self.stack.keep = True  # the logs stay for whoever reads the failure
        return report

    def _must_never(
        self, obs: Observer, lines: list[dict[str, object]], holds: list[judge.Hold]
    ) -> dict[str, Sequence[object]]:
        grants = [
            (judge.num(x["t"]), str(x["instance"]), x.get("fence")) for x in lines if x.get("op") == "grant"
        ]
        cloud: list[list[str]] = []
        known: list[list[str]] = []
        for i in range(2):  # two looks 5 s apart: a rent whose record is being written is not unknown
            cloud.append(obs.cloud_ids())
            known.append(obs.known_ids())
            if i == 0:
                self.clock.sleep(5.0)
        lost: list[dict[str, object]] = []
        dup: list[dict[str, object]] = []
        for iid in sorted(set(cloud[-1]) & set(known[-1])):
            remote = obs.remote_log(iid)
            if remote is None:
                continue
            collected, offset = obs.collected_log(iid)
            if offset <= 0:
                continue  # nothing collected yet: nothing is due
            diff = judge.log_diff(remote[:offset].decode("utf-8", "replace"), collected)
            if diff["lost"]:
                lost.append({"instance": iid, **diff})
            if diff["duplicated"]:
                dup.append({"instance": iid, **diff})
        texts = {
            f"logs/{p.name}": p.read_text(errors="replace")
            for p in sorted((self.stack.home / "logs").glob("*"))
            if p.is_file()
        }
        info = self.stack.endpoints
        texts.update(
            {
                "task-results": obs.task_results(),
                "events": obs.events_text(),
                "flower": obs.flower_tasks(info.flower_url, info.flower_user, info.flower_password),
            }
        )
        return {
            judge.MustNever.DOUBLE_RENTS: judge.double_rents(obs.ledger),
            judge.MustNever.DOUBLE_LEASES: judge.double_leases(holds),
            judge.MustNever.FENCE_REGRESSIONS: judge.fence_regressions(grants)
            + judge.fence_regressions(obs.grants_from_events()),
            judge.MustNever.LOG_LINES_LOST: lost,
            judge.MustNever.LOG_LINES_DUPLICATED: dup,
            judge.MustNever.UNKNOWN_BILLING: judge.unknown_billing(cloud, known),
            judge.MustNever.CANARY_LEAKS: judge.canary_hits(texts, self.stack.canaries),
        }


def log_mark_after(path: Path, marker: str, since: float, need: str = "") -> float | None:
    """Time of the first line of a Celery log holding ``marker`` (and ``need``) stamped at or after ``since``
    (epoch seconds; Celery stamps local time as ``[YYYY-mm-dd HH:MM:SS,mmm: ...``)."""
    from datetime import datetime  # noqa: PLC0415

    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if marker not in line or need not in line or not line.startswith("["):
            continue
        try:
            t = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if t >= since - 1.0:
            return t
    return None


def read_lines(path: Path) -> list[dict[str, object]]:
    """The JSON objects of a JSON-lines file, skipping a line cut short (its writer was killed)."""
    out: list[dict[str, object]] = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for raw in text.splitlines():
        try:
            line: object = json.loads(raw)
        except ValueError:
            continue  # a client killed mid-line
        if isinstance(line, dict):
            out.append(line)
    return out


def machine() -> dict[str, object]:
    return {
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


__all__ = ["CLIENT_PROGRAM", "SoakRun", "machine", "read_lines"]
