"""The ``vastkeep`` command: ``up``, ``status``, ``check``, ``pool``, ``simulate``: parsing and commands.

``vastkeep up`` starts the whole stack from the current folder, supervised (Layer 6); the stack itself
(its children and the runtime file ``VASTKEEP_HOME/stack.json``) is :mod:`vastkeep.stack.runtime`. ``status``
and ``check`` find that file without flags. This is a process edge: it reads ``os.environ`` to pass
it on to children; the library below it never does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from vastkeep.core.clock import SYSTEM_CLOCK
from vastkeep.core.errors import ConfigError, StackError
from vastkeep.stack import STACK_FILE, Stack, pid_alive, public_view, read_stack

CHECK_HEARTBEAT_MAX_AGE_S = 60.0


def _home_from_settings() -> Path:
    """VASTKEEP_HOME from settings; ./.vastkeep when settings cannot be read (status must still work)."""
    try:
        from vastkeep.core.settings import load_settings  # noqa: PLC0415

        return Path(load_settings().vastkeep_home)
    except ConfigError:
        return Path.cwd() / ".vastkeep"


def _redis_client(url: str) -> Any:
    from vastkeep.state.connection import connect  # noqa: PLC0415

    return connect(url, socket_timeout_s=3, socket_connect_timeout_s=2, retry_attempts=0)


def _http_health(url: str) -> tuple[bool, str]:
    import requests  # noqa: PLC0415

    try:
        r = requests.get(f"{url}/health", timeout=(2, 5))
    except requests.RequestException as exc:
        return False, f"{url}/health unreachable ({type(exc).__name__})"
    if r.status_code != 200:
        return False, f"{url}/health answered {r.status_code}"
    return True, f"{url}/health ok"


# ── check and status ─────────────────────────────────────────────────────────
def run_checks(stack: dict[str, Any] | None, redis_url: str | None,
               admin_url: str | None) -> list[tuple[bool, str]]:
    """Redis answers, every worker has a fresh heartbeat, the admin API is healthy."""
    from vastkeep.state.heartbeats import read_heartbeats  # noqa: PLC0415
    from vastkeep.state.keys import Keys  # noqa: PLC0415

    results: list[tuple[bool, str]] = []
    if not redis_url:
        return [(False, "no stack found (no VASTKEEP_HOME/stack.json) and REDIS_URL is unset")]
    client = _redis_client(redis_url)
    try:
        client.ping()
        results.append((True, "redis answers PING"))
    except Exception as exc:  # noqa: BLE001 - report, do not crash
        return [(False, f"redis does not answer ({type(exc).__name__})")]
    expected = list((stack or {}).get("workers") or [])
    beats = read_heartbeats(client, Keys(), SYSTEM_CLOCK, expected or None,
                            max_age_s=CHECK_HEARTBEAT_MAX_AGE_S)
    workers = [n for n, b in beats.items() if b.get("kind") == "worker"]
    missing = [n for n in expected if n not in beats]
    if expected and not missing:
        results.append((True, f"workers alive: {', '.join(expected)}"))
    elif expected:
        results.append((False, f"no fresh heartbeat from worker(s): {', '.join(missing)}"))
    elif workers:
        results.append((True, f"workers alive: {', '.join(sorted(workers))}"))
    else:
        results.append((False, "no worker has a fresh heartbeat"))
    if admin_url:
        results.append(_http_health(admin_url))
    return results


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when the stack is healthy, 1 with the reasons otherwise."""
    home = _home_from_settings()
    stack = read_stack(home)
    redis_url = (stack or {}).get("redis_url")
    admin_url = (stack or {}).get("admin_api_url")
    if stack is None:
        try:
            from vastkeep.core.settings import load_settings  # noqa: PLC0415

            s = load_settings()
            redis_url, admin_url = s.redis_url, f"http://{s.admin_api_host}:{s.admin_api_port}"
        except ConfigError as exc:
            print(f"FAIL: configuration: {exc}")
            return 1
    results = run_checks(stack, redis_url, admin_url)
    for ok, text in results:
        print(("OK:   " if ok else "FAIL: ") + text)
    return 0 if results and all(ok for ok, _ in results) else 1


def cmd_status(args: argparse.Namespace) -> int:
    """Print what runs where (no secrets)."""
    home = _home_from_settings()
    stack = read_stack(home)
    if stack is None:
        print(f"no stack is running from {home} (no {STACK_FILE}); start one with `vastkeep up`")
        return 1
    view = public_view(stack)
    if args.json:
        print(json.dumps(view, indent=2, sort_keys=True))
        return 0
    up = pid_alive(stack.get("pid"))
    print(f"stack in {home}: supervisor pid {stack.get('pid')} {'running' if up else 'NOT running'}, "
          f"started {stack.get('started_at')}{', cloud SIMULATED' if stack.get('simulated') else ''}")
    print(f"  redis      {view.get('redis_url')}{' (embedded)' if stack.get('redis_embedded') else ''}")
    print(f"  admin API  {stack.get('admin_api_url')}   docs {stack.get('admin_api_url')}/docs")
    print(f"  flower     {stack.get('flower_url')}")
    for cid, child in sorted((stack.get("children") or {}).items()):
        print(f"  {cid:<15} {child.get('status'):<9} pid {child.get('pid')}  "
              f"restarts {child.get('restartCount')}")
    for ok, text in run_checks(stack, stack.get("redis_url"), stack.get("admin_api_url")):
        print(("  OK   " if ok else "  FAIL ") + text)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the simulated cloud in the foreground (keys may come from VASTKEEP_SIM_* env vars)."""
    from vastkeep.sim.cli import main as sim_main  # noqa: PLC0415

    rest = list(args.rest)
    for flag, var in (("--api-key", "VASTKEEP_SIM_API_KEY"), ("--hf-token", "VASTKEEP_SIM_HF_TOKEN"),
                      ("--civitai-token", "VASTKEEP_SIM_CIVITAI_TOKEN"),
                      ("--control-token", "VASTKEEP_SIM_CONTROL_TOKEN")):
        if os.environ.get(var) and not any(a == flag or a.startswith(f"{flag}=") for a in rest):
            # "--flag=value": a generated token may start with '-', which argparse would take for a flag.
            rest.append(f"{flag}={os.environ[var]}")  # in-process only: never on a child's command line
    return int(sim_main(rest) or 0)


def cmd_up(args: argparse.Namespace) -> int:
    """Start and supervise the whole stack until Ctrl-C / SIGTERM."""
    from vastkeep.core.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    stack = Stack(settings, dict(os.environ), control_concurrency=args.control_concurrency,
                  ssh_concurrency=args.ssh_concurrency, out=sys.stdout)
    try:
        stack.start(stop)
    except StackError as exc:
        stack.shutdown()
        if stop.is_set():  # Ctrl-C while starting: a clean stop, not a failure
            print("vastkeep up: interrupted while starting; every process stopped", file=sys.stderr)
            return 0
        print(f"vastkeep up: {exc}", file=sys.stderr)
        return 1
    stack.supervise(stop)
    return 0


# ── vastkeep pool ... ────────────────────────────────────────────────────────
def _pool_parts() -> tuple[Any, Any, Any, Any]:
    """(settings, store, events, book) on the Redis of the stack in this folder, else REDIS_URL."""
    from vastkeep.core.settings import load_settings  # noqa: PLC0415
    from vastkeep.pool import PoolBook  # noqa: PLC0415
    from vastkeep.state import EventLog, Keys, StateStore  # noqa: PLC0415

    settings = load_settings()
    stack = read_stack(Path(settings.vastkeep_home))
    url = (stack or {}).get("redis_url") or settings.redis_url
    if not url:
        raise StackError("no Redis to talk to: start the stack with `vastkeep up` here, or set REDIS_URL")
    client = _redis_client(url)
    keys = Keys()
    store = StateStore(client, keys, SYSTEM_CLOCK, default_desired_size=settings.warm_pool_desired_size)
    events = EventLog(client, keys, SYSTEM_CLOCK)
    return settings, store, events, PoolBook(client, keys, settings.warm_pool_name)


def cmd_pool(args: argparse.Namespace) -> int:
    """``vastkeep pool size N | safe-mode on|off [--reason ...] | status [--json]``."""
    from vastkeep.core.errors import InvalidInput  # noqa: PLC0415
    from vastkeep.monitoring import warm_pool_status  # noqa: PLC0415
    from vastkeep.pool import build_leases, pool_figures, set_safe_mode, set_size  # noqa: PLC0415

    try:
        settings, store, events, book = _pool_parts()
        if args.pool_command == "size":
            out = set_size(store, events, args.n, settings.warm_pool_max_size)
            print(f"desired size {out['previous']} -> {out['desiredSize']}; the pool converges within "
                  f"{settings.warm_pool_reconcile_interval_s:.0f} s")
            return 0
        if args.pool_command == "safe-mode":
            view = set_safe_mode(store, book, events, args.state == "on", args.reason, SYSTEM_CLOCK.now())
            print(f"safe mode {'ON' if view['enabled'] else 'OFF'}"
                  + (f" ({view['cause']}: {view['reason']})" if view["enabled"] else ""))
            return 0
        pool, records = store.get_pool(), store.list_instances()
        now = SYSTEM_CLOCK.now()
        leases = build_leases(settings, store.redis, store.keys, SYSTEM_CLOCK)
        figures = pool_figures(settings, book, records, pool.safe_mode, leases, now)
        doc = warm_pool_status(pool, records, now, figures)
    except (InvalidInput, StackError) as exc:
        print(f"vastkeep pool: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    figures = doc["pool"]
    print(f"pool {figures['poolName']}: desired {doc['desiredSize']}, live {figures['liveInstances']}, "
          f"renting {figures['pendingRents']}, spend {figures['spendDph']:.3f}/{figures['maxSpendDph']} $/h, "
          f"prewarming {'yes' if doc['isPrewarming'] else 'no'}")
    if doc["safeMode"]:
        print(f"  SAFE MODE ({figures['safeModeCause']}): {doc['safeModeReason']}")
    for reason in (figures.get("lastRound") or {}).get("wait") or []:
        print(f"  waiting: {reason}")
    for inst in doc["instances"]:
        print(f"  {inst['contractId']:>10}  {inst['status']:<10} {inst.get('label') or '-':<22} "
              f"{inst.get('connectionUrl') or '-':<28} leased until {inst.get('leasedUntil') or '-'}")
    return 0


# ── argument parsing ─────────────────────────────────────────────────────────
def build_parser() -> argparse.ArgumentParser:
    """Parser for every sub-command (no settings are read to build it, so --help always works)."""
    p = argparse.ArgumentParser(prog="vastkeep", description="Keep rented Vast.ai GPU instances connected.")
    sub = p.add_subparsers(dest="command", metavar="{up,status,check,pool,simulate}")
    up = sub.add_parser("up", help="start the whole stack here (redis, cloud, workers, beat, API, Flower)")
    up.add_argument("--control-concurrency", type=int, default=4, help="processes of the control worker")
    up.add_argument("--ssh-concurrency", type=int, default=2, help="processes of the SSH worker")
    up.set_defaults(func=cmd_up)
    st = sub.add_parser("status", help="show the stack started by `vastkeep up` in this folder")
    st.add_argument("--json", action="store_true", help="machine-readable (no secrets)")
    st.set_defaults(func=cmd_status)
    ck = sub.add_parser("check", help="health check: exit 0 when redis, workers and the API are ok")
    ck.set_defaults(func=cmd_check)
    pool = sub.add_parser("pool", help="size the warm pool, switch safe mode, show the pool")
    pool_sub = pool.add_subparsers(dest="pool_command", metavar="{size,safe-mode,status}", required=True)
    size = pool_sub.add_parser("size", help="set the desired number of ready instances")
    size.add_argument("n", help="0..WARM_POOL_MAX_SIZE")
    safe = pool_sub.add_parser("safe-mode", help="stop (on) or resume (off) renting")
    safe.add_argument("state", choices=("on", "off"))
    safe.add_argument("--reason", default=None, help="shown in the status (no secrets)")
    pst = pool_sub.add_parser("status", help="the warm-pool status document")
    pst.add_argument("--json", action="store_true")
    pool.set_defaults(func=cmd_pool)
    sim = sub.add_parser("simulate", help="run the simulated cloud in the foreground", add_help=False)
    sim.add_argument("rest", nargs=argparse.REMAINDER)
    sim.set_defaults(func=cmd_simulate)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vastkeep`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["simulate"]:  # everything after it belongs to the simulator's own parser
        return cmd_simulate(argparse.Namespace(rest=argv[1:]))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"vastkeep: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
