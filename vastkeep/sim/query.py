"""The query language of the Vast.ai API as the simulator answers it: offer searches (``POST /bundles/``)
and the paged instance listing (``GET /api/v1/instances/``).

Values arrive as the official CLI sends them: ``num_gpus=1`` is ``{"num_gpus": {"eq": "1"}}`` and
``dph<0.5`` is ``{"dph_total": {"lt": "0.5"}}``; the server converts each value to the type of the field it is
compared with, so strings and numbers compare as the real API compares them. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

MAX_PAGE = 25  # the CLI's --limit is 1..25 per page, and the SDK pages 25 at a time

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and b is not None and a > b,
    "gte": lambda a, b: a is not None and b is not None and a >= b,
    "lt": lambda a, b: a is not None and b is not None and a < b,
    "lte": lambda a, b: a is not None and b is not None and a <= b,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
    "nin": lambda a, b: a not in b,
}
_META_KEYS = {"order", "limit", "type", "allocated_storage", "disable_bundling"}
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def convert(want: object, have: object, field: str) -> object:
    """``want`` (from a query) as the type of ``have`` (the record's value); ValueError when impossible."""
    if isinstance(want, list):
        return [convert(w, have, field) for w in want]
    if want is None or have is None:
        return want
    if isinstance(have, bool):
        if isinstance(want, str):
            text = want.strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError(f"{field}: {want!r} is not a boolean")
        return bool(want)
    if isinstance(have, int | float):
        if isinstance(want, bool):
            return int(want)
        if isinstance(want, str):
            try:
                return float(want.strip())
            except ValueError:
                raise ValueError(f"{field}: {want!r} is not a number") from None
        return want
    if isinstance(have, str) and isinstance(want, int | float) and not isinstance(want, bool):
        return str(want)
    return want


def number(value: object, field: str) -> int | float:
    """``value`` (a number, or text of one) as a number; ``ValueError`` naming ``field`` if it is not."""
    got = convert(value, 0.0, field)
    if isinstance(got, int | float):
        return got
    raise ValueError(f"{field}: {value!r} is not a number")


def matches(record: dict[str, object], filters: dict[str, object]) -> bool:
    """Whether a record passes every ``{"field": {"op": value}}`` condition (meta keys skipped)."""
    for key, cond in filters.items():
        if key in _META_KEYS or not isinstance(cond, dict):
            continue
        have = record.get(key)
        for op, want in cond.items():
            fn = _OPS.get(op)
            if fn is None:
                raise ValueError(f"unsupported operator {op!r} on {key!r}")
            try:
                if not fn(have, convert(want, have, key)):
                    return False
            except TypeError:
                return False
    return True


def _sort(rows: list[dict[str, object]], order: list[tuple[str, str]]) -> list[dict[str, object]]:
    for key, direction in reversed(order):
        rows.sort(key=functools.partial(_row_key, key), reverse=direction == "desc")
    return rows


def _sortable(value: object) -> int | float | str:
    return value if isinstance(value, int | float | str) else 0 if value is None else str(value)


def _key(value: object) -> tuple[bool, int | float | str]:
    return value is None, _sortable(value)


def _row_key(col: str, row: dict[str, object]) -> tuple[bool, int | float | str]:
    return _key(row.get(col))


def _comes_after(row: dict[str, object], last: list[object], order: list[tuple[str, str]]) -> bool:
    """Whether ``row`` sorts after the row whose sort values were ``last`` (the keyset of a page token)."""
    for (col, direction), seen in zip(order, last, strict=False):
        a, b = _key(row.get(col)), _key(seen)
        if a == b:
            continue
        try:
            greater = a > b
        except TypeError:
            greater = str(a) > str(b)
        return greater if direction == "asc" else not greater
    return False


def filter_offers(offers: list[dict[str, object]], query: dict[str, object]) -> list[dict[str, object]]:
    """Apply a Vast.ai search query (``{"field": {"op": value}}``, plus ``order`` and ``limit``)."""
    out = [o for o in offers if matches(o, query)]
    order = query.get("order") or [["score", "desc"]]
    pairs = [
        (str(item[0]), str(item[1]) if len(item) > 1 else "asc")
        for item in (order if isinstance(order, list) else [])
        if isinstance(item, list | tuple) and item
    ]
    out = _sort(out, pairs)
    limit = query.get("limit")
    if limit is not None:
        limit = int(number(limit, "limit"))
        if limit >= 0:
            out = out[:limit]
    return out


def _json_param(params: dict[str, str], name: str, default: object) -> object:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError(f"{name} is not JSON") from None


def _token(last: dict[str, object], order: list[tuple[str, str]]) -> str:
    """An opaque keyset token: the sort values of a page's last row (so deleted rows shift nothing)."""
    raw = json.dumps({"after": [last.get(col) for col, _ in order]}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _untoken(token: str) -> list[object]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(data["after"], list):
            raise TypeError
        return data["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise ValueError("after_token is not a token this API issued") from None


def page_instances(rows: list[dict[str, object]], params: dict[str, str]) -> dict[str, object]:
    """``GET /api/v1/instances/``: filter (``select_filters``), sort (``order_by``), one page (``limit``,
    ``after_token``) and the columns asked for (``select_cols``); answers ``total_instances``, ``next_token``
    (``None`` on the last page) and ``label_counts``."""
    filters = _json_param(params, "select_filters", {})
    order_by = _json_param(params, "order_by", [{"col": "id", "dir": "asc"}])
    cols = _json_param(params, "select_cols", None)
    if not isinstance(filters, dict) or not isinstance(order_by, list):
        raise ValueError("select_filters must be an object and order_by a list")
    order: list[tuple[str, str]] = []
    for item in order_by:
        if isinstance(item, dict) and item.get("col"):
            col, direction = item["col"], item.get("dir", "asc")
        elif isinstance(item, list | tuple) and item:
            col, direction = item[0], item[1] if len(item) > 1 else "asc"
        else:
            continue
        order.append((str(col), "desc" if str(direction).lower() == "desc" else "asc"))
    if not any(col == "id" for col, _ in order):
        order.append(("id", "asc"))  # a total order, so a page boundary is well defined
    limit = int(number(params.get("limit") or MAX_PAGE, "limit"))
    limit = max(1, min(limit, MAX_PAGE))
    found = _sort([r for r in rows if matches(r, filters)], order)
    start = 0
    if params.get("after_token"):
        last = _untoken(params["after_token"])
        start = next((i for i, r in enumerate(found) if _comes_after(r, last, order)), len(found))
    page = found[start : start + limit]
    more = start + len(page) < len(found)
    token = _token(page[-1], order) if more and page else None  # before the columns are cut
    if isinstance(cols, list) and cols and "*" not in cols:
        wanted = {"id", *map(str, cols)}
        page = [{k: v for k, v in r.items() if k in wanted} for r in page]
    return {
        "instances": page,
        "total_instances": len(found),
        "next_token": token,
        "label_counts": dict(Counter(r.get("label") or "" for r in found)),
    }


def filter_values(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """``GET /instances/filters/``: the distinct (status, verification, GPU) combinations of the instances."""
    combos = {(r.get("actual_status"), r.get("verification"), r.get("gpu_name")) for r in rows}
    return [
        {"actual_status": s, "verification": v, "gpu_name": g}
        for s, v, g in sorted(combos, key=lambda c: tuple(str(x) for x in c))
    ]
