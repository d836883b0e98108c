"""Dead letters: the pairs (and lookup-table rows) a run cannot serve, each
with a stable reason code a downstream reader can group by, and the file and
row it came from. Every code and the table's shape live here.

Malformed keys (``factory.inputs.malformed_reasons``) get
``null_<column>``, ``too_long_<column>``, ``invalid_utf8_<column>`` or
``control_characters_<column>``; a lookup table's repeated key
``duplicate_<column>``.
"""

from __future__ import annotations

import pyarrow as pa

from factory import columns as C
from factory.storage import Location, write_parquet

NULL_USER_ID = "null_user_id"
NULL_PRODUCT_ID = "null_product_id"
UNKNOWN_USER = "unknown_user_id"
UNKNOWN_PRODUCT = "unknown_product_id"
UNKNOWN_CHANNEL = "unknown_channel"
# The pair again, or a pair whose rows an earlier pair in file order already owes.
DUPLICATE_PAIR = "duplicate_pair"

SCHEMA = pa.schema(
    [
        (C.RUN_ID, pa.string()),
        (C.RUN_DATE, pa.date32()),
        (C.CAMPAIGN_ID, pa.string()),
        (C.USER_ID, pa.string()),
        (C.PRODUCT_ID, pa.string()),
        (C.CHANNEL, pa.string()),
        (C.REASON, pa.string()),
        (C.SOURCE, pa.string()),
        (C.SOURCE_ROW, pa.int64()),
    ]
)


def rows(run_id: str, run_date, n: int, **columns) -> pa.Table:
    """``n`` dead-letter rows in ``SCHEMA``: run provenance added, absent columns null."""
    values = {
        C.RUN_ID: pa.array([run_id] * n, pa.string()),
        C.RUN_DATE: pa.array([run_date] * n, pa.date32()),
        **columns,
    }
    return pa.table(
        [values[f.name] if f.name in values else pa.nulls(n, f.type) for f in SCHEMA], schema=SCHEMA
    )


def shape(table: pa.Table) -> pa.Table:
    """A writer sink's shape: the table in ``SCHEMA``."""
    return table.select(SCHEMA.names).cast(SCHEMA)


def write(loc: Location, table: pa.Table) -> None:
    """Dead letters the driver writes itself, footed like the writer's (``factory/footer.py``)."""
    from factory import footer  # here: footer's tallies import the stages, which import this module

    write_parquet(loc, footer.stamp(table, footer.dead_letter_entries(table, table)))
