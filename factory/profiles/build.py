"""Build the users table from behaviour events on Ray Data.

    prepare()  on the driver: check the events' footers, read the catalog and
               the optional users table (the nightly job's own readers and
               contracts); pick the number of output files
    run()      read (file, row group) -> check each event (reason or none,
               bucket = crc32(user_id) mod files) -> group by bucket ->
               per bucket: one profile per user (``aggregate.build_profile``),
               sorted by user id, written as ``part-NNNNN.parquet``; rejected
               events to ``_rejected_events/part-NNNNN.parquet``
               then ``_summary.json``, written last

Output layout (``--users`` of the nightly job is the folder itself: its
reader skips names starting with ``_``):

    <output>/part-00000.parquet ...          profiles, one row per user
    <output>/_rejected_events/part-*.parquet events set aside, with file, row, reason
    <output>/_summary.json                   counts, settings, inputs

Grouping by a hash bucket rather than by user keeps the number of tasks and
files fixed by the input (not by the number of users), and the file a user
lands in is the same on every run, so the same input and ``as_of`` give
byte-identical profile files.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from factory import columns as C
from factory import inputs
from factory.cluster import stage_actors
from factory.errors import Failed
from factory.profiles import events as E
from factory.profiles.aggregate import (
    LOYALTY_TIER,
    ProfileSettings,
    UserFacts,
    build_profile,
    catalog_facts,
    profiles_table,
)
from factory.ray_session import deref, start_or_join
from factory.storage import DEFAULT_MAX_ATTEMPTS, Location, list_files, put_bytes, resolve, write_parquet

logger = logging.getLogger(__name__)

SUMMARY = "_summary.json"
REJECTED_DIR = "_rejected_events"
EVENTS_PER_FILE = 250_000  # the automatic number of output files: one per this many events
MAX_FILES = 4096
CATALOG_COLUMNS = (C.PRODUCT_ID, "title", "category", "brand", "price", "currency")

PARTITION_STATS = pa.schema(
    [
        ("bucket", pa.int32()),
        ("profiles", pa.int64()),
        ("users_with_events", pa.int64()),
        ("events_used", pa.int64()),
        ("rejected", pa.int64()),
        ("rejected_by_reason", pa.string()),
        ("file", pa.string()),
        ("bytes", pa.int64()),
    ]
)


class ProfileJobConfig(BaseModel):
    """Everything one profile build needs; validated before Ray starts."""

    model_config = ConfigDict(extra="forbid")

    events: str = Field(description="Events Parquet file or folder (local or s3://).")
    products: str = Field(description="Product catalog Parquet (the nightly job's products contract).")
    users: Optional[str] = Field(
        default=None,
        description="Optional users table: locale and loyalty_tier "
        "are taken from it (nothing else); its users get a profile even with no events.",
    )
    output: str = Field(description="Output folder or s3://bucket/prefix: the nightly job's --users.")
    settings: ProfileSettings = Field(default_factory=ProfileSettings)
    partitions: Optional[int] = Field(
        default=None,
        ge=1,
        le=MAX_FILES,
        description=f"Output files; default one per {EVENTS_PER_FILE} events.",
    )
    s3_endpoint: Optional[str] = Field(default=None, description="S3-compatible endpoint URL.")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_max_attempts: int = Field(
        default=DEFAULT_MAX_ATTEMPTS, ge=1, le=50, description="Tries per S3 request."
    )
    cpu_stage_num_cpus: float = Field(
        default=0.25, gt=0, le=8, description="CPUs reserved per task: small, so stages share a small node."
    )

    def resolve(self, uri: str) -> Location:
        try:
            return resolve(uri, self.s3_endpoint, self.s3_region, s3_max_attempts=self.s3_max_attempts)
        except ValueError as exc:  # an unsupported scheme: a config error, not a crash
            raise inputs.InputError(str(exc)) from exc


class IncompleteBuild(Failed):
    """Events went missing between the read and the output; no summary was written."""


@dataclass
class Plan:
    config: ProfileJobConfig
    events: inputs.ParquetInput
    catalog: pa.Table  # CATALOG_COLUMNS
    users: pa.Table  # user_id, locale, loyalty_tier, bucket
    output: Location
    partitions: int
    table_problems: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class BuildResult:
    output_uri: str
    summary_uri: str
    partitions: int
    events_read: int
    events_used: int
    events_rejected: int
    rejected_by_reason: dict[str, int]
    profiles: int
    users_with_events: int
    files: list[dict[str, Any]]
    seconds: float
    table_problems: dict[str, dict[str, int]] = field(default_factory=dict)


def prepare(config: ProfileJobConfig) -> Plan:
    """Every check that can fail on the stores or the input's shape, before Ray starts."""
    from factory.preflight import check_place

    storage = dict(
        s3_endpoint=config.s3_endpoint, s3_region=config.s3_region, s3_max_attempts=config.s3_max_attempts
    )
    for flag, uri in (
        ("--events", config.events),
        ("--products", config.products),
        ("--users", config.users),
    ):
        check_place(uri, flag, storage)
    check_place(config.output, "--output", storage, write=True)
    events = E.check_events_schema(config.resolve(config.events))
    products, report = inputs.read_lookup_table(
        config.resolve(config.products), inputs.PRODUCTS, C.PRODUCT_ID
    )
    report.log()
    problems = {"products": report.problems} if report.problems else {}
    partitions = config.partitions or max(1, min(MAX_FILES, -(-events.rows // EVENTS_PER_FILE)))
    users = _users_table(None, partitions)
    if config.users:
        table, report = inputs.read_lookup_table(config.resolve(config.users), inputs.USERS, C.USER_ID)
        report.log()
        users = _users_table(table, partitions)
        if report.problems:
            problems["users"] = report.problems
    return Plan(
        config,
        events,
        products.select(list(CATALOG_COLUMNS)),
        users,
        config.resolve(config.output),
        partitions,
        problems,
    )


def _users_table(table: Optional[pa.Table], partitions: int) -> pa.Table:
    """Only locale and loyalty tier leave the users table (age band and the
    rest are never copied), with each user's bucket."""
    if table is None:
        return pa.table(
            {
                C.USER_ID: pa.array([], pa.string()),
                C.LOCALE: pa.array([], pa.string()),
                LOYALTY_TIER: pa.array([], pa.string()),
                E.BUCKET: pa.array([], pa.int32()),
            }
        )
    ids = table[C.USER_ID]
    return pa.table(
        {
            C.USER_ID: ids,
            C.LOCALE: table[C.LOCALE],
            LOYALTY_TIER: table[LOYALTY_TIER],
            E.BUCKET: pa.array([E.bucket_of(u, partitions) for u in ids.to_pylist()], pa.int32()),
        }
    )


class BuildPartition:
    """One bucket's checked events in, its profile and rejects files out, one stats row back."""

    def __init__(self, catalog, users, settings: dict, output: Location, partitions: int):

        catalog = deref(catalog)
        self._users = deref(users)
        self._catalog = catalog_facts(catalog)
        self._settings = ProfileSettings.model_validate(settings)
        self._output = output
        self._partitions = partitions

    def __call__(self, checked: pa.Table) -> pa.Table:
        bucket = checked[E.BUCKET][0].as_py()
        return pa.Table.from_pylist([self.build(bucket, checked)], schema=PARTITION_STATS)

    def build(self, bucket: int, checked: pa.Table) -> dict[str, Any]:
        accepted = checked.filter(pc.is_null(checked[C.REASON]))
        known = self._users.filter(pc.equal(self._users[E.BUCKET], bucket))
        facts = {
            u: UserFacts(loc, tier)
            for u, loc, tier in zip(
                known[C.USER_ID].to_pylist(), known[C.LOCALE].to_pylist(), known[LOYALTY_TIER].to_pylist()
            )
        }
        users, spans, cols = E.group_by_user(accepted)
        profiles = [
            build_profile(u, E.events_of(cols, s, e), self._catalog, self._settings, facts.get(u))
            for u, (s, e) in zip(users, spans)
        ]
        with_events = set(users)
        profiles += [
            build_profile(u, [], self._catalog, self._settings, f)
            for u, f in facts.items()
            if u not in with_events
        ]
        profiles.sort(key=lambda p: p[C.USER_ID])
        name, size = f"part-{bucket:05d}.parquet", 0
        if profiles:
            size = write_parquet(self._output.join(name), profiles_table(profiles))
        rejected = E.rejected_rows(checked)
        if rejected.num_rows:
            write_parquet(self._output.join(REJECTED_DIR, name), rejected)
        return {
            "bucket": bucket,
            "profiles": len(profiles),
            "users_with_events": len(users),
            "events_used": accepted.num_rows,
            "rejected": rejected.num_rows,
            "rejected_by_reason": json.dumps(E.reason_counts(checked), sort_keys=True),
            "file": name if profiles else None,
            "bytes": size,
        }


def _clear_output(output: Location) -> None:
    """Remove what an earlier build left (its file count may differ); nothing else."""
    for info in list_files(output):
        rel = info.path[len(output.path) :].lstrip("/")
        ours = (
            (rel.startswith("part-") and "/" not in rel)
            or rel.startswith(REJECTED_DIR + "/")
            or rel == SUMMARY
        )
        if ours:
            output.fs.delete_file(info.path)


def run(config: ProfileJobConfig) -> BuildResult:
    import ray
    from ray.data.context import ShuffleStrategy

    started = time.time()
    plan = prepare(config)
    start_or_join()
    ctx = ray.data.DataContext.get_current()
    # See factory.pipeline: the V1 Parquet path honours num_cpus on small nodes.
    ctx.use_datasource_v2 = False
    # The default hash shuffle starts aggregator actors on every run (seen:
    # 22 s against 6 s for the sample's 7,582 events on 2 cores); the sort
    # shuffle runs as plain tasks.
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    _clear_output(plan.output)
    settings = config.settings.model_dump(mode="json")
    catalog_ref, users_ref = ray.put(plan.catalog), ray.put(plan.users)
    builder_args = dict(
        catalog=catalog_ref,
        users=users_ref,
        settings=settings,
        output=plan.output,
        partitions=plan.partitions,
    )
    stats = _run_dataset(plan, builder_args) if plan.events.rows else []
    done = {s["bucket"] for s in stats}
    missing = [b for b in range(plan.partitions) if b not in done]
    if missing:
        # Buckets with no events still owe profiles to the users table's users.
        local = BuildPartition(plan.catalog, plan.users, settings, plan.output, plan.partitions)
        empty = pa.Table.from_pylist([], schema=E.CHECKED_SCHEMA)
        stats += [local.build(b, empty) for b in missing]
    return _finish(plan, sorted(stats, key=lambda s: s["bucket"]), started)


def _run_dataset(plan: Plan, builder_args: dict) -> list[dict]:
    import ray

    light = plan.config.cpu_stage_num_cpus
    checked = plan.events
    items = E.read_items(checked)
    display = {f: (f"s3://{f}" if checked.loc.is_s3 else f) for f in checked.files}
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(
        E.ReadEvents(checked.loc.fs, checked.names, display),
        batch_size=1,
        batch_format="numpy",
        num_cpus=light,
    )
    ds = ds.map_batches(
        E.CheckEvents,
        fn_constructor_kwargs=dict(
            product_ids=ray.put(plan.catalog[C.PRODUCT_ID].combine_chunks()),
            cutoff_micros=plan.config.settings.cutoff_micros,
            partitions=plan.partitions,
        ),
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=stage_actors(None)),
        num_cpus=light,
    )
    grouped = ds.groupby(E.BUCKET, num_partitions=plan.partitions)
    out = grouped.map_groups(
        BuildPartition,
        fn_constructor_kwargs=builder_args,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=stage_actors(None)),
        num_cpus=light,
    )
    return out.take_all()


def _finish(plan: Plan, stats: list[dict], started: float) -> BuildResult:
    read = plan.events.rows
    used, rejected = sum(s["events_used"] for s in stats), sum(s["rejected"] for s in stats)
    if used + rejected != read:
        raise IncompleteBuild(
            f"{read} events read but {used} used and {rejected} set aside; "
            f"no summary written, rerun the build"
        )
    reasons: dict[str, int] = {}
    for s in stats:
        for reason, n in json.loads(s["rejected_by_reason"]).items():
            reasons[reason] = reasons.get(reason, 0) + n
    summary_loc = plan.output.join(SUMMARY)
    result = BuildResult(
        output_uri=plan.output.uri,
        summary_uri=summary_loc.uri,
        partitions=plan.partitions,
        events_read=read,
        events_used=used,
        events_rejected=rejected,
        rejected_by_reason=dict(sorted(reasons.items())),
        profiles=sum(s["profiles"] for s in stats),
        users_with_events=sum(s["users_with_events"] for s in stats),
        files=[{"file": s["file"], "rows": s["profiles"], "bytes": s["bytes"]} for s in stats if s["file"]],
        seconds=round(time.time() - started, 3),
        table_problems=plan.table_problems,
    )
    config = plan.config
    summary = {
        **asdict(result),
        "settings": config.settings.model_dump(mode="json"),
        "inputs": {"events": config.events, "products": config.products, "users": config.users},
        "rejected_events": f"{plan.output.uri}/{REJECTED_DIR}/" if result.events_rejected else None,
    }
    put_bytes(
        summary_loc, json.dumps(summary, indent=2, sort_keys=True).encode(), content_type="application/json"
    )
    logger.info(
        "Profiles: %d users from %d of %d events (%d set aside) in %.1f s",
        result.profiles,
        result.events_used,
        result.events_read,
        result.events_rejected,
        result.seconds,
    )
    return result
