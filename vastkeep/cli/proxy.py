"""``vastkeep proxy``: the ComfyUI endpoint in the foreground (``vastkeep up`` runs it as a child)."""

from __future__ import annotations

import argparse


def cmd_proxy(args: argparse.Namespace) -> int:
    """Serve ``/c/{endpointToken}/`` and ``/pool/`` until SIGINT/SIGTERM."""
    from vastkeep.proxy import run_proxy  # noqa: PLC0415

    return run_proxy(args.loop)
