"""The rows a small set of sample pairs owes, and the check that a published run holds each exactly once."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from factory import columns as C

CHANNELS = ["push", "sms"]


def owed_pairs(sample_dir: Path, n: int, channels=CHANNELS) -> tuple[pa.Table, Counter]:
    """English pairs, and the (user, product, channel, variant) rows they owe."""
    users = pq.read_table(sample_dir / "users.parquet")
    en = {u[C.USER_ID] for u in users.to_pylist() if u[C.LOCALE] != "zh-CN"}
    pairs = [
        p
        for p in pq.read_table(sample_dir / "pairs.parquet").to_pylist()
        if p[C.USER_ID] in en and p[C.PRODUCT_ID] < "P09000"
    ][:n]
    expected = Counter()
    for p in pairs:
        for ch in [p[C.CHANNEL]] if p[C.CHANNEL] else channels:
            if ch in channels:
                expected[(p[C.USER_ID], p[C.PRODUCT_ID], ch, 0)] += 1
    return pa.Table.from_pylist(pairs, schema=pq.read_schema(sample_dir / "pairs.parquet")), expected


def upload_inputs(client, bucket: str, prefix: str, pairs: pa.Table, sample_dir: Path) -> None:
    for name, table in (
        ("pairs.parquet", pairs),
        ("users.parquet", pq.read_table(sample_dir / "users.parquet")),
        ("products.parquet", pq.read_table(sample_dir / "products.parquet")),
    ):
        buf = io.BytesIO()
        pq.write_table(table, buf)
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=buf.getvalue())


def s3_job_args(bucket: str, endpoint: str, output: str, prefix: str = "in") -> list[str]:
    """The nightly job's input, output and endpoint flags for what ``upload_inputs`` put there."""
    return [
        "--pairs",
        f"s3://{bucket}/{prefix}/pairs.parquet",
        "--users",
        f"s3://{bucket}/{prefix}/users.parquet",
        "--products",
        f"s3://{bucket}/{prefix}/products.parquet",
        "--output",
        output,
        "--s3-endpoint",
        endpoint,
    ]


def check_exactly_once(rows: pa.Table, expected: Counter) -> None:
    got = Counter(zip(*(rows[c].to_pylist() for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT))))
    assert got == expected
    assert len(set(rows[C.ROW_ID].to_pylist())) == rows.num_rows


def publish_as_the_job_does(attempt, manifest: dict, finished: bool = True) -> None:
    """A run published the way the nightly job publishes one: the manifest, then
    (``finished``) ``_SUCCESS``, the last step of publishing. Without it: a
    publisher that stopped after its manifest, which the next run finishes."""
    from factory.publish import SUCCESS, publish
    from factory.storage import put_bytes

    publish(attempt, manifest)
    if finished:
        put_bytes(attempt.base.join(SUCCESS), b"")
