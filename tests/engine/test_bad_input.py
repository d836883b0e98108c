"""Bad input never costs good rows: a few hundred malformed rows of every kind
go to the dead letters with their file, row number and reason, and every good
pair is in the published output. The real job, on moto's S3 over HTTP."""

from __future__ import annotations

import io
import json
import random
import subprocess
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import columns as C
from factory.reader import read_published
from tests.conftest import JOB, PYTHON, REPO, job_env

pytestmark = pytest.mark.engine

BROKEN = b"\xff\xfe broken \xc3\x28"  # not UTF-8


def _text_column(values: list) -> pa.Array:
    """A string column that may hold invalid UTF-8 (as a broken export writes it)."""
    raw = [v if isinstance(v, (bytes, type(None))) else v.encode() for v in values]
    return pa.array(raw, pa.binary()).view(pa.string())


def _fuzz_pairs(rng: random.Random, users: list[str], products: list[str]):
    """Good pairs, and malformed ones of every kind with the reason each must get."""
    good = [{"u": u, "p": p, "ch": "push"} for u, p in zip(users[:5], products[:5])]
    kinds = [
        ("null_user_id", lambda: {"u": None, "p": rng.choice(products)}),
        ("null_product_id", lambda: {"u": rng.choice(users), "p": None}),
        ("unknown_user_id", lambda: {"u": f"U9{rng.randrange(10**6):06d}", "p": rng.choice(products)}),
        ("unknown_product_id", lambda: {"u": rng.choice(users), "p": f"P9{rng.randrange(10**6):06d}"}),
        (
            "invalid_utf8_user_id",
            lambda: {"u": BROKEN + str(rng.random()).encode(), "p": rng.choice(products)},
        ),
        (
            "invalid_utf8_product_id",
            lambda: {"u": rng.choice(users), "p": b"P\xff" + bytes([rng.randrange(256)])},
        ),
        ("too_long_user_id", lambda: {"u": "U" * rng.randrange(300, 20_000), "p": rng.choice(products)}),
        (
            "control_characters_product_id",
            lambda: {"u": rng.choice(users), "p": "P000\x00" + str(rng.random())},
        ),
        ("unknown_channel", lambda: {"u": rng.choice(users), "p": rng.choice(products), "ch": "fax"}),
        ("invalid_utf8_channel", lambda: {"u": rng.choice(users), "p": rng.choice(products), "ch": BROKEN}),
        ("too_long_campaign_id", lambda: {"u": rng.choice(users), "p": rng.choice(products), "c": "c" * 500}),
        ("unknown_user_id", lambda: {"u": "", "p": rng.choice(products)}),
    ]
    bad = []
    for reason, make in kinds:
        for _ in range(25):
            row = make()
            row.setdefault("ch", "push")
            bad.append((reason, row))
    rows = [("good", g) for g in good] + bad
    rng.shuffle(rows)
    # Later in the file: the same pair again, and a pair without a channel whose
    # only row (push) the first already owes. Each row is owed once.
    rows += [("duplicate_pair", dict(good[0])), ("duplicate_pair", {**good[1], "ch": None})]
    table = pa.table(
        {
            C.USER_ID: _text_column([r["u"] for _, r in rows]),
            C.PRODUCT_ID: _text_column([r["p"] for _, r in rows]),
            C.CHANNEL: _text_column([r["ch"] for _, r in rows]),
            C.CAMPAIGN_ID: _text_column([r.get("c", "winter_sale") for _, r in rows]),
        }
    )
    return table, [reason for reason, _ in rows]


def test_malformed_rows_become_dead_letters_and_good_rows_survive(
    s3_server, s3_client, s3_bucket, sample_dir
):
    rng = random.Random(11)
    users = pq.read_table(sample_dir / "users.parquet")
    products = pq.read_table(sample_dir / "products.parquet")
    en_users = [u[C.USER_ID] for u in users.to_pylist() if u[C.LOCALE] != "zh-CN"][:40]
    en_products = [p for p in products[C.PRODUCT_ID].to_pylist() if p < "P00160"][:40]
    pairs, reasons = _fuzz_pairs(rng, en_users, en_products)

    # Bad rows in the lookup tables too: a null and a repeated id are dropped
    # and reported; broken UTF-8 in a profile field is repaired, not fatal.
    bad_users = users.to_pylist()
    first_user = dict(bad_users[0])
    bad_users.append({**first_user, "loyalty_tier": "duplicate"})
    bad_users.append({**first_user, C.USER_ID: None})
    users_table = pa.Table.from_pylist(bad_users, schema=users.schema)
    age = users_table.column_names.index("age_band")
    first_row = users_table[C.USER_ID].to_pylist().index(en_users[0])
    broken_ages = [
        BROKEN if i == first_row else a.encode() if a else None
        for i, a in enumerate(users_table["age_band"].to_pylist())
    ]
    users_table = users_table.set_column(age, "age_band", _text_column(broken_ages))

    for key, table in (
        ("fuzz/in/pairs/part-0.parquet", pairs),
        ("fuzz/in/users.parquet", users_table),
        ("fuzz/in/products.parquet", products),
    ):
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=64)  # several row groups: row numbers must still be right
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=buf.getvalue())

    cmd = [
        PYTHON,
        str(JOB),
        "--pairs",
        f"s3://{s3_bucket}/fuzz/in/pairs",
        "--users",
        f"s3://{s3_bucket}/fuzz/in/users.parquet",
        "--products",
        f"s3://{s3_bucket}/fuzz/in/products.parquet",
        "--output",
        f"s3://{s3_bucket}/fuzz/out",
        "--s3-endpoint",
        s3_server,
        "--run-date",
        "2026-11-26",
        "--channels",
        "push",
        "--no-repair",
    ]

    # A whole file with the wrong schema fails fast, before any engine time, naming file and column.
    buf = io.BytesIO()
    pq.write_table(pa.table({C.USER_ID: [1, 2], C.PRODUCT_ID: ["P1", "P2"]}), buf)
    s3_client.put_object(Bucket=s3_bucket, Key="fuzz/in/pairs/part-1.parquet", Body=buf.getvalue())
    wrong = subprocess.run(cmd, cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "part-1.parquet" in wrong.stderr and "'user_id'" in wrong.stderr
    assert "Starting attempt" not in wrong.stderr
    s3_client.delete_object(Bucket=s3_bucket, Key="fuzz/in/pairs/part-1.parquet")

    proc = subprocess.run(cmd, cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    out = f"s3://{s3_bucket}/fuzz/out"
    dead = read_published(out, "2026-11-26", kind="dead_letters", s3_endpoint=s3_server).to_pylist()
    source = f"s3://{s3_bucket}/fuzz/in/pairs/part-0.parquet"
    from_pairs = {d[C.SOURCE_ROW]: d for d in dead if d[C.SOURCE] == source}
    expected_dead = {i: r for i, r in enumerate(reasons) if r != "good"}
    assert len(expected_dead) == 302
    assert {
        i: d[C.REASON] for i, d in from_pairs.items()
    } == expected_dead  # every bad row, right row, right reason
    for d in from_pairs.values():  # the dead letters themselves are clean, bounded text
        for col in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID):
            assert d[col] is None or len(d[col].encode()) <= 260
    lookup = Counter(d[C.REASON] for d in dead if d[C.SOURCE].endswith("users.parquet"))
    assert lookup == {"duplicate_user_id": 1, "null_user_id": 1}

    copies = read_published(out, "2026-11-26", s3_endpoint=s3_server)
    good = Counter(
        (pairs[C.USER_ID][i].as_py(), pairs[C.PRODUCT_ID][i].as_py(), "push")
        for i, r in enumerate(reasons)
        if r == "good"
    )
    assert Counter(zip(*(copies[c].to_pylist() for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL)))) == good
    summary = json.loads(
        s3_client.get_object(
            Bucket=s3_bucket, Key="fuzz/out/runs/date=2026-11-26/campaign=all/attempt=0001/summary.json"
        )["Body"].read()
    )
    users_report = next(t for t in summary["input_tables"] if t["name"] == "users")
    assert users_report["repaired_text"] == {"age_band": 1}
