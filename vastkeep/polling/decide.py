"""Layer 5, pure: how often to poll an instance, what the provider's word means for it, which are ours.

No I/O and no clock of their own (``now`` is passed in), so the table tests pin every rule down:

* :func:`next_poll_interval` is the guide's ``getPollingInterval()`` per instance: starting, loading or
  leased → ``WARM_POOL_POLL_ACTIVE_INTERVAL_MS``; ready and idle → ``_IDLE_``; anything else →
  ``WARM_POOL_POLL_INTERVAL_MS``.
* :func:`provider_verdict` maps one normalised provider instance (its phase and fatal reason, mapped by
  the provider: :mod:`vastkeep.providers`) to our status and the reason. The provider's word wins over
  anything a probe found: a failed or gone instance is never turned back into a live one here
  (:data:`TERMINAL`).
* :func:`absence_verdict`: when an instance missing from the listing is gone. An ambiguous answer (an empty
  body, ``{"instances": null}``, a timeout) is never a verdict; only a confirmed absence is.
* :func:`is_ours`: a label ``<prefix>:<anything>`` marks an instance vastkeep rented.
"""

from __future__ import annotations

import random
from enum import StrEnum
from typing import NamedTuple, Protocol

from vastkeep.core.backoff import BackoffPolicy, backoff_delay
from vastkeep.providers import Instance, Phase, address_of
from vastkeep.state.status import DEAD_STATUSES, ENDING_STATUSES, PROVISIONING_STATUSES, InstanceStatus
from vastkeep.state.store import COMFYUI_LOST_REASON, COMFYUI_LOST_STATUS, InstanceRecord, comfyui_lost_since

#: Statuses polled at the active interval (and the lease makes any status active).
ACTIVE_STATUSES = PROVISIONING_STATUSES
#: Once there, the provider's word never turns the record back into a live one (an operator must act).
TERMINAL = DEAD_STATUSES
#: Records another flow owns the end of (the destroy flow): polling leaves their status alone.
HANDS_OFF = ENDING_STATUSES - DEAD_STATUSES
#: Statuses that must never be handed out, probed into "ready" or swept as if alive.
NOT_LIVE = ENDING_STATUSES

GONE_REASON = "gone at provider: no_such_instance"
S = InstanceStatus


#: Consecutive well-formed listings an instance must be missing from before ``show`` is asked about it.
ABSENT_BEFORE_SHOW = 2
#: ...and before a ``show`` that answers 200 without the record (Vast.ai's answer for a destroyed instance,
#: and now and then for a live one) may confirm its absence.
ABSENT_CONFIRM_LISTINGS = 3


class ShowAnswer(StrEnum):
    """What ``show`` said about an instance missing from the listing (kept in Redis for a while)."""

    ASKED = "asked"          # a show is queued or in flight
    ERROR = "error"          # timeout, 5xx, 429, an empty or unreadable body: nothing said
    FOUND = "found"          # it exists (listing lag)
    NOT_FOUND = "not_found"  # HTTP 404 / ``no_such_instance``: the provider says it does not exist
    NO_RECORD = "no_record"  # 200 with ``{"instances": null}`` (or ``{}``/``[]``): consistent with absence


class Absence(StrEnum):
    """What to do about an instance missing from the listing."""

    WAIT = "wait"        # nothing yet: listing lag, or an answer pending or unusable
    ASK = "ask"          # queue one ``show``
    PRESENT = "present"  # ``show`` found it: keep the record as it is
    GONE = "gone"        # absence confirmed: the record becomes ``gone``


def absence_verdict(absent_listings: int, answer: str | None) -> Absence:
    """Whether an instance missing from the listing is gone (pure; ``docs/layer-5-polling.md`` has the table).

    ``absent_listings`` counts consecutive **well-formed** listings (``{"instances": [...]}``) that lacked
    it; a failed or ambiguous listing neither counts nor resets. ``answer`` is the :class:`ShowAnswer` of a
    show asked after the instance went missing (None: none yet, or expired).

    * fewer than :data:`ABSENT_BEFORE_SHOW` missing listings → wait (listing lag);
    * then ask ``show`` once; while it is in flight or after an error → wait (asked again later);
    * ``found`` → present; ``not_found`` (a real 404) → gone;
    * ``no_record`` → gone only once :data:`ABSENT_CONFIRM_LISTINGS` listings lacked it, else wait.
    """
    if absent_listings < ABSENT_BEFORE_SHOW:
        return Absence.WAIT
    if answer is None:
        return Absence.ASK
    if answer == ShowAnswer.FOUND:
        return Absence.PRESENT
    if answer == ShowAnswer.NOT_FOUND:
        return Absence.GONE
    if answer == ShowAnswer.NO_RECORD and absent_listings >= ABSENT_CONFIRM_LISTINGS:
        return Absence.GONE
    return Absence.WAIT


#: A listing that keeps failing is retried at most this far apart (plus the snapshot's own age).
REFRESH_RETRY_CAP_S = 60.0


def refresh_retry_s(failures: int, max_age_s: float, rng: random.Random) -> float:
    """Seconds until the next listing after ``failures`` failed ones in a row (``failures`` >= 1).

    At least the snapshot's normal age (a failing or ambiguous listing is never retried faster than a good
    one is refreshed), plus a full-jitter backoff growing from that age to :data:`REFRESH_RETRY_CAP_S`, so
    workers that saw the same outage do not retry in step.
    """
    age = max(0.0, float(max_age_s))
    policy = BackoffPolicy(base_s=age, cap_s=max(age, REFRESH_RETRY_CAP_S))
    return age + backoff_delay(max(0, int(failures) - 1), policy, rng)


class PollIntervals(Protocol):
    """The intervals (seconds) :func:`next_poll_interval` reads: ``Settings`` and ``PollPolicy`` fit."""

    @property
    def poll_active_interval_s(self) -> float: ...
    @property
    def poll_idle_interval_s(self) -> float: ...
    @property
    def poll_interval_s(self) -> float: ...


class Verdict(NamedTuple):
    """What the provider's row means for our record: the status and why (None: nothing to say)."""

    status: InstanceStatus
    reason: str | None


def is_leased(record: InstanceRecord, now: float) -> bool:
    """Leased while ``leased_until`` lies in the future (the guide's ``isLeased``)."""
    return record.leased_until is not None and now < record.leased_until


def next_poll_interval(record: InstanceRecord | None, now: float, settings: PollIntervals) -> float:
    """Seconds until this record's next poll (the guide's table, per instance).

    ``settings``: ``Settings`` or the polling flow's ``PollPolicy``. ``record`` None (no instance) → the
    default interval.
    """
    if record is None:
        return float(settings.poll_interval_s)
    if record.status in ACTIVE_STATUSES or (is_leased(record, now) and record.status not in NOT_LIVE):
        return float(settings.poll_active_interval_s)
    if record.status == InstanceStatus.READY:
        return float(settings.poll_idle_interval_s)
    return float(settings.poll_interval_s)


def is_ours(label: str | None, prefix: str) -> bool:
    """True for ``<prefix>:<pool name...>`` (any pool name, even empty); never for another prefix."""
    return isinstance(label, str) and label.startswith(f"{prefix}:")


def port_validated(record: InstanceRecord) -> bool:
    """Layer 3 found a working ComfyUI port for the record's current address."""
    pv = record.port_validation or {}
    return bool(pv.get("success")) and bool(record.connection_url)


def fatal_reason(row: Instance) -> str | None:
    """Why the provider says the instance will not come back by waiting (None: it may); the provider maps
    its own fatal states (:mod:`vastkeep.providers`)."""
    return row.fatal_reason


def provider_verdict(row: Instance | None, record: InstanceRecord, *, absence_confirmed: bool,
                     now: float) -> Verdict:
    """The status the provider's word gives ``record`` (a normalised instance, None when unlisted).

    * unlisted: ``gone`` once its absence is confirmed (``absence_confirmed``: :func:`absence_verdict`
      said gone), else unchanged (listing lag, or an ambiguous answer);
    * destroying/destroyed and failed/gone records keep their status (:data:`NOT_LIVE`);
    * fatal (the provider's ``fatal_reason``: an error, host offline, container exited, outbid) →
      ``failed`` + reason;
    * phase starting → ``starting``; loading → ``loading``;
    * running → ``ready`` with a validated port, else ``loading`` (Layer 3 must run:
      :func:`needs_port_validation`); ``unhealthy`` (:data:`COMFYUI_LOST_REASON`) while Layer 4 finds its
      ComfyUI lost (the keepalive turns it ``ready`` again when a ping answers);
    * any other phase (stopped, frozen, rebooting, unknown...) → ``unhealthy``, naming the provider's word.
    ``now`` is accepted for rules that depend on time (none yet) and to keep the signature stable.
    """
    del now  # no time-dependent rule yet
    status = record.status
    if status in NOT_LIVE:
        return Verdict(status, record.status_reason)
    if row is None:
        return Verdict(S.GONE, GONE_REASON) if absence_confirmed else Verdict(status, record.status_reason)
    fatal = row.fatal_reason
    if fatal is not None:
        return Verdict(S.FAILED, fatal)
    if row.phase is Phase.STARTING:
        return Verdict(S.STARTING, None)
    if row.phase is Phase.LOADING:
        return Verdict(S.LOADING, None)
    if row.phase is Phase.RUNNING:
        if comfyui_lost_since(record) is not None:  # Layer 4's word: running, but ComfyUI does not answer
            return Verdict(COMFYUI_LOST_STATUS, COMFYUI_LOST_REASON)
        if port_validated(record) and status != S.UNHEALTHY:  # back from unhealthy: prove the port again
            return Verdict(S.READY, None)
        return Verdict(S.LOADING, "running at provider; port validation pending")
    return Verdict(S.UNHEALTHY, f"provider status {str(row.status_word)[:40]}")


#: A keepalive loss whose grace ends later than this is left to the reconcile beat (no long countdowns).
MAX_WAKE_DELAY_S = 600.0
#: For this long after a keepalive loss a poll wakes the pool at once (it rents the replacement); the
#: polling flow's wake marker (one per due second, ``WAKE_MARK_MS``) makes that one send per loss.
LOSS_WAKE_WINDOW_S = 60.0


def pool_wake_at(record: InstanceRecord, now: float, grace_s: float, label_head: str) -> tuple[float, ...]:
    """When the warm pool's reconciler must run for this record (epoch s, earliest first); empty: no need.

    Only instances of the warm pool (label ``<prefix>:<WARM_POOL_NAME>:``, ``label_head``) wake it.

    One of our instances that failed or is gone → now (it is replaced at once, not at the next beat). One
    whose Layer 4 keepalive lost ComfyUI (``extra.keepalive_lost_since``) → the loss time itself during
    :data:`LOSS_WAKE_WINDOW_S` (the pool rents its replacement at once), and when the loss passes the grace
    (``WARM_POOL_UNHEALTHY_GRACE_MS``: the sick one is destroyed), unless that is more than
    :data:`MAX_WAKE_DELAY_S` away.
    """
    label = record.label
    if not isinstance(label, str) or not label.startswith(label_head) or record.status in HANDS_OFF:
        return ()
    if record.status in TERMINAL:
        return (now,)
    lost = comfyui_lost_since(record)
    if lost is None:
        return ()
    wakes: list[float] = []
    if abs(now - lost) < LOSS_WAKE_WINDOW_S:  # abs: another host's clock may run a little ahead
        wakes.append(lost)
    due = max(now, lost + grace_s)
    if due - now <= MAX_WAKE_DELAY_S and due not in wakes:
        wakes.append(due)
    return tuple(sorted(wakes))


def needs_port_validation(row: Instance | None, record: InstanceRecord) -> bool:
    """Running at the provider but no validated port for the record: Layer 3 must run (the next poll)."""
    return (row is not None and row.is_running
            and record.status not in NOT_LIVE and not (port_validated(record) and record.status == S.READY)
            and comfyui_lost_since(record) is None)  # Layer 4 watches a lost one until it answers again


def provider_signature(row: Instance) -> str:
    """A short fingerprint of what matters in a row (status + address, the provider's own): a change →
    poll now."""
    return row.signature


def apply_provider_word(cur: InstanceRecord, row: Instance | None, absence_confirmed: bool,
                        seen_at: float | None, now: float) -> tuple[str, str, str | None] | None:
    """Apply the provider's row to ``cur`` in place (its address, status word, first label/GPU/price, then the
    verdict); returns (old, new, reason) when the status changes. Pure: the flow writes ``cur`` with CAS."""
    if row is not None:
        fresh = address_of(row)
        moved = {k: v for k, v in fresh.items() if getattr(cur, k) != v}
        if moved:
            if ("public_ip" in moved or "ports" in moved) and (cur.connection_url or cur.port_validation):
                cur.connection_url = None  # proven at the old address only: Layer 3 must run again
                cur.port_validation = None
            for key, value in moved.items():
                setattr(cur, key, value)
        if cur.provider_status != row.status_word or cur.provider_seen_at is None:
            cur.provider_status = row.status_word
            cur.provider_seen_at = seen_at if seen_at is not None else now
        for name in ("label", "gpu_name", "price_per_hour"):
            if getattr(cur, name) is None and getattr(row, name) is not None:
                setattr(cur, name, getattr(row, name))
    verdict = provider_verdict(row, cur, absence_confirmed=absence_confirmed, now=now)
    if verdict.status == cur.status and verdict.reason == cur.status_reason:
        return None
    old = cur.status
    cur.status_reason = verdict.reason
    if verdict.status == old:
        return None
    cur.status = verdict.status
    if verdict.status in DEAD_STATUSES:
        cur.error = verdict.reason
    return old, verdict.status, verdict.reason


__all__ = [
    "ABSENT_BEFORE_SHOW", "ABSENT_CONFIRM_LISTINGS", "ACTIVE_STATUSES", "GONE_REASON", "HANDS_OFF",
    "LOSS_WAKE_WINDOW_S", "MAX_WAKE_DELAY_S", "NOT_LIVE", "PollIntervals", "REFRESH_RETRY_CAP_S",
    "TERMINAL", "Absence", "apply_provider_word",
    "ShowAnswer", "Verdict", "absence_verdict", "address_of", "fatal_reason", "is_leased", "is_ours",
    "needs_port_validation", "next_poll_interval", "pool_wake_at", "port_validated", "provider_signature",
    "provider_verdict", "refresh_retry_s",
]
