"""What a newcomer reads first: ``vastkeep status``'s process rows, the simulator's control API and where its
token lives (never the token), tokens that are not configured, and the banner of ``vastkeep up``."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from vastkeep.cli import main
from vastkeep.core.settings import load_settings
from vastkeep.monitoring import token_lines
from vastkeep.stack import Stack
from vastkeep.stack.runtime import tokens_configured

CONTROL_TOKEN = "CtlTok_" + "c" * 24
CHILDREN = ("redis", "simulator", "worker-control", "worker-ssh", "worker-keepalive", "beat", "api", "flower")


@pytest.fixture
def here(clean_shell: Path) -> Path:
    """A folder whose VASTKEEP_HOME holds the stack.json a simulated `vastkeep up` writes (no Redis)."""
    home = clean_shell / ".vastkeep"
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({
        "pid": os.getpid(), "started_at": "2026-12-07T04:00:00Z", "simulated": True,
        "admin_api_url": "http://127.0.0.1:9", "flower_url": "http://127.0.0.1:8",
        "simulator": {"vast_api_url": "http://127.0.0.1:7/api/v0", "control_url": "http://127.0.0.1:7/_sim",
                      "control_token": CONTROL_TOKEN},
        "children": {cid: {"status": "running", "pid": 1000 + n, "restartCount": n % 2}
                     for n, cid in enumerate(CHILDREN)}}))
    return home


def test_status_rows_are_aligned_even_for_the_longest_child(here: Path, capsys) -> None:
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.split()[:1] and line.split()[0] in CHILDREN
            and " running " in line]
    assert len(rows) == len(CHILDREN), out
    starts = {row.index(" running") for row in rows}
    assert len(starts) == 1, "\n".join(rows)
    assert "worker-keepalive  running" in out  # at least two spaces between the columns


def test_status_shows_the_simulator_and_where_its_token_lives(here: Path, capsys) -> None:
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "simulator   http://127.0.0.1:7/_sim   (control API, header X-Sim-Token)" in out
    assert 'its token: "control_token" in .vastkeep/sim/ready.json (and .vastkeep/stack.json)' in out
    assert "break an instance: " in out and "vastkeep simulate fault <id>" in out
    assert main(["status", "--json"]) == 0
    shown = out + capsys.readouterr().out
    assert CONTROL_TOKEN not in shown


@pytest.mark.parametrize(("info", "verdict"), [
    ({"configured": False, "result": None, "runtimeOverride": False}, "not configured"),
    ({"configured": True, "result": None, "runtimeOverride": False}, "configured, no recent check"),
    ({"configured": None, "result": None, "runtimeOverride": False}, "no recent check"),  # an older stack
    ({"configured": False, "result": {"status": "valid"}, "runtimeOverride": True}, "valid"),
])
def test_a_token_the_stack_has_not_is_not_configured(info, verdict) -> None:
    assert token_lines({"huggingface": info}) == [f"  token huggingface  {verdict}" + (
        ", runtime token" if info["runtimeOverride"] else "")]


def test_the_stack_records_which_tokens_it_has_never_their_values() -> None:
    real = load_settings(environ={"VAST_API_KEY": "vk-secret", "CIVITAI_TOKEN": "cv-secret"}, env_file=False)
    assert tokens_configured(real, simulated=False) == {"vastai": True, "huggingface": False, "civitai": True}
    bare = load_settings(environ={}, env_file=False)
    assert tokens_configured(bare, simulated=True) == {"vastai": True, "huggingface": True, "civitai": True}


def test_the_banner_names_the_simulator_and_the_second_terminal_command(tmp_path: Path) -> None:
    settings = load_settings(environ={"VASTKEEP_HOME": str(tmp_path / "home")}, env_file=False)
    out = io.StringIO()
    stack = Stack(settings, {}, out=out, cli=".venv/bin/vastkeep")
    stack.info.update(simulated=True, vast_mode="simulated", vast_api_url="http://127.0.0.1:7/api/v0",
                      simulator={"vast_api_url": "http://127.0.0.1:7/api/v0",
                                 "control_url": "http://127.0.0.1:7/_sim", "control_token": CONTROL_TOKEN},
                      redis_url="redis://:pw@127.0.0.1:6390/0", redis_embedded=True,
                      admin_api_url="http://127.0.0.1:3000", flower_url="http://127.0.0.1:5555")
    stack._announce("key", "admin", "pw")  # noqa: SLF001 - the banner's exact lines
    text = out.getvalue()
    assert "  simulator   http://127.0.0.1:7/_sim" in text and "sim/ready.json" in text
    assert CONTROL_TOKEN not in text
    assert "In another terminal in this folder: .venv/bin/vastkeep status" in text
    assert "break an instance: .venv/bin/vastkeep simulate fault <id>" in text
    assert text.count("SIMULATED") == 1, text


def test_the_second_terminal_command_needs_no_activation(tmp_path: Path) -> None:
    import sys

    from vastkeep.cli.common import cli_command

    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "vastkeep").is_file():
        pytest.skip("no vastkeep console script beside this Python")
    assert cli_command(venv_bin.parent.parent) == f"{venv_bin.parent.name}/bin/vastkeep"
    assert cli_command(tmp_path) == str(venv_bin / "vastkeep")  # outside the folder: the full path
