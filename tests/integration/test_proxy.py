"""The ComfyUI endpoint end to end: a real ``vastkeep proxy`` process in front of the simulated ComfyUI,
leases taken through the real admin API, one real Redis for both.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import aiohttp
import pytest
import requests

from tests.fixtures.comfy import Client, base_url, empty_image_graph, png_size
from tests.fixtures.helpers import free_port, wait_for
from tests.fixtures.proxy import ADMIN_KEY, start_proxy, stop_proxy
from tests.fixtures.state import State
from vastkeep.state import InstanceRecord


def run(coro):
    return asyncio.run(coro)


def test_a_prompt_from_post_to_its_image_through_the_lease_endpoint(proxy_rig):
    inst = proxy_rig.ready_instance(prompt_s=0.3)
    lease = proxy_rig.lease()
    token, url = lease["endpointToken"], lease["endpointUrl"]
    assert token.startswith("ept_") and token != lease["leaseId"] and lease["leaseId"] not in url
    assert url == f"{proxy_rig.url}/c/{token}/" and lease["instanceId"] == str(inst["id"])

    async def go():
        async with Client(url.rstrip("/"), client_id="e2e") as c:
            pid = await c.queue(empty_image_graph(64, 32, prefix="proxied"))
            done = await c.finished(pid)
            history = await c.get(f"/history/{pid}")
            img = history[pid]["outputs"]["2"]["images"][0]
            status, ctype, body = await c.get_bytes("/view", **img)
            return c.frames, done, img, status, ctype, body

    frames, done, img, status, ctype, body = run(go())
    kinds = [f.type for f in frames]
    assert kinds[0] == "status" and "execution_start" in kinds and "executed" in kinds
    assert kinds.index("execution_start") < kinds.index("executed") < kinds.index("execution_success")
    assert img["filename"].startswith("proxied_") and status == 200 and ctype == "image/png"
    assert png_size(body) == (64, 32)
    metrics = requests.get(f"{proxy_rig.url}/metrics", timeout=5).text
    assert re.search(r'vastkeep_proxy_requests_total\{route="c",status="200"\} [1-9]', metrics)
    assert re.search(r'vastkeep_proxy_websocket_messages_total\{direction="down"\} [1-9]', metrics)
    assert re.search(r'vastkeep_proxy_bytes_total\{direction="down"\} [1-9]', metrics)
    wait_for(lambda: "vastkeep_proxy_websockets_open 0" in requests.get(f"{proxy_rig.url}/metrics",
                                                                           timeout=5).text,
               5, "the relay to close after its client")


def test_comfyuis_page_and_its_relative_requests_work_under_the_prefix(proxy_rig):
    proxy_rig.ready_instance()
    url = proxy_rig.lease()["endpointUrl"]
    bare = requests.get(url.rstrip("/"), allow_redirects=False, timeout=5)
    assert bare.status_code == 301 and bare.headers["Location"] == url.removeprefix(proxy_rig.url)
    page = requests.get(url, timeout=5)
    assert page.status_code == 200 and "<title>ComfyUI</title>" in page.text
    refs = re.findall(r'(?:src|href)="(\./[^"]+)"', page.text)
    assert sorted(refs) == ["./assets/index.css", "./assets/index.js"]
    for ref in refs:  # resolved against the page's URL, as a browser does
        assert requests.get(requests.compat.urljoin(url, ref), timeout=5).status_code == 200, ref
    js = requests.get(requests.compat.urljoin(url, "./assets/index.js"), timeout=5).text
    api = re.search(r"fetch\('(\./[^']+)'\)", js).group(1)
    stats = requests.get(requests.compat.urljoin(url, api), timeout=5)
    assert stats.status_code == 200 and stats.json()["system"]["comfyui_version"]


def test_the_token_survives_renewal_and_dies_with_release(proxy_rig):
    proxy_rig.ready_instance()
    lease = proxy_rig.lease(duration_s=60)
    url, lid, admin = lease["endpointUrl"], lease["leaseId"], proxy_rig.admin_url
    assert requests.get(url + "system_stats", timeout=5).status_code == 200
    r = requests.post(f"{admin}/api/proxy/admin/warm-pool/leases/{lid}/renew", json={"durationS": 900},
                      headers=proxy_rig.headers, timeout=5)
    assert r.status_code == 200
    ttl_ms = proxy_rig.store.redis.pttl(f"vastkeep:endpoint:{_digest(lease['endpointToken'])}")
    assert 800_000 < ttl_ms <= 900_000  # the token's key follows the renewed lease
    assert requests.get(url + "system_stats", timeout=5).status_code == 200
    assert requests.delete(f"{admin}/api/proxy/admin/warm-pool/leases/{lid}", headers=proxy_rig.headers,
                           timeout=5).status_code == 200
    # dropped with the lease (the deployment's token key stays)
    assert proxy_rig.store.redis.keys("vastkeep:endpoint*") == ["vastkeep:endpoint-secret"]
    # at once, not after the resolution cache's second: the release published the drop to the proxy
    wait_for(lambda: requests.get(url + "system_stats", timeout=5).status_code == 404, 0.5,
               "the released lease's endpoint to stop answering")
    ws_refused = run(_ws_status(url + "ws?clientId=x"))
    assert ws_refused == 404


def test_a_token_is_refused_once_its_lease_entry_no_longer_matches(proxy_rig):
    """The key may outlive its lease (a crash between release and drop): the lease entry decides."""
    proxy_rig.ready_instance()
    lease = proxy_rig.lease()
    url = lease["endpointUrl"]
    assert requests.get(url + "system_stats", timeout=5).status_code == 200
    r = proxy_rig.store.redis
    key = "vastkeep:pool:leases:default"
    entry = json.loads(r.hget(key, lease["instanceId"]))
    r.hset(key, lease["instanceId"], json.dumps({**entry, "fence": entry["fence"] + 1}))  # re-leased
    wait_for(lambda: requests.get(url + "system_stats", timeout=5).status_code == 404, 5, "refusal")
    r.hset(key, lease["instanceId"], json.dumps({**entry, "until": time.time() - 1}))  # expired
    assert requests.get(url + "system_stats", timeout=5).status_code == 404


def test_tokens_and_lease_ids_never_reach_the_proxy_log(proxy_rig):
    proxy_rig.ready_instance()
    lease = proxy_rig.lease()
    url, token = lease["endpointUrl"], lease["endpointToken"]
    for path in ("system_stats", "nope", "queue"):
        requests.get(url + path, timeout=5)
    requests.get(f"{proxy_rig.url}/c/ept_{'x' * 32}/system_stats", timeout=5)  # an unknown token
    run(_ws_status(url + "ws?clientId=logcheck"))
    time.sleep(0.3)  # the access log line is written after the answer
    text = proxy_rig.log_text()
    assert "/c/ept_***/system_stats" in text and "/c/ept_***/ws" in text  # the lines are there, redacted
    assert token not in text and token[4:20] not in text and lease["leaseId"] not in text
    assert "ept_xxxxxxxx" not in text
    assert proxy_rig.env["ADMIN_API_KEY"] not in text


def test_the_pool_way_in_needs_a_credential_and_takes_the_shortest_queue(proxy_rig, sim):
    a, b = proxy_rig.ready_instance(), proxy_rig.ready_instance()
    assert requests.get(f"{proxy_rig.url}/pool/system_stats", timeout=5).status_code == 401
    assert requests.get(f"{proxy_rig.url}/pool/system_stats", headers={"X-Admin-Key": "wrong"},
                        timeout=5).status_code == 401
    h = proxy_rig.headers

    def holders(names):
        """Instance id → which of ``names`` it holds as input files."""
        return {str(inst["id"]): [n for n in names if requests.get(
            base_url(inst) + "/view", params={"filename": n, "type": "input"}, timeout=5).status_code == 200]
            for inst in (a, b)}

    async def uploads(names, together):
        async with aiohttp.ClientSession() as s:
            async def up(name):
                form = aiohttp.FormData()
                form.add_field("image", b"x" * 5_000, filename=name, content_type="image/png")
                async with s.post(f"{proxy_rig.url}/pool/upload/image", data=form, headers=h) as r:
                    return r.status
            if together:
                return await asyncio.gather(*(up(n) for n in names))
            return [await up(n) for n in names]

    # both instances answer after 0.5 s: two uploads in flight at once go to two instances (shortest queue)
    for inst in (a, b):
        sim.control.slow_comfy(inst["id"], 0.5)
    assert run(uploads(["p0.png", "p1.png"], together=True)) == [200, 200]
    assert sorted(len(v) for v in holders(["p0.png", "p1.png"]).values()) == [1, 1]
    for inst in (a, b):
        sim.control.restore_comfy(inst["id"])
    # a leased instance leaves the pool way in: every later request goes to the other one
    lease = proxy_rig.lease()
    time.sleep(1.1)  # the pool view is cached for a second
    names = ["q0.png", "q1.png", "q2.png"]
    assert run(uploads(names, together=False)) == [200, 200, 200]
    held = holders(names)
    assert held[lease["instanceId"]] == [] and len([n for v in held.values() for n in v]) == 3
    token_ok = requests.get(f"{proxy_rig.url}/pool/system_stats",
                            headers={"X-Endpoint-Token": lease["endpointToken"]}, timeout=5)
    assert token_ok.status_code == 200


@pytest.fixture
def tight(redis_server, redis_client, sim, tmp_path):
    """A proxy with a 100 kB upload cap, 2 requests per client and a 1.5 s upstream timeout."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_server.url, "ADMIN_API_KEY": ADMIN_KEY, "VASTKEEP_SIMULATED": "1",
           "PROXY_PORT": str(port), "VASTKEEP_HOME": str(tmp_path / "h"), "PROXY_MAX_UPLOAD_BYTES": "100000",
           "PROXY_CLIENT_CONCURRENCY": "2", "PROXY_UPSTREAM_TIMEOUT_MS": "1500"}
    inst = sim.control.create_instance(running=True)
    store = State.on(redis_server.url).store
    store.put_instance(InstanceRecord(str(inst["id"]), status="ready", label="vastkeep:default:0",
                                      connection_url=base_url(inst),
                                      port_validation={"success": True,
                                                       "checked_at": "2026-01-01T00:00:00Z"}))
    proc = start_proxy(env, tmp_path / "p.log", port)
    try:
        yield f"http://127.0.0.1:{port}", inst, tmp_path / "h" / "proxy-spool"
    finally:
        stop_proxy(proc)


def test_uploads_over_the_cap_are_refused_and_spool_files_do_not_pile_up(tight):
    url, _, spool = tight
    h = {"X-Admin-Key": ADMIN_KEY}
    big = requests.post(f"{url}/pool/upload/image", files={"image": ("big.png", b"y" * 200_000)}, headers=h,
                        timeout=10)
    assert big.status_code == 413 and "PROXY_MAX_UPLOAD_BYTES" in big.json()["reason"]
    small = requests.post(f"{url}/pool/upload/image", files={"image": ("s.png", b"y" * 50_000)}, headers=h,
                          timeout=10)
    assert small.status_code == 200 and small.json()["name"] == "s.png"
    assert list(spool.iterdir()) == []


def test_a_client_gets_429_past_its_concurrency_and_a_silent_upstream_504(tight, sim):
    url, inst, _ = tight
    h = {"X-Admin-Key": ADMIN_KEY}
    sim.control.slow_comfy(inst["id"], 1.0)

    async def three():
        async with aiohttp.ClientSession() as s:
            async def one():
                async with s.get(f"{url}/pool/system_stats", headers=h) as r:
                    return r.status
            return sorted(await asyncio.gather(one(), one(), one()))

    assert run(three()) == [200, 200, 429]
    sim.control.restore_comfy(inst["id"])
    sim.control.hang_comfy(inst["id"])
    started = time.monotonic()
    r = requests.get(f"{url}/pool/system_stats", headers=h, timeout=10)
    took = time.monotonic() - started
    assert r.status_code == 504 and 1.4 < took < 5, (r.status_code, took)
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert 'vastkeep_proxy_upstream_errors_total{kind="timeout"} 1' in metrics
    assert 'vastkeep_proxy_rejected_total{reason="concurrency"} 1' in metrics


def test_the_ssrf_guard_refuses_an_instance_address_outside_the_simulated_net(proxy_rig):
    inst = proxy_rig.ready_instance()
    proxy_rig.store.update_instance(str(inst["id"]), {"connection_url": "http://169.254.169.254:80"})
    lease = proxy_rig.lease()
    assert requests.get(lease["endpointUrl"] + "latest/meta-data/", timeout=5).status_code == 404
    metrics = requests.get(f"{proxy_rig.url}/metrics", timeout=5).text
    assert 'vastkeep_proxy_upstream_errors_total{kind="refused-address"} 1' in metrics


async def _ws_status(url: str) -> int:
    async with aiohttp.ClientSession() as s:
        try:
            async with s.ws_connect(url) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def _digest(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()
