"""``SimControl``: the small client tests and benchmarks use to drive the simulator's ``/_sim`` API.

Every call has a timeout; the control token is sent as ``X-Sim-Token`` and never shown in a repr.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import requests


def _object(value: object, what: str) -> dict[str, object]:
    """``value`` when it is a JSON object; the simulator answers nothing else, so anything else is a bug."""
    if not isinstance(value, dict):
        raise RuntimeError(f"simulator control: {what} is a {type(value).__name__}, not an object")
    return value


def _objects(value: object, what: str) -> list[dict[str, object]]:
    """``value`` when it is a list of JSON objects."""
    if not isinstance(value, list):
        raise RuntimeError(f"simulator control: {what} is a {type(value).__name__}, not a list")
    return [_object(item, what) for item in value]


class SimControl:
    """Drive a running simulator: instances, faults (and their clearing), lifecycle, keys, request log."""

    def __init__(self, control_url: str, control_token: str, timeout_s: float = 30.0) -> None:
        self.control_url = control_url.rstrip("/")
        self._token = control_token
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"SimControl({self.control_url!r})"

    @classmethod
    def from_ready_file(cls, path: str | Path) -> SimControl:
        info = json.loads(Path(path).read_text())
        return cls(info["control_url"], info["control_token"])

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, object] | None = None,
        params: Mapping[str, str | int] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, object]:
        resp = self._session.request(
            method,
            self.control_url + path,
            json=body,
            params=params,
            headers={"X-Sim-Token": self._token},
            timeout=timeout_s or self.timeout_s,
        )
        if resp.status_code >= 400:
            raise RuntimeError(f"simulator control {method} {path} -> {resp.status_code}: {resp.text[:300]}")
        return _object(resp.json(), f"{method} {path}")

    def close(self) -> None:
        self._session.close()

    # ── whole simulator ─────────────────────────────────────────────────────
    def health(self) -> dict[str, object]:
        return self._call("GET", "/health")

    def reset(self) -> None:
        """Destroy every instance, clear every fault, restore default delays, keys and rent options."""
        self._call("POST", "/reset")

    def clear_faults(self) -> None:
        """Clear every fault (API, tokens, endpoints, fault states) but keep the instances."""
        self._call("POST", "/clear_faults")

    def set_lifecycle(self, **delays_s: float) -> dict[str, float]:
        """Default delays for new instances: created_s, loading_s, boot_s, stop_s, log_interval_s."""
        got = self._call("POST", "/lifecycle", delays_s)
        return {k: float(v) for k, v in got.items() if isinstance(v, int | float)}

    def set_rent_defaults(self, **options: object) -> dict[str, object]:
        """Options for instances rented through the Vast API: ssh, ssh_proxy, direct_8188, port_18188, ..."""
        return self._call("POST", "/rent_defaults", options)

    # ── instances ───────────────────────────────────────────────────────────
    def create_instance(self, **opts: object) -> dict[str, object]:
        """Create an instance (``running=True`` skips the lifecycle); returns the Vast API instance object.

        Options: running, ssh, ssh_proxy, direct_8188, port_18188, label, image, offer_id,
        ip_trailing_newline, lifecycle={created_s, loading_s, boot_s, stop_s, log_interval_s}.
        """
        return _object(self._call("POST", "/instances", opts)["instance"], "the instance")

    def bulk_create(self, count: int, timeout_s: float = 600.0, **opts: object) -> dict[str, object]:
        """Create ``count`` running instances at once (no SSH unless asked); returns ids and elapsed_s."""
        return self._call("POST", "/instances/bulk", {"count": count, **opts}, timeout_s=timeout_s)

    def instance(self, instance_id: int) -> dict[str, object]:
        """{"instance": API object, "sim": endpoints and faults, "log_path": host path of onstart.log}."""
        return self._call("GET", f"/instances/{instance_id}")

    def append_log(self, instance_id: int, *lines: str) -> None:
        self._call("POST", f"/instances/{instance_id}/log", {"lines": list(lines)})

    # ── instance fault states ───────────────────────────────────────────────
    def set_state(self, instance_id: int, state: str) -> dict[str, object]:
        """exited | offline | outbid | error, or running to clear."""
        return self._call("POST", f"/instances/{instance_id}/state", {"state": state})

    def exit_instance(self, instance_id: int) -> dict[str, object]:
        return self.set_state(instance_id, "exited")

    def host_offline(self, instance_id: int) -> dict[str, object]:
        return self.set_state(instance_id, "offline")

    def outbid(self, instance_id: int) -> dict[str, object]:
        return self.set_state(instance_id, "outbid")

    def error_instance(self, instance_id: int) -> dict[str, object]:
        return self.set_state(instance_id, "error")

    def restore_instance(self, instance_id: int) -> dict[str, object]:
        return self.set_state(instance_id, "running")

    # ── ComfyUI faults ──────────────────────────────────────────────────────
    def comfy(self, instance_id: int, mode: str, endpoint: str | None = None, delay_s: float = 0.0,
              status: int | None = None) -> dict[str, object]:
        """mode: up | crash | hang | slow (``delay_s``) | error500 (``status``) | wrong_body."""
        body: dict[str, object] = {"mode": mode, "delay_s": delay_s}
        if endpoint:
            body["endpoint"] = endpoint
        if status is not None:
            body["status"] = status
        return self._call("POST", f"/instances/{instance_id}/comfy", body)

    def set_prompt_s(self, instance_id: int, prompt_s: float) -> dict[str, object]:
        """How long this instance's ComfyUI works on each prompt (seconds, from the next prompt on)."""
        return self._call("POST", f"/instances/{instance_id}/comfy", {"prompt_s": prompt_s})

    def comfy_phases(self, instance_id: int, prompt_id: str | None = None) -> list[dict[str, object]]:
        """Each prompt's phases, oldest first: ``{"ts", "prompt_id", "phase", ...}`` with phase ``queued``,
        ``rejected``, ``execution_start``, ``executing`` (``node``, ``class_type``), ``hung``, ``resumed``,
        ``execution_success``, ``execution_error``, ``execution_interrupted``, ``done`` (``status``,
        ``elapsed_s``) or ``lost`` (``reason``: crash, exited, ...; ``node`` it was on)."""
        params = {"prompt_id": prompt_id} if prompt_id else None
        got = self._call("GET", f"/instances/{instance_id}/comfy", params=params)
        return _objects(got["phases"], "phases")

    def crash_comfy(self, instance_id: int, endpoint: str | None = None) -> dict[str, object]:
        """ComfyUI dies: connections refused, open ones reset."""
        return self.comfy(instance_id, "crash", endpoint)

    def hang_comfy(self, instance_id: int, endpoint: str | None = None) -> dict[str, object]:
        """ComfyUI accepts connections and never answers."""
        return self.comfy(instance_id, "hang", endpoint)

    def slow_comfy(self, instance_id: int, delay_s: float, endpoint: str | None = None) -> dict[str, object]:
        return self.comfy(instance_id, "slow", endpoint, delay_s)

    def comfy_error(self, instance_id: int, status: int = 500,
                    endpoint: str | None = None) -> dict[str, object]:
        """``GET /system_stats`` answers HTTP ``status`` (400..599); the TCP side and other routes work."""
        return self.comfy(instance_id, "error500", endpoint, status=status)

    def comfy_wrong_body(self, instance_id: int, endpoint: str | None = None) -> dict[str, object]:
        """``GET /system_stats`` answers 200 with JSON that is not ComfyUI's shape: ``{"ok": true}``."""
        return self.comfy(instance_id, "wrong_body", endpoint)

    def restore_comfy(self, instance_id: int, endpoint: str | None = None) -> dict[str, object]:
        """Back up: clears crash, hang, slow, error500 and wrong_body."""
        return self.comfy(instance_id, "up", endpoint)

    # ── TCP path faults ─────────────────────────────────────────────────────
    def net(self, instance_id: int, mode: str, endpoint: str | None = None) -> dict[str, object]:
        """mode: open | refuse | blackhole | reset | firewall (= blackhole). endpoint: 8188/tcp, 18188/tcp,
        direct, 22/tcp, ssh_proxy (None = all of them)."""
        body: dict[str, object] = {"mode": mode}
        if endpoint:
            body["endpoint"] = endpoint
        return self._call("POST", f"/instances/{instance_id}/net", body)

    def blackhole(self, instance_id: int, endpoint: str | None = None) -> dict[str, object]:
        return self.net(instance_id, "blackhole", endpoint)

    def reset_path(self, instance_id: int, endpoint: str | None = None) -> dict[str, object]:
        return self.net(instance_id, "reset", endpoint)

    def refuse(self, instance_id: int, endpoint: str | None = None) -> dict[str, object]:
        return self.net(instance_id, "refuse", endpoint)

    def firewall(self, instance_id: int, endpoint: str) -> dict[str, object]:
        return self.net(instance_id, "firewall", endpoint)

    def open_path(self, instance_id: int, endpoint: str | None = None) -> dict[str, object]:
        return self.net(instance_id, "open", endpoint)

    # ── SSH faults ──────────────────────────────────────────────────────────
    def kill_ssh_sessions(self, instance_id: int, endpoint: str | None = None) -> int:
        body: dict[str, object] = {"action": "kill_sessions"}
        if endpoint:
            body["endpoint"] = endpoint
        killed = self._call("POST", f"/instances/{instance_id}/ssh", body)["killed"]
        assert isinstance(killed, int)
        return killed

    def ssh_hang_after_banner(self, instance_id: int, endpoint: str | None = None) -> dict[str, object]:
        body: dict[str, object] = {"mode": "hang_after_banner"}
        if endpoint:
            body["endpoint"] = endpoint
        return self._call("POST", f"/instances/{instance_id}/ssh", body)

    def ssh_normal(self, instance_id: int, endpoint: str | None = None) -> dict[str, object]:
        body: dict[str, object] = {"mode": "normal"}
        if endpoint:
            body["endpoint"] = endpoint
        return self._call("POST", f"/instances/{instance_id}/ssh", body)

    # ── API faults and keys ─────────────────────────────────────────────────
    def api_fault(
        self,
        service: str = "all",
        status: int | None = None,
        count: int | None = None,
        delay_s: float = 0.0,
        path_contains: str | None = None,
        *,
        body: str | None = None,
        path_equals: str | None = None,
        method: str | None = None,
    ) -> list[dict[str, object]]:
        """Next ``count`` requests (None = until cleared) of ``service`` answer ``status`` and/or wait.

        ``status=200`` with a ``body`` answers that body (an ambiguous answer; see :meth:`ambiguous_answer`).
        """
        spec: dict[str, object] = {"service": service, "status": status, "count": count, "delay_s": delay_s,
                                "path_contains": path_contains}
        for name, value in (("body", body), ("path_equals", path_equals), ("method", method)):
            if value is not None:
                spec[name] = value
        return _objects(self._call("POST", "/api_faults", spec)["active"], "active faults")

    def ambiguous_answer(
        self, body: str = "", *, count: int | None = None, path_contains: str | None = None,
        path_equals: str | None = None, method: str | None = "GET", service: str = "vast",
    ) -> list[dict[str, object]]:
        """200 with ``body`` (``""``: an empty body; ``'{"instances": null}'``; ``'{"instances": []}'``...)
        for the matching requests: what a provider sends now and then, and a client must read as unknown."""
        return self.api_fault(service, 200, count, 0.0, path_contains, body=body, path_equals=path_equals,
                              method=method)

    def rate_limit_burst(self, count: int, service: str = "vast") -> list[dict[str, object]]:
        """429 ``API requests too frequent`` (plain text, no Retry-After) for the next ``count`` requests."""
        return self.api_fault(service, 429, count)

    def server_error_burst(
        self, count: int, status: int = 503, service: str = "vast"
    ) -> list[dict[str, object]]:
        return self.api_fault(service, status, count)

    def slow_api(
        self, delay_s: float, service: str = "all", count: int | None = None
    ) -> list[dict[str, object]]:
        return self.api_fault(service, None, count, delay_s)

    def bad_body(self, kind: str, count: int = 1, service: str = "vast",
                 path_contains: str | None = None) -> list[dict[str, object]]:
        """The next ``count`` answers are 200 with an ``empty`` or ``malformed`` (cut short) JSON body."""
        got = self._call("POST", "/api_faults", {"service": service, "body_kind": kind, "count": count,
                                                 "path_contains": path_contains})
        return _objects(got["active"], "active faults")

    def destroy_outside(self, instance_id: int) -> dict[str, object]:
        """Destroy an instance behind vastkeep's back (as the host or the web console would)."""
        return self._call("POST", f"/instances/{instance_id}/destroy")

    def ledger(self, since: int = 0) -> list[dict[str, object]]:
        """Every rent and destroy since ledger entry ``since`` (``seq``, ``action``, ``instance_id``,
        ``label``, ``via``: api / control / reset, ``ts``)."""
        return _objects(self._call("GET", f"/ledger?since={int(since)}")["entries"], "ledger entries")

    def clear_api_faults(self) -> None:
        self._call("DELETE", "/api_faults")

    def set_rate_limit(self, min_gap_s: float | None = None,
                       endpoints: dict[str, float] | None = None) -> dict[str, object]:
        """Vast.ai's minimum gap per endpoint and key: calls sooner answer 429 ``API requests too frequent:
        endpoint threshold=N``. ``min_gap_s`` for every endpoint (0 = off), ``endpoints`` per endpoint
        (``{"GET /instances": 1.0, "PUT /asks/{id}": 2.0}``, replacing earlier ones). Returns the rule's
        state: ``min_gap_s``, ``endpoints``, ``refused`` (429s answered so far)."""
        body: dict[str, object] = {}
        if min_gap_s is not None:
            body["min_gap_s"] = min_gap_s
        if endpoints is not None:
            body["endpoints"] = endpoints
        return self._call("POST", "/rate_limit", body)

    def rate_limit(self) -> dict[str, object]:
        """The minimum-gap rule in force and ``refused``, the number of 429s it answered."""
        return self._call("GET", "/rate_limit")

    def set_valid_tokens(self, **valid: str | list[str]) -> dict[str, object]:
        """Keys each service accepts from now on, e.g. ``hf=["hf_new"]``; ``hf=[]`` rejects every key."""
        return self._call("POST", "/tokens", {"valid": valid})

    def invalidate_token(self, service: str) -> dict[str, object]:
        return self.set_valid_tokens(**{service: []})

    def reset_tokens(self) -> dict[str, object]:
        return self._call("POST", "/tokens", {"reset": True})

    def requests_seen(self, since: int = 0, service: str | None = None) -> list[dict[str, object]]:
        """Requests the APIs saw: method, path, auth (bearer|query|missing), key_valid, key_fingerprint."""
        params: dict[str, str | int] = {"since": since}
        if service:
            params["service"] = service
        return _objects(self._call("GET", "/requests", params=params)["requests"], "requests")

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")
