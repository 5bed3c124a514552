"""``iso`` and ``from_iso``: epoch seconds to the guide's ISO-8601 form and back; unreadable is None."""

from __future__ import annotations

import pytest

from vastkeep.core.clock import from_iso, iso


@pytest.mark.parametrize("ts", [0.0, 1_765_000_000.123, 1_800_000_000.0])
def test_from_iso_inverts_iso(ts: float) -> None:
    text = iso(ts)
    assert text is not None and text.endswith("Z")
    assert from_iso(text) == pytest.approx(ts, abs=1e-3)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-07T12:00:00+00:00", 1_796_644_800.0),
    ("2026-12-07T13:00:00+01:00", 1_796_644_800.0),
    (None, None), (17, None), ("", None), ("yesterday", None),
])
def test_from_iso_reads_offsets_and_refuses_junk(text: object, expected: float | None) -> None:
    assert from_iso(text) == expected
