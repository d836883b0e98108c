"""Backfill a campaign: run the nightly job once per past date, skip what is published.

    python jobs/backfill_campaign.py --campaign winter_sale --start 2026-11-01 --end 2026-11-07 \
        --concurrency 2 --summary-json backfill.json -- --output s3://marketing-copy/nightly ...

Everything after ``--`` (or not known to the backfill) goes to jobs/nightly_copy.py
unchanged. See factory/backfill.py and docs/running.md ("Backfills").
"""

from __future__ import annotations

import sys

from factory.backfill import main

if __name__ == "__main__":
    sys.exit(main())
