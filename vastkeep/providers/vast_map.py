"""Vast.ai's words → the seam's (:mod:`vastkeep.providers.base`), and the seam's requests → Vast.ai's.

The one place that knows what Vast.ai's status fields mean (``providers.md``: ready when
``intended_status == actual_status == "running"``; fatal on ``Error`` in ``status_msg``, ``offline`` or
``exited``; outbid when ``cur_state``, ``intended_status`` and ``next_state`` all say ``stopped``), how an
offer search is spelled (the ``POST /bundles/`` query) and how a rent opens ports (``-p 8188:8188`` keys in
the env). The texts of the fatal reasons and the signature are stored in records and compared across
versions: they are kept exactly as they were before the seam.
"""

from __future__ import annotations

from collections.abc import Mapping

from vastkeep.providers.base import Instance, Offer, OfferSpec, Phase, RentOrder
from vastkeep.providers.vast_models import VastInstance, VastOffer

_STARTING = frozenset({None, "created"})
_MAX_MSG = 160


def fatal_reason(row: VastInstance) -> str | None:
    """Why the row says the instance will not come back by waiting (None: it may)."""
    msg = (row.status_msg or "").strip()
    if "Error" in msg or "OCI" in msg:
        return f"provider error: {msg[:_MAX_MSG]}"
    if row.actual_status == "offline":
        return "host offline"
    if row.actual_status == "exited":
        return "container exited"
    # We always want our instances running (vastkeep never stops one), so the provider planning to stop
    # it means it lost its bid (all three state fields "stopped" is the full form; either planning field
    # is enough to stop handing it out).
    if row.cur_state == row.intended_status == row.next_state == "stopped":
        return "outbid"
    if row.intended_status == "stopped" or row.next_state == "stopped":
        return "outbid: the provider is stopping it"
    return None


def phase_of(row: VastInstance) -> Phase:
    """``null``/``created`` → starting, ``loading`` → loading, ``running`` → running, else other."""
    actual = row.actual_status
    if actual in _STARTING:
        return Phase.STARTING
    if actual == "loading":
        return Phase.LOADING
    if actual == "running":
        return Phase.RUNNING
    return Phase.OTHER


def signature(row: VastInstance) -> str:
    """A short fingerprint of what matters in a row (status fields + address): a change → poll now."""
    ports = ",".join(f"{k}={v}" for k, v in sorted((row.ports or {}).items()))
    return "|".join(str(x) for x in (row.actual_status, row.intended_status, row.cur_state, row.next_state,
                                     (row.status_msg or "")[:_MAX_MSG], row.public_ip, ports, row.label))


def to_instance(row: VastInstance) -> Instance:
    """The normalised instance of a parsed Vast.ai row (the row's raw record is kept)."""
    return Instance(
        id=row.id, phase=phase_of(row), fatal_reason=fatal_reason(row), status_word=row.actual_status,
        label=row.label, public_ip=row.public_ip, ports=dict(row.ports), ssh_proxy_host=row.ssh_host,
        ssh_proxy_port=row.ssh_port, gpu_name=row.gpu_name, price_per_hour=row.dph_total,
        reliability=row.reliability, host_id=row.machine_id, started_at=row.start_date,
        signature=signature(row), raw=dict(row.raw))


def instance_from_stored(data: object) -> Instance:
    """A snapshot row read back: the normalised form, or a Vast.ai row stored by a version before the seam.
    Raises ``ValueError`` or ``MalformedResponse`` when it is neither."""
    if isinstance(data, Mapping) and "phase" in data:
        return Instance.from_json(data)
    return to_instance(VastInstance.from_api(data))


def to_offer(offer: VastOffer) -> Offer:
    """The normalised offer (``direct_ports``: ``direct_port_count >= 1``)."""
    return Offer(id=offer.id, price_per_hour=offer.dph_total, gpu_name=offer.gpu_name,
                 num_gpus=offer.num_gpus,
                 reliability=offer.reliability, direct_ports=(offer.direct_port_count or 0) >= 1,
                 host_id=offer.machine_id, raw=dict(offer.raw))


def offer_query(spec: OfferSpec) -> dict[str, object]:
    """The ``POST /bundles/`` body: rentable, verified, a direct port (Layer 3 needs one), cheapest first.

    ``gpu_ram`` is in MB as Vast.ai reports it (a "16 GB" card reports about 16,300).
    """
    query: dict[str, object] = {
        "rentable": {"eq": True},
        "verified": {"eq": True},
        "rented": {"eq": False},
        "direct_port_count": {"gte": 1},
        "num_gpus": {"eq": spec.num_gpus},
        "dph_total": {"lte": spec.max_price_per_hour},
        "reliability2": {"gte": spec.min_reliability},
        "disk_space": {"gte": spec.disk_gb},
        "order": [["dph_total", "asc"]],
        "type": "on-demand",
        "limit": spec.limit,
    }
    if spec.min_gpu_ram_gb > 0:
        query["gpu_ram"] = {"gte": spec.min_gpu_ram_gb * 1000}
    if spec.gpu_name:
        query["gpu_name"] = {"eq": spec.gpu_name}
    return query


def rent_env(order: RentOrder) -> dict[str, str]:
    """The rent's ``env``: one ``-p N:N`` key per published port (Vast.ai's way to open them), then the
    container's own environment."""
    return {**{f"-p {port}:{port}": "1" for port in order.publish}, **dict(order.env)}


__all__ = ["fatal_reason", "instance_from_stored", "offer_query", "phase_of", "rent_env", "signature",
           "to_instance", "to_offer"]
