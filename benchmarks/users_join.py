"""Users onto pairs two ways: today's broadcast lookup against Ray Data's hash join.

    PYTHONPATH=. .venv/bin/python benchmarks/users_join.py --pairs 1000000 --runs 3
    PYTHONPATH=. .venv/bin/python benchmarks/users_join.py --smoke

The open part of the scale-out issue is whether users should reach the rows
through ``Dataset.join`` instead of a table every node and actor holds. This
measures the two on the same input, cpu_side.py's cached synthetic pairs and
users (about N/10 users with the sample's profile columns), on a local Ray:

- broadcast: the users table in the object store once, each of the stage's
  actors (two, as the run's stage pools start) indexes it once
  (``factory.lookup.KeyIndex``) and takes each block's profile columns;
- hash join: ``pairs.join(users, "left_outer", on=user_id)``, both sides
  hash-shuffled into ``--partitions`` partitions (one per CPU by default,
  as ``factory.pipeline.plan.join_partitions`` sizes the run's joins).

Each contender runs alone, alternating, ``--runs`` times; per run: wall seconds
from the first read to the last row counted, and the peak RSS summed over the
Ray workers (with the object-store pages they touched; "private" without
shared pages). The driver holds the users table here for both contenders, as
setup. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo's packages
from benchmarks.cpu_side import MemorySampler, default_cache, machine, synthetic_inputs
from factory import columns as C
from factory.inputs import USERS, read_lookup_table
from factory.lookup import KeyIndex
from factory.ray_session import deref
from factory.storage import resolve


class AttachUsers:
    """The broadcast contender: each block's users' profile columns by position."""

    def __init__(self, users):
        users = deref(users)
        self._index = KeyIndex(users[C.USER_ID])
        self._profiles = users.select([c for c in C.USER_COLUMNS if c in users.column_names])

    def __call__(self, batch: pa.Table) -> pa.Table:
        found = self._profiles.take(self._index.positions(batch[C.USER_ID]))
        for name in found.column_names:
            batch = batch.append_column(name, found[name])
        return batch


def _pairs(ray, files: list[str]):
    return ray.data.read_parquet(files).select_columns([C.USER_ID, C.PRODUCT_ID])


def broadcast(ray, files: list[str], users_ref):
    return _pairs(ray, files).map_batches(
        AttachUsers,
        fn_constructor_kwargs={"users": users_ref},
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.25,
    )


def hash_join(ray, files: list[str], users: pa.Table, partitions: int):
    profile = [c for c in C.USER_COLUMNS if c in users.column_names]
    right = ray.data.from_arrow(users.select([C.USER_ID, *profile]))
    return _pairs(ray, files).join(right, join_type="left_outer", num_partitions=partitions, on=(C.USER_ID,))


def _rows(ds) -> list[tuple]:
    """Every joined row, in one order, to compare the two contenders' output."""
    rows = [tuple(sorted(r.items())) for r in ds.take_all()]
    return sorted(rows, key=repr)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each contender, alternating; medians")
    parser.add_argument("--partitions", type=int, default=2, help="hash partitions of the join")
    parser.add_argument("--cache", default=str(default_cache()))
    parser.add_argument(
        "--smoke", action="store_true", help="3,000 pairs, one run, and both give the same rows?"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs, args.runs = 3_000, 1

    import ray

    paths = synthetic_inputs(args.pairs, Path(args.cache))
    files = sorted(str(p) for p in Path(paths["pairs"]).glob("*.parquet"))
    users, _ = read_lookup_table(resolve(paths["users"]), USERS, C.USER_ID)
    # A local Ray of our own, as cpu_side.py starts it: "local" joins no cluster someone else started.
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    users_ref = ray.put(users)
    results: dict[str, list[dict]] = {"broadcast": [], "hash_join": []}
    try:
        for _ in range(args.runs):
            for name in results:
                sampler = MemorySampler()
                sampler.start()
                began = time.perf_counter()
                rows = (
                    broadcast(ray, files, users_ref)
                    if name == "broadcast"
                    else hash_join(ray, files, users, args.partitions)
                ).count()
                seconds = time.perf_counter() - began
                sampler.stop()
                assert rows == args.pairs, (name, rows)
                peaks = sampler.peaks_mib()
                results[name].append(
                    {
                        "seconds": round(seconds, 2),
                        "workers_peak_rss_sum_mib": peaks["workers_peak_rss_sum"],
                        "workers_peak_private_sum_mib": peaks["workers_peak_private_sum"],
                    }
                )
        if args.smoke:  # the two give the same rows
            joined = hash_join(ray, files, users, args.partitions)
            same = _rows(broadcast(ray, files, users_ref)) == _rows(joined)
    finally:
        ray.shutdown()

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    out = {
        "benchmark": "users_join",
        "pairs": args.pairs,
        "users": users.num_rows,
        "partitions": args.partitions,
        "machine": machine(),
        "runs": results,
        "median": {name: {k: median(name, k) for k in results[name][0]} for name in results},
    }
    out["hash_join_vs_broadcast"] = {
        k: round(out["median"]["hash_join"][k] / out["median"]["broadcast"][k], 2)
        for k in out["median"]["broadcast"]
        if out["median"]["broadcast"][k]
    }
    if args.smoke:
        out["same_rows"] = same
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
