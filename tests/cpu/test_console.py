"""A quiet console: the job's own lines stand out; Ray's, Ray Data's and vLLM's
per-batch lines go to the log files unless --verbose; errors still show.

Each case runs the nightly job as its own process (its own local Ray), with the
instant stand-in engine, and reads exactly what a person at the terminal sees.
"""

from __future__ import annotations

import pytest

from tests.conftest import make_stand_in_model, run_stand_in_job

# Lines of Ray, Ray Data and their workers that a default run must not show.
CHATTER = (
    "Execution plan of Dataset",
    "Starting execution of Dataset",
    "logging_progress",
    "Total Progress",
    "Started a local Ray instance",
    "Parquet dataset sampling",
    "pid=",
)


def _run(tmp_path, *flags: str, **env: str) -> tuple[int, str]:
    model = make_stand_in_model(tmp_path / "stand-in-model")
    args = [f"--output={tmp_path / 'out'}", f"--model={model}", "--limit=6", "--channels=push,sms"]
    proc = run_stand_in_job([*args, "--progress-every-seconds=1", *flags], tmp_path / "logs", **env)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_default_console_has_the_jobs_lines_and_no_per_batch_chatter(tmp_path):
    code, console = _run(tmp_path)
    assert code == 0, console
    for line in (
        "The run owes",
        "progress [",
        "ETA",
        "published in",
        "manifest:",
        "quality:",
        "Ray's and vLLM's own log lines:",
    ):
        assert line in console, (line, console)
    assert not [c for c in CHATTER if c in console], console
    # The log file keeps what the console left out.
    [log] = (tmp_path / "logs").glob("nightly_copy-*.log")
    assert "Execution plan of Dataset" in log.read_text()


@pytest.mark.slow  # a second whole run: make test, not test-fast
def test_verbose_brings_ray_data_back(tmp_path):
    code, console = _run(tmp_path, "--verbose")
    assert code == 0, console
    assert "Execution plan of Dataset" in console and "Started a local Ray instance" in console, console
    assert "published in" in console


@pytest.mark.slow  # a third whole run: make test, not test-fast
def test_an_engine_error_reaches_the_quiet_console_in_full(tmp_path):
    code, console = _run(tmp_path, STAND_IN_ENGINE_FAILS="stand-in engine broke on purpose (test)")
    assert code != 0, console
    assert "stand-in engine broke on purpose (test)" in console, console
    assert "Traceback" in console  # an error no rule knows is a bug: its traceback stays
