"""The provider log's ``result_url`` is fetched from the address that passed the SSRF check, and a gap
between two reads is an event. Real HTTP and TLS servers on loopback, a real redis-server, the simulated
cloud's log API.

DNS is the one thing stood in for: ``socket.getaddrinfo`` answers a test name first with loopback (the
check passes) and then with a private address (a rebinding). Fetched with the pin, the name is resolved
once and the loopback server answers; resolved again at connect time, the connect would go to the private
address (the loopback-only net under every test turns that into a failure).
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fixtures.state import State
from vastkeep.core.errors import UnsafeTarget
from vastkeep.providers.http import make_session
from vastkeep.providers.pinning import pin_session
from vastkeep.providers.vast import VastClient
from vastkeep.ssh.provider_log import PROVIDER_FILE, ProviderLog
from vastkeep.state import new_owner

NAME = "logs.rebind.test"


class _Server:
    """A tiny HTTP(S) server on loopback: PUT answers the result_url, GET the log; remembers Host and SNI."""

    def __init__(self, result_url: str = "", tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.sni: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:
                pass

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = result_url.replace("PORT", str(server.port))
                self._send(f'{{"success": true, "result_url": "{url}"}}'.encode())

            def do_GET(self) -> None:
                server.seen.append((self.path, self.headers.get("Host")))
                self._send(b"pinned line\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rebinding_dns(monkeypatch) -> list[str]:
    """``NAME`` resolves to 127.0.0.1 the first time and to 10.0.0.9 after; returns the lookups made."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != NAME:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "10.0.0.9"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_the_result_url_is_fetched_from_the_checked_address_not_a_second_lookup(rebinding_dns,
                                                                               redis_client) -> None:
    stub = _Server(result_url=f"http://{NAME}:PORT/logs/x.txt")
    state = State(redis_client)
    events, logs = state.events, state.logs
    lease = state.leases.acquire("ssh-collector:5", new_owner("test"), 60_000)
    vast = VastClient("k", f"http://127.0.0.1:{stub.port}/api/v0", timeout_s=(2.0, 5.0))
    provider = ProviderLog("5", logs, lambda iid, tail, guard: vast.request_logs(int(iid), tail, wait_s=3.0,
                                                                                 url_guard=guard),
                           allow_loopback=True, events=events)
    try:
        assert provider.poll(lease.fence) == 1
    finally:
        stub.close()
    assert rebinding_dns == [NAME]  # resolved once, by the check
    assert stub.seen == [("/logs/x.txt", f"{NAME}:{stub.port}")]  # the Host header keeps the name
    assert [ln.data for ln in logs.read("5", PROVIDER_FILE)] == [b"pinned line\n"]


def _tls(tmp_path: Path, cert_name: str) -> tuple[ssl.SSLContext, Path]:
    """A server context with a certificate for ``cert_name`` from a fresh CA; the CA's file for clients."""
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    hour = datetime.timedelta(hours=1)
    ca_name = name("vastkeep test CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - hour)
          .not_valid_after(now + hour)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name(cert_name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cert_name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, ca_path


@pytest.fixture
def tls_server(tmp_path) -> Iterator[tuple[_Server, Path]]:
    ctx, ca = _tls(tmp_path, NAME)
    server = _Server(tls=ctx)
    yield server, ca
    server.close()


def test_a_pinned_https_fetch_keeps_sni_host_and_certificate_checks_on_the_name(tls_server,
                                                                                rebinding_dns) -> None:
    server, ca = tls_server
    session = make_session("vastkeep-test")
    session.verify = str(ca)
    guard = pin_session(session, lambda url: "127.0.0.1")
    url = f"https://{NAME}:{server.port}/logs/x.txt"
    guard(url)
    resp = session.get(url, timeout=5)
    assert resp.status_code == 200 and resp.content == b"pinned line\n"
    assert server.sni == [NAME]  # TLS SNI: the name, not the pinned address
    assert server.seen == [("/logs/x.txt", f"{NAME}:{server.port}")]
    assert rebinding_dns == []  # no lookup at all: the connect went to the pin

    other = make_session("vastkeep-test")
    other.verify = str(ca)
    guard_other = pin_session(other, lambda u: "127.0.0.1")
    wrong = f"https://other.rebind.test:{server.port}/logs/x.txt"  # pinned, but the certificate is for NAME
    guard_other(wrong)
    with pytest.raises(requests.exceptions.SSLError):
        other.get(wrong, timeout=5)


def test_a_host_without_a_pin_is_refused(tls_server) -> None:
    server, _ca = tls_server
    session = make_session("vastkeep-test")
    pin_session(session, lambda u: "127.0.0.1")  # the guard is never called for this URL
    with pytest.raises(UnsafeTarget):
        session.get(f"http://127.0.0.1:{server.port}/x", timeout=5)


def test_more_new_lines_than_the_tail_between_two_reads_is_a_gap_event(sim, redis_client) -> None:
    state = State(redis_client)
    events, logs = state.events, state.logs
    iid = str(sim.control.create_instance(running=True)["id"])
    lease = state.leases.acquire(f"ssh-collector:{iid}", new_owner("test"), 60_000)
    vast = VastClient(sim.api_key, sim.vast_api_url, timeout_s=(2.0, 5.0))
    provider = ProviderLog(iid, logs, lambda i, tail, guard: vast.request_logs(int(i), tail, wait_s=5.0,
                                                                               url_guard=guard),
                           allow_loopback=True, tail=3, events=events)
    sim.control.append_log(int(iid), "one", "two")
    assert provider.poll(lease.fence) == 2
    sim.control.append_log(int(iid), "three")
    assert provider.poll(lease.fence) == 1  # overlaps: no gap
    sim.control.append_log(int(iid), "four", "five", "six", "seven")  # 4 new > tail 3: "four" is missed
    assert provider.poll(lease.fence) == 3
    gaps = [e.fields for e in events.read(count=100) if e.kind == "ssh-provider-log-gap"]
    assert gaps == [{"instance_id": iid, "tail": 3, "stored": 3}]
    assert [ln.to_dict()["text"] for ln in logs.read(iid, PROVIDER_FILE)] == \
        ["one", "two", "three", "five", "six", "seven"]

