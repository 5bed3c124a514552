"""The simulated cloud checked by Vast.ai's own client: the official CLI (PyPI ``vastai``, pinned in
the ``test`` extra) pointed at the simulator with ``--url http://127.0.0.1:PORT`` (it adds ``/api/v0``).

Each command runs as a user runs it, a subprocess with its own empty home (no key file, no caches), so what
passes here is what the CLI really sends and reads: exact ``Content-Type``, ``extra_env`` on every row,
string query values, the paged ``/api/v1/instances/``, ``users/current``, ``request_logs`` + ``result_url``,
the bulk routes and what a stopped instance reports.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.helpers import wait_for

VASTAI = Path(sys.executable).with_name("vastai")
FAST = {"created_s": 0, "loading_s": 0.1, "boot_s": 0.1, "stop_s": 0, "log_interval_s": 0.02}


@pytest.fixture
def cli(sim, tmp_path: Path):
    """``cli("show", "user")``: a CompletedProcess; ``cli.json("show", "user")``: its ``--raw`` output."""
    assert VASTAI.is_file(), f"the official CLI is missing: pip install -e '.[test]' installs it ({VASTAI})"
    base = sim.vast_api_url.removesuffix("/api/v0")
    home = tmp_path / "home"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".state"),
        "XDG_DATA_HOME": str(home / ".data"),
        "VASTAI_NO_UPDATE_CHECK": "1",
        # The CLI looks GPU names up at import time from VAST_URL (default console.vast.ai): keep it local.
        "VAST_URL": base,
        "COLUMNS": "250",
        "TERM": "dumb",
    }
    sim.control.set_lifecycle(**FAST)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(VASTAI), *args, "--url", base, "--api-key", sim.api_key, "--no-color"]
        out = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        said = f"vastai {' '.join(args)}: rc {out.returncode}\n{out.stdout}\n{out.stderr}"
        if check:
            assert out.returncode == 0, said
            assert "Traceback" not in out.stderr, out.stderr
            assert "Failed with error" not in out.stderr, out.stderr
        return out

    def raw(*args: str) -> Any:
        out = run(*args, "--raw")
        try:
            return json.loads(out.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"--raw output is not JSON: {out.stdout}\n{out.stderr}") from None

    run.json = raw  # type: ignore[attr-defined]
    return run


def wait_status(cli, iid: int, status: str, deadline_s: float = 20) -> dict:
    def reached() -> dict | None:
        row = cli.json("show", "instance", str(iid))
        return row if row["actual_status"] == status else None

    return wait_for(reached, deadline_s, f"instance {iid} {status}", interval_s=0.1)


def cheap_offers(cli) -> list[dict]:
    offers = cli.json("search", "offers", "num_gpus=1 dph<0.5")
    assert offers, "no offer with num_gpus=1 dph<0.5"
    return offers


def test_show_user(cli):
    user = cli.json("show", "user")
    assert user["username"] == "vastkeep-sim" and "api_key" not in user
    assert "vastkeep-sim" in cli("show", "user").stdout


def test_search_offers_with_numeric_filters(cli, sim):
    offers = cheap_offers(cli)
    assert all(o["num_gpus"] == 1 and o["dph_total"] < 0.5 for o in offers)
    assert all(o["verified"] and o["rentable"] and not o["rented"] for o in offers)
    # The same query with real numbers, as our own client sends it, finds the same offers.
    query = {"verified": {"eq": True}, "external": {"eq": False}, "rentable": {"eq": True},
             "num_gpus": {"eq": 1}, "dph_total": {"lt": 0.5}, "order": [["score", "desc"]]}
    direct = requests.post(f"{sim.vast_api_url}/bundles/", json=query, headers=sim.vast_headers(), timeout=10)
    assert direct.headers["Content-Type"] == "application/json"
    assert [o["id"] for o in offers] == [o["id"] for o in direct.json()["offers"]]
    assert len(cli.json("search", "offers", "gpu_ram>=40 num_gpus=1")) > 0  # GB, multiplied to MB by the CLI
    table = cli("search", "offers", "num_gpus=1 dph<0.5").stdout
    assert "invalid return Content-Type" not in table and str(offers[0]["id"]) in table


def test_create_label_stop_start_logs_ssh_url_destroy(cli):
    offer = cheap_offers(cli)[0]
    made = cli.json(
        "create", "instance", str(offer["id"]), "--image", "vastai/comfy:cli", "--disk", "32",
        "--env", "-e MODE=test -e TOKEN_NAME=x -p 8188:8188", "--label", "cli-made",
        "--onstart-cmd", "echo hi",
    )
    assert made["success"] is True
    iid = int(made["new_contract"])
    row = wait_status(cli, iid, "running")
    assert row["label"] == "cli-made" and row["image_uuid"] == "vastai/comfy:cli"
    assert row["disk_space"] == 32 and row["extra_env"] == {"MODE": "test", "TOKEN_NAME": "x"}
    assert row["onstart"] == "echo hi" and row["image_runtype"] == "ssh"
    assert (row["intended_status"], row["cur_state"], row["next_state"]) == ("running",) * 3

    assert cli("label", "instance", str(iid), "renamed").stdout.strip() == f"label for {iid} set to renamed."
    assert cli.json("show", "instance", str(iid))["label"] == "renamed"

    url = cli("ssh-url", str(iid)).stdout.strip()
    shown = cli.json("show", "instance", str(iid))
    assert url == f"ssh://root@{shown['public_ipaddr'].strip()}:{shown['ports']['22/tcp'][0]['HostPort']}"

    logs = cli("logs", str(iid), "--tail", "50").stdout
    assert "[onstart] running the onstart script" in logs and "To see the GUI go to" in logs
    assert cli("logs", str(iid), "--tail", "1").stdout.strip() == "To see the GUI go to: http://0.0.0.0:8188"

    assert cli("stop", "instance", str(iid)).stdout.strip() == f"stopping instance {iid}."
    stopped = cli.json("show", "instance", str(iid))
    assert stopped["actual_status"] == "exited"
    assert (stopped["intended_status"], stopped["cur_state"], stopped["next_state"]) == ("stopped",) * 3
    assert [r["id"] for r in cli.json("show", "instances", "--status", "exited")] == [iid]
    assert cli.json("show", "instances", "--status", "running") == []
    assert "Warning: unknown status" not in cli("show", "instances", "--status", "exited").stderr

    assert cli("start", "instance", str(iid)).stdout.strip() == f"starting instance {iid}."
    wait_status(cli, iid, "running")

    assert cli("destroy", "instance", str(iid), "-y").stdout.strip() == f"destroying instance {iid}."
    assert cli.json("show", "instances") == []
    gone = cli("show", "instance", str(iid), "--raw", check=False)
    assert json.loads(gone.stderr) == {"error": True, "status_code": 404, "msg": "Instance not found."}


def test_show_instances_raw_table_status_filter_and_pages(cli, sim):
    ids = [sim.control.create_instance(running=True, label=f"p{n}")["id"] for n in range(3)]
    cli("stop", "instance", str(ids[1]))
    rows = cli.json("show", "instances")
    assert [r["id"] for r in rows] == ids and all(r["extra_env"] == {} for r in rows)

    running = cli.json("show", "instances", "--status", "running")
    assert [r["id"] for r in running] == [ids[0], ids[2]]

    page = cli.json("show", "instances", "--status", "running", "--limit", "1")
    assert [r["id"] for r in page["instances"]] == [ids[0]]
    assert page["total_instances"] == 2 and page["next_token"]
    token = page["next_token"]
    last = cli.json("show", "instances", "--status", "running", "--limit", "1", "--next-token", token)
    assert [r["id"] for r in last["instances"]] == [ids[2]] and last["next_token"] is None

    table = cli("show", "instances", "--status", "running", "--limit", "1").stdout
    assert "Total: 2 instances" in table and "1 – 1 of 2" in table and f"Next page token: {token}" in table
    assert "p0" in table and "p1" not in table and "running" in table
    full = cli("show", "instances").stdout
    assert "Total: 3 instances" in full and "exited" in full and "--status:" in full  # filters panel

    assert cli("show", "instances", "-q").stdout.split() == [str(i) for i in ids]


def test_show_instances_pages_past_25(cli, sim):
    made = sim.control.bulk_create(30)["ids"]
    rows = cli.json("show", "instances")  # the SDK follows next_token 25 at a time
    assert [r["id"] for r in rows] == sorted(made)


def test_bulk_create_stop_start_destroy(cli):
    offers = cheap_offers(cli)[:3]
    out = cli("create", "instances", *[str(o["id"]) for o in offers], "--image", "vastai/comfy:bulk",
              "--disk", "16", "--label", "bulk").stdout
    assert "'success': True" in out
    rows = cli.json("show", "instances")
    assert len(rows) == 3 and {r["label"] for r in rows} == {"bulk"}
    assert {r["disk_space"] for r in rows} == {16}
    ids = [str(r["id"]) for r in rows]
    for r in rows:
        wait_status(cli, r["id"], "running")
    assert "stopping instance" in cli("stop", "instances", *ids[:2]).stdout
    assert {r["id"] for r in cli.json("show", "instances", "--status", "exited")} == {int(i) for i in ids[:2]}
    assert "starting instance" in cli("start", "instances", *ids[:2]).stdout
    for iid in ids[:2]:
        wait_status(cli, int(iid), "running")
    assert "destroying instance" in cli("destroy", "instances", *ids, "-y").stdout
    assert cli.json("show", "instances") == []


def test_unknown_routes_and_errors_answer_json(sim):
    h = sim.vast_headers()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = requests.get(f"{sim.vast_api_url}/instances/", headers=headers, timeout=10)
        assert r.status_code == 401 and r.headers["Content-Type"] == "application/json"
        assert r.json()["error"] == "invalid_user_key"
    sim.control.api_fault(status=400, count=1)
    r = requests.get(f"{sim.vast_api_url}/instances/", headers=h, timeout=10)
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/json" and r.json()["msg"]
    for method, path in (("GET", "/api/v0/no/such/route/"), ("POST", "/api/v0/users/current/")):
        r = requests.request(method, sim.vast_api_url.removesuffix("/api/v0") + path, headers=h, timeout=10)
        assert r.status_code in (404, 405) and r.headers["Content-Type"] == "application/json"
        assert r.json()["success"] is False and re.match(r"^[a-z_]+$", r.json()["error"])
