"""Synthetic nights: does the bandit find the better arm, how fast, at what cost?

A fixed population of users gets one message a night. Each night the real
machinery runs: ``bandit.allocate`` over the feedback so far, the layout
rebalanced from the previous night's, every user assigned by the real hash
(``assign.Assigner``); each user in an arm then clicks with the arm's true
CTR (holdout users get nothing), and the night's counts join the feedback.

Regret is expected clicks lost against sending every non-holdout user the
best arm every night: sum over nights and arms of users * (best CTR - CTR).
benchmarks/bandit_simulation.py runs it from the command line; the
convergence test (tests/cpu/test_bandit.py) holds it to the nights stated in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from factory.experiments.assign import Assigner
from factory.experiments.bandit import ArmStats, allocate
from factory.experiments.config import HOLDOUT, ArmConfig, ExperimentConfig

START = dt.date(2026, 12, 1)


@dataclass
class Night:
    run_date: dt.date
    shares: dict[str, float]  # planned (the allocation's)
    users: dict[str, int]  # realised by the hash, holdout included
    clicks: dict[str, int]
    regret: float


@dataclass
class SimulationResult:
    ctrs: dict[str, float]
    best: str
    nights: list[Night] = field(default_factory=list)

    def best_share(self) -> list[float]:
        """Per night, the best arm's share of the non-holdout users as assigned."""
        out = []
        for n in self.nights:
            served = sum(v for a, v in n.users.items() if a != HOLDOUT)
            out.append(n.users.get(self.best, 0) / served if served else 0.0)
        return out

    def nights_to(self, share: float) -> Optional[int]:
        """The first night (1-based) from which the best arm gets at least ``share`` every night."""
        shares = self.best_share()
        for i in range(len(shares)):
            if all(s >= share for s in shares[i:]):
                return i + 1
        return None

    @property
    def regret(self) -> float:
        return sum(n.regret for n in self.nights)

    @property
    def best_possible_clicks(self) -> float:
        return sum(
            sum(v for a, v in n.users.items() if a != HOLDOUT) * self.ctrs[self.best] for n in self.nights
        )


def experiment_for(ctrs: dict[str, float], holdout: float, floor: float) -> ExperimentConfig:
    arms = [ArmConfig(name=a, brand_voice=f"voice {a}") for a in ctrs]
    return ExperimentConfig(experiment_id="simulation", holdout=holdout, floor=floor, arms=arms)


def simulate(
    ctrs: dict[str, float], nights: int, users: int, holdout: float = 0.05, floor: float = 0.05, seed: int = 0
) -> SimulationResult:
    experiment = experiment_for(ctrs, holdout, floor)
    best = max(ctrs, key=ctrs.get)
    rng = np.random.default_rng(seed)
    ids = [f"S{seed}-U{i:08d}" for i in range(users)]
    stats: dict[str, ArmStats] = {}
    previous = None
    result = SimulationResult(dict(ctrs), best)
    for night in range(nights):
        day = START + dt.timedelta(days=night)
        allocation = allocate(experiment, day, stats, previous)
        assigner = Assigner(experiment.experiment_id, holdout, allocation.layout)
        arms = [assigner.arm_of(u) for u in ids]
        served = {a: arms.count(a) for a in [*ctrs, HOLDOUT]}
        clicks = {a: int(rng.binomial(served[a], ctrs[a])) for a in ctrs}
        for a in ctrs:
            s = stats.get(a, ArmStats())
            stats[a] = ArmStats(s.impressions + served[a], s.clicks + clicks[a], s.conversions)
        regret = sum(served[a] * (ctrs[best] - ctrs[a]) for a in ctrs)
        result.nights.append(Night(day, allocation.shares, served, clicks, regret))
        previous = {**allocation.record(), "run_id": f"{day.isoformat()}_simulation"}
    return result
