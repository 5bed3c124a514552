"""The patterns the OpenAPI document states equal the handlers' own checks (pure, table-driven)."""

from __future__ import annotations

import re

import pytest

from vastkeep.admin.openapi import INSTANCE_ID_PATTERN, decimal_at_most
from vastkeep.admin.routes_logs import FILE_SCHEMA
from vastkeep.admin.routes_pool import STREAM_ID_PATTERN
from vastkeep.state.events import is_stream_id

MAX = 2**64 - 1


def ecma(pattern: str) -> re.Pattern[str]:
    """A JSON Schema pattern as ECMA-262 reads it: its ``$`` never matches before a trailing newline."""
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


FILE_PATTERN = ecma(FILE_SCHEMA["anyOf"][1]["pattern"])


@pytest.mark.parametrize(("text", "ok"), [
    ("0", True), ("9", True), ("1234567890123456789", True), (str(MAX), True), (str(MAX - 1), True),
    (str(MAX + 1), False), ("18446744073709551620", False), ("19999999999999999999", False),
    ("09999999999999999999", True), ("0" * 20, True), ("0" * 21, False), ("", False), ("1a", False),
])
def test_decimal_at_most_2_64(text: str, ok: bool) -> None:
    assert bool(re.fullmatch(decimal_at_most(MAX, 20), text)) is ok


@pytest.mark.parametrize(("limit", "digits", "text", "ok"), [
    (50, 2, "50", True), (50, 2, "51", False), (50, 2, "49", True), (50, 2, "5", True),
    (50, 2, "05", True), (7, 1, "7", True), (7, 1, "8", False), (100, 3, "100", True),
    (100, 3, "101", False), (100, 3, "099", True),
])
def test_decimal_at_most_small(limit: int, digits: int, text: str, ok: bool) -> None:
    assert bool(re.fullmatch(decimal_at_most(limit, digits), text)) is ok


@pytest.mark.parametrize("text", ["0-0", "1767225600000-0", f"{MAX}-{MAX}", f"{MAX + 1}-0", "1-0\n", "٣-0",
                                  "1-", "-1", "1-2-3", "00000000000000000001-1", "1767225600000-0 "])
def test_stream_id_pattern_is_is_stream_id(text: str) -> None:
    assert bool(ecma(STREAM_ID_PATTERN).search(text)) is is_stream_id(text)


@pytest.mark.parametrize(("text", "ok"), [
    ("/var/log/onstart.log", True), ("/a", True), ("/.", True), ("/a.", True), ("/a..b", False),
    ("/..", False),
    ("//x", True), ("/a b", False), ("var/log", False), ("/", False), ("/" + "a" * 199, True),
])
def test_file_schema_is_the_handler_rule(text: str, ok: bool) -> None:
    schema_ok = bool(FILE_PATTERN.search(text)) and 2 <= len(text) <= 200
    handler_ok = bool(re.fullmatch(r"/[A-Za-z0-9_./+=-]{1,199}", text)) and ".." not in text
    assert schema_ok is handler_ok is ok


@pytest.mark.parametrize(("text", "ok"), [("7835610", True), ("0", True), ("1" * 20, True), ("1" * 21, False),
                                          ("12\n", False), ("١٢", False), ("-1", False), ("", False)])
def test_instance_id_pattern(text: str, ok: bool) -> None:
    assert bool(ecma(INSTANCE_ID_PATTERN).search(text)) is ok
