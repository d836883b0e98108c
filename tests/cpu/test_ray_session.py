"""A local Ray the job starts is lean; a flag brings the dashboard back.

Each case starts Ray in its own interpreter (``ray.init`` is once per process)
and lists that Ray's processes: the dashboard's modules run as processes of
their own, so their presence is what a user would see in ``ps``.
"""

import json
import subprocess
import sys

import pytest

from factory.cli import parse_config
from tests.conftest import job_env

PROBE = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import psutil, ray
from factory.ray_session import start_or_join
start_or_join(dashboard=sys.argv[1] == "on")
start_or_join(dashboard=sys.argv[1] != "on")  # a second call keeps the Ray it has
# The local Ray is this process's children: GCS, raylet, dashboard and their helpers.
names = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
print(json.dumps({"ray": sum("raylet" in n for n in names),
                  "dashboard_modules": sum(n.startswith("ray-dashboard-") for n in names)}))
ray.shutdown()
"""


def _probe(mode: str) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=180,
                          env=job_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize("mode", ["off", "on"])
def test_a_local_ray_has_a_dashboard_only_when_asked(mode):
    found, log = _probe(mode)
    assert found["ray"] == 1  # a local Ray was started, and only one
    if mode == "off":
        assert found["dashboard_modules"] == 0
        assert "Ray's dashboard is off" in log and "--ray-dashboard" in log
    else:
        assert found["dashboard_modules"] > 0
        assert "Ray's dashboard is off" not in log


def test_the_flag_and_the_default():
    assert parse_config([]).ray_dashboard is False
    assert parse_config(["--ray-dashboard"]).ray_dashboard is True
    assert parse_config(["--no-ray-dashboard"]).ray_dashboard is False
