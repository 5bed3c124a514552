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
import os
import sys

from vastkeep.cli.parser import build_parser
from vastkeep.cli.simulate import cmd_simulate
from vastkeep.core.errors import ConfigError

#: The exit code of a command whose reader closed its stdout (``vastkeep status | head -1``): 128 + SIGPIPE,
#: what a shell reports for any Unix tool killed by SIGPIPE, so ``set -o pipefail`` sees the same as for them.
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vastkeep`` console script.

    A reader that closes the pipe early (``| head -1``) ends the command quietly with
    :data:`EXIT_BROKEN_PIPE`: no traceback, and stdout pointed at /dev/null so the interpreter's final
    flush of what is still buffered cannot fail a second time.
    """
    try:
        try:
            return _run(argv)
        finally:  # also after argparse's SystemExit (--help): what is buffered fails here, not at exit
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _run(argv: list[str] | None) -> int:
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


__all__ = ["EXIT_BROKEN_PIPE", "build_parser", "main"]
