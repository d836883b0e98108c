"""Every mistake a user can make gets one or two clear lines and exit 2, before Ray starts.

One table of wrong invocations, for the nightly job and for the other jobs in
``jobs/``: each is checked for its exit code, its message (the flag or file it
names, what is wrong, what would be right), no traceback on the console, and
no Ray started. The stores are real: moto's S3 over HTTP, with IAM checks
switched on for the refused-credential and read-only cases.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import ray

import jobs.backfill_campaign as backfill_job
import jobs.build_profiles as build_profiles_job
import jobs.extract_facts as extract_facts_job
import jobs.ingest_feedback as ingest_feedback_job
import jobs.nightly_copy as nightly_job
from tests.conftest import REPO, job_env

JOBS = {
    "nightly_copy": nightly_job.main,
    "build_profiles": build_profiles_job.main,
    "extract_facts": extract_facts_job.main,
    "backfill_campaign": backfill_job.main,
    "ingest_feedback": ingest_feedback_job.main,
}


_RAY_INIT = ray.init  # the real one, for the case that may start Ray


@pytest.fixture(autouse=True)
def no_ray(monkeypatch, tmp_path):
    import ray

    ray.shutdown()  # an earlier module's shared Ray (conftest's local_ray): this checks the job starts none

    def refuse(*args, **kwargs):
        raise AssertionError("Ray must not start for a job that cannot run")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setenv("COPY_FACTORY_LOG_DIR", str(tmp_path / "logs"))
    yield
    assert not ray.is_initialized()


@pytest.fixture
def world(tmp_path, sample_dir):
    """Paths the table's invocations refer to: {name} in an argument becomes one of these."""
    (tmp_path / "a-file.txt").write_text("not a folder\n")
    (tmp_path / "pairs.csv").write_text("user_id,product_id\nU000001,P00001\n")
    empty_model = tmp_path / "model-no-config"
    empty_model.mkdir()
    no_weights = tmp_path / "model-no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    (tmp_path / "typo.yaml").write_text("output: ./x\nchanels: [push]\n")
    (tmp_path / "broken.yaml").write_text("output: ./x\nchannels: [push\n")
    (tmp_path / "list.yaml").write_text("- push\n- sms\n")
    (tmp_path / "engine.yaml").write_text("channels: [push]\nengine:\n  replicas: 0\n")
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "delivery").mkdir()
    pq.write_table(
        pa.table(
            {
                "row_id": ["r1"],
                "event_type": ["click"],
                "ts": pa.array([dt.datetime(2026, 12, 1)], pa.timestamp("us")),
            }
        ),
        tmp_path / "delivery" / "e.parquet",
    )
    pq.write_table(
        pa.table({"row_id": ["r1"], "event_type": ["click"], "ts": ["yesterday"]}),
        tmp_path / "text-ts.parquet",
    )
    (tmp_path / "no-runs").mkdir()
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "spring.yaml").write_text("campaign_id: spring\nchannels: [push, fax]\n")
    return {
        "tmp": str(tmp_path),
        "sample": str(sample_dir),
        "pairs": str(sample_dir / "pairs.parquet"),
        "users": str(sample_dir / "users.parquet"),
        "products": str(sample_dir / "products.parquet"),
    }


def _feedback(extra: str) -> str:
    return "--events {tmp}/delivery --runs {tmp}/no-runs --output {tmp}/f " + extra


def _inputs(extra: str = "") -> str:
    return "--pairs {pairs} --users {users} --products {products} " + extra


# (job, arguments, the exit status, text the console must show). {name} comes from ``world``.
CASES = [
    # flags
    ("nightly_copy", "--limit -3", 2, "--limit: -3 is out of range: must be at least 1"),
    ("nightly_copy", "--variants 0", 2, "--variants: 0 is out of range: must be at least 1"),
    ("nightly_copy", "--chanels push", 2, "unknown argument(s): --chanels (did you mean --channels?)"),
    ("nightly_copy", "--temperature hot", 2, "argument --temperature: invalid float value: 'hot'"),
    ("nightly_copy", "--device tpu", 2, "argument --device: invalid choice: 'tpu'"),
    ("nightly_copy", "--run-date 2026-13-01", 2, "'2026-13-01' is not a date (expected YYYY-MM-DD)"),
    ("nightly_copy", "--engine-kwargs [1]", 2, "expected a JSON object"),
    (
        "nightly_copy",
        """--output {tmp}/o --engine-kwargs '{{"max_num_seq": 64}}'""",
        2,
        "--engine-kwargs: vLLM has no engine argument 'max_num_seq' (did you mean 'max_num_seqs'?)",
    ),
    ("nightly_copy", _inputs("--channels push,fax --output {tmp}/out"), 2, "--channels: no template for fax"),
    (
        "nightly_copy",
        "--pairs {pairs}",
        2,
        "--pairs, --users and --products go together; missing: products, users",
    ),
    ("nightly_copy", "--campaign 'bad name!'", 2, "--campaign: 'bad name!': use letters, digits"),
    # config and campaign files
    (
        "nightly_copy",
        "--config {tmp}/typo.yaml",
        2,
        "typo.yaml line 2: chanels: unknown setting 'chanels' (did you mean 'channels'?)",
    ),
    ("nightly_copy", "--config {tmp}/broken.yaml", 2, "broken.yaml line 3, column 1: not valid YAML"),
    ("nightly_copy", "--config {tmp}/list.yaml", 2, "list.yaml: --config file is a mapping of settings"),
    (
        "nightly_copy",
        "--config {tmp}/engine.yaml",
        2,
        "engine.yaml line 3: engine.replicas: 0 is out of range: must be at least 1",
    ),
    (
        "nightly_copy",
        "--config {tmp}/engine.yaml --replicas 0",
        2,
        "--replicas: 0 is out of range: must be at least 1",
    ),
    ("nightly_copy", "--config {tmp}/nowhere.yaml", 2, "nowhere.yaml: no such file (--config file)"),
    (
        "nightly_copy",
        "--campaigns-dir {tmp}/campaigns",
        2,
        "spring.yaml line 2: channels: no template for 'fax'",
    ),
    ("nightly_copy", "--campaigns-dir {tmp}/no-such-dir", 2, "no-such-dir: no such folder (--campaigns-dir)"),
    # paths
    (
        "nightly_copy",
        "--pairs {tmp}/missing.parquet --users {users} --products {products} --output {tmp}/o",
        2,
        "missing.parquet",
    ),
    (
        "nightly_copy",
        "--pairs {tmp}/pairs.csv --users {users} --products {products} --output {tmp}/o",
        2,
        "pairs.csv",
    ),
    (
        "nightly_copy",
        "--output {tmp}/a-file.txt",
        2,
        "--output {tmp}/a-file.txt: this is a file, not a folder",
    ),
    (
        "nightly_copy",
        "--output {tmp}/a-file.txt/sub",
        2,
        "a-file.txt is a file, so the folder cannot be made",
    ),
    (
        "nightly_copy",
        "--output gs://bucket/x",
        2,
        "gs://bucket/x: only local paths and s3:// URIs are supported",
    ),
    ("nightly_copy", "--templates {tmp}/no-templates", 2, "no-templates"),
    # model folders
    (
        "nightly_copy",
        "--output {tmp}/o --model {tmp}/no-such-model",
        2,
        "no-such-model: no such model folder",
    ),
    ("nightly_copy", "--output {tmp}/o --model {tmp}/a-file.txt", 2, "this is a file, not a model folder"),
    (
        "nightly_copy",
        "--output {tmp}/o --model {tmp}/model-no-config",
        2,
        "not a model folder (no config.json",
    ),
    ("nightly_copy", "--output {tmp}/o --model {tmp}/model-no-weights", 2, "no weights in the folder"),
    # the other jobs
    (
        "build_profiles",
        "--events {tmp}/e --products {products} --output {tmp}/p --half-life-days -1",
        2,
        "--half-life-days: -1.0 is out of range",
    ),
    (
        "build_profiles",
        "--events {tmp}/e --products {products} --output {tmp}/a-file.txt",
        2,
        "--output {tmp}/a-file.txt: this is a file, not a folder",
    ),
    ("build_profiles", "--evnts {tmp}/e --products {products} --output {tmp}/p", 2, "did you mean --events?"),
    ("extract_facts", "--facts {tmp}/facts --limit 0", 2, "--limit: 0 is out of range: must be at least 1"),
    (
        "extract_facts",
        "--facts {tmp}/a-file.txt",
        2,
        "--facts {tmp}/a-file.txt: this is a file, not a folder",
    ),
    ("extract_facts", "--facts {tmp}/facts --model ./no/such/model", 2, "no such model folder"),
    ("backfill_campaign", "--start 2026-13-01 --end 2026-11-02", 2, "--start: '2026-13-01' is not a date"),
    ("backfill_campaign", "--start 2026-11-01 --ned 2026-11-02", 2, "did you mean --end?"),
    (
        "ingest_feedback",
        _feedback("--partitions 0"),
        2,
        "--partitions: 0 is out of range: must be at least 1",
    ),
    (
        "ingest_feedback",
        "--evnts {tmp}/delivery --runs {tmp}/no-runs --output {tmp}/f",
        2,
        "did you mean --events?",
    ),
    ("ingest_feedback", _feedback("--since 2026-13-01"), 2, "--since: '2026-13-01' is not a date"),
    (
        "ingest_feedback",
        _feedback("--since 2026-12-05 --until 2026-12-01"),
        2,
        "--until: 2026-12-01 is before --since 2026-12-05",
    ),
    (
        "ingest_feedback",
        _feedback("--campaign 'bad name!'"),
        2,
        "--campaign: 'bad name!': use letters, digits",
    ),
    (
        "ingest_feedback",
        "--events {tmp}/delivery --runs {tmp}/no-runs --output {tmp}/a-file.txt",
        2,
        "--output {tmp}/a-file.txt: this is a file, not a folder",
    ),
    (
        "ingest_feedback",
        "--events {tmp}/no-events --runs {tmp}/no-runs --output {tmp}/f",
        2,
        "delivery events: {tmp}/no-events does not exist",
    ),
    (
        "ingest_feedback",
        "--events {pairs} --runs {tmp}/no-runs --output {tmp}/f",
        2,
        "delivery events: {pairs}: missing required column(s) row_id, event_type, ts",
    ),
    (
        "ingest_feedback",
        "--events {tmp}/text-ts.parquet --runs {tmp}/no-runs --output {tmp}/f",
        2,
        "column 'ts' must be a timestamp, found string",
    ),
    ("ingest_feedback", _feedback(""), 2, "--runs {tmp}/no-runs: no published runs"),
    (
        "ingest_feedback",
        "--events {tmp}/delivery --runs gs://b/nightly --output {tmp}/f",
        2,
        "gs://b/nightly: only local paths and s3:// URIs are supported",
    ),
]


def _argv(args: str, world: dict[str, str]) -> list[str]:
    import shlex

    return [a.format(**world) for a in shlex.split(args)]


def _check(capsys, code: int, status: int, message: str, world: dict[str, str]) -> str:
    out, err = capsys.readouterr()
    console = out + err
    assert code == status, console
    assert message.format(**world) in err, err
    assert "Traceback" not in console, console
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    return err


@pytest.mark.parametrize("job, args, status, message", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_a_mistake_is_one_clear_line_and_exit_2(job, args, status, message, world, capsys):
    try:
        code = JOBS[job](_argv(args, world))
    except SystemExit as exc:  # argparse's own way out
        code = exc.code
    _check(capsys, code, status, message, world)


# --------------------------------------------------------------------------- stores


def _s3_case(s3_server, bucket: str, extra: list[str]) -> list[str]:
    return ["--output", f"s3://{bucket}/nightly", "--s3-endpoint", s3_server, *extra]


def test_an_endpoint_where_nothing_answers(s3_server, world, capsys):  # s3_server: its test credentials
    code = nightly_job.main(["--output", "s3://bucket/x", "--s3-endpoint", "http://127.0.0.1:1"])
    _check(
        capsys,
        code,
        2,
        "--output s3://bucket/x: nothing answers at the S3 endpoint http://127.0.0.1:1 (connection refused)",
        world,
    )


def test_a_missing_bucket(s3_server, world, capsys):
    code = nightly_job.main(_s3_case(s3_server, "no-such-bucket", []))
    err = _check(
        capsys, code, 2, "--output s3://no-such-bucket/nightly: bucket 'no-such-bucket' does not exist", world
    )
    assert "create the bucket, or fix its name" in err


def test_a_missing_input_bucket(s3_server, s3_bucket, world, capsys):
    code = nightly_job.main(
        [
            "--pairs",
            "s3://no-such-input/pairs.parquet",
            "--users",
            world["users"],
            "--products",
            world["products"],
            *_s3_case(s3_server, s3_bucket, []),
        ]
    )
    _check(
        capsys,
        code,
        2,
        "--pairs s3://no-such-input/pairs.parquet: bucket 'no-such-input' does not exist",
        world,
    )


def test_missing_credentials(s3_server, s3_bucket, world, capsys, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    code = nightly_job.main(_s3_case(s3_server, s3_bucket, []))
    err = _check(capsys, code, 2, f"--output s3://{s3_bucket}/nightly: no S3 credentials found", world)
    assert "AWS_ACCESS_KEY_ID" in err


@pytest.fixture
def iam_checks(s3_server, s3_bucket):
    """moto checks every request's credentials and IAM policy while this is on.
    Yields a read-only user's keys (list and get on the bucket, no put)."""
    import boto3
    from moto import settings

    iam = boto3.client("iam", endpoint_url=s3_server, region_name="us-east-1")
    iam.create_user(UserName="reader")
    iam.put_user_policy(
        UserName="reader",
        PolicyName="read-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:ListBucket", "s3:GetObject"],
                        "Resource": [f"arn:aws:s3:::{s3_bucket}", f"arn:aws:s3:::{s3_bucket}/*"],
                    }
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield key
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        iam.delete_access_key(UserName="reader", AccessKeyId=key["AccessKeyId"])
        iam.delete_user_policy(UserName="reader", PolicyName="read-only")
        iam.delete_user(UserName="reader")


def test_credentials_the_store_refuses(s3_server, s3_bucket, iam_checks, world, capsys):
    # The session's test keys belong to no IAM user: the store says it does not know them.
    code = nightly_job.main(_s3_case(s3_server, s3_bucket, []))
    err = _check(
        capsys, code, 2, f"--output s3://{s3_bucket}/nightly: the store answered InvalidAccessKeyId", world
    )
    assert "check AWS_ACCESS_KEY_ID or AWS_PROFILE" in err
    assert iam_checks["SecretAccessKey"] not in err


def test_no_permission_to_write(s3_server, s3_bucket, iam_checks, world, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_checks["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_checks["SecretAccessKey"])
    code = nightly_job.main(_s3_case(s3_server, s3_bucket, []))
    err = _check(capsys, code, 2, f"--output s3://{s3_bucket}/nightly: access denied (s3:PutObject)", world)
    assert "use credentials that are allowed to s3:PutObject there" in err
    assert iam_checks["SecretAccessKey"] not in err and iam_checks["AccessKeyId"] not in err


def test_a_dry_run_reads_but_does_not_write_the_output(
    s3_server, s3_bucket, iam_checks, world, capsys, monkeypatch
):
    """The read-only user may plan a run: a dry run promises to write nothing,
    probe included. It counts on Ray (its workers read the pairs with the
    same read-only credentials), so this one case may start Ray."""
    import ray

    monkeypatch.setattr(ray, "init", _RAY_INIT)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_checks["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_checks["SecretAccessKey"])
    try:
        assert nightly_job.main(_s3_case(s3_server, s3_bucket, ["--dry-run", "--channels", "push"])) == 0
    finally:
        ray.shutdown()
    assert "Traceback" not in capsys.readouterr().err


def test_other_jobs_check_their_stores(s3_server, world, capsys):
    code = build_profiles_job.main(
        [
            "--events",
            "s3://no-such-events/e",
            "--products",
            world["products"],
            "--output",
            f"{world['tmp']}/p",
            "--s3-endpoint",
            s3_server,
        ]
    )
    _check(capsys, code, 2, "--events s3://no-such-events/e: bucket 'no-such-events' does not exist", world)
    code = extract_facts_job.main(["--facts", "s3://bucket/facts", "--s3-endpoint", "http://127.0.0.1:1"])
    _check(capsys, code, 2, "--facts s3://bucket/facts: nothing answers at the S3 endpoint", world)
    code = ingest_feedback_job.main(
        [
            "--events",
            f"{world['tmp']}/delivery",
            "--runs",
            "s3://no-such-runs/nightly",
            "--output",
            f"{world['tmp']}/f",
            "--s3-endpoint",
            s3_server,
        ]
    )
    _check(capsys, code, 2, "--runs s3://no-such-runs/nightly: bucket 'no-such-runs' does not exist", world)


def test_the_write_probe_leaves_nothing_behind(s3_server, s3_bucket, s3_client):
    from factory.preflight import PROBE_PREFIX, check_place

    check_place(f"s3://{s3_bucket}/probe/out", "--output", {"s3_endpoint": s3_server}, write=True)
    assert not s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="probe/").get("KeyCount")
    assert PROBE_PREFIX.startswith("_")  # readers skip names like this even if a delete were lost


# --------------------------------------------------------------------------- failures later in the run


def test_storage_that_fails_mid_run_is_one_line_and_exit_1(
    s3_server, s3_bucket, world, capsys, monkeypatch, tmp_path
):
    """A store that goes away after the checks: after its retries the job
    names the object and the store's answer; the traceback is in the log."""
    from factory.storage import put_bytes, resolve
    from tests.s3_faults import FaultyS3Proxy

    with FaultyS3Proxy(s3_server) as proxy:

        def run_into_an_outage(config):
            proxy.outage = True
            put_bytes(
                resolve(f"s3://{s3_bucket}/mid-run/copies/part-00001.parquet", proxy.url, s3_max_attempts=2),
                b"rows",
            )

        monkeypatch.setattr(nightly_job, "run", run_into_an_outage)
        code = nightly_job.main(["--output", f"s3://{s3_bucket}/mid-run", "--s3-endpoint", proxy.url])
    out, err = capsys.readouterr()
    assert code == 1, err
    first, *rest = err.strip().splitlines()
    assert first.startswith(
        f"error: storage failed on s3://{s3_bucket}/mid-run/copies/part-00001.parquet: SlowDown"
    ), err
    assert "Traceback" not in out + err
    [log] = list((tmp_path / "logs").glob("nightly_copy-*.log"))
    assert rest == [f"  full traceback in {log}"]
    assert "Traceback" in log.read_text() and "SlowDown" in log.read_text()


def test_a_store_that_is_throttling_at_the_checks_is_a_storage_failure(s3_server, s3_bucket, world, capsys):
    """Busy is not wrong: exit 1 (a rerun will do), not 2 (a mistake to fix)."""
    from tests.s3_faults import FaultyS3Proxy

    with FaultyS3Proxy(s3_server) as proxy:
        proxy.outage = True
        code = nightly_job.main(_s3_case(proxy.url, s3_bucket, []))
    _check(capsys, code, 1, f"error: storage failed on s3://{s3_bucket}/nightly: SlowDown", world)


def test_a_pyarrow_storage_error_from_a_ray_task_names_the_object(s3_server, s3_bucket):
    """What a Ray Data task raises when S3 is gone (pyarrow's words, wrapped by Ray)."""
    import ray.exceptions

    from factory.errors import EXIT_FAILED, exit_code, storage_failure
    from factory.storage import resolve
    from tests.s3_faults import FaultyS3Proxy

    with FaultyS3Proxy(s3_server) as proxy:
        proxy.outage = True
        loc = resolve(f"s3://{s3_bucket}/gone/part-1.parquet", proxy.url, s3_max_attempts=1)
        with pytest.raises(OSError) as caught:
            loc.fs.get_file_info(loc.path)
    wrapped = ray.exceptions.RayTaskError("write", "remote traceback", caught.value).as_instanceof_cause()
    failed = storage_failure(wrapped)
    assert exit_code(wrapped) == EXIT_FAILED
    assert failed.uri == f"s3://{s3_bucket}/gone/part-1.parquet", failed
    assert "503" in failed.answer or "SLOW_DOWN" in failed.answer or "SlowDown" in failed.answer


def test_a_bug_keeps_its_traceback(capsys, monkeypatch):
    """What no rule knows is not hidden: the console gets the whole traceback."""
    monkeypatch.setattr(nightly_job, "run", lambda config: {}["no such key"])
    with pytest.raises(KeyError):
        nightly_job.main(["--output", "./out-never"])


def test_the_console_of_a_real_process(world, tmp_path):
    """The table's first case as a user runs it: a process, its console, no Ray."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "nightly_copy.py"), "--limit", "-3"],
        cwd=tmp_path,
        env=job_env(COPY_FACTORY_LOG_DIR=str(tmp_path / "logs")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --limit: -3 is out of range: must be at least 1"
    assert proc.stdout == ""


def test_a_hint_is_only_given_for_a_near_name():
    """Every flag starts with "--": that alone must not make a far name a hint."""
    from factory.errors import nearest

    flags = ["--run-date", "--variants", "--channels"]
    assert nearest("--varients", flags) == "--variants"
    assert nearest("--candidatez", flags) is None  # "--run-date" only shares the dashes and "date"
    assert nearest("--shards", flags) is None


def test_hub_ids_pass_through_and_model_folders_are_checked(tmp_path):
    from factory.errors import UsageError
    from factory.model import resolve_model

    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model("s3://models/llama/") == "s3://models/llama/"
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    with pytest.raises(UsageError, match="no such model folder"):
        resolve_model("./no/such/folder")


def test_an_s3_model_folder_is_checked(s3_server, s3_bucket, s3_client):
    from factory.errors import UsageError
    from factory.model import resolve_model

    where = {"s3_endpoint": s3_server}
    with pytest.raises(UsageError, match=f"--model s3://{s3_bucket}/models/x: not a model folder"):
        resolve_model(f"s3://{s3_bucket}/models/x", where)
    s3_client.put_object(Bucket=s3_bucket, Key="models/x/config.json", Body=b"{}")
    assert resolve_model(f"s3://{s3_bucket}/models/x", where) == f"s3://{s3_bucket}/models/x"
    with pytest.raises(UsageError, match="bucket 'no-such-models' does not exist"):
        resolve_model("s3://no-such-models/x", where)


def test_the_table_covers_every_job_and_enough_mistakes():
    assert {job for job, *_ in CASES} == set(JOBS)
    stores = [
        t
        for t in globals()
        if t.startswith("test_")
        and ("bucket" in t or "credentials" in t or "permission" in t or "endpoint" in t)
    ]
    assert len(CASES) + len(stores) >= 25
