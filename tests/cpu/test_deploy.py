"""deploy/: the cron script (run against a fake `ray`), the runtime env, and the
KubeRay manifests checked against the field names of KubeRay's ray.io/v1 CRDs."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory.cli import parse_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCRIPT = DEPLOY / "cron" / "nightly-copy.sh"
RAYJOB = DEPLOY / "kuberay" / "rayjob.yaml"
RAYCRONJOB = DEPLOY / "kuberay" / "raycronjob.yaml"
RUNTIME_ENV = DEPLOY / "runtime_env.yaml"

# --- KubeRay's ray.io/v1 field names --------------------------------------------------------
# From ray-project/kuberay: ray-operator/apis/ray/v1/rayjob_types.go (RayJobSpec),
# raycluster_types.go (RayClusterSpec, HeadGroupSpec, WorkerGroupSpec) and the generated
# CRD ray-operator/config/crd/bases/ray.io_raycronjobs.yaml (KubeRay >= 1.6, alpha):
# spec.schedule and spec.jobTemplate required, spec.suspend optional, jobTemplate a RayJobSpec.
RAYJOB_SPEC = {
    "activeDeadlineSeconds": int,
    "backoffLimit": int,
    "rayClusterSpec": dict,
    "submitterPodTemplate": dict,
    "metadata": dict,
    "clusterSelector": dict,
    "submitterConfig": dict,
    "managedBy": str,
    "deletionStrategy": dict,
    "entrypoint": str,
    "runtimeEnvYAML": str,
    "jobId": str,
    "submissionMode": str,
    "entrypointResources": str,
    "entrypointNumCpus": (int, float),
    "entrypointNumGpus": (int, float),
    "ttlSecondsAfterFinished": int,
    "shutdownAfterJobFinishes": bool,
    "suspend": bool,
}
RAYCRONJOB_SPEC = {"schedule": str, "suspend": bool, "jobTemplate": dict}
RAYCRONJOB_REQUIRED = {"schedule", "jobTemplate"}
RAYCLUSTER_SPEC = {
    "suspend": bool,
    "managedBy": str,
    "autoscalerOptions": dict,
    "headServiceAnnotations": dict,
    "enableInTreeAutoscaling": bool,
    "gcsFaultToleranceOptions": dict,
    "headGroupSpec": dict,
    "rayVersion": str,
    "workerGroupSpecs": list,
    "authOptions": dict,
}
HEAD_GROUP = {
    "template": dict,
    "headService": dict,
    "enableIngress": bool,
    "rayStartParams": dict,
    "serviceType": str,
}
WORKER_GROUP = {
    "suspend": bool,
    "groupName": str,
    "replicas": int,
    "minReplicas": int,
    "maxReplicas": int,
    "idleTimeoutSeconds": int,
    "rayStartParams": dict,
    "template": dict,
    "scaleStrategy": dict,
    "numOfHosts": int,
}
WORKER_GROUP_REQUIRED = {"groupName", "minReplicas", "maxReplicas", "template"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode"}
# What Ray's runtime env accepts (ray.runtime_env.RuntimeEnv's known fields we may use).
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CRON = re.compile(r"^\S+ \S+ \S+ \S+ \S+$")


def check_fields(where: str, obj: Any, fields: dict[str, Any], required: set[str] = frozenset()) -> None:
    assert isinstance(obj, dict), f"{where}: expected a mapping"
    unknown = set(obj) - set(fields)
    assert not unknown, f"{where}: fields KubeRay does not define: {sorted(unknown)}"
    missing = set(required) - set(obj)
    assert not missing, f"{where}: required fields missing: {sorted(missing)}"
    for key, value in obj.items():
        assert isinstance(value, fields[key]) and not (fields[key] is int and isinstance(value, bool)), (
            f"{where}.{key}: {value!r} is not {fields[key]}"
        )


def check_ray_start_params(where: str, params: dict) -> None:
    # map[string]string in the CRD: a bare number or boolean is rejected by the API server.
    for key, value in params.items():
        assert isinstance(value, str), f"{where}.rayStartParams.{key}: {value!r} must be a string"


def containers(where: str, group: dict) -> list[dict]:
    pod = group["template"].get("spec") or {}
    assert pod.get("containers"), f"{where}: a pod template needs containers"
    return pod["containers"]


def check_cluster(where: str, cluster: dict) -> None:
    check_fields(where, cluster, RAYCLUSTER_SPEC, {"headGroupSpec"})
    head = cluster["headGroupSpec"]
    check_fields(f"{where}.headGroupSpec", head, HEAD_GROUP, {"template"})
    check_ray_start_params(f"{where}.headGroupSpec", head.get("rayStartParams", {}))
    # The head plans and writes: no GPU, and no CPUs offered to tasks.
    assert head["rayStartParams"].get("num-cpus") == "0"
    for c in containers(f"{where}.headGroupSpec", head):
        assert "nvidia.com/gpu" not in (c.get("resources", {}).get("limits") or {})
    images = {c["image"] for c in containers(where, head)}
    assert cluster["workerGroupSpecs"], f"{where}: GPU workers needed"
    gpus = 0
    for i, group in enumerate(cluster["workerGroupSpecs"]):
        gw = f"{where}.workerGroupSpecs[{i}]"
        check_fields(gw, group, WORKER_GROUP, WORKER_GROUP_REQUIRED)
        check_ray_start_params(gw, group.get("rayStartParams", {}))
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        for c in containers(gw, group):
            images.add(c["image"])
            res = c.get("resources") or {}
            limit, request = (
                (res.get("limits") or {}).get("nvidia.com/gpu"),
                (res.get("requests") or {}).get("nvidia.com/gpu"),
            )
            assert limit is not None and int(limit) >= 1, f"{gw}: a GPU limit is needed"
            assert request in (None, limit), f"{gw}: GPU requests must equal limits (extended resource)"
            gpus += int(limit) * group["maxReplicas"]
    assert gpus > 0
    # rayVersion must match the Ray in the images.
    assert all(f":{cluster['rayVersion']}-" in image for image in images), (cluster["rayVersion"], images)


def check_runtime_env(where: str, env: dict) -> None:
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env)  # Ray's own validation of the fields and the pip spec
    packages = env["pip"]["packages"] if isinstance(env["pip"], dict) else env["pip"]
    assert any("[gpu]" in p for p in packages), f"{where}: the project's GPU extra must be installed"
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert all(isinstance(v, str) for v in env["env_vars"].values()), (
        f"{where}: env_vars values must be strings"
    )


def check_entrypoint(where: str, entrypoint: str, run_date: str) -> None:
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", "jobs/nightly_copy.py"], f"{where}: {argv[:2]}"
    try:
        config = parse_config(argv[2:])  # the job's real flag parser and config validation
    except SystemExit as exc:  # argparse: an unknown flag or a bad value
        raise AssertionError(f"{where}: the job refuses its flags: {argv[2:]}") from exc
    assert config.run_date == dt.date.fromisoformat(run_date)
    assert config.engine.device == "gpu"
    assert config.output.startswith("s3://")


def load(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path}: one document expected"
    return docs[0]


def test_every_yaml_under_deploy_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert {f.name for f in files} == {"rayjob.yaml", "raycronjob.yaml", "runtime_env.yaml"}
    for f in files:
        assert load(f)


def test_runtime_env_is_valid_for_ray():
    env = load(RUNTIME_ENV)
    assert set(env) == {"working_dir", "pip", "env_vars"}
    check_runtime_env(str(RUNTIME_ENV), env)


def test_rayjob_matches_kuberay_crd():
    text = RAYJOB.read_text()
    unrendered = load(RAYJOB)
    assert not DNS1123.match(unrendered["metadata"]["name"])  # refused by the API server until rendered
    rendered = yaml.safe_load(text.replace("RUN_DATE", "2026-11-23"))  # what docs/running.md's sed does
    assert "RUN_DATE" not in json.dumps(rendered)
    assert rendered["apiVersion"] == "ray.io/v1" and rendered["kind"] == "RayJob"
    assert rendered["metadata"]["name"] == "nightly-copy-2026-11-23" and DNS1123.match(
        rendered["metadata"]["name"]
    )
    spec = rendered["spec"]
    check_fields("spec", spec, RAYJOB_SPEC)
    assert spec["jobId"] == "nightly-copy-2026-11-23"
    assert "jobs/nightly_copy.py" in spec["entrypoint"]
    check_entrypoint("spec.entrypoint", spec["entrypoint"], "2026-11-23")
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert 0 < spec["activeDeadlineSeconds"] < 24 * 3600
    assert spec.get("submissionMode", "K8sJobMode") in SUBMISSION_MODES
    check_runtime_env("spec.runtimeEnvYAML", yaml.safe_load(spec["runtimeEnvYAML"]))
    check_cluster("spec.rayClusterSpec", spec["rayClusterSpec"])


def test_raycronjob_matches_kuberay_crd():
    cron = load(RAYCRONJOB)
    assert cron["apiVersion"] == "ray.io/v1" and cron["kind"] == "RayCronJob"
    assert DNS1123.match(cron["metadata"]["name"])
    check_fields("spec", cron["spec"], RAYCRONJOB_SPEC, RAYCRONJOB_REQUIRED)
    assert CRON.match(cron["spec"]["schedule"])
    template = cron["spec"]["jobTemplate"]
    check_fields("spec.jobTemplate", template, RAYJOB_SPEC)
    # No fixed jobId: every scheduled RayJob gets its own submission id.
    assert "jobId" not in template
    assert template["shutdownAfterJobFinishes"] is True and template["ttlSecondsAfterFinished"] > 0
    # A stuck night must end before the next one starts.
    assert 0 < template["activeDeadlineSeconds"] < 24 * 3600
    check_runtime_env("spec.jobTemplate.runtimeEnvYAML", yaml.safe_load(template["runtimeEnvYAML"]))
    check_cluster("spec.jobTemplate.rayClusterSpec", template["rayClusterSpec"])


def test_raycronjob_entrypoint_takes_the_utc_date_from_the_shell():
    entrypoint = load(RAYCRONJOB)["spec"]["jobTemplate"]["entrypoint"]
    assert "jobs/nightly_copy.py" in entrypoint and '--run-date "$(date -u +%F)"' in entrypoint
    # KubeRay runs the entrypoint through a shell: expand it with a real one, as the submitter would.
    expanded = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {entrypoint}"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"], "TZ": "Pacific/Kiritimati"},
    ).stdout
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    argv = expanded.splitlines()
    assert argv[argv.index("--run-date") + 1] in (
        today,
        (dt.date.fromisoformat(today) + dt.timedelta(1)).isoformat(),
    )
    check_entrypoint("spec.jobTemplate.entrypoint", shlex.join(argv), argv[argv.index("--run-date") + 1])


# --- The cron script against a fake `ray` ---------------------------------------------------

FAKE_RAY = r'''#!{python}
"""A stand-in for the ray CLI: records every call; jobs live in a JSON file."""
import json, os, sys
state_file = os.environ["FAKE_RAY_STATE"]
state = json.load(open(state_file)) if os.path.exists(state_file) else {{"calls": [], "jobs": {{}}}}
argv = sys.argv[1:]
state["calls"].append(argv)
code = 0
if argv[:2] == ["job", "status"]:
    job = argv[-1]
    status = state["jobs"].get(job)
    if status is None:
        print(f"Job '{{job}}' does not exist", file=sys.stderr); code = 1
    elif status == "SUCCEEDED": print(f"Job '{{job}}' succeeded")
    elif status == "FAILED": print(f"Job '{{job}}' failed\nStatus message: boom")
    elif status == "STOPPED": print(f"Job '{{job}}' was stopped")
    else: print(f"Status for job '{{job}}': {{status}}\nStatus message: running")
elif argv[:2] == ["job", "submit"]:
    job = argv[argv.index("--submission-id") + 1]
    if job in state["jobs"]:
        print(f"Job with submission_id {{job}} already exists.", file=sys.stderr); code = 1
    else:
        result = os.environ.get("FAKE_RAY_RESULT", "SUCCEEDED")
        state["jobs"][job] = result
        print("job log line")
        code = 1 if result == "FAILED" else 0  # like ray: a STOPPED job exits 0
elif argv[:2] == ["job", "logs"]:
    job = argv[-1]
    state["jobs"][job] = os.environ.get("FAKE_RAY_RESULT", "SUCCEEDED")  # following it to its end
    print("job log line")
json.dump(state, open(state_file, "w"))
sys.exit(code)
'''

# `date` that tells local from UTC apart: the host is a day ahead of UTC here.
FAKE_DATE = r"""#!/bin/bash
if [[ "$*" == "+%F" ]]; then echo 2031-01-02; exit 0; fi
if [[ "$*" == "-u +%F" ]]; then echo 2031-01-01; exit 0; fi
exec /bin/date "$@"
"""


@pytest.fixture
def fake_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ray").write_text(FAKE_RAY.format(python=sys.executable))
    (bin_dir / "date").write_text(FAKE_DATE)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


def run_script(
    fake_bin: Path, tmp_path: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess, dict]:
    state = tmp_path / "ray_state.json"
    full_env = {
        "PATH": f"{fake_bin}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAKE_RAY_STATE": str(state),
        "RAY_ADDRESS": "http://ray-head:8265",
        **env,
    }
    full_env = {k: v for k, v in full_env.items() if v is not None}
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=60
    )
    calls = json.loads(state.read_text()) if state.exists() else {"calls": [], "jobs": {}}
    return proc, calls


def submit_calls(calls: dict) -> list[list[str]]:
    return [c for c in calls["calls"] if c[:2] == ["job", "submit"]]


def test_cron_script_is_valid_bash():
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    head = SCRIPT.read_text()
    assert head.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in head


def test_cron_submits_todays_utc_date_with_the_exact_command(fake_bin, tmp_path):
    proc, calls = run_script(
        fake_bin,
        tmp_path,
        "--",
        "--output",
        "s3://marketing-copy/nightly",
        "--pairs",
        "s3://shop/pairs/{run_date}/",
    )
    assert proc.returncode == 0, proc.stderr
    assert submit_calls(calls) == [
        [
            "job",
            "submit",
            "--address",
            "http://ray-head:8265",
            "--submission-id",
            "nightly-copy-2031-01-01",
            "--working-dir",
            str(REPO),
            "--runtime-env",
            str(RUNTIME_ENV),
            "--",
            "python",
            "jobs/nightly_copy.py",
            "--run-date",
            "2031-01-01",
            "--output",
            "s3://marketing-copy/nightly",
            "--pairs",
            "s3://shop/pairs/2031-01-01/",
        ]
    ]
    # It checked the id was unknown first, and read the final status after.
    assert calls["calls"][0] == [
        "job",
        "status",
        "--address",
        "http://ray-head:8265",
        "nightly-copy-2031-01-01",
    ]
    assert calls["calls"][-1][:2] == ["job", "status"]
    assert "nightly-copy-2031-01-01 succeeded" in proc.stderr


def test_cron_date_and_retry_flags(fake_bin, tmp_path):
    proc, calls = run_script(
        fake_bin, tmp_path, "--date", "2026-11-23", "--retry", "2", COPY_FACTORY_RUNTIME_ENV="none"
    )
    assert proc.returncode == 0, proc.stderr
    (submit,) = submit_calls(calls)
    assert submit[submit.index("--submission-id") + 1] == "nightly-copy-2026-11-23-retry2"
    assert "--runtime-env" not in submit
    assert submit[submit.index("--") + 1 :] == ["python", "jobs/nightly_copy.py", "--run-date", "2026-11-23"]


@pytest.mark.parametrize("result", ["FAILED", "STOPPED"])
def test_cron_exits_non_zero_when_the_job_does_not_succeed(fake_bin, tmp_path, result):
    proc, calls = run_script(fake_bin, tmp_path, "--date", "2026-11-23", FAKE_RAY_RESULT=result)
    assert proc.returncode == 1
    assert f"ended {result}" in proc.stderr and "--retry 2" in proc.stderr


def test_cron_never_submits_a_date_twice(fake_bin, tmp_path):
    first, _ = run_script(fake_bin, tmp_path, "--date", "2026-11-23")
    assert first.returncode == 0
    second, calls = run_script(fake_bin, tmp_path, "--date", "2026-11-23")
    assert second.returncode == 0, second.stderr  # reports the first run's success
    assert len(submit_calls(calls)) == 1
    assert "already submitted (SUCCEEDED); not submitting it again" in second.stderr


def test_cron_follows_a_running_job_of_the_same_date(fake_bin, tmp_path):
    state = tmp_path / "ray_state.json"
    state.write_text(json.dumps({"calls": [], "jobs": {"nightly-copy-2026-11-23": "RUNNING"}}))
    proc, calls = run_script(fake_bin, tmp_path, "--date", "2026-11-23", FAKE_RAY_RESULT="FAILED")
    assert not submit_calls(calls)
    assert [
        "job",
        "logs",
        "--address",
        "http://ray-head:8265",
        "--follow",
        "nightly-copy-2026-11-23",
    ] in calls["calls"]
    assert proc.returncode == 1 and "ended FAILED" in proc.stderr


@pytest.mark.parametrize(
    "args, env, message",
    [
        ((), {"RAY_ADDRESS": None}, "RAY_ADDRESS is not set"),
        (("--date", "2026-02-30"), {}, "not a valid YYYY-MM-DD date"),
        (("--date", "23.11.2026"), {}, "not a valid YYYY-MM-DD date"),
        (("--retry", "1"), {}, "must be a number from 2"),
        (("--", "--run-date", "2026-11-23"), {}, "pass the date with --date"),
        (("--output", "s3://x"), {}, "unknown argument '--output'"),
    ],
)
def test_cron_usage_errors_exit_2_before_calling_ray(fake_bin, tmp_path, args, env, message):
    proc, calls = run_script(fake_bin, tmp_path, *args, **env)
    assert proc.returncode == 2 and message in proc.stderr
    assert calls["calls"] == []


def test_crontab_example_calls_the_script():
    line = [
        text
        for text in (DEPLOY / "cron" / "copy-factory.cron").read_text().splitlines()
        if text and not text.startswith("#") and "=" not in text.split()[0]
    ]
    assert len(line) == 1
    fields = line[0].split()
    assert CRON.match(" ".join(fields[:5])) and fields[6].endswith("deploy/cron/nightly-copy.sh")
    assert "%" not in line[0]  # cron turns % into a newline
