"""The Vast.ai REST client.

Thin on purpose: each method is one documented call (``docs/vast-client.md``), sent with a
bearer header only (never ``?api_key=``, which ends up in proxy and access logs), retried for
429/5xx/transport failures by :func:`vastkeep.providers.http.request_with_retry`, and answered with
tolerantly parsed :class:`VastInstance` / :class:`VastOffer` records. Every failure is an error
from :mod:`vastkeep.core.errors`, carrying ``instance_id`` where known and never the key.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Mapping
from typing import Protocol

import requests

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import (
    ConfigError,
    MalformedResponse,
    NetworkError,
    NotFound,
    RecordMissing,
    ServerError,
)
from vastkeep.providers.base import Instance, Offer, OfferSpec, RentOrder
from vastkeep.providers.http import (
    DEFAULT_MAX_BODY_BYTES,
    FailureReason,
    Params,
    RetryingSender,
    RetryPolicy,
    make_session,
    safe_url,
    threshold_s,
)
from vastkeep.providers.pinning import pin_session
from vastkeep.providers.vast_map import offer_query, rent_env, to_instance, to_offer
from vastkeep.providers.vast_models import VastInstance, VastOffer, as_int
from vastkeep.providers.vast_wire import (
    CallPacer,
    HiddenKey,
    Revealable,
    answer_body,
    check_id,
    endpoint_name,
    outcome_unknown,
    parse_many,
    redirect_guard,
)

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_RETRY", "CallPacer", "VastClient", "VastInstance", "VastOffer",
           "endpoint_name"]

log = logging.getLogger("vastkeep.providers")

DEFAULT_BASE_URL = "https://console.vast.ai/api/v0"
# A retry after a 429 waits at least 0.5 s (Vast.ai's minimum gap; see VAST_API_MIN_GAP_MS) plus jitter.
DEFAULT_RETRY = RetryPolicy(max_attempts=4, rate_limit_floor_s=0.5)
USER_AGENT = "vastkeep/0.1 (+vast-client)"


class VastApi(Protocol):
    """Vast.ai's own operations, answered in its own shapes (``VastClient`` implements it). The layers use
    :class:`vastkeep.providers.base.Provider`, which ``VastClient`` implements on top of these."""

    def list_instances(self) -> list[VastInstance]: ...
    def show_instance(self, instance_id: int) -> VastInstance: ...
    def search_offers(self, query: Mapping[str, object], *, limit: int | None = None) -> list[VastOffer]: ...
    def rent(self, offer_id: int, *, image: str, env: Mapping[str, str] | None = None, disk_gb: float = 80,
             label: str | None = None, onstart: str | None = None, runtype: str = "ssh",
             price: float | None = None) -> int: ...
    def destroy(self, instance_id: int) -> bool: ...
    def set_label(self, instance_id: int, label: str) -> None: ...


class VastClient:
    """Vast.ai API v0 with bearer auth, bounded jittered retries and tolerant parsing.

    ``preflight`` (optional) runs first in :meth:`rent`, before any request, and refuses the rental
    by raising; :func:`vastkeep.tokens.preflight.vast_client` passes the Vast.ai token check
    (:meth:`vastkeep.tokens.manager.TokenManager.ensure_vast_token_valid`), so nothing is rented with a key
    Vast.ai has rejected.

    ``pacer`` (optional) keeps the key under Vast.ai's minimum gap per endpoint: every attempt first
    waits for its slot (:meth:`CallPacer.wait_turn`, shared by all workers when it is the Redis one
    :func:`~vastkeep.tokens.preflight.vast_client` passes), and a retry after a 429 waits at least the
    endpoint's gap, plus jitter; a 429 naming a larger ``endpoint threshold=N`` is passed to
    :meth:`CallPacer.learn`, so every worker keeps that gap.
    """

    def __init__(
        self,
        api_key: Revealable | str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout_s: tuple[float, float] = (5.0, 30.0),
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        session: requests.Session | None = None,
        preflight: Callable[[], None] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        pacer: CallPacer | None = None,
    ) -> None:
        raw = api_key.reveal() if hasattr(api_key, "reveal") else api_key
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError("VAST_API_KEY is empty", variable="VAST_API_KEY")
        self._key = HiddenKey(raw.strip())
        self.base_url = base_url.rstrip("/")
        self.timeout_s = (float(timeout_s[0]), float(timeout_s[1]))
        self.retry = retry
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.session = session if session is not None else make_session(USER_AGENT)
        self._owns_session = session is None
        self.preflight = preflight
        self.max_body_bytes = int(max_body_bytes)
        self.pacer = pacer

    def __repr__(self) -> str:
        return f"VastClient(base_url={safe_url(self.base_url)!r})"

    def close(self) -> None:
        """Close the pooled connections if this client created the session."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> VastClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ── reading ──────────────────────────────────────────────────────────────
    def check_key(self) -> None:
        """Cheapest authenticated call: raises ``AuthError`` when the key is rejected (401/403)."""
        self._call("GET", "/instances", params={"owner": "me"})

    def list_instances(self) -> list[VastInstance]:
        """All instances of this account; records without a usable id are logged and skipped.

        Only ``{"instances": [...]}`` is a listing. An empty body, ``{}`` or ``{"instances": null}`` says
        nothing about the account and raises ``MalformedResponse`` (transient): read as "no instances" it
        would make every instance look gone.
        """
        body = self._call("GET", "/instances", params={"owner": "me"})
        records = body.get("instances")
        if records is None:
            raise MalformedResponse("Vast.ai answered the listing without an 'instances' list"
                                    + ("" if body else " (empty body)"),
                                    reason=FailureReason.NO_INSTANCES_LIST)
        if isinstance(records, Mapping):
            records = [records]
        if not isinstance(records, list):
            raise MalformedResponse("Vast.ai 'instances' is neither a list nor an object")
        return parse_many(records, VastInstance.from_api, "instance")

    def show_instance(self, instance_id: int) -> VastInstance:
        """One instance.

        ``NotFound`` only when Vast.ai says so (HTTP 404 or ``no_such_instance``). A 200 whose record is
        null or empty raises ``RecordMissing`` and an empty body or one without ``instances``
        ``MalformedResponse``: both transient, never a verdict (Layer 5 decides what absence means:
        :func:`vastkeep.polling.decide.absence_verdict`).
        """
        iid = check_id(instance_id)
        body = self._call("GET", f"/instances/{iid}/", params={"owner": "me"}, instance_id=iid)
        if "instances" not in body and "instance" not in body:
            raise MalformedResponse(f"Vast.ai answered show of instance {iid} without an instance"
                                    + ("" if body else " (empty body)"), instance_id=iid)
        record = body.get("instances", body.get("instance"))
        if isinstance(record, list):
            matching = [r for r in record if isinstance(r, Mapping) and as_int(r.get("id")) == iid]
            record = matching[0] if matching else (record[0] if len(record) == 1 else None)
        if record is None or record == {}:
            raise RecordMissing(f"Vast.ai answered show of instance {iid} with no record (not a 404)",
                                instance_id=iid)
        try:
            instance = VastInstance.from_api(record)
        except MalformedResponse as exc:
            raise MalformedResponse(exc.message, instance_id=iid) from None
        if instance.id != iid:
            raise MalformedResponse(f"asked for instance {iid}, Vast.ai answered {instance.id}",
                                    instance_id=iid)
        return instance

    def search_offers(self, query: Mapping[str, object], *, limit: int | None = None) -> list[VastOffer]:
        """Offers matching a ``/bundles/`` query such as ``{"gpu_name": {"eq": "RTX 4090"}}``."""
        payload = dict(query)
        if limit is not None:
            payload["limit"] = int(limit)
        body = self._call("POST", "/bundles/", json=payload)
        records = body.get("offers")
        if records is None:
            return []
        if not isinstance(records, list):
            raise MalformedResponse("Vast.ai 'offers' is not a list")
        offers = parse_many(records, VastOffer.from_api, "offer")
        return offers[:limit] if limit is not None else offers

    # ── spending and changing ────────────────────────────────────────────────
    def rent(
        self,
        offer_id: int,
        *,
        image: str,
        env: Mapping[str, str] | None = None,
        disk_gb: float = 80,
        label: str | None = None,
        onstart: str | None = None,
        runtype: str = "ssh",
        price: float | None = None,
    ) -> int:
        """Rent an offer and return the new instance id (``new_contract``).

        The ``preflight`` check runs first (e.g. ``TokenInvalid`` while the Vast.ai key is rejected).
        Renting spends money and is not idempotent, so it is retried only when Vast.ai certainly
        did not act (429, connection never opened); those end, if they persist, in a transient
        ``RateLimited`` / ``NetworkError``. Whenever the request may have reached Vast.ai and the
        answer could not be read (a 5xx, a read timeout or missed deadline, a connection broken
        after sending, a body that is not JSON, too large, or has no usable ``new_contract``) it
        raises ``RentOutcomeUnknown``: permanent, so no task retry rents (and pays for) a second
        instance. Look the ``label`` up with :meth:`list_instances` before renting again.
        """
        if self.preflight is not None:
            self.preflight()
        oid = check_id(offer_id, what="offer")
        payload: dict[str, object] = {"client_id": "me", "image": image, "env": dict(env or {}),
                                   "disk": disk_gb, "runtype": runtype}
        if label is not None:
            payload["label"] = label
        if onstart is not None:
            payload["onstart"] = onstart
        if price is not None:
            payload["price"] = price
        try:
            body = self._call("PUT", f"/asks/{oid}/", json=payload, idempotent=False, offer_id=oid)
        except ServerError as exc:
            raise outcome_unknown(oid, label, f"Vast.ai answered HTTP {exc.data.get('status')}",
                                   status=exc.data.get("status")) from None
        except NetworkError as exc:
            if exc.data.get("maybe_sent") is False:
                raise  # the connection never opened: Vast.ai saw nothing, a retry is safe
            raise outcome_unknown(oid, label, f"the answer was lost ({exc.data.get('reason')})") from None
        except MalformedResponse as exc:
            why = "the answer is too large" if exc.data.get("reason") == FailureReason.BODY_TOO_LARGE else \
                "the answer is not JSON"
            raise outcome_unknown(oid, label, why) from None
        contract = as_int(body.get("new_contract"))
        if contract is None or contract <= 0:
            raise outcome_unknown(oid, label, "the answer has no usable new_contract")
        log.info("rented offer %d as instance %d (label=%s)", oid, contract, label)
        return contract

    def destroy(self, instance_id: int) -> bool:
        """Destroy an instance: True when destroyed now, False when it was already gone."""
        iid = check_id(instance_id)
        try:
            self._call("DELETE", f"/instances/{iid}/", instance_id=iid)
        except NotFound:
            log.info("instance %d was already gone", iid)
            return False
        log.info("destroyed instance %d", iid)
        return True

    def start(self, instance_id: int) -> None:
        """Ask a stopped instance to run again."""
        self._set_state(instance_id, "running")

    def stop(self, instance_id: int) -> None:
        """Stop an instance (keeps its disk, stops GPU billing)."""
        self._set_state(instance_id, "stopped")

    def set_label(self, instance_id: int, label: str) -> None:
        """Label an instance: how the warm pool recognises its own instances."""
        iid = check_id(instance_id)
        self._call("PUT", f"/instances/{iid}/", json={"label": label}, instance_id=iid)

    def _set_state(self, instance_id: int, state: str) -> None:
        iid = check_id(instance_id)
        self._call("PUT", f"/instances/{iid}/", json={"state": state}, instance_id=iid)

    def request_logs(self, instance_id: int, tail: int = 1000, *, wait_s: float = 30.0,
                     url_guard: Callable[[str], str] | None = None) -> str:
        """The container log through Vast.ai's own log API, a log source that needs no SSH (Layer 1's
        fallback): ``PUT /instances/request_logs/{id}/`` answers ``{"result_url"}``, a storage URL that
        answers 200 with the text once the log is uploaded. It is polled (jittered, growing waits) for at
        most ``wait_s`` and is sent **without** the API key (it is not Vast.ai's API). ``NetworkError``
        when the log is not ready in time. ``url_guard(url)`` (an SSRF check; it raises to refuse, else
        returns the address it passed) is called with the result URL before it is fetched and with every
        redirect target before it is followed; with a guard the URL is fetched on a session of its own
        that connects only to those addresses (:mod:`vastkeep.providers.pinning`: no second DNS lookup)."""
        iid = check_id(instance_id)
        body = self._call("PUT", f"/instances/request_logs/{iid}/", json={"tail": str(max(1, int(tail)))},
                          instance_id=iid)
        url = body.get("result_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise MalformedResponse("Vast.ai request_logs answered without a result_url", instance_id=iid)
        session = self.session
        if url_guard is not None:  # a session of its own, connecting only to the addresses the guard passed
            session = make_session(USER_AGENT)
            guard = pin_session(session, url_guard)
            guard(url)
            session.hooks["response"].append(redirect_guard(guard))
        try:
            return self._poll_log(session, url, iid, wait_s)
        finally:
            if session is not self.session:
                session.close()

    def _poll_log(self, session: requests.Session, url: str, iid: int, wait_s: float) -> str:
        deadline = self.clock.monotonic() + wait_s
        delay = 0.5
        while True:
            resp = RetryingSender(session, self.timeout_s, self.retry, self.clock, self.rng,
                                  max_body_bytes=self.max_body_bytes).send(
                "GET", url, headers={"Accept": "text/plain"}, context={"instance_id": iid})
            if resp.status_code == 200:
                return resp.text
            if self.clock.monotonic() + delay > deadline:
                raise NetworkError(f"Vast.ai log of instance {iid} not ready after {wait_s:.0f}s "
                                   f"(HTTP {resp.status_code})", instance_id=iid, status=resp.status_code)
            self.clock.sleep(self.rng.uniform(0.0, delay))
            delay = min(delay * 2, 5.0)

    # ── the provider seam (``vastkeep.providers.base.Provider``) ──────────────
    def instances(self) -> list[Instance]:
        """:meth:`list_instances`, normalised."""
        return [to_instance(row) for row in self.list_instances()]

    def instance(self, instance_id: int) -> Instance:
        """:meth:`show_instance`, normalised."""
        return to_instance(self.show_instance(instance_id))

    def find_offers(self, spec: OfferSpec) -> list[Offer]:
        """:meth:`search_offers` with the ``/bundles/`` query built from ``spec``, normalised."""
        return [to_offer(o) for o in self.search_offers(offer_query(spec))]

    def rent_offer(self, offer_id: int, order: RentOrder) -> int:
        """:meth:`rent` with ``order``'s ports opened the Vast.ai way (``-p N:N`` env keys), SSH run type."""
        return self.rent(offer_id, image=order.image, env=rent_env(order), disk_gb=order.disk_gb,
                         label=order.label, onstart=order.onstart, runtype="ssh")

    def container_logs(self, instance_id: int, tail: int = 1000, *, wait_s: float = 30.0,
                       url_guard: Callable[[str], str] | None = None) -> str:
        """:meth:`request_logs` (the container log without SSH)."""
        return self.request_logs(instance_id, tail, wait_s=wait_s, url_guard=url_guard)

    # ── plumbing ─────────────────────────────────────────────────────────────
    def _redact(self, text: str) -> str:
        key = self._key._value
        return text.replace(key, "***") if key else text

    def _call(self, method: str, path: str, *, json: object = None, params: Params | None = None,
              instance_id: int | None = None, idempotent: bool = True, **ctx: object) -> dict[str, object]:
        """One API call → the decoded JSON object, or an error from the tree."""
        if instance_id is not None:
            ctx["instance_id"] = instance_id
        url = f"{self.base_url}{path}"
        headers = {"Authorization": f"Bearer {self._key._value}", "Accept": "application/json"}
        response = self._sender(endpoint_name(method, path)).send(
            method, url, headers=headers, json=json, params=params, idempotent=idempotent, context=ctx)
        return answer_body(response, method, safe_url(url), ctx, self._redact)

    def _sender(self, endpoint: str) -> RetryingSender:
        """How one call to ``endpoint`` is sent: this client's retry policy with the 429 floor raised to the
        endpoint's gap, the pacer's wait before each attempt, and what a 429 tells it (the threshold its
        body names)."""
        sender = RetryingSender(self.session, self.timeout_s, self.retry, self.clock, self.rng,
                                redact=self._redact, max_body_bytes=self.max_body_bytes)
        pacer = self.pacer
        if pacer is None:
            return sender
        floor = max(self.retry.rate_limit_floor_s, pacer.gap_s(endpoint))
        return dataclasses.replace(
            sender, retry=dataclasses.replace(self.retry, rate_limit_floor_s=floor),
            before_send=lambda: pacer.wait_turn(endpoint),
            on_rate_limited=lambda text: pacer.learn(endpoint, threshold_s(text)))
