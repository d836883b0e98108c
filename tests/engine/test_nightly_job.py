"""The nightly job end to end: real Ray, the real vLLM engine on the CPU with the
bundled model, inputs and outputs on a real S3 endpoint over HTTP (moto)."""

from __future__ import annotations

import io
import json
import subprocess
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import columns as C
from factory.prompts import load_templates
from factory.stages.finalize import OUTPUT_SCHEMA
from tests.conftest import JOB, PYTHON, REPO, S3_SECRET_KEY, job_env

pytestmark = pytest.mark.engine

RUN_CHANNELS = ["push", "sms", "ad_headline"]
RUN_DATE = "2026-11-20"


def _put(client, bucket, key, table):
    buf = io.BytesIO()
    pq.write_table(table, buf)
    client.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())


def _read_prefix(client, bucket, prefix) -> pa.Table:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    tables = [pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()))
              for o in listing if o["Key"].endswith(".parquet")]
    return pa.concat_tables(tables) if tables else None


def _expected_rows(pairs: list[dict], known_users: set, known_products: set) -> Counter:
    """Written independently of the join: one row per (pair, channel)."""
    expected = Counter()
    for p in pairs:
        if p[C.USER_ID] not in known_users or p[C.PRODUCT_ID] not in known_products:
            continue
        channels = [p[C.CHANNEL]] if p[C.CHANNEL] else RUN_CHANNELS
        for ch in channels:
            if ch in RUN_CHANNELS:
                expected[(p[C.USER_ID], p[C.PRODUCT_ID], ch, 0)] += 1
    return expected


def test_nightly_job_reads_and_writes_s3(s3_server, s3_client, s3_bucket, sample_dir):
    users = pq.read_table(sample_dir / "users.parquet")
    products = pq.read_table(sample_dir / "products.parquet")
    all_pairs = pq.read_table(sample_dir / "pairs.parquet").to_pylist()
    zh_users = {u[C.USER_ID] for u in users.to_pylist() if u[C.LOCALE] == "zh-CN"}
    pairs = ([p for p in all_pairs if p[C.USER_ID] not in zh_users][:22]
             + [p for p in all_pairs if p[C.USER_ID] in zh_users][:6])
    # Two pairs the tables cannot serve: they must land in the dead letters, not stop the run.
    pairs += [{C.USER_ID: "U999999", C.PRODUCT_ID: "P00001", C.CHANNEL: None, C.CAMPAIGN_ID: "winter_sale"},
              {C.USER_ID: "U000001", C.PRODUCT_ID: "P99999", C.CHANNEL: "sms", C.CAMPAIGN_ID: "winter_sale"}]
    pairs_table = pa.Table.from_pylist(pairs, schema=pq.read_schema(sample_dir / "pairs.parquet"))
    _put(s3_client, s3_bucket, "in/pairs/part-0.parquet", pairs_table)
    _put(s3_client, s3_bucket, "in/users.parquet", users)
    _put(s3_client, s3_bucket, "in/products.parquet", products)

    cmd = [PYTHON, str(JOB), "--pairs", f"s3://{s3_bucket}/in/pairs", "--users", f"s3://{s3_bucket}/in/users.parquet",
           "--products", f"s3://{s3_bucket}/in/products.parquet", "--output", f"s3://{s3_bucket}/factory",
           "--s3-endpoint", s3_server, "--run-date", RUN_DATE, "--channels", ",".join(RUN_CHANNELS),
           "--batch-size", "16"]
    proc = subprocess.run(cmd, cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "rows written" in proc.stdout and "sample copies" in proc.stdout

    partition = f"run_date={RUN_DATE}/campaign=all/"
    out = _read_prefix(s3_client, s3_bucket, f"factory/copies/{partition}")
    assert out is not None
    assert out.schema == OUTPUT_SCHEMA  # every column present and typed

    expected = _expected_rows(pairs, set(users[C.USER_ID].to_pylist()), set(products[C.PRODUCT_ID].to_pylist()))
    got = Counter(zip(*(out[c].to_pylist() for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT))))
    assert got == expected  # one row per (pair, channel): none lost, none twice
    assert len(expected) > 60

    rows = out.to_pylist()
    versions = {c: t.version for c, t in load_templates().items()}
    locales = dict(zip(users[C.USER_ID].to_pylist(), users[C.LOCALE].to_pylist()))
    for r in rows:
        assert r[C.TEXT].strip(), r
        assert r[C.TEMPLATE_VERSION] == versions[r[C.CHANNEL]]
        assert r[C.RUN_ID] == f"{RUN_DATE}_all" and r[C.RUN_DATE].isoformat() == RUN_DATE
        assert r[C.MODEL] == "SmolLM2-135M-Instruct"
        assert r[C.LOCALE] == locales[r[C.USER_ID]]
        assert r[C.NUM_INPUT_TOKENS] > 20 and r[C.NUM_OUTPUT_TOKENS] > 0
        assert r[C.FINISH_REASON] in ("stop", "length")
        assert r[C.CAMPAIGN_ID] in ("winter_sale", "new_arrivals")
    assert any(r[C.LOCALE] == "zh-CN" for r in rows)

    dead = _read_prefix(s3_client, s3_bucket, f"factory/dead_letters/{partition}")
    assert sorted(zip(dead[C.USER_ID].to_pylist(), dead[C.REASON].to_pylist())) == [
        ("U000001", "unknown_product_id"), ("U999999", "unknown_user_id")]
    assert set(dead[C.SOURCE].to_pylist()) == {f"s3://{s3_bucket}/in/pairs"}

    summary_obj = s3_client.get_object(Bucket=s3_bucket, Key=f"factory/runs/{partition}summary.json")
    summary_text = summary_obj["Body"].read().decode()
    summary = json.loads(summary_text)
    assert summary["rows_written"] == len(rows) and summary["dead_letters"] == 2
    assert summary["template_versions"] == {c: versions[c] for c in RUN_CHANNELS}
    # No object-store markers or stray files beside the data.
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="factory/")["Contents"]]
    assert all(k.endswith((".parquet", "summary.json")) for k in keys), keys

    for text in (proc.stdout, proc.stderr, summary_text):
        assert S3_SECRET_KEY not in text
