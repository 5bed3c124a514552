"""Configuration mistakes that do not fail validation but make the product quietly wrong, in plain words.

``VAST_API_URL=http://host:port`` is a valid URL, so settings accept it, and then every Vast.ai call
answers 404 and the token reads "unknown: unexpected HTTP 404". ``VASTKEEP_SIMULATED=1`` beside a real
``VAST_API_KEY`` is allowed (it is how a stand-in of the API on this machine is tested) but opens
loopback probing against whatever the API reports. These pure functions say what is likely wrong; the
token checks, ``vastkeep up`` and ``vastkeep check`` show their words.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

VAST_API_PATH = "/api/v0"
REAL_VAST_API_URL = "https://console.vast.ai/api/v0"
_DOCUMENTED = {
    "vastai": ("VAST_API_URL", REAL_VAST_API_URL),
    "huggingface": ("HUGGINGFACE_API_URL", "https://huggingface.co"),
    "civitai": ("CIVITAI_API_URL", "https://civitai.com"),
}


def shown_url(url: str) -> str:
    """``url`` fit to show: scheme, host, port and path only (no credentials, query or fragment)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", "")) or "(empty)"
    except ValueError:
        return "<unparseable url>"


def vast_api_url_problem(url: str) -> str | None:
    """Why ``VAST_API_URL`` is likely wrong (its path does not end with /api/v0), or None."""
    try:
        path = urlsplit(url.strip()).path.rstrip("/")
    except ValueError:
        return f"VAST_API_URL is not a URL; it should look like {REAL_VAST_API_URL}"
    if path.endswith(VAST_API_PATH):
        return None
    return (f"VAST_API_URL should end with {VAST_API_PATH} (e.g. {REAL_VAST_API_URL}); "
            f"it is {shown_url(url)}, so every Vast.ai call answers 404")


def not_found_hint(service: str, base_url: str) -> str:
    """What a 404 from a token check most likely means: the service's base URL is wrong."""
    if service == "vastai":
        problem = vast_api_url_problem(base_url)
        if problem is not None:
            return problem
    variable, documented = _DOCUMENTED.get(service, ("the API URL", ""))
    usual = f"; the real one is {documented}" if documented else ""
    return f"check {variable}: it is {shown_url(base_url)}{usual}"


SIMULATED_WITH_REAL_KEY = (
    "VASTKEEP_SIMULATED=1 with a real VAST_API_KEY: port probes may connect to loopback addresses "
    "(127.0.0.0/8) that the Vast.ai API reports. Keep it only for a stand-in of the API on this machine; "
    "unset VASTKEEP_SIMULATED for the real cloud.")


def config_warnings(settings: object) -> list[tuple[bool, str]]:
    """``(fatal, text)`` for each likely mistake in ``settings``; fatal ones break every Vast.ai call.

    The simulated cloud of ``vastkeep up`` (VAST_API_KEY unset) is not a mistake: nothing is said.
    """
    out: list[tuple[bool, str]] = []
    if getattr(settings, "vast_api_key", None) is not None:
        problem = vast_api_url_problem(str(getattr(settings, "vast_api_url", "")))
        if problem is not None:
            out.append((True, problem))
        if getattr(settings, "vastkeep_simulated", False):
            out.append((False, SIMULATED_WITH_REAL_KEY))
    return out


def vast_mode(settings: object) -> str:
    """How ``vastkeep up`` talks to Vast.ai with these settings: "real", "simulated" or "stand-in"."""
    if getattr(settings, "vast_api_key", None) is None:
        return "simulated"
    return "stand-in" if getattr(settings, "vastkeep_simulated", False) else "real"
