"""The simulator's Vast.ai / HuggingFace / Civitai APIs answer real HTTP clients with the documented
shapes."""

from __future__ import annotations

import hashlib

import pytest
import requests

from tests.fixtures.helpers import wait_for

T = 5  # seconds: timeout of every request in these tests


def _wait_status(sim, iid: int, want: str, deadline_s: float = 10.0) -> list:
    """Poll the show endpoint until ``actual_status == want``; returns every status seen on the way."""
    seen: list = []

    def reached() -> bool:
        inst = requests.get(
            f"{sim.vast_api_url}/instances/{iid}/",
            params={"owner": "me"},
            headers=sim.vast_headers(),
            timeout=T,
        ).json()["instances"]
        if not seen or seen[-1][0] != inst["actual_status"]:
            seen.append((inst["actual_status"], inst["ports"]))
        return inst["actual_status"] == want

    wait_for(reached, deadline_s, f"{want} (seen {seen})")
    return seen



def comfy_answer(url: str) -> requests.Response | None:
    """ComfyUI's answer, or None while nothing listens yet."""
    try:
        return requests.get(url, timeout=T)
    except requests.ConnectionError:
        return None

def test_vast_auth_bearer_query_and_missing(sim):
    url = f"{sim.vast_api_url}/instances"
    assert requests.get(url, params={"owner": "me"}, timeout=T).status_code == 401
    bad = requests.get(url, params={"owner": "me"}, headers={"Authorization": "Bearer nope"}, timeout=T)
    assert bad.status_code == 401 and bad.json()["success"] is False
    ok = requests.get(url, params={"owner": "me"}, headers=sim.vast_headers(), timeout=T)
    assert ok.status_code == 200 and ok.json() == {"instances": []}
    assert requests.get(url, params={"owner": "me", "api_key": sim.api_key}, timeout=T).status_code == 200
    v1 = requests.get(sim.base_url + "/api/v1/instances/", headers=sim.vast_headers(), timeout=T)
    assert v1.status_code == 200
    seen = sim.control.requests_seen(service="vast")
    assert [r["auth"] for r in seen] == ["missing", "bearer", "bearer", "query", "bearer"]
    assert [r["key_valid"] for r in seen] == [False, False, True, True, True]
    assert seen[2]["key_fingerprint"] == hashlib.sha256(sim.api_key.encode()).hexdigest()[:12]
    assert all("api_key" not in r["query"] for r in seen)
    assert sim.api_key not in str(seen)


def test_search_offers_filters(sim):
    url = f"{sim.vast_api_url}/bundles/"
    everything = requests.post(url, json={}, headers=sim.vast_headers(), timeout=T).json()["offers"]
    assert len(everything) >= 32
    query = {
        "verified": {"eq": True},
        "rentable": {"eq": True},
        "gpu_name": {"eq": "RTX 4090"},
        "direct_port_count": {"gte": 1},
        "dph_total": {"lte": 0.6},
        "order": [["dph_total", "asc"]],
    }
    offers = requests.post(url, json=query, headers=sim.vast_headers(), timeout=T).json()["offers"]
    expected = [
        o
        for o in everything
        if o["verified"]
        and o["rentable"]
        and o["gpu_name"] == "RTX 4090"
        and o["direct_port_count"] >= 1
        and o["dph_total"] <= 0.6
    ]
    assert offers and sorted(o["id"] for o in offers) == sorted(o["id"] for o in expected)
    assert [o["dph_total"] for o in offers] == sorted(o["dph_total"] for o in offers)
    assert {"id", "dph_total", "gpu_name", "reliability2", "num_gpus", "machine_id"} <= set(offers[0])
    limited = requests.post(url, json={"limit": 3}, headers=sim.vast_headers(), timeout=T).json()["offers"]
    assert len(limited) == 3
    bad = requests.post(url, json={"gpu_name": {"like": "x"}}, headers=sim.vast_headers(), timeout=T)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_args"


def test_rent_lifecycle_ports_and_comfy(sim):
    sim.control.set_lifecycle(created_s=0.2, loading_s=0.3, boot_s=0.2, log_interval_s=0.05)
    offer = requests.post(
        f"{sim.vast_api_url}/bundles/",
        json={"rentable": {"eq": True}, "direct_port_count": {"gte": 1}},
        headers=sim.vast_headers(),
        timeout=T,
    ).json()["offers"][0]
    body = {
        "client_id": "me",
        "image": "vastai/comfy:test",
        "env": {"-p 8188:8188": "1", "-p 22:22": "1", "-p 18188:18188": "1"},
        "disk": 80,
        "label": "pool-comfy-01",
        "runtype": "ssh",
    }
    resp = requests.put(
        f"{sim.vast_api_url}/asks/{offer['id']}/", json=body, headers=sim.vast_headers(), timeout=T
    )
    assert resp.status_code == 200 and resp.json()["success"] is True
    iid = resp.json()["new_contract"]
    seen = _wait_status(sim, iid, "running")
    statuses = [s for s, _ in seen]
    assert statuses[-1] == "running" and statuses.index("loading") < statuses.index("running")
    assert all(ports == {} for s, ports in seen if s != "running")
    inst = requests.get(f"{sim.vast_api_url}/instances/{iid}/", headers=sim.vast_headers(), timeout=T).json()[
        "instances"
    ]
    assert inst["label"] == "pool-comfy-01" and inst["intended_status"] == inst["cur_state"] == "running"
    assert set(inst["ports"]) == {"8188/tcp", "18188/tcp", "22/tcp"}
    assert inst["ports"]["8188/tcp"][0]["HostIp"] == "0.0.0.0"
    ip = inst["public_ipaddr"].strip()
    assert ip.startswith("127.") and ip != "127.0.0.1"
    url = f"http://{ip}:{inst['ports']['8188/tcp'][0]['HostPort']}"
    # ComfyUI boots a little after "running"
    stats = wait_for(lambda: comfy_answer(url + "/system_stats"), 5, "ComfyUI answering",
                     interval_s=0.02).json()
    assert set(stats["system"]) >= {
        "os",
        "ram_total",
        "ram_free",
        "comfyui_version",
        "python_version",
        "pytorch_version",
        "embedded_python",
        "argv",
    }
    assert set(stats["devices"][0]) == {
        "name",
        "type",
        "index",
        "vram_total",
        "vram_free",
        "torch_vram_total",
        "torch_vram_free",
    }
    assert requests.get(url + "/api/system_stats", timeout=T).json() == stats
    assert requests.get(url + "/prompt", timeout=T).json() == {"exec_info": {"queue_remaining": 0}}
    assert requests.get(url + "/queue", timeout=T).json() == {"queue_running": [], "queue_pending": []}
    listing = requests.get(
        f"{sim.vast_api_url}/instances", params={"owner": "me"}, headers=sim.vast_headers(), timeout=T
    ).json()["instances"]
    assert [i["id"] for i in listing] == [iid]
    again = requests.put(
        f"{sim.vast_api_url}/asks/{offer['id']}/", json=body, headers=sim.vast_headers(), timeout=T
    )
    assert again.status_code == 400 and again.json()["success"] is False  # the machine is taken now


def test_label_stop_start_destroy(sim):
    iid = sim.control.create_instance(running=True, lifecycle={"loading_s": 0.05, "boot_s": 0, "stop_s": 0})[
        "id"
    ]
    base, h = f"{sim.vast_api_url}/instances/{iid}/", sim.vast_headers()
    assert requests.put(base, json={"label": "renamed"}, headers=h, timeout=T).json() == {"success": True}
    assert requests.get(base, headers=h, timeout=T).json()["instances"]["label"] == "renamed"
    assert requests.put(base, json={"state": "stopped"}, headers=h, timeout=T).json()["success"] is True
    shown = requests.get(base, headers=h, timeout=T).json()["instances"]
    # A stopped instance's container has exited; the state fields say it was meant to (docs/simulator.md).
    assert shown["actual_status"] == "exited" and shown["intended_status"] == "stopped"
    assert shown["cur_state"] == shown["next_state"] == "stopped"
    assert requests.put(base, json={"state": "running"}, headers=h, timeout=T).json()["success"] is True
    _wait_status(sim, iid, "running")
    assert requests.delete(base, headers=h, timeout=T).json() == {"success": True}
    gone = requests.delete(base, headers=h, timeout=T)
    assert gone.status_code == 404 and gone.json()["error"] == "no_such_instance"
    assert requests.get(base, headers=h, timeout=T).json()["error"] == "no_such_instance"


def test_public_ipaddr_trailing_newline_when_asked(sim):
    inst = sim.control.create_instance(running=True, ip_trailing_newline=True)
    assert inst["public_ipaddr"].endswith("\n") and inst["public_ipaddr"].strip().startswith("127.")
    assert not sim.control.create_instance(running=True, ip_trailing_newline=False)["public_ipaddr"].endswith(
        "\n"
    )


def test_429_burst_is_plain_text_without_retry_after(sim):
    sim.control.rate_limit_burst(2)
    url, h = f"{sim.vast_api_url}/instances", sim.vast_headers()
    first, second, third = (requests.get(url, headers=h, timeout=T) for _ in range(3))
    for r in (first, second):
        assert r.status_code == 429 and r.text == "API requests too frequent"
        assert "Retry-After" not in r.headers and r.headers["Content-Type"].startswith("text/plain")
    assert third.status_code == 200


def test_5xx_burst_then_recovers(sim):
    sim.control.server_error_burst(1, status=502)
    url, h = f"{sim.vast_api_url}/instances", sim.vast_headers()
    assert requests.get(url, headers=h, timeout=T).status_code == 502
    assert requests.get(url, headers=h, timeout=T).status_code == 200


def test_slow_api_makes_a_read_timeout(sim):
    sim.control.slow_api(1.0, service="vast")
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{sim.vast_api_url}/instances", headers=sim.vast_headers(), timeout=(1, 0.3))
    sim.control.clear_api_faults()
    assert (
        requests.get(f"{sim.vast_api_url}/instances", headers=sim.vast_headers(), timeout=T).status_code
        == 200
    )


def test_ambiguous_answers_are_200_with_the_given_body(sim):
    iid = sim.control.create_instance(running=True, ssh=False, ssh_proxy=False)["id"]
    h = sim.vast_headers()
    listing, show = f"{sim.vast_api_url}/instances", f"{sim.vast_api_url}/instances/{iid}/"
    sim.control.ambiguous_answer("", path_equals="/api/v0/instances", count=1)  # the listing alone, once
    sim.control.ambiguous_answer('{"instances": null}', path_contains=f"/instances/{iid}/")
    empty = requests.get(listing, headers=h, timeout=T)
    assert empty.status_code == 200 and empty.content == b""
    assert empty.headers["Content-Type"] == "application/json"
    assert requests.get(show, headers=h, timeout=T).json() == {"instances": None}
    assert requests.get(show, headers=h, timeout=T).json() == {"instances": None}  # until cleared
    assert [r["id"] for r in requests.get(listing, headers=h, timeout=T).json()["instances"]] == [iid]
    # method filter: a DELETE of the instance is not answered by the GET fault
    assert requests.delete(show, headers=h, timeout=T).json() == {"success": True}
    seen = [e["status"] for e in sim.control.requests_seen(service="vast")[-5:]]
    assert seen == [200, 200, 200, 200, 200]


@pytest.mark.parametrize("spec", [{"status": 200}, {"status": 200, "body": 5}, {"status": 302, "body": ""}])
def test_ambiguous_answer_needs_a_string_body_and_status_200(sim, spec):
    with pytest.raises(RuntimeError, match="400"):
        sim.control._call("POST", "/api_faults", {"service": "vast", **spec})


def test_huggingface_and_civitai_token_checks(sim):
    hf, civ = sim.info["hf_token"], sim.info["civitai_token"]
    who = requests.get(sim.base_url + "/api/whoami-v2", headers={"Authorization": f"Bearer {hf}"}, timeout=T)
    assert who.status_code == 200 and who.json()["type"] == "user"
    assert who.json()["auth"]["accessToken"]["role"] == "read"
    me = requests.get(sim.base_url + "/api/v1/me", headers={"Authorization": f"Bearer {civ}"}, timeout=T)
    assert me.status_code == 200 and {"id", "username", "tier", "status"} <= set(me.json())
    sim.control.invalidate_token("hf")
    sim.control.set_valid_tokens(civitai=["rotated"])
    who = requests.get(sim.base_url + "/api/whoami-v2", headers={"Authorization": f"Bearer {hf}"}, timeout=T)
    assert who.status_code == 401 and who.json() == {"error": "Invalid credentials in Authorization header"}
    me = requests.get(sim.base_url + "/api/v1/me", headers={"Authorization": f"Bearer {civ}"}, timeout=T)
    assert me.status_code == 401 and me.json() == {"error": "Unauthorized"}
    me = requests.get(sim.base_url + "/api/v1/me", headers={"Authorization": "Bearer rotated"}, timeout=T)
    assert me.status_code == 200
    sim.control.reset_tokens()
    who = requests.get(sim.base_url + "/api/whoami-v2", headers={"Authorization": f"Bearer {hf}"}, timeout=T)
    assert who.status_code == 200
    sim.control.api_fault("hf", 429, count=1)
    r = requests.get(sim.base_url + "/api/whoami-v2", headers={"Authorization": f"Bearer {hf}"}, timeout=T)
    assert r.status_code == 429


def test_invalid_vast_key_after_rotation(sim):
    sim.control.set_valid_tokens(vast=["the-new-key"])
    url = f"{sim.vast_api_url}/instances"
    assert requests.get(url, headers=sim.vast_headers(), timeout=T).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer the-new-key"}, timeout=T).status_code == 200


def test_control_api_requires_its_token(sim):
    r = requests.get(sim.info["control_url"] + "/health", timeout=T)
    assert r.status_code == 401
    r = requests.get(sim.info["control_url"] + "/health", headers={"X-Sim-Token": sim.api_key}, timeout=T)
    assert r.status_code == 401
    assert sim.control.health()["simulated"] is True


def test_error_and_fault_states_in_the_api(sim):
    c, h = sim.control, sim.vast_headers()
    ids = [c.create_instance(running=True)["id"] for _ in range(4)]
    c.error_instance(ids[0])
    c.exit_instance(ids[1])
    c.host_offline(ids[2])
    c.outbid(ids[3])
    by_id = {
        i["id"]: i
        for i in requests.get(f"{sim.vast_api_url}/instances", headers=h, timeout=T).json()["instances"]
    }
    assert (
        "Error" in by_id[ids[0]]["status_msg"] and "OCI runtime create failed" in by_id[ids[0]]["status_msg"]
    )
    assert by_id[ids[1]]["actual_status"] == "exited"
    assert by_id[ids[2]]["actual_status"] == "offline"
    out = by_id[ids[3]]
    assert out["cur_state"] == out["intended_status"] == out["next_state"] == "stopped"
    c.clear_faults()
    statuses = {
        i["actual_status"]
        for i in requests.get(f"{sim.vast_api_url}/instances", headers=h, timeout=T).json()["instances"]
    }
    assert statuses == {"running"}


def test_bad_bodies_are_200_with_an_empty_or_cut_short_body(sim):
    url, h = f"{sim.vast_api_url}/instances", sim.vast_headers()
    sim.control.bad_body("empty", count=1)
    sim.control.bad_body("malformed", count=1)
    empty = requests.get(url, headers=h, timeout=T)
    assert (empty.status_code, empty.text, empty.headers["Content-Type"]) == (200, "", "application/json")
    cut = requests.get(url, headers=h, timeout=T)
    assert cut.status_code == 200
    with pytest.raises(ValueError):
        cut.json()
    assert requests.get(url, headers=h, timeout=T).json()["instances"] == []
    faults = [e.get("fault") for e in sim.control.requests_seen(service="vast")]
    assert faults[:2] == ["empty", "malformed"]


def test_ledger_records_rents_and_destroys_with_who_did_them(sim):
    offer = requests.post(f"{sim.vast_api_url}/bundles/", json={}, headers=sim.vast_headers(),
                          timeout=T).json()["offers"][0]
    rented = requests.put(f"{sim.vast_api_url}/asks/{offer['id']}/", json={"label": "vk:p:0"},
                          headers=sim.vast_headers(), timeout=T).json()["new_contract"]
    other = sim.control.create_instance(running=True)["id"]
    sim.control.destroy_outside(rented)
    assert requests.get(f"{sim.vast_api_url}/instances/{rented}/", headers=sim.vast_headers(),
                        timeout=T).status_code == 404
    rows = [(e["action"], e["instance_id"], e["via"]) for e in sim.control.ledger()]
    assert rows == [("rent", rented, "api"), ("rent", other, "control"), ("destroy", rented, "control")]
    assert sim.control.ledger()[0]["label"] == "vk:p:0"
    assert [e["seq"] for e in sim.control.ledger(since=2)] == [3]
