"""Pass 1 and staging: from the input's pairs to the rows the run owes.

Pass 1 (Ray Data, CPU only) reads every pair in scope with its file and row,
checks it, sends what cannot be served to the dead letters and writes the
rest split by a hash of the product into buckets. Staging then turns each
bucket into its owed rows (``factory.pipeline.owed``) in a Ray task of its
own: row ids, identical prompts (the followers), the prefix-cache order and
duplicate pairs are all decided within one product, so no decision needs two
buckets, and the driver only adds up what the tasks return.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory import dead_letters, dedup, footer, inputs, internals
from factory.config import JobConfig
from factory.fingerprint import Fingerprint
from factory.pipeline.experiment import ArmRows, holdout_folder
from factory.pipeline.owed import CAMPAIGN, Owed, owed_rows
from factory.pipeline.plan import (
    ROWS_PER_FILE,
    ConfigError,
    InScope,
    Plan,
    input_pairs,
    join_partitions,
    row_group_items,
    scope,
    stage_pool,
)
from factory.publish import Attempt
from factory.stages.check import CheckPairs, ReadPairs
from factory.stages.join import row_id
from factory.stages.users import JOIN_KEY, AttachUsers, after_join, join_key, user_side
from factory.stages.write import Sink, WriteParquetFiles
from factory.storage import (
    Location,
    delete_dir_if_exists,
    list_files,
    outer_attempts,
    read_parquet,
    write_parquet,
)

logger = logging.getLogger(__name__)

# What pass 1 keeps of a servable pair for staging: its key, where it came
# from and its user (pass 1 attached the user: factory/stages/users.py).
STAGED_PAIR_COLUMNS = (
    *(C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.SOURCE, C.SOURCE_ROW),
    *C.USER_COLUMNS,
)
STAGED_PAIR_SCHEMA = pa.schema(
    [(c, pa.string()) for c in STAGED_PAIR_COLUMNS[:5]]
    + [(C.SOURCE_ROW, pa.int64())]
    + [(c, inputs.USERS.type_of(c)) for c in C.USER_COLUMNS]
)
# What a staged row keeps: its key (the row id is added from it).
STAGED_ROW_COLUMNS = (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.VARIANT)

# Pairs per staging bucket: what bounds one staging task's memory (measured
# at 1M pairs: +150 MiB for buckets of ~100k pairs).
STAGE_BUCKET_PAIRS = 100_000
# Pass 1 writes a file per writer batch and bucket, so the batch grows with
# the input: at most PASS1_BATCHES batches, so at most that many files per
# bucket (16k files in all at 50M pairs, not one per 50k pairs per bucket).
PASS1_BATCHES = 32
PASS1_MAX_BATCH_PAIRS = 2_000_000
# How many of the input's campaigns a "no such campaign" error lists.
LISTED_CAMPAIGNS = 20


def write(
    ds, sinks: dict[str, Sink], num_cpus: float, route: str | None = None, rows_per_file: int = ROWS_PER_FILE
) -> list[dict[str, Any]]:
    """Write ``ds`` to its sinks; return one {sink, file, rows, bytes} per file written."""
    written = ds.map_batches(
        WriteParquetFiles(sinks, route), batch_size=rows_per_file, batch_format="pyarrow", num_cpus=num_cpus
    )
    return sorted(written.take_all(), key=lambda r: (r["sink"], r["file"] or ""))


def read(files: list[str], folder: Location, num_cpus: float, **kwargs):
    """Parquet files under ``folder`` as a Dataset, tried as often as the
    job's own reads. The run's paths hold ``date=``, ``campaign=`` and
    ``attempt=``: read as Hive partitions they would add (or override!)
    columns of those names, so no file is read as partitioned."""
    import ray

    fs = internals.ray_data_filesystem(folder.fs, outer_attempts(folder))
    return ray.data.read_parquet(files, filesystem=fs, partitioning=None, num_cpus=num_cpus, **kwargs)


# --------------------------------------------------------------------------- pass 1


def check_pairs(plan: Plan, attempt: Attempt, products, fresh: bool) -> int:
    """Pass 1: every pair in scope checked; dead letters written, servable
    pairs written to their product's bucket. Returns the number of buckets.
    A ``--campaign`` that no pair has is a usage error (the attempt is
    removed when this process began it: nothing of it is worth keeping)."""
    config = plan.config
    light = config.cpu_stage_num_cpus
    for loc in (attempt.dead_letters, attempt.checked):
        delete_dir_if_exists(loc)
    n_buckets = stage_buckets(plan)
    checked = checked_pairs(plan, products).map_batches(
        route_checked,
        fn_kwargs={
            "run_id": config.run_id,
            "run_date": config.run_date,
            "campaign": config.campaign,
            "n_buckets": n_buckets,
        },
        batch_format="pyarrow",
        num_cpus=light,
    )
    buckets = {
        bucket_name(b): Sink(attempt.checked.join(bucket_name(b)), staged_pair_shape)
        for b in range(n_buckets)
    }
    written = write(
        checked,
        {
            "dead_letters": Sink(attempt.dead_letters, dead_letters.shape, footer.dead_letter_entries),
            **buckets,
        },
        light,
        route=C.ROUTE,
        rows_per_file=pass1_batch_pairs(plan),
    )
    if config.campaign and not sum(w["rows"] for w in written):
        if fresh:
            delete_dir_if_exists(attempt.base)
        raise ConfigError(
            f"--campaign {config.campaign}: no pair in {plan.pairs.loc.uri} has this campaign_id",
            campaigns_in(plan.pairs, light),
        )
    write_lookup_rejects(plan, attempt)
    servable = sum(w["rows"] for w in written if w["sink"] != "dead_letters")
    logger.info("%d servable pair(s) in %d product bucket(s)", servable, n_buckets)
    return n_buckets


def checked_pairs(plan: Plan, products, mark_locale_excluded: bool = False):
    """Every pair in scope, read with its provenance and checked. With
    ``mark_locale_excluded`` (the dry run, which counts them) the pairs of
    users whose locale the run does not write are kept, marked in
    LOCALE_EXCLUDED_COLUMN, instead of dropped (no such column when the
    run has no scope: nothing is excluded)."""
    import ray

    config = plan.config
    light = config.cpu_stage_num_cpus
    pairs = plan.pairs
    items = row_group_items(pairs, config.limit, config.campaign)
    display = {f: (f"s3://{f}" if pairs.loc.is_s3 else f) for f in pairs.files}
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(
        ReadPairs(pairs.loc.fs, pairs.columns, display), batch_size=1, batch_format="numpy", num_cpus=light
    )
    found = scope(plan)
    if any(found.get(k) is not None for k in ("user_ids", "product_ids", "excluded_users")):
        # Id sets to index: on an actor pool, indexed once per actor.
        ds = ds.map_batches(
            InScope,
            fn_constructor_kwargs=dict(**found, mark_excluded=mark_locale_excluded),
            batch_format="pyarrow",
            compute=stage_pool(config),
            num_cpus=light,
        )
    elif found:  # a campaign alone: nothing to index, a task beside the read
        ds = ds.map_batches(InScope(**found), batch_format="pyarrow", num_cpus=light)
    return with_users(ds, plan).map_batches(
        CheckPairs,
        fn_constructor_kwargs=dict(products=products, known_channels=list(plan.templates)),
        batch_format="pyarrow",
        compute=stage_pool(config),
        num_cpus=light,
    )


def with_users(ds, plan: Plan):
    """Each pair with its user's columns (factory/stages/users.py): a users
    table of ``--users-join-rows`` users or more through Ray Data's hash
    join, where each reduce task holds only its share of the users; a
    smaller one broadcast and looked up by an index built once per actor."""
    import ray

    config = plan.config
    light = config.cpu_stage_num_cpus
    if plan.users_rows < config.users_join_rows:
        return ds.map_batches(
            AttachUsers,
            fn_constructor_kwargs={"users": plan.users},
            batch_format="pyarrow",
            compute=stage_pool(config),
            num_cpus=light,
        )
    users = ray.data.from_arrow_refs([plan.users]).map_batches(
        user_side, batch_format="pyarrow", num_cpus=light
    )
    joined = ds.map_batches(join_key, batch_format="pyarrow", num_cpus=light).join(
        users,
        join_type="left_outer",
        on=(JOIN_KEY,),
        num_partitions=join_partitions(input_pairs(plan)),
        aggregator_ray_remote_args={"num_cpus": light},
    )
    return joined.map_batches(after_join, batch_format="pyarrow", num_cpus=light)


def campaigns_in(pairs: inputs.ParquetInput, num_cpus: float) -> str:
    """The campaigns the pairs name, as one line for an error (counted by Ray, not the driver)."""
    files = [f for f in pairs.files if C.CAMPAIGN_ID in pairs.names[f]]
    if not files:
        return "the pairs have no campaign_id column: leave --campaign out to take every pair"
    names = read(files, pairs.loc, num_cpus, columns=[C.CAMPAIGN_ID]).unique(C.CAMPAIGN_ID)
    names = sorted(n for n in names if n is not None)
    shown = ", ".join(names[:LISTED_CAMPAIGNS]) + (
        f" and {len(names) - LISTED_CAMPAIGNS} more" if len(names) > LISTED_CAMPAIGNS else ""
    )
    return f"the pairs have these campaigns: {shown}" if names else "no pair names a campaign"


def route_checked(batch: pa.Table, run_id: str, run_date, campaign: str | None, n_buckets: int) -> pa.Table:
    """Pass 1's rows for the writer: dead letters in their schema, servable
    pairs in the staged shape, routed to their product's staging bucket."""
    dead = batch.filter(pc.is_valid(batch[C.REASON]))
    good = batch.filter(pc.is_null(batch[C.REASON]))
    n = dead.num_rows
    dead_rows = dead_letters.rows(
        run_id,
        run_date,
        n,
        **{
            C.CAMPAIGN_ID: (
                dead[C.CAMPAIGN_ID]
                if C.CAMPAIGN_ID in dead.column_names
                else pa.array([campaign] * n, pa.string())
            )
        },
        **{
            c: dead[c]
            for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.REASON, C.SOURCE, C.SOURCE_ROW)
            if c in dead.column_names
        },
    )
    for name in (C.CHANNEL, C.CAMPAIGN_ID):
        if name not in good.column_names:
            good = good.append_column(name, pa.nulls(good.num_rows, pa.string()))
    staged = staged_pair_shape(good)
    dead_rows = dead_rows.append_column(C.ROUTE, pa.array(["dead_letters"] * n, pa.string()))
    bucket_names = pa.array([bucket_name(b) for b in range(n_buckets)], pa.string())
    staged = staged.append_column(
        C.ROUTE, bucket_names.take(product_buckets(staged[C.PRODUCT_ID], n_buckets))
    )
    return pa.concat_tables([dead_rows, staged], promote_options="default")


def staged_pair_shape(rows: pa.Table) -> pa.Table:
    return rows.select(list(STAGED_PAIR_COLUMNS))


def write_lookup_rejects(plan: Plan, attempt: Attempt) -> None:
    """Users and products rows the driver dropped (null, malformed or
    duplicate ids) go to the dead letters too, with their file and row."""
    config = plan.config
    rejects = [r for report in plan.table_reports for r in report.rejects]
    if not rejects:
        return
    n = len(rejects)
    table = dead_letters.rows(
        config.run_id,
        config.run_date,
        n,
        **{
            C.CAMPAIGN_ID: pa.array([config.campaign] * n, pa.string()),
            C.USER_ID: pa.array([r.get(C.USER_ID) for r in rejects], pa.string()),
            C.PRODUCT_ID: pa.array([r.get(C.PRODUCT_ID) for r in rejects], pa.string()),
            C.REASON: pa.array([r["reason"] for r in rejects], pa.string()),
            C.SOURCE: pa.array([r["source"] for r in rejects], pa.string()),
            C.SOURCE_ROW: pa.array([r["source_row"] for r in rejects], pa.int64()),
        },
    )
    dead_letters.write(attempt.dead_letters.join("part-lookup-tables.parquet"), table)


def stage_buckets(plan: Plan) -> int:
    """How many product buckets pass 1 splits the pairs into: about
    STAGE_BUCKET_PAIRS each, known before anything is read."""
    return max(1, -(-input_pairs(plan) // STAGE_BUCKET_PAIRS))


def pass1_batch_pairs(plan: Plan) -> int:
    return min(PASS1_MAX_BATCH_PAIRS, max(ROWS_PER_FILE, -(-input_pairs(plan) // PASS1_BATCHES)))


def bucket_name(bucket: int) -> str:
    return f"bucket={bucket:05d}"


def product_buckets(products: pa.ChunkedArray, n_buckets: int) -> pa.Array:
    """crc32(product id) mod n per row: the same in every process (unlike
    Python's hash), hashed once per distinct product."""
    if not len(products):
        return pa.array([], pa.int32())
    encoded = products.combine_chunks().dictionary_encode()
    per_value = np.array(
        [zlib.crc32(v.encode()) % n_buckets if v is not None else 0 for v in encoded.dictionary.to_pylist()]
        + [0],
        dtype=np.int32,
    )
    # A null product (never staged: pass 1 dead-letters it) goes to bucket 0.
    index = encoded.indices.fill_null(len(per_value) - 1).to_numpy(zero_copy_only=False)
    return pa.array(per_value[index])


# --------------------------------------------------------------------------- staging


def stage_rows(plan: Plan, attempt: Attempt, n_buckets: int, night=None) -> Fingerprint:
    """Turn the checked pairs into the unique rows the run owes; return their
    fingerprint (``rows`` is how many). Each bucket is staged by its own Ray
    task, anywhere in the cluster. Done from pass 1's output (keys only), so
    every process of an attempt stages the same rows. ``night``: the experiment's NightPlan, whose
    pinned allocation puts every row's user in an arm or the holdout."""
    import ray

    config = plan.config
    for loc in (attempt.pairs, attempt.followers, holdout_folder(attempt)):
        delete_dir_if_exists(loc)
    arms = ArmRows.of(plan, night)
    arm_templates = plan.experiment.arm_templates if night else None
    task = ray.remote(_stage_bucket_task).options(num_cpus=config.cpu_stage_num_cpus)
    pending = [task.remote(attempt, b, config, plan.templates, arms, arm_templates) for b in range(n_buckets)]
    owed = reused = done = 0
    fingerprint = Fingerprint()
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        rows, followers, owes = ray.get(ready[0])
        owed, reused, done = owed + rows, reused + followers, done + 1
        fingerprint += Fingerprint.parse(owes)
        if n_buckets > 1 and (done % max(1, n_buckets // 10) == 0 or not pending):
            logger.info("Staged %d of %d product bucket(s): %d row(s) so far", done, n_buckets, owed)
    delete_dir_if_exists(attempt.checked)
    if reused:
        logger.info(
            "%d of %d row(s) have a prompt identical to an earlier row's: generated once, reused "
            "(--no-dedup turns this off)",
            reused,
            owed,
        )
    return fingerprint


def _stage_bucket_task(
    attempt: Attempt, bucket: int, config: JobConfig, templates, arms=None, arm_templates=None
) -> tuple[int, int, str]:
    """A Ray task: stage one bucket's pairs; (rows, followers, owed fingerprint as text)."""
    folder = attempt.checked.join(bucket_name(bucket))
    names = [i.base_name for i in list_files(folder, ".parquet")]
    pairs = (
        pa.concat_tables([read_parquet(folder.join(name)) for name in names])
        if names
        else STAGED_PAIR_SCHEMA.empty_table()
    )
    users, keys = bucket_keys(pairs, config, templates, arm_templates)
    rows, followers, owes = stage_bucket(pairs, bucket, config, users, attempt, keys, arms)
    return rows, followers, owes.text()


@dataclass
class BucketRows:
    """What one bucket's pairs owe, decided (``bucket_rows``), before anything is written.

    ``pairs``: the bucket's servable pairs in file order. ``owing``: what they
    owe (``factory.pipeline.owed``). ``rows``: the owed rows in prefix-cache
    order, with ROW_ID, the key's CAMPAIGN and DEDUP_OF (the leader's row id
    for a row whose prompt an earlier row already sends; null for a row the
    engine gets)."""

    pairs: pa.Table
    owing: Owed
    rows: pa.Table
    holdout: int = 0  # an experiment's holdout rows (one per pair and channel): owed no copy, not in ``rows``

    @property
    def engine_rows(self) -> pa.Table:
        return self.rows.filter(pc.is_null(self.rows[C.DEDUP_OF]))

    @property
    def followers(self) -> pa.Table:
        return self.rows.filter(pc.is_valid(self.rows[C.DEDUP_OF]))


def bucket_keys(
    pairs: pa.Table, config: JobConfig, templates, arm_templates=None
) -> tuple[pa.Table, dedup.PromptKeys | None]:
    """A bucket's own users, and its prompt keys (None with --no-dedup or no
    pairs): what ``bucket_rows`` needs, for the run and the dry run alike.

    Only this bucket's users, taken from its pairs (pass 1 attached them):
    the prompt keys' per-user signatures are Python work per user, and every
    bucket computing them for the whole table made staging grow with
    buckets x users (1M users, a 100k-pair bucket: 44.0 s against 2.7 s;
    benchmarks/stage_signatures.py, RESULTS section 11)."""
    users = bucket_users(pairs)
    keys = (
        dedup.PromptKeys(users, templates, arm_templates) if config.dedup_prompts and pairs.num_rows else None
    )
    return users, keys


def bucket_users(pairs: pa.Table) -> pa.Table:
    """One row per user of ``pairs`` (the first pair's): its id and columns."""
    ids = pairs[C.USER_ID].combine_chunks().dictionary_encode()
    _, first = np.unique(ids.indices.to_numpy(zero_copy_only=False), return_index=True)
    return pairs.select([C.USER_ID, *C.USER_COLUMNS]).take(pa.array(first, pa.int64()))


def with_user_columns(rows: pa.Table, users: pa.Table, columns=C.USER_COLUMNS) -> pa.Table:
    """``rows`` with their user's ``columns``, from ``bucket_users``."""
    at = pc.index_in(rows[C.USER_ID], value_set=users[C.USER_ID])
    for name in columns:
        rows = rows.append_column(name, users[name].take(at))
    return rows


def bucket_rows(
    pairs: pa.Table,
    config: JobConfig,
    users: pa.Table,
    keys: dedup.PromptKeys | None,
    arms: ArmRows | None = None,
    holdout: Location | None = None,
    prefix: str = "part",
) -> BucketRows:
    """Decide one bucket's rows: the staging rule, for the run (``stage_bucket``)
    and the dry run (``factory.dry_run``) alike. ``arms``: the experiment's
    arm step; its holdout rows are written to ``holdout`` (the run) or only
    counted (None: the dry run)."""
    if pairs.num_rows:
        pairs = pairs.take(
            pc.sort_indices(pairs, sort_keys=[(C.SOURCE, "ascending"), (C.SOURCE_ROW, "ascending")])
        )
    owing = owed_rows(pairs, config.channels, config.variants, config.campaign)
    rows = owing.rows.select(list(STAGED_ROW_COLUMNS) + [CAMPAIGN])
    # Each row's arm, before its prompt key and id: the holdout's rows leave here.
    rows, held = (arms or ArmRows(None, {}, config.run_id, config.run_date))(rows, users, holdout, prefix)
    rows = rows.take(dedup.prefix_cache_order(rows, users))
    # The row ids (as JoinProfiles makes them) let a resumed process see
    # which staged rows are still owed without running the join; the prompt
    # keys say which rows would send the engine the same prompt.
    ids = pa.array(
        [
            row_id(config.run_id, *key)
            for key in zip(
                *(rows[c].to_pylist() for c in (CAMPAIGN, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT))
            )
        ],
        pa.string(),
    )
    rows = rows.append_column(C.ROW_ID, ids)
    lead = pa.nulls(rows.num_rows, pa.string())
    if keys is not None and rows.num_rows:
        resolved = rows.set_column(rows.column_names.index(C.CAMPAIGN_ID), C.CAMPAIGN_ID, rows[CAMPAIGN])
        lead = dedup.leader_ids(rows[C.ROW_ID], pa.chunked_array([dedup.key_digests(keys(resolved))]))
    return BucketRows(pairs=pairs, owing=owing, rows=rows.append_column(C.DEDUP_OF, lead), holdout=held)


def stage_bucket(
    pairs: pa.Table,
    bucket: int,
    config: JobConfig,
    users: pa.Table,
    attempt: Attempt,
    keys: dedup.PromptKeys | None,
    arms: ArmRows | None = None,
) -> tuple[int, int, Fingerprint]:
    """Stage one bucket's pairs (see ``stage_rows``): write its rows to
    generate, its followers, its duplicate pairs and its holdout rows (owed
    no copy); return (rows, followers, the fingerprint of every row it owes)."""
    decided = bucket_rows(pairs, config, users, keys, arms, holdout_folder(attempt), f"part-{bucket:05d}")
    rows = decided.rows
    owed_fingerprint = Fingerprint.of(rows[C.ROW_ID].to_pylist())  # what the copies must add up to (finish)
    followers = decided.followers
    # Every staged row carries its user: the engine's rows to the join
    # (JoinProfiles in the first-drafts pass), followers their profile to the
    # gate (a row reusing a leader's copy is judged for its own user).
    if followers.num_rows:
        followers = followers.set_column(
            followers.column_names.index(C.CAMPAIGN_ID), C.CAMPAIGN_ID, followers[CAMPAIGN]
        ).drop_columns([CAMPAIGN])
        followers = with_user_columns(followers, users, C.USERS_LIST_FIELDS)
        _write_chunks(attempt.followers, followers, f"part-{bucket:05d}")
    _write_chunks(
        attempt.pairs,
        with_user_columns(decided.engine_rows.drop_columns([CAMPAIGN, C.DEDUP_OF]), users),
        f"part-{bucket:05d}",
    )
    if len(decided.owing.duplicate_pairs):
        dup = decided.pairs.take(decided.owing.duplicate_pairs)
        dead_letters.write(
            attempt.dead_letters.join(f"part-duplicate-pairs-{bucket:05d}.parquet"),
            dead_letters.rows(
                config.run_id,
                config.run_date,
                dup.num_rows,
                **{
                    c: dup[c]
                    for c in (C.CAMPAIGN_ID, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.SOURCE, C.SOURCE_ROW)
                },
                **{C.REASON: pa.array([dead_letters.DUPLICATE_PAIR] * dup.num_rows, pa.string())},
            ),
        )
    return rows.num_rows, followers.num_rows, owed_fingerprint


def _write_chunks(folder: Location, rows: pa.Table, prefix: str = "part") -> None:
    for start in range(0, rows.num_rows, ROWS_PER_FILE):
        write_parquet(
            folder.join(f"{prefix}-{start // ROWS_PER_FILE:05d}.parquet"), rows.slice(start, ROWS_PER_FILE)
        )
