"""``vastkeep simulate``: the simulated cloud in the foreground (:mod:`vastkeep.sim.cli`)."""

from __future__ import annotations

import argparse
import os


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
