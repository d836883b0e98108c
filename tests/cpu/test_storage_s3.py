"""The storage paths against a real S3 endpoint over HTTP (moto's server)."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import columns as C
from factory.inputs import PAIRS, USERS, InputError, check_schema, read_lookup_table
from factory.stages.write import WriteParquetFiles
from factory.storage import resolve


def _put_parquet(client, bucket: str, key: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    client.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())


def test_inputs_are_read_and_checked_on_s3(s3_server, s3_client, s3_bucket, sample_dir):
    users = pq.read_table(sample_dir / "users.parquet")
    _put_parquet(s3_client, s3_bucket, "in/users/part-0.parquet", users.slice(0, 100))
    _put_parquet(s3_client, s3_bucket, "in/users/part-1.parquet", users.slice(100))
    table, report = read_lookup_table(resolve(f"s3://{s3_bucket}/in/users", s3_server), USERS, C.USER_ID)
    assert table.num_rows == users.num_rows and report.problems == {}

    _put_parquet(s3_client, s3_bucket, "in/bad/pairs.parquet", pa.table({"user": ["u"]}))
    with pytest.raises(InputError, match=rf"pairs: s3://{s3_bucket}/in/bad/pairs.parquet: missing required column"):
        check_schema(resolve(f"s3://{s3_bucket}/in/bad", s3_server), PAIRS)


def test_writer_names_files_by_content(s3_server, s3_client, s3_bucket):
    loc = resolve(f"s3://{s3_bucket}/out/copies", s3_server)
    rows = pa.table({C.USER_ID: ["u1", "u2"], C.PRODUCT_ID: ["p1", "p1"], C.CHANNEL: ["sms", "sms"],
                     C.VARIANT: pa.array([0, 0], pa.int32()), C.TEXT: ["a", "b"]})
    writer = WriteParquetFiles(loc.fs, loc.path)
    first = writer(rows).to_pylist()
    again = writer(rows).to_pylist()  # a retried task: same name, no twin file
    other = writer(rows.slice(0, 1)).to_pylist()
    assert first == again and first[0]["rows"] == 2 and first[0]["bytes"] > 0
    assert other[0]["file"] != first[0]["file"]
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="out/")["Contents"])
    assert keys == sorted(f"out/copies/{r['file']}" for r in (first[0], other[0]))
    body = s3_client.get_object(Bucket=s3_bucket, Key=f"out/copies/{first[0]['file']}")["Body"].read()
    assert pq.read_table(io.BytesIO(body)).equals(rows)
