"""Joining or starting Ray, the same way for every job, and keeping Ray's own
upkeep small while the engine works.

Under ``ray job submit`` (or with ``RAY_ADDRESS`` set, or after ``ray start``
on this machine) ``ray.init`` joins that cluster and its own settings apply,
dashboard included. Otherwise the job starts a local Ray for itself, and that
one starts without Ray's dashboard unless asked: the dashboard is ten Python
processes, and on a 2-core node the engine got about 2 % less CPU beside them
(benchmarks/HISTORY.md, section 1). The job's own progress log and run report
say what a person on call needs.

On a node where the engine shares the CPU cores with Ray (the CPU engine;
vLLM's scheduler and detokenizer on a GPU node), every CPU-second Ray spends
on upkeep is one the engine waits for. Two such costs are ours to trim
(measured on 2 cores, CPU-seconds per 120 s of steady generation; the model
worker had about 215 of 240):

- Ray Data's executor on the driver checks its tasks every 100 ms. While a
  CPU engine sets the pace (a batch of rows takes seconds, and twice the
  engine's sequence slots are queued) twice a second is enough: the driver
  then spent 2.6 instead of 5.5 (``engine_paced_scheduling``). Not for a GPU
  engine: there the CPU side must feed the engine as fast as it can, and with
  an instant stand-in engine (``benchmarks/cpu_side.py``, 200k pairs) the
  slower checks cost 10 % of the rows/s.
- Ray LLM starts a usage-telemetry actor when it builds a processor, records
  the processor's settings in it once, and leaves it idle: an idle Ray actor
  still wakes 100 times a second, about 1.0. On a local Ray this job started,
  nobody else can use it, so it is stopped once the processor is built
  (``release_llm_telemetry_actor``). On a shared cluster it is left alone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from factory import console, internals

logger = logging.getLogger(__name__)

# How often Ray Data's executor checks on its tasks while an engine pass runs.
ENGINE_PASS_POLL_SECONDS = 0.5

_started_here = False


def deref(value: Any) -> Any:
    """The value behind an object ref, else ``value`` itself. Ray resolves
    top-level refs in a task's arguments, but Ray Data hands a stage's
    constructor and function arguments over as they are."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def start_or_join(dashboard: bool = False) -> None:
    """``ray.init`` once per process. ``dashboard`` only matters for a local Ray
    this call starts: Ray ignores ``include_dashboard`` when joining a cluster."""
    global _started_here
    import ray

    if ray.is_initialized():
        quiet_console()
        quiet_vllm_on_the_driver()
        return
    quiet_console()  # before ray.init, which logs as it starts
    # Workers' output (engine and Ray Data tasks) reaches this console only with
    # --verbose; it is always in the session's logs folder.
    context = ray.init(log_to_driver=console.verbose(), include_dashboard=dashboard)
    _started_here = internals.ray_started_head()
    quiet_vllm_on_the_driver()
    if not context.dashboard_url:
        logger.info(
            "Ray's dashboard is off. A local Ray the job starts has none unless asked "
            "(--ray-dashboard); or start Ray first with `ray start --head` and the job joins it.",
            extra={"log_file_only": True},
        )
    if not console.verbose():
        logger.info(
            "Ray's and vLLM's own log lines: %s/logs (--verbose shows them here)",
            context.address_info.get("session_dir") or "Ray's session folder",
        )


def quiet_console() -> None:
    """Ray Data's progress bars and Ray's, Ray Data's and vLLM's INFO lines off the
    console unless --verbose (factory/console.py); the log files keep them."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = console.verbose()
    job_log = next((h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)), None)
    console.quiet_libraries(job_log)


def quiet_vllm_on_the_driver() -> None:
    """vLLM imported on the driver from now on logs through the root logger, so its
    INFO lines reach the job's log file, not the console. Called after ray.init: a
    local Ray's workers (the engine) inherit the environment as it was then and keep
    vLLM's own logging in Ray's log files."""
    import os

    if not console.verbose():
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")


def configure_ray_data() -> None:
    """Ray Data's settings for every job that runs on it (the run, the dry run)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    # The V2 Parquet reader lists files in a task that always asks for a whole
    # CPU; once the engine actor holds its CPU on a small node that task never
    # schedules (seen on 2 cores: the run hangs at "ListFiles 0/1"). The V1
    # reader honours num_cpus, and the driver has listed the files already.
    ctx.use_datasource_v2 = False


def started_here() -> bool:
    """Whether this process started the Ray it is connected to (a local Ray
    only this job uses), as opposed to joining a cluster."""
    return _started_here


def release_llm_telemetry_actor() -> bool:
    """Stop Ray LLM's idle usage-telemetry actor on a Ray this job started.

    Ray LLM records a processor's settings when it builds it (as usage tags
    kept by Ray, which outlive the actor) and does not call the actor again
    during the run. Returns whether an actor was stopped."""
    if not _started_here:
        return False
    import ray

    named = internals.llm_telemetry_actor()
    try:
        actor = ray.get_actor(named[0], namespace=named[1]) if named else None
    except ValueError:  # no such actor: nothing to do
        actor = None
    if actor is None:
        return False
    ray.kill(actor)
    logger.debug("Stopped Ray LLM's idle telemetry actor on this job's local Ray")
    return True


@contextlib.contextmanager
def engine_paced_scheduling(
    enabled: bool = True, *, poll_seconds: float = ENGINE_PASS_POLL_SECONDS
) -> Iterator[None]:
    """Within the block, Ray Data's executor checks on its tasks every
    ``poll_seconds`` instead of every 100 ms (when ``enabled``: for an engine
    that shares the CPU cores with Ray).

    Ray Data waits on its running tasks with a fixed timeout (a module
    constant, ``WAIT_FOR_TASK_COMPLETION_TIMEOUT_S``). An engine batch runs
    for seconds, so the executor almost always waits the whole timeout and
    wakes only to find little changed. A Ray without the constant is left as
    it is (``tests/cpu/test_ray_session.py`` fails on such an upgrade, so it
    is seen)."""
    if not enabled:
        yield
        return
    name = internals.EXECUTOR_WAIT_CONSTANT
    executor_state = internals.ray_data_executor_state()
    if executor_state is None:
        logger.debug("Ray Data has no %s: its executor keeps its own pace", name)
        yield
        return
    previous = getattr(executor_state, name)
    setattr(executor_state, name, max(previous, poll_seconds))
    try:
        yield
    finally:
        setattr(executor_state, name, previous)
