"""The profile build end to end: real Ray Data, real Parquet, local and S3 (moto over HTTP).

The small event log below is written out with its expected profiles (hand
computed: as of 2026-11-23, half-life 7 days, ages from 2026-11-24T00:00Z).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import columns as C
from factory import inputs, sample_data
from factory.profiles.events import bucket_of
from factory.prompts import load_templates
from factory.stages.join import JoinProfiles
from factory.stages.render import RenderPrompts
from factory.storage import resolve
from jobs import build_profiles
from tests.conftest import S3_SECRET_KEY

UTC = dt.timezone.utc


def _ts(day: int, month: int = 11, year: int = 2026) -> dt.datetime:
    return dt.datetime(year, month, day, tzinfo=UTC)


PRODUCTS = [
    # outdoor/USD prices 10, 20, 30: price percentiles 1/6, 1/2, 5/6.
    ("P1", "Trail Pack", "outdoor", "Northwind", 10.0),
    ("P2", "Storm Jacket", "outdoor", "Alpenglow", 20.0),
    ("P3", "Summit Tent", "outdoor", "Northwind", 30.0),
    ("P4", "Clay Mask", "beauty", "Dewdrop", 15.0),
]
# File a: with a query column and a column the builder must never read.
EVENTS_A = [
    ("U1", "view", "P1", None, _ts(17)),  # 7 d: 0.5 outdoor, Northwind
    ("U1", "purchase", "P2", None, _ts(3)),  # 21 d: 5 * 0.125 = 0.625 outdoor, Alpenglow
    ("U2", "search", None, "tents for jane@example.com", _ts(20)),
    ("U2", "view", "P4", None, _ts(10)),  # 14 d: 0.25 beauty, Dewdrop
    (None, "view", "P1", None, _ts(17)),  # row 4: null_user_id
    ("U1", "view", "P404", None, _ts(17)),  # row 5: unknown_product_id
]
# File b: no query column, naive nanosecond timestamps (taken as UTC).
EVENTS_B = [
    ("U2", "add_to_cart", "P4", _ts(10)),  # 14 d: 3 * 0.25 = 0.75 beauty, Dewdrop
    ("U1", "click", "P1", _ts(17)),  # row 1: unknown_event_type
    ("U2", "view", "P3", _ts(1, 1, 2027)),  # row 2: future_timestamp
]
EXPECTED = [
    {
        "user_id": "U1",
        "locale": "zh-CN",
        "interests": ["outdoor", "Alpenglow", "Northwind"],
        "recent_views": ["Trail Pack"],
        "recent_searches": [],
        "recent_purchases": ["Storm Jacket"],
        "loyalty_tier": "gold",
        "interest_scores": [
            {"kind": "category", "name": "outdoor", "score": 1.125},
            {"kind": "brand", "name": "Alpenglow", "score": 0.625},
            {"kind": "brand", "name": "Northwind", "score": 0.5},
        ],
        "price_band": "mid",
        "activity_level": "occasional",
    },  # bought P2 (1/2); active on 2 days
    {
        "user_id": "U2",
        "locale": "en-US",
        "interests": ["beauty", "Dewdrop"],
        "recent_views": ["Clay Mask"],
        "recent_searches": ["tents for"],
        "recent_purchases": [],
        "loyalty_tier": None,
        "interest_scores": [
            {"kind": "category", "name": "beauty", "score": 1.0},
            {"kind": "brand", "name": "Dewdrop", "score": 1.0},
        ],
        "price_band": None,
        "activity_level": "occasional",
    },  # not in the users table: default locale
    {
        "user_id": "U9",
        "locale": "en-GB",
        "interests": [],
        "recent_views": [],
        "recent_searches": [],
        "recent_purchases": [],
        "loyalty_tier": "silver",
        "interest_scores": [],
        "price_band": None,
        "activity_level": "inactive",
    },  # users table only, no events
]


def _write_inputs(folder: Path) -> dict[str, str]:
    (folder / "events").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                C.USER_ID: [e[0] for e in EVENTS_A],
                "event_type": [e[1] for e in EVENTS_A],
                C.PRODUCT_ID: [e[2] for e in EVENTS_A],
                "query": [e[3] for e in EVENTS_A],
                "ts": pa.array([e[4] for e in EVENTS_A], pa.timestamp("us", tz="UTC")),
                "client_ip": ["198.51.100.7"] * len(EVENTS_A),
            }
        ),
        folder / "events" / "a.parquet",
    )
    pq.write_table(
        pa.table(
            {
                C.USER_ID: [e[0] for e in EVENTS_B],
                "event_type": [e[1] for e in EVENTS_B],
                C.PRODUCT_ID: [e[2] for e in EVENTS_B],
                "ts": pa.array([e[3].replace(tzinfo=None) for e in EVENTS_B], pa.timestamp("ns")),
            }
        ),
        folder / "events" / "b.parquet",
    )
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    C.PRODUCT_ID: pid,
                    "title": title,
                    "category": cat,
                    "brand": brand,
                    "price": price,
                    "currency": "USD",
                    "description": f"{title}. Call 415 555 0100 for details.",
                }
                for pid, title, cat, brand, price in PRODUCTS
            ]
        ),
        folder / "products.parquet",
    )
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    C.USER_ID: "U1",
                    C.LOCALE: "zh-CN",
                    "loyalty_tier": "gold",
                    "age_band": "35-44",
                    "email": "u1@example.com",
                    "recent_searches": ["old search with u1@example.com"],
                },
                {
                    C.USER_ID: "U9",
                    C.LOCALE: "en-GB",
                    "loyalty_tier": "silver",
                    "age_band": "18-24",
                    "email": "u9@example.com",
                    "recent_searches": [],
                },
            ]
        ),
        folder / "users.parquet",
    )
    return {
        "events": str(folder / "events"),
        "products": str(folder / "products.parquet"),
        "users": str(folder / "users.parquet"),
    }


def _argv(paths: dict[str, str], output: str, *extra: str) -> list[str]:
    return [
        "--events",
        paths["events"],
        "--products",
        paths["products"],
        "--users",
        paths["users"],
        "--output",
        output,
        "--as-of",
        "2026-11-23",
        "--half-life-days",
        "7",
        *extra,
    ]


def _profiles(folder: Path) -> list[dict]:
    rows = []
    for f in sorted(folder.glob("part-*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def test_build_writes_the_hand_computed_profiles_and_sets_bad_events_aside(local_ray, tmp_path, capsys):
    paths = _write_inputs(tmp_path / "in")
    out = tmp_path / "profiles"
    assert build_profiles.main(_argv(paths, str(out), "--partitions", "3")) == 0

    rows = sorted(_profiles(out), key=lambda r: r["user_id"])
    assert rows == EXPECTED
    # Each user is in the file its bucket names, and each file is sorted by user.
    for f in out.glob("part-*.parquet"):
        ids = pq.read_table(f)[C.USER_ID].to_pylist()
        assert ids == sorted(ids)
        assert {f"part-{bucket_of(u, 3):05d}.parquet" for u in ids} == {f.name}

    rejected = pq.read_table(out / "_rejected_events").to_pylist()
    found = sorted((Path(r[C.SOURCE]).name, r[C.SOURCE_ROW], r[C.REASON]) for r in rejected)
    assert found == [
        ("a.parquet", 4, "null_user_id"),
        ("a.parquet", 5, "unknown_product_id"),
        ("b.parquet", 1, "unknown_event_type"),
        ("b.parquet", 2, "future_timestamp"),
    ]
    assert "query" not in pq.read_schema(next((out / "_rejected_events").glob("*.parquet"))).names

    summary = json.loads((out / "_summary.json").read_text())
    assert (summary["events_read"], summary["events_used"], summary["events_rejected"]) == (9, 5, 4)
    assert summary["rejected_by_reason"] == {
        "future_timestamp": 1,
        "null_user_id": 1,
        "unknown_event_type": 1,
        "unknown_product_id": 1,
    }
    assert (summary["profiles"], summary["users_with_events"]) == (3, 2)
    assert summary["settings"]["half_life_days"] == 7
    printed = capsys.readouterr().out
    assert '"events_rejected": 4' in printed and "unknown_product_id=1" in printed

    # Privacy: nothing from outside the allow-list reaches the profile files.
    text = "".join(str(pq.read_table(f).to_pylist()) for f in out.glob("part-*.parquet"))
    for leaked in (
        "u1@example.com",
        "jane@example.com",
        "198.51.100.7",
        "35-44",
        "18-24",
        "P1",
        "P2",
        "old search",
        "555 0100",
    ):
        assert leaked not in text


def test_same_input_and_as_of_give_byte_identical_files_and_the_nightly_job_reads_them(local_ray, tmp_path):
    paths = _write_inputs(tmp_path / "in")
    first, second = tmp_path / "first", tmp_path / "second"
    # A stale file from an earlier build with more partitions must not survive.
    second.mkdir()
    (second / "part-00007.parquet").write_bytes(b"stale")
    for out in (first, second):
        assert build_profiles.main(_argv(paths, str(out), "--partitions", "2")) == 0

    def digests(folder: Path) -> dict[str, str]:
        return {
            f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.glob("part-*.parquet"))
        }

    assert digests(first) == digests(second) and len(digests(first)) >= 1
    assert not (second / "part-00007.parquet").exists()

    # The nightly job's own reader and contract take the folder as --users...
    users, report = inputs.read_lookup_table(resolve(str(first)), inputs.USERS, C.USER_ID)
    assert report.problems == {} and users.num_rows == 3
    # ...and its prompts say what the profile says.
    products, _ = inputs.read_lookup_table(resolve(paths["products"]), inputs.PRODUCTS, C.PRODUCT_ID)
    templates = load_templates()
    pairs = pa.table(
        {
            C.USER_ID: ["U1", "U2"],
            C.PRODUCT_ID: ["P3", "P4"],
            C.CHANNEL: ["push", "ad_headline"],
            C.CAMPAIGN_ID: [None, None],
        },
        schema=pa.schema(
            [
                (C.USER_ID, pa.string()),
                (C.PRODUCT_ID, pa.string()),
                (C.CHANNEL, pa.string()),
                (C.CAMPAIGN_ID, pa.string()),
            ]
        ),
    )
    joined = JoinProfiles(
        users,
        products,
        channels=list(templates),
        known_channels=list(templates),
        variants=1,
        campaign=None,
        run_id="r",
    )(pairs)
    prompts = [json.loads(m)[-1]["content"] for m in RenderPrompts(templates)(joined)[C.MESSAGES].to_pylist()]
    assert "interested in outdoor, Alpenglow, Northwind" in prompts[0]
    assert "Simplified Chinese" in prompts[0]
    assert "searched for tents for" in prompts[1]


def test_sample_events_to_s3_and_back(local_ray, tmp_path, s3_server, s3_bucket, s3_client):
    paths = sample_data.generate(tmp_path / "sample")
    for name in ("events", "products", "users"):
        s3_client.upload_file(getattr(paths, name), s3_bucket, f"in/{name}/part-0.parquet")
    out = f"s3://{s3_bucket}/profiles"
    code = build_profiles.main(
        [
            "--events",
            f"s3://{s3_bucket}/in/events/",
            "--products",
            f"s3://{s3_bucket}/in/products/",
            "--users",
            f"s3://{s3_bucket}/in/users/",
            "--output",
            out,
            "--as-of",
            sample_data.EVENTS_AS_OF.isoformat(),
            "--s3-endpoint",
            s3_server,
        ]
    )
    assert code == 0

    loc = resolve(out, s3_endpoint=s3_server)
    users, report = inputs.read_lookup_table(loc, inputs.USERS, C.USER_ID)
    assert users.num_rows == 301 and report.problems == {}
    keys = sorted(
        o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="profiles/")["Contents"]
    )
    assert keys == [
        "profiles/_rejected_events/part-00000.parquet",
        "profiles/_summary.json",
        "profiles/part-00000.parquet",
    ]
    summary = s3_client.get_object(Bucket=s3_bucket, Key="profiles/_summary.json")["Body"].read().decode()
    assert json.loads(summary)["rejected_by_reason"] == {
        "future_timestamp": 1,
        "null_user_id": 1,
        "unknown_event_type": 1,
        "unknown_product_id": 1,
    }
    assert S3_SECRET_KEY not in summary
    hostile = users.filter(
        pa.compute.equal(users[C.USER_ID], sample_data.HOSTILE_USER[C.USER_ID])
    ).to_pylist()[0]
    # The e-mail search is gone; the phone number is cut out of the other one.
    assert "cast iron pan call me on" in hostile["recent_searches"]
    assert not any("@" in q or "555" in q for q in hostile["recent_searches"])
    assert hostile["age_band"] is None  # the sample users table has one; it is never copied


@pytest.mark.parametrize(
    "break_it, message",
    [
        ("missing_ts", "missing required column(s) ts"),
        ("string_ts", "column 'ts' must be a timestamp"),
        ("bad_as_of", "--as-of: '23/11/2026' is not a date (YYYY-MM-DD)"),
        ("bad_scheme", "only local paths and s3:// URIs"),
        ("no_events", "does not exist"),
    ],
)
def test_bad_config_or_input_exits_2_before_ray(tmp_path, capsys, break_it, message):
    paths = _write_inputs(tmp_path / "in")
    argv = _argv(paths, str(tmp_path / "out"))
    if break_it == "missing_ts":
        pq.write_table(
            pa.table({C.USER_ID: ["U1"], "event_type": ["view"]}), Path(paths["events"]) / "c.parquet"
        )
    elif break_it == "string_ts":
        pq.write_table(
            pa.table({C.USER_ID: ["U1"], "event_type": ["view"], "ts": ["2026-11-20"]}),
            Path(paths["events"]) / "c.parquet",
        )
    elif break_it == "bad_as_of":
        argv[argv.index("--as-of") + 1] = "23/11/2026"
    elif break_it == "bad_scheme":
        argv[argv.index("--output") + 1] = "ftp://example.com/out"
    elif break_it == "no_events":
        argv[argv.index("--events") + 1] = str(tmp_path / "nowhere")
    assert build_profiles.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    if break_it in ("missing_ts", "string_ts"):
        assert "c.parquet" in err  # the file is named
    assert not os.path.exists(tmp_path / "out" / "_summary.json")
