"""What one staging task spends on the prompt keys' per-user signatures: over
the whole users table (as every bucket did before 2026-12-04) against over
the bucket's own users (now). Inputs: the synthetic ones ``cpu_side.py``
caches (run it once with ``--cache`` for the size you want).

    .venv/bin/python benchmarks/stage_signatures.py --inputs /tmp/cpucache/pairs-10000000-seed-11 --pairs 100000
"""  # noqa: E501 - a command to copy whole; the docstring is also --help's text

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from factory import columns as C  # noqa: E402
from factory import dedup  # noqa: E402
from factory.prompts import load_templates  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--inputs", type=Path, required=True, help="A cpu_side.py inputs folder (pairs/, users.parquet)."
    )
    parser.add_argument(
        "--pairs", type=int, default=100_000, help="Pairs in the bucket (the staging bucket's size)."
    )
    args = parser.parse_args(argv)
    users = pq.read_table(args.inputs / "users.parquet")
    pairs = pa.concat_tables(pq.read_table(f) for f in sorted((args.inputs / "pairs").glob("*.parquet"))[:1])
    pairs = pairs.slice(0, args.pairs)
    fields = {frozenset(t.fields) for t in load_templates().values()}
    started = time.perf_counter()
    mine = users.filter(pc.is_in(users[C.USER_ID], value_set=pc.unique(pairs[C.USER_ID])))
    filtering = time.perf_counter() - started
    print(
        f"bucket: {pairs.num_rows:,} pairs; users table: {users.num_rows:,}; "
        f"the bucket's users: {mine.num_rows:,} "
        f"(picked in {filtering * 1000:.0f} ms)"
    )
    for name, table in (("every user", users), ("the bucket's users", mine)):
        started = time.perf_counter()
        for f in fields:
            dedup.profile_signatures(table, f)
        print(
            f"signatures over {name}: {time.perf_counter() - started:.1f} s "
            f"({len(fields)} template field sets)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
