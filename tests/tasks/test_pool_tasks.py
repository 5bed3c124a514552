"""vastkeep.pool.* by name through the embedded real Celery worker and real Redis (``app.send_task``)."""

from __future__ import annotations

import json

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
    renewed = send("vastkeep.pool.renew_lease", kwargs={"lease_id": got["leaseId"], "duration_s": 120})
    assert renewed.get(timeout=15)["ok"] is True
    gone = send("vastkeep.pool.release_lease", kwargs={"lease_id": got["leaseId"]}).get(timeout=15)
    assert gone == {"ok": True, "instanceId": "501", "released": True, "fence": got["fence"]}
    again = send("vastkeep.pool.release_lease", kwargs={"lease_id": got["leaseId"]}).get(timeout=15)
    assert again["ok"] is False and again["error"] == "NotFound"
    bad = send("vastkeep.pool.lease", kwargs={"duration_s": 0, "client": "svc"}).get(timeout=15)
    assert bad["ok"] is False and bad["error"] == "InvalidInput"


def test_reconcile_without_a_key_is_skipped(vk_celery_worker, vk_celery_app) -> None:
    out = vk_celery_app.send_task("vastkeep.pool.reconcile").get(timeout=15)
    assert out == {"skipped": "no Vast.ai key configured"}
