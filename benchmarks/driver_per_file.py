"""What finishing a run costs the driver per output file, and what that projects to.

    .venv/bin/python benchmarks/driver_per_file.py --files 250 1000 4000 --runs 3

Writes ``--files`` copies files through the job's own writer
(``WriteParquetFiles`` with the copies sink's footer and the review queue
beside it), a few rows each, then times, alternating sizes, what the driver
does once the passes are done: the exactly-once check, settling the review
queue, adding up the summary's stats, and the manifest's file list
(``factory.pipeline``'s own functions). It also measures what the driver
holds per file while doing it (``tracemalloc``: Python objects, the footers'
entries included) and the manifest's bytes per file. The work is by files,
not rows (the rows per file do not enter it), so the per-file figures project
a run of any size: files = rows / --rows-per-file.

Local files: on S3 each footer is a ranged GET (16 at a time), so there the
listing and the round trips, not this CPU cost, set the pace.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory import columns as C  # noqa: E402
from factory import footer  # noqa: E402
from factory.fingerprint import Fingerprint  # noqa: E402
from factory.pipeline.finish import check_exactly_once, settle_review_queue  # noqa: E402
from factory.pipeline.plan import ROWS_PER_FILE  # noqa: E402
from factory.publish import Attempt  # noqa: E402
from factory.stages.finalize import OUTPUT_SCHEMA  # noqa: E402
from factory.stages.review import ReviewRows  # noqa: E402
from factory.stages.write import Sink, WriteParquetFiles  # noqa: E402
from factory.storage import resolve  # noqa: E402

PRODUCTS = pa.table(
    {
        C.PRODUCT_ID: ["P1", "P2"],
        "title": ["Lamp", "Kettle"],
        "price": [19.5, 30.0],
        "description": ["A lamp.", "A kettle."],
    }
)
STATUS_CYCLE = (C.ACCEPTED, C.ACCEPTED, C.REVIEW, C.REJECTED)
CHANNEL_CYCLE = ("push", "sms", "email_subject", "ad_headline", "product_blurb")


def _file_rows(k: int, rows: int) -> pa.Table:
    out = []
    for i in range(rows):
        status = STATUS_CYCLE[(k + i) % len(STATUS_CYCLE)]
        out.append(
            {
                C.ROW_ID: hashlib.sha256(f"{k}-{i}".encode()).hexdigest()[:20],
                C.RUN_ID: "2026-12-03_all",
                C.RUN_DATE: dt.date(2026, 12, 3),
                C.CAMPAIGN_ID: "c",
                C.USER_ID: f"U{k}-{i}",
                C.PRODUCT_ID: "P1" if i % 2 else "P2",
                C.CHANNEL: CHANNEL_CYCLE[(k + i) % len(CHANNEL_CYCLE)],
                C.LOCALE: "en-US",
                C.VARIANT: 0,
                C.TEXT: "x" * 60,
                C.STATUS: status,
                C.REASONS: [] if status == C.ACCEPTED else [f"reason_{(k + i) % 7}"],
                C.REASON_DETAILS: [] if status == C.ACCEPTED else ["why"],
                C.DRAFT: 1 + (i % 2),
                C.FIRST_DRAFT_REASONS: ["truncated"] if i % 2 else None,
                C.COPY_LENGTH: 60,
                C.COPY_LENGTH_LIMIT: 90,
                C.TEMPLATE_VERSION: "v1",
                C.MODEL: "m",
                C.NUM_INPUT_TOKENS: 80,
                C.NUM_OUTPUT_TOKENS: 20,
                C.NUM_CACHED_TOKENS: 40,
                C.FINISH_REASON: "stop",
            }
        )
    return pa.Table.from_pylist(out, schema=OUTPUT_SCHEMA)


def write_attempt(folder: Path, files: int, rows: int) -> tuple[Attempt, Fingerprint]:
    attempt = Attempt(resolve(str(folder)), 1)
    copies = Sink(
        attempt.copies, None, footer.copies_entries, beside=Sink(attempt.review, ReviewRows(PRODUCTS))
    )
    write, owed = WriteParquetFiles({"copies": copies}), Fingerprint()
    for k in range(files):
        table = _file_rows(k, rows)
        write(table)
        owed += Fingerprint.of(table[C.ROW_ID])
    return attempt, owed


def finish(attempt: Attempt, owed: Fingerprint) -> int:
    """The driver's end of a run, as ``pipeline.run`` does it; returns the manifest's file-list bytes."""
    files = check_exactly_once(attempt, owed)
    review = settle_review_queue(SimpleNamespace(products=PRODUCTS), attempt, files)
    stats = footer.copy_stats(files)
    summary = {"quality": stats.quality.summary(), "work": stats.work.figures()}
    listing = {
        "copies": [{"path": f"copies/{f.file}", "rows": f.rows, "bytes": f.size} for f in files],
        "review": review["files"],
    }
    assert summary["quality"]["rows"] == owed.rows
    return len(json.dumps(listing))


def measure(attempt: Attempt, owed: Fingerprint) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    finish(attempt, owed)
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    manifest_bytes = finish(attempt, owed)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak, manifest_bytes


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="driver-per-file-") as tmp:
        attempts = {n: write_attempt(Path(tmp) / f"files-{n}", n, args.rows) for n in args.files}
        timings: dict[int, list[float]] = {n: [] for n in args.files}
        held: dict[int, list[int]] = {n: [] for n in args.files}
        manifest: dict[int, int] = {}
        for _ in range(args.runs):
            for n in args.files:  # alternating sizes, so drift hits all alike
                seconds, peak, manifest[n] = measure(*attempts[n])
                timings[n].append(seconds)
                held[n].append(peak)
    print(f"driver's finish per copies file ({args.rows} rows each; median of {args.runs} runs, local disk)")
    print(
        f"{'files':>7} {'total ms':>10} {'ms/file':>8} {'held MiB':>9} {'KB/file':>8} "
        f"{'manifest KB/file':>17}"
    )
    per_file_ms, per_file_bytes = [], []
    for n in args.files:
        t, h = statistics.median(timings[n]), statistics.median(held[n])
        per_file_ms.append(t / n * 1000)
        per_file_bytes.append(h / n)
        print(
            f"{n:>7} {t * 1000:>10.1f} {t / n * 1000:>8.2f} {h / 2**20:>9.1f} {h / n / 1024:>8.2f} "
            f"{manifest[n] / n / 1024:>17.2f}"
        )
    ms, per_file = per_file_ms[-1], per_file_bytes[-1]  # the largest size: fixed costs amortised
    print(f"projection at {ROWS_PER_FILE:,} rows per copies file (the job's default), from the largest size:")
    for rows in (100_000_000, 500_000_000):
        files = rows // ROWS_PER_FILE
        print(
            f"  {rows // 1_000_000}M rows: {files:,} files -> {files * ms / 1000:.1f} s, "
            f"{files * per_file / 2**20:.0f} MiB held, manifest "
            f"{files * manifest[args.files[-1]] / args.files[-1] / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, nargs="+", default=[250, 1000, 4000])
    p.add_argument(
        "--rows", type=int, default=8, help="rows per file (the driver's cost does not depend on it)"
    )
    p.add_argument("--runs", type=int, default=3)
    main(p.parse_args())
