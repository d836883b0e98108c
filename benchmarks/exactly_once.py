"""The driver's exactly-once check: footers' fingerprints against every row id read.

    .venv/bin/python benchmarks/exactly_once.py --rows 1000000 --rows-per-file 50000 --runs 5

Writes ``--rows`` copy rows (a row id and a 60-character text, as the copies
carry) into files of ``--rows-per-file`` with their fingerprint footers, then
times, alternating, the check as it was (every file's row ids read, then a
distinct count) and as it is (``factory.pipeline.finish.check_exactly_once``: one
footer per file). Prints the medians, their ratio, the driver's cost per file
and how many bytes of row ids the old check held.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory import columns as C  # noqa: E402
from factory.fingerprint import Fingerprint  # noqa: E402
from factory.footer import stamp  # noqa: E402
from factory.pipeline.finish import check_exactly_once  # noqa: E402
from factory.publish import Attempt  # noqa: E402
from factory.storage import list_files, read_parquet, resolve, write_parquet  # noqa: E402


def write_copies(folder: Path, rows: int, per_file: int) -> tuple[Attempt, Fingerprint]:
    attempt = Attempt(resolve(str(folder)), 1)
    owed = Fingerprint()
    for start in range(0, rows, per_file):
        ids = [
            hashlib.sha256(str(i).encode()).hexdigest()[:20]
            for i in range(start, min(rows, start + per_file))
        ]
        table = pa.table({C.ROW_ID: pa.array(ids), C.TEXT: pa.array(["x" * 60] * len(ids))})
        write_parquet(attempt.copies.join(f"part-{start // per_file:05d}.parquet"), stamp(table, {}))
        owed += Fingerprint.of(ids)
    return attempt, owed


def read_every_id(attempt: Attempt, expected: int) -> None:
    """The check before fingerprints (2e2ca08): every row id on the driver."""
    chunks = []
    for info in list_files(attempt.copies, ".parquet"):
        chunks.extend(read_parquet(attempt.copies.join(info.base_name), columns=[C.ROW_ID])[C.ROW_ID].chunks)
    ids = pa.chunked_array(chunks, pa.string())
    assert pc.count_distinct(ids).as_py() == len(ids) == expected


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="exactly-once-") as tmp:
        attempt, owed = write_copies(Path(tmp), args.rows, args.rows_per_file)
        files = len(list_files(attempt.copies, ".parquet"))
        old, new = [], []
        for _ in range(args.runs):
            old.append(timed(lambda: read_every_id(attempt, owed.rows)))
            new.append(timed(lambda: check_exactly_once(attempt, owed)))
        o, n = statistics.median(old), statistics.median(new)
        print(f"{args.rows:,} rows in {files} files, {args.runs} alternating runs (median)")
        print(f"  every row id read:  {o * 1000:8.1f} ms  ({o / files * 1000:.2f} ms per file)")
        print(f"  footers only:       {n * 1000:8.1f} ms  ({n / files * 1000:.2f} ms per file)")
        print(f"  ratio (footers / ids): {n / o:.3f}")
        ids_bytes = sum(
            read_parquet(attempt.copies.join(i.base_name), columns=[C.ROW_ID])[C.ROW_ID].nbytes
            for i in list_files(attempt.copies, ".parquet")
        )
        print(
            f"  what the old check held: {ids_bytes / 2**20:.1f} MiB of row ids; the new one holds one "
            f"fingerprint (three integers) and a footer at a time"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--rows-per-file", type=int, default=50_000)
    p.add_argument("--runs", type=int, default=5)
    main(p.parse_args())
