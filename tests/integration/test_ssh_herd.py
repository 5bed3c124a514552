"""A small herd (the smoke test of ``bench/bench_ssh_herd.py``): 20 collectors (threads of this process, the
flow level: a real worker would only add processes) stream from the simulated cloud's SSH server, lose
SSH at the same moment, and reconnect spread over the default ``SSH_RECONNECT_WINDOW_S`` by full jitter:
never all within one second, and all stream again. The 200-instance figure is in bench/README.md."""

from __future__ import annotations

import pytest

from bench.bench_ssh import Bench
from bench.bench_ssh_herd import herd, peak_in_window
from vastkeep.core.settings import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_peak_in_window_counts_a_sliding_second() -> None:
    assert peak_in_window([]) == 0
    assert peak_in_window([0.0, 0.5, 0.99, 1.0, 1.2, 5.0]) == 4  # 0.5, 0.99, 1.0, 1.2
    assert peak_in_window([0.0, 2.0, 4.0]) == 1


def test_20_collectors_losing_ssh_together_reconnect_spread_out() -> None:
    window = float(load_settings(environ={}, env_file=False).ssh_reconnect_window_s)
    assert window >= 5  # the default: 200 links → ~20 handshakes/s
    b = Bench()
    try:
        r = herd(b, 20, window, ramp_per_s=20.0)
    finally:
        b.close()
    print(f"[herd] 20 collectors, window {window:g} s: peak {r['peak_1s']} handshakes in 1 s, "
          f"per second {r['per_second']}")
    assert r["streaming"] == r["reconnected"] == r["resumed"] == 20
    assert r["peak_1s"] <= 10  # uniform over 10 s: ~2 a second; all in one second would be 20
    assert r["spread_s"] >= window / 3
