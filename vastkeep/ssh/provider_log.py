"""Layer 1's fallback: the provider's own log API while no SSH route works.

When neither SSH route has worked for ``SSH_FALLBACK_AFTER_S``, the collector (which keeps retrying SSH
with its backoff) also asks the provider for the container log every ``SSH_PROVIDER_LOG_INTERVAL_S``
(:meth:`vastkeep.providers.Provider.container_logs`; Vast.ai hands out a storage ``result_url`` that is then
fetched). The answer is a **snapshot of the last N lines**
(``SSH_PROVIDER_LOG_TAIL``), with no byte offsets, so it cannot be merged into the SSH stream of a file
without risking lost or doubled lines. It is stored as its own stream, file ``provider:container-log``
(:data:`PROVIDER_FILE`), whose lines read back with ``source: "provider-api"``; only the lines after the
overlap with what the earlier snapshots stored are appended (:func:`vastkeep.ssh.lines.snapshot_news`), so
re-polling an unchanged log stores nothing. Its offsets are positions in that stream (bytes stored so far),
unique and growing, not positions in any remote file. The SSH streams are never touched by it: when SSH
answers again, streaming resumes from the SSH stream's own stored offset, nothing lost, nothing doubled there.

The ``result_url`` is a storage URL the API hands out, so it is checked before it is fetched (an SSRF
guard, :func:`check_result_url`): http(s) only, and every address its host resolves to must be a globally
routable unicast address (:func:`vastkeep.ports.unsafe_reason`, the port prober's guard); only with
``VASTKEEP_SIMULATED`` is IPv4 loopback admitted, where the simulated cloud lives. A redirect is checked the
same way. The fetch then connects to the address that passed, never resolving the name again
(:mod:`vastkeep.providers.pinning`: no DNS rebinding between check and connect), while the ``Host`` header,
TLS SNI and certificate checks keep the host name. A refused URL is logged and emits
``ssh-provider-log-refused``; nothing is fetched. A read that
shares no line with the stored ones (more than ``SSH_PROVIDER_LOG_TAIL`` lines came between two reads, or the
log was rewritten) stores the whole snapshot and emits ``ssh-provider-log-gap``: lines may be missing.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from vastkeep.core.errors import NetworkError, UnsafeTarget, VastkeepError
from vastkeep.ports import unsafe_reason
from vastkeep.ssh.lines import snapshot_news
from vastkeep.ssh.logstore import PROVIDER_PREFIX, LogStore
from vastkeep.state import NULL_EVENTS, EventSink

log = logging.getLogger("vastkeep.ssh")

PROVIDER_FILE = f"{PROVIDER_PREFIX}container-log"
DEFAULT_TAIL = 1000
RESOLVE_TIMEOUT_S = 5.0

#: ``fetch(instance_id, tail, url_guard)`` → the log text (raises a ``VastkeepError`` on failure);
#: ``url_guard(url)`` raises to refuse a URL, else returns the checked address to connect to.
Fetch = Callable[[str, int, Callable[[str], str]], str]


def _resolve(host: str, port: int, timeout_s: float) -> list[str]:
    """The addresses ``host`` resolves to, within ``timeout_s`` (getaddrinfo has no timeout of its own, so
    it runs in a daemon thread that is abandoned at the deadline)."""
    found: list[str | int] = []
    done = threading.Event()

    def look() -> None:
        try:
            found.extend(info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError:
            pass
        finally:
            done.set()

    threading.Thread(target=look, name="resolve-result-url", daemon=True).start()
    if not done.wait(timeout_s):
        raise NetworkError(f"resolving {host} took longer than {timeout_s:.0f}s", host=host)
    return [str(a).split("%", 1)[0] for a in found]


def check_result_url(url: str, *, allow_loopback: bool,
                     resolve: Callable[[str, int, float], list[str]] = _resolve,
                     timeout_s: float = RESOLVE_TIMEOUT_S) -> str:
    """Raise :class:`UnsafeTarget` unless ``url`` may be fetched (see the module doc); else return the
    address to connect to (the first one resolved: every one was judged).

    The fetch connects to that address only (:mod:`vastkeep.providers.pinning`), never resolving the name
    again, so a DNS answer that changes between check and connect (rebinding) reaches nothing unchecked.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise UnsafeTarget("refusing result_url: not a URL", reason="not a URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise UnsafeTarget("refusing result_url: not an http(s) URL with a host", reason="scheme")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = [host] if unsafe_reason(host) != "not an IP address" else resolve(host, port, timeout_s)
    if not addresses:
        raise UnsafeTarget(f"refusing result_url host {host}: it does not resolve", reason="unresolved")
    for address in addresses:
        reason = unsafe_reason(address, simulated=allow_loopback)
        if reason is not None:
            raise UnsafeTarget(f"refusing result_url host {host} ({address}): {reason}", address=address,
                               reason=reason)
    return addresses[0]


class ProviderLog:
    """Polls the provider's log API for one instance and stores what is new (see the module doc)."""

    def __init__(self, instance_id: str, logstore: LogStore, fetch: Fetch, *, allow_loopback: bool = False,
                 tail: int = DEFAULT_TAIL, events: EventSink = NULL_EVENTS,
                 resolve: Callable[[str, int, float], list[str]] = _resolve) -> None:
        self.iid, self.store, self.fetch, self.resolve = str(instance_id), logstore, fetch, resolve
        self.allow_loopback, self.tail, self.events = allow_loopback, max(1, int(tail)), events

    def guard(self, url: str) -> str:
        """The SSRF check :meth:`poll` hands to the fetch (for the result URL and any redirect); returns the
        checked address the fetch must connect to."""
        return check_result_url(url, allow_loopback=self.allow_loopback, resolve=self.resolve)

    def poll(self, fence: int) -> int:
        """Fetch one snapshot and store its new lines under ``fence``; returns how many were stored.
        A refused URL or a failed call is logged and stores nothing (SSH stays the way back)."""
        try:
            text = self.fetch(self.iid, self.tail, self.guard)
        except UnsafeTarget as exc:
            log.warning("provider log of instance %s not fetched: %s", self.iid, exc.message)
            self.events.emit("ssh-provider-log-refused", instance_id=self.iid,
                             reason=str(getattr(exc, "reason", "") or "unsafe"))
            return 0
        except VastkeepError as exc:
            log.info("provider log of instance %s not available: %s", self.iid, exc.message)
            return 0
        stored = self.store.tail_lines(self.iid, PROVIDER_FILE, self.tail)
        news, gap = snapshot_news(stored, text.encode("utf-8", "surrogateescape"))
        if news:
            offset = self.store.offset(self.iid, PROVIDER_FILE)
            self.store.append_blob(self.iid, PROVIDER_FILE, fence, offset, b"".join(news),
                                   [len(n) for n in news])
            log.info("provider log of instance %s: %d new line(s) stored (SSH is down)", self.iid, len(news))
        if gap:  # after the store: the event says what this read kept
            log.warning("provider log of instance %s: no overlap with the last snapshot; lines between the "
                        "two polls may be missing", self.iid)
            self.events.emit("ssh-provider-log-gap", instance_id=self.iid, tail=self.tail,
                             stored=len(news))
        return len(news)
