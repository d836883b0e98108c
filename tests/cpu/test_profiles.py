"""The per-user aggregation and the per-event checks, on hand-built events.

Every expected profile below is computed by hand in the comments: the
as-of date is 2026-11-23, so ages are measured from 2026-11-24T00:00Z.
"""

from __future__ import annotations

import datetime as dt
import random
import zlib

import pyarrow as pa
import pytest

from factory import columns as C
from factory.profiles import events as E
from factory.profiles.aggregate import (
    PROFILE_FIELDS,
    Event,
    ProductFacts,
    ProfileSettings,
    UserFacts,
    build_profile,
    price_percentiles,
    profiles_table,
)

# outdoor/USD prices 10, 20, 30 -> mid-rank percentiles 1/6, 1/2, 5/6; beauty has one product -> 1/2.
CATALOG = {
    "P1": ProductFacts("Trail Pack", "outdoor", "Northwind", 1 / 6),
    "P2": ProductFacts("Storm Jacket", "outdoor", "Alpenglow", 1 / 2),
    "P3": ProductFacts("Summit Tent", "outdoor", "Northwind", 5 / 6),
    "P4": ProductFacts("Clay Mask", "beauty", "Dewdrop", 1 / 2),
    "P5": ProductFacts("trail  pack", "outdoor", "Ridgeline", 1 / 6),  # same title as P1 once normalized
}
SETTINGS = ProfileSettings(as_of=dt.date(2026, 11, 23), half_life_days=7)


def test_price_percentiles_are_mid_ranks_within_category_and_currency():
    pct = price_percentiles(
        ["A", "B", "C", "D", "E", "F"],
        ["outdoor", "outdoor", "outdoor", "outdoor", "beauty", "outdoor"],
        ["USD", "USD", "USD", "CNY", "USD", "USD"],
        [10.0, 20.0, 30.0, 999.0, 5.0, None],
    )
    # A, B, C share a group: (0 + 1/2)/3, (1 + 1/2)/3, (2 + 1/2)/3. D and E are alone: 1/2.
    assert pct == {
        "A": pytest.approx(1 / 6),
        "B": pytest.approx(1 / 2),
        "C": pytest.approx(5 / 6),
        "D": 0.5,
        "E": 0.5,
        "F": None,
    }


def test_recency_weighted_interests_hand_computed():
    events = [
        Event.at("purchase", "2026-11-03T00:00", "P2"),  # 21 days: 5 * 0.125 = 0.625 outdoor, Alpenglow
        Event.at("add_to_cart", "2026-11-10T00:00", "P4"),  # 14 days: 3 * 0.25 = 0.75 beauty, Dewdrop
        Event.at("view", "2026-11-17T00:00", "P1"),  # 7 days: 1 * 0.5 = 0.5 outdoor, Northwind
        Event.at("view", "2026-11-17T00:00", "P4"),  # 7 days: 0.5 beauty, Dewdrop
        Event.at("search", "2026-11-17T00:00", query="tent"),  # searches carry no interest weight
    ]
    profile = build_profile("U1", events, CATALOG, SETTINGS)
    # beauty 1.25 > outdoor 1.125; Dewdrop 1.25 > Alpenglow 0.625 > Northwind 0.5 (top 2 brands kept).
    assert profile["interests"] == ["beauty", "outdoor", "Dewdrop", "Alpenglow"]
    assert profile["interest_scores"] == [
        {"kind": "category", "name": "beauty", "score": 1.25},
        {"kind": "category", "name": "outdoor", "score": 1.125},
        {"kind": "brand", "name": "Dewdrop", "score": 1.25},
        {"kind": "brand", "name": "Alpenglow", "score": 0.625},
    ]
    # With (almost) no decay the old purchase wins: outdoor 5 + 1 = 6 against beauty 3 + 1 = 4.
    flat = build_profile("U1", events, CATALOG, SETTINGS.model_copy(update={"half_life_days": 3650}))
    assert flat["interests"][:2] == ["outdoor", "beauty"]


def test_interest_ties_break_by_name():
    events = [Event.at("view", "2026-11-17T00:00", "P2"), Event.at("view", "2026-11-17T00:00", "P1")]
    profile = build_profile("U1", events, CATALOG, SETTINGS)
    # Alpenglow and Northwind both 0.5: alphabetical.
    assert profile["interests"] == ["outdoor", "Alpenglow", "Northwind"]


def test_recent_lists_newest_first_deduplicated_and_cut_to_n():
    events = [
        Event.at("view", "2026-11-20T10:00", "P1"),
        Event.at("view", "2026-11-21T10:00", "P2"),
        Event.at("view", "2026-11-22T10:00", "P5"),  # "trail  pack": the same title as P1, newer
        Event.at("view", "2026-11-22T11:00", "P2"),  # repeat view: once, at its newest place
        Event.at("view", "2026-11-19T10:00", "P3"),
        Event.at("view", "2026-11-18T10:00", "P4"),
        Event.at("search", "2026-11-20T10:00", query="tent"),
        Event.at("search", "2026-11-21T10:00", query="rain  jacket"),
        Event.at("search", "2026-11-22T10:00", query="Rain Jacket"),
        Event.at("purchase", "2026-11-15T10:00", "P1"),
        Event.at("purchase", "2026-11-16T10:00", "P1"),
    ]
    profile = build_profile("U1", events, CATALOG, SETTINGS.model_copy(update={"recent_n": 3}))
    assert profile["recent_views"] == ["Storm Jacket", "trail pack", "Summit Tent"]
    assert profile["recent_searches"] == ["Rain Jacket", "tent"]
    assert profile["recent_purchases"] == ["Trail Pack"]


def test_search_queries_are_scrubbed_of_personal_data():
    events = [
        Event.at("search", "2026-11-22T10:00", query="jane.doe@example.com"),  # nothing left: dropped
        Event.at("search", "2026-11-22T09:00", query="tent call +1 415 555 0199"),
        Event.at("search", "2026-11-22T08:00", query="order 123456789012 status"),
        Event.at("search", "2026-11-22T07:00", query="安静的耳机 13812345678"),
        Event.at("search", "2026-11-22T06:00", query="ship to 12 Baker Street please"),
        Event.at("search", "2026-11-22T05:00", query="tent\ncall  me"),
    ]
    profile = build_profile("U1", events, CATALOG, SETTINGS.model_copy(update={"recent_n": 10}))
    assert profile["recent_searches"] == [
        "tent call",
        "order status",
        "安静的耳机",
        "ship to please",
        "tent call me",
    ]
    assert not any("@" in q or any(ch.isdigit() for ch in q) for q in profile["recent_searches"])


def test_price_band_from_the_median_purchase_percentile():
    def band(*products):
        events = [Event.at("purchase", f"2026-11-{10 + i}T00:00", p) for i, p in enumerate(products)]
        return build_profile("U1", events, CATALOG, SETTINGS)["price_band"]

    assert band("P1", "P1", "P2") == "budget"  # median 1/6
    assert band("P2") == "mid"  # 1/2
    assert band("P3", "P3", "P1") == "premium"  # median 5/6
    assert band() is None
    # Views and carts are not buying.
    viewed = build_profile(
        "U1",
        [Event.at("view", "2026-11-20T00:00", "P3"), Event.at("add_to_cart", "2026-11-20T00:00", "P3")],
        CATALOG,
        SETTINGS,
    )
    assert viewed["price_band"] is None


@pytest.mark.parametrize(
    "days, level", [(0, "inactive"), (2, "occasional"), (3, "regular"), (9, "regular"), (10, "frequent")]
)
def test_activity_level_counts_distinct_days_in_the_window(days, level):
    # Two events on each of `days` days, inside the 30-day window; one older event that does not count.
    events = [
        Event.at("view", f"2026-11-{23 - d:02d}T{h:02d}:00", "P1") for d in range(days) for h in (8, 20)
    ]
    events.append(Event.at("view", "2026-10-24T23:59", "P1"))  # 30 days + 1 minute before the window's end
    assert build_profile("U1", events, CATALOG, SETTINGS)["activity_level"] == level


def test_locale_and_tier_come_from_the_users_table_only():
    known = build_profile("U1", [], CATALOG, SETTINGS, UserFacts(locale="zh-CN", loyalty_tier="gold"))
    unknown = build_profile("U2", [], CATALOG, SETTINGS.model_copy(update={"default_locale": "en-GB"}))
    assert (known["locale"], known["loyalty_tier"]) == ("zh-CN", "gold")
    assert (unknown["locale"], unknown["loyalty_tier"]) == ("en-GB", None)
    assert known == {
        "user_id": "U1",
        "locale": "zh-CN",
        "interests": [],
        "recent_views": [],
        "recent_searches": [],
        "recent_purchases": [],
        "loyalty_tier": "gold",
        "interest_scores": [],
        "price_band": None,
        "activity_level": "inactive",
    }


def test_same_events_in_any_order_give_the_same_profile():
    events = [
        Event.at(t, f"2026-11-{d:02d}T{h:02d}:00", p, q)
        for t, d, h, p, q in [
            ("view", 20, 8, "P1", None),
            ("view", 20, 8, "P2", None),
            ("purchase", 21, 9, "P3", None),
            ("search", 22, 9, None, "tent"),
            ("search", 22, 9, None, "jacket"),
            ("add_to_cart", 19, 7, "P4", None),
        ]
    ]
    expected = build_profile("U1", events, CATALOG, SETTINGS)
    rng = random.Random(3)
    for _ in range(5):
        shuffled = events[:]
        rng.shuffle(shuffled)
        assert build_profile("U1", shuffled, CATALOG, SETTINGS) == expected
    # Equal timestamps: the tie-break is by type, then product, then query.
    assert expected["recent_views"] == ["Trail Pack", "Storm Jacket"]
    assert expected["recent_searches"] == ["jacket", "tent"]


def test_profile_table_has_exactly_the_allow_listed_columns():
    row = build_profile(
        "U1", [Event.at("view", "2026-11-20T00:00", "P1")], CATALOG, SETTINGS, UserFacts("en-US", "gold")
    )
    table = profiles_table([{**row, "email": "jane@example.com", "age_band": "35-44", "product_id": "P1"}])
    assert table.column_names == list(PROFILE_FIELDS)
    assert "jane@example.com" not in str(table.to_pylist()) and "P1" not in str(table.to_pylist())


# --- per-event checks ---------------------------------------------------------


UTC_MICROS = pa.timestamp("us", tz="UTC")


def _batch(rows: list[dict], ts_type=UTC_MICROS) -> pa.Table:
    n = len(rows)
    return pa.table(
        {
            C.USER_ID: pa.array([r.get("user_id") for r in rows], pa.string()),
            E.EVENT_TYPE: pa.array([r.get("event_type") for r in rows], pa.string()),
            E.TS: pa.array([r.get("ts") for r in rows], ts_type),
            C.PRODUCT_ID: pa.array([r.get("product_id") for r in rows], pa.string()),
            E.QUERY: pa.array([r.get("query") for r in rows], pa.string()),
            C.SOURCE: pa.array(["events/a.parquet"] * n, pa.string()),
            C.SOURCE_ROW: pa.array(range(100, 100 + n), pa.int64()),
        }
    )


CUTOFF = SETTINGS.cutoff_micros
OK_TS = dt.datetime(2026, 11, 23, 23, 59, tzinfo=dt.timezone.utc)
FUTURE_TS = dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.timezone.utc)  # the first instant after the as-of day


def test_each_bad_event_gets_its_reason():
    rows = [
        {"user_id": "U1", "event_type": "view", "ts": OK_TS, "product_id": "P1"},
        {"user_id": None, "event_type": "view", "ts": OK_TS, "product_id": "P1"},
        {"user_id": "U1", "event_type": "click", "ts": OK_TS, "product_id": "P1"},
        {"user_id": "U1", "event_type": None, "ts": OK_TS, "product_id": "P1"},
        {"user_id": "U1", "event_type": "view", "ts": None, "product_id": "P1"},
        {"user_id": "U1", "event_type": "view", "ts": FUTURE_TS, "product_id": "P1"},
        {"user_id": "U1", "event_type": "purchase", "ts": OK_TS, "product_id": None},
        {"user_id": "U1", "event_type": "add_to_cart", "ts": OK_TS, "product_id": "P404"},
        {"user_id": "U1", "event_type": "search", "ts": OK_TS, "query": "   "},
        {"user_id": "U1", "event_type": "search", "ts": OK_TS, "query": "tent jane@example.com"},
        {"user_id": "U\x07", "event_type": "view", "ts": OK_TS, "product_id": "P1"},
        {"user_id": None, "event_type": "click", "ts": FUTURE_TS},  # the first reason wins
    ]
    checked = E.check_events(_batch(rows), pa.array(["P1", "P2"]), CUTOFF, partitions=4)
    assert checked[C.REASON].to_pylist() == [
        None,
        "null_user_id",
        "unknown_event_type",
        "unknown_event_type",
        "null_timestamp",
        "future_timestamp",
        "missing_product_id",
        "unknown_product_id",
        "missing_query",
        None,
        "control_characters_user_id",
        "null_user_id",
    ]
    assert E.reason_counts(checked) == {
        "null_user_id": 2,
        "unknown_event_type": 2,
        "null_timestamp": 1,
        "future_timestamp": 1,
        "missing_product_id": 1,
        "unknown_product_id": 1,
        "missing_query": 1,
        "control_characters_user_id": 1,
    }
    rejected = E.rejected_rows(checked)
    assert rejected.schema == E.REJECTED_SCHEMA
    assert rejected[C.SOURCE_ROW].to_pylist() == [101, 102, 103, 104, 105, 106, 107, 108, 110, 111]
    assert set(rejected[C.SOURCE].to_pylist()) == {"events/a.parquet"}
    # Accepted rows keep their query (scrubbed later); rejected ones never carry it on.
    assert checked[E.QUERY].to_pylist()[9] == "tent jane@example.com"
    assert checked.filter(checked[C.REASON].is_valid())[E.QUERY].null_count == 10


def test_timestamps_any_unit_and_naive_as_utc():
    naive = dt.datetime(2026, 11, 23, 12, 0)
    checked = E.check_events(
        _batch(
            [{"user_id": "U1", "event_type": "view", "ts": naive, "product_id": "P1"}], pa.timestamp("ns")
        ),
        pa.array(["P1"]),
        CUTOFF,
        1,
    )
    expected = int(naive.replace(tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
    assert checked[E.TS].to_pylist() == [expected]
    assert checked[C.REASON].to_pylist() == [None]


def test_buckets_are_stable_hashes_of_the_user():
    checked = E.check_events(
        _batch(
            [
                {"user_id": u, "event_type": "view", "ts": OK_TS, "product_id": "P1"}
                for u in ("U1", "U2", "U1")
            ]
        ),
        pa.array(["P1"]),
        CUTOFF,
        7,
    )
    buckets = checked[E.BUCKET].to_pylist()
    assert buckets[0] == buckets[2] == E.bucket_of("U1", 7)
    assert all(0 <= b < 7 for b in buckets)
    assert E.bucket_of("U2", 7) == zlib.crc32(b"U2") % 7


def test_grouping_by_user_hands_each_user_their_events():
    checked = E.check_events(
        _batch(
            [
                {"user_id": "U2", "event_type": "view", "ts": OK_TS, "product_id": "P1"},
                {"user_id": "U1", "event_type": "search", "ts": OK_TS, "query": "tent"},
                {"user_id": "U2", "event_type": "purchase", "ts": OK_TS, "product_id": "P1"},
                {"user_id": "U3", "event_type": "bogus", "ts": OK_TS},
            ]
        ),
        pa.array(["P1"]),
        CUTOFF,
        1,
    )
    accepted = checked.filter(checked[C.REASON].is_null())
    users, spans, cols = E.group_by_user(accepted)
    assert users == ["U1", "U2"]
    assert [sorted(e.event_type for e in E.events_of(cols, s, e)) for s, e in spans] == [
        ["search"],
        ["purchase", "view"],
    ]
