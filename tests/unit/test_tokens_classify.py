"""Table-driven tests of the pure token-check classification and runtime-token input checks."""

from __future__ import annotations

import json

import pytest
import requests

from vastkeep.tokens.checks import (
    CIVITAI,
    HUGGINGFACE,
    SERVICES,
    VASTAI,
    check_specs,
    classify,
    describe_exception,
    token_problem,
    unconfigured_result,
)

T = "2026-01-01T00:00:00.000Z"
HF_OK = json.dumps({"type": "user", "name": "alice", "auth": {"type": "access_token"}})
CIVITAI_OK = json.dumps({"id": 1, "username": "bob", "tier": "free", "status": "active"})
VAST_OK = json.dumps({"instances": []})
GOOD_BODY = {VASTAI: VAST_OK, HUGGINGFACE: HF_OK, CIVITAI: CIVITAI_OK}

# (service, status, body, expected status word, expected valid, expected error (None: no error key))
STATUS_TABLE = [
    *[(s, 401, '{"error":"Unauthorized"}', "invalid", False, "Token authentication failed (401)")
      for s in SERVICES],
    *[(s, 403, "", "invalid", False, "Token authentication failed (403)") for s in SERVICES],
    *[(s, 429, "API requests too frequent", "unknown", None, "rate limited (429)") for s in SERVICES],
    *[(s, 500, "", "unknown", None, "server error (500)") for s in SERVICES],
    *[(s, 502, "<html>bad gateway</html>", "unknown", None, "server error (502)") for s in SERVICES],
    *[(s, 503, "", "unknown", None, "server error (503)") for s in SERVICES],
    *[(s, 404, "not found", "unknown", None, "unexpected HTTP 404") for s in SERVICES],
    *[(s, 400, "{}", "unknown", None, "unexpected HTTP 400") for s in SERVICES],
    *[(s, 302, "", "unknown", None, "unexpected HTTP 302") for s in SERVICES],
    *[(s, 200, GOOD_BODY[s], "valid", True, None) for s in SERVICES],
    *[(s, 200, "<html>login</html>", "unknown", None, "malformed response body (HTTP 200)")
      for s in SERVICES],
    *[(s, 200, "", "unknown", None, "malformed response body (HTTP 200)") for s in SERVICES],
    *[(s, 200, "[1, 2]", "unknown", None, "malformed response body (HTTP 200)") for s in SERVICES],
    *[(s, 200, "{}", "unknown", None, "unexpected response shape (HTTP 200)") for s in SERVICES],
    (VASTAI, 200, '{"instances": {}}', "valid", True, None),
    (VASTAI, 200, '{"instances": null}', "unknown", None, "unexpected response shape (HTTP 200)"),
    (HUGGINGFACE, 200, '{"name": "  "}', "unknown", None, "unexpected response shape (HTTP 200)"),
    (HUGGINGFACE, 200, '{"name": 5}', "unknown", None, "unexpected response shape (HTTP 200)"),
    (CIVITAI, 200, '{"id": 7}', "valid", True, None),
    (CIVITAI, 200, '{"error": "Unauthorized", "id": null}', "unknown", None,
     "unexpected response shape (HTTP 200)"),
    (HUGGINGFACE, 200, b"\xff\xfe\x00garbage", "unknown", None, "malformed response body (HTTP 200)"),
]


@pytest.mark.parametrize(("service", "status", "body", "word", "valid", "error"), STATUS_TABLE)
def test_classify_status_table(service, status, body, word, valid, error) -> None:
    result = classify(service, tested_at=T, status=status, body=body)
    assert result["status"] == word
    assert result["valid"] is valid
    assert result["configured"] is True
    assert result["testedAt"] == T
    if error is None:
        assert "error" not in result
    else:
        assert result["error"] == error
    if status != 200:
        assert result["httpStatus"] == status


@pytest.mark.parametrize(("service", "user"), [(VASTAI, None), (HUGGINGFACE, "alice"), (CIVITAI, "bob")])
def test_valid_result_carries_user_name(service, user) -> None:
    result = classify(service, tested_at=T, status=200, body=GOOD_BODY[service])
    assert result == {"valid": True, "status": "valid", "configured": True, "testedAt": T,
                      **({"user": user} if user else {})}


@pytest.mark.parametrize(("error", "reason"), [
    (requests.ConnectTimeout("http://x/?token=SECRET"), "connect timeout"),
    (requests.ReadTimeout("http://x/?token=SECRET"), "read timeout"),
    (requests.ConnectionError("http://x/?token=SECRET refused"), "connection error"),
    (requests.exceptions.SSLError("bad cert http://x/?token=SECRET"), "TLS error"),
    (requests.TooManyRedirects("http://x/?token=SECRET"), "too many redirects"),
    (requests.exceptions.ChunkedEncodingError("SECRET"), "request failed (ChunkedEncodingError)"),
    (TimeoutError("SECRET"), "read timeout"),
    (ConnectionResetError("SECRET"), "connection error"),
    ("timed out after 2s", "timed out after 2s"),
])
@pytest.mark.parametrize("service", SERVICES)
def test_transport_errors_are_unknown_and_secret_free(service, error, reason) -> None:
    result = classify(service, tested_at=T, error=error)
    assert result == {"valid": None, "status": "unknown", "configured": True, "testedAt": T, "error": reason}
    assert "SECRET" not in json.dumps(result)


def test_error_wins_over_status() -> None:
    # A body read that failed after a 200 header is still unknown, never valid.
    result = classify(HUGGINGFACE, tested_at=T, status=200, body=HF_OK, error="response body too large")
    assert result["status"] == "unknown" and result["error"] == "response body too large"


def test_describe_exception_never_uses_the_message() -> None:
    assert "SECRET" not in describe_exception(requests.RequestException("https://h/?key=SECRET"))


def test_unconfigured_shape() -> None:
    assert unconfigured_result() == {"valid": None, "status": "unconfigured", "configured": False,
                                     "error": "not configured"}


def test_check_specs_paths() -> None:
    specs = check_specs("http://v/api/v0/", "http://hf", "http://cv/")
    assert specs[VASTAI].url == "http://v/api/v0/instances?owner=me"
    assert specs[HUGGINGFACE].url == "http://hf/api/whoami-v2"
    assert specs[CIVITAI].url == "http://cv/api/v1/me"


@pytest.mark.parametrize(("value", "problem"), [
    ("hf_abcDEF123", None),
    ("a" * 4096, None),
    ("a" * 4097, "token is longer than 4096 bytes"),
    ("", "token is empty"),
    ("   ", "token is empty"),
    ("\t\n", "token is empty"),
    (" tok", "token has leading or trailing whitespace"),
    ("tok\n", "token has leading or trailing whitespace"),
    ("to\x00k", "token contains whitespace or control characters"),
    ("to\rk", "token contains whitespace or control characters"),
    ("to k", "token contains whitespace or control characters"),
    ("to\x7fk", "token contains whitespace or control characters"),
    ("to\x85k", "token contains whitespace or control characters"),
    ("tøk", "token contains non-ASCII characters"),
    (None, "token must be a string"),
    (123, "token must be a string"),
    (["tok"], "token must be a string"),
])
def test_token_problem_table(value, problem) -> None:
    assert token_problem(value) == problem
