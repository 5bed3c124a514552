"""Layer 2, the three token checks: one real API call per service and a pure classification.

A token check has three honest outcomes, not two. 401/403 means the provider rejected the token
("invalid"); a timeout, 429, 5xx, refused connection or an answer we cannot parse says nothing about
the token ("unknown") and must never be reported as invalid, or a provider outage would stop renting
and page someone about a token that is fine. :func:`classify` turns (status, body, exception) into a
result dict and is pure, so the whole decision table is tested without a network.

No secret reaches a result, a log line or an exception: errors name status codes and failure kinds,
never response bodies (a provider may echo the header) and never ``str(exc)`` of requests (it embeds
the URL).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import requests

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.config_hints import not_found_hint
from vastkeep.core.errors import MalformedResponse, NetworkError
from vastkeep.core.settings import Secret
from vastkeep.providers.deadline import call_deadline, watch_session
from vastkeep.providers.http import (
    DEADLINE_EXCEEDED,
    DEFAULT_MAX_BODY_BYTES,
    make_session,
    read_body,
    safe_url,
)

log = logging.getLogger("vastkeep.tokens")

VASTAI, HUGGINGFACE, CIVITAI = "vastai", "huggingface", "civitai"
SERVICES: tuple[str, ...] = (VASTAI, HUGGINGFACE, CIVITAI)



class TokenStatus(StrEnum):
    """A token check's verdict in a word: a result's ``status``, cached and answered as these strings."""

    VALID = "valid"
    INVALID = "invalid"
    UNKNOWN = "unknown"
    UNCONFIGURED = "unconfigured"


VALID, INVALID, UNKNOWN, UNCONFIGURED = (TokenStatus.VALID, TokenStatus.INVALID, TokenStatus.UNKNOWN,
                                         TokenStatus.UNCONFIGURED)
#: One check's result as cached and answered: ``valid``, ``status``, ``configured``, ``testedAt``, and
#: ``error``/``httpStatus``/``user``/``hint`` when they apply (plain JSON values).
TokenResult = dict[str, object]
MAX_BODY_BYTES = DEFAULT_MAX_BODY_BYTES  # the Vast.ai check reads the instance list, as the client does
USER_AGENT = "vastkeep-token-check/1"


@dataclass(frozen=True)
class CheckSpec:
    """Where a service's token is checked: ``base_url`` + ``path`` with a Bearer header."""

    service: str
    base_url: str
    path: str

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.path


def check_specs(vast_api_url: str, huggingface_api_url: str, civitai_api_url: str) -> dict[str, CheckSpec]:
    """One authenticated "who am I" call per service, against the configured (or simulated) base URLs."""
    return {
        VASTAI: CheckSpec(VASTAI, vast_api_url, "/instances?owner=me"),
        HUGGINGFACE: CheckSpec(HUGGINGFACE, huggingface_api_url, "/api/whoami-v2"),
        CIVITAI: CheckSpec(CIVITAI, civitai_api_url, "/api/v1/me"),
    }


# ── pure classification ─────────────────────────────────────────────────────
def unconfigured_result() -> TokenResult:
    """A service without a token: not an error, and not a reason to fail the other checks."""
    return {"valid": None, "status": UNCONFIGURED, "configured": False, "error": "not configured"}


def describe_exception(exc: BaseException) -> str:
    """A short, secret-free name for a transport failure (requests' own text embeds the URL)."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.ReadTimeout | TimeoutError):
        return "read timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.ConnectionError | ConnectionError):
        return "connection error"
    if isinstance(exc, requests.TooManyRedirects):
        return "too many redirects"
    return f"request failed ({type(exc).__name__})"


def _parse_json_object(body: bytes | str | None) -> dict[str, object] | None:
    """The body as a JSON object, or None when it is empty, not JSON, or not an object."""
    if body is None:
        return None
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else None


def _clean_name(value: object) -> str | None:
    """A user name fit to show: a non-empty single-line string of sane length, else None."""
    if not isinstance(value, str):
        return None
    name = value.strip()
    if not name or len(name) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return None
    return name


def _valid_body(service: str, obj: dict[str, object]) -> tuple[bool, str | None]:
    """Does a 2xx body have the shape the service documents? Returns (shape ok, user name)."""
    if service == VASTAI:
        return isinstance(obj.get("instances"), list | dict), None
    if service == HUGGINGFACE:
        name = _clean_name(obj.get("name"))
        return name is not None, name
    if service == CIVITAI:
        name = _clean_name(obj.get("username"))
        return ("id" in obj or name is not None) and "error" not in obj, name
    return False, None


def classify(
    service: str,
    *,
    tested_at: str | None,
    status: int | None = None,
    body: bytes | str | None = None,
    error: BaseException | str | None = None,
) -> TokenResult:
    """(HTTP status, body) or a transport error → the result dict of one token check.

    ``valid`` is True / False / None (unknown), ``status`` says which in a word. Only 401/403 mean
    invalid; a 2xx whose body lacks the documented shape is unknown (a captive portal or a proxy's
    error page answers 200 too). ``error`` may be an exception or
    a ready description (e.g. our own deadline).
    """
    base: TokenResult = {"configured": True, "testedAt": tested_at}

    def unknown(why: str, http_status: int | None = None) -> TokenResult:
        out: TokenResult = {"valid": None, "status": UNKNOWN, **base, "error": why}
        if http_status is not None:
            out["httpStatus"] = http_status
        return out

    if error is not None or status is None:
        if isinstance(error, BaseException):
            return unknown(describe_exception(error))
        return unknown(str(error) if error else "no response")
    if status in (401, 403):
        return {"valid": False, "status": INVALID, **base,
                "error": f"Token authentication failed ({status})", "httpStatus": status}
    if status == 429:
        return unknown("rate limited (429)", status)
    if 500 <= status <= 599:
        return unknown(f"server error ({status})", status)
    if not 200 <= status <= 299:
        return unknown(f"unexpected HTTP {status}", status)
    obj = _parse_json_object(body)
    if obj is None:
        return unknown(f"malformed response body (HTTP {status})", status)
    shape_ok, user = _valid_body(service, obj)
    if not shape_ok:
        return unknown(f"unexpected response shape (HTTP {status})", status)
    out: TokenResult = {"valid": True, "status": VALID, **base}
    if user is not None:
        out["user"] = user
    return out


# ── the HTTP call ───────────────────────────────────────────────────────────
def run_check(
    spec: CheckSpec,
    token: Secret,
    *,
    timeout_s: float,
    tested_at: Callable[[], str | None],
    session_factory: Callable[[], requests.Session] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> TokenResult:
    """One real call with a Bearer header, ended after ``timeout_s`` in all; never raises for I/O failures.

    ``timeout_s`` bounds each socket read *and* the whole call, status line and headers included: the
    call runs under :func:`vastkeep.providers.deadline.call_deadline`, whose watchdog shuts the socket
    at the deadline, and the body is read by :func:`vastkeep.providers.http.read_body` against the same
    deadline (on ``clock.monotonic()``) and a size cap, so a provider that drips headers or bytes
    cannot hold the check (and its worker thread) past it. No retry here on purpose: an unknown result
    is re-checked by the next periodic run, and a retry inside the check would eat the caller's
    deadline. ``tested_at`` is called when the answer arrives.
    """
    timed_out = f"timed out after {timeout_s:g}s"
    deadline = clock.monotonic() + timeout_s
    session = watch_session((session_factory or (lambda: make_session(USER_AGENT)))())
    try:
        with call_deadline(timeout_s) as call:
            try:
                response = session.get(
                    spec.url,
                    headers={"Authorization": f"Bearer {token.reveal()}", "Accept": "application/json"},
                    timeout=(min(timeout_s, 5.0), timeout_s),
                    allow_redirects=False,
                    stream=True,
                )
                try:
                    code = response.status_code
                    body = None
                    if 200 <= code <= 299:
                        body = read_body(response, deadline=deadline, clock=clock, limit_bytes=MAX_BODY_BYTES)
                    if call.expired:  # the socket was shut mid-body: what was read is not the answer
                        return classify(spec.service, tested_at=tested_at(), error=timed_out)
                    return with_hint(spec, classify(spec.service, tested_at=tested_at(), status=code,
                                                    body=body))
                finally:
                    response.close()
            except requests.RequestException as exc:
                if call.expired:
                    return classify(spec.service, tested_at=tested_at(), error=timed_out)
                log.debug("token check %s %s: %s", spec.service, safe_url(spec.url), describe_exception(exc))
                return classify(spec.service, tested_at=tested_at(), error=exc)
            except MalformedResponse as exc:  # larger than the cap, or undecodable
                why = "response body too large" if exc.data.get("reason") == "body too large" else \
                    "malformed response body"
                return classify(spec.service, tested_at=tested_at(), error=why)
            except NetworkError as exc:  # the body missed the deadline or broke off
                why = timed_out if call.expired or exc.data.get("reason") == DEADLINE_EXCEEDED \
                    else str(exc.data.get("reason"))
                return classify(spec.service, tested_at=tested_at(), error=why)
    except Exception as exc:  # noqa: BLE001 - a check must report unknown, not crash the others
        return classify(spec.service, tested_at=tested_at(), error=f"request failed ({type(exc).__name__})")
    finally:
        session.close()


def with_hint(spec: CheckSpec, result: TokenResult) -> TokenResult:
    """A 404 means the check's URL is wrong, not the token: say which setting (``hint`` and ``error``)."""
    if result.get("status") != UNKNOWN or result.get("httpStatus") != 404:
        return result
    hint = not_found_hint(spec.service, spec.base_url)
    return result | {"error": f"{result['error']}: {hint}", "hint": hint}


def token_problem(value: object, *, max_bytes: int = 4096) -> str | None:
    """Why a token given at runtime cannot be a token (None when it can): checked before any call."""
    if not isinstance(value, str):
        return "token must be a string"
    if not value.strip():
        return "token is empty"
    if value != value.strip():
        return "token has leading or trailing whitespace"
    if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        return f"token is longer than {max_bytes} bytes"
    if any(ord(c) < 33 or ord(c) == 127 or 0x80 <= ord(c) <= 0x9F for c in value):
        return "token contains whitespace or control characters"
    if not value.isascii():
        return "token contains non-ASCII characters"
    return None
