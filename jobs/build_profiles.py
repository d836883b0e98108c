"""Build the nightly job's users table from behaviour events.

    python jobs/build_profiles.py --events E --products P [--users U] --output O --as-of 2026-11-23
    python jobs/nightly_copy.py --pairs PAIRS --users O --products P ...

See docs/facts-and-profiles.md ("User profiles from events") for the output and every flag.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Optional

from factory import errors
from factory.flags import FlagSet, parse_settings
from factory.profiles.build import BuildResult, ProfileJobConfig, run

# Every ProfileJobConfig field is a flag; the profile settings' too (--half-life-days, ...).
FLAGS = FlagSet(ProfileJobConfig, inline={"settings": None})


def build_parser() -> argparse.ArgumentParser:
    p = errors.JobParser(
        prog="build_profiles", description="Build user profiles (the nightly job's --users) from events."
    )
    FLAGS.add_to(p)
    return p


def parse_config(argv: Optional[Sequence[str]] = None) -> ProfileJobConfig:
    return parse_settings(FLAGS, build_parser(), argv)


def report(result: BuildResult) -> str:
    reasons = "  ".join(f"{r}={n}" for r, n in result.rejected_by_reason.items()) or "none"
    return "\n".join(
        [
            "",
            f"Profiles built in {result.seconds:.0f} s: {result.profiles} users "
            f"({result.users_with_events} with events) in {len(result.files)} file(s)",
            f"  output:      {result.output_uri}   (the nightly job's --users)",
            f"  events:      {result.events_read} read, {result.events_used} used, {result.events_rejected} "
            "set aside",
            f"  set aside:   {reasons}",
            f"  summary:     {result.summary_uri}",
        ]
    )


def execute(argv: Optional[Sequence[str]]) -> int:
    result = run(parse_config(argv))
    print(json.dumps(asdict(result), indent=2))
    print(report(result))
    return errors.EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    return errors.job_main("build_profiles", lambda _log_file: execute(argv))


if __name__ == "__main__":
    sys.exit(main())
