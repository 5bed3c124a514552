"""The ``vastkeep`` command (up, status, check, logs, pool, soak, simulate): parsing and commands.

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


HEALTH_DEADLINE_S = 7.0  # the whole /health call, headers and body included


def _http_health(url: str) -> tuple[bool, str]:
    """GET /health within :data:`HEALTH_DEADLINE_S` in all (a server that stalls cannot hang ``check``)."""
    import requests  # noqa: PLC0415

    from vastkeep.providers.deadline import call_deadline  # noqa: PLC0415
    from vastkeep.providers.http import make_session  # noqa: PLC0415

    with make_session("vastkeep-check/1") as session, call_deadline(HEALTH_DEADLINE_S) as call:
        try:
            r = session.get(f"{url}/health", timeout=(2, 5))
            r.content  # noqa: B018 - read the body inside the deadline
        except requests.RequestException as exc:
            why = f"no answer within {HEALTH_DEADLINE_S:g}s" if call.expired else type(exc).__name__
            return False, f"{url}/health unreachable ({why})"
    if call.expired:
        return False, f"{url}/health unreachable (no answer within {HEALTH_DEADLINE_S:g}s)"
    if r.status_code != 200:
        return False, f"{url}/health answered {r.status_code}"
    return True, f"{url}/health ok"


# ── check and status ─────────────────────────────────────────────────────────
def run_checks(stack: dict[str, Any] | None, redis_url: str | None,
               admin_url: str | None) -> list[tuple[bool, str]]:
    """Redis answers, every worker has a fresh heartbeat (the checks ``/health`` runs too, from
    :mod:`vastkeep.monitoring.health`), and the admin API's ``/health`` is 200."""
    from vastkeep.monitoring import run_checks as shared_checks  # noqa: PLC0415
    from vastkeep.state.keys import Keys  # noqa: PLC0415

    if not redis_url:
        return [(False, "no stack found (no VASTKEEP_HOME/stack.json) and REDIS_URL is unset")]
    expected = list((stack or {}).get("workers") or [])
    checks = shared_checks(_redis_client(redis_url), Keys(), SYSTEM_CLOCK, expected_workers=expected or None,
                           max_age_s=CHECK_HEARTBEAT_MAX_AGE_S)
    results = [(c.ok, c.detail) for c in checks]
    if checks[0].ok and admin_url:
        results.append(_http_health(admin_url))
    return results


def config_findings(stack: dict[str, Any] | None, settings: Any) -> list[tuple[bool, str]]:
    """Likely configuration mistakes, ``(fatal, text)``: those the running stack recorded at start-up,
    else those of the settings this shell would start one with."""
    from vastkeep.core.config_hints import config_warnings  # noqa: PLC0415

    recorded = (stack or {}).get("config_warnings")
    if isinstance(recorded, list):
        return [(bool(f.get("fatal")), str(f.get("text"))) for f in recorded if isinstance(f, dict)]
    return config_warnings(settings) if settings is not None else []


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when the stack is healthy, 1 with the reasons otherwise (a WARN line does not fail)."""
    from vastkeep.core.settings import load_settings  # noqa: PLC0415

    home = _home_from_settings()
    stack = read_stack(home)
    redis_url = (stack or {}).get("redis_url")
    admin_url = (stack or {}).get("admin_api_url")
    settings = None
    try:
        settings = load_settings()
    except ConfigError as exc:
        if stack is None:
            print(f"FAIL: configuration: {exc}")
            return 1
    if stack is None and settings is not None:
        redis_url, admin_url = settings.redis_url, f"http://{settings.admin_api_host}:{settings.admin_api_port}"
    findings = config_findings(stack, settings)
    for fatal, text in findings:
        print(("FAIL: " if fatal else "WARN: ") + "configuration: " + text)
    results = run_checks(stack, redis_url, admin_url)
    for ok, text in results:
        print(("OK:   " if ok else "FAIL: ") + text)
    healthy = results and all(ok for ok, _ in results) and not any(fatal for fatal, _ in findings)
    return 0 if healthy else 1


def cmd_status(args: argparse.Namespace) -> int:
    """Print what runs where (no secrets)."""
    home = _home_from_settings()
    stack = read_stack(home)
    if stack is None:
        print(f"no stack is running from {home} (no {STACK_FILE}); start one with `vastkeep up`")
        return 1
    view = public_view(stack)
    overview, error = None, None
    if stack.get("redis_url"):
        try:
            overview = _overview(stack["redis_url"])
        except Exception as exc:  # noqa: BLE001 - status must still print the rest
            error = type(exc).__name__
    if args.json:
        print(json.dumps({**view, **(overview or {})}, indent=2, sort_keys=True))
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
    print_overview(overview, error or ("no Redis in stack.json" if not stack.get("redis_url") else None))
    return 0


def _redis_url_here() -> str | None:
    """The Redis of the stack in this folder, else REDIS_URL."""
    stack = read_stack(_home_from_settings())
    if stack and stack.get("redis_url"):
        return str(stack["redis_url"])
    from vastkeep.core.settings import load_settings  # noqa: PLC0415

    return load_settings().redis_url


def cmd_logs(args: argparse.Namespace) -> int:
    """Print an instance's collected log from ``--after`` (bytes, exactly as stored); ``-f`` follows it."""
    from vastkeep.ssh import MAX_READ_LINES, LogStore  # noqa: PLC0415
    from vastkeep.state.connection import connect  # noqa: PLC0415
    from vastkeep.state.keys import Keys  # noqa: PLC0415

    if not args.instance_id.isdigit():
        print("vastkeep logs: the instance id is a number (the Vast.ai contract id)", file=sys.stderr)
        return 2
    url = _redis_url_here()
    if not url:
        print("vastkeep logs: no stack here and REDIS_URL is not set", file=sys.stderr)
        return 1
    logs = LogStore(connect(url, decode_responses=False, socket_timeout_s=5, socket_connect_timeout_s=3),
                    Keys())
    after, out = max(0, args.after), sys.stdout.buffer
    try:
        while True:
            lines = logs.read(args.instance_id, args.file, after, MAX_READ_LINES)
            for line in lines:
                out.write(line.data)
            out.flush()
            if lines:
                after = lines[-1].end
                continue
            if not args.follow:
                return 0
            SYSTEM_CLOCK.sleep(0.5)
    except KeyboardInterrupt:
        return 0

def _overview(redis_url: str) -> dict[str, Any]:
    """Each token's last verdict as the workers stored it (no API call; the stack's own tokens may not be in
    this shell's environment) and the warm-pool status document."""
    from vastkeep.core.settings import load_settings  # noqa: PLC0415
    from vastkeep.pool import PoolBook  # noqa: PLC0415
    from vastkeep.state import Keys, StateStore  # noqa: PLC0415
    from vastkeep.tokens import SERVICES  # noqa: PLC0415

    settings = load_settings()
    client = _redis_client(redis_url)
    store = StateStore(client, Keys(), SYSTEM_CLOCK, default_desired_size=settings.warm_pool_desired_size)
    tokens = {}
    for service in SERVICES:
        hit = store.get_token_result(service)
        tokens[service] = {"result": {k: v for k, v in hit.items() if not k.startswith("_")}
                           if isinstance(hit, dict) else None,
                           "runtimeOverride": store.get_runtime_secret(service) is not None}
    return {"tokens": tokens, "warmPool": _pool_document(settings, store,
                                                         PoolBook(client, Keys(), settings.warm_pool_name))}


def _pool_document(settings: Any, store: Any, book: Any) -> dict[str, Any]:
    """``GET /api/proxy/admin/warm-pool/status``, read straight from Redis (poll times, figures, slots)."""
    from vastkeep.monitoring import warm_pool_status  # noqa: PLC0415
    from vastkeep.polling import PollSchedule  # noqa: PLC0415
    from vastkeep.pool import build_leases, pool_figures  # noqa: PLC0415

    pool, records = store.get_pool(), store.list_instances()
    now = SYSTEM_CLOCK.now()
    polls = PollSchedule(store.redis, store.keys).poll_times([r.instance_id for r in records])
    leases = build_leases(settings, store.redis, store.keys, SYSTEM_CLOCK)
    figures = pool_figures(settings, book, records, pool.safe_mode, leases, now, pool.desired_size)
    return warm_pool_status(pool, records, now, polls, figures)


def print_overview(overview: dict[str, Any] | None, error: str | None) -> None:
    """Tokens, the pool in one line, then every instance with its status."""
    from vastkeep.monitoring import instance_rows, pool_summary_line, token_lines  # noqa: PLC0415

    if overview is None:
        print(f"  tokens, pool and instances: unavailable ({error})")
        return
    for line in token_lines(overview["tokens"]):
        print(line)
    doc = overview["warmPool"]
    print(pool_summary_line(doc))
    print(f"  instances: {doc['counts']['total']} (poll times UTC)")
    for line in instance_rows(doc):
        print(line)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the simulated cloud in the foreground (keys may come from VASTKEEP_SIM_* env vars)."""
    from vastkeep.sim.cli import main as sim_main  # noqa: PLC0415

    rest = list(args.rest)
    for flag, var in (("--api-key", "VASTKEEP_SIM_API_KEY"), ("--hf-token", "VASTKEEP_SIM_HF_TOKEN"),
                      ("--civitai-token", "VASTKEEP_SIM_CIVITAI_TOKEN"),
                      ("--control-token", "VASTKEEP_SIM_CONTROL_TOKEN"),
                      ("--min-gap-ms", "VASTKEEP_SIM_MIN_GAP_MS")):
        given = any(a == flag or a.startswith(flag + "=") for a in rest)
        if os.environ.get(var) and not given:
            # "--flag=value", never "--flag value": a generated key may start with "-" (token_urlsafe does
            # one time in 64), which argparse would take for an option. In-process only, never on a child's
            # command line.
            rest.append(f"{flag}={os.environ[var]}")
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
    from vastkeep.monitoring import pool_document_lines  # noqa: PLC0415
    from vastkeep.pool import set_safe_mode, set_size  # noqa: PLC0415

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
        doc = _pool_document(settings, store, book)
    except (InvalidInput, StackError) as exc:
        print(f"vastkeep pool: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    for line in pool_document_lines(doc):
        print(line)
    return 0


# ── vastkeep soak ────────────────────────────────────────────────────────────
def add_soak_parser(sub: Any) -> None:
    """``vastkeep soak --minutes N [--seed S] [--report FILE]`` (self-contained: moves as one piece)."""
    sk = sub.add_parser("soak", help="run the stack as clients use it, break it at random (seeded), count "
                                     "what a client saw; exit 1 on any failure")
    sk.add_argument("--minutes", type=float, required=True, help="length of the run (the short form: 4)")
    sk.add_argument("--seed", type=int, default=None, help="replay a run's faults (default: new, printed)")
    sk.add_argument("--report", default=None, help="write the JSON report to this file")
    sk.add_argument("--pool-size", type=int, default=10, help="warm pool size of the soaked stack (10)")
    sk.add_argument("--clients", type=int, default=4, help="client programs at once (4)")
    sk.set_defaults(func=cmd_soak)


def cmd_soak(args: argparse.Namespace) -> int:
    """Run a soak; print its table; exit 0 only when every count is 0 and every fault family was seen."""
    import secrets  # noqa: PLC0415

    from vastkeep.soak import SoakRun, format_table, refuse_real_cloud  # noqa: PLC0415

    why = refuse_real_cloud(dict(os.environ))
    if why:
        print(f"vastkeep soak: refused: {why}", file=sys.stderr)
        return 2
    if args.minutes <= 0 or args.pool_size < 1 or args.clients < 1:
        print("vastkeep soak: --minutes, --pool-size and --clients must be positive", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    print(f"vastkeep soak: seed {seed} (replay with --seed {seed})", flush=True)
    run = SoakRun(minutes=args.minutes, seed=seed, pool_size=args.pool_size, clients=args.clients,
                  say=lambda text: print(text, flush=True))

    def _on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # the run's finally stops the clients and every child of the stack

    signal.signal(signal.SIGTERM, _on_term)
    try:
        report = run.run()
    except StackError as exc:
        print(f"vastkeep soak: the stack did not start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vastkeep soak: interrupted; every process stopped (no report)", file=sys.stderr)
        return 130
    finally:
        if not getattr(run.stack, "keep", False):
            run.stack.cleanup()
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    print(format_table(report))
    if not report["ok"]:
        print(f"vastkeep soak: logs kept in {report.get('folder')}")
    return 0 if report["ok"] else 1


# ── argument parsing ─────────────────────────────────────────────────────────
def build_parser() -> argparse.ArgumentParser:
    """Parser for every sub-command (no settings are read to build it, so --help always works)."""
    p = argparse.ArgumentParser(prog="vastkeep", description="Keep rented Vast.ai GPU instances connected.")
    sub = p.add_subparsers(dest="command", metavar="{up,status,check,logs,pool,soak,simulate}")
    up = sub.add_parser("up", help="start the whole stack here (redis, cloud, workers, beat, API, Flower)")
    up.add_argument("--control-concurrency", type=int, default=4, help="processes of the control worker")
    up.add_argument("--ssh-concurrency", type=int, default=None,
                    help="collector threads of the SSH worker (default SSH_WORKER_CONCURRENCY, 64)")
    up.set_defaults(func=cmd_up)
    st = sub.add_parser("status", help="the system here: processes, checks, tokens, the pool in one line, "
                                       "every instance")
    st.add_argument("--json", action="store_true", help="machine-readable (no secrets)")
    st.set_defaults(func=cmd_status)
    ck = sub.add_parser("check", help="health check: exit 0 when redis, workers and the API are ok")
    ck.set_defaults(func=cmd_check)
    lg = sub.add_parser("logs", help="print an instance's collected provisioning log (-f: follow it)")
    lg.add_argument("instance_id", help="Vast.ai instance id")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they arrive")
    lg.add_argument("--after", type=int, default=0, help="byte offset to start from (default 0)")
    lg.add_argument("--file", default="/var/log/onstart.log",
                    help="remote log file (default: the provisioning log)")
    lg.set_defaults(func=cmd_logs)
    pool = sub.add_parser("pool", help="size the warm pool, switch safe mode, show the pool")
    pool_sub = pool.add_subparsers(dest="pool_command", metavar="{size,safe-mode,status}", required=True)
    size = pool_sub.add_parser("size", help="set the desired number of ready instances")
    size.add_argument("n", help="0..WARM_POOL_MAX_SIZE")
    safe = pool_sub.add_parser("safe-mode", help="stop (on) or resume (off) renting")
    safe.add_argument("state", choices=("on", "off"))
    safe.add_argument("--reason", default=None, help="shown in the status (no secrets)")
    pst = pool_sub.add_parser("status", help="the warm-pool document: guide fields, slots, leases, safe mode")
    pst.add_argument("--json", action="store_true")
    pool.set_defaults(func=cmd_pool)
    add_soak_parser(sub)
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
