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
    # Ray 2.60's head turns on token auth; clients send the token only when asked to.
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(ray_head)
        out = tmp_path / "out"
        job_id = client.submit_job(
            entrypoint=f"python jobs/nightly_copy.py --limit 4 --channels push,ad_headline "
                       f"--output {out} --run-date 2026-11-21 --campaign winter_sale",
            runtime_env={"working_dir": str(REPO)},
            submission_id=f"nightly-copy-test-{int(time.time())}",
        )
        deadline = time.time() + 900
        status = client.get_job_status(job_id)
        while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED} and time.time() < deadline:
            time.sleep(5)
            status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
    finally:
        os.environ.pop("RAY_AUTH_MODE", None)
    assert status == JobStatus.SUCCEEDED, logs[-5000:]
    assert "rows written" in logs

    copies = out / "copies" / "run_date=2026-11-21" / "campaign=winter_sale"
    table = pq.read_table(copies)
    assert table.num_rows > 0
    assert set(table[C.CAMPAIGN_ID].to_pylist()) == {"winter_sale"}
    assert set(table[C.CHANNEL].to_pylist()) <= {"push", "ad_headline"}
    assert (out / "runs" / "run_date=2026-11-21" / "campaign=winter_sale" / "summary.json").exists()
