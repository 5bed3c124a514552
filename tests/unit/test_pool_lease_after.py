"""What an instance needs after a client lease (``vastkeep.pool.after_lease``), table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from vastkeep.pool import after_lease

NOW = 1_000.0
END = "2026-01-01T00:00:10.000Z"
BEFORE, AFTER = "2026-01-01T00:00:09.999Z", "2026-01-01T00:00:10.001Z"


def ended(**kw: Any) -> dict[str, Any]:
    return {"state": "ended", "until": NOW - 5, "ended_iso": END, **kw}


@pytest.mark.parametrize(("entry", "status", "pv", "need"), [
    ({"state": "active", "until": NOW + 1, "ended_iso": END}, "ready", None, "live"),
    ({"state": "active", "until": NOW, "ended_iso": END}, "ready", None, "check"),  # expired at its until
    (ended(), "ready", None, "check"),
    (ended(), "ready", {"success": True, "checked_at": BEFORE}, "check"),  # a check from before the end
    (ended(), "ready", {"success": True, "checked_at": END}, "check"),  # not *after* the end
    (ended(), "ready", {"success": True, "checked_at": AFTER}, "free"),
    (ended(), "ready", {"success": False, "checked_at": AFTER}, "retire"),
    (ended(), "loading", {"success": False, "checked_at": AFTER}, "retire"),  # polling demoted it first
    (ended(), "loading", None, "wait"),  # Layer 3 and polling decide
    (ended(), "failed", {"success": False, "checked_at": AFTER}, "wait"),  # retired already
    (ended(), None, None, "wait"),  # no record
    (ended(), "ready", {"success": True}, "check"),  # no time on the verdict
    ({"state": "ended", "until": NOW - 5}, "ready", {"success": True, "checked_at": AFTER}, "free"),
    (ended(cleared=True), "ready", {"success": False, "checked_at": AFTER}, "free"),  # passed once: done
    (ended(cleared=True), "loading", None, "free"),
])
def test_after_lease(entry: dict[str, Any], status: str | None, pv: dict[str, Any] | None, need: str) -> None:
    assert after_lease(entry, status, pv, NOW) == need
