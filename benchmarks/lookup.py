"""Looking a block's ids up in a broadcast table: ``pc.index_in`` (hashes the
whole table on every call) against ``factory.lookup.KeyIndex`` (hashed once
per actor), per 2,048-row block, alternating, median of the runs.

    .venv/bin/python benchmarks/lookup.py --users 100000 1000000 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from factory.lookup import KeyIndex  # noqa: E402

BLOCK_ROWS = 2048


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=10, help="blocks looked up per run")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| users | index_in ms/block | KeyIndex ms/block | ratio | KeyIndex build ms (once per actor) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in args.users:
        keys = pa.array([f"U{i:09d}" for i in range(n)])
        blocks = [pa.array([f"U{i:09d}" for i in rng.integers(0, n, BLOCK_ROWS)]) for _ in range(args.blocks)]
        t = time.perf_counter()
        index = KeyIndex(keys)
        build = (time.perf_counter() - t) * 1000
        old, new = [], []
        for _ in range(args.runs):  # alternating, so drift hits both alike
            t = time.perf_counter()
            for b in blocks:
                pc.index_in(b, value_set=keys)
            old.append((time.perf_counter() - t) * 1000 / len(blocks))
            t = time.perf_counter()
            for b in blocks:
                index.positions(b)
            new.append((time.perf_counter() - t) * 1000 / len(blocks))
        o, k = statistics.median(old), statistics.median(new)
        print(f"| {n:,} | {o:.1f} | {k:.2f} | {k / o:.3f} | {build:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
