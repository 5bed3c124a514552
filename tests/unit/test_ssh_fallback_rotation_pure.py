"""Layer 1's pure parts of the provider log fallback and of file rotation, table-driven: which snapshot
lines are new, the result_url guard (with a fake resolver: no DNS, no socket), when a file needs a new
generation, tail's notices, the overlap after a truncation."""

from __future__ import annotations

import pytest

from vastkeep.core.errors import NetworkError, UnsafeTarget
from vastkeep.ssh.lines import snapshot_news
from vastkeep.ssh.provider_log import check_result_url
from vastkeep.ssh.rotation import notice_in, overlap, parse_stat, rotation_reason, tail_command

L = [b"a\n", b"b\n", b"c\n"]


@pytest.mark.parametrize(("stored", "snapshot", "news", "gap"), [
    ([], b"a\nb\nc\n", L, False),  # first snapshot: all of it
    (L, b"a\nb\nc\n", [], False),  # unchanged: nothing
    (L, b"b\nc\nd\ne\n", [b"d\n", b"e\n"], False),  # the tail moved on
    (L, b"c\nd\n", [b"d\n"], False),
    (L, b"x\ny\n", [b"x\n", b"y\n"], True),  # no overlap: more than N lines came and went
    (L, b"c\nd\npart", [b"d\n"], False),  # a trailing line without newline waits
    ([], b"", [], False),
    (L, b"", [], False),
    ([b"x\n", b"x\n"], b"x\nx\nx\n", [b"x\n"], False),  # repeats: the longest overlap wins
])
def test_snapshot_news(stored, snapshot, news, gap) -> None:
    assert snapshot_news(stored, snapshot) == (news, gap)


def _resolver(table):
    def resolve(host: str, port: int, timeout_s: float) -> list[str]:
        if table.get(host) == "timeout":
            raise NetworkError("slow dns")
        return table.get(host, [])
    return resolve


@pytest.mark.parametrize(("url", "loopback", "dns", "refused"), [
    ("https://s3.example.com/logs/x.txt", False, {"s3.example.com": ["52.216.1.2"]}, False),
    ("https://evil.example/x", False, {"evil.example": ["52.216.1.2", "10.0.0.1"]}, True),  # any address
    ("https://meta.example/x", False, {"meta.example": ["169.254.169.254"]}, True),
    ("https://gone.example/x", False, {}, True),  # does not resolve
    ("http://127.0.0.1:8080/logs/x", True, {}, False),  # the simulated cloud
    ("http://127.0.0.1:8080/logs/x", False, {}, True),
    ("http://[::1]:8080/logs/x", True, {}, True),  # simulation admits IPv4 loopback only
    ("http://192.168.0.9/x", True, {}, True),
    ("ftp://52.216.1.2/x", False, {}, True),
    ("file:///etc/passwd", False, {}, True),
    ("http:///nohost", False, {}, True),
])
def test_result_url_guard(url, loopback, dns, refused) -> None:
    if refused:
        with pytest.raises(UnsafeTarget):
            check_result_url(url, allow_loopback=loopback, resolve=_resolver(dns))
    else:
        check_result_url(url, allow_loopback=loopback, resolve=_resolver(dns))


def test_result_url_guard_slow_dns_is_a_network_error() -> None:
    with pytest.raises(NetworkError):
        check_result_url("https://slow.example/x", allow_loopback=False,
                         resolve=_resolver({"slow.example": "timeout"}))


@pytest.mark.parametrize(("size", "inode", "pos", "known", "why"), [
    (100, "7", 50, "7", None),  # grew: fine
    (50, "7", 50, "7", None),
    (10, "7", 50, "7", "size 10 < offset 50"),  # truncated
    (100, "8", 50, "7", "inode 7 → 8"),  # replaced by a longer file
    (100, "8", 50, "", None),  # inode never seen: nothing to compare
    (0, "7", 0, "7", None),  # nothing read yet: never a new generation
    (None, None, 50, "7", None),  # stat failed / no file yet: unknown
])
def test_rotation_reason(size, inode, pos, known, why) -> None:
    assert rotation_reason(size, inode, pos, known) == why


@pytest.mark.parametrize(("text", "kind"), [
    ("tail: /var/log/onstart.log: file truncated\n", "truncated"),
    ("tail: '/var/log/onstart.log' has been replaced;  following new file\n", "replaced"),
    ("tail: '/var/log/onstart.log' has appeared;  following new file\n", "appeared"),
    ("tail: warning: --retry only effective for the initial open\n", None),
    ("", None),
])
def test_notice_in(text, kind) -> None:
    assert notice_in(text) == kind


@pytest.mark.parametrize(("out", "parsed"), [
    (b"1234 5678\n", (1234, "5678")), (b"", (None, None)), (None, (None, None)), (b"x y\n", (None, None)),
    (b"stat: cannot statx\n", (None, None)),
])
def test_parse_stat(out, parsed) -> None:
    assert parse_stat(out) == parsed


@pytest.mark.parametrize(("recent", "head", "k"), [
    (b"old\nnew 1\n", b"new 1\nnew 2\n", 6),  # the new file's first line was stored after the old one
    (b"old\n", b"new 1\n", 0),
    (b"", b"new\n", 0),
    (b"old\n", b"", 0),
    (b"a\nb\n", b"a\nb\n", 4),
])
def test_overlap(recent, head, k) -> None:
    assert overlap(recent, head) == k


def test_tail_follows_the_descriptor_and_quotes_the_path() -> None:
    assert tail_command("/var/log/on start.log", 0) == \
        "tail -c +1 --follow=descriptor --retry '/var/log/on start.log'"
    assert tail_command("/x", 41).startswith("tail -c +42 ")
