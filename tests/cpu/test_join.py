import pyarrow as pa

from factory import columns as C
from factory.dead_letters import NULL_USER_ID, UNKNOWN_CHANNEL, UNKNOWN_PRODUCT, UNKNOWN_USER
from factory.stages.join import JoinProfiles

USERS = pa.table(
    {
        C.USER_ID: ["u1", "u2"],
        C.LOCALE: ["en-US", "zh-CN"],
        "interests": [["hiking"], ["护肤"]],
        "recent_views": [[], []],
        "recent_searches": [[], []],
        "recent_purchases": [[], []],
        "age_band": ["25-34", None],
        "loyalty_tier": ["gold", None],
    }
)
PRODUCTS = pa.table(
    {
        C.PRODUCT_ID: ["p1", "p2"],
        "title": ["Jacket", "面膜"],
        "category": ["outdoor", "beauty"],
        "brand": ["Northwind", "清颜"],
        "price": [99.0, 59.0],
        "currency": ["USD", "CNY"],
        "description": ["d1", "d2"],
        "attributes": [None, None],
        "selling_points": [["Waterproof"], None],
    }
)
CHANNELS = ["push", "sms"]
KNOWN = ["push", "sms", "email_subject", "ad_headline", "product_blurb"]


def _join(pairs: dict, variants: int = 1, campaign=None) -> list[dict]:
    stage = JoinProfiles(USERS, PRODUCTS, CHANNELS, KNOWN, variants, campaign)
    return stage(pa.table(pairs)).to_pylist()


def test_fan_out_per_channel_with_profiles_attached():
    rows = _join({C.USER_ID: ["u1", "u2"], C.PRODUCT_ID: ["p1", "p2"]})
    assert [(r[C.USER_ID], r[C.CHANNEL]) for r in rows] == [
        ("u1", "push"),
        ("u1", "sms"),
        ("u2", "push"),
        ("u2", "sms"),
    ]
    assert all(r[C.REASON] is None for r in rows)
    assert (
        rows[0]["title"] == "Jacket" and rows[0]["interests"] == ["hiking"] and rows[0][C.LOCALE] == "en-US"
    )
    assert rows[2]["title"] == "面膜" and rows[2][C.LOCALE] == "zh-CN"
    assert {r[C.CAMPAIGN_ID] for r in rows} == {"default"}


def test_a_pair_that_names_its_channel_gets_only_that_one():
    rows = _join(
        {
            C.USER_ID: ["u1", "u1"],
            C.PRODUCT_ID: ["p1", "p2"],
            C.CHANNEL: ["sms", "email_subject"],
            C.CAMPAIGN_ID: ["spring", None],
        },
        campaign=None,
    )
    # email_subject is a known channel but not in this run: the pair is skipped, not dead.
    assert [(r[C.PRODUCT_ID], r[C.CHANNEL], r[C.CAMPAIGN_ID]) for r in rows] == [("p1", "sms", "spring")]


def test_variants_multiply_rows():
    rows = _join({C.USER_ID: ["u1"], C.PRODUCT_ID: ["p1"]}, variants=3)
    assert sorted((r[C.CHANNEL], r[C.VARIANT]) for r in rows) == [(c, v) for c in CHANNELS for v in range(3)]


def test_unservable_pairs_come_out_once_with_a_reason():
    rows = _join(
        {
            C.USER_ID: ["u1", "ghost", None, "u2", "u1"],
            C.PRODUCT_ID: ["p1", "p1", "p1", "nope", "p2"],
            C.CHANNEL: [None, None, None, None, "fax"],
        }
    )
    dead = [(r[C.USER_ID], r[C.REASON]) for r in rows if r[C.REASON]]
    assert dead == [
        ("ghost", UNKNOWN_USER),
        (None, NULL_USER_ID),
        ("u2", UNKNOWN_PRODUCT),
        ("u1", UNKNOWN_CHANNEL),
    ]
    good = [r for r in rows if r[C.REASON] is None]
    assert len(good) == 2 and all(r[C.USER_ID] == "u1" for r in good)
    by_reason = {r[C.REASON]: r for r in rows if r[C.REASON]}
    assert by_reason[UNKNOWN_USER][C.LOCALE] is None and by_reason[UNKNOWN_USER]["title"] == "Jacket"
    assert by_reason[UNKNOWN_PRODUCT]["title"] is None and by_reason[UNKNOWN_PRODUCT][C.LOCALE] == "zh-CN"


def test_run_campaign_labels_every_row():
    rows = _join({C.USER_ID: ["u1"], C.PRODUCT_ID: ["p1"], C.CAMPAIGN_ID: ["other"]}, campaign="winter_sale")
    assert {r[C.CAMPAIGN_ID] for r in rows} == {"winter_sale"}
