"""Attempts, exclusive publish and the latest pointer, locally and on S3 (moto over HTTP)."""

from __future__ import annotations

import json
import threading

import pyarrow as pa
import pytest

from factory import columns as C
from factory.publish import (
    Attempt,
    PublishConflict,
    abandoned_attempts,
    choose_attempt,
    publish,
    published_manifest,
    update_latest,
)
from factory.reader import read_published, run_location
from factory.storage import AlreadyExists, put_bytes, read_bytes, resolve, write_parquet


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    if request.param == "local":
        return resolve(str(tmp_path / "out"))
    s3_server, s3_bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
    return resolve(f"s3://{s3_bucket}/publish-{tmp_path.name}", s3_server)


def _manifest(attempt: Attempt, files: list[str]) -> dict:
    return {
        "run_id": "2026-11-20_all",
        "run_date": "2026-11-20",
        "attempt": attempt.number,
        "files": {"copies": [{"path": f, "rows": 1, "bytes": 1} for f in files]},
    }


def test_attempts_new_then_resume_then_published_then_forced(output):
    run = run_location(output, "2026-11-20", None)
    state = choose_attempt(run)
    assert (state.action, state.attempt.number) == ("new", 1)
    # Something written but no manifest: the next process resumes attempt 1.
    write_parquet(state.attempt.copies.join("part-a.parquet"), pa.table({C.ROW_ID: ["r1"]}))
    state = choose_attempt(run)
    assert (state.action, state.attempt.number) == ("resume", 1)
    assert read_published(output.uri, "2026-11-20", s3_endpoint=output.s3 and output.s3.endpoint) is None
    publish(state.attempt, _manifest(state.attempt, ["copies/part-a.parquet"]))
    state = choose_attempt(run)
    assert (state.action, state.attempt.number) == ("published", 1)
    forced = choose_attempt(run, force=True)
    assert (forced.action, forced.attempt.number) == ("new", 2)
    # A forced attempt that has not published yet is resumed, and readers still see attempt 1.
    put_bytes(forced.attempt.processes.join("p.json"), b"{}")
    assert choose_attempt(run).action == "resume" and choose_attempt(run).attempt.number == 2
    assert published_manifest(run)["attempt"] == 1
    # Forcing again gives up attempt 2: its files are orphans, listed for the next manifest.
    assert choose_attempt(run, force=True).attempt.number == 3
    assert abandoned_attempts(run, 3) == [{"attempt": 2, "prefix": "attempt=0002/", "files": 1, "bytes": 2}]
    rows = read_published(output.uri, "2026-11-20", s3_endpoint=output.s3 and output.s3.endpoint)
    assert rows[C.ROW_ID].to_pylist() == ["r1"]


def test_only_one_writer_publishes_an_attempt(output):
    attempt = Attempt(run_location(output, "2026-11-21", None), 1)
    results = []

    def writer(name):
        try:
            publish(attempt, _manifest(attempt, [f"copies/{name}.parquet"]))
            results.append(name)
        except PublishConflict:
            results.append("conflict")

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r != "conflict"]
    assert len(winners) == 1 and results.count("conflict") == 3
    manifest = json.loads(read_bytes(attempt.manifest))
    assert manifest["files"]["copies"][0]["path"] == f"copies/{winners[0]}.parquet"


def test_exclusive_put_refuses_an_existing_object(output):
    target = output.join("x", "once.json")
    put_bytes(target, b"1", exclusive=True)
    with pytest.raises(AlreadyExists):
        put_bytes(target, b"2", exclusive=True)
    assert read_bytes(target) == b"1"
    put_bytes(target, b"3")  # a plain put replaces
    assert read_bytes(target) == b"3"


def test_latest_pointer_never_moves_back_to_an_older_date(output):
    assert update_latest(output, "winter_sale", {"run_date": "2026-11-22", "manifest": "a"})
    assert not update_latest(output, "winter_sale", {"run_date": "2026-11-01", "manifest": "backfill"})
    assert update_latest(output, "winter_sale", {"run_date": "2026-11-22", "manifest": "forced"})
    assert json.loads(read_bytes(output.join("latest", "campaign=winter_sale.json")))["manifest"] == "forced"


def test_server_side_encryption_on_every_put(s3_server, s3_client, s3_bucket):
    aes = resolve(f"s3://{s3_bucket}/sse/a.json", s3_server, s3_sse="AES256")
    kms = resolve(
        f"s3://{s3_bucket}/sse/b.parquet", s3_server, s3_sse="aws:kms", s3_sse_kms_key_id="alias/factory-test"
    )
    plain = resolve(f"s3://{s3_bucket}/sse/c.json", s3_server)
    put_bytes(aes, b"{}")
    write_parquet(kms, pa.table({"a": [1]}))
    put_bytes(plain, b"{}")
    head = {
        k: s3_client.head_object(Bucket=s3_bucket, Key=f"sse/{k}") for k in ("a.json", "b.parquet", "c.json")
    }
    assert head["a.json"]["ServerSideEncryption"] == "AES256"
    assert head["b.parquet"]["ServerSideEncryption"] == "aws:kms"
    assert head["b.parquet"]["SSEKMSKeyId"] == "alias/factory-test"
    assert "ServerSideEncryption" not in head["c.json"]  # only when asked


def test_local_writes_are_whole_or_absent(tmp_path):
    loc = resolve(str(tmp_path / "deep" / "folder" / "f.parquet"))
    write_parquet(loc, pa.table({"a": list(range(10))}))
    # No temporary files are left beside the result.
    assert [p.name for p in (tmp_path / "deep" / "folder").iterdir()] == ["f.parquet"]
