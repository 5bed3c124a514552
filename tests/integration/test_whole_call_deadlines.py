"""Whole-call deadlines, headers included, against real local servers that accept and then stall.

requests' timeouts bound each socket read: a server that accepts and never answers holds a call for
the whole read timeout, and one that sends its status line and then one header byte at a time holds
it forever. Every HTTP call of vastkeep (Vast.ai client, token checks) and every port probe must end
at its deadline instead, and hung token checks must not starve the checks of other services.
Deadlines are real time, so these tests use the system clock and assert generous bounds.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import random
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.helpers import wait_for
from tests.fixtures.state import State
from tests.fixtures.vast_stub import STUB_API_KEY, VastStub
from vastkeep.core.clock import SYSTEM_CLOCK, SystemClock
from vastkeep.core.errors import NetworkError, RentOutcomeUnknown
from vastkeep.core.settings import Secret
from vastkeep.ports.candidates import Candidate
from vastkeep.ports.probe import TIMEOUT, ProbeConfig, probe_candidate
from vastkeep.providers.deadline import DeadlineWatchdog
from vastkeep.providers.http import RetryPolicy, make_session, request_with_retry
from vastkeep.providers.vast import VastClient
from vastkeep.state.keys import Keys
from vastkeep.tokens.checks import CIVITAI, HUGGINGFACE, SERVICES, VASTAI, CheckSpec, check_specs, run_check
from vastkeep.tokens.manager import CHECK_POOL_SIZE, TokenManager

SLACK_S = 0.7  # scheduling, connection set-up, the watchdog waking up
HOLD_S = 6.0  # how long a stalling server stalls at most: unfixed code fails here instead of hanging
MODES = ["silent", "drip_head"]
OK_BODY = b'{"instances": []}'


class StallServer:
    """A real TCP server speaking just enough HTTP/1.1: ``silent`` (read the request, never answer),
    ``drip_head`` (a status line, then one header byte every 50 ms) or ``ok`` (keep-alive JSON)."""

    def __init__(self, mode: str, tls: ssl.SSLContext | None = None) -> None:
        self.mode = mode
        self.release = threading.Event()
        self.connections = 0
        self.requests: list[str] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with owner.lock:
                    owner.connections += 1
                conn: socket.socket = self.request
                conn.settimeout(HOLD_S)
                try:
                    if tls is not None:
                        conn = tls.wrap_socket(conn, server_side=True)
                    while owner._serve_one(conn):
                        pass
                except OSError:
                    pass  # the client gave up: that is the point

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        scheme = "https" if tls is not None or mode == "tls_stall" else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _serve_one(self, conn: socket.socket) -> bool:
        if self.mode == "tls_stall":  # a TLS record header promising 16 KiB, then one byte at a time
            conn.recv(65536)  # the ClientHello
            with self.lock:
                self.requests.append("TLS ClientHello")
            conn.sendall(b"\x16\x03\x03\x40\x00")
            stop = time.monotonic() + HOLD_S
            while time.monotonic() < stop and not self.release.wait(0.05):
                conn.sendall(b"\x00")
            return False
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head = data.split(b"\r\n", 1)[0].decode("latin-1")
        with self.lock:
            self.requests.append(head)
        if self.mode == "silent":
            self.release.wait(HOLD_S)
            return False
        if self.mode == "drip_head":
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            stop = time.monotonic() + HOLD_S
            while time.monotonic() < stop and not self.release.wait(0.05):
                conn.sendall(b"a")
            return False
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(OK_BODY)).encode() + b"\r\n\r\n" + OK_BODY)
        return True

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stall() -> Iterator[Any]:
    servers: list[StallServer] = []

    def start(mode: str, tls: ssl.SSLContext | None = None) -> StallServer:
        servers.append(StallServer(mode, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def tls_server_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1 that requests trusts for this test (REQUESTS_CA_BUNDLE)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_path))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


class NoSleepClock(SystemClock):
    """Real time (deadlines are real), retry pauses recorded instead of slept."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def _get(url: str, *, deadline_s: float, timeout_s: tuple[float, float] = (1.0, 5.0), attempts: int = 1,
         session: Any = None) -> Any:
    return request_with_retry(session or make_session("vk-test"), "GET", url, headers={},
                              timeout_s=timeout_s, retry=RetryPolicy(max_attempts=attempts),
                              clock=NoSleepClock(), rng=random.Random(0), deadline_s=deadline_s)


# ── the shared HTTP helper and the Vast.ai client ───────────────────────────
@pytest.mark.parametrize("mode", MODES)
def test_request_ends_at_its_deadline_while_headers_stall(stall, mode: str) -> None:
    """0.8 s in all, although the read timeout is 5 s and (drip) no single read ever waits 50 ms."""
    server = stall(mode)
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        _get(f"{server.url}/instances", deadline_s=0.8)
    elapsed = time.monotonic() - started
    assert 0.8 - 0.05 <= elapsed < 0.8 + SLACK_S, f"took {elapsed:.2f}s against a 0.8 s deadline"
    assert info.value.reason == "deadline exceeded" and info.value.maybe_sent is True


def test_https_request_ends_at_its_deadline_while_headers_stall(stall, tls_server_context) -> None:
    """The same over TLS (Vast.ai is HTTPS): the watchdog shuts the TLS connection's socket."""
    server = stall("drip_head", tls_server_context)
    assert _get(f"{stall('ok', tls_server_context).url}/a", deadline_s=5.0).json() == {"instances": []}
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        _get(f"{server.url}/instances", deadline_s=0.8)
    elapsed = time.monotonic() - started
    assert 0.8 - 0.05 <= elapsed < 0.8 + SLACK_S, f"took {elapsed:.2f}s against a 0.8 s deadline"
    assert info.value.reason == "deadline exceeded"


def test_https_request_ends_at_its_deadline_while_the_tls_handshake_stalls(stall) -> None:
    """TCP connects, then the server's TLS answer drips: the handshake ends by the deadline too (Python's
    ssl bounds a whole handshake by the socket timeout, which request_with_retry caps at the budget;
    the watchdog covers it as well)."""
    server = stall("tls_stall")
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        _get(f"{server.url}/instances", deadline_s=0.8)
    elapsed = time.monotonic() - started
    assert 0.8 - 0.05 <= elapsed < 0.8 + SLACK_S, f"took {elapsed:.2f}s against a 0.8 s deadline"
    assert info.value.reason == "deadline exceeded" and server.requests == ["TLS ClientHello"]


def test_a_stalled_attempt_is_retried_with_a_deadline_of_its_own(stall) -> None:
    server = stall("drip_head")
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        _get(f"{server.url}/instances", deadline_s=0.5, attempts=3)
    assert time.monotonic() - started < 3 * 0.5 + SLACK_S
    assert info.value.attempts == 3 and len(server.requests) == 3


@pytest.mark.parametrize("mode", MODES)
def test_vast_calls_end_at_their_deadline(stall, mode: str) -> None:
    """(1 s connect, 1 s read) → 2 s per attempt, whatever the server does with its headers (silence
    trips the 1 s read timeout first; a drip trips no read timeout, only the deadline)."""
    server = stall(mode)
    client = VastClient(STUB_API_KEY, server.url, timeout_s=(1.0, 1.0), clock=NoSleepClock(),
                        rng=random.Random(3), retry=RetryPolicy(max_attempts=1))
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        client.list_instances()
    assert time.monotonic() - started < 2.0 + SLACK_S
    assert info.value.reason == {"silent": "read timeout", "drip_head": "deadline exceeded"}[mode]
    assert STUB_API_KEY not in str(info.value)


def test_rent_whose_headers_stall_is_outcome_unknown_and_not_repeated(stall) -> None:
    server = stall("drip_head")
    clock = NoSleepClock()
    client = VastClient(STUB_API_KEY, server.url, timeout_s=(1.0, 1.0), clock=clock, rng=random.Random(3),
                        retry=RetryPolicy(max_attempts=4))
    started = time.monotonic()
    with pytest.raises(RentOutcomeUnknown) as info:
        client.rent(617, image="img", label="pool-stall")
    assert time.monotonic() - started < 2.0 + SLACK_S
    assert "deadline exceeded" in info.value.reason
    assert [r.split()[0] for r in server.requests] == ["PUT"] and clock.sleeps == []


def test_a_finished_call_leaves_its_pooled_connection_alone(stall) -> None:
    """The watchdog forgets a call when it ends: the keep-alive connection serves the next call."""
    server = stall("ok")
    session = make_session("vk-test")
    assert _get(f"{server.url}/a", deadline_s=0.3, session=session).json() == {"instances": []}
    time.sleep(0.6)  # well past the first call's deadline
    assert _get(f"{server.url}/b", deadline_s=5.0, session=session).json() == {"instances": []}
    assert server.connections == 1 and len(server.requests) == 2


def _deadline_threads() -> set[int | None]:
    return {t.ident for t in threading.enumerate() if t.name == "vastkeep-http-deadline"}


def _settled_deadline_threads(expected: set[int | None], timeout_s: float = 2.0) -> set[int | None]:
    """The watchdog threads alive once those not in ``expected`` had ``timeout_s`` to end."""
    deadline = time.monotonic() + timeout_s
    while not _deadline_threads() <= expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return _deadline_threads()


def test_deadlines_cost_one_thread_per_process(stall) -> None:
    """Sessions of one process share its watchdog (the worker's wiring passes one): one thread for all."""
    server = stall("silent")
    shared = DeadlineWatchdog(idle_s=30)
    with pytest.raises(NetworkError):
        _get(f"{server.url}/warm", deadline_s=0.2, session=make_session("vk-test", watchdog=shared))
    assert shared.thread is not None
    before = {t.ident for t in threading.enumerate() if "process_request" not in t.name}
    for _ in range(10):
        with pytest.raises(NetworkError):
            _get(f"{server.url}/x", deadline_s=0.1, session=make_session("vk-test", watchdog=shared))
    after = {t.ident for t in threading.enumerate() if "process_request" not in t.name}
    assert after <= before, "a call left a thread behind"
    assert shared.thread is not None and shared.thread.ident in _deadline_threads()


def test_a_session_of_its_own_leaves_no_watchdog_thread_behind(stall) -> None:
    """Without a shared watchdog each session gets its own, whose thread ends with the session's last call."""
    silent, ok = stall("silent"), stall("ok")
    before = _deadline_threads()
    for _ in range(5):
        with pytest.raises(NetworkError):
            _get(f"{silent.url}/x", deadline_s=0.1)
        assert _get(f"{ok.url}/y", deadline_s=5.0).json() == {"instances": []}
    assert _settled_deadline_threads(before) <= before, "a session's watchdog outlived its calls"


def test_deadlines_leave_no_descriptor_behind(stall) -> None:
    silent, ok = stall("silent"), stall("ok")
    session = make_session("vk-test")
    _get(f"{ok.url}/warm", deadline_s=2.0, session=session)

    def open_fds() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    before = open_fds()
    for _ in range(10):
        with pytest.raises(NetworkError):
            _get(f"{silent.url}/x", deadline_s=0.05, session=session)
        _get(f"{ok.url}/y", deadline_s=2.0, session=session)
    session.close()
    silent.release.set()  # the servers (in this process too) let go of their ends
    wait_for(lambda: open_fds() <= before, 5, "every descriptor of the calls closed", interval_s=0.02)


@pytest.mark.parametrize("mode", MODES)
def test_vastkeep_check_health_call_ends_at_its_deadline(stall, mode: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import vastkeep.cli.health as cli

    monkeypatch.setattr(cli, "HEALTH_DEADLINE_S", 0.8)
    server = stall(mode)
    started = time.monotonic()
    ok, text = cli.http_health(server.url)
    elapsed = time.monotonic() - started
    assert not ok and text == f"{server.url}/health unreachable (no answer within 0.8s)"
    assert elapsed < 0.8 + SLACK_S, elapsed
    healthy = stall("ok")
    assert cli.http_health(healthy.url) == (True, f"{healthy.url}/health ok")


# ── token checks ────────────────────────────────────────────────────────────
@pytest.mark.parametrize("mode", MODES)
def test_token_check_ends_at_its_deadline_while_headers_stall(stall, mode: str) -> None:
    server = stall(mode)
    spec = CheckSpec(CIVITAI, server.url, "/api/v1/me")
    started = time.monotonic()
    result = run_check(spec, Secret("tok-stall"), timeout_s=1.0, tested_at=lambda: "now", clock=SYSTEM_CLOCK)
    elapsed = time.monotonic() - started
    assert (result["status"], result["error"]) == ("unknown", "timed out after 1s")
    assert 1.0 - 0.05 <= elapsed < 1.0 + SLACK_S, elapsed


def test_hung_checks_do_not_turn_other_tokens_unknown(stall, vast_stub: VastStub, redis_client) -> None:
    """Eight Civitai checks hang on their headers (a full pool's worth); Vast.ai is still judged."""
    civitai = stall("drip_head")
    store = State(redis_client, keys=Keys("vkstall")).store
    specs = check_specs(vast_stub.url, vast_stub.url, civitai.url)

    def manager(civitai_token: str) -> TokenManager:
        return TokenManager(store=store, cache_ms=300_000, timeout_s=1.5, specs=specs,
                            configured={VASTAI: Secret(STUB_API_KEY), HUGGINGFACE: None,
                                        CIVITAI: Secret(civitai_token)})

    hung: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda i=i: hung.append(
        manager(f"civitai-{i}").validate_service(CIVITAI, use_cache=False))) for i in range(CHECK_POOL_SIZE)]
    for t in threads:
        t.start()
    wait_for(lambda: len(civitai.requests) >= CHECK_POOL_SIZE, 5, "every check hanging")
    assert len(civitai.requests) == CHECK_POOL_SIZE  # all eight are hanging now
    started = time.monotonic()
    vast = manager("civitai-x").validate_service(VASTAI, use_cache=False)
    assert vast["status"] == "valid", vast
    assert time.monotonic() - started < 1.0
    for t in threads:
        t.join(1.5 + SLACK_S + 1.0)
    assert len(hung) == CHECK_POOL_SIZE
    assert all((r["status"], r["error"]) == ("unknown", "timed out after 1.5s") for r in hung), hung


def test_hung_checks_free_their_threads_at_their_deadline(stall, redis_client) -> None:
    """Twenty rounds against a provider that drips headers: every check ends at its own deadline, so the
    pool keeps serving (before, each check held its thread until the provider let go)."""
    server = stall("drip_head")
    store = State(redis_client, keys=Keys("vkstall2")).store
    mgr = TokenManager(store=store, cache_ms=300_000, timeout_s=0.3,
                       configured={s: Secret(f"tok-{s}") for s in SERVICES},
                       specs=check_specs(server.url, server.url, server.url))
    for _ in range(5):
        started = time.monotonic()
        results = mgr.validate_all(use_cache=False)
        assert time.monotonic() - started < 0.3 + 0.5 + SLACK_S
        assert all((r["status"], r["error"]) == ("unknown", "timed out after 0.3s") for r in results.values())
    assert len(server.requests) == 5 * len(SERVICES)  # every check ran: none was queued behind a stuck one


# ── port probes ─────────────────────────────────────────────────────────────
@pytest.mark.parametrize("mode", MODES)
def test_probe_ends_at_its_deadline_while_headers_stall(stall, mode: str) -> None:
    server = stall(mode)
    port = int(server.url.rsplit(":", 1)[1])
    cfg = ProbeConfig(tcp_timeout_s=0.5, http_timeout_s=0.8, allow_loopback=True)
    started = time.monotonic()
    cand = Candidate("mapped", "127.0.0.1", port)
    result = asyncio.run(probe_candidate(cand, "127.0.0.1", cfg, SYSTEM_CLOCK))
    elapsed = time.monotonic() - started
    assert result.outcome == TIMEOUT and result.stage == "http" and result.tcp_ok
    assert 0.8 - 0.05 <= elapsed < 0.8 + SLACK_S, elapsed
