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


def test_an_outage_while_clearing_a_folder_names_the_folder(s3_server, s3_bucket):
    from factory.errors import StorageError
    from factory.storage import delete_dir_if_exists

    with FaultyS3Proxy(s3_server) as proxy:
        folder = resolve(f"s3://{s3_bucket}/faults/clear", proxy.url, s3_max_attempts=2)
        put_bytes(folder.join("a.json"), b"{}")
        proxy.outage = True
        with pytest.raises(StorageError) as caught:
            delete_dir_if_exists(folder)
    assert caught.value.uri == folder.uri
    assert caught.value.code == "SlowDown"


def test_an_input_the_store_cannot_serve_now_is_a_storage_failure_not_a_bad_input(s3_server, s3_bucket):
    """Throttled or down is worth a rerun (exit 1); a broken input is the user's to fix (exit 2)."""
    from factory.errors import EXIT_FAILED, exit_code
    from factory.inputs import PAIRS, InputError, check_schema

    with FaultyS3Proxy(s3_server) as proxy:
        pairs = resolve(f"s3://{s3_bucket}/faults/in/pairs.parquet", proxy.url, s3_max_attempts=2)
        write_parquet(pairs, pa.table({"user_id": ["U1"], "product_id": ["P1"]}))
        proxy.outage = True
        with pytest.raises(OSError) as caught:
            check_schema(pairs, PAIRS)
    assert not isinstance(caught.value, InputError)
    assert exit_code(caught.value) == EXIT_FAILED
    assert caught.value.uri == pairs.uri


class _ReadsOneFile:
    """A Ray Data stage that reads the file its row names, as the input stages do."""

    def __init__(self, fs, named: bool):
        self._fs, self._named = fs, named

    def __call__(self, batch):
        import pyarrow.parquet as pq

        from factory.storage import read_parquet_part

        path = str(batch["path"][0])
        if self._named:
            return read_parquet_part(self._fs, path, 0)
        return pq.ParquetFile(path, filesystem=self._fs).read_row_group(0)  # pyarrow's own words


@pytest.mark.parametrize("named", [True, False], ids=["read_parquet_part", "pyarrow"])
def test_a_ray_data_stage_that_meets_an_outage_ends_the_job_as_a_storage_failure(
    local_ray, s3_server, s3_bucket, named
):
    """Ray Data (2.60) hands the driver a UserCodeException whose cause is lost
    in transit: the store's answer must still be found, and the file named."""
    import ray

    from factory.errors import EXIT_FAILED, exit_code, storage_failure

    with FaultyS3Proxy(s3_server) as proxy:
        part = resolve(f"s3://{s3_bucket}/faults/ray/{named}.parquet", proxy.url, s3_max_attempts=2)
        write_parquet(part, pa.table({"i": list(range(10))}))
        proxy.outage = True
        rows = ray.data.from_items([{"path": part.path}])
        with pytest.raises(Exception) as caught:
            rows.map_batches(_ReadsOneFile, fn_constructor_args=(part.fs, named), concurrency=1).take_all()
    assert exit_code(caught.value) == EXIT_FAILED, caught.value
    failed = storage_failure(caught.value)
    if named:
        assert failed.uri == part.uri, failed
    assert "SLOW_DOWN" in failed.answer or "503" in failed.answer, failed.answer


def test_a_ray_task_that_meets_an_outage_names_the_object_not_the_task(local_ray, s3_server, s3_bucket):
    """Ray's RayTaskError(OSError) is an OSError whose text starts with the
    worker's name; the object is in what it wraps (seen: 'storage failed on
    S3: ray::_fetch_parquet_file_info() (pid=...)')."""
    import ray

    from factory.errors import storage_failure

    def head(fs, path):
        return fs.get_file_info(path)

    with FaultyS3Proxy(s3_server) as proxy:
        gone = resolve(f"s3://{s3_bucket}/faults/task/part-1.parquet", proxy.url, s3_max_attempts=1)
        proxy.outage = True
        with pytest.raises(OSError) as caught:
            ray.get(ray.remote(head).remote(gone.fs, gone.path))
    failed = storage_failure(caught.value)
    assert failed.uri == gone.uri, failed
    assert "ray::" not in failed.answer and ("503" in failed.answer or "SLOW_DOWN" in failed.answer), failed


def test_a_ray_worker_tries_s3_as_often_as_the_job_says(local_ray, s3_server, s3_bucket):
    """pyarrow 26 pickles an S3 filesystem without its retry strategy: a worker
    then tried 3 times whatever --s3-max-attempts said (apache/arrow GH-47348)."""
    import ray

    def head(fs, path):
        try:
            fs.get_file_info(path)
        except OSError:
            return "failed"

    with FaultyS3Proxy(s3_server) as proxy:
        proxy.outage = True
        for tries in (1, 4):
            loc = resolve(f"s3://{s3_bucket}/faults/tries", proxy.url, s3_max_attempts=tries)
            before = proxy.counts["errors"]
            assert ray.get(ray.remote(head).remote(loc.fs, loc.path)) == "failed"
            assert proxy.counts["errors"] - before == tries


class _DownAfterTheManifest(FaultyS3Proxy):
    """S3 answers 503 to everything once a manifest has been written."""

    def _fate(self, method: str = "", path: str = "") -> str:
        fate = super()._fate(method, path)
        if method == "PUT" and path.split("?")[0].endswith("/manifest.json") and fate == "forward":
            self.outage = True  # this PUT goes through; every request after it fails
        return fate


@pytest.mark.slow  # two whole runs of the job: make test, not test-fast
def test_a_run_stopped_after_its_manifest_is_finished_by_the_next_run(
    s3_server, s3_bucket, s3_client, sample_dir, stand_in_model, tmp_path
):
    """Published, but _SUCCESS and the latest pointer never written: the rerun
    must write them, or readers that follow the pointer miss the night."""
    from tests.conftest import run_stand_in_job
    from tests.owed import owed_pairs, s3_job_args, upload_inputs

    pairs, _ = owed_pairs(sample_dir, 4)
    upload_inputs(s3_client, s3_bucket, "in", pairs, sample_dir)

    def job(endpoint: str):
        args = s3_job_args(s3_bucket, endpoint, f"s3://{s3_bucket}/out")
        args += ["--run-date=2026-12-05", "--channels=push,sms", "--s3-max-attempts=2"]
        return run_stand_in_job([*args, f"--model={stand_in_model}"], tmp_path / "logs")

    def keys() -> list[str]:
        listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="out/")
        return [o["Key"] for o in listed.get("Contents", [])]

    with _DownAfterTheManifest(s3_server) as proxy:
        stopped = job(proxy.url)
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    assert "error: storage failed on s3://" in stopped.stderr
    assert any(k.endswith("/manifest.json") for k in keys())
    assert not any(k.endswith("/_SUCCESS") or k.startswith("out/latest/") for k in keys())

    again = job(s3_server)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already published" in again.stdout + again.stderr
    assert "Finishing its publishing" in again.stdout + again.stderr
    found = keys()
    assert any(k.endswith("/attempt=0001/_SUCCESS") for k in found), found
    assert "out/latest/campaign=all.json" in found
    assert not any("/_work/" in k for k in found), found
