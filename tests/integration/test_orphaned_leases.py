"""A single-flight job whose Redis went away as it ended: its next run takes its own grant back.

Found by the soak (seed 20261207, 2026-12-07): Redis was restarted while a provider snapshot refresh ran;
the refresh's ``release`` failed with it, and the grant (120 s TTL, kept by the AOF) made every refresh
after it skip with "another refresh is running": no listing for two minutes, so two instances whose host
went offline were not seen offline before the run ended. The refresh (and the supervision and port sweeps)
now own their lease per thread (:func:`~vastkeep.state.leases.thread_owner`), so the thread's next run
extends its orphaned grant and goes on; another thread still finds it busy. A real redis-server with its
AOF, stopped under the refresh and started again on the same files.
"""

from __future__ import annotations

import threading

import pytest
import redis

from tests.fixtures.redis_server import RedisServer, start_redis_server
from vastkeep.polling.schedule import PollSchedule
from vastkeep.polling.snapshot import SNAPSHOT_LEASE, ProviderSnapshot
from vastkeep.providers.base import Instance
from vastkeep.providers.stub import StubProvider
from vastkeep.state.connection import connect
from vastkeep.state.keys import Keys
from vastkeep.state.leases import LeaseManager, new_owner, thread_owner
from vastkeep.state.store import StateStore


class RedisGoesAway(StubProvider):
    """A cloud whose listing answers while the Redis under the refresh is stopped (once)."""

    def __init__(self, server: RedisServer) -> None:
        super().__init__()
        self.server = server
        self.stopped = False

    def instances(self) -> list[Instance]:
        if not self.stopped:
            self.stopped = True
            self.server.stop()  # SIGTERM: the AOF is written, the grant kept
        return super().instances()


def in_thread(fn):  # type: ignore[no-untyped-def]
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(30)
    return out[0]


def test_a_refresh_cut_off_by_a_redis_restart_is_taken_back_by_its_thread(tmp_path) -> None:
    server = start_redis_server(data_dir=str(tmp_path), aof=True)
    client = connect(server.url)
    keys = Keys()
    store, schedule = StateStore(client, keys), PollSchedule(client, keys)
    snapshot = ProviderSnapshot(client, keys)
    cloud = RedisGoesAway(server)
    try:
        with pytest.raises(redis.RedisError):  # the listing came back; Redis had gone, the release with it
            snapshot.refresh(cloud, store, schedule, force=True)
        server = start_redis_server(port=server.port, data_dir=str(tmp_path), aof=True)
        leases = LeaseManager(client, keys)
        # the grant outlived Redis, with most of its TTL left
        assert leases.current(SNAPSHOT_LEASE) is not None
        assert (leases.remaining_ms(SNAPSHOT_LEASE) or 0) > 60_000
        # another worker process (here: another thread) still finds a refresh running, as it should
        assert in_thread(lambda: snapshot.refresh(cloud, store, schedule, force=True).skipped) == \
            "another refresh is running"
        # the thread that lost it runs the next refresh (it skipped for the TTL's 120 s before)
        again = snapshot.refresh(cloud, store, schedule, force=True)
        assert again.refreshed and again.skipped is None
        assert leases.current(SNAPSHOT_LEASE) is None  # and released it
        assert snapshot.refresh(cloud, store, schedule, force=True).refreshed  # and again, as always
    finally:
        server.stop()


def test_a_threads_owner_is_its_own_and_still_a_secret() -> None:
    mine = thread_owner("job")
    assert thread_owner("job") == mine and mine.startswith("job:")
    theirs = in_thread(lambda: thread_owner("job"))
    assert theirs != mine
    assert len({in_thread(lambda: thread_owner("job")) for _ in range(20)}) == 20  # random per thread
    assert mine != new_owner("job")
