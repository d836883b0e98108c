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
from collections.abc import Sequence
from dataclasses import asdict
from typing import Optional

from factory import errors
from factory.experiments.feedback import FeedbackJobConfig, IngestResult, run
from factory.flags import FlagSet, parse_settings

# Every FeedbackJobConfig field is a flag; --campaign repeats (or takes a comma list).
FLAGS = FlagSet(
    FeedbackJobConfig, names={"campaigns": "--campaign"}, extra={"campaigns": {"action": "append"}}
)


def build_parser() -> argparse.ArgumentParser:
    p = errors.JobParser(
        prog="ingest_feedback",
        description="Join delivery events to published runs and write the feedback table, on Ray Data.",
    )
    FLAGS.add_to(p)
    return p


def parse_config(argv: Optional[Sequence[str]] = None) -> FeedbackJobConfig:
    return parse_settings(FLAGS, build_parser(), argv)


def report(result: IngestResult) -> str:
    reasons = "  ".join(f"{r}={n}" for r, n in result.rejected_by_reason.items()) or "none"
    totals = "  ".join(f"{k}={v}" for k, v in result.totals.items())
    return "\n".join(
        [
            "",
            (
                f"Feedback table written in {result.seconds:.0f} s: {result.keys} key(s) "
                f"from {result.runs} published run(s)"
            ),
            f"  table:      {result.table_uri}",
            (
                f"  events:     {result.events_read} read, {result.events_counted} counted, "
                f"{result.events_rejected} set aside"
            ),
            f"  counted:    {totals}",
            f"  set aside:  {reasons}"
            + (f"   ({result.output_uri}/rejects/)" if result.events_rejected else ""),
            f"  summary:    {result.summary_uri}",
        ]
    )


def execute(argv: Optional[Sequence[str]]) -> int:
    result = run(parse_config(argv))  # every mistake exits 2 in here, before Ray starts
    print(json.dumps(asdict(result), indent=2, default=str))
    print(report(result))
    return errors.EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    return errors.job_main("ingest_feedback", lambda _log_file: execute(argv))


if __name__ == "__main__":
    sys.exit(main())
