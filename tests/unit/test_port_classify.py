"""classify_probe: a pure table from per-candidate probe results to one verdict."""

from __future__ import annotations

import logging

import pytest

from vastkeep.core.errors import UnsafeTarget
from vastkeep.ports.candidates import Candidate, derive_candidates
from vastkeep.ports.probe import ProbeResult, is_comfyui_stats
from vastkeep.ports.validator import (
    FIREWALL_ERROR,
    HANG_ERROR,
    NO_CANDIDATES_ERROR,
    PortValidation,
    PortValidator,
    classify_probe,
    log_validation,
    unsafe_validation,
)

A = "203.0.113.7"
PORTS = {"direct": 8188, "mapped": 41234, "fallback": 41235}
DETAIL = {"refused": "TCP connection refused", "timeout": "TCP connection timeout",
          "reset": "connection reset",
          "http_error": "HTTP 500", "wrong_body": "response is not ComfyUI /system_stats", "ok": "",
          "skipped": "a higher-priority candidate passed", "http_timeout": "HTTP timeout (no response)"}


def r(kind: str, outcome: str) -> ProbeResult:
    """Shorthand: 'timeout' = TCP-stage timeout, 'http_timeout' = connected then HTTP hung."""
    stage = {"timeout": "tcp", "refused": "tcp", "ok": "done", "skipped": "tcp"}.get(outcome, "http")
    tcp_ms = None if stage == "tcp" else 1.0
    real = "timeout" if outcome == "http_timeout" else outcome
    return ProbeResult(kind, PORTS[kind], A, real, stage, 2.0, tcp_ms=tcp_ms,
                       http_status=500 if outcome == "http_error" else None, detail=DETAIL[outcome])


CASES = [
    # (results as (kind, outcome), success, winner kind, error, firewall)
    ([("direct", "ok"), ("mapped", "ok"), ("fallback", "ok")], True, "direct", None, False),
    ([("direct", "refused"), ("mapped", "ok"), ("fallback", "ok")], True, "mapped", None, False),
    # priority, not order of arrival: fallback listed first still loses to mapped
    ([("fallback", "ok"), ("mapped", "ok"), ("direct", "timeout")], True, "mapped", None, False),
    ([("direct", "timeout"), ("mapped", "timeout"), ("fallback", "ok")], True, "fallback", None, False),
    ([("direct", "ok"), ("mapped", "skipped"), ("fallback", "skipped")], True, "direct", None, False),
    # the firewall rule: every candidate (two or more) timed out at TCP
    ([("direct", "timeout"), ("mapped", "timeout"), ("fallback", "timeout")],
     False, None, FIREWALL_ERROR, True),
    ([("direct", "timeout"), ("mapped", "timeout")], False, None, FIREWALL_ERROR, True),
    # one candidate alone is never "a firewall": its own reason, exactly as the guide logs it
    ([("mapped", "timeout")], False, None, "TCP connection timeout", False),
    ([("mapped", "refused")], False, None, "TCP connection refused", False),
    ([("mapped", "http_error")], False, None, "HTTP 500", False),
    ([("mapped", "wrong_body")], False, None, "response is not ComfyUI /system_stats", False),
    ([("mapped", "reset")], False, None, "connection reset", False),
    # a timeout after a TCP success (HTTP hang) is not a firewall
    ([("direct", "timeout"), ("mapped", "http_timeout")], False, None,
     "direct 8188: TCP connection timeout; mapped 41234: HTTP timeout (no response)", False),
    # mixed failures name each candidate
    ([("direct", "refused"), ("mapped", "http_error"), ("fallback", "timeout")], False, None,
     "direct 8188: TCP connection refused; mapped 41234: HTTP 500; "
     "fallback 41235: TCP connection timeout", False),
    ([], False, None, NO_CANDIDATES_ERROR, False),
]


@pytest.mark.parametrize(("rows", "success", "kind", "error", "firewall"), CASES)
def test_classify_probe_table(rows, success, kind, error, firewall):
    pv = classify_probe([r(k, o) for k, o in rows])
    assert pv.success is success
    assert pv.kind == kind
    assert pv.error == error
    assert pv.firewall is firewall
    if success:
        assert pv.port == PORTS[kind]
        assert pv.connection_url == f"http://{A}:{PORTS[kind]}"
    else:
        assert pv.port is None and pv.connection_url is None
    assert [c.kind for c in pv.candidates] == [k for k in ("direct", "mapped", "fallback")
                                               if k in {k2 for k2, _ in rows}]


@pytest.mark.parametrize("outcome",
                         ["refused", "timeout", "reset", "http_error", "wrong_body", "http_timeout"])
def test_tcp_success_never_masks_http_failure(outcome):
    """Whatever failed, a connected-but-failing candidate is never the winner."""
    pv = classify_probe([r("direct", outcome), r("mapped", "refused")])
    assert not pv.success


def test_ipv6_url_is_bracketed():
    res = ProbeResult("mapped", 41234, "2606:4700::1", "ok", "done", 1.0, tcp_ms=0.5, http_status=200)
    assert classify_probe([res]).connection_url == "http://[2606:4700::1]:41234"


def test_to_dict_is_small_json():
    pv = classify_probe([r("direct", "refused"), r("mapped", "ok")])
    d = pv.to_dict()
    assert d["success"] is True and d["kind"] == "mapped" and d["port"] == 41234
    assert d["candidates"][0] == {"kind": "direct", "port": 8188, "outcome": "refused", "stage": "tcp",
                                  "ms": 2.0, "detail": "TCP connection refused"}


def test_unsafe_validation_probes_nothing():
    exc = UnsafeTarget("refusing", address="127.0.0.1", reason="loopback address")
    pv = unsafe_validation([Candidate("direct", "127.0.0.1", 8188)], exc)
    assert not pv.success
    assert pv.error == "Unsafe target refused: loopback address"
    assert [c.outcome for c in pv.candidates] == ["unsafe"]


@pytest.mark.parametrize(
    ("pv", "level", "line"),
    [
        (PortValidation(True, 8188, "direct", "http://a:8188"), logging.INFO,
         "✅ Port 8188 (direct) validated and accessible"),
        (PortValidation(True, 41234, "mapped", "http://a:41234"), logging.INFO,
         "✅ Port 41234 (mapped) validated and accessible"),
        (PortValidation(False, error="TCP connection timeout"), logging.WARNING,
         "⚠️  Port validation failed: TCP connection timeout"),
        (PortValidation(False, error=FIREWALL_ERROR), logging.WARNING,
         "⚠️  Port validation failed: All ports blocked - firewall detected"),
    ],
)
def test_guide_log_lines(caplog, pv, level, line):
    caplog.set_level(logging.INFO, logger="vastkeep.ports")
    log_validation(pv, "7")
    assert [(rec.levelno, rec.getMessage()) for rec in caplog.records] == [(level, line)]
    assert caplog.records[0].instance_id == "7"


def test_no_ports_reported_yet_is_info_not_the_alert_line(caplog):
    """Normal provisioning (the provider has not reported ports yet) must not print the alert line."""
    caplog.set_level(logging.DEBUG, logger="vastkeep.ports")
    pv = classify_probe([])
    assert pv.error == NO_CANDIDATES_ERROR
    log_validation(pv, "7")
    assert [(rec.levelno, rec.getMessage()) for rec in caplog.records] == [
        (logging.INFO, "⏳ No ComfyUI port reported by the provider yet; nothing to probe (instance 7)")]
    assert caplog.records[0].instance_id == "7"
    assert not any("Port validation failed" in m for m in caplog.messages)


def test_no_ports_reported_yet_through_the_validator_is_info(caplog):
    """The same through PortValidator (what validate_instance and the pool sweep call), with no probe."""
    caplog.set_level(logging.DEBUG, logger="vastkeep.ports")
    for ports in ({}, None, {"22/tcp": 41231}):
        pv = PortValidator().validate(derive_candidates("203.0.113.7", ports), "8")
        assert not pv.success and pv.error == NO_CANDIDATES_ERROR
    assert not any("Port validation failed" in m for m in caplog.messages)
    assert [r.levelno for r in caplog.records] == [logging.INFO] * 3


@pytest.mark.parametrize(
    ("doc", "ok"),
    [({"system": {"os": "posix"}, "devices": []}, True), ({"system": {}, "devices": [{}]}, True),
     ({"system": [], "devices": []}, False), ({"devices": []}, False), ({"system": {}}, False),
     ([], False), ("system", False), (None, False), ({"system": {}, "devices": {}}, False)],
)
def test_comfyui_shape(doc, ok):
    assert is_comfyui_stats(doc) is ok


@pytest.mark.parametrize(("rows", "known", "hang", "firewall"), [
    # a port that validated before and now times out (at TCP: the accept queue is full) is a hang
    ([("direct", "timeout"), ("mapped", "timeout"), ("fallback", "timeout")], [f"{A}:41234"], True, False),
    ([("mapped", "http_timeout")], [f"{A}:41234"], True, False),  # connected, then no answer
    # never validated: the guide's firewall rule stands
    ([("direct", "timeout"), ("mapped", "timeout"), ("fallback", "timeout")], [], False, True),
    # validated before, but another address: nothing says it is the same service
    ([("direct", "timeout"), ("mapped", "timeout")], ["198.51.100.1:41234"], False, True),
    # a refusal is not a hang (the process is gone)
    ([("direct", "timeout"), ("mapped", "refused")], [f"{A}:41234"], False, False),
])
def test_a_hang_is_not_a_firewall(rows, known, hang, firewall):
    pv = classify_probe([r(k, o) for k, o in rows], known)
    assert (pv.hang, pv.firewall, pv.success) == (hang, firewall, False)
    if hang:
        assert pv.error == HANG_ERROR and pv.to_dict()["hang"] is True


def test_known_good_comes_from_the_last_validated_url():
    from vastkeep.ports.validator import known_good  # noqa: PLC0415
    from vastkeep.state.store import InstanceRecord  # noqa: PLC0415

    assert known_good(InstanceRecord("1", connection_url=f"http://{A}:41234")) == (f"{A}:41234",)
    v6 = InstanceRecord("1", connection_url="http://[2606:4700::1]:8188")
    assert known_good(v6) == ("2606:4700::1:8188",)
    assert known_good(InstanceRecord("1")) == ()
