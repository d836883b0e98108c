"""Joining or starting Ray, the same way for every job.

Under ``ray job submit`` (or with ``RAY_ADDRESS`` set, or after ``ray start``
on this machine) ``ray.init`` joins that cluster and its own settings apply,
dashboard included. Otherwise the job starts a local Ray for itself, and that
one starts without Ray's dashboard unless asked: the dashboard is ten Python
processes, and on a 2-core node the engine got about 2 % less CPU beside them
(benchmarks/RESULTS.md, section 1). The job's own progress log and run report
say what a person on call needs.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def start_or_join(dashboard: bool = False) -> None:
    """``ray.init`` once per process. ``dashboard`` only matters for a local Ray
    this call starts: Ray ignores ``include_dashboard`` when joining a cluster."""
    import ray

    if ray.is_initialized():
        return
    context = ray.init(log_to_driver=True, include_dashboard=dashboard)
    if not context.dashboard_url:
        logger.info("Ray's dashboard is off. A local Ray the job starts has none unless asked (--ray-dashboard); "
                    "or start Ray first with `ray start --head` and the job joins it.")
