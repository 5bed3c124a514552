"""``vastkeep.soak.hostb.Relay``: host B's Redis link in the soak. Cut, it moves nothing and refuses nothing
(a black hole: the caller's read times out); restored, the bytes sent in the dark arrive, as TCP delivers
them after a partition heals. Real sockets, an echo server on loopback."""

from __future__ import annotations

import socket
import threading

from vastkeep.soak.hostb import Relay, relayed_url


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(4096), b"")],
                             daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv, int(srv.getsockname()[1])


def test_a_cut_link_holds_the_bytes_and_a_restored_one_delivers_them() -> None:
    srv, port = _echo_server()
    relay = Relay("127.0.0.1", port).start()
    try:
        c = socket.create_connection(("127.0.0.1", relay.port), timeout=2)
        c.sendall(b"ping")
        assert c.recv(4) == b"ping"
        relay.cut()
        c.settimeout(0.5)
        c.sendall(b"stale")  # written in the dark: no error, no answer
        try:
            c.recv(5)
            raise AssertionError("an answer came through a cut link")
        except TimeoutError:
            pass
        late = socket.create_connection(("127.0.0.1", relay.port), timeout=2)  # accepted by the kernel only
        late.settimeout(0.5)
        late.sendall(b"new")
        try:
            late.recv(3)
            raise AssertionError("a new connection was served while cut")
        except TimeoutError:
            pass
        relay.restore()
        c.settimeout(3)
        late.settimeout(3)
        assert c.recv(5) == b"stale"  # delivered after the link healed: the fences must refuse such writes
        assert late.recv(3) == b"new"
        print("\nrelay: a cut link held 1 old and 1 new connection; both served after the restore")
    finally:
        relay.stop()
        srv.close()


def test_the_relayed_url_keeps_the_password_and_db() -> None:
    assert relayed_url("redis://:s3cret@127.0.0.1:6390/2", 7001) == "redis://:s3cret@127.0.0.1:7001/2"
    assert relayed_url("redis://127.0.0.1:6390/0", 7001) == "redis://127.0.0.1:7001/0"
