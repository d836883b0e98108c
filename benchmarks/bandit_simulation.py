"""How fast the nightly bandit finds the arm that truly has +20 % CTR, and its regret.

    .venv/bin/python benchmarks/bandit_simulation.py --users 2000 5000 20000 --nights 30 --seeds 20

Synthetic delivery: a fixed population gets one message a night, every arm
at a base CTR except one at base x (1 + lift). Each night runs the real
allocation (``factory.experiments.bandit.allocate``: Thompson sampling over
the feedback so far, floor for exploration, fixed holdout) and the real
per-user assignment (``assign.Assigner`` on the rebalanced layout); clicks
are drawn from the true CTRs (``factory.experiments.simulate``).

Per traffic size, over ``--seeds`` seeds (each: other user ids, other clicks):
the night from which the best arm gets >= 80 % of the non-holdout users on
every later night (median, 90th percentile, worst), the regret (expected
clicks lost against sending every non-holdout user the best arm every
night) as clicks and as a share of the best possible, and the same regret
for a plain A/B test with fixed equal shares for comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory.experiments.simulate import simulate  # noqa: E402


def arms(count: int, base: float, lift: float) -> dict[str, float]:
    ctrs = {f"arm_{i}": base for i in range(count - 1)}
    ctrs[f"arm_{count - 1}"] = base * (1 + lift)  # the better arm is declared last: no head start
    return ctrs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_size(args: argparse.Namespace, users: int) -> dict:
    ctrs = arms(args.arms, args.base_ctr, args.lift)
    reached, regrets, shares, last_share = [], [], [], []
    ab_regret = None
    for seed in range(args.seed, args.seed + args.seeds):
        result = simulate(ctrs, args.nights, users, args.holdout, args.floor, seed)
        night = result.nights_to(args.target)
        reached.append(night if night is not None else float("inf"))
        regrets.append(result.regret)
        shares.append(result.regret / result.best_possible_clicks)
        last_share.append(result.best_share()[-1])
        served = sum(sum(v for a, v in n.users.items() if a != "holdout") for n in result.nights)
        best = max(ctrs.values())
        ab_regret = served * sum(best - c for c in ctrs.values()) / len(ctrs)  # equal shares, every night
    finite = [r for r in reached if r != float("inf")]
    return {
        "users_per_night": users,
        "seeds": args.seeds,
        "nights_to_target": {
            "median": statistics.median(reached),
            "p90": percentile(reached, 0.9),
            "worst": max(reached),
            "never": len(reached) - len(finite),
        },
        "regret_clicks": {"mean": round(statistics.mean(regrets), 1), "worst": round(max(regrets), 1)},
        "regret_share_of_best": round(statistics.mean(shares), 4),
        "ab_test_regret_clicks": round(ab_regret, 1),
        "best_arm_share_last_night": {
            "mean": round(statistics.mean(last_share), 3),
            "min": round(min(last_share), 3),
        },
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--users", type=int, nargs="+", default=[2000, 5000, 20000], help="Users per night (sizes)"
    )
    p.add_argument("--nights", type=int, default=30)
    p.add_argument("--arms", type=int, default=3, help="Arms; one of them is the better one")
    p.add_argument("--base-ctr", type=float, default=0.02)
    p.add_argument("--lift", type=float, default=0.20, help="The better arm's true CTR lift (0.2 = +20 %%)")
    p.add_argument("--holdout", type=float, default=0.05)
    p.add_argument("--floor", type=float, default=0.05)
    p.add_argument("--target", type=float, default=0.8, help="The best arm's share to reach and keep")
    p.add_argument("--seed", type=int, default=0, help="First seed")
    p.add_argument("--seeds", type=int, default=20, help="Seeds per size")
    p.add_argument("--json", help="Also write the figures to this file")
    args = p.parse_args(argv)
    started = time.time()
    figures = {
        "command": ".venv/bin/python benchmarks/bandit_simulation.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "users")},
        "sizes": [run_size(args, users) for users in args.users],
    }
    figures["seconds"] = round(time.time() - started, 1)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return figures


if __name__ == "__main__":
    main()
