"""A local Ray the job starts is lean; a flag brings the dashboard back; Ray's upkeep stays small.

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
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=180, env=job_env()
    )
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


TELEMETRY_PROBE = """
import json, sys, time
import ray
from ray.data.llm import build_processor
from ray.llm._internal.batch.observability.usage_telemetry import usage
from factory.config import EngineConfig
from factory.model import ensure_bundled_model
from factory.ray_session import start_or_join, started_here
from factory.stages.generate import build_generate_stage, build_processor_config

def telemetry_actor_alive():
    for _ in range(50):  # a killed actor's name is freed within moments
        try:
            ray.get_actor(usage.LLM_BATCH_TELEMETRY_ACTOR_NAME, namespace=usage.LLM_BATCH_TELEMETRY_NAMESPACE)
        except ValueError:
            return False
        if sys.argv[1] == "plain":
            return True
        time.sleep(0.1)
    return True

start_or_join()
model, engine = str(ensure_bundled_model()), EngineConfig(device="cpu")
if sys.argv[1] == "plain":  # Ray LLM on its own leaves the actor running
    build_processor(build_processor_config(engine, model, "cpu", 0.25))
else:
    build_generate_stage(engine, model, "cpu", ["row_id"], 0.25)
print(json.dumps({"started_here": started_here(), "alive": telemetry_actor_alive()}))
ray.shutdown()
"""


@pytest.mark.slow  # a local Ray and a Ray LLM processor in their own process: make test, not test-fast
@pytest.mark.parametrize("how", ["plain", "factory"])
def test_the_idle_telemetry_actor_is_stopped_on_the_jobs_own_ray(how):
    done = subprocess.run(
        [sys.executable, "-c", TELEMETRY_PROBE, how],
        capture_output=True,
        text=True,
        timeout=300,
        env=job_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["started_here"] is True
    assert found["alive"] is (how == "plain")


def test_release_leaves_a_joined_cluster_alone(monkeypatch):
    from factory import ray_session

    monkeypatch.setattr(ray_session, "_started_here", False)
    assert ray_session.release_llm_telemetry_actor() is False  # returns before touching Ray


def test_engine_paced_scheduling_slows_the_executor_poll_and_restores_it():
    from ray.data._internal.execution import streaming_executor_state as executor_state

    from factory.ray_session import ENGINE_PASS_POLL_SECONDS, engine_paced_scheduling

    # The constant must exist in the installed Ray: an upgrade that renames it fails here.
    before = executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S
    assert isinstance(before, float) and before < ENGINE_PASS_POLL_SECONDS
    with engine_paced_scheduling():
        assert executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == ENGINE_PASS_POLL_SECONDS
        with pytest.raises(RuntimeError):
            with engine_paced_scheduling():  # nested, and left by an error
                assert executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == ENGINE_PASS_POLL_SECONDS
                raise RuntimeError("a failing pass")
        assert executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == ENGINE_PASS_POLL_SECONDS
    assert executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == before
    with engine_paced_scheduling(poll_seconds=before / 2):  # never faster than Ray's own pace
        assert executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == before
    with engine_paced_scheduling(enabled=False):  # a GPU engine keeps Ray Data's own pace
        assert executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == before
