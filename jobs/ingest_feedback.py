"""Feedback in: join delivery events to the published runs, count per arm.

    python jobs/ingest_feedback.py --events s3://crm/delivery/ --runs s3://marketing-copy/nightly \
        --output s3://marketing-copy/feedback
    python jobs/nightly_copy.py --campaigns-dir configs ...   # the next night allocates from it

See factory/experiments/feedback.py for the events contract, the table and
the reasons an event is set aside. Exit status (factory/errors.py): 0 done;
2 a flag, path, store or events file that cannot work, found before Ray
starts; 1 storage that kept failing, or events lost between read and table.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Optional, Sequence

from pydantic import ValidationError

from factory import errors
from factory.experiments.feedback import FeedbackJobConfig, IngestResult, run


def build_parser() -> argparse.ArgumentParser:
    p = errors.JobParser(prog="ingest_feedback",
                         description="Join delivery events to published runs and write the feedback table, on Ray Data.")
    p.add_argument("--events", required=True, help="Delivery events: Parquet file or folder (local or s3://), "
                   "every event so far: row_id, event_type (impression, click, conversion), ts.")
    p.add_argument("--runs", required=True, help="The nightly job's --output (its published manifests).")
    p.add_argument("--output", required=True, help="Folder or s3://bucket/prefix for the feedback table.")
    p.add_argument("--campaign", dest="campaigns", action="append",
                   help="Only runs of this campaign (repeat, or a comma list). Default: every campaign.")
    p.add_argument("--since", help="Only runs on or after this run date (YYYY-MM-DD).")
    p.add_argument("--until", help="Only runs on or before this run date (YYYY-MM-DD).")
    p.add_argument("--partitions", type=int, help="Buckets of the join (default: one per 1,000,000 events and rows).")
    p.add_argument("--s3-endpoint", dest="s3_endpoint", help="S3-compatible endpoint URL (MinIO, R2, ...).")
    p.add_argument("--s3-region", dest="s3_region", help="S3 region (default us-east-1).")
    p.add_argument("--s3-max-attempts", dest="s3_max_attempts", type=int, help="Tries per S3 request (default 10).")
    return p


_FIELDS = ("events", "runs", "output", "since", "until", "partitions", "s3_endpoint", "s3_region", "s3_max_attempts")


def parse_config(argv: Optional[Sequence[str]] = None) -> FeedbackJobConfig:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    values = {k: args[k] for k in _FIELDS if args[k] is not None}
    if args["campaigns"]:
        values["campaigns"] = ",".join(args["campaigns"])
    flags = errors.flag_names(parser)
    try:
        return FeedbackJobConfig(**values)
    except ValidationError as exc:
        given = {k: flags[k] for k, v in args.items() if v is not None and k in flags}
        raise errors.UsageError(*errors.settings_lines(exc, FeedbackJobConfig, given)) from None


def report(result: IngestResult) -> str:
    reasons = "  ".join(f"{r}={n}" for r, n in result.rejected_by_reason.items()) or "none"
    totals = "  ".join(f"{k}={v}" for k, v in result.totals.items())
    return "\n".join([
        "",
        f"Feedback table written in {result.seconds:.0f} s: {result.keys} key(s) from {result.runs} published run(s)",
        f"  table:      {result.table_uri}",
        f"  events:     {result.events_read} read, {result.events_counted} counted, {result.events_rejected} set aside",
        f"  counted:    {totals}",
        f"  set aside:  {reasons}" + (f"   ({result.output_uri}/rejects/)" if result.events_rejected else ""),
        f"  summary:    {result.summary_uri}",
    ])


def execute(argv: Optional[Sequence[str]]) -> int:
    result = run(parse_config(argv))  # every mistake exits 2 in here, before Ray starts
    print(json.dumps(asdict(result), indent=2, default=str))
    print(report(result))
    return errors.EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    return errors.job_main("ingest_feedback", lambda _log_file: execute(argv))


if __name__ == "__main__":
    sys.exit(main())
