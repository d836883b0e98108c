"""Transient S3 faults are retried with backoff; an outage fails cleanly.

Real clients (boto3 for writes, pyarrow's AWS SDK for reads) talk to moto's
server through a proxy that answers a share of requests 503 or drops them."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from factory.publish import Attempt, publish, published_manifest
from factory.storage import list_files, put_bytes, read_bytes, read_parquet, resolve, write_parquet
from tests.s3_faults import FaultyS3Proxy


def test_throttling_and_dropped_connections_are_retried(s3_server, s3_bucket):
    with FaultyS3Proxy(s3_server, error_rate=0.3, drop_rate=0.1) as proxy:
        out = resolve(f"s3://{s3_bucket}/faults/ok", proxy.url)
        for i in range(12):
            write_parquet(out.join("copies", f"part-{i}.parquet"), pa.table({"i": [i] * 100}))
            assert read_bytes(out.join("copies", f"part-{i}.parquet"))[:4] == b"PAR1"
        files = list_files(out.join("copies"), ".parquet")
        assert len(files) == 12
        total = sum(read_parquet(out.join("copies", f.base_name)).num_rows for f in files)
        attempt = Attempt(out, 1)
        publish(attempt, {"attempt": 1, "files": {"copies": []}})
        assert published_manifest(out)["attempt"] == 1
    assert total == 1200
    assert proxy.counts["errors"] > 5 and proxy.counts["drops"] > 0  # the faults really happened


def test_an_outage_longer_than_the_retry_budget_fails_with_the_storage_error(s3_server, s3_bucket):
    with FaultyS3Proxy(s3_server) as proxy:
        out = resolve(f"s3://{s3_bucket}/faults/outage", proxy.url, s3_max_attempts=3)
        put_bytes(out.join("before.json"), b"{}")
        proxy.outage = True
        started = time.time()
        with pytest.raises(Exception, match="SlowDown|503|reduce your request rate"):
            put_bytes(out.join("during.json"), b"{}")
        assert time.time() - started < 30  # bounded by the budget, not hanging
        assert proxy.counts["errors"] >= 3  # it did retry
