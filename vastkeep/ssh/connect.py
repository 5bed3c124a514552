"""Opening an SSH link with a deadline on every step, and host keys pinned per instance.

``SSHClient.connect`` gets ``timeout`` (TCP), ``banner_timeout``, ``auth_timeout`` and ``channel_timeout``
all set from ``SSH_READY_TIMEOUT_MS``, so a peer that accepts TCP and then says nothing (hang after banner,
a black hole) costs one timeout, never a stuck worker. Every channel opened on the link gets
``settimeout`` too (:func:`exec_channel`).

Host keys: the first key an instance presents is pinned in Redis (``SET NX``), whichever route saw it; a
different key for the same instance is refused before authentication (the private key is never offered to
it), an ``ssh-host-key-changed`` alert event is written, and the attempt counts as a failure. An operator
who knows the instance was rebuilt clears the pin (``DEL vastkeep:hostkey:<id>``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from vastkeep.core.errors import SSHError
from vastkeep.ssh.drops import Redis
from vastkeep.ssh.routes import Route
from vastkeep.state import NULL_EVENTS, EventSink, Keys

if TYPE_CHECKING:
    from paramiko.transport import _SocketLike

log = logging.getLogger("vastkeep.ssh")


#: AES-GCM first: no separate HMAC pass, about twice paramiko's aes128-ctr + hmac-sha2-256 throughput here
#: (bench/bench_ssh.py); the rest of paramiko's list stays behind it for servers without GCM.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr",
                     "aes256-ctr")


def _transport(sock: _SocketLike, /, *, gss_kex: bool = False, gss_deleg_creds: bool = True,
               disabled_algorithms: Mapping[str, Iterable[str]] | None = None) -> paramiko.Transport:
    """paramiko's Transport with AES-GCM preferred (``SSHClient.connect``'s ``transport_factory``).

    The collector never asks for GSS-API key exchange, so ``gss_*`` keep paramiko's defaults.
    """
    transport = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
    options = transport.get_security_options()
    supported = [c for c in PREFERRED_CIPHERS if c in options.ciphers]
    options.ciphers = tuple(supported + [c for c in options.ciphers if c not in supported])
    return transport


class HostKeyChanged(paramiko.SSHException):
    """Raised inside paramiko's host-key hook; turned into :class:`SSHError` with ``host_key_changed``."""


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as OpenSSH prints it (safe to log: a public key's hash)."""
    import base64  # noqa: PLC0415

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class HostKeyPins:
    """The first host key seen per instance, kept in Redis (``Keys.ssh_host_key``)."""

    def __init__(self, redis_client: Redis, keys: Keys, events: EventSink = NULL_EVENTS) -> None:
        self.redis = redis_client
        self.keys = keys
        self.events = events

    def check(self, instance_id: str, route: Route, key: paramiko.PKey) -> None:
        """Pin ``key`` if none is pinned; raise :class:`HostKeyChanged` when a different one is."""
        line = f"{key.get_name()} {key.get_base64()}"
        name = self.keys.ssh_host_key(instance_id)
        if self.redis.set(name, line, nx=True):
            log.info("SSH host key of instance %s pinned: %s %s", instance_id, key.get_name(),
                     fingerprint(key))
            return
        raw = self.redis.get(name)
        pinned = raw.decode() if isinstance(raw, bytes) else raw
        if pinned == line:
            return
        log.error("SSH host key of instance %s CHANGED on route %s: got %s, pinned %s; refused", instance_id,
                  route.name, fingerprint(key), (pinned or "").split(" ", 1)[0])
        self.events.emit("ssh-host-key-changed", instance_id=instance_id, route=route.name,
                         fingerprint=fingerprint(key))
        raise HostKeyChanged(f"host key of instance {instance_id} changed")


class _PinPolicy(paramiko.MissingHostKeyPolicy):
    """paramiko calls this before authentication for every host key (the client knows none)."""

    def __init__(self, pins: HostKeyPins, instance_id: str, route: Route) -> None:
        self.pins, self.instance_id, self.route = pins, instance_id, route

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.pins.check(self.instance_id, self.route, key)


def load_private_key(path: str | Path) -> paramiko.PKey:
    """The collector's private key (ed25519, ECDSA or RSA; unencrypted). Its content is never logged."""
    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(str(path))
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(type(exc).__name__)
        except OSError as exc:
            raise SSHError(f"cannot read SSH key file: {exc.strerror}", reason="key-file") from None
    raise SSHError(f"SSH key file is not a usable private key ({', '.join(errors)})", reason="key-file")


def open_client(route: Route, instance_id: str, pkey: paramiko.PKey, pins: HostKeyPins,
                timeout_s: float, username: str = "root") -> paramiko.SSHClient:
    """A connected, authenticated client on ``route``; ``SSHError`` (with ``reason``) on any failure.

    Each step is bounded by ``timeout_s``: TCP connect, banner, key exchange and auth, channel opens.
    """
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_PinPolicy(pins, instance_id, route))
    try:
        client.connect(route.host, route.port, username=username, pkey=pkey, look_for_keys=False,
                       allow_agent=False, timeout=timeout_s, banner_timeout=timeout_s, auth_timeout=timeout_s,
                       channel_timeout=timeout_s, transport_factory=_transport)
    except HostKeyChanged:
        client.close()
        raise SSHError(f"SSH host key of instance {instance_id} changed; refused", instance_id=instance_id,
                       route=route.name, reason="host-key-changed") from None
    except (TimeoutError, paramiko.SSHException, EOFError, OSError) as exc:
        client.close()
        text = str(exc).lower()
        timed_out = isinstance(exc, TimeoutError) or "timed out" in text or "timeout" in text
        reason = "timeout" if timed_out else type(exc).__name__
        raise SSHError(f"SSH to instance {instance_id} via {route.name} failed: {reason}",
                       instance_id=instance_id, route=route.name, reason=reason) from None
    except BaseException:
        client.close()
        raise
    return client


def exec_channel(client: paramiko.SSHClient, command: str, timeout_s: float) -> paramiko.Channel:
    """Run ``command`` on a new channel with ``settimeout``: no read on it can block past ``timeout_s``."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise SSHError("SSH link is closed", reason="closed")
    try:
        channel = transport.open_session(timeout=timeout_s)
        channel.settimeout(timeout_s)
        channel.exec_command(command)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SSHError(f"SSH channel failed: {type(exc).__name__}", reason=type(exc).__name__) from None
    return channel


def capture(client: paramiko.SSHClient, command: str, limit: int, timeout_s: float,
            monotonic: Callable[[], float], *, until: bytes | None = None) -> bytes | None:
    """A short command's stdout within ``timeout_s``: at most ``limit`` bytes, or up to the first chunk
    holding ``until``; None when it failed or ran out of time. The one bounded read of an exec channel
    (the health probe and the rotation check both use it)."""
    deadline = monotonic() + timeout_s
    try:
        channel = exec_channel(client, command, timeout_s)
    except SSHError:
        return None
    out = b""
    try:
        while len(out) < limit and (until is None or until not in out):
            left = deadline - monotonic()
            if left <= 0:
                return None
            channel.settimeout(left)
            chunk = channel.recv(min(65536, limit - len(out)))
            if not chunk:
                break
            out += chunk
    except (TimeoutError, paramiko.SSHException, EOFError, OSError):
        return None
    finally:
        with contextlib.suppress(Exception):
            channel.close()
    return out


#: what a health probe reads at most while it waits for its reply
PROBE_READ_LIMIT = 65536


def run_probe(client: paramiko.SSHClient, command: str, expect: bytes, timeout_s: float,
              monotonic: Callable[[], float]) -> bool:
    """One round trip (``echo keepalive``): True when ``expect`` came back within ``timeout_s``."""
    got = capture(client, command, PROBE_READ_LIMIT, timeout_s, monotonic, until=expect)
    return got is not None and expect in got


KEEPALIVE_REQUEST = "keepalive@openssh.com"


def keepalive_probe(client: paramiko.SSHClient, timeout_s: float) -> bool:
    """An SSH-level keepalive that *waits for the answer* (what OpenSSH's ``ServerAliveInterval`` sends):
    a ``keepalive@openssh.com`` global request with want-reply; any reply, success or failure, proves the
    peer alive. No remote process is started, unlike an exec probe.

    paramiko's ``global_request`` blocks until a reply or the end of the transport, so it runs in a small
    daemon thread and this call waits at most ``timeout_s``. A thread left waiting on a silent peer ends
    when the collector closes the dead link (paramiko checks ``active`` every 0.1 s): no thread outlives
    the link it probes.
    """
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        return False
    answered = threading.Event()

    def ask() -> None:
        with contextlib.suppress(Exception):  # a closing transport may raise anything: it is not alive
            transport.global_request(KEEPALIVE_REQUEST, wait=True)
            if transport.is_active():
                answered.set()

    threading.Thread(target=ask, name="ssh-keepalive", daemon=True).start()
    return answered.wait(timeout_s)
