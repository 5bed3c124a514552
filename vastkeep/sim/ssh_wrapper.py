"""sshd's ForceCommand for the simulator: run the client's command inside the calling instance's root.

The simulator's SSH proxy connects to sshd *from the instance's own loopback address*, so the client
address in ``$SSH_CONNECTION`` names the instance. Absolute paths in the command are rooted at
``<state_dir>/by-ip/<ip>/`` (the working directory) and passed relative to it, so ``/var/log/onstart.log``
is that instance's provisioning log. Only a few read-only commands are allowed, and no shell syntax:
``tail``, ``cat``, ``head``, ``wc``, ``echo``, ``ls``,
``true``, ``sleep``, ``stat``. Standalone on purpose (run with ``python -I``): it must not import vastkeep.
"""

from __future__ import annotations

import os
import shlex
import sys

ALLOWED = {"tail", "cat", "head", "wc", "echo", "ls", "true", "sleep", "stat"}


def rooted(arg: str, root: str) -> str:
    """Map an absolute path to the same path relative to the instance root (the working directory), so
    output such as ``wc``'s shows no host path; ``..`` escapes are refused."""
    if not arg.startswith("/"):
        return arg
    joined = os.path.normpath(root + arg)
    if not joined.startswith(root):
        return "nonexistent"
    return os.path.relpath(joined, root)


def main(argv: list[str]) -> int:
    state_dir = os.path.realpath(argv[1]) if len(argv) > 1 else ""
    conn = os.environ.get("SSH_CONNECTION", "").split()
    ip = conn[0] if conn else ""
    root = os.path.join(state_dir, "by-ip", ip)
    if not ip or not os.path.isdir(root):
        print("vastkeep-sim: this connection does not belong to a simulated instance", file=sys.stderr)
        return 255
    root = os.path.realpath(root)
    command = os.environ.get("SSH_ORIGINAL_COMMAND", "").strip()
    if not command:
        print("vastkeep-sim: interactive shells are not simulated; run a command", file=sys.stderr)
        return 1
    try:
        args = shlex.split(command)
    except ValueError as exc:
        print(f"sh: syntax error: {exc}", file=sys.stderr)
        return 2
    if not args or args[0] not in ALLOWED:
        print(f"sh: 1: {args[0] if args else ''}: not found", file=sys.stderr)
        return 127
    os.chdir(root)
    os.execvp(args[0], [args[0]] + [rooted(a, root) for a in args[1:]])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
