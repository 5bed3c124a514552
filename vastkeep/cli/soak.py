"""``vastkeep soak --minutes N [--seed S] [--report FILE]``: the client's-eye soak (:mod:`vastkeep.soak`).

It starts its own stack in a temporary folder on its own simulated cloud, refuses a real one (exit 2), prints
its table and exits 0 only when every count is 0 (docs/reliability.md). SIGTERM and Ctrl-C stop the clients
and every child of the stack.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from vastkeep.core.errors import StackError


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
