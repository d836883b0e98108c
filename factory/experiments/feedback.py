"""Feedback in: delivery events joined to published rows, on Ray Data.

    python jobs/ingest_feedback.py --events s3://crm/delivery/ --runs s3://marketing-copy/nightly \
        --output s3://marketing-copy/feedback

The events contract (Parquet, local or s3://; other columns are never read):

    row_id      string     the published row the event is about: a copies row's row_id,
                           or a holdout row's (the run's holdout file)
    event_type  string     impression | click | conversion
    ts          timestamp  when it happened (without a time zone: UTC)

Give the job every event since the experiments began (the whole folder), not
only the new ones: the table is rebuilt from them each time, so a rerun over
the same events gives the same table, byte for byte.

Counting is per delivered copy: a row is impressed, clicked and converted at
most once, so rates are shares of delivered copies (clicks / impressions, at
most 1) and intervals are binomial. Holdout rows have no copy: downstream
sends an ``impression`` for a holdout row when the user would have been sent
the message (the send opportunity: same day, same channel), and a
``conversion`` when the user bought the product; lift over holdout compares
conversions per impression. A click on a holdout row cannot happen.

Set aside, with file, row and reason (``rejects/part-NNNNN.parquet``), never
dropped: a malformed row id (``null_row_id``, ``invalid_utf8_row_id``, ...),
``unknown_event_type``, ``null_timestamp``, ``unknown_row_id`` (no published
manifest lists the row), ``duplicate_event`` (the row's same event again: the
earliest is kept, ties by file and row), ``click_without_impression`` /
``conversion_without_impression``, and ``click_on_holdout``. The job checks
that every event read was either counted or set aside; otherwise it writes
no summary and fails (exit 1).

How it runs: the driver reads the events' footers and the runs' manifests,
nothing else. Ray Data reads the events (one task per row group) and the
rows the manifests list (only the key columns), tags each with a bucket
(crc32 of the row id), groups by bucket, and per bucket joins, checks and
counts; the per-bucket counts (one row per key) are summed by key, again on
Ray Data. Only the final table (one row per key: campaigns x arms x template
versions x channels x locales) reaches the driver, which writes it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from factory import columns as C
from factory import inputs
from factory.config import check_name
from factory.errors import Failed, UsageError
from factory.experiments.assign import ARM, EXPERIMENT_ID
from factory.experiments.config import HOLDOUT
from factory.experiments.stats import wilson
from factory.experiments.table import (
    CLICK,
    CLICKS,
    CONVERSION,
    CONVERSIONS,
    COUNTS,
    EVENT_TYPES,
    FEEDBACK_SCHEMA,
    FIRST_EVENT_AT,
    FORMAT,
    IMPRESSION,
    IMPRESSIONS,
    KEY,
    LAST_EVENT_AT,
    REJECTS,
    SUMMARY,
    TABLE,
    digest,
)
from factory.storage import (
    DEFAULT_MAX_ATTEMPTS,
    Location,
    list_files,
    put_bytes,
    read_parquet_part,
    resolve,
    write_parquet,
)

logger = logging.getLogger(__name__)

EVENT_TYPE, TS = "event_type", "ts"
EVENTS = inputs.Contract(
    "delivery events", required=(C.ROW_ID, EVENT_TYPE, TS), optional=(), string_fields=(C.ROW_ID, EVENT_TYPE)
)
ROWS_PER_BUCKET = 1_000_000  # the automatic number of buckets: one per this many events and rows
MAX_BUCKETS = 4096

UNKNOWN_EVENT_TYPE = "unknown_event_type"
NULL_TIMESTAMP = "null_timestamp"
UNKNOWN_ROW_ID = "unknown_row_id"
DUPLICATE_EVENT = "duplicate_event"
CLICK_ON_HOLDOUT = "click_on_holdout"
WITHOUT_IMPRESSION = "{}_without_impression"

# Both inputs in one shape, so they can meet in one group: kind 0 is a
# published row (its key columns set), kind 1 an event (reason set when bad).
_KIND, _BUCKET = "__kind", "__bucket"
ROW, EVENT = 0, 1
JOINED = pa.schema(
    [
        (_KIND, pa.int8()),
        (_BUCKET, pa.int32()),
        (C.ROW_ID, pa.string()),
        (EVENT_TYPE, pa.string()),
        (TS, pa.int64()),
        (C.REASON, pa.string()),
        (C.SOURCE, pa.string()),
        (C.SOURCE_ROW, pa.int64()),
        *[(k, pa.string()) for k in KEY],
    ]
)
REJECTS_SCHEMA = pa.schema(
    [
        (C.SOURCE, pa.string()),
        (C.SOURCE_ROW, pa.int64()),
        (C.REASON, pa.string()),
        (C.ROW_ID, pa.string()),
        (EVENT_TYPE, pa.string()),
        (TS, pa.timestamp("us", tz="UTC")),
    ]
)
# What a bucket hands on: counts per key (kind "counts"), and one row of its own figures (kind "stats").
_KEY_TEXT = "__key"
PARTIAL = pa.schema(
    [
        ("__what", pa.string()),
        (_KEY_TEXT, pa.string()),
        *[(k, pa.string()) for k in KEY],
        *[(c, pa.int64()) for c in COUNTS],
        ("__first", pa.int64()),
        ("__last", pa.int64()),
        ("__events", pa.int64()),
        ("__rejected", pa.int64()),
        ("__reasons", pa.string()),
    ]
)
# Published columns read from each run's files; absent ones (runs before experiments) are null.
PUBLISHED_COLUMNS = (C.ROW_ID, C.CAMPAIGN_ID, EXPERIMENT_ID, ARM, C.TEMPLATE_VERSION, C.CHANNEL, C.LOCALE)
# The files of a manifest that hold rows events can be about.
MANIFEST_KINDS = ("copies", "holdout")


class FeedbackJobConfig(BaseModel):
    """Everything one ingest needs; validated before Ray starts."""

    model_config = ConfigDict(extra="forbid")

    events: str = Field(
        description="Delivery events: Parquet file or folder (local or s3://), every event so far."
    )
    runs: str = Field(
        description="The nightly job's --output: its published runs (manifests) are what events join to."
    )
    output: str = Field(
        description="Folder or s3://bucket/prefix for the feedback table, rejects and summary."
    )
    campaigns: Optional[list[str]] = Field(
        default=None, description="Only runs of these campaigns. Default: all."
    )
    since: Optional[dt.date] = Field(default=None, description="Only runs on or after this run date.")
    until: Optional[dt.date] = Field(default=None, description="Only runs on or before this run date.")
    partitions: Optional[int] = Field(
        default=None,
        ge=1,
        le=MAX_BUCKETS,
        description=f"Buckets; default one per {ROWS_PER_BUCKET:,} events and rows.",
    )
    s3_endpoint: Optional[str] = Field(default=None, description="S3-compatible endpoint URL.")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_max_attempts: int = Field(
        default=DEFAULT_MAX_ATTEMPTS, ge=1, le=50, description="Tries per S3 request."
    )
    cpu_stage_num_cpus: float = Field(default=0.25, gt=0, le=8, description="CPUs reserved per task.")

    @field_validator("campaigns", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):  # a repeated flag's entries may each be a comma list
            value = [v.strip() for entry in value for v in str(entry).split(",") if v.strip()]
        return value

    @field_validator("campaigns")
    @classmethod
    def _names(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is None:
            return value
        if not value:
            raise ValueError("the list is empty (omit it to take every campaign)")
        return [check_name(v) for v in dict.fromkeys(value)]

    @field_validator("until")
    @classmethod
    def _order(cls, value: Optional[dt.date], info) -> Optional[dt.date]:
        since = info.data.get("since")
        if value is not None and since is not None and value < since:
            raise ValueError(f"{value} is before --since {since}")
        return value

    def resolve(self, uri: str) -> Location:
        try:
            return resolve(uri, self.s3_endpoint, self.s3_region, s3_max_attempts=self.s3_max_attempts)
        except ValueError as exc:
            raise inputs.InputError(str(exc)) from exc


class IncompleteIngest(Failed):
    """Events went missing between the read and the table; no summary was written."""


@dataclass
class PublishedRun:
    run_id: str
    manifest: str  # its URI
    files: list[str]  # paths (inside the filesystem) of the files events may name
    rows: int


@dataclass
class Plan:
    config: FeedbackJobConfig
    events: inputs.ParquetInput
    runs: list[PublishedRun]
    runs_loc: Location
    output: Location
    buckets: int


@dataclass
class IngestResult:
    output_uri: str
    table_uri: str
    summary_uri: str
    keys: int
    events_read: int
    events_counted: int
    events_rejected: int
    rejected_by_reason: dict[str, int]
    runs: int
    published_rows: int
    seconds: float
    totals: dict[str, int] = field(default_factory=dict)


# -------------------------------------------------------------------------- the driver: footers and manifests


def check_events(loc: Location) -> inputs.ParquetInput:
    """Every events file's footer: the contract's columns and a timestamp ``ts``."""
    checked = inputs.check_schema(loc, EVENTS)
    attempts = loc.s3.max_attempts if loc.s3 else 1
    for path in checked.files:
        typ = inputs.retry_io(pq.read_schema, path, filesystem=loc.fs, attempts=attempts).field(TS).type
        if not pa.types.is_timestamp(typ):
            shown = f"s3://{path}" if loc.is_s3 else path
            raise inputs.InputError(
                f"delivery events: {shown}: column {TS!r} must be a timestamp, found {typ}"
            )
    return checked


def child_folders(loc: Location, prefix: str) -> list[tuple[str, Location]]:
    """The folders right under ``loc`` whose names start with ``prefix``: (rest of the name,
    folder), sorted."""
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    out = []
    for info in infos:
        name = info.path.rstrip("/").rsplit("/", 1)[-1]
        if info.type == pafs.FileType.Directory and name.startswith(prefix):
            out.append((name[len(prefix) :], loc.join(name)))
    return sorted(out)


def published_runs(runs: Location, config: FeedbackJobConfig) -> list[PublishedRun]:
    """The published runs under the nightly job's output (newest attempt with a
    manifest, as every reader does), in date and campaign order."""
    from factory.publish import published_manifest

    out = []
    for day, day_loc in child_folders(runs.join("runs"), "date="):
        try:
            date = dt.date.fromisoformat(day)
        except ValueError:
            continue
        if (config.since and date < config.since) or (config.until and date > config.until):
            continue
        for campaign, run in child_folders(day_loc, "campaign="):
            if config.campaigns and campaign not in config.campaigns:
                continue
            manifest = published_manifest(run)
            if manifest is None:
                continue
            base = run.join(f"attempt={manifest['attempt']:04d}")
            listed = [f for kind in MANIFEST_KINDS for f in (manifest.get("files") or {}).get(kind) or []]
            out.append(
                PublishedRun(
                    manifest["run_id"],
                    base.join("manifest.json").uri,
                    [base.join(f["path"]).path for f in listed],
                    sum(f.get("rows", 0) for f in listed),
                )
            )
    return out


def prepare(config: FeedbackJobConfig) -> Plan:
    """Every check that can fail on the stores or the inputs' shape, before Ray starts."""
    from factory.preflight import check_place

    storage = dict(
        s3_endpoint=config.s3_endpoint, s3_region=config.s3_region, s3_max_attempts=config.s3_max_attempts
    )
    check_place(config.events, "--events", storage)
    check_place(config.runs, "--runs", storage)
    check_place(config.output, "--output", storage, write=True)
    events = check_events(config.resolve(config.events))
    runs_loc = config.resolve(config.runs)
    runs = published_runs(runs_loc, config)
    if not runs:
        scope = "".join(
            [
                f" of campaign(s) {', '.join(config.campaigns)}" if config.campaigns else "",
                f" from {config.since}" if config.since else "",
                f" to {config.until}" if config.until else "",
            ]
        )
        raise UsageError(
            f"--runs {runs_loc.uri}: no published runs{scope} (a run is published when its "
            "attempt has manifest.json)",
            "give the nightly job's --output, or widen --since/--until",
        )
    total = events.rows + sum(r.rows for r in runs)
    buckets = config.partitions or max(1, min(MAX_BUCKETS, -(-total // ROWS_PER_BUCKET)))
    return Plan(config, events, runs, runs_loc, config.resolve(config.output), buckets)


# --------------------------------------------------------------------------- Ray Data stages


def bucket_of(row_id: Optional[bytes], fallback: int, buckets: int) -> int:
    """A row id's bucket (crc32: the same in every process); a missing id spreads by row number."""
    return zlib.crc32(row_id) % buckets if row_id is not None else fallback % buckets


def _shown(value: Optional[bytes]) -> Optional[str]:
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    return text if len(text.encode()) <= inputs.MAX_KEY_BYTES else text[: inputs.MAX_KEY_BYTES] + "…"


def _micros(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (any unit; naive is UTC) as epoch microseconds, and where they are null."""
    us = column.cast(pa.timestamp("us", tz=column.type.tz), safe=False).cast(pa.int64())
    nulls = pc.is_null(us).to_numpy(zero_copy_only=False)
    return pc.fill_null(us, 0).to_numpy(zero_copy_only=False), nulls


class ReadEvents:
    """One row group of one events file, checked row by row: JOINED rows of kind EVENT."""

    def __init__(self, fs, display: dict[str, str], buckets: int):
        self._fs, self._display, self._buckets = fs, dict(display), buckets

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        tables = [
            self.read(p, int(g), int(f))
            for p, g, f in zip(batch["file"], batch["row_group"], batch["first_row"])
        ]
        return pa.concat_tables(tables)

    def read(self, path: str, group: int, first: int) -> pa.Table:
        table = read_parquet_part(self._fs, path, group, EVENTS.columns)
        n = table.num_rows
        ids_raw = table[C.ROW_ID].cast(pa.binary()).to_pylist()
        reasons = inputs.malformed_reasons(table[C.ROW_ID], C.ROW_ID)
        types_raw = table[EVENT_TYPE].cast(pa.binary()).to_pylist()
        ts, null_ts = _micros(table[TS])
        known = {t.encode() for t in EVENT_TYPES}
        for i in range(n):
            if reasons[i] is None and types_raw[i] not in known:
                reasons[i] = UNKNOWN_EVENT_TYPE
            elif reasons[i] is None and null_ts[i]:
                reasons[i] = NULL_TIMESTAMP
        good = [r is None for r in reasons]
        rows = np.arange(first, first + n)
        nulls = pa.nulls(n, pa.string())
        return pa.table(
            {
                _KIND: pa.array(np.full(n, EVENT, np.int8)),
                _BUCKET: pa.array(
                    [bucket_of(v, int(r), self._buckets) for v, r in zip(ids_raw, rows)], pa.int32()
                ),
                C.ROW_ID: pa.array(
                    [v.decode() if ok else _shown(v) for v, ok in zip(ids_raw, good)], pa.string()
                ),
                EVENT_TYPE: pa.array(
                    [v.decode() if ok else _shown(v) for v, ok in zip(types_raw, good)], pa.string()
                ),
                TS: pa.array(ts, pa.int64(), mask=null_ts),
                C.REASON: pa.array(reasons, pa.string()),
                C.SOURCE: pa.array([self._display.get(path, path)] * n, pa.string()),
                C.SOURCE_ROW: pa.array(rows, pa.int64()),
                **{k: nulls for k in KEY},
            },
            schema=JOINED,
        )


class ReadPublished:
    """The key columns of published files (as their manifests list them): JOINED rows of kind ROW."""

    def __init__(self, fs, buckets: int):
        self._fs, self._buckets = fs, buckets

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        return pa.concat_tables([self.read(p) for p in batch["file"]])

    def read(self, path: str) -> pa.Table:
        table = read_parquet_part(self._fs, path, None, PUBLISHED_COLUMNS, present_only=True)
        present = table.column_names
        n = table.num_rows
        ids = table[C.ROW_ID].cast(pa.string())
        cols = {k: (table[k].cast(pa.string()) if k in present else pa.nulls(n, pa.string())) for k in KEY}
        nulls = pa.nulls(n, pa.string())
        return pa.table(
            {
                _KIND: pa.array(np.full(n, ROW, np.int8)),
                _BUCKET: pa.array(
                    [bucket_of(v, 0, self._buckets) for v in ids.cast(pa.binary()).to_pylist()], pa.int32()
                ),
                C.ROW_ID: ids,
                EVENT_TYPE: nulls,
                TS: pa.nulls(n, pa.int64()),
                C.REASON: nulls,
                C.SOURCE: nulls,
                C.SOURCE_ROW: pa.nulls(n, pa.int64()),
                **cols,
            },
            schema=JOINED,
        )


def key_text(values) -> str:
    return json.dumps(list(values), separators=(",", ":"))


class JoinBucket:
    """One bucket: its published rows and its events. Checks what only the join
    can tell, writes the bucket's rejects file, returns counts per key (PARTIAL)."""

    def __init__(self, output: Location):
        self._output = output

    def __call__(self, group: pa.Table) -> pa.Table:
        bucket = group[_BUCKET][0].as_py()
        rows = group.filter(pc.equal(group[_KIND], ROW))
        events = group.filter(pc.equal(group[_KIND], EVENT))
        keys: dict[str, tuple] = {}
        for r in rows.select([C.ROW_ID, *KEY]).to_pylist():
            keys.setdefault(r[C.ROW_ID], tuple(r[k] for k in KEY))  # a row id listed twice counts once
        events = events.sort_by(
            [
                (C.ROW_ID, "ascending"),
                (EVENT_TYPE, "ascending"),
                (TS, "ascending"),
                (C.SOURCE, "ascending"),
                (C.SOURCE_ROW, "ascending"),
            ]
        )
        reasons = events[C.REASON].to_pylist()
        ids, types, ts = events[C.ROW_ID].to_pylist(), events[EVENT_TYPE].to_pylist(), events[TS].to_pylist()
        seen: set[tuple[str, str]] = set()
        for i in range(len(reasons)):  # earliest first: the first of a (row, event) is the one kept
            if reasons[i] is not None:
                continue
            if ids[i] not in keys:
                reasons[i] = UNKNOWN_ROW_ID
            elif (ids[i], types[i]) in seen:
                reasons[i] = DUPLICATE_EVENT
            else:
                seen.add((ids[i], types[i]))
        impressed = {row for row, kind in seen if kind == IMPRESSION}
        counts: dict[tuple, list] = {}
        for i in range(len(reasons)):
            if reasons[i] is not None:
                continue
            key = keys[ids[i]]
            if types[i] == CLICK and key[KEY.index(ARM)] == HOLDOUT:
                reasons[i] = CLICK_ON_HOLDOUT
                continue
            if types[i] != IMPRESSION and ids[i] not in impressed:
                reasons[i] = WITHOUT_IMPRESSION.format(types[i])
                continue
            c = counts.setdefault(key, [0, 0, 0, ts[i], ts[i]])
            c[(IMPRESSION, CLICK, CONVERSION).index(types[i])] += 1
            c[3], c[4] = min(c[3], ts[i]), max(c[4], ts[i])
        rejected = self._write_rejects(bucket, events, reasons)
        by_reason: dict[str, int] = {}
        for r in reasons:
            if r is not None:
                by_reason[r] = by_reason.get(r, 0) + 1
        out = [
            {
                "__what": "counts",
                _KEY_TEXT: key_text(k),
                **dict(zip(KEY, k)),
                IMPRESSIONS: c[0],
                CLICKS: c[1],
                CONVERSIONS: c[2],
                "__first": c[3],
                "__last": c[4],
            }
            for k, c in counts.items()
        ]
        out.append(
            {
                "__what": "stats",
                "__events": events.num_rows,
                "__rejected": rejected,
                "__reasons": json.dumps(by_reason, sort_keys=True),
            }
        )
        return pa.Table.from_pylist(out, schema=PARTIAL)

    def _write_rejects(self, bucket: int, events: pa.Table, reasons: list[Optional[str]]) -> int:
        bad = pa.array([r is not None for r in reasons], pa.bool_())
        rows = events.append_column("__why", pa.array(reasons, pa.string())).filter(bad)
        if rows.num_rows == 0:
            return 0
        rows = rows.sort_by([(C.SOURCE, "ascending"), (C.SOURCE_ROW, "ascending")])
        table = pa.table(
            [
                rows[C.SOURCE],
                rows[C.SOURCE_ROW],
                rows["__why"],
                rows[C.ROW_ID],
                rows[EVENT_TYPE],
                rows[TS].cast(pa.timestamp("us", tz="UTC")),
            ],
            schema=REJECTS_SCHEMA,
        )
        write_parquet(self._output.join(REJECTS, f"part-{bucket:05d}.parquet"), table)
        return rows.num_rows


def combine(group: pa.Table) -> pa.Table:
    """One key's per-bucket counts summed, with its rates and intervals (FEEDBACK_SCHEMA)."""
    first = group.slice(0, 1).to_pylist()[0]
    n = {c: int(pc.sum(group[c]).as_py() or 0) for c in COUNTS}
    ctr, cvr = wilson(n[CLICKS], n[IMPRESSIONS]), wilson(n[CONVERSIONS], n[IMPRESSIONS])
    row = {
        **{k: first[k] for k in KEY},
        **n,
        "ctr": ctr.value,
        "ctr_low": ctr.low,
        "ctr_high": ctr.high,
        "cvr": cvr.value,
        "cvr_low": cvr.low,
        "cvr_high": cvr.high,
        FIRST_EVENT_AT: pc.min(group["__first"]).as_py(),
        LAST_EVENT_AT: pc.max(group["__last"]).as_py(),
    }
    return pa.Table.from_pylist(
        [row],
        schema=pa.schema(
            [*FEEDBACK_SCHEMA][:-2] + [(FIRST_EVENT_AT, pa.int64()), (LAST_EVENT_AT, pa.int64())]
        ),
    )


# --------------------------------------------------------------------------- the run


def _clear_output(output: Location) -> None:
    """What an earlier ingest wrote (the summary first: no reader trusts a half-new table); nothing else."""
    from factory.storage import delete_file

    delete_file(output.join(SUMMARY))
    for info in list_files(output):
        rel = info.path[len(output.path) :].lstrip("/")
        if rel == TABLE or rel.startswith(REJECTS + "/"):
            delete_file(output.join(rel))


def run(config: FeedbackJobConfig) -> IngestResult:
    import ray
    from ray.data.context import ShuffleStrategy

    from factory.ray_session import start_or_join

    started = time.time()
    plan = prepare(config)
    start_or_join()
    ctx = ray.data.DataContext.get_current()
    ctx.use_datasource_v2 = False  # as factory.pipeline: the V1 path honours num_cpus on small nodes
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED  # plain tasks (factory/profiles/build.py)
    _clear_output(plan.output)
    light = config.cpu_stage_num_cpus
    ev = plan.events
    items = [{"file": p, "row_group": g, "first_row": f} for p, g, f in _row_groups(ev)]
    display = {f: (f"s3://{f}" if ev.loc.is_s3 else f) for f in ev.files}
    files = [{"file": f} for r in plan.runs for f in r.files]
    parts = []
    if items:
        parts.append(
            ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                ReadEvents(ev.loc.fs, display, plan.buckets),
                batch_size=1,
                batch_format="numpy",
                num_cpus=light,
            )
        )
    if files:
        parts.append(
            ray.data.from_items(files, override_num_blocks=len(files)).map_batches(
                ReadPublished(plan.runs_loc.fs, plan.buckets),
                batch_size=1,
                batch_format="numpy",
                num_cpus=light,
            )
        )
    if not parts:  # no events and no published rows: an empty table, said so in the summary
        return _finish(plan, FEEDBACK_SCHEMA.empty_table(), [], started)
    joined = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    partials = (
        joined.groupby(_BUCKET, num_partitions=plan.buckets)
        .map_groups(
            JoinBucket,
            fn_constructor_kwargs=dict(output=plan.output),
            batch_format="pyarrow",
            num_cpus=light,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=_actors()),
        )
        .materialize()
    )
    stats = (
        partials.map_batches(_only("stats"), batch_format="pyarrow", num_cpus=light)
        .select_columns(["__events", "__rejected", "__reasons"])
        .take_all()
    )
    counts = partials.map_batches(_only("counts"), batch_format="pyarrow", num_cpus=light)
    final = (
        counts.groupby(_KEY_TEXT).map_groups(combine, batch_format="pyarrow", num_cpus=light)
        if counts.count()
        else None
    )
    table = _final_table(final.to_arrow_refs() if final is not None else [])
    return _finish(plan, table, stats, started)


class _only:
    """Keep the PARTIAL rows of one kind."""

    def __init__(self, what: str):
        self._what = what

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch.filter(pc.equal(batch["__what"], self._what))


def _actors() -> int:
    from factory.cluster import stage_actors

    return stage_actors(None)


def _row_groups(ev: inputs.ParquetInput):
    for path in ev.files:
        first = 0
        for group, n in enumerate(ev.row_groups.get(path, [])):
            yield path, group, first
            first += n


def _final_table(refs) -> pa.Table:
    """The summed rows (one per key), sorted by key, timestamps as UTC."""
    import ray

    parts = [t for t in ray.get(list(refs)) if t.num_rows]
    if not parts:
        return FEEDBACK_SCHEMA.empty_table()
    table = pa.concat_tables(parts)
    table = table.sort_by([(k, "ascending", "at_start") for k in KEY])
    arrays = [
        table[f.name].cast(f.type)
        if f.name not in (FIRST_EVENT_AT, LAST_EVENT_AT)
        else table[f.name].cast(pa.timestamp("us", tz="UTC"))
        for f in FEEDBACK_SCHEMA
    ]
    return pa.table(arrays, schema=FEEDBACK_SCHEMA)


def _finish(plan: Plan, table: pa.Table, stats: list[dict], started: float) -> IngestResult:
    read = plan.events.rows
    seen = sum(s["__events"] for s in stats)
    rejected = sum(s["__rejected"] for s in stats)
    totals = {c: int(pc.sum(table[c]).as_py() or 0) for c in COUNTS}
    counted = sum(totals.values())
    if seen != read or counted + rejected != read:
        raise IncompleteIngest(
            f"{read} events read but {seen} reached the join, {counted} counted and {rejected} "
            "set aside; no summary written, rerun the ingest"
        )
    reasons: dict[str, int] = {}
    for s in stats:
        for reason, n in json.loads(s["__reasons"] or "{}").items():
            reasons[reason] = reasons.get(reason, 0) + n
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    put_bytes(plan.output.join(TABLE), data)
    result = IngestResult(
        output_uri=plan.output.uri,
        table_uri=plan.output.join(TABLE).uri,
        summary_uri=plan.output.join(SUMMARY).uri,
        keys=table.num_rows,
        events_read=read,
        events_counted=counted,
        events_rejected=rejected,
        rejected_by_reason=dict(sorted(reasons.items())),
        runs=len(plan.runs),
        published_rows=sum(r.rows for r in plan.runs),
        seconds=round(time.time() - started, 3),
        totals=totals,
    )
    summary = {
        "format": FORMAT,
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "table": {"file": TABLE, "rows": table.num_rows, "bytes": len(data), "sha256": digest(data)},
        "events": {
            "uri": plan.events.loc.uri,
            "files": len(plan.events.files),
            "read": read,
            "counted": counted,
            "rejected": rejected,
            "rejected_by_reason": result.rejected_by_reason,
            "rejects": f"{plan.output.uri}/{REJECTS}/" if rejected else None,
        },
        "totals": totals,
        "runs": {
            "uri": plan.runs_loc.uri,
            "count": len(plan.runs),
            "rows": result.published_rows,
            "manifests": [{"run_id": r.run_id, "manifest": r.manifest} for r in plan.runs],
        },
        "settings": plan.config.model_dump(mode="json", exclude={"s3_endpoint"}),
        "buckets": plan.buckets,
        "seconds": result.seconds,
    }
    put_bytes(
        plan.output.join(SUMMARY),
        json.dumps(summary, indent=2, sort_keys=True).encode(),
        content_type="application/json",
    )
    logger.info(
        "Feedback: %d key(s) from %d of %d events (%d set aside) in %.1f s",
        table.num_rows,
        counted,
        read,
        rejected,
        result.seconds,
    )
    return result
