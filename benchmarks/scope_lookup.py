"""The run's scope on each block of pairs: ``pc.is_in`` per block against the
id set indexed once (``factory.pipeline.plan.InScope``).

    PYTHONPATH=. .venv/bin/python benchmarks/scope_lookup.py --excluded 1000000 --block 10000
    PYTHONPATH=. .venv/bin/python benchmarks/scope_lookup.py --smoke   # small, for CI

A run that writes some locales drops the pairs of every user of the others
(``--locales``), and ``--user-ids`` / ``--product-ids`` keep only theirs:
sets of up to millions of ids, checked against every block of pairs. The
baseline is what pass 1 did before InScope (commit 70216be): ``pc.is_in``,
which hashes its whole value set on every call. Both run here, in this
process (one core), alternating, ``--repeat`` times; medians. Both must keep
the same rows. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).parent))
from cpu_side import _git_commit, machine  # noqa: E402

from factory import columns as C  # noqa: E402
from factory.pipeline.plan import InScope  # noqa: E402


def is_in_per_block(batch: pa.Table, excluded: pa.Array) -> pa.Table:
    """The baseline: scope_filter's locale rule as it was."""
    hit = pc.is_in(batch[C.USER_ID], value_set=excluded)
    return batch.filter(pc.fill_null(pc.invert(hit), False))


def blocks(n_users: int, block: int, n_blocks: int, seed: int = 7) -> list[pa.Table]:
    rng = np.random.default_rng(seed)
    return [
        pa.table(
            {
                C.USER_ID: pa.array([f"U{u:09d}" for u in rng.integers(0, 2 * n_users, block)]),
                C.PRODUCT_ID: pa.array([f"P{p:06d}" for p in rng.integers(0, 10_000, block)]),
            }
        )
        for _ in range(n_blocks)
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--excluded", type=int, default=1_000_000, help="Ids in the excluded set.")
    parser.add_argument("--block", type=int, default=10_000, help="Pairs per block.")
    parser.add_argument("--blocks", type=int, default=20, help="Blocks per run.")
    parser.add_argument("--repeat", type=int, default=5, help="Runs of each, alternating; medians.")
    parser.add_argument("--smoke", action="store_true", help="10k ids, 3 blocks of 1,000, 1 run (CI).")
    args = parser.parse_args(argv)
    if args.smoke:
        args.excluded, args.block, args.blocks, args.repeat = 10_000, 1_000, 3, 1
    excluded = pa.array([f"U{u:09d}" for u in range(args.excluded)])
    InScope(excluded_users=excluded[:10])  # imports (pandas) outside the timings
    data = blocks(args.excluded, args.block, args.blocks)

    times: dict[str, list[float]] = {"is_in_per_block": [], "indexed_once": []}
    builds: list[float] = []
    kept: dict[str, int] = {}
    for _ in range(args.repeat):
        started = time.process_time()
        kept["is_in_per_block"] = sum(is_in_per_block(b, excluded).num_rows for b in data)
        times["is_in_per_block"].append(time.process_time() - started)
        started = time.process_time()
        stage = InScope(excluded_users=excluded)  # what each actor does once
        builds.append(time.process_time() - started)
        started = time.process_time()
        kept["indexed_once"] = sum(stage(b).num_rows for b in data)
        times["indexed_once"].append(time.process_time() - started)
    if kept["is_in_per_block"] != kept["indexed_once"]:
        raise SystemExit(f"the two keep different rows: {kept}")
    per_block = {k: 1000 * statistics.median(v) / args.blocks for k, v in times.items()}
    result = {
        "excluded_ids": args.excluded,
        "pairs_per_block": args.block,
        "blocks": args.blocks,
        "runs": args.repeat,
        "rows_kept": kept["indexed_once"],
        "cpu_ms_per_block": {k: round(v, 2) for k, v in per_block.items()},
        "index_build_cpu_ms": round(1000 * statistics.median(builds), 1),
        "ratio_indexed_to_is_in": round(per_block["indexed_once"] / per_block["is_in_per_block"], 3),
        # Blocks an actor must see before its index has paid for itself.
        "break_even_blocks": (
            round(
                1000 * statistics.median(builds) / (per_block["is_in_per_block"] - per_block["indexed_once"]),
                1,
            )
            if per_block["is_in_per_block"] > per_block["indexed_once"]
            else None  # the index never pays for itself at this size
        ),
        "commit": _git_commit(),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
