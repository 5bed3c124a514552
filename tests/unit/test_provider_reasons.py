"""A failure's ``reason`` is read by other layers and shown in task results: the enum keeps the strings."""

from vastkeep.core.errors import NetworkError
from vastkeep.providers import FailureReason
from vastkeep.providers.http import DEADLINE_EXCEEDED


def test_failure_reasons_keep_their_wire_values() -> None:
    assert {r.value for r in FailureReason} == {
        "deadline exceeded", "connect timeout", "read timeout", "connection refused", "connection error",
        "body too large", "undecodable body", "not pinned", "no instances list"}
    assert DEADLINE_EXCEEDED == "deadline exceeded"


def test_a_reason_in_an_error_reads_and_serialises_as_its_text() -> None:
    exc = NetworkError("stalled", reason=FailureReason.READ_TIMEOUT)
    assert exc.to_dict()["reason"] == "read timeout" and f"{exc.data['reason']}" == "read timeout"
