"""The CPU-side benchmarks run end to end at a tiny size and report their figures.

No timing is asserted (speed belongs in the benchmarks' own output); these
catch a benchmark broken by a change to the pipeline or the stages.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"{Path(script).stem}.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / script),
            "--smoke",
            "--cache",
            str(tmp_path / "cache"),
            "--json",
            str(out),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == printed  # the file holds what was printed
    return printed


@pytest.mark.slow  # the whole job on Ray Data: make test, not test-fast
def test_cpu_side_pushes_every_pair_through_the_real_run(tmp_path):
    figures = _run("cpu_side.py", tmp_path, "--timeline", str(tmp_path / "timeline.json"))
    assert figures["pairs"] == 300
    # One pair names one channel: one row each, every row written once.
    assert figures["rows_written"] == 300 and figures["dead_letters"] == 0
    # The gate did its work on the echo's copy: most accepted, the seeded flaws repaired.
    assert figures["status"]["accepted"] >= 270 and figures["repairs"] >= 1
    assert figures["rows_per_s"] > 0 and figures["rows_per_cpu_s"] > 0
    assert {"pass1_s", "pass2_s", "publish_s"} <= set(figures["seconds"])
    memory = figures["memory_mib"]
    assert memory["driver_peak_rss"] > 0 and memory["workers_peak_rss_sum"] > 0 and memory["samples"] > 0
    by_phase = figures["driver_peak_mib_by_phase"]
    assert {"staging", "generation_passes", "publish"} <= set(by_phase)
    assert max(by_phase.values()) <= memory["driver_peak_rss_sampled"]
    # The kernel's high-water mark over the run is at least every sample taken during it.
    assert memory["driver_peak_rss_method"] == "VmHWM"
    assert memory["driver_peak_rss"] >= max(v for k, v in by_phase.items() if k != "before_run")
    timeline = json.loads((tmp_path / "timeline.json").read_text())
    assert len(timeline["rss_mib"]) == memory["samples"] and "_stage_rows" in {
        c[0] for c in timeline["calls"]
    }
    assert figures["command"].startswith(".venv/bin/python benchmarks/cpu_side.py")
    assert figures["machine"]["cores"] >= 1 and figures["date"]


def test_stage_micro_times_every_stage(tmp_path):
    figures = _run("stage_micro.py", tmp_path)
    stages = figures["stages"]
    assert list(stages) == [
        "JoinProfiles",
        "RenderPrompts",
        "EchoEngine",
        "QualityGate",
        "FinalizeRows",
        "WriteParquetFiles",
    ]
    for name, row in stages.items():
        assert row["rows_in"] == 300, name
        assert row["rows_per_cpu_s"] > 0 and row["rows_per_s"] > 0 and len(row["digest"]) == 16, name
    assert sum(stages["QualityGate"]["status"].values()) == 300


def test_stage_micro_is_deterministic(tmp_path):
    """Same input, same outputs: the digests are what shows a speed-up changed nothing."""
    first = _run("stage_micro.py", tmp_path)["stages"]
    second = _run("stage_micro.py", tmp_path)["stages"]
    assert {k: v["digest"] for k, v in first.items()} == {k: v["digest"] for k, v in second.items()}


def test_cpu_share_attributes_a_commands_cpu_to_it(tmp_path):
    out = tmp_path / "share.json"
    burn = "import time\nt = time.time()\nwhile time.time() - t < 2.5: pass"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "cpu_share.py"),
            "--json",
            str(out),
            "--",
            sys.executable,
            "-c",
            burn,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["exit_code"] == 0 and figures["wall_s"] >= 2.5
    # A busy loop of 2.5 s, counted to its end (read before the exit is reaped)
    # and as the command's own.
    assert figures["groups"]["the command (driver)"]["cpu_s"] >= 1.0
    failing = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "cpu_share.py"),
            "--",
            sys.executable,
            "-c",
            "raise SystemExit(3)",
        ],
        cwd=ROOT,
        capture_output=True,
    )
    assert failing.returncode == 3  # the command's exit status is passed on


def test_driver_per_file_runs_the_jobs_finish_and_projects_it():
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "driver_per_file.py"),
            "--files",
            "4",
            "12",
            "--runs",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    sizes = [line.split()[0] for line in lines if line.strip() and line.split()[0].isdigit()]
    assert sizes == ["4", "12"] and "500M rows: 10,000 files" in proc.stdout


def test_throughput_report_says_the_machines_drift_between_the_bare_runs():
    """The engine smoke runs bare vLLM once (one engine start-up less); the
    drift line of a full run, from two bare runs, is checked here."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from throughput import report

    def bare(rows_per_s):
        return {
            "rows": 16,
            "startup_s": 30.0,
            "rows_per_s": rows_per_s,
            "output_tokens_per_s": rows_per_s * 20,
            "marginal_rows_per_s": rows_per_s * 1.1,
            "marginal_output_tokens_per_s": rows_per_s * 22,
            "small_rows": 8,
            "prefix_cache_hit_rate": 0.5,
            "mean_prompt_tokens": 90.0,
        }

    small = {"rows": 8, "wall_s": 40.0, "output_tokens": 160, "prefix_cache_hit_rate": 0.4, "by_channel": {}}
    big = {"rows": 16, "wall_s": 44.0, "output_tokens": 320, "prefix_cache_hit_rate": 0.5, "by_channel": {}}
    hf = {"rows": 2, "startup_s": 5.0, "rows_per_s": 0.2, "output_tokens_per_s": 4.0}
    text = report([bare(2.0), bare(1.8)], small, big, hf)
    assert "bare vLLM before / after the pipeline: 2.00 / 1.80 rows/s (drift -10.0 %" in text
    assert "(before the pipeline)" in text and "(after the pipeline)" in text
    once = report([bare(2.0)], small, big, hf)
    assert "machine drift is not measured" in once and "(after the pipeline)" not in once


def test_lookup_compares_index_in_with_the_key_index():
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "lookup.py"),
            "--users",
            "1000",
            "--runs",
            "1",
            "--blocks",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [row] = [line for line in proc.stdout.splitlines() if line.startswith("| 1,000 |")]
    assert len(row.split("|")) == 7


@pytest.mark.slow  # two Ray Data pipelines and a hash shuffle: make test, not test-fast
def test_users_join_compares_the_broadcast_and_the_hash_join_on_the_same_rows(tmp_path):
    figures = _run("users_join.py", tmp_path)
    assert figures["pairs"] == 3000 and figures["users"] == 300
    assert figures["same_rows"] is True  # the contenders attach the same profiles
    for name in ("broadcast", "hash_join"):
        [run] = figures["runs"][name]
        assert run["seconds"] > 0 and run["workers_peak_rss_sum_mib"] > 0


def test_scope_lookup_keeps_the_same_rows_both_ways():
    """The script exits non-zero when the indexed scope and the baseline keep different rows."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scope_lookup.py"), "--smoke"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout)
    assert 0 < figures["rows_kept"] < figures["blocks"] * figures["pairs_per_block"]
    assert set(figures["cpu_ms_per_block"]) == {"is_in_per_block", "indexed_once"}
