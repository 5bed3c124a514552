"""The ``vastkeep`` argument parser: every sub-command and its options, no settings read."""

from __future__ import annotations

import argparse

from vastkeep.cli.health import cmd_check
from vastkeep.cli.logs import cmd_logs
from vastkeep.cli.pool import cmd_pool
from vastkeep.cli.proxy import cmd_proxy
from vastkeep.cli.simulate import cmd_simulate
from vastkeep.cli.soak import add_soak_parser
from vastkeep.cli.stack_cmds import cmd_up
from vastkeep.cli.status import cmd_status
from vastkeep.cli.watchdog import cmd_watchdog


def build_parser() -> argparse.ArgumentParser:
    """Parser for every sub-command (no settings are read to build it, so --help always works)."""
    p = argparse.ArgumentParser(prog="vastkeep", description="Keep rented Vast.ai GPU instances connected.")
    sub = p.add_subparsers(dest="command", metavar="{up,status,check,logs,pool,proxy,soak,simulate,watchdog}")
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
    px = sub.add_parser("proxy", help="run the ComfyUI endpoint (/c/<endpointToken>/, /pool/), foreground")
    px.add_argument("--loop", choices=("asyncio", "uvloop", "auto"), default="asyncio",
                    help="event loop (auto: uvloop where installed; bench/bench_proxy.py compares them)")
    px.set_defaults(func=cmd_proxy)
    add_soak_parser(sub)
    sim = sub.add_parser("simulate", add_help=False,
                         help="run the simulated cloud in the foreground; `vastkeep simulate fault <id> "
                              "crash|hang|offline|exited|outbid|ssh-drop|heal` breaks (or heals) an "
                              "instance of the stack here")
    sim.add_argument("rest", nargs=argparse.REMAINDER)
    sim.set_defaults(func=cmd_simulate)
    wd = sub.add_parser("watchdog", help="reset a daemon that supervision marked failed")
    wd_sub = wd.add_subparsers(dest="watchdog_command", metavar="{reset}", required=True)
    reset = wd_sub.add_parser("reset", help="forget a failed daemon's record: the next sweep starts it again")
    reset.add_argument("name", help="its name in `GET /api/proxy/admin/watchdog/status` "
                                    "(e.g. poll-dispatcher)")
    wd.set_defaults(func=cmd_watchdog)
    return p
