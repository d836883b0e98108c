"""Finishing a run, from file footers: every owed row written exactly once,
the review queue settled, the summary and the run report. The driver reads
footers (a few KB a file) and a bounded sample of rows, never every row, so
its work grows with files, not rows."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import pyarrow as pa

from factory import columns as C
from factory import footer, report
from factory.errors import Incomplete
from factory.fingerprint import Fingerprint
from factory.footer import Footer, read_footers
from factory.pipeline.plan import Plan
from factory.publish import SUMMARY, Attempt
from factory.quality.metrics import corpus_figures
from factory.stages.review import ReviewRows
from factory.storage import delete_file, put_bytes, read_parquet, write_parquet

logger = logging.getLogger(__name__)


class IncompleteRun(Incomplete):
    """The written rows are not exactly the expected ones; nothing was published."""


@dataclass
class RunResult:
    run_id: str
    attempt: int
    action: str  # new, resume, or published (nothing was done)
    output_uri: str  # the attempt's folder
    manifest_uri: str
    rows_written: int
    dead_letters: int
    rows_by_channel: dict[str, int]
    dead_letters_by_reason: dict[str, int]
    samples: list[dict[str, Any]]
    seconds: float
    files: list[dict[str, Any]] = field(default_factory=list)  # {path, rows, bytes}
    quality: dict[str, Any] = field(default_factory=dict)
    rows_generated: int = 0  # by this process; a resumed run skips what was written before
    rows_resumed: int = 0  # rows found written by an earlier process of the attempt
    rows_reused: int = 0  # by this process: rows that took an identical prompt's copy
    progress: list[dict[str, Any]] = field(default_factory=list)  # the per-minute samples
    work: dict[str, Any] = field(default_factory=dict)  # engine work done and avoided (factory.dedup)
    holdout: dict[str, Any] = field(
        default_factory=lambda: {"rows": 0, "files": []}
    )  # experiment holdout rows
    experiment: Optional[dict[str, Any]] = (
        None  # the manifest's experiment record (NightPlan.manifest_record)
    )


def check_exactly_once(attempt: Attempt, owed: Fingerprint) -> list[Footer]:
    """Refuse to publish unless the copies hold every owed row exactly once;
    return the copy files' footers.

    The driver adds up each file's row-id fingerprint from its footer (a
    ranged read of a few KB), so its work grows with files, not rows. A file
    without one (written before fingerprints) has its row ids read instead."""
    files = read_footers(attempt.copies)
    written = sum((footer.fingerprint(f) for f in files), Fingerprint())
    if written != owed:
        raise IncompleteRun(
            f"{attempt.copies.uri}: {written.rows} row(s) written, {owed.rows} expected"
            + (
                ""
                if written.rows != owed.rows
                else ", but not the owed ones (some missing and as many duplicated)"
            )
            + "; not publishing. Rerun the same command to resume the attempt."
        )
    return files


def settle_review_queue(plan: Plan, attempt: Attempt, files: list[Footer]) -> dict[str, Any]:
    """Make the review queue hold exactly the copies' review rows: one file
    beside each copies file that has any, of the same name (the writer's
    ``Sink.beside``). A review file whose copies file was never written (a
    process killed in between) or was rewritten without review rows is
    deleted; a copies file whose review file is missing (written by an older
    release) has it rebuilt. Footers say how many rows each should hold."""
    owed = {f.file: (f, footer.file_stats(f).quality.status[C.REVIEW]) for f in files}
    for f in read_footers(attempt.review):
        if owed.get(f.file, (None, 0))[1] != f.rows:
            delete_file(f.loc)
    have = {f.file for f in read_footers(attempt.review)}
    rows_for_review = ReviewRows(plan.products)
    for name, (copies_file, n) in owed.items():
        if n and name not in have:
            write_parquet(attempt.review.join(name), rows_for_review(read_parquet(copies_file.loc)))
    queue = read_footers(attempt.review)
    rows = sum(f.rows for f in queue)
    if rows:
        logger.info("%d row(s) for review at %s", rows, attempt.review.uri)
    return {
        "rows": rows,
        "files": [{"path": f"review/{f.file}", "rows": f.rows, "bytes": f.size} for f in queue],
    }


def summarize(
    plan: Plan,
    attempt: Attempt,
    action: str,
    files: list[Footer],
    dead: list[Footer],
    seconds: float,
    review: dict[str, Any],
) -> RunResult:
    # Verdicts and engine work come from the files' footers (factory/footer.py):
    # the driver reads no row for them, whatever the run's size.
    stats = footer.copy_stats(files)
    quality = stats.quality.summary()
    quality["review_queue"] = review
    # Corpus figures need the text: read whole files (named by a hash of
    # their rows, so effectively in random order) until a sample is big enough.
    sample = corpus_sample(files)
    corpus_rows = read_columns(sample, CORPUS_COLUMNS)
    quality["corpus"] = corpus_figures(corpus_rows, plan.products, max_rows=CORPUS_SAMPLE_ROWS)
    quality["corpus"]["files_measured"] = f"{len(sample)} of {len(files)}"
    del corpus_rows
    by_reason = dict(footer.reason_counts(dead).most_common())
    # One accepted sample per channel from the head of the first file: cheap at any size.
    samples, seen = [], set()
    if files:
        head = read_parquet(files[0].loc).slice(0, 2_000)
        for row in head.to_pylist():
            if row[C.CHANNEL] not in seen and row[C.TEXT] and row[C.STATUS] == C.ACCEPTED:
                seen.add(row[C.CHANNEL])
                samples.append({k: row[k] for k in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.LOCALE, C.TEXT)})
    return RunResult(
        run_id=plan.config.run_id,
        attempt=attempt.number,
        action=action,
        output_uri=attempt.base.uri,
        manifest_uri=attempt.manifest.uri,
        rows_written=stats.quality.rows,
        dead_letters=sum(f.rows for f in dead),
        rows_by_channel=stats.quality.rows_by_channel(),
        dead_letters_by_reason=by_reason,
        samples=samples,
        seconds=round(seconds, 1),
        files=[{"path": f"copies/{f.file}", "rows": f.rows, "bytes": f.size} for f in files],
        quality=quality,
        work=stats.work.figures(),
    )


# Rows the corpus figures measure. A share measured on 100k rows is within
# +-0.3 points; the figures' working memory (about 2.5 KB a row, measured)
# stays the same whatever the run's size.
CORPUS_SAMPLE_ROWS = 100_000


def corpus_sample(files: list[Footer]) -> list[Footer]:
    """Whole copy files, in listing order, until CORPUS_SAMPLE_ROWS rows."""
    sample, rows = [], 0
    for f in files:
        if rows >= CORPUS_SAMPLE_ROWS:
            break
        sample.append(f)
        rows += f.rows
    return sample


CORPUS_COLUMNS = (
    C.CHANNEL,
    C.USER_ID,
    C.PRODUCT_ID,
    C.TEXT,
    C.STATUS,
    C.NUMERIC_FIDELITY,
    C.COPY_LENGTH,
    C.COPY_LENGTH_LIMIT,
)


def read_columns(files: list[Footer], columns) -> pa.Table:
    """Some columns of written copy files: what a downstream reader will see."""
    from factory.stages.finalize import OUTPUT_SCHEMA

    schema = pa.schema([OUTPUT_SCHEMA.field(c) for c in columns])
    tables = [read_parquet(f.loc, columns=list(columns)) for f in files]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def write_summary(plan: Plan, attempt: Attempt, result: RunResult, device: str) -> dict[str, Any]:
    config = plan.config
    summary = {
        "run_id": result.run_id,
        "run_date": config.run_date.isoformat(),
        "campaign": config.campaign_label,
        "attempt": attempt.number,
        "output": result.output_uri,
        "rows_written": result.rows_written,
        "rows_by_channel": result.rows_by_channel,
        "rows_generated": result.rows_generated,
        "rows_resumed": result.rows_resumed,
        "rows_reused": result.rows_reused,
        "engine_work": result.work,
        "progress": result.progress,
        "quality": result.quality,
        "files": result.files,
        "dead_letters": result.dead_letters,
        "dead_letters_by_reason": result.dead_letters_by_reason,
        "holdout": result.holdout,
        "experiment": result.experiment,
        "input_tables": [{k: v for k, v in asdict(r).items() if k != "rejects"} for r in plan.table_reports],
        "template_versions": {c: t.version for c, t in plan.templates.items() if c in config.channels},
        "model": config.model,
        "device": device,
        "seconds": result.seconds,
        # Settings only: no credentials live in the config.
        "config": json.loads(config.model_dump_json()),
    }
    put_bytes(
        attempt.base.join(SUMMARY),
        json.dumps(summary, indent=2, ensure_ascii=False).encode(),
        content_type="application/json",
    )
    return summary


def write_report(
    plan: Plan,
    attempt: Attempt,
    files: list[Footer],
    summary: dict[str, Any],
    experiments: Sequence[Any] = (),
) -> str | None:
    """report.html beside summary.json, from the same bounded sample of files as
    the corpus figures (``experiments``: its Experiments section's views). A
    report that cannot be written never fails a run: the data is published regardless."""
    try:
        copies = read_columns(corpus_sample(files), report.REPORT_COLUMNS)
        written = report.write_report(
            attempt.base, summary, copies, plan.products, summary.get("progress"), experiments=experiments
        )
    except Exception as exc:  # noqa: BLE001
        logger.warning("Run report not written: %s", exc)
        return None
    logger.info("Run report: %s", attempt.base.join(written["file"]).uri)
    return written["file"]
