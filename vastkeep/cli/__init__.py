"""The ``vastkeep`` command: one module per concern, :func:`main` the entry point.

- ``parser``: every sub-command and its options (no settings read, so ``--help`` always works).
- ``stack_cmds``: ``vastkeep up``, the whole stack from this folder, supervised (:mod:`vastkeep.stack`).
- ``status``: ``vastkeep status [--json]``, the system overview; ``health``: ``vastkeep check``.
- ``pool``: ``vastkeep pool size|safe-mode|status``; ``logs``: ``vastkeep logs <id> [-f]``.
- ``simulate``: ``vastkeep simulate`` (the simulated cloud in the foreground).
- ``soak``: ``vastkeep soak --minutes N [--seed S]`` (the client's-eye soak, :mod:`vastkeep.soak`).
- ``common``: the stack of this folder (``VASTKEEP_HOME/stack.json``) and a Redis client, which every
  command other than ``up`` finds without flags.

A process edge: it reads ``os.environ`` to pass it on to children; the library below it never does.
"""

from __future__ import annotations

import argparse
import sys

from vastkeep.cli.parser import build_parser
from vastkeep.cli.simulate import cmd_simulate
from vastkeep.core.errors import ConfigError


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


__all__ = ["build_parser", "main"]
