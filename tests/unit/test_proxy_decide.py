"""The proxy's pure decisions and the endpoint token's pure parts, table-driven."""

from __future__ import annotations

import json

import pytest

from vastkeep.proxy import endpoints
from vastkeep.proxy.decide import (
    Candidate,
    is_upload,
    may_start,
    pick_instance,
    request_headers,
    response_headers,
    split_base,
    upstream_url,
)
from vastkeep.proxy.resolve import safe_base

A, B, C = Candidate("1", "http://127.0.0.1:1"), Candidate("2", "http://127.0.0.2:1"), Candidate("3", "x")


@pytest.mark.parametrize(("in_flight", "served", "picked"), [
    ({}, {}, "1"),                                  # all idle: lowest id
    ({"1": 2, "2": 1, "3": 1}, {}, "2"),            # fewest in flight
    ({"1": 1, "2": 1, "3": 1}, {"2": 5, "3": 4}, "1"),  # a tie: served least
    ({"1": 1, "2": 0, "3": 0}, {"2": 9, "3": 3}, "3"),
])
def test_pick_instance_takes_the_shortest_queue(in_flight, served, picked):
    assert pick_instance([A, B, C], in_flight, served).instance_id == picked


def test_pick_instance_of_nothing_is_none():
    assert pick_instance([], {}, {}) is None


@pytest.mark.parametrize(("method", "tail", "upload"), [
    ("POST", "upload/image", True), ("POST", "api/upload/image", True), ("POST", "upload/mask", True),
    ("GET", "upload/image", False), ("POST", "prompt", False), ("POST", "api/upload/imagex", False),
])
def test_is_upload(method, tail, upload):
    assert is_upload(method, tail) is upload


@pytest.mark.parametrize(("base", "tail", "query", "url"), [
    ("http://h:1", "prompt", "", "http://h:1/prompt"),
    ("http://h:1/", "/view", "filename=a%20b.png", "http://h:1/view?filename=a%20b.png"),
    ("http://h:1", "", "", "http://h:1/"),
    ("http://h:1", "//evil.example/x", "", "http://h:1/evil.example/x"),  # never an authority
])
def test_upstream_url(base, tail, query, url):
    assert upstream_url(base, tail, query) == url


def test_headers_that_cross():
    sent = request_headers([("Host", "p"), ("X-Admin-Key", "k"), ("Connection", "keep-alive"),
                            ("Content-Type", "application/json"), ("Cookie", "c"), ("Accept", "a"),
                            ("Transfer-Encoding", "chunked"), ("Authorization", "Bearer t")])
    assert sent == [("Content-Type", "application/json"), ("Accept", "a")]
    back = response_headers([("Content-Length", "5"), ("Content-Type", "image/png"), ("Connection", "close"),
                             ("Content-Encoding", "gzip"), ("Set-Cookie", "a=b")])
    assert back == [("Content-Type", "image/png"), ("Content-Encoding", "gzip"), ("Set-Cookie", "a=b")]


@pytest.mark.parametrize(("url", "simulated", "base"), [
    ("http://127.0.0.5:8188", True, "http://127.0.0.5:8188"),
    ("http://127.0.0.5:8188", False, None),           # loopback only in simulation
    ("http://10.0.0.1:8188", True, None),             # private space: never
    ("http://169.254.169.254", True, None),           # the metadata service: never
    ("http://8.8.8.8:40123", False, "http://8.8.8.8:40123"),
    ("http://comfy.example:8188", False, None),        # a name: refused, only judged addresses
    ("ftp://8.8.8.8:21", False, None),
    ("http://8.8.8.8:1/sub", False, None),
    (None, True, None),
])
def test_safe_base_applies_the_ssrf_guard(url, simulated, base):
    assert safe_base(url, simulated=simulated) == base


def test_split_base_rejects_bad_ports():
    assert split_base("http://1.2.3.4:99999") is None
    assert split_base("https://1.2.3.4") == ("https", "1.2.3.4", 443)


@pytest.mark.parametrize(("n", "limit", "ok"), [(0, 1, True), (1, 1, False), (31, 32, True), (32, 32, False)])
def test_may_start(n, limit, ok):
    assert may_start(n, limit) is ok


def test_tokens_are_redacted_everywhere_in_a_line():
    t = endpoints.new_token()
    assert endpoints.is_token(t) and not endpoints.is_token(t + "x")
    assert not endpoints.is_token("lse_" + t[4:])
    line = f'127.0.0.1 "GET /c/{t}/view?x=1" 200 then http://h/c/{t}/'
    assert endpoints.redact(line) == '127.0.0.1 "GET /c/ept_***/view?x=1" 200 then http://h/c/ept_***/'
    assert endpoints.endpoint_url("http://p:1/", t) == f"http://p:1/c/{t}/"


@pytest.mark.parametrize(("entry", "now", "until"), [
    ({"state": "active", "fence": 7, "until": 100.0}, 50.0, 100.0),
    ({"state": "active", "fence": 8, "until": 100.0}, 50.0, None),   # the instance was leased again
    ({"state": "ended", "fence": 7, "until": 100.0}, 50.0, None),    # released
    ({"state": "active", "fence": 7, "until": 100.0}, 100.0, None),  # expired
    ({"state": "active", "fence": "x", "until": 100.0}, 50.0, None),
    (None, 50.0, None),
])
def test_a_token_resolves_only_while_its_grant_is_the_live_lease(entry, now, until):
    grant = endpoints.Grant("default", "5", 7)
    raw = None if entry is None else json.dumps(entry)
    assert endpoints.lease_matches(raw, grant, now) == until
