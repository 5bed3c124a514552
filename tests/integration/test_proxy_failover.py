"""Failover end to end: the real proxy process, the admin API, the simulated cloud's ComfyUI, a real Redis and
the real keepalive. A client loop submits prompts through its lease's endpoint and follows them on the
websocket while the simulator crashes, hangs or takes offline the instance behind the lease, each fault struck
between ``execution_start`` and ``execution_success`` (the simulator's phase log shows where).

With consent (``Idempotency-Key``): 0 failed prompts, every image fetched, the same URL and token, the socket
never closed. Without: exactly one clear error per failover (naming it and the new instance), and the next
prompt works. Each run prints fault → prompt running again beside detection + switch, measured in one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import requests

from tests.fixtures.comfy import Client, empty_image_graph, png_size
from tests.fixtures.event_kinds import documented_fields
from tests.fixtures.failover import FAULTS, Keepalive, client_loop
from tests.fixtures.helpers import wait_for
from vastkeep.sim.comfy.png import gradient
from vastkeep.state import EventLog, Keys


def events_of(redis_client, kind: str) -> list:
    return [e for e in EventLog(redis_client, Keys()).read(count=10_000) if e.kind == kind]


@pytest.mark.parametrize("consent", [True, False], ids=["consent", "no-consent"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_mid_prompt_moves_the_lease_and_the_prompt_finishes(proxy_rig, redis_client, fault, consent):
    rig, c = proxy_rig, proxy_rig.sim.control
    first = rig.ready_instance(prompt_s=1.5)
    spare = rig.ready_instance(prompt_s=1.5)
    lease = rig.lease()
    assert lease["instanceId"] == str(first["id"])
    with Keepalive(redis_client, rig.store, EventLog(redis_client, Keys())):
        res = asyncio.run(client_loop(lease["endpointUrl"], prompts=3, strike_on=1,
                                      strike=lambda: FAULTS[fault](c, int(lease["instanceId"])),
                                      consent=consent))
    phases = [p["phase"] for p in c.comfy_phases(int(first["id"]))]
    assert "execution_start" in phases  # the fault came after the second prompt started on the first instance
    assert len(res.status_frames) == 1, res.status_frames
    frame = res.status_frames[0]
    assert (frame["from_instance"], frame["to_instance"]) == (str(first["id"]), str(spare["id"]))
    started, done = events_of(redis_client, "failover-started"), events_of(redis_client, "failover-done")
    assert len(started) == 1 and len(done) == 1 and done[0].fields["outcome"] == "moved"
    if consent:
        assert res.failed == 0, res.errors
        assert res.ok == 3 and res.images == 3
        assert len(events_of(redis_client, "prompt-resubmitted")) == 1
        assert res.struck_at is not None and res.running_again_s is not None
        detect_s = started[0].ts - res.struck_at
        print(f"\n[failover {fault}] fault -> prompt running again {res.running_again_s:.3f} s; "
              f"detection {detect_s:.3f} s + switch {done[0].fields['switch_s']:.3f} s "
              f"= {detect_s + done[0].fields['switch_s']:.3f} s ({done[0].fields['reason']})")
    else:
        assert res.failed == 1 and res.ok == 2, res.errors
        assert "failover" in res.errors[0] and f"instance {spare['id']}" in res.errors[0]
        assert not events_of(redis_client, "prompt-resubmitted")
    # the same URL and token still work, now on the spare; the lease id still renews it
    r = requests.get(lease["endpointUrl"] + "system_stats", timeout=10)
    assert r.status_code == 200
    renewed = requests.post(f"{rig.admin_url}/api/proxy/admin/warm-pool/leases/{lease['leaseId']}/renew",
                            json={"durationS": 600}, headers=rig.headers, timeout=10)
    assert renewed.status_code == 200 and renewed.json()["instanceId"] == str(spare["id"])
    metrics = requests.get(f"{rig.url}/metrics", timeout=5).text
    assert 'vastkeep_proxy_failovers_total{reason=' in metrics and 'outcome="moved"} 1' in metrics
    for ev in [*started, *done, *events_of(redis_client, "prompt-resubmitted")]:
        assert set(ev.fields) == documented_fields(ev.kind), ev.kind  # as EVENT_KINDS documents them
        # secrets never reach the event stream
        assert lease["endpointToken"] not in str(ev.fields) and lease["leaseId"] not in str(ev.fields)
    assert lease["endpointToken"] not in rig.log_text() and lease["leaseId"] not in rig.log_text()


def test_without_a_websocket_the_one_error_answers_the_next_request(proxy_rig, redis_client):
    """A client polling ``/history`` (no websocket through the proxy) gets the failover's error once, as a
    503 naming the new instance; the request after it works."""
    rig, c = proxy_rig, proxy_rig.sim.control
    first = rig.ready_instance(prompt_s=2.0)
    spare = rig.ready_instance(prompt_s=2.0)
    lease = rig.lease()
    base = lease["endpointUrl"]
    graph = empty_image_graph(8, 8, 1, "poll")
    pid = requests.post(base + "prompt", json={"prompt": graph}, timeout=10).json()["prompt_id"]
    wait_for(lambda: any(p["phase"] == "execution_start" for p in c.comfy_phases(int(first["id"]), pid)), 10,
             "the prompt running")
    struck = time.monotonic()
    c.crash_comfy(int(first["id"]))
    answers = []
    while time.monotonic() - struck < 20 and not any(a[0] == 503 for a in answers):
        r = requests.get(base + f"history/{pid}", timeout=10)
        answers.append((r.status_code, r.json()))
        time.sleep(0.1)
    errors = [a for a in answers if a[0] == 503]
    assert len(errors) == 1, answers
    assert errors[0][1]["error"] == "failover" and errors[0][1]["toInstance"] == str(spare["id"])
    assert pid in errors[0][1]["lostPrompts"]
    assert requests.get(base + f"history/{pid}", timeout=10).status_code == 200
    assert requests.get(base + "system_stats", timeout=10).status_code == 200


def test_the_leases_setting_replays_uploads_and_deletes_and_interrupts_follow(proxy_rig, redis_client):
    """A lease granted with ``resubmitPrompts``: no header needed. The prompt reads an image uploaded through
    the endpoint, which is replayed to the new instance; a queued prompt the client deleted is not sent again;
    ``/interrupt`` afterwards reaches the prompt where it now runs."""
    rig, c = proxy_rig, proxy_rig.sim.control
    first = rig.ready_instance(prompt_s=1.5)
    spare = rig.ready_instance(prompt_s=1.5)
    r = requests.post(f"{rig.admin_url}/api/proxy/admin/warm-pool/leases", headers=rig.headers, timeout=10,
                      json={"durationS": 600, "client": "svc", "resubmitPrompts": True})
    assert r.status_code == 201 and r.json()["resubmitPrompts"] is True
    base = r.json()["endpointUrl"]
    up = requests.post(base + "upload/image", files={"image": ("in.png", gradient(16, 8, 3), "image/png")},
                       timeout=10)
    assert up.status_code == 200 and up.json()["name"] == "in.png"
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
             "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
             "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}}}

    async def go():
        async with Client(base.rstrip("/"), client_id="upl") as cl:
            pid = await cl.queue(graph)
            deleted = await cl.queue(empty_image_graph(prefix="del"))
            assert (await cl.post("/queue", {"delete": [deleted]}))[0] == 200
            await cl.wait_for(lambda f: f.type == "executing" and f.data.get("prompt_id") == pid
                              and f.data.get("node") is not None)
            await asyncio.to_thread(c.crash_comfy, int(first["id"]))
            frame = await cl.wait_for(lambda f: f.type == "vastkeep_failover", 20)
            await cl.finished(pid, 20)
            history = await cl.get(f"/history/{pid}")
            img = history[pid]["outputs"]["3"]["images"][0]
            status, _, data = await cl.get_bytes("/view", **img)
            assert status == 200 and png_size(data) == (16, 8)
            again = await cl.queue(empty_image_graph(prefix="int"))
            await cl.wait_for(lambda f: f.type == "execution_start" and f.data.get("prompt_id") == again)
            await cl.post("/interrupt", {})
            end = await cl.wait_for(lambda f: f.data.get("prompt_id") == again if isinstance(f.data, dict)
                                    and f.type in ("execution_interrupted", "execution_success") else False)
            return frame.data, pid, deleted, end.type

    frame, pid, deleted, ended = asyncio.run(go())
    assert frame["to_instance"] == str(spare["id"]) and frame["resubmitted"] == [pid] and frame["lost"] == []
    assert ended == "execution_interrupted"
    on_spare = {p["prompt_id"] for p in c.comfy_phases(int(spare["id"]))}
    assert pid in on_spare and deleted not in on_spare


def test_a_large_prompt_passes_whole_and_a_repeated_idempotency_key_queues_nothing(proxy_rig):
    rig = proxy_rig
    inst = rig.ready_instance(prompt_s=0.1)
    base = rig.lease()["endpointUrl"]
    body = {"prompt": empty_image_graph(prefix="big"), "extra_data": {"note": "x" * 300_000}}
    first = requests.post(base + "prompt", json=body, headers={"Idempotency-Key": "k-1"}, timeout=10)
    again = requests.post(base + "prompt", json=body, headers={"Idempotency-Key": "k-1"}, timeout=10)
    assert first.status_code == 200 and again.json() == first.json()
    queued = [p for p in rig.sim.control.comfy_phases(int(inst["id"])) if p["phase"] == "queued"]
    assert len(queued) == 1


def test_a_lease_that_ends_while_its_instance_is_gone_is_failed_over_once(proxy_rig, redis_client):
    """No instance to move to, and the lease is released while its failover waits for one, a prompt still
    open on the dead instance: one ``failover-done`` (outcome ``lease-ended``), then nothing more. Before, the
    watch started it again every round while the prompt looked open (30-minute soak seed 280816024: 20,754
    failovers of leases already over, their events flooding the capped stream)."""
    rig, c = proxy_rig, proxy_rig.sim.control
    first = rig.ready_instance(prompt_s=30.0)
    lease = rig.lease()
    base = lease["endpointUrl"]
    pid = requests.post(base + "prompt", json={"prompt": empty_image_graph(8, 8, 1, "gone")},
                        headers={"Idempotency-Key": "k-gone"}, timeout=10).json()["prompt_id"]
    wait_for(lambda: any(p["phase"] == "execution_start" for p in c.comfy_phases(int(first["id"]), pid)), 10,
             "the prompt running")
    with Keepalive(redis_client, rig.store, EventLog(redis_client, Keys())):
        c.crash_comfy(int(first["id"]))
        wait_for(lambda: events_of(redis_client, "connection-lost"), 15, "the keepalive's verdict")
        with contextlib.suppress(requests.RequestException):  # waits for a spare: none comes
            requests.get(base + f"history/{pid}", timeout=2)
        assert not events_of(redis_client, "failover-done")  # still waiting for an instance
        r = requests.delete(f"{rig.admin_url}/api/proxy/admin/warm-pool/leases/{lease['leaseId']}",
                            headers=rig.headers, timeout=10)
        assert r.status_code == 200, r.text
        wait_for(lambda: events_of(redis_client, "failover-done"), 15, "the failover giving up")
        time.sleep(3.0)  # a dozen watch rounds
    started, done = events_of(redis_client, "failover-started"), events_of(redis_client, "failover-done")
    assert len(started) == 1 and len(done) == 1, (len(started), len(done))
    assert done[0].fields["outcome"] == "lease-ended" and done[0].fields["to_instance"] is None
    assert rig.log_text().count(f"failover of a lease on instance {first['id']}") == 1
    assert requests.get(base + "system_stats", timeout=10).status_code in (404, 410)


def test_a_spare_hung_as_the_lease_moves_onto_it_does_not_hold_the_next_failover(proxy_rig, redis_client):
    """The instance crashes mid-prompt and the only spare hangs at the same moment: the lease moves onto the
    hung spare, whose re-submission goes unanswered. It is given up after ``resubmit_timeout_s`` (10 s), the
    prompt stays open, and once the keepalive declares the spare lost the lease's next failover takes it to
    the instance that became ready meanwhile, where it finishes. Before, the re-submission waited for the
    upstream read timeout (120 s, three tries) and held the lease's next failover all that while (30-minute
    soak seed 314289232: a client's prompt failed on its 15 s read)."""
    rig, c = proxy_rig, proxy_rig.sim.control
    first = rig.ready_instance(prompt_s=30.0)
    spare = rig.ready_instance(prompt_s=0.3)
    lease = rig.lease()
    assert lease["instanceId"] == str(first["id"])
    base = lease["endpointUrl"]
    pid = requests.post(base + "prompt", json={"prompt": empty_image_graph(8, 8, 1, "hung-spare")},
                        headers={"Idempotency-Key": "k-hung-spare"}, timeout=10).json()["prompt_id"]
    wait_for(lambda: any(p["phase"] == "execution_start" for p in c.comfy_phases(int(first["id"]), pid)), 10,
             "the prompt running")
    c.hang_comfy(int(spare["id"]))
    c.crash_comfy(int(first["id"]))
    struck = time.monotonic()
    # the proxy's own detection (refused twice) moves the lease onto the spare, still a ready record
    def knock() -> bool:
        with contextlib.suppress(requests.RequestException):
            requests.get(base + f"history/{pid}", timeout=1)
        return bool(events_of(redis_client, "failover-started"))

    wait_for(knock, 10, "the first failover")
    third = rig.ready_instance(prompt_s=0.3)
    with Keepalive(redis_client, rig.store, EventLog(redis_client, Keys())):  # it declares the spare hung
        def finished() -> bool:
            with contextlib.suppress(requests.RequestException):
                r = requests.get(base + f"history/{pid}", timeout=30)
                return r.status_code == 200 and pid in r.json()
            return False

        wait_for(finished, 45, "the prompt finished after the second failover")
    took_s = time.monotonic() - struck
    done = events_of(redis_client, "failover-done")
    hops = [(d.fields["instance_id"], d.fields["to_instance"], d.fields["resubmitted"]) for d in done]
    assert hops == [(str(first["id"]), str(spare["id"]), 0), (str(spare["id"]), str(third["id"]), 1)], hops
    assert any(p["phase"] == "execution_start" for p in c.comfy_phases(int(third["id"]), pid))
    assert "unanswered by instance" in rig.log_text()
    print(f"\n[failover onto a hung spare] fault -> prompt finished on the third instance in {took_s:.1f} s")
