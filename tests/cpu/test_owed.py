"""Which rows a pair owes: one rule (factory/pipeline/owed.py), the same whether
staging asks for a whole bucket or the join asks for one pair."""

from __future__ import annotations

import pyarrow as pa

from factory import columns as C
from factory.pipeline import owed

CHANNELS = ["push", "sms"]


def _pairs(rows):
    return pa.table(
        {
            C.USER_ID: [r[0] for r in rows],
            C.PRODUCT_ID: [r[1] for r in rows],
            C.CHANNEL: pa.array([r[2] for r in rows], pa.string()),
            C.CAMPAIGN_ID: pa.array([r[3] for r in rows], pa.string()),
        }
    )


def test_the_column_form_is_the_per_pair_rule_for_every_kind_of_pair():
    channels = pa.array(["sms", None, "fax", "push", None], pa.string())
    rows = owed.fan_out_rows(channels, CHANNELS, variants=2)
    got = list(zip(rows[owed.PAIR].to_pylist(), rows[C.CHANNEL].to_pylist(), rows[C.VARIANT].to_pylist()))
    want = [(i, ch, v) for i, c in enumerate(channels.to_pylist()) for ch, v in owed.fan_out(c, CHANNELS, 2)]
    assert got == want
    assert (2, "fax", 0) not in got  # a channel the run does not write owes nothing


def test_the_first_pair_in_file_order_keeps_a_row_and_a_pair_left_with_nothing_is_a_duplicate():
    pairs = _pairs(
        [
            ("u1", "p1", None, "c"),  # owes push and sms
            ("u1", "p1", "sms", "c"),  # sms is already owed: a duplicate pair
            ("u1", "p1", "sms", "d"),  # another campaign: its own row
            ("u2", "p1", "fax", None),  # owes nothing
            ("u2", "p1", "push", None),
        ]
    )  # keyed under "default"
    found = owed.owed_rows(pairs, CHANNELS, variants=1, run_campaign=None)
    keys = list(zip(*(found.rows[c].to_pylist() for c in (owed.CAMPAIGN, C.USER_ID, C.CHANNEL, owed.PAIR))))
    assert keys == [
        ("c", "u1", "push", 0),
        ("c", "u1", "sms", 0),
        ("d", "u1", "sms", 2),
        ("default", "u2", "push", 4),
    ]
    assert found.duplicate_pairs.to_pylist() == [1]
    assert sorted(found.owing_pairs.to_pylist()) == [0, 1, 2, 4]


def test_the_runs_campaign_keys_every_row():
    pairs = _pairs([("u1", "p1", "sms", "c"), ("u1", "p1", "sms", "d")])
    found = owed.owed_rows(pairs, CHANNELS, variants=1, run_campaign="spring")
    assert found.rows[owed.CAMPAIGN].to_pylist() == ["spring"]
    assert found.duplicate_pairs.to_pylist() == [1]
