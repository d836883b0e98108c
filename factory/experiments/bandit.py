"""Each night's allocation: Thompson sampling over the feedback table.

For every arm the feedback so far gives a Beta posterior of its rate (the
experiment's metric: clicks or conversions per impression) from a uniform
prior: Beta(1 + successes, 1 + impressions - successes), summed over the
arm's channels, locales and template versions since the experiment began.
The night's share of an arm is the probability that it is the best arm
(Thompson sampling for a batch of users: probability matching), estimated
from ``DRAWS`` joint draws, then squeezed so every arm keeps ``floor``:

    share = floor + (1 - arms * floor) * P(arm is best)

The holdout is outside all this: it is a fixed share of users, always.

Deterministic: the draws are seeded from a hash of (experiment id, run
date, the per-arm counts used), so a rerun of a night, or a night rerun
after a crash, gives the same shares, and the same layout (assign.py). Two
feedback tables with the same counts give the same night; a table with one
more click gives another one. Before any impression the shares are the
declared ones (equal when none is). ``allocation: fixed`` always uses those.

``Allocation.record()`` is what goes into the run's manifest under
``experiment.allocation``: method, seed, draws, floor, the counts and
posteriors it used, where the feedback came from, P(best), the shares and
the layout, and the run the layout continued from.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.experiments.assign import ARM, EXPERIMENT_ID, UNITS, Layout, to_units
from factory.experiments.config import ExperimentConfig
from factory.experiments.table import CLICKS, CONVERSIONS, IMPRESSIONS

DRAWS = 20_000
METRIC_COLUMNS = {"click": CLICKS, "conversion": CONVERSIONS}


@dataclass(frozen=True)
class ArmStats:
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0

    def successes(self, metric: str) -> int:
        return self.clicks if metric == "click" else self.conversions


def arm_stats(feedback: Optional[pa.Table], campaign_id: str, experiment_id: str) -> dict[str, ArmStats]:
    """Per arm (holdout included), the experiment's counts summed over the
    feedback table's other keys. The table is an aggregate: small."""
    if feedback is None or feedback.num_rows == 0:
        return {}
    rows = feedback.filter(
        pc.and_(
            pc.equal(feedback[C.CAMPAIGN_ID], campaign_id), pc.equal(feedback[EXPERIMENT_ID], experiment_id)
        )
    )
    if rows.num_rows == 0:
        return {}
    sums = rows.group_by(ARM).aggregate([(IMPRESSIONS, "sum"), (CLICKS, "sum"), (CONVERSIONS, "sum")])
    return {
        arm: ArmStats(int(i), int(c), int(v))
        for arm, i, c, v in zip(
            sums[ARM].to_pylist(),
            sums[f"{IMPRESSIONS}_sum"].to_pylist(),
            sums[f"{CLICKS}_sum"].to_pylist(),
            sums[f"{CONVERSIONS}_sum"].to_pylist(),
        )
        if arm is not None
    }


def allocation_seed(experiment_id: str, run_date: dt.date, counts: Mapping[str, Mapping[str, int]]) -> int:
    text = json.dumps([experiment_id, run_date.isoformat(), counts], sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def p_best(posteriors: Mapping[str, tuple[float, float]], seed: int, draws: int = DRAWS) -> dict[str, float]:
    """P(each arm has the highest rate) under independent Beta posteriors, from ``draws`` joint draws."""
    rng = np.random.default_rng(seed)
    arms = list(posteriors)
    samples = np.stack([rng.beta(a, b, size=draws) for a, b in posteriors.values()])
    wins = np.bincount(samples.argmax(axis=0), minlength=len(arms))
    return {arm: float(w) / draws for arm, w in zip(arms, wins)}


@dataclass
class Allocation:
    experiment_id: str
    run_date: dt.date
    method: str  # "declared" (no feedback yet), "fixed" or "thompson"
    metric: str
    shares: dict[str, float]  # of the non-holdout users, exact millionths (the layout's)
    layout: Layout
    holdout: float
    floor: float
    seed: Optional[int] = None
    draws: Optional[int] = None
    p_best: dict[str, float] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    feedback: Optional[dict[str, Any]] = None  # where the counts came from
    continues: Optional[str] = None  # the run id whose layout this one rebalanced

    def record(self) -> dict[str, Any]:
        """The manifest's ``experiment.allocation``."""
        return {
            "experiment_id": self.experiment_id,
            "run_date": self.run_date.isoformat(),
            "method": self.method,
            "metric": self.metric,
            "holdout": self.holdout,
            "floor": self.floor,
            "seed": self.seed,
            "draws": self.draws,
            "inputs": self.inputs,
            "feedback": self.feedback,
            "p_best": self.p_best,
            "shares": self.shares,
            "layout": self.layout.to_json(),
            "continues": self.continues,
        }


def allocate(
    experiment: ExperimentConfig,
    run_date: dt.date,
    stats: Mapping[str, ArmStats],
    previous: Optional[Mapping[str, Any]] = None,
    feedback: Optional[dict[str, Any]] = None,
    draws: int = DRAWS,
) -> Allocation:
    """The night's allocation. ``stats``: per arm counts (``arm_stats``);
    ``previous``: the last published night's ``experiment.allocation`` record
    (its layout is rebalanced; ignored when it belongs to another experiment);
    ``feedback``: where the stats came from, for the record (uri, digest, as of)."""
    arms = experiment.arm_names
    metric = experiment.metric
    counts = {
        a: {
            "impressions": stats.get(a, ArmStats()).impressions,
            "successes": stats.get(a, ArmStats()).successes(metric),
        }
        for a in arms
    }
    inputs = {
        a: {**c, "alpha": 1 + c["successes"], "beta": 1 + c["impressions"] - c["successes"]}
        for a, c in counts.items()
    }
    seed, best = None, {}
    if experiment.allocation == "fixed":
        method, shares = "fixed", experiment.initial_shares()
    elif not any(c["impressions"] for c in counts.values()):
        method, shares = "declared", experiment.initial_shares()
    else:
        method, seed = "thompson", allocation_seed(experiment.experiment_id, run_date, counts)
        best = p_best({a: (i["alpha"], i["beta"]) for a, i in inputs.items()}, seed, draws)
        spread = 1 - len(arms) * experiment.floor
        shares = {a: experiment.floor + spread * best[a] for a in arms}
    same = previous and previous.get("experiment_id") == experiment.experiment_id and previous.get("layout")
    layout = Layout.from_json(previous["layout"]).rebalance(shares) if same else Layout.contiguous(shares)
    exact = {a: n / UNITS for a, n in to_units(shares).items()}
    return Allocation(
        experiment.experiment_id,
        run_date,
        method,
        metric,
        exact,
        layout,
        experiment.holdout,
        experiment.floor,
        seed,
        draws if seed is not None else None,
        best,
        inputs,
        feedback,
        previous.get("run_id") if same else None,
    )


def previous_allocation(manifest: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """A published run's allocation record with its run id: ``allocate``'s ``previous``."""
    record = ((manifest or {}).get("experiment") or {}).get("allocation")
    return {**record, "run_id": manifest.get("run_id")} if record else None
