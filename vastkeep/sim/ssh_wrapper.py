"""sshd's ForceCommand for the simulator: run the client's command inside the calling instance's root.

The simulator's SSH proxy connects to sshd *from the instance's own loopback address*, so the client
address in ``$SSH_CONNECTION`` names the instance. Every argument that is not an option is a path inside
``<state_dir>/by-ip/<ip>/`` (the working directory): absolute ones are rooted there, so
``/var/log/onstart.log`` is that instance's provisioning log. Each is resolved (``..`` and symlinks
included) and must stay inside the root, or the command is refused: sshd runs as root, so an escape
would read any file of the host or another instance. Only a few read-only commands are allowed, no shell
syntax, and no option that names a file to read (``--files0-from``...): ``tail``, ``cat``, ``head``,
``wc``, ``echo``, ``ls``, ``true``, ``sleep``, ``stat``. Standalone on purpose (run with ``python -I``):
it must not import vastkeep.
"""

from __future__ import annotations

import os
import shlex
import sys

ALLOWED = {"tail", "cat", "head", "wc", "echo", "ls", "true", "sleep", "stat"}
# Long options of GNU tools that read a file named in their value. GNU getopt accepts any unambiguous
# prefix (``--files0=F``), so a prefix of one of these is refused too.
FILE_OPTIONS = ("--files0-from", "--from-file", "--random-source", "--reference", "--file")
# ``ls -L`` (``--dereference``) would follow a symlink met while listing (``-R``) to outside the root.
DEREF_OPTIONS = ("--dereference",)


def inside(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or below it (by path components, so ``/x/2`` is not in ``/x/23``)."""
    return os.path.commonpath([root, path]) == root


def rooted(arg: str, root: str) -> str:
    """An operand as a path relative to the instance root (``root`` already resolved), so output such
    as ``wc``'s shows no host path. ``..`` and symlinks are resolved first; a path that ends up outside
    the root raises ``PermissionError``."""
    try:
        resolved = os.path.realpath(os.path.join(root, arg.lstrip("/")))
    except ValueError:  # an embedded NUL byte
        raise PermissionError(repr(arg)) from None
    if not inside(resolved, root):
        raise PermissionError(arg)
    return os.path.relpath(resolved, root)


def check_option(arg: str, command: str = "") -> str:
    """An option passes unchanged unless it names a file to read (or makes ``ls`` follow symlinks)."""
    refused = FILE_OPTIONS + (DEREF_OPTIONS if command == "ls" else ())
    if arg.startswith("--") and len(arg) > 2:
        name = arg.split("=", 1)[0]
        if any(opt.startswith(name) for opt in refused):
            raise PermissionError(arg)
    elif command == "ls" and "L" in arg:
        raise PermissionError(arg)
    return arg


def map_args(args: list[str], root: str, command: str = "") -> list[str]:
    """Options checked, operands rooted (all after ``--`` are operands); PermissionError on an escape."""
    out, operands_only = [], False
    for arg in args:
        if operands_only or arg == "-" or not arg.startswith("-"):
            out.append(rooted(arg, root))
        elif arg == "--":
            operands_only = True
            out.append(arg)
        else:
            out.append(check_option(arg, command))
    return out


def main(argv: list[str]) -> int:
    state_dir = os.path.realpath(argv[1]) if len(argv) > 1 else ""
    conn = os.environ.get("SSH_CONNECTION", "").split()
    ip = conn[0] if conn else ""
    root = os.path.join(state_dir, "by-ip", ip)
    if not ip or "/" in ip or ip in (".", "..") or not os.path.isdir(root):
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
    try:
        mapped = map_args(args[1:], root, args[0])
    except PermissionError as exc:
        print(f"{args[0]}: {exc}: Permission denied (outside this instance)", file=sys.stderr)
        return 1
    os.chdir(root)
    os.execvp(args[0], [args[0], *mapped])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
