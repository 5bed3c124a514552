"""Layer 1's provider log-API fallback, against the simulated cloud (real SSH server, real HTTP API serving
``PUT /instances/request_logs/{id}/`` and its ``result_url``) and a real redis-server: SSH refused or
black-holed past the fallback time → the provider's lines appear in their own stream marked
``provider-api``; SSH back → streaming over SSH resumes and its stream equals the remote file byte for byte.
And the ``result_url`` SSRF guard: a private/metadata address (in the URL or behind a redirect) is refused,
logged, never fetched (the loopback-only net under every test would fail the test if it were)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.fixtures.collector_rig import LOG, Rig
from tests.fixtures.helpers import wait_for
from tests.fixtures.state import State
from vastkeep.providers.vast import VastClient
from vastkeep.ssh.provider_log import PROVIDER_FILE, ProviderLog
from vastkeep.state import new_owner


def _fetcher(sim):
    vast = VastClient(sim.api_key, sim.vast_api_url, timeout_s=(2.0, 5.0))

    def fetch(iid: str, tail: int, guard) -> str:
        return vast.request_logs(int(iid), tail, wait_s=5.0, url_guard=guard)

    return fetch


def _kinds(rig: Rig) -> list[str]:
    return [e.kind for e in rig.events.read(count=1000)]


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
def test_ssh_down_past_the_fallback_time_reads_the_provider_log_then_ssh_resumes(fault, sim, redis_server):
    r = Rig(sim, redis_server, fallback_after_s=1.5, provider_interval_s=0.5, ready_timeout_s=1.0,
            keepalive_interval_s=0.3, keepalive_max_miss=2, health_timeout_s=1.0)
    iid = int(r.iid)
    try:
        sim.control.append_log(iid, "step 1", "step 2")
        provider = ProviderLog(r.iid, r.logs, _fetcher(sim), allow_loopback=True, events=r.events)
        r.start(provider_log=provider)
        r.wait_stored(len(b"step 1\nstep 2\n"))
        getattr(sim.control, fault)(iid, "22/tcp")
        getattr(sim.control, fault)(iid, "ssh_proxy")
        sim.control.kill_ssh_sessions(iid)
        down = time.monotonic()
        sim.control.append_log(iid, "step 3 (while SSH is down)", "step 4")
        wait_for(lambda: len(r.logs.read(r.iid, PROVIDER_FILE)) >= 4, 30, "no provider lines")
        assert time.monotonic() - down >= 1.5  # not before the fallback time
        lines = r.logs.read(r.iid, PROVIDER_FILE)
        assert [ln.to_dict()["text"] for ln in lines] == ["step 1", "step 2", "step 3 (while SSH is down)",
                                                          "step 4"]
        assert {ln.to_dict()["source"] for ln in lines} == {"provider-api"}
        assert {ln.to_dict()["source"] for ln in r.logs.read(r.iid, LOG)} == {"ssh"}
        polled = r.redis.hget(r.keys.collector(r.iid), "provider_polled_at")
        wait_for(lambda: r.redis.hget(r.keys.collector(r.iid), "provider_polled_at") != polled, 15,
              "no second provider poll")
        sim.control.append_log(iid, "step 5")
        wait_for(lambda: len(r.logs.read(r.iid, PROVIDER_FILE)) >= 5, 15, "step 5 not read")
        texts = [ln.to_dict()["text"] for ln in r.logs.read(r.iid, PROVIDER_FILE)]
        assert texts == ["step 1", "step 2", "step 3 (while SSH is down)", "step 4", "step 5"]  # no doubles
        offsets = [ln.offset for ln in r.logs.read(r.iid, PROVIDER_FILE)]
        assert offsets == sorted(set(offsets))
        assert "ssh-fallback-started" in _kinds(r)
        sim.control.open_path(iid)
        sim.control.append_log(iid, "step 6 (SSH is back)")
        r.wait_stored(r.log_path.stat().st_size, timeout_s=40)
        assert r.stored() == r.log_path.read_bytes()  # SSH stream: nothing lost, nothing twice
        wait_for(lambda: "ssh-fallback-ended" in _kinds(r), 10, "no ssh-fallback-ended")
        assert r.redis.hget(r.keys.collector(r.iid), "fallback") == ""
    finally:
        r.stop()


class _Stub:
    """A local HTTP server playing Vast.ai whose request_logs hands out ``result_url`` (or a redirect)."""

    def __init__(self, result_url: str, redirect_to: str | None = None) -> None:
        self.seen: list[tuple[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.seen.append(("PUT", self.path))
                url = result_url.replace("PORT", str(self.server.server_address[1]))
                self._send(200, json.dumps({"success": True, "result_url": url}).encode(),
                           {"Content-Type": "application/json"})

            def do_GET(self) -> None:
                stub.seen.append(("GET", self.path))
                if redirect_to:
                    self._send(302, b"", {"Location": redirect_to})
                else:
                    self._send(200, b"fetched line\n", {"Content-Type": "text/plain"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v0"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(("result_url", "redirect_to", "allow_loopback", "fetched"), [
    ("http://10.1.2.3/logs/x.txt", None, True, False),  # private, even in simulation
    ("http://169.254.169.254/latest/meta-data", None, True, False),  # the metadata service
    ("http://[::ffff:192.168.1.5]/x", None, True, False),  # IPv4-mapped private
    ("http://127.0.0.1:PORT/logs/x.txt", None, False, False),  # loopback outside simulation
    ("http://127.0.0.1:PORT/logs/x.txt", "http://10.0.0.7/steal", True, False),  # a redirect to private
    ("http://127.0.0.1:PORT/logs/x.txt", None, True, True),  # the simulated cloud's loopback: fetched
])
def test_result_url_ssrf_guard(result_url, redirect_to, allow_loopback, fetched, redis_client):
    stub = _Stub(result_url, redirect_to)
    state = State(redis_client)
    events, logs = state.events, state.logs
    lease = state.leases.acquire("ssh-collector:5", new_owner("test"), 60_000)
    vast = VastClient("k", stub.url, timeout_s=(2.0, 5.0))
    provider = ProviderLog("5", logs, lambda iid, tail, guard: vast.request_logs(int(iid), tail, wait_s=3.0,
                                                                                 url_guard=guard),
                           allow_loopback=allow_loopback, events=events)
    try:
        stored = provider.poll(lease.fence)  # never raises
    finally:
        stub.close()
    assert stored == (1 if fetched else 0)
    kinds = [e.kind for e in events.read(count=100)]
    if fetched:
        assert [ln.data for ln in logs.read("5", PROVIDER_FILE)] == [b"fetched line\n"]
        assert "ssh-provider-log-refused" not in kinds
    else:
        assert "ssh-provider-log-refused" in kinds
        assert logs.read("5", PROVIDER_FILE) == []
        if redirect_to is None:
            assert ("GET", "/logs/x.txt") not in stub.seen  # refused before any fetch
