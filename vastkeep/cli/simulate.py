"""``vastkeep simulate``: the simulated cloud in the foreground (:mod:`vastkeep.sim.cli`), and
``vastkeep simulate fault <instance-id> <kind>``: break one instance of the stack in this folder.

Each fault kind is one or more calls of the simulator's control API (``/_sim``, ``X-Sim-Token``), the
contract tests and scripts use too (docs/simulator.md); the control URL and token come from the stack's
``stack.json``, found from the current folder like ``vastkeep status`` does. ``heal`` clears every fault of
that instance. Exit 0 when injected, 1 when there is no simulated stack here or no such instance, 2 for
a malformed command.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

from vastkeep.cli.common import Unreachable, call_json, cli_command, home_from_settings
from vastkeep.stack import STACK_FILE, json_object, read_stack


@dataclass(frozen=True)
class Fault:
    """A fault kind: the control calls that make it, and what vastkeep then does (shown to the user)."""

    calls: tuple[tuple[str, dict[str, object]], ...]  # (route under /_sim/instances/{id}, body)
    what: str
    expect: str


REPLACED = ("polling fails it and the pool rents a replacement (three failures within "
            "WARM_POOL_SAFE_MODE_WINDOW_MS put the pool in safe mode: `vastkeep pool safe-mode off`)")

FAULTS: dict[str, Fault] = {
    "crash": Fault((("comfy", {"mode": "crash"}),), "ComfyUI crashed (connections refused, open ones reset)",
                   "keepalive sees it within a second (`unhealthy`, reason `ComfyUI down since ...`) and the "
                   "pool rents its replacement at once; `heal` brings it back within its "
                   "WARM_POOL_UNHEALTHY_GRACE_MS (5 min), else it is destroyed"),
    "hang": Fault((("comfy", {"mode": "hang"}),), "ComfyUI hangs (accepts, never answers)",
                  "keepalive's pings time out (GET /api/proxy/admin/keepalive/status counts them); after "
                  "COMFYUI_KEEPALIVE_MAX_FAILURES (5), 35 s apart, the reason reads `ComfyUI down since ...` "
                  "(about 3 min), then as for crash"),
    "offline": Fault((("state", {"state": "offline"}),), "the host went offline (every path black-holed)",
                     REPLACED),
    "exited": Fault((("state", {"state": "exited"}),), "the container exited while meant to run",
                    REPLACED),
    "outbid": Fault((("state", {"state": "outbid"}),), "the instance was outbid (stopped by the host)",
                    REPLACED),
    "ssh-drop": Fault((("ssh", {"action": "kill_sessions"}),), "every SSH session to it was dropped",
                      "the log collector reconnects (events `ssh-backoff`, then `ssh-connected`) and resumes "
                      "from its byte offset: `vastkeep logs <id>` loses and repeats no line"),
    "heal": Fault((("comfy", {"mode": "up"}), ("net", {"mode": "open"}), ("ssh", {"mode": "normal"})),
                  "every fault of this instance cleared",
                  "keepalive sees ComfyUI answer at its next ping (COMFYUI_KEEPALIVE_INTERVAL_MS, 30 s); "
                  "an instance already failed stays replaced"),
}


def fault_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vastkeep simulate fault",
                                description="Break one instance of the simulated cloud of the stack here "
                                            "(`vastkeep up` in this folder), or heal it.")
    p.add_argument("instance_id", help="the instance's id (the `id` column of `vastkeep status`)")
    p.add_argument("kind", choices=tuple(FAULTS), help="; ".join(f"{k}: {f.what}" for k, f in FAULTS.items()))
    return p


class FaultError(Exception):
    """Why a fault was not injected, with the exit code (1: nothing to break here, 2: a malformed command)."""

    def __init__(self, text: str, code: int = 1) -> None:
        super().__init__(text)
        self.code = code


def simulator_of_stack() -> tuple[str, str]:
    """``(control_url, control_token)`` of the simulated cloud of the stack in this folder."""
    home = home_from_settings()
    stack = read_stack(home)
    if stack is None:
        _fail(f"no stack is running from {home} (no {STACK_FILE}); start one with `vastkeep up` here")
    sim = json_object(stack.get("simulator"))
    if not stack.get("simulated") or not sim.get("control_url") or not sim.get("control_token"):
        _fail(f"the stack in {home} runs against the real Vast.ai cloud (VAST_API_KEY is set): "
              "there is no simulator to break instances in")
    return str(sim["control_url"]), str(sim["control_token"])


def _fail(text: str, code: int = 1) -> NoReturn:
    raise FaultError(text, code)


def cmd_fault(argv: list[str]) -> int:
    """Inject one fault kind into one instance of the stack's simulated cloud."""
    try:
        args = fault_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed why (or --help)
        return int(exc.code or 0)
    try:
        return _inject(args)
    except FaultError as exc:
        print(f"vastkeep simulate fault: {exc}", file=sys.stderr)
        return exc.code


def _inject(args: argparse.Namespace) -> int:
    if not args.instance_id.isdigit():
        _fail("the instance id is a number (the `id` column of `vastkeep status`)", 2)
    try:
        url, token = simulator_of_stack()
        headers = {"X-Sim-Token": token}
        base = f"{url}/instances/{args.instance_id}"
        fault = FAULTS[args.kind]
        code, shown = call_json("GET", base, headers=headers)
        _check(code, shown, args.instance_id)
        calls = list(fault.calls)
        if args.kind == "heal" and json_object(json_object(shown).get("sim")).get("fault"):
            calls.insert(0, ("state", {"state": "running"}))
        for route, body in calls:
            code, answer = call_json("POST", f"{base}/{route}", headers=headers, body=body)
            _check(code, answer, args.instance_id)
    except Unreachable as exc:
        _fail(f"the simulator does not answer: {exc}; is `vastkeep up` still running here?")
    print(f"instance {args.instance_id}: {fault.what}.")
    print(f"  what vastkeep does: {fault.expect}.")
    print(f"  watch it: {cli_command()} status")
    return 0


def _check(code: int, answer: object, instance_id: str) -> None:
    if code == 404:
        _fail(f"no instance {instance_id} in the simulated cloud (the `id` column of `vastkeep status` "
              "lists them)")
    if code == 401 or code == 403:
        _fail("the simulator refused the control token of stack.json (was the stack restarted?)")
    if code >= 400 or not isinstance(answer, dict):
        error = answer.get("error") if isinstance(answer, dict) else answer
        _fail(f"the simulator answered {code}: {error}")


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the simulated cloud in the foreground (keys may come from VASTKEEP_SIM_* env vars)."""
    rest = list(args.rest)
    if rest[:1] == ["fault"]:
        return cmd_fault(rest[1:])
    from vastkeep.sim.cli import main as sim_main  # noqa: PLC0415

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
