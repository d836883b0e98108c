"""The storage paths against a real S3 endpoint over HTTP (moto's server)."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import columns as C
from factory.inputs import PAIRS, USERS, InputError, check_schema, read_lookup_table
from factory.stages.write import Sink, WriteParquetFiles
from factory.storage import delete_dir_if_exists, resolve


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
    with pytest.raises(
        InputError, match=rf"pairs: s3://{s3_bucket}/in/bad/pairs.parquet: missing required column"
    ):
        check_schema(resolve(f"s3://{s3_bucket}/in/bad", s3_server), PAIRS)


def test_writer_names_files_by_content(s3_server, s3_client, s3_bucket):
    loc = resolve(f"s3://{s3_bucket}/out/copies", s3_server)
    rows = pa.table(
        {
            C.USER_ID: ["u1", "u2"],
            C.PRODUCT_ID: ["p1", "p1"],
            C.CHANNEL: ["sms", "sms"],
            C.VARIANT: pa.array([0, 0], pa.int32()),
            C.TEXT: ["a", "b"],
        }
    )
    writer = WriteParquetFiles({"copies": Sink(loc)})
    first = writer(rows).to_pylist()
    again = writer(rows).to_pylist()  # a retried task: same name, no twin file
    other = writer(rows.slice(0, 1)).to_pylist()
    assert first == again and first[0]["rows"] == 2 and first[0]["bytes"] > 0
    assert other[0]["file"] != first[0]["file"]
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="out/")["Contents"])
    assert keys == sorted(f"out/copies/{r['file']}" for r in (first[0], other[0]))
    body = s3_client.get_object(Bucket=s3_bucket, Key=f"out/copies/{first[0]['file']}")["Body"].read()
    assert pq.read_table(io.BytesIO(body)).equals(rows)


def test_writer_routes_rows_to_their_sink(s3_server, s3_client, s3_bucket):
    copies = resolve(f"s3://{s3_bucket}/routed/copies", s3_server)
    queue = resolve(f"s3://{s3_bucket}/routed/_work/repair", s3_server)
    rows = pa.table(
        {
            C.USER_ID: ["u1", "u2", "u3"],
            C.PRODUCT_ID: ["p1"] * 3,
            C.CHANNEL: ["sms"] * 3,
            C.VARIANT: pa.array([0, 0, 0], pa.int32()),
            C.TEXT: ["a", "b", "c"],
            C.ROUTE: [C.ROUTE_COPIES, C.ROUTE_REPAIR, C.ROUTE_COPIES],
        }
    )
    writer = WriteParquetFiles(
        {C.ROUTE_COPIES: Sink(copies, lambda t: t.drop([C.ROUTE])), C.ROUTE_REPAIR: Sink(queue)},
        route_column=C.ROUTE,
    )
    written = {w["sink"]: w for w in writer(rows).to_pylist()}
    assert {k: w["rows"] for k, w in written.items()} == {C.ROUTE_COPIES: 2, C.ROUTE_REPAIR: 1}
    body = s3_client.get_object(Bucket=s3_bucket, Key=f"routed/copies/{written['copies']['file']}")[
        "Body"
    ].read()
    published = pq.read_table(io.BytesIO(body))
    assert published[C.USER_ID].to_pylist() == ["u1", "u3"] and C.ROUTE not in published.column_names
    body = s3_client.get_object(Bucket=s3_bucket, Key=f"routed/_work/repair/{written['repair']['file']}")[
        "Body"
    ].read()
    assert pq.read_table(io.BytesIO(body))[C.USER_ID].to_pylist() == ["u2"]


def test_deleting_a_run_prefix_leaves_no_marker_objects(s3_server, s3_client, s3_bucket):
    for key in (
        "del/_work/date=1/campaign=all/repair/p1.parquet",
        "del/_work/date=1/campaign=all/repair/p2.parquet",
        "del/copies/keep.parquet",
    ):
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    delete_dir_if_exists(resolve(f"s3://{s3_bucket}/del/_work/date=1/campaign=all/repair", s3_server))
    delete_dir_if_exists(resolve(f"s3://{s3_bucket}/del/never-written", s3_server))  # absent: no error
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="del/")["Contents"]]
    assert keys == [
        "del/copies/keep.parquet"
    ]  # pyarrow's delete_dir would leave "del/_work/date=1/campaign=all/"
