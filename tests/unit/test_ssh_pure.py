"""Layer 1's pure decisions: routes, liveness, backoff, line splitting. Table-driven, fake clock only."""

from __future__ import annotations

import random

import pytest

from vastkeep.core.backoff import SSH_BACKOFF_CAP_S
from vastkeep.ssh.decide import (
    backing_off_line,
    backoff_ceiling_s,
    backoff_delay_s,
    failures_after,
    is_herd,
    reconnect_ceiling_s,
    reconnect_delay_s,
    use_fallback,
)
from vastkeep.ssh.lines import complete_part, split_lines
from vastkeep.ssh.liveness import Liveness
from vastkeep.ssh.routes import DIRECT, PROXY, Route, ssh_routes


# ── routes ──────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("ip", "ports", "host", "port", "last", "expected"),
    [
        ("1.2.3.4", {"22/tcp": 40022}, "ssh5.vast.ai", 12345, None,
         [Route(DIRECT, "1.2.3.4", 40022), Route(PROXY, "ssh5.vast.ai", 12345)]),
        ("1.2.3.4", {"22/tcp": 40022}, "ssh5.vast.ai", 12345, PROXY,
         [Route(PROXY, "ssh5.vast.ai", 12345), Route(DIRECT, "1.2.3.4", 40022)]),
        ("1.2.3.4", {"22/tcp": 40022}, "ssh5.vast.ai", 12345, DIRECT,
         [Route(DIRECT, "1.2.3.4", 40022), Route(PROXY, "ssh5.vast.ai", 12345)]),
        (" 1.2.3.4\n", {"22/tcp": "40022"}, None, None, PROXY, [Route(DIRECT, "1.2.3.4", 40022)]),
        (None, {"22/tcp": 40022}, "h", 22, None, [Route(PROXY, "h", 22)]),  # no IP yet
        ("1.2.3.4", {}, "h", "22", None, [Route(PROXY, "h", 22)]),  # loading: no ports yet
        ("1.2.3.4", {"22/tcp": 0}, "h", 70000, None, []),  # nonsense ports are left out
        ("1.2.3.4", None, "", 22, None, []),
        ("1.2.3.4", {"22/tcp": "x"}, "h", "y", None, []),
    ],
)
def test_routes_in_order_last_good_first(ip, ports, host, port, last, expected):
    assert ssh_routes(ip, ports, host, port, last) == expected


# ── liveness ────────────────────────────────────────────────────────────────
def test_dead_after_interval_times_max_miss_and_data_counts_as_a_reply():
    live = Liveness.start(100.0, interval_s=10, max_miss=3, health_interval_s=30)
    assert live.dead_after_s == 30
    table = [  # (now, probe due, dead, missed)
        (105.0, False, False, 0),
        (110.0, True, False, 1),
        (125.0, True, False, 2),
        (129.9, True, False, 2),
        (130.0, True, True, 3),
    ]
    for now, due, dead, missed in table:
        assert (live.probe_due(now), live.is_dead(now), live.missed(now)) == (due, dead, missed), now
    live.replied(128.0)  # a line arrived
    assert not live.is_dead(150.0) and live.is_dead(158.0)
    live.replied(120.0)  # replies never move time back
    assert live.last_reply == 128.0


def test_probe_not_repeated_within_an_interval_and_health_check_every_30s():
    live = Liveness.start(0.0, interval_s=10, max_miss=3)
    assert live.probe_due(10.0)
    live.probed(10.0)
    assert not live.probe_due(15.0) and live.probe_due(20.0)
    assert not live.health_check_due(29.9) and live.health_check_due(30.0)
    live.probed(30.0, health_check=True)
    assert not live.health_check_due(59.0) and live.health_check_due(60.0)


@pytest.mark.parametrize(("now", "cap", "expected"), [(0.0, 1.0, 1.0), (9.5, 1.0, 0.5), (9.999, 5, 0.01),
                                                       (2.0, 100.0, 8.0)])
def test_read_wait_never_passes_the_next_decision(now, cap, expected):
    live = Liveness.start(0.0, interval_s=10, max_miss=3, health_interval_s=30)
    assert live.wait_s(now, cap) == pytest.approx(expected)


# ── backoff ─────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("failures", "max_failures", "ceiling"),
    [(0, 999999, 0.0), (1, 999999, 1.0), (2, 999999, 2.0), (3, 999999, 4.0), (9, 999999, 256.0),
     (10, 999999, 300.0), (11, 999999, 300.0), (10**9, 999999, 300.0),
     (3, 5, 4.0), (5, 5, SSH_BACKOFF_CAP_S), (6, 5, SSH_BACKOFF_CAP_S),  # at the limit: the cap
     (1, 1, SSH_BACKOFF_CAP_S), (-1, 5, 0.0)],
)
def test_ssh_backoff_ceiling_1s_to_300s(failures, max_failures, ceiling):
    assert backoff_ceiling_s(failures, max_failures) == ceiling


def test_backoff_is_full_jitter_within_the_ceiling():
    rng = random.Random(7)
    delays = [backoff_delay_s(6, 999999, rng) for _ in range(2000)]
    assert all(0 <= d <= 32 for d in delays)
    assert min(delays) < 2 and max(delays) > 30  # spread over the whole window, not pinned near the top
    assert backoff_delay_s(0, 999999, rng) == 0.0


@pytest.mark.parametrize(("failures", "recent_drops", "ceiling"), [
    (0, 0, 0.0),     # a healthy link, no drop counted (Redis down): at once
    (0, 1, 0.0),     # a lone drop: at once
    (0, 4, 0.0),     # a few links dropped in the window: still at once
    (0, 5, 10.0),    # a herd: spread over the window
    (0, 200, 10.0),
    (1, 1, 1.0),     # a link that flapped (died before the gate): full-jitter backoff
    (3, 1, 4.0),
    (1, 5, 10.0),    # flapping inside a herd: the larger bound
    (5, 200, 16.0),
    (9, 200, 256.0),
    (999999, 1, 300.0),
])
def test_reconnect_ceiling_table(failures, recent_drops, ceiling):
    assert reconnect_ceiling_s(failures, 999999, recent_drops, window_s=10.0, herd_drops=5) == ceiling


def test_a_lone_drop_reconnects_at_once_and_a_herd_spreads_over_the_window():
    rng = random.Random(5)
    assert all(reconnect_delay_s(0, 999999, rng, recent_drops=1) == 0.0 for _ in range(100))
    herd = [reconnect_delay_s(0, 999999, rng, recent_drops=50, window_s=10.0) for _ in range(1000)]
    assert all(0 <= d <= 10.0 for d in herd) and min(herd) < 0.2 and max(herd) > 9.8
    assert not is_herd(4) and is_herd(5) and is_herd(1, herd_drops=1)


@pytest.mark.parametrize("recent_drops", [1, 3, 5, 200])
def test_a_flapping_link_never_reconnects_sooner_than_a_healthy_one(recent_drops):
    """A session that died after 5 s (before the 60 s gate) vs one that was up past the gate, dropped in the
    same window: the flapping one's bound is never lower, and grows with each flap; its delay is full
    jitter (spread from 0 to the bound)."""
    healthy = reconnect_ceiling_s(failures_after(0, 61.0, 60.0), 999999, recent_drops)
    failures, bounds = 0, []
    for _ in range(6):
        failures = failures_after(failures, 5.0, 60.0)
        bounds.append(reconnect_ceiling_s(failures, 999999, recent_drops))
    assert all(b >= healthy for b in bounds) and bounds == sorted(bounds) and bounds[-1] > healthy
    rng = random.Random(7)
    delays = [reconnect_delay_s(failures, 999999, rng, recent_drops) for _ in range(2000)]
    assert min(delays) < 0.05 * bounds[-1] and max(delays) > 0.95 * bounds[-1]


@pytest.mark.parametrize(("failures", "uptime", "gate", "expected"),
                         [(5, 61.0, 60.0, 0), (5, 60.0, 60.0, 0), (5, 59.0, 60.0, 6), (0, None, 60.0, 1),
                          (3, 0.1, 60.0, 4)])
def test_failures_reset_only_after_the_gate(failures, uptime, gate, expected):
    assert failures_after(failures, uptime, gate) == expected


def test_backing_off_line_has_the_guides_wording():
    line = backing_off_line(10, 32.0)
    assert line == "[LogCollector] 10 consecutive failures, backing off 32s before retry"
    assert backing_off_line(3, 2.6) == "[LogCollector] 3 consecutive failures, backing off 3s before retry"


@pytest.mark.parametrize(("since", "now", "after", "expected"),
                         [(None, 1000.0, 120.0, False), (100.0, 219.0, 120.0, False),
                          (100.0, 220.0, 120.0, True)])
def test_fallback_after_ssh_was_down_long_enough(since, now, after, expected):
    assert use_fallback(since, now, after) is expected


# ── lines ───────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("data", "base", "max_line", "lines", "rest", "rest_at"),
    [
        (b"", 0, 100, [], b"", 0),
        (b"a\nbb\n", 0, 100, [(0, b"a\n"), (2, b"bb\n")], b"", 5),
        (b"a\nbb\nccc", 10, 100, [(10, b"a\n"), (12, b"bb\n")], b"ccc", 15),
        (b"partial", 7, 100, [], b"partial", 7),
        (b"\n\n", 0, 100, [(0, b"\n"), (1, b"\n")], b"", 2),
        (b"abcdefgh", 0, 3, [(0, b"abc"), (3, b"def")], b"gh", 6),  # runaway line cut into pieces
        (b"ab\ncdefg\n", 0, 3, [(0, b"ab\n"), (3, b"cde"), (6, b"fg\n")], b"", 9),
        (b"\xff\xfe\n", 0, 100, [(0, b"\xff\xfe\n")], b"", 3),  # bytes, never decoded
    ],
)
def test_split_lines_keeps_offsets(data, base, max_line, lines, rest, rest_at):
    assert split_lines(data, base, max_line) == (lines, rest, rest_at)


def test_split_lines_pieces_rebuild_the_input_byte_for_byte():
    rng = random.Random(3)
    data = bytes(rng.choice(b"ab\n") for _ in range(5000))
    out, pending, offset = [], b"", 0
    for i in range(0, len(data), 37):  # arbitrary chunking, as a network delivers it
        lines, pending, offset = split_lines(pending + data[i:i + 37], offset, max_line=50)
        for off, line in lines:
            assert off == sum(len(b) for b in out)
            out.append(line)
    assert b"".join(out) + pending == data


@pytest.mark.parametrize("max_line", [3, 7, 50, 64 * 1024])
def test_complete_part_is_split_lines_laid_end_to_end(max_line):
    rng = random.Random(max_line)
    for _ in range(300):
        data = bytes(rng.choice(b"abc\n") for _ in range(rng.randint(0, 120)))
        base = rng.randint(0, 10**12)
        lines, rest, rest_at = split_lines(data, base, max_line)
        blob, lengths, rest2, rest_at2 = complete_part(data, base, max_line)
        assert (blob, rest2, rest_at2) == (b"".join(b for _o, b in lines), rest, rest_at)
        if lengths is None:  # readers split on newlines: that must give the same lines
            assert all(b.endswith(b"\n") for _o, b in lines)
        else:
            assert lengths == [len(b) for _o, b in lines]
