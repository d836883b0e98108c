"""`ray job submit` against a running Ray head, as a nightly scheduler does it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from factory import columns as C
from tests.conftest import PYTHON, REPO, job_env

pytestmark = pytest.mark.engine

RAY = str(Path(PYTHON).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A real `ray start --head` with its dashboard (the job API lives there)."""
    gcs_port, dash_port = _free_port(), _free_port()
    # The head's PATH decides which `python` a job's entrypoint runs: this venv's.
    env = job_env(
        RAY_USAGE_STATS_ENABLED="0", PATH=os.pathsep.join([str(Path(PYTHON).parent), os.environ["PATH"]])
    )
    env.pop("RAY_ADDRESS", None)
    subprocess.run(
        [
            RAY,
            "start",
            "--head",
            f"--port={gcs_port}",
            f"--dashboard-port={dash_port}",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            "--disable-usage-stats",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=180,
    )
    try:
        yield f"http://127.0.0.1:{dash_port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_job_submitted_to_a_ray_head_succeeds(ray_head, tmp_path):
    """The command README.md and docs/running.md give, run as a scheduler would, then its status checked.

    The CLI runs in its own process: Ray 2.60's head turns on token auth, and
    clients send the token only when RAY_AUTH_MODE=token is in their
    environment when Ray is imported.
    """
    out = tmp_path / "out"
    submission_id = f"nightly-copy-test-{int(time.time())}"
    env = job_env(RAY_AUTH_MODE="token", RAY_ADDRESS=ray_head)
    command = [
        RAY,
        "job",
        "submit",
        "--submission-id",
        submission_id,
        "--working-dir",
        str(REPO),
        "--",
        "python",
        "jobs/nightly_copy.py",
        "--limit",
        "4",
        "--channels",
        "push,ad_headline",
        "--output",
        str(out),
        "--run-date",
        "2026-11-21",
        "--campaign",
        "winter_sale",
    ]
    # A fresh head's dashboard agent can take a while to register on a loaded
    # machine ("No available agent to submit job", seen once in CI); a
    # scheduler would retry, so the test does too. Nothing was submitted then.
    for _ in range(12):
        submit = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        logs = submit.stdout + submit.stderr
        if "No available agent" not in logs:
            break
        time.sleep(5)
    status = subprocess.run(
        [RAY, "job", "status", submission_id], env=env, capture_output=True, text=True, timeout=120
    )
    assert "succeeded" in (status.stdout + status.stderr).lower(), logs[-5000:]
    assert submit.returncode == 0
    assert "rows written" in logs

    # A second submission with the same id is refused: the nightly schedule's guard.
    again = subprocess.run(
        [RAY, "job", "submit", "--submission-id", submission_id, "--no-wait", "--", "python", "-c", "pass"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode != 0

    attempt = out / "runs" / "date=2026-11-21" / "campaign=winter_sale" / "attempt=0001"
    table = pq.read_table(attempt / "copies")
    assert table.num_rows > 0
    assert set(table[C.CAMPAIGN_ID].to_pylist()) == {"winter_sale"}
    assert set(table[C.CHANNEL].to_pylist()) <= {"push", "ad_headline"}
    assert (attempt / "summary.json").exists() and (attempt / "manifest.json").exists()
    # A reader with plain pandas: the manifest, then exactly the files it lists.
    import json

    import pandas as pd

    manifest = json.loads((attempt / "manifest.json").read_text())
    frame = pd.concat([pd.read_parquet(attempt / f["path"]) for f in manifest["files"]["copies"]])
    assert len(frame) == table.num_rows == manifest["rows"]["copies"]
    assert set(frame[C.STATUS]) <= set(C.STATUSES) and frame[C.ROW_ID].is_unique
