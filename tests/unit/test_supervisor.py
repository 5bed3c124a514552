"""The watchdog: the guide's restart schedule, crash counting, gate-time reset and clean stop,
with real short-lived child processes and tiny injected delays."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.helpers import wait_for
from vastkeep.core.backoff import RestartPolicy, restart_delay
from vastkeep.core.clock import FakeClock
from vastkeep.stack.supervisor import ChildSpec, Supervisor

CRASH = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
STUBBORN = [sys.executable, "-c",
            "import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)"]


def alive(pid: int) -> bool:
    """True while the pid exists and is not a zombie (PID 1 in a container may not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize(("crashes", "expected"),
                         [(0, 0), (1, 10), (2, 20), (3, 40), (4, 60), (5, 60), (50, 60)])
def test_guide_schedule(crashes: int, expected: float) -> None:
    assert restart_delay(crashes, RestartPolicy()) == expected


def test_crash_restarts_on_schedule_and_logs_guide_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vastkeep.stack")
    policy = RestartPolicy(base_s=0.05, cap_s=0.2, stable_after_s=30)
    starts: list[float] = []
    seen_pids: list[int] = []

    def on_change(sup: Supervisor) -> None:
        pid = sup.pids()["crasher"]
        if pid is not None and pid not in seen_pids:
            seen_pids.append(pid)
            starts.append(time.monotonic())

    sup = Supervisor(policy=policy, poll_interval_s=0.005, stop_timeout_s=2, on_change=on_change)
    sup.register("crasher", ChildSpec(name="Crasher-1", argv=CRASH))
    stop = threading.Event()
    t = threading.Thread(target=sup.run, args=(stop,), daemon=True)
    t.start()
    try:
        wait_for(lambda: sup.status()["crasher"]["restartCount"] >= 4, what="4 restarts")
    finally:
        stop.set()
        t.join(10)
    st = sup.status()["crasher"]
    assert st["status"] == "stopped"
    assert st["lastError"] == "exit code 3"
    assert st["consecutiveCrashes"] >= 4
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # each gap is at least the scheduled delay: 0.05, 0.1, 0.2, 0.2 (cap)
    for gap, expected in zip(gaps, [0.05, 0.1, 0.2, 0.2], strict=False):
        assert gap >= expected * 0.95, (gaps, expected)
    # it really backs off: the delays the watchdog chose (wall-clock gaps only bound them from below, since a
    # loaded machine adds to them)
    delays = [r.args[2] for r in caplog.records
              if r.name == "vastkeep.stack" and "restarting in" in r.msg and isinstance(r.args, tuple)]
    assert delays[:4] == pytest.approx([0.05, 0.1, 0.2, 0.2]), delays
    text = caplog.text
    assert "[Watchdog] Registered process: Crasher-1" in text
    assert "Restarted crasher (attempt 1, 1 crashes)" in text
    assert "Restarted crasher (attempt 2, 2 crashes)" in text
    assert "Restarted crasher (attempt 3, 3 crashes)" in text


def test_stable_run_resets_crash_counter() -> None:
    clock = FakeClock()
    policy = RestartPolicy(base_s=10, cap_s=60, stable_after_s=60)
    sup = Supervisor(policy=policy, clock=clock)
    sup.register("c", ChildSpec(name="C", argv=CRASH))

    def crash_and_poll(uptime_s: float) -> dict:
        sup._children["c"].proc.wait(5)
        clock.advance(uptime_s)
        sup.poll_once()
        return sup.status()["c"]

    st = crash_and_poll(1)
    assert (st["status"], st["consecutiveCrashes"]) == ("backoff", 1)
    sup.poll_once()
    assert sup.status()["c"]["status"] == "backoff"  # 10 s have not passed yet
    clock.advance(10)
    sup.poll_once()
    assert sup.status()["c"]["status"] == "running"
    st = crash_and_poll(1)
    assert st["consecutiveCrashes"] == 2
    clock.advance(19.9)
    sup.poll_once()
    assert sup.status()["c"]["status"] == "backoff"  # second delay is 20 s
    clock.advance(0.2)
    sup.poll_once()
    assert sup.status()["c"]["status"] == "running"
    st = crash_and_poll(61)  # stayed up past the gate time: counter resets
    assert st["consecutiveCrashes"] == 1
    assert st["restartCount"] == 2
    sup.stop_all()


def test_max_restarts_marks_failed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vastkeep.stack")
    clock = FakeClock()
    sup = Supervisor(policy=RestartPolicy(base_s=1, cap_s=1, stable_after_s=60, max_restarts=1), clock=clock)
    sup.register("c", ChildSpec(name="C", argv=CRASH))
    for _ in range(3):
        sup._children["c"].proc.wait(5)
        clock.advance(2)
        sup.poll_once()
        sup.poll_once()
    assert sup.status()["c"]["status"] == "failed"
    assert "[Watchdog] Process C FAILED after 1 restarts" in caplog.text
    sup.stop_all()


def test_stop_all_terms_then_kills_whole_groups(tmp_path: Path) -> None:
    grandchild_file = tmp_path / "grandchild.pid"
    spawner = [sys.executable, "-c",
               "import subprocess, sys, time\n"
               f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
               f"open({str(grandchild_file)!r}, 'w').write(str(p.pid))\n"
               "time.sleep(60)"]
    log_path = tmp_path / "stubborn.log"
    sup = Supervisor(policy=RestartPolicy(base_s=0.01), stop_timeout_s=0.5)
    sup.register("sleeper", ChildSpec(name="Sleeper", argv=SLEEP))
    sup.register("stubborn", ChildSpec(name="Stubborn", argv=STUBBORN, log_path=str(log_path)))
    sup.register("spawner", ChildSpec(name="Spawner", argv=spawner, stop_last=True))
    wait_for(lambda: grandchild_file.exists() and grandchild_file.read_text().strip() != "",
             what="grandchild")
    wait_for(lambda: "ready" in log_path.read_text(), what="stubborn child to ignore SIGTERM")
    pids = sup.pids()
    grandchild = int(grandchild_file.read_text())
    assert all(alive(p) for p in pids.values()) and alive(grandchild)
    t0 = time.monotonic()
    sup.stop_all()
    elapsed = time.monotonic() - t0
    assert not any(alive(p) for p in pids.values())
    wait_for(lambda: not alive(grandchild), timeout_s=3, what="grandchild to die with its group")
    assert 0.4 <= elapsed < 5  # waited the grace period for the stubborn one, then killed it
    assert {s["status"] for s in sup.status().values()} == {"stopped"}
    sup.poll_once()  # stopping: nothing is restarted
    assert all(p is None for p in sup.pids().values())


def test_spawn_failure_is_a_crash_not_an_exception() -> None:
    clock = FakeClock()
    sup = Supervisor(policy=RestartPolicy(base_s=1), clock=clock)
    sup.register("ghost", ChildSpec(name="Ghost", argv=["/nonexistent/binary-vk"]))
    st = sup.status()["ghost"]
    assert st["status"] == "backoff" and "spawn failed" in st["lastError"]
    sup.stop_all()


def test_spawn_failures_after_a_stable_run_keep_backing_off() -> None:
    """A failed spawn never came up, so the last run's long-ago start must not reset the count each time."""
    clock = FakeClock()
    sup = Supervisor(policy=RestartPolicy(base_s=10, cap_s=60, stable_after_s=60), clock=clock)
    sup.register("c", ChildSpec(name="C", argv=CRASH))
    sup._children["c"].proc.wait(5)
    clock.advance(61)  # the run stayed up past the gate
    sup.poll_once()
    assert sup.status()["c"]["consecutiveCrashes"] == 1
    sup._children["c"].spec.argv = ["/nonexistent/binary-vk"]  # from now on the binary is gone
    for crashes, delay_s in ((2, 10), (3, 20), (4, 40)):
        clock.advance(delay_s)
        sup.poll_once()
        st = sup.status()["c"]
        assert (st["status"], st["consecutiveCrashes"]) == ("backoff", crashes)
        assert "spawn failed" in st["lastError"]
    sup.stop_all()


def test_status_is_published_on_change_and_every_interval_and_a_failing_publish_is_harmless() -> None:
    """``vastkeep up`` publishes the watchdog status (to Redis) so the admin API can show it."""
    from vastkeep.core.clock import FakeClock

    clock = FakeClock()
    got: list[dict] = []
    sup = Supervisor(clock=clock, publish=got.append, publish_interval_s=5.0)
    sup.register("sleeper", ChildSpec(name="Sleeper", argv=["sleep", "30"]), start=False)
    sup._maybe_publish()
    sup._maybe_publish()
    assert len(got) == 1 and got[0]["sleeper"]["name"] == "Sleeper"
    clock.advance(5.0)
    sup._maybe_publish()
    assert len(got) == 2

    def broken(status: dict) -> None:
        raise ConnectionError("redis is restarting")

    sup.publish = broken
    assert sup.publish_now() is False  # logged at debug, never raised into the watchdog loop
    sup.publish = None
    assert sup.publish_now() is False
