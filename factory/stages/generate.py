"""The engine seam: vLLM behind Ray Data's LLM processor.

Everything the rest of the pipeline knows about the engine is here: rows go
in with chat messages and a token cap, and come out with ``text``,
``num_input_tokens``, ``num_output_tokens``, ``num_cached_tokens`` and
``finish_reason``. The
processor overlaps batches on one async engine per replica (continuous
batching) and handles replicas, placement and model download.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from factory import columns as C
from factory.config import EngineConfig
from factory.ray_session import release_llm_telemetry_actor

logger = logging.getLogger(__name__)

# Generation columns this seam adds to each row.
GENERATED_COLUMNS = (C.TEXT, C.NUM_INPUT_TOKENS, C.NUM_OUTPUT_TOKENS, C.NUM_CACHED_TOKENS, C.FINISH_REASON)

# Sequences one engine replica runs at once (vLLM's max_num_seqs) unless
# engine_kwargs says otherwise: vLLM's own CPU default, and a sane GPU start.
DEFAULT_MAX_NUM_SEQS = 256
# Tokens one engine step may take (vLLM's max_num_batched_tokens) unless
# engine_kwargs says otherwise: what vLLM picks for offline batch use
# (`vllm.LLM`), per device. Ray's engine stage builds its engine through
# AsyncLLMEngine, which is in neither of vLLM's tables (offline, server) and
# gets the generic 2,048 tokens a step on every device. `vllm.LLM` takes 4,096
# per CPU rank, and 8,192 on a GPU it cannot see from the driver (16,384 on an
# H100 or larger that it can).
# tests/cpu/test_stages.py checks these against vLLM's own table.
OFFLINE_MAX_NUM_BATCHED_TOKENS = {"cpu": 4096, "gpu": 8192}
# Requests kept in flight per engine sequence slot. Ray's engine stage hands a
# batch back only when its slowest row is done, so with exactly max_num_seqs
# in flight the engine runs fewer and fewer sequences while each batch waits
# for its stragglers. A second wave queued behind keeps every slot busy
# (benchmarks/throughput.py on 2 cores: 4.26 -> 4.61 rows/s; benchmarks/HISTORY.md section 1).
IN_FLIGHT_PER_SEQ = 2


def detect_device(engine: EngineConfig) -> str:
    """``gpu`` when asked or when the cluster reports GPUs, else ``cpu``."""
    if engine.device != "auto":
        return engine.device
    import ray

    return "gpu" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def engine_ranks(kwargs: dict[str, Any]) -> int:
    """Devices (or CPU ranks) one engine replica spans: tensor x pipeline parallel."""
    return int(kwargs.get("tensor_parallel_size", 1)) * int(kwargs.get("pipeline_parallel_size", 1))


def engine_kwargs(engine: EngineConfig, device: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "enable_prefix_caching": True,
        "max_model_len": engine.max_model_len,
        "tensor_parallel_size": engine.tensor_parallel_size,
        # The CPU engine cannot take per-request seeds; an engine seed makes
        # sampling repeatable there and on GPUs alike.
        "seed": engine.seed,
        "enforce_eager": engine.enforce_eager if engine.enforce_eager is not None else device == "cpu",
        "max_num_seqs": DEFAULT_MAX_NUM_SEQS,
    }
    if device == "cpu":
        kwargs["dtype"] = "bfloat16"
    kwargs.update(engine.engine_kwargs)
    if "max_num_batched_tokens" not in engine.engine_kwargs:
        per_step = OFFLINE_MAX_NUM_BATCHED_TOKENS[device] * (engine_ranks(kwargs) if device == "cpu" else 1)
        # vLLM refuses a step smaller than the sequences it runs at once, or,
        # without chunked prefill, smaller than the longest prompt.
        floor = max(
            int(kwargs["max_num_seqs"]),
            int(kwargs["max_model_len"] or 0) if kwargs.get("enable_chunked_prefill") is False else 0,
        )
        kwargs["max_num_batched_tokens"] = max(per_step, floor)
    return kwargs


def concurrent_batches(engine: EngineConfig) -> int:
    """Batches in flight per replica, so the engine never waits on the pipeline.

    Default: ``IN_FLIGHT_PER_SEQ x max_num_seqs`` rows. A configured value
    that cannot fill ``max_num_seqs`` is raised to the smallest that can."""
    seqs = int(engine.engine_kwargs.get("max_num_seqs", DEFAULT_MAX_NUM_SEQS))
    needed = -(-seqs // engine.batch_size)
    if engine.max_concurrent_batches is None:
        return IN_FLIGHT_PER_SEQ * needed
    if engine.max_concurrent_batches < needed:
        logger.info(
            "max_num_seqs=%d > batch_size %d x max_concurrent_batches %d: keeping %d batches in flight",
            seqs,
            engine.batch_size,
            engine.max_concurrent_batches,
            needed,
        )
        return needed
    return engine.max_concurrent_batches


def build_processor_config(engine: EngineConfig, model_source: str, device: str, cpu_stage_num_cpus: float):
    from ray.data.llm import vLLMEngineProcessorConfig

    kwargs = engine_kwargs(engine, device)
    tp = engine_ranks(kwargs)
    if device == "cpu":
        # One CPU bundle per replica; without it the engine stage waits for a GPU for ever.
        placement = {"bundles": [{"CPU": 1}]}
        runtime_env = {
            "env_vars": {
                "VLLM_CPU_KVCACHE_SPACE": str(engine.cpu_kvcache_gib),
                # vLLM keeps one core back for its front end by default; on a small
                # node that halves the compute. Measured on 2 cores, bare vLLM on
                # the factory's prompts: 2.3 -> 4.2 rows/s with no core reserved.
                "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            }
        }
    else:
        # One replica's ranks on one node: PACK may split them across single-GPU
        # nodes when a node is short of GPUs, and tensor parallelism over the
        # network is far slower than waiting for a whole node.
        placement = {"bundles": [{"GPU": 1, "CPU": 1}] * tp, "strategy": "STRICT_PACK"}
        runtime_env = None
    light = {"enabled": True, "num_cpus": cpu_stage_num_cpus}
    return vLLMEngineProcessorConfig(
        model_source=model_source,
        engine_kwargs=kwargs,
        batch_size=engine.batch_size,
        max_concurrent_batches=concurrent_batches(engine),
        concurrency=engine.replicas,
        placement_group_config=placement,
        runtime_env=runtime_env,
        chat_template_stage=light,
        # vLLM tokenizes and detokenizes inside the engine; the separate
        # stages would only add actors competing for the same cores.
        tokenize_stage=False,
        detokenize_stage=False,
        log_engine_metrics=False,
    )


def to_request(
    row: dict[str, Any],
    temperature: float,
    top_p: float,
    arm_sampling: Optional[Mapping[str, Mapping[str, float]]] = None,
) -> dict[str, Any]:
    row["messages"] = json.loads(row[C.MESSAGES])  # the string stays: a repair builds on it
    row["sampling_params"] = {
        "max_tokens": int(row[C.MAX_TOKENS]),
        "temperature": temperature,
        "top_p": top_p,
    }
    if arm_sampling and row.get(C.ARM) in arm_sampling:  # an experiment arm's own sampling
        row["sampling_params"].update(arm_sampling[row[C.ARM]])
    stop = row.get(C.STOP)  # stays on the row: a repair uses the same stops
    if stop is not None and len(stop):
        row["sampling_params"]["stop"] = [str(s) for s in stop]
    return row


def from_response(row: dict[str, Any], passthrough: Sequence[str]) -> dict[str, Any]:
    out = {name: row[name] for name in passthrough if name in row}
    n_out = int(row.get("num_generated_tokens") or 0)
    out[C.TEXT] = row.get("generated_text") or ""
    out[C.NUM_INPUT_TOKENS] = int(row.get("num_input_tokens") or 0)
    out[C.NUM_OUTPUT_TOKENS] = n_out
    metrics = row.get("metrics")
    cached = metrics.get(CACHED_TOKENS_METRIC) if isinstance(metrics, dict) else None
    out[C.NUM_CACHED_TOKENS] = int(cached) if cached is not None else None
    # Ray's processor drops vLLM's finish_reason; a reply that used its whole
    # token budget is what vLLM calls "length".
    out[C.FINISH_REASON] = "length" if n_out >= int(row[C.MAX_TOKENS]) else "stop"
    return out


def build_generate_stage(
    engine: EngineConfig,
    model_source: str,
    device: str,
    passthrough: Sequence[str],
    cpu_stage_num_cpus: float,
    arm_sampling: Optional[Mapping[str, Mapping[str, float]]] = None,
):
    """A callable ``Dataset -> Dataset`` that generates one copy per row
    (``arm_sampling``: per experiment arm, temperature / top_p over the engine's)."""
    config = build_processor_config(engine, model_source, device, cpu_stage_num_cpus)
    logger.info(
        "Engine: %s on %s, %d replica(s), engine_kwargs=%s",
        model_source,
        device,
        engine.replicas,
        config.engine_kwargs,
    )
    return build_engine_processor(
        config,
        device,
        preprocess=functools.partial(
            to_request,
            temperature=engine.temperature,
            top_p=engine.top_p,
            arm_sampling=dict(arm_sampling or {}),
        ),
        postprocess=functools.partial(from_response, passthrough=tuple(passthrough) + (C.MAX_TOKENS,)),
        cpu_stage_num_cpus=cpu_stage_num_cpus,
    )


def build_engine_processor(config, device: str, preprocess, postprocess, cpu_stage_num_cpus: float):
    """Ray's LLM processor for ``config``, as every engine pass of the job
    builds it: light CPU stages around the engine, Ray LLM's idle telemetry
    actor stopped (factory/ray_session.py), and ``shares_cores_with_ray`` set
    for a CPU engine, whose passes let Ray Data's executor check on tasks
    less often (``engine_paced_scheduling``)."""
    from ray.data.llm import build_processor

    light = {"num_cpus": cpu_stage_num_cpus}
    processor = build_processor(
        config,
        preprocess=preprocess,
        postprocess=postprocess,
        preprocess_map_kwargs=light,
        postprocess_map_kwargs=light,
    )
    release_llm_telemetry_actor()  # idle from here on
    processor.shares_cores_with_ray = device == "cpu"
    return processor


# --- Prefix-cache figures -------------------------------------------------------
# vLLM reports per request how many prompt tokens its prefix cache served
# (RequestOutput.num_cached_tokens), but Ray's engine stage keeps only a few
# fields of each output. This vLLM plugin (registered in pyproject.toml under
# vllm.general_plugins, so vLLM loads it in the engine's own process) adds
# the figure to the output's ``metrics``, which the stage passes through.
# Without the plugin (project not installed on a node) the column is null.
CACHED_TOKENS_METRIC = "num_cached_tokens"
_patched = False


def expose_cached_tokens() -> None:
    """vLLM general plugin: keep ``num_cached_tokens`` on Ray's output rows."""
    global _patched
    if _patched:
        return
    from factory import internals

    output_class = internals.ray_llm_output_class()
    if output_class is None:  # no Ray Data LLM here, or it moved: the column stays null
        return
    original = output_class.from_vllm_engine_output

    def from_vllm_engine_output(output: Any):
        data = original(output)
        cached = getattr(output, "num_cached_tokens", None)
        if cached is not None:
            data.metrics = {**(data.metrics or {}), CACHED_TOKENS_METRIC: int(cached)}
        return data

    output_class.from_vllm_engine_output = staticmethod(from_vllm_engine_output)
    _patched = True
