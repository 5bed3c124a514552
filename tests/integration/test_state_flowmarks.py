"""``vastkeep.state.flowmarks`` on a real Redis: the poller's once-only markers and counters, discovery's
adopted/forgotten sets, and a shard's records read decoding only what changed."""

from __future__ import annotations

from vastkeep.state import InstanceRecord, Keys, PollMarks, RecordCache, as_text


def test_once_markers_hold_until_dropped(redis_client) -> None:
    marks = PollMarks(redis_client, Keys())
    assert marks.validate_once("7", 60_000) is True
    assert marks.validate_once("7", 60_000) is False  # queued already within the TTL
    marks.drop_validate("7")  # the send failed: the next poll queues it again
    assert marks.validate_once("7", 60_000) is True
    assert marks.wake_once(1_000, 60_000) and not marks.wake_once(1_000, 60_000)
    assert marks.wake_once(1_001, 60_000)  # another due second
    marks.drop_wake(1_000)
    assert marks.wake_once(1_000, 60_000)
    assert marks.refresh_queued_once(60_000) and not marks.refresh_queued_once(60_000)
    marks.drop_refresh_queued()
    assert marks.refresh_queued_once(60_000)
    assert 0 < redis_client.pttl(Keys().poll_l3("7")) <= 60_000


def test_batch_bookkeeping_in_one_call(redis_client) -> None:
    keys = Keys()
    marks = PollMarks(redis_client, keys)
    marks.record_batch(active=["1", "2"], idle=[], polled=["1", "2"], lateness={"late_le_0.1": 2}, stale=0)
    marks.record_batch(active=["3"], idle=["2"], polled=["2", "3"], lateness={"late_le_0.1": 1,
                                                                              "late_gt_30.0": 1}, stale=1)
    assert {as_text(m) for m in redis_client.smembers(keys.poll_active())} == {"1", "3"}
    stats = {as_text(k): int(v) for k, v in redis_client.hgetall(keys.poll_stats()).items()}
    assert stats == {"polls": 4, "late_le_0.1": 3, "late_gt_30.0": 1, "stale_finishes": 1}
    counts = {as_text(k): int(v) for k, v in redis_client.hgetall(keys.poll_counts()).items()}
    assert counts == {"1": 1, "2": 2, "3": 1}


def test_adopt_and_forget_flip_the_sets(redis_client) -> None:
    keys = Keys()
    marks = PollMarks(redis_client, keys)
    marks.forget("9")
    assert redis_client.sismember(keys.forgotten(), "9") and not redis_client.sismember(keys.adopted(), "9")
    marks.adopt("9")
    assert redis_client.sismember(keys.adopted(), "9") and not redis_client.sismember(keys.forgotten(), "9")


def test_record_cache_decodes_only_what_changed(redis_client, store) -> None:
    keys = Keys()
    store.put_instance(InstanceRecord(instance_id="1", status="ready", connection_url="http://a:1"))
    store.put_instance(InstanceRecord(instance_id="2", status="loading"))
    cache = RecordCache(redis_client, keys)
    first = cache.read(["1", "2", "3"])
    assert sorted(first) == ["1", "2"] and first["1"].connection_url == "http://a:1"
    again = cache.read(["1", "2"])
    assert again["1"] is first["1"] and again["2"] is first["2"]  # unchanged text: not decoded again
    store.update_instance("2", {"status": "ready"})
    redis_client.set(keys.instance("1"), "not json")  # unreadable: left out, never raised
    third = cache.read(["1", "2"])
    assert list(third) == ["2"] and third["2"] is not first["2"] and third["2"].status == "ready"
    store.delete_instance("2")
    assert cache.read(["2"]) == {}
