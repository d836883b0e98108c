"""Each private part of Ray and vLLM the job touches (factory/internals.py) is
still where it was checked: this fails on the upgrade that moves one, naming it."""

from __future__ import annotations

from factory import internals


def test_ray_keeps_the_head_node_it_started_where_it_was():
    import ray._private.worker as worker

    assert hasattr(worker, "_global_node"), (
        "ray._private.worker._global_node moved: re-check ray_started_head"
    )
    import ray

    ray.shutdown()  # an earlier module's shared Ray (conftest's local_ray) may still be up
    assert internals.ray_started_head() is False  # no Ray started in this process now
    # (that a started Ray answers True: tests/cpu/test_ray_session.py, in a process of its own)


def test_the_llm_telemetry_actor_is_named():
    named = internals.llm_telemetry_actor()
    assert named is not None, (
        "ray.llm usage telemetry moved: re-check factory.ray_session.release_llm_telemetry_actor"
    )
    assert all(isinstance(part, str) and part for part in named)


def test_ray_datas_executor_wait_is_a_number():
    state = internals.ray_data_executor_state()
    assert state is not None, (
        f"Ray Data has no {internals.EXECUTOR_WAIT_CONSTANT}: re-check engine_paced_scheduling"
    )
    assert 0 < getattr(state, internals.EXECUTOR_WAIT_CONSTANT) < 10


def test_ray_llms_output_record_can_be_wrapped():
    cls = internals.ray_llm_output_class()
    assert cls is not None, "vLLMOutputData.from_vllm_engine_output moved: re-check the prefix-cache plugin"
    import inspect

    assert list(inspect.signature(cls.from_vllm_engine_output).parameters) == ["output"]


def test_ray_llms_module_loggers_defer_to_a_handler_on_ray_llm():
    """console.quiet_libraries relies on it: with a handler on ``ray.llm`` a
    module logger Ray LLM makes has none of its own and passes lines up."""
    import logging

    from ray.llm._internal.common.observability.logging import get_logger

    parent = logging.getLogger(internals.RAY_LLM_LOGGER)
    before = list(parent.handlers)
    parent.handlers[:] = []
    try:
        alone = get_logger("factory_probe_without")
        assert alone.handlers and not alone.propagate  # what printed on the quiet console
        parent.addHandler(logging.NullHandler())
        deferring = get_logger("factory_probe_with")
        assert not deferring.handlers and deferring.propagate
    finally:
        parent.handlers[:] = before


def test_ray_data_keeps_a_filesystem_wrapped_with_our_tries():
    """staging.read hands Ray Data a filesystem already wrapped with the job's
    tries; Ray Data must keep it (not wrap it again with its own 10)."""
    import pyarrow.fs as pafs
    from ray.data._internal.util import RetryingPyFileSystem

    fs = internals.ray_data_filesystem(pafs.LocalFileSystem(), max_attempts=2)
    assert isinstance(fs, RetryingPyFileSystem), "RetryingPyFileSystem moved: re-check ray_data_filesystem"
    assert fs.handler._max_attempts == 2
    assert RetryingPyFileSystem.wrap(fs, retryable_errors=["x"]) is fs  # what read_parquet does with it
