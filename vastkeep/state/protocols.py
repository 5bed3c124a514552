"""The narrow interfaces the layer flows are typed against.

Flows take these, not ``StateStore`` or ``EventLog`` themselves, so a test can hand them a small
stand-in where Redis semantics are not what is being tested, and so a reader sees at a glance which
part of the state a flow touches. ``StateStore`` and ``EventLog`` satisfy them (a test checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from vastkeep.core.settings import Secret
    from vastkeep.state.leases import Lease
    from vastkeep.state.store import InstanceRecord, PoolSettings


@runtime_checkable
class EventSink(Protocol):
    """Where flows report what happened (the durable event stream)."""

    def emit(self, kind: str, **fields: Any) -> str: ...


class NullEvents:
    """An :class:`EventSink` that keeps nothing (huey's ``BlackHoleStorage``): what a flow gets when no
    event stream is wired, so no flow writes ``if events is not None``."""

    def emit(self, kind: str, **fields: Any) -> str:
        return ""


#: The one null sink every flow defaults to.
NULL_EVENTS: EventSink = NullEvents()


@runtime_checkable
class TokenResultStore(Protocol):
    """Cached token verdicts and runtime token overrides (Layer 2)."""

    def put_token_result(self, service: str, result: dict[str, Any], ttl_ms: int) -> None: ...
    def get_token_result(self, service: str) -> dict[str, Any] | None: ...
    def set_runtime_secret(self, service: str, value: Any) -> None: ...
    def get_runtime_secret(self, service: str) -> Secret | None: ...


@runtime_checkable
class Store(Protocol):
    """Instance records and pool settings, with fenced compare-and-set writes."""

    def get_instance(self, instance_id: str | int) -> InstanceRecord | None: ...
    def list_instances(self) -> list[InstanceRecord]: ...
    def instance_ids(self) -> set[str]: ...
    def put_instance(self, rec: InstanceRecord, *, lease: Lease | None = None) -> InstanceRecord: ...
    def create_instance(self, rec: InstanceRecord) -> bool: ...
    def update_instance(self, instance_id: str | int, changes: dict[str, Any], *,
                        lease: Lease | None = None) -> InstanceRecord: ...
    def modify_instance(self, instance_id: str | int, fn: Callable[[InstanceRecord], InstanceRecord], *,
                        lease: Lease | None = None) -> InstanceRecord: ...
    def delete_instance(self, instance_id: str | int, *, lease: Lease | None = None) -> bool: ...
    def get_pool(self) -> PoolSettings: ...


@runtime_checkable
class LeaseStore(Protocol):
    """Fenced leases: acquire, renew and release only while owned."""

    def acquire(self, name: str, owner: str, ttl_ms: int) -> Lease | None: ...
    def renew(self, lease: Lease, ttl_ms: int | None = None) -> bool: ...
    def release(self, lease: Lease) -> bool: ...
