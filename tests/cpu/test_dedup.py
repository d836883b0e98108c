"""Identical prompts generated once, prefix-cache order, engine-work figures, progress."""

import json
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from factory import columns as C
from factory import dedup
from factory.progress import ProgressLog, count_finished
from factory.prompts import load_templates
from factory.stages.join import JoinProfiles
from factory.stages.render import RenderPrompts
from factory.stages.reuse import OWN_COLUMNS, reuse_copy


def _segment_users(n_segments=3, per_segment=4):
    """Users of one segment share every profile field; their ids differ."""
    rows = []
    for s in range(n_segments):
        for k in range(per_segment):
            rows.append(
                {
                    C.USER_ID: f"U{s}{k}",
                    C.LOCALE: "en-US" if s != 2 else "zh-CN",
                    "interests": [f"interest {s}"],
                    "recent_views": [f"view {s}"],
                    "recent_searches": [f"search {s}"],
                    "recent_purchases": [],
                    "age_band": "25-34",
                    "loyalty_tier": "gold",
                }
            )
    return pa.Table.from_pylist(rows)


def _products():
    return pa.Table.from_pylist(
        [
            {
                C.PRODUCT_ID: f"P{i}",
                "title": f"Lamp {i}",
                "category": "home",
                "brand": "Nook",
                "price": 10.0 + i,
                "currency": "USD",
                "description": "A lamp.",
                "attributes": None,
                "selling_points": ["warm light"],
            }
            for i in range(2)
        ]
    )


def _rows(users, products, channels=("push", "sms"), variants=1, campaign="c"):
    out = []
    for u in users[C.USER_ID].to_pylist():
        for p in products[C.PRODUCT_ID].to_pylist():
            for ch in channels:
                for v in range(variants):
                    out.append(
                        {C.USER_ID: u, C.PRODUCT_ID: p, C.CHANNEL: ch, C.CAMPAIGN_ID: campaign, C.VARIANT: v}
                    )
    return pa.Table.from_pylist(
        out,
        schema=pa.schema(
            [
                (C.USER_ID, pa.string()),
                (C.PRODUCT_ID, pa.string()),
                (C.CHANNEL, pa.string()),
                (C.CAMPAIGN_ID, pa.string()),
                (C.VARIANT, pa.int32()),
            ]
        ),
    )


def _rendered(rows, users, products, templates):
    joined = JoinProfiles(
        users,
        products,
        channels=list(templates),
        known_channels=list(templates),
        variants=1,
        campaign=None,
        run_id="r",
    )(rows)
    return RenderPrompts(templates)(joined)


def _assert_keys_match_prompts(rows, users, products, templates):
    """Equal keys must mean equal prompts (else a user would get copy written
    for someone else); return the number of distinct keys."""
    keys = dedup.prompt_keys(rows, users, templates).to_pylist()
    rendered = _rendered(rows, users, products, templates)
    by_row = {
        (r[C.USER_ID], r[C.PRODUCT_ID], r[C.CHANNEL], r[C.VARIANT]): (r[C.MESSAGES], r[C.MAX_TOKENS])
        for r in rendered.to_pylist()
    }
    prompts_by_key = defaultdict(set)
    for row, key in zip(rows.to_pylist(), keys):
        prompts_by_key[key].add(by_row[(row[C.USER_ID], row[C.PRODUCT_ID], row[C.CHANNEL], row[C.VARIANT])])
    assert all(len(p) == 1 for p in prompts_by_key.values())
    return len(prompts_by_key), len({p for ps in prompts_by_key.values() for p in ps})


def test_users_of_one_segment_share_a_prompt_and_only_they_do():
    templates = load_templates()
    users, products = _segment_users(), _products()
    rows = _rows(users, products)
    n_keys, n_prompts = _assert_keys_match_prompts(rows, users, products, templates)
    # 3 segments x 2 products x 2 channels: 12 distinct prompts for 48 rows.
    assert n_keys == n_prompts == 12
    lead = dedup.leaders([f"r{i}" for i in range(rows.num_rows)], dedup.prompt_keys(rows, users, templates))
    assert sum(x is None for x in lead) == 12
    # The leader is the first row of its key; a follower never leads.
    assert lead[0] is None and all(x is None or int(x[1:]) < i for i, x in enumerate(lead))


def test_a_field_the_template_shows_splits_the_key_and_one_it_does_not_show_does_not():
    templates = load_templates()
    users = _segment_users(n_segments=1, per_segment=3)
    # push shows interests but not recent_purchases or age_band.
    users = users.set_column(
        users.column_names.index("interests"),
        "interests",
        pa.array([["a"], ["a"], ["b"]], pa.list_(pa.string())),
    )
    users = users.set_column(users.column_names.index("age_band"), "age_band", pa.array(["1", "2", "3"]))
    rows = _rows(users, _products().slice(0, 1), channels=("push",))
    keys = dedup.prompt_keys(rows, users, templates).to_pylist()
    assert keys[0] == keys[1] != keys[2]
    _assert_keys_match_prompts(rows, users, _products(), templates)


def test_variants_and_campaigns_never_share():
    templates = load_templates()
    users = _segment_users(n_segments=1, per_segment=2)
    rows = _rows(users, _products().slice(0, 1), channels=("push",), variants=2)
    keys = dedup.prompt_keys(rows, users, templates).to_pylist()
    assert len(set(keys)) == 2  # two variants, each shared by both users
    other = _rows(users, _products().slice(0, 1), channels=("push",), campaign="d")
    assert not set(dedup.prompt_keys(other, users, templates).to_pylist()) & set(keys)


def test_keys_match_prompts_on_the_sample_data(sample_dir):
    templates = load_templates()
    users = pq.read_table(sample_dir / "users.parquet")
    products = pq.read_table(sample_dir / "products.parquet")
    pairs = pq.read_table(sample_dir / "pairs.parquet").to_pylist()
    known_users, known_products = set(users[C.USER_ID].to_pylist()), set(products[C.PRODUCT_ID].to_pylist())
    good = [p for p in pairs if p[C.USER_ID] in known_users and p[C.PRODUCT_ID] in known_products]
    rows = _rows(
        users.filter(pa.compute.is_in(users[C.USER_ID], pa.array([p[C.USER_ID] for p in good]))),
        products.filter(
            pa.compute.is_in(products[C.PRODUCT_ID], pa.array([p[C.PRODUCT_ID] for p in good[:5]]))
        ),
        channels=tuple(templates),
    )
    _assert_keys_match_prompts(rows, users, products, templates)


def test_prefix_cache_order_groups_channel_locale_product():
    users = _segment_users()
    rows = _rows(users, _products())
    ordered = rows.take(dedup.prefix_cache_order(rows, users)).to_pylist()
    locale = dict(zip(users[C.USER_ID].to_pylist(), users[C.LOCALE].to_pylist()))
    keys = [(r[C.CHANNEL], locale[r[C.USER_ID]], r[C.PRODUCT_ID]) for r in ordered]
    assert keys == sorted(keys)
    # Each (channel, locale, product) group is contiguous.
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(keys))


def test_rows_of_one_product_share_the_prompt_up_to_the_end_of_the_product():
    """The order above only pays if nothing about the user comes before the
    product: two users with nothing in common, same channel and product,
    must share the prompt through ``</product>`` and differ after it."""
    templates = load_templates()
    users = _segment_users(n_segments=2, per_segment=1)  # different interests, views, searches
    users = users.set_column(
        users.column_names.index("loyalty_tier"), "loyalty_tier", pa.array(["gold", "silver"])
    )
    rows = _rows(users, _products().slice(0, 1), channels=tuple(templates))
    rendered = _rendered(rows, users, _products(), templates).to_pylist()
    for channel in templates:
        a, b = [json.loads(r[C.MESSAGES]) for r in rendered if r[C.CHANNEL] == channel]
        assert a[:-1] == b[:-1]  # system text and worked example
        head_a, sep, tail_a = a[-1]["content"].partition("</product>")
        head_b, _, tail_b = b[-1]["content"].partition("</product>")
        assert sep and "<product>" in head_a, channel
        assert head_a == head_b, channel
        assert tail_a != tail_b, channel  # the user's part comes after the product


def _written(rows):
    schema = pa.schema(
        [
            (C.ROW_ID, pa.string()),
            (C.CHANNEL, pa.string()),
            (C.DEDUP_OF, pa.string()),
            (C.NUM_INPUT_TOKENS, pa.int32()),
            (C.NUM_OUTPUT_TOKENS, pa.int32()),
            (C.NUM_CACHED_TOKENS, pa.int32()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def test_work_figures_count_reuse_savings_cache_and_prompt_tokens():
    table = _written(
        [
            {
                C.ROW_ID: "a",
                C.CHANNEL: "push",
                C.DEDUP_OF: None,
                C.NUM_INPUT_TOKENS: 100,
                C.NUM_OUTPUT_TOKENS: 10,
                C.NUM_CACHED_TOKENS: 0,
            },
            {
                C.ROW_ID: "b",
                C.CHANNEL: "push",
                C.DEDUP_OF: None,
                C.NUM_INPUT_TOKENS: 120,
                C.NUM_OUTPUT_TOKENS: 20,
                C.NUM_CACHED_TOKENS: 96,
            },
            {
                C.ROW_ID: "c",
                C.CHANNEL: "sms",
                C.DEDUP_OF: None,
                C.NUM_INPUT_TOKENS: 80,
                C.NUM_OUTPUT_TOKENS: 30,
                C.NUM_CACHED_TOKENS: None,
            },
            {
                C.ROW_ID: "d",
                C.CHANNEL: "push",
                C.DEDUP_OF: "b",
                C.NUM_INPUT_TOKENS: 0,
                C.NUM_OUTPUT_TOKENS: 0,
                C.NUM_CACHED_TOKENS: None,
            },
            {
                C.ROW_ID: "e",
                C.CHANNEL: "push",
                C.DEDUP_OF: "b",
                C.NUM_INPUT_TOKENS: 0,
                C.NUM_OUTPUT_TOKENS: 0,
                C.NUM_CACHED_TOKENS: None,
            },
        ]
    )
    # The reusing rows as ReuseCopy made them, before the writer shaped them:
    # they carry their leader's tokens, what the reuse spared the engine.
    carried = table.append_column(
        C.SAVED_PROMPT_TOKENS, pa.array([None, None, None, 120, 120], pa.int32())
    ).append_column(C.SAVED_OUTPUT_TOKENS, pa.array([None, None, None, 20, 20], pa.int32()))
    tally = dedup.WorkTally()
    tally.add(table, carried)
    w = tally.figures()
    assert (w["rows_generated"], w["rows_reused"], w["reused_share"]) == (3, 2, 0.4)
    assert w["tokens_saved_by_reuse"] == {"prompt": 240, "output": 40}
    assert (w["prompt_tokens"], w["output_tokens"]) == (300, 60)
    assert w["prefix_cache_hit_rate"] == round(96 / 220, 4) and w["prefix_cache_rows_measured"] == 2
    assert w["by_channel"] == {
        "push": {"mean_prompt_tokens": 110.0, "mean_output_tokens": 15.0},
        "sms": {"mean_prompt_tokens": 80.0, "mean_output_tokens": 30.0},
    }
    # File by file (leaders and followers in different files), and through a footer's JSON, the same figures.
    merged = dedup.WorkTally()
    for part in (slice(3, 5), slice(0, 1), slice(1, 3)):
        one = dedup.WorkTally()
        one.add(table[part], carried[part])
        merged += dedup.WorkTally.from_state(json.loads(json.dumps(one.state())))
    assert merged.figures() == w
    none = dedup.work_figures(
        _written(
            [
                {
                    C.ROW_ID: "a",
                    C.CHANNEL: "push",
                    C.DEDUP_OF: None,
                    C.NUM_INPUT_TOKENS: 5,
                    C.NUM_OUTPUT_TOKENS: 1,
                    C.NUM_CACHED_TOKENS: None,
                }
            ]
        )
    )
    assert none["prefix_cache_hit_rate"] is None and none["rows_reused"] == 0


def _beside_leaders(followers: pa.Table, leaders: pa.Table) -> pa.Table:
    """What ``resume.with_leaders`` hands the reuse stage (its join, in pyarrow)."""
    at = pc.index_in(followers[C.DEDUP_OF], value_set=leaders[C.ROW_ID])
    lead = leaders.drop_columns([c for c in OWN_COLUMNS if c in leaders.column_names]).take(at)
    own = followers.select(list(OWN_COLUMNS))
    return pa.table({**{c: own[c] for c in own.column_names}, **{c: lead[c] for c in lead.column_names}})


def test_reuse_copy_takes_the_leaders_copy_under_its_own_identity():
    leaders = pa.Table.from_pylist(
        [
            {
                C.ROW_ID: "L1",
                C.USER_ID: "U1",
                C.CAMPAIGN_ID: "c",
                C.VARIANT: 0,
                C.TEXT: "Warm light for you.",
                C.LOCALE: "en-US",
                C.CHANNEL: "push",
                C.PRODUCT_ID: "P1",
                C.STATUS: C.ACCEPTED,
                C.DRAFT: 2,
                C.FIRST_DRAFT_REASONS: ["truncated"],
                C.NUM_INPUT_TOKENS: 90,
                C.NUM_OUTPUT_TOKENS: 9,
                C.NUM_CACHED_TOKENS: 64,
                C.DEDUP_OF: None,
            }
        ]
    )
    followers = pa.Table.from_pylist(
        [
            {
                C.ROW_ID: "F1",
                C.USER_ID: "U2",
                C.PRODUCT_ID: "P1",
                C.CHANNEL: "push",
                C.CAMPAIGN_ID: "c",
                C.VARIANT: 0,
                C.DEDUP_OF: "L1",
                **{f: ["lamps"] for f in C.USERS_LIST_FIELDS},  # its own user's profile, for the gate
            }
        ]
    )
    out = reuse_copy(_beside_leaders(followers, leaders)).to_pylist()[0]
    assert (out[C.ROW_ID], out[C.USER_ID], out[C.DEDUP_OF], out[C.PRODUCT_ID]) == ("F1", "U2", "L1", "P1")
    assert (out[C.TEXT], out[C.DRAFT], out[C.FIRST_DRAFT_REASONS]) == (
        "Warm light for you.",
        2,
        ["truncated"],
    )
    assert (out[C.NUM_INPUT_TOKENS], out[C.NUM_OUTPUT_TOKENS], out[C.NUM_CACHED_TOKENS]) == (0, 0, None)
    assert (out[C.SAVED_PROMPT_TOKENS], out[C.SAVED_OUTPUT_TOKENS]) == (90, 9)  # what the reuse spared
    orphan = followers.set_column(followers.column_names.index(C.DEDUP_OF), C.DEDUP_OF, pa.array(["nope"]))
    with pytest.raises(RuntimeError, match="not written"):
        reuse_copy(_beside_leaders(orphan, leaders))


class _Counter:
    def __init__(self):
        self.calls = []
        self.add = self  # counter.add.remote(...)

    def remote(self, rows, tokens):
        self.calls.append((rows, tokens))


def test_progress_counts_finished_rows_not_those_sent_to_repair():
    batch = pa.table(
        {C.ROUTE: ["copies", "repair", "copies"], C.NUM_OUTPUT_TOKENS: pa.array([5, 7, 9], pa.int32())}
    )
    counter = _Counter()
    assert count_finished(batch, counter) is batch
    assert counter.calls == [(2, 21)]


def test_progress_line_has_rows_rate_tokens_and_eta():
    log = ProgressLog(total=1_000, already_done=100)
    line = log.line({"t": 100.0, "phase": "first drafts", "rows_done": 300, "output_tokens": 6_000})
    # 400 of 1000 done; 3 rows/s in this process -> 600 left take 200 s.
    assert line == (
        "progress [first drafts]: 400/1,000 rows (40%) | 3.0 rows/s | 60 output tok/s | "
        "elapsed 1m40s | ETA 3m20s"
    )
    assert "ETA unknown" in log.line({"t": 5.0, "phase": "starting", "rows_done": 0, "output_tokens": 0})


def test_in_scope_keeps_the_runs_pairs_and_lets_unknown_ids_reach_the_checks():
    from factory.pipeline.plan import LOCALE_EXCLUDED_COLUMN, InScope

    batch = pa.table(
        {
            C.USER_ID: ["U1", "U2", "U3", None, "U9", "U1"],
            C.PRODUCT_ID: ["P1", "P2", "P1", "P1", "P1", "P1"],
            C.CAMPAIGN_ID: ["a", "a", "b", "a", "a", None],
        }
    )
    keep = InScope("a", None, pa.array(["P1"]), pa.array(["U2"]))(batch)
    # U3 is another campaign, U2 sells P2 and is excluded by locale, the last
    # pair names no campaign; the null and the unknown user stay, for pass 1
    # to send to the dead letters.
    assert keep[C.USER_ID].to_pylist() == ["U1", None, "U9"]
    only = InScope(None, ["U1", "U3", "U1"])(batch)
    assert only[C.USER_ID].to_pylist() == ["U1", "U3", "U1"]
    assert InScope()(batch).equals(batch)
    # The dry run keeps the other locales' pairs, flagged, to count them.
    marked = InScope(excluded_users=pa.array(["U2", "U9"]), mark_excluded=True)(batch)
    assert marked[LOCALE_EXCLUDED_COLUMN].to_pylist() == [False, True, False, False, True, False]


def test_in_scope_takes_a_key_that_is_not_valid_text_to_the_checks():
    from factory.pipeline.plan import InScope

    broken = pa.array([b"U1", b"\xff\xfe", b"U2"], pa.binary()).view(pa.string())  # as a damaged file reads
    batch = pa.table({C.USER_ID: broken, C.PRODUCT_ID: ["P1", "P1", "P1"]})
    kept = InScope(excluded_users=pa.array(["U2"]))(batch)
    assert kept.num_rows == 2 and kept[C.USER_ID].cast(pa.binary()).to_pylist()[1] == b"\xff\xfe"
