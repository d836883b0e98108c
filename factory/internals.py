"""Every private part of Ray and vLLM the job touches, in one place.

Each is a small accessor that names the internal, says why the job needs it
and the release it was checked against (``CHECKED_AGAINST``), and returns
None where a release no longer has it: the job then carries on without the
tweak. ``tests/cpu/test_internals.py`` fails when one of them moves, so an
upgrade shows at once what to look at again.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

CHECKED_AGAINST = {"ray": "2.60.0", "vllm": "0.32.0"}


def ray_started_head() -> bool:
    """Whether this process's ``ray.init`` started the cluster itself.

    ``ray.init`` makes a head node object (``ray._private.worker._global_node``)
    only when it starts the cluster; Ray has no public way to ask. Should it
    move, the job counts as having joined (and leaves Ray's actors alone)."""
    node = getattr(sys.modules.get("ray._private.worker"), "_global_node", None)
    return bool(getattr(node, "head", False))


def llm_telemetry_actor() -> Optional[tuple[str, str]]:
    """(name, namespace) of Ray LLM's usage-telemetry actor, which idles
    beside a CPU engine once a processor is built
    (``ray.llm._internal.batch.observability.usage_telemetry.usage``)."""
    try:
        from ray.llm._internal.batch.observability.usage_telemetry import usage
    except ImportError:
        return None
    name = getattr(usage, "LLM_BATCH_TELEMETRY_ACTOR_NAME", None)
    namespace = getattr(usage, "LLM_BATCH_TELEMETRY_NAMESPACE", None)
    return (name, namespace) if name and namespace else None


# Ray LLM gives each of its module loggers ("ray.llm.<module>") a console
# handler of its own, at INFO, unless this logger already has a handler
# (``ray.llm._internal.common.observability.logging._setup_logger``): its
# "No cloud storage mirror configured" then reached the quiet console.
RAY_LLM_LOGGER = "ray.llm"


# Ray Data's executor waits on its running tasks with this fixed timeout.
EXECUTOR_WAIT_CONSTANT = "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S"


def ray_data_executor_state() -> Any:
    """The module holding ``EXECUTOR_WAIT_CONSTANT``
    (``ray.data._internal.execution.streaming_executor_state``), or None when
    it has no such number: an engine pass then keeps Ray Data's own pace."""
    try:
        from ray.data._internal.execution import streaming_executor_state as state
    except ImportError:
        return None
    return state if isinstance(getattr(state, EXECUTOR_WAIT_CONSTANT, None), (int, float)) else None


def ray_llm_output_class() -> Any:
    """Ray LLM's per-request output record, whose constructor from a vLLM
    output the prefix-cache plugin wraps to keep ``num_cached_tokens``
    (``ray.llm._internal.batch.stages.vllm_engine_stage.vLLMOutputData``,
    ``from_vllm_engine_output``). None where it moved: the column is null."""
    try:
        from ray.llm._internal.batch.stages import vllm_engine_stage as stage
    except Exception:  # noqa: BLE001 - no Ray Data LLM here (or it fails to import): nothing to patch
        return None
    cls = getattr(stage, "vLLMOutputData", None)
    return cls if callable(getattr(cls, "from_vllm_engine_output", None)) else None


def ray_data_filesystem(fs: Any, max_attempts: int) -> Any:
    """``fs`` for ``ray.data.read_parquet``, tried ``max_attempts`` times per
    operation instead of Ray Data's 10.

    Ray Data wraps every filesystem it reads in its own retrying one
    (``ray.data._internal.util.RetryingPyFileSystem``: 10 tries, up to 32 s
    apart, about 160 s per file operation over pyarrow's own retries); given
    one already wrapped, it keeps it. With S3 down, a read of the run's
    staged files then took minutes past the job's ``--s3-max-attempts``
    (seen: over 7 minutes with 2). Where it moved, ``fs`` is returned as it
    is and Ray Data's own tries apply."""
    try:
        from ray.data._internal.util import RetryingPyFileSystem
        from ray.data.context import DataContext
    except ImportError:
        return fs
    if not callable(getattr(RetryingPyFileSystem, "wrap", None)):
        return fs
    errors = DataContext.get_current().retried_io_errors
    return RetryingPyFileSystem.wrap(fs, retryable_errors=errors, max_attempts=max_attempts)
