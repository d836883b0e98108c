"""The behaviour-events input: its contract, its reader and its checks.

Events are Parquet with ``user_id``, ``event_type`` (view, search,
add_to_cart, purchase) and ``ts`` (a timestamp; without a time zone it is
taken as UTC), plus ``product_id`` (for product events) and ``query`` (for
searches). Other columns are never read, so whatever else an export carries
(IP addresses, device ids, e-mail) cannot leak into a profile.

A bad event never stops the build: ``CheckEvents`` gives it a reason and the
partition stage sets it aside with its file and row.
"""

from __future__ import annotations

import zlib
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory import columns as C
from factory import inputs
from factory.profiles.aggregate import EVENT_TYPES, PRODUCT_EVENTS, SEARCH, Event
from factory.ray_session import deref
from factory.storage import read_parquet_part

EVENT_TYPE = "event_type"
QUERY = "query"
TS = "ts"
BUCKET = "__bucket"  # the output file (hash partition) a user's rows go to

EVENTS = inputs.Contract(
    "events",
    required=(C.USER_ID, EVENT_TYPE, TS),
    optional=(C.PRODUCT_ID, QUERY),
    string_fields=(C.USER_ID, EVENT_TYPE, C.PRODUCT_ID, QUERY),
)

# Reasons an event is set aside: stable codes to group by. Malformed user ids
# get inputs.malformed_reasons' codes (null_user_id, invalid_utf8_user_id, ...).
UNKNOWN_EVENT_TYPE = "unknown_event_type"
NULL_TIMESTAMP = "null_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
MISSING_PRODUCT_ID = "missing_product_id"
UNKNOWN_PRODUCT_ID = "unknown_product_id"
MISSING_QUERY = "missing_query"

# The rows after the check: accepted events have reason, source and
# source_row null (they are not needed any more, and cost memory).
CHECKED_SCHEMA = pa.schema(
    [
        (C.USER_ID, pa.string()),
        (EVENT_TYPE, pa.string()),
        (C.PRODUCT_ID, pa.string()),
        (QUERY, pa.string()),
        (TS, pa.int64()),
        (C.REASON, pa.string()),
        (C.SOURCE, pa.string()),
        (C.SOURCE_ROW, pa.int64()),
        (BUCKET, pa.int32()),
    ]
)
# What is kept of a rejected event: where to find it, why, and its keys. Not
# the query: it may hold personal data, and the source row is one look away.
REJECTED_SCHEMA = pa.schema(
    [
        (C.SOURCE, pa.string()),
        (C.SOURCE_ROW, pa.int64()),
        (C.REASON, pa.string()),
        (C.USER_ID, pa.string()),
        (EVENT_TYPE, pa.string()),
        (C.PRODUCT_ID, pa.string()),
        (TS, pa.timestamp("us", tz="UTC")),
    ]
)


def check_events_schema(loc, name: str = "events") -> inputs.ParquetInput:
    """Every events file's footer: the contract's columns and a timestamp ``ts``."""
    checked = inputs.check_schema(loc, EVENTS)
    attempts = loc.s3.max_attempts if loc.s3 else 1
    for path in checked.files:
        schema = inputs.retry_io(pq.read_schema, path, filesystem=loc.fs, attempts=attempts)
        typ = schema.field(TS).type
        if not pa.types.is_timestamp(typ):
            shown = f"s3://{path}" if loc.is_s3 else path
            raise inputs.InputError(f"{name}: {shown}: column {TS!r} must be a timestamp, found {typ}")
    return checked


def bucket_of(user_id: bytes | str, partitions: int) -> int:
    """The output file a user belongs to: stable across processes and runs
    (crc32, not Python's salted hash)."""
    data = user_id.encode() if isinstance(user_id, str) else user_id
    return zlib.crc32(data) % partitions


def read_items(checked: inputs.ParquetInput) -> list[dict[str, Any]]:
    """One read task per (file, row group), with the row number it starts at."""
    items = []
    for path in checked.files:
        first = 0
        for group, n in enumerate(checked.row_groups.get(path, [])):
            items.append({"file": path, "row_group": group, "first_row": first})
            first += n
    return items


class ReadEvents:
    """One row group of one events file: the contract's columns (absent
    optional ones as nulls), plus ``source`` and ``source_row``."""

    def __init__(self, fs, names: dict[str, list[str]], display: dict[str, str]):
        self._fs = fs
        self._names = dict(names)
        self._display = dict(display)

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        tables = []
        for path, group, first in zip(batch["file"], batch["row_group"], batch["first_row"]):
            present = [c for c in EVENTS.columns if c in self._names[path]]
            table = read_parquet_part(self._fs, path, int(group), present)
            n = table.num_rows
            for col in EVENTS.columns:
                if col not in present:
                    table = table.append_column(col, pa.nulls(n, pa.string()))
            table = table.select(list(EVENTS.columns))
            table = table.append_column(C.SOURCE, pa.array([self._display.get(path, path)] * n, pa.string()))
            table = table.append_column(C.SOURCE_ROW, pa.array(np.arange(first, first + n), pa.int64()))
            tables.append(table)
        return pa.concat_tables(tables, promote_options="permissive")


class CheckEvents:
    """Gives each event a reason it cannot be used (or none), its timestamp
    as UTC epoch microseconds, and its output bucket.

    The catalog's product ids arrive once per actor."""

    def __init__(self, product_ids, cutoff_micros: int, partitions: int):

        ids = deref(product_ids)
        self._product_ids = pa.array(ids, pa.string()) if not isinstance(ids, pa.Array) else ids
        self._cutoff = cutoff_micros
        self._partitions = partitions

    def __call__(self, batch: pa.Table) -> pa.Table:
        return check_events(batch, self._product_ids, self._cutoff, self._partitions)


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    """Timestamps (any unit, with or without zone: naive means UTC) as int64
    epoch microseconds; nulls as the smallest int64."""
    typ = column.type
    if pa.types.is_null(typ):
        return np.full(len(column), np.iinfo(np.int64).min)
    us = column.cast(pa.timestamp("us", tz=typ.tz), safe=False).cast(pa.int64())
    return pc.fill_null(us, np.iinfo(np.int64).min).to_numpy(zero_copy_only=False)


def _text_or_null(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A string column with broken UTF-8 replaced (free text must not crash a task)."""
    try:
        column.validate(full=True)
        return column.cast(pa.string())
    except pa.ArrowInvalid:
        values = column.cast(pa.binary()).to_pylist()
        return pa.chunked_array(
            [pa.array([None if v is None else v.decode("utf-8", "replace") for v in values], pa.string())]
        )


def _shown(value: Optional[bytes]) -> Optional[str]:
    """A rejected key as the set-aside file shows it: valid text, at most 256 bytes."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    data = text.encode()
    return (
        text
        if len(data) <= inputs.MAX_KEY_BYTES
        else data[: inputs.MAX_KEY_BYTES].decode("utf-8", "ignore") + "…"
    )


def check_events(batch: pa.Table, product_ids: pa.Array, cutoff_micros: int, partitions: int) -> pa.Table:
    """The checks of ``CheckEvents`` on one batch (see CHECKED_SCHEMA)."""
    n = batch.num_rows
    reasons: list[Optional[str]] = inputs.malformed_reasons(batch[C.USER_ID], C.USER_ID)
    types_raw = batch[EVENT_TYPE].cast(pa.binary())
    products_raw = batch[C.PRODUCT_ID].cast(pa.binary())
    ts = _micros(batch[TS])
    null_ts = ts == np.iinfo(np.int64).min
    known_type = pc.fill_null(
        pc.is_in(types_raw, value_set=pa.array([t.encode() for t in EVENT_TYPES], pa.binary())), False
    )
    known_product = pc.fill_null(pc.is_in(products_raw, value_set=product_ids.cast(pa.binary())), False)
    types = (
        [t.decode("utf-8", "replace") if t is not None else None for t in types_raw.to_pylist()]
        if not pc.all(known_type).as_py()
        else batch[EVENT_TYPE].cast(pa.string()).to_pylist()
    )
    known_type, known_product = known_type.to_pylist(), known_product.to_pylist()
    blank_product = pc.fill_null(pc.equal(pc.binary_length(products_raw), 0), True).to_pylist()
    query = _text_or_null(batch[QUERY])
    blank_query = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(query)), 0), True).to_pylist()
    for i in range(n):
        if reasons[i] is not None:
            continue
        if not known_type[i]:
            reasons[i] = UNKNOWN_EVENT_TYPE
        elif null_ts[i]:
            reasons[i] = NULL_TIMESTAMP
        elif ts[i] >= cutoff_micros:
            reasons[i] = FUTURE_TIMESTAMP
        elif types[i] == SEARCH:
            if blank_query[i]:
                reasons[i] = MISSING_QUERY
        elif types[i] in PRODUCT_EVENTS:
            if blank_product[i]:
                reasons[i] = MISSING_PRODUCT_ID
            elif not known_product[i]:
                reasons[i] = UNKNOWN_PRODUCT_ID
    return _checked_table(batch, reasons, types, ts, null_ts, query, partitions)


def _checked_table(
    batch: pa.Table,
    reasons: list[Optional[str]],
    types: list,
    ts: np.ndarray,
    null_ts: np.ndarray,
    query: pa.ChunkedArray,
    partitions: int,
) -> pa.Table:
    bad = np.array([r is not None for r in reasons], dtype=bool)
    users_raw = batch[C.USER_ID].cast(pa.binary()).to_pylist()
    rows = batch[C.SOURCE_ROW].to_numpy()
    buckets = [
        bucket_of(u, partitions) if u is not None else int(rows[i]) % partitions
        for i, u in enumerate(users_raw)
    ]
    if bad.any():
        # Rejected rows must still be valid, bounded text in the set-aside file.
        users = [
            (_shown(u) if bad[i] else u.decode()) if u is not None else None for i, u in enumerate(users_raw)
        ]
        products = [
            (_shown(p) if bad[i] else p.decode()) if p is not None else None
            for i, p in enumerate(batch[C.PRODUCT_ID].cast(pa.binary()).to_pylist())
        ]
        types = [_shown(t.encode()) if (bad[i] and t is not None) else t for i, t in enumerate(types)]
        user_col, product_col = pa.array(users, pa.string()), pa.array(products, pa.string())
    else:
        user_col, product_col = batch[C.USER_ID].cast(pa.string()), batch[C.PRODUCT_ID].cast(pa.string())
    bad_arr = pa.array(bad)
    none_str = pa.nulls(len(bad), pa.string())
    return pa.table(
        {
            C.USER_ID: user_col,
            EVENT_TYPE: pa.array(types, pa.string()),
            C.PRODUCT_ID: product_col,
            QUERY: pc.if_else(bad_arr, none_str, query),  # a rejected event's query is never carried on
            TS: pa.array(ts, pa.int64(), mask=null_ts),
            C.REASON: pa.array(reasons, pa.string()),
            C.SOURCE: pc.if_else(bad_arr, batch[C.SOURCE], none_str),
            C.SOURCE_ROW: pc.if_else(bad_arr, batch[C.SOURCE_ROW], pa.nulls(len(bad), pa.int64())),
            BUCKET: pa.array(buckets, pa.int32()),
        },
        schema=CHECKED_SCHEMA,
    )


def rejected_rows(checked: pa.Table) -> pa.Table:
    """The set-aside rows of a checked table, sorted by file and row."""
    rows = checked.filter(pc.is_valid(checked[C.REASON]))
    rows = rows.sort_by([(C.SOURCE, "ascending"), (C.SOURCE_ROW, "ascending")])
    return pa.table(
        {
            C.SOURCE: rows[C.SOURCE],
            C.SOURCE_ROW: rows[C.SOURCE_ROW],
            C.REASON: rows[C.REASON],
            C.USER_ID: rows[C.USER_ID],
            EVENT_TYPE: rows[EVENT_TYPE],
            C.PRODUCT_ID: rows[C.PRODUCT_ID],
            TS: rows[TS].cast(pa.timestamp("us", tz="UTC")),
        },
        schema=REJECTED_SCHEMA,
    )


def reason_counts(checked: pa.Table) -> dict[str, int]:
    counts = pc.value_counts(checked.filter(pc.is_valid(checked[C.REASON]))[C.REASON]).to_pylist()
    return {c["values"]: c["counts"] for c in counts}


def group_by_user(accepted: pa.Table) -> tuple[list[str], list[tuple[int, int]], dict[str, list]]:
    """Accepted rows sorted by user: the users, each one's [start, end) row
    range, and the columns as Python lists."""
    if accepted.num_rows == 0:
        return [], [], {c: [] for c in (EVENT_TYPE, TS, C.PRODUCT_ID, QUERY)}
    accepted = accepted.sort_by([(C.USER_ID, "ascending")])
    users = accepted[C.USER_ID].to_pylist()
    cols = {c: accepted[c].to_pylist() for c in (EVENT_TYPE, TS, C.PRODUCT_ID, QUERY)}
    starts = [0] + [i for i in range(1, len(users)) if users[i] != users[i - 1]]
    ends = starts[1:] + [len(users)]
    return [users[s] for s in starts], list(zip(starts, ends)), cols


def events_of(cols: dict[str, list], start: int, end: int) -> list[Event]:
    return [
        Event(t, ts, p, q)
        for t, ts, p, q in zip(
            cols[EVENT_TYPE][start:end],
            cols[TS][start:end],
            cols[C.PRODUCT_ID][start:end],
            cols[QUERY][start:end],
        )
    ]
