"""``VastClient.request_logs``: the provider's own log API (Layer 1's SSH-free source) against a real local
HTTP server playing Vast.ai and its storage URL: PUT request_logs → result_url → polled until 200, and the
API key never goes to the storage URL."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vastkeep.core.clock import FakeClock
from vastkeep.core.errors import NetworkError
from vastkeep.providers.vast import VastClient

KEY = "vk-test-request-logs-key"


@pytest.fixture
def server():
    seen: list[tuple[str, str, str | None, bytes]] = []
    state = {"not_ready": 2, "never": False}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(("PUT", self.path, self.headers.get("Authorization"), body))
            port = self.server.server_address[1]
            self._send(200, json.dumps({"success": True, "result_url": f"http://127.0.0.1:{port}/logs/5.txt"})
                       .encode(), "application/json")

        def do_GET(self) -> None:
            seen.append(("GET", self.path, self.headers.get("Authorization"), b""))
            if state["never"] or state["not_ready"] > 0:
                state["not_ready"] -= 1
                self._send(404, b"<Error>NoSuchKey</Error>", "application/xml")
                return
            self._send(200, b"line 1\nline 2\n", "text/plain")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd, seen, state
    httpd.shutdown()


def test_request_logs_polls_the_result_url_without_the_key(server) -> None:
    httpd, seen, _state = server
    clock = FakeClock()
    client = VastClient(KEY, f"http://127.0.0.1:{httpd.server_address[1]}/api/v0", clock=clock)
    assert client.request_logs(5, tail=200) == "line 1\nline 2\n"
    put = seen[0]
    assert put[:3] == ("PUT", "/api/v0/instances/request_logs/5/", f"Bearer {KEY}")
    assert json.loads(put[3]) == {"tail": "200"}
    gets = [s for s in seen if s[0] == "GET"]
    assert len(gets) == 3 and all(auth is None for _m, _p, auth, _b in gets)  # the key stays with Vast.ai
    assert len(clock.sleeps) == 2 and all(0 <= s <= 1.0 for s in clock.sleeps)  # jittered waits


def test_request_logs_gives_up_at_its_deadline(server) -> None:
    httpd, _seen, state = server
    state["never"] = True
    clock = FakeClock()
    client = VastClient(KEY, f"http://127.0.0.1:{httpd.server_address[1]}/api/v0", clock=clock)
    with pytest.raises(NetworkError) as err:
        client.request_logs(5, wait_s=10.0)
    assert err.value.instance_id == 5 and err.value.status == 404
    assert sum(clock.sleeps) <= 10.0
