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
    env = job_env(RAY_USAGE_STATS_ENABLED="0", PATH=os.pathsep.join([str(Path(PYTHON).parent), os.environ["PATH"]]))
    env.pop("RAY_ADDRESS", None)
    subprocess.run([RAY, "start", "--head", f"--port={gcs_port}", f"--dashboard-port={dash_port}",
                    "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dash_port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_job_submitted_to_a_ray_head_succeeds(ray_head, tmp_path):
    """The README's command, run as a nightly scheduler would, then its status checked.

    The CLI runs in its own process: Ray 2.60's head turns on token auth, and
    clients send the token only when RAY_AUTH_MODE=token is in their
    environment when Ray is imported.
    """
    out = tmp_path / "out"
    submission_id = f"nightly-copy-test-{int(time.time())}"
    env = job_env(RAY_AUTH_MODE="token", RAY_ADDRESS=ray_head)
    submit = subprocess.run(
        [RAY, "job", "submit", "--submission-id", submission_id, "--working-dir", str(REPO), "--",
         "python", "jobs/nightly_copy.py", "--limit", "4", "--channels", "push,ad_headline",
         "--output", str(out), "--run-date", "2026-11-21", "--campaign", "winter_sale"],
        env=env, capture_output=True, text=True, timeout=900)
    logs = submit.stdout + submit.stderr
    status = subprocess.run([RAY, "job", "status", submission_id], env=env, capture_output=True, text=True,
                            timeout=120)
    assert "succeeded" in (status.stdout + status.stderr).lower(), logs[-5000:]
    assert submit.returncode == 0
    assert "rows written" in logs

    # A second submission with the same id is refused: the nightly schedule's guard.
    again = subprocess.run([RAY, "job", "submit", "--submission-id", submission_id, "--no-wait", "--",
                            "python", "-c", "pass"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0

    copies = out / "copies" / "date=2026-11-21" / "campaign=winter_sale"
    table = pq.read_table(copies)
    assert table.num_rows > 0
    assert set(table[C.CAMPAIGN_ID].to_pylist()) == {"winter_sale"}
    assert set(table[C.CHANNEL].to_pylist()) <= {"push", "ad_headline"}
    assert (out / "runs" / "date=2026-11-21" / "campaign=winter_sale" / "summary.json").exists()
    # A downstream reader's first try: the whole output folder as one table, partitions as columns.
    import pandas as pd

    frame = pd.read_parquet(out / "copies")
    assert len(frame) == table.num_rows and set(frame["campaign"].astype(str)) == {"winter_sale"}
    assert set(frame["date"].astype(str)) == {"2026-11-21"} and set(frame[C.STATUS]) <= set(C.STATUSES)
