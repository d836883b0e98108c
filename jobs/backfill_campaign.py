"""Backfill a campaign: run the nightly job once per past date, skip what is published.

    python jobs/backfill_campaign.py --campaign winter_sale --start 2026-11-01 --end 2026-11-07 \
        --concurrency 2 --summary-json backfill.json -- --output s3://marketing-copy/nightly ...

Everything after ``--`` (or not known to the backfill) goes to jobs/nightly_copy.py
unchanged. See factory/backfill.py and docs/running.md ("Backfills"). Exit status:
0 every date published or skipped; 1 a date failed; 2 bad arguments, found before
any date runs (factory/errors.py); 130 stopped by Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import Optional, TextIO

from factory import errors
from factory.backfill import BackfillJobConfig, PlanError, run
from factory.flags import FlagSet, settings_from

# Every BackfillJobConfig field is a flag. The bools stay store_true: a --no-force
# the backfill does not know goes to the nightly job, as it always has.
FLAGS = FlagSet(
    BackfillJobConfig,
    groups={
        "dates": ("start", "end", "dates", "max_dates", "allow_future"),
        "what to regenerate": ("campaign", "only_users", "only_products", "run_label", "force"),
        "how": ("concurrency", "summary_json", "grace_seconds"),
    },
    extra={"allow_future": {"action": "store_true"}, "force": {"action": "store_true"}},
)


def build_parser() -> argparse.ArgumentParser:
    p = errors.JobParser(
        prog="backfill_campaign",
        allow_abbrev=False,
        description="Regenerate a campaign for past dates: one nightly_copy.py run per date (its own "
        "process, its own run id), skipping dates already published. Idempotent: rerun the same command "
        "and failed dates resume. Every other flag (after '--' or not known here) goes to the nightly job "
        "unchanged, e.g. -- --output s3://bucket/nightly --pairs ... --channels push,sms.",
        epilog="Exit status: 0 every date published or skipped; 1 a date failed (the table says which; rerun "
        "to resume); 2 bad arguments, found before any date runs; 130 stopped by Ctrl-C/SIGTERM.",
    )
    FLAGS.add_to(p)
    return p


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(backfill's own arguments, arguments after a bare '--')."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def refuse_unknown_flags(parser: errors.JobParser, unknown: Sequence[str]) -> None:
    """Flags before ``--`` that neither the backfill nor the nightly job knows: a typo, said now."""
    from factory.cli import build_parser as nightly_parser

    nightly = {s for a in nightly_parser()._actions for s in a.option_strings}
    typos = [w for w in parser.unknown_flags([w for w in unknown if w.split("=")[0] not in nightly])]
    if typos:
        raise PlanError(
            f"unknown argument(s): {', '.join(typos)} (neither the backfill nor the nightly job has it)"
        )


def parse_config(argv: Sequence[str]) -> tuple[BackfillJobConfig, list[str]]:
    """The backfill's settings and the arguments it passes to every date's nightly job."""
    own, after = split_argv(argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(own)
    refuse_unknown_flags(parser, unknown)
    return settings_from(FLAGS, parser, args), [*unknown, *after]


def execute(
    argv: Sequence[str], job_command: Optional[Sequence[str]], today: Optional[dt.date], out: TextIO
) -> int:
    config, passthrough = parse_config(argv)  # every mistake exits 2 in here or in run, before any date
    return run(config, passthrough, job_command=job_command, today=today, out=out)


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    job_command: Optional[Sequence[str]] = None,
    today: Optional[dt.date] = None,
    out: TextIO = sys.stdout,
) -> int:
    """``job_command`` replaces ``python jobs/nightly_copy.py`` and ``today`` the clock (tests)."""
    argv = sys.argv[1:] if argv is None else argv
    return errors.job_main("backfill_campaign", lambda _log_file: execute(argv, job_command, today, out))


if __name__ == "__main__":
    sys.exit(main())
