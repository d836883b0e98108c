"""The review queue is a sink beside the copies: each copies file's review rows,
under its name, with the product facts; the driver only settles what a crash
or an older release left."""

import datetime as dt
import hashlib
import random
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa

from factory import columns as C
from factory import footer
from factory.pipeline.finish import settle_review_queue as _settle_review_queue
from factory.publish import Attempt
from factory.stages.finalize import OUTPUT_SCHEMA
from factory.stages.review import REVIEW_DESCRIPTION_CHARS, ReviewRows
from factory.stages.write import Sink, WriteParquetFiles
from factory.storage import read_parquet, resolve, write_parquet

PRODUCTS = pa.table(
    {
        C.PRODUCT_ID: ["P1", "P2", "P3"],
        "title": ["Lamp", "Kettle", "Scarf"],
        "brand": ["Lumo", "Boil", "Knit"],
        "price": [19.5, 30.0, 12.0],
        "description": ["x" * 5_000, "A kettle.", "Warm."],
    }
)


def _rows(n: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        status = rng.choice(C.STATUSES)
        rows.append(
            {
                C.ROW_ID: hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:20],
                C.RUN_ID: "2026-12-03_all",
                C.RUN_DATE: dt.date(2026, 12, 3),
                C.CAMPAIGN_ID: "c",
                C.USER_ID: f"U{i:03d}",
                C.PRODUCT_ID: rng.choice(["P1", "P2", "P3"]),
                C.CHANNEL: rng.choice(["push", "sms"]),
                C.LOCALE: "en-US",
                C.VARIANT: 0,
                C.TEXT: f"copy {seed}-{i}",
                C.STATUS: status,
                C.REASONS: [] if status == C.ACCEPTED else ["risky_claim"],
                C.REASON_DETAILS: [] if status == C.ACCEPTED else ["risky_claim: free"],
                C.DRAFT: 1,
                C.COPY_LENGTH: 10,
                C.COPY_LENGTH_LIMIT: 60,
                C.TEMPLATE_VERSION: "v1",
                C.MODEL: "m",
                C.NUM_INPUT_TOKENS: 50,
                C.NUM_OUTPUT_TOKENS: 8,
                C.FINISH_REASON: "stop",
            }
        )
    return pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)


def _write(tmp_path, parts) -> Attempt:
    attempt = Attempt(resolve(str(tmp_path / "attempt")), 1)
    copies = Sink(
        attempt.copies, None, footer.copies_entries, beside=Sink(attempt.review, ReviewRows(PRODUCTS))
    )
    write = WriteParquetFiles({"copies": copies})
    for part in parts:
        write(part)
    return attempt


def _queue(attempt: Attempt) -> dict[str, pa.Table]:
    return {f.file: read_parquet(f.loc) for f in footer.read_footers(attempt.review)}


def _settle(attempt: Attempt) -> dict:
    return _settle_review_queue(
        SimpleNamespace(products=PRODUCTS), attempt, footer.read_footers(attempt.copies)
    )


def test_each_copies_files_review_rows_sit_beside_it_with_the_product_facts(tmp_path):
    parts = [_rows(n, seed) for seed, n in enumerate((40, 25, 3))]
    attempt = _write(tmp_path, parts)
    queue = _queue(attempt)
    copies = {f.file: read_parquet(f.loc) for f in footer.read_footers(attempt.copies)}
    for name, table in copies.items():
        review = [r for r in table.to_pylist() if r[C.STATUS] == C.REVIEW]
        assert (name in queue) == bool(review)
        if review:
            got = queue[name].to_pylist()
            assert sorted(r[C.ROW_ID] for r in got) == sorted(r[C.ROW_ID] for r in review)
            titles = dict(zip(PRODUCTS[C.PRODUCT_ID].to_pylist(), PRODUCTS["title"].to_pylist()))
            assert all(r["title"] == titles[r[C.PRODUCT_ID]] and r[C.TEXT] and r[C.REASONS] for r in got)
            assert all(len(r["description"]) <= REVIEW_DESCRIPTION_CHARS for r in got)
            assert [r[C.CHANNEL] for r in got] == sorted(r[C.CHANNEL] for r in got)
    settled = _settle(attempt)
    assert _queue(attempt).keys() == queue.keys()  # nothing to settle
    assert settled["rows"] == sum(t.num_rows for t in queue.values()) > 0
    assert sorted(f["path"] for f in settled["files"]) == sorted(f"review/{name}" for name in queue)


def test_settling_drops_orphans_and_stale_files_and_rebuilds_missing_ones(tmp_path):
    parts = [_rows(n, seed) for seed, n in enumerate((40, 30), start=7)]
    attempt = _write(tmp_path, parts)
    before = _queue(attempt)
    first, second = sorted(before)
    # A process killed between a review file and its copies file left an orphan.
    write_parquet(attempt.review.join("part-orphan.parquet"), before[first])
    # An older release wrote one review.parquet for the whole run.
    write_parquet(attempt.review.join("review.parquet"), pa.concat_tables(list(before.values())))
    # A review file that holds other rows than its copies file's (a rewritten file).
    write_parquet(attempt.review.join(first), before[first].slice(0, 1))
    # A copies file whose review file is missing.
    (Path(attempt.review.path) / second).unlink()

    settled = _settle(attempt)
    after = _queue(attempt)
    assert sorted(after) == sorted(before)
    for name in before:
        assert sorted(after[name][C.ROW_ID].to_pylist()) == sorted(before[name][C.ROW_ID].to_pylist())
        assert after[name].column_names == before[name].column_names
    assert settled["rows"] == sum(t.num_rows for t in before.values())
