"""One SSH session's streaming loop: keepalives and health checks, reads, rotation switches, fenced appends.

:class:`Streaming` is mixed into :class:`vastkeep.ssh.collector.Collector`, which connects, picks the route,
backs off and holds the lease; this part runs while a session is up. Every read waits in ``poll`` at most
until the next keepalive decision (:mod:`vastkeep.ssh.liveness`); bytes are cut into complete lines that keep
their byte offset (:mod:`vastkeep.ssh.lines`) and stored with the new offset in one fenced call
(:mod:`vastkeep.ssh.logstore`); a truncation or a rename seen by ``tail`` reopens the file from a checked
position (:mod:`vastkeep.ssh.rotation`).
"""

from __future__ import annotations

import logging
import select
from collections.abc import Iterable
from typing import Protocol

import paramiko

from vastkeep.core.clock import Clock
from vastkeep.core.errors import SSHError
from vastkeep.ssh.config import CollectorConfig
from vastkeep.ssh.connect import keepalive_probe, run_probe
from vastkeep.ssh.lines import complete_part
from vastkeep.ssh.liveness import HEALTH_CHECK_COMMAND, HEALTH_CHECK_REPLY, Liveness
from vastkeep.ssh.logstore import LogStore
from vastkeep.ssh.rotation import Followed, Tailer, notice_in
from vastkeep.state import Lease

log = logging.getLogger("vastkeep.ssh")

READ_CHUNK = 256 * 1024
BATCH_BYTES = 512 * 1024  # at most this much is read before one fenced append


class _Counts(Protocol):
    """What the streaming loop adds to (a run's result)."""

    lines: int
    bytes: int


def _readable(channels: Iterable[paramiko.Channel], timeout_s: float) -> list[paramiko.Channel]:
    """The channels with data, waiting at most ``timeout_s``. ``poll``, not ``select``: one threads-pool
    worker holds many collectors, and ``select`` refuses file descriptors above 1023."""
    poller = select.poll()
    by_fd: dict[int, paramiko.Channel] = {}
    for channel in channels:
        fd = channel.fileno()  # paramiko's pipe, set when data arrives
        by_fd[fd] = channel
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ev in poller.poll(max(0, int(timeout_s * 1000)))]


def _by_channel(files: Iterable[Followed]) -> dict[paramiko.Channel, Followed]:
    """The open files by their ``tail`` channel (what :func:`_readable` polls)."""
    return {f.channel: f for f in files if f.channel is not None}


class Streaming:
    """The streaming loop of a session (mixed into the collector, which sets these attributes)."""

    iid: str
    cfg: CollectorConfig
    clock: Clock
    store: LogStore
    lease: Lease
    tailer: Tailer
    result: _Counts

    def _stopping(self) -> bool:
        raise NotImplementedError

    def _mark(self, within_s: float = 0.0) -> None:
        raise NotImplementedError

    def _streaming_beat(self) -> None:
        raise NotImplementedError

    def _stream(self, client: paramiko.SSHClient, files: list[Followed], deadline: float) -> None:
        cfg = self.cfg
        live = Liveness.start(self.clock.monotonic(), cfg.keepalive_interval_s, cfg.keepalive_max_miss,
                              cfg.health_interval_s)
        by_channel = _by_channel(files)
        while not self._stopping():
            now = self.clock.monotonic()
            if now >= deadline:
                return
            if live.is_dead(now):
                log.warning("SSH link of instance %s is dead: no reply for %.1fs (%d keepalives missed)",
                            self.iid, now - live.last_reply, live.missed(now))
                raise SSHError("peer silent", reason="keepalive")
            if live.health_check_due(now):  # the guide's `echo keepalive` round trip, 5 s
                self._mark(cfg.health_timeout_s * (1 + 2 * len(files)) + cfg.open_step_s(len(files)))
                live.probed(now, health_check=True)
                if not run_probe(client, HEALTH_CHECK_COMMAND, HEALTH_CHECK_REPLY, cfg.health_timeout_s,
                                 self.clock.monotonic):
                    raise SSHError("health check failed", reason="health-check")
                live.replied(self.clock.monotonic())
                for f in files:  # a rotation by rename shows here (tail keeps the renamed file open)
                    if f.draining_since is not None:
                        continue
                    change = self.tailer.changed(client, f)
                    if change == "renamed":  # read the old file to its end before switching
                        f.draining_since = self.clock.monotonic()
                    elif change is not None:
                        self.tailer.open(client, f)
                by_channel = _by_channel(files)
                continue
            if any(f.drained(now) for f in files):
                self._mark(cfg.open_step_s(len(files)))
                for f in files:
                    if f.drained(now):
                        self._switch(client, f)
                by_channel = _by_channel(files)
                continue
            if live.probe_due(now):  # an SSH keepalive request, answered or not within the interval
                self._mark(cfg.health_timeout_s)
                live.probed(now)
                if keepalive_probe(client, min(cfg.health_timeout_s, cfg.keepalive_interval_s)):
                    live.replied(self.clock.monotonic())
                continue
            self._streaming_beat()
            self._mark(cfg.ready_timeout_s)  # a poll (≤ 1 s), a read of what is there, one fenced write
            ready = _readable(by_channel, live.wait_s(now))
            for channel in ready:
                notice = notice_in(self._drain_stderr(channel))
                if notice == "truncated":  # tail starts over at byte 0: reopen it from a checked position
                    self._mark(cfg.open_step_s())
                    f = by_channel.pop(channel)
                    self.tailer.open(client, f, notice)
                    if f.channel is not None:  # open() either sets a channel or raises
                        by_channel[f.channel] = f
                    live.replied(self.clock.monotonic())
                    continue
                if not (channel.recv_ready() or channel.eof_received or channel.closed):
                    continue  # woken by stderr only
                data = self._read_burst(channel)
                if not data:
                    raise SSHError(f"log stream ended (exit {self._exit_code(channel)})", reason="eof")
                live.replied(self.clock.monotonic())
                self._take(by_channel[channel], data)

    @staticmethod
    def _read_burst(channel: paramiko.Channel) -> bytes:
        """What the channel holds now (up to ``BATCH_BYTES``), so a fast log costs one write per burst."""
        chunks = [channel.recv(READ_CHUNK)]
        size = len(chunks[0])
        while chunks[-1] and size < BATCH_BYTES and channel.recv_ready():
            chunks.append(channel.recv(READ_CHUNK))
            size += len(chunks[-1])
        return b"".join(chunks)

    def _switch(self, client: paramiko.SSHClient, f: Followed) -> None:
        """A renamed file is drained: store its last line even without a newline (nothing more will come
        to complete it), then follow the new file from its first byte (a new generation)."""
        if f.pending:
            f.offset = self.store.append_blob(self.iid, f.path, self.lease.fence, f.offset, f.pending,
                                              [len(f.pending)])
            self.result.lines += 1
            self.result.bytes += len(f.pending)
            f.pending = b""
        self.tailer.open(client, f)

    def _take(self, f: Followed, data: bytes) -> None:
        f.last_data_at = self.clock.monotonic()
        blob, lengths, rest, _rest_at = complete_part(f.pending + data if f.pending else data, f.offset)
        f.pending = rest
        if not blob:
            return
        f.offset = self.store.append_blob(self.iid, f.path, self.lease.fence, f.offset, blob, lengths)
        f.stored(blob, self.clock.monotonic())
        self.result.lines += len(lengths) if lengths is not None else blob.count(b"\n")
        self.result.bytes += len(blob)

    @staticmethod
    def _drain_stderr(channel: paramiko.Channel) -> str:
        """What tail said on stderr (its notices about the file), logged at debug."""
        said = []
        while channel.recv_stderr_ready():
            err = channel.recv_stderr(4096)
            if not err:
                break
            said.append(err.decode("utf-8", "replace"))
            log.debug("remote tail: %s", said[-1][:200].strip())
        return "".join(said)

    @staticmethod
    def _exit_code(channel: paramiko.Channel) -> int | None:
        return channel.recv_exit_status() if channel.exit_status_ready() else None


__all__ = ["BATCH_BYTES", "READ_CHUNK", "Streaming"]
