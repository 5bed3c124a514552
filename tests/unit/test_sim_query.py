"""The simulator's Vast.ai query language: string values converted to the field's type, and the paged
instance listing (filters, order, limit, tokens that survive a deleted row)."""

from __future__ import annotations

import json

import pytest

from vastkeep.sim.query import convert, filter_offers, filter_values, matches, number, page_instances

OFFERS = [
    {"id": 1, "num_gpus": 1, "dph_total": 0.3, "verified": True, "gpu_name": "RTX 4090", "score": 3},
    {"id": 2, "num_gpus": 2, "dph_total": 0.4, "verified": True, "gpu_name": "RTX 4090", "score": 2},
    {"id": 3, "num_gpus": 1, "dph_total": 0.9, "verified": False, "gpu_name": "RTX 3090", "score": 1},
]


@pytest.mark.parametrize(
    ("want", "have", "converted"),
    [("1", 2, 1.0), ("0.5", 0.3, 0.5), ("true", False, True), ("False", True, False), (3, "x", "3"),
     (["1", "2"], 1, [1.0, 2.0]), (None, 1, None), ("RTX 4090", "RTX 3090", "RTX 4090"), ("7", None, "7")],
)
def test_convert_takes_the_type_of_the_field(want, have, converted):
    assert convert(want, have, "f") == converted


@pytest.mark.parametrize(("want", "have"), [("many", 1), ("maybe", True)])
def test_convert_refuses_what_cannot_be_that_type(want, have):
    with pytest.raises(ValueError, match="f:"):
        convert(want, have, "f")


def test_string_values_filter_like_numbers():
    """What the official CLI sends for ``num_gpus=1 dph<0.5 verified=true``."""
    query = {"num_gpus": {"eq": "1"}, "dph_total": {"lt": "0.5"}, "verified": {"eq": "true"}}
    assert [o["id"] for o in filter_offers(OFFERS, query)] == [1]
    assert [o["id"] for o in filter_offers(OFFERS, {"num_gpus": {"in": ["1"]}, "limit": "1"})] == [1]
    assert [o["id"] for o in filter_offers(OFFERS, {"order": [["dph_total", "desc"]]})] == [3, 2, 1]
    assert not matches({"x": None}, {"x": {"gt": "1"}})
    with pytest.raises(ValueError, match="unsupported operator"):
        filter_offers(OFFERS, {"num_gpus": {"approx": 1}})


def rows(n: int) -> list[dict]:
    return [{"id": 100 + i, "actual_status": "running" if i % 2 else "exited", "label": f"l{i % 3}",
             "verification": "verified", "gpu_name": "RTX 4090"} for i in range(n)]


def params(**kw) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in kw.items()}


def test_pages_follow_next_token_to_the_end():
    data, seen = rows(60), []
    p = params(limit=25)
    while True:
        page = page_instances(data, p)
        seen += [r["id"] for r in page["instances"]]
        assert page["total_instances"] == 60
        if not page["next_token"]:
            break
        p["after_token"] = page["next_token"]
    assert seen == [r["id"] for r in data]


def test_filters_order_limit_cols_and_label_counts():
    page = page_instances(rows(10), params(
        select_filters={"actual_status": {"in": ["running"]}}, order_by=[{"col": "id", "dir": "desc"}],
        limit="2", select_cols=["label"],
    ))
    assert [r["id"] for r in page["instances"]] == [109, 107]
    assert page["instances"][0] == {"id": 109, "label": "l0"}
    assert page["total_instances"] == 5 and page["next_token"]
    nxt = page_instances(rows(10), params(
        select_filters={"actual_status": {"in": ["running"]}}, order_by=[{"col": "id", "dir": "desc"}],
        limit="2", select_cols=["label"], after_token=page["next_token"],
    ))
    assert [r["id"] for r in nxt["instances"]] == [105, 103]
    assert page["label_counts"] == {"l1": 2, "l0": 2, "l2": 1}
    assert page_instances(rows(3), params(limit=1000))["instances"].__len__() == 3
    assert len(page_instances(rows(40), {})["instances"]) == 25  # at most 25 a page, as the CLI says


def test_a_token_survives_the_deletion_of_its_row():
    data = rows(6)
    first = page_instances(data, params(limit=2))
    del data[1]  # the last row of the first page is gone
    second = page_instances(data, params(limit=2, after_token=first["next_token"]))
    assert [r["id"] for r in second["instances"]] == [102, 103]
    desc = params(limit=2, order_by=[{"col": "label", "dir": "desc"}])
    first = page_instances(data, desc)
    rest = page_instances(data, {**desc, "after_token": first["next_token"]})
    every = [r["id"] for r in first["instances"] + rest["instances"]]
    assert every[:4] == [r["id"] for r in page_instances(data, {**desc, "limit": "25"})["instances"]][:4]


@pytest.mark.parametrize("bad", [params(select_filters="{"), params(after_token="%%%"), params(limit="x")])
def test_bad_parameters_raise_value_error(bad):
    with pytest.raises(ValueError):
        page_instances(rows(3), bad)


def test_filter_values_lists_distinct_combinations():
    assert filter_values(rows(4)) == [
        {"actual_status": "exited", "verification": "verified", "gpu_name": "RTX 4090"},
        {"actual_status": "running", "verification": "verified", "gpu_name": "RTX 4090"},
    ]


@pytest.mark.parametrize(("value", "expected"), [("5", 5.0), (" 2.5 ", 2.5), (7, 7), (True, 1)])
def test_number_reads_a_number_or_its_text(value: object, expected: float) -> None:
    assert number(value, "limit") == expected


@pytest.mark.parametrize("value", [[1], {"a": 1}, "many"])
def test_number_refuses_anything_else_naming_the_field(value: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        number(value, "limit")
