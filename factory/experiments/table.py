"""The feedback table: its columns, and how a reader finds it.

One row per (campaign, experiment, arm, template version, channel, locale),
written by jobs/ingest_feedback.py:

    <feedback>/feedback.parquet        the table, sorted by its key
    <feedback>/rejects/part-NNNNN.parquet  events set aside: file, row, reason
    <feedback>/_summary.json           written last: counts, inputs, the table's digest

Readers trust the summary: it names the table file and its sha256, so a
table being rewritten is never read half-new. Rates are per delivered copy
(a row id is impressed, clicked, converted at most once; see feedback.py).
Holdout rows have arm ``holdout`` and no template version.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

import pyarrow as pa

from factory import columns as C
from factory.experiments.assign import ARM, EXPERIMENT_ID

IMPRESSION, CLICK, CONVERSION = "impression", "click", "conversion"
EVENT_TYPES = (IMPRESSION, CLICK, CONVERSION)
IMPRESSIONS, CLICKS, CONVERSIONS = "impressions", "clicks", "conversions"
KEY = (C.CAMPAIGN_ID, EXPERIMENT_ID, ARM, C.TEMPLATE_VERSION, C.CHANNEL, C.LOCALE)
COUNTS = (IMPRESSIONS, CLICKS, CONVERSIONS)
FIRST_EVENT_AT, LAST_EVENT_AT = "first_event_at", "last_event_at"

FEEDBACK_SCHEMA = pa.schema(
    [(k, pa.string()) for k in KEY]
    + [(c, pa.int64()) for c in COUNTS]
    + [(f"{name}{end}", pa.float64()) for name in ("ctr", "cvr") for end in ("", "_low", "_high")]
    + [(FIRST_EVENT_AT, pa.timestamp("us", tz="UTC")), (LAST_EVENT_AT, pa.timestamp("us", tz="UTC"))]
)

TABLE = "feedback.parquet"
REJECTS = "rejects"
SUMMARY = "_summary.json"
FORMAT = "copy-factory/feedback@1"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_feedback(output, summary: Optional[dict[str, Any]] = None) -> tuple[pa.Table, dict[str, Any]]:
    """The feedback table at ``output`` (a Location) and its summary. Raises
    FileNotFoundError when no ingest has finished there, ValueError when the
    table is not the one the summary names."""
    from factory.storage import read_bytes

    summary = summary or json.loads(read_bytes(output.join(SUMMARY)))
    data = read_bytes(output.join(summary["table"]["file"]))
    if digest(data) != summary["table"]["sha256"]:
        raise ValueError(
            f"{output.join(summary['table']['file']).uri}: not the table {output.join(SUMMARY).uri} "
            "names (an ingest is rewriting it?); read again after it finishes"
        )
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data)), summary
