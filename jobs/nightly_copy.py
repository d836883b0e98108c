"""Nightly copy job: pairs + profiles + catalog in, personalized copy out.

    python jobs/nightly_copy.py                      # demo: sample data, bundled model, ./out
    python jobs/nightly_copy.py --campaigns-dir configs             # every campaign active today
    python jobs/nightly_copy.py --campaigns-dir configs --dry-run   # the plan and its cost, no engine
    ray job submit --working-dir . -- python jobs/nightly_copy.py --pairs s3://... --output s3://...

Exit status (factory/errors.py): 0 every run published (or already was); 2 a
flag, file, path, store or model mistake, found before Ray or an engine
starts (every campaign file is validated before the first run starts); with
several runs, the status of the first run that failed (1 failed, 2 input
error, 3 publish conflict, 4 incomplete), after all runs were tried.

See docs/input.md, docs/output.md and docs/settings.md for the input contract, the output layout
and every flag.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from factory import console, errors
from factory.cli import JobRequest, parse_job
from factory.config import JobConfig
from factory.pipeline import RunResult, run


def report(result: RunResult) -> str:
    if result.action == "published":
        return (
            f"\nRun {result.run_id} is already published (attempt {result.attempt}, {result.rows_written} "
            "rows): "
            f"{result.manifest_uri}\nNothing to do. Pass --force to run it again as a new attempt."
        )
    resumed = (
        f"  resumed:      {result.rows_resumed} row(s) were already written; "
        f"{result.rows_generated} generated now"
        if result.rows_resumed
        else None
    )
    lines = [
        "",
        f"Run {result.run_id} (attempt {result.attempt}) published in {result.seconds:.0f} s",
        f"  manifest:     {result.manifest_uri}",
        f"  output:       {result.output_uri}  ({len(result.files)} copy file(s))",
        f"  rows written: {result.rows_written}  "
        + "  ".join(f"{ch}={n}" for ch, n in sorted(result.rows_by_channel.items())),
        f"  dead letters: {result.dead_letters}  "
        + "  ".join(f"{r}={n}" for r, n in sorted(result.dead_letters_by_reason.items())),
    ]
    if resumed:
        lines.append(resumed)
    q = result.quality
    if q.get("rows"):
        lines.append(
            "  quality:      "
            + "  ".join(f"{s}={n}" for s, n in q["status"].items())
            + "   (before repair: "
            + "  ".join(f"{s}={n}" for s, n in q["before_repair"]["status"].items())
            + ")"
        )
        for channel, counts in q["status_by_channel"].items():
            lines.append(f"    {channel:<14}" + "  ".join(f"{s}={n}" for s, n in counts.items()))
        top = list(q["reasons"].items())[:5]
        if top:
            lines.append("  top reasons:  " + "  ".join(f"{r}={n}" for r, n in top))
        if q["review_queue"]["rows"]:
            queue = q["review_queue"]
            lines.append(
                f"  review queue: {result.output_uri.rstrip('/')}/review/  ({queue['rows']} rows in "
                f"{len(queue['files'])} file(s))"
            )
    lines.append("  sample copies (accepted):")
    for s in result.samples[:3]:
        lines.append(f"    [{s['channel']}, {s['locale']}, {s['user_id']} x {s['product_id']}] {s['text']}")
    return "\n".join(lines)


def run_one(config: JobConfig, several: bool, log_file: Optional[Path]) -> tuple[int, str]:
    """One run: (exit status, one line for the campaign summary). With
    several runs an unexpected error fails this run only; alone it
    propagates (a bug keeps its traceback, status 1)."""
    try:
        result = run(config)
    except Exception as exc:  # noqa: BLE001 - told by factory.errors, or re-raised
        said = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        if errors.exit_code(exc) is None:
            if not several:
                raise
            logging.getLogger("nightly_copy").exception("Run %s failed", config.run_id)
            exc = errors.Failed(f"run {config.run_id} failed: {said}")
        code = errors.report(exc, log_file)
        return code, f"{config.campaign_label:<20} FAILED (exit {code}): {said}"
    print(report(result))
    state = "already published" if result.action == "published" else "published"
    return 0, (
        f"{config.campaign_label:<20} {state}: attempt {result.attempt}, {result.rows_written} rows, "
        f"{result.dead_letters} dead letters  {result.manifest_uri}"
    )


def dry_run_all(request: JobRequest) -> int:
    from factory.dry_run import format_plan, plan_run

    plans = [plan_run(config) for config in request.configs]
    if request.json:
        print(json.dumps(plans if len(plans) > 1 else plans[0], indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(format_plan(p) for p in plans))
    return 0


def execute(argv: Optional[Sequence[str]], log_file: Optional[Path]) -> int:
    request = parse_job(argv)
    console.set_verbose(request.verbose)
    if not request.configs:
        print("No campaign is active on the run date: nothing to do.")
        return 0
    if request.dry_run:
        return dry_run_all(request)
    several = len(request.configs) > 1
    outcomes = [run_one(config, several, log_file) for config in request.configs]
    if several:
        print("\nCampaigns:")
        for _, line in outcomes:
            print(f"  {line}")
    return next((code for code, _ in outcomes if code), 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return errors.job_main("nightly_copy", lambda log_file: execute(argv, log_file))


if __name__ == "__main__":  # vLLM spawns an engine process: this guard is required
    sys.exit(main())
