"""Build the nightly job's users table from behaviour events.

    python jobs/build_profiles.py --events E --products P [--users U] --output O --as-of 2026-11-23
    python jobs/nightly_copy.py --pairs PAIRS --users O --products P ...

See docs/facts-and-profiles.md ("User profiles from events") for the output and every flag.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import asdict
from typing import Optional, Sequence

from pydantic import ValidationError

from factory import errors
from factory.profiles.aggregate import ProfileSettings
from factory.profiles.build import BuildResult, ProfileJobConfig, run


def build_parser() -> argparse.ArgumentParser:
    p = errors.JobParser(prog="build_profiles",
                                description="Build user profiles (the nightly job's --users) from events on Ray Data.")
    p.add_argument("--events", required=True, help="Events Parquet file or folder (local or s3://).")
    p.add_argument("--products", required=True, help="Product catalog Parquet (local or s3://).")
    p.add_argument("--users", help="Optional users table: locale and loyalty_tier are taken from it.")
    p.add_argument("--output", required=True, help="Output folder or s3://bucket/prefix.")
    p.add_argument("--as-of", dest="as_of", help="Profile date, YYYY-MM-DD (default: today, UTC). "
                   "Events after the end of this day are set aside as future_timestamp.")
    p.add_argument("--half-life-days", dest="half_life_days", type=float, help="Interest half-life (default 30).")
    p.add_argument("--recent-n", dest="recent_n", type=int, help="Entries per recent_* list (default 5).")
    p.add_argument("--top-categories", dest="top_categories", type=int, help="Categories in interests (default 3).")
    p.add_argument("--top-brands", dest="top_brands", type=int, help="Brands in interests (default 2).")
    p.add_argument("--default-locale", dest="default_locale", help="Locale of users the users table lacks "
                   "(default en-US).")
    p.add_argument("--partitions", type=int, help="Output files (default: one per 250,000 events).")
    p.add_argument("--s3-endpoint", dest="s3_endpoint", help="S3-compatible endpoint URL (MinIO, R2, ...).")
    p.add_argument("--s3-region", dest="s3_region", help="S3 region (default us-east-1).")
    p.add_argument("--s3-max-attempts", dest="s3_max_attempts", type=int, help="Tries per S3 request (default 10).")
    return p


_SETTINGS = ("half_life_days", "recent_n", "top_categories", "top_brands", "default_locale")
_JOB = ("events", "products", "users", "output", "partitions", "s3_endpoint", "s3_region", "s3_max_attempts")


def parse_config(argv: Optional[Sequence[str]] = None) -> ProfileJobConfig:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    as_of = args["as_of"] or dt.datetime.now(dt.timezone.utc).date().isoformat()
    settings = {k: args[k] for k in _SETTINGS if args[k] is not None}
    job = {k: args[k] for k in _JOB if args[k] is not None}
    flags = errors.flag_names(parser)
    try:
        return ProfileJobConfig(**job, settings=ProfileSettings(as_of=as_of, **settings))
    except ValidationError as exc:
        given = {k: flags[k] for k, v in args.items() if v is not None and k in flags}
        raise errors.UsageError(*errors.settings_lines(exc, ProfileJobConfig, given)) from None


def report(result: BuildResult) -> str:
    reasons = "  ".join(f"{r}={n}" for r, n in result.rejected_by_reason.items()) or "none"
    return "\n".join([
        "",
        f"Profiles built in {result.seconds:.0f} s: {result.profiles} users "
        f"({result.users_with_events} with events) in {len(result.files)} file(s)",
        f"  output:      {result.output_uri}   (the nightly job's --users)",
        f"  events:      {result.events_read} read, {result.events_used} used, {result.events_rejected} set aside",
        f"  set aside:   {reasons}",
        f"  summary:     {result.summary_uri}",
    ])


def execute(argv: Optional[Sequence[str]]) -> int:
    result = run(parse_config(argv))
    print(json.dumps(asdict(result), indent=2))
    print(report(result))
    return errors.EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    return errors.job_main("build_profiles", lambda _log_file: execute(argv))


if __name__ == "__main__":
    sys.exit(main())
