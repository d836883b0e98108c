"""The backfill without an engine: date planning and its errors, the command lines it
builds, the concurrency limit, skip-if-published against real published layouts (local
disk and moto's S3 over HTTP), the summary, secrets kept out of the output, and
Ctrl-C/SIGTERM handling. The nightly job is replaced by a small script that behaves
like it where it matters here: it publishes a real manifest with factory.publish, or
exits with the code it is told to."""

from __future__ import annotations

import datetime as dt
import io
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import jobs.backfill_campaign as backfill_job
from factory import backfill as B
from factory.config import check_name
from factory.publish import Attempt
from factory.reader import run_location
from factory.storage import put_bytes, resolve
from tests.conftest import REPO, S3_SECRET_KEY
from tests.owed import publish_as_the_job_does

TODAY = dt.date(2026, 11, 25)
D1, D2, D3, D4 = "2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"

# Stands in for jobs/nightly_copy.py. Per date (from a JSON file named by FAKE_BEHAVIOUR):
# "exit" code, "rows" to publish (a real manifest through factory.publish) when it exits 0,
# "hold" seconds to wait for "peers" other children to be running at the same time.
FAKE_JOB = textwrap.dedent("""
    import argparse, json, os, sys, time
    from pathlib import Path
    from factory.publish import choose_attempt
    from factory.reader import run_location
    from factory.storage import resolve
    from tests.owed import publish_as_the_job_does

    p = argparse.ArgumentParser()
    for flag in ("--run-date", "--output", "--campaign", "--run-label", "--s3-endpoint"):
        p.add_argument(flag)
    p.add_argument("--force", action="store_true")
    args, _ = p.parse_known_args()
    state = Path(os.environ["FAKE_STATE"])
    day = args.run_date
    spec = json.loads(Path(os.environ["FAKE_BEHAVIOUR"]).read_text()).get(day, {})
    (state / "calls").mkdir(exist_ok=True)
    (state / "calls" / f"{day}.json").write_text(json.dumps({"argv": sys.argv[1:], "pid": os.getpid()}))
    running = state / "running"
    running.mkdir(exist_ok=True)
    (running / day).touch()
    seen, deadline = 0, time.time() + spec.get("hold", 0)
    while True:  # how many children run at once, as seen from inside one
        seen = max(seen, len(list(running.iterdir())))
        if seen >= spec.get("peers", 1) or time.time() >= deadline:
            break
        time.sleep(0.05)
    (state / "seen").mkdir(exist_ok=True)
    (state / "seen" / day).write_text(str(seen))
    print(f"fake job for {day}: the secret is {os.environ.get('FAKE_SECRET', '')}", flush=True)
    time.sleep(spec.get("sleep", 0))
    (running / day).unlink()
    code = spec.get("exit", 0)
    if code == 0 and "rows" in spec:
        label = args.run_label or args.campaign or "all"
        run = run_location(resolve(args.output, args.s3_endpoint), day, label)
        attempt = choose_attempt(run, force=args.force).attempt
        publish_as_the_job_does(attempt, {"run_id": f"{day}_{label}", "run_date": day, "campaign": label,
                          "attempt": attempt.number, "rows": {"copies": spec["rows"]}, "files": {"copies": []}})
    if code:
        print("error: the fake job failed on purpose", file=sys.stderr)
    sys.exit(code)
""")  # noqa: E501 - a script's text, kept as the fake job runs it


@pytest.fixture
def fake_job(tmp_path, monkeypatch):
    """Returns (job command, behaviour setter, state folder)."""
    script = tmp_path / "fake_job.py"
    script.write_text(FAKE_JOB)
    state = tmp_path / "state"
    state.mkdir()
    behaviour = tmp_path / "behaviour.json"
    behaviour.write_text("{}")
    monkeypatch.setenv("FAKE_STATE", str(state))
    monkeypatch.setenv("FAKE_BEHAVIOUR", str(behaviour))

    def behave(spec: dict) -> None:
        behaviour.write_text(json.dumps(spec))

    return [sys.executable, str(script)], behave, state


def _publish(
    output: str, day: str, label: str, rows: int, s3_endpoint=None, attempt: int = 1, finished: bool = True
) -> str:
    """A real published run, written the way the job publishes one (``finished``
    False: a publisher that stopped after its manifest, before ``_SUCCESS``)."""
    run = run_location(resolve(output, s3_endpoint), day, label)
    at = Attempt(run, attempt)
    publish_as_the_job_does(
        at,
        {
            "run_id": f"{day}_{label}",
            "run_date": day,
            "campaign": label,
            "attempt": attempt,
            "rows": {"copies": rows, "dead_letters": 0, "review": 0},
            "files": {"copies": []},
        },
        finished,
    )
    return at.manifest.uri


def _unfinished(output: str, day: str, label: str, attempt: int, s3_endpoint=None) -> None:
    """An attempt that wrote a file and never published (a crash)."""
    run = run_location(resolve(output, s3_endpoint), day, label)
    put_bytes(Attempt(run, attempt).copies.join("part-0.parquet"), b"not read")


def _run(argv, job):
    out = io.StringIO()
    code = backfill_job.main(argv, job_command=job, today=TODAY, out=out)
    return code, out.getvalue()


def _calls(state: Path) -> dict[str, list[str]]:
    folder = state / "calls"
    return (
        {p.stem: json.loads(p.read_text())["argv"] for p in folder.glob("*.json")} if folder.exists() else {}
    )


# ------------------------------------------------------------------ planning


def test_a_range_is_inclusive_and_a_list_is_sorted_and_deduplicated():
    assert B.plan_dates("2026-11-20", "2026-11-22", today=TODAY) == [
        dt.date(2026, 11, 20),
        dt.date(2026, 11, 21),
        dt.date(2026, 11, 22),
    ]
    assert B.plan_dates("2026-11-20", "2026-11-20", today=TODAY) == [dt.date(2026, 11, 20)]
    assert B.plan_dates(dates="2026-11-22, 2026-11-20,2026-11-22", today=TODAY) == [
        dt.date(2026, 11, 20),
        dt.date(2026, 11, 22),
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start": "2026-11-22", "end": "2026-11-20"}, "--end 2026-11-20 is before --start 2026-11-22"),
        ({"start": "2026-11-20"}, "give --start and --end"),
        ({}, "give --start and --end"),
        ({"start": "2026-11-20", "end": "2026-11-21", "dates": "2026-11-20"}, "not both"),
        ({"start": "2026-13-01", "end": "2026-11-21"}, "--start: '2026-13-01' is not a date"),
        ({"dates": "2026-11-20,yesterday"}, "--dates: 'yesterday' is not a date"),
        ({"dates": " , "}, "--dates: the list is empty"),
        (
            {"start": "2025-01-01", "end": "2026-11-20"},
            "689 dates from 2025-01-01 to 2026-11-20: more than --max-dates 366",
        ),
        ({"start": "1900-01-01", "end": "2026-11-20"}, "more than --max-dates 366"),
        (
            {"start": "2026-11-24", "end": "2026-11-27"},
            "2026-11-26 is after today (2026-11-25); 2 future date(s)",
        ),
        ({"dates": "2026-11-20,2026-12-01"}, "2026-12-01 is after today"),
    ],
)
def test_planning_errors_name_the_flag_and_the_value(kwargs, message):
    with pytest.raises(B.PlanError) as err:
        B.plan_dates(**kwargs, today=TODAY)
    assert message in str(err.value)


def test_max_dates_and_allow_future_lift_the_limits():
    assert len(B.plan_dates("2025-01-01", "2026-11-20", today=TODAY, max_dates=700)) == 689
    with pytest.raises(B.PlanError, match="3 dates: more than --max-dates 2"):
        B.plan_dates(dates="2026-11-01,2026-11-02,2026-11-03", today=TODAY, max_dates=2)
    assert B.plan_dates("2026-11-25", "2026-11-27", today=TODAY, allow_future=True)[-1] == dt.date(
        2026, 11, 27
    )


def test_bad_arguments_exit_2_before_any_date_runs(fake_job, tmp_path, capsys):
    job, _, state = fake_job
    out = str(tmp_path / "out")
    assert _run(["--start", D2, "--end", D1, "--", "--output", out], job)[0] == 2
    assert "--end 2026-11-20 is before --start 2026-11-21" in capsys.readouterr().err
    assert _run(["--dates", D1, "--", "--output", out, "--run-date", D2], job)[0] == 2
    assert "sets --run-date for each date" in capsys.readouterr().err
    # What the nightly job would refuse is refused here, by its own parser, for every date.
    assert _run(["--dates", D1, "--", "--output", out, "--variants", "99"], job)[0] == 2
    assert "variants" in capsys.readouterr().err
    assert _run(["--dates", D1, "--", "--output", out, "--no-such-flag"], job)[0] == 2
    assert "unknown argument(s): --no-such-flag" in capsys.readouterr().err
    assert _run(["--dates", D1, "--concurrency", "0", "--", "--output", out], job)[0] == 2
    assert not _calls(state)


# ------------------------------------------------------------------ command lines


def test_each_date_gets_the_nightly_job_with_its_run_date_and_the_passthrough_flags():
    bf = B.build_backfill(
        [dt.date(2026, 11, 20)],
        campaign="winter_sale",
        force=True,
        passthrough=["--output", "s3://b/x", "--limit", "3", "--no-repair"],
    )
    ex = B.Executor(bf)
    assert ex.command(dt.date(2026, 11, 20)) == [
        sys.executable,
        str(REPO / "jobs" / "nightly_copy.py"),
        "--run-date",
        "2026-11-20",
        "--campaign",
        "winter_sale",
        "--force",
        "--output",
        "s3://b/x",
        "--limit",
        "3",
        "--no-repair",
    ]
    assert bf.label == "winter_sale"


def test_flags_after_double_dash_and_unknown_flags_both_reach_the_job(fake_job, tmp_path):
    job, behave, state = fake_job
    out = str(tmp_path / "out")
    behave({D1: {"rows": 1}})
    code, _ = _run(["--dates", D1, "--output", out, "--", "--channels", "push,sms", "--limit", "2"], job)
    assert code == 0
    assert _calls(state)[D1] == ["--run-date", D1, "--output", out, "--channels", "push,sms", "--limit", "2"]


def test_a_subset_gets_a_deterministic_label_of_its_own(tmp_path):
    ids = tmp_path / "users.txt"
    ids.write_text("# users to redo\nU000003\nU000001\n\nU000003  # twice\n")
    by_file = B.build_backfill([dt.date(2026, 11, 20)], campaign="winter_sale", only_users=f"@{ids}")
    by_list = B.build_backfill([dt.date(2026, 11, 20)], campaign="winter_sale", only_users="U000001,U000003")
    assert by_file.run_label == by_list.run_label
    assert (
        by_list.run_label.startswith("winter_sale.subset-")
        and len(by_list.run_label) == len("winter_sale") + 16
    )
    other = B.build_backfill([dt.date(2026, 11, 20)], campaign="winter_sale", only_users="U000001")
    products = B.build_backfill(
        [dt.date(2026, 11, 20)], campaign="winter_sale", only_products="U000001,U000003"
    )
    assert len({by_list.run_label, other.run_label, products.run_label}) == 3  # users != products
    # The id lists go to the job exactly as given (the job reads @file itself); the label goes with them.
    assert by_file.job_args(dt.date(2026, 11, 20)) == [
        "--run-date",
        "2026-11-20",
        "--campaign",
        "winter_sale",
        "--run-label",
        by_file.run_label,
        "--only-users",
        f"@{ids}",
    ]
    assert B.build_backfill([dt.date(2026, 11, 20)], only_products="P00001").run_label.startswith(
        "all.subset-"
    )
    named = B.build_backfill([dt.date(2026, 11, 20)], campaign="c", run_label="redo_vip", only_users="U1")
    assert named.run_label == "redo_vip" and "redo_vip" in named.job_args(dt.date(2026, 11, 20))
    # A long campaign name still gives a label the job accepts.
    long = B.build_backfill([dt.date(2026, 11, 20)], campaign="c" * 64, only_users="U1").run_label
    assert len(long) == 64 and check_name(long) == long


def test_the_flags_are_the_config_fields_and_the_rest_pass_through_unless_a_typo():
    parser = backfill_job.build_parser()
    assert {a.dest for a in parser._actions} - {"help"} == set(B.BackfillJobConfig.model_fields)
    config, passthrough = backfill_job.parse_config(
        ["--dates", D1, "--force", "--concurrency", "2", "--channels", "push", "--", "--output", "o"]
    )
    assert (config.dates, config.force, config.concurrency, config.max_dates) == (D1, True, 2, 366)
    assert passthrough == ["--channels", "push", "--output", "o"]  # known to the nightly job only
    with pytest.raises(B.PlanError, match=r"--forse \(did you mean --force\?\) \(neither the backfill"):
        backfill_job.parse_config(["--dates", D1, "--forse"])
    with pytest.raises(B.PlanError, match="--conc "):  # allow_abbrev=False: no prefix is taken for a flag
        backfill_job.parse_config(["--dates", D1, "--conc", "2"])


@pytest.mark.parametrize("flag", ["--campaign", "--run-label", "--only-users", "--force"])
def test_backfill_options_after_double_dash_are_refused(flag):
    with pytest.raises(B.PlanError, match=f"{flag} is a backfill option"):
        B.build_backfill([dt.date(2026, 11, 20)], passthrough=[flag, "x"])


def test_subset_id_list_errors_are_plan_errors(tmp_path):
    with pytest.raises(B.PlanError, match="--only-users: cannot read"):
        B.build_backfill([dt.date(2026, 11, 20)], only_users=f"@{tmp_path / 'missing.txt'}")
    with pytest.raises(B.PlanError, match="--only-products: the list is empty"):
        B.build_backfill([dt.date(2026, 11, 20)], only_products=" , ")


def test_the_run_checked_is_the_one_the_job_resolves_config_file_included(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(f"output: {tmp_path / 'from_config'}\ncampaign: spring\n")
    bf = B.build_backfill([dt.date(2026, 11, 20)], passthrough=["--config", str(config)])
    target = bf.target(dt.date(2026, 11, 20))
    assert target.run_id == "2026-11-20_spring"
    assert target.run.path == str(tmp_path / "from_config" / "runs" / "date=2026-11-20" / "campaign=spring")
    flagged = B.build_backfill(
        [dt.date(2026, 11, 20)],
        campaign="winter_sale",
        passthrough=["--config", str(config), "--output", str(tmp_path / "flag")],
    )
    assert flagged.target(dt.date(2026, 11, 20)).run.path.startswith(str(tmp_path / "flag" / "runs"))


# ------------------------------------------------------------------ running


def test_concurrency_limit_is_honoured_and_used(fake_job, tmp_path):
    job, behave, state = fake_job
    out = str(tmp_path / "out")
    dates = [D1, D2, D3, D4]
    # Each child waits (up to 3 s) until two children run at once, and records the most it saw.
    behave({d: {"rows": 1, "peers": 2, "hold": 3} for d in dates})
    code, log = _run(["--dates", ",".join(dates), "--concurrency", "2", "--", "--output", out], job)
    assert code == 0, log
    seen = {p.name: int(p.read_text()) for p in (state / "seen").iterdir()}
    assert sorted(seen) == dates
    assert max(seen.values()) == 2


def test_concurrency_one_runs_one_date_at_a_time(fake_job, tmp_path):
    job, behave, state = fake_job
    behave({d: {"rows": 1, "peers": 2, "hold": 1} for d in (D1, D2, D3)})
    code, log = _run(["--dates", f"{D1},{D2},{D3}", "--", "--output", str(tmp_path / "out")], job)
    assert code == 0, log
    assert {p.name: int(p.read_text()) for p in (state / "seen").iterdir()} == {D1: 1, D2: 1, D3: 1}


def test_published_skipped_failed_then_a_rerun_completes(fake_job, tmp_path, monkeypatch):
    job, behave, state = fake_job
    out = str(tmp_path / "out")
    monkeypatch.setenv("FAKE_SECRET", "hunter2-very-secret")
    monkeypatch.setenv("SHOP_API_TOKEN", "hunter2-very-secret")
    manifest_1 = _publish(out, D1, "winter_sale", rows=7)
    behave({D2: {"rows": 5}, D3: {"exit": 4}})
    summary_path = tmp_path / "reports" / "backfill.json"
    argv = [
        "--campaign",
        "winter_sale",
        "--start",
        D1,
        "--end",
        D3,
        "--summary-json",
        str(summary_path),
        "--",
        "--output",
        out,
        "--limit",
        "3",
    ]
    code, log = _run(argv, job)
    assert code == 1, log
    assert sorted(_calls(state)) == [D2, D3]  # nothing started for the published date
    summary = json.loads(summary_path.read_text())
    by_date = {r["date"]: r for r in summary["dates"]}
    assert [r["date"] for r in summary["dates"]] == [D1, D2, D3]
    assert by_date[D1] | {"tail": []} == {
        "date": D1,
        "status": "skipped",
        "run_id": f"{D1}_winter_sale",
        "exit_code": None,
        "rows": 7,
        "attempt": 1,
        "seconds": 0.0,
        "manifest": manifest_1,
        "error": None,
        "tail": [],
    }
    assert by_date[D2]["status"] == "published" and by_date[D2]["rows"] == 5 and by_date[D2]["exit_code"] == 0
    assert by_date[D2]["manifest"].endswith(f"date={D2}/campaign=winter_sale/attempt=0001/manifest.json")
    assert by_date[D3]["status"] == "failed" and by_date[D3]["exit_code"] == 4 and by_date[D3]["rows"] is None
    assert by_date[D3]["tail"][-1] == "error: the fake job failed on purpose"
    assert summary["counts"] == {
        "published": 1,
        "skipped": 1,
        "failed": 1,
        "interrupted": 0,
        "not_run": 0,
        "dry_run": 0,
    }
    assert summary["exit_code"] == 1
    # The table, and the children's output with the date in front.
    assert f"[{D2}] fake job for {D2}: the secret is ***" in log
    assert "skipped (already published)" in log and "failed (exit 4)" in log
    table = log[log.index("Backfill of winter_sale") :]
    assert "1 published, 1 skipped (already published), 1 failed" in table
    assert any(line.startswith(D3) and "failed (exit 4)" in line for line in table.splitlines())
    assert f"  {D3}: error: the fake job failed on purpose" in table  # why, under the table
    assert "hunter2" not in log and "hunter2" not in summary_path.read_text()

    # The same command again: the failed date runs (it would resume), the others are skipped.
    behave({D3: {"rows": 6}})
    (state / "calls").rename(tmp_path / "first_calls")
    code, log = _run(argv, job)
    assert code == 0, log
    assert sorted(_calls(state)) == [D3]
    summary = json.loads(summary_path.read_text())
    assert [(r["date"], r["status"], r["rows"]) for r in summary["dates"]] == [
        (D1, "skipped", 7),
        (D2, "skipped", 5),
        (D3, "published", 6),
    ]


def test_exit_0_without_a_manifest_is_a_failure(fake_job, tmp_path):
    job, behave, _ = fake_job
    behave({D1: {"exit": 0}})  # claims success, publishes nothing
    code, log = _run(["--dates", D1, "--", "--output", str(tmp_path / "out")], job)
    assert code == 1
    assert "exit 0 but no published manifest" in log


def test_an_unfinished_attempt_is_run_again_and_force_runs_published_dates(fake_job, tmp_path):
    job, behave, state = fake_job
    out = str(tmp_path / "out")
    _publish(out, D1, "all", rows=3)
    _unfinished(out, D2, "all", attempt=1)  # crashed: the job resumes it
    _publish(out, D3, "all", rows=3)
    _unfinished(out, D3, "all", attempt=2)  # a --force attempt that crashed: the job resumes it too
    behave({D2: {"rows": 4}, D3: {"rows": 4}})
    code, log = _run(["--dates", f"{D1},{D2},{D3}", "--", "--output", out], job)
    assert code == 0, log
    assert sorted(_calls(state)) == [D2, D3]

    behave({D1: {"rows": 9}, D2: {"rows": 9}, D3: {"rows": 9}})
    (state / "calls").rename(tmp_path / "first_calls")
    summary_path = tmp_path / "summary.json"
    code, log = _run(
        ["--dates", f"{D1},{D2},{D3}", "--force", "--summary-json", str(summary_path), "--", "--output", out],
        job,
    )
    assert code == 0, log
    calls = _calls(state)
    assert sorted(calls) == [D1, D2, D3] and all("--force" in argv for argv in calls.values())
    # Each date a new attempt after whatever was there.
    assert [(r["status"], r["attempt"]) for r in json.loads(summary_path.read_text())["dates"]] == [
        ("published", 2),
        ("published", 2),
        ("published", 3),
    ]


def test_a_date_published_without_its_success_marker_is_run_again(fake_job, tmp_path):
    """Its publisher stopped after the manifest: the job, run again, finishes the
    publishing (tests/cpu/test_storage_faults.py); a complete date is skipped."""
    job, behave, state = fake_job
    out = str(tmp_path / "out")
    _publish(out, D1, "all", rows=3, finished=False)
    _publish(out, D2, "all", rows=3)
    behave({D1: {"exit": 0}})
    code, log = _run(["--dates", f"{D1},{D2}", "--", "--output", out], job)
    assert code == 0, log
    assert sorted(_calls(state)) == [D1]


def test_a_subset_backfill_does_not_see_the_nightly_run_of_its_dates(fake_job, tmp_path):
    job, behave, state = fake_job
    out = str(tmp_path / "out")
    _publish(out, D1, "winter_sale", rows=100)  # the nightly run of that date
    behave({D1: {"rows": 2}})
    argv = [
        "--campaign",
        "winter_sale",
        "--dates",
        D1,
        "--only-users",
        "U000001,U000002",
        "--summary-json",
        str(tmp_path / "s.json"),
        "--",
        "--output",
        out,
    ]
    code, log = _run(argv, job)
    assert code == 0, log
    label = B.subset_label("winter_sale", ["U000001", "U000002"], None)
    assert _calls(state)[D1] == [
        "--run-date",
        D1,
        "--campaign",
        "winter_sale",
        "--run-label",
        label,
        "--only-users",
        "U000001,U000002",
        "--output",
        out,
    ]
    [result] = json.loads((tmp_path / "s.json").read_text())["dates"]
    assert (result["status"], result["rows"], result["run_id"]) == ("published", 2, f"{D1}_{label}")
    assert result["manifest"].endswith(f"date={D1}/campaign={label}/attempt=0001/manifest.json")
    # Its rerun finds its own run, not the nightly one.
    code, log = _run(argv, job)
    assert code == 0 and "skipped: 2026-11-20_winter_sale.subset-" in log and "2 rows" in log


def test_a_campaigns_folder_backfill_names_one_campaign_active_on_every_date(fake_job, tmp_path, capsys):
    job, behave, state = fake_job
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "alpha.yaml").write_text("campaign_id: alpha\nchannels: [push]\n")
    (folder / "beta.yaml").write_text("campaign_id: beta\nchannels: [push]\nend: 2026-11-21\n")
    out = str(tmp_path / "out")
    assert _run(["--dates", D1, "--", "--campaigns-dir", str(folder), "--output", out], job)[0] == 2
    assert "would make 2 runs (alpha, beta); a backfill regenerates one campaign" in capsys.readouterr().err
    # beta ended on D2: a range past its end is refused before anything runs, naming the date.
    assert (
        _run(
            [
                "--campaign",
                "beta",
                "--start",
                D1,
                "--end",
                D3,
                "--",
                "--campaigns-dir",
                str(folder),
                "--output",
                out,
            ],
            job,
        )[0]
        == 2
    )
    assert "campaign 'beta' is not active on 2026-11-22 (ended 2026-11-21)" in capsys.readouterr().err
    assert not _calls(state)
    behave({D1: {"rows": 1}, D2: {"rows": 1}})
    code, log = _run(
        [
            "--campaign",
            "beta",
            "--start",
            D1,
            "--end",
            D2,
            "--",
            "--campaigns-dir",
            str(folder),
            "--output",
            out,
        ],
        job,
    )
    assert code == 0, log
    assert _calls(state)[D2] == [
        "--run-date",
        D2,
        "--campaign",
        "beta",
        "--campaigns-dir",
        str(folder),
        "--output",
        out,
    ]


# ------------------------------------------------------------------ S3


def test_already_published_is_read_from_s3(fake_job, s3_server, s3_bucket):
    job, behave, state = fake_job
    out = f"s3://{s3_bucket}/nightly"
    manifest = _publish(out, D1, "winter_sale", rows=11, s3_endpoint=s3_server)
    _publish(out, D2, "other_campaign", rows=11, s3_endpoint=s3_server)  # not this campaign's run
    _unfinished(out, D3, "winter_sale", attempt=1, s3_endpoint=s3_server)
    behave({D2: {"rows": 2}, D3: {"rows": 3}})
    code, log = _run(
        [
            "--campaign",
            "winter_sale",
            "--dates",
            f"{D1},{D2},{D3}",
            "--",
            "--output",
            out,
            "--s3-endpoint",
            s3_server,
        ],
        job,
    )
    assert code == 0, log
    assert sorted(_calls(state)) == [D2, D3]
    table = log[log.index("Backfill of winter_sale") :].splitlines()
    assert any(
        line.startswith(D1) and "skipped (already published)" in line and manifest in line for line in table
    )
    assert manifest.startswith(f"s3://{s3_bucket}/nightly/runs/date={D1}/campaign=winter_sale/attempt=0001/")
    assert any(line.startswith(D3) and " published " in line and " 3 " in line for line in table)
    assert S3_SECRET_KEY not in log  # the children had it in their environment


# ------------------------------------------------------------------ stopping


def test_sigterm_stops_launching_and_terminates_the_running_date(fake_job, tmp_path):
    job, behave, state = fake_job
    behave({d: {"rows": 1, "sleep": 120} for d in (D1, D2, D3)})
    summary_path = tmp_path / "summary.json"
    code = (
        "import sys, datetime; from jobs.backfill_campaign import main; "
        f"sys.exit(main(sys.argv[1:], job_command={job!r}, today=datetime.date(2026, 11, 25)))"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "--dates",
            f"{D1},{D2},{D3}",
            "--grace-seconds",
            "20",
            "--summary-json",
            str(summary_path),
            "--",
            "--output",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while not (state / "calls" / f"{D1}.json").exists():
            assert time.time() < deadline and proc.poll() is None, (
                proc.stdout.read() if proc.poll() else "timeout"
            )
            time.sleep(0.1)
        child = json.loads((state / "calls" / f"{D1}.json").read_text())["pid"]
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    summary = json.loads(summary_path.read_text())
    assert [(r["date"], r["status"]) for r in summary["dates"]] == [
        (D1, "interrupted"),
        (D2, "not_run"),
        (D3, "not_run"),
    ]
    assert summary["stopped"] == "SIGTERM"
    assert sorted(_calls(state)) == [D1]
    assert "stopping (SIGTERM)" in output
