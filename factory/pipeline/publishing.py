"""Publishing: the manifest (exclusively: one writer wins), then the
campaign's latest pointer, the work files removed and, last, _SUCCESS (the
layout: ``factory.publish``). Those come after the run is published and are
safe to repeat: a process stopped among them (killed, or a store that went
down) leaves them to the next run of the same command, which finds the run
published without its _SUCCESS and finishes them."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from factory.footer import Footer
from factory.pipeline.finish import RunResult
from factory.pipeline.plan import Plan
from factory.publish import (
    SUCCESS,
    SUMMARY,
    Attempt,
    abandoned_attempts,
    config_hash,
    publish,
    read_history,
    update_latest,
)
from factory.storage import delete_dir_if_exists, put_bytes, read_bytes

logger = logging.getLogger(__name__)


def publish_run(
    plan: Plan,
    attempt: Attempt,
    result: RunResult,
    summary: dict[str, Any],
    device: str,
    dead: list[Footer],
    report_file: str | None = None,
) -> None:
    """The manifest (exclusively: one writer wins), then _SUCCESS, then the
    campaign's latest pointer. Until the manifest exists nothing of this
    attempt is visible to a reader that follows the contract."""
    config = plan.config
    review = result.quality["review_queue"]
    manifest = {
        "run_id": config.run_id,
        "run_date": config.run_date.isoformat(),
        "campaign": config.campaign_label,
        "attempt": attempt.number,
        "config_hash": config_hash(config.model_dump_json()),
        "template_versions": summary["template_versions"],
        "model": config.model,
        "device": device,
        "rows": {
            "copies": result.rows_written,
            "dead_letters": result.dead_letters,
            "review": review["rows"],
            "holdout": result.holdout["rows"],
        },
        "rows_by_status": result.quality["status"],
        "rows_by_channel": result.rows_by_channel,
        "rows_by_channel_status": result.quality["status_by_channel"],
        # --candidates: draws made and owed rows they were drawn for (one kept each); null with one draw.
        "candidates": result.work.get("candidates"),
        "dead_letters_by_reason": result.dead_letters_by_reason,
        "files": {
            "copies": result.files,
            "dead_letters": [
                {"path": f"dead_letters/{f.file}", "rows": f.rows, "bytes": f.size} for f in dead
            ],
            "review": review["files"],
            # An experiment's holdout users: no copy, one row per pair and channel (downstream measures lift).
            "holdout": result.holdout["files"],
        },
        "experiment": result.experiment,
        "summary": SUMMARY,
        "report": report_file,
        "history": read_history(attempt),
        "abandoned_attempts": abandoned_attempts(plan.run, attempt.number),
        "published_at": now(),
    }
    publish(attempt, manifest)
    moved = finish_publishing(plan, attempt, manifest["published_at"])
    logger.info(
        "Published %s (attempt %d): %s%s",
        config.run_id,
        attempt.number,
        attempt.manifest.uri,
        "" if moved else " (latest pointer left on a later run date)",
    )


def finish_publishing(plan: Plan, attempt: Attempt, published_at: str) -> bool:
    """What follows a published manifest, each step safe to repeat: the
    campaign's latest pointer (unless a later run date holds it: returns
    False), the attempt's work files removed, and last ``_SUCCESS``, which
    says all of it is done (``choose_attempt``'s ``finished``)."""
    config = plan.config
    moved = update_latest(
        plan.output,
        config.campaign_label,
        {
            "run_id": config.run_id,
            "run_date": config.run_date.isoformat(),
            "attempt": attempt.number,
            "manifest": attempt.manifest.uri[len(plan.output.uri.rstrip("/")) + 1 :],
            "published_at": published_at,
        },
    )
    delete_dir_if_exists(attempt.work)
    put_bytes(attempt.base.join(SUCCESS), b"")
    return moved


def now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat()


def already_published(plan: Plan, attempt: Attempt, started: float, finished: bool = True) -> RunResult:
    manifest = json.loads(read_bytes(attempt.manifest))
    logger.info(
        "Run %s is already published (attempt %d): %s. Nothing to generate; --force runs it again "
        "as a new attempt.",
        plan.config.run_id,
        attempt.number,
        attempt.manifest.uri,
    )
    if not finished:  # the publishing process stopped after its manifest: finish what it left
        logger.info("Finishing its publishing: the latest pointer, work files, _SUCCESS")
        finish_publishing(plan, attempt, manifest["published_at"])
    return RunResult(
        run_id=manifest["run_id"],
        attempt=attempt.number,
        action="published",
        output_uri=attempt.base.uri,
        manifest_uri=attempt.manifest.uri,
        rows_written=manifest["rows"]["copies"],
        dead_letters=manifest["rows"]["dead_letters"],
        rows_by_channel=manifest["rows_by_channel"],
        dead_letters_by_reason=manifest.get("dead_letters_by_reason", {}),
        samples=[],
        seconds=round(time.time() - started, 1),
        files=manifest["files"]["copies"],
        quality={"status": manifest["rows_by_status"]},
    )
