"""Shared fixtures: sample data, a real S3 endpoint over HTTP (moto), env for jobs."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from pathlib import Path

import pytest

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request
# No test may ask a cloud's instance-metadata address for credentials (boto3
# and pyarrow's SDK both would when none are set): the tests talk to
# 127.0.0.1 only. Job subprocesses inherit this.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "jobs" / "nightly_copy.py"

# Fake credentials for the local S3 server. The tests also prove they never
# reach logs or output, so the secret is distinctive.
S3_ACCESS_KEY = "AKIAFACTORYTEST"
S3_SECRET_KEY = "factory-test-secret-9f3b2c"


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    from factory import sample_data

    folder = tmp_path_factory.mktemp("sample")
    sample_data.generate(folder)
    return folder


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 on 127.0.0.1: real HTTP, real boto3 and pyarrow clients."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID=S3_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET_KEY, AWS_DEFAULT_REGION="us-east-1"
    )
    yield f"http://{host}:{port}"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module", autouse=True)
def no_ray_across_modules():
    """A module's Ray (``local_ray``) ends with the module: a test module never
    finds another's Ray. One left up would be this process's own, and a later test
    that runs ``ray stop`` (tests/engine/test_job_submission.py) would take the
    test process down with it: Ray ends a driver whose raylet dies."""
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def local_ray(s3_server):
    """One local Ray for every test of a module that needs one: the first starts it
    and the rest reuse it (a start-up costs seconds on 2 cores); it is stopped with
    the module (``no_ray_across_modules``). A test or job that stops Ray (the two-node
    cluster's fixture, a job's own shutdown) makes the next one start it again.
    s3_server first: Ray's workers inherit the S3 credentials at init."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield


@pytest.fixture
def s3_bucket(s3_server, request):
    import boto3

    # One bucket per test, parametrized variants included: a digest of the
    # whole test id follows the readable (cut, valid-characters-only) part.
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().replace("_", "-"))[:40].strip("-")
    name = f"factory-{slug}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_client(s3_server):
    import boto3

    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")


def job_env(**extra: str) -> dict[str, str]:
    """Environment for a job subprocess: this interpreter's, plus the repo on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


PYTHON = sys.executable


# Every process a job test starts carries this variable (a fresh value per
# run), so what a killed or failed job leaves behind (its local Ray, engine
# workers) can be found and reaped without touching anything else.
RUN_MARKER = "COPY_FACTORY_TEST_RUN"


def reap(marker: str, settle_seconds: float = 1.0) -> None:
    """Kill every process whose environment carries ``RUN_MARKER=marker``."""
    import time

    import psutil

    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get(RUN_MARKER) == marker:
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    time.sleep(settle_seconds)


def make_stand_in_model(folder: Path) -> Path:
    """A folder of a model's shape, for the instant stand-in engine (it loads
    nothing; the job's checks want a config and weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").touch()
    return folder


@pytest.fixture
def stand_in_model(tmp_path) -> str:
    return str(make_stand_in_model(tmp_path / "stand-in-model"))


def run_stand_in_job(args: list[str], log_dir: Path, timeout: float = 600, **env: str):
    """``python -m tests.stand_in_job ARGS`` (the nightly job on the instant
    engine) in a process of its own, with its own local Ray and its log under
    ``log_dir``; whatever it leaves behind is reaped. A CompletedProcess."""
    import subprocess
    import uuid

    marker = uuid.uuid4().hex
    env = job_env(**{RUN_MARKER: marker, "COPY_FACTORY_LOG_DIR": str(log_dir)}, **env)
    env["RAY_ADDRESS"] = "local"  # its own local Ray, never a cluster running on this machine
    try:
        return subprocess.run(
            [PYTHON, "-m", "tests.stand_in_job", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        reap(marker)
