"""docs/proxy.md's failover example, run exactly as written (its code blocks taken from the page) against a
real proxy process, the admin API, the simulated cloud and Redis, with two ready instances (the lease's and a
spare), from a folder holding a ``.vastkeep/stack.json`` the way ``vastkeep up`` leaves it."""

from __future__ import annotations

from tests.fixtures.comfy import png_size
from tests.fixtures.proxy_docs import run_docs_example, write_stack_json
from vastkeep.state import EventLog


def test_the_failover_example_runs_as_written(proxy_rig, redis_client, tmp_path):
    rig = proxy_rig
    first, spare = rig.ready_instance(), rig.ready_instance()
    write_stack_json(rig, tmp_path)
    out = run_docs_example(rig, tmp_path)
    assert f"crashed instance {first['id']}" in out
    assert f"failover: {first['id']} -> {spare['id']}" in out and "re-submitted: True" in out
    assert "PNG: True" in out and "released: True" in out
    assert png_size((tmp_path / "doc-failover.png").read_bytes()) == (64, 64)
    kinds = [e.kind for e in EventLog(redis_client).read(count=10_000)]
    assert kinds.count("failover-done") == 1 and kinds.count("prompt-resubmitted") == 1
