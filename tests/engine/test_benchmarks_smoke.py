"""The issue-5 benchmark scripts still run (tiny sizes). Nothing here is timed:
figures live in benchmarks/RESULTS.md, made by the full runs."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import PYTHON, REPO, job_env

pytestmark = pytest.mark.engine


def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_throughput_benchmark_runs_every_contender(tmp_path):
    table = tmp_path / "table.md"
    # Four engine start-ups in a row: on a slow shared day five passed 15 minutes (2026-12-03). Bare vLLM
    # runs once here; the drift line two bare runs give is checked in tests/cpu. Not a timing test.
    done = subprocess.run(
        [PYTHON, "benchmarks/throughput.py", "--smoke", "--bare-once", "--markdown", str(table)],
        cwd=REPO,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parts = _json_lines(done.stdout)
    assert [p["part"] for p in parts] == ["bare", "pipeline", "pipeline", "hf"]
    bare, small, big, hf = parts
    assert bare["rows"] == 16 and small["rows"] == 8 and big["rows"] == 16 and hf["rows"] == 2
    # Bare is also timed over the first N1 prompts: the pipeline's marginal, on the same rows.
    # (At 8 and 16 rows one long reply can decide both timings: then there is no marginal.)
    assert bare["small_rows"] == 8 and bare["small_generate_s"] > 0
    assert bare["marginal_rows_per_s"] is None or bare["marginal_rows_per_s"] > 0
    assert bare["output_tokens"] > 0 and big["output_tokens"] > small["output_tokens"] > 0
    # The vLLM plugin brought the prefix-cache figure through Ray Data: the
    # channels' shared system text and examples are served from the cache.
    assert big["prefix_cache_hit_rate"] is not None and big["prefix_cache_hit_rate"] > 0
    assert set(big["by_channel"]) == {"push", "email_subject", "ad_headline", "sms", "product_blurb"}
    text = table.read_text()
    assert "pipeline / bare vLLM" in text and "HF `model.generate`" in text
    assert "bare vLLM ran once (--bare-once)" in text
    ratios = json.loads(text.split("RATIOS ", 1)[1].splitlines()[0])
    assert set(ratios) == {"one_call_rows", "one_call_tokens", "marginal_rows", "marginal_tokens", "hf"}
    if big["wall_s"] > small["wall_s"]:
        assert ratios["one_call_rows"] > 0 and ratios["one_call_tokens"] > 0 and ratios["hf"] > 0
    else:  # at these sizes the 8-row run can take longer than the 16-row one: no steady rate, said so
        assert ratios["one_call_rows"] is None and ratios["one_call_tokens"] is None and ratios["hf"] is None


def test_work_avoided_benchmark_counts_identical_prompts():
    done = subprocess.run(
        [PYTHON, "benchmarks/work_avoided.py", "--users", "40", "--segments", "4", "--products", "2"],
        cwd=REPO,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = _json_lines(done.stdout)[0]
    # 40 users x 2 products x 5 channels; 4 segments -> 4 x 2 x 5 distinct prompts.
    assert counts["rows"] == 400 and counts["distinct_prompts"] == 40
    assert counts["identical_share"] == 0.9 and counts["prompt_tokens_saved"] > 0.85 * counts["prompt_tokens"]
