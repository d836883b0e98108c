"""What the job must know about the cluster it runs on, asked once Ray is up.

On one machine every path is every worker's path. On a cluster of many nodes
it is not: a worker writing a local ``--output`` writes to its own disk while
the driver reads its own, and an engine actor handed the driver's model
folder finds nothing. So, with more than one node:

- local pairs, output and facts paths are refused (exit 2) unless the user
  says they are on a filesystem every node mounts (``--shared-filesystem``);
- the bundled model is converted on every node that may host an engine, into
  the same path as the driver's, and a local ``--model`` folder must be there
  on each of them (one small task per node, pinned to it);
- the CPU stages' actor pools grow with the cluster's CPUs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger(__name__)

# CPUs of the cluster per actor of one CPU stage (join, check, gate, reuse), at
# most: a pool grows when its queue does, so this is a ceiling, not a cost.
CPUS_PER_STAGE_ACTOR = 8
MIN_STAGE_ACTORS = 2


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def engine_nodes(device: str) -> list[dict[str, Any]]:
    """The alive nodes an engine replica can be placed on: with a GPU for a GPU
    engine, with a CPU for the CPU engine (a head started with no CPUs hosts none)."""
    key = "GPU" if device == "gpu" else "CPU"
    return [n for n in alive_nodes() if n.get("Resources", {}).get(key, 0) > 0]


def check_shared_storage(paths: dict[str, Optional[str]], shared_filesystem: bool) -> None:
    """Refuse local paths that Ray workers read or write when the cluster has
    more than one node (``paths``: flag -> value)."""
    from factory.errors import UsageError

    local = {flag: uri for flag, uri in paths.items() if uri and not uri.startswith("s3://")}
    if not local or shared_filesystem:
        return
    nodes = alive_nodes()
    if len(nodes) <= 1:
        return
    flags = ", ".join(f"{flag} {uri}" for flag, uri in local.items())
    raise UsageError(
        f"{flags}: a local path, and this Ray cluster has {len(nodes)} nodes: "
        "workers on the other nodes would read and write their own disks",
        "give a shared store (s3://bucket/prefix), or pass --shared-filesystem if the path is on a "
        "filesystem every node mounts (NFS, EFS, Lustre)",
    )


def stage_actors(configured: Optional[int]) -> int:
    """The most actors one CPU stage may use: ``configured``, else one per
    ``CPUS_PER_STAGE_ACTOR`` CPUs of the cluster (at least two)."""
    if configured is not None:
        return configured
    import ray

    cpus = ray.cluster_resources().get("CPU", 0) if ray.is_initialized() else 0
    return max(MIN_STAGE_ACTORS, int(cpus // CPUS_PER_STAGE_ACTOR))


def _on_node(node_id: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def _prepare_model_here(path: str, bundled: bool) -> dict[str, Any]:
    """On one node: the bundled model converted at ``path``, or the user's folder found there."""
    import socket

    import ray

    from factory import model

    here = Path(path)
    already = (here / "config.json").is_file()
    if bundled:
        model.ensure_bundled_model(here)
    return {
        "node": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "present": (here / "config.json").is_file(),
        "converted": bundled and not already,
    }


def place_model(model_source: str, device: str, bundled: bool) -> list[dict[str, Any]]:
    """Make sure every engine node has the model at ``model_source`` (a local
    path; hub ids and s3:// folders are fetched by the engine itself).
    Returns one report per node; raises UsageError naming a node that lacks it."""
    import ray

    from factory.errors import UsageError

    if model_source.startswith("s3://") or not Path(model_source).is_absolute():
        return []
    nodes = engine_nodes(device)
    if len(alive_nodes()) <= 1 or not nodes:
        return []
    task = ray.remote(num_cpus=0)(_prepare_model_here)
    reports = ray.get(
        [task.options(scheduling_strategy=_on_node(n["NodeID"])).remote(model_source, bundled) for n in nodes]
    )
    missing = [r["host"] for r in reports if not r["present"]]
    if missing:
        raise UsageError(
            f"--model {model_source}: not on node(s) {', '.join(missing)} of the cluster",
            "put the folder at the same path on every node (or on a shared filesystem), or give "
            "s3://bucket/prefix, which every engine node downloads",
        )
    converted = sum(r["converted"] for r in reports)
    logger.info(
        "Model at %s on %d engine node(s)%s",
        model_source,
        len(reports),
        f" (converted the bundled model on {converted})" if converted else "",
    )
    return reports
