"""A campaign's experiment through the nightly job, end to end: real Ray, moto's
S3 over HTTP, the instant stand-in engine, the real feedback ingest.

Night 1 assigns every user to an arm or the holdout (recomputed here from the
hash and the manifest's layout), writes no copy for holdout users and lists
them in the holdout file; a --force rerun assigns identically. Delivery
events favouring one arm go through jobs/ingest_feedback.py, and night 2
moves traffic toward that arm (the other keeps its floor), records why, and
the report has the Experiments section.
"""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import jobs.nightly_copy as nightly_job
from factory import columns as C
from factory.experiments.assign import HOLDOUT, Assigner, Layout
from factory.pipeline import passes
from factory.reader import read_published
from jobs import ingest_feedback
from tests.owed import owed_pairs, s3_job_args, upload_inputs

NIGHT1, NIGHT2 = "2026-12-01", "2026-12-02"
CAMPAIGN = """\
campaign_id: spring
channels: [push, sms]
brand_voice: calm
experiment:
  experiment_id: voice_1
  holdout: 0.3
  floor: 0.1
  arms:
    - name: cosy
      brand_voice: warm and cosy
    - name: crisp
      brand_voice: short and crisp
      sampling: {temperature: 0.7}
"""


@pytest.fixture
def stand_in_model(tmp_path) -> str:
    folder = tmp_path / "stand-in-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").touch()
    return str(folder)


def _manifest(s3_client, bucket: str, run_date: str, attempt: int) -> dict:
    key = f"out/runs/date={run_date}/campaign=spring/attempt={attempt:04d}/manifest.json"
    return json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())


def _assigner(manifest: dict) -> Assigner:
    alloc = manifest["experiment"]["allocation"]
    return Assigner(alloc["experiment_id"], alloc["holdout"], Layout.from_json(alloc["layout"]))


def _arms_by_row(rows: pa.Table) -> dict[tuple, str]:
    return {
        k[:4]: k[4]
        for k in zip(*(rows[c].to_pylist() for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT, C.ARM)))
    }


@pytest.mark.slow  # the whole job over two nights: make test, not test-fast
def test_an_experiment_runs_nightly_and_learns_from_feedback(
    s3_server, s3_client, s3_bucket, sample_dir, tmp_path, stand_in_model, monkeypatch
):
    from benchmarks.cpu_side import echo_generate_stage

    pairs, expected = owed_pairs(sample_dir, 40)
    pairs = pairs.set_column(
        pairs.column_names.index(C.CAMPAIGN_ID),
        C.CAMPAIGN_ID,
        pa.array(["spring"] * pairs.num_rows, pa.string()),
    )
    upload_inputs(s3_client, s3_bucket, "in", pairs, sample_dir)
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "spring.yaml").write_text(CAMPAIGN)
    echo = echo_generate_stage(reject_share=0.0)
    sampling_seen, engine_lost = [], []

    def lost(ds):
        def fail(batch):
            raise RuntimeError("engine lost")

        return ds.map_batches(fail, batch_format="pyarrow")

    def build(*args, **kwargs):  # the instant engine; what the run asked of it is kept
        sampling_seen.append(kwargs.get("arm_sampling"))
        return lost if engine_lost else echo(*args, **kwargs)

    monkeypatch.setattr(passes, "build_generate_stage", build)
    out, feedback = f"s3://{s3_bucket}/out", f"s3://{s3_bucket}/feedback"

    def night(run_date: str, *extra: str) -> int:
        return nightly_job.main(
            [
                "--campaigns-dir",
                str(folder),
                *s3_job_args(s3_bucket, s3_server, out),
                "--run-date",
                run_date,
                "--model",
                stand_in_model,
                "--feedback",
                feedback,
                *extra,
            ]
        )

    # Night 1: no feedback table yet, so the declared (equal) shares.
    assert night(NIGHT1) == 0
    manifest = _manifest(s3_client, s3_bucket, NIGHT1, 1)
    record = manifest["experiment"]
    assert record["experiment_id"] == "voice_1" and record["allocation_source"] == "computed"
    assert record["allocation"]["method"] == "declared" and record["allocation"]["feedback"] is None
    assert set(record["declaration"]["arms"]) == {"cosy", "crisp"}
    assign = _assigner(manifest)
    rows = read_published(out, NIGHT1, "spring", s3_endpoint=s3_server)
    held = read_published(out, NIGHT1, "spring", kind="holdout", s3_endpoint=s3_server)
    arm_of = {u: assign.arm_of(u) for u in {u for u, *_ in expected}}
    holdout_users = {u for u, a in arm_of.items() if a == HOLDOUT}
    assert holdout_users and {"cosy", "crisp"} <= set(arm_of.values())
    # Every copy carries its user's arm, recomputed from the hash; no user is in two arms.
    assert set(rows[C.EXPERIMENT_ID].to_pylist()) == {"voice_1"}
    assert all(arm_of[u] == a for u, a in zip(rows[C.USER_ID].to_pylist(), rows[C.ARM].to_pylist()))
    by_user: dict[str, set] = {}
    for u, a in zip(rows[C.USER_ID].to_pylist(), rows[C.ARM].to_pylist()):
        by_user.setdefault(u, set()).add(a)
    assert all(len(a) == 1 for a in by_user.values())
    # Holdout users got no copy; each of their owed rows is in the holdout file, once.
    copies = sorted(zip(*(rows[c].to_pylist() for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT))))
    assert copies == sorted(k for k in expected if k[0] not in holdout_users)
    listed = sorted(zip(*(held[c].to_pylist() for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL))))
    assert listed == sorted(k[:3] for k in expected if k[0] in holdout_users)
    assert set(held[C.ARM].to_pylist()) == {HOLDOUT} and not set(held[C.ROW_ID].to_pylist()) & set(
        rows[C.ROW_ID].to_pylist()
    )
    assert (
        manifest["rows"]["holdout"] == held.num_rows == sum(f["rows"] for f in manifest["files"]["holdout"])
    )
    assert manifest["rows"]["copies"] == rows.num_rows
    # Each arm wrote with its own voice (its own template versions); the crisp arm's sampling reached the
    # engine.
    versions = {}
    for a, v in zip(rows[C.ARM].to_pylist(), rows[C.TEMPLATE_VERSION].to_pylist()):
        versions.setdefault(a, set()).add(v)
    assert not versions["cosy"] & versions["crisp"]
    assert {"crisp": {"temperature": 0.7}} in sampling_seen
    first = _arms_by_row(rows)

    # A --force rerun of night 1 replays the published allocation: every user in the same arm.
    assert night(NIGHT1, "--force") == 0
    rerun = _manifest(s3_client, s3_bucket, NIGHT1, 2)
    assert rerun["experiment"]["allocation_source"] == "published"
    assert rerun["experiment"]["allocation"] == record["allocation"]
    assert _arms_by_row(read_published(out, NIGHT1, "spring", s3_endpoint=s3_server)) == first
    rows = read_published(out, NIGHT1, "spring", s3_endpoint=s3_server)
    held = read_published(out, NIGHT1, "spring", kind="holdout", s3_endpoint=s3_server)

    # Delivery events: every copy and holdout row impressed, every cosy copy clicked, no crisp one.
    ts = dt.datetime(2026, 12, 1, 18, tzinfo=dt.timezone.utc)
    cosy = rows.filter(pc.equal(rows[C.ARM], "cosy"))[C.ROW_ID].to_pylist()
    ids = rows[C.ROW_ID].to_pylist() + held[C.ROW_ID].to_pylist()
    events = pa.table(
        {
            "row_id": ids + cosy,
            "event_type": ["impression"] * len(ids) + ["click"] * len(cosy),
            "ts": pa.array([ts] * (len(ids) + len(cosy)), pa.timestamp("us", tz="UTC")),
        }
    )
    buf = io.BytesIO()
    pq.write_table(events, buf)
    s3_client.put_object(Bucket=s3_bucket, Key="events/part-0.parquet", Body=buf.getvalue())
    assert (
        ingest_feedback.main(
            [
                "--events",
                f"s3://{s3_bucket}/events/",
                "--runs",
                out,
                "--output",
                feedback,
                "--s3-endpoint",
                s3_server,
            ]
        )
        == 0
    )

    # Night 2 dies in its first pass, after the allocation was pinned and the rows staged. The table
    # then goes away: the resumed process keeps the pinned allocation (recomputed it would be "declared").
    engine_lost.append(True)
    try:  # a failure the job knows is exit 1; an unknown one raises: either way, nothing published
        died = night(NIGHT2)
    except Exception as exc:  # noqa: BLE001
        died = exc
    assert died != 0 and read_published(out, NIGHT2, "spring", s3_endpoint=s3_server) is None
    engine_lost.clear()
    s3_client.delete_object(Bucket=s3_bucket, Key="feedback/_summary.json")
    assert night(NIGHT2) == 0
    # Thompson sampling over the table moved traffic to cosy; crisp keeps its floor; the holdout stays.
    manifest2 = _manifest(s3_client, s3_bucket, NIGHT2, 1)
    assert manifest2["experiment"]["allocation_source"] == "pinned"
    assert [h["action"] for h in manifest2["history"]] == ["new", "resume"]
    alloc = manifest2["experiment"]["allocation"]
    assert alloc["method"] == "thompson" and alloc["continues"] == f"{NIGHT1}_spring"
    assert alloc["shares"]["cosy"] > record["allocation"]["shares"]["cosy"]
    assert alloc["shares"]["crisp"] == pytest.approx(0.1, abs=0.01)
    assert alloc["inputs"]["cosy"]["successes"] == len(cosy) and alloc["inputs"]["crisp"]["successes"] == 0
    assert alloc["feedback"]["uri"].startswith(feedback)
    assign2 = _assigner(manifest2)
    assert {u for u in arm_of if assign2.arm_of(u) == HOLDOUT} == holdout_users
    rows2 = read_published(out, NIGHT2, "spring", s3_endpoint=s3_server)
    assert all(assign2.arm_of(u) == a for u, a in zip(rows2[C.USER_ID].to_pylist(), rows2[C.ARM].to_pylist()))
    # The report's Experiments section: both nights' allocations, the arms' rates.
    report_key = f"out/runs/date={NIGHT2}/campaign=spring/attempt=0001/{manifest2['report']}"
    html = s3_client.get_object(Bucket=s3_bucket, Key=report_key)["Body"].read().decode()
    assert "Experiments" in html and "voice_1" in html and "cosy" in html and NIGHT1 in html


def test_an_arm_sampling_reaches_the_request():
    from factory.stages.generate import to_request

    row = {C.MESSAGES: "[]", C.MAX_TOKENS: 16, C.STOP: None, C.ARM: "crisp"}
    sampled = to_request(dict(row), 0.3, 0.95, {"crisp": {"temperature": 0.7}})["sampling_params"]
    assert sampled["temperature"] == 0.7 and sampled["top_p"] == 0.95
    plain = to_request({**row, C.ARM: "cosy"}, 0.3, 0.95, {"crisp": {"temperature": 0.7}})["sampling_params"]
    assert plain["temperature"] == 0.3


def test_two_arms_never_share_a_copy_and_each_keys_its_own_template(sample_dir):
    from factory import dedup
    from factory.prompts import apply_campaign, load_templates

    users = pq.read_table(sample_dir / "users.parquet")
    user = users[C.USER_ID][0].as_py()
    templates = load_templates()
    arms = {"cosy": apply_campaign(templates, "warm and cosy", [], ["push"]), "crisp": templates}
    rows = pa.table(
        {
            C.USER_ID: [user] * 4,
            C.PRODUCT_ID: ["P00001"] * 4,
            C.CHANNEL: ["push"] * 4,
            C.CAMPAIGN_ID: ["spring"] * 4,
            C.VARIANT: pa.array([0] * 4, pa.int32()),
            C.ARM: ["crisp", "crisp", "sampled", "cosy"],
        }
    )
    keys = dedup.prompt_keys(rows, users, templates, arms).to_pylist()
    assert keys[0] == keys[1]  # one arm, one prompt: generated once
    assert keys[2] != keys[0]  # the same prompt in another arm (say, other sampling) is its own copy
    assert arms["cosy"]["push"].version in keys[3] and templates["push"].version in keys[0]
    # Rows without an experiment keep the keys they always had.
    plain = rows.drop_columns([C.ARM])
    assert dedup.prompt_keys(plain, users, templates).to_pylist()[0] == keys[0].rsplit("\x1f", 1)[0]


def test_an_experiment_needs_its_campaign_and_no_run_label(tmp_path):
    from factory.cli import parse_job
    from factory.errors import UsageError

    config = tmp_path / "job.yaml"
    config.write_text(
        "experiment:\n  experiment_id: voice_1\n  arms:\n    - {name: a, brand_voice: warm}\n"
        "    - {name: b, brand_voice: crisp}\n"
    )
    with pytest.raises(UsageError, match="an experiment belongs to one campaign"):
        parse_job(["--config", str(config)])
    with pytest.raises(
        UsageError, match="--run-label backfill_1 would publish the experiment's night outside"
    ):
        parse_job(["--config", str(config), "--campaign", "spring", "--run-label", "backfill_1"])
    [job] = parse_job(["--config", str(config), "--campaign", "spring"]).configs
    assert job.experiment.arm_names == ["a", "b"] and json.loads(job.model_dump_json())["experiment"]["arms"]
