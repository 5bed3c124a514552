"""vastkeep.pool.* by name through the embedded real Celery worker and real Redis (``app.send_task``)."""

from __future__ import annotations

import json

from tests.fixtures.helpers import wait_until
from vastkeep.state.store import InstanceRecord


def test_lease_renew_release_by_name(vk_celery_worker, vk_celery_app, store) -> None:
    send = vk_celery_app.send_task
    busy = send("vastkeep.pool.lease", kwargs={"duration_s": 60, "client": "svc"}).get(timeout=15)
    assert busy["ok"] is False and busy["error"] == "LeaseBusy" and busy["retryAfterS"] >= 1
    store.put_instance(InstanceRecord("501", status="ready", label="vastkeep:default:0",
                                      connection_url="http://127.0.0.9:8188"))
    got = send("vastkeep.pool.lease", kwargs={"duration_s": 60, "client": "svc"}).get(timeout=15)
    json.dumps(got)
    assert got["ok"] is True and got["instanceId"] == "501" and got["fence"] >= 1
    assert got["connectionUrl"] == "http://127.0.0.9:8188" and got["leasedUntil"]
    token = got["endpointToken"]  # the proxy's /c/{endpointToken}/, keyed to this grant
    assert token.startswith("ept_") and got["endpointUrl"].endswith(f"/c/{token}/")
    assert store.redis.exists(f"vastkeep:endpoint-grant:default:501:{got['fence']}") == 1
    hidden = repr({"lease_id": "lse_***"})  # how callers send the id (docs/tasks.md)
    renewed = send("vastkeep.pool.renew_lease", kwargs={"lease_id": got["leaseId"], "duration_s": 120},
                   kwargsrepr=hidden)
    assert renewed.get(timeout=15)["ok"] is True and "rotated" not in renewed.get()
    gone = send("vastkeep.pool.release_lease", kwargs={"lease_id": got["leaseId"]},
                kwargsrepr=hidden).get(timeout=15)
    assert gone == {"ok": True, "instanceId": "501", "released": True, "fence": got["fence"]}
    # the token died with the lease (the deployment's token key stays)
    left = set(store.redis.keys("vastkeep:endpoint*")) - {"vastkeep:endpoint-secret"}
    assert left == set()
    again = send("vastkeep.pool.release_lease", kwargs={"lease_id": got["leaseId"]},
                 kwargsrepr=hidden).get(timeout=15)
    assert again["ok"] is False and again["error"] == "NotFound"
    bad = send("vastkeep.pool.lease", kwargs={"duration_s": 0, "client": "svc"}).get(timeout=15)
    assert bad["ok"] is False and bad["error"] == "InvalidInput"


def test_a_repeated_lease_task_answers_once(vk_celery_worker, vk_celery_app, store, redis_client) -> None:
    """Two runs of one logical call (a retry keeps its task id, the default request id; a caller may pass
    its own ``request_id``) are answered once: the second run returns the first grant and leases nothing."""
    import uuid

    from vastkeep.state import Keys

    send = vk_celery_app.send_task
    for i in range(2):
        store.put_instance(InstanceRecord(str(601 + i), status="ready", label=f"vastkeep:default:{i}",
                                          connection_url=f"http://127.0.0.9:{8188 + i}"))
    call = {"duration_s": 60, "client": "svc", "request_id": str(uuid.uuid4())}
    first = send("vastkeep.pool.lease", kwargs=call).get(timeout=15)
    second = send("vastkeep.pool.lease", kwargs=call).get(timeout=15)
    assert first["ok"] is True and second == first  # the same lease id, instance and fence
    assert int(redis_client.get(Keys().pool_lease_fence("default"))) == first["fence"]  # one grant
    other = send("vastkeep.pool.lease", kwargs={"duration_s": 60, "client": "svc"}).get(timeout=15)
    assert other["ok"] is True and other["instanceId"] != first["instanceId"]  # the second one is free
    release = {"lease_id": first["leaseId"], "request_id": str(uuid.uuid4())}
    hidden = repr({"lease_id": "lse_***"})
    gone = [send("vastkeep.pool.release_lease", kwargs=release, kwargsrepr=hidden).get(timeout=15)
            for _ in range(2)]
    assert gone[0] == gone[1] == {"ok": True, "instanceId": first["instanceId"], "released": True,
                                  "fence": first["fence"]}  # the repeat is answered as it happened


def test_reconcile_without_a_key_is_skipped(vk_celery_worker, vk_celery_app) -> None:
    out = vk_celery_app.send_task("vastkeep.pool.reconcile").get(timeout=15)
    assert out == {"skipped": "no Vast.ai key configured"}


def test_lease_ids_never_show_in_flower_events(vk_celery_worker, vk_celery_app, store) -> None:
    """What Flower shows (task-sent / task-received ``args``/``kwargs``, task-succeeded ``result``, captured
    with a real event receiver from the real worker) never holds a usable lease id: grant results are
    redacted, callers send the id with ``kwargsrepr`` redacted, and an id a careless caller sent in the clear
    is rotated by that renewal (the exposed one is dead, the new one only in the result backend)."""
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    store.put_instance(InstanceRecord("502", status="ready", label="vastkeep:default:0",
                                      connection_url="http://127.0.0.9:8188"))
    events: list[dict] = []
    stop = threading.Event()
    listening = threading.Event()

    def listen() -> None:
        with vk_celery_app.connection_for_read() as conn:
            recv = vk_celery_app.events.Receiver(conn, handlers={"*": events.append})
            listening.set()
            while not stop.is_set():
                try:
                    recv.capture(limit=None, timeout=0.5, wakeup=False)
                except Exception:  # noqa: BLE001 - socket timeout of an idle capture
                    continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert listening.wait(10)
    time.sleep(0.5)  # the fanout binding is declared by the first capture
    send = vk_celery_app.send_task
    ids: list[str] = []
    try:
        got = send("vastkeep.pool.lease", kwargs={"duration_s": 60, "client": "svc"})
        ids.append(got.id)
        granted = got.get(timeout=15)
        lid = granted["leaseId"]
        assert granted["ok"] is True and lid.startswith("lse_")
        endpoint_token = granted["endpointToken"]

        def redacted(lease_id: str, **more: object) -> dict:
            return {"kwargs": {"lease_id": lease_id, **more},
                    "kwargsrepr": repr({"lease_id": "lse_***", **more})}

        quiet = send("vastkeep.pool.renew_lease", **redacted(lid, duration_s=120))
        ids.append(quiet.id)
        renewed = quiet.get(timeout=15)
        assert renewed["ok"] is True and "rotated" not in renewed and "leaseId" not in renewed
        careless = send("vastkeep.pool.renew_lease", kwargs={"lease_id": lid, "duration_s": 120})
        ids.append(careless.id)
        rotated = careless.get(timeout=15)
        new_id = rotated["leaseId"]
        assert rotated["ok"] is True and rotated["rotated"] is True and new_id != lid
        dead = send("vastkeep.pool.renew_lease", **redacted(lid, duration_s=60))
        ids.append(dead.id)
        assert dead.get(timeout=15)["error"] == "NotFound"  # the exposed id no longer works
        gone = send("vastkeep.pool.release_lease", **redacted(new_id))
        ids.append(gone.id)
        assert gone.get(timeout=15)["ok"] is True
        # the assertions below say what was missing, so this wait records instead of failing
        wait_until(lambda: set(ids) <= {e.get("uuid") for e in list(events)
                                        if e.get("type") == "task-succeeded"}, timeout_s=15, interval_s=0.05)
    finally:
        stop.set()
        listener.join(5)
    mine = [e for e in events if e.get("uuid") in ids]
    kinds = {(e["uuid"], e["type"]) for e in mine}
    for tid in ids:
        assert {(tid, "task-received"), (tid, "task-succeeded")} <= kinds, (tid, kinds)
    succeeded = [e for e in mine if e["type"] == "task-succeeded" and e["uuid"] == ids[0]]
    assert "lse_***" in succeeded[0]["result"] and "502" in succeeded[0]["result"]
    blob = json.dumps(mine)
    assert new_id not in blob  # the rotated id: only in the result backend
    assert endpoint_token not in blob and "ept_***" in succeeded[0]["result"]
    shown = json.dumps([e for e in mine if e["uuid"] != careless.id])
    assert lid not in shown  # only the careless caller's own message showed it, and that made it worthless


def test_a_wake_up_due_later_is_deferred_not_slept(vk_celery_worker, vk_celery_app) -> None:
    """The polling flow wakes the reconciler with ``wake_at``: due later → re-queued with that countdown
    (no worker slot held meanwhile); due now → a round at once."""
    import time  # noqa: PLC0415

    send = vk_celery_app.send_task
    later = send("vastkeep.pool.reconcile", kwargs={"wake_at": time.time() + 2.0}).get(timeout=15)
    assert 0.5 < later["deferred"] <= 2.0
    now = send("vastkeep.pool.reconcile", kwargs={"wake_at": time.time() - 1}).get(timeout=15)
    assert now == {"skipped": "no Vast.ai key configured"}
