"""How a downstream system reads the factory's output: manifest first.

    from factory.reader import read_published
    copies = read_published("s3://bucket/nightly", "2026-11-23", "winter_sale")  # a pyarrow Table

Only files a published manifest lists are read. The contract any other reader
follows: docs/output.md.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from factory.publish import published_manifest
from factory.storage import Location, read_bytes, resolve


def run_location(output: Location, run_date: str | dt.date, campaign: Optional[str]) -> Location:
    day = run_date.isoformat() if isinstance(run_date, dt.date) else run_date
    return output.join("runs", f"date={day}", f"campaign={campaign or 'all'}")


def manifest_for(
    output: str, run_date: str | dt.date, campaign: Optional[str] = None, s3_endpoint: Optional[str] = None
) -> Optional[dict[str, Any]]:
    return published_manifest(run_location(resolve(output, s3_endpoint), run_date, campaign))


def latest_manifest(
    output: str, campaign: Optional[str] = None, s3_endpoint: Optional[str] = None
) -> Optional[dict[str, Any]]:
    out = resolve(output, s3_endpoint)
    try:
        pointer = json.loads(read_bytes(out.join("latest", f"campaign={campaign or 'all'}.json")))
    except FileNotFoundError:
        return None
    return json.loads(read_bytes(out.join(pointer["manifest"])))


def read_published(
    output: str,
    run_date: str | dt.date,
    campaign: Optional[str] = None,
    kind: str = "copies",
    s3_endpoint: Optional[str] = None,
) -> Optional[pa.Table]:
    """The rows of a published run (``kind``: copies, dead_letters or review),
    or None when the run is not published."""
    out = resolve(output, s3_endpoint)
    run = run_location(out, run_date, campaign)
    manifest = published_manifest(run)
    if manifest is None:
        return None
    base = run.join(f"attempt={manifest['attempt']:04d}")
    files = manifest["files"].get(kind, [])
    tables = [pq.read_table(base.join(f["path"]).path, filesystem=base.fs) for f in files]
    return pa.concat_tables(tables) if tables else None
