"""How one variable is described, parsed, shown and explained when it is wrong.

Pure: a raw string in, a typed value (or a ``ValueError`` whose text is the *problem*) out. Secrets come back
as plain strings; :func:`vastkeep.core.settings.load_settings` wraps them in ``Secret`` at once.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vastkeep.core.redact import HTTP_SCHEMES, redact_bad_url, redact_url


@dataclass(frozen=True)
class Spec:
    """One variable: name, kind, default, what it means, and its bounds or allowed values."""

    name: str
    kind: str  # ms|count|seconds|port|bool|url|host|choice|level|secret|path|float|name|text
    default: object
    meaning: str
    lo: int = 1
    hi: int = 10**9
    extra: tuple[str, ...] = ()  # url schemes, or choices


_TRUE = ("1", "true", "yes", "on", "y")
_FALSE = ("0", "false", "no", "off", "n")
_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]{1,63})*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TEXT_MAX_CHARS = 4096
_ENCODE_HINT = "percent-encode '/', '@', ':', '?' and '#' in a password, e.g. '/' as %2F"


# ── messages ─────────────────────────────────────────────────────────────────
def expected(spec: Spec) -> str:
    """The ``expected ...`` half of an error message: the form the variable takes, with an example."""
    ex = spec.default if spec.default is not None else {"count": 5, "ms": 30000}.get(spec.kind)
    if spec.kind == "ms":
        return f"expected milliseconds as a whole number, e.g. {ex}"
    if spec.kind == "seconds":
        return f"expected seconds as a whole number, e.g. {ex}"
    if spec.kind == "count":
        return f"expected a whole number, e.g. {ex}"
    if spec.kind == "port":
        return f"expected a TCP port number 1..65535, e.g. {ex}"
    if spec.kind == "bool":
        return "expected one of true/false, 1/0, yes/no, on/off"
    if spec.kind == "url":
        eg = "redis://127.0.0.1:6379/0" if "redis" in spec.extra else spec.default
        return f"expected a URL starting with {' or '.join(s + '://' for s in spec.extra)}, e.g. {eg}"
    if spec.kind in ("choice", "level"):
        return f"expected one of {', '.join(spec.extra)}"
    if spec.kind == "host":
        return "expected an IP address or host name, e.g. 127.0.0.1"
    if spec.name == "FLOWER_BASIC_AUTH":
        return "expected user:password"
    if spec.kind == "float":
        return f"expected a number from {spec.lo} to {spec.hi}, e.g. {ex}"
    if spec.kind == "name":
        return f"expected 1-64 letters, digits, '_', '.' or '-' (no ':'), e.g. {ex}"
    if spec.kind == "text":
        return f"expected text of at most {TEXT_MAX_CHARS} characters" + (f", e.g. {ex}" if ex else "")
    return "expected a path"


def shown(spec: Spec, value: object) -> object:
    """A value as it may be printed: secrets masked, URL passwords redacted, paths as text."""
    if value is None:
        return None
    if spec.kind == "secret":
        return "***"
    if spec.kind == "url" and isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Path):
        return str(value)
    return value


def problem(spec: Spec, raw: str, exc: ValueError) -> str:
    """One error line: the variable, its value as it may be shown, the problem and the expected form."""
    if spec.kind == "secret":
        value = "<secret>"
    elif spec.kind == "url":
        value = repr(redact_bad_url(raw))
    else:
        value = repr(shown(spec, raw))
    hint = f" ({_ENCODE_HINT})" if spec.kind == "url" and "@" in raw else ""
    return f"{spec.name}={value} {exc}{hint}; {expected(spec)}"


# ── parsing ──────────────────────────────────────────────────────────────────
def _parse_int(spec: Spec, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError("is not an integer") from None
    if value < spec.lo:
        raise ValueError("must be positive (> 0)" if spec.lo == 1 and value <= 0
                         else f"is below the minimum {spec.lo}")
    if value > spec.hi:
        raise ValueError(f"is out of range (allowed {spec.lo}..{spec.hi})")
    return value


def _parse_url(spec: Spec, raw: str) -> str:
    try:
        parts = urlsplit(raw.strip())
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in spec.extra:
        raise ValueError(f"has scheme {parts.scheme or 'none'!r}, which is not allowed")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("has no host")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError("has no socket path")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return raw.strip().rstrip("/") if parts.scheme in HTTP_SCHEMES else raw.strip()


def parse(spec: Spec, raw: str) -> str | int | float | bool | Path:
    """One raw string → typed value (a secret stays a ``str``), or ``ValueError(problem)``."""
    kind = spec.kind
    if kind in ("ms", "count", "seconds", "port"):
        return _parse_int(spec, raw)
    if kind == "bool":
        low = raw.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError("is not a boolean")
    if kind == "url":
        return _parse_url(spec, raw)
    if kind == "host":
        host = raw.strip()
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOST_RE.match(host):
                raise ValueError("is not an IP address or host name") from None
        return host
    if kind in ("choice", "level"):
        value = raw.strip().lower() if kind == "choice" else raw.strip().upper()
        if value not in spec.extra:
            raise ValueError("is not a known value")
        return value
    if kind == "secret":
        if spec.name == "FLOWER_BASIC_AUTH" and (":" not in raw or raw.startswith(":")):
            raise ValueError("is not in the form user:password")
        return raw
    if kind == "path":
        return Path(raw.strip()).expanduser()
    if kind == "float":
        try:
            number = float(raw.strip())
        except ValueError:
            raise ValueError("is not a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("is not a finite number")
        if number < spec.lo or number > spec.hi:
            raise ValueError(f"is out of range (allowed {spec.lo}..{spec.hi})")
        return number
    if kind == "name":
        if not _NAME_RE.match(raw.strip()):
            raise ValueError("is not a plain name")
        return raw.strip()
    if kind == "text":
        if len(raw) > TEXT_MAX_CHARS:
            raise ValueError(f"is longer than {TEXT_MAX_CHARS} characters")
        return raw.strip()
    return raw  # pragma: no cover - every kind is handled above


__all__ = ["HTTP_SCHEMES", "TEXT_MAX_CHARS", "Spec", "expected", "parse", "problem", "shown"]
